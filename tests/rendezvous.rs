//! Rendezvous signalling and hole punching between real nodes on loopback (spec/05 §4–§5):
//! a callee that is not directly reachable registers at a bootstrap node; a caller finds its
//! presence in the DHT, sends CONNECT through the bootstrap node, punches and delivers. The
//! rendezvous node rate-limits CONNECTs per source. (Kernel NATs: tests/nat.rs.)

use std::time::Duration;

use bytes::Bytes;
use dna_p2p::crypto::{Fingerprint, Identity};
use dna_p2p::daemon::{DhtSettings, Node, NodeConfig, NodeEvent, ReachError, Reached};
use dna_p2p::dht::DhtConfig;
use dna_p2p::nat::candidate::{CandidateKind, PresenceInfo};
use rand_core::OsRng;

async fn node(server: bool, bootstrap: Vec<(std::net::SocketAddr, Fingerprint)>) -> Node {
    let cfg = NodeConfig {
        dht: Some(DhtSettings {
            bootstrap,
            config: DhtConfig {
                server,
                ..DhtConfig::default()
            },
            data_dir: None,
        }),
        ..NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
    };
    Node::bind(Identity::generate(&mut OsRng), cfg)
        .await
        .unwrap()
}

/// A bootstrap node, and a client node joined to it with candidates from its STUN answer.
async fn setup() -> (Node, Node, Node) {
    let boot = node(true, vec![]).await;
    let seeds = vec![(boot.local_addr(), boot.fingerprint())];
    let mut clients = Vec::new();
    for _ in 0..2 {
        let n = node(false, seeds.clone()).await;
        n.dht_bootstrap().await.unwrap();
        let same = n.gather_candidates(&[boot.local_addr()]).await.unwrap();
        assert_eq!(same, None, "one server: mapping behaviour unknown");
        clients.push(n);
    }
    let callee = clients.pop().unwrap();
    let caller = clients.pop().unwrap();
    let lifetime = callee
        .register_rendezvous(boot.local_addr(), boot.fingerprint())
        .await
        .unwrap();
    assert_eq!(lifetime, Duration::from_secs(300));
    assert!(callee.announce_presence().await.unwrap() >= 1);
    (boot, caller, callee)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_through_a_rendezvous_node_then_deliver() {
    let (boot, caller, mut callee) = setup().await;
    // What the caller will find: not reachable, one host candidate, the rendezvous node.
    let rec = caller
        .find_peer(callee.fingerprint())
        .await
        .unwrap()
        .unwrap();
    let info = PresenceInfo::decode(rec.value()).unwrap();
    assert!(!info.reachable);
    assert_eq!(
        info.rendezvous,
        vec![(boot.local_addr(), boot.fingerprint())]
    );
    assert_eq!(info.candidates.len(), 1);
    assert_eq!(info.candidates[0].addr, callee.local_addr());

    let reached = caller.reach(callee.fingerprint()).await.unwrap();
    assert_eq!(
        reached,
        Reached::Punched {
            addr: callee.local_addr(),
            kind: CandidateKind::Host
        }
    );
    caller
        .send(
            callee.fingerprint(),
            Bytes::from_static(b"through the rendezvous"),
        )
        .await
        .unwrap();
    let body = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(NodeEvent::Message { from, body, .. }) = callee.next_event().await {
                assert_eq!(from, caller.fingerprint());
                return body;
            }
        }
    })
    .await
    .expect("delivered");
    assert_eq!(&body[..], b"through the rendezvous");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rendezvous_node_rate_limits_connect_per_source() {
    let (_boot, caller, callee) = setup().await;
    let target = callee.fingerprint();
    // 20 CONNECTs at once from one address: the bucket holds 10.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let h = caller.handle();
        tasks.spawn(async move { h.reach(target).await });
    }
    let (mut ok, mut limited) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(Reached::Punched { .. }) => ok += 1,
            Err(ReachError::ConnectRefused("rate limited")) => limited += 1,
            other => panic!("unexpected: {other:?}"),
        }
    }
    eprintln!("20 concurrent CONNECTs from one source: {ok} served, {limited} rate limited");
    assert!(ok >= 10, "the burst is served: {ok}");
    assert!(limited >= 5, "the rest is refused: {limited} (ok {ok})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_that_never_published_is_offline() {
    let (_boot, caller, _callee) = setup().await;
    let stranger = Identity::generate(&mut OsRng).fingerprint();
    assert_eq!(
        caller.reach(stranger).await,
        Err(ReachError::Offline),
        "no presence record, no CONNECT"
    );
}

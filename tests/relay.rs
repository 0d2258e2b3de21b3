//! The bundled relay between real nodes on loopback (spec/07-relay.md §1): clients with
//! `relay = "only"` register at a bootstrap node that relays, both ask for the pair, and
//! their QUIC session runs through the bootstrap node's socket as Send/Data indications.
//! Strangers, one-sided requests and forged datagrams are refused; the relay's caps (pairs,
//! bytes per second) hold. (Pairs behind kernel NATs: tests/nat.rs.)

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use dna_p2p::crypto::{Fingerprint, Identity};
use dna_p2p::daemon::{DhtSettings, Node, NodeConfig, NodeEvent, ReachError, Reached};
use dna_p2p::nat::candidate::PresenceInfo;
use dna_p2p::node::reach::RelayPolicy;
use dna_p2p::node::relay_server::RelayServerLimits;
use dna_p2p::transport::is_token;
use rand_core::OsRng;

fn config(server: bool, bootstrap: Vec<(SocketAddr, Fingerprint)>) -> NodeConfig {
    NodeConfig {
        dht: Some(DhtSettings::joining(bootstrap, server)),
        rendezvous_server: server,
        relay_policy: RelayPolicy::Only,
        ..NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
    }
}

/// A bootstrap node relaying with `limits`, and `n` clients with `relay = "only"`
/// registered at it, their presence published.
async fn setup(limits: RelayServerLimits, n: usize) -> (Node, Vec<Node>) {
    let boot = Node::bind(
        Identity::generate(&mut OsRng),
        NodeConfig {
            relay_server: Some(limits),
            ..config(true, vec![])
        },
    )
    .await
    .unwrap();
    let seeds = vec![(boot.local_addr(), boot.fingerprint())];
    let mut clients = Vec::new();
    for _ in 0..n {
        let c = Node::bind(Identity::generate(&mut OsRng), config(false, seeds.clone()))
            .await
            .unwrap();
        c.dht_bootstrap().await.unwrap();
        c.gather_candidates(&[boot.local_addr()]).await.unwrap();
        c.register_rendezvous(boot.local_addr(), boot.fingerprint())
            .await
            .unwrap();
        assert!(c.announce_presence().await.unwrap() >= 1);
        clients.push(c);
    }
    (boot, clients)
}

/// Waits for `n` messages from `from`; returns their bodies in arrival order.
async fn receive(node: &mut Node, from: Fingerprint, n: usize) -> Vec<Bytes> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        while got.len() < n {
            if let Some(NodeEvent::Message { from: f, body, .. }) = node.next_event().await {
                assert_eq!(f, from);
                got.push(body);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {n} messages arrived", got.len()));
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_nodes_talk_through_the_bootstrap_relay() {
    let (boot, mut clients) = setup(RelayServerLimits::default(), 2).await;
    let mut bob = clients.pop().unwrap();
    let mut alice = clients.pop().unwrap();
    // `only`: bob's presence names no address of his, only the relay.
    let rec = alice.find_peer(bob.fingerprint()).await.unwrap().unwrap();
    let info = PresenceInfo::decode(rec.value()).unwrap();
    assert!(!info.reachable && info.candidates.is_empty(), "{info:?}");

    let reached = alice.reach(bob.fingerprint()).await.unwrap();
    let Reached::Bundled { relay, token } = reached else {
        panic!("expected the bundled relay, got {reached:?}");
    };
    assert_eq!(relay, boot.local_addr());
    assert!(is_token(token), "{token}");
    // The session's event says the truth: through the relay, at the token.
    let up = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(NodeEvent::PeerUp { peer, path, .. }) = alice.next_event().await {
                if peer == bob.fingerprint() {
                    return path;
                }
            }
        }
    })
    .await
    .expect("alice's session to bob came up");
    assert_eq!(up, dna_p2p::daemon::Path::Relay(token));

    let n = 1000;
    let bodies: Vec<Bytes> = (0..n).map(|i| Bytes::from(format!("m{i:04}"))).collect();
    alice
        .send_many(bob.fingerprint(), bodies.clone())
        .await
        .unwrap();
    let got = receive(&mut bob, alice.fingerprint(), n).await;
    assert_eq!(got, bodies, "all {n}, in order, once");
    bob.send(alice.fingerprint(), Bytes::from_static(b"back"))
        .await
        .unwrap();
    assert_eq!(
        receive(&mut alice, bob.fingerprint(), 1).await[0],
        Bytes::from_static(b"back")
    );

    let (a, b) = (alice.relay_status(), bob.relay_status());
    let server = boot
        .relay_status()
        .server
        .expect("the bootstrap node relays");
    println!(
        "{n} messages alice → bob through the relay: alice sent {} B, bob received {} B \
         relayed; the relay forwarded {} datagrams, {} B in {} pair(s)",
        a.bytes_out, b.bytes_in, server.forwarded, server.forwarded_bytes, server.pairs
    );
    assert_eq!((a.peers.len(), b.peers.len()), (1, 1));
    assert_eq!(a.peers[0].path, "relay");
    assert_eq!(a.peers[0].addr, token.to_string());
    assert!(a.bytes_out > 8 * n as u64 && b.bytes_in > 8 * n as u64);
    assert_eq!(server.pairs, 1);
    assert_eq!(
        server.detail[0].bytes.iter().sum::<u64>(),
        server.forwarded_bytes
    );
    // Nothing went around the relay: neither socket saw the other's address.
    let info = alice.peer_info(&bob.fingerprint()).await.unwrap();
    assert!(info.addrs.iter().all(|x| is_token(*x)), "{:?}", info.addrs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_one_sided_requests_and_forged_datagrams_are_refused() {
    let (boot, clients) = setup(RelayServerLimits::default(), 2).await;
    let (alice, bob) = (&clients[0], &clients[1]);
    let relay = (boot.local_addr(), boot.fingerprint());
    // A stranger: in the DHT, but not registered at the relay.
    let seeds = vec![relay];
    let stranger = Node::bind(Identity::generate(&mut OsRng), config(false, seeds))
        .await
        .unwrap();
    stranger.dht_bootstrap().await.unwrap();
    let r = stranger
        .request_relay(relay.0, relay.1, bob.fingerprint())
        .await;
    assert_eq!(r, Err(ReachError::ConnectRefused("callee not registered")));
    // One side asks, the other never does.
    let r = alice
        .request_relay(relay.0, relay.1, bob.fingerprint())
        .await;
    assert_eq!(
        r,
        Err(ReachError::ConnectRefused(
            "the peer did not ask for the relayed pair"
        ))
    );
    // Both ask: a pair. Then a datagram for bob's token from another socket is dropped.
    let (ra, rb) = tokio::join!(
        alice.request_relay(relay.0, relay.1, bob.fingerprint()),
        bob.request_relay(relay.0, relay.1, alice.fingerprint()),
    );
    let (bob_token, _alice_token) = (ra.unwrap(), rb.unwrap());
    let forger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut ind = Vec::new();
    dna_p2p::transport::relay::encode_indication(
        &mut ind,
        dna_p2p::transport::relay::SEND_INDICATION,
        [7; 12],
        bob_token,
        &[0x40; 100],
    )
    .unwrap();
    let before = boot.relay_status().server.unwrap();
    for _ in 0..10 {
        forger.send_to(&ind, boot.local_addr()).unwrap();
    }
    // The relay had its chance: its socket counts each refusal.
    tokio::time::timeout(Duration::from_secs(10), async {
        while boot.socket_stats().forward_refused.load(Ordering::Relaxed) < 10 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the relay saw the forged datagrams");
    let after = boot.relay_status().server.unwrap();
    println!(
        "stranger refused, one-sided request refused after the wait, 10 forged datagrams: \
         {} dropped as unknown, {} forwarded",
        after.dropped_unknown - before.dropped_unknown,
        after.forwarded - before.forwarded
    );
    assert_eq!(after.dropped_unknown - before.dropped_unknown, 10);
    assert_eq!(after.forwarded, before.forwarded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::disallowed_methods)] // the test reads the clock to bound the relay's rate
async fn the_relays_caps_hold() {
    let rate = 128 * 1024;
    let limits = RelayServerLimits {
        max_pairs: 1,
        pair_rate: rate,
        ..RelayServerLimits::default()
    };
    let (boot, mut clients) = setup(limits, 4).await;
    let dave = clients.pop().unwrap();
    let carol = clients.pop().unwrap();
    let mut bob = clients.pop().unwrap();
    let alice = clients.pop().unwrap();
    // Before the pair exists: its bucket can have filled for no longer than this.
    let start = std::time::Instant::now();
    assert!(matches!(
        alice.reach(bob.fingerprint()).await.unwrap(),
        Reached::Bundled { .. }
    ));
    // A second pair is refused: no path (the message waits in the outbox).
    let second = carol.reach(dave.fingerprint()).await.unwrap();
    assert_eq!(second, Reached::RelayNeeded);

    // 1 MiB through a pair capped at 128 KiB/s: everything arrives; what went over the
    // cap was dropped and sent again by QUIC.
    let n = 256;
    let bodies: Vec<Bytes> = (0..n).map(|i| Bytes::from(vec![i as u8; 4096])).collect();
    alice
        .send_many(bob.fingerprint(), bodies.clone())
        .await
        .unwrap();
    let got = receive(&mut bob, alice.fingerprint(), n).await;
    assert_eq!(got, bodies);
    let s = boot.relay_status().server.unwrap();
    // Read after the counters: the bucket's one second plus the rate since `start`.
    let secs = start.elapsed().as_secs_f64();
    let bound = rate as f64 * (secs + 1.0);
    println!(
        "pairs: {} up, {} refused; 1 MiB through a {rate} B/s pair in {secs:.1} s: {} B \
         forwarded (bound {bound:.0}), {} datagrams dropped at the cap",
        s.pairs, s.refused, s.forwarded_bytes, s.dropped_rate
    );
    assert_eq!((s.pairs, s.refused), (1, 1));
    assert!(s.forwarded_bytes as f64 <= bound);
    assert!(s.dropped_rate > 0, "the cap was reached");
}

//! Port prediction's budget at a real node (spec/05-nat.md §5.5): only a verified, fresh
//! offer makes a node probe, and never more than the budget it has.

use super::*;
use crate::crypto::Identity;
use crate::daemon::{DhtSettings, Node, NodeConfig};
use crate::nat::discovery::{Filtering, Mapping, NatClass};
use crate::nat::predict::Behaviour;
use rand_core::OsRng;

fn config(server: bool, bootstrap: Vec<(SocketAddr, Fingerprint)>) -> NodeConfig {
    NodeConfig {
        dht: Some(DhtSettings::joining(bootstrap, server)),
        rendezvous_server: server,
        ..NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
    }
}

async fn node(server: bool, bootstrap: Vec<(SocketAddr, Fingerprint)>) -> Node {
    Node::bind(Identity::generate(&mut OsRng), config(server, bootstrap))
        .await
        .unwrap()
}

/// The target of the probes: a loopback address no test binds (sockets on 127.0.0.1 do
/// not hear it), standing for a symmetric NAT's public address.
const TARGET: &str = "127.0.0.77:40000";
/// What the ledger leaves the target, so the attempt's own budget (2,048) is not the limit.
const LEFT: u32 = 40;

fn offer(caller: &Node, to: Fingerprint, session: u8, time_ms: u64) -> Vec<u8> {
    Signal {
        kind: SignalKind::Offer,
        from: caller.shared.identity.public_key().clone(),
        to,
        session: [session; 8],
        time_ms,
        ufrag: format!("uf{session}"),
        pwd: "0123456789abcdef0123456789abcdef".into(),
        candidates: vec![Candidate::new(
            CandidateKind::ServerReflexive,
            TARGET.parse().unwrap(),
            100,
        )],
        // A symmetric NAT: toward our port-restricted cone, we are the easy side.
        nat: Behaviour {
            class: Some((
                Mapping::AddressAndPortDependent,
                Filtering::AddressAndPortDependent,
            )),
            sequential: false,
        },
    }
    .sign(&caller.shared.identity)
}

fn counters(n: &Node) -> (u64, u64) {
    let p = n.prediction_status();
    (p.attempts, p.probes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_verified_fresh_offer_makes_a_node_probe_and_never_beyond_its_budget() {
    let boot = node(true, vec![]).await;
    let seeds = vec![(boot.local_addr(), boot.fingerprint())];
    let callee = node(false, seeds.clone()).await;
    let caller = node(false, seeds).await;
    callee.dht_bootstrap().await.unwrap();
    caller.dht_bootstrap().await.unwrap();
    callee
        .register_rendezvous(boot.local_addr(), boot.fingerprint())
        .await
        .unwrap();
    // The callee sits behind a port-restricted cone, as discovery would have found it.
    callee.shared.nat.status.send_modify(|s| {
        s.class = Some(NatClass {
            mapped: callee.local_addr(),
            no_nat: false,
            mapping: Mapping::EndpointIndependent,
            filtering: Filtering::AddressAndPortDependent,
            port_preserved: true,
            sequential: false,
        })
    });
    let target: SocketAddr = TARGET.parse().unwrap();
    let taken = crate::nat::predict::PROBES_PER_IP - LEFT;
    let grant = crate::node::core::Input::GrantProbes {
        ip: target.ip(),
        want: taken,
    };
    let granted = match callee.shared.core.ask(grant).await {
        Some(crate::node::core::Reply::Count(n)) => n,
        other => panic!("no grant: {other:?}"),
    };
    assert_eq!(granted, taken);
    let d = caller.shared.dht.clone().unwrap();
    let rdv = Contact {
        id: boot.fingerprint().node_id(),
        addr: boot.local_addr(),
    };
    let to = callee.fingerprint();

    // Forged: one bit of the signature flipped. Stale: two minutes old.
    let mut forged = offer(&caller, to, 1, now_ms());
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let stale = offer(&caller, to, 2, now_ms() - 120_000);
    for (what, bytes) in [("forged", forged), ("stale", stale)] {
        let r = connect_via(&caller.shared, &d, rdv, &bytes).await;
        println!("{what} offer: {r:?}");
        assert!(
            matches!(r, Err(ReachError::ConnectRefused(_))),
            "{what}: {r:?}"
        );
    }
    // Both went the whole way and were refused: nothing predicted, nothing probed.
    assert_eq!(counters(&callee), (0, 0), "no probes from a bad offer");

    // A verified, fresh offer: the callee answers, says what its NAT is, and probes — as
    // many times as the ledger leaves, no more.
    let answer = connect_via(&caller.shared, &d, rdv, &offer(&caller, to, 3, now_ms()))
        .await
        .unwrap();
    let answer = Signal::verify(&answer).unwrap();
    assert_eq!(
        answer.nat.class,
        Some((
            Mapping::EndpointIndependent,
            Filtering::AddressAndPortDependent
        ))
    );
    // Until the attempt is over (its route is gone: deadline, then linger).
    let over = tokio::time::timeout(Duration::from_secs(30), async {
        while counters(&callee).1 < u64::from(LEFT)
            || callee.shared.nat.punch_attempts.load(Ordering::SeqCst) > 0
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    println!("valid offer: prediction {:?}", callee.prediction_status());
    assert!(over.is_ok(), "the attempt probed and ended");
    assert_eq!(
        counters(&callee),
        (1, u64::from(LEFT)),
        "exactly the budget"
    );

    // The budget is spent: a new valid offer is answered, punching runs, no probes.
    connect_via(&caller.shared, &d, rdv, &offer(&caller, to, 4, now_ms()))
        .await
        .unwrap();
    let started = tokio::time::timeout(Duration::from_secs(5), async {
        while callee.shared.nat.punch_attempts.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(started.is_ok(), "the second attempt runs");
    assert_eq!(counters(&callee), (1, u64::from(LEFT)), "no budget left");
}

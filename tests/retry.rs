//! Re-reaching peers with messages waiting, with real nodes on loopback (spec/06-node.md
//! §3.5): 1,000 contacts that never come online cost at most the schedule's budget of
//! lookups, and the one that does come back is reached as soon as its presence is stored
//! at our node — it does not wait its turn behind the 1,000.
#![allow(clippy::disallowed_methods)] // waits for real nodes

use std::time::{Duration, Instant};

use bytes::Bytes;
use dna_p2p::crypto::{Fingerprint, Identity};
use dna_p2p::daemon::{DhtSettings, Node, NodeConfig, NodeEvent};
use dna_p2p::node::retry::RetryConfig;
use rand_core::OsRng;

/// A DHT server (the bootstrap node also a rendezvous node, as `dna bootstrap` is).
fn config(
    seeds: Vec<(std::net::SocketAddr, Fingerprint)>,
    retry: Option<RetryConfig>,
) -> NodeConfig {
    NodeConfig {
        rendezvous_server: seeds.is_empty(),
        dht: Some(DhtSettings::joining(seeds, true)),
        retry,
        ..NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_offline_contacts_cost_a_bounded_number_of_lookups_and_the_one_back_is_reached_at_once(
) {
    let boot = Node::bind(Identity::generate(&mut OsRng), config(vec![], None))
        .await
        .unwrap();
    let seeds = vec![(boot.local_addr(), boot.fingerprint())];
    let retry = RetryConfig {
        per_minute: 60,
        ..RetryConfig::default()
    };
    let alice = Node::bind(
        Identity::generate(&mut OsRng),
        config(seeds.clone(), Some(retry)),
    )
    .await
    .unwrap();
    alice.dht_bootstrap().await.unwrap();
    alice.gather_candidates(&[boot.local_addr()]).await.unwrap();
    let bob_id = Identity::generate(&mut OsRng);
    let bob_fp = bob_id.fingerprint();
    // 1,000 contacts that never come online, and bob, offline for now.
    let start = Instant::now();
    for _ in 0..1000 {
        let nobody = Identity::generate(&mut OsRng).fingerprint();
        alice
            .send(nobody, Bytes::from_static(b"hello?"))
            .await
            .unwrap();
    }
    alice
        .send(bob_fp, Bytes::from_static(b"for bob"))
        .await
        .unwrap();
    // Let the schedule spend its burst and run at its rate for a while.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let st = alice.retry_stats().expect("the schedule runs");
    let elapsed = start.elapsed().as_secs_f64();
    let bound = f64::from(retry.per_minute) * (1.0 + elapsed / 60.0);
    println!(
        "1,001 peers waiting: {} reaches in {elapsed:.1} s: the burst of {}, then {:.0}/min \
         (bound {}/min; {bound:.0} in all here); one full reach per peer every 5 s would be {:.0}",
        st.started,
        retry.per_minute,
        st.started.saturating_sub(u64::from(retry.per_minute)) as f64 * 60.0 / elapsed,
        retry.per_minute,
        1001.0 * elapsed / 5.0
    );
    assert_eq!(st.waiting, 1001);
    // The schedule had its chance: it spent the burst …
    assert!(st.started >= u64::from(retry.per_minute), "{st:?}");
    // … and no more than the bucket allows.
    assert!(st.started as f64 <= bound + 1.0, "{st:?}");
    assert_eq!(st.heard, 0);

    // Bob comes online as a daemon does (candidates, a rendezvous registration) and
    // publishes his presence: alice, a DHT server, holds it.
    let mut bob = Node::bind(bob_id, config(seeds, None)).await.unwrap();
    bob.dht_bootstrap().await.unwrap();
    bob.gather_candidates(&[boot.local_addr()]).await.unwrap();
    bob.register_rendezvous(boot.local_addr(), boot.fingerprint())
        .await
        .unwrap();
    assert!(bob.announce_presence().await.unwrap() >= 1);
    let announced = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match bob.next_event().await {
                Some(NodeEvent::Message { from, body, .. }) => break (from, body),
                Some(_) => {}
                None => panic!("bob stopped"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("bob got nothing: {:?}", alice.retry_stats()));
    let after = announced.elapsed();
    let st = alice.retry_stats().unwrap();
    println!(
        "bob's message arrived {} ms after his presence was stored (heard {} time(s); {} reaches started in all)",
        after.as_millis(),
        st.heard,
        st.started
    );
    assert_eq!(got, (alice.fingerprint(), Bytes::from_static(b"for bob")));
    assert!(st.heard >= 1, "alice heard bob's presence: {st:?}");
}

//! Per-identity state is bounded (spec/06-node.md §4): identities are free to make, so a
//! stream of throwaway identities connecting to a node must not grow its peer table beyond
//! `max_peers` entries that are not live. Real nodes on loopback.

use std::time::Duration;

use bytes::Bytes;
use dna_p2p::crypto::Identity;
use dna_p2p::daemon::{Node, NodeConfig, NodeEvent};
use rand_core::OsRng;

async fn node(cfg: NodeConfig) -> Node {
    Node::bind(Identity::generate(&mut OsRng), cfg)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throwaway_identities_do_not_grow_the_peer_table() {
    const MAX_PEERS: usize = 8;
    const VISITORS: usize = 40;
    let mut victim = node(NodeConfig {
        max_peers: MAX_PEERS,
        ..NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let addr = victim.local_addr();
    let mut peak = 0;
    for i in 0..VISITORS {
        let v = node(NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())).await;
        v.connect(victim.fingerprint(), vec![addr]).await;
        v.send(victim.fingerprint(), Bytes::from(format!("visitor {i}")))
            .await
            .unwrap();
        // The visitor had its chance: its message arrived.
        let got = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Some(NodeEvent::Message { from, .. }) = victim.next_event().await {
                    if from == v.fingerprint() {
                        return;
                    }
                }
            }
        })
        .await;
        assert!(got.is_ok(), "visitor {i} delivered");
        v.shutdown(Duration::from_millis(200)).await;
        peak = peak.max(victim.peer_table().await.0);
    }
    let (entries, evicted) = victim.peer_table().await;
    println!(
        "{VISITORS} identities visited: peer table {entries} entries (peak {peak}, cap {MAX_PEERS} + live), {evicted} evicted"
    );
    // At most MAX_PEERS idle entries plus the live connection of the visitor being served.
    assert!(peak <= MAX_PEERS + 1, "peak {peak}");
    assert!(evicted as usize >= VISITORS - MAX_PEERS - 1);
    // A good peer still gets through after the stream of visitors.
    let good = node(NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())).await;
    good.connect(victim.fingerprint(), vec![addr]).await;
    good.send(victim.fingerprint(), Bytes::from_static(b"still here"))
        .await
        .unwrap();
    let ok = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(NodeEvent::Message { body, .. }) = victim.next_event().await {
                if &body[..] == b"still here" {
                    return;
                }
            }
        }
    })
    .await;
    assert!(ok.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_that_does_not_read_bounds_the_event_queue_in_bytes() {
    const BUDGET: usize = 256 * 1024;
    const BODY: usize = 16 * 1024;
    const COUNT: usize = 200; // 3.2 MB: more than twelve budgets
    let mut b = node(NodeConfig {
        event_queue_bytes: BUDGET,
        ..NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let a = node(NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())).await;
    a.connect(b.fingerprint(), vec![b.local_addr()]).await;
    a.send_many(
        b.fingerprint(),
        (0..COUNT).map(|i| Bytes::from(vec![(i % 251) as u8; BODY])),
    )
    .await
    .unwrap();
    // B's application reads nothing. First the queue must have had its chance to fill.
    let filled = tokio::time::timeout(Duration::from_secs(30), async {
        while b.event_bytes_queued() + BODY <= BUDGET {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(filled.is_ok(), "queued {} bytes", b.event_bytes_queued());
    let queued = b.event_bytes_queued();
    let waiting = a.peer_info(&b.fingerprint()).await.unwrap();
    println!(
        "application not reading: {queued} message bytes queued (budget {BUDGET}); \
         sender still holds {} queued + {} in flight of {COUNT}",
        waiting.queued, waiting.inflight
    );
    assert!(queued <= BUDGET);
    assert!(
        waiting.queued + waiting.inflight > 0,
        "back-pressure reached the sender"
    );
    // Nothing is lost: once the application reads, everything arrives.
    let mut got = 0;
    while got < COUNT {
        match tokio::time::timeout(Duration::from_secs(30), b.next_event()).await {
            Ok(Some(NodeEvent::Message { body, .. })) => {
                assert_eq!(body.len(), BODY);
                got += 1;
            }
            Ok(Some(_)) => {}
            other => panic!("after {got} messages: {other:?}"),
        }
    }
    assert!(b.event_bytes_queued() <= BUDGET);
}

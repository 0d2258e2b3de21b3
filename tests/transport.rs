//! Two real nodes on loopback (one process, real UDP sockets, real QUIC): delivery,
//! acknowledgement, de-duplication, reconnect after a cut connection.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use dna_p2p::crypto::{Fingerprint, Identity};
use dna_p2p::daemon::{Node, NodeConfig, NodeEvent};
use rand_core::OsRng;

async fn node() -> Node {
    let cfg = NodeConfig {
        reconnect_initial: Duration::from_millis(100),
        ..NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
    };
    Node::bind(Identity::generate(&mut OsRng), cfg)
        .await
        .unwrap()
}

fn body(i: u32) -> Bytes {
    let mut v = i.to_be_bytes().to_vec();
    v.extend_from_slice(&[0xAB; 60]);
    Bytes::from(v)
}

#[derive(Default)]
struct Tally {
    received: Vec<u32>,
    acked: usize,
    ups: usize,
    downs: usize,
}

impl Tally {
    fn on(&mut self, e: NodeEvent, from: Fingerprint) {
        match e {
            NodeEvent::Message { from: f, body, .. } => {
                assert_eq!(f, from);
                self.received
                    .push(u32::from_be_bytes(body[..4].try_into().unwrap()));
            }
            NodeEvent::Acked { peer, ids } => {
                assert_eq!(peer, from);
                self.acked += ids.len();
            }
            NodeEvent::PeerUp { peer, .. } => {
                assert_eq!(peer, from);
                self.ups += 1;
            }
            NodeEvent::PeerDown { .. } => self.downs += 1,
            _ => {}
        }
    }

    fn check_exactly_once(&self, n: u32) {
        assert_eq!(self.received.len(), n as usize, "delivered count");
        let set: HashSet<u32> = self.received.iter().copied().collect();
        assert_eq!(set.len(), n as usize, "no duplicates");
        assert!(set.iter().all(|i| *i < n));
    }
}

/// Sends `n` each way; if `cut_after` is set, A cuts the connection once it received that
/// many. Runs until both sides received and had acknowledged all `n`.
async fn exchange(n: u32, cut_after: Option<usize>) -> (Tally, Tally) {
    let mut a = node().await;
    let mut b = node().await;
    let (fa, fb) = (a.fingerprint(), b.fingerprint());
    a.connect(fb, vec![b.local_addr()]).await;
    for i in 0..n {
        a.send(fb, body(i)).await.unwrap();
        b.send(fa, body(i)).await.unwrap();
    }
    let (mut ta, mut tb) = (Tally::default(), Tally::default());
    let mut cut = cut_after;
    let done = |ta: &Tally, tb: &Tally| {
        ta.received.len() >= n as usize
            && tb.received.len() >= n as usize
            && ta.acked >= n as usize
            && tb.acked >= n as usize
    };
    let run = async {
        while !done(&ta, &tb) {
            tokio::select! {
                Some(e) = a.next_event() => ta.on(e, fb),
                Some(e) = b.next_event() => tb.on(e, fa),
            }
            if let Some(k) = cut {
                if ta.received.len() >= k {
                    a.reset_connection(fb).await;
                    cut = None;
                }
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .is_err()
    {
        panic!(
            "exchange timed out: A received {} acked {} ups {} downs {} ({:?}); B received {} acked {} ups {} downs {} ({:?})",
            ta.received.len(), ta.acked, ta.ups, ta.downs, a.peer_info(&fb).await,
            tb.received.len(), tb.acked, tb.ups, tb.downs, b.peer_info(&fa).await,
        );
    }
    // Let any late duplicate surface before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(e) = a.events_try_recv() {
        ta.on(e, fb);
    }
    while let Ok(e) = b.events_try_recv() {
        tb.on(e, fa);
    }
    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
    (ta, tb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_each_way_all_acked_none_lost_none_duplicated() {
    let (ta, tb) = exchange(10_000, None).await;
    ta.check_exactly_once(10_000);
    tb.check_exactly_once(10_000);
    assert_eq!((ta.acked, tb.acked), (10_000, 10_000));
    assert_eq!((ta.ups, tb.ups), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_loses_and_duplicates_nothing() {
    let (ta, tb) = exchange(10_000, Some(3_000)).await;
    ta.check_exactly_once(10_000);
    tb.check_exactly_once(10_000);
    assert_eq!((ta.acked, tb.acked), (10_000, 10_000));
    assert!(
        ta.ups >= 2 && tb.ups >= 2,
        "reconnected: {} / {} PeerUp",
        ta.ups,
        tb.ups
    );
    assert!(ta.downs >= 1, "the cut was seen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_rtt_and_peer_up_down() {
    let fast = |addr: &str| NodeConfig {
        conn: dna_p2p::session::ConnConfig {
            ping_interval: Duration::from_millis(100),
            ..Default::default()
        },
        ..NodeConfig::listening_on(addr.parse().unwrap())
    };
    let mut a = Node::bind(Identity::generate(&mut OsRng), fast("127.0.0.1:0"))
        .await
        .unwrap();
    let b = Node::bind(Identity::generate(&mut OsRng), fast("127.0.0.1:0"))
        .await
        .unwrap();
    let fb = b.fingerprint();
    b.set_presence(dna_p2p::session::PresenceStatus::Away).await;
    a.connect(b.fingerprint(), vec![b.local_addr()]).await;
    let (mut up, mut rtts, mut presence) = (None, 0, None);
    tokio::time::timeout(Duration::from_secs(10), async {
        while up.is_none() || rtts < 3 || presence.is_none() {
            match a.next_event().await.unwrap() {
                NodeEvent::PeerUp { peer, path, rtt } => up = Some((peer, path, rtt)),
                NodeEvent::Rtt { peer, rtt } => {
                    assert_eq!(peer, b.fingerprint());
                    assert!(rtt < Duration::from_secs(1));
                    rtts += 1;
                }
                NodeEvent::Presence { peer, status } => presence = Some((peer, status)),
                _ => {}
            }
        }
    })
    .await
    .expect("no PeerUp / RTT / presence");
    let (peer, path, _) = up.unwrap();
    assert_eq!(peer, b.fingerprint());
    assert_eq!(path, dna_p2p::daemon::Path::Direct(b.local_addr()));
    assert_eq!(
        presence,
        Some((b.fingerprint(), dna_p2p::session::PresenceStatus::Away))
    );
    // B leaves: A sees the peer go down.
    b.shutdown(Duration::from_millis(100)).await;
    let down = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let NodeEvent::PeerDown { peer, code, .. } = a.next_event().await.unwrap() {
                return (peer, code);
            }
        }
    })
    .await
    .expect("no PeerDown");
    assert_eq!(down.0, fb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_what_is_queued() {
    let a = node().await;
    let mut b = node().await;
    let fb = b.fingerprint();
    a.connect(fb, vec![b.local_addr()]).await;
    a.send_many(fb, (0..2000).map(body)).await.unwrap();
    // Shut down at once: the node waits until B acknowledged everything.
    a.shutdown(Duration::from_secs(20)).await;
    let mut got = HashSet::new();
    while let Ok(e) = b.events_try_recv() {
        if let NodeEvent::Message { body, .. } = e {
            got.insert(u32::from_be_bytes(body[..4].try_into().unwrap()));
        }
    }
    assert_eq!(
        got.len(),
        2000,
        "every queued message was delivered before shutdown returned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_refuses_more() {
    let cfg = NodeConfig {
        max_connections: 1,
        ..NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
    };
    let hub = Node::bind(Identity::generate(&mut OsRng), cfg)
        .await
        .unwrap();
    let first = node().await;
    let second = node().await;
    first
        .connect(hub.fingerprint(), vec![hub.local_addr()])
        .await;
    for _ in 0..100 {
        if first.peer_info(&hub.fingerprint()).await.unwrap().connected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(first.peer_info(&hub.fingerprint()).await.unwrap().connected);
    second
        .connect(hub.fingerprint(), vec![hub.local_addr()])
        .await;
    // The hub had its chance: it saw the second dial and refused it by the limit.
    for _ in 0..500 {
        if hub.transport_stats().await.refused_full > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        hub.transport_stats().await.refused_full >= 1,
        "refused by the limit"
    );
    assert!(
        !second
            .peer_info(&hub.fingerprint())
            .await
            .unwrap()
            .connected,
        "over the limit"
    );
    assert_eq!(hub.connection_count(), 1);
}

//! The daemon's event stream (spec/10-control.md §2): every node event as one JSON line, on
//! stdout and to each control connection that sent `{"cmd":"subscribe"}`; plus what the
//! status panel remembers per peer (the latest PING RTT, when it was last heard from).
//!
//! Fan-out never waits: each subscriber has a queue of `[control] subscriber_queue` lines
//! (default [`SUBSCRIBER_QUEUE`]); one whose
//! queue is full is dropped (its writer finishes the line it was writing, adds a final
//! `{"event":"error",…}` line if the socket takes it within [`FINAL_LINE_GRACE`], and
//! closes), so a client that stops reading costs the node nothing but that bounded queue.

// The control server is a driver: it reads the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Notify};

use dna_p2p::crypto::{Fingerprint, MessageKind};
use dna_p2p::daemon::{NodeEvent, NodeHandle, ReachStage};

/// Event lines queued for one subscriber before it counts as too slow and is dropped
/// (the default of `[control] subscriber_queue`).
pub(crate) const SUBSCRIBER_QUEUE: usize = 1024;
/// How long a dropped subscriber's socket may take the rest of its current line and the
/// final error line before it is closed anyway.
pub(crate) const FINAL_LINE_GRACE: Duration = Duration::from_secs(10);
/// Peers the panel remembers (RTT, last seen); the one heard from longest ago goes first.
pub(crate) const MAX_SEEN: usize = 1024;
/// How often the watcher compares peers' paths and the NAT facts, to report changes.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// What the panel remembers of a peer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Seen {
    /// The latest PING/PONG round trip.
    pub rtt: Option<Duration>,
    /// When we last heard from it (Unix ms): an event naming it.
    pub last_seen_ms: u64,
    /// Whether its session is up (`peer_up` seen after the last `peer_down`).
    pub up: bool,
}

struct Sub {
    tx: mpsc::Sender<Arc<str>>,
    kill: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    subs: HashMap<u64, Sub>,
    next_id: u64,
    seen: HashMap<Fingerprint, Seen>,
    /// `ping` requests waiting for a peer's next RTT (at most one per control client).
    rtt_waiters: Vec<(Fingerprint, oneshot::Sender<Duration>)>,
}

/// `[control]` in the daemon's config file (spec/10-control.md §5). Every key optional.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ControlConfig {
    /// Event lines queued for one subscriber before it is dropped as too slow (default
    /// 1024).
    pub subscriber_queue: usize,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            subscriber_queue: SUBSCRIBER_QUEUE,
        }
    }
}

/// The fan-out and the per-peer memory, shared by the event loop and the control socket.
pub(crate) struct Hub {
    inner: Mutex<Inner>,
    /// Each subscriber's queue, in lines.
    pub queue: usize,
    /// Event lines published.
    pub published: AtomicU64,
    /// Subscribers dropped for being too slow.
    pub dropped: AtomicU64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Hub {
    /// A hub with no subscribers yet.
    pub(crate) fn new(cfg: &ControlConfig) -> Hub {
        Hub {
            inner: Mutex::default(),
            queue: cfg.subscriber_queue.max(1),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one node event: remembers what the panel needs, answers `ping` waiters, and
    /// returns its JSON line (also sent to every subscriber).
    pub(crate) fn node_event(&self, ev: &NodeEvent) -> Option<Value> {
        let (v, peer) = event_json(ev)?;
        // Progress of our own attempt says nothing about the peer.
        if matches!(ev, NodeEvent::Reaching { .. }) {
            self.publish(&v);
            return Some(v);
        }
        {
            let mut g = self.lock();
            let now = unix_ms();
            if !g.seen.contains_key(&peer) && g.seen.len() >= MAX_SEEN {
                if let Some(old) = g.seen.iter().min_by_key(|(_, s)| s.last_seen_ms) {
                    let old = *old.0;
                    g.seen.remove(&old);
                }
            }
            let s = g.seen.entry(peer).or_default();
            s.last_seen_ms = now;
            match ev {
                NodeEvent::PeerUp { .. } => s.up = true,
                NodeEvent::PeerDown { .. } => s.up = false,
                NodeEvent::Rtt { rtt, .. } => {
                    s.rtt = Some(*rtt);
                    let rtt = *rtt;
                    let waiters = std::mem::take(&mut g.rtt_waiters);
                    for (p, w) in waiters {
                        if p == peer {
                            let _ = w.send(rtt);
                        } else if !w.is_closed() {
                            g.rtt_waiters.push((p, w));
                        }
                    }
                }
                _ => {}
            }
        }
        self.publish(&v);
        Some(v)
    }

    /// Sends one event line to every subscriber; drops those whose queue is full.
    pub(crate) fn publish(&self, v: &Value) {
        self.published.fetch_add(1, Ordering::Relaxed);
        let mut g = self.lock();
        if g.subs.is_empty() {
            return;
        }
        let line: Arc<str> = Arc::from(format!("{v}\n"));
        g.subs.retain(|id, s| match s.tx.try_send(line.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(subscriber = id, "control subscriber too slow: dropped");
                self.dropped.fetch_add(1, Ordering::Relaxed);
                s.kill.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// Live subscribers.
    pub(crate) fn subscribers(&self) -> usize {
        self.lock().subs.len()
    }

    /// What the panel remembers of every peer.
    pub(crate) fn seen(&self) -> HashMap<Fingerprint, Seen> {
        self.lock().seen.clone()
    }

    /// A receiver of `peer`'s next RTT measurement.
    pub(crate) fn next_rtt(&self, peer: Fingerprint) -> oneshot::Receiver<Duration> {
        let (tx, rx) = oneshot::channel();
        let mut g = self.lock();
        g.rtt_waiters.retain(|(_, w)| !w.is_closed());
        g.rtt_waiters.push((peer, tx));
        rx
    }

    fn add(&self) -> (u64, mpsc::Receiver<Arc<str>>, Arc<Notify>) {
        let (tx, rx) = mpsc::channel(self.queue);
        let kill = Arc::new(Notify::new());
        let mut g = self.lock();
        let id = g.next_id;
        g.next_id += 1;
        g.subs.insert(
            id,
            Sub {
                tx,
                kill: kill.clone(),
            },
        );
        (id, rx, kill)
    }

    fn remove(&self, id: u64) {
        self.lock().subs.remove(&id);
    }
}

/// A subscribed control connection: the answer line, then event lines until the client
/// closes or falls `queue` lines behind. What the client sends from now on is
/// read and ignored (so its close is noticed).
pub(crate) async fn stream(
    hub: Arc<Hub>,
    mut r: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    mut w: tokio::net::unix::OwnedWriteHalf,
) {
    let (id, mut rx, kill) = hub.add();
    let hello = json!({"ok": true, "subscribed": true, "queue": hub.queue});
    if w.write_all(format!("{hello}\n").as_bytes()).await.is_err() {
        hub.remove(id);
        return;
    }
    let closed = Arc::new(Notify::new());
    let reader = {
        let closed = closed.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
            closed.notify_one();
        })
    };
    let mut killed = false;
    'lines: loop {
        // Biased, the kill first: a dropped subscriber's queue is still full, and a random
        // pick could drain it to the end and close without the final error line.
        let line = tokio::select! {
            biased;
            _ = kill.notified() => { killed = true; break }
            _ = closed.notified() => break,
            l = rx.recv() => match l { Some(l) => l, None => break },
        };
        let mut pos = 0;
        while pos < line.len() {
            tokio::select! {
                n = w.write(&line.as_bytes()[pos..]) => match n {
                    Ok(n) if n > 0 => pos += n,
                    _ => break 'lines,
                },
                _ = kill.notified() => {
                    killed = true;
                    // Finish the line so the stream stays one object per line.
                    let rest = &line.as_bytes()[pos..];
                    if tokio::time::timeout(FINAL_LINE_GRACE, w.write_all(rest)).await.map_or(true, |r| r.is_err()) {
                        break 'lines;
                    }
                    break 'lines;
                }
                _ = closed.notified() => break 'lines,
            }
        }
    }
    hub.remove(id);
    if killed {
        let bye = json!({"event": "error", "error": format!(
            "subscriber too slow: more than {} event lines behind; dropped", hub.queue)});
        let _ = tokio::time::timeout(FINAL_LINE_GRACE, w.write_all(format!("{bye}\n").as_bytes()))
            .await;
    }
    let _ = w.shutdown().await;
    reader.abort();
}

/// How a user allows a relay, as events and answers say it.
pub(crate) const RELAY_HINT: &str = "only a relay can carry it: allow one for this contact with \
    `dna contacts allow-relay <contact>`, or for everyone with relay = \"auto\"";

/// One node event as a JSON line, and the peer it names.
fn event_json(ev: &NodeEvent) -> Option<(Value, Fingerprint)> {
    Some(match ev {
        NodeEvent::Message {
            from,
            id,
            body,
            timestamp_ms,
            kind,
        } => {
            let mut v = json!({
                "event": "message",
                "from": from.to_string(),
                "id": hex::encode(id.0),
                "sent_ms": timestamp_ms,
            });
            if *kind == MessageKind::TEXT {
                v["text"] = json!(String::from_utf8_lossy(body));
            } else {
                // Another application protocol's message: its bytes, not text.
                v["kind"] = json!(kind.to_string());
                v["body_hex"] = json!(hex::encode(body));
            }
            (v, *from)
        }
        NodeEvent::PeerUp { peer, path, rtt } => (
            json!({
                "event": "peer_up",
                "peer": peer.to_string(),
                "path": path.name(),
                "addr": path.addr().to_string(),
                "rtt_ms": rtt.as_secs_f64() * 1e3,
            }),
            *peer,
        ),
        NodeEvent::PeerDown { peer, code, reason } => (
            json!({"event": "peer_down", "peer": peer.to_string(), "code": code, "reason": reason}),
            *peer,
        ),
        NodeEvent::Acked { peer, ids } => (
            json!({"event": "acked", "peer": peer.to_string(), "count": ids.len(),
                "ids": ids.iter().map(|i| hex::encode(i.0)).collect::<Vec<_>>()}),
            *peer,
        ),
        NodeEvent::MailboxDelivered { peer, ids } => (
            json!({"event": "acked", "peer": peer.to_string(), "count": ids.len(),
                "ids": ids.iter().map(|i| hex::encode(i.0)).collect::<Vec<_>>(), "path": "mailbox"}),
            *peer,
        ),
        NodeEvent::MailboxRefused { peer, reason } => (
            json!({"event": "mailbox_refused", "peer": peer.to_string(), "reason": reason}),
            *peer,
        ),
        NodeEvent::Rtt { peer, rtt } => (
            json!({"event": "rtt", "peer": peer.to_string(), "rtt_ms": rtt.as_secs_f64() * 1e3}),
            *peer,
        ),
        NodeEvent::Presence { peer, status } => (
            json!({"event": "presence", "peer": peer.to_string(), "status": format!("{status:?}").to_lowercase()}),
            *peer,
        ),
        NodeEvent::RelayNeeded { peer } => (
            json!({"event": "relay_needed", "peer": peer.to_string(),
                "hint": RELAY_HINT}),
            *peer,
        ),
        NodeEvent::Reaching { peer, stage } => {
            let mut v =
                json!({"event": "reaching", "peer": peer.to_string(), "stage": stage.name()});
            match stage {
                ReachStage::Connect(via) | ReachStage::Relay(via) => {
                    v["via"] = json!(via.to_string());
                }
                ReachStage::Punch(predicting) => v["prediction"] = json!(predicting),
                _ => {}
            }
            (v, *peer)
        }
        _ => return None,
    })
}

/// Reports what the node's events do not carry: a peer's path changing (`relay` → `direct`
/// after an upgrade) and the NAT facts changing (class, reachability, public addresses).
/// Runs only while someone subscribes; the first look after that sets the baseline.
pub(crate) fn spawn_watch(h: NodeHandle, hub: Arc<Hub>) {
    tokio::spawn(async move {
        let mut paths: Option<HashMap<Fingerprint, &'static str>> = None;
        let mut nat: Option<Value> = None;
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            if hub.subscribers() == 0 {
                (paths, nat) = (None, None);
                continue;
            }
            let now: HashMap<Fingerprint, &'static str> = h
                .peers()
                .await
                .into_iter()
                .map(|p| (p.peer, p.path))
                .collect();
            if let Some(before) = &paths {
                for (peer, path) in &now {
                    if let Some(was) = before.get(peer).filter(|w| *w != path) {
                        hub.publish(&json!({"event": "path", "peer": peer.to_string(),
                            "path": path, "was": was}));
                    }
                }
            }
            paths = Some(now);
            let facts = nat_facts(&h);
            if nat.as_ref().is_some_and(|n| *n != facts) {
                let mut v = facts.clone();
                v["event"] = json!("nat");
                hub.publish(&v);
            }
            nat = Some(facts);
        }
    });
}

/// The NAT facts the panel shows: class, reachability, public (non-host) addresses.
pub(crate) fn nat_facts(h: &NodeHandle) -> Value {
    let st = h.nat_status();
    json!({
        "nat": st.class.map(|c| c.name()),
        "reachable": st.presence().reachable,
        "public": st.candidates.iter()
            .filter(|c| c.kind.name() != "host")
            .map(|c| c.addr.to_string())
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    #[tokio::test]
    async fn a_subscriber_that_does_not_read_is_dropped_without_blocking_the_publisher() {
        let hub = Arc::new(Hub::new(&ControlConfig {
            subscriber_queue: 4,
        }));
        let (client, server) = tokio::net::UnixStream::pair().unwrap();
        let (r, w) = server.into_split();
        let task = tokio::spawn(stream(hub.clone(), r, w));
        while hub.subscribers() == 0 {
            tokio::task::yield_now().await;
        }
        // One thread: the subscriber's writer cannot run while we publish, as if its
        // client never read. Publishing never waits: the fifth line finds the queue full.
        for n in 0..100 {
            hub.publish(&json!({"event": "test", "n": n}));
        }
        assert_eq!(hub.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(hub.subscribers(), 0);
        assert_eq!(hub.published.load(Ordering::Relaxed), 100);
        // The client reads: whole lines, the last one the error, then the end.
        let mut lines = tokio::io::BufReader::new(client).lines();
        let mut got = Vec::new();
        while let Some(l) = lines.next_line().await.unwrap() {
            got.push(serde_json::from_str::<Value>(&l).unwrap());
        }
        task.await.unwrap();
        println!(
            "queue 4, 100 lines published: the subscriber got {} lines, then {}",
            got.len() - 2,
            got.last().unwrap()
        );
        assert_eq!(got[0]["subscribed"], true);
        assert_eq!(got.last().unwrap()["event"], "error");
        assert!(got.len() - 2 <= 4, "at most its queue");
    }

    #[test]
    fn rtt_reaches_the_ping_waiter_and_the_book_forgets_the_oldest() {
        let hub = Hub::new(&ControlConfig::default());
        let peer = Fingerprint([1; 32]);
        let mut rx = hub.next_rtt(peer);
        let rtt = Duration::from_millis(3);
        hub.node_event(&NodeEvent::Rtt { peer, rtt });
        assert_eq!(rx.try_recv().unwrap(), rtt);
        assert_eq!(hub.seen()[&peer].rtt, Some(rtt));
        for i in 0..MAX_SEEN as u32 + 10 {
            let mut fp = [0; 32];
            fp[..4].copy_from_slice(&i.to_be_bytes());
            fp[31] = 2;
            hub.node_event(&NodeEvent::Rtt {
                peer: Fingerprint(fp),
                rtt,
            });
        }
        assert_eq!(hub.seen().len(), MAX_SEEN);
    }
}

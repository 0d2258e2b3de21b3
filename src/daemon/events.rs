//! The queue of node events for the application, bounded by count (`NodeConfig::event_queue`)
//! and by message bytes (`NodeConfig::event_queue_bytes`; spec/06-node.md §4, and
//! spec/03-session.md §9.1 for the batching).
//!
//! Producers hand over whole batches: a connection queues everything one read of its stream
//! produced at once, so the application's task is woken once per batch, not once per message
//! (per-message wake-ups made the receiving worker and the application's thread take turns
//! on one core, two context switches a few messages). Room is taken per batch before it is
//! queued — a batch larger than the limits goes in pieces — and given back when the
//! application has taken a batch's last event (or an eighth of the limits), so events the
//! application has not taken yet always count.

use std::sync::Arc;

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, Semaphore};

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::crypto::{Fingerprint, MessageId};
use crate::session::PresenceStatus;

/// How a peer is reached: where its session's datagrams go (spec/07-relay.md §1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Path {
    /// A direct UDP path to this address (a punched pair's address, not the local alias
    /// QUIC may know it by).
    Direct(SocketAddr),
    /// Through a rendezvous node's bundled relay: the peer's token there (spec/07 §1).
    Relay(SocketAddr),
    /// Through a TURN server: the peer's relayed address, or the peer's address reached
    /// through our own allocation (spec/07 §2–§3).
    Turn(SocketAddr),
}

impl Path {
    /// `direct`, `relay` or `turn`: the names `dna status`, the outbox and events use.
    pub fn name(self) -> &'static str {
        match self {
            Path::Direct(_) => "direct",
            Path::Relay(_) => "relay",
            Path::Turn(_) => "turn",
        }
    }

    /// The address the path goes to.
    pub fn addr(self) -> SocketAddr {
        match self {
            Path::Direct(a) | Path::Relay(a) | Path::Turn(a) => a,
        }
    }
}

/// What the node reports to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A peer is connected, authenticated and its end-to-end session is up.
    PeerUp {
        /// Who.
        peer: Fingerprint,
        /// How it is reached.
        path: Path,
        /// QUIC's round-trip estimate from the handshake.
        rtt: Duration,
    },
    /// A connection to a peer ended.
    PeerDown {
        /// Who.
        peer: Fingerprint,
        /// The close code (spec/03-session.md §7).
        code: u32,
        /// Why, in words.
        reason: String,
    },
    /// A message arrived (each message ID once).
    Message {
        /// The authenticated sender.
        from: Fingerprint,
        /// The message ID.
        id: MessageId,
        /// Sender's timestamp, ms since the Unix epoch.
        timestamp_ms: u64,
        /// The application protocol it belongs to (kinds registered with
        /// [`NodeConfig::apps`](super::NodeConfig) go to their [`App`](super::App) instead).
        kind: crate::crypto::MessageKind,
        /// The body.
        body: Bytes,
    },
    /// The peer acknowledged these messages: they are delivered.
    Acked {
        /// Who acknowledged.
        peer: Fingerprint,
        /// Which messages, in send order.
        ids: Vec<MessageId>,
    },
    /// The recipient's mailbox receipt lists these messages: they were delivered through
    /// its mailbox (spec/09-mailbox.md §5).
    MailboxDelivered {
        /// The recipient.
        peer: Fingerprint,
        /// Which messages.
        ids: Vec<MessageId>,
    },
    /// Putting messages in `peer`'s mailbox failed (`reason`: "mailbox full", "no KEM key
    /// published", "no storing node", …): they stay queued and are put again after a
    /// backoff (spec/09-mailbox.md §7).
    MailboxRefused {
        /// The recipient.
        peer: Fingerprint,
        /// Why, in a few words.
        reason: &'static str,
    },
    /// A fresh round-trip time from PING/PONG.
    Rtt {
        /// Who.
        peer: Fingerprint,
        /// The measurement.
        rtt: Duration,
    },
    /// The peer announced its presence.
    Presence {
        /// Who.
        peer: Fingerprint,
        /// Its status.
        status: PresenceStatus,
    },
    /// Messages wait for `peer` and only a relay could carry them, but the user allowed
    /// none for it (`relay = "ask"`, seed 003): they stay queued (and go to its mailbox)
    /// until a direct path appears or the user allows a relay
    /// ([`NodeHandle::contact_allow_relay`](super::NodeHandle::contact_allow_relay)).
    RelayNeeded {
        /// Who.
        peer: Fingerprint,
    },
    /// Progress of reaching a peer (spec/10-control.md §2): the step the node is on. Sent
    /// only when the queue has room (progress is never worth waiting for).
    Reaching {
        /// Whom.
        peer: Fingerprint,
        /// The step.
        stage: ReachStage,
    },
}

/// The steps of reaching a peer (spec/05-nat.md §4–§5, spec/07-relay.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReachStage {
    /// Looking its presence record up in the DHT.
    Lookup,
    /// Dialing its published addresses.
    Dial,
    /// Sending CONNECT through this rendezvous node.
    Connect(SocketAddr),
    /// Hole punching; `true` with port prediction (spec/05-nat.md §5.5).
    Punch(bool),
    /// Asking this node to relay.
    Relay(SocketAddr),
}

impl ReachStage {
    /// Its name in the event stream.
    pub fn name(self) -> &'static str {
        match self {
            ReachStage::Lookup => "lookup",
            ReachStage::Dial => "dial",
            ReachStage::Connect(_) => "connect",
            ReachStage::Punch(_) => "punch",
            ReachStage::Relay(_) => "relay",
        }
    }
}

/// The limits, and the room left under them.
struct Room {
    events: Semaphore,
    bytes: Semaphore,
    max_events: usize,
    max_bytes: usize,
}

impl Room {
    /// The bytes an event counts for: a message's body, at most the whole budget.
    fn bytes_of(&self, ev: &NodeEvent) -> usize {
        match ev {
            NodeEvent::Message { body, .. } => body.len().min(self.max_bytes),
            _ => 0,
        }
    }
}

/// An event queue of at most `max_events` events holding at most `max_bytes` message bytes
/// (both at least 1 and at most `u32::MAX`).
pub(crate) fn channel(max_events: usize, max_bytes: usize) -> (EventTx, EventRx) {
    let max_events = max_events.clamp(1, u32::MAX as usize);
    let max_bytes = max_bytes.clamp(1, u32::MAX as usize);
    let room = Arc::new(Room {
        events: Semaphore::new(max_events),
        bytes: Semaphore::new(max_bytes),
        max_events,
        max_bytes,
    });
    let (tx, rx) = mpsc::unbounded_channel();
    (
        EventTx {
            tx,
            room: room.clone(),
        },
        EventRx {
            rx,
            batch: Vec::new().into_iter(),
            owed_events: 0,
            owed_bytes: 0,
            room,
        },
    )
}

/// The producers' side.
pub(crate) struct EventTx {
    tx: mpsc::UnboundedSender<Vec<NodeEvent>>,
    room: Arc<Room>,
}

impl EventTx {
    /// Queues `ev`, waiting while the application is behind; `Err` once it is gone.
    pub(crate) async fn send(&self, ev: NodeEvent) -> Result<(), ()> {
        self.send_all(vec![ev]).await
    }

    /// Queues `ev` if there is room now; `false` (dropped) otherwise, or once the
    /// application is gone. For events nobody must wait for (progress).
    pub(crate) fn try_send(&self, ev: NodeEvent) -> bool {
        let room = &*self.room;
        let Ok(slot) = room.events.try_acquire() else {
            return false;
        };
        slot.forget();
        self.tx.send(vec![ev]).is_ok()
    }

    /// Queues `evs` in order, waiting while the application is behind; `Err` once it is gone.
    pub(crate) async fn send_all(&self, mut evs: Vec<NodeEvent>) -> Result<(), ()> {
        let room = &*self.room;
        while !evs.is_empty() {
            // The longest prefix within the limits (every event fits alone).
            let (mut n, mut bytes) = (0, 0);
            for ev in &evs {
                let b = room.bytes_of(ev);
                if n == room.max_events || (n > 0 && bytes + b > room.max_bytes) {
                    break;
                }
                n += 1;
                bytes += b;
            }
            let rest = if n < evs.len() {
                evs.split_off(n)
            } else {
                Vec::new()
            };
            // Both limits are ≤ u32::MAX, so are n and bytes.
            let slots = room.events.acquire_many(n as u32).await.map_err(|_| ())?;
            if bytes > 0 {
                room.bytes
                    .acquire_many(bytes as u32)
                    .await
                    .map_err(|_| ())?
                    .forget();
            }
            slots.forget();
            self.tx.send(evs).map_err(|_| ())?;
            evs = rest;
        }
        Ok(())
    }
}

/// The application's side.
pub(crate) struct EventRx {
    rx: mpsc::UnboundedReceiver<Vec<NodeEvent>>,
    /// The batch being taken.
    batch: std::vec::IntoIter<NodeEvent>,
    /// Room of events taken and not yet given back.
    owed_events: usize,
    owed_bytes: usize,
    room: Arc<Room>,
}

impl EventRx {
    /// The next event; `None` once every producer is gone.
    pub(crate) async fn recv(&mut self) -> Option<NodeEvent> {
        loop {
            if let Some(ev) = self.take() {
                return Some(ev);
            }
            self.batch = self.rx.recv().await?.into_iter();
        }
    }

    /// The next event if one is queued.
    pub(crate) fn try_recv(&mut self) -> Result<NodeEvent, TryRecvError> {
        loop {
            if let Some(ev) = self.take() {
                return Ok(ev);
            }
            self.batch = self.rx.try_recv()?.into_iter();
        }
    }

    fn take(&mut self) -> Option<NodeEvent> {
        let ev = self.batch.next()?;
        self.owed_events += 1;
        self.owed_bytes += self.room.bytes_of(&ev);
        if self.batch.len() == 0
            || self.owed_events >= self.room.max_events / 8
            || self.owed_bytes >= self.room.max_bytes / 8
        {
            self.give_back();
        }
        Some(ev)
    }

    fn give_back(&mut self) {
        if self.owed_events > 0 {
            self.room.events.add_permits(self.owed_events);
        }
        if self.owed_bytes > 0 {
            self.room.bytes.add_permits(self.owed_bytes);
        }
        (self.owed_events, self.owed_bytes) = (0, 0);
    }
}

impl EventRx {
    /// Message bytes queued and not yet given back (at most `event_queue_bytes`).
    pub(crate) fn bytes_queued(&self) -> usize {
        self.room
            .max_bytes
            .saturating_sub(self.room.bytes.available_permits())
    }
}

impl Drop for EventRx {
    /// Producers waiting for room learn that the application is gone.
    fn drop(&mut self) {
        self.room.events.close();
        self.room.bytes.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Fingerprint, MessageId};
    use bytes::Bytes;

    fn msg(n: u8, len: usize) -> NodeEvent {
        NodeEvent::Message {
            from: Fingerprint([0; 32]),
            id: MessageId([n; 16]),
            timestamp_ms: 0,
            kind: crate::crypto::MessageKind::TEXT,
            body: Bytes::from(vec![n; len]),
        }
    }

    fn id(ev: &NodeEvent) -> u8 {
        match ev {
            NodeEvent::Message { id, .. } => id.0[0],
            _ => panic!("not a message"),
        }
    }

    #[tokio::test]
    async fn batches_keep_order_and_the_limits_hold_until_events_are_taken() {
        // 4 events or 1000 bytes, whichever comes first.
        let (tx, mut rx) = channel(4, 1000);
        // 10 events in one batch go in pieces of at most 4.
        let sender = tokio::spawn(async move {
            tx.send_all((0..10).map(|n| msg(n, 100)).collect())
                .await
                .unwrap();
            // 3 × 400 bytes: pieces of at most 1000 bytes (2 events).
            tx.send_all((10..13).map(|n| msg(n, 400)).collect())
                .await
                .unwrap();
            tx
        });
        // The sender runs until the queue is full (one thread: it runs when we yield).
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        // It had its chance (its first piece took all the room): only that piece is queued.
        assert!(!sender.is_finished());
        assert_eq!(rx.room.events.available_permits(), 0);
        assert_eq!(rx.room.bytes.available_permits(), 600);
        let mut got = Vec::new();
        for _ in 0..13 {
            let ev = rx.recv().await.unwrap();
            got.push(id(&ev));
        }
        assert_eq!(got, (0..13).collect::<Vec<_>>());
        let tx = sender.await.unwrap();
        println!(
            "room after draining: {} events, {} bytes",
            rx.room.events.available_permits(),
            rx.room.bytes.available_permits()
        );
        assert_eq!(rx.room.events.available_permits(), 4);
        assert_eq!(rx.room.bytes.available_permits(), 1000);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        drop(tx);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_waiting_producer_fails_when_the_application_is_gone() {
        let (tx, rx) = channel(1, 1000);
        tx.send(msg(0, 10)).await.unwrap();
        let waiting = tokio::spawn(async move { tx.send(msg(1, 10)).await });
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "the queue is full");
        drop(rx);
        assert_eq!(waiting.await.unwrap(), Err(()));
    }
}

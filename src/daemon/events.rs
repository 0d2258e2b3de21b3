//! What the node reports to the application, and the channel that carries it
//! (spec/06-node.md §4.3): bounded by count and by message bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::crypto::{Fingerprint, MessageId};
use crate::session::PresenceStatus;

/// The events channel, bounded by count and by message bytes (spec/06-node.md §4): a
/// message's body takes its size from a byte budget when it is queued, and gives it back
/// when the application takes it.
pub(crate) struct EventTx {
    pub(crate) tx: mpsc::Sender<NodeEvent>,
    pub(crate) bytes: Arc<tokio::sync::Semaphore>,
    pub(crate) budget: usize,
}

pub(crate) fn event_bytes(ev: &NodeEvent, budget: usize) -> u32 {
    match ev {
        NodeEvent::Message { body, .. } => body.len().min(budget).min(u32::MAX as usize) as u32,
        _ => 0,
    }
}

impl EventTx {
    /// Queues `ev`, waiting while the application is behind; `Err` once it is gone.
    pub(crate) async fn send(&self, ev: NodeEvent) -> Result<(), ()> {
        let n = event_bytes(&ev, self.budget);
        if n > 0 {
            self.bytes.acquire_many(n).await.map_err(|_| ())?.forget();
        }
        self.tx.send(ev).await.map_err(|_| ())
    }
}

/// How a peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Path {
    /// A direct UDP path to this address.
    Direct(SocketAddr),
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
}

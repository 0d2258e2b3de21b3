//! Application protocols on the node (spec/06-node.md §1.5): a protocol names the message
//! kind it owns ([`NodeConfig::apps`](super::NodeConfig)); the node then hands messages of
//! that kind to the protocol's own queue — bounded like the node's events, so a slow
//! protocol holds back only the connections that carry its messages — instead of
//! [`Node::next_event`](super::Node::next_event). The protocol sends with its kind; the
//! node gives every kind the same path: durable outbox, end-to-end encryption, ACKs,
//! re-reaching, the offline mailbox.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::app_stream::{AppStream, AppStreamError};
use super::events::{EventRx, NodeEvent};
use super::node::SendError;
use super::shared::NodeHandle;
use crate::crypto::{Fingerprint, MessageId, MessageKind};

/// A received message of an application protocol's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMessage {
    /// The authenticated sender.
    pub from: Fingerprint,
    /// The message ID (each arrives once).
    pub id: MessageId,
    /// Sender's timestamp, ms since the Unix epoch (informational).
    pub timestamp_ms: u64,
    /// The body.
    pub body: Bytes,
}

/// An application protocol's end of the node: its messages in, its sends out. Taken once
/// per registered kind with [`Node::app`](super::Node::app).
pub struct App {
    kind: MessageKind,
    events: EventRx,
    streams: Option<mpsc::Receiver<AppStream>>,
    node: NodeHandle,
}

/// The streams peers open for one application protocol, apart from its [`App`] (so one
/// task can wait on messages and streams at once): [`App::take_streams`].
pub struct AppStreams(mpsc::Receiver<AppStream>);

impl AppStreams {
    /// The next stream a peer opened; `None` once the node is gone.
    pub async fn accept(&mut self) -> Option<AppStream> {
        self.0.recv().await
    }
}

impl App {
    pub(crate) fn new(
        kind: MessageKind,
        events: EventRx,
        streams: mpsc::Receiver<AppStream>,
        node: NodeHandle,
    ) -> App {
        App {
            kind,
            events,
            streams: Some(streams),
            node,
        }
    }

    /// The queue of streams peers open for this kind, taken out of the `App` (once):
    /// afterwards [`App::accept_stream`] gives `None`.
    pub fn take_streams(&mut self) -> Option<AppStreams> {
        self.streams.take().map(AppStreams)
    }

    /// The kind this protocol owns.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// The next message of this kind; `None` once the node is gone.
    pub async fn recv(&mut self) -> Option<AppMessage> {
        loop {
            match self.events.recv().await? {
                NodeEvent::Message {
                    from,
                    id,
                    timestamp_ms,
                    body,
                    ..
                } => {
                    return Some(AppMessage {
                        from,
                        id,
                        timestamp_ms,
                        body,
                    })
                }
                // Only messages are routed here.
                _ => continue,
            }
        }
    }

    /// Sends `body` to `peer` as a message of this kind (durable, acknowledged, resent,
    /// through the mailbox if the peer stays offline: as any message).
    pub async fn send(&self, peer: Fingerprint, body: Bytes) -> Result<MessageId, SendError> {
        let mut ids = self.node.send_kind(peer, self.kind, [body]).await?;
        ids.pop().ok_or(SendError::ShuttingDown)
    }

    /// Opens a stream of this kind to `peer`, over its live session (spec/03-session.md
    /// §10): bulk data on it never queues the node's messages behind it. The peer must be
    /// connected (a message, or [`NodeHandle::reach`], connects it).
    pub async fn open_stream(&self, peer: Fingerprint) -> Result<AppStream, AppStreamError> {
        self.node.open_stream(peer, self.kind).await
    }

    /// The next stream a peer opened for this kind; `None` once the node is gone. Streams
    /// wait in a queue of [`APP_STREAM_QUEUE`](super::APP_STREAM_QUEUE); a peer's stream
    /// that finds it full is refused.
    pub async fn accept_stream(&mut self) -> Option<AppStream> {
        self.streams.as_mut()?.recv().await
    }

    /// The node, for everything else (connections, peers, the DHT).
    pub fn node(&self) -> &NodeHandle {
        &self.node
    }
}

/// [`NodeHandle::open_stream`].
pub(crate) async fn open_stream(
    handle: &NodeHandle,
    peer: Fingerprint,
    kind: MessageKind,
) -> Result<AppStream, AppStreamError> {
    let links = handle.shared.core.links().await;
    let Some((_, _, h)) = links.into_iter().find(|(f, _, _)| *f == peer) else {
        return Err(AppStreamError::NotConnected);
    };
    super::app_stream::open(&h.conn, h.streams.clone(), kind).await
}

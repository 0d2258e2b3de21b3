//! The message store (spec/06-node.md §3): the outbox, the received messages and their
//! de-duplication, and what was delivered, in a sled database in the data directory, so
//! that a crash of either side loses nothing and doubles nothing.
//!
//! One thread owns the database. Tasks send it [`Cmd`]s over a bounded channel; it takes
//! every command waiting, applies them in order, flushes once and only then answers all of
//! them — a group commit: one `fsync` for a burst of sends and receipts, however many
//! tasks made them.
//!
//! Trees:
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `outbox` | recipient (32) ‖ seq (u64 BE) | id (16) ‖ timestamp ms (u64) ‖ body |
//! | `delivered` | seq (u64 BE) | recipient (32) ‖ id (16) ‖ delivered ms (u64) |
//! | `inbox` | sender (32) ‖ id (16) | seq (u64) ‖ received ms (u64) ‖ timestamp ms (u64) ‖ body |
//!
//! `seq` comes from sled's persistent ID generator, so the outbox keeps send order across
//! restarts. The inbox key is the de-duplication key: a message whose key exists was
//! stored before, and is acknowledged again but not delivered twice.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::crypto::{Fingerprint, Message, MessageId, FINGERPRINT_LEN};
use crate::session::Outgoing;

/// The database's directory name inside the data directory.
pub const DB_DIR: &str = "messages.sled";
/// Most commands one group commit takes.
const BATCH_MAX: usize = 4096;
/// Commands waiting for the store thread before senders wait.
const QUEUE: usize = 1024;

/// The store failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// sled reported an error.
    #[error("message store: {0}")]
    Db(String),
    /// The store thread is gone (shutdown).
    #[error("message store closed")]
    Closed,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> StoreError {
        StoreError::Db(e.to_string())
    }
}

/// A stored received message, as `dna inbox` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The authenticated sender.
    pub from: Fingerprint,
    /// The message ID.
    pub id: MessageId,
    /// When we stored it, ms since the Unix epoch.
    pub received_ms: u64,
    /// The sender's timestamp (informational).
    pub timestamp_ms: u64,
    /// The body.
    pub body: Bytes,
    /// Store order.
    pub seq: u64,
}

/// Received messages stored by one [`Cmd::Received`]: the session counter up to which the
/// connection may now acknowledge, and the messages that were new.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) upto: u64,
    pub(crate) new: Result<Vec<Message>, StoreError>,
}

pub(crate) enum Cmd {
    /// Make these messages to `peer` durable, in order, then answer.
    Enqueue {
        peer: Fingerprint,
        msgs: Vec<Outgoing>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// The peer acknowledged these: move them from the outbox to `delivered`.
    Delivered {
        peer: Fingerprint,
        ids: Vec<MessageId>,
    },
    /// Store what arrived (skipping what is already stored), then tell the connection.
    Received {
        from: Fingerprint,
        msgs: Vec<Message>,
        upto: u64,
        reply: mpsc::UnboundedSender<Stored>,
    },
}

/// The handle tasks use; cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    tx: mpsc::Sender<Cmd>,
}

/// What the database held at start: the outbox, per recipient in send order.
pub(crate) type Backlog = Vec<(Fingerprint, Vec<Outgoing>)>;

struct Db {
    db: sled::Db,
    outbox: sled::Tree,
    delivered: sled::Tree,
    inbox: sled::Tree,
    /// Outbox key of every message in the outbox.
    keys: HashMap<MessageId, [u8; FINGERPRINT_LEN + 8]>,
    /// `delivered` entries kept (the oldest are dropped beyond it).
    keep_delivered: usize,
    /// Entries in `delivered` (sled's `len` walks the tree).
    delivered_len: usize,
}

fn now_ms() -> u64 {
    super::node::unix_ms()
}

fn outbox_key(peer: &Fingerprint, seq: u64) -> [u8; FINGERPRINT_LEN + 8] {
    let mut k = [0u8; FINGERPRINT_LEN + 8];
    k[..FINGERPRINT_LEN].copy_from_slice(peer.as_bytes());
    k[FINGERPRINT_LEN..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn inbox_key(from: &Fingerprint, id: &MessageId) -> [u8; FINGERPRINT_LEN + 16] {
    let mut k = [0u8; FINGERPRINT_LEN + 16];
    k[..FINGERPRINT_LEN].copy_from_slice(from.as_bytes());
    k[FINGERPRINT_LEN..].copy_from_slice(&id.0);
    k
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn fp_at(b: &[u8], at: usize) -> Option<Fingerprint> {
    Some(Fingerprint(
        b.get(at..at + FINGERPRINT_LEN)?.try_into().ok()?,
    ))
}

fn id_at(b: &[u8], at: usize) -> Option<MessageId> {
    Some(MessageId(b.get(at..at + 16)?.try_into().ok()?))
}

impl Db {
    fn open(data_dir: &Path, keep_delivered: usize) -> Result<Db, StoreError> {
        let db = sled::open(data_dir.join(DB_DIR))?;
        let delivered = db.open_tree("delivered")?;
        Ok(Db {
            outbox: db.open_tree("outbox")?,
            delivered_len: delivered.len(),
            delivered,
            inbox: db.open_tree("inbox")?,
            db,
            keys: HashMap::new(),
            keep_delivered,
        })
    }

    /// The outbox in key order (per recipient, in send order). Entries that do not parse
    /// are reported and skipped.
    fn load_outbox(&mut self) -> Backlog {
        let mut out: Backlog = Vec::new();
        for item in self.outbox.iter() {
            let Ok((k, v)) = item else { continue };
            let parsed = (|| {
                let peer = fp_at(&k, 0)?;
                let key: [u8; FINGERPRINT_LEN + 8] = k.as_ref().try_into().ok()?;
                let id = id_at(&v, 0)?;
                let timestamp_ms = u64_at(&v, 16)?;
                let body = Bytes::copy_from_slice(v.get(24..)?);
                Some((
                    peer,
                    key,
                    Outgoing {
                        id,
                        timestamp_ms,
                        body,
                    },
                ))
            })();
            let Some((peer, key, msg)) = parsed else {
                tracing::warn!("message store: skipping an outbox entry that does not parse");
                continue;
            };
            self.keys.insert(msg.id, key);
            match out.last_mut() {
                Some((p, v)) if *p == peer => v.push(msg),
                _ => out.push((peer, vec![msg])),
            }
        }
        out
    }

    fn enqueue(&mut self, peer: &Fingerprint, msgs: &[Outgoing]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for m in msgs {
            let key = outbox_key(peer, self.db.generate_id()?);
            let mut v = Vec::with_capacity(24 + m.body.len());
            v.extend_from_slice(&m.id.0);
            v.extend_from_slice(&m.timestamp_ms.to_be_bytes());
            v.extend_from_slice(&m.body);
            batch.insert(&key[..], v);
            self.keys.insert(m.id, key);
        }
        self.outbox.apply_batch(batch)?;
        Ok(())
    }

    fn delivered(&mut self, peer: &Fingerprint, ids: &[MessageId]) -> Result<(), StoreError> {
        let (mut out, mut done) = (sled::Batch::default(), sled::Batch::default());
        let now = now_ms();
        for id in ids {
            let Some(key) = self.keys.remove(id) else {
                continue;
            };
            out.remove(&key[..]);
            let mut v = Vec::with_capacity(FINGERPRINT_LEN + 24);
            v.extend_from_slice(peer.as_bytes());
            v.extend_from_slice(&id.0);
            v.extend_from_slice(&now.to_be_bytes());
            done.insert(&key[FINGERPRINT_LEN..], v);
            self.delivered_len += 1;
        }
        self.outbox.apply_batch(out)?;
        self.delivered.apply_batch(done)?;
        let excess = self.delivered_len.saturating_sub(self.keep_delivered);
        if excess > 0 {
            let mut trim = sled::Batch::default();
            for k in self.delivered.iter().keys().take(excess).flatten() {
                trim.remove(k);
            }
            self.delivered.apply_batch(trim)?;
            self.delivered_len -= excess;
        }
        Ok(())
    }

    /// Stores the messages not stored before; returns those.
    fn received(
        &mut self,
        from: &Fingerprint,
        msgs: Vec<Message>,
    ) -> Result<Vec<Message>, StoreError> {
        let now = now_ms();
        let mut new = Vec::with_capacity(msgs.len());
        for m in msgs {
            let key = inbox_key(from, &m.id);
            let mut v = Vec::with_capacity(24 + m.body.len());
            v.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
            v.extend_from_slice(&now.to_be_bytes());
            v.extend_from_slice(&m.timestamp_ms.to_be_bytes());
            v.extend_from_slice(&m.body);
            // Compare-and-swap from "absent": a stored message stays as first stored.
            if self
                .inbox
                .compare_and_swap(key, None as Option<&[u8]>, Some(v))?
                .is_ok()
            {
                new.push(m);
            }
        }
        Ok(new)
    }
}

/// Lists the stored received messages, oldest first.
fn list_inbox(inbox: &sled::Tree) -> Vec<StoredMessage> {
    let mut all: Vec<StoredMessage> = inbox
        .iter()
        .flatten()
        .filter_map(|(k, v)| {
            Some(StoredMessage {
                from: fp_at(&k, 0)?,
                id: id_at(&k, FINGERPRINT_LEN)?,
                seq: u64_at(&v, 0)?,
                received_ms: u64_at(&v, 8)?,
                timestamp_ms: u64_at(&v, 16)?,
                body: Bytes::copy_from_slice(v.get(24..)?),
            })
        })
        .collect();
    all.sort_by_key(|m| m.seq);
    all
}

/// Reads the stored inbox of a data directory whose node is not running (sled allows one
/// process at a time).
pub fn read_inbox(data_dir: &Path) -> Result<Vec<StoredMessage>, StoreError> {
    let db = sled::open(data_dir.join(DB_DIR))?;
    Ok(list_inbox(&db.open_tree("inbox")?))
}

impl Store {
    /// Opens the store, returns the outbox it held and starts the store thread.
    pub(crate) fn open(
        data_dir: &Path,
        keep_delivered: usize,
    ) -> Result<(Store, Backlog, sled::Tree), StoreError> {
        let mut db = Db::open(data_dir, keep_delivered)?;
        let backlog = db.load_outbox();
        let inbox = db.inbox.clone();
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("dna-store".into())
            .spawn(move || run(db, rx))
            .map_err(|e| StoreError::Db(e.to_string()))?;
        Ok((Store { tx }, backlog, inbox))
    }

    /// Sends a command; waits while the store thread is behind.
    pub(crate) async fn cmd(&self, cmd: Cmd) -> Result<(), StoreError> {
        self.tx.send(cmd).await.map_err(|_| StoreError::Closed)
    }

    /// Makes `msgs` to `peer` durable.
    pub(crate) async fn enqueue(
        &self,
        peer: Fingerprint,
        msgs: Vec<Outgoing>,
    ) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.cmd(Cmd::Enqueue { peer, msgs, done }).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// Lists the received messages held by a running store.
pub(crate) fn inbox_of(inbox: &sled::Tree) -> Vec<StoredMessage> {
    list_inbox(inbox)
}

/// The store thread: group commits until every handle is gone.
fn run(mut db: Db, mut rx: mpsc::Receiver<Cmd>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let mut replies = Vec::with_capacity(batch.len());
        let mut failed = None;
        for cmd in batch.drain(..) {
            match cmd {
                Cmd::Enqueue { peer, msgs, done } => {
                    let r = db.enqueue(&peer, &msgs);
                    replies.push(Reply::Enqueued(done, r));
                }
                Cmd::Delivered { peer, ids } => {
                    if let Err(e) = db.delivered(&peer, &ids) {
                        failed = Some(e);
                    }
                }
                Cmd::Received {
                    from,
                    msgs,
                    upto,
                    reply,
                } => {
                    let new = db.received(&from, msgs);
                    replies.push(Reply::Received(reply, Stored { upto, new }));
                }
            }
        }
        if let Err(e) = db.db.flush() {
            failed = Some(e.into());
        }
        if let Some(e) = &failed {
            tracing::error!(error = %e, "message store write failed");
        }
        for r in replies {
            match r {
                Reply::Enqueued(done, r) => {
                    let r = match (&failed, r) {
                        (Some(e), _) => Err(e.clone()),
                        (None, r) => r,
                    };
                    let _ = done.send(r);
                }
                Reply::Received(reply, mut stored) => {
                    // Not stored: not acknowledged; the connection ends and the sender sends
                    // it again.
                    if let Some(e) = &failed {
                        stored.new = Err(e.clone());
                    }
                    let _ = reply.send(stored);
                }
            }
        }
    }
    let _ = db.db.flush();
}

enum Reply {
    Enqueued(
        oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
    ),
    Received(mpsc::UnboundedSender<Stored>, Stored),
}

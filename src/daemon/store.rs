//! The message store (spec/06-node.md §3): the outbox, the received messages and what was
//! delivered, in a sled database in the data directory, so that a crash of either side
//! loses nothing and doubles nothing. It decides nothing: what is new among received
//! messages is the node core's call (its de-duplication windows, spec/06-node.md §1.1),
//! and the store writes what the core task hands it.
//!
//! One thread owns the database. Tasks send it [`Cmd`]s over a channel; it takes
//! every command waiting, applies them in order, flushes once and only then answers all of
//! them — a group commit: one `fsync` for a burst of sends and receipts, however many
//! tasks made them.
//!
//! Entries hold **batches** — the messages of one `send_many`, or of one pass over what a
//! connection received — so the database does one write per batch, not per message
//! (measured: a write per message ran at 0.07× of in-memory delivery).
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `outbox` | recipient (32) ‖ seq (u64 BE) | messages |
//! | `delivered` | seq (u64 BE) | recipient (32) ‖ delivered ms (u64) ‖ count (u32) ‖ IDs ‖ [path u8] |
//! | `inbox` | seq (u64 BE) | sender (32) ‖ received ms (u64) ‖ messages |
//!
//! The path byte (spec/09-mailbox.md §7): 0 or absent, acknowledged over a session; 1, the
//! recipient's mailbox receipt listed them.
//!
//! `messages` = count (u32) ‖ count × (id (16) ‖ timestamp ms (u64) ‖ length (u32) ‖ body)
//! ‖ count × kind (u16) (entries written before kinds existed end after the bodies: text);
//! integers big-endian. `seq` comes from sled's persistent ID generator, so both trees keep
//! their order across restarts. An outbox batch leaves when all of its messages are
//! acknowledged; after a crash the whole batch is sent again and the receiver drops the
//! ones it has.
//!
//! De-duplication across restarts: at start the store reads, newest first, the IDs of the
//! last `dedup_window` stored messages of each of the last `dedup_senders` senders
//! ([`Seen`]), and the node core's windows begin with them. A sender resends only what it
//! has no ACK for — at most two connections' worth of unacknowledged messages plus the rest
//! of one batch (spec/06-node.md §3.3) — so the window covers every resend.

use std::collections::HashMap;
use std::path::Path;

use bytes::{Buf, Bytes};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::crypto::{Fingerprint, Message, MessageId, MessageKind, FINGERPRINT_LEN};
use crate::session::Outgoing;

/// The database's directory name inside the data directory.
pub const DB_DIR: &str = "messages.sled";
/// Most commands one group commit takes.
const BATCH_MAX: usize = 4096;

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
    /// The application protocol the body belongs to.
    pub kind: MessageKind,
    /// The body.
    pub body: Bytes,
}

/// Received messages stored by one [`Cmd::Persist`]: the session counter up to which the
/// connection may now acknowledge, the messages that were new, and why storing them failed
/// if it did (then none of them is acknowledged or delivered).
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) upto: u64,
    pub(crate) new: Vec<Message>,
    pub(crate) failed: Option<StoreError>,
}

pub(crate) enum Cmd {
    /// Make these messages to `peer` durable, as one batch, then answer.
    Enqueue {
        peer: Fingerprint,
        msgs: Vec<Outgoing>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Delivered: acknowledged by the peer over a session, or listed by its mailbox
    /// receipt (`path`: `PATH_DIRECT`, `PATH_RELAY`, `PATH_TURN`, `PATH_MAILBOX`).
    DeliveredVia { ids: Vec<MessageId>, path: u8 },
    /// Lists the outbox (messages not yet delivered, at most `max`) and the last `max`
    /// delivery records, newest first.
    List {
        max: usize,
        reply: oneshot::Sender<Listing>,
    },
    /// Store what arrived (the messages the node core found new), then tell the connection
    /// (or the mailbox task) on `reply`.
    Persist {
        from: Fingerprint,
        msgs: Vec<Message>,
        upto: u64,
        reply: mpsc::UnboundedSender<Stored>,
    },
}

/// The handle tasks use; cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    tx: mpsc::UnboundedSender<Cmd>,
}

/// Path byte of a delivery record: acknowledged over a session.
pub(crate) const PATH_SESSION: u8 = 0;
/// Path byte of a delivery record: listed by the recipient's mailbox receipt.
pub(crate) const PATH_MAILBOX: u8 = 1;
/// Path byte of a delivery record: acknowledged over a session on a direct path (also a
/// relayed session that moved to a direct one).
pub(crate) const PATH_DIRECT: u8 = 2;
/// Path byte of a delivery record: acknowledged over a session through a bundled relay.
pub(crate) const PATH_RELAY: u8 = 3;
/// Path byte of a delivery record: acknowledged over a session through a TURN server.
pub(crate) const PATH_TURN: u8 = 4;

/// The name of a delivery record's path byte (`dna outbox`).
pub(crate) fn path_name(path: u8) -> &'static str {
    match path {
        PATH_MAILBOX => "mailbox",
        PATH_DIRECT => "direct",
        PATH_RELAY => "relay",
        PATH_TURN => "turn",
        // Records from before the path was kept.
        _ => "session",
    }
}

/// The outbox and recent deliveries, as [`Cmd::List`] answers.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Messages not yet delivered, per recipient in send order.
    pub(crate) waiting: Vec<(Fingerprint, Outgoing)>,
    /// Delivery records, newest first: recipient, delivered ms, path byte, IDs.
    pub(crate) delivered: Vec<(Fingerprint, u64, u8, Vec<MessageId>)>,
}

/// What the database held at start: the outbox, per recipient in send order.
pub(crate) type Backlog = Vec<(Fingerprint, Vec<Outgoing>)>;

/// The IDs of recently stored received messages, per sender, oldest first (see
/// `Db::seen`): where the node core's de-duplication windows begin.
pub(crate) type Seen = Vec<(Fingerprint, Vec<MessageId>)>;

/// An opened store: the handle, the outbox it held, the recent received IDs, and the inbox
/// tree (read by `dna inbox` through the control socket).
pub(crate) struct Opened {
    pub(crate) store: Store,
    pub(crate) backlog: Backlog,
    pub(crate) seen: Seen,
    pub(crate) inbox: sled::Tree,
}

/// Limits of the store's memory (spec/06-node.md §3.3).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreLimits {
    /// IDs remembered per sender for de-duplication: at least this many, at most twice.
    pub(crate) dedup_window: usize,
    /// Senders whose windows are kept; the least recently heard from is dropped first.
    pub(crate) dedup_senders: usize,
    /// Delivery records kept (the oldest batches are dropped first).
    pub(crate) keep_delivered: usize,
}

/// An outbox batch in flight: its key and how many of its messages await an ACK.
struct Pending {
    key: [u8; FINGERPRINT_LEN + 8],
    left: usize,
    ids: Vec<MessageId>,
}

struct Db {
    db: sled::Db,
    outbox: sled::Tree,
    delivered: sled::Tree,
    inbox: sled::Tree,
    limits: StoreLimits,
    /// Outbox batches by their seq, and the batch of every message in them.
    batches: HashMap<u64, Pending>,
    batch_of: HashMap<MessageId, u64>,
    /// Entries in `delivered` (sled's `len` walks the tree).
    delivered_len: usize,
}

fn now_ms() -> u64 {
    super::os::unix_ms()
}

fn put_messages<'a>(
    v: &mut Vec<u8>,
    msgs: impl ExactSizeIterator<Item = (&'a MessageId, u64, MessageKind, &'a [u8])>,
) {
    v.extend_from_slice(&(msgs.len() as u32).to_be_bytes());
    let mut kinds = Vec::with_capacity(2 * msgs.len());
    for (id, ts, kind, body) in msgs {
        v.extend_from_slice(&id.0);
        v.extend_from_slice(&ts.to_be_bytes());
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(body);
        kinds.extend_from_slice(&kind.0.to_be_bytes());
    }
    v.extend_from_slice(&kinds);
}

/// One stored message: ID, sender's timestamp, kind, body.
type Entry = (MessageId, u64, MessageKind, Bytes);

/// Parses `messages` (see the module doc); `None` if the bytes do not form them.
fn get_messages(mut b: &[u8]) -> Option<Vec<Entry>> {
    if b.len() < 4 {
        return None;
    }
    let n = b.get_u32() as usize;
    let mut out = Vec::with_capacity(n.min(b.len() / 28));
    for _ in 0..n {
        if b.len() < 28 {
            return None;
        }
        let mut id = [0u8; 16];
        b.copy_to_slice(&mut id);
        let ts = b.get_u64();
        let len = b.get_u32() as usize;
        if b.len() < len {
            return None;
        }
        out.push((
            MessageId(id),
            ts,
            MessageKind::TEXT,
            Bytes::copy_from_slice(&b[..len]),
        ));
        b.advance(len);
    }
    // The kinds follow, one u16 per message; entries written before kinds existed have
    // none (all text).
    if b.len() == 2 * n {
        for (e, k) in out.iter_mut().zip(b.chunks_exact(2)) {
            e.2 = MessageKind(u16::from_be_bytes([k[0], k[1]]));
        }
    } else if !b.is_empty() {
        return None;
    }
    Some(out)
}

fn fp_at(b: &[u8], at: usize) -> Option<Fingerprint> {
    Some(Fingerprint(
        b.get(at..at + FINGERPRINT_LEN)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// One inbox entry: sender, received ms and the messages.
fn parse_inbox(v: &[u8]) -> Option<(Fingerprint, u64, Vec<Entry>)> {
    Some((
        fp_at(v, 0)?,
        u64_at(v, FINGERPRINT_LEN)?,
        get_messages(v.get(FINGERPRINT_LEN + 8..)?)?,
    ))
}

impl Db {
    fn open(data_dir: &Path, limits: StoreLimits) -> Result<Db, StoreError> {
        let db = sled::open(data_dir.join(DB_DIR))?;
        let delivered = db.open_tree("delivered")?;
        Ok(Db {
            outbox: db.open_tree("outbox")?,
            delivered_len: delivered.len(),
            delivered,
            inbox: db.open_tree("inbox")?,
            db,
            limits,
            batches: HashMap::new(),
            batch_of: HashMap::new(),
        })
    }

    /// The IDs the node core's de-duplication windows begin with: walking the inbox from
    /// the newest entry back, the last `dedup_window` IDs of each of the last
    /// `dedup_senders` senders (each list oldest first; the most recent sender last).
    fn seen(&self) -> Seen {
        let (window, senders) = (self.limits.dedup_window, self.limits.dedup_senders.max(1));
        let mut seen: Seen = Vec::new();
        for (_, v) in self.inbox.iter().rev().flatten() {
            let Some((from, _, msgs)) = parse_inbox(&v) else {
                continue;
            };
            let i = match seen.iter().position(|(f, _)| *f == from) {
                Some(i) => i,
                None if seen.len() < senders => {
                    seen.push((from, Vec::new()));
                    seen.len() - 1
                }
                None => continue,
            };
            let ids = &mut seen[i].1;
            ids.extend(
                msgs.iter()
                    .rev()
                    .map(|m| m.0)
                    .take(window - ids.len().min(window)),
            );
            if seen.len() >= senders && seen.iter().all(|(_, ids)| ids.len() >= window) {
                break;
            }
        }
        for (_, ids) in &mut seen {
            ids.reverse();
        }
        seen.reverse();
        seen
    }

    /// The outbox in key order (per recipient, in send order). Entries that do not parse
    /// are reported and skipped.
    fn load_outbox(&mut self) -> Backlog {
        let mut out: Backlog = Vec::new();
        for (k, v) in self.outbox.iter().flatten() {
            let parsed = (|| {
                let key: [u8; FINGERPRINT_LEN + 8] = k.as_ref().try_into().ok()?;
                Some((
                    fp_at(&key, 0)?,
                    u64_at(&key, FINGERPRINT_LEN)?,
                    key,
                    get_messages(&v)?,
                ))
            })();
            let Some((peer, seq, key, msgs)) = parsed else {
                tracing::warn!("message store: skipping an outbox entry that does not parse");
                continue;
            };
            let msgs: Vec<Outgoing> = msgs
                .into_iter()
                .map(|(id, timestamp_ms, kind, body)| Outgoing {
                    id,
                    timestamp_ms,
                    kind,
                    body,
                })
                .collect();
            self.track(seq, key, &msgs);
            match out.last_mut() {
                Some((p, v)) if *p == peer => v.extend(msgs),
                _ => out.push((peer, msgs)),
            }
        }
        out
    }

    fn track(&mut self, seq: u64, key: [u8; FINGERPRINT_LEN + 8], msgs: &[Outgoing]) {
        for m in msgs {
            self.batch_of.insert(m.id, seq);
        }
        self.batches.insert(
            seq,
            Pending {
                key,
                left: msgs.len(),
                ids: msgs.iter().map(|m| m.id).collect(),
            },
        );
    }

    fn enqueue(&mut self, peer: &Fingerprint, msgs: &[Outgoing]) -> Result<(), StoreError> {
        if msgs.is_empty() {
            return Ok(());
        }
        let seq = self.db.generate_id()?;
        let mut key = [0u8; FINGERPRINT_LEN + 8];
        key[..FINGERPRINT_LEN].copy_from_slice(peer.as_bytes());
        key[FINGERPRINT_LEN..].copy_from_slice(&seq.to_be_bytes());
        let size: usize = msgs.iter().map(|m| 28 + m.body.len()).sum();
        let mut v = Vec::with_capacity(4 + size);
        put_messages(
            &mut v,
            msgs.iter()
                .map(|m| (&m.id, m.timestamp_ms, m.kind, &m.body[..])),
        );
        self.outbox.insert(&key[..], v)?;
        self.track(seq, key, msgs);
        Ok(())
    }

    #[cfg(test)]
    fn delivered(&mut self, ids: &[MessageId]) -> Result<(), StoreError> {
        self.delivered_via(ids, PATH_SESSION)
    }

    /// The outbox and the newest delivery records (see [`Cmd::List`]).
    fn list(&self, max: usize) -> Listing {
        let mut out = Listing::default();
        for (k, v) in self.outbox.iter().flatten() {
            let (Some(peer), Some(msgs)) = (fp_at(&k, 0), get_messages(&v)) else {
                continue;
            };
            for (id, timestamp_ms, kind, body) in msgs {
                if out.waiting.len() >= max {
                    break;
                }
                // A half-acknowledged batch: its acknowledged messages are delivered.
                if self.batch_of.contains_key(&id) {
                    let m = Outgoing {
                        id,
                        timestamp_ms,
                        kind,
                        body,
                    };
                    out.waiting.push((peer, m));
                }
            }
        }
        for (_, v) in self.delivered.iter().rev().take(max).flatten() {
            let parsed = (|| {
                let peer = fp_at(&v, 0)?;
                let at = u64_at(&v, FINGERPRINT_LEN)?;
                let n = u32::from_be_bytes(
                    v.get(FINGERPRINT_LEN + 8..FINGERPRINT_LEN + 12)?
                        .try_into()
                        .ok()?,
                ) as usize;
                let ids_at = FINGERPRINT_LEN + 12;
                let ids: Vec<MessageId> = v
                    .get(ids_at..ids_at + 16 * n)?
                    .chunks_exact(16)
                    .map(|c| MessageId(c.try_into().unwrap_or([0; 16])))
                    .collect();
                let path = v.get(ids_at + 16 * n).copied().unwrap_or(PATH_SESSION);
                Some((peer, at, path, ids))
            })();
            if let Some(d) = parsed {
                out.delivered.push(d);
            }
        }
        out
    }

    fn delivered_via(&mut self, ids: &[MessageId], path: u8) -> Result<(), StoreError> {
        let now = now_ms();
        for id in ids {
            let Some(seq) = self.batch_of.remove(id) else {
                continue;
            };
            let Some(p) = self.batches.get_mut(&seq) else {
                continue;
            };
            p.left = p.left.saturating_sub(1);
            if p.left > 0 {
                continue;
            }
            let Some(p) = self.batches.remove(&seq) else {
                continue;
            };
            self.outbox.remove(&p.key[..])?;
            let mut v = Vec::with_capacity(FINGERPRINT_LEN + 12 + 16 * p.ids.len());
            v.extend_from_slice(&p.key[..FINGERPRINT_LEN]);
            v.extend_from_slice(&now.to_be_bytes());
            v.extend_from_slice(&(p.ids.len() as u32).to_be_bytes());
            for id in &p.ids {
                v.extend_from_slice(&id.0);
            }
            if path != PATH_SESSION {
                v.push(path);
            }
            self.delivered.insert(seq.to_be_bytes(), v)?;
            self.delivered_len += 1;
        }
        if self.delivered_len > self.limits.keep_delivered {
            let excess = self.delivered_len - self.limits.keep_delivered;
            for k in self.delivered.iter().keys().take(excess).flatten() {
                self.delivered.remove(k)?;
                self.delivered_len -= 1;
            }
        }
        Ok(())
    }

    /// Stores `msgs` from `from` as one inbox entry.
    fn store_inbox(&mut self, from: &Fingerprint, msgs: &[Message]) -> Result<(), StoreError> {
        if msgs.is_empty() {
            return Ok(());
        }
        let size: usize = msgs.iter().map(|m| 28 + m.body.len()).sum();
        let mut v = Vec::with_capacity(FINGERPRINT_LEN + 12 + size);
        v.extend_from_slice(from.as_bytes());
        v.extend_from_slice(&now_ms().to_be_bytes());
        put_messages(
            &mut v,
            msgs.iter()
                .map(|m| (&m.id, m.timestamp_ms, m.kind, &m.body[..])),
        );
        let seq = self.db.generate_id()?;
        self.inbox.insert(seq.to_be_bytes(), v)?;
        Ok(())
    }
}

/// Lists the stored received messages, oldest first.
fn list_inbox(inbox: &sled::Tree) -> Vec<StoredMessage> {
    let mut all = Vec::new();
    for (_, v) in inbox.iter().flatten() {
        let Some((from, received_ms, msgs)) = parse_inbox(&v) else {
            tracing::warn!("message store: skipping an inbox entry that does not parse");
            continue;
        };
        all.extend(
            msgs.into_iter()
                .map(|(id, timestamp_ms, kind, body)| StoredMessage {
                    from,
                    id,
                    received_ms,
                    timestamp_ms,
                    kind,
                    body,
                }),
        );
    }
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
    pub(crate) fn open(data_dir: &Path, limits: StoreLimits) -> Result<Opened, StoreError> {
        let mut db = Db::open(data_dir, limits)?;
        let backlog = db.load_outbox();
        let seen = db.seen();
        let inbox = db.inbox.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("dna-store".into())
            .spawn(move || run(db, rx))
            .map_err(|e| StoreError::Db(e.to_string()))?;
        Ok(Opened {
            store: Store { tx },
            backlog,
            seen,
            inbox,
        })
    }

    /// Hands the store thread a command without waiting (the node core's task never
    /// waits). The queue is unbounded and yet bounded by its senders: every
    /// [`Cmd::Enqueue`] and [`Cmd::List`] has a caller waiting for its answer, a
    /// connection has at most `max_inflight` received messages unstored, and a delivery
    /// record follows an ACK of a message in the outbox.
    pub(crate) fn cmd(&self, cmd: Cmd) -> Result<(), StoreError> {
        self.tx.send(cmd).map_err(|_| StoreError::Closed)
    }

    /// Stores `msgs` (new, from `from`) and answers on `reply` — also when the store is
    /// gone, with the error.
    pub(crate) fn persist(
        &self,
        from: Fingerprint,
        msgs: Vec<Message>,
        upto: u64,
        reply: mpsc::UnboundedSender<Stored>,
    ) {
        let cmd = Cmd::Persist {
            from,
            msgs,
            upto,
            reply,
        };
        if let Err(mpsc::error::SendError(Cmd::Persist {
            msgs, upto, reply, ..
        })) = self.tx.send(cmd)
        {
            let _ = reply.send(Stored {
                upto,
                new: msgs,
                failed: Some(StoreError::Closed),
            });
        }
    }

    /// Makes `msgs` to `peer` durable.
    pub(crate) async fn enqueue(
        &self,
        peer: Fingerprint,
        msgs: Vec<Outgoing>,
    ) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.cmd(Cmd::Enqueue { peer, msgs, done })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// The outbox and the last `max` delivery records of a data directory whose node is not
/// running (as [`Cmd::List`] answers).
pub(crate) fn read_listing(data_dir: &Path, max: usize) -> Result<Listing, StoreError> {
    let limits = StoreLimits {
        dedup_window: 0,
        dedup_senders: 0,
        keep_delivered: usize::MAX,
    };
    let mut db = Db::open(data_dir, limits)?;
    db.load_outbox();
    Ok(db.list(max))
}

/// Lists the received messages held by a running store.
pub(crate) fn inbox_of(inbox: &sled::Tree) -> Vec<StoredMessage> {
    list_inbox(inbox)
}

enum Reply {
    Enqueued(
        oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
    ),
    Received(mpsc::UnboundedSender<Stored>, Stored),
}

/// The store thread: group commits until every handle is gone.
fn run(mut db: Db, mut rx: mpsc::UnboundedReceiver<Cmd>) {
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
        let mut arrived: Vec<(Fingerprint, Vec<Message>)> = Vec::new();
        let mut failed = None;
        for cmd in batch.drain(..) {
            match cmd {
                Cmd::Enqueue { peer, msgs, done } => {
                    let r = db.enqueue(&peer, &msgs);
                    replies.push(Reply::Enqueued(done, r));
                }
                Cmd::DeliveredVia { ids, path } => {
                    if let Err(e) = db.delivered_via(&ids, path) {
                        failed = Some(e);
                    }
                }
                Cmd::List { max, reply } => {
                    let _ = reply.send(db.list(max));
                }
                Cmd::Persist {
                    from,
                    msgs,
                    upto,
                    reply,
                } => {
                    // What every connection received from one sender in this commit goes
                    // into one entry (written below), not one per connection pass.
                    match arrived.iter_mut().find(|(f, _)| *f == from) {
                        Some((_, all)) => all.extend(msgs.iter().cloned()),
                        None => arrived.push((from, msgs.clone())),
                    }
                    let stored = Stored {
                        upto,
                        new: msgs,
                        failed: None,
                    };
                    replies.push(Reply::Received(reply, stored));
                }
            }
        }
        for (from, msgs) in arrived.drain(..) {
            if let Err(e) = db.store_inbox(&from, &msgs) {
                failed = Some(e);
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
                        stored.failed = Some(e.clone());
                    }
                    let _ = reply.send(stored);
                }
            }
        }
    }
    let _ = db.db.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: StoreLimits = StoreLimits {
        dedup_window: 4,
        dedup_senders: 2,
        keep_delivered: 2,
    };

    /// Opens the store in `dir`; after a drop in this process, sled's flusher thread can
    /// still hold the directory's file lock for a moment ("could not acquire lock"), so
    /// the reopen waits for it (a restart is a new process in real use).
    fn open(dir: &std::path::Path) -> Db {
        let mut tries = 0;
        loop {
            match Db::open(dir, LIMITS) {
                Ok(db) => return db,
                Err(e) if tries < 500 && format!("{e:?}").contains("acquire lock") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("open: {e:?}"),
            }
        }
    }

    fn out(i: u8) -> Outgoing {
        Outgoing {
            id: MessageId([i; 16]),
            timestamp_ms: u64::from(i),
            kind: crate::crypto::MessageKind::TEXT,
            body: Bytes::from(vec![i; usize::from(i)]),
        }
    }

    fn msg(from: Fingerprint, i: u8) -> Message {
        Message {
            sender: from,
            recipient: Fingerprint([0; 32]),
            id: MessageId([i; 16]),
            timestamp_ms: 7,
            kind: crate::crypto::MessageKind::TEXT,
            body: Bytes::from(vec![i; 3]),
        }
    }

    #[test]
    fn a_batch_stays_until_every_message_in_it_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let peer = Fingerprint([9; 32]);
        {
            let mut db = open(dir.path());
            db.enqueue(&peer, &[out(1), out(2)]).unwrap();
            db.enqueue(&peer, &[out(3)]).unwrap();
            db.delivered(&[MessageId([1; 16]), MessageId([3; 16])])
                .unwrap();
            db.db.flush().unwrap();
        }
        let mut db = open(dir.path());
        // The first batch is half acknowledged: all of it is sent again (the receiver
        // drops what it has); the second is gone.
        assert_eq!(db.load_outbox(), vec![(peer, vec![out(1), out(2)])]);
        assert_eq!(db.delivered_len, 1);
    }

    /// What the node core's windows begin with after a restart: the newest
    /// `dedup_window` IDs of the newest `dedup_senders` senders, oldest first.
    #[test]
    fn the_recent_ids_survive_a_restart_within_the_windows_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            Fingerprint([1; 32]),
            Fingerprint([2; 32]),
            Fingerprint([3; 32]),
        );
        {
            let mut db = open(dir.path());
            let ids: Vec<Message> = (1..=3).map(|i| msg(a, i)).collect();
            db.store_inbox(&a, &ids).unwrap();
            db.store_inbox(&b, &[msg(b, 1)]).unwrap();
            db.store_inbox(&a, &[msg(a, 4), msg(a, 5)]).unwrap();
            db.store_inbox(&c, &[msg(c, 9)]).unwrap();
            db.db.flush().unwrap();
        }
        let db = open(dir.path());
        let id = |i: u8| MessageId([i; 16]);
        // a: the newest 4 of 5 (window 4); two senders at most: c and a, b is older.
        assert_eq!(
            db.seen(),
            vec![(a, vec![id(2), id(3), id(4), id(5)]), (c, vec![id(9)])]
        );
        let listed = list_inbox(&db.inbox);
        assert_eq!(listed.len(), 7);
        assert_eq!(listed[0].from, a);
        assert_eq!(listed[0].body, Bytes::from(vec![1u8; 3]));
    }

    #[test]
    fn entries_that_do_not_parse_are_refused() {
        assert!(get_messages(&[]).is_none());
        assert!(get_messages(&[0, 0, 0, 1]).is_none());
        let mut v = Vec::new();
        let file = MessageKind::FILE;
        put_messages(
            &mut v,
            [(&MessageId([1; 16]), 5, file, &b"hi"[..])].into_iter(),
        );
        let got = get_messages(&v).unwrap();
        assert_eq!((got[0].2, &got[0].3), (file, &Bytes::from_static(b"hi")));
        // Written before kinds existed: no trailer, text.
        let old = &v[..v.len() - 2];
        assert_eq!(get_messages(old).unwrap()[0].2, MessageKind::TEXT);
        v.push(0);
        assert!(get_messages(&v).is_none(), "trailing bytes");
        v.truncate(v.len() - 4);
        assert!(get_messages(&v).is_none(), "short body");
    }
}

//! The offline mailbox in the daemon (spec/09-mailbox.md §5–§7): the task that carries out
//! the rounds the node core's mailbox ([`crate::node::mailbox`]) decides — what is due,
//! which messages to put, what a receipt or a fetch means — and holds none of their state.
//!
//! One task per node, started with the node when it has a DHT and a message store:
//! - publishes our KEM key record (so others can seal to us), again every day;
//! - **sender**: an outbox message that waited `after` (default 10 s) with no live
//!   connection to its recipient is sealed to the recipient's KEM key
//!   ([`crate::crypto::sealed`]) and put under the recipient's mailbox key (k closest),
//!   numbered by its message ID ([`item_seq`]); it stays in the outbox. Every
//!   `receipt_poll` the recipients' mailbox keys are read: a receipt listing an item marks
//!   its message delivered with path `mailbox` and drops it from the direct queue;
//! - **recipient**: at start and every `poll` (default 60 s) it pages through its mailbox
//!   on each of the k closest nodes, opens and verifies every item, stores the new ones in
//!   the inbox (de-duplicated by message ID, as the direct path does), emits their
//!   `Message` events and publishes a receipt listing what it fetched.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::dht::{query, DhtError};
use super::events::NodeEvent;
pub use super::mailbox_state::{MailboxConfig, MailboxStats, OutboxEntry};
use super::os::{unix_ms, with_rng};
use super::shared::{CoreCmd, NodeHandle, Shared};
use super::store::{Cmd, Listing, StoreError, Stored, PATH_MAILBOX};
use crate::crypto::receipt::Receipt;
use crate::crypto::record::{kem_key, mailbox_key, RecordKind};
use crate::crypto::{Fingerprint, KemPublicKey, Message, Record};
use crate::dht::{DhtEvent, VerifiedRecord};
use crate::node::core::{Answer, DhtQuery, Input, MailboxInput, MailboxReply, Query, Reply};
use crate::node::mailbox::fetch::{Fetch, FetchQuery, MAX_FETCH_BYTES};
use crate::node::mailbox::item::{held, item_record, ItemTo};
use crate::node::mailbox::{Fetched, PutView, Round, MIN_HOLDERS};

/// Mailbox work for the node core; its answer.
async fn mailbox(shared: &Shared, input: MailboxInput) -> MailboxReply {
    match shared.core.ask(Input::Mailbox(input)).await {
        Some(Reply::Mailbox(r)) => r,
        _ => MailboxReply::Done,
    }
}

/// Starts the mailbox task if the node has what it needs.
pub(crate) fn spawn(shared: &std::sync::Arc<Shared>) {
    if shared.cfg.mailbox.enabled && shared.dht.is_some() && shared.store.is_some() {
        tokio::spawn(run(std::sync::Arc::downgrade(shared)));
    }
}

async fn run(weak: Weak<Shared>) {
    // Let the bootstrap run first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        if shared.stopped.load(Ordering::Relaxed) || shared.closing.load(Ordering::Relaxed) {
            return;
        }
        let MailboxReply::Round(round, next) = mailbox(&shared, MailboxInput::NextRound).await
        else {
            return;
        };
        match round {
            Some(Round::PublishKem) => {
                let stored = matches!(publish_kem(&shared).await, Ok(n) if n > 0);
                mailbox(&shared, MailboxInput::KemPublished(stored)).await;
            }
            Some(Round::Fetch) => {
                let serving = shared.mailbox.requested.load(Ordering::SeqCst);
                if let Err(e) = fetch(&shared).await {
                    tracing::debug!(error = %e, "mailbox fetch failed");
                }
                shared.mailbox.served.store(serving, Ordering::SeqCst);
                shared.mailbox.done.notify_waiters();
            }
            Some(Round::Put) => {
                if let Err(e) = send_side(&shared).await {
                    tracing::debug!(error = %e, "mailbox put failed");
                }
            }
            Some(Round::Receipts(peers)) => {
                for peer in peers {
                    receipt_of(&shared, peer).await;
                }
            }
            None => {
                let kick = shared.mailbox.kick.clone();
                drop(shared);
                let wait = next.saturating_duration_since(Instant::now());
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = kick.notified() => {
                        if let Some(shared) = weak.upgrade() {
                            mailbox(&shared, MailboxInput::FetchNow).await;
                        }
                    }
                }
            }
        }
    }
}

fn now_s() -> u64 {
    unix_ms() / 1000
}

/// Signs and puts our KEM key record (republished by the DHT while it lives).
async fn publish_kem(shared: &Shared) -> Result<usize, DhtError> {
    let seq = super::dht::next_record_seq(shared).await?;
    let now = now_s();
    let value = shared.identity.kem_public().to_bytes();
    let ttl = RecordKind::KemKey.max_ttl_secs() - 24 * 3600;
    let r = signed(shared, RecordKind::KemKey, seq, now + ttl, value, now)?;
    match query(shared, DhtQuery::Put(r)).await? {
        DhtEvent::Put { stored_at, .. } => Ok(stored_at),
        _ => Ok(0),
    }
}

/// Our record of `kind` (sequence `seq`, expiry and `now` in Unix seconds), signed and
/// ready to put.
fn signed(
    shared: &Shared,
    kind: RecordKind,
    seq: u64,
    expiry: u64,
    value: Vec<u8>,
    now: u64,
) -> Result<VerifiedRecord, DhtError> {
    signed_by(&shared.identity, kind, seq, expiry, value, now)
}

/// A record signed by `by` (us, or a contact drop's identity).
fn signed_by(
    by: &crate::crypto::Identity,
    kind: RecordKind,
    seq: u64,
    expiry: u64,
    value: Vec<u8>,
    now: u64,
) -> Result<VerifiedRecord, DhtError> {
    Record::sign(by, kind, seq, expiry, value, now)
        .map(|r| VerifiedRecord::from_record(&r))
        .map_err(|e| DhtError::Record(e.to_string()))
}

/// The valid records under `key` found by a lookup.
async fn find(shared: &Shared, key: crate::crypto::NodeId) -> Result<Vec<Record>, DhtError> {
    let ev = query(shared, DhtQuery::FindValue(key)).await?;
    let DhtEvent::FoundValue { records, .. } = ev else {
        return Ok(Vec::new());
    };
    let now = now_s();
    Ok(records
        .iter()
        .filter_map(|b| Record::verify(b, now).ok())
        .filter(|r| r.key() == key)
        .collect())
}

/// The published KEM key of `peer`, if any.
async fn kem_of(shared: &Shared, peer: Fingerprint) -> Result<Option<KemPublicKey>, DhtError> {
    Ok(find(shared, kem_key(&peer))
        .await?
        .into_iter()
        .filter(|r| r.kind() == RecordKind::KemKey && r.publisher().fingerprint() == peer)
        .max_by_key(Record::seq)
        .and_then(|r| KemPublicKey::from_bytes(r.value()).ok()))
}

async fn listing(shared: &Shared, max: usize) -> Listing {
    let Some(store) = &shared.store else {
        return Listing::default();
    };
    let (reply, rx) = oneshot::channel();
    if store.cmd(Cmd::List { max, reply }).is_err() {
        return Listing::default();
    }
    rx.await.unwrap_or_default()
}

/// Puts the outbox messages the core picks (they waited long enough) in their recipients'
/// mailboxes, unless a live connection carries them.
async fn send_side(shared: &Shared) -> Result<(), DhtError> {
    let cfg = shared.cfg.mailbox;
    let waiting = listing(shared, cfg.max_tracked).await.waiting;
    // A listing cut at the cap says nothing about the rest.
    let complete = waiting.len() < cfg.max_tracked;
    let due = MailboxInput::Due {
        now_ms: unix_ms(),
        waiting,
        complete,
    };
    let MailboxReply::Due(by_peer) = mailbox(shared, due).await else {
        return Ok(());
    };
    for (peer, msgs) in by_peer {
        let live = !matches!(
            shared.core.query(Query::LiveConnection(peer)).await,
            Some(Answer::Conn(None))
        );
        if live {
            continue;
        }
        let Some(kem) = kem_of(shared, peer).await? else {
            tracing::debug!(%peer, "no KEM key published: cannot seal to the mailbox yet");
            put_failed(shared, peer, "no KEM key published").await;
            continue;
        };
        // A contact that gave us its drop gets our items there (spec/09-mailbox.md §1.1);
        // anyone else in its mailbox, the requests.
        let drop = shared.drops.as_ref().and_then(|d| d.of(&peer));
        for m in msgs {
            let to = ItemTo {
                peer,
                kem: &kem,
                drop: drop.as_deref(),
            };
            let r =
                with_rng(|rng| item_record(&shared.identity, to, &m, now_s(), cfg.ttl_secs, rng));
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "cannot make the mailbox item");
                    continue;
                }
            };
            let (held_by, why) = match query(shared, DhtQuery::PutOnce(r)).await? {
                DhtEvent::Put {
                    stored_at,
                    asked,
                    refused,
                    ..
                } => held(stored_at, asked, &refused),
                _ => (0, "no storing node"),
            };
            if held_by == 0 {
                tracing::info!(%peer, why, "no node stored the mailbox item");
                put_failed(shared, peer, why).await;
                break;
            }
            let stored = MailboxInput::PutStored {
                peer,
                id: m.id,
                held_by,
            };
            mailbox(shared, stored).await;
            tracing::debug!(%peer, held_by, "message put in the recipient's mailbox");
        }
    }
    Ok(())
}

/// A put to `peer` failed: the core's mailbox backs off and remembers why; the application
/// hears it.
async fn put_failed(shared: &Shared, peer: Fingerprint, why: &'static str) {
    mailbox(shared, MailboxInput::PutFailed { peer, why }).await;
    let _ = shared
        .events
        .send(NodeEvent::MailboxRefused { peer, reason: why })
        .await;
}

/// Before a peer with items in its mailbox is reached again (it came back): reads its
/// receipt first, so what it already fetched from the mailbox is marked delivered there and
/// leaves the queue instead of going out a second time over the new session.
pub(crate) async fn before_reach(shared: &Shared, peer: Fingerprint) {
    let waiting = shared.core.query(Query::MailboxWaitingFor(peer)).await;
    if matches!(waiting, Some(Answer::Flag(true))) {
        receipt_of(shared, peer).await;
    }
}

/// Reads `peer`'s newest receipts — of its mailbox, and of its contact drop if it gave us
/// one; marks the items they list delivered (path `mailbox`).
pub(crate) async fn receipt_of(shared: &Shared, peer: Fingerprint) {
    receipt_under(shared, peer, mailbox_key(&peer), None).await;
    if let Some(d) = shared.drops.as_ref().and_then(|d| d.of(&peer)) {
        receipt_under(shared, peer, d.key(), Some(d.fingerprint())).await;
    }
}

/// The newest receipt under `key` published by `peer` (`drop`: by its drop's identity).
async fn receipt_under(
    shared: &Shared,
    peer: Fingerprint,
    key: crate::crypto::NodeId,
    drop: Option<Fingerprint>,
) {
    let Ok(found) = find(shared, key).await else {
        return;
    };
    let (kind, by) = match drop {
        Some(d) => (RecordKind::DropReceipt, d),
        None => (RecordKind::MailboxReceipt, peer),
    };
    let Some(receipt) = found
        .into_iter()
        .filter(|r| r.kind() == kind && r.publisher().fingerprint() == by)
        .max_by_key(Record::seq)
        .and_then(|r| Receipt::decode(r.value()))
    else {
        return;
    };
    // The core marks them delivered in its outbox too.
    let input = MailboxInput::Receipt {
        peer,
        receipt,
        drop,
    };
    let MailboxReply::Delivered(ids) = mailbox(shared, input).await else {
        return;
    };
    if ids.is_empty() {
        return;
    }
    tracing::debug!(%peer, n = ids.len(), "mailbox receipt: delivered");
    if let Some(store) = &shared.store {
        let _ = store.cmd(Cmd::DeliveredVia {
            ids: ids.clone(),
            path: PATH_MAILBOX,
        });
    }
    let _ = shared
        .events
        .send(NodeEvent::MailboxDelivered { peer, ids })
        .await;
}

/// Fetches our mailbox (the requests) and our contact drops from their k closest nodes
/// — the queries [`Fetch`] asks, one after another —, stores what is new, publishes the
/// receipts: one lookup per key however many contacts we have (spec/09-mailbox.md §1.1).
async fn fetch(shared: &Shared) -> Result<(), DhtError> {
    let drops = shared
        .drops
        .as_ref()
        .map(|d| d.to_fetch(std::time::SystemTime::now()))
        .unwrap_or_default();
    let mut f = Fetch::new(shared.identity.fingerprint(), drops, MAX_FETCH_BYTES);
    let mut last_error = None;
    while let Some(q) = f.poll_query() {
        let q = match q {
            FetchQuery::FindNode(key) => DhtQuery::FindNode(key),
            FetchQuery::Page { to, key, after } => DhtQuery::Page { to, key, after },
        };
        let ev = query(shared, q)
            .await
            .map_err(|e| last_error = Some(e))
            .ok();
        f.answer(ev, now_s());
    }
    let Some(opened) = f.finish(&shared.identity) else {
        return Err(last_error.unwrap_or(DhtError::Timeout));
    };
    let (mut new, mut dup) = (0u64, 0u64);
    for (from, msgs) in opened.by_sender {
        let n = msgs.len() as u64;
        let stored = store_received(shared, from, msgs).await;
        new += stored.len() as u64;
        dup += n - stored.len() as u64;
        let events: Vec<NodeEvent> = stored
            .into_iter()
            .map(|m| NodeEvent::Message {
                from,
                id: m.id,
                timestamp_ms: m.timestamp_ms,
                kind: m.kind,
                body: m.body,
            })
            .collect();
        if !events.is_empty() {
            let _ = shared.deliver(events).await;
        }
    }
    let cost = opened.cost;
    let found = Fetched {
        copies: cost.copies,
        lookups: cost.lookups,
        pages: cost.pages,
        new,
        duplicates: dup,
        invalid: opened.invalid,
        listed: opened.listed,
    };
    let receipt = match mailbox(shared, MailboxInput::Fetched(found)).await {
        MailboxReply::Receipt(r) => r,
        _ => None,
    };
    if new + dup > 0 {
        tracing::info!(
            fetched = cost.copies,
            new,
            duplicates = dup,
            "mailbox fetched"
        );
    }
    if let Some(entries) = receipt {
        publish_receipt(shared, entries).await?;
    }
    Ok(())
}

/// Hands `msgs` from `from` to the node core as received (it keeps the new ones, the
/// store writes them); returns the ones that were new and are stored.
async fn store_received(shared: &Shared, from: Fingerprint, msgs: Vec<Message>) -> Vec<Message> {
    let (reply, mut rx) = mpsc::unbounded_channel();
    let cmd = CoreCmd::Received {
        from,
        msgs,
        upto: 0,
        reply,
    };
    if !shared.core.send(cmd).await {
        return Vec::new();
    }
    match rx.recv().await {
        Some(Stored {
            failed: None, new, ..
        }) => new,
        Some(Stored { new, .. }) => {
            // Not stored: forgotten, so the next fetch takes them again.
            let ids = new.iter().map(|m| m.id).collect();
            let _ = shared
                .core
                .input(Input::NotStored { peer: from, ids })
                .await;
            Vec::new()
        }
        None => Vec::new(),
    }
}

/// Signs and puts our receipts (republished by the DHT while they live): the entries of
/// our drop's items as a `DropReceipt` by the drop under its key, the rest as our
/// `MailboxReceipt`. Returns how many nodes hold the mailbox one.
async fn publish_receipt(
    shared: &Shared,
    entries: Vec<(Fingerprint, u64)>,
) -> Result<usize, DhtError> {
    let drops = shared
        .drops
        .as_ref()
        .map(|d| d.to_fetch(std::time::SystemTime::now()))
        .unwrap_or_default();
    let (of_drops, ours): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|(fp, _)| drops.iter().any(|d| d.fingerprint() == *fp));
    let now = now_s();
    let ttl = shared
        .cfg
        .mailbox
        .ttl_secs
        .min(RecordKind::MailboxReceipt.max_ttl_secs());
    let mut stored_at = 0;
    for d in &drops {
        let entries: Vec<_> = of_drops
            .iter()
            .filter(|(fp, _)| *fp == d.fingerprint())
            .copied()
            .collect();
        if entries.is_empty() {
            continue;
        }
        let seq = super::dht::next_record_seq(shared).await?;
        let value = Receipt { entries }.encode();
        let r = signed_by(
            d.identity(),
            RecordKind::DropReceipt,
            seq,
            now + ttl,
            value,
            now,
        )?;
        query(shared, DhtQuery::Put(r)).await?;
    }
    if !ours.is_empty() {
        let seq = super::dht::next_record_seq(shared).await?;
        let value = Receipt { entries: ours }.encode();
        let r = signed(
            shared,
            RecordKind::MailboxReceipt,
            seq,
            now + ttl,
            value,
            now,
        )?;
        stored_at = match query(shared, DhtQuery::Put(r)).await? {
            DhtEvent::Put { stored_at, .. } => stored_at,
            _ => 0,
        };
    }
    mailbox(shared, MailboxInput::ReceiptPublished).await;
    tracing::debug!(stored_at, "mailbox receipt published");
    Ok(stored_at)
}

/// [`NodeHandle::mailbox_publish_key`].
pub(crate) async fn mailbox_publish_key(handle: &NodeHandle) -> Result<usize, DhtError> {
    if handle.shared.dht.is_none() {
        return Err(DhtError::Disabled);
    }
    publish_kem(&handle.shared).await
}

/// [`NodeHandle::mailbox_stats`].
pub(crate) async fn mailbox_stats(handle: &NodeHandle) -> MailboxStats {
    match handle.shared.core.query(Query::Mailbox).await {
        Some(Answer::Mailbox(Some(v))) => v.stats,
        _ => MailboxStats::default(),
    }
}

/// Our messages in a mailbox, awaiting a receipt.
async fn mailbox_put(handle: &NodeHandle) -> PutView {
    match handle.shared.core.query(Query::Mailbox).await {
        Some(Answer::Mailbox(Some(v))) => v.put,
        _ => PutView::default(),
    }
}

/// [`NodeHandle::mailbox_fetch`].
pub(crate) async fn mailbox_fetch(handle: &NodeHandle) -> MailboxStats {
    let m = &handle.shared.mailbox;
    let cfg = &handle.shared.cfg;
    if cfg.mailbox.enabled && handle.shared.dht.is_some() && handle.shared.store.is_some() {
        let mine = m.requested.fetch_add(1, Ordering::SeqCst) + 1;
        m.kick.notify_one();
        while m.served.load(Ordering::SeqCst) < mine {
            if handle.shared.closing.load(Ordering::Relaxed) {
                break;
            }
            // Checked again every second: a notification between the load and the
            // wait is not missed for longer.
            let _ = tokio::time::timeout(Duration::from_secs(1), m.done.notified()).await;
        }
    }
    handle.mailbox_stats().await
}

/// [`NodeHandle::outbox`].
pub(crate) async fn outbox(handle: &NodeHandle, max: usize) -> Vec<OutboxEntry> {
    let l = listing(&handle.shared, max).await;
    let put = mailbox_put(handle).await;
    outbox_entries(l, &put)
}

/// The outbox of a data directory whose daemon is not running, straight from its store
/// (like [`read_inbox`](super::read_inbox)): delivered messages with their path, and the
/// waiting ones as `queued` — whether one was put in a mailbox is the running node's
/// ledger (spec/09-mailbox.md §7), so offline none is listed `sent`.
pub fn read_outbox(data_dir: &std::path::Path, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
    let l = super::store::read_listing(data_dir, max)?;
    Ok(outbox_entries(l, &PutView::default()))
}

/// The outbox listing as entries: deliveries (oldest first), then the waiting messages —
/// `sent` if the mailbox's put ledger says at least [`MIN_HOLDERS`] other nodes hold them,
/// else `queued`, with the holders known and why puts to the recipient fail, if they do.
fn outbox_entries(l: Listing, put: &PutView) -> Vec<OutboxEntry> {
    let mut out: Vec<OutboxEntry> = Vec::new();
    for (peer, at, path, ids) in l.delivered.into_iter().rev() {
        let path = super::store::path_name(path);
        out.extend(ids.into_iter().map(|id| OutboxEntry {
            to: peer,
            id,
            state: "delivered",
            path: Some(path),
            at_ms: at,
            held_by: None,
            refused: None,
        }));
    }
    for (peer, m) in l.waiting {
        let held_by = put.held_by.get(&m.id).copied();
        let sent = held_by.is_some_and(|n| n >= MIN_HOLDERS);
        out.push(OutboxEntry {
            to: peer,
            id: m.id,
            state: if sent { "sent" } else { "queued" },
            path: held_by.map(|_| "mailbox"),
            at_ms: m.timestamp_ms,
            held_by,
            refused: put.refused.get(&peer).copied(),
        });
    }
    out
}

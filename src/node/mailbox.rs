//! The offline mailbox's rounds (spec/09-mailbox.md §5–§7), sans-IO: what is due when, which
//! outbox messages go to a recipient's mailbox, the ledger of items put and awaiting a
//! receipt, the backoff after a failed put, our receipt's entries, and the counters. The
//! node core owns it; the driver's mailbox task asks it for the next
//! [`Round`], does the DHT work (lookups, sealing, puts, pages) and reports back:
//!
//! - [`Round::PublishKem`]: our KEM key record, again a day after it was stored (5 s after
//!   a failure);
//! - [`Round::Fetch`]: our own mailbox, at start, every `poll`, and at once when asked;
//!   what was fetched enters the receipt ([`Mailbox::fetched`]);
//! - [`Round::Put`]: the outbox messages that waited `after` with no live connection, not
//!   put yet, to recipients not backing off ([`Mailbox::due`]), at most
//!   `max_puts_per_round`, the ledger at most `max_tracked`;
//! - [`Round::Receipts`]: the receipts of recipients with items waiting, every
//!   `receipt_poll` (and before such a peer is reached again: [`Mailbox::waiting_for`]);
//!   a receipt marks the items it lists delivered ([`Mailbox::receipt`]).

pub mod fetch;
pub mod item;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::crypto::receipt::{item_seq, Receipt, MAX_RECEIPT_ENTRIES};
use crate::crypto::record::MAX_MAILBOX_BODY;
use crate::crypto::{Fingerprint, MessageId};
use crate::session::Outgoing;

/// Recipients remembered in the put backoff; beyond it the table is cleared.
const MAX_BACKOFF: usize = 4096;
/// Other nodes that must hold an item before its message reads `sent`: one holder can go
/// offline with it (spec/09-mailbox.md §7).
pub const MIN_HOLDERS: usize = 2;
/// The put backoff doubles after each failure up to this many times `poll`.
const MAX_BACKOFF_POLLS: u32 = 32;
/// A KEM key record is published again this long after it was stored.
const KEM_REPUBLISH: Duration = Duration::from_secs(24 * 3600);
/// … and this long after a failed publish.
const KEM_RETRY: Duration = Duration::from_secs(5);

/// Mailbox settings (spec/09-mailbox.md §4, §7).
#[derive(Debug, Clone, Copy)]
pub struct MailboxConfig {
    /// Use the mailbox at all (default true; needs a DHT and a message store).
    pub enabled: bool,
    /// An outbox message waits this long with no live connection before it is put in the
    /// recipient's mailbox (default 10 s).
    pub after: Duration,
    /// Fetch our own mailbox this often (default 60 s), and at start.
    pub poll: Duration,
    /// Read the receipts of recipients with items waiting this often (default 5 s).
    pub receipt_poll: Duration,
    /// Lifetime of our items and receipts (default and most: 7 days).
    pub ttl_secs: u64,
    /// Most items put per round (default 256; the rest wait for the next round).
    pub max_puts_per_round: usize,
    /// Most outbox messages remembered as put in a mailbox (default 65536).
    pub max_tracked: usize,
    /// Our contact drop goes to a contact over a live session; one with no session this
    /// long after it was added gets it anyway, reached or through its mailbox like any
    /// message (default 10 min; spec/09-mailbox.md §1.1).
    pub drop_unseen: Duration,
    /// Our contact drop is replaced by a new one this long after it was made (default 28
    /// days; spec/09-mailbox.md §1.1): a storing node links a drop's items for one epoch at
    /// most. The new one goes to every contact as after a removal.
    pub drop_epoch: Duration,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        MailboxConfig {
            enabled: true,
            after: Duration::from_secs(10),
            poll: Duration::from_secs(60),
            receipt_poll: Duration::from_secs(5),
            ttl_secs: crate::crypto::record::MAILBOX_TTL_SECS,
            max_puts_per_round: 256,
            max_tracked: 65536,
            drop_unseen: Duration::from_secs(600),
            drop_epoch: Duration::from_secs(28 * 24 * 3600),
        }
    }
}

/// The mailbox's counters (for `dna status`, tests and devnet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MailboxStats {
    /// Items we put (stored at one node at least).
    pub items_put: u64,
    /// Our messages a receipt reported delivered.
    pub delivered: u64,
    /// Items fetched from our mailbox (every copy from every node).
    pub fetched: u64,
    /// New messages stored from our mailbox.
    pub new: u64,
    /// Fetched messages dropped as already stored.
    pub duplicates: u64,
    /// Items that did not open (not for us, tampered).
    pub invalid: u64,
    /// Receipts published.
    pub receipts: u64,
    /// Completed fetches of our mailbox.
    pub fetches: u64,
    /// DHT lookups those fetches made (the fetch cost: two per fetch with a contact drop,
    /// however many contacts, spec/09-mailbox.md §1.1).
    pub fetch_lookups: u64,
    /// Pages those fetches asked of storing nodes.
    pub fetch_pages: u64,
}

/// A round of mailbox work the driver carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// Sign and put our KEM key record; report with [`Mailbox::kem_published`].
    PublishKem,
    /// Fetch our mailbox from the k closest nodes; report with [`Mailbox::fetched`] (a
    /// lookup that failed reports nothing: the next fetch comes after `poll`).
    Fetch,
    /// List the outbox and put what [`Mailbox::due`] picks; report each item with
    /// [`Mailbox::put_stored`] or [`Mailbox::put_failed`].
    Put,
    /// Read these recipients' receipts; hand each to [`Mailbox::receipt`].
    Receipts(Vec<Fingerprint>),
}

/// What one fetch found ([`Mailbox::fetched`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Item copies fetched, over every storing node.
    pub copies: u64,
    /// Messages new to the inbox.
    pub new: u64,
    /// Messages the inbox had already.
    pub duplicates: u64,
    /// Items that did not open or were not what they claimed.
    pub invalid: u64,
    /// The items that opened: (sender, item number), for our receipt.
    pub listed: Vec<(Fingerprint, u64)>,
    /// DHT lookups the fetch made (one per key: our requests mailbox and our drops).
    pub lookups: u64,
    /// Pages asked of storing nodes.
    pub pages: u64,
}

/// An item of ours in a recipient's mailbox.
#[derive(Debug, Clone, Copy)]
struct Put {
    peer: Fingerprint,
    /// Other nodes known to hold it (the most one put reached).
    held_by: usize,
    /// Put again after this (held by fewer than [`MIN_HOLDERS`]).
    again: Instant,
}

/// A recipient whose puts fail.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    delay: Duration,
    why: &'static str,
}

/// What the outbox listing shows of one message in a mailbox, or of a recipient whose puts
/// fail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutView {
    /// Our items in a mailbox: how many other nodes hold each.
    pub held_by: HashMap<MessageId, usize>,
    /// Recipients whose last put failed, and why.
    pub refused: HashMap<Fingerprint, &'static str>,
}

/// The mailbox's state. See the module documentation.
#[derive(Debug)]
pub struct Mailbox {
    cfg: MailboxConfig,
    /// Outbox messages in a mailbox, awaiting a receipt.
    put: HashMap<MessageId, Put>,
    /// Our receipt's entries, oldest first.
    receipt: VecDeque<(Fingerprint, u64)>,
    /// Recipients whose last put failed (no KEM key, no node stored it): not tried again
    /// before this time; the delay after the next failure; and why it failed.
    backoff: HashMap<Fingerprint, Backoff>,
    stats: MailboxStats,
    next_kem: Instant,
    next_fetch: Instant,
    next_put: Instant,
    next_receipts: Instant,
}

impl Mailbox {
    /// The mailbox of a node that starts at `now`: everything due at once.
    pub fn new(cfg: MailboxConfig, now: Instant) -> Mailbox {
        Mailbox {
            cfg,
            put: HashMap::new(),
            receipt: VecDeque::new(),
            backoff: HashMap::new(),
            stats: MailboxStats::default(),
            next_kem: now,
            next_fetch: now,
            next_put: now,
            next_receipts: now,
        }
    }

    /// The settings.
    pub fn config(&self) -> &MailboxConfig {
        &self.cfg
    }

    /// How often the outbox is looked at for puts: `after` or `receipt_poll`, whichever
    /// is shorter, within 0.2–5 s.
    fn put_tick(&self) -> Duration {
        self.cfg
            .after
            .min(self.cfg.receipt_poll)
            .clamp(Duration::from_millis(200), Duration::from_secs(5))
    }

    /// The next round due at `now`, in the order key, fetch, puts, receipts (each is
    /// rescheduled as it is handed out: a failed round is not retried at once).
    pub fn poll_round(&mut self, now: Instant) -> Option<Round> {
        if now >= self.next_kem {
            self.next_kem = now + KEM_RETRY;
            return Some(Round::PublishKem);
        }
        if now >= self.next_fetch {
            self.next_fetch = now + self.cfg.poll;
            return Some(Round::Fetch);
        }
        if now >= self.next_put {
            self.next_put = now + self.put_tick();
            return Some(Round::Put);
        }
        if now >= self.next_receipts {
            self.next_receipts = now + self.cfg.receipt_poll;
            let peers: HashSet<Fingerprint> = self.put.values().map(|p| p.peer).collect();
            if !peers.is_empty() {
                let mut peers: Vec<Fingerprint> = peers.into_iter().collect();
                peers.sort();
                return Some(Round::Receipts(peers));
            }
        }
        None
    }

    /// When a round is next due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_kem
            .min(self.next_fetch)
            .min(self.next_put)
            .min(self.next_receipts)
    }

    /// A fetch is wanted now (the application asked).
    pub fn fetch_now(&mut self, now: Instant) {
        self.next_fetch = now;
    }

    /// How publishing our KEM key went (`stored`: at one node at least).
    pub fn kem_published(&mut self, now: Instant, stored: bool) {
        self.next_kem = now + if stored { KEM_REPUBLISH } else { KEM_RETRY };
    }

    /// Of the outbox's waiting messages (`complete`: the listing is the whole outbox, not
    /// cut at a cap), the ones to put now, by recipient: they waited `after` (by their
    /// timestamps and `now_ms`), fit a mailbox item, are not put yet, and their recipient
    /// does not back off; at most `max_puts_per_round`, and the ledger stays within
    /// `max_tracked`. Forgets puts of messages no longer waiting (delivered over a session
    /// meanwhile: no receipt to wait for). The driver still skips recipients with a live
    /// connection.
    pub fn due(
        &mut self,
        now: Instant,
        now_ms: u64,
        waiting: Vec<(Fingerprint, Outgoing)>,
        complete: bool,
    ) -> Vec<(Fingerprint, Vec<Outgoing>)> {
        if complete {
            let ids: HashSet<MessageId> = waiting.iter().map(|(_, m)| m.id).collect();
            self.put.retain(|id, _| ids.contains(id));
        }
        let room = self.cfg.max_tracked.saturating_sub(self.put.len());
        let after = self.cfg.after.as_millis() as u64;
        let mut by_peer: Vec<(Fingerprint, Vec<Outgoing>)> = Vec::new();
        let due = waiting
            .into_iter()
            .filter(|(p, m)| {
                // Not put yet, or held by too few and due for another try.
                let again = self
                    .put
                    .get(&m.id)
                    .is_none_or(|put| put.held_by < MIN_HOLDERS && now >= put.again);
                // A recipient backing off keeps its entry after the wait (the next
                // failure doubles it) until a put to it works.
                again && self.backoff.get(p).is_none_or(|b| b.until <= now)
            })
            .filter(|(_, m)| now_ms.saturating_sub(m.timestamp_ms) >= after)
            .filter(|(_, m)| m.body.len() <= MAX_MAILBOX_BODY)
            .take(self.cfg.max_puts_per_round.min(room));
        for (p, m) in due {
            match by_peer.iter_mut().find(|(q, _)| *q == p) {
                Some((_, v)) => v.push(m),
                None => by_peer.push((p, vec![m])),
            }
        }
        by_peer
    }

    /// An item of `peer`'s is held by `held_by` other nodes (at least one) after a put at
    /// `now`. Held by fewer than [`MIN_HOLDERS`], it is put again after `poll`; the
    /// recipient's backoff ends.
    pub fn put_stored(&mut self, now: Instant, peer: Fingerprint, id: MessageId, held_by: usize) {
        let again = now + self.cfg.poll;
        let e = self.put.entry(id).or_insert_with(|| {
            self.stats.items_put += 1;
            Put {
                peer,
                held_by: 0,
                again,
            }
        });
        e.held_by = e.held_by.max(held_by);
        e.again = again;
        self.backoff.remove(&peer);
    }

    /// Putting to `peer` failed, `why` (no KEM key published, every storing node refused
    /// the item, none answered): it backs off — `poll`, doubling after each failure up to
    /// 32 × `poll` — and the outbox says why.
    pub fn put_failed(&mut self, peer: Fingerprint, why: &'static str, now: Instant) {
        if self.backoff.len() >= MAX_BACKOFF && !self.backoff.contains_key(&peer) {
            self.backoff.clear();
        }
        let first = self.cfg.poll;
        let delay = self
            .backoff
            .get(&peer)
            .map_or(first, |b| (b.delay * 2).min(first * MAX_BACKOFF_POLLS));
        let until = now + delay;
        self.backoff.insert(peer, Backoff { until, delay, why });
    }

    /// Whether items of ours wait in `peer`'s mailbox (then its receipt is read before it
    /// is reached again, so what it fetched is not sent twice).
    pub fn waiting_for(&self, peer: &Fingerprint) -> bool {
        self.put.values().any(|p| p.peer == *peer)
    }

    /// `peer`'s newest receipt (verified by the driver as published by `peer`, or by its
    /// contact drop): the items it lists as published by `me` (us, or the drop) leave the
    /// ledger; returns their message IDs, delivered.
    pub fn receipt(
        &mut self,
        me: &Fingerprint,
        peer: Fingerprint,
        receipt: &Receipt,
    ) -> Vec<MessageId> {
        let ids: Vec<MessageId> = self
            .put
            .iter()
            .filter(|(id, p)| p.peer == peer && receipt.covers(me, item_seq(id)))
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.put.remove(id);
        }
        self.stats.delivered += ids.len() as u64;
        ids
    }

    /// A fetch of our mailbox ended with `f`; returns whether our receipt gained entries
    /// (then publish it: [`Mailbox::receipt_entries`]).
    pub fn fetched(&mut self, f: Fetched) -> bool {
        self.stats.fetched += f.copies;
        self.stats.new += f.new;
        self.stats.duplicates += f.duplicates;
        self.stats.invalid += f.invalid;
        self.stats.fetches += 1;
        self.stats.fetch_lookups += f.lookups;
        self.stats.fetch_pages += f.pages;
        let mut changed = false;
        for e in f.listed {
            if !self.receipt.contains(&e) {
                self.receipt.push_back(e);
                changed = true;
            }
        }
        while self.receipt.len() > MAX_RECEIPT_ENTRIES {
            self.receipt.pop_front();
        }
        changed
    }

    /// Our receipt's entries, oldest first.
    pub fn receipt_entries(&self) -> Vec<(Fingerprint, u64)> {
        self.receipt.iter().copied().collect()
    }

    /// Our receipt was published.
    pub fn receipt_published(&mut self) {
        self.stats.receipts += 1;
    }

    /// The counters.
    pub fn stats(&self) -> MailboxStats {
        self.stats
    }

    /// The messages of ours in a mailbox, awaiting a receipt.
    pub fn put_ids(&self) -> HashSet<MessageId> {
        self.put.keys().copied().collect()
    }

    /// What the outbox listing shows: holders per item, and why puts to a recipient fail.
    pub fn put_view(&self) -> PutView {
        PutView {
            held_by: self.put.iter().map(|(id, p)| (*id, p.held_by)).collect(),
            refused: self.backoff.iter().map(|(f, b)| (*f, b.why)).collect(),
        }
    }
}

#[cfg(test)]
mod tests;

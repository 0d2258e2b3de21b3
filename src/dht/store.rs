//! The record store of a DHT node (spec/04-dht.md §4): signed records (spec/02-crypto.md §8)
//! verified before they are kept, keyed by (DHT key, publisher), bounded in bytes
//! (spec/04 §4.1).
//!
//! Rules: a lower sequence number than the one held is refused; an equal one only with
//! identical bytes; expired records are dropped. A name claim is refused while another
//! publisher's unexpired claim for the name is held (first come, spec/08-names.md §3).
//!
//! Bounds: a record costs its encoded size plus [`RECORD_OVERHEAD`] (what holding and
//! indexing it takes). The store holds at most `max_bytes` of such costs. Quotas in the
//! same bytes bound one publisher, one source (an IPv4 address or an IPv6 /64) and one
//! network (an IPv4 /24 or an IPv6 /48): identities and IPv6 addresses are free to make,
//! networks are not. When the store is full, a record from a network that holds less than
//! the heaviest network evicts that network's records that expire first — so a flood from
//! many networks ends with each holding a fair share, and a new network still gets in.
//! Records this node put itself (no source) count toward `max_bytes` and their publisher's
//! quota, and are never evicted.
//!
//! Mailboxes (spec/09-mailbox.md §3): a mailbox item has a slot of its own, (key,
//! publisher, item number), so one mailbox key holds many items of many senders — at most
//! `mailbox_per_sender` of one sender, `mailbox_per_network` from one network (IPv4 /24,
//! IPv6 /48) and `mailbox_per_key` in all. A full key takes a new item from a network that
//! holds fewer of its items than the heaviest network does, evicting that network's item
//! that expires first: a flood from a few networks cannot keep out a sender from another
//! (spec/09-mailbox.md §3.1). A node that does not
//! store mailboxes (`mailbox = false`) refuses items from others. A receipt (the
//! recipient's record under its own mailbox key) drops the items it lists, and an item it
//! lists is refused.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use thiserror::Error;

use super::checked::VerifiedRecord;
use crate::crypto::receipt::Receipt;
use crate::crypto::{Fingerprint, NodeId, RecordError, RecordKind};
use crate::source::{Network, Source};

/// What one held record costs beyond its encoded bytes: its map entry (key, fields, the
/// shared-bytes header) at half-full B-tree nodes, its entry in its network's expiry index
/// and in the persistence change set, and the quota table entries a new publisher, source
/// and network add. Checked against the types' sizes by a test.
pub const RECORD_OVERHEAD: usize = 1024;

/// Store limits, in bytes of record cost (encoded size + [`RECORD_OVERHEAD`]).
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// Total (default 256 MiB): what a small server (a 1 GiB machine) can give its DHT
    /// store — about 3,400 mailbox items at their 77 KB limit, or 32,000 presence records
    /// at their 7.4 KB limit. A cap of 100,000 records would allow 7.7 GB of mailbox items.
    pub max_bytes: usize,
    /// One publisher (default 1 MiB): a user's presence, KEM key and names take ~20 KB;
    /// the rest is room for a dozen full mailbox items held here.
    pub per_publisher_bytes: usize,
    /// One source: an IPv4 address or an IPv6 /64 (default 4 MiB, a quarter of a network's).
    pub per_source_bytes: usize,
    /// One network: an IPv4 /24 or an IPv6 /48 (default 16 MiB, 1/16 of the store: filling
    /// it takes at least 16 networks, and then fairness still lets new networks in).
    pub per_network_bytes: usize,
    /// Store other nodes' mailbox items (default true: a serving node holds mailboxes;
    /// `dna bootstrap` turns it off unless `[mailbox] store = true`).
    pub mailbox: bool,
    /// Items of one sender under one mailbox key (default 64: a day's worth of messages
    /// to someone away, without letting one sender take a mailbox).
    pub mailbox_per_sender: usize,
    /// Items under one mailbox key, all senders (default 1024: 16 senders at their quota;
    /// 1024 × 77 KB = 79 MB at worst, inside the byte bounds above).
    pub mailbox_per_key: usize,
    /// Items under one mailbox key from one network — an IPv4 /24 or an IPv6 /48 —
    /// (default 128, an eighth of the key: filling a mailbox takes eight networks, and a
    /// full one still takes items from a network that holds fewer than the heaviest).
    pub mailbox_per_network: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_bytes: 256 << 20,
            per_publisher_bytes: 1 << 20,
            per_source_bytes: 4 << 20,
            per_network_bytes: 16 << 20,
            mailbox: true,
            mailbox_per_sender: 64,
            mailbox_per_key: 1024,
            mailbox_per_network: 128,
        }
    }
}

/// Why a record was not stored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record did not verify.
    #[error("invalid record: {0}")]
    Invalid(#[from] RecordError),
    /// A newer record of this publisher is held.
    #[error("stale record: sequence {got} is below the {held} held")]
    Stale {
        /// Sequence held.
        held: u64,
        /// Sequence offered.
        got: u64,
    },
    /// Same sequence, different bytes.
    #[error("conflicting record: sequence {seq} is held with other content")]
    Conflict {
        /// The sequence.
        seq: u64,
    },
    /// The publisher holds its quota here.
    #[error("publisher quota reached")]
    PublisherQuota,
    /// The source (IPv4 address, IPv6 /64) stored its quota here.
    #[error("source quota reached")]
    SourceQuota,
    /// The network (IPv4 /24, IPv6 /48) stored its quota here.
    #[error("network quota reached")]
    NetworkQuota,
    /// The store is full and the sender's network holds at least a fair share.
    #[error("store full")]
    Full,
    /// A name claim while another publisher's claim for that name is held and unexpired:
    /// first come (spec/08-names.md §3).
    #[error("name already claimed by another publisher")]
    NameTaken,
    /// This node does not store other nodes' mailbox items.
    #[error("this node stores no mailbox items")]
    NoMailbox,
    /// The sender holds its quota of items in this mailbox.
    #[error("mailbox sender quota reached")]
    MailboxSenderQuota,
    /// The mailbox holds its cap of items, and the sender's network holds at least as
    /// many of them as any other.
    #[error("mailbox full")]
    MailboxFull,
    /// The sender's network holds its share of this mailbox's items.
    #[error("mailbox network quota reached")]
    MailboxNetworkQuota,
    /// The recipient's receipt lists this item: it was delivered.
    #[error("mailbox item already delivered")]
    Receipted,
}

/// What a successful `put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A new record.
    New,
    /// Replaced an older sequence.
    Updated,
    /// The identical record was already held.
    Unchanged,
}

/// Refusals by the quota that made them, since start (spec/04-dht.md §5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaRefusals {
    /// [`StoreError::PublisherQuota`].
    pub publisher: u64,
    /// [`StoreError::SourceQuota`].
    pub source: u64,
    /// [`StoreError::NetworkQuota`].
    pub network: u64,
    /// [`StoreError::Full`].
    pub full: u64,
}

impl QuotaRefusals {
    fn count(&mut self, e: &StoreError) {
        match e {
            StoreError::PublisherQuota => self.publisher += 1,
            StoreError::SourceQuota => self.source += 1,
            StoreError::NetworkQuota => self.network += 1,
            StoreError::Full => self.full += 1,
            _ => {}
        }
    }
}

/// The store's figures (for `dna status` and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Records held.
    pub records: usize,
    /// Their cost: encoded bytes plus [`RECORD_OVERHEAD`] each.
    pub bytes: usize,
    /// Records refused by a quota or because the store was full, since start.
    pub refused: u64,
    /// Of those, by the quota that refused them.
    pub refused_by: QuotaRefusals,
    /// Records evicted to make room for a lighter network's, since start.
    pub evicted: u64,
    /// Mailbox items held (spec/09-mailbox.md), included in `records`.
    pub mailbox_items: usize,
    /// Mailbox items evicted from a full key for a lighter network's, since start.
    pub mailbox_evicted: u64,
}

/// What changed since the last [`RecordStore::take_changes`], for persistence.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StoreChanges {
    /// `upserts` lists every record held: replace whatever was saved.
    pub full: bool,
    /// Records to save, with the address that stored them (`None`: this node).
    pub upserts: Vec<(VerifiedRecord, Option<IpAddr>)>,
    /// Slots (key, publisher, item number or 0) no longer held.
    pub removed: Vec<(NodeId, Fingerprint, u64)>,
}

/// (key, publisher, mailbox item number — 0 for every other kind).
type Slot = (NodeId, Fingerprint, u64);

fn slot_of(rec: &VerifiedRecord) -> Slot {
    (rec.key(), rec.publisher(), rec.item())
}

/// Every slot under `key`.
fn key_range(key: &NodeId) -> std::ops::RangeInclusive<Slot> {
    (*key, Fingerprint([0; 32]), 0)..=(*key, Fingerprint([0xff; 32]), u64::MAX)
}

#[derive(Debug, Clone)]
struct Held {
    rec: VerifiedRecord,
    source: Option<IpAddr>,
}

#[derive(Debug, Default)]
struct NetUsage {
    bytes: usize,
    /// The network's records, soonest expiry first (eviction order).
    by_expiry: BTreeSet<(u64, Slot)>,
}

fn cost(rec: &VerifiedRecord) -> usize {
    rec.bytes().len() + RECORD_OVERHEAD
}

/// Records held by one node.
#[derive(Debug, Default)]
pub struct RecordStore {
    cfg: StoreConfig,
    records: BTreeMap<Slot, Held>,
    bytes: usize,
    by_publisher: HashMap<Fingerprint, usize>,
    by_source: HashMap<Source, usize>,
    by_network: HashMap<Network, NetUsage>,
    /// No record expires before this (a lower bound: `expire` scans only once it passed).
    next_expiry: u64,
    refused: u64,
    refused_by: QuotaRefusals,
    evicted: u64,
    /// Slots changed since the last `take_changes`; `full` instead once that set grows
    /// past the records held (+1024), so it stays bounded.
    dirty: BTreeSet<Slot>,
    full: bool,
    /// Mailbox items held per key, and the receipts held (by mailbox key).
    items: HashMap<NodeId, usize>,
    /// Mailbox items from others per (key, network), soonest expiry first.
    item_nets: HashMap<(NodeId, Network), BTreeSet<(u64, Slot)>>,
    mailbox_evicted: u64,
    receipts: HashMap<NodeId, Receipt>,
}

impl RecordStore {
    /// An empty store.
    pub fn new(cfg: StoreConfig) -> RecordStore {
        RecordStore {
            cfg,
            ..RecordStore::default()
        }
    }

    /// Verifies and stores an encoded record received from `source` (`None`: this node) at
    /// `now` (Unix seconds).
    pub fn put(
        &mut self,
        bytes: &[u8],
        source: Option<IpAddr>,
        now: u64,
    ) -> Result<Stored, StoreError> {
        let rec = VerifiedRecord::verify(bytes, now)?;
        self.put_verified(rec, source, now)
    }

    /// Stores a record already verified (outside the caller's lock); only expiry is checked
    /// again, against `now`.
    pub fn put_verified(
        &mut self,
        rec: VerifiedRecord,
        source: Option<IpAddr>,
        now: u64,
    ) -> Result<Stored, StoreError> {
        if rec.expiry() <= now {
            return Err(RecordError::Expired {
                expiry: rec.expiry(),
                now,
            }
            .into());
        }
        let slot = slot_of(&rec);
        if rec.kind() == RecordKind::NameClaim && self.claimed_by_other(&rec, now) {
            return Err(StoreError::NameTaken);
        }
        let mut victim = None;
        if rec.kind().is_item() && !self.records.contains_key(&slot) {
            victim = self.admit_item(&rec, source)?;
        }
        let old = match self.records.get(&slot) {
            Some(held) => match rec.seq().cmp(&held.rec.seq()) {
                std::cmp::Ordering::Less => {
                    return Err(StoreError::Stale {
                        held: held.rec.seq(),
                        got: rec.seq(),
                    })
                }
                std::cmp::Ordering::Equal if held.rec.bytes() == rec.bytes() => {
                    return Ok(Stored::Unchanged)
                }
                std::cmp::Ordering::Equal => {
                    return Err(StoreError::Conflict {
                        seq: held.rec.seq(),
                    })
                }
                std::cmp::Ordering::Greater => self.remove(&slot),
            },
            None => None,
        };
        if let Err(e) = self.admit(&rec, source, now) {
            if let Some(old) = old {
                self.insert(slot, old);
            }
            self.refused += 1;
            self.refused_by.count(&e);
            return Err(e);
        }
        if let Some(v) = victim {
            // (Unless the byte quotas' room-making took it already.)
            if self.remove(&v).is_some() {
                self.mailbox_evicted += 1;
            }
        }
        let receipt = rec.kind().is_receipt().then(|| rec.key());
        self.insert(slot, Held { rec, source });
        if let Some(key) = receipt {
            self.drop_receipted(&key);
        }
        Ok(if old.is_some() {
            Stored::Updated
        } else {
            Stored::New
        })
    }

    /// The mailbox rules for a new item (spec/09-mailbox.md §3): refused, admitted, or
    /// admitted in place of the returned item (a full key, a heavier network's item), which
    /// the caller evicts once the byte quotas admitted the new one.
    fn admit_item(
        &mut self,
        rec: &VerifiedRecord,
        source: Option<IpAddr>,
    ) -> Result<Option<Slot>, StoreError> {
        let key = rec.key();
        let refuse = |s: &mut RecordStore, e| {
            s.refused += 1;
            s.refused_by.count(&e);
            Err(e)
        };
        if source.is_some() && !self.cfg.mailbox {
            return refuse(self, StoreError::NoMailbox);
        }
        if self
            .receipts
            .get(&key)
            .is_some_and(|r| r.covers(&rec.publisher(), rec.item()))
        {
            return Err(StoreError::Receipted);
        }
        // A drop's items all come from its identity (every contact writes as it): no
        // per-sender cap there; the network's share and the key's cap still hold.
        let p = rec.publisher();
        let of_sender = self.records.range((key, p, 1)..=(key, p, u64::MAX)).count();
        if rec.kind() == RecordKind::MailboxItem && of_sender >= self.cfg.mailbox_per_sender {
            return refuse(self, StoreError::MailboxSenderQuota);
        }
        let Some(net) = source.map(Network::of) else {
            // Our own item: never refused for being full, never evicted.
            return Ok(None);
        };
        let of_net =
            |s: &RecordStore, n: &Network| s.item_nets.get(&(key, *n)).map_or(0, BTreeSet::len);
        let mine = of_net(self, &net);
        if mine >= self.cfg.mailbox_per_network {
            return refuse(self, StoreError::MailboxNetworkQuota);
        }
        if self.items.get(&key).copied().unwrap_or(0) < self.cfg.mailbox_per_key {
            return Ok(None);
        }
        // Full: the heaviest other network gives up its item that expires first, if it
        // holds more than ours would with this one.
        let heaviest = self
            .item_nets
            .iter()
            .filter(|((k, n), _)| *k == key && *n != net)
            .max_by_key(|(_, items)| items.len())
            .filter(|(_, items)| items.len() > mine + 1)
            .and_then(|(_, items)| items.first().map(|e| e.1));
        match heaviest {
            Some(slot) => Ok(Some(slot)),
            None => refuse(self, StoreError::MailboxFull),
        }
    }

    /// Drops the items under `key` that its receipt lists.
    fn drop_receipted(&mut self, key: &NodeId) {
        let Some(receipt) = self.receipts.get(key) else {
            return;
        };
        let gone: Vec<Slot> = self
            .records
            .range(key_range(key))
            .map(|(slot, _)| *slot)
            .filter(|(_, p, item)| *item != 0 && receipt.covers(p, *item))
            .collect();
        for slot in gone {
            self.remove(&slot);
        }
    }

    /// Checks the quotas for `rec` from `source`, and makes room if the store is full.
    fn admit(
        &mut self,
        rec: &VerifiedRecord,
        source: Option<IpAddr>,
        now: u64,
    ) -> Result<(), StoreError> {
        let c = cost(rec);
        let used = |m: Option<&usize>| m.copied().unwrap_or(0);
        // A drop's identity publishes for all the recipient's contacts: its items are
        // bounded by the key's cap and the senders' source and network bytes instead.
        let by_publisher = used(self.by_publisher.get(&rec.publisher()));
        if rec.kind() != RecordKind::MailboxDrop && by_publisher + c > self.cfg.per_publisher_bytes
        {
            return Err(StoreError::PublisherQuota);
        }
        let network = source.map(Network::of);
        if let Some(ip) = source {
            if used(self.by_source.get(&Source::of(ip))) + c > self.cfg.per_source_bytes {
                return Err(StoreError::SourceQuota);
            }
        }
        if let Some(n) = network {
            if self.network_bytes(&n) + c > self.cfg.per_network_bytes {
                return Err(StoreError::NetworkQuota);
            }
        }
        if self.bytes + c > self.cfg.max_bytes {
            self.expire(now);
        }
        if self.bytes + c > self.cfg.max_bytes {
            self.make_room(c, network)?;
        }
        Ok(())
    }

    fn network_bytes(&self, n: &Network) -> usize {
        self.by_network.get(n).map_or(0, |u| u.bytes)
    }

    /// Frees `need` bytes by evicting from the heaviest networks, as long as each is
    /// heavier than `network` would be with the new record; all or nothing.
    fn make_room(&mut self, need: usize, network: Option<Network>) -> Result<(), StoreError> {
        let Some(mine) = network else {
            return Err(StoreError::Full);
        };
        let after = self.network_bytes(&mine) + need;
        let mut taken: HashMap<Network, (usize, usize)> = HashMap::new();
        let mut plan = Vec::new();
        let mut freed = 0;
        while self.bytes - freed + need > self.cfg.max_bytes {
            let heaviest = self
                .by_network
                .iter()
                .filter(|(n, _)| **n != mine)
                .map(|(n, u)| (u.bytes - taken.get(n).map_or(0, |t| t.0), *n))
                .max();
            let Some((bytes, n)) = heaviest else {
                return Err(StoreError::Full);
            };
            if bytes <= after {
                return Err(StoreError::Full);
            }
            let t = taken.entry(n).or_default();
            let next = self.by_network[&n].by_expiry.iter().nth(t.1).map(|e| e.1);
            let Some(slot) = next else {
                return Err(StoreError::Full);
            };
            let c = cost(&self.records[&slot].rec);
            t.0 += c;
            t.1 += 1;
            freed += c;
            plan.push(slot);
        }
        for slot in plan {
            self.remove(&slot);
            self.evicted += 1;
        }
        Ok(())
    }

    fn insert(&mut self, slot: Slot, held: Held) {
        let c = cost(&held.rec);
        self.bytes += c;
        // A drop's items are its contacts', not its identity's (see `admit`).
        if held.rec.kind() != RecordKind::MailboxDrop {
            *self.by_publisher.entry(slot.1).or_default() += c;
        }
        if let Some(ip) = held.source {
            *self.by_source.entry(Source::of(ip)).or_default() += c;
            let u = self.by_network.entry(Network::of(ip)).or_default();
            u.bytes += c;
            u.by_expiry.insert((held.rec.expiry(), slot));
        }
        self.next_expiry = if self.records.is_empty() {
            held.rec.expiry()
        } else {
            self.next_expiry.min(held.rec.expiry())
        };
        match held.rec.kind() {
            k if k.is_item() => {
                *self.items.entry(slot.0).or_default() += 1;
                if let Some(ip) = held.source {
                    let e = self.item_nets.entry((slot.0, Network::of(ip)));
                    e.or_default().insert((held.rec.expiry(), slot));
                }
            }
            k if k.is_receipt() => {
                if let Some(r) = Receipt::decode(held.rec.value()) {
                    self.receipts.insert(slot.0, r);
                }
            }
            _ => {}
        }
        self.records.insert(slot, held);
        self.changed(slot);
    }

    /// Drops the record of `publisher` under `key`, if held (our own claim that lost a race).
    pub fn remove_slot(&mut self, slot: &(NodeId, Fingerprint)) {
        self.remove(&(slot.0, slot.1, 0));
    }

    fn remove(&mut self, slot: &Slot) -> Option<Held> {
        let held = self.records.remove(slot)?;
        let c = cost(&held.rec);
        self.bytes -= c;
        match held.rec.kind() {
            k if k.is_item() => {
                subtract(&mut self.items, &slot.0, 1);
                if let Some(ip) = held.source {
                    let k = (slot.0, Network::of(ip));
                    if let Some(items) = self.item_nets.get_mut(&k) {
                        items.remove(&(held.rec.expiry(), *slot));
                        if items.is_empty() {
                            self.item_nets.remove(&k);
                        }
                    }
                }
            }
            k if k.is_receipt() => {
                self.receipts.remove(&slot.0);
            }
            _ => {}
        }
        if held.rec.kind() != RecordKind::MailboxDrop {
            subtract(&mut self.by_publisher, &slot.1, c);
        }
        if let Some(ip) = held.source {
            subtract(&mut self.by_source, &Source::of(ip), c);
            let n = Network::of(ip);
            if let Some(u) = self.by_network.get_mut(&n) {
                u.bytes -= c;
                u.by_expiry.remove(&(held.rec.expiry(), *slot));
                if u.by_expiry.is_empty() {
                    self.by_network.remove(&n);
                }
            }
        }
        self.changed(*slot);
        Some(held)
    }

    fn changed(&mut self, slot: Slot) {
        if self.full {
            return;
        }
        self.dirty.insert(slot);
        if self.dirty.len() > self.records.len() + 1024 {
            self.dirty.clear();
            self.full = true;
        }
    }

    /// Whether another publisher holds an unexpired claim under `rec`'s key (a name claim).
    fn claimed_by_other(&self, rec: &VerifiedRecord, now: u64) -> bool {
        self.records
            .range(key_range(&rec.key()))
            .any(|((_, fp, _), h)| *fp != rec.publisher() && h.rec.expiry() > now)
    }

    /// The encoded records under `key` that have not expired at `now`: records that are not
    /// mailbox items first, newest sequence first; then mailbox items in slot order
    /// (publisher, item number), the order [`RecordStore::get_after`] pages through.
    pub fn get(&self, key: &NodeId, now: u64) -> Vec<&[u8]> {
        let live = |h: &&Held| h.rec.expiry() > now;
        let mut found: Vec<&Held> = self
            .records
            .range(key_range(key))
            .filter(|(s, _)| s.2 == 0)
            .map(|(_, h)| h)
            .filter(live)
            .collect();
        found.sort_by_key(|h| std::cmp::Reverse(h.rec.seq()));
        found.extend(
            self.records
                .range(key_range(key))
                .filter(|(s, _)| s.2 != 0)
                .map(|(_, h)| h)
                .filter(live),
        );
        found.into_iter().map(|h| h.rec.bytes()).collect()
    }

    /// Mailbox items under `key` after item `after` (publisher, item number) in slot
    /// order, unexpired at `now`, at most `max`: the next page of a mailbox.
    pub fn get_after(
        &self,
        key: &NodeId,
        after: (Fingerprint, u64),
        now: u64,
        max: usize,
    ) -> Vec<&[u8]> {
        use std::ops::Bound::{Excluded, Included};
        let end = (*key, Fingerprint([0xff; 32]), u64::MAX);
        self.records
            .range((Excluded((*key, after.0, after.1)), Included(end)))
            .filter(|(s, h)| s.2 != 0 && h.rec.expiry() > now)
            .take(max)
            .map(|(_, h)| h.rec.bytes())
            .collect()
    }

    /// Mailbox items held, over all keys.
    pub fn mailbox_items(&self) -> usize {
        self.items.values().sum()
    }

    /// Drops expired records (a scan only once the earliest expiry passed).
    pub fn expire(&mut self, now: u64) {
        if self.records.is_empty() || now < self.next_expiry {
            return;
        }
        let dead: Vec<Slot> = self
            .records
            .iter()
            .filter(|(_, h)| h.rec.expiry() <= now)
            .map(|(k, _)| *k)
            .collect();
        for slot in dead {
            self.remove(&slot);
        }
        self.next_expiry = self
            .records
            .values()
            .map(|h| h.rec.expiry())
            .min()
            .unwrap_or(0);
    }

    /// Every record held: its key and encoding (for replication).
    pub fn all(&self) -> impl Iterator<Item = (NodeId, &[u8])> {
        self.records.iter().map(|(k, h)| (k.0, h.rec.bytes()))
    }

    /// What changed since the last call (everything, the first time after
    /// [`RecordStore::mark_all_changed`]).
    pub fn take_changes(&mut self) -> StoreChanges {
        if self.full {
            self.full = false;
            self.dirty.clear();
            return StoreChanges {
                full: true,
                upserts: self
                    .records
                    .values()
                    .map(|h| (h.rec.clone(), h.source))
                    .collect(),
                removed: Vec::new(),
            };
        }
        let mut changes = StoreChanges::default();
        for slot in std::mem::take(&mut self.dirty) {
            match self.records.get(&slot) {
                Some(h) => changes.upserts.push((h.rec.clone(), h.source)),
                None => changes.removed.push(slot),
            }
        }
        changes
    }

    /// The next [`RecordStore::take_changes`] lists everything (after loading, or after a
    /// save failed).
    pub fn mark_all_changed(&mut self) {
        self.full = true;
        self.dirty.clear();
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The store's figures.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            records: self.records.len(),
            bytes: self.bytes,
            refused: self.refused,
            refused_by: self.refused_by,
            evicted: self.evicted,
            mailbox_items: self.mailbox_items(),
            mailbox_evicted: self.mailbox_evicted,
        }
    }
}

fn subtract<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: &K, c: usize) {
    if let Some(n) = m.get_mut(k) {
        *n -= c;
        if *n == 0 {
            m.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Identity, Record};
    use rand_core::OsRng;

    const NOW: u64 = 1_800_000_000;

    fn presence(id: &Identity, seq: u64, value: &[u8]) -> Vec<u8> {
        Record::sign(
            id,
            RecordKind::Presence,
            seq,
            NOW + 600,
            value.to_vec(),
            NOW,
        )
        .unwrap()
        .encode()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn ids(n: usize) -> Vec<Identity> {
        (0..n).map(|_| Identity::generate(&mut OsRng)).collect()
    }

    #[test]
    fn newer_replaces_older_is_refused_equal_only_if_identical() {
        let id = Identity::generate(&mut OsRng);
        let mut s = RecordStore::new(StoreConfig::default());
        let from = ip("10.0.0.1");
        assert_eq!(s.put(&presence(&id, 5, b"a"), from, NOW), Ok(Stored::New));
        assert_eq!(
            s.put(&presence(&id, 5, b"a"), from, NOW),
            Ok(Stored::Unchanged)
        );
        assert_eq!(
            s.put(&presence(&id, 5, b"b"), from, NOW),
            Err(StoreError::Conflict { seq: 5 })
        );
        assert_eq!(
            s.put(&presence(&id, 4, b"old"), from, NOW),
            Err(StoreError::Stale { held: 5, got: 4 })
        );
        assert_eq!(
            s.put(&presence(&id, 6, b"new"), from, NOW),
            Ok(Stored::Updated)
        );
        let key = crate::crypto::record::presence_key(&id.fingerprint());
        let got = s.get(&key, NOW);
        assert_eq!(got.len(), 1);
        assert_eq!(Record::verify(got[0], NOW).unwrap().value(), b"new");
    }

    #[test]
    fn invalid_records_are_refused() {
        let id = Identity::generate(&mut OsRng);
        let mut s = RecordStore::new(StoreConfig::default());
        let mut forged = presence(&id, 1, b"a");
        let n = forged.len();
        forged[n - 1] ^= 1;
        assert_eq!(
            s.put(&forged, ip("10.0.0.1"), NOW),
            Err(StoreError::Invalid(RecordError::BadSignature))
        );
        assert!(matches!(
            s.put(&[1, 2, 3], ip("10.0.0.1"), NOW),
            Err(StoreError::Invalid(_))
        ));
        assert!(s.is_empty());
        assert_eq!(s.stats().refused, 0, "invalid is not a quota refusal");
    }

    #[test]
    fn records_under_someone_elses_key_and_oversized_records_are_refused() {
        let alice = Identity::generate(&mut OsRng);
        let bob = Identity::generate(&mut OsRng);
        let mut s = RecordStore::new(StoreConfig::default());
        // Alice's correctly signed record, re-keyed under Bob's presence key and re-signed.
        let mut bytes = presence(&alice, 1, b"a");
        bytes[2..22].copy_from_slice(&crate::crypto::record::presence_key(&bob.fingerprint()).0);
        bytes.truncate(bytes.len() - crate::crypto::SIGNATURE_LEN);
        let sig = alice.sign(crate::crypto::record::DOMAIN, &[&bytes]);
        bytes.extend_from_slice(&sig);
        assert!(matches!(
            s.put(&bytes, ip("10.0.0.1"), NOW),
            Err(StoreError::Invalid(RecordError::KeyMismatch { .. }))
        ));
        // A value over the presence limit, declared in the header.
        let mut big = presence(&alice, 1, b"a");
        big[1990..1994].copy_from_slice(&(1u32 << 20).to_be_bytes());
        assert!(matches!(
            s.put(&big, ip("10.0.0.1"), NOW),
            Err(StoreError::Invalid(RecordError::ValueTooLarge { .. }))
        ));
        assert!(s.is_empty());
    }

    #[test]
    fn bytes_count_the_encoding_plus_the_overhead_and_follow_updates_and_expiry() {
        let id = Identity::generate(&mut OsRng);
        let mut s = RecordStore::new(StoreConfig::default());
        let small = presence(&id, 1, &[1; 10]);
        let large = presence(&id, 2, &[2; 2000]);
        s.put(&small, ip("10.0.0.1"), NOW).unwrap();
        assert_eq!(s.stats().bytes, small.len() + RECORD_OVERHEAD);
        s.put(&large, ip("10.0.0.1"), NOW).unwrap();
        assert_eq!(s.stats().bytes, large.len() + RECORD_OVERHEAD);
        s.expire(NOW + 600);
        assert_eq!(s.stats(), StoreStats::default());
        assert!(s.by_publisher.is_empty() && s.by_source.is_empty() && s.by_network.is_empty());
    }

    /// The overhead covers what the types take per record (64-bit figures in comments).
    #[test]
    fn the_overhead_covers_the_structures_of_a_record() {
        use std::mem::size_of;
        let slot = size_of::<Slot>(); // 64
        let entry = 2 * (slot + size_of::<Held>()); // B-tree nodes are at least half full
        let shared_bytes_header = 2 * size_of::<usize>() + 16; // Arc counts, allocator slack
        let network_index = 2 * size_of::<(u64, Slot)>();
        let change_set = 2 * slot;
        // hashbrown: entries at most 7/8 full, one control byte each.
        let tables = 2
            * (size_of::<(Fingerprint, usize)>()
                + size_of::<(Source, usize)>()
                + size_of::<(Network, NetUsage)>()
                + 3);
        let total = entry + shared_bytes_header + network_index + change_set + tables;
        println!("per-record structures: {total} bytes (overhead charged: {RECORD_OVERHEAD})");
        assert!(total <= RECORD_OVERHEAD);
    }

    #[test]
    fn per_publisher_quota_and_expiry_free_it() {
        let cfg = StoreConfig {
            per_publisher_bytes: 10_000,
            ..StoreConfig::default()
        };
        let mut s = RecordStore::new(cfg);
        let a = Identity::generate(&mut OsRng);
        s.put(&presence(&a, 1, &[0; 1000]), ip("10.0.0.1"), NOW)
            .unwrap();
        let name = Record::sign(
            &a,
            RecordKind::NameClaim,
            1,
            NOW + 60,
            crate::crypto::name::NameClaim {
                claimed_at: NOW,
                name: "alice".into(),
            }
            .encode(),
            NOW,
        )
        .unwrap()
        .encode();
        assert_eq!(
            s.put(&name, ip("10.9.9.9"), NOW),
            Err(StoreError::PublisherQuota)
        );
        s.expire(NOW + 600);
        assert_eq!(s.put(&name, ip("10.9.9.9"), NOW + 1), Ok(Stored::New));
        assert_eq!(s.stats().refused, 1);
    }

    fn claim(id: &Identity, name: &str, seq: u64, claimed_at: u64) -> Vec<u8> {
        let value = crate::crypto::name::NameClaim {
            claimed_at,
            name: name.into(),
        };
        Record::sign(
            id,
            RecordKind::NameClaim,
            seq,
            NOW + 600,
            value.encode(),
            NOW,
        )
        .unwrap()
        .encode()
    }

    /// The attack: a second publisher claims a name this node already holds a live claim
    /// for. First come: it is refused, and a lookup here sees only the first claim.
    #[test]
    fn a_second_publisher_cannot_claim_a_held_name() {
        let (alice, mallory) = (
            Identity::generate(&mut OsRng),
            Identity::generate(&mut OsRng),
        );
        let mut s = RecordStore::new(StoreConfig::default());
        let from = ip("10.0.0.1");
        assert_eq!(
            s.put(&claim(&alice, "alice", 1, NOW - 5), from, NOW),
            Ok(Stored::New)
        );
        // Mallory, from another network, with an earlier claim time: still second here.
        let stolen = s.put(
            &claim(&mallory, "alice", 1, NOW - 3600),
            ip("198.51.100.7"),
            NOW,
        );
        let held = s.get(&crate::crypto::record::name_key("alice"), NOW).len();
        println!("second publisher's claim for a held name: {stolen:?}; claims held for the name: {held}");
        assert_eq!(stolen, Err(StoreError::NameTaken));
        assert_eq!(held, 1);
    }

    #[test]
    fn the_owner_renews_its_claim_and_a_lapsed_name_is_free_again() {
        let (alice, bob) = (
            Identity::generate(&mut OsRng),
            Identity::generate(&mut OsRng),
        );
        let mut s = RecordStore::new(StoreConfig::default());
        let from = ip("10.0.0.1");
        s.put(&claim(&alice, "alice", 1, NOW), from, NOW).unwrap();
        assert_eq!(
            s.put(&claim(&alice, "alice", 2, NOW), from, NOW),
            Ok(Stored::Updated)
        );
        // Another name is not affected.
        assert_eq!(
            s.put(&claim(&bob, "bob", 1, NOW), from, NOW),
            Ok(Stored::New)
        );
        // Alice's claim expires (NOW + 600): the name is free for Bob.
        s.expire(NOW + 600);
        let bobs = Record::sign(
            &bob,
            RecordKind::NameClaim,
            1,
            NOW + 1200,
            crate::crypto::name::NameClaim {
                claimed_at: NOW + 601,
                name: "alice".into(),
            }
            .encode(),
            NOW + 601,
        )
        .unwrap()
        .encode();
        assert_eq!(s.put(&bobs, from, NOW + 601), Ok(Stored::New));
    }

    /// Small limits so a few dozen identities make a flood: records of ~7.4 KB cost.
    fn small() -> StoreConfig {
        StoreConfig {
            max_bytes: 128 << 10,
            per_publisher_bytes: 16 << 10,
            per_source_bytes: 16 << 10,
            per_network_bytes: 32 << 10,
            ..StoreConfig::default()
        }
    }

    /// Stores one record per identity, identity `i` from `addr(i)`; counts what was stored.
    fn flood(s: &mut RecordStore, ids: &[Identity], addr: impl Fn(usize) -> String) -> usize {
        ids.iter()
            .enumerate()
            .filter(|(i, id)| {
                s.put(&presence(id, 1, &[7; 1000]), ip(&addr(*i)), NOW)
                    .is_ok()
            })
            .count()
    }

    fn honest_stores(s: &mut RecordStore, from: &str) -> bool {
        let good = Identity::generate(&mut OsRng);
        s.put(&presence(&good, 1, b"here"), ip(from), NOW) == Ok(Stored::New)
    }

    #[test]
    fn a_flood_from_one_slash_24_stops_at_the_network_quota() {
        let mut s = RecordStore::new(small());
        // 24 identities, each from its own address of 198.18.7.0/24.
        let stored = flood(&mut s, &ids(24), |i| format!("198.18.7.{}", i + 1));
        let st = s.stats();
        println!(
            "one /24, 24 identities: stored {stored}, {} bytes (network quota {}), refused {}",
            st.bytes,
            small().per_network_bytes,
            st.refused
        );
        assert!(st.bytes <= small().per_network_bytes);
        assert_eq!(stored, 4, "32 KiB / 7.4 KB");
        assert!(honest_stores(&mut s, "203.0.113.9"));
    }

    #[test]
    fn a_flood_from_one_slash_64_stops_at_the_source_quota_and_a_slash_48_at_the_network_quota() {
        let mut s = RecordStore::new(small());
        // Every identity on its own address inside one /64.
        let stored = flood(&mut s, &ids(12), |i| format!("2001:db8:1:1::{:x}", i + 1));
        let one64 = s.stats().bytes;
        // Then a fresh /64 per identity inside one /48.
        let stored48 = flood(&mut s, &ids(12), |i| format!("2001:db8:1:{:x}::1", i + 2));
        let st = s.stats();
        println!(
            "one /64: stored {stored} ({one64} bytes, source quota {}); one /48 of fresh /64s: stored {stored48} more, {} bytes in the /48 (network quota {})",
            small().per_source_bytes,
            st.bytes,
            small().per_network_bytes
        );
        assert!(one64 <= small().per_source_bytes);
        assert_eq!(stored, 2);
        assert!(st.bytes <= small().per_network_bytes);
        assert_eq!(stored + stored48, 4);
        assert!(honest_stores(&mut s, "2001:db8:2::1"));
    }

    #[test]
    fn a_flood_from_many_networks_stops_at_max_bytes_and_a_new_network_still_stores() {
        let mut s = RecordStore::new(small());
        // 8 networks × 8 identities: twice what the store holds.
        let stored = flood(&mut s, &ids(64), |i| {
            format!("198.18.{}.{}", i % 8, i / 8 + 1)
        });
        let st = s.stats();
        println!(
            "8 networks, 64 identities: stored {stored}, holds {} records, {} bytes (max {}), refused {}, evicted {}",
            st.records,
            st.bytes,
            small().max_bytes,
            st.refused,
            st.evicted
        );
        assert!(st.bytes <= small().max_bytes);
        assert!(st.bytes + 2 * 7400 > small().max_bytes, "filled up");
        assert!(st.refused > 0);
        // Every network kept a share: none was pushed out entirely.
        assert_eq!(s.by_network.len(), 8);
        assert!(honest_stores(&mut s, "203.0.113.9"));
        assert!(s.stats().bytes <= small().max_bytes);
    }

    #[test]
    fn own_records_are_never_evicted() {
        let mut s = RecordStore::new(small());
        let me = Identity::generate(&mut OsRng);
        s.put(&presence(&me, 1, b"me"), None, NOW).unwrap();
        // Two heavy networks, then many light ones that evict from them.
        flood(&mut s, &ids(8), |i| {
            format!("198.18.{}.{}", i % 2, i / 2 + 1)
        });
        flood(&mut s, &ids(30), |i| format!("198.19.{i}.1"));
        assert!(s.stats().evicted > 0);
        let key = crate::crypto::record::presence_key(&me.fingerprint());
        assert_eq!(s.get(&key, NOW).len(), 1);
    }

    #[test]
    fn changes_list_what_was_stored_and_removed_then_nothing() {
        let mut s = RecordStore::new(StoreConfig::default());
        let ids = ids(2);
        s.put(&presence(&ids[0], 1, b"a"), ip("10.0.0.1"), NOW)
            .unwrap();
        let c = s.take_changes();
        assert!(!c.full);
        assert_eq!(c.upserts.len(), 1);
        assert_eq!(c.upserts[0].1, ip("10.0.0.1"));
        assert!(s.take_changes().upserts.is_empty());
        s.put(&presence(&ids[1], 1, b"b"), None, NOW + 1).unwrap();
        s.expire(NOW + 600);
        let c = s.take_changes();
        assert_eq!((c.upserts.len(), c.removed.len()), (0, 2));
        s.mark_all_changed();
        assert!(s.take_changes().full);
    }

    // ---- mailbox (spec/09-mailbox.md §3)

    fn item(sender: &Identity, to: &Identity, seq: u64) -> Vec<u8> {
        let id = crate::crypto::MessageId([seq as u8; 16]);
        let sealed = crate::crypto::sealed::seal(
            sender,
            to.fingerprint(),
            to.kem_public(),
            id,
            1,
            crate::crypto::MessageKind::TEXT,
            b"hi",
            &mut OsRng,
        )
        .unwrap();
        Record::sign(sender, RecordKind::MailboxItem, seq, NOW + 600, sealed, NOW)
            .unwrap()
            .encode()
    }

    /// Twenty items from one sender to one recipient must all be held: a mailbox is many
    /// values under one key.
    #[test]
    fn a_mailbox_key_holds_many_items_of_one_sender() {
        let (alice, bob) = (ids(1).remove(0), ids(1).remove(0));
        let mut s = RecordStore::new(StoreConfig::default());
        let from = ip("10.0.0.1");
        for seq in 1..=20 {
            let _ = s.put(&item(&alice, &bob, seq), from, NOW);
        }
        let held = s
            .get(&crate::crypto::record::mailbox_key(&bob.fingerprint()), NOW)
            .len();
        println!("20 items from one sender: {held} held");
        assert_eq!(held, 20);
    }

    /// The attack: one sender floods a mailbox with 200 items; at most the per-sender quota
    /// (64) is held, and another sender still gets in.
    #[test]
    fn one_sender_cannot_fill_a_mailbox_beyond_its_quota() {
        let (mallory, bob, carol) = (ids(1).remove(0), ids(1).remove(0), ids(1).remove(0));
        let mut s = RecordStore::new(StoreConfig {
            per_publisher_bytes: 64 << 20,
            per_source_bytes: 64 << 20,
            per_network_bytes: 64 << 20,
            ..StoreConfig::default()
        });
        let stored = (1..=200)
            .filter(|seq| {
                s.put(&item(&mallory, &bob, *seq), ip("10.0.0.1"), NOW)
                    .is_ok()
            })
            .count();
        let ok = s.put(&item(&carol, &bob, 1), ip("10.0.0.2"), NOW).is_ok();
        let key = crate::crypto::record::mailbox_key(&bob.fingerprint());
        let held = s.get(&key, NOW).len();
        println!(
            "one sender, 200 items: stored {stored}, held {held}; another sender stores: {ok}"
        );
        assert_eq!(stored, 64);
        assert_eq!(held, 65);
        assert!(ok);
    }

    /// The attack: 1,100 senders (identities are free) each put one item in one mailbox;
    /// at most the per-key cap (1024) is held.
    #[test]
    fn many_senders_cannot_grow_one_mailbox_beyond_its_cap() {
        let bob = ids(1).remove(0);
        let mut s = RecordStore::new(StoreConfig::default());
        let senders = ids(1100);
        let stored = senders
            .iter()
            .enumerate()
            .filter(|(i, id)| {
                let from = ip(&format!("10.{}.{}.1", i / 200, i % 200));
                s.put(&item(id, &bob, 1), from, NOW).is_ok()
            })
            .count();
        let key = crate::crypto::record::mailbox_key(&bob.fingerprint());
        let held = s.get(&key, NOW).len();
        println!("1,100 senders, one item each: stored {stored}, held {held} (cap 1024)");
        assert_eq!(held, 1024);
    }

    /// Issue 20's attack at one storing node: twenty strangers on one /24 queue 64 items
    /// each for one recipient, then seven more networks fill the key. The /24 holds its
    /// share (128), the key its cap (1024); a contact from an eighth network still gets
    /// all five of hers in, each evicting the heaviest network's item that expires first,
    /// and a heavy network cannot evict her back.
    #[test]
    fn a_flood_from_a_few_networks_cannot_keep_a_contact_out_of_a_mailbox() {
        let carol = ids(1).remove(0);
        let mut s = RecordStore::new(StoreConfig {
            max_bytes: 1 << 30,
            per_network_bytes: 1 << 30,
            per_source_bytes: 1 << 30,
            ..StoreConfig::default()
        });
        let put_all = |s: &mut RecordStore, who: &[Identity], net: &str| -> usize {
            let mut n = 0;
            for (i, id) in who.iter().enumerate() {
                let from = ip(&format!("{net}.{}", i + 1));
                n += (1..=64)
                    .filter(|q| s.put(&item(id, &carol, *q), from, NOW).is_ok())
                    .count();
            }
            n
        };
        let strangers = ids(20);
        let first = put_all(&mut s, &strangers, "10.0.0");
        let mut others = 0;
        for net in 1..=7 {
            others += put_all(&mut s, &ids(2), &format!("10.0.{net}"));
        }
        let key = crate::crypto::record::mailbox_key(&carol.fingerprint());
        let full = s.get(&key, NOW).len();
        let alice = ids(1).remove(0);
        let hers: Vec<_> = (1..=5)
            .map(|q| s.put(&item(&alice, &carol, q), ip("10.9.0.1"), NOW))
            .collect();
        let back = s.put(&item(&strangers[19], &carol, 1), ip("10.0.0.20"), NOW);
        let held = s.get(&key, NOW).len();
        let evicted = s.stats().mailbox_evicted;
        println!(
            "20 strangers on one /24 × 64: {first} held; 7 networks more: {others}; key \
             {full}; a contact's 5: {hers:?}; held {held}, evicted {evicted}; a stranger \
             again: {back:?}"
        );
        assert_eq!(first, 128, "one network's share of the key");
        assert_eq!(others, 7 * 128);
        assert_eq!(full, 1024);
        assert!(hers.iter().all(Result::is_ok));
        assert_eq!((held, evicted), (1024, 5));
        // Its share, or (if the evictions took from its network) no lighter network to
        // take from: refused either way.
        let refused = |r: &Result<Stored, StoreError>| {
            matches!(
                r,
                Err(StoreError::MailboxNetworkQuota | StoreError::MailboxFull)
            )
        };
        assert!(refused(&back), "{back:?}");
        let from_stranger = s.put(&item(&ids(1)[0], &carol, 1), ip("10.0.3.9"), NOW);
        assert!(refused(&from_stranger), "{from_stranger:?}");
        let alices = s
            .get_after(&key, (alice.fingerprint(), 0), NOW, 64)
            .iter()
            .filter(|r| {
                let publisher = Record::verify(r, NOW).unwrap().publisher().fingerprint();
                publisher == alice.fingerprint()
            })
            .count();
        assert_eq!(alices, 5, "the contact's items are all held");
    }

    /// Issue 20's sybil scenario at the k storing nodes of one mailbox key: 1,000 throwaway
    /// identities from 16 networks put two items each for a recipient, and its 10 contacts —
    /// each on a network of its own — put two each in the middle of the flood. The flood
    /// fills the key at every node (16 × 128 ≥ 1,024); every contact's items are held at
    /// every node at the end.
    #[test]
    fn a_thousand_sybils_from_sixteen_networks_leave_every_contacts_items_held() {
        let carol = ids(1).remove(0);
        let cfg = StoreConfig {
            per_network_bytes: 1 << 30,
            per_source_bytes: 1 << 30,
            ..StoreConfig::default()
        };
        let mut stores: Vec<RecordStore> = (0..3).map(|_| RecordStore::new(cfg)).collect();
        let sybils = ids(1000);
        let contacts = ids(10);
        let mut order: Vec<(Vec<u8>, Option<IpAddr>)> = Vec::new();
        for (i, id) in sybils.iter().enumerate() {
            let from = ip(&format!("10.{}.0.{}", i % 16, 1 + i / 16));
            order.extend((1..=2).map(|q| (item(id, &carol, q), from)));
            if i % 100 == 50 {
                let c = i / 100;
                let from = ip(&format!("10.{}.0.1", 100 + c));
                order.extend((1..=2).map(|q| (item(&contacts[c], &carol, q), from)));
            }
        }
        for s in &mut stores {
            for (bytes, from) in &order {
                let _ = s.put(bytes, *from, NOW);
            }
        }
        let key = crate::crypto::record::mailbox_key(&carol.fingerprint());
        for (n, s) in stores.iter().enumerate() {
            let held = s.get(&key, NOW);
            let mine: std::collections::HashSet<Fingerprint> =
                contacts.iter().map(Identity::fingerprint).collect();
            let of_contacts = held
                .iter()
                .filter(|r| {
                    let publisher = Record::verify(r, NOW).unwrap().publisher().fingerprint();
                    mine.contains(&publisher)
                })
                .count();
            println!(
                "storing node {n}: {} items held ({of_contacts} of the contacts' 20), {} \
                 evicted for lighter networks",
                held.len(),
                s.stats().mailbox_evicted
            );
            assert_eq!(held.len(), 1024, "the flood filled the key");
            assert_eq!(of_contacts, 20, "every contact's items");
        }
    }

    /// A contact drop (spec/09-mailbox.md §1.1): 100 items written as the drop's identity
    /// from ten networks are all held (no per-sender cap: every contact writes as the
    /// drop), under `drop_key(M)` only; the drop's receipt drops what it lists and refuses
    /// it again; nobody else's receipt can.
    #[test]
    fn a_contact_drop_holds_its_contacts_items_and_its_receipt_drops_them() {
        use crate::crypto::drop::ContactDrop;
        let (carol, alice) = (ids(1).remove(0), ids(1).remove(0));
        let drop = ContactDrop::generate(&mut OsRng);
        let mut s = RecordStore::new(StoreConfig::default());
        let put = |s: &mut RecordStore, q: u64| {
            let sealed = crate::crypto::sealed::seal(
                &alice,
                carol.fingerprint(),
                carol.kem_public(),
                crate::crypto::MessageId([q as u8; 16]),
                1,
                crate::crypto::MessageKind::TEXT,
                b"hi",
                &mut OsRng,
            )
            .unwrap();
            let value = drop.wrap(q, &sealed, &mut OsRng).unwrap();
            let r = Record::sign(
                drop.identity(),
                RecordKind::MailboxDrop,
                q,
                NOW + 600,
                value,
                NOW,
            )
            .unwrap();
            assert_eq!(r.key(), drop.key());
            let from = ip(&format!("10.0.{}.1", q % 10));
            s.put(&r.encode(), from, NOW)
        };
        let stored = (1..=100).filter(|q| put(&mut s, *q).is_ok()).count();
        assert_eq!(stored, 100, "no per-sender cap for a drop");
        assert_eq!(s.get(&drop.key(), NOW).len(), 100);
        let carols_mailbox = crate::crypto::record::mailbox_key(&carol.fingerprint());
        assert!(
            s.get(&carols_mailbox, NOW).is_empty(),
            "nothing names carol"
        );
        let listed: Vec<(Fingerprint, u64)> = (1..=60).map(|q| (drop.fingerprint(), q)).collect();
        let value = crate::crypto::receipt::Receipt { entries: listed }.encode();
        let sign = |by: &Identity| {
            Record::sign(
                by,
                RecordKind::DropReceipt,
                1,
                NOW + 600,
                value.clone(),
                NOW,
            )
            .unwrap()
            .encode()
        };
        // Alice's "receipt" lands under her own drop key: the drop keeps its items.
        s.put(&sign(&alice), ip("10.9.0.1"), NOW).unwrap();
        assert_eq!(s.stats().mailbox_items, 100);
        s.put(&sign(drop.identity()), ip("10.9.0.1"), NOW).unwrap();
        let items = s.stats().mailbox_items;
        let again = put(&mut s, 5);
        println!("a drop: 100 items from 10 networks held; its receipt for 60: {items} left; one again: {again:?}");
        assert_eq!(items, 40);
        assert_eq!(again, Err(StoreError::Receipted));
    }

    fn receipt(by: &Identity, seq: u64, entries: Vec<(Fingerprint, u64)>) -> Vec<u8> {
        let value = crate::crypto::receipt::Receipt { entries }.encode();
        Record::sign(by, RecordKind::MailboxReceipt, seq, NOW + 600, value, NOW)
            .unwrap()
            .encode()
    }

    /// A receipt drops the items it lists (and only those), an item it lists is refused
    /// afterwards, and only the recipient can publish a receipt for its mailbox.
    #[test]
    fn a_receipt_drops_the_items_it_lists() {
        let (alice, bob, mallory) = (ids(1).remove(0), ids(1).remove(0), ids(1).remove(0));
        let mut s = RecordStore::new(StoreConfig::default());
        let from = ip("10.0.0.1");
        for seq in 1..=10 {
            s.put(&item(&alice, &bob, seq), from, NOW).unwrap();
        }
        let key = crate::crypto::record::mailbox_key(&bob.fingerprint());
        let listed: Vec<(Fingerprint, u64)> = (1..=6).map(|q| (alice.fingerprint(), q)).collect();
        // Mallory's receipt lives under Mallory's own mailbox key: Bob's items stay.
        s.put(&receipt(&mallory, 1, listed.clone()), from, NOW)
            .unwrap();
        assert_eq!(s.get(&key, NOW).len(), 10);
        s.put(&receipt(&bob, 1, listed), from, NOW).unwrap();
        let held: Vec<Vec<u8>> = s.get(&key, NOW).into_iter().map(<[u8]>::to_vec).collect();
        let items = s.stats().mailbox_items;
        let again = s.put(&item(&alice, &bob, 3), from, NOW);
        println!("10 items, receipt for 6: {items} items left; a receipted item again: {again:?}");
        assert_eq!(items, 4);
        assert_eq!(held.len(), 5, "the receipt first, then 4 items");
        assert_eq!(
            Record::verify(&held[0], NOW).unwrap().kind(),
            RecordKind::MailboxReceipt
        );
        assert_eq!(again, Err(StoreError::Receipted));
        // Paging: after item 8, the rest.
        assert_eq!(s.get_after(&key, (alice.fingerprint(), 8), NOW, 8).len(), 2);
    }

    /// A node that does not store mailboxes refuses others' items, keeps its own.
    #[test]
    fn a_node_without_mailbox_storage_refuses_items() {
        let (alice, bob) = (ids(1).remove(0), ids(1).remove(0));
        let mut s = RecordStore::new(StoreConfig {
            mailbox: false,
            ..StoreConfig::default()
        });
        assert_eq!(
            s.put(&item(&alice, &bob, 1), ip("10.0.0.1"), NOW),
            Err(StoreError::NoMailbox)
        );
        assert_eq!(s.put(&item(&alice, &bob, 1), None, NOW), Ok(Stored::New));
    }
}

//! The DHT node as one sans-IO state machine (spec/04-dht.md §6). It composes the routing
//! table, lookups and the record store; the caller (netsim, or the daemon over QUIC) carries
//! messages and time:
//!
//! ```text
//! handle_message(now, from, msg) / handle_timeout(now)      input
//! poll_transmit() -> Transmit / poll_event() -> DhtEvent     output
//! poll_timeout() -> Instant                                  when to call again
//! ```
//!
//! Wall-clock time (record expiry) is derived from `now` and the (Instant, Unix seconds)
//! pair given at construction; the node never reads a clock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::checked::{Checked, VerifiedRecord};
use super::contact::{Contact, Distance};
use super::lookup::{Lookup, LookupConfig};
use super::routing::{Insert, RoutingConfig, RoutingTable};
use super::rpc::{Body, DhtMessage, StoreStatus, FLAG_SERVER};
use super::store::{RecordStore, StoreChanges, StoreConfig, StoreError, Stored};
use crate::crypto::{NodeId, RecordError, RecordKind};

/// DHT parameters (spec/04-dht.md §7).
#[derive(Debug, Clone, Copy)]
pub struct DhtConfig {
    /// Routing table (k = 20, 2 per subnet per bucket).
    pub routing: RoutingConfig,
    /// Lookups (α = 3, request timeout 2 s).
    pub lookup: LookupConfig,
    /// Record store limits.
    pub store: StoreConfig,
    /// Whether this node serves (is reachable): servers answer requests and enter others'
    /// routing tables; clients only ask.
    pub server: bool,
    /// Owner republish and table refresh period (seed: `dht_refresh`, 5 min).
    pub refresh_interval: Duration,
    /// First delay before retrying a bootstrap that found nobody; doubles up to 5 min.
    pub bootstrap_retry: Duration,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            routing: RoutingConfig::default(),
            lookup: LookupConfig::default(),
            store: StoreConfig::default(),
            server: true,
            refresh_interval: Duration::from_secs(300),
            bootstrap_retry: Duration::from_secs(1),
        }
    }
}

/// Identifies a query started with `find_node`, `find_value`, `put` or `bootstrap`.
pub type QueryId = u64;

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The recipient.
    pub to: Contact,
    /// The message.
    pub msg: DhtMessage,
}

/// Figures of a finished lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupStats {
    /// Sequential rounds (generations of requests).
    pub rounds: u32,
    /// Requests sent.
    pub requests: u32,
    /// Time from start to finish.
    pub elapsed: Duration,
}

/// What the node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtEvent {
    /// A `find_node` finished.
    FoundNodes {
        /// The query.
        query: QueryId,
        /// The target.
        target: NodeId,
        /// The k closest nodes that answered, nearest first.
        closest: Vec<Contact>,
        /// Figures.
        stats: LookupStats,
    },
    /// A `find_value` finished.
    FoundValue {
        /// The query.
        query: QueryId,
        /// The key.
        key: NodeId,
        /// Valid records found, newest per publisher, highest sequence first.
        records: Vec<Vec<u8>>,
        /// Figures.
        stats: LookupStats,
    },
    /// A `put` finished.
    Put {
        /// The query.
        query: QueryId,
        /// The key.
        key: NodeId,
        /// Other nodes that hold the record now (this node's own copy, kept when it is one
        /// of the k closest, is not counted: it is no copy for when this node is gone).
        stored_at: usize,
        /// Other nodes asked.
        asked: usize,
        /// The refusals of those that answered and did not store it (the rest of `asked`
        /// gave no answer).
        refused: Vec<StoreStatus>,
    },
    /// A page asked with [`Dht::fetch_page`] came back (or its request failed).
    Page {
        /// The query.
        query: QueryId,
        /// The key.
        key: NodeId,
        /// The valid records of the answer under `key`, in its order.
        records: Vec<Vec<u8>>,
        /// Whether the node answered (false: timeout or a wrong answer).
        answered: bool,
    },
    /// A bootstrap finished.
    Bootstrapped {
        /// The query.
        query: QueryId,
        /// Routing table size afterwards.
        table_size: usize,
    },
}

#[derive(Debug)]
enum Kind {
    FindNode,
    FindValue {
        /// Newest per slot: (publisher, mailbox item number or 0).
        best: HashMap<(crate::crypto::Fingerprint, u64), VerifiedRecord>,
    },
    Put {
        record: VerifiedRecord,
        storing: Option<Storing>,
    },
    Bootstrap,
    /// A bucket refresh: a lookup for a random ID in a bucket's range; reports nothing.
    Refresh,
}

/// A put's STORE round: nodes asked, answers so far, those that stored it, and the
/// refusals of the others.
#[derive(Debug, Default)]
struct Storing {
    asked: usize,
    answered: usize,
    ok: usize,
    refused: Vec<StoreStatus>,
}

#[derive(Debug)]
struct Query {
    kind: Kind,
    lookup: Lookup,
    key: NodeId,
}

#[derive(Debug, Clone, Copy)]
enum Purpose {
    Lookup(QueryId),
    Store(QueryId),
    Liveness,
    Replicate,
    /// A single request of [`Dht::fetch_page`].
    Page(QueryId),
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    to: NodeId,
    purpose: Purpose,
    sent: Instant,
    deadline: Instant,
}

/// Shortest request timeout, whatever the measured round trips.
const MIN_TIMEOUT: Duration = Duration::from_millis(250);

/// One DHT node.
#[derive(Debug)]
pub struct Dht {
    local: NodeId,
    cfg: DhtConfig,
    table: RoutingTable,
    store: RecordStore,
    epoch: (Instant, u64),
    next_request: u64,
    next_query: QueryId,
    pending: HashMap<u64, Pending>,
    queries: HashMap<QueryId, Query>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<DhtEvent>,
    own: HashMap<NodeId, VerifiedRecord>,
    seeds: Vec<Contact>,
    next_refresh: Instant,
    bootstrap_at: Option<(Instant, Duration)>,
    /// xorshift64 state for refresh targets (seeded at construction; no global RNG).
    refresh_rng: u64,
    /// Smoothed round-trip time of answered requests.
    srtt: Option<Duration>,
    /// Keys of the pages asked and not answered yet (by query).
    pages: HashMap<QueryId, NodeId>,
    /// Publishers whose new presence record another node stored here, oldest first (at
    /// most [`MAX_HEARD`]; the node core takes them with [`Dht::poll_presence`]).
    heard: VecDeque<crate::crypto::Fingerprint>,
}

/// Presence arrivals kept for the node core between two polls; beyond, the oldest go.
pub const MAX_HEARD: usize = 256;

impl Dht {
    /// A node with ID `local`. `epoch` pairs an `Instant` with the Unix time (seconds) at that
    /// instant; `request_seed` randomises request IDs.
    pub fn new(local: NodeId, cfg: DhtConfig, epoch: (Instant, u64), request_seed: u64) -> Dht {
        Dht {
            local,
            cfg,
            table: RoutingTable::new(local, cfg.routing),
            store: RecordStore::new(cfg.store),
            epoch,
            next_request: request_seed,
            next_query: 1,
            pending: HashMap::new(),
            queries: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            own: HashMap::new(),
            seeds: Vec::new(),
            next_refresh: epoch.0 + cfg.refresh_interval,
            bootstrap_at: None,
            refresh_rng: request_seed | 1,
            srtt: None,
            pages: HashMap::new(),
            heard: VecDeque::new(),
        }
    }

    /// Our ID.
    pub fn local(&self) -> NodeId {
        self.local
    }

    /// The routing table.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// The record store.
    pub fn store(&self) -> &RecordStore {
        &self.store
    }

    /// Loads a record saved before a restart, with the address that had stored it (`None`:
    /// this node); verified again like any STORE, and counted against the same quotas.
    pub fn restore_record(
        &mut self,
        bytes: &[u8],
        source: Option<std::net::IpAddr>,
        now: Instant,
    ) -> Result<Stored, StoreError> {
        let unix = self.unix(now);
        self.store.put(bytes, source, unix)
    }

    /// What changed in the store since the last call, for persistence.
    pub fn take_store_changes(&mut self) -> StoreChanges {
        self.store.take_changes()
    }

    /// The next [`Dht::take_store_changes`] lists every record (after loading, or after a
    /// save failed).
    pub fn mark_store_changed(&mut self) {
        self.store.mark_all_changed();
    }

    /// The Unix time (seconds) at `now`, by the epoch given at construction.
    pub fn unix_time(&self, now: Instant) -> u64 {
        self.unix(now)
    }

    /// Puts a contact known to be alive and proven (e.g. from a saved table) in the table.
    pub fn add_contact(&mut self, c: Contact, now: Instant) {
        self.insert(c, now);
    }

    fn unix(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs()
    }

    /// A peer closed its connection to us because it is shutting down: out of the
    /// routing table at once ([`RoutingTable::left`]).
    pub fn peer_left(&mut self, id: &NodeId, now: Instant) {
        self.table.left(id, now);
    }

    /// Starts or stops serving (design brief, decision 9: only reachable nodes serve); the
    /// flag on our next messages tells others, and only then do they enter us in their
    /// tables.
    pub fn set_server(&mut self, server: bool) {
        self.cfg.server = server;
    }

    /// Whether this node serves.
    pub fn is_server(&self) -> bool {
        self.cfg.server
    }

    fn flags(&self) -> u8 {
        if self.cfg.server {
            FLAG_SERVER
        } else {
            0
        }
    }

    /// The request timeout now: 8 × the smoothed round trip, within [250 ms, configured].
    /// A dead node then costs a few round trips, not the full configured timeout; 8 leaves
    /// room for a request to a new contact, which takes three (QUIC handshake, HELLO, the
    /// request).
    pub fn request_timeout(&self) -> Duration {
        let max = self.cfg.lookup.request_timeout;
        match self.srtt {
            Some(srtt) => (srtt * 8).clamp(MIN_TIMEOUT.min(max), max),
            None => max,
        }
    }

    fn send(&mut self, to: Contact, body: Body, purpose: Purpose, now: Instant) {
        self.next_request = self.next_request.wrapping_add(1);
        let id = self.next_request;
        self.pending.insert(
            id,
            Pending {
                to: to.id,
                purpose,
                sent: now,
                deadline: now + self.request_timeout(),
            },
        );
        let msg = DhtMessage {
            id,
            flags: self.flags(),
            body,
        };
        self.transmits.push_back(Transmit { to, msg });
    }

    fn insert(&mut self, c: Contact, now: Instant) {
        match self.table.insert(c, now) {
            Insert::Pending { ping } => self.send(ping, Body::Ping, Purpose::Liveness, now),
            Insert::Added => self.replicate_to(c, now),
            _ => {}
        }
    }

    /// A newly seen node that is among the k closest to a key we hold gets a copy.
    fn replicate_to(&mut self, c: Contact, now: Instant) {
        let k = self.cfg.routing.k;
        let mut copies = Vec::new();
        for (key, bytes) in self.store.all() {
            let closest = self.table.closest(&key, k);
            let within = closest.len() < k
                || closest.last().is_some_and(|far| {
                    Distance::between(&key, &c.id) <= Distance::between(&key, &far.id)
                });
            if within {
                copies.push(bytes.to_vec());
            }
        }
        for record in copies {
            self.send(c, Body::Store { record }, Purpose::Replicate, now);
        }
    }

    fn start(&mut self, kind: Kind, key: NodeId, extra_seeds: &[Contact], now: Instant) -> QueryId {
        let q = self.next_query;
        self.next_query += 1;
        let mut seeds = self.table.closest(&key, self.cfg.lookup.k);
        for s in extra_seeds {
            if !seeds.iter().any(|c| c.id == s.id) && s.id != self.local {
                seeds.push(*s);
            }
        }
        let cfg = LookupConfig {
            request_timeout: self.request_timeout(),
            ..self.cfg.lookup
        };
        let lookup = Lookup::new(key, seeds, cfg, now);
        self.queries.insert(q, Query { kind, lookup, key });
        self.step(q, now);
        q
    }

    /// The next publisher whose new presence record was stored here by another node (the
    /// node core moves such a peer to the front of its re-reach line, spec/06 §3.5).
    pub fn poll_presence(&mut self) -> Option<crate::crypto::Fingerprint> {
        self.heard.pop_front()
    }

    /// Starts a lookup for the nodes closest to `target`.
    pub fn find_node(&mut self, target: NodeId, now: Instant) -> QueryId {
        self.start(Kind::FindNode, target, &[], now)
    }

    /// Starts a lookup for the records under `key`.
    pub fn find_value(&mut self, key: NodeId, now: Instant) -> QueryId {
        self.start(
            Kind::FindValue {
                best: HashMap::new(),
            },
            key,
            &[],
            now,
        )
    }

    /// Stores an encoded record at the k nodes closest to its key, and republishes it every
    /// refresh interval while it is ours. Verified first; an invalid record is refused.
    pub fn put(&mut self, record: Vec<u8>, now: Instant) -> Result<QueryId, StoreError> {
        let r = VerifiedRecord::verify(&record, self.unix(now))?;
        Ok(self.put_verified(r, now))
    }

    /// [`Dht::put`] of a record verified (or signed) by the caller, outside its lock.
    pub fn put_verified(&mut self, record: VerifiedRecord, now: Instant) -> QueryId {
        self.own.insert(record.key(), record.clone());
        self.start_put(record, now)
    }

    /// Stores `record` at the k nodes closest to its key once, without republishing it
    /// (a mailbox item: its sender keeps it in its outbox and puts it again itself).
    pub fn put_once(&mut self, record: VerifiedRecord, now: Instant) -> QueryId {
        self.start_put(record, now)
    }

    /// Asks `to` alone for the records under `key` (a mailbox's first page) or, with
    /// `after`, for the mailbox items after that one (spec/09-mailbox.md §6); reports a
    /// [`DhtEvent::Page`].
    pub fn fetch_page(
        &mut self,
        to: Contact,
        key: NodeId,
        after: Option<(crate::crypto::Fingerprint, u64)>,
        now: Instant,
    ) -> QueryId {
        let q = self.next_query;
        self.next_query += 1;
        self.pages.insert(q, key);
        let body = match after {
            None => Body::FindValue { key },
            Some(after) => Body::FindPage { key, after },
        };
        self.send(to, body, Purpose::Page(q), now);
        q
    }

    fn page_done(&mut self, q: QueryId, records: Vec<VerifiedRecord>, answered: bool) {
        let Some(key) = self.pages.remove(&q) else {
            return;
        };
        let records = records
            .into_iter()
            .filter(|r| r.key() == key)
            .map(|r| r.bytes().to_vec())
            .collect();
        self.events.push_back(DhtEvent::Page {
            query: q,
            key,
            records,
            answered,
        });
    }

    /// Stops republishing our record under `key` (a name claim that lost its race); the copy
    /// in our own store is dropped too if it is ours.
    pub fn unpublish(&mut self, key: &NodeId) {
        if let Some(r) = self.own.remove(key) {
            self.store.remove_slot(&(r.key(), r.publisher()));
        }
    }

    /// Starts the lookup that stores `record` at the k closest nodes.
    fn start_put(&mut self, record: VerifiedRecord, now: Instant) -> QueryId {
        let key = record.key();
        self.start(
            Kind::Put {
                record,
                storing: None,
            },
            key,
            &[],
            now,
        )
    }

    /// Joins the network through `seeds` (bootstrap nodes): a lookup for our own ID. Seeds are
    /// kept and used again by every refresh; if none answers, the bootstrap is retried with
    /// backoff.
    pub fn bootstrap(&mut self, seeds: Vec<Contact>, now: Instant) -> QueryId {
        self.seeds = seeds;
        let seeds = self.seeds.clone();
        self.start(Kind::Bootstrap, self.local, &seeds, now)
    }

    /// Feeds a message from `from`. Requests are answered (servers only), answers are matched
    /// to the request they answer — an answer from anyone else is ignored. The records it
    /// carries are verified here; [`Dht::handle_checked`] takes them verified.
    pub fn handle_message(&mut self, now: Instant, from: Contact, msg: DhtMessage) {
        let checked = Checked::new(msg, self.unix(now));
        self.handle_checked(now, from, checked);
    }

    /// [`Dht::handle_message`] with the records verified by the caller (outside its lock).
    pub fn handle_checked(&mut self, now: Instant, from: Contact, checked: Checked) {
        let Checked { msg, records } = checked;
        if from.id == self.local {
            return;
        }
        if msg.is_request() {
            if msg.flags & FLAG_SERVER != 0 {
                self.insert(from, now);
            }
            self.answer(now, from, msg, records);
            return;
        }
        let Some(p) = self.pending.get(&msg.id).copied() else {
            return;
        };
        if p.to != from.id {
            return;
        }
        self.pending.remove(&msg.id);
        let sample = now.saturating_duration_since(p.sent);
        self.srtt = Some(match self.srtt {
            Some(s) => (s * 7 + sample) / 8,
            None => sample,
        });
        if msg.flags & FLAG_SERVER != 0 {
            self.insert(from, now);
        }
        match (p.purpose, msg.body) {
            (Purpose::Liveness, Body::Pong) => self.table.on_ping_result(&from.id, true, now),
            (Purpose::Lookup(q), Body::Nodes { nodes }) => {
                self.on_nodes(q, from, nodes, Vec::new(), now)
            }
            (Purpose::Lookup(q), Body::Value { nodes, .. }) => {
                self.on_nodes(q, from, nodes, records, now)
            }
            (Purpose::Store(q), Body::Stored { status }) => self.on_stored(q, Some(status), now),
            (Purpose::Replicate, Body::Stored { .. }) => {}
            (Purpose::Page(q), Body::Value { .. }) => {
                self.page_done(q, records.into_iter().flatten().collect(), true)
            }
            (purpose, _) => self.fail(purpose, &from.id, now),
        }
    }

    fn answer(
        &mut self,
        now: Instant,
        from: Contact,
        msg: DhtMessage,
        records: Vec<Result<VerifiedRecord, RecordError>>,
    ) {
        let k = self.cfg.routing.k;
        let body = match msg.body {
            Body::Ping => Body::Pong,
            _ if !self.cfg.server => return,
            Body::FindNode { target } => Body::Nodes {
                nodes: self.closest_except(&target, &from.id, k),
            },
            Body::FindValue { key } => {
                let unix = self.unix(now);
                let records = self
                    .store
                    .get(&key, unix)
                    .into_iter()
                    .take(super::rpc::MAX_RECORDS)
                    .map(<[u8]>::to_vec)
                    .collect();
                Body::Value {
                    records,
                    nodes: self.closest_except(&key, &from.id, k),
                }
            }
            Body::FindPage { key, after } => Body::Value {
                records: self
                    .store
                    .get_after(&key, after, self.unix(now), super::rpc::MAX_RECORDS)
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect(),
                nodes: Vec::new(),
            },
            Body::Store { .. } => {
                let unix = self.unix(now);
                let put = match records.into_iter().next() {
                    Some(Ok(r)) => {
                        let presence = (r.kind() == RecordKind::Presence).then(|| r.publisher());
                        let put = self.store.put_verified(r, Some(from.addr.ip()), unix);
                        if let (Some(fp), Ok(Stored::New | Stored::Updated)) = (presence, &put) {
                            if self.heard.len() >= MAX_HEARD {
                                self.heard.pop_front();
                            }
                            self.heard.push_back(fp);
                        }
                        put
                    }
                    Some(Err(e)) => Err(e.into()),
                    None => Err(RecordError::Truncated {
                        needed: 1,
                        available: 0,
                    }
                    .into()),
                };
                let status = match put {
                    Ok(Stored::New | Stored::Updated) => StoreStatus::Stored,
                    Ok(Stored::Unchanged) => StoreStatus::Unchanged,
                    Err(StoreError::Stale { .. }) => StoreStatus::Stale,
                    Err(StoreError::Conflict { .. }) => StoreStatus::Conflict,
                    Err(StoreError::Invalid(_)) => StoreStatus::Invalid,
                    Err(StoreError::MailboxFull) => StoreStatus::MailboxFull,
                    Err(StoreError::MailboxSenderQuota | StoreError::MailboxNetworkQuota) => {
                        StoreStatus::MailboxQuota
                    }
                    Err(StoreError::NoMailbox) => StoreStatus::NoMailbox,
                    Err(StoreError::Receipted) => StoreStatus::Receipted,
                    Err(_) => StoreStatus::Refused,
                };
                Body::Stored { status }
            }
            _ => return,
        };
        let reply = DhtMessage {
            id: msg.id,
            flags: self.flags(),
            body,
        };
        self.transmits.push_back(Transmit {
            to: from,
            msg: reply,
        });
    }

    fn closest_except(&self, target: &NodeId, except: &NodeId, k: usize) -> Vec<Contact> {
        let mut v = self.table.closest(target, k + 1);
        v.retain(|c| c.id != *except);
        v.truncate(k);
        v
    }

    fn on_nodes(
        &mut self,
        q: QueryId,
        from: Contact,
        nodes: Vec<Contact>,
        records: Vec<Result<VerifiedRecord, RecordError>>,
        now: Instant,
    ) {
        let local = self.local;
        let Some(query) = self.queries.get_mut(&q) else {
            return;
        };
        if let Kind::FindValue { best } = &mut query.kind {
            for r in records.into_iter().flatten() {
                if r.key() != query.key {
                    continue;
                }
                let slot = (r.publisher(), r.item());
                if best.get(&slot).is_none_or(|held| r.seq() > held.seq()) {
                    best.insert(slot, r);
                }
            }
        }
        query
            .lookup
            .on_response(&from.id, nodes.into_iter().filter(|c| c.id != local));
        self.step(q, now);
    }

    /// A STORE's answer (`None`: no answer, the request failed).
    fn on_stored(&mut self, q: QueryId, status: Option<StoreStatus>, now: Instant) {
        let Some(query) = self.queries.get_mut(&q) else {
            return;
        };
        if let Kind::Put {
            storing: Some(s), ..
        } = &mut query.kind
        {
            s.answered += 1;
            match status {
                Some(StoreStatus::Stored | StoreStatus::Unchanged) => s.ok += 1,
                Some(refusal) => s.refused.push(refusal),
                None => {}
            }
        }
        self.step(q, now);
    }

    fn fail(&mut self, purpose: Purpose, to: &NodeId, now: Instant) {
        self.table.on_failure(to, now);
        match purpose {
            Purpose::Lookup(q) => {
                if let Some(query) = self.queries.get_mut(&q) {
                    query.lookup.on_failure(to);
                }
                self.step(q, now);
            }
            Purpose::Store(q) => self.on_stored(q, None, now),
            Purpose::Liveness => self.table.on_ping_result(to, false, now),
            Purpose::Replicate => {}
            Purpose::Page(q) => self.page_done(q, Vec::new(), false),
        }
    }

    /// Sends what query `q` may send now, and finishes it if it is done.
    fn step(&mut self, q: QueryId, now: Instant) {
        let mut sends = Vec::new();
        let Some(query) = self.queries.get_mut(&q) else {
            return;
        };
        if let Kind::Put {
            storing: Some(Storing {
                asked, answered, ..
            }),
            ..
        } = query.kind
        {
            if answered >= asked {
                self.finish(q, now);
            }
            return;
        }
        while let Some(c) = query.lookup.next(now) {
            let body = match query.kind {
                Kind::FindValue { .. } => Body::FindValue { key: query.key },
                _ => Body::FindNode { target: query.key },
            };
            sends.push((c, body));
        }
        let finished = query.lookup.is_finished();
        for (c, body) in sends {
            self.send(c, body, Purpose::Lookup(q), now);
        }
        if finished {
            self.finish(q, now);
        }
    }

    fn finish(&mut self, q: QueryId, now: Instant) {
        let Some(mut query) = self.queries.remove(&q) else {
            return;
        };
        let stats = LookupStats {
            rounds: query.lookup.rounds(),
            requests: query.lookup.requests(),
            elapsed: now.saturating_duration_since(query.lookup.started()),
        };
        let closest = query.lookup.closest();
        match &mut query.kind {
            Kind::FindNode => self.events.push_back(DhtEvent::FoundNodes {
                query: q,
                target: query.key,
                closest,
                stats,
            }),
            Kind::FindValue { best } => {
                let mut records: Vec<VerifiedRecord> = best.drain().map(|(_, v)| v).collect();
                records.sort_by_key(|r| std::cmp::Reverse(r.seq()));
                let records = records.into_iter().map(|r| r.bytes().to_vec()).collect();
                self.events.push_back(DhtEvent::FoundValue {
                    query: q,
                    key: query.key,
                    records,
                    stats,
                });
            }
            Kind::Put { record, storing } => match storing {
                None => {
                    // Lookup done: store at the k closest, and keep a copy if we are one.
                    let record = record.clone();
                    let key = query.key;
                    let k = self.cfg.lookup.k;
                    let ours = Distance::between(&key, &self.local);
                    let we_are_close = closest.len() < k
                        || closest
                            .last()
                            .is_some_and(|far| ours < Distance::between(&key, &far.id));
                    let unix = self.unix(now);
                    // A client's copy of a mailbox item would be found by no one (clients
                    // answer no FIND_VALUE): it is not kept. Our own copy, kept when we are
                    // one of the k closest, is not counted: `stored_at` says how many
                    // *other* nodes hold the record (a refusal by all of them reads 0).
                    let serves = self.cfg.server || !record.kind().is_item();
                    if serves && we_are_close {
                        // Refused here (full, stale): the other nodes' answers still count.
                        let _ = self.store.put_verified(record.clone(), None, unix);
                    }
                    let targets = closest;
                    let asked = targets.len();
                    self.queries.insert(
                        q,
                        Query {
                            kind: Kind::Put {
                                record: record.clone(),
                                storing: Some(Storing {
                                    asked,
                                    ..Storing::default()
                                }),
                            },
                            lookup: query.lookup,
                            key,
                        },
                    );
                    for c in targets {
                        self.send(
                            c,
                            Body::Store {
                                record: record.bytes().to_vec(),
                            },
                            Purpose::Store(q),
                            now,
                        );
                    }
                    if asked == 0 {
                        self.step(q, now);
                    }
                }
                Some(s) => {
                    self.events.push_back(DhtEvent::Put {
                        query: q,
                        key: query.key,
                        stored_at: s.ok,
                        asked: s.asked,
                        refused: std::mem::take(&mut s.refused),
                    });
                }
            },
            Kind::Refresh => {}
            Kind::Bootstrap => {
                if !closest.is_empty() {
                    self.refresh_buckets(&closest, now);
                }
                if closest.is_empty() {
                    let delay = self
                        .bootstrap_at
                        .map_or(self.cfg.bootstrap_retry, |(_, d)| {
                            (d * 2).min(Duration::from_secs(300))
                        });
                    self.bootstrap_at = Some((now + delay, delay));
                } else {
                    self.bootstrap_at = None;
                }
                self.events.push_back(DhtEvent::Bootstrapped {
                    query: q,
                    table_size: self.table.len(),
                });
            }
        }
    }

    /// A random ID whose common prefix with ours is exactly `bits` long (bucket `bits`).
    fn random_in_bucket(&mut self, bits: usize) -> NodeId {
        let mut id = self.local.0;
        for (i, byte) in id.iter_mut().enumerate() {
            // xorshift64
            let mut x = self.refresh_rng;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.refresh_rng = x;
            let random = x as u8;
            for bit in 0..8 {
                let pos = i * 8 + bit;
                let mask = 0x80u8 >> bit;
                if pos == bits {
                    *byte ^= mask;
                } else if pos > bits {
                    *byte = (*byte & !mask) | (random & mask);
                }
            }
        }
        NodeId(id)
    }

    /// After joining: a lookup in every bucket farther than our closest neighbour, so each
    /// bucket learns the nodes that exist in its range (Kademlia's join refresh).
    fn refresh_buckets(&mut self, closest: &[Contact], now: Instant) {
        let nearest = closest
            .iter()
            .map(|c| Distance::between(&self.local, &c.id).leading_zeros() as usize)
            .max()
            .unwrap_or(0);
        for bits in 0..nearest.min(159) {
            let target = self.random_in_bucket(bits);
            self.start(Kind::Refresh, target, &[], now);
        }
    }

    /// Runs timers: request timeouts, liveness pings, bootstrap retries, refresh/republish.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<(u64, Pending)> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(id, p)| (*id, *p))
            .collect();
        for (id, p) in expired {
            self.pending.remove(&id);
            self.fail(p.purpose, &p.to, now);
        }
        self.table.expire_pings(now);
        let queries: Vec<QueryId> = self.queries.keys().copied().collect();
        for q in queries {
            self.step(q, now);
        }
        if let Some((at, _)) = self.bootstrap_at {
            if now >= at {
                let seeds = self.seeds.clone();
                self.start(Kind::Bootstrap, self.local, &seeds, now);
                // Keep the backoff until a bootstrap succeeds.
                if let Some((_, d)) = self.bootstrap_at {
                    self.bootstrap_at = Some((now + d * 2, d));
                }
            }
        }
        if now >= self.next_refresh {
            self.next_refresh = now + self.cfg.refresh_interval;
            self.store.expire(self.unix(now));
            let seeds = self.seeds.clone();
            self.start(Kind::Bootstrap, self.local, &seeds, now);
            // Our records were verified when put: only expiry needs checking.
            let unix = self.unix(now);
            self.own.retain(|_, r| r.expiry() > unix);
            let own: Vec<VerifiedRecord> = self.own.values().cloned().collect();
            for record in own {
                self.start_put(record, now);
            }
        }
    }

    /// When [`Dht::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.next_refresh;
        for p in self.pending.values() {
            t = t.min(p.deadline);
        }
        if let Some((at, _)) = self.bootstrap_at {
            t = t.min(at);
        }
        t
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<DhtEvent> {
        self.events.pop_front()
    }

    /// Requests awaiting an answer.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }
}

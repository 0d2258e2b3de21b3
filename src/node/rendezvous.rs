//! The rendezvous role as sans-IO state (spec/06-node.md, "Rendezvous"; the exchanges are
//! spec/05-nat.md §4.3): who is registered here and until when, and which CONNECT offers
//! may pass. Every call takes `now`; nothing here reads a clock or touches a socket.
//!
//! - [`Registry`] holds registrations by node ID, each with the [`Source`] it came from and
//!   its expiry. It refuses ([`RegisterError`]) when this node does not serve as rendezvous,
//!   when a source registers too fast, when a source (IPv4 address, IPv6 /64) or its network
//!   (IPv4 /24, IPv6 /48) holds its quota, and when the table is full and no source holds
//!   more than the newcomer's would.
//! - [`ConnectLimits`] admits CONNECT offers: token buckets per source of the delivering
//!   connection (before the signature is checked) and per caller identity (after), and a
//!   bounded replay cache of `(caller, session)` for the offer's freshness window.
//! - [`Rendezvous`] bundles one registry with the limits of both roles a node plays: as
//!   rendezvous (forwarding) and as callee (answering).
//!
//! The registry is generic over the driver's connection handle `C` (`quinn::Connection` in
//! the daemon, a plain ID in tests and `netsim`).

use std::collections::{BTreeSet, HashMap};
use std::mem::size_of;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::source::{Network, Source, TokenBuckets};
use crate::crypto::{Fingerprint, NodeId};
use crate::nat::signal::{ConnectErrorCode, Signal, SignalKind, MAX_CLOCK_SKEW_MS};

/// A token-bucket rate: `burst` events at once, `per_second` on average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Events allowed at once (the bucket's size).
    pub burst: u32,
    /// Tokens regained per second.
    pub per_second: f64,
}

/// Limits of the rendezvous role (`NodeConfig::rendezvous`). `Default` gives the values
/// spec/06-node.md states.
#[derive(Debug, Clone, PartialEq)]
pub struct RendezvousLimits {
    /// How long a registration lives, announced in RDV_REGISTERED; a renewal starts it
    /// again (default 300 s; registrants renew every `refresh_secs`, 120 s).
    pub lifetime: Duration,
    /// Live registrations one source (IPv4 address, IPv6 /64) may hold (default 32: a home
    /// or office NAT with a few devices each running a node, with room to spare; an attacker
    /// needs 512 sources to fill the default table).
    pub per_source: usize,
    /// Live registrations one network (IPv4 /24, IPv6 /48) may hold (default 256: a /48
    /// holds 65,536 /64s, so without it one IPv6 customer fills the table).
    pub per_network: usize,
    /// Most registrations in total (default 16,384).
    pub max_registrations: usize,
    /// RDV_REGISTER requests per source, renewals included (default burst 32, 0.5/s: 32
    /// nodes behind one address renewing every 120 s need 0.27/s).
    pub register_rate: Rate,
    /// CONNECTs per caller identity, checked after the offer's signature, at the rendezvous
    /// node and at the callee (default burst 10, 2/s).
    pub connect_per_caller: Rate,
    /// CONNECTs per source of the caller's connection, checked at the rendezvous node
    /// before the signature (default burst 20, 4/s).
    pub connect_per_source: Rate,
    /// CONNECTs per source of the connection that delivers them to the callee — usually
    /// one of its rendezvous nodes, which forwards for many callers (default burst 40, 8/s:
    /// twice the per-source rate, so one abusive source behind a rendezvous node cannot
    /// use up the callee's budget for that node).
    pub connect_per_forwarder: Rate,
    /// Offer `(caller, session)` pairs remembered to refuse replays, each for the rest of
    /// the offer's freshness window (default 16,384 per role). Full of live entries, the
    /// callee refuses new offers as busy; a rendezvous node forgets the entry expiring
    /// first (the callee checks again).
    pub replay_capacity: usize,
    /// Buckets one rate table holds; beyond, the least recently used is dropped
    /// (default 16,384).
    pub rate_table: usize,
}

impl Default for RendezvousLimits {
    fn default() -> Self {
        RendezvousLimits {
            lifetime: Duration::from_secs(300),
            per_source: 32,
            per_network: 256,
            max_registrations: 16_384,
            register_rate: Rate {
                burst: 32,
                per_second: 0.5,
            },
            connect_per_caller: Rate {
                burst: 10,
                per_second: 2.0,
            },
            connect_per_source: Rate {
                burst: 20,
                per_second: 4.0,
            },
            connect_per_forwarder: Rate {
                burst: 40,
                per_second: 8.0,
            },
            replay_capacity: 16_384,
            rate_table: 16_384,
        }
    }
}

/// Why a registration was refused. On the wire: CONNECT_ERROR with [`RegisterError::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// This node is not configured to serve as a rendezvous node.
    #[error("this node does not serve as a rendezvous node")]
    NotServing,
    /// The source sent RDV_REGISTER too often.
    #[error("too many registrations from this source, too fast")]
    RateLimited,
    /// The source (IPv4 address, IPv6 /64) holds its quota of live registrations.
    #[error("this source holds its quota of {0} registrations")]
    SourceQuota(usize),
    /// The network (IPv4 /24, IPv6 /48) holds its quota of live registrations.
    #[error("this network holds its quota of {0} registrations")]
    NetworkQuota(usize),
    /// The table is full and no source holds more than the newcomer's would.
    #[error("the registry is full ({0} registrations)")]
    Full(usize),
}

impl RegisterError {
    /// The CONNECT_ERROR code a refused RDV_REGISTER is answered with (spec/05 §4.3).
    pub fn code(self) -> ConnectErrorCode {
        match self {
            RegisterError::NotServing => ConnectErrorCode::NotRendezvous,
            RegisterError::RateLimited => ConnectErrorCode::RateLimited,
            RegisterError::SourceQuota(_) | RegisterError::NetworkQuota(_) => {
                ConnectErrorCode::Quota
            }
            RegisterError::Full(_) => ConnectErrorCode::Busy,
        }
    }
}

/// What the registry did, for `dna status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RegistryStats {
    /// Registrations held now (some may have expired since the last call that took `now`).
    pub live: usize,
    /// Sources holding at least one registration.
    pub sources: usize,
    /// Most registrations held at once.
    pub peak: usize,
    /// New registrations accepted.
    pub registered: u64,
    /// Renewals accepted.
    pub renewed: u64,
    /// Registrations dropped at their expiry.
    pub expired: u64,
    /// Registrations dropped because their connection ended.
    pub removed: u64,
    /// Registrations of the source holding the most, dropped to make room at a full table.
    pub evicted: u64,
    /// Refused: not serving as rendezvous.
    pub refused_not_serving: u64,
    /// Refused: per-source rate limit.
    pub refused_rate: u64,
    /// Refused: per-source quota.
    pub refused_source_quota: u64,
    /// Refused: per-network quota.
    pub refused_network_quota: u64,
    /// Refused: table full.
    pub refused_full: u64,
    /// Estimated bytes held by the registry's tables.
    pub bytes: usize,
}

struct Registration<C> {
    conn: C,
    source: Source,
    network: Network,
    expires: Instant,
}

/// Registrations by node ID, with their source and expiry (see the module doc).
pub struct Registry<C> {
    serve: bool,
    lifetime: Duration,
    per_source: usize,
    per_network: usize,
    cap: usize,
    entries: HashMap<NodeId, Registration<C>>,
    by_expiry: BTreeSet<(Instant, NodeId)>,
    source_count: HashMap<Source, usize>,
    network_count: HashMap<Network, usize>,
    rate: TokenBuckets<Source>,
    stats: RegistryStats,
}

impl<C> std::fmt::Debug for Registry<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("serve", &self.serve)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn bump<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: K) {
    *m.entry(k).or_insert(0) += 1;
}

fn drop_one<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: &K) {
    if let Some(n) = m.get_mut(k) {
        *n -= 1;
        if *n == 0 {
            m.remove(k);
        }
    }
}

impl<C> Registry<C> {
    /// A registry; `serve` false refuses every registration.
    pub fn new(serve: bool, limits: &RendezvousLimits) -> Registry<C> {
        let r = limits.register_rate;
        Registry {
            serve,
            lifetime: limits.lifetime,
            per_source: limits.per_source.max(1),
            per_network: limits.per_network.max(1),
            cap: limits.max_registrations.max(1),
            entries: HashMap::new(),
            by_expiry: BTreeSet::new(),
            source_count: HashMap::new(),
            network_count: HashMap::new(),
            rate: TokenBuckets::new(r.burst, r.per_second, limits.rate_table),
            stats: RegistryStats::default(),
        }
    }

    /// Whether this node accepts registrations.
    pub fn serves(&self) -> bool {
        self.serve
    }

    /// Registers (or renews) `id`, whose authenticated connection `conn` comes from `ip`.
    /// Returns the lifetime to announce in RDV_REGISTERED.
    pub fn register(
        &mut self,
        id: NodeId,
        ip: IpAddr,
        conn: C,
        now: Instant,
    ) -> Result<Duration, RegisterError> {
        let refused = |s: &mut RegistryStats, e: RegisterError| {
            match e {
                RegisterError::NotServing => s.refused_not_serving += 1,
                RegisterError::RateLimited => s.refused_rate += 1,
                RegisterError::SourceQuota(_) => s.refused_source_quota += 1,
                RegisterError::NetworkQuota(_) => s.refused_network_quota += 1,
                RegisterError::Full(_) => s.refused_full += 1,
            }
            Err(e)
        };
        if !self.serve {
            return refused(&mut self.stats, RegisterError::NotServing);
        }
        let source = Source::of(ip);
        let network = Network::of(ip);
        if !self.rate.allow(&source, now) {
            return refused(&mut self.stats, RegisterError::RateLimited);
        }
        self.handle_timeout(now);
        let expires = now + self.lifetime;
        if let Some(e) = self.entries.get_mut(&id) {
            if e.source == source {
                self.by_expiry.remove(&(e.expires, id));
                e.expires = expires;
                e.conn = conn;
                self.by_expiry.insert((expires, id));
                self.stats.renewed += 1;
                return Ok(self.lifetime);
            }
        }
        // New here, or moved to another source: the quotas of the new source apply.
        let moving = self.entries.get(&id).map(|e| e.network);
        if self.source_count.get(&source).copied().unwrap_or(0) >= self.per_source {
            return refused(&mut self.stats, RegisterError::SourceQuota(self.per_source));
        }
        let in_network = self.network_count.get(&network).copied().unwrap_or(0)
            - usize::from(moving == Some(network));
        if in_network >= self.per_network {
            return refused(
                &mut self.stats,
                RegisterError::NetworkQuota(self.per_network),
            );
        }
        if moving.is_some() {
            self.remove(&id);
        } else if self.entries.len() >= self.cap && !self.evict_for(source) {
            return refused(&mut self.stats, RegisterError::Full(self.cap));
        }
        self.entries.insert(
            id,
            Registration {
                conn,
                source,
                network,
                expires,
            },
        );
        self.by_expiry.insert((expires, id));
        bump(&mut self.source_count, source);
        bump(&mut self.network_count, network);
        self.stats.registered += 1;
        self.stats.peak = self.stats.peak.max(self.entries.len());
        Ok(self.lifetime)
    }

    /// At a full table: drops the registration expiring first of the source holding the
    /// most, if that source holds more than `source` would with one more. `false`: no room.
    fn evict_for(&mut self, source: Source) -> bool {
        let mine = self.source_count.get(&source).copied().unwrap_or(0) + 1;
        let Some((top, n)) = self
            .source_count
            .iter()
            .max_by_key(|(s, n)| (**n, **s))
            .map(|(s, n)| (*s, *n))
        else {
            return false;
        };
        if n <= mine {
            return false;
        }
        let victim = self
            .by_expiry
            .iter()
            .map(|(_, id)| *id)
            .find(|id| self.entries.get(id).is_some_and(|e| e.source == top));
        match victim {
            Some(id) => {
                self.remove(&id);
                self.stats.evicted += 1;
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, id: &NodeId) -> Option<Registration<C>> {
        let e = self.entries.remove(id)?;
        self.by_expiry.remove(&(e.expires, *id));
        drop_one(&mut self.source_count, &e.source);
        drop_one(&mut self.network_count, &e.network);
        Some(e)
    }

    /// The connection to forward a CONNECT for `id` over, if it holds a live registration.
    pub fn lookup(&self, id: &NodeId, now: Instant) -> Option<&C> {
        self.entries
            .get(id)
            .filter(|e| e.expires > now)
            .map(|e| &e.conn)
    }

    /// Drops `id`'s registration if `ended` says its connection is gone (the driver calls
    /// this when a registrant's connection closes). Returns whether it was dropped.
    pub fn remove_if(&mut self, id: &NodeId, ended: impl FnOnce(&C) -> bool) -> bool {
        if self.entries.get(id).is_some_and(|e| ended(&e.conn)) {
            self.remove(id);
            self.stats.removed += 1;
            true
        } else {
            false
        }
    }

    /// Drops the registrations expired at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(t, id)) = self.by_expiry.first() {
            if t > now {
                break;
            }
            self.remove(&id);
            self.stats.expired += 1;
        }
    }

    /// When the next registration expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.by_expiry.first().map(|(t, _)| *t)
    }

    /// Registrations held (expired ones go at the next call that takes `now`).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counters and an estimate of the bytes held (keys, values and per-entry table
    /// overhead; not the driver's connections behind `C`).
    pub fn stats(&self) -> RegistryStats {
        // One control byte per slot and load ≤ 7/8 in the hash tables; a B-tree entry
        // costs its key plus about a third of it again in node overhead.
        let map = |k: usize, v: usize, n: usize| n * (k + v + 1) * 8 / 7;
        let bytes = map(
            size_of::<NodeId>(),
            size_of::<Registration<C>>(),
            self.entries.len(),
        ) + self.by_expiry.len() * size_of::<(Instant, NodeId)>() * 4 / 3
            + map(size_of::<Source>(), 8, self.source_count.len())
            + map(size_of::<Network>(), 8, self.network_count.len())
            + map(size_of::<Source>(), 24, self.rate.len());
        RegistryStats {
            live: self.entries.len(),
            sources: self.source_count.len(),
            bytes,
            ..self.stats
        }
    }
}

/// Why a CONNECT offer was not admitted. On the wire: CONNECT_ERROR with
/// [`ConnectRefusal::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectRefusal {
    /// The delivering connection's source sent too many CONNECTs.
    #[error("too many CONNECTs from this source")]
    SourceRateLimited,
    /// The caller identity sent too many CONNECTs.
    #[error("too many CONNECTs from this caller")]
    CallerRateLimited,
    /// This `(caller, session)` was seen within the freshness window.
    #[error("replayed offer")]
    Replayed,
    /// The offer's time is more than the allowed skew from ours.
    #[error("stale offer")]
    Stale,
    /// Not an offer (an answer sent as CONNECT).
    #[error("not an offer")]
    NotAnOffer,
    /// The replay cache is full of live entries.
    #[error("too many offers in flight")]
    Busy,
}

impl ConnectRefusal {
    /// The CONNECT_ERROR code (spec/05 §4.3).
    pub fn code(self) -> ConnectErrorCode {
        match self {
            ConnectRefusal::SourceRateLimited | ConnectRefusal::CallerRateLimited => {
                ConnectErrorCode::RateLimited
            }
            ConnectRefusal::Replayed | ConnectRefusal::Stale => ConnectErrorCode::Refused,
            ConnectRefusal::NotAnOffer => ConnectErrorCode::Malformed,
            ConnectRefusal::Busy => ConnectErrorCode::Busy,
        }
    }
}

/// What CONNECT admission did, for `dna status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConnectStats {
    /// Offers admitted.
    pub admitted: u64,
    /// Refused: per-source bucket empty.
    pub refused_source: u64,
    /// Refused: per-caller bucket empty.
    pub refused_caller: u64,
    /// Refused: replayed.
    pub refused_replay: u64,
    /// Refused: stale or not an offer.
    pub refused_stale: u64,
    /// Refused: replay cache full (callee).
    pub refused_busy: u64,
    /// Offers forgotten before their window ended, to admit a newer one (rendezvous node).
    pub forgotten_early: u64,
    /// Offers remembered now.
    pub remembered: usize,
    /// Estimated bytes held by the replay cache and the rate tables.
    pub bytes: usize,
}

type OfferKey = (Fingerprint, [u8; 8]);

/// What a replay cache full of live entries does with one more fresh offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Refuse it as busy (the callee: the cache is what keeps a replay from making it
    /// punch again, and only its few forwarders can fill it).
    Refuse,
    /// Forget the entry that expires first and admit it (a rendezvous node: any source can
    /// fill its cache, and the callee checks replays again).
    ForgetOldest,
}

/// CONNECT admission for one role (see the module doc).
#[derive(Debug)]
pub struct ConnectLimits {
    per_source: TokenBuckets<Source>,
    per_caller: TokenBuckets<Fingerprint>,
    seen: HashMap<OfferKey, Instant>,
    seen_by_expiry: BTreeSet<(Instant, OfferKey)>,
    capacity: usize,
    when_full: WhenFull,
    stats: ConnectStats,
}

impl ConnectLimits {
    /// Limits of `per_source` (of the delivering connection) and `per_caller`, remembering
    /// at most `replay_capacity` offers (`when_full` says what happens beyond), with at
    /// most `rate_table` buckets per table.
    pub fn new(
        per_source: Rate,
        per_caller: Rate,
        replay_capacity: usize,
        when_full: WhenFull,
        rate_table: usize,
    ) -> ConnectLimits {
        ConnectLimits {
            per_source: TokenBuckets::new(per_source.burst, per_source.per_second, rate_table),
            per_caller: TokenBuckets::new(per_caller.burst, per_caller.per_second, rate_table),
            seen: HashMap::new(),
            seen_by_expiry: BTreeSet::new(),
            capacity: replay_capacity.max(1),
            when_full,
            stats: ConnectStats::default(),
        }
    }

    /// The first check, before the offer's signature is verified: one token from the
    /// bucket of the source (`ip`) of the connection that delivered it.
    pub fn check_source(&mut self, ip: IpAddr, now: Instant) -> Result<(), ConnectRefusal> {
        if self.per_source.allow(&Source::of(ip), now) {
            Ok(())
        } else {
            self.stats.refused_source += 1;
            Err(ConnectRefusal::SourceRateLimited)
        }
    }

    /// The second check, on a verified `offer` at `now` (`now_ms`: our wall clock, ms since
    /// the Unix epoch): an offer, fresh, not seen before, room to remember it, and a token
    /// from the caller's bucket. A refused offer takes no token from its caller (so replays
    /// of someone's offer cannot spend their budget) and is not remembered.
    pub fn admit(
        &mut self,
        offer: &Signal,
        now: Instant,
        now_ms: u64,
    ) -> Result<(), ConnectRefusal> {
        let r = self.admit_inner(offer, now, now_ms);
        match r {
            Ok(()) => self.stats.admitted += 1,
            Err(ConnectRefusal::CallerRateLimited) => self.stats.refused_caller += 1,
            Err(ConnectRefusal::Replayed) => self.stats.refused_replay += 1,
            Err(ConnectRefusal::Stale | ConnectRefusal::NotAnOffer) => {
                self.stats.refused_stale += 1
            }
            Err(ConnectRefusal::Busy) => self.stats.refused_busy += 1,
            Err(ConnectRefusal::SourceRateLimited) => self.stats.refused_source += 1,
        }
        r
    }

    fn admit_inner(
        &mut self,
        offer: &Signal,
        now: Instant,
        now_ms: u64,
    ) -> Result<(), ConnectRefusal> {
        if offer.kind != SignalKind::Offer {
            return Err(ConnectRefusal::NotAnOffer);
        }
        if offer.time_ms.abs_diff(now_ms) > MAX_CLOCK_SKEW_MS {
            return Err(ConnectRefusal::Stale);
        }
        self.handle_timeout(now);
        let caller = offer.from.fingerprint();
        let key = (caller, offer.session);
        if self.seen.contains_key(&key) {
            return Err(ConnectRefusal::Replayed);
        }
        let full = self.seen.len() >= self.capacity;
        if full && self.when_full == WhenFull::Refuse {
            return Err(ConnectRefusal::Busy);
        }
        if !self.per_caller.allow(&caller, now) {
            return Err(ConnectRefusal::CallerRateLimited);
        }
        if full {
            if let Some((_, oldest)) = self.seen_by_expiry.pop_first() {
                self.seen.remove(&oldest);
                self.stats.forgotten_early += 1;
            }
        }
        // Fresh until `time + skew` by our clock: remember it that long (≤ 2 × skew).
        let left_ms = (offer.time_ms + MAX_CLOCK_SKEW_MS + 1).saturating_sub(now_ms);
        let until = now + Duration::from_millis(left_ms);
        self.seen.insert(key, until);
        self.seen_by_expiry.insert((until, key));
        Ok(())
    }

    /// Forgets offers whose freshness window has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(t, key)) = self.seen_by_expiry.first() {
            if t > now {
                break;
            }
            self.seen_by_expiry.pop_first();
            self.seen.remove(&key);
        }
    }

    /// When the next remembered offer may be forgotten.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.seen_by_expiry.first().map(|(t, _)| *t)
    }

    /// Counters and an estimate of the bytes held.
    pub fn stats(&self) -> ConnectStats {
        let key = size_of::<OfferKey>();
        let bytes = self.seen.len() * (key + size_of::<Instant>() + 1) * 8 / 7
            + self.seen_by_expiry.len() * (key + size_of::<Instant>()) * 4 / 3
            + self.per_source.len() * (size_of::<Source>() + 25) * 8 / 7
            + self.per_caller.len() * (size_of::<Fingerprint>() + 25) * 8 / 7;
        ConnectStats {
            remembered: self.seen.len(),
            bytes,
            ..self.stats
        }
    }
}

/// Counters of the whole rendezvous role, for `dna status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RendezvousStats {
    /// Whether this node accepts registrations.
    pub serving: bool,
    /// The registry.
    pub registry: RegistryStats,
    /// CONNECTs this node forwards (as a rendezvous node).
    pub forwarding: ConnectStats,
    /// CONNECTs addressed to this node (as callee).
    pub answering: ConnectStats,
}

/// The rendezvous role of one node: its registry and the CONNECT limits of both roles.
#[derive(Debug)]
pub struct Rendezvous<C> {
    /// Who is registered here.
    pub registry: Registry<C>,
    /// Admission of CONNECTs to forward to registered nodes (source = the caller's).
    pub forwarding: ConnectLimits,
    /// Admission of CONNECTs addressed to this node (source = the forwarder's, usually).
    pub answering: ConnectLimits,
}

impl<C> Rendezvous<C> {
    /// The role with `limits`; `serve` says whether registrations are accepted.
    pub fn new(serve: bool, limits: &RendezvousLimits) -> Rendezvous<C> {
        let l = limits;
        Rendezvous {
            registry: Registry::new(serve, l),
            forwarding: ConnectLimits::new(
                l.connect_per_source,
                l.connect_per_caller,
                l.replay_capacity,
                WhenFull::ForgetOldest,
                l.rate_table,
            ),
            answering: ConnectLimits::new(
                l.connect_per_forwarder,
                l.connect_per_caller,
                l.replay_capacity,
                WhenFull::Refuse,
                l.rate_table,
            ),
        }
    }

    /// Drops expired registrations and forgets stale offers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.registry.handle_timeout(now);
        self.forwarding.handle_timeout(now);
        self.answering.handle_timeout(now);
    }

    /// The next time [`Rendezvous::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.registry.poll_timeout(),
            self.forwarding.poll_timeout(),
            self.answering.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// All counters.
    pub fn stats(&self) -> RendezvousStats {
        RendezvousStats {
            serving: self.registry.serves(),
            registry: self.registry.stats(),
            forwarding: self.forwarding.stats(),
            answering: self.answering.stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use rand_core::OsRng;

    fn t0() -> Instant {
        crate::nat::tests::t0()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn id(n: u32) -> NodeId {
        let mut b = [0u8; 20];
        b[..4].copy_from_slice(&n.to_be_bytes());
        NodeId(b)
    }

    /// Limits where only the quota under test binds.
    fn loose() -> RendezvousLimits {
        RendezvousLimits {
            register_rate: Rate {
                burst: 100_000,
                per_second: 0.0,
            },
            ..RendezvousLimits::default()
        }
    }

    #[test]
    fn a_registration_expires_at_its_stated_lifetime_and_a_renewal_extends_it() {
        let t = t0();
        let mut r = Registry::new(true, &RendezvousLimits::default());
        let life = r.register(id(1), ip("198.18.0.1"), 7u32, t).unwrap();
        assert_eq!(life, Duration::from_secs(300));
        assert_eq!(r.poll_timeout(), Some(t + life));
        assert_eq!(
            r.lookup(&id(1), t + life - Duration::from_millis(1)),
            Some(&7)
        );
        assert_eq!(
            r.lookup(&id(1), t + life),
            None,
            "expired: not forwarded to"
        );
        r.handle_timeout(t + life);
        assert!(r.is_empty());
        assert_eq!(r.stats().expired, 1);
        assert_eq!(r.poll_timeout(), None);

        // Renewed 200 s in: lives until 500 s, over the new connection.
        r.register(id(2), ip("198.18.0.1"), 1, t).unwrap();
        r.register(id(2), ip("198.18.0.1"), 2, t + Duration::from_secs(200))
            .unwrap();
        assert_eq!(r.lookup(&id(2), t + Duration::from_secs(450)), Some(&2));
        r.handle_timeout(t + Duration::from_secs(450));
        assert_eq!(r.len(), 1);
        assert_eq!(r.lookup(&id(2), t + Duration::from_secs(500)), None);
        r.handle_timeout(t + Duration::from_secs(500));
        let s = r.stats();
        assert_eq!((s.live, s.registered, s.renewed, s.expired), (0, 2, 1, 2));
    }

    #[test]
    fn a_node_not_serving_as_rendezvous_refuses() {
        let mut r = Registry::new(false, &RendezvousLimits::default());
        assert_eq!(
            r.register(id(1), ip("198.18.0.1"), 0u8, t0()),
            Err(RegisterError::NotServing)
        );
        assert_eq!(
            RegisterError::NotServing.code(),
            ConnectErrorCode::NotRendezvous
        );
        assert_eq!(r.stats().refused_not_serving, 1);
    }

    #[test]
    fn registrations_are_rate_limited_per_source() {
        let t = t0();
        let limits = RendezvousLimits {
            per_source: 1000,
            ..RendezvousLimits::default()
        };
        let mut r = Registry::new(true, &limits);
        let burst = limits.register_rate.burst;
        for n in 0..burst {
            r.register(id(n), ip("198.18.0.1"), (), t).unwrap();
        }
        // Renewals count too.
        assert_eq!(
            r.register(id(0), ip("198.18.0.1"), (), t),
            Err(RegisterError::RateLimited)
        );
        // Another source has its own bucket.
        r.register(id(1000), ip("198.18.0.2"), (), t).unwrap();
        // 0.5/s: one more after 2 s.
        let later = t + Duration::from_secs(2);
        r.register(id(2000), ip("198.18.0.1"), (), later).unwrap();
        assert_eq!(
            r.register(id(2001), ip("198.18.0.1"), (), later),
            Err(RegisterError::RateLimited)
        );
        assert_eq!(r.stats().refused_rate, 2);
    }

    #[test]
    fn one_source_holds_at_most_its_quota_and_still_renews() {
        let t = t0();
        let mut r = Registry::new(true, &loose());
        let accepted = (0..100)
            .filter(|n| r.register(id(*n), ip("198.18.0.1"), (), t).is_ok())
            .count();
        println!("100 identities from one IPv4 address: {accepted} registered");
        assert_eq!(accepted, 32);
        assert_eq!(
            r.register(id(500), ip("198.18.0.1"), (), t),
            Err(RegisterError::SourceQuota(32))
        );
        assert_eq!(
            r.register(id(3), ip("198.18.0.1"), (), t),
            Ok(Duration::from_secs(300)),
            "a renewal at the quota"
        );
        r.register(id(501), ip("198.18.0.2"), (), t).unwrap();
        // Expired registrations free the quota.
        let later = t + Duration::from_secs(300);
        r.register(id(502), ip("198.18.0.1"), (), later).unwrap();
        assert_eq!(r.stats().refused_source_quota, 69);
    }

    #[test]
    fn walking_around_inside_one_ipv6_slash_64_is_one_source() {
        let t = t0();
        let mut r = Registry::new(true, &loose());
        let accepted = (0..100u32)
            .filter(|n| {
                let a = ip(&format!("2001:db8:1:2:{:x}::{:x}", n * 7 + 1, n + 1));
                r.register(id(*n), a, (), t).is_ok()
            })
            .count();
        println!("100 identities from 100 addresses inside one /64: {accepted} registered");
        assert_eq!(accepted, 32);

        // One /64 per identity, all inside one /48: the network quota holds.
        let mut r = Registry::new(true, &loose());
        let accepted = (0..1000u32)
            .filter(|n| {
                let a = ip(&format!("2001:db8:1:{:x}::1", n));
                r.register(id(*n), a, (), t).is_ok()
            })
            .count();
        println!("1000 identities from 1000 /64s inside one /48: {accepted} registered");
        assert_eq!(accepted, 256);
        assert_eq!(
            r.register(id(9999), ip("2001:db8:1:ffff::1"), (), t),
            Err(RegisterError::NetworkQuota(256))
        );
        r.register(id(9999), ip("2001:db8:2::1"), (), t).unwrap();
    }

    #[test]
    fn a_full_table_refuses_after_dropping_expired_and_evicts_the_largest_source_first() {
        let t = t0();
        let limits = RendezvousLimits {
            max_registrations: 64,
            ..loose()
        };
        // 64 sources with one registration each: full, and no source holds more than a
        // newcomer: refused.
        let mut r = Registry::new(true, &limits);
        for n in 0..64 {
            r.register(id(n), ip(&format!("198.18.1.{n}")), (), t)
                .unwrap();
        }
        assert_eq!(
            r.register(id(100), ip("198.18.2.1"), (), t),
            Err(RegisterError::Full(64))
        );
        assert_eq!(r.len(), 64);
        assert_eq!(r.stats().refused_full, 1);
        // Once they expire, the newcomer gets in.
        let later = t + Duration::from_secs(300);
        r.register(id(100), ip("198.18.2.1"), (), later).unwrap();
        assert_eq!(r.len(), 1);

        // Two attacker sources fill the table with 32 each; a good client from a third
        // source takes the place of one of theirs, and the attacker cannot take it back.
        let mut r = Registry::new(true, &limits);
        for n in 0..64 {
            let a = if n % 2 == 0 {
                "198.18.3.1"
            } else {
                "198.18.3.2"
            };
            r.register(id(n), ip(a), (), t).unwrap();
        }
        r.register(id(200), ip("198.18.4.1"), (), t).unwrap();
        assert_eq!(r.lookup(&id(200), t), Some(&()));
        assert_eq!(r.len(), 64);
        assert_eq!(r.stats().evicted, 1);
        // The source that lost one would hold 32 again, no more than the other: full. The
        // other holds its quota.
        let mut again: Vec<_> = ["198.18.3.1", "198.18.3.2"]
            .iter()
            .zip(300..)
            .map(|(a, n)| r.register(id(n), ip(a), (), t))
            .collect();
        again.sort_by_key(|x| format!("{x:?}"));
        assert_eq!(
            again,
            [
                Err(RegisterError::Full(64)),
                Err(RegisterError::SourceQuota(32))
            ]
        );
        assert_eq!(r.lookup(&id(200), t), Some(&()));
    }

    #[test]
    fn a_registrant_that_moves_is_counted_at_its_new_source() {
        let t = t0();
        let mut r = Registry::new(true, &loose());
        r.register(id(1), ip("198.18.0.1"), 1u8, t).unwrap();
        r.register(id(1), ip("198.18.0.2"), 2u8, t).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r.stats().sources, 1);
        assert!(r.remove_if(&id(1), |c| *c == 2));
        assert!(r.is_empty());
        assert_eq!(r.stats().sources, 0);
    }

    fn offer(from: &Identity, session: u8, time_ms: u64) -> Signal {
        Signal {
            kind: SignalKind::Offer,
            from: from.public_key().clone(),
            to: crate::crypto::Fingerprint([9; 32]),
            session: [session; 8],
            time_ms,
            ufrag: "abcd1234".into(),
            pwd: "0123456789abcdef0123456789abcdef".into(),
            candidates: vec![],
        }
    }

    #[test]
    fn a_replayed_offer_is_refused_for_its_freshness_window() {
        let t = t0();
        let ms = 1_000_000_000;
        let l = RendezvousLimits::default();
        let mut c = ConnectLimits::new(
            l.connect_per_source,
            l.connect_per_caller,
            4,
            WhenFull::Refuse,
            64,
        );
        let a = Identity::generate(&mut OsRng);
        let o = offer(&a, 1, ms);
        c.admit(&o, t, ms).unwrap();
        assert_eq!(c.admit(&o, t, ms), Err(ConnectRefusal::Replayed));
        // Still remembered at the end of the window, when it is still fresh.
        let end = Duration::from_millis(MAX_CLOCK_SKEW_MS);
        assert_eq!(
            c.admit(&o, t + end, ms + MAX_CLOCK_SKEW_MS),
            Err(ConnectRefusal::Replayed)
        );
        // Past it: stale, and forgotten.
        let past = Duration::from_millis(MAX_CLOCK_SKEW_MS + 1);
        assert_eq!(
            c.admit(&o, t + past, ms + MAX_CLOCK_SKEW_MS + 1),
            Err(ConnectRefusal::Stale)
        );
        c.handle_timeout(t + past);
        assert_eq!(c.stats().remembered, 0);
        // An offer timed 60 s ahead of our clock is remembered for 120 s.
        let ahead = offer(&a, 2, ms + MAX_CLOCK_SKEW_MS);
        c.admit(&ahead, t, ms).unwrap();
        assert_eq!(
            c.poll_timeout(),
            Some(t + Duration::from_millis(2 * MAX_CLOCK_SKEW_MS + 1))
        );
        // The same session from another caller is another offer.
        let b = Identity::generate(&mut OsRng);
        c.admit(&offer(&b, 1, ms), t, ms).unwrap();
        // Bounded: 4 live entries fill it; the next fresh offer is refused as busy.
        c.admit(&offer(&b, 3, ms), t, ms).unwrap();
        c.admit(&offer(&b, 4, ms), t, ms).unwrap();
        assert_eq!(c.admit(&offer(&b, 5, ms), t, ms), Err(ConnectRefusal::Busy));
        assert_eq!(ConnectRefusal::Busy.code(), ConnectErrorCode::Busy);
        let s = c.stats();
        assert_eq!(
            (s.admitted, s.refused_replay, s.refused_busy, s.remembered),
            (5, 2, 1, 4)
        );

        // A rendezvous node's full cache forgets the entry expiring first instead.
        let mut f = ConnectLimits::new(
            l.connect_per_source,
            l.connect_per_caller,
            2,
            WhenFull::ForgetOldest,
            64,
        );
        f.admit(&offer(&b, 1, ms - 1000), t, ms).unwrap();
        f.admit(&offer(&b, 2, ms), t, ms).unwrap();
        f.admit(&offer(&b, 3, ms), t, ms).unwrap();
        assert_eq!(
            f.admit(&offer(&b, 2, ms), t, ms),
            Err(ConnectRefusal::Replayed)
        );
        assert_eq!(
            f.admit(&offer(&b, 1, ms - 1000), t, ms),
            Ok(()),
            "forgotten"
        );
        assert_eq!(f.stats().remembered, 2);
    }

    /// The old limiter keyed the callee's bucket on the rendezvous node's address: one
    /// caller used it up for everyone behind that node. Now the rendezvous node limits each
    /// caller and source, and the callee's bucket per forwarder is twice the per-source one.
    #[test]
    fn one_callers_flood_does_not_lock_out_another_caller_behind_the_same_rendezvous() {
        let t = t0();
        let ms = 1_000_000_000;
        let mut rdv: Rendezvous<()> = Rendezvous::new(true, &RendezvousLimits::default());
        let mut callee: Rendezvous<()> = Rendezvous::new(false, &RendezvousLimits::default());
        let rdv_ip = ip("198.18.0.1");
        // One path: caller → rendezvous node (forwarding) → callee (answering).
        let mut send = |from: IpAddr, o: &Signal| -> Result<(), ConnectRefusal> {
            rdv.forwarding.check_source(from, t)?;
            rdv.forwarding.admit(o, t, ms)?;
            callee.answering.check_source(rdv_ip, t)?;
            callee.answering.admit(o, t, ms)
        };
        let abuser = Identity::generate(&mut OsRng);
        let through = (0..=255u8)
            .filter(|s| send(ip("198.18.9.9"), &offer(&abuser, *s, ms)).is_ok())
            .count();
        println!("one caller, 256 offers at once: {through} reached the callee");
        assert_eq!(through, 10, "the caller's burst");
        // Many identities from another source: its bucket at the rendezvous node.
        let ids: Vec<Identity> = (0..30).map(|_| Identity::generate(&mut OsRng)).collect();
        let more = ids
            .iter()
            .filter(|i| send(ip("198.18.8.8"), &offer(i, 0, ms)).is_ok())
            .count();
        println!("30 identities from one other address: {more} reached the callee");
        assert_eq!(more, 20, "the source's burst");
        let good = Identity::generate(&mut OsRng);
        assert_eq!(send(ip("198.18.7.7"), &offer(&good, 0, ms)), Ok(()));
        let s = rdv.stats();
        println!(
            "rendezvous: admitted {}, refused per caller {}, per source {}; callee admitted {}",
            s.forwarding.admitted,
            s.forwarding.refused_caller,
            s.forwarding.refused_source,
            callee.stats().answering.admitted
        );
    }
}

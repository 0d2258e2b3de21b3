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

use crate::crypto::NodeId;
use crate::nat::signal::ConnectErrorCode;
use crate::source::{Network, Source, TokenBuckets};

mod connect;
pub use connect::{ConnectLimits, ConnectRefusal, ConnectStats, WhenFull};

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

    /// The CONNECT limits for offers to us (`answering`) or to forward.
    pub fn limits(&mut self, answering: bool) -> &mut ConnectLimits {
        match answering {
            true => &mut self.answering,
            false => &mut self.forwarding,
        }
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
mod tests;

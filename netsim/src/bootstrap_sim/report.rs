//! What a bootstrap-flood run counted (see [`super`]), and its text form.

use std::time::Duration;

use dna_p2p::dht::StoreStats;
use dna_p2p::node::rendezvous::{RegisterError, RendezvousStats};

use super::BootSimConfig;

/// RDV_REGISTER outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegisterCounts {
    /// Accepted (new or renewed).
    pub accepted: u64,
    /// Refused: the source registers too fast.
    pub rate: u64,
    /// Refused: the source (IPv4 address, IPv6 /64) holds its quota.
    pub source_quota: u64,
    /// Refused: the network (IPv4 /24, IPv6 /48) holds its quota.
    pub network_quota: u64,
    /// Refused: the table is full.
    pub full: u64,
    /// Refused: not serving (never, at a bootstrap).
    pub not_serving: u64,
}

impl RegisterCounts {
    pub(super) fn count(&mut self, r: &Result<Duration, RegisterError>) {
        match r {
            Ok(_) => self.accepted += 1,
            Err(RegisterError::RateLimited) => self.rate += 1,
            Err(RegisterError::SourceQuota(_)) => self.source_quota += 1,
            Err(RegisterError::NetworkQuota(_)) => self.network_quota += 1,
            Err(RegisterError::Full(_)) => self.full += 1,
            Err(_) => self.not_serving += 1,
        }
    }

    /// All refusals.
    pub fn refused(&self) -> u64 {
        self.rate + self.source_quota + self.network_quota + self.full + self.not_serving
    }
}

/// Attackers' STORE outcomes (the refusal reason read from the store's counters, see
/// [`BootReport::reason_probes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Answered STORED.
    pub stored: u64,
    /// Encoded bytes of the records answered STORED.
    pub stored_bytes: u64,
    /// Of those, mailbox items.
    pub stored_mailbox: u64,
    /// Refused: the publisher holds its quota.
    pub publisher_quota: u64,
    /// Refused: the source (IPv4 address, IPv6 /64) holds its quota.
    pub source_quota: u64,
    /// Refused: the network (IPv4 /24, IPv6 /48) holds its quota.
    pub network_quota: u64,
    /// Refused: the store is full and the sender's network holds at least a fair share.
    pub full: u64,
    /// Any other answer (UNCHANGED, STALE, CONFLICT, INVALID) or none.
    pub other: u64,
}

impl StoreCounts {
    /// All quota refusals.
    pub fn refused(&self) -> u64 {
        self.publisher_quota + self.source_quota + self.network_quota + self.full
    }
}

/// CONNECT outcomes at the bootstrap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectCounts {
    /// Offers sent.
    pub sent: u64,
    /// Admitted and forwarded (the target registered).
    pub forwarded: u64,
    /// Replays among the forwarded (their original had been refused).
    pub replays_forwarded: u64,
    /// Refused: per-source bucket.
    pub source: u64,
    /// Refused: per-caller bucket.
    pub caller: u64,
    /// Refused: replayed.
    pub replay: u64,
    /// Refused: stale, not an offer, or busy.
    pub other: u64,
    /// Refused: the target holds no live registration.
    pub not_registered: u64,
}

/// What the good client met.
#[derive(Debug, Clone, Default)]
pub struct GoodReport {
    /// Registrations and renewals of the callee and its two callers: accepted, refused.
    pub registrations: (u64, u64),
    /// Presence STOREs: sent, answered STORED.
    pub stores: (u64, u64),
    /// FIND_VALUE lookups of its presence: sent, answered with the latest record.
    pub finds: (u64, u64),
    /// The callers' offers: sent, forwarded by the bootstrap, admitted by the callee.
    pub connects: (u64, u64, u64),
    /// The first refusal it met, if any.
    pub first_refusal: Option<String>,
}

impl GoodReport {
    /// Whether the good client was ever refused anything.
    pub fn locked_out(&self) -> bool {
        self.first_refusal.is_some()
    }
}

/// What a run showed.
#[derive(Debug, Clone, Default)]
pub struct BootReport {
    /// Attackers' first registrations.
    pub register: RegisterCounts,
    /// Attackers' re-registrations (renewals, or retries of a refused one).
    pub reregister: RegisterCounts,
    /// Attackers' STOREs.
    pub store: StoreCounts,
    /// Attackers' CONNECTs.
    pub connect: ConnectCounts,
    /// The good client.
    pub good: GoodReport,
    /// Most registrations the bootstrap held at once.
    pub peak_registrations: usize,
    /// Most records its store held at once.
    pub peak_records: usize,
    /// Most bytes its rendezvous tables held at once (estimate: registry, replay caches, rate
    /// tables).
    pub peak_rendezvous_bytes: usize,
    /// Most bytes its store held at once (encoded records + per-record overhead).
    pub peak_store_bytes: usize,
    /// Most of both at once.
    pub peak_bytes: usize,
    /// Sessions of throwaway identities the core accepted (HELLO authenticated).
    pub sessions: u64,
    /// Most entries its peer table held at once.
    pub peak_peer_entries: usize,
    /// Its peer table at the end: entries, and entries evicted.
    pub peer_table: (usize, u64),
    /// The bootstrap's rendezvous counters at the end.
    pub rendezvous: RendezvousStats,
    /// Its store at the end (`refused` includes the reason probes).
    pub dht_store: StoreStats,
    /// Contacts in its routing table and requests it awaits, at the end.
    pub dht_table: (usize, usize),
    /// DHT messages the bootstrap sent to no one simulated (its own lookups, refreshes).
    pub dht_unanswered: u64,
    /// Refused STOREs whose reason (which the wire answer does not carry) was read from the
    /// store's per-quota refusal counters through the core's `Query::Dht`.
    pub reason_probes: u64,
    /// The callee's own admission counters at the end.
    pub callee: RendezvousStats,
    /// Signatures made, verified.
    pub signatures: (u64, u64),
    /// Events run (timers included).
    pub events: u64,
    /// Peak RSS of the process (`VmHWM`, KiB) when the run started and when it ended, and
    /// the RSS (`VmRSS`) at the end with both cores still held.
    pub rss_kib: (u64, u64, u64),
    /// Simulated time.
    pub sim_time: Duration,
}

impl BootReport {
    /// The report as text, for a test's output and `netsim bootstrap-flood`.
    pub fn summary(&self, cfg: &BootSimConfig) -> String {
        let reg = |c: &RegisterCounts| {
            format!(
                "{} accepted; refused {} rate, {} source quota, {} network quota, {} full",
                c.accepted, c.rate, c.source_quota, c.network_quota, c.full
            )
        };
        let (b, s, st, g) = (&self.rendezvous, &self.store, &self.dht_store, &self.good);
        let c = &self.connect;
        let kib = |x: usize| x / 1024;
        let v4 = usize::from(cfg.dense_v4_networks) * usize::from(cfg.dense_v4_addresses)
            + cfg.lone_v4_addresses.min(256);
        let v6 = usize::from(cfg.v6_networks) * usize::from(cfg.v6_per_network);
        let mut out = String::new();
        let mut line = |l: String| {
            out.push_str(&l);
            out.push('\n');
        };
        line(format!(
            "bootstrap flood: {} throwaway identities over {} s from {v4} IPv4 addresses \
             ({} dense /24s, {} lone; {:.0}% on {} addresses), {v6} IPv6 /64s in {} /48s, \
             {:.0}% walking one /48; {:.0}% store a mailbox item; {} simulated s, {} events, seed {}",
            cfg.identities,
            cfg.attack_window.as_secs(),
            cfg.dense_v4_networks,
            cfg.lone_v4_addresses.min(256),
            cfg.heavy_share * 100.0,
            cfg.heavy_addresses,
            cfg.v6_networks,
            cfg.walk_share * 100.0,
            cfg.mailbox_share * 100.0,
            self.sim_time.as_secs(),
            self.events,
            cfg.seed
        ));
        line(format!(
            "  node core, sessions: {} accepted; peer table peak {} entries (max {}), {} at \
             the end, {} evicted",
            self.sessions,
            self.peak_peer_entries,
            cfg.max_peers,
            self.peer_table.0,
            self.peer_table.1
        ));
        line(format!(
            "  rendezvous core, registrations: {}",
            reg(&self.register)
        ));
        line(format!(
            "    re-registrations every {} s: {}",
            cfg.renew_every.as_secs(),
            reg(&self.reregister)
        ));
        line(format!(
            "    core: {} new, {} renewed, {} expired, {} evicted; peak {} live, {} live at the end",
            b.registry.registered,
            b.registry.renewed,
            b.registry.expired,
            b.registry.evicted,
            self.peak_registrations,
            b.registry.live
        ));
        line(format!(
            "  rendezvous core, CONNECT: {} attacker offers, {} forwarded ({} of them replays \
             whose original was refused); refused {} per source, {} per caller, {} replay, \
             {} other, {} target not registered; {} offers forgotten early",
            c.sent,
            c.forwarded,
            c.replays_forwarded,
            c.source,
            c.caller,
            c.replay,
            c.other,
            c.not_registered,
            b.forwarding.forgotten_early
        ));
        line(format!(
            "  DHT core, STORE: {} stored ({} mailbox items, {} bytes encoded); refused {} \
             publisher quota, {} source quota, {} network quota, {} full; {} other",
            s.stored,
            s.stored_mailbox,
            s.stored_bytes,
            s.publisher_quota,
            s.source_quota,
            s.network_quota,
            s.full,
            s.other
        ));
        line(format!(
            "    store: {} records, {} KiB (max {} KiB), {} evicted; routing table {} contacts, \
             {} requests pending, {} messages to no one",
            st.records,
            kib(st.bytes),
            kib(cfg.dht.store.max_bytes),
            st.evicted,
            self.dht_table.0,
            self.dht_table.1,
            self.dht_unanswered
        ));
        line(format!(
            "  good client: registrations {} ok / {} refused; presence STOREs {} / {} stored; \
             lookups {} / {} found the latest; CONNECTs {} sent, {} forwarded, {} admitted by \
             the callee; first refusal: {}",
            g.registrations.0,
            g.registrations.1,
            g.stores.0,
            g.stores.1,
            g.finds.0,
            g.finds.1,
            g.connects.0,
            g.connects.1,
            g.connects.2,
            g.first_refusal.as_deref().unwrap_or("none")
        ));
        line(format!(
            "  accounted memory, peak: rendezvous tables {} KiB + DHT store {} KiB = {} KiB \
             (at once); at the end {} KiB + {} KiB",
            kib(self.peak_rendezvous_bytes),
            kib(self.peak_store_bytes),
            kib(self.peak_bytes),
            kib(b.registry.bytes + b.forwarding.bytes + b.answering.bytes),
            kib(st.bytes)
        ));
        line(format!(
            "  process: peak RSS {} KiB before, {} KiB after; RSS at the end {} KiB; {} \
             signatures made, {} verified ({} refusal reasons read)",
            self.rss_kib.0,
            self.rss_kib.1,
            self.rss_kib.2,
            self.signatures.0,
            self.signatures.1,
            self.reason_probes
        ));
        out
    }
}

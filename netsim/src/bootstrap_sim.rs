//! One bootstrap node's two server roles under a flood of throwaway identities, in
//! simulation (issue 9, "Done when"; spec/06-node.md, "Rendezvous"; spec/04-dht.md §4.1).
//!
//! One simulated bootstrap is the node core a `dna bootstrap` node runs ([`Core`]): its
//! peer table and scores, its rendezvous role (registry and CONNECT limits) and its DHT
//! state machine ([`Dht`], a server with a byte-capped store), driven on the simulated clock
//! at its `poll_timeout`; the good callee's CONNECT admission is its own node core.
//!
//! Throwaway identities (real Dilithium keys) arrive over the attack window from a spread
//! of sources: dense IPv4 /24s (a few addresses in them carry a large share), lone IPv4
//! addresses each in its own /24, IPv6 /64s in a few /48s (each identity at another address
//! of its /64) and one /48 walked a fresh /64 per identity. Each opens a session with the
//! bootstrap (its HELLO authenticates, the connection ends), registers, and re-registers
//! every renewal period until the end; STOREs one signed record through the DHT codec —
//! presence-sized for most, a ≈ 64 KB mailbox item for a share; and sends signed CONNECT
//! offers to registered identities, some of them replayed within their freshness window.
//!
//! Meanwhile a good client — the callee, on its own address — registers and renews,
//! publishes its presence record and republishes it; its two callers (their own IPv4
//! address and IPv6 /64) register and CONNECT to it, and one of them looks the callee's
//! presence up at the bootstrap (FIND_VALUE). It "delivers" when every registration and
//! renewal is accepted, every STORE answered STORED, every lookup answered with the latest
//! record, and every CONNECT forwarded by the bootstrap and admitted by the callee's core.
//!
//! Sources, sizes, session IDs and timing come from the seed. Dilithium keys come from the
//! OS (pqcrypto draws them itself); the attackers' DHT messages carry no server flag (they
//! never enter the routing table), so as long as the store does not fill (eviction breaks
//! ties by key) no decision depends on the keys: the counts are the same for the same seed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use dna_p2p::crypto::record::{presence_key, RecordKind};
use dna_p2p::crypto::{Fingerprint, Identity, NodeId, Record};
use dna_p2p::dht::{Body, Checked, Contact, Dht, DhtConfig, DhtMessage, StoreStats, StoreStatus};
use dna_p2p::nat::signal::{Signal, SignalKind};
use dna_p2p::node::core::connect::{admit_connect, run_ready, Admitted, ConnectError, Now};
use dna_p2p::node::core::{Answer, Core, CoreConfig, Ended, Input, Output, Query, Reply};
use dna_p2p::node::rendezvous::{ConnectRefusal, RegisterError, RendezvousLimits, RendezvousStats};
use rand::Rng;

use crate::dht_flood::mailbox_record;
use crate::{rng, Scheduler, SimRng};

mod report;
pub use report::{BootReport, ConnectCounts, GoodReport, RegisterCounts, StoreCounts};

/// Parameters of a run.
#[derive(Debug, Clone)]
pub struct BootSimConfig {
    /// Throwaway identities.
    pub identities: usize,
    /// Dense IPv4 /24s (198.18.n.0/24).
    pub dense_v4_networks: u8,
    /// Addresses the attackers use in each dense /24.
    pub dense_v4_addresses: u8,
    /// Lone IPv4 addresses, each in a /24 of its own (198.19.n.1; at most 256).
    pub lone_v4_addresses: usize,
    /// The busiest addresses: two in each dense /24.
    pub heavy_addresses: u8,
    /// Share of identities that come from the busiest addresses.
    pub heavy_share: f64,
    /// IPv6 /48s (2001:db8:n::/48) …
    pub v6_networks: u16,
    /// … with this many /64s each; an identity uses a random address in its /64.
    pub v6_per_network: u16,
    /// Share of identities that come from one /48 (2001:db8:ffff::/48), each from a fresh /64.
    pub walk_share: f64,
    /// Share of identities whose record is a mailbox item (64 KB up to the limit); the
    /// others store a presence record (200 B – 2 KB of value, ≈ 5.5–7.4 KB encoded).
    pub mailbox_share: f64,
    /// The identities arrive spread over this time.
    pub attack_window: Duration,
    /// CONNECT offers each identity sends (to random registered identities).
    pub connects_per_identity: usize,
    /// Of those, how many it sends a second time within the freshness window (replays).
    pub replays_per_identity: usize,
    /// Everyone (attackers and good nodes) registers again this often (the daemon's
    /// `refresh_secs`).
    pub renew_every: Duration,
    /// The good client first registers at this time (mid-attack by default).
    pub good_start: Duration,
    /// The good callers CONNECT this often, in turn (plus up to half of it as jitter).
    pub good_connect_every: Duration,
    /// The good client republishes its presence (a higher sequence) this often.
    pub good_publish_every: Duration,
    /// A good caller looks the good client's presence up this often.
    pub good_find_every: Duration,
    /// How long the run lasts.
    pub duration: Duration,
    /// The bootstrap's rendezvous limits.
    pub rendezvous: RendezvousLimits,
    /// The bootstrap's DHT parameters (its store limits).
    pub dht: DhtConfig,
    /// The bootstrap's peer table: entries that may be dropped (`NodeConfig::max_peers`).
    pub max_peers: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for BootSimConfig {
    fn default() -> Self {
        BootSimConfig {
            identities: 10_000,
            dense_v4_networks: 4,
            dense_v4_addresses: 50,
            lone_v4_addresses: 100,
            heavy_addresses: 8,
            heavy_share: 0.3,
            v6_networks: 4,
            v6_per_network: 25,
            walk_share: 0.15,
            mailbox_share: 0.1,
            attack_window: Duration::from_secs(120),
            connects_per_identity: 2,
            replays_per_identity: 1,
            renew_every: Duration::from_secs(120),
            good_start: Duration::from_secs(60),
            good_connect_every: Duration::from_secs(5),
            good_publish_every: Duration::from_secs(300),
            good_find_every: Duration::from_secs(30),
            duration: Duration::from_secs(900),
            rendezvous: RendezvousLimits::default(),
            dht: DhtConfig::default(),
            max_peers: 4096,
            seed: 11,
        }
    }
}

enum Event {
    /// Throwaway identity `n` arrives.
    Arrive(u32),
    /// Throwaway identity `n` registers again.
    Reregister { n: u32, id: NodeId, ip: IpAddr },
    /// A throwaway identity's STORE reaches the bootstrap.
    Store {
        from: Contact,
        record: Vec<u8>,
        mailbox: bool,
    },
    /// A throwaway identity's signed offer reaches the bootstrap.
    Connect {
        ip: IpAddr,
        offer: Vec<u8>,
        replay: bool,
    },
    /// The good nodes register or renew.
    GoodRenew,
    /// The good client publishes its presence.
    GoodPublish,
    /// A good caller looks it up.
    GoodFind,
    /// A good caller sends an offer.
    GoodConnect,
    /// The cores' timers.
    Timer,
}

const BOOT_IP: [u8; 4] = [192, 0, 2, 1];
const CALLEE_IP: [u8; 4] = [203, 0, 113, 5];
const CALLER_V4: [u8; 4] = [203, 0, 113, 9];
const CALLER_V6: [u16; 8] = [0x2001, 0xdb8, 0xbeef, 1, 0, 0, 0, 9];
const PORT: u16 = 4433;
/// Wall clock at the simulation's start, ms since the Unix epoch.
const EPOCH_MS: u64 = 1_750_000_000_000;

/// Why the bootstrap refused a CONNECT.
enum Refused {
    Limit(ConnectRefusal),
    Malformed,
    NotRegistered,
}

struct Good {
    callee: Identity,
    callers: [(Identity, IpAddr); 2],
    seq: u64,
    record: Option<Vec<u8>>,
    turn: usize,
}

struct Sim<'a> {
    cfg: &'a BootSimConfig,
    sched: Scheduler<Event>,
    rng: SimRng,
    epoch: Instant,
    /// The bootstrap's node core (session handles and registrations are numbers here).
    boot: Core<u32, u32>,
    /// The good callee's node core (its CONNECT admission).
    callee: Core<(), ()>,
    good: Good,
    /// Fingerprints of accepted throwaway identities (targets for offers and mail).
    targets: Vec<Fingerprint>,
    next_msg: u64,
    timer_at: Option<Duration>,
    report: BootReport,
}

/// A CONNECT refusal as the report counts it.
fn refused(e: ConnectError) -> Refused {
    match e {
        ConnectError::Refused(r) => Refused::Limit(r),
        ConnectError::Malformed => Refused::Malformed,
        ConnectError::NotRegistered | ConnectError::Busy => Refused::NotRegistered,
    }
}

/// A core's rendezvous counters.
fn rdv_stats<C: Clone, R: Clone + PartialEq>(core: &Core<C, R>, now: Instant) -> RendezvousStats {
    match core.query(now, Query::Rendezvous) {
        Answer::Rendezvous(s) => s,
        _ => RendezvousStats::default(),
    }
}

/// A core's peer table: entries, evictions.
fn peer_table<C: Clone, R: Clone + PartialEq>(core: &Core<C, R>, now: Instant) -> (usize, u64) {
    match core.query(now, Query::PeerTable) {
        Answer::PeerTable(n, evicted) => (n, evicted),
        _ => (0, 0),
    }
}

/// An address inside 2001:db8:<net>:<sub>::/64.
fn v6(net: u16, sub: u16, iid: u64) -> IpAddr {
    let p = (0x2001_0db8u128 << 96) | (u128::from(net) << 80) | (u128::from(sub) << 64);
    IpAddr::V6(Ipv6Addr::from(p | u128::from(iid)))
}

/// Where the next identity comes from.
fn source_of(cfg: &BootSimConfig, rng: &mut SimRng) -> IpAddr {
    let dense = usize::from(cfg.dense_v4_networks.max(1));
    let r: f64 = rng.gen();
    if r < cfg.walk_share {
        return v6(0xffff, rng.gen(), rng.gen());
    }
    if r < cfg.walk_share + cfg.heavy_share {
        let k = rng.gen_range(0..usize::from(cfg.heavy_addresses.max(1)));
        return Ipv4Addr::new(198, 18, (k % dense) as u8, (k / dense + 1) as u8).into();
    }
    let per = usize::from(cfg.dense_v4_addresses.max(1));
    let dense_n = usize::from(cfg.dense_v4_networks) * per;
    let lone = cfg.lone_v4_addresses.min(256);
    let v6_n = usize::from(cfg.v6_networks) * usize::from(cfg.v6_per_network);
    let k = rng.gen_range(0..(dense_n + lone + v6_n).max(1));
    if k < dense_n {
        Ipv4Addr::new(198, 18, (k / per) as u8, (k % per + 1) as u8).into()
    } else if k < dense_n + lone {
        Ipv4Addr::new(198, 19, (k - dense_n) as u8, 1).into()
    } else {
        let j = (k - dense_n - lone) as u16;
        let per6 = cfg.v6_per_network.max(1);
        v6(j / per6 + 1, j % per6, rng.gen::<u64>() | 1)
    }
}

/// A signed offer from `from` to `to`, timed `now_ms`.
fn offer(rng: &mut SimRng, from: &Identity, to: Fingerprint, now_ms: u64) -> Vec<u8> {
    Signal {
        nat: dna_p2p::nat::predict::Behaviour::UNKNOWN,
        kind: SignalKind::Offer,
        from: from.public_key().clone(),
        to,
        session: rng.gen(),
        time_ms: now_ms,
        ufrag: "abcd1234".into(),
        pwd: "0123456789abcdef0123456789abcdef".into(),
        candidates: vec![],
    }
    .sign(from)
}

/// A presence record of `id` with a `len`-byte value, signed at `now` (Unix seconds) to live
/// an hour.
fn presence(rng: &mut SimRng, id: &Identity, seq: u64, len: usize, now: u64) -> Vec<u8> {
    let mut value = vec![0u8; len];
    rng.fill(&mut value[..]);
    Record::sign(id, RecordKind::Presence, seq, now + 3600, value, now)
        .expect("a valid presence record")
        .encode()
}

/// Resident-memory figure `field` (`VmHWM`, `VmRSS`) of this process in KiB, if the
/// system tells.
pub fn status_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl Sim<'_> {
    fn now(&self) -> Instant {
        self.epoch + self.sched.now()
    }

    fn now_ms(&self) -> u64 {
        EPOCH_MS + self.sched.now().as_millis() as u64
    }

    fn unix(&self) -> u64 {
        self.now_ms() / 1000
    }

    fn good_refused(&mut self, what: String) {
        self.report.good.first_refusal.get_or_insert(what);
    }

    /// A CONNECT on a connection from `ip`, admitted by the code the daemon runs
    /// (`node::core::connect::admit_connect`) on the bootstrap's core; an offer for the good
    /// callee goes on to its own core the same way. `Ok(None)`: forwarded to a throwaway
    /// identity; `Ok(Some(admitted))`: forwarded to the good callee, whose core admitted it
    /// or not.
    fn connect(&mut self, ip: IpAddr, bytes: &[u8]) -> Result<Option<bool>, Refused> {
        let (now, unix_ms) = (self.now(), self.now_ms());
        let mut boot = Now {
            core: &mut self.boot,
            now,
        };
        let r = run_ready(admit_connect(&mut boot, false, ip, bytes, unix_ms, |_| {
            true
        }))
        .expect("a simulated core answers at once");
        self.report.signatures.1 += u64::from(r.as_ref().map_or_else(|e| e.verified(), |_| true));
        let to = match r {
            Ok(Admitted::Forward { offer, .. }) => offer.to,
            Ok(Admitted::ForUs(_)) => unreachable!("the bootstrap is no callee here"),
            Err(e) => return Err(refused(e)),
        };
        if to != self.good.callee.fingerprint() {
            return Ok(None);
        }
        let ip = IpAddr::V4(BOOT_IP.into());
        let mut callee = Now {
            core: &mut self.callee,
            now,
        };
        let r = run_ready(admit_connect(&mut callee, true, ip, bytes, unix_ms, |_| {
            true
        }))
        .expect("a simulated core answers at once");
        self.report.signatures.1 += u64::from(r.as_ref().map_or_else(|e| e.verified(), |_| true));
        Ok(Some(r.is_ok()))
    }

    /// Sends a DHT request from `from` through the codec, as the daemon does (records
    /// checked first, then handed to the node); the bootstrap's answer to it, if any.
    fn dht_request(&mut self, from: Contact, body: Body) -> Option<Body> {
        self.next_msg += 1;
        let id = self.next_msg;
        let msg = DhtMessage { id, flags: 0, body };
        let msg = DhtMessage::decode(msg.msg_type(), &msg.encode()).ok()?;
        let checked = Checked::new(msg, self.unix());
        if matches!(checked.message().body, Body::Store { .. }) {
            self.report.signatures.1 += 1;
        }
        let now = self.now();
        self.boot.handle(now, Input::Dht { from, msg: checked });
        let mut answer = None;
        while let Some(out) = self.boot.poll_output() {
            match out {
                Output::DhtSend { to, msg } if to.id == from.id && msg.id == id => {
                    answer = Some(msg.body);
                }
                Output::DhtSend { .. } => self.report.dht_unanswered += 1,
                _ => {}
            }
        }
        answer
    }

    fn register(&mut self, id: NodeId, ip: IpAddr, conn: u32) -> Result<Duration, RegisterError> {
        let now = self.now();
        match self
            .boot
            .handle(now, Input::Register { peer: id, ip, conn })
        {
            Reply::Registered(r) => r.map(|(lifetime, _)| lifetime),
            other => panic!("a registration answered {other:?}"),
        }
    }

    /// A session from a throwaway identity: its HELLO authenticates at the bootstrap's core,
    /// then the connection ends (the peer table must stay bounded).
    fn session(&mut self, n: u32, fp: Fingerprint, ip: IpAddr) {
        let now = self.now();
        let remote = SocketAddr::new(ip, PORT);
        let conn = u64::from(n) + 1;
        let authenticated = Input::Authenticated {
            conn_id: conn,
            peer: fp,
            we_dialed: false,
            remote,
            handle: n,
        };
        if self.boot.handle(now, authenticated) == Reply::Session(Ok(())) {
            self.report.sessions += 1;
        }
        self.boot.handle(
            now,
            Input::Ended(Ended {
                conn_id: conn,
                peer: Some(fp),
                dialed: None,
                registered: true,
                established: true,
                remote,
                penalty: 0,
                failed: false,
                wrong_identity: false,
            }),
        );
        while self.boot.poll_output().is_some() {}
    }

    fn arrive(&mut self, n: u32) {
        let cfg = self.cfg;
        let ip = source_of(cfg, &mut self.rng);
        let id = Identity::generate(&mut rand::rngs::OsRng);
        let node = id.fingerprint().node_id();
        self.session(n, id.fingerprint(), ip);
        let r = self.register(node, ip, n);
        self.report.register.count(&r);
        if r.is_ok() {
            self.targets.push(id.fingerprint());
        }
        let again = cfg.renew_every + Duration::from_millis(self.rng.gen_range(0..10_000));
        self.sched
            .schedule_in(again, Event::Reregister { n, id: node, ip });
        // Its record: a mailbox item (for the good callee or another throwaway identity) or
        // its presence.
        let mailbox = self.rng.gen_bool(cfg.mailbox_share.clamp(0.0, 1.0));
        let record = if mailbox {
            self.report.signatures.0 += 1;
            let to = if self.targets.is_empty() || self.rng.gen_bool(0.5) {
                self.good.callee.fingerprint()
            } else {
                self.targets[self.rng.gen_range(0..self.targets.len())]
            };
            let len = self
                .rng
                .gen_range(64 * 1024..=RecordKind::MailboxItem.max_value_len());
            let unix = self.unix();
            mailbox_record(&id, &to, len, unix, &mut self.rng)
        } else {
            self.report.signatures.0 += 1;
            let len = self
                .rng
                .gen_range(200..=RecordKind::Presence.max_value_len());
            let unix = self.unix();
            presence(&mut self.rng, &id, 1, len, unix)
        };
        let from = Contact {
            id: node,
            addr: SocketAddr::new(ip, PORT),
        };
        let at = Duration::from_millis(self.rng.gen_range(0..2000));
        self.sched.schedule_in(
            at,
            Event::Store {
                from,
                record,
                mailbox,
            },
        );
        for k in 0..cfg.connects_per_identity {
            let to = if self.targets.is_empty() {
                id.fingerprint()
            } else {
                self.targets[self.rng.gen_range(0..self.targets.len())]
            };
            self.report.signatures.0 += 1;
            let now_ms = self.now_ms();
            let offer = offer(&mut self.rng, &id, to, now_ms);
            let at = Duration::from_millis(self.rng.gen_range(0..3000));
            if k < cfg.replays_per_identity {
                let later = at + Duration::from_millis(self.rng.gen_range(1000..50_000));
                let replay = Event::Connect {
                    ip,
                    offer: offer.clone(),
                    replay: true,
                };
                self.sched.schedule_in(later, replay);
            }
            let ev = Event::Connect {
                ip,
                offer,
                replay: false,
            };
            self.sched.schedule_in(at, ev);
        }
    }

    fn attack_store(&mut self, from: Contact, record: Vec<u8>, mailbox: bool) {
        let len = record.len() as u64;
        let before = self.store_stats().refused_by;
        match self.dht_request(from, Body::Store { record }) {
            Some(Body::Stored {
                status: StoreStatus::Stored,
            }) => {
                let c = &mut self.report.store;
                c.stored += 1;
                c.stored_bytes += len;
                c.stored_mailbox += u64::from(mailbox);
            }
            Some(Body::Stored {
                status: StoreStatus::Refused,
            }) => {
                // The reason is the quota whose refusal counter moved.
                self.report.reason_probes += 1;
                let after = self.store_stats().refused_by;
                let c = &mut self.report.store;
                if after.publisher > before.publisher {
                    c.publisher_quota += 1;
                } else if after.source > before.source {
                    c.source_quota += 1;
                } else if after.network > before.network {
                    c.network_quota += 1;
                } else if after.full > before.full {
                    c.full += 1;
                } else {
                    panic!("a STORE refused by no quota: {before:?} → {after:?}");
                }
            }
            _ => self.report.store.other += 1,
        }
    }

    fn attack_connect(&mut self, ip: IpAddr, offer: &[u8], replay: bool) {
        let r = self.connect(ip, offer);
        let c = &mut self.report.connect;
        c.sent += 1;
        match r {
            Ok(_) => {
                c.forwarded += 1;
                c.replays_forwarded += u64::from(replay);
            }
            Err(Refused::Limit(ConnectRefusal::SourceRateLimited)) => c.source += 1,
            Err(Refused::Limit(ConnectRefusal::CallerRateLimited)) => c.caller += 1,
            Err(Refused::Limit(ConnectRefusal::Replayed)) => c.replay += 1,
            Err(Refused::Limit(_) | Refused::Malformed) => c.other += 1,
            Err(Refused::NotRegistered) => c.not_registered += 1,
        }
    }

    fn good_renew(&mut self) {
        let mut nodes = vec![(self.good.callee.fingerprint().node_id(), CALLEE_IP.into())];
        for (id, ip) in &self.good.callers {
            nodes.push((id.fingerprint().node_id(), *ip));
        }
        for (node, ip) in nodes {
            match self.register(node, ip, u32::MAX) {
                Ok(_) => self.report.good.registrations.0 += 1,
                Err(e) => {
                    self.report.good.registrations.1 += 1;
                    self.good_refused(format!("registration from {ip}: {e}"));
                }
            }
        }
        self.sched
            .schedule_in(self.cfg.renew_every, Event::GoodRenew);
    }

    fn good_publish(&mut self) {
        self.good.seq += 1;
        self.report.signatures.0 += 1;
        let unix = self.unix();
        let record = presence(&mut self.rng, &self.good.callee, self.good.seq, 600, unix);
        self.report.good.stores.0 += 1;
        let from = Contact {
            id: self.good.callee.fingerprint().node_id(),
            addr: SocketAddr::new(CALLEE_IP.into(), PORT),
        };
        match self.dht_request(
            from,
            Body::Store {
                record: record.clone(),
            },
        ) {
            Some(Body::Stored {
                status: StoreStatus::Stored,
            }) => {
                self.report.good.stores.1 += 1;
                self.good.record = Some(record);
            }
            other => {
                let what = format!("presence STORE answered {other:?}");
                self.good_refused(what);
            }
        }
        self.sched
            .schedule_in(self.cfg.good_publish_every, Event::GoodPublish);
    }

    fn good_find(&mut self) {
        let (caller, ip) = &self.good.callers[0];
        let from = Contact {
            id: caller.fingerprint().node_id(),
            addr: SocketAddr::new(*ip, PORT),
        };
        let key = presence_key(&self.good.callee.fingerprint());
        self.report.good.finds.0 += 1;
        let found = match self.dht_request(from, Body::FindValue { key }) {
            Some(Body::Value { records, .. }) => self
                .good
                .record
                .as_ref()
                .is_some_and(|r| records.contains(r)),
            _ => false,
        };
        if found {
            self.report.good.finds.1 += 1;
        } else {
            self.good_refused("FIND_VALUE of its presence: not the latest record".into());
        }
        self.sched
            .schedule_in(self.cfg.good_find_every, Event::GoodFind);
    }

    fn good_connect(&mut self) {
        let turn = self.good.turn;
        self.good.turn = (turn + 1) % self.good.callers.len();
        let to = self.good.callee.fingerprint();
        let now_ms = self.now_ms();
        let (caller, ip) = &self.good.callers[turn];
        let ip = *ip;
        let offer = offer(&mut self.rng, caller, to, now_ms);
        self.report.signatures.0 += 1;
        self.report.good.connects.0 += 1;
        match self.connect(ip, &offer) {
            Ok(Some(true)) => {
                self.report.good.connects.1 += 1;
                self.report.good.connects.2 += 1;
            }
            Ok(_) => {
                self.report.good.connects.1 += 1;
                self.good_refused(format!(
                    "CONNECT from {ip}: forwarded, refused by the callee"
                ));
            }
            Err(Refused::Limit(e)) => self.good_refused(format!("CONNECT from {ip}: {e}")),
            Err(Refused::NotRegistered) => {
                self.good_refused(format!("CONNECT from {ip}: the callee is not registered"))
            }
            Err(Refused::Malformed) => self.good_refused(format!("CONNECT from {ip}: malformed")),
        }
        // Jittered: a fixed period can fall into step with the attack's own rhythm.
        let every = self.cfg.good_connect_every;
        let next = every + every.mul_f64(self.rng.gen_range(0.0..0.5));
        self.sched.schedule_in(next, Event::GoodConnect);
    }

    fn timer(&mut self) {
        let now = self.now();
        if self.timer_at.is_some_and(|t| t <= self.sched.now()) {
            self.timer_at = None;
        }
        self.boot.handle_timeout(now);
        self.callee.handle_timeout(now);
        while let Some(out) = self.boot.poll_output() {
            if matches!(out, Output::DhtSend { .. }) {
                self.report.dht_unanswered += 1;
            }
        }
    }

    /// Schedules the cores' next timeout, unless an earlier one is pending.
    fn arm_timer(&mut self) {
        let next = [self.boot.poll_timeout(), self.callee.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(t) = next else { return };
        let soonest = self.sched.now() + Duration::from_millis(1);
        let at = t.saturating_duration_since(self.epoch).max(soonest);
        if self.timer_at.is_none_or(|t| at < t) {
            self.timer_at = Some(at);
            self.sched.schedule_at(at, Event::Timer);
        }
    }

    /// The bootstrap's record store figures.
    fn store_stats(&self) -> StoreStats {
        match self.boot.query(self.now(), Query::Dht) {
            Answer::Dht(Some(d)) => d.store,
            _ => StoreStats::default(),
        }
    }

    fn track_peak(&mut self) {
        let s = rdv_stats(&self.boot, self.now());
        let rdv = s.registry.bytes + s.forwarding.bytes + s.answering.bytes;
        let st = self.store_stats();
        let peers = peer_table(&self.boot, self.now()).0;
        let r = &mut self.report;
        r.peak_peer_entries = r.peak_peer_entries.max(peers);
        r.peak_registrations = r.peak_registrations.max(s.registry.live);
        r.peak_records = r.peak_records.max(st.records);
        r.peak_rendezvous_bytes = r.peak_rendezvous_bytes.max(rdv);
        r.peak_store_bytes = r.peak_store_bytes.max(st.bytes);
        r.peak_bytes = r.peak_bytes.max(rdv + st.bytes);
    }

    fn step(&mut self, ev: Event) {
        self.report.events += 1;
        match ev {
            Event::Arrive(n) => self.arrive(n),
            Event::Reregister { n, id, ip } => {
                let r = self.register(id, ip, n);
                self.report.reregister.count(&r);
                self.sched
                    .schedule_in(self.cfg.renew_every, Event::Reregister { n, id, ip });
            }
            Event::Store {
                from,
                record,
                mailbox,
            } => self.attack_store(from, record, mailbox),
            Event::Connect { ip, offer, replay } => self.attack_connect(ip, &offer, replay),
            Event::GoodRenew => self.good_renew(),
            Event::GoodPublish => self.good_publish(),
            Event::GoodFind => self.good_find(),
            Event::GoodConnect => self.good_connect(),
            Event::Timer => self.timer(),
        }
        self.track_peak();
        self.arm_timer();
    }
}

/// A node core's configuration for the simulation: the run's peer-table cap, a server of
/// rendezvous or not.
fn core_config(cfg: &BootSimConfig, serve: bool, rendezvous: RendezvousLimits) -> CoreConfig {
    CoreConfig {
        max_peers: cfg.max_peers,
        inbox_capacity: 64,
        hash_key: [cfg.seed, !cfg.seed],
        max_scored_sources: 65_536,
        window: 1024,
        reconnect_initial: Duration::from_secs(1),
        reconnect_max: Duration::from_secs(60),
        rendezvous_server: serve,
        rendezvous,
        retry: None,
        mailbox: None,
    }
}

/// Runs the scenario; `epoch` is the real instant simulated time starts from.
pub fn run(cfg: &BootSimConfig, epoch: Instant) -> BootReport {
    let hwm_before = status_kib("VmHWM").unwrap_or(0);
    let mut rng = rng(cfg.seed);
    let boot_id = Identity::generate(&mut rand::rngs::OsRng);
    let dht = Dht::new(
        boot_id.fingerprint().node_id(),
        cfg.dht,
        (epoch, EPOCH_MS / 1000),
        rng.gen(),
    );
    let caller = |ip: IpAddr| (Identity::generate(&mut rand::rngs::OsRng), ip);
    let good = Good {
        callee: Identity::generate(&mut rand::rngs::OsRng),
        callers: [
            caller(CALLER_V4.into()),
            caller(Ipv6Addr::from(CALLER_V6).into()),
        ],
        seq: 0,
        record: None,
        turn: 0,
    };
    let mut sim = Sim {
        cfg,
        sched: Scheduler::new(),
        rng,
        epoch,
        boot: Core::new(
            boot_id.fingerprint(),
            core_config(cfg, true, cfg.rendezvous.clone()),
        )
        .with_dht(dht),
        callee: Core::new(
            good.callee.fingerprint(),
            core_config(cfg, false, RendezvousLimits::default()),
        ),
        good,
        targets: Vec::new(),
        next_msg: 0,
        timer_at: None,
        report: BootReport::default(),
    };
    let s = cfg.good_start;
    sim.sched.schedule_at(s, Event::GoodRenew);
    sim.sched
        .schedule_at(s + Duration::from_millis(200), Event::GoodPublish);
    sim.sched
        .schedule_at(s + Duration::from_millis(500), Event::GoodConnect);
    sim.sched
        .schedule_at(s + Duration::from_secs(2), Event::GoodFind);
    let n = cfg.identities.max(1);
    for i in 0..cfg.identities {
        let at = cfg.attack_window.mul_f64(i as f64 / n as f64);
        sim.sched.schedule_at(at, Event::Arrive(i as u32));
    }
    sim.arm_timer();
    while let Some((t, ev)) = sim.sched.pop() {
        if t > cfg.duration {
            break;
        }
        sim.step(ev);
    }
    let rss_end = status_kib("VmRSS").unwrap_or(0);
    let now = sim.now();
    let mut r = sim.report;
    r.rendezvous = rdv_stats(&sim.boot, now);
    if let Answer::Dht(Some(d)) = sim.boot.query(now, Query::Dht) {
        r.dht_store = d.store;
        r.dht_table = (d.table, d.pending_requests);
    }
    r.peer_table = peer_table(&sim.boot, now);
    r.callee = rdv_stats(&sim.callee, now);
    r.sim_time = sim.sched.now();
    drop(sim.boot);
    r.rss_kib = (hwm_before, status_kib("VmHWM").unwrap_or(0), rss_end);
    r
}

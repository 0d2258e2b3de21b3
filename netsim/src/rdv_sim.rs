//! The rendezvous role of one bootstrap node under attack, in simulation (issue 9, "Build 3";
//! spec/06-node.md, "Rendezvous").
//!
//! One bootstrap's sans-IO node core, its rendezvous role, on a simulated clock. Throwaway identities
//! (real Dilithium keys) arrive from a few hundred simulated sources — IPv4 addresses in a
//! few /24s, IPv6 /64s in two /48s, and one /64 whose every identity uses another address
//! inside it — register, and send signed CONNECT offers (real signatures, verified by the
//! bootstrap as the daemon does) to other registered identities, some of them replayed.
//! Meanwhile a good callee registers and renews, and a good caller from its own address
//! CONNECTs to it every few seconds; the callee's own core admits what the bootstrap
//! forwards. The report counts what was registered, refused, forwarded and admitted, and
//! the bytes the bootstrap's tables held at their peak.
//!
//! Session IDs, sources and timing come from the seed; the keys come from the OS (the
//! Dilithium key generator does not take an RNG), so fingerprints differ between runs, but
//! no decision depends on them: the counts are the same for the same seed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use dna_p2p::crypto::{Fingerprint, Identity};
use dna_p2p::nat::signal::{ConnectErrorCode, Signal, SignalKind};
use dna_p2p::node::core::connect::{admit_connect, run_ready, Admitted, Now};
use dna_p2p::node::core::{Answer, Core, CoreConfig, Input, Query, Reply};
use dna_p2p::node::rendezvous::{RegisterError, RendezvousLimits, RendezvousStats};
use rand::Rng;

use crate::{rng, Scheduler, SimRng};

/// Parameters of a run.
#[derive(Debug, Clone)]
pub struct RdvSimConfig {
    /// Throwaway identities.
    pub identities: usize,
    /// IPv4 sources (25 per /24).
    pub v4_sources: usize,
    /// IPv6 /64 sources (50 per /48).
    pub v6_sources: usize,
    /// Share of identities that come from one /64, each from another address in it.
    pub walk_share: f64,
    /// The identities arrive spread over this time.
    pub attack_window: Duration,
    /// CONNECT offers each identity sends (to random registered identities).
    pub connects_per_identity: usize,
    /// Of those, how many it sends a second time within the freshness window (replays).
    pub replays_per_identity: usize,
    /// Share of the attackers' offers aimed at the good callee.
    pub aim_at_good: f64,
    /// How long the run lasts (past the attack, registrations expire).
    pub duration: Duration,
    /// The good nodes register first at this time, then renew every `renew_every` (the
    /// daemon's `refresh_secs`); their CONNECTs start half a second later.
    pub good_start: Duration,
    /// See `good_start`.
    pub renew_every: Duration,
    /// The good caller CONNECTs this often (plus up to half of it as jitter).
    pub good_connect_every: Duration,
    /// The bootstrap's limits.
    pub limits: RendezvousLimits,
    /// Seed.
    pub seed: u64,
}

impl Default for RdvSimConfig {
    fn default() -> Self {
        RdvSimConfig {
            identities: 10_000,
            v4_sources: 200,
            v6_sources: 100,
            walk_share: 0.1,
            attack_window: Duration::from_secs(120),
            connects_per_identity: 2,
            replays_per_identity: 1,
            aim_at_good: 0.0,
            duration: Duration::from_secs(900),
            good_start: Duration::ZERO,
            renew_every: Duration::from_secs(120),
            good_connect_every: Duration::from_secs(5),
            limits: RendezvousLimits::default(),
            seed: 7,
        }
    }
}

/// What a run showed.
#[derive(Debug, Clone, Default)]
pub struct RdvReport {
    /// Registrations of throwaway identities accepted.
    pub attacker_registered: u64,
    /// … refused, by reason: (rate, source quota, network quota, full).
    pub attacker_refused: (u64, u64, u64, u64),
    /// Attacker offers forwarded (admitted and the target registered).
    pub attacker_forwarded: u64,
    /// Attacker offers refused at the bootstrap (any reason, not registered included).
    pub attacker_refused_connects: u64,
    /// Replayed attacker offers forwarded anyway.
    pub replays_forwarded: u64,
    /// Good registrations and renewals: accepted, refused.
    pub good_registrations: (u64, u64),
    /// The good caller's offers: sent, forwarded by the bootstrap, admitted by the callee.
    pub good_connects: (u64, u64, u64),
    /// The first refusal a good node met, if any.
    pub good_first_refusal: Option<String>,
    /// Registrations of the largest source dropped to make room (full table).
    pub evicted: u64,
    /// Most registrations the bootstrap held at once.
    pub peak_registrations: usize,
    /// Most bytes the bootstrap's registry and CONNECT tables held at once (estimate).
    pub peak_bytes: usize,
    /// The bootstrap's counters at the end.
    pub bootstrap: RendezvousStats,
    /// The good callee's counters at the end.
    pub callee: RendezvousStats,
    /// Signatures made and verified.
    pub signatures: (u64, u64),
    /// Simulated time.
    pub sim_time: Duration,
}

enum Event {
    /// Throwaway identity `n` arrives.
    Arrive(usize),
    /// An attacker's signed offer reaches the bootstrap from `ip`.
    AttackConnect {
        ip: IpAddr,
        offer: Vec<u8>,
        replay: bool,
    },
    /// The good nodes register or renew.
    GoodRenew,
    /// The good caller sends an offer.
    GoodConnect,
    /// The bootstrap's timer.
    Timer,
}

const BOOT_IP: [u8; 4] = [192, 0, 2, 1];
const CALLEE_IP: [u8; 4] = [203, 0, 113, 5];
const CALLER_IP: [u8; 4] = [203, 0, 113, 9];
/// Wall clock at the simulation's start, ms since the Unix epoch.
const EPOCH_MS: u64 = 1_750_000_000_000;

struct Sim<'a> {
    cfg: &'a RdvSimConfig,
    sched: Scheduler<Event>,
    rng: SimRng,
    epoch: Instant,
    /// The bootstrap's node core: its rendezvous role (registrations are numbers here).
    boot: Core<(), u32>,
    /// The good callee's node core (its CONNECT admission).
    callee: Core<(), ()>,
    callee_id: Identity,
    caller_id: Identity,
    /// Fingerprints of registered throwaway identities (targets for offers).
    targets: Vec<Fingerprint>,
    report: RdvReport,
}

/// The address identity `n` uses.
fn source_of(cfg: &RdvSimConfig, n: usize, rng: &mut SimRng) -> IpAddr {
    if rng.gen_bool(cfg.walk_share.clamp(0.0, 1.0)) {
        // Anywhere inside 2001:db8:ffff:1::/64.
        let low: u64 = rng.gen();
        let b = (0x2001_0db8_ffff_0001u128 << 64) | u128::from(low);
        return IpAddr::V6(Ipv6Addr::from(b));
    }
    let k = n % (cfg.v4_sources + cfg.v6_sources).max(1);
    if k < cfg.v4_sources {
        IpAddr::V4(Ipv4Addr::new(198, 18, (k / 25) as u8, (k % 25 + 1) as u8))
    } else {
        let k = k - cfg.v4_sources;
        let seg = |x: usize| x as u16;
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            seg(k / 50),
            seg(k % 50),
            0,
            0,
            0,
            rng.gen::<u16>() | 1,
        ))
    }
}

impl Sim<'_> {
    fn now(&self) -> Instant {
        self.epoch + self.sched.now()
    }

    fn now_ms(&self) -> u64 {
        EPOCH_MS + self.sched.now().as_millis() as u64
    }

    /// A signed offer from `from` (`None`: the good caller) to `to`, timed now.
    fn offer(&mut self, from: Option<&Identity>, to: Fingerprint) -> Vec<u8> {
        self.report.signatures.0 += 1;
        let from = from.unwrap_or(&self.caller_id);
        Signal {
            nat: dna_p2p::nat::predict::Behaviour::UNKNOWN,
            kind: SignalKind::Offer,
            from: from.public_key().clone(),
            to,
            session: self.rng.gen(),
            time_ms: EPOCH_MS + self.sched.now().as_millis() as u64,
            ufrag: "abcd1234".into(),
            pwd: "0123456789abcdef0123456789abcdef".into(),
            candidates: vec![],
        }
        .sign(from)
    }

    /// A CONNECT on a connection from `ip`, admitted by the code the daemon runs
    /// (`node::core::connect::admit_connect`) on the bootstrap's core; an offer for the good
    /// callee goes on to the callee's own core the same way (it sees the bootstrap's
    /// address and verifies again). `Ok(None)`: forwarded to a throwaway identity;
    /// `Ok(Some(admitted))`: forwarded to the good callee, whose core admitted it or not.
    fn connect(&mut self, ip: IpAddr, bytes: &[u8]) -> Result<Option<bool>, ConnectErrorCode> {
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
            Ok(Admitted::ForUs(_)) => return Err(ConnectErrorCode::Malformed),
            Err(e) => return Err(e.code()),
        };
        if to != self.callee_id.fingerprint() {
            return Ok(None);
        }
        let boot_ip = IpAddr::V4(BOOT_IP.into());
        let mut callee = Now {
            core: &mut self.callee,
            now,
        };
        let r = run_ready(admit_connect(
            &mut callee,
            true,
            boot_ip,
            bytes,
            unix_ms,
            |_| true,
        ))
        .expect("a simulated core answers at once");
        self.report.signatures.1 += u64::from(r.as_ref().map_or_else(|e| e.verified(), |_| true));
        Ok(Some(r.is_ok()))
    }

    fn good_refused(&mut self, what: String) {
        self.report.good_first_refusal.get_or_insert(what);
    }

    fn track_peak(&mut self) {
        let s = rdv_stats(&self.boot, self.now());
        let bytes = s.registry.bytes + s.forwarding.bytes + s.answering.bytes;
        self.report.peak_bytes = self.report.peak_bytes.max(bytes);
        self.report.peak_registrations = self.report.peak_registrations.max(s.registry.live);
    }

    fn step(&mut self, ev: Event) {
        let now = self.now();
        match ev {
            Event::Arrive(n) => {
                let ip = source_of(self.cfg, n, &mut self.rng);
                let id = Identity::generate(&mut rand::rngs::OsRng);
                let peer = id.fingerprint().node_id();
                match registered(self.boot.handle(
                    now,
                    Input::Register {
                        peer,
                        ip,
                        conn: n as u32,
                    },
                )) {
                    Ok(_) => {
                        self.report.attacker_registered += 1;
                        self.targets.push(id.fingerprint());
                    }
                    Err(e) => {
                        let r = &mut self.report.attacker_refused;
                        match e {
                            RegisterError::RateLimited => r.0 += 1,
                            RegisterError::SourceQuota(_) => r.1 += 1,
                            RegisterError::NetworkQuota(_) => r.2 += 1,
                            _ => r.3 += 1,
                        }
                    }
                }
                for k in 0..self.cfg.connects_per_identity {
                    let to = if self.rng.gen_bool(self.cfg.aim_at_good.clamp(0.0, 1.0)) {
                        self.callee_id.fingerprint()
                    } else if self.targets.is_empty() {
                        id.fingerprint()
                    } else {
                        self.targets[self.rng.gen_range(0..self.targets.len())]
                    };
                    let offer = self.offer(Some(&id), to);
                    let at = self.sched.now() + Duration::from_millis(self.rng.gen_range(0..3000));
                    if k < self.cfg.replays_per_identity {
                        let later = at + Duration::from_millis(self.rng.gen_range(1000..50_000));
                        self.sched.schedule_at(
                            later,
                            Event::AttackConnect {
                                ip,
                                offer: offer.clone(),
                                replay: true,
                            },
                        );
                    }
                    self.sched.schedule_at(
                        at,
                        Event::AttackConnect {
                            ip,
                            offer,
                            replay: false,
                        },
                    );
                }
            }
            Event::AttackConnect { ip, offer, replay } => match self.connect(ip, &offer) {
                Ok(_) => {
                    self.report.attacker_forwarded += 1;
                    if replay {
                        self.report.replays_forwarded += 1;
                    }
                }
                Err(_) => self.report.attacker_refused_connects += 1,
            },
            Event::GoodRenew => {
                let ids = [
                    (self.callee_id.fingerprint(), CALLEE_IP),
                    (self.caller_id.fingerprint(), CALLER_IP),
                ];
                for (fp, ip) in ids {
                    let register = Input::Register {
                        peer: fp.node_id(),
                        ip: IpAddr::V4(ip.into()),
                        conn: u32::MAX,
                    };
                    match registered(self.boot.handle(now, register)) {
                        Ok(_) => self.report.good_registrations.0 += 1,
                        Err(e) => {
                            self.report.good_registrations.1 += 1;
                            self.good_refused(format!("registration: {e}"));
                        }
                    }
                }
                self.sched
                    .schedule_in(self.cfg.renew_every, Event::GoodRenew);
            }
            Event::GoodConnect => {
                let offer = self.offer(None, self.callee_id.fingerprint());
                self.report.good_connects.0 += 1;
                match self.connect(IpAddr::V4(CALLER_IP.into()), &offer) {
                    Ok(Some(true)) => {
                        self.report.good_connects.1 += 1;
                        self.report.good_connects.2 += 1;
                    }
                    Ok(_) => {
                        self.report.good_connects.1 += 1;
                        self.good_refused("CONNECT: forwarded, refused by the callee".into());
                    }
                    Err(e) => self.good_refused(format!("CONNECT: {}", e.reason())),
                }
                // Jittered: a fixed period can fall into step with the attack's own rhythm.
                let jitter = self
                    .cfg
                    .good_connect_every
                    .mul_f64(self.rng.gen_range(0.0..0.5));
                self.sched
                    .schedule_in(self.cfg.good_connect_every + jitter, Event::GoodConnect);
            }
            Event::Timer => {
                self.boot.handle_timeout(now);
                self.callee.handle_timeout(now);
                self.sched.schedule_in(Duration::from_secs(1), Event::Timer);
            }
        }
        self.track_peak();
    }
}

/// A core with the rendezvous role only (`serve`: registrations accepted).
fn core_config(serve: bool, rendezvous: RendezvousLimits) -> CoreConfig {
    CoreConfig {
        max_peers: 16,
        inbox_capacity: 16,
        hash_key: [1, 2],
        max_scored_sources: 16,
        window: 16,
        reconnect_initial: Duration::from_secs(1),
        reconnect_max: Duration::from_secs(60),
        rendezvous_server: serve,
        rendezvous,
        retry: None,
        mailbox: None,
    }
}

/// A registration's reply as a result.
fn registered(r: Reply) -> Result<Duration, RegisterError> {
    match r {
        Reply::Registered(r) => r.map(|(lifetime, _)| lifetime),
        other => panic!("a registration answered {other:?}"),
    }
}

/// A core's rendezvous counters.
fn rdv_stats<C: Clone, R: Clone + PartialEq>(core: &Core<C, R>, now: Instant) -> RendezvousStats {
    match core.query(now, Query::Rendezvous) {
        Answer::Rendezvous(s) => s,
        _ => RendezvousStats::default(),
    }
}

/// Runs the scenario; `epoch` is the real instant simulated time starts from.
pub fn run(cfg: &RdvSimConfig, epoch: Instant) -> RdvReport {
    let mut sim = Sim {
        cfg,
        sched: Scheduler::new(),
        rng: rng(cfg.seed),
        epoch,
        boot: Core::new(Fingerprint([1; 32]), core_config(true, cfg.limits.clone())),
        callee: Core::new(
            Fingerprint([2; 32]),
            core_config(false, RendezvousLimits::default()),
        ),
        callee_id: Identity::generate(&mut rand::rngs::OsRng),
        caller_id: Identity::generate(&mut rand::rngs::OsRng),
        targets: Vec::new(),
        report: RdvReport::default(),
    };
    sim.sched.schedule_at(cfg.good_start, Event::GoodRenew);
    sim.sched.schedule_at(
        cfg.good_start + Duration::from_millis(500),
        Event::GoodConnect,
    );
    sim.sched.schedule_at(Duration::from_secs(1), Event::Timer);
    let n = cfg.identities.max(1);
    for i in 0..cfg.identities {
        let at = cfg.attack_window.mul_f64(i as f64 / n as f64);
        sim.sched.schedule_at(at, Event::Arrive(i));
    }
    while let Some((t, ev)) = sim.sched.pop() {
        if t > cfg.duration {
            break;
        }
        sim.step(ev);
    }
    let now = sim.now();
    let mut r = sim.report;
    r.bootstrap = rdv_stats(&sim.boot, now);
    r.evicted = r.bootstrap.registry.evicted;
    r.callee = rdv_stats(&sim.callee, now);
    r.sim_time = sim.sched.now();
    r
}

/// Peak resident memory of this process in KiB (`VmHWM`), if the system tells.
pub fn peak_rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

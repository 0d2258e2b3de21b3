//! Reaching a peer through NATs, in simulation (issue 19: netsim drives the reaching code
//! the daemon runs).
//!
//! Two nodes behind NATs of the test bed's types ([`SIMULATED`]) and one public
//! rendezvous node that also relays. What runs is the node's own code: the caller's
//! [`Reach`] (presence → offer → punching → relay), the callee's
//! [`answer::answer`] (what to answer, whether to punch, when to ask the relay),
//! [`Punch`] on both sides with [`Prober`] on the easy side of a port-prediction pair and
//! the hard side's sprayed checks ([`Punch::spray_checks`], one side port each), and the
//! bundled relay's [`RelayServer`]. Signals are really signed and verified.
//!
//! What the simulator stands in for, and says so: the DHT lookup of the presence record is
//! one round trip to the rendezvous node (the DHT's own simulation is `netsim dht`); the
//! rendezvous node forwards every CONNECT (its admission is `netsim bootstrap-flood`'s);
//! a QUIC dial is one round trip through both NATs (a relayed one through the relay); the
//! probe budget is granted whole (the daemon's per-peer ledger is the node core's).
//!
//! Times are simulated milliseconds over the link model (20 ms ± 10 ms one way by
//! default): they compare pairs with each other, not with a machine.

pub mod nat;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use dna_p2p::crypto::Identity;
use dna_p2p::nat::candidate::{Candidate, CandidateKind, PresenceInfo};
use dna_p2p::nat::predict::{plan, Need, ProbeConfig, Prober, SPRAY_SOCKETS};
use dna_p2p::nat::punch::{Punch, PunchConfig, PunchCreds, PunchResult};
use dna_p2p::nat::signal::{Signal, SignalKind};
use dna_p2p::node::reach::answer::{self, AskRelay, Callee};
use dna_p2p::node::reach::{Action, Reach, Reached, RelayPolicy};
use dna_p2p::node::relay_server::{Ask, RelayServer, RelayServerLimits};
use rand::{Rng, RngCore};

use nat::{behaviour, reachable, Nat};
pub use nat::{NatType, SIMULATED};

use crate::{rng, LinkModel, Scheduler, SimRng};

/// The node's one socket's port, inside its NAT.
const PORT: u16 = 4000;
/// The hard side's side sockets take ports from here up.
const SIDE_PORTS: u16 = 30_000;
/// The rendezvous node (and bundled relay).
const RDV: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)), 7000);
/// Most punching attempts at once (the daemon's cap; one runs here).
const MAX_PUNCH_ATTEMPTS: usize = 32;

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct ReachSimConfig {
    /// The caller's NAT.
    pub caller: NatType,
    /// The callee's NAT.
    pub callee: NatType,
    /// Every hop's latency and loss.
    pub link: LinkModel,
    /// How long punching runs alone before the relay is asked (config `relay_after`).
    pub relay_after: Duration,
    /// How long the run goes on after the first path, for a direct upgrade.
    pub watch: Duration,
    /// Seed.
    pub seed: u64,
}

impl ReachSimConfig {
    /// The pair with the daemon's defaults: 1 s `relay_after`, 12 s of watching.
    pub fn pair(caller: NatType, callee: NatType, seed: u64) -> ReachSimConfig {
        ReachSimConfig {
            caller,
            callee,
            link: LinkModel::default(),
            relay_after: Duration::from_secs(1),
            watch: Duration::from_secs(12),
            seed,
        }
    }
}

/// Which path carried a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Dialed at a published address.
    Direct,
    /// A punched pair (prediction included).
    Punched,
    /// Through the bundled relay.
    Relay,
}

impl PathKind {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Punched => "punched",
            PathKind::Relay => "relay",
        }
    }
}

/// What a run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachOutcome {
    /// The pair.
    pub caller: NatType,
    /// See `caller`.
    pub callee: NatType,
    /// What the caller's [`Reach`] reported.
    pub reached: String,
    /// The first session up: its path and the simulated time since the reach began.
    pub first: Option<(PathKind, Duration)>,
    /// When the session was on a direct path (direct or punched), if ever.
    pub direct_at: Option<Duration>,
    /// Connectivity checks both punching attempts sent (prediction probes included).
    pub checks: u32,
    /// Of those, port-prediction probes (the easy side's) and sprayed checks.
    pub predicted: u32,
}

impl ReachOutcome {
    /// The path the session ended on.
    pub fn end(&self) -> Option<PathKind> {
        match (self.direct_at, self.first) {
            (Some(_), Some((PathKind::Direct, _))) => Some(PathKind::Direct),
            (Some(_), _) => Some(PathKind::Punched),
            (None, f) => f.map(|(k, _)| k),
        }
    }
}

#[derive(Debug)]
enum Packet {
    Stun(Vec<u8>),
    QuicInitial,
    QuicReply,
}

#[derive(Debug)]
enum Ev {
    /// A datagram arrives at `to` from `from` (addresses as the network sees them).
    Datagram {
        to: SocketAddr,
        from: SocketAddr,
        packet: Packet,
    },
    /// The lookup answered.
    Presence,
    /// The offer reached the callee.
    Offer(Vec<u8>),
    /// The answer reached the caller.
    Answer(Vec<u8>),
    /// A side's punching attempt is due.
    PunchTimer(usize),
    /// The caller's `relay_wait` is over.
    CallerSlow,
    /// The callee's wait before asking the relay is over.
    CalleeRelay,
    /// A side's relay request reaches the relay.
    RelayAsk(usize),
    /// The relay's grant reaches a side: the peer's token.
    Granted(usize, SocketAddr),
    /// A relayed QUIC handshake finished.
    RelayedUp,
    /// QUIC's probe timeout for a dial from the caller's `port` to `to`: its Initial again
    /// unless a session on a direct path is up (`n`: the retransmissions so far).
    DialAgain { port: u16, to: SocketAddr, n: u32 },
}

/// QUIC's first probe timeout for an Initial (quinn: 3 × its 333 ms initial RTT), doubling
/// per retransmission; a dial gives up after this many.
const INITIAL_PTO: Duration = Duration::from_millis(999);
const DIAL_RETRANSMITS: u32 = 4;

struct Node {
    id: Identity,
    kind: NatType,
    private: IpAddr,
    nat: Nat,
    cands: Vec<Candidate>,
    punch: Option<Punch>,
    /// Which inside port answers a remote (the side socket it was heard on).
    routes: HashMap<SocketAddr, u16>,
    punch_started: Option<Duration>,
}

struct Sim {
    cfg: ReachSimConfig,
    sched: Scheduler<Ev>,
    rng: SimRng,
    epoch: Instant,
    wall_ms: u64,
    nodes: [Node; 2],
    reach: Reach,
    relay: RelayServer,
    relay_id: Identity,
    /// The relay grant was asked for but is not there yet, by side.
    awaiting_grant: [bool; 2],
    out: ReachOutcome,
    /// The caller dialed the punched pair and waits for it.
    punched_dialed: bool,
    /// The caller reported its first working pair (or result) to the reach already.
    reported: bool,
    done: bool,
}

const CALLER: usize = 0;
const CALLEE: usize = 1;

/// The simulated wall clock at the start (signals carry ms since the Unix epoch; both ends
/// read this clock, so their freshness checks pass as on synchronized machines).
const WALL_START_MS: u64 = 1_800_000_000_000;

/// Runs one pair; `epoch` is the `Instant` simulated time 0 stands for (the driver's one
/// clock read).
pub fn run(cfg: ReachSimConfig, epoch: Instant) -> ReachOutcome {
    let mut rng = rng(cfg.seed);
    let wall_ms = WALL_START_MS;
    let node = |i: u8, kind: NatType| {
        let private = IpAddr::V4(Ipv4Addr::new(10, 0, i, 2));
        let public = if kind == NatType::Public {
            private_public(i)
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, i + 1))
        };
        let private = if kind == NatType::Public {
            public
        } else {
            private
        };
        Node {
            id: Identity::generate(&mut rand::rngs::OsRng),
            kind,
            private,
            nat: Nat::new(kind, public),
            cands: Vec::new(),
            punch: None,
            routes: HashMap::new(),
            punch_started: None,
        }
    };
    let mut nodes = [node(0, cfg.caller), node(1, cfg.callee)];
    for n in &mut nodes {
        // Discovery: the host address, and the mapping the rendezvous node's STUN saw.
        let host = SocketAddr::new(n.private, PORT);
        let srflx = n.nat.outbound(PORT, RDV, &mut rng);
        n.cands
            .push(Candidate::new(CandidateKind::ServerReflexive, srflx, 65535));
        if host != srflx {
            n.cands
                .push(Candidate::new(CandidateKind::Host, host, 65534));
        }
    }
    let mut session = [0u8; 8];
    rng.fill_bytes(&mut session);
    let reach = Reach::new(
        nodes[CALLER].id.fingerprint(),
        nodes[CALLEE].id.fingerprint(),
        session,
        hex(&mut rng, 4),
        hex(&mut rng, 16),
    )
    .with_policy(RelayPolicy::Auto)
    .with_timing(behaviour(cfg.caller), cfg.relay_after);
    let out = ReachOutcome {
        caller: cfg.caller,
        callee: cfg.callee,
        reached: String::new(),
        first: None,
        direct_at: None,
        checks: 0,
        predicted: 0,
    };
    let mut sim = Sim {
        cfg,
        sched: Scheduler::new(),
        rng,
        epoch,
        wall_ms,
        nodes,
        reach,
        relay: RelayServer::new(RelayServerLimits::default()),
        relay_id: Identity::generate(&mut rand::rngs::OsRng),
        awaiting_grant: [false; 2],
        out,
        punched_dialed: false,
        reported: false,
        done: false,
    };
    sim.drive_reach();
    while let Some((at, ev)) = sim.sched.pop() {
        if sim.finished(at) {
            break;
        }
        sim.handle(ev);
        sim.drive_reach();
    }
    for p in sim.nodes.iter().filter_map(|n| n.punch.as_ref()) {
        sim.out.checks += p.probes_sent() + p.predicted_probes();
        sim.out.predicted += p.predicted_probes();
    }
    sim.out
}

/// A public node's address (no NAT: inside and outside are one).
fn private_public(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, i + 10))
}

fn hex(rng: &mut SimRng, n: usize) -> String {
    (0..n).map(|_| format!("{:02x}", rng.gen::<u8>())).collect()
}

impl Sim {
    fn now(&self) -> Instant {
        self.epoch + self.sched.now()
    }

    fn now_ms(&self) -> u64 {
        self.wall_ms + self.sched.now().as_millis() as u64
    }

    /// Done: a direct path is up, or the watch after the first path is over, or nothing
    /// can happen any more.
    fn finished(&self, at: Duration) -> bool {
        if self.out.direct_at.is_some() {
            return true;
        }
        match self.out.first {
            Some((_, t)) => at > t + self.cfg.watch,
            None => at > Duration::from_secs(60),
        }
    }

    /// One hop's delay, or `None` when the link lost the datagram.
    fn hop(&mut self) -> Option<Duration> {
        self.cfg.link.sample(&mut self.rng)
    }

    /// A hop that cannot be lost (signalling over the rendezvous node's QUIC connections,
    /// which retransmit).
    fn reliable_hop(&mut self) -> Duration {
        let mut lossless = self.cfg.link;
        lossless.loss = 0.0;
        lossless.sample(&mut self.rng).unwrap_or(lossless.latency)
    }

    /// Sends a datagram from `side`'s inside `port` to `to` through its NAT.
    fn send(&mut self, side: usize, port: u16, to: SocketAddr, packet: Packet) {
        let from = self.nodes[side].nat.outbound(port, to, &mut self.rng);
        if let Some(d) = self.hop() {
            self.sched.schedule_in(d, Ev::Datagram { to, from, packet });
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Datagram { to, from, packet } => self.datagram(to, from, packet),
            Ev::Presence => {
                let me = &self.nodes[CALLEE];
                let info = PresenceInfo {
                    reachable: reachable(me.kind),
                    nat: me.kind.name().to_owned(),
                    candidates: me.cands.clone(),
                    rendezvous: vec![(RDV, self.relay_id.fingerprint())],
                };
                self.reach.handle_presence(Some(Ok(info)));
            }
            Ev::Offer(bytes) => self.answer(bytes),
            Ev::Answer(bytes) => {
                let now_ms = self.now_ms();
                self.reach.handle_offer(now_ms, Ok(bytes));
            }
            Ev::PunchTimer(side) => {
                let now = self.now();
                if let Some(p) = self.nodes[side].punch.as_mut() {
                    if p.poll_timeout().is_some_and(|t| t <= now) {
                        p.handle_timeout(now);
                    }
                }
                self.flush(side);
            }
            Ev::CallerSlow => {
                let running = self.nodes[CALLER]
                    .punch
                    .as_ref()
                    .is_some_and(|p| p.result().is_none());
                if running && !self.reported {
                    self.reach.handle_punch_slow();
                }
            }
            Ev::CalleeRelay => {
                let punched = self.nodes[CALLEE]
                    .punch
                    .as_ref()
                    .and_then(Punch::result)
                    .is_some_and(|r| matches!(r, PunchResult::Connected(_)));
                if !punched {
                    let d = self.reliable_hop();
                    self.sched.schedule_in(d, Ev::RelayAsk(CALLEE));
                }
            }
            Ev::RelayAsk(side) => self.relay_ask(side),
            Ev::Granted(side, token) => {
                self.awaiting_grant[side] = false;
                if side == CALLER {
                    self.reach.handle_relay(Ok(token));
                }
            }
            Ev::RelayedUp => self.up(PathKind::Relay),
            Ev::DialAgain { port, to, n } => {
                if self.out.direct_at.is_none() {
                    self.dial(port, to, n + 1);
                }
            }
        }
    }

    /// The callee's side: verify, decide (the node's code), sign, punch, ask the relay.
    fn answer(&mut self, bytes: Vec<u8>) {
        let Ok(offer) = Signal::verify(&bytes) else {
            return;
        };
        let (ufrag, pwd) = (hex(&mut self.rng, 4), hex(&mut self.rng, 16));
        let now_ms = self.now_ms();
        let callee = &self.nodes[CALLEE];
        let ctx = Callee {
            key: callee.id.public_key(),
            now_ms,
            punching: (0, MAX_PUNCH_ATTEMPTS),
            policy: RelayPolicy::Auto,
            candidates: &callee.cands,
            nat: behaviour(callee.kind),
            relay_after: self.cfg.relay_after,
            can_relay: true,
            creds: (ufrag, pwd),
        };
        let Ok(plan) = answer::answer(&offer, &callee.id.fingerprint(), ctx) else {
            return;
        };
        let signed = plan.answer.sign(&callee.id);
        let back = self.reliable_hop() + self.reliable_hop();
        self.sched.schedule_in(back, Ev::Answer(signed));
        if let Some(p) = plan.punch {
            self.start_punch(CALLEE, p.creds, &p.candidates, false, p.nat);
        }
        match plan.relay {
            AskRelay::Never => {}
            AskRelay::Now => self.sched.schedule_in(Duration::ZERO, Ev::CalleeRelay),
            AskRelay::UnlessPunchedWithin(w) => self.sched.schedule_in(w, Ev::CalleeRelay),
        }
    }

    /// Starts `side`'s punching attempt (with port prediction where the pair needs it, as
    /// the daemon plans it).
    fn start_punch(
        &mut self,
        side: usize,
        creds: PunchCreds,
        cands: &[Candidate],
        controlling: bool,
        theirs: dna_p2p::nat::predict::Behaviour,
    ) {
        let now = self.now();
        let mut tag = [0u8; 4];
        self.rng.fill_bytes(&mut tag);
        let cfg = PunchConfig {
            relay_wait: answer::relay_wait(
                behaviour(self.nodes[side].kind),
                theirs,
                self.cfg.relay_after,
            ),
            ..PunchConfig::default()
        };
        let mut punch = Punch::new(creds, cands, controlling, tag, cfg, now);
        let mut sprayed = Vec::new();
        let mut spray_to = None;
        match plan(behaviour(self.nodes[side].kind), theirs, cands) {
            Some(Need::Probe { target, sequential }) => {
                let mut seed = [0u8; 32];
                self.rng.fill_bytes(&mut seed);
                let cfg = ProbeConfig::default();
                punch.predict(Prober::new(target, sequential, cfg, cfg.budget, seed, now));
            }
            Some(Need::Spray { to }) => {
                sprayed = punch.spray_checks(to, SPRAY_SOCKETS, now);
                spray_to = Some(to);
                self.out.predicted += sprayed.len() as u32;
                self.out.checks += sprayed.len() as u32;
            }
            None => {}
        }
        punch.handle_timeout(now);
        self.nodes[side].punch = Some(punch);
        self.nodes[side].punch_started = Some(self.sched.now());
        if let Some(to) = spray_to {
            for (i, check) in sprayed.into_iter().enumerate() {
                self.send(side, SIDE_PORTS + i as u16, to, Packet::Stun(check));
            }
        }
        self.flush(side);
    }

    /// Sends what `side`'s punching attempt has to send and sets its timer.
    fn flush(&mut self, side: usize) {
        let Some(p) = self.nodes[side].punch.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        while let Some((to, bytes)) = p.poll_transmit() {
            out.push((to, bytes));
        }
        let next = p.poll_timeout();
        for (to, bytes) in out {
            let port = self.nodes[side].routes.get(&to).copied().unwrap_or(PORT);
            self.send(side, port, to, Packet::Stun(bytes));
        }
        if let Some(at) = next {
            let at = at
                .saturating_duration_since(self.epoch)
                .max(self.sched.now());
            self.sched.schedule_at(at, Ev::PunchTimer(side));
        }
        if side == CALLER {
            self.caller_progress();
        }
    }

    /// The caller's punching attempt, reported to its reach as the daemon does: the first
    /// working pair at once, else the result when it settles; after the reach finished on
    /// the relay, a pair found later moves the session (the daemon's upgrade).
    fn caller_progress(&mut self) {
        let Some(p) = self.nodes[CALLER].punch.as_ref() else {
            return;
        };
        if self.done {
            if let (Some(PunchResult::Connected(sel)), false) = (p.result(), self.punched_dialed) {
                self.punched_dialed = true;
                let port = self.route(CALLER, sel.remote);
                self.dial(port, sel.remote, 0);
            }
            return;
        }
        if self.reported {
            return;
        }
        if let Some(sel) = p.first_working() {
            self.reported = true;
            self.reach.handle_punched_at(sel, sel.remote);
        } else if let Some(r) = p.result() {
            self.reported = true;
            self.reach.handle_punch(r);
        }
    }

    /// The caller's QUIC Initial toward `to`, from its inside `port`, retransmitted on
    /// QUIC's schedule (`n`: retransmissions so far).
    fn dial(&mut self, port: u16, to: SocketAddr, n: u32) {
        self.send(CALLER, port, to, Packet::QuicInitial);
        if n < DIAL_RETRANSMITS {
            self.sched
                .schedule_in(INITIAL_PTO * 2u32.pow(n), Ev::DialAgain { port, to, n });
        }
    }

    fn route(&self, side: usize, to: SocketAddr) -> u16 {
        self.nodes[side].routes.get(&to).copied().unwrap_or(PORT)
    }

    fn datagram(&mut self, to: SocketAddr, from: SocketAddr, packet: Packet) {
        let Some(side) = (0..2).find(|&i| self.nodes[i].nat.public_ip() == to.ip()) else {
            return; // a private address of the other side: no route
        };
        let Some(port) = self.nodes[side].nat.inbound(from, to.port()) else {
            return; // filtered
        };
        let now = self.now();
        match packet {
            Packet::Stun(bytes) => {
                self.nodes[side].routes.insert(from, port);
                if let Some(p) = self.nodes[side].punch.as_mut() {
                    p.handle_stun(from, &bytes, now);
                }
                self.flush(side);
            }
            Packet::QuicInitial => self.send(side, port, from, Packet::QuicReply),
            Packet::QuicReply if side == CALLER => {
                let kind = if self.nodes[CALLER].punch.is_some() {
                    PathKind::Punched
                } else {
                    PathKind::Direct
                };
                self.up(kind);
            }
            Packet::QuicReply => {}
        }
    }

    fn up(&mut self, kind: PathKind) {
        let t = self.sched.now();
        if self.out.first.is_none() {
            self.out.first = Some((kind, t));
        }
        if kind != PathKind::Relay && self.out.direct_at.is_none() {
            self.out.direct_at = Some(t);
        }
    }

    fn relay_ask(&mut self, side: usize) {
        let now = self.now();
        let me = self.nodes[side].id.fingerprint().node_id();
        let peer = self.nodes[1 - side].id.fingerprint().node_id();
        let addr = self.nodes[side].nat.outbound(PORT, RDV, &mut self.rng);
        self.awaiting_grant[side] = true;
        let mut r = rng(self.rng.gen());
        match self.relay.ask(me, addr, peer, now, &mut r) {
            Ok(Ask::Granted(g)) => {
                let d = self.reliable_hop();
                self.sched.schedule_in(d, Ev::Granted(side, g.peer_token));
                // The side that waited hears of its pair now too.
                let other = 1 - side;
                if self.awaiting_grant[other] {
                    if let Some(g) = self.relay.grant(peer, me) {
                        let d = self.reliable_hop();
                        self.sched.schedule_in(d, Ev::Granted(other, g.peer_token));
                    }
                }
            }
            Ok(Ask::Waiting) | Err(_) => {}
        }
    }

    /// Carries out what the caller's reach asks for.
    fn drive_reach(&mut self) {
        while let Some(action) = self.reach.poll_action() {
            match action {
                Action::FindPresence => {
                    let d = self.reliable_hop() + self.reliable_hop();
                    self.sched.schedule_in(d, Ev::Presence);
                }
                Action::Offer { .. } => {
                    let (ufrag, pwd) = self.reach.credentials();
                    let me = &self.nodes[CALLER];
                    let offer = Signal {
                        kind: SignalKind::Offer,
                        from: me.id.public_key().clone(),
                        to: self.nodes[CALLEE].id.fingerprint(),
                        session: self.reach.session(),
                        time_ms: self.now_ms(),
                        ufrag: ufrag.to_owned(),
                        pwd: pwd.to_owned(),
                        candidates: me.cands.clone(),
                        nat: behaviour(me.kind),
                    }
                    .sign(&me.id);
                    let d = self.reliable_hop() + self.reliable_hop();
                    self.sched.schedule_in(d, Ev::Offer(offer));
                }
                Action::Punch {
                    creds,
                    candidates,
                    nat,
                    relay_wait,
                } => {
                    self.start_punch(CALLER, creds, &candidates, true, nat);
                    self.sched.schedule_in(relay_wait, Ev::CallerSlow);
                }
                Action::Relay { .. } => {
                    let d = self.reliable_hop();
                    self.sched.schedule_in(d, Ev::RelayAsk(CALLER));
                }
                Action::Dial { addrs } => {
                    if addrs.iter().any(|a| a.ip() == RDV.ip()) || is_token(&addrs) {
                        // Through the relay: caller → relay → callee and back.
                        let d = (0..4).map(|_| self.reliable_hop()).sum();
                        self.sched.schedule_in(d, Ev::RelayedUp);
                    } else if let Some(&to) = addrs.first() {
                        if self.nodes[CALLER].punch.is_some() {
                            self.punched_dialed = true;
                        }
                        let port = self.route(CALLER, to);
                        self.dial(port, to, 0);
                    }
                }
                Action::Done(r) => {
                    self.done = true;
                    self.out.reached = match r {
                        Ok(Reached::Direct { .. }) => "direct".into(),
                        Ok(Reached::Punched { kind, .. }) => format!("punched ({kind:?})"),
                        Ok(Reached::Bundled { .. }) => "bundled relay".into(),
                        Ok(Reached::Relayed { .. }) => "TURN".into(),
                        Ok(Reached::RelayNeeded) => "relay needed".into(),
                        Ok(other) => format!("{other:?}"),
                        Err(e) => format!("failed: {e}"),
                    };
                }
            }
        }
    }
}

/// A relay token: an address in 240.0.0.0/5 (spec/07-relay.md §1.2).
fn is_token(addrs: &[SocketAddr]) -> bool {
    addrs
        .iter()
        .any(|a| matches!(a.ip(), IpAddr::V4(v4) if v4.octets()[0] & 0xF8 == 0xF0))
}

/// Every pair of `types` (each caller with each callee), `runs` times each with seeds
/// `seed`, `seed + 1`, ….
pub fn matrix(
    types: &[NatType],
    runs: usize,
    seed: u64,
    link: LinkModel,
    epoch: Instant,
) -> Vec<ReachOutcome> {
    let mut all = Vec::new();
    for (i, &a) in types.iter().enumerate() {
        for &b in &types[i..] {
            for r in 0..runs {
                let mut cfg = ReachSimConfig::pair(a, b, seed + r as u64);
                cfg.link = link;
                all.push(run(cfg, epoch));
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(a: NatType, b: NatType) -> ReachOutcome {
        run(ReachSimConfig::pair(a, b, 3), epoch())
    }

    fn symmetric(t: NatType) -> bool {
        matches!(t, NatType::Symmetric | NatType::SymmetricSeq)
    }

    #[test]
    fn every_pair_is_up_within_relay_after_and_direct_where_a_path_exists() {
        let all = matrix(&SIMULATED, 3, 11, LinkModel::default(), epoch());
        assert_eq!(all.len(), 21 * 3);
        for o in &all {
            let (_, t) = o.first.unwrap_or_else(|| panic!("no session: {o:?}"));
            assert!(t < Duration::from_secs(1), "{o:?}");
            let hopeless = symmetric(o.caller) && symmetric(o.callee);
            assert_eq!(o.direct_at.is_some(), !hopeless, "{o:?}");
        }
    }

    #[test]
    fn with_lost_datagrams_every_pair_still_ends_where_it_should() {
        let link = LinkModel {
            loss: 0.05,
            ..LinkModel::default()
        };
        for o in &matrix(&SIMULATED, 3, 11, link, epoch()) {
            assert!(o.first.is_some(), "no session: {o:?}");
            let hopeless = symmetric(o.caller) && symmetric(o.callee);
            assert_eq!(o.direct_at.is_some(), !hopeless, "{o:?}");
        }
    }

    fn epoch() -> Instant {
        #[allow(clippy::disallowed_methods)] // a test's one clock read: the simulation's epoch
        Instant::now()
    }

    #[test]
    fn a_public_callee_is_dialed_directly() {
        let o = pair(NatType::Symmetric, NatType::Public);
        assert_eq!(o.reached, "direct");
        assert_eq!(o.end(), Some(PathKind::Direct));
        assert_eq!(o.checks, 0, "no punching toward a reachable peer");
    }

    #[test]
    fn cones_punch_and_never_touch_the_relay() {
        let o = pair(NatType::PortRestricted, NatType::AddressRestricted);
        assert!(o.reached.starts_with("punched"), "{o:?}");
        assert_eq!(o.first.map(|f| f.0), Some(PathKind::Punched));
        assert!(o.checks > 0);
    }

    #[test]
    fn symmetric_pairs_start_on_the_relay_at_once() {
        let o = pair(NatType::Symmetric, NatType::Symmetric);
        assert_eq!(o.reached, "bundled relay");
        assert_eq!(o.first.map(|f| f.0), Some(PathKind::Relay));
        assert_eq!(o.direct_at, None, "two symmetric NATs: no direct path");
        // Relay first: the session is up well before `relay_after` would have passed.
        assert!(o.first.unwrap().1 < Duration::from_secs(1), "{o:?}");
    }

    #[test]
    fn port_prediction_moves_a_relayed_session_to_a_direct_path() {
        let o = pair(NatType::PortRestricted, NatType::SymmetricSeq);
        assert_eq!(o.first.map(|f| f.0), Some(PathKind::Relay), "{o:?}");
        assert!(o.direct_at.is_some(), "prediction found the path: {o:?}");
        assert!(o.predicted > 0);
    }
}

//! Port prediction for a symmetric NAT facing an endpoint-independent one (spec/05-nat.md
//! §5.5), sans-IO: which side does what ([`role`]), the NAT behaviour byte both CONNECT
//! signals carry ([`Behaviour`]), the easy side's probe schedule ([`Prober`]) and the
//! per-peer probe budget ([`Ledger`]).
//!
//! The birthday method: the hard side (address-and-port-dependent mapping) opens
//! [`SPRAY_SOCKETS`] sockets and sends from each toward the easy side's public address,
//! which opens as many mappings on its NAT; the easy side (endpoint-independent mapping,
//! port-dependent filtering — its NAT drops all of that) sends checks to random ports of
//! the hard side's public IP from its one socket. A check that hits one of the mappings
//! reaches a side socket, whose answer passes the easy NAT because the easy side just sent
//! to that port. With 256 mappings among 64,512 ports, each probe hits with p ≈ 1/252:
//! half the attempts need ≤ 175 probes, 99 % ≤ 1,160, 99.97 % ≤ 2,048 (the budget).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::discovery::{Filtering, Mapping, NatClass};

/// Sockets the hard side opens for one attempt.
pub const SPRAY_SOCKETS: usize = 256;
/// The lowest port a NAT hands out (Linux: 1024–65535 for sources ≥ 1024).
pub const LOWEST_PORT: u16 = 1024;

/// A node's NAT behaviour as one byte in CONNECT signals (spec/05 §4.2): bit 7 "known",
/// bits 0–1 mapping, bits 2–3 filtering (0 endpoint-independent, 1 address-dependent, 2
/// address-and-port-dependent), bit 4 "ports allocated sequentially". Anything else reads
/// as unknown: no prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behaviour {
    /// Mapping and filtering, if discovery found them.
    pub class: Option<(Mapping, Filtering)>,
    /// The NAT gave consecutive ports to discovery's three mappings.
    pub sequential: bool,
}

impl Behaviour {
    /// Nothing known.
    pub const UNKNOWN: Behaviour = Behaviour {
        class: None,
        sequential: false,
    };

    /// What discovery found.
    pub fn of(class: Option<&NatClass>) -> Behaviour {
        class.map_or(Behaviour::UNKNOWN, |c| Behaviour {
            class: Some((c.mapping, c.filtering)),
            sequential: c.sequential,
        })
    }

    /// The byte.
    pub fn encode(self) -> u8 {
        let Some((m, f)) = self.class else { return 0 };
        let m = match m {
            Mapping::EndpointIndependent => 0,
            Mapping::AddressDependent => 1,
            Mapping::AddressAndPortDependent => 2,
        };
        let f = match f {
            Filtering::EndpointIndependent => 0,
            Filtering::AddressDependent => 1,
            Filtering::AddressAndPortDependent => 2,
        };
        0x80 | m | f << 2 | u8::from(self.sequential) << 4
    }

    /// Reads the byte; unknown values give [`Behaviour::UNKNOWN`].
    pub fn decode(b: u8) -> Behaviour {
        if b & 0x80 == 0 || b & 0x60 != 0 {
            return Behaviour::UNKNOWN;
        }
        let m = match b & 3 {
            0 => Mapping::EndpointIndependent,
            1 => Mapping::AddressDependent,
            2 => Mapping::AddressAndPortDependent,
            _ => return Behaviour::UNKNOWN,
        };
        let f = match b >> 2 & 3 {
            0 => Filtering::EndpointIndependent,
            1 => Filtering::AddressDependent,
            2 => Filtering::AddressAndPortDependent,
            _ => return Behaviour::UNKNOWN,
        };
        Behaviour {
            class: Some((m, f)),
            sequential: b & 0x10 != 0,
        }
    }
}

/// Our part in a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We are the hard side: open [`SPRAY_SOCKETS`] toward the peer's public address.
    Spray,
    /// We are the easy side: probe ports of the peer's public IP.
    Probe {
        /// The peer's NAT allocates ports sequentially: probe upward from its last
        /// observed port first.
        sequential: bool,
    },
}

/// Whether this pair needs prediction and our part in it: only where one side's mapping
/// depends on the destination and the other's mapping is endpoint-independent but its
/// filtering depends on the port (every other pair with an endpoint-independent side
/// punches without it; two symmetric sides would need ~44,000 probes for even odds — left
/// to the relay).
pub fn role(local: Behaviour, remote: Behaviour) -> Option<Role> {
    let ((lm, lf), (rm, rf)) = (local.class?, remote.class?);
    let ei = Mapping::EndpointIndependent;
    let strict = Filtering::AddressAndPortDependent;
    if lm != ei && rm == ei && rf == strict {
        Some(Role::Spray)
    } else if lm == ei && lf == strict && rm != ei {
        Some(Role::Probe {
            sequential: remote.sequential,
        })
    } else {
        None
    }
}

/// What this side does in an attempt that needs port prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Hard side: side sockets, one check each, toward the peer's public address.
    Spray {
        /// The peer's server-reflexive IPv4 address.
        to: SocketAddr,
    },
    /// Easy side: probe ports of `target`'s IP (within the budget the node core grants).
    Probe {
        /// The peer's server-reflexive IPv4 address (its last observed port).
        target: SocketAddr,
        /// The peer's NAT hands out ports one after the other.
        sequential: bool,
    },
}

/// Our part in an attempt toward a peer whose verified, fresh signal stated `theirs` and
/// these candidates ([`role`]); `None` when the pair needs no prediction or the peer
/// published no server-reflexive IPv4 address (the behaviour is the IPv4 NAT's; over IPv6
/// there is no NAT to predict).
pub fn plan(
    ours: Behaviour,
    theirs: Behaviour,
    candidates: &[super::candidate::Candidate],
) -> Option<Need> {
    let role = role(ours, theirs)?;
    let srflx = candidates
        .iter()
        .find(|c| c.kind == super::candidate::CandidateKind::ServerReflexive && c.addr.is_ipv4())?
        .addr;
    Some(match role {
        Role::Spray => Need::Spray { to: srflx },
        Role::Probe { sequential } => Need::Probe {
            target: srflx,
            sequential,
        },
    })
}

/// Whether the pair's NAT behaviours rule out a direct path: both sides' mappings depend
/// on the destination (symmetric ↔ symmetric, sequential or not: two sides guessing each
/// other's ports need ~44,000 probes for even odds). Such a pair starts on a relay at once
/// and punches in the background (spec/07-relay.md §1.9); an unknown side is never
/// hopeless.
pub fn hopeless(local: Behaviour, remote: Behaviour) -> bool {
    let ei = Mapping::EndpointIndependent;
    matches!((local.class, remote.class), (Some((lm, _)), Some((rm, _))) if lm != ei && rm != ei)
}

/// Whether the first messages of this pair should go through a relay at once while the
/// direct attempt goes on: the pair is [`hopeless`], or only port prediction can find its
/// direct path ([`role`]) — which takes ≈ 0.2 s at the median and seconds at the tail.
/// Punching and prediction continue beside the relayed session, which moves to the direct
/// path when they find it (spec/07-relay.md §1.9). Both sides decide alike: each knows both
/// behaviours from the verified CONNECT signals.
pub fn relay_first(local: Behaviour, remote: Behaviour) -> bool {
    hopeless(local, remote) || role(local, remote).is_some()
}

/// The easy side's probe schedule (spec/05 §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Probes per attempt at most.
    pub budget: u32,
    /// Probes sent together every `interval`.
    pub burst: u32,
    /// Gap between bursts: 10 per 10 ms is 1,000 probes/s, about 0.9 Mbit/s of ~110-byte
    /// checks — little for an uplink, few enough new conntrack entries per second for a
    /// home router, and the whole budget in about 2 s.
    pub interval: Duration,
    /// Toward a sequential NAT, this many ports above the last observed one come first.
    pub sequential_span: u16,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            budget: 2048,
            burst: 10,
            interval: Duration::from_millis(10),
            sequential_span: 512,
        }
    }
}

/// The ports the easy side probes, paced: upward from the last observed port first toward
/// a sequential NAT, then (or at once) random ports never tried before in this attempt.
#[derive(Debug)]
pub struct Prober {
    ip: IpAddr,
    base: u16,
    sequential: bool,
    cfg: ProbeConfig,
    budget: u32,
    sent: u32,
    next: Instant,
    rng: ChaCha8Rng,
    tried: HashSet<u16>,
    stopped: bool,
}

impl Prober {
    /// Probes `target`'s IP (`target`: the hard side's server-reflexive candidate, from a
    /// verified, fresh signal), at most `budget` (≤ `cfg.budget`) times. `seed`: randomness
    /// from the driver.
    pub fn new(
        target: SocketAddr,
        sequential: bool,
        cfg: ProbeConfig,
        budget: u32,
        seed: [u8; 32],
        now: Instant,
    ) -> Prober {
        Prober {
            ip: target.ip(),
            base: target.port(),
            sequential,
            cfg,
            budget: budget.min(cfg.budget),
            sent: 0,
            next: now,
            rng: ChaCha8Rng::from_seed(seed),
            tried: HashSet::new(),
            stopped: false,
        }
    }

    /// The IP probed.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Probes sent so far.
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// No more probes (a pair answered, or the attempt ended).
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Whether probing is over: stopped or the budget spent.
    pub fn done(&self) -> bool {
        self.stopped || self.sent >= self.budget
    }

    /// When the next burst is due; `None` once done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.done()).then_some(self.next)
    }

    /// The addresses to probe now (a burst when due, else none).
    pub fn poll_probes(&mut self, now: Instant) -> Vec<SocketAddr> {
        if self.done() || now < self.next {
            return Vec::new();
        }
        self.next = now + self.cfg.interval;
        let n = self.cfg.burst.min(self.budget - self.sent);
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let port = self.next_port();
            self.tried.insert(port);
            self.sent += 1;
            out.push(SocketAddr::new(self.ip, port));
        }
        out
    }

    fn next_port(&mut self) -> u16 {
        if self.sequential && (self.tried.len() as u16) < self.cfg.sequential_span {
            let span = u32::from(u16::MAX - LOWEST_PORT) + 1;
            let step = self.tried.len() as u32 + 1;
            let off = (u32::from(self.base.max(LOWEST_PORT) - LOWEST_PORT) + step) % span;
            return LOWEST_PORT + off as u16;
        }
        loop {
            let r = (self.rng.next_u32() % (u32::from(u16::MAX - LOWEST_PORT) + 1)) as u16;
            let port = LOWEST_PORT + r;
            // The budget is ≤ 2,048 of 64,512 ports: a few redraws at most.
            if !self.tried.contains(&port) {
                return port;
            }
        }
    }
}

/// Probes a node may send toward one IP per window of the default [`Ledger`] (10 minutes):
/// two full attempts.
pub const PROBES_PER_IP: u32 = 4096;
/// IPs the ledger remembers; a new one beyond gets no budget until entries age out.
pub const LEDGER_IPS: usize = 256;

/// The per-peer probe budget (spec/05 §5.5): at most [`PROBES_PER_IP`] probes toward one
/// IP per window (10 minutes), whatever offers arrive, so the node cannot be made a port
/// scanner.
#[derive(Debug)]
pub struct Ledger {
    window: Duration,
    per_ip: u32,
    max_ips: usize,
    spent: HashMap<IpAddr, (Instant, u32)>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new(Duration::from_secs(600), PROBES_PER_IP, LEDGER_IPS)
    }
}

impl Ledger {
    /// A ledger with these bounds.
    pub fn new(window: Duration, per_ip: u32, max_ips: usize) -> Ledger {
        Ledger {
            window,
            per_ip,
            max_ips,
            spent: HashMap::new(),
        }
    }

    /// Grants up to `want` probes toward `ip` now (and books them): fewer, or none, when
    /// the window's budget is spent or the ledger is full.
    pub fn grant(&mut self, ip: IpAddr, want: u32, now: Instant) -> u32 {
        let window = self.window;
        if !self.spent.contains_key(&ip) && self.spent.len() >= self.max_ips {
            self.spent
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
            if self.spent.len() >= self.max_ips {
                return 0;
            }
        }
        let e = self.spent.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(e.0) >= window {
            *e = (now, 0);
        }
        let n = want.min(self.per_ip.saturating_sub(e.1));
        e.1 += n;
        n
    }

    /// Gives back probes granted but not sent (the attempt ended early).
    pub fn refund(&mut self, ip: IpAddr, n: u32) {
        if let Some(e) = self.spent.get_mut(&ip) {
            e.1 = e.1.saturating_sub(n);
        }
    }

    /// IPs remembered.
    pub fn len(&self) -> usize {
        self.spent.len()
    }

    /// Whether no IP is remembered.
    pub fn is_empty(&self) -> bool {
        self.spent.is_empty()
    }
}

#[cfg(test)]
mod tests;

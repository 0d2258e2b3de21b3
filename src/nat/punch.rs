//! Hole punching (spec/05-nat.md §5), sans-IO: both sides probe every remote candidate at
//! once with authenticated STUN Binding requests (short-term credentials from the CONNECT
//! exchange), answer the other side's probes, learn peer-reflexive candidates from them,
//! keep probing for a while after the first answer, and settle on the best pair that works.
//!
//! All local candidates share the node's one socket, so a pair is just a remote address.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::candidate::{pair_priority, Candidate, CandidateKind};
use super::predict::Prober;
use super::stun::{self, Binding, Credentials, Options, Timers};

/// Probe timing (spec/05 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PunchConfig {
    /// Gap between the first `fast_checks` probes of one pair: the two sides start a
    /// rendezvous round trip apart, and the first probes of the side that starts first are
    /// dropped by the other side's NAT until that side has sent its own.
    pub fast_interval: Duration,
    /// Probes sent `fast_interval` apart before slowing to `interval`.
    pub fast_checks: u32,
    /// Gap between two later probes of one pair.
    pub interval: Duration,
    /// Give up when nothing worked by then.
    pub deadline: Duration,
    /// After the first working pair, keep probing this long for a better one.
    pub settle: Duration,
    /// A pair through a relay settles the attempt no earlier than this after the start
    /// (punching has its few round trips first; spec/07-relay.md §3.4), unless a direct
    /// pair answers.
    pub relay_wait: Duration,
}

impl Default for PunchConfig {
    fn default() -> Self {
        PunchConfig {
            fast_interval: Duration::from_millis(50),
            fast_checks: 5,
            interval: Duration::from_millis(200),
            deadline: Duration::from_secs(10),
            settle: Duration::from_millis(100),
            relay_wait: Duration::from_secs(1),
        }
    }
}

/// Our half and the peer's half of the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PunchCreds {
    /// Our username fragment.
    pub local_ufrag: String,
    /// Our password: the peer's checks are keyed with it.
    pub local_pwd: String,
    /// The peer's username fragment.
    pub remote_ufrag: String,
    /// The peer's password: our checks are keyed with it.
    pub remote_pwd: String,
}

#[derive(Debug)]
struct Pair {
    remote: Candidate,
    priority: u64,
    next: Instant,
    /// Outstanding checks (a new transaction per probe, so one lost answer costs one probe).
    checks: Vec<(Binding, Instant)>,
    sent: u32,
    rtt: Option<Duration>,
    /// Heard only through our own TURN allocation: checked through it too.
    via_relay: bool,
}

/// The pair settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected {
    /// The peer's address to use.
    pub remote: SocketAddr,
    /// What kind of candidate that address was.
    pub kind: CandidateKind,
    /// Round-trip time of the check that proved it.
    pub rtt: Duration,
}

/// How punching ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PunchResult {
    /// A pair works both ways.
    Connected(Selected),
    /// No pair answered before the deadline: a relay is needed.
    Failed,
}

/// One punching attempt with one peer.
#[derive(Debug)]
pub struct Punch {
    creds: PunchCreds,
    controlling: bool,
    cfg: PunchConfig,
    tag: [u8; 4],
    counter: u64,
    pairs: Vec<Pair>,
    start: Instant,
    first_success: Option<Instant>,
    /// When a pair not through a relay first answered.
    first_direct: Option<Instant>,
    /// When a check from the peer first reached us directly (not through our relay): the
    /// pair it came on works inbound, and our triggered check toward it is on its way.
    heard_direct: Option<Instant>,
    /// Datagrams to send: where, what, and whether through our own TURN allocation.
    out: VecDeque<(SocketAddr, Vec<u8>, bool)>,
    result: Option<PunchResult>,
    /// Port prediction's probes, on the easy side (spec/05-nat.md §5.5).
    prober: Option<Prober>,
    /// Port prediction's side sockets, on the hard side: their checks went out.
    spraying: bool,
}

/// How long a pair through a relay does not end an attempt in which port prediction runs
/// (this side probes, or sprays from side sockets): the probes may still find the direct
/// path — a full budget takes ≈ 2 s (spec/05-nat.md §5.5). A relay must never stop a
/// direct attempt (spec/07-relay.md §1.9).
pub const PREDICTION_WINDOW: Duration = Duration::from_millis(2500);

impl Punch {
    /// Starts probing `remote` at `now`. `tag`: 4 random bytes that begin every transaction
    /// ID of this attempt (the driver routes answers by them). `controlling`: the caller,
    /// which will dial QUIC over the selected pair.
    pub fn new(
        creds: PunchCreds,
        remote: &[Candidate],
        controlling: bool,
        tag: [u8; 4],
        cfg: PunchConfig,
        now: Instant,
    ) -> Punch {
        let mut p = Punch {
            creds,
            controlling,
            cfg,
            tag,
            counter: 0,
            pairs: Vec::new(),
            start: now,
            first_success: None,
            first_direct: None,
            heard_direct: None,
            out: VecDeque::new(),
            result: None,
            prober: None,
            spraying: false,
        };
        for c in remote {
            p.add_pair(*c, now);
        }
        p
    }

    /// The transaction-ID prefix of this attempt.
    pub fn tag(&self) -> [u8; 4] {
        self.tag
    }

    /// Our username fragment (incoming checks carry `<ours>:<theirs>`).
    pub fn local_ufrag(&self) -> &str {
        &self.creds.local_ufrag
    }

    fn add_pair(&mut self, remote: Candidate, now: Instant) -> usize {
        if let Some(i) = self.pairs.iter().position(|p| p.remote.addr == remote.addr) {
            return i;
        }
        // Our side of every pair is the one socket; rank pairs by the remote priority.
        let local = Candidate::new(CandidateKind::Host, remote.addr, 65535).priority;
        let (g, d) = if self.controlling {
            (local, remote.priority)
        } else {
            (remote.priority, local)
        };
        self.pairs.push(Pair {
            remote,
            priority: pair_priority(g, d),
            next: now,
            checks: Vec::new(),
            sent: 0,
            rtt: None,
            via_relay: false,
        });
        self.pairs.len() - 1
    }

    fn next_tid(&mut self) -> [u8; 12] {
        self.counter += 1;
        let mut t = [0u8; 12];
        t[..4].copy_from_slice(&self.tag);
        t[4..].copy_from_slice(&self.counter.to_be_bytes());
        t
    }

    /// A check toward `to` under a new transaction: one request, the pair's own schedule
    /// (or none, for a prediction probe) retransmits.
    fn request(&mut self, to: SocketAddr, now: Instant) -> (Binding, Vec<u8>) {
        let tid = self.next_tid();
        let opts = Options {
            timers: Timers {
                rto: self.cfg.deadline,
                rc: 1,
                rm: 1,
            },
            change: stun::Change::Nothing,
            credentials: Some(Credentials {
                username: format!("{}:{}", self.creds.remote_ufrag, self.creds.local_ufrag),
                password: self.creds.remote_pwd.clone(),
            }),
        };
        let mut b = Binding::with_options(to, tid, opts, now);
        let bytes = b
            .poll_transmit(now)
            .map(|(_, r)| r.to_vec())
            .unwrap_or_default();
        (b, bytes)
    }

    fn check(&mut self, i: usize, now: Instant) {
        let (b, bytes) = self.request(self.pairs[i].remote.addr, now);
        let pair = &mut self.pairs[i];
        if !bytes.is_empty() {
            self.out
                .push_back((pair.remote.addr, bytes, pair.via_relay));
        }
        pair.checks.push((b, now));
        pair.sent += 1;
        pair.next = now
            + if pair.sent < self.cfg.fast_checks {
                self.cfg.fast_interval
            } else {
                self.cfg.interval
            };
    }

    /// Port prediction, easy side (spec/05-nat.md §5.5): besides the pairs, checks toward
    /// the ports `prober` picks, until a pair answers or its budget is spent. An answer
    /// comes as the hard side's own check from the port that was hit (learnt as a
    /// peer-reflexive pair like any other).
    pub fn predict(&mut self, prober: Prober) {
        self.prober = Some(prober);
    }

    /// Prediction probes sent so far.
    pub fn predicted_probes(&self) -> u32 {
        self.prober.as_ref().map_or(0, Prober::sent)
    }

    /// Port prediction, hard side: `n` checks toward the pair `to` (added if new, as
    /// server-reflexive), one for each side socket to send; an answer to any of them
    /// proves the pair as the pair's own checks do.
    pub fn spray_checks(&mut self, to: SocketAddr, n: usize, now: Instant) -> Vec<Vec<u8>> {
        let i = self.add_pair(Candidate::new(CandidateKind::ServerReflexive, to, 0), now);
        self.spraying = n > 0;
        (0..n)
            .map(|_| {
                let (b, bytes) = self.request(to, now);
                self.pairs[i].checks.push((b, now));
                bytes
            })
            .collect()
    }

    /// The next datagram to send from the node's socket.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.poll_transmit_via().map(|(to, bytes, _)| (to, bytes))
    }

    /// [`Self::poll_transmit`], and whether the datagram goes through our own TURN
    /// allocation (an answer to a check that came through it, or a check toward a peer
    /// heard only through it).
    pub fn poll_transmit_via(&mut self) -> Option<(SocketAddr, Vec<u8>, bool)> {
        self.out.pop_front()
    }

    /// Runs the probe schedule and the deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.result.is_some() {
            return;
        }
        if let Some(end) = self.settle_at() {
            if now >= end {
                self.select();
                return;
            }
        } else if now >= self.start + self.cfg.deadline {
            self.result = Some(PunchResult::Failed);
            if let Some(p) = &mut self.prober {
                p.stop();
            }
            return;
        }
        for i in 0..self.pairs.len() {
            if now >= self.pairs[i].next {
                self.check(i, now);
            }
        }
        // A direct pair ends the probing; a pair through a relay does not.
        if self.first_direct.is_some() {
            if let Some(p) = &mut self.prober {
                p.stop();
            }
        }
        let probes = self
            .prober
            .as_mut()
            .map(|p| p.poll_probes(now))
            .unwrap_or_default();
        for to in probes {
            let (_, bytes) = self.request(to, now);
            self.out.push_back((to, bytes, false));
        }
    }

    /// When [`handle_timeout`](Punch::handle_timeout) is next due; `None` once ended.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.result.is_some() {
            return None;
        }
        let end = self.settle_at().unwrap_or(self.start + self.cfg.deadline);
        let probe = self.prober.as_ref().and_then(Prober::poll_timeout);
        Some(
            self.pairs
                .iter()
                .map(|p| p.next)
                .chain(probe)
                .fold(end, Instant::min),
        )
    }

    /// Takes a STUN datagram for this attempt: a check from the peer (answered, and its
    /// source learnt as a peer-reflexive candidate) or an answer to one of ours. Returns
    /// whether it was ours to take.
    pub fn handle_stun(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) -> bool {
        self.handle_stun_via(from, bytes, now, false)
    }

    /// [`Self::handle_stun`] for a datagram that came through our own TURN allocation
    /// (`relayed`): a source learnt from it is a `relay` candidate, the lowest priority —
    /// a pair through our relay serves only when no direct pair answers (spec/07-relay.md
    /// §3.4, either side's relay).
    pub fn handle_stun_via(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
        relayed: bool,
    ) -> bool {
        if let Some(user) = stun::request_username(bytes) {
            let expected = format!("{}:{}", self.creds.local_ufrag, self.creds.remote_ufrag);
            if user != expected {
                return false;
            }
            let Some(answer) = stun::respond_authenticated(from, bytes, &self.creds.local_pwd)
            else {
                return false;
            };
            // The answer goes back the way the check came.
            self.out.push_back((from, answer, relayed));
            if !relayed {
                self.heard_direct.get_or_insert(now);
            }
            // The hard side heard a probe: its check from that port follows this one. A
            // check that came through our own TURN allocation says nothing of that: it
            // left the hard side's NAT toward the TURN server, not toward us.
            if let Some(p) = self
                .prober
                .as_mut()
                .filter(|p| !relayed && p.ip() == from.ip())
            {
                p.stop();
            }
            // A triggered check: the peer reached us from `from`; probe it back at once.
            let known = self.pairs.iter().position(|p| p.remote.addr == from);
            match known {
                // Heard directly from an address we knew only through our relay: the
                // pair is direct after all.
                Some(i) if !relayed && self.pairs[i].via_relay => {
                    let prflx = Candidate::new(CandidateKind::PeerReflexive, from, 65535);
                    self.pairs.remove(i);
                    let i = self.add_pair(prflx, now);
                    if self.result.is_none() {
                        self.check(i, now);
                    }
                }
                // A triggered check (RFC 8445 §7.3.1.4) toward a pair not proven yet: the
                // peer's check opened its side, ours goes now rather than on the schedule.
                // (At most one per `fast_interval / 5`, so crossing checks cannot storm.)
                Some(i) => {
                    let pair = &self.pairs[i];
                    let recent = pair.checks.last().is_some_and(|(_, at)| {
                        now.saturating_duration_since(*at) < self.cfg.fast_interval / 5
                    });
                    if self.result.is_none() && pair.rtt.is_none() && !recent {
                        self.check(i, now);
                    }
                }
                None => {
                    let learnt = if relayed {
                        Candidate::new(CandidateKind::Relayed, from, 0)
                    } else {
                        Candidate::new(CandidateKind::PeerReflexive, from, 65535)
                    };
                    let i = self.add_pair(learnt, now);
                    self.pairs[i].via_relay = relayed;
                    if self.result.is_none() {
                        self.check(i, now);
                    }
                }
            }
            return true;
        }
        let Some(tid) = stun::transaction_id(bytes) else {
            return false;
        };
        if tid[..4] != self.tag {
            return false;
        }
        let Some(pair) = self.pairs.iter_mut().find(|p| p.remote.addr == from) else {
            return false;
        };
        let Some((b, sent_at)) = pair
            .checks
            .iter_mut()
            .find(|(b, _)| b.transaction_id() == tid)
        else {
            return false;
        };
        if b.handle_response(from, bytes) && matches!(b.result(), Some(Ok(_))) {
            let rtt = now.saturating_duration_since(*sent_at);
            pair.rtt = Some(pair.rtt.map_or(rtt, |r| r.min(rtt)));
            self.first_success.get_or_insert(now);
            if pair.remote.kind != CandidateKind::Relayed {
                self.first_direct.get_or_insert(now);
            }
        }
        true
    }

    /// The best pair that answered so far (by priority, then RTT), before the attempt
    /// settled: the session can start on it at once and move to the final pair later
    /// (spec/05-nat.md §5.2).
    /// A pair through a relay is the first only where the relay goes first (`relay_wait`
    /// zero: the pair's NAT classes rule out a direct path or leave only port
    /// prediction, spec/07-relay.md §1.9); elsewhere the session starts on it only when
    /// the attempt settles on it (no direct pair answered by then).
    pub fn first_working(&self) -> Option<Selected> {
        self.best(self.cfg.relay_wait.is_zero())
    }

    /// The best pair that answered (by priority, then RTT), relay pairs only if `relayed`.
    fn best(&self, relayed: bool) -> Option<Selected> {
        self.pairs
            .iter()
            .filter(|p| relayed || p.remote.kind != CandidateKind::Relayed)
            .filter_map(|p| p.rtt.map(|rtt| (p, rtt)))
            .max_by_key(|(p, rtt)| (p.priority, std::cmp::Reverse(*rtt)))
            .map(|(p, rtt)| Selected {
                remote: p.remote.addr,
                kind: p.remote.kind,
                rtt,
            })
    }

    /// Whether the pair toward `addr` runs through our own TURN allocation (heard only
    /// through it).
    pub fn via_relay(&self, addr: SocketAddr) -> bool {
        self.pairs
            .iter()
            .any(|p| p.remote.addr == addr && p.via_relay)
    }

    /// When the attempt settles, once a pair answered: `settle` after the first direct
    /// pair; with only relay pairs, `settle` after the first of them but not before
    /// `relay_wait`, nor before [`PREDICTION_WINDOW`] while port prediction runs, nor
    /// before our triggered check toward a peer heard directly had its chance
    /// ([`Self::direct_grace`]): the peer's check that stopped port prediction proves
    /// the direct pair one way, the answer to ours proves it the other.
    fn settle_at(&self) -> Option<Instant> {
        let first = self.first_success?;
        if self.best(false).is_some() {
            return Some(self.first_direct.unwrap_or(first) + self.cfg.settle);
        }
        let predicting = self.prober.as_ref().is_some_and(|p| !p.done()) || self.spraying;
        let until = if predicting {
            self.start + PREDICTION_WINDOW
        } else {
            self.start
        };
        let heard = self
            .heard_direct
            .map_or(self.start, |h| h + self.direct_grace());
        Some(
            (first + self.cfg.settle)
                .max(self.start + self.cfg.relay_wait)
                .max(until)
                .max(heard),
        )
    }

    /// How long a relay pair waits for the answer to a triggered check toward a peer that
    /// reached us directly: `settle`, or two round trips of the relay pair if longer (the
    /// direct path is not longer than the one through a relay).
    fn direct_grace(&self) -> Duration {
        let relay_rtt = self
            .pairs
            .iter()
            .filter(|p| p.remote.kind == CandidateKind::Relayed)
            .filter_map(|p| p.rtt)
            .min()
            .unwrap_or_default();
        self.cfg.settle.max(2 * relay_rtt)
    }

    fn select(&mut self) {
        if let Some(p) = &mut self.prober {
            p.stop();
        }
        self.result = Some(match self.best(true) {
            Some(sel) => PunchResult::Connected(sel),
            None => PunchResult::Failed,
        });
    }

    /// The outcome, once punching ended.
    pub fn result(&self) -> Option<PunchResult> {
        self.result
    }

    /// Probes sent so far, over all pairs.
    pub fn probes_sent(&self) -> u32 {
        self.pairs.iter().map(|p| p.sent).sum()
    }
}

#[cfg(test)]
mod tests;

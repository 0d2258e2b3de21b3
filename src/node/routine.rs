//! The node's routine (spec/06-node.md §1.4): what a node does on its own from start to
//! shutdown, as a sans-IO state machine — join the DHT, fetch what waited in its mailbox,
//! learn its NAT (RFC 5780 discovery, else the bootstrap nodes' STUN answers), decide
//! whether to serve in the DHT, register at rendezvous nodes if it cannot be reached, publish
//! its presence and its KEM key; then, every `network_check`, ask whether its addresses
//! changed, and every `refresh` (or at once after a change) do the round again.
//!
//! The driver (`daemon::routine`) asks [`Routine::poll_action`] what to do, does it and
//! hands the result back with [`Routine::handle`]; between rounds it sleeps until
//! [`Routine::poll_timeout`] and calls [`Routine::handle_timeout`]. One action runs at a
//! time, in the order above. A bootstrap node's routine only joins.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::crypto::Fingerprint;

use super::reach::RelayPolicy;

/// What the routine does and how often.
#[derive(Debug, Clone)]
pub struct RoutineConfig {
    /// The DHT's bootstrap nodes: joined through, asked for STUN answers when no RFC 5780
    /// server answers, registered at as rendezvous nodes.
    pub seeds: Vec<(SocketAddr, Fingerprint)>,
    /// RFC 5780 STUN servers, tried in order.
    pub stun: Vec<SocketAddr>,
    /// A full round (discovery, registration, presence) this often (default 120 s).
    pub refresh: Duration,
    /// Whether our addresses changed is asked this often (default 25 s).
    pub network_check: Duration,
    /// Rendezvous nodes to register at when not reachable (default 2).
    pub rendezvous: usize,
    /// Whether the node may serve in the DHT when reachable (decision 9).
    pub dht_serve: bool,
    /// The user's relay policy: `only` registers even when reachable and never serves.
    pub relay: RelayPolicy,
    /// A messenger node (`dna daemon`): the whole routine. `false` (a bootstrap node): only
    /// join the DHT.
    pub messenger: bool,
}

impl RoutineConfig {
    /// A messenger node's routine with the defaults, joining through `seeds`.
    pub fn messenger(seeds: Vec<(SocketAddr, Fingerprint)>) -> RoutineConfig {
        RoutineConfig {
            seeds,
            stun: Vec::new(),
            refresh: Duration::from_secs(120),
            network_check: Duration::from_secs(25),
            rendezvous: 2,
            dht_serve: true,
            relay: RelayPolicy::Ask,
            messenger: true,
        }
    }
}

/// What the driver is asked to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Join the DHT through the seeds: answer [`Done::Joined`].
    JoinDht,
    /// Fetch our offline mailbox (before anyone can reach us again, spec/09 §6):
    /// [`Done::Ok`].
    FetchMailbox,
    /// RFC 5780 behaviour discovery against `server`: [`Done::Discovered`].
    Discover {
        /// The STUN server.
        server: SocketAddr,
    },
    /// No RFC 5780 server answered: candidates from these servers' STUN answers (the NAT
    /// class stays unknown): [`Done::Gathered`].
    GatherCandidates {
        /// The bootstrap nodes' addresses.
        servers: Vec<SocketAddr>,
    },
    /// Serve in the DHT (`true`) or be a client: [`Done::Ok`].
    ServeDht(bool),
    /// Register at this rendezvous node: [`Done::Registered`].
    Register {
        /// Its address.
        addr: SocketAddr,
        /// Its identity.
        fp: Fingerprint,
    },
    /// Publish our presence record: [`Done::Ok`].
    Announce,
    /// Publish our KEM key record (so others can seal mailbox items to us): [`Done::Ok`].
    PublishKemKey,
    /// The first round is done: the node is ready (no answer).
    Ready,
    /// Ask whether our addresses changed, through `server`: [`Done::Checked`].
    CheckNetwork {
        /// A STUN server.
        server: SocketAddr,
    },
}

/// How an [`Action`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// [`Action::JoinDht`]: the routing table's size (0: joining failed).
    Joined {
        /// Contacts in the routing table.
        table: usize,
    },
    /// [`Action::Discover`]: whether the server answered, and whether our NAT status now
    /// says we are reachable.
    Discovered {
        /// The server answered.
        ok: bool,
        /// Reachable without a rendezvous node.
        reachable: bool,
    },
    /// [`Action::GatherCandidates`]: whether our NAT status now says we are reachable.
    Gathered {
        /// Reachable without a rendezvous node.
        reachable: bool,
    },
    /// [`Action::Register`]: whether the node took the registration.
    Registered {
        /// Registered.
        ok: bool,
    },
    /// [`Action::CheckNetwork`]: whether our addresses changed.
    Checked {
        /// They changed.
        changed: bool,
    },
    /// Any other action ended (its failure is the driver's to log; the routine goes on).
    Ok,
}

/// The routine's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoutineStats {
    /// Rounds (discovery → presence) completed.
    pub rounds: u64,
    /// Network checks that found our addresses changed.
    pub network_changes: u64,
    /// Registrations taken in the last round.
    pub registered: usize,
    /// Whether the first round is done.
    pub ready: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Joining,
    Fetching,
    Discovering(usize),
    Gathering,
    Serving,
    Registering { next: usize },
    Announcing,
    Publishing,
    Ready,
    Checking,
    Idle,
}

/// The routine. See the module documentation.
#[derive(Debug)]
pub struct Routine {
    cfg: RoutineConfig,
    phase: Phase,
    /// The current phase's action was handed out and not answered yet.
    asked: bool,
    /// The DHT's table after joining.
    table: usize,
    /// What the last discovery said.
    reachable: bool,
    /// When the next network check and the next round are due (after the first round).
    next_check: Option<Instant>,
    next_refresh: Option<Instant>,
    stats: RoutineStats,
}

impl Routine {
    /// A routine that starts now.
    pub fn new(cfg: RoutineConfig) -> Routine {
        Routine {
            cfg,
            phase: Phase::Start,
            asked: false,
            table: 0,
            reachable: false,
            next_check: None,
            next_refresh: None,
            stats: RoutineStats::default(),
        }
    }

    /// The next action, if one is due and none is running.
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.phase == Phase::Start {
            self.phase = if self.cfg.seeds.is_empty() {
                self.after_join()
            } else {
                Phase::Joining
            };
        }
        if self.asked {
            return None;
        }
        let action = match self.phase {
            Phase::Start | Phase::Idle => return None,
            Phase::Joining => Action::JoinDht,
            Phase::Fetching => Action::FetchMailbox,
            Phase::Discovering(i) => Action::Discover {
                server: self.cfg.stun[i],
            },
            Phase::Gathering => Action::GatherCandidates {
                servers: self.cfg.seeds.iter().map(|(a, _)| *a).collect(),
            },
            Phase::Serving => Action::ServeDht(
                self.cfg.dht_serve && self.reachable && self.cfg.relay != RelayPolicy::Only,
            ),
            Phase::Registering { next } => {
                let (addr, fp) = self.cfg.seeds[next];
                Action::Register { addr, fp }
            }
            Phase::Announcing => Action::Announce,
            Phase::Publishing => Action::PublishKemKey,
            Phase::Ready => {
                // Told once; nothing to answer.
                self.stats.ready = true;
                self.phase = Phase::Idle;
                return Some(Action::Ready);
            }
            Phase::Checking => Action::CheckNetwork {
                server: self.probe()?,
            },
        };
        self.asked = true;
        Some(action)
    }

    /// The running action ended. A result that does not fit the running action is ignored.
    pub fn handle(&mut self, now: Instant, done: Done) {
        if !self.asked {
            return;
        }
        self.asked = false;
        let fits = matches!(
            (self.phase, done),
            (Phase::Joining, Done::Joined { .. })
                | (Phase::Discovering(_), Done::Discovered { .. })
                | (Phase::Gathering, Done::Gathered { .. })
                | (Phase::Registering { .. }, Done::Registered { .. })
                | (Phase::Checking, Done::Checked { .. })
                | (
                    Phase::Fetching | Phase::Serving | Phase::Announcing | Phase::Publishing,
                    Done::Ok
                )
        );
        if !fits {
            self.asked = true;
            return;
        }
        self.phase = match (self.phase, done) {
            (Phase::Joining, Done::Joined { table }) => {
                self.table = table;
                self.after_join()
            }
            (Phase::Fetching, _) => self.round(),
            (
                Phase::Discovering(_),
                Done::Discovered {
                    ok: true,
                    reachable,
                },
            ) => {
                self.reachable = reachable;
                Phase::Serving
            }
            (Phase::Discovering(i), _) if i + 1 < self.cfg.stun.len() => Phase::Discovering(i + 1),
            (Phase::Discovering(_), _) => self.gather(),
            (Phase::Gathering, Done::Gathered { reachable }) => {
                self.reachable = reachable;
                Phase::Serving
            }
            (Phase::Serving, _) => {
                self.stats.registered = 0;
                self.registering(0)
            }
            (Phase::Registering { next }, Done::Registered { ok }) => {
                self.stats.registered += usize::from(ok);
                self.registering(next + 1)
            }
            (Phase::Announcing, _) => self.round_done(now),
            (Phase::Publishing, _) => Phase::Ready,
            (Phase::Checking, Done::Checked { changed }) => {
                self.stats.network_changes += u64::from(changed);
                self.next_check = Some(now + self.check_every());
                let due = self.next_refresh.is_some_and(|t| now >= t);
                if changed || due {
                    self.round()
                } else {
                    Phase::Idle
                }
            }
            (p, _) => p,
        };
    }

    /// When [`Routine::handle_timeout`] has work next (`None`: nothing more to time).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase != Phase::Idle {
            return None;
        }
        [self.next_check, self.next_refresh]
            .into_iter()
            .flatten()
            .min()
    }

    /// Starts a network check or a round if one is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase != Phase::Idle {
            return;
        }
        if self.next_check.is_some_and(|t| now >= t) {
            if self.probe().is_some() {
                self.phase = Phase::Checking;
                return;
            }
            self.next_check = Some(now + self.check_every());
        }
        if self.next_refresh.is_some_and(|t| now >= t) {
            self.phase = self.round();
        }
    }

    /// The counters.
    pub fn stats(&self) -> RoutineStats {
        self.stats
    }

    fn after_join(&self) -> Phase {
        match (self.cfg.messenger, self.table > 0) {
            (false, _) => Phase::Ready,
            (true, true) => Phase::Fetching,
            (true, false) => self.round(),
        }
    }

    /// A round's first phase.
    fn round(&self) -> Phase {
        if self.cfg.stun.is_empty() {
            self.gather()
        } else {
            Phase::Discovering(0)
        }
    }

    fn gather(&self) -> Phase {
        if self.cfg.seeds.is_empty() {
            // No STUN server at all: host candidates only.
            Phase::Serving
        } else {
            Phase::Gathering
        }
    }

    /// Registration at seed `next`, if more are wanted and left; else the presence.
    fn registering(&self, next: usize) -> Phase {
        let wanted = !self.reachable || self.cfg.relay == RelayPolicy::Only;
        if wanted && self.stats.registered < self.cfg.rendezvous && next < self.cfg.seeds.len() {
            Phase::Registering { next }
        } else {
            Phase::Announcing
        }
    }

    fn round_done(&mut self, now: Instant) -> Phase {
        self.stats.rounds += 1;
        self.next_refresh = Some(now + self.cfg.refresh);
        if self.stats.ready {
            return Phase::Idle;
        }
        self.next_check = Some(now + self.check_every());
        if self.table > 0 {
            Phase::Publishing
        } else {
            Phase::Ready
        }
    }

    fn check_every(&self) -> Duration {
        self.cfg.network_check.min(self.cfg.refresh)
    }

    /// The server network checks go to: the first RFC 5780 server, else the first seed.
    fn probe(&self) -> Option<SocketAddr> {
        self.cfg
            .stun
            .first()
            .copied()
            .or(self.cfg.seeds.first().map(|s| s.0))
    }
}

#[cfg(test)]
mod tests;

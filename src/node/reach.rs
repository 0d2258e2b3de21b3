//! Reaching a peer (spec/05-nat.md §3–§5, spec/06-node.md §1.1): the order of attempts as a
//! sans-IO state machine. The driver asks [`Reach::poll_action`] what to do next, does it
//! (a DHT lookup, a dial, a CONNECT through a rendezvous node, a punching attempt) and hands
//! the result back; the machine decides what follows:
//!
//! 1. Look up the peer's presence record. None: the peer is offline.
//! 2. Reachable (its presence says so): dial its candidates, server-reflexive first (a
//!    public node's host candidates are its server-reflexive ones too). Done: `Direct`.
//! 3. Else send our signed offer through its rendezvous nodes, one after the other, until
//!    one carries an answer; the answer must verify, be from the peer, for our session, and
//!    fresh.
//! 4. Punch toward the answer's candidates (not its relayed ones): the working pair is
//!    dialed (`Punched`).
//! 5. No pair: ask the rendezvous node that carried the answer to relay us (the bundled
//!    relay, spec/07-relay.md §1; the callee asks too) and dial the token it gives
//!    (`Bundled`).
//! 6. No bundled relay: if the answer named a relayed candidate (the peer keeps a TURN
//!    allocation), dial it — the peer's TURN server carries our QUIC to it (`Relayed`,
//!    spec/07-relay.md §3). Else a relay is needed that this node cannot use
//!    (`RelayNeeded`).
//!
//! The user's [`RelayPolicy`] shapes it: `never` stops after step 4; `only` skips steps 2
//! and 4 (the offer then carries no candidates: the peer learns no address of ours).
//!
//! Randomness (the session ID, ufrag and password) and the clock come from the caller.

use std::net::SocketAddr;
use std::time::Duration;

use crate::crypto::Fingerprint;
use crate::nat::candidate::{Candidate, CandidateKind, PresenceInfo};
use crate::nat::punch::{PunchCreds, PunchResult, Selected};
use crate::nat::signal::Signal;

/// Whether relays may carry our traffic (spec/07-relay.md §1.5; seed 003: the user's
/// choice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayPolicy {
    /// Direct when possible, else a relay (the default).
    #[default]
    Auto,
    /// Never through a relay: no direct path means no path.
    Never,
    /// Only through a relay: no direct dial, no punching, no address of ours in offers.
    Only,
    /// Direct when possible; a relay only for peers the user allowed (seed 003: a relay is
    /// used with the user's consent, per contact). The driver resolves it per peer before
    /// reaching — `Auto` for an allowed peer, `Never` for the others (whose reach then ends
    /// `RelayNeeded`) — so [`Reach`] never sees it (spec/07-relay.md §1.5).
    Ask,
}

impl RelayPolicy {
    /// The name used in the config and in `dna status`.
    pub fn name(self) -> &'static str {
        match self {
            RelayPolicy::Auto => "auto",
            RelayPolicy::Never => "never",
            RelayPolicy::Only => "only",
            RelayPolicy::Ask => "ask",
        }
    }

    /// The policy toward one peer: `Ask` becomes `Auto` if the user allowed a relay for
    /// it, else `Never`; the others stay as they are.
    pub fn toward(self, relay_allowed: bool) -> RelayPolicy {
        match self {
            RelayPolicy::Ask if relay_allowed => RelayPolicy::Auto,
            RelayPolicy::Ask => RelayPolicy::Never,
            p => p,
        }
    }
}

impl std::str::FromStr for RelayPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<RelayPolicy, String> {
        match s {
            "auto" => Ok(RelayPolicy::Auto),
            "never" => Ok(RelayPolicy::Never),
            "only" => Ok(RelayPolicy::Only),
            "ask" => Ok(RelayPolicy::Ask),
            other => Err(format!("relay policy {other:?}: ask, auto, never or only")),
        }
    }
}

/// How a peer was reached (or why not directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reached {
    /// The peer is directly reachable; QUIC dials it at `addr`.
    Direct {
        /// The address dialed first.
        addr: SocketAddr,
        /// Its candidate kind (host for a public node, server-reflexive behind a full cone).
        kind: CandidateKind,
    },
    /// Hole punching found a working pair; QUIC dials it.
    Punched {
        /// The peer's address on the pair.
        addr: SocketAddr,
        /// The kind of the peer's candidate (peer-reflexive for a symmetric NAT).
        kind: CandidateKind,
    },
    /// No direct path; a rendezvous node's bundled relay carries the session: QUIC dials
    /// the peer's token there.
    Bundled {
        /// The relay node.
        relay: SocketAddr,
        /// The peer's token address at the relay.
        token: SocketAddr,
    },
    /// No direct path; the peer's TURN allocation relays: QUIC dials its relayed address.
    Relayed {
        /// The peer's relayed candidate.
        addr: SocketAddr,
    },
    /// No direct path and no relayed candidate from the peer: a relay is needed.
    RelayNeeded,
}

/// Why reaching a peer stopped before a path was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReachFailure {
    /// The peer has no presence record: offline.
    #[error("the peer has no presence record (offline)")]
    Offline,
    /// Its presence value did not decode, or names nothing to dial.
    #[error("bad presence value: {0}")]
    BadPresence(String),
    /// Talking to a rendezvous node failed (the last one tried), or none is named.
    #[error("rendezvous: {0}")]
    Rendezvous(&'static str),
    /// The rendezvous node refused the CONNECT.
    #[error("CONNECT refused: {0}")]
    ConnectRefused(&'static str),
    /// The callee's answer did not verify.
    #[error("bad CONNECT answer: {0}")]
    BadAnswer(String),
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Look the peer's presence record up; answer with [`Reach::handle_presence`].
    FindPresence,
    /// Send our signed offer through this rendezvous node; answer with
    /// [`Reach::handle_offer`].
    Offer {
        /// The rendezvous node's address and fingerprint.
        via: (SocketAddr, Fingerprint),
    },
    /// Punch toward the peer's candidates with these credentials; answer with
    /// [`Reach::handle_punch`].
    Punch {
        /// Ours and the peer's ufrag and password.
        creds: PunchCreds,
        /// The peer's candidates from its answer.
        candidates: Vec<Candidate>,
        /// The peer's NAT behaviour from its answer (port prediction, spec/05 §5.5).
        nat: crate::nat::predict::Behaviour,
        /// How long punching runs alone: past it without a result, call
        /// [`Reach::handle_punch_slow`] ([`answer::relay_wait`]; zero where the pair's
        /// behaviours leave only prediction or nothing).
        relay_wait: Duration,
    },
    /// Ask this rendezvous node to relay us to the peer; answer with
    /// [`Reach::handle_relay`].
    Relay {
        /// The relay node's address and fingerprint.
        via: (SocketAddr, Fingerprint),
    },
    /// Dial the peer at these addresses (keep the connection up).
    Dial {
        /// Where, in order.
        addrs: Vec<SocketAddr>,
    },
    /// Finished.
    Done(Result<Reached, ReachFailure>),
}

#[derive(Debug)]
enum State {
    /// The lookup is to be asked for.
    Start,
    /// Waiting for the lookup.
    Finding,
    /// Offers through the rendezvous nodes, the next one at `next`.
    Offering {
        via: Vec<(SocketAddr, Fingerprint)>,
        next: usize,
        last: ReachFailure,
    },
    /// Waiting for the offer's answer.
    Offered {
        via: Vec<(SocketAddr, Fingerprint)>,
        next: usize,
    },
    /// Waiting for the punching attempt; the peer's relayed candidate, if it named one,
    /// the rendezvous node that carried the answer, and whether its relay refused already.
    Punching {
        relay: Option<SocketAddr>,
        via: (SocketAddr, Fingerprint),
        asked: bool,
    },
    /// Waiting for the bundled relay's grant; `punching`: the punching attempt goes on
    /// (its result may still come first).
    Relaying {
        relay: Option<SocketAddr>,
        via: (SocketAddr, Fingerprint),
        punching: bool,
    },
    /// Nothing more to do.
    Finished,
}

/// One attempt to reach one peer.
#[derive(Debug)]
pub struct Reach {
    me: Fingerprint,
    peer: Fingerprint,
    session: [u8; 8],
    ufrag: String,
    pwd: String,
    policy: RelayPolicy,
    state: State,
    out: Vec<Action>,
    peer_relay: Option<SocketAddr>,
    /// Our NAT behaviour as our offer states it, and the configured `relay_after`.
    nat: crate::nat::predict::Behaviour,
    relay_after: Duration,
}

impl Reach {
    /// An attempt by `me` to reach `peer`, with the offer's session ID and our ufrag and
    /// password (random, from the caller).
    pub fn new(
        me: Fingerprint,
        peer: Fingerprint,
        session: [u8; 8],
        ufrag: String,
        pwd: String,
    ) -> Reach {
        Reach {
            me,
            peer,
            session,
            ufrag,
            pwd,
            policy: RelayPolicy::Auto,
            state: State::Start,
            out: Vec::new(),
            peer_relay: None,
            nat: crate::nat::predict::Behaviour::UNKNOWN,
            relay_after: Duration::from_secs(1),
        }
    }

    /// Our NAT behaviour as our offer states it, and how long punching runs alone before
    /// the relay is asked when the pair could punch (default: unknown, 1 s).
    pub fn with_timing(
        mut self,
        nat: crate::nat::predict::Behaviour,
        relay_after: Duration,
    ) -> Reach {
        self.nat = nat;
        self.relay_after = relay_after;
        self
    }

    /// The peer's TURN relayed candidate from its answer, if it named one: a pair or a
    /// dial at it runs through the peer's allocation.
    pub fn peer_relay(&self) -> Option<SocketAddr> {
        self.peer_relay
    }

    /// Follows this relay policy (default `auto`).
    pub fn with_policy(mut self, policy: RelayPolicy) -> Reach {
        // `Ask` unresolved: no consent known, so no relay.
        self.policy = policy.toward(false);
        self
    }

    /// The relay policy followed.
    pub fn policy(&self) -> RelayPolicy {
        self.policy
    }

    /// The offer's session ID.
    pub fn session(&self) -> [u8; 8] {
        self.session
    }

    /// Our ufrag and password, for the offer.
    pub fn credentials(&self) -> (&str, &str) {
        (&self.ufrag, &self.pwd)
    }

    /// What to do next; `None` while the last action's result is awaited.
    pub fn poll_action(&mut self) -> Option<Action> {
        if !self.out.is_empty() {
            return Some(self.out.remove(0));
        }
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Start => {
                self.state = State::Finding;
                Some(Action::FindPresence)
            }
            State::Offering { via, next, last } => match via.get(next).copied() {
                Some(v) => {
                    self.state = State::Offered {
                        via,
                        next: next + 1,
                    };
                    Some(Action::Offer { via: v })
                }
                None => Some(Action::Done(Err(last))),
            },
            other => {
                self.state = other;
                None
            }
        }
    }

    /// The lookup's result: the peer's presence value (`None`: no record), decoded or not.
    pub fn handle_presence(&mut self, presence: Option<Result<PresenceInfo, String>>) {
        if !matches!(self.state, State::Finding) {
            return;
        }
        let info = match presence {
            None => return self.finish(Err(ReachFailure::Offline)),
            Some(Err(e)) => return self.finish(Err(ReachFailure::BadPresence(e))),
            Some(Ok(info)) => info,
        };
        if info.reachable && self.policy != RelayPolicy::Only {
            let mut cands = info.candidates;
            // A reachable peer needs no relay.
            cands.retain(|c| c.kind != CandidateKind::Relayed);
            cands.sort_by_key(|c| std::cmp::Reverse(c.kind == CandidateKind::ServerReflexive));
            let Some(first) = cands.first().copied() else {
                return self.finish(Err(ReachFailure::BadPresence("no candidates".into())));
            };
            self.out.push(Action::Dial {
                addrs: cands.iter().map(|c| c.addr).collect(),
            });
            return self.finish(Ok(Reached::Direct {
                addr: first.addr,
                kind: first.kind,
            }));
        }
        self.state = State::Offering {
            via: info.rendezvous,
            next: 0,
            last: ReachFailure::Rendezvous("the peer names no rendezvous node"),
        };
    }

    /// The offer's outcome through the rendezvous node asked last: the answer's bytes, or
    /// why there is none (then the next rendezvous node is tried). `now_ms`: the wall clock,
    /// for the answer's freshness.
    pub fn handle_offer(&mut self, now_ms: u64, answer: Result<Vec<u8>, ReachFailure>) {
        let State::Offered { via, next } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return;
        };
        let Some(answered_by) = next.checked_sub(1).and_then(|i| via.get(i)).copied() else {
            return self.finish(Err(ReachFailure::Rendezvous("no rendezvous node asked")));
        };
        let bytes = match answer {
            Ok(b) => b,
            Err(last) => {
                self.state = State::Offering { via, next, last };
                return;
            }
        };
        let answer = match Signal::verify(&bytes) {
            Ok(a) => a,
            Err(e) => return self.finish(Err(ReachFailure::BadAnswer(e.to_string()))),
        };
        if let Err(e) = answer.check_answer(&self.me, &self.peer, &self.session, now_ms) {
            return self.finish(Err(ReachFailure::BadAnswer(e.to_string())));
        }
        // Checks toward a relayed candidate would only find the relay: it comes last.
        let (relayed, direct): (Vec<Candidate>, Vec<Candidate>) = answer
            .candidates
            .into_iter()
            .partition(|c| c.kind == CandidateKind::Relayed);
        let relay = relayed.first().map(|c| c.addr);
        self.peer_relay = relay;
        if direct.is_empty() && self.policy == RelayPolicy::Never {
            return self.finish(Ok(Reached::RelayNeeded));
        }
        // `only`: no punching, the peer must not learn our addresses. No direct candidate
        // (a relay-only peer): nothing to punch toward, and the peer asked the relay already.
        if self.policy == RelayPolicy::Only || direct.is_empty() {
            self.state = State::Relaying {
                relay,
                via: answered_by,
                punching: false,
            };
            self.out.push(Action::Relay { via: answered_by });
            return;
        }
        self.state = State::Punching {
            relay,
            via: answered_by,
            asked: false,
        };
        self.out.push(Action::Punch {
            relay_wait: answer::relay_wait(self.nat, answer.nat, self.relay_after),
            nat: answer.nat,
            creds: PunchCreds {
                local_ufrag: self.ufrag.clone(),
                local_pwd: self.pwd.clone(),
                remote_ufrag: answer.ufrag,
                remote_pwd: answer.pwd,
            },
            // The relayed candidates last (lowest priority): a pair through the peer's
            // allocation serves within the punching when no direct pair answers
            // (spec/07-relay.md §3.4).
            candidates: direct.into_iter().chain(relayed).collect(),
        });
    }

    /// Punching has had its few round trips (`relay_after`) without a result: with the
    /// policy `auto`, ask the bundled relay now while punching goes on (spec/07-relay.md
    /// §1.9). If a relayed session comes first, the driver moves it to the punched path
    /// when punching succeeds later.
    pub fn handle_punch_slow(&mut self) {
        let State::Punching {
            relay,
            via,
            asked: false,
        } = self.state
        else {
            return;
        };
        if self.policy != RelayPolicy::Auto {
            return;
        }
        self.state = State::Relaying {
            relay,
            via,
            punching: true,
        };
        self.out.push(Action::Relay { via });
    }

    /// The first pair that answered, before the attempt settled (spec/05-nat.md §5.2):
    /// the session starts on it at once, dialed at `dial` (a local alias the driver can
    /// move to the settled pair later); reported as `Punched` at the pair's address.
    pub fn handle_punched_at(&mut self, sel: Selected, dial: SocketAddr) {
        if !matches!(
            self.state,
            State::Punching { .. } | State::Relaying { punching: true, .. }
        ) {
            return;
        }
        self.out.push(Action::Dial { addrs: vec![dial] });
        let kind = self.kind_of(&sel);
        self.finish(Ok(Reached::Punched {
            addr: sel.remote,
            kind,
        }));
    }

    /// The kind of the peer's side of a pair: `relay` when it is the peer's relayed
    /// candidate — a peer whose network lets no UDP out publishes its TURN allocation as
    /// its reflexive address too, and punching toward it works (spec/07-relay.md §2.11).
    fn kind_of(&self, sel: &Selected) -> CandidateKind {
        let relay = match self.state {
            State::Punching { relay, .. } | State::Relaying { relay, .. } => relay,
            _ => None,
        };
        if relay == Some(sel.remote) {
            CandidateKind::Relayed
        } else {
            sel.kind
        }
    }

    /// The punching attempt's result.
    pub fn handle_punch(&mut self, result: PunchResult) {
        let (relay, via, asked) = match self.state {
            State::Punching { relay, via, asked } => (relay, via, asked),
            State::Relaying {
                relay,
                via,
                punching: true,
            } => {
                if result == PunchResult::Failed {
                    // The relay's answer decides now.
                    self.state = State::Relaying {
                        relay,
                        via,
                        punching: false,
                    };
                    return;
                }
                (relay, via, false)
            }
            _ => return,
        };
        match result {
            PunchResult::Connected(sel) => {
                self.out.push(Action::Dial {
                    addrs: vec![sel.remote],
                });
                let kind = self.kind_of(&sel);
                self.finish(Ok(Reached::Punched {
                    addr: sel.remote,
                    kind,
                }));
            }
            PunchResult::Failed if self.policy == RelayPolicy::Never => {
                self.finish(Ok(Reached::RelayNeeded))
            }
            PunchResult::Failed if asked => self.fall_back(relay),
            PunchResult::Failed => {
                self.state = State::Relaying {
                    relay,
                    via,
                    punching: false,
                };
                self.out.push(Action::Relay { via });
            }
        }
    }

    /// No direct path and no bundled relay: the peer's TURN allocation, if it named one.
    fn fall_back(&mut self, turn: Option<SocketAddr>) {
        match turn {
            Some(addr) => {
                self.out.push(Action::Dial { addrs: vec![addr] });
                self.finish(Ok(Reached::Relayed { addr }));
            }
            None => self.finish(Ok(Reached::RelayNeeded)),
        }
    }

    /// The bundled relay's answer: the peer's token there, or why there is none (then the
    /// peer's TURN relayed candidate, if it named one).
    pub fn handle_relay(&mut self, token: Result<SocketAddr, ReachFailure>) {
        let State::Relaying {
            relay,
            via,
            punching,
        } = self.state
        else {
            return;
        };
        match token {
            Ok(token) => {
                self.out.push(Action::Dial { addrs: vec![token] });
                self.finish(Ok(Reached::Bundled {
                    relay: via.0,
                    token,
                }));
            }
            // Punching goes on: its result decides.
            Err(_) if punching => {
                self.state = State::Punching {
                    relay,
                    via,
                    asked: true,
                }
            }
            Err(_) => self.fall_back(relay),
        }
    }

    fn finish(&mut self, r: Result<Reached, ReachFailure>) {
        self.state = State::Finished;
        self.out.push(Action::Done(r));
    }
}

pub mod answer;

#[cfg(test)]
mod tests;

//! An iterative Kademlia lookup as a pure state machine (spec/04-dht.md §3), shaped like
//! libp2p's `ClosestPeersIter`: [`Lookup::next`] names the next node to ask (at most α in
//! flight), [`Lookup::on_response`] and [`Lookup::on_failure`] feed answers back, and the
//! lookup is finished when the k closest nodes it knows have all answered.
//!
//! "Rounds" count generations: the seeds are generation 0, nodes learned from a
//! generation-g answer are g + 1; a lookup's rounds are the highest generation it asked, + 1.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::contact::{Contact, Distance};
use crate::crypto::NodeId;

/// Lookup parameters.
#[derive(Debug, Clone, Copy)]
pub struct LookupConfig {
    /// Parallel requests (default 3).
    pub alpha: usize,
    /// Result size (default 20).
    pub k: usize,
    /// A request unanswered for this long counts as failed (default 2 s).
    pub request_timeout: Duration,
}

impl Default for LookupConfig {
    fn default() -> Self {
        LookupConfig {
            alpha: 3,
            k: 20,
            request_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    InFlight(Instant),
    Answered,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    contact: Contact,
    state: State,
    generation: u32,
}

/// One lookup for the nodes closest to a target.
#[derive(Debug, Clone)]
pub struct Lookup {
    target: NodeId,
    cfg: LookupConfig,
    candidates: BTreeMap<Distance, Candidate>,
    in_flight: usize,
    requests: u32,
    max_generation: u32,
    started: Instant,
}

impl Lookup {
    /// A lookup for `target` starting from `seeds` (typically the routing table's closest).
    pub fn new(
        target: NodeId,
        seeds: impl IntoIterator<Item = Contact>,
        cfg: LookupConfig,
        now: Instant,
    ) -> Lookup {
        let mut l = Lookup {
            target,
            cfg,
            candidates: BTreeMap::new(),
            in_flight: 0,
            requests: 0,
            max_generation: 0,
            started: now,
        };
        for s in seeds {
            l.add(s, 0);
        }
        l
    }

    fn add(&mut self, contact: Contact, generation: u32) {
        let d = Distance::between(&self.target, &contact.id);
        self.candidates.entry(d).or_insert(Candidate {
            contact,
            state: State::Waiting,
            generation,
        });
        // Bound memory: far candidates that were never asked are dropped.
        let cap = self.cfg.k * 8;
        while self.candidates.len() > cap {
            let Some((&far, c)) = self.candidates.iter().next_back() else {
                break;
            };
            if c.state != State::Waiting {
                break;
            }
            self.candidates.remove(&far);
        }
    }

    /// The target.
    pub fn target(&self) -> NodeId {
        self.target
    }

    /// The next node to ask, if the lookup may send now: the closest not yet asked among
    /// the k closest still standing, while fewer than α requests are in flight. Requests
    /// older than the timeout are failed first.
    pub fn next(&mut self, now: Instant) -> Option<Contact> {
        self.expire(now);
        if self.in_flight >= self.cfg.alpha {
            return None;
        }
        let k = self.cfg.k;
        let pick = self
            .candidates
            .values_mut()
            .filter(|c| c.state != State::Failed)
            .take(k)
            .find(|c| c.state == State::Waiting)?;
        pick.state = State::InFlight(now);
        self.max_generation = self.max_generation.max(pick.generation);
        self.in_flight += 1;
        self.requests += 1;
        Some(pick.contact)
    }

    fn expire(&mut self, now: Instant) {
        let timeout = self.cfg.request_timeout;
        for c in self.candidates.values_mut() {
            if let State::InFlight(at) = c.state {
                if now >= at + timeout {
                    c.state = State::Failed;
                    self.in_flight -= 1;
                }
            }
        }
    }

    /// `from` answered with `closer` nodes. A late answer (after a timeout) still counts.
    pub fn on_response(&mut self, from: &NodeId, closer: impl IntoIterator<Item = Contact>) {
        let d = Distance::between(&self.target, from);
        let Some(c) = self.candidates.get_mut(&d) else {
            return;
        };
        let generation = c.generation;
        let was_in_flight = matches!(c.state, State::InFlight(_));
        c.state = State::Answered;
        if was_in_flight {
            self.in_flight -= 1;
        }
        for n in closer {
            self.add(n, generation + 1);
        }
    }

    /// The request to `from` failed.
    pub fn on_failure(&mut self, from: &NodeId) {
        let d = Distance::between(&self.target, from);
        let Some(c) = self.candidates.get_mut(&d) else {
            return;
        };
        if let State::InFlight(_) = c.state {
            c.state = State::Failed;
            self.in_flight -= 1;
        }
    }

    /// Whether the k closest standing candidates have all answered (or none is left).
    pub fn is_finished(&self) -> bool {
        self.candidates
            .values()
            .filter(|c| c.state != State::Failed)
            .take(self.cfg.k)
            .all(|c| c.state == State::Answered)
    }

    /// The k closest nodes that answered, nearest first.
    pub fn closest(&self) -> Vec<Contact> {
        self.candidates
            .values()
            .filter(|c| c.state == State::Answered)
            .take(self.cfg.k)
            .map(|c| c.contact)
            .collect()
    }

    /// When the oldest request in flight times out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.candidates
            .values()
            .filter_map(|c| match c.state {
                State::InFlight(at) => Some(at + self.cfg.request_timeout),
                _ => None,
            })
            .min()
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// Rounds so far (see the module doc).
    pub fn rounds(&self) -> u32 {
        if self.requests == 0 {
            0
        } else {
            self.max_generation + 1
        }
    }

    /// When the lookup started.
    pub fn started(&self) -> Instant {
        self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> Contact {
        let mut id = [0u8; 20];
        id[0] = n;
        Contact {
            id: NodeId(id),
            addr: format!("10.0.{n}.1:1").parse().unwrap(),
        }
    }

    #[allow(clippy::disallowed_methods)] // a test clock's starting point
    fn now() -> Instant {
        Instant::now()
    }

    fn cfg() -> LookupConfig {
        LookupConfig {
            alpha: 2,
            k: 3,
            request_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn asks_alpha_at_a_time_closest_first_and_finishes_when_k_closest_answered() {
        let t0 = now();
        let target = node(0).id;
        let mut l = Lookup::new(target, [node(8), node(4), node(6)], cfg(), t0);
        assert_eq!(l.next(t0), Some(node(4)));
        assert_eq!(l.next(t0), Some(node(6)));
        assert_eq!(l.next(t0), None, "α = 2 in flight");
        l.on_response(&node(4).id, [node(1), node(2)]);
        assert_eq!(l.next(t0), Some(node(1)), "closer nodes first");
        l.on_response(&node(6).id, []);
        assert_eq!(l.next(t0), Some(node(2)));
        assert!(!l.is_finished());
        l.on_response(&node(1).id, []);
        l.on_response(&node(2).id, []);
        // k = 3 closest standing: 1, 2, 4 — all answered; 6 and 8 do not matter.
        assert!(l.is_finished());
        assert_eq!(l.closest(), vec![node(1), node(2), node(4)]);
        assert_eq!(l.requests(), 4);
        assert_eq!(l.rounds(), 2);
    }

    #[test]
    fn failures_and_timeouts_let_farther_nodes_in() {
        let t0 = now();
        let target = node(0).id;
        let mut l = Lookup::new(target, [node(1), node(2), node(3), node(4)], cfg(), t0);
        assert_eq!(l.next(t0), Some(node(1)));
        assert_eq!(l.next(t0), Some(node(2)));
        l.on_failure(&node(1).id);
        assert_eq!(l.next(t0), Some(node(3)));
        // node 2 times out.
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.next(t1), Some(node(4)));
        l.on_response(&node(3).id, []);
        l.on_response(&node(4).id, []);
        assert!(l.is_finished());
        assert_eq!(l.closest(), vec![node(3), node(4)]);
    }

    #[test]
    fn a_late_answer_after_timeout_still_counts_and_nothing_underflows() {
        let t0 = now();
        let mut l = Lookup::new(node(0).id, [node(1)], cfg(), t0);
        l.next(t0);
        assert_eq!(l.next(t0 + Duration::from_secs(2)), None);
        l.on_response(&node(1).id, [node(2)]);
        l.on_failure(&node(1).id);
        assert_eq!(l.next(t0 + Duration::from_secs(2)), Some(node(2)));
    }
}

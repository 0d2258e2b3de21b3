//! Re-reaching peers that have messages waiting (spec/06-node.md §3.5), sans-IO.
//!
//! A peer with messages waiting and no live connection is reached again (DHT lookup,
//! CONNECT, punching: one "reach") on a schedule of its own — 1 s, doubling to 30 s
//! (seed 004's reconnect backoff) — and the schedule starts over the moment the peer is
//! *heard*: it connected to us, or its presence record came to this node. Across all peers
//! the work is bounded twice: at most [`RetryConfig::concurrent`] reaches run at once, and
//! at most [`RetryConfig::per_minute`] start in a minute (a token bucket, the burst one
//! minute's worth). A peer that was heard goes to the front of the line, needs no token and
//! has [`HEARD_SLOTS`] reaches of its own beyond the bound, so one that comes back is
//! reached at once however many others wait, while 1,000 offline contacts cost at most
//! `per_minute` lookups a minute (after the first minute's burst), not one each every few
//! seconds.
//!
//! The schedule is told the set of waiting peers ([`Retry::sync`]), hands out peers to
//! reach ([`Retry::poll_reach`]) and hears how each attempt ended ([`Retry::finished`]);
//! [`Retry::poll_timeout`] says when the next one is due.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::crypto::Fingerprint;

/// Reaches beyond [`RetryConfig::concurrent`] that peers just heard may use.
pub const HEARD_SLOTS: usize = 4;
/// Reaches of a peer just heard that go before everyone else's.
pub const HEARD_ATTEMPTS: u8 = 3;

/// The schedule's timers and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// The first delay after a failed reach; it doubles after each failure.
    pub initial: Duration,
    /// The longest delay between two reaches of one peer.
    pub max: Duration,
    /// Reaches running at once, at most (at least 1).
    pub concurrent: usize,
    /// Reaches started per minute over all peers, at most (at least 1).
    pub per_minute: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            concurrent: 8,
            per_minute: 120,
        }
    }
}

/// How a reach ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A path was found (the connection follows; the peer leaves the schedule when it is up).
    Reached,
    /// Not found, or no path: wait the backoff, then again.
    Failed,
    /// Only a relay could carry it and none may (`relay = "ask"` without the user's
    /// consent, or `never`): a failure, remembered until a reach finds a path.
    RelayNeeded,
}

/// Counters for `dna status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryStats {
    /// Peers waiting to be reached.
    pub waiting: usize,
    /// Reaches running.
    pub running: usize,
    /// Reaches started since the start.
    pub started: u64,
    /// Times a waiting peer was heard (it connected, or its presence came) and moved up.
    pub heard: u64,
    /// Waiting peers whose last reach ended [`Attempt::RelayNeeded`].
    pub relay_needed: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When it is due (its key in the queue).
    due: Instant,
    /// The delay after the next failure.
    backoff: Duration,
    /// Reaches left at the front of the line since it was heard (0: in line by due time).
    front: u8,
    /// Heard while a reach ran: if that reach fails, again at once.
    rerun: bool,
    /// The last reach ended [`Attempt::RelayNeeded`].
    relay_needed: bool,
}

impl Entry {
    fn key(&self, peer: Fingerprint) -> (bool, Instant, Fingerprint) {
        (self.front == 0, self.due, peer)
    }
}

/// The re-reach schedule.
#[derive(Debug)]
pub struct Retry {
    cfg: RetryConfig,
    peers: HashMap<Fingerprint, Entry>,
    /// (not heard, due, peer): `false` sorts first, so peers heard go before all others.
    queue: BTreeSet<(bool, Instant, Fingerprint)>,
    running: HashSet<Fingerprint>,
    /// The waiting peers whose entry says `relay_needed`.
    needs_relay: BTreeSet<Fingerprint>,
    tokens: f64,
    refilled: Option<Instant>,
    stats: RetryStats,
}

impl Retry {
    /// An empty schedule.
    pub fn new(cfg: RetryConfig) -> Retry {
        let cfg = RetryConfig {
            concurrent: cfg.concurrent.max(1),
            per_minute: cfg.per_minute.max(1),
            max: cfg.max.max(cfg.initial),
            ..cfg
        };
        Retry {
            tokens: f64::from(cfg.per_minute),
            cfg,
            peers: HashMap::new(),
            queue: BTreeSet::new(),
            running: HashSet::new(),
            needs_relay: BTreeSet::new(),
            refilled: None,
            stats: RetryStats::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> RetryConfig {
        self.cfg
    }

    fn enqueue(&mut self, peer: Fingerprint, e: Entry) {
        if e.relay_needed {
            self.needs_relay.insert(peer);
        } else {
            self.needs_relay.remove(&peer);
        }
        if let Some(old) = self.peers.insert(peer, e) {
            self.queue.remove(&old.key(peer));
        }
        if !self.running.contains(&peer) {
            self.queue.insert(e.key(peer));
        }
    }

    /// The peers that have messages waiting and no connection, now. New ones are due at
    /// once; ones no longer waiting leave the schedule (their backoff is forgotten).
    pub fn sync(&mut self, now: Instant, waiting: impl IntoIterator<Item = Fingerprint>) {
        let waiting: HashSet<Fingerprint> = waiting.into_iter().collect();
        let gone: Vec<Fingerprint> = self
            .peers
            .keys()
            .filter(|p| !waiting.contains(p))
            .copied()
            .collect();
        for peer in gone {
            if let Some(e) = self.peers.remove(&peer) {
                self.queue.remove(&e.key(peer));
            }
            self.needs_relay.remove(&peer);
        }
        for peer in waiting {
            if !self.peers.contains_key(&peer) {
                let e = Entry {
                    due: now,
                    backoff: self.cfg.initial,
                    front: 0,
                    rerun: false,
                    relay_needed: false,
                };
                self.enqueue(peer, e);
            }
        }
    }

    /// `peer` was heard: it connected to us, or its presence record reached this node. If
    /// it is waiting, its backoff starts over and its next [`HEARD_ATTEMPTS`] reaches go
    /// before everyone else's (the first may race the news: the record may not have
    /// reached the other storing nodes yet).
    pub fn heard(&mut self, now: Instant, peer: Fingerprint) {
        let Some(old) = self.peers.get(&peer).copied() else {
            return;
        };
        self.stats.heard += 1;
        self.enqueue(
            peer,
            Entry {
                due: now,
                backoff: self.cfg.initial,
                front: HEARD_ATTEMPTS,
                rerun: self.running.contains(&peer),
                relay_needed: old.relay_needed,
            },
        );
    }

    fn refill(&mut self, now: Instant) {
        let per_minute = f64::from(self.cfg.per_minute);
        if let Some(last) = self.refilled {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * per_minute / 60.0).min(per_minute);
        }
        self.refilled = Some(now);
    }

    /// The next peer to reach now, if one is due, a reach may start and a token is left.
    /// The caller reaches it and reports [`Retry::finished`].
    pub fn poll_reach(&mut self, now: Instant) -> Option<Fingerprint> {
        let &(not_heard, due, peer) = self.queue.first()?;
        if due > now || self.running.len() >= self.slots(not_heard) {
            return None;
        }
        self.refill(now);
        if not_heard && self.tokens < 1.0 {
            return None;
        }
        // A heard peer goes even with no token left (it was heard: it is worth one lookup).
        self.tokens = (self.tokens - 1.0).max(0.0);
        self.queue.remove(&(not_heard, due, peer));
        if let Some(e) = self.peers.get_mut(&peer) {
            e.rerun = false;
        }
        self.running.insert(peer);
        self.stats.started += 1;
        Some(peer)
    }

    /// How the reach of `peer` ended. A failed one waits its backoff, which then doubles.
    pub fn finished(&mut self, now: Instant, peer: Fingerprint, how: Attempt) {
        if !self.running.remove(&peer) {
            return;
        }
        let Some(e) = self.peers.get(&peer).copied() else {
            return;
        };
        let front = e.front.saturating_sub(1);
        let next = match how {
            // The connection is on its way; if it does not come, try again soon.
            Attempt::Reached => Entry {
                due: now + self.cfg.initial,
                backoff: self.cfg.initial,
                front,
                rerun: false,
                relay_needed: false,
            },
            // Heard while the reach ran: the news is newer than the failure.
            Attempt::Failed | Attempt::RelayNeeded if e.rerun => Entry {
                due: now,
                rerun: false,
                relay_needed: how == Attempt::RelayNeeded,
                ..e
            },
            Attempt::Failed | Attempt::RelayNeeded => Entry {
                due: now + e.backoff,
                backoff: (e.backoff * 2).min(self.cfg.max),
                front,
                rerun: false,
                relay_needed: how == Attempt::RelayNeeded,
            },
        };
        self.enqueue(peer, next);
    }

    /// When [`Retry::poll_reach`] may next return a peer (`None`: nothing waits, or every
    /// slot is taken until a reach finishes).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let &(not_heard, due, _) = self.queue.first()?;
        if self.running.len() >= self.slots(not_heard) {
            return None;
        }
        if !not_heard || self.tokens >= 1.0 {
            return Some(due);
        }
        let per_minute = f64::from(self.cfg.per_minute);
        let wait = Duration::from_secs_f64((1.0 - self.tokens) * 60.0 / per_minute);
        let at = self.refilled.map_or(due, |r| r + wait);
        Some(due.max(at))
    }

    /// Reaches that may run at once when the first in line is (not) heard: a heard peer
    /// has [`HEARD_SLOTS`] more, so a line of slow, hopeless reaches never holds it back.
    fn slots(&self, not_heard: bool) -> usize {
        self.cfg.concurrent + if not_heard { 0 } else { HEARD_SLOTS }
    }

    /// Waiting peers whose last reach ended [`Attempt::RelayNeeded`].
    pub fn relay_needed(&self) -> impl Iterator<Item = Fingerprint> + '_ {
        self.needs_relay.iter().copied()
    }

    /// Counters.
    pub fn stats(&self) -> RetryStats {
        RetryStats {
            waiting: self.peers.len(),
            running: self.running.len(),
            relay_needed: self.needs_relay.len(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests;

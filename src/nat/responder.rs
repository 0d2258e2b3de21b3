//! The STUN responder's limits, sans-IO (spec/05-nat.md §1.1–1.3, §2.1): which datagrams
//! are answered (the answers themselves are [`stun::respond_to`]'s, or
//! [`stun::respond_rfc5780`]'s), how often per source, and the byte rule that keeps it from
//! amplifying: per source, the bytes it answers never exceed the bytes that source sent plus
//! a start credit — one minimal answer, or for an RFC 5780 server `rfc5780_start_answers`
//! full answers.
//!
//! [`StunResponder::handle`] takes `now`, the sender and the datagram and returns the
//! answer or why there is none; [`ResponderStats`] counts both. The driver
//! (`daemon::node`'s STUN loop) owns one and sends what it returns. An RFC 5780 server
//! ([`StunResponder::rfc5780`]) is one responder for all four of its sockets, so the limits
//! hold per source across them: [`StunResponder::handle_on`] takes the socket a request
//! arrived on and says which socket the answer leaves from (`daemon::discovery_server`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use thiserror::Error;

use super::stun::{self, ServerAddresses, ServerSocket, Unanswered};
use crate::source::{Source, TokenBuckets};

/// The responder's limits. `Default` gives the values spec/05 §1.3 states.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponderConfig {
    /// Answers one source (IPv4 address or IPv6 /64) may get at once (default 32).
    pub burst: u32,
    /// Answers per second a source regains, up to `burst` (default 10: 250 nodes behind one
    /// address, each checking its mapping every 25 s).
    pub per_second: f64,
    /// Sources remembered, for the rate limit and for the byte rule each (default 4096:
    /// two hash tables of 8192 slots of 41 and 49 bytes, ≈ 0.75 MiB); when full, the least
    /// recently seen source is forgotten.
    pub max_sources: usize,
    /// Longest request looked at, in bytes (default 548: the UDP payload of a 576-byte IPv4
    /// datagram, which every path carries); longer ones are dropped unread.
    pub max_request: usize,
    /// An RFC 5780 server only: each source's start credit in full answers (header,
    /// XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN, OTHER-ADDRESS: 56 bytes for IPv4, 92 for IPv6).
    /// Default 5: one run of a client that does not pad its requests — coturn's
    /// `turnutils_natdiscovery -m -f` sends at most 6 requests of 20 or 28 bytes for 6
    /// answers — once per source; after it, every answer is paid for (spec/05 §2.1).
    pub rfc5780_start_answers: usize,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig {
            burst: 32,
            per_second: 10.0,
            max_sources: 4096,
            max_request: 548,
            rfc5780_start_answers: 5,
        }
    }
}

/// Why a datagram got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Longer than `max_request`.
    #[error("request longer than the limit")]
    Oversize,
    /// Not a well-formed STUN message (or a wrong FINGERPRINT).
    #[error("malformed STUN message")]
    Malformed,
    /// Not a Binding request (an answer, an indication, another method) or a
    /// connectivity check that no punching attempt claimed: not the responder's.
    #[error("not for the responder")]
    NotForUs,
    /// The source's rate limit is spent.
    #[error("rate-limited source")]
    RateLimited,
    /// The answer would exceed what the source has sent (the byte rule).
    #[error("answer larger than the source has paid for")]
    OverBudget,
}

/// What the responder did, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponderStats {
    /// Requests answered (success or 420).
    pub answered: u64,
    /// Of those, answered with 420 (Unknown Attribute).
    pub unknown_attribute: u64,
    /// Bytes of all answers sent.
    pub answered_bytes: u64,
    /// Refused: the source's rate limit was spent.
    pub rate_limited: u64,
    /// Refused: the byte rule.
    pub over_budget: u64,
    /// Dropped: not well-formed STUN.
    pub malformed: u64,
    /// Dropped: longer than `max_request`.
    pub oversize: u64,
    /// Not for the responder (answers, indications, other methods, stray checks).
    pub not_for_us: u64,
    /// RFC 5780 server: of the answers, those sent from another socket than the one asked
    /// (CHANGE-REQUEST).
    pub changed: u64,
    /// Requests the driver dropped before the responder saw them (a full queue between an
    /// RFC 5780 server's sockets); the responder itself never counts here.
    pub dropped: u64,
}

/// An answer and the RFC 5780 server's socket it leaves from ([`ServerSocket::PRIMARY`]
/// for a plain responder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The socket to send from.
    pub via: ServerSocket,
    /// The answer.
    pub bytes: Vec<u8>,
}

/// The shortest success answer to a source of this family: header (20) and
/// XOR-MAPPED-ADDRESS (12 for IPv4, 24 for IPv6). Each source starts with this much credit.
pub fn minimal_answer(ip: IpAddr) -> usize {
    match stun::mapped_address(SocketAddr::new(ip, 0)) {
        SocketAddr::V4(_) => 32,
        SocketAddr::V6(_) => 44,
    }
}

/// The full answer of an RFC 5780 server to a source of this family, without FINGERPRINT:
/// header (20) and three addresses of 12 bytes (IPv4) or 24 (IPv6).
pub fn full_answer(ip: IpAddr) -> usize {
    20 + 3 * (minimal_answer(ip) - 20)
}

/// The STUN responder with its per-source limits.
#[derive(Debug)]
pub struct StunResponder {
    cfg: ResponderConfig,
    server: Option<ServerAddresses>,
    rate: TokenBuckets<Source>,
    credit: Credit,
    stats: ResponderStats,
}

impl StunResponder {
    /// An RFC 5780 server with addresses `server` and limits `cfg`, one for all four
    /// sockets: give each request to [`handle_on`](StunResponder::handle_on).
    pub fn rfc5780(cfg: ResponderConfig, server: ServerAddresses) -> StunResponder {
        StunResponder {
            server: Some(server),
            ..StunResponder::new(cfg)
        }
    }

    /// A responder with limits `cfg`.
    pub fn new(cfg: ResponderConfig) -> StunResponder {
        StunResponder {
            server: None,
            rate: TokenBuckets::new(cfg.burst, cfg.per_second, cfg.max_sources),
            credit: Credit {
                max_sources: cfg.max_sources.max(1),
                cap: cfg.max_request,
                accounts: HashMap::new(),
            },
            cfg,
            stats: ResponderStats::default(),
        }
    }

    /// The answer to `request` from `from` at `now`, or why there is none. Order: size,
    /// form, the source's rate limit, then the byte rule. For a plain responder; an RFC 5780
    /// server's answers are [`handle_on`](StunResponder::handle_on)'s.
    pub fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        request: &[u8],
    ) -> Result<Vec<u8>, Refusal> {
        self.handle_on(now, ServerSocket::PRIMARY, from, request)
            .map(|r| r.bytes)
    }

    /// The answer to `request` from `from`, received at `now` on the socket `on`, and the
    /// socket it leaves from (spec/05 §2.1); or why there is none. One rate limit and one
    /// byte rule per source for all sockets.
    pub fn handle_on(
        &mut self,
        now: Instant,
        on: ServerSocket,
        from: SocketAddr,
        request: &[u8],
    ) -> Result<Reply, Refusal> {
        let r = self.decide(now, on, from, request);
        let s = &mut self.stats;
        match &r {
            Ok(a) => {
                s.answered += 1;
                s.answered_bytes += a.bytes.len() as u64;
                if a.bytes.get(..2) == Some(&[0x01, 0x11]) {
                    s.unknown_attribute += 1;
                }
                if a.via != on {
                    s.changed += 1;
                }
            }
            Err(Refusal::Oversize) => s.oversize += 1,
            Err(Refusal::Malformed) => s.malformed += 1,
            Err(Refusal::NotForUs) => s.not_for_us += 1,
            Err(Refusal::RateLimited) => s.rate_limited += 1,
            Err(Refusal::OverBudget) => s.over_budget += 1,
        }
        r
    }

    fn decide(
        &mut self,
        now: Instant,
        on: ServerSocket,
        from: SocketAddr,
        request: &[u8],
    ) -> Result<Reply, Refusal> {
        if request.len() > self.cfg.max_request {
            return Err(Refusal::Oversize);
        }
        let answer = match &self.server {
            None => stun::respond_to(from, request).map(|a| (on, a)),
            Some(server) => stun::respond_rfc5780(from, request, on, server),
        };
        let (via, bytes) = answer.map_err(|e| match e {
            Unanswered::Malformed => Refusal::Malformed,
            _ => Refusal::NotForUs,
        })?;
        let source = Source::of(from.ip());
        if !self.rate.allow(&source, now) {
            return Err(Refusal::RateLimited);
        }
        let start = self.start_credit(from.ip());
        if !self
            .credit
            .pay(source, start, request.len(), bytes.len(), now)
        {
            return Err(Refusal::OverBudget);
        }
        Ok(Reply { via, bytes })
    }

    /// A new source's credit: one minimal answer, or for an RFC 5780 server
    /// `rfc5780_start_answers` full ones.
    pub fn start_credit(&self, ip: IpAddr) -> usize {
        match self.server {
            None => minimal_answer(ip),
            Some(_) => full_answer(ip).saturating_mul(self.cfg.rfc5780_start_answers),
        }
    }

    /// The RFC 5780 server's addresses, if this responder is one.
    pub fn server(&self) -> Option<&ServerAddresses> {
        self.server.as_ref()
    }

    /// Counters so far.
    pub fn stats(&self) -> ResponderStats {
        self.stats
    }

    /// The limits in force.
    pub fn config(&self) -> &ResponderConfig {
        &self.cfg
    }

    /// Sources in the byte rule's table now (at most `max_sources`).
    pub fn sources(&self) -> usize {
        self.credit.accounts.len()
    }
}

/// The byte rule's table: per source, how many more bytes it may be answered with.
///
/// Invariant per source: answered + credit ≤ start + received, with `start` one minimal
/// answer. Forgetting a source whose credit is at least `start` keeps it (it comes back
/// with `start`); only when none such is left is the least recently seen one forgotten,
/// which an attacker can force only with `max_sources` other sources.
#[derive(Debug)]
struct Credit {
    max_sources: usize,
    cap: usize,
    accounts: HashMap<Source, Account>,
}

#[derive(Debug, Clone, Copy)]
struct Account {
    credit: usize,
    start: usize,
    last: Instant,
}

impl Credit {
    /// Credits `received` bytes to `source`, then takes `answer` bytes if it has them.
    fn pay(
        &mut self,
        source: Source,
        start: usize,
        received: usize,
        answer: usize,
        now: Instant,
    ) -> bool {
        if !self.accounts.contains_key(&source) && self.accounts.len() >= self.max_sources {
            self.evict();
        }
        let a = self.accounts.entry(source).or_insert(Account {
            credit: start,
            start,
            last: now,
        });
        a.last = now;
        // The cap only ever lowers credit, which keeps the invariant.
        a.credit = (a.credit + received).min(self.cap.max(start));
        if a.credit < answer {
            return false;
        }
        a.credit -= answer;
        true
    }

    fn evict(&mut self) {
        self.accounts.retain(|_, a| a.credit < a.start);
        if self.accounts.len() >= self.max_sources {
            let oldest = self
                .accounts
                .iter()
                .min_by_key(|(_, a)| a.last)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.accounts.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod rfc5780_tests;

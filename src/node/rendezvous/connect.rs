//! CONNECT admission (spec/06-node.md, "Rendezvous"): token buckets per source of the
//! delivering connection and per caller identity, and a bounded replay cache of offers.

use std::collections::{BTreeSet, HashMap};
use std::mem::size_of;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::Rate;
use crate::crypto::Fingerprint;
use crate::nat::signal::{ConnectErrorCode, Signal, SignalKind, MAX_CLOCK_SKEW_MS};
use crate::source::{Source, TokenBuckets};

/// Why a CONNECT offer was not admitted. On the wire: CONNECT_ERROR with
/// [`ConnectRefusal::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectRefusal {
    /// The delivering connection's source sent too many CONNECTs.
    #[error("too many CONNECTs from this source")]
    SourceRateLimited,
    /// The caller identity sent too many CONNECTs.
    #[error("too many CONNECTs from this caller")]
    CallerRateLimited,
    /// This `(caller, session)` was seen within the freshness window.
    #[error("replayed offer")]
    Replayed,
    /// The offer's time is more than the allowed skew from ours.
    #[error("stale offer")]
    Stale,
    /// Not an offer (an answer sent as CONNECT).
    #[error("not an offer")]
    NotAnOffer,
    /// The replay cache is full of live entries.
    #[error("too many offers in flight")]
    Busy,
}

impl ConnectRefusal {
    /// The CONNECT_ERROR code (spec/05 §4.3).
    pub fn code(self) -> ConnectErrorCode {
        match self {
            ConnectRefusal::SourceRateLimited | ConnectRefusal::CallerRateLimited => {
                ConnectErrorCode::RateLimited
            }
            ConnectRefusal::Replayed | ConnectRefusal::Stale => ConnectErrorCode::Refused,
            ConnectRefusal::NotAnOffer => ConnectErrorCode::Malformed,
            ConnectRefusal::Busy => ConnectErrorCode::Busy,
        }
    }
}

/// What CONNECT admission did, for `dna status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConnectStats {
    /// Offers admitted.
    pub admitted: u64,
    /// Refused: per-source bucket empty.
    pub refused_source: u64,
    /// Refused: per-caller bucket empty.
    pub refused_caller: u64,
    /// Refused: replayed.
    pub refused_replay: u64,
    /// Refused: stale or not an offer.
    pub refused_stale: u64,
    /// Refused: replay cache full (callee).
    pub refused_busy: u64,
    /// Offers forgotten before their window ended, to admit a newer one (rendezvous node).
    pub forgotten_early: u64,
    /// Offers remembered now.
    pub remembered: usize,
    /// Estimated bytes held by the replay cache and the rate tables.
    pub bytes: usize,
}

type OfferKey = (Fingerprint, [u8; 8]);

/// What a replay cache full of live entries does with one more fresh offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Refuse it as busy (the callee: the cache is what keeps a replay from making it
    /// punch again, and only its few forwarders can fill it).
    Refuse,
    /// Forget the entry that expires first and admit it (a rendezvous node: any source can
    /// fill its cache, and the callee checks replays again).
    ForgetOldest,
}

/// CONNECT admission for one role (see the module doc).
#[derive(Debug)]
pub struct ConnectLimits {
    per_source: TokenBuckets<Source>,
    per_caller: TokenBuckets<Fingerprint>,
    seen: HashMap<OfferKey, Instant>,
    seen_by_expiry: BTreeSet<(Instant, OfferKey)>,
    capacity: usize,
    when_full: WhenFull,
    stats: ConnectStats,
}

impl ConnectLimits {
    /// Limits of `per_source` (of the delivering connection) and `per_caller`, remembering
    /// at most `replay_capacity` offers (`when_full` says what happens beyond), with at
    /// most `rate_table` buckets per table.
    pub fn new(
        per_source: Rate,
        per_caller: Rate,
        replay_capacity: usize,
        when_full: WhenFull,
        rate_table: usize,
    ) -> ConnectLimits {
        ConnectLimits {
            per_source: TokenBuckets::new(per_source.burst, per_source.per_second, rate_table),
            per_caller: TokenBuckets::new(per_caller.burst, per_caller.per_second, rate_table),
            seen: HashMap::new(),
            seen_by_expiry: BTreeSet::new(),
            capacity: replay_capacity.max(1),
            when_full,
            stats: ConnectStats::default(),
        }
    }

    /// The first check, before the offer's signature is verified: one token from the
    /// bucket of the source (`ip`) of the connection that delivered it.
    pub fn check_source(&mut self, ip: IpAddr, now: Instant) -> Result<(), ConnectRefusal> {
        if self.per_source.allow(&Source::of(ip), now) {
            Ok(())
        } else {
            self.stats.refused_source += 1;
            Err(ConnectRefusal::SourceRateLimited)
        }
    }

    /// The second check, on a verified `offer` at `now` (`now_ms`: our wall clock, ms since
    /// the Unix epoch): an offer, fresh, not seen before, room to remember it, and a token
    /// from the caller's bucket. A refused offer takes no token from its caller (so replays
    /// of someone's offer cannot spend their budget) and is not remembered.
    pub fn admit(
        &mut self,
        offer: &Signal,
        now: Instant,
        now_ms: u64,
    ) -> Result<(), ConnectRefusal> {
        let r = self.admit_inner(offer, now, now_ms);
        match r {
            Ok(()) => self.stats.admitted += 1,
            Err(ConnectRefusal::CallerRateLimited) => self.stats.refused_caller += 1,
            Err(ConnectRefusal::Replayed) => self.stats.refused_replay += 1,
            Err(ConnectRefusal::Stale | ConnectRefusal::NotAnOffer) => {
                self.stats.refused_stale += 1
            }
            Err(ConnectRefusal::Busy) => self.stats.refused_busy += 1,
            Err(ConnectRefusal::SourceRateLimited) => self.stats.refused_source += 1,
        }
        r
    }

    fn admit_inner(
        &mut self,
        offer: &Signal,
        now: Instant,
        now_ms: u64,
    ) -> Result<(), ConnectRefusal> {
        if offer.kind != SignalKind::Offer {
            return Err(ConnectRefusal::NotAnOffer);
        }
        if offer.time_ms.abs_diff(now_ms) > MAX_CLOCK_SKEW_MS {
            return Err(ConnectRefusal::Stale);
        }
        self.handle_timeout(now);
        let caller = offer.from.fingerprint();
        let key = (caller, offer.session);
        if self.seen.contains_key(&key) {
            return Err(ConnectRefusal::Replayed);
        }
        let full = self.seen.len() >= self.capacity;
        if full && self.when_full == WhenFull::Refuse {
            return Err(ConnectRefusal::Busy);
        }
        if !self.per_caller.allow(&caller, now) {
            return Err(ConnectRefusal::CallerRateLimited);
        }
        if full {
            if let Some((_, oldest)) = self.seen_by_expiry.pop_first() {
                self.seen.remove(&oldest);
                self.stats.forgotten_early += 1;
            }
        }
        // Fresh until `time + skew` by our clock: remember it that long (≤ 2 × skew).
        let left_ms = (offer.time_ms + MAX_CLOCK_SKEW_MS + 1).saturating_sub(now_ms);
        let until = now + Duration::from_millis(left_ms);
        self.seen.insert(key, until);
        self.seen_by_expiry.insert((until, key));
        Ok(())
    }

    /// Forgets offers whose freshness window has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(t, key)) = self.seen_by_expiry.first() {
            if t > now {
                break;
            }
            self.seen_by_expiry.pop_first();
            self.seen.remove(&key);
        }
    }

    /// When the next remembered offer may be forgotten.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.seen_by_expiry.first().map(|(t, _)| *t)
    }

    /// Counters and an estimate of the bytes held.
    pub fn stats(&self) -> ConnectStats {
        let key = size_of::<OfferKey>();
        let bytes = self.seen.len() * (key + size_of::<Instant>() + 1) * 8 / 7
            + self.seen_by_expiry.len() * (key + size_of::<Instant>()) * 4 / 3
            + self.per_source.len() * (size_of::<Source>() + 25) * 8 / 7
            + self.per_caller.len() * (size_of::<Fingerprint>() + 25) * 8 / 7;
        ConnectStats {
            remembered: self.seen.len(),
            bytes,
            ..self.stats
        }
    }
}

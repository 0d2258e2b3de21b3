//! Sources of traffic as limits see them (spec/06-node.md §4): an IPv4 address, or an IPv6
//! /64 — never `IP:port` (a new port is free) and never only an identity (identities are
//! free too). Wider prefixes (IPv4 /24, IPv6 /48) group sources for quotas that a
//! single operator could otherwise walk around.
//!
//! [`TokenBuckets`] is a rate limiter keyed by any such key, with a bounded table: when it
//! is full, the least recently used bucket is evicted (never "refuse everyone").

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A traffic source: an IPv4 address or an IPv6 /64 (the unit one subscriber gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// One IPv4 address.
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl Source {
    /// The source of `ip` (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => {
                    let mut p = [0u8; 8];
                    p.copy_from_slice(&v6.octets()[..8]);
                    Source::V6(p)
                }
            },
        }
    }
}

/// A wider group of sources, for quotas: an IPv4 /24 or an IPv6 /48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Network {
    /// The first 24 bits of an IPv4 address.
    V4([u8; 3]),
    /// The first 48 bits of an IPv6 address.
    V6([u8; 6]),
}

impl Network {
    /// The network of `ip` (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn of(ip: IpAddr) -> Network {
        match Source::of(ip) {
            Source::V4([a, b, c, _]) => Network::V4([a, b, c]),
            Source::V6(p) => {
                let mut n = [0u8; 6];
                n.copy_from_slice(&p[..6]);
                Network::V6(n)
            }
        }
    }
}

/// Token-bucket rate limits per key, in a table of at most `max_keys` buckets.
///
/// A key starts with `burst` tokens and regains `per_second`; each allowed event takes one.
/// When a new key arrives at a full table, the least recently used bucket is dropped; a
/// dropped key starts again with a full bucket, so the table size bounds memory, not
/// fairness: an attacker needs `max_keys` distinct sources to get a key forgotten.
#[derive(Debug)]
pub struct TokenBuckets<K> {
    burst: f64,
    per_second: f64,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl<K: Hash + Eq + Clone> TokenBuckets<K> {
    /// Limits of `burst` events at once and `per_second` on average, for at most `max_keys`
    /// keys (at least 1).
    pub fn new(burst: u32, per_second: f64, max_keys: usize) -> TokenBuckets<K> {
        TokenBuckets {
            burst: f64::from(burst.max(1)),
            per_second: per_second.max(0.0),
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `key` at `now`; `false` means refuse.
    pub fn allow(&mut self, key: &K, now: Instant) -> bool {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            self.evict(now);
        }
        let b = self.buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let refill = now.saturating_duration_since(b.last).as_secs_f64() * self.per_second;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops buckets that are full again, and if none is, the least recently used one.
    fn evict(&mut self, now: Instant) {
        let refill = if self.per_second > 0.0 {
            Duration::from_secs_f64(self.burst / self.per_second)
        } else {
            Duration::MAX
        };
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < refill);
        if self.buckets.len() >= self.max_keys {
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.buckets.remove(&k);
            }
        }
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sources_key_on_ipv4_and_ipv6_slash_64() {
        assert_eq!(
            Source::of(ip("198.18.0.1")),
            Source::of(ip("::ffff:198.18.0.1"))
        );
        assert_ne!(Source::of(ip("198.18.0.1")), Source::of(ip("198.18.0.2")));
        assert_eq!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Network::of(ip("198.18.0.1")),
            Network::of(ip("198.18.0.254"))
        );
        assert_ne!(Network::of(ip("198.18.0.1")), Network::of(ip("198.18.1.1")));
        assert_eq!(
            Network::of(ip("2001:db8:1:2::1")),
            Network::of(ip("2001:db8:1:ff::1"))
        );
        assert_ne!(
            Network::of(ip("2001:db8:1::1")),
            Network::of(ip("2001:db8:2::1"))
        );
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // any instant will do as the fake clock's zero
    fn buckets_refill_and_a_full_table_evicts_instead_of_refusing() {
        let t = Instant::now();
        let mut r = TokenBuckets::new(3, 1.0, 2);
        let a = Source::of(ip("198.18.0.11"));
        assert!((0..3).all(|_| r.allow(&a, t)));
        assert!(!r.allow(&a, t));
        assert!(r.allow(&a, t + Duration::from_millis(1100)));
        let b = Source::of(ip("198.18.0.12"));
        let c = Source::of(ip("198.18.0.13"));
        assert!(r.allow(&b, t + Duration::from_millis(1200)));
        // Full of fresh buckets: a newcomer still gets in; the table stays at its cap.
        assert!(r.allow(&c, t + Duration::from_millis(1300)));
        assert_eq!(r.len(), 2);
    }
}

//! Peer scores (spec/03-session.md §8, spec/06-node.md "Transport limits"): misbehaviour
//! costs points; at the threshold a peer's identity, or a traffic source, is refused.
//!
//! Sources are IPv4 addresses and IPv6 /64s ([`Source`]), never `IP:port`: a new port is
//! free, so a ban by port bans nothing. The source table is bounded: when it is full, the
//! mildest entry (the score closest to 0) makes room, so bans are the last to go.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::crypto::Fingerprint;
use crate::node::source::Source;

/// A score at or below this is banned.
pub const BAN_THRESHOLD: i32 = -100;

/// Scores by identity and by source.
#[derive(Debug)]
pub(crate) struct Scores {
    peers: HashMap<Fingerprint, i32>,
    sources: HashMap<Source, i32>,
    max_sources: usize,
}

impl Default for Scores {
    fn default() -> Self {
        Scores::new(65536)
    }
}

impl Scores {
    /// Scores keeping at most `max_sources` sources (at least 1).
    pub(crate) fn new(max_sources: usize) -> Scores {
        Scores {
            peers: HashMap::new(),
            sources: HashMap::new(),
            max_sources: max_sources.max(1),
        }
    }

    /// Takes `amount` points from `peer`.
    pub(crate) fn penalize_peer(&mut self, peer: Fingerprint, amount: i32) {
        if amount != 0 {
            let s = self.peers.entry(peer).or_default();
            *s = s.saturating_sub(amount);
        }
    }

    /// Takes `amount` points from the source of `addr` (its IPv4 address or IPv6 /64).
    pub(crate) fn penalize_source(&mut self, addr: SocketAddr, amount: i32) {
        if amount == 0 {
            return;
        }
        let source = Source::of(addr.ip());
        if !self.sources.contains_key(&source) && self.sources.len() >= self.max_sources {
            let mildest = self
                .sources
                .iter()
                .max_by_key(|(_, s)| **s)
                .map(|(k, _)| *k);
            if let Some(k) = mildest {
                self.sources.remove(&k);
            }
        }
        let s = self.sources.entry(source).or_default();
        *s = s.saturating_sub(amount);
    }

    pub(crate) fn peer(&self, peer: &Fingerprint) -> i32 {
        self.peers.get(peer).copied().unwrap_or(0)
    }

    /// The score of `addr`'s source.
    pub(crate) fn addr(&self, addr: &SocketAddr) -> i32 {
        self.sources
            .get(&Source::of(addr.ip()))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn peer_banned(&self, peer: &Fingerprint) -> bool {
        self.peer(peer) <= BAN_THRESHOLD
    }

    /// Whether `addr`'s source (any port) is banned.
    pub(crate) fn addr_banned(&self, addr: &SocketAddr) -> bool {
        self.addr(addr) <= BAN_THRESHOLD
    }

    /// Sources with a score.
    pub(crate) fn sources(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_ipv4_ban_covers_every_port_and_only_that_address() {
        let mut s = Scores::default();
        s.penalize_source(sa("198.51.100.7:4000"), 60);
        s.penalize_source(sa("198.51.100.7:4001"), 60);
        assert!(s.addr_banned(&sa("198.51.100.7:9")));
        assert!(s.addr_banned(&sa("[::ffff:198.51.100.7]:9")));
        assert!(!s.addr_banned(&sa("198.51.100.8:4000")));
    }

    #[test]
    fn an_ipv6_ban_covers_the_slash_64_and_not_the_next_one() {
        let mut s = Scores::default();
        // Two offences from different addresses (and ports) inside one /64 add up.
        s.penalize_source(sa("[2001:db8:aa:1::1]:4000"), 50);
        s.penalize_source(sa("[2001:db8:aa:1:ffff:ffff:ffff:fffe]:5000"), 50);
        assert!(s.addr_banned(&sa("[2001:db8:aa:1:1234::9]:1")));
        assert_eq!(s.addr(&sa("[2001:db8:aa:1::2]:2")), -100);
        assert!(!s.addr_banned(&sa("[2001:db8:aa:2::1]:4000")));
        assert_eq!(s.sources(), 1);
    }

    #[test]
    fn a_full_table_forgets_the_mildest_source_not_a_ban() {
        let mut s = Scores::new(3);
        s.penalize_source(sa("[2001:db8::1]:1"), 100);
        s.penalize_source(sa("[2001:db8:0:1::1]:1"), 30);
        s.penalize_source(sa("[2001:db8:0:2::1]:1"), 50);
        // Many more offenders, each from a new /64: the table stays at 3, the ban stays.
        for i in 3..1000u32 {
            s.penalize_source(sa(&format!("[2001:db8:0:{i:x}::1]:1")), 10);
        }
        assert_eq!(s.sources(), 3);
        assert!(s.addr_banned(&sa("[2001:db8::ff]:7")));
    }

    #[test]
    fn identity_and_source_scores_are_separate() {
        let mut s = Scores::default();
        let fp = crate::crypto::Identity::generate(&mut rand_core::OsRng).fingerprint();
        s.penalize_peer(fp, 100);
        assert!(s.peer_banned(&fp));
        assert!(!s.addr_banned(&sa("192.0.2.1:1")));
        s.penalize_source(sa("192.0.2.1:1"), 0);
        assert_eq!(s.sources(), 0);
    }
}

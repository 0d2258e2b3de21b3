//! Peer scores (spec/03-session.md §8, spec/06-node.md §4.2), sans-IO: misbehaviour costs
//! points; at the threshold a peer's identity, or a traffic source, is refused.
//!
//! Sources are IPv4 addresses and IPv6 /64s ([`Source`]), never `IP:port`: a new port is
//! free, so a ban by port bans nothing. Both tables are bounded: when one is full, its
//! mildest entry (the score closest to 0) makes room, so bans are the last to go.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::crypto::Fingerprint;
use crate::source::Source;

/// A score at or below this is banned.
pub const BAN_THRESHOLD: i32 = -100;

/// Scores by identity and by source.
#[derive(Debug)]
pub struct Scores {
    peers: HashMap<Fingerprint, i32>,
    sources: HashMap<Source, i32>,
    max_sources: usize,
    max_peers: usize,
}

/// Takes `amount` from `key`'s score in `table`, making room first by forgetting the
/// mildest entry when the table holds `max` keys.
fn charge<K: std::hash::Hash + Eq + Copy>(
    table: &mut HashMap<K, i32>,
    max: usize,
    key: K,
    amount: i32,
) {
    if amount == 0 {
        return;
    }
    if !table.contains_key(&key) && table.len() >= max {
        let mildest = table.iter().max_by_key(|(_, s)| **s).map(|(k, _)| *k);
        if let Some(k) = mildest {
            table.remove(&k);
        }
    }
    let s = table.entry(key).or_default();
    *s = s.saturating_sub(amount);
}

impl Default for Scores {
    fn default() -> Self {
        Scores::new(65536)
    }
}

impl Scores {
    /// Scores keeping at most `max_sources` sources and as many identities (at least 1).
    pub fn new(max_sources: usize) -> Scores {
        Scores {
            peers: HashMap::new(),
            sources: HashMap::new(),
            max_sources: max_sources.max(1),
            max_peers: max_sources.max(1),
        }
    }

    /// Takes `amount` points from `peer`.
    pub fn penalize_peer(&mut self, peer: Fingerprint, amount: i32) {
        charge(&mut self.peers, self.max_peers, peer, amount);
    }

    /// Takes `amount` points from the source of `addr` (its IPv4 address or IPv6 /64).
    pub fn penalize_source(&mut self, addr: SocketAddr, amount: i32) {
        charge(
            &mut self.sources,
            self.max_sources,
            Source::of(addr.ip()),
            amount,
        );
    }

    /// The score of `peer`'s identity.
    pub fn peer(&self, peer: &Fingerprint) -> i32 {
        self.peers.get(peer).copied().unwrap_or(0)
    }

    /// The score of `addr`'s source.
    pub fn addr(&self, addr: &SocketAddr) -> i32 {
        self.sources
            .get(&Source::of(addr.ip()))
            .copied()
            .unwrap_or(0)
    }

    /// Whether `peer`'s identity is banned.
    pub fn peer_banned(&self, peer: &Fingerprint) -> bool {
        self.peer(peer) <= BAN_THRESHOLD
    }

    /// Whether `addr`'s source (any port) is banned.
    pub fn addr_banned(&self, addr: &SocketAddr) -> bool {
        self.addr(addr) <= BAN_THRESHOLD
    }

    /// Sources with a score.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Identities with a score.
    pub fn identities(&self) -> usize {
        self.peers.len()
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
    fn throwaway_identities_do_not_grow_the_identity_table() {
        let mut s = Scores::new(4);
        let banned = Fingerprint([0; 32]);
        s.penalize_peer(banned, 100);
        for i in 1..=1000u32 {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_be_bytes());
            s.penalize_peer(Fingerprint(b), 50);
        }
        assert_eq!(s.identities(), 4);
        assert!(s.peer_banned(&banned), "the ban is the last to go");
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

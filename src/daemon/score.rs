//! Peer scores (spec/03-session.md §8): misbehaviour costs points; at the threshold a peer
//! (or, before it authenticated, its address) is refused.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::crypto::Fingerprint;

/// A score at or below this is banned.
pub const BAN_THRESHOLD: i32 = -100;

/// Scores by identity and, for failures before authentication, by address.
#[derive(Debug, Default)]
pub(crate) struct Scores {
    peers: HashMap<Fingerprint, i32>,
    addrs: HashMap<SocketAddr, i32>,
}

impl Scores {
    /// Takes `amount` points from `peer`, or from `addr` if the peer is unknown.
    pub(crate) fn penalize(&mut self, peer: Option<Fingerprint>, addr: SocketAddr, amount: i32) {
        if amount == 0 {
            return;
        }
        let s = match peer {
            Some(p) => self.peers.entry(p).or_default(),
            None => self.addrs.entry(addr).or_default(),
        };
        *s = s.saturating_sub(amount);
    }

    pub(crate) fn peer(&self, peer: &Fingerprint) -> i32 {
        self.peers.get(peer).copied().unwrap_or(0)
    }

    pub(crate) fn addr(&self, addr: &SocketAddr) -> i32 {
        self.addrs.get(addr).copied().unwrap_or(0)
    }

    pub(crate) fn peer_banned(&self, peer: &Fingerprint) -> bool {
        self.peer(peer) <= BAN_THRESHOLD
    }

    pub(crate) fn addr_banned(&self, addr: &SocketAddr) -> bool {
        self.addr(addr) <= BAN_THRESHOLD
    }
}

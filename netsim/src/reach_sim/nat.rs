//! A NAT as RFC 4787 describes it: a mapping behaviour (which outgoing flows share a public
//! port), a filtering behaviour (which incoming datagrams a mapping lets in) and a port
//! allocation (preserved, random, or sequential), for the NAT test bed's router types
//! ([`NatType`], spec/05-nat.md §7), so the simulator's matrix and the bed's line up.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use dna_p2p::nat::discovery::{Filtering, Mapping};
use dna_p2p::nat::predict::Behaviour;
use rand::Rng;

pub use crate::testbed::NatType;
use crate::SimRng;

/// The bed's types the simulator models: the matrix's six with `symmetric-seq` in place of
/// `udp-blocked` (no UDP at all: its TURN-over-TCP path is the bed's to test).
pub const SIMULATED: [NatType; 6] = [
    NatType::Public,
    NatType::FullCone,
    NatType::AddressRestricted,
    NatType::PortRestricted,
    NatType::Symmetric,
    NatType::SymmetricSeq,
];

fn mapping(t: NatType) -> Mapping {
    match t.ipv4_like() {
        NatType::Symmetric => Mapping::AddressAndPortDependent,
        _ => Mapping::EndpointIndependent,
    }
}

fn filtering(t: NatType) -> Filtering {
    match t.ipv4_like() {
        NatType::Public | NatType::FullCone => Filtering::EndpointIndependent,
        NatType::AddressRestricted => Filtering::AddressDependent,
        _ => Filtering::AddressAndPortDependent,
    }
}

/// What behaviour discovery reports behind `t` (what the node's signals state).
pub fn behaviour(t: NatType) -> Behaviour {
    Behaviour {
        class: Some((mapping(t), filtering(t))),
        sequential: t == NatType::SymmetricSeq,
    }
}

/// Whether discovery calls `t` reachable (presence says "dial me directly").
pub fn reachable(t: NatType) -> bool {
    matches!(t, NatType::Public | NatType::FullCone)
}

/// One NAT's tables.
#[derive(Debug)]
pub struct Nat {
    kind: NatType,
    public: IpAddr,
    /// (private port, the destination as the mapping behaviour sees it) → public port.
    map: HashMap<(u16, Option<SocketAddr>), u16>,
    /// public port → private port.
    back: HashMap<u16, u16>,
    /// (public port, remote) pairs that went out: what filtering lets back in.
    sent: HashSet<(u16, SocketAddr)>,
    next_port: u16,
}

impl Nat {
    /// A NAT of `kind` with the public address `public`.
    pub fn new(kind: NatType, public: IpAddr) -> Nat {
        Nat {
            kind,
            public,
            map: HashMap::new(),
            back: HashMap::new(),
            sent: HashSet::new(),
            next_port: 20_000,
        }
    }

    /// The public address.
    pub fn public_ip(&self) -> IpAddr {
        self.public
    }

    /// A datagram from the inside's `port` to `to` leaves from this public address.
    pub fn outbound(&mut self, port: u16, to: SocketAddr, rng: &mut SimRng) -> SocketAddr {
        if self.kind == NatType::Public {
            self.sent.insert((port, to));
            return SocketAddr::new(self.public, port);
        }
        let key = match mapping(self.kind) {
            Mapping::EndpointIndependent => (port, None),
            Mapping::AddressDependent => (port, Some(SocketAddr::new(to.ip(), 0))),
            _ => (port, Some(to)),
        };
        let public_port = match self.map.get(&key) {
            Some(p) => *p,
            None => {
                let p = self.allocate(port, rng);
                self.map.insert(key, p);
                self.back.insert(p, port);
                p
            }
        };
        self.sent.insert((public_port, to));
        SocketAddr::new(self.public, public_port)
    }

    fn allocate(&mut self, port: u16, rng: &mut SimRng) -> u16 {
        let free = |n: &Nat, p: u16| !n.back.contains_key(&p);
        match self.kind {
            // Linux keeps the source port where it can.
            NatType::FullCone | NatType::AddressRestricted | NatType::PortRestricted
                if free(self, port) =>
            {
                port
            }
            NatType::SymmetricSeq => loop {
                self.next_port = self.next_port.checked_add(1).unwrap_or(1024);
                if free(self, self.next_port) {
                    return self.next_port;
                }
            },
            _ => loop {
                let p = rng.gen_range(1024..=u16::MAX);
                if free(self, p) {
                    return p;
                }
            },
        }
    }

    /// A datagram from `from` to our public `port`: the inside port it reaches, if a
    /// mapping exists and filtering lets it in.
    pub fn inbound(&self, from: SocketAddr, port: u16) -> Option<u16> {
        if self.kind == NatType::Public {
            return Some(port);
        }
        let inside = *self.back.get(&port)?;
        let allowed = match filtering(self.kind) {
            Filtering::EndpointIndependent => true,
            Filtering::AddressDependent => self
                .sent
                .iter()
                .any(|(p, to)| *p == port && to.ip() == from.ip()),
            _ => self.sent.contains(&(port, from)),
        };
        allowed.then_some(inside)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_type_maps_and_filters_as_rfc_4787_says() {
        let mut rng = crate::rng(1);
        let (r1, r2, r1b) = (a("203.0.113.1:7"), a("203.0.113.2:7"), a("203.0.113.1:8"));
        for t in SIMULATED {
            let mut n = Nat::new(t, "198.51.100.1".parse().unwrap());
            let m1 = n.outbound(4000, r1, &mut rng);
            let m2 = n.outbound(4000, r2, &mut rng);
            let symmetric = matches!(t, NatType::Symmetric | NatType::SymmetricSeq);
            assert_eq!(m1 != m2, symmetric, "{}", t.name());
            assert_eq!(
                n.inbound(r1, m1.port()),
                Some(4000),
                "{}: the answer",
                t.name()
            );
            let from_other_port = n.inbound(r1b, m1.port()).is_some();
            let from_stranger = n.inbound(a("192.0.2.9:1"), m1.port()).is_some();
            assert_eq!(
                from_other_port,
                matches!(
                    t,
                    NatType::Public | NatType::FullCone | NatType::AddressRestricted
                ),
                "{}",
                t.name()
            );
            assert_eq!(
                from_stranger,
                matches!(t, NatType::Public | NatType::FullCone),
                "{}",
                t.name()
            );
        }
        let mut seq = Nat::new(NatType::SymmetricSeq, "198.51.100.1".parse().unwrap());
        let p1 = seq.outbound(4000, r1, &mut rng).port();
        let p2 = seq.outbound(4000, r2, &mut rng).port();
        assert_eq!(p2, p1 + 1);
    }
}

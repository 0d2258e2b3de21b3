//! Contacts and XOR distance (spec/04-dht.md §1).

use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::crypto::{NodeId, NODE_ID_LEN};

/// A DHT node: its 160-bit ID and the address its DHT server listens on.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Contact {
    /// The node's ID (first 160 bits of its fingerprint).
    pub id: NodeId,
    /// Where to reach it.
    pub addr: SocketAddr,
}

impl fmt::Debug for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}", self.id, self.addr)
    }
}

/// XOR distance between two IDs, ordered as a 160-bit big-endian number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Distance(pub [u8; NODE_ID_LEN]);

impl Distance {
    /// `a` XOR `b`.
    pub fn between(a: &NodeId, b: &NodeId) -> Distance {
        let mut d = [0u8; NODE_ID_LEN];
        for (i, x) in d.iter_mut().enumerate() {
            *x = a.0[i] ^ b.0[i];
        }
        Distance(d)
    }

    /// Leading zero bits: the length of the common prefix (160 for equal IDs).
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for b in self.0 {
            if b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros();
            }
        }
        n
    }

    /// Compares two IDs by their distance to `target`.
    pub fn cmp_to(target: &NodeId, a: &NodeId, b: &NodeId) -> Ordering {
        Distance::between(target, a).cmp(&Distance::between(target, b))
    }
}

/// The address range one operator is assumed to control: /24 for IPv4, /48 for IPv6
/// (spec/04-dht.md §2, eclipse defence).
pub fn subnet(addr: &SocketAddr) -> [u8; 6] {
    match addr.ip() {
        IpAddr::V4(ip) => {
            let o = ip.octets();
            [4, o[0], o[1], o[2], 0, 0]
        }
        IpAddr::V6(ip) => {
            let o = ip.octets();
            if let Some(v4) = ip.to_ipv4_mapped() {
                let o = v4.octets();
                return [4, o[0], o[1], o[2], 0, 0];
            }
            [6, o[0], o[1], o[2], o[3], o[4] ^ o[5]]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_orders_by_xor() {
        let z = NodeId([0; 20]);
        let mut a = [0u8; 20];
        a[19] = 1;
        let mut b = [0u8; 20];
        b[0] = 0x80;
        assert!(Distance::between(&z, &NodeId(a)) < Distance::between(&z, &NodeId(b)));
        assert_eq!(Distance::between(&z, &NodeId(b)).leading_zeros(), 0);
        assert_eq!(Distance::between(&z, &NodeId(a)).leading_zeros(), 159);
        assert_eq!(Distance::between(&z, &z).leading_zeros(), 160);
    }

    #[test]
    fn subnets() {
        let a: SocketAddr = "10.1.2.3:1".parse().unwrap();
        let b: SocketAddr = "10.1.2.200:9".parse().unwrap();
        let c: SocketAddr = "10.1.3.3:1".parse().unwrap();
        assert_eq!(subnet(&a), subnet(&b));
        assert_ne!(subnet(&a), subnet(&c));
        let m: SocketAddr = "[::ffff:10.1.2.9]:1".parse().unwrap();
        assert_eq!(subnet(&m), subnet(&a));
    }
}

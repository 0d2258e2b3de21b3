//! The socket-address layout shared by DHT contacts (spec/04-dht.md §4) and NAT candidates
//! (spec/05-nat.md §4.1): `u8` family (4 or 6), the 4 or 16 address bytes, `u16` port, all
//! big-endian.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why an address did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// The input ended inside the address.
    #[error("truncated address: need {needed} more bytes")]
    Truncated {
        /// Bytes missing (at least one, for an empty input).
        needed: usize,
    },
    /// The family byte is neither 4 nor 6.
    #[error("unknown address family {0}")]
    BadFamily(u8),
}

/// Appends `a` in the shared layout (7 or 19 bytes).
pub fn put_socket_addr(out: &mut Vec<u8>, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

/// Reads an address from the start of `b`; returns it and the bytes it took.
pub fn get_socket_addr(b: &[u8]) -> Result<(SocketAddr, usize), AddrError> {
    let (&family, rest) = b.split_first().ok_or(AddrError::Truncated { needed: 1 })?;
    let len = match family {
        4 => 4,
        6 => 16,
        f => return Err(AddrError::BadFamily(f)),
    };
    if rest.len() < len + 2 {
        return Err(AddrError::Truncated {
            needed: len + 2 - rest.len(),
        });
    }
    let ip = if len == 4 {
        IpAddr::V4(Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]))
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(&rest[..16]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    let port = u16::from_be_bytes([rest[len], rest[len + 1]]);
    Ok((SocketAddr::new(ip, port), 1 + len + 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_round_trip_and_errors_are_typed() {
        for a in ["198.18.0.2:4000", "[fd00::2]:65535"] {
            let a: SocketAddr = a.parse().unwrap();
            let mut b = Vec::new();
            put_socket_addr(&mut b, &a);
            assert_eq!(get_socket_addr(&b), Ok((a, b.len())));
            assert_eq!(
                get_socket_addr(&b[..b.len() - 1]),
                Err(AddrError::Truncated { needed: 1 })
            );
        }
        assert_eq!(get_socket_addr(&[5, 0]), Err(AddrError::BadFamily(5)));
        assert_eq!(
            get_socket_addr(&[]),
            Err(AddrError::Truncated { needed: 1 })
        );
    }
}

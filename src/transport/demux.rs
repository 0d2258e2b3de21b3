//! Sorting datagrams that arrive on the node's one UDP socket (spec/03-session.md §1;
//! RFC 7983/9443 style). Pure function, no I/O.
//!
//! | first byte / source | route |
//! | --- | --- |
//! | from the configured TURN server | TURN client |
//! | 0x00–0x3F with the STUN magic cookie and a consistent length | STUN agent |
//! | 0x00–0x3F otherwise | dropped |
//! | 0x40–0xFF | QUIC (quinn's fixed bit is never greased here, so QUIC always has 0x40 set; 0x80–0xBF are left to quinn to reject) |

use std::net::SocketAddr;

pub use crate::nat::stun::{is_stun, STUN_HEADER_LEN, STUN_MAGIC_COOKIE};

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the STUN/ICE agent.
    Stun,
    /// To the TURN client.
    Turn,
    /// To quinn.
    Quic,
    /// Nowhere: not a protocol this socket speaks.
    Drop,
}

/// Routes a datagram from `from`.
pub fn classify(from: SocketAddr, datagram: &[u8], turn_server: Option<SocketAddr>) -> Route {
    if turn_server == Some(from) {
        return Route::Turn;
    }
    match datagram.first() {
        None => Route::Drop,
        Some(b) if b & 0xC0 == 0 => {
            if is_stun(datagram) {
                Route::Stun
            } else {
                Route::Drop
            }
        }
        Some(_) => Route::Quic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request() -> Vec<u8> {
        let mut v = vec![0x00, 0x01, 0x00, 0x00];
        v.extend_from_slice(&STUN_MAGIC_COOKIE);
        v.extend_from_slice(&[7; 12]);
        v
    }

    #[test]
    fn routes() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let turn: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        assert_eq!(classify(a, &binding_request(), Some(turn)), Route::Stun);
        assert_eq!(classify(turn, &binding_request(), Some(turn)), Route::Turn);
        assert_eq!(
            classify(turn, &[0x40, 0, 0, 4, 1, 2, 3, 4], Some(turn)),
            Route::Turn
        );
        assert_eq!(classify(a, &[0x40, 1, 2], None), Route::Quic);
        assert_eq!(classify(a, &[0xC3, 0, 0, 0, 1], None), Route::Quic);
        assert_eq!(classify(a, &[], None), Route::Drop);
        let mut bad = binding_request();
        bad[5] = 0;
        assert_eq!(classify(a, &bad, None), Route::Drop);
        let mut long = binding_request();
        long.extend_from_slice(&[0; 4]);
        assert_eq!(
            classify(a, &long, None),
            Route::Drop,
            "length field must match"
        );
    }
}

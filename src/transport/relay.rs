//! The two TURN messages that carry a relayed QUIC path on the node's socket
//! (spec/07-relay.md §3.1): Send indications out, Data indications in (RFC 8656 §§11.1,
//! 11.3). Pure functions, no I/O, no allocation on the receive side.
//!
//! They are hand-written here rather than built with stun-rs (as `nat::turn::message` does
//! for the control messages) because they sit on the socket's hot path: every relayed QUIC
//! packet is wrapped or unwrapped once. The layout is fixed: the 20-byte STUN header,
//! XOR-PEER-ADDRESS, DATA (padded to 4 bytes). Parsing walks attributes with bounds checks
//! only and returns `None` for anything else; it never panics (property test below).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::demux::{is_stun, STUN_HEADER_LEN, STUN_MAGIC_COOKIE};

/// STUN message type of a Send indication (method 0x006, class indication).
pub const SEND_INDICATION: u16 = 0x0016;
/// STUN message type of a Data indication (method 0x007, class indication).
pub const DATA_INDICATION: u16 = 0x0017;
const XOR_PEER_ADDRESS: u16 = 0x0012;
const DATA: u16 = 0x0013;
/// The most DATA one indication carries (its length field is 16 bits, with room for the
/// header and XOR-PEER-ADDRESS).
pub const MAX_DATA: usize = 65_000;

fn pad4(n: usize) -> usize {
    n.next_multiple_of(4)
}

/// Bytes an indication carrying `data_len` bytes for `peer` takes.
pub fn indication_len(peer: SocketAddr, data_len: usize) -> usize {
    let addr = if peer.is_ipv4() { 8 } else { 20 };
    STUN_HEADER_LEN + 4 + addr + 4 + pad4(data_len)
}

/// Appends a Send (or, with `kind` = [`DATA_INDICATION`], a Data) indication carrying
/// `data` for `peer` to `out`. `None` (nothing appended) when `data` is over [`MAX_DATA`].
pub fn encode_indication(
    out: &mut Vec<u8>,
    kind: u16,
    tid: [u8; 12],
    peer: SocketAddr,
    data: &[u8],
) -> Option<()> {
    if data.len() > MAX_DATA {
        return None;
    }
    let total = indication_len(peer, data.len());
    let body = u16::try_from(total - STUN_HEADER_LEN).ok()?;
    out.reserve(total);
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&body.to_be_bytes());
    out.extend_from_slice(&STUN_MAGIC_COOKIE);
    out.extend_from_slice(&tid);
    let port = peer.port() ^ 0x2112;
    match peer.ip() {
        IpAddr::V4(ip) => {
            out.extend_from_slice(&XOR_PEER_ADDRESS.to_be_bytes());
            out.extend_from_slice(&8u16.to_be_bytes());
            out.extend_from_slice(&[0, 1]);
            out.extend_from_slice(&port.to_be_bytes());
            let o = ip.octets();
            out.extend((0..4).map(|i| o[i] ^ STUN_MAGIC_COOKIE[i]));
        }
        IpAddr::V6(ip) => {
            out.extend_from_slice(&XOR_PEER_ADDRESS.to_be_bytes());
            out.extend_from_slice(&20u16.to_be_bytes());
            out.extend_from_slice(&[0, 2]);
            out.extend_from_slice(&port.to_be_bytes());
            let o = ip.octets();
            let key: Vec<u8> = STUN_MAGIC_COOKIE
                .iter()
                .chain(tid.iter())
                .copied()
                .collect();
            out.extend((0..16).map(|i| o[i] ^ key[i]));
        }
    }
    out.extend_from_slice(&DATA.to_be_bytes());
    // data.len() ≤ MAX_DATA < 65,536.
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + pad4(data.len()) - data.len(), 0);
    Some(())
}

fn xor_peer(value: &[u8], tid: &[u8]) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ 0x2112;
    match (family, value.len()) {
        (1, 8) => {
            let mut o = [0u8; 4];
            for (i, b) in o.iter_mut().enumerate() {
                *b = value[4 + i] ^ STUN_MAGIC_COOKIE[i];
            }
            Some(SocketAddr::new(Ipv4Addr::from(o).into(), port))
        }
        (2, 20) => {
            let mut o = [0u8; 16];
            for (i, b) in o.iter_mut().enumerate() {
                let k = if i < 4 {
                    STUN_MAGIC_COOKIE[i]
                } else {
                    *tid.get(i - 4)?
                };
                *b = value[4 + i] ^ k;
            }
            Some(SocketAddr::new(Ipv6Addr::from(o).into(), port))
        }
        _ => None,
    }
}

/// Reads an indication of type `kind` ([`DATA_INDICATION`] from a server): the peer
/// (XOR-PEER-ADDRESS) and the data. `None` for anything else, including a message without
/// both attributes. Other attributes (FINGERPRINT, SOFTWARE) are skipped unread.
pub fn parse_indication(kind: u16, bytes: &[u8]) -> Option<(SocketAddr, &[u8])> {
    if !is_stun(bytes) || u16::from_be_bytes([bytes[0], bytes[1]]) != kind {
        return None;
    }
    let tid = &bytes[8..STUN_HEADER_LEN];
    let mut rest = &bytes[STUN_HEADER_LEN..];
    let (mut peer, mut data) = (None, None);
    while rest.len() >= 4 {
        let t = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + len)?;
        match t {
            XOR_PEER_ADDRESS if peer.is_none() => peer = Some(xor_peer(value, tid)?),
            DATA if data.is_none() => data = Some(value),
            _ => {}
        }
        rest = rest.get((4 + pad4(len)).min(rest.len())..)?;
    }
    Some((peer?, data?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::turn::message::{data_indication, parse, send_indication, Incoming};
    use proptest::prelude::*;

    fn addr(v6: bool, ip4: [u8; 4], ip6: [u16; 8], port: u16) -> SocketAddr {
        if v6 {
            SocketAddr::from((ip6, port))
        } else {
            SocketAddr::from((ip4, port))
        }
    }

    proptest! {
        #[test]
        fn agrees_with_stun_rs(
            v6 in any::<bool>(), ip4 in any::<[u8; 4]>(), ip6 in any::<[u16; 8]>(),
            port in any::<u16>(), tid in any::<[u8; 12]>(),
            data in proptest::collection::vec(any::<u8>(), 0..1500),
        ) {
            let peer = addr(v6, ip4, ip6, port);
            // Ours, read by ours and by stun-rs (as a Data indication).
            let mut ours = Vec::new();
            encode_indication(&mut ours, DATA_INDICATION, tid, peer, &data).unwrap();
            prop_assert_eq!(ours.len(), indication_len(peer, data.len()));
            prop_assert_eq!(parse_indication(DATA_INDICATION, &ours), Some((peer, &data[..])));
            prop_assert_eq!(
                parse(&ours, None),
                Ok(Incoming::Data { peer, data: data.clone() })
            );
            // stun-rs's, read by ours (a server adds FINGERPRINT or SOFTWARE at times).
            let theirs = data_indication(tid, peer, &data);
            prop_assert_eq!(parse_indication(DATA_INDICATION, &theirs), Some((peer, &data[..])));
            let mut send = Vec::new();
            encode_indication(&mut send, SEND_INDICATION, tid, peer, &data).unwrap();
            prop_assert_eq!(send, send_indication(tid, peer, &data));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_indication(DATA_INDICATION, &bytes);
        }

        #[test]
        fn parse_never_panics_on_stun_shaped_bytes(
            body in proptest::collection::vec(any::<u8>(), 0..96), tid in any::<[u8; 12]>(),
        ) {
            // A valid header, so the walk reaches the attributes.
            let len = body.len() / 4 * 4;
            let mut bytes = DATA_INDICATION.to_be_bytes().to_vec();
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
            bytes.extend_from_slice(&STUN_MAGIC_COOKIE);
            bytes.extend_from_slice(&tid);
            bytes.extend_from_slice(&body[..len]);
            let _ = parse_indication(DATA_INDICATION, &bytes);
        }
    }

    #[test]
    fn refuses_other_messages() {
        let peer: SocketAddr = "192.0.2.1:9".parse().unwrap();
        let mut send = Vec::new();
        encode_indication(&mut send, SEND_INDICATION, [1; 12], peer, b"x").unwrap();
        assert_eq!(parse_indication(DATA_INDICATION, &send), None, "wrong type");
        assert_eq!(
            parse_indication(DATA_INDICATION, &send[..send.len() - 4]),
            None
        );
        assert!(
            encode_indication(&mut send, SEND_INDICATION, [1; 12], peer, &[0; 65_001]).is_none()
        );
    }
}

//! TURN messages (RFC 8656 §§7–12; spec/07-relay.md §2.1), sans-IO: the requests and
//! indications the client sends, a typed view of what a server sends back, and ChannelData
//! (§12.4). STUN encoding and decoding is stun-rs's (its `turn` feature supplies the
//! attributes); this module only builds messages and reads the attributes it needs, so a
//! hostile datagram meets stun-rs's bounds-checked decoder and then a handful of `Option`s.
//!
//! Messages used: Allocate (§7.1), Refresh (§7.2), CreatePermission (§9.1), Send and Data
//! indications (§§10–11). ChannelBind is not used; ChannelData is parsed (a server may send
//! it over TCP framing, §12.5) and can be encoded.

use std::net::SocketAddr;

use stun_rs::attributes::stun::{
    ErrorCode, Fingerprint, MessageIntegrity, Nonce, Realm, Software, UserName, XorMappedAddress,
};
use stun_rs::attributes::turn::{
    Data, LifeTime, RequestedTrasport, XorPeerAddress, XorRelayedAddress,
};
use stun_rs::methods::{ALLOCATE, CREATE_PERMMISSION, DATA, REFRESH, SEND};
use stun_rs::{
    DecoderContextBuilder, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder,
    MessageMethod, StunMessage, StunMessageBuilder, TransactionId,
};
use thiserror::Error;

use crate::nat::stun::is_stun;

/// SOFTWARE in our requests (RFC 8489 §14.14).
const SOFTWARE: &str = concat!("dna-p2p/", env!("CARGO_PKG_VERSION"));
/// Room for a control message's attributes: USERNAME (< 509 bytes encoded), REALM and NONCE
/// (< 128 characters each, stun-rs's limits), the rest is small.
const CONTROL_CAPACITY: usize = 2048;
/// Channel numbers a server may bind (RFC 8656 §12).
pub const CHANNEL_NUMBERS: std::ops::RangeInclusive<u16> = 0x4000..=0x4FFF;
/// The largest DATA a Send indication can carry: a STUN message's length field is 16 bits.
pub const MAX_SEND_DATA: usize = 65_000;

/// Which request a response answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Allocate (RFC 8656 §7.1).
    Allocate,
    /// Refresh (§7.2).
    Refresh,
    /// CreatePermission (§9.1).
    CreatePermission,
}

impl Method {
    fn stun(self) -> MessageMethod {
        match self {
            Method::Allocate => ALLOCATE,
            Method::Refresh => REFRESH,
            Method::CreatePermission => CREATE_PERMMISSION,
        }
    }

    fn from_stun(m: MessageMethod) -> Option<Method> {
        [Method::Allocate, Method::Refresh, Method::CreatePermission]
            .into_iter()
            .find(|x| x.stun() == m)
    }
}

/// What authenticates a request (RFC 8489 §9.2.4): USERNAME, REALM, NONCE and the key
/// MD5(username:realm:password) that MESSAGE-INTEGRITY is computed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// USERNAME.
    pub username: String,
    /// REALM, from the server's 401.
    pub realm: String,
    /// NONCE, from the server's latest 401 or 438.
    pub nonce: String,
    /// The long-term key.
    pub key: HMACKey,
}

impl Auth {
    /// The long-term credential for `realm` and `nonce`; an error when a field does not
    /// fit STUN (over-long, or not a valid OpaqueString).
    pub fn new(
        username: &str,
        password: &str,
        realm: &str,
        nonce: &str,
    ) -> Result<Auth, stun_rs::StunError> {
        // Checked here so that building a request with it cannot fail.
        UserName::new(username)?;
        Realm::new(realm)?;
        Nonce::new(nonce)?;
        let md5 = stun_rs::Algorithm::from(stun_rs::AlgorithmId::MD5);
        Ok(Auth {
            username: username.to_owned(),
            realm: realm.to_owned(),
            nonce: nonce.to_owned(),
            key: HMACKey::new_long_term(username, realm, password, md5)?,
        })
    }
}

/// A request's body: what differs between the requests the client makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Allocate a UDP relay (REQUESTED-TRANSPORT 17), asking for `lifetime` seconds.
    Allocate {
        /// LIFETIME asked for.
        lifetime: u32,
    },
    /// Refresh the allocation for `lifetime` seconds (0 deletes it).
    Refresh {
        /// LIFETIME asked for.
        lifetime: u32,
    },
    /// Install or refresh the permission for the peer's IP (the port is ignored, §9).
    CreatePermission {
        /// XOR-PEER-ADDRESS.
        peer: SocketAddr,
    },
}

impl Request {
    /// The method this request is.
    pub fn method(&self) -> Method {
        match self {
            Request::Allocate { .. } => Method::Allocate,
            Request::Refresh { .. } => Method::Refresh,
            Request::CreatePermission { .. } => Method::CreatePermission,
        }
    }
}

fn encode(msg: &StunMessage, capacity: usize) -> Vec<u8> {
    let mut buf = vec![0u8; capacity];
    // Every field was checked when it was made (Auth::new, the capacity), so the encoder
    // cannot run out of room; an empty vector would only be dropped by the server.
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, msg)
        .unwrap_or(0);
    buf.truncate(n);
    buf
}

/// Encodes a request with transaction ID `tid`, authenticated when `auth` is given. It
/// carries SOFTWARE and FINGERPRINT (RFC 8656 §7.1 recommends FINGERPRINT on a shared
/// socket).
pub fn encode_request(tid: [u8; 12], request: &Request, auth: Option<&Auth>) -> Vec<u8> {
    let mut b = StunMessageBuilder::new(request.method().stun(), MessageClass::Request)
        .with_transaction_id(TransactionId::from(tid));
    b = match *request {
        Request::Allocate { lifetime } => b
            .with_attribute(RequestedTrasport::new(stun_rs::protocols::UDP))
            .with_attribute(LifeTime::new(lifetime)),
        Request::Refresh { lifetime } => b.with_attribute(LifeTime::new(lifetime)),
        Request::CreatePermission { peer } => b.with_attribute(XorPeerAddress::from(peer)),
    };
    if let Ok(sw) = Software::new(SOFTWARE) {
        b = b.with_attribute(sw);
    }
    if let Some(a) = auth {
        // Auth::new checked all three.
        if let (Ok(u), Ok(r), Ok(n)) = (
            UserName::new(a.username.as_str()),
            Realm::new(a.realm.as_str()),
            Nonce::new(a.nonce.as_str()),
        ) {
            b = b
                .with_attribute(u)
                .with_attribute(r)
                .with_attribute(n)
                .with_attribute(MessageIntegrity::new(a.key.clone()));
        }
    }
    encode(
        &b.with_attribute(Fingerprint::default()).build(),
        CONTROL_CAPACITY,
    )
}

fn indication(method: MessageMethod, tid: [u8; 12], peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let msg = StunMessageBuilder::new(method, MessageClass::Indication)
        .with_transaction_id(TransactionId::from(tid))
        .with_attribute(XorPeerAddress::from(peer))
        .with_attribute(Data::new(data))
        .build();
    encode(&msg, 64 + data.len())
}

/// A Send indication (RFC 8656 §11.1): `data` for `peer`, relayed by the server. Empty when
/// `data` is longer than [`MAX_SEND_DATA`].
pub fn send_indication(tid: [u8; 12], peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    if data.len() > MAX_SEND_DATA {
        return Vec::new();
    }
    indication(SEND, tid, peer, data)
}

/// A Data indication (§11.3), what a server sends: for tests and seed corpora.
pub fn data_indication(tid: [u8; 12], peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    if data.len() > MAX_SEND_DATA {
        return Vec::new();
    }
    indication(DATA, tid, peer, data)
}

/// A success response's attributes that the client reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Success {
    /// XOR-RELAYED-ADDRESS (Allocate).
    pub relayed: Option<SocketAddr>,
    /// XOR-MAPPED-ADDRESS (Allocate).
    pub mapped: Option<SocketAddr>,
    /// LIFETIME in seconds (Allocate, Refresh).
    pub lifetime: Option<u32>,
}

/// An error response's attributes that the client reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// ERROR-CODE's number (300–699).
    pub code: u16,
    /// ERROR-CODE's reason phrase, cut to [`MAX_REASON`] characters.
    pub reason: String,
    /// REALM, if present (401, 438).
    pub realm: Option<String>,
    /// NONCE, if present (401, 438).
    pub nonce: Option<String>,
}

/// Reason phrases are cut to this many characters before they reach errors and logs.
pub const MAX_REASON: usize = 128;

/// A response to one of our requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Its transaction ID.
    pub tid: [u8; 12],
    /// The method it answers.
    pub method: Method,
    /// Success or error.
    pub outcome: Result<Success, ErrorReply>,
    /// Whether it carried MESSAGE-INTEGRITY (verified with the key it was parsed with:
    /// one that does not verify makes the whole message fail to parse).
    pub integrity: bool,
}

/// What a server sends that the client understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A response to Allocate, Refresh or CreatePermission.
    Response(Response),
    /// A Data indication: `data` from `peer`, through the relay.
    Data {
        /// XOR-PEER-ADDRESS.
        peer: SocketAddr,
        /// DATA.
        data: Vec<u8>,
    },
    /// ChannelData (§12.4).
    ChannelData {
        /// The channel number.
        channel: u16,
        /// The application data (without padding).
        data: Vec<u8>,
    },
}

/// Why a datagram is not a TURN message the client understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Neither a well-formed STUN message nor ChannelData.
    #[error("not a STUN message or ChannelData")]
    NotTurn,
    /// stun-rs refused it: a malformed attribute, or FINGERPRINT or MESSAGE-INTEGRITY that
    /// does not verify.
    #[error("malformed or unverified STUN message")]
    Malformed,
    /// Well-formed, but not something a TURN client receives (a request, an unknown method,
    /// an indication without its attributes).
    #[error("not a message for a TURN client")]
    Unexpected,
}

/// Parses `bytes` from the server, verifying MESSAGE-INTEGRITY with `key` when the message
/// carries it (no key: any MESSAGE-INTEGRITY fails) and FINGERPRINT when present.
pub fn parse(bytes: &[u8], key: Option<&HMACKey>) -> Result<Incoming, ParseError> {
    if let Some((channel, data)) = parse_channel_data(bytes) {
        return Ok(Incoming::ChannelData {
            channel,
            data: data.to_vec(),
        });
    }
    if !is_stun(bytes) {
        return Err(ParseError::NotTurn);
    }
    let mut ctx = DecoderContextBuilder::default().with_validation();
    if let Some(k) = key {
        ctx = ctx.with_key(k.clone());
    }
    let (msg, _) = MessageDecoderBuilder::default()
        .with_context(ctx.build())
        .build()
        .decode(bytes)
        .map_err(|_| ParseError::Malformed)?;
    match msg.class() {
        MessageClass::Indication if msg.method() == DATA => {
            let peer = msg
                .get::<XorPeerAddress>()
                .and_then(|a| a.as_xor_peer_address().ok())
                .map(|a| *a.socket_address());
            let data = msg
                .get::<Data>()
                .and_then(|a| a.as_data().ok())
                .map(|d| d.as_bytes().to_vec());
            match (peer, data) {
                (Some(peer), Some(data)) => Ok(Incoming::Data { peer, data }),
                _ => Err(ParseError::Unexpected),
            }
        }
        class @ (MessageClass::SuccessResponse | MessageClass::ErrorResponse) => {
            let method = Method::from_stun(msg.method()).ok_or(ParseError::Unexpected)?;
            let lifetime = msg
                .get::<LifeTime>()
                .and_then(|a| a.as_life_time().ok())
                .map(|l| l.as_u32());
            let outcome = if class == MessageClass::SuccessResponse {
                Ok(Success {
                    relayed: msg
                        .get::<XorRelayedAddress>()
                        .and_then(|a| a.as_xor_relayed_address().ok())
                        .map(|a| *a.socket_address()),
                    mapped: msg
                        .get::<XorMappedAddress>()
                        .and_then(|a| a.as_xor_mapped_address().ok())
                        .map(|a| *a.socket_address()),
                    lifetime,
                })
            } else {
                let code = msg
                    .get::<ErrorCode>()
                    .and_then(|a| a.as_error_code().ok())
                    .ok_or(ParseError::Unexpected)?;
                Err(ErrorReply {
                    code: code.error_code().error_code(),
                    reason: code
                        .error_code()
                        .reason()
                        .chars()
                        .take(MAX_REASON)
                        .collect(),
                    realm: msg
                        .get::<Realm>()
                        .and_then(|a| a.as_realm().ok())
                        .map(|r| r.as_str().to_owned()),
                    nonce: msg
                        .get::<Nonce>()
                        .and_then(|a| a.as_nonce().ok())
                        .map(|n| n.as_str().to_owned()),
                })
            };
            Ok(Incoming::Response(Response {
                tid: *msg.transaction_id().as_bytes(),
                method,
                outcome,
                integrity: msg.get::<MessageIntegrity>().is_some(),
            }))
        }
        _ => Err(ParseError::Unexpected),
    }
}

/// ChannelData (§12.4): a channel number 0x4000–0x4FFF, a 16-bit length, the data, and up
/// to 3 bytes of padding (required over TCP, allowed over UDP, §12.5). `None` for anything
/// else: a STUN message starts with 0b00, and 0x50–0x7F are not channel numbers.
pub fn parse_channel_data(bytes: &[u8]) -> Option<(u16, &[u8])> {
    let header = bytes.get(..4)?;
    let channel = u16::from_be_bytes([header[0], header[1]]);
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let rest = &bytes[4..];
    if !CHANNEL_NUMBERS.contains(&channel) || rest.len() < len || rest.len() - len > 3 {
        return None;
    }
    Some((channel, &rest[..len]))
}

/// Encodes ChannelData, padded to a multiple of 4 bytes when `pad` (over TCP, §12.5).
/// `None` for a channel number outside 0x4000–0x4FFF or data over 65,535 bytes.
pub fn encode_channel_data(channel: u16, data: &[u8], pad: bool) -> Option<Vec<u8>> {
    let len = u16::try_from(data.len()).ok()?;
    if !CHANNEL_NUMBERS.contains(&channel) {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() + 7);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    if pad {
        out.resize(out.len().next_multiple_of(4), 0);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer() -> SocketAddr {
        "192.0.2.9:5000".parse().unwrap()
    }

    #[test]
    fn requests_are_stun_and_authenticated_ones_verify() {
        let auth = Auth::new("u", "p", "dna.test", "abcdef").unwrap();
        for req in [
            Request::Allocate { lifetime: 600 },
            Request::Refresh { lifetime: 0 },
            Request::CreatePermission { peer: peer() },
        ] {
            let plain = encode_request([1; 12], &req, None);
            assert!(is_stun(&plain), "{req:?}");
            let signed = encode_request([2; 12], &req, Some(&auth));
            assert!(is_stun(&signed) && signed.len() > plain.len());
            // A request is not something the client accepts back.
            assert_eq!(parse(&signed, Some(&auth.key)), Err(ParseError::Unexpected));
            let other = Auth::new("u", "wrong", "dna.test", "abcdef").unwrap();
            assert_eq!(parse(&signed, Some(&other.key)), Err(ParseError::Malformed));
        }
    }

    #[test]
    fn channel_data_padding_rules() {
        let padded = encode_channel_data(0x4001, b"abcde", true).unwrap();
        assert_eq!(padded.len(), 12);
        assert_eq!(parse_channel_data(&padded), Some((0x4001, &b"abcde"[..])));
        let bare = encode_channel_data(0x4001, b"abcde", false).unwrap();
        assert_eq!(bare.len(), 9);
        assert_eq!(parse_channel_data(&bare), Some((0x4001, &b"abcde"[..])));
        assert_eq!(encode_channel_data(0x5000, b"x", true), None);
        let mut long = bare.clone();
        long.extend_from_slice(&[0; 4]);
        assert_eq!(
            parse_channel_data(&long),
            None,
            "more than padding after it"
        );
        assert_eq!(parse_channel_data(&bare[..8]), None, "truncated");
    }

    proptest! {
        #[test]
        fn data_indication_round_trips(
            ip in any::<[u8; 4]>(), port in any::<u16>(), tid in any::<[u8; 12]>(),
            data in proptest::collection::vec(any::<u8>(), 0..1500),
        ) {
            let peer = SocketAddr::from((ip, port));
            let bytes = data_indication(tid, peer, &data);
            prop_assert_eq!(parse(&bytes, None), Ok(Incoming::Data { peer, data }));
        }

        #[test]
        fn channel_data_round_trips(
            channel in 0x4000u16..=0x4FFF, pad in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let bytes = encode_channel_data(channel, &data, pad).unwrap();
            prop_assert_eq!(bytes.len() % 4 == 0 || !pad, true);
            prop_assert_eq!(
                parse(&bytes, None),
                Ok(Incoming::ChannelData { channel, data })
            );
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let key = Auth::new("u", "p", "r", "n").unwrap().key;
            let _ = parse(&bytes, None);
            let _ = parse(&bytes, Some(&key));
        }

        #[test]
        fn parse_never_panics_on_stun_shaped_bytes(
            body in proptest::collection::vec(any::<u8>(), 0..64),
            tid in any::<[u8; 12]>(), kind in any::<u16>(),
        ) {
            // A valid header with the right length, so the decoder reaches the attributes.
            let mut bytes = (kind & 0x3FFF).to_be_bytes().to_vec();
            let len = body.len() / 4 * 4;
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
            bytes.extend_from_slice(&crate::nat::stun::STUN_MAGIC_COOKIE);
            bytes.extend_from_slice(&tid);
            bytes.extend_from_slice(&body[..len]);
            let _ = parse(&bytes, None);
        }
    }
}

//! Candidates (spec/05-nat.md §3) and the presence value that publishes them with the NAT
//! class and the rendezvous nodes (§4): types, ICE priorities (RFC 8445 §5.1.2), and their
//! byte layout. Every decoder here reads network input: bounded, never panics.

use std::net::SocketAddr;

use crate::wire::addr::{get_socket_addr, put_socket_addr, AddrError};

use crate::crypto::Fingerprint;
use crate::crypto::FINGERPRINT_LEN;

/// Where a candidate address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CandidateKind {
    /// An address of one of our interfaces.
    Host,
    /// Our address as a STUN server saw it.
    ServerReflexive,
    /// An address a peer's authenticated probe came from (learnt during hole punching).
    PeerReflexive,
    /// An address on a TURN relay (the TURN issue fills these).
    Relayed,
}

impl CandidateKind {
    /// RFC 8445 §5.1.2.2 type preference: host 126, peer-reflexive 110, server-reflexive
    /// 100, relayed 0.
    pub fn type_preference(self) -> u32 {
        match self {
            CandidateKind::Host => 126,
            CandidateKind::PeerReflexive => 110,
            CandidateKind::ServerReflexive => 100,
            CandidateKind::Relayed => 0,
        }
    }

    fn code(self) -> u8 {
        match self {
            CandidateKind::Host => 1,
            CandidateKind::ServerReflexive => 2,
            CandidateKind::PeerReflexive => 3,
            CandidateKind::Relayed => 4,
        }
    }

    fn from_code(c: u8) -> Option<CandidateKind> {
        Some(match c {
            1 => CandidateKind::Host,
            2 => CandidateKind::ServerReflexive,
            3 => CandidateKind::PeerReflexive,
            4 => CandidateKind::Relayed,
            _ => return None,
        })
    }

    /// Short name: `host`, `srflx`, `prflx`, `relay`.
    pub fn name(self) -> &'static str {
        match self {
            CandidateKind::Host => "host",
            CandidateKind::ServerReflexive => "srflx",
            CandidateKind::PeerReflexive => "prflx",
            CandidateKind::Relayed => "relay",
        }
    }
}

/// One address a peer may be reached at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// Where it comes from.
    pub kind: CandidateKind,
    /// The address.
    pub addr: SocketAddr,
    /// ICE priority (higher is preferred).
    pub priority: u32,
}

impl Candidate {
    /// A candidate with its ICE priority: 2²⁴·type + 2⁸·local + (256 − component), one
    /// component; `local` orders candidates of one type (IPv6 above IPv4, 65535 first).
    pub fn new(kind: CandidateKind, addr: SocketAddr, local: u16) -> Candidate {
        let priority = (kind.type_preference() << 24) + (u32::from(local) << 8) + (256 - 1);
        Candidate {
            kind,
            addr,
            priority,
        }
    }
}

/// RFC 8445 §6.1.2.3 pair priority from the controlling (`g`) and controlled (`d`)
/// candidates' priorities.
pub fn pair_priority(g: u32, d: u32) -> u64 {
    let (g, d) = (u64::from(g), u64::from(d));
    (1 << 32) * g.min(d) + 2 * g.max(d) + u64::from(g > d)
}

/// Most candidates a message may carry.
pub const MAX_CANDIDATES: usize = 16;
/// Most rendezvous nodes a presence value names.
pub const MAX_RENDEZVOUS: usize = 4;

/// Why a candidate list or presence value did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CandidateError {
    /// The input ended early.
    #[error("truncated")]
    Truncated,
    /// Bytes after the end.
    #[error("trailing bytes")]
    Trailing,
    /// An unknown candidate type or address family.
    #[error("unknown code {0}")]
    UnknownCode(u8),
    /// More entries than allowed.
    #[error("too many entries: {0}")]
    TooMany(usize),
    /// An unknown version.
    #[error("unsupported presence version {0}")]
    Version(u8),
    /// A text field that is not printable ASCII.
    #[error("text field is not printable ASCII")]
    NotText,
}

/// A bounds-checked reader over network input.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], CandidateError> {
        if self.0.len() < n {
            return Err(CandidateError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, CandidateError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, CandidateError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, CandidateError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    pub(crate) fn addr(&mut self) -> Result<SocketAddr, CandidateError> {
        let (addr, used) = get_socket_addr(self.0).map_err(|e| match e {
            AddrError::Truncated { .. } => CandidateError::Truncated,
            AddrError::BadFamily(f) => CandidateError::UnknownCode(f),
        })?;
        self.0 = &self.0[used..];
        Ok(addr)
    }
    pub(crate) fn fingerprint(&mut self) -> Result<Fingerprint, CandidateError> {
        let mut a = [0u8; FINGERPRINT_LEN];
        a.copy_from_slice(self.take(FINGERPRINT_LEN)?);
        Ok(Fingerprint(a))
    }
    /// A length-prefixed text field of at most `max` printable ASCII bytes.
    pub(crate) fn text(&mut self, max: usize) -> Result<String, CandidateError> {
        let n = usize::from(self.u8()?);
        if n > max {
            return Err(CandidateError::TooMany(n));
        }
        let b = self.take(n)?;
        if !b.iter().all(|c| c.is_ascii_graphic()) {
            return Err(CandidateError::NotText);
        }
        Ok(b.iter().map(|&c| char::from(c)).collect())
    }
    pub(crate) fn end(&self) -> Result<(), CandidateError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CandidateError::Trailing)
        }
    }
    pub(crate) fn candidates(&mut self) -> Result<Vec<Candidate>, CandidateError> {
        let n = usize::from(self.u8()?);
        if n > MAX_CANDIDATES {
            return Err(CandidateError::TooMany(n));
        }
        (0..n)
            .map(|_| {
                let code = self.u8()?;
                let kind =
                    CandidateKind::from_code(code).ok_or(CandidateError::UnknownCode(code))?;
                let priority = self.u32()?;
                let addr = self.addr()?;
                Ok(Candidate {
                    kind,
                    addr,
                    priority,
                })
            })
            .collect()
    }
}

/// Appends a text field: its printable ASCII characters, at most `max` of them.
pub(crate) fn put_text(out: &mut Vec<u8>, s: &str, max: usize) {
    let b: Vec<u8> = s.bytes().filter(u8::is_ascii_graphic).take(max).collect();
    out.push(b.len() as u8);
    out.extend_from_slice(&b);
}

/// Appends a candidate list (at most [`MAX_CANDIDATES`]; more are cut).
pub(crate) fn put_candidates(out: &mut Vec<u8>, cands: &[Candidate]) {
    let cands = &cands[..cands.len().min(MAX_CANDIDATES)];
    out.push(cands.len() as u8);
    for c in cands {
        out.push(c.kind.code());
        out.extend_from_slice(&c.priority.to_be_bytes());
        put_socket_addr(out, &c.addr);
    }
}

/// The value of a presence record (spec/05 §4.1): how to reach its publisher.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PresenceInfo {
    /// Reachable without signalling: dial a candidate directly.
    pub reachable: bool,
    /// The NAT class name (`public`, `full-cone`, …; printable ASCII, ≤ 32), empty if
    /// unknown.
    pub nat: String,
    /// Host and server-reflexive (later: relayed) candidates.
    pub candidates: Vec<Candidate>,
    /// Nodes that forward CONNECT requests to the publisher: address and fingerprint.
    pub rendezvous: Vec<(SocketAddr, Fingerprint)>,
}

const PRESENCE_VERSION: u8 = 1;
const MAX_NAT_NAME: usize = 32;

impl PresenceInfo {
    /// The byte layout of spec/05 §4.1.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![PRESENCE_VERSION, u8::from(self.reachable)];
        put_text(&mut out, &self.nat, MAX_NAT_NAME);
        put_candidates(&mut out, &self.candidates);
        let rdv = &self.rendezvous[..self.rendezvous.len().min(MAX_RENDEZVOUS)];
        out.push(rdv.len() as u8);
        for (addr, fp) in rdv {
            put_socket_addr(&mut out, addr);
            out.extend_from_slice(fp.as_bytes());
        }
        out
    }

    /// Parses a presence value.
    pub fn decode(bytes: &[u8]) -> Result<PresenceInfo, CandidateError> {
        let mut r = Reader(bytes);
        let v = r.u8()?;
        if v != PRESENCE_VERSION {
            return Err(CandidateError::Version(v));
        }
        let reachable = r.u8()? != 0;
        let nat = r.text(MAX_NAT_NAME)?;
        let candidates = r.candidates()?;
        let n = usize::from(r.u8()?);
        if n > MAX_RENDEZVOUS {
            return Err(CandidateError::TooMany(n));
        }
        let rendezvous = (0..n)
            .map(|_| Ok((r.addr()?, r.fingerprint()?)))
            .collect::<Result<Vec<_>, CandidateError>>()?;
        r.end()?;
        Ok(PresenceInfo {
            reachable,
            nat,
            candidates,
            rendezvous,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn priorities_follow_rfc8445() {
        let a: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let host = Candidate::new(CandidateKind::Host, a, 65535);
        assert_eq!(host.priority, (126 << 24) + (65535 << 8) + 255);
        let prflx = Candidate::new(CandidateKind::PeerReflexive, a, 65535);
        let srflx = Candidate::new(CandidateKind::ServerReflexive, a, 65535);
        assert!(host.priority > prflx.priority && prflx.priority > srflx.priority);
        assert_eq!(pair_priority(2, 1), (1 << 32) + 4 + 1);
        assert_eq!(pair_priority(1, 2), (1 << 32) + 4);
    }

    fn info() -> PresenceInfo {
        PresenceInfo {
            reachable: false,
            nat: "port-restricted".into(),
            candidates: vec![
                Candidate::new(
                    CandidateKind::Host,
                    "10.1.0.2:40000".parse().unwrap(),
                    65535,
                ),
                Candidate::new(
                    CandidateKind::Host,
                    "[fd00::2]:40000".parse().unwrap(),
                    65534,
                ),
                Candidate::new(
                    CandidateKind::ServerReflexive,
                    "198.18.0.11:40000".parse().unwrap(),
                    65535,
                ),
            ],
            rendezvous: vec![("198.18.0.2:4000".parse().unwrap(), Fingerprint([7; 32]))],
        }
    }

    #[test]
    fn presence_round_trip() {
        let i = info();
        assert_eq!(PresenceInfo::decode(&i.encode()), Ok(i));
    }

    #[test]
    fn presence_errors() {
        let b = info().encode();
        assert_eq!(
            PresenceInfo::decode(&b[..b.len() - 1]),
            Err(CandidateError::Truncated)
        );
        let mut long = b.clone();
        long.push(0);
        assert_eq!(PresenceInfo::decode(&long), Err(CandidateError::Trailing));
        let mut v = b.clone();
        v[0] = 9;
        assert_eq!(PresenceInfo::decode(&v), Err(CandidateError::Version(9)));
    }

    #[test]
    fn text_fields_are_printable_ascii() {
        let mut b = info().encode();
        b[3] = 0xC3; // first byte of the NAT name
        assert_eq!(PresenceInfo::decode(&b), Err(CandidateError::NotText));
        let long = PresenceInfo {
            nat: "é".repeat(40) + &"x".repeat(40),
            ..info()
        };
        let back = PresenceInfo::decode(&long.encode()).unwrap();
        assert_eq!(
            back.nat,
            "x".repeat(32),
            "non-ASCII dropped, then cut at 32"
        );
    }

    proptest! {
        #[test]
        fn presence_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = PresenceInfo::decode(&bytes);
        }
    }
}

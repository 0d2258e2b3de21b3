//! Rendezvous signalling (spec/05-nat.md §4): the signed CONNECT offer and answer that carry
//! each side's candidates and short-term STUN credentials, and the CONNECT_ERROR codes. The
//! rendezvous node only forwards; both ends sign what they send, so it can neither forge nor
//! alter an offer. (The limits a rendezvous node applies are in `node::rendezvous`.)

use super::candidate::{put_candidates, put_text, Candidate, CandidateError, Reader};
use super::predict::Behaviour;
use crate::crypto::{Fingerprint, Identity};
use crate::crypto::{PublicKey, PUBLIC_KEY_LEN, SIGNATURE_LEN};

/// Signature domain of CONNECT and CONNECT_ANSWER bodies.
const DOMAIN: &[u8] = b"dna-p2p/signal/v1";
/// How far a signal's timestamp may be from our clock.
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;
/// Most bytes a credential string may have.
const MAX_CRED: usize = 64;

/// Offer (caller → callee) or answer (callee → caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// CONNECT.
    Offer = 1,
    /// CONNECT_ANSWER.
    Answer = 2,
}

/// One side's half of a hole-punching exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// Offer or answer.
    pub kind: SignalKind,
    /// The sender's public key (it signs the signal).
    pub from: PublicKey,
    /// Whom it is for.
    pub to: Fingerprint,
    /// The exchange's ID, chosen by the caller; the answer repeats it.
    pub session: [u8; 8],
    /// Sender's clock, ms since the Unix epoch.
    pub time_ms: u64,
    /// The sender's ICE username fragment (printable ASCII, ≤ 64).
    pub ufrag: String,
    /// The sender's ICE password (printable ASCII, ≤ 64): checks sent to the sender are
    /// keyed with it.
    pub pwd: String,
    /// Where the sender may be reached.
    pub candidates: Vec<Candidate>,
    /// The sender's NAT behaviour (one byte): decides port prediction (spec/05 §5.5).
    pub nat: Behaviour,
}

/// Why a signal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The bytes do not form a signal.
    #[error("malformed signal: {0}")]
    Malformed(#[from] CandidateError),
    /// The signature does not verify under the embedded key.
    #[error("bad signature")]
    BadSignature,
    /// Not addressed to us.
    #[error("signal for another node")]
    NotForUs,
    /// Not what we expected here (an answer where an offer belongs, another session).
    #[error("unexpected signal (kind or session)")]
    Unexpected,
    /// The sender is not who we asked.
    #[error("signal from the wrong key")]
    WrongSender,
    /// Timestamp too far from our clock.
    #[error("stale signal")]
    Stale,
}

impl Signal {
    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PUBLIC_KEY_LEN + 512);
        out.push(self.kind as u8);
        out.extend_from_slice(self.from.as_bytes());
        out.extend_from_slice(self.to.as_bytes());
        out.extend_from_slice(&self.session);
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        put_text(&mut out, &self.ufrag, MAX_CRED);
        put_text(&mut out, &self.pwd, MAX_CRED);
        put_candidates(&mut out, &self.candidates);
        out.push(self.nat.encode());
        out
    }

    /// The signed encoding (spec/05 §4.2): body ‖ Dilithium3 signature over it. `identity`
    /// must own `self.from`.
    pub fn sign(&self, identity: &Identity) -> Vec<u8> {
        let mut out = self.body();
        let sig = identity.sign(DOMAIN, &[&out]);
        out.extend_from_slice(&sig);
        out
    }

    /// Parses and verifies a signed signal (any sender; the caller checks who).
    pub fn verify(bytes: &[u8]) -> Result<Signal, SignalError> {
        if bytes.len() < SIGNATURE_LEN {
            return Err(CandidateError::Truncated.into());
        }
        let (body, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let mut r = Reader(body);
        let kind = match r.u8()? {
            1 => SignalKind::Offer,
            2 => SignalKind::Answer,
            c => return Err(CandidateError::UnknownCode(c).into()),
        };
        let from = PublicKey::from_bytes(r.take(PUBLIC_KEY_LEN)?)
            .map_err(|_| SignalError::BadSignature)?;
        let to = r.fingerprint()?;
        let mut session = [0u8; 8];
        session.copy_from_slice(r.take(8)?);
        let time_ms = r.u64()?;
        let ufrag = r.text(MAX_CRED)?;
        let pwd = r.text(MAX_CRED)?;
        let candidates = r.candidates()?;
        let nat = Behaviour::decode(r.u8()?);
        r.end()?;
        from.verify(DOMAIN, &[body], sig)
            .map_err(|_| SignalError::BadSignature)?;
        Ok(Signal {
            kind,
            from,
            to,
            session,
            time_ms,
            ufrag,
            pwd,
            candidates,
            nat,
        })
    }

    /// The recipient named in a signal's bytes, read without verifying anything: a node
    /// uses it only to pick which limits to charge before it spends a signature check.
    pub fn recipient(bytes: &[u8]) -> Option<Fingerprint> {
        let mut r = Reader(bytes);
        r.u8().ok()?;
        r.take(PUBLIC_KEY_LEN).ok()?;
        r.fingerprint().ok()
    }

    /// Checks an offer received by `me` at `now_ms`.
    pub fn check_offer(&self, me: &Fingerprint, now_ms: u64) -> Result<(), SignalError> {
        if self.kind != SignalKind::Offer {
            return Err(SignalError::Unexpected);
        }
        self.check_common(me, now_ms)
    }

    /// Checks the answer to our offer `session`, expected from `peer`.
    pub fn check_answer(
        &self,
        me: &Fingerprint,
        peer: &Fingerprint,
        session: &[u8; 8],
        now_ms: u64,
    ) -> Result<(), SignalError> {
        if self.kind != SignalKind::Answer || &self.session != session {
            return Err(SignalError::Unexpected);
        }
        if &self.from.fingerprint() != peer {
            return Err(SignalError::WrongSender);
        }
        self.check_common(me, now_ms)
    }

    fn check_common(&self, me: &Fingerprint, now_ms: u64) -> Result<(), SignalError> {
        if &self.to != me {
            return Err(SignalError::NotForUs);
        }
        if self.time_ms.abs_diff(now_ms) > MAX_CLOCK_SKEW_MS {
            return Err(SignalError::Stale);
        }
        Ok(())
    }
}

/// CONNECT_ERROR codes (spec/05 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectErrorCode {
    /// The target is not registered here.
    NotRegistered = 1,
    /// The source sent too many CONNECTs.
    RateLimited = 2,
    /// The target did not answer in time.
    TargetTimeout = 3,
    /// The request was malformed.
    Malformed = 4,
    /// The offer was refused: stale, replayed, or (at the callee) not for it.
    Refused = 5,
    /// The callee runs too many punching attempts already, or the node's table is full.
    Busy = 6,
    /// (Answer to RDV_REGISTER.) This node does not serve as a rendezvous node.
    NotRendezvous = 7,
    /// (Answer to RDV_REGISTER.) The registrant's source or network holds its quota.
    Quota = 8,
    /// (Answer to RELAY_REQUEST.) This node does not relay.
    NotRelay = 9,
    /// (Answer to RELAY_REQUEST.) The relay holds its most pairs or waiting requests.
    RelayFull = 10,
    /// (Answer to RELAY_REQUEST.) The peer did not ask for the pair in time.
    PeerDidNotAsk = 11,
}

impl ConnectErrorCode {
    /// From the byte on the wire.
    pub fn from_u8(b: u8) -> Option<ConnectErrorCode> {
        Some(match b {
            1 => ConnectErrorCode::NotRegistered,
            2 => ConnectErrorCode::RateLimited,
            3 => ConnectErrorCode::TargetTimeout,
            4 => ConnectErrorCode::Malformed,
            5 => ConnectErrorCode::Refused,
            6 => ConnectErrorCode::Busy,
            7 => ConnectErrorCode::NotRendezvous,
            8 => ConnectErrorCode::Quota,
            9 => ConnectErrorCode::NotRelay,
            10 => ConnectErrorCode::RelayFull,
            11 => ConnectErrorCode::PeerDidNotAsk,
            _ => return None,
        })
    }

    /// The code in words, for errors and logs.
    pub fn reason(self) -> &'static str {
        match self {
            ConnectErrorCode::NotRegistered => "callee not registered",
            ConnectErrorCode::RateLimited => "rate limited",
            ConnectErrorCode::TargetTimeout => "callee did not answer",
            ConnectErrorCode::Malformed => "malformed",
            ConnectErrorCode::Refused => "offer refused (stale, replayed or not for the callee)",
            ConnectErrorCode::Busy => "busy",
            ConnectErrorCode::NotRendezvous => "not a rendezvous node",
            ConnectErrorCode::Quota => "source holds its quota of registrations",
            ConnectErrorCode::NotRelay => "not a relay",
            ConnectErrorCode::RelayFull => "the relay is full",
            ConnectErrorCode::PeerDidNotAsk => "the peer did not ask for the relayed pair",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::candidate::CandidateKind;
    use rand_core::OsRng;

    fn offer(from: &Identity, to: Fingerprint) -> Signal {
        Signal {
            nat: crate::nat::predict::Behaviour::UNKNOWN,
            kind: SignalKind::Offer,
            from: from.public_key().clone(),
            to,
            session: [3; 8],
            time_ms: 1_000_000,
            ufrag: "abcd1234".into(),
            pwd: "0123456789abcdef0123456789abcdef".into(),
            candidates: vec![Candidate::new(
                CandidateKind::ServerReflexive,
                "198.18.0.11:4000".parse().unwrap(),
                65535,
            )],
        }
    }

    #[test]
    fn signed_offer_round_trips_and_is_checked() {
        let a = Identity::generate(&mut OsRng);
        let b = Identity::generate(&mut OsRng);
        let o = offer(&a, b.fingerprint());
        let bytes = o.sign(&a);
        let back = Signal::verify(&bytes).unwrap();
        assert_eq!(back, o);
        assert_eq!(Signal::recipient(&bytes), Some(b.fingerprint()));
        assert_eq!(Signal::recipient(&bytes[..100]), None);
        assert_eq!(back.check_offer(&b.fingerprint(), 1_000_500), Ok(()));
        assert_eq!(
            back.check_offer(&a.fingerprint(), 1_000_500),
            Err(SignalError::NotForUs)
        );
        assert_eq!(
            back.check_offer(&b.fingerprint(), 1_000_000 + MAX_CLOCK_SKEW_MS + 1),
            Err(SignalError::Stale)
        );
        assert_eq!(
            back.check_answer(&b.fingerprint(), &a.fingerprint(), &[3; 8], 1_000_000),
            Err(SignalError::Unexpected)
        );
    }

    #[test]
    fn a_forwarder_cannot_alter_a_signal() {
        let a = Identity::generate(&mut OsRng);
        let b = Identity::generate(&mut OsRng);
        let bytes = offer(&a, b.fingerprint()).sign(&a);
        // Change the candidate's port (inside the body).
        let body_len = bytes.len() - SIGNATURE_LEN;
        let mut altered = bytes.clone();
        altered[body_len - 1] ^= 1;
        assert_eq!(Signal::verify(&altered), Err(SignalError::BadSignature));
        // Swap in another key: the signature no longer matches it.
        let mut swapped = bytes.clone();
        swapped[1..1 + PUBLIC_KEY_LEN].copy_from_slice(b.public_key().as_bytes());
        assert_eq!(Signal::verify(&swapped), Err(SignalError::BadSignature));
        assert!(matches!(
            Signal::verify(&bytes[..100]),
            Err(SignalError::Malformed(_))
        ));
    }
}

//! Session form: one ChaCha20-Poly1305 AEAD per message under directional keys from the key
//! exchange (spec/02-crypto.md §5).
//!
//! ```text
//! version u8 = 1 | form u8 = 1 | counter u64 | AEAD(plaintext message) | tag [16]
//! ```
//! The nonce is 4 zero bytes ‖ counter (big-endian); the 10 header bytes are the associated
//! data. Counters start at 0 and must arrive in order: a lower one is a replay, a higher one
//! a gap or reordering; both are refused without changing the session state.

use bytes::{BufMut, BytesMut};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::aead::{Aead, KeySetupError};
use super::message::{self, Message, MessageId, MessageKind, MESSAGE_HEADER_LEN};
use super::stream::StreamSecret;
use super::{Fingerprint, OpenError, SealError};

/// Envelope version byte (both forms).
pub const ENVELOPE_VERSION: u8 = 1;
/// Form byte of the session form.
pub const FORM_SESSION: u8 = 1;
/// Form byte of the sealed form.
pub const FORM_SEALED: u8 = 2;
/// Session-form header: version, form, counter.
pub const SESSION_HEADER_LEN: usize = 10;
/// AEAD tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a session-form envelope adds to the body.
pub const SESSION_OVERHEAD: usize = SESSION_HEADER_LEN + MESSAGE_HEADER_LEN + TAG_LEN;

fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// An established end-to-end session with one peer.
#[derive(Clone)]
pub struct Session {
    local: Fingerprint,
    peer: Fingerprint,
    id: [u8; 16],
    send: Aead,
    recv: Aead,
    next_send: u64,
    next_recv: u64,
    /// The secret of this session's application streams (spec/02-crypto.md §5.3).
    streams: StreamSecret,
}

impl Session {
    /// Derives the session from the key exchange's shared key and transcript hash.
    pub(crate) fn derive(
        local: Fingerprint,
        peer: Fingerprint,
        initiator: bool,
        shared: &[u8; 32],
        transcript: &[u8; 32],
    ) -> Result<Session, KeySetupError> {
        let hk = Hkdf::<Sha256>::new(Some(transcript), shared);
        let mut i2r = Zeroizing::new([0u8; 32]);
        let mut r2i = Zeroizing::new([0u8; 32]);
        let mut id = [0u8; 16];
        // Output lengths are far below HKDF's 255·32-byte limit: expand cannot fail.
        let _ = hk.expand(b"dna/session/v1 i2r", &mut i2r[..]);
        let _ = hk.expand(b"dna/session/v1 r2i", &mut r2i[..]);
        let _ = hk.expand(b"dna/session/v1 id", &mut id);
        let mut streams = Zeroizing::new([0u8; 32]);
        let _ = hk.expand(b"dna/session/v1 streams", &mut streams[..]);
        let (send, recv) = if initiator {
            (&i2r, &r2i)
        } else {
            (&r2i, &i2r)
        };
        Ok(Session {
            local,
            peer,
            id,
            send: Aead::new(send)?,
            recv: Aead::new(recv)?,
            next_send: 0,
            next_recv: 0,
            streams: StreamSecret(streams),
        })
    }

    /// The secret this session's application streams derive their keys from.
    pub fn stream_secret(&self) -> StreamSecret {
        self.streams.clone()
    }

    /// Our fingerprint.
    pub fn local(&self) -> Fingerprint {
        self.local
    }

    /// The authenticated peer's fingerprint.
    pub fn peer(&self) -> Fingerprint {
        self.peer
    }

    /// A 128-bit session identifier both sides derive identically.
    pub fn id(&self) -> [u8; 16] {
        self.id
    }

    /// The counter the next sealed message will carry.
    pub fn next_send_counter(&self) -> u64 {
        self.next_send
    }

    /// Appends the session-form envelope of a message to the peer to `out`: one AEAD, no
    /// copy of the body beyond writing it into `out`.
    pub fn seal(
        &mut self,
        id: MessageId,
        timestamp_ms: u64,
        kind: MessageKind,
        body: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), SealError> {
        let counter = self.next_send;
        if counter == u64::MAX {
            return Err(SealError::CounterExhausted);
        }
        let start = out.len();
        out.reserve(SESSION_OVERHEAD + body.len());
        out.put_u8(ENVELOPE_VERSION);
        out.put_u8(FORM_SESSION);
        out.put_u64(counter);
        message::encode(out, &self.local, &self.peer, &id, timestamp_ms, kind, body);
        let (aad, plain) = out[start..].split_at_mut(SESSION_HEADER_LEN);
        let Some(tag) = self.send.seal(nonce(counter), aad, plain) else {
            out.truncate(start);
            return Err(SealError::TooLarge);
        };
        out.put_slice(&tag);
        self.next_send += 1;
        Ok(())
    }

    /// Opens a session-form envelope from the peer, decrypting in place. Checks, in order:
    /// length, version, form, counter, AEAD tag, then the sender and recipient named inside.
    pub fn open(&mut self, mut envelope: BytesMut) -> Result<Message, OpenError> {
        let (counter, tag) = self.check(&envelope)?;
        envelope.truncate(envelope.len() - TAG_LEN);
        let (aad, ciphertext) = envelope.split_at_mut(SESSION_HEADER_LEN);
        if !self.recv.open(nonce(counter), aad, ciphertext, tag) {
            return Err(OpenError::TamperedCiphertext);
        }
        self.next_recv = counter + 1;
        self.check_names(message::parse(envelope.split_off(SESSION_HEADER_LEN))?)
    }

    /// As [`Session::open`], for an envelope the caller only lends (a slice of what the
    /// stream delivered): the ciphertext is copied once into a buffer of exactly the
    /// plaintext's size, decrypted there, and the body is a view of that buffer — one
    /// allocation per message.
    pub fn open_slice(&mut self, envelope: &[u8]) -> Result<Message, OpenError> {
        let (counter, tag) = self.check(envelope)?;
        let aad = &envelope[..SESSION_HEADER_LEN];
        let mut plain = envelope[SESSION_HEADER_LEN..envelope.len() - TAG_LEN].to_vec();
        if !self.recv.open(nonce(counter), aad, &mut plain, tag) {
            return Err(OpenError::TamperedCiphertext);
        }
        self.next_recv = counter + 1;
        self.check_names(message::parse_vec(plain)?)
    }

    /// The checks before the AEAD: length, version, form, counter. Returns the counter and
    /// the tag.
    fn check(&self, envelope: &[u8]) -> Result<(u64, [u8; TAG_LEN]), OpenError> {
        if envelope.len() < SESSION_OVERHEAD {
            return Err(OpenError::Truncated {
                needed: SESSION_OVERHEAD,
                available: envelope.len(),
            });
        }
        if envelope[0] != ENVELOPE_VERSION {
            return Err(OpenError::UnsupportedVersion { found: envelope[0] });
        }
        if envelope[1] != FORM_SESSION {
            return Err(OpenError::WrongForm {
                expected: FORM_SESSION,
                found: envelope[1],
            });
        }
        let mut c = [0u8; 8];
        c.copy_from_slice(&envelope[2..SESSION_HEADER_LEN]);
        let counter = u64::from_be_bytes(c);
        let expected = self.next_recv;
        if counter < expected {
            return Err(OpenError::ReplayedCounter { counter, expected });
        }
        if counter > expected {
            return Err(OpenError::OutOfOrder { counter, expected });
        }
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&envelope[envelope.len() - TAG_LEN..]);
        Ok((counter, tag))
    }

    /// The sender and recipient named inside must be the session's.
    fn check_names(&self, msg: Message) -> Result<Message, OpenError> {
        if msg.sender != self.peer {
            return Err(OpenError::WrongSender {
                expected: self.peer,
                found: msg.sender,
            });
        }
        if msg.recipient != self.local {
            return Err(OpenError::WrongRecipient {
                expected: self.local,
                found: msg.recipient,
            });
        }
        Ok(msg)
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .field("next_send", &self.next_send)
            .field("next_recv", &self.next_recv)
            .finish_non_exhaustive()
    }
}

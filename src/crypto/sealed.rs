//! Sealed form: a message for an offline recipient, sealed to their published KEM key and
//! signed by the sender (spec/02-crypto.md §6).
//!
//! ```text
//! version u8 = 1 | form u8 = 2 | sender pk [1952] | recipient fp [32] | KEM ct [1120]
//!   | AEAD(plaintext message) | tag [16] | signature [3309]
//! ```
//! The AEAD key is HKDF-SHA256(salt = SHA-256(domain ‖ prefix), ikm = hybrid KEM key), used
//! once, nonce zero; the associated data is the prefix (everything before the ciphertext).
//! The signature covers everything before it, so a storing node can check who sent an
//! item (and that it is intact) without being able to read it.

use bytes::BytesMut;
use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::aead::{Aead, KeySetupError};
use super::identity::{PublicKey, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use super::kem::{KemPublicKey, KEM_CIPHERTEXT_LEN};
use super::message::{self, Message, MessageId, MessageKind, MESSAGE_HEADER_LEN};
use super::session::{ENVELOPE_VERSION, FORM_SEALED, TAG_LEN};
use super::{Fingerprint, Identity, OpenError, SealError};

pub(crate) const DOMAIN_SIGNATURE: &[u8] = b"dna/sealed/v1";
const DOMAIN_SALT: &[u8] = b"dna/sealed/v1/salt";
const INFO_KEY: &[u8] = b"dna/sealed/v1 key";

mod field {
    use super::*;
    pub const SENDER: std::ops::Range<usize> = 2..2 + PUBLIC_KEY_LEN;
    pub const RECIPIENT: std::ops::Range<usize> = SENDER.end..SENDER.end + 32;
    pub const KEM_CT: std::ops::Range<usize> = RECIPIENT.end..RECIPIENT.end + KEM_CIPHERTEXT_LEN;
    /// Start of the AEAD ciphertext; everything before is the prefix.
    pub const PREFIX_LEN: usize = KEM_CT.end;
}

/// Smallest sealed envelope (empty body).
pub const SEALED_MIN_LEN: usize = field::PREFIX_LEN + MESSAGE_HEADER_LEN + TAG_LEN + SIGNATURE_LEN;
/// Bytes a sealed envelope adds to the body.
pub const SEALED_OVERHEAD: usize = SEALED_MIN_LEN;

fn aead(shared: &[u8; 32], prefix: &[u8]) -> Result<Aead, KeySetupError> {
    let salt: [u8; 32] = {
        let mut h = Sha256::new();
        h.update(DOMAIN_SALT);
        h.update(prefix);
        h.finalize().into()
    };
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF's output limit: expand cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(&salt), shared).expand(INFO_KEY, &mut key[..]);
    Aead::new(&key)
}

/// Seals a message to `recipient`, whose published KEM key is `recipient_kem`.
#[allow(clippy::too_many_arguments)] // the plaintext's fields (spec/02 §4), one by one
pub fn seal(
    sender: &Identity,
    recipient: Fingerprint,
    recipient_kem: &KemPublicKey,
    id: MessageId,
    timestamp_ms: u64,
    kind: MessageKind,
    body: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, SealError> {
    let (shared, ct) = recipient_kem.encapsulate(rng)?;
    let mut out = BytesMut::with_capacity(SEALED_OVERHEAD + body.len());
    out.extend_from_slice(&[ENVELOPE_VERSION, FORM_SEALED]);
    out.extend_from_slice(sender.public_key().as_bytes());
    out.extend_from_slice(&recipient.0);
    out.extend_from_slice(&ct);
    message::encode(
        &mut out,
        &sender.fingerprint(),
        &recipient,
        &id,
        timestamp_ms,
        kind,
        body,
    );
    let (prefix, plain) = out.split_at_mut(field::PREFIX_LEN);
    let tag = aead(&shared, prefix)?
        .seal([0; 12], prefix, plain)
        .ok_or(SealError::TooLarge)?;
    out.extend_from_slice(&tag);
    let sig = sender.sign(DOMAIN_SIGNATURE, &[&out]);
    out.extend_from_slice(&sig);
    Ok(out.to_vec())
}

/// The clear parts of a sealed envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedHeader {
    /// The sender's public key (its fingerprint is the sender's ID).
    pub sender: PublicKey,
    /// The recipient's fingerprint.
    pub recipient: Fingerprint,
}

/// Parses the clear header without checking the signature.
pub fn inspect(bytes: &[u8]) -> Result<SealedHeader, OpenError> {
    if bytes.len() < SEALED_MIN_LEN {
        return Err(OpenError::Truncated {
            needed: SEALED_MIN_LEN,
            available: bytes.len(),
        });
    }
    if bytes[0] != ENVELOPE_VERSION {
        return Err(OpenError::UnsupportedVersion { found: bytes[0] });
    }
    if bytes[1] != FORM_SEALED {
        return Err(OpenError::WrongForm {
            expected: FORM_SEALED,
            found: bytes[1],
        });
    }
    let sender =
        PublicKey::from_bytes(&bytes[field::SENDER]).map_err(|_| OpenError::BadSenderKey)?;
    let mut recipient = [0u8; 32];
    recipient.copy_from_slice(&bytes[field::RECIPIENT]);
    Ok(SealedHeader {
        sender,
        recipient: Fingerprint(recipient),
    })
}

/// Parses the clear header and checks the sender's signature: what a storing node does.
pub fn verify_sender(bytes: &[u8]) -> Result<SealedHeader, OpenError> {
    let header = inspect(bytes)?;
    let (signed, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
    header
        .sender
        .verify(DOMAIN_SIGNATURE, &[signed], sig)
        .map_err(|_| OpenError::BadSignature)?;
    Ok(header)
}

/// Opens a sealed envelope addressed to `recipient`. Checks, in order: structure, that it is
/// addressed to us, the sender's signature, the AEAD, and that the plaintext names the same
/// sender and recipient as the clear header. Returns the message and the sender's key.
pub fn open(recipient: &Identity, bytes: &[u8]) -> Result<(Message, PublicKey), OpenError> {
    let header = inspect(bytes)?;
    if header.recipient != recipient.fingerprint() {
        return Err(OpenError::WrongRecipient {
            expected: recipient.fingerprint(),
            found: header.recipient,
        });
    }
    let header = verify_sender(bytes)?;
    let mut ct = [0u8; KEM_CIPHERTEXT_LEN];
    ct.copy_from_slice(&bytes[field::KEM_CT]);
    let shared = recipient.kem_pair().decapsulate(&ct)?;
    let prefix = &bytes[..field::PREFIX_LEN];
    let tag_at = bytes.len() - SIGNATURE_LEN - TAG_LEN;
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&bytes[tag_at..tag_at + TAG_LEN]);
    let mut plain = BytesMut::from(&bytes[field::PREFIX_LEN..tag_at]);
    if !aead(&shared, prefix)?.open([0; 12], prefix, &mut plain, tag) {
        return Err(OpenError::TamperedCiphertext);
    }
    let msg = message::parse(plain)?;
    if msg.sender != header.sender.fingerprint() {
        return Err(OpenError::WrongSender {
            expected: header.sender.fingerprint(),
            found: msg.sender,
        });
    }
    if msg.recipient != header.recipient {
        return Err(OpenError::WrongRecipient {
            expected: header.recipient,
            found: msg.recipient,
        });
    }
    Ok((msg, header.sender))
}

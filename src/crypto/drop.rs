//! Contact drops (spec/09-mailbox.md §1.1): the mailbox only a recipient's contacts can
//! write to, and storing nodes cannot tie to the recipient.
//!
//! A drop is a secondary identity `M` (its own Dilithium key pair, made at random) and a
//! 32-byte wrap secret. The recipient gives both to each contact it accepts (a message of
//! kind [`MessageKind::DROP`](super::MessageKind::DROP), body [`ContactDrop::encode`]).
//! A contact puts an offline message as a `MailboxDrop` record signed by `M` under
//! `drop_key(M)` (so storing nodes check it like any self-certifying record), whose value
//! is the sealed envelope wrapped under the secret:
//!
//! ```text
//! version u8 = 1 | nonce [12] | ChaCha20-Poly1305(key, nonce, aad = fp(M) ‖ item u64 BE)
//!   (sealed envelope) | tag [16]
//! key = HKDF-SHA256(ikm = wrap secret, info = "dna/drop/v1 wrap")
//! ```
//! Storing nodes see `M`, the item numbers, sizes and times — not the recipient (the key
//! derives from `M`), nor the sender (inside the wrapped envelope).

use std::path::Path;

use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::Sha256;
use thiserror::Error;
use zeroize::Zeroizing;

use super::aead::{Aead, TAG_LEN};
use super::keyfile::{IdentityFileError, KEY_FILE_LEN};
use super::{Fingerprint, Identity, NodeId};

/// The drop format's version (the first byte of an encoded drop and of a wrapped value).
pub const DROP_VERSION: u8 = 1;
/// Bytes wrapping adds to a sealed envelope: version, nonce, tag.
pub const WRAP_OVERHEAD: usize = 1 + 12 + TAG_LEN;
/// Length of an encoded drop: version, wrap secret, the identity in key-file form.
pub const DROP_LEN: usize = 1 + 32 + KEY_FILE_LEN;

const INFO_WRAP: &[u8] = b"dna/drop/v1 wrap";

/// The key a contact drop's items and receipt live under: H160("dna/drop" ‖ fingerprint
/// of the drop's identity). Another domain than `record::mailbox_key`, so no mailbox item
/// can land under a drop key.
pub fn drop_key(drop: &Fingerprint) -> NodeId {
    NodeId::derive(b"dna/drop", &[&drop.0])
}

/// Why a drop or a wrapped value was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DropError {
    /// Not `DROP_LEN` bytes, or an unknown version.
    #[error("not a contact drop ({0} bytes or unknown version)")]
    Malformed(usize),
    /// The identity inside does not load.
    #[error("contact drop: {0}")]
    Identity(#[from] IdentityFileError),
    /// A wrapped value too short, of an unknown version, or whose tag does not verify.
    #[error("wrapped mailbox item does not open")]
    Unwrap,
    /// The AEAD refused (cannot happen for inputs within the mailbox limits).
    #[error("cannot wrap the mailbox item")]
    Wrap,
}

/// A contact drop: see the module documentation.
pub struct ContactDrop {
    identity: Identity,
    secret: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ContactDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactDrop")
            .field("id", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl ContactDrop {
    /// A new drop, at random.
    pub fn generate(rng: &mut impl CryptoRngCore) -> ContactDrop {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut secret[..]);
        ContactDrop {
            identity: Identity::generate(rng),
            secret,
        }
    }

    /// The drop's identity `M` (it signs the drop's records).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// `M`'s fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.identity.fingerprint()
    }

    /// The DHT key the drop's items live under: `drop_key(M)`.
    pub fn key(&self) -> NodeId {
        drop_key(&self.fingerprint())
    }

    /// The drop as handed to a contact (secret: it lets the holder write to the drop).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(DROP_LEN));
        v.push(DROP_VERSION);
        v.extend_from_slice(&self.secret[..]);
        v.extend_from_slice(&self.identity.to_key_bytes());
        v
    }

    /// A drop from [`ContactDrop::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<ContactDrop, DropError> {
        if bytes.len() != DROP_LEN || bytes[0] != DROP_VERSION {
            return Err(DropError::Malformed(bytes.len()));
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&bytes[1..33]);
        let identity = Identity::from_key_bytes(Path::new("<contact drop>"), &bytes[33..])?;
        Ok(ContactDrop { identity, secret })
    }

    fn aead(&self) -> Result<Aead, DropError> {
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF's output limit: expand cannot fail.
        let _ = Hkdf::<Sha256>::new(None, &self.secret[..]).expand(INFO_WRAP, &mut key[..]);
        Aead::new(&key).map_err(|_| DropError::Wrap)
    }

    fn aad(&self, item: u64) -> [u8; 40] {
        let mut aad = [0u8; 40];
        aad[..32].copy_from_slice(&self.fingerprint().0);
        aad[32..].copy_from_slice(&item.to_be_bytes());
        aad
    }

    /// Wraps a sealed envelope for item number `item` (a random nonce each time).
    pub fn wrap(
        &self,
        item: u64,
        sealed: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<u8>, DropError> {
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let mut v = Vec::with_capacity(WRAP_OVERHEAD + sealed.len());
        v.push(DROP_VERSION);
        v.extend_from_slice(&nonce);
        v.extend_from_slice(sealed);
        let tag = self
            .aead()?
            .seal(nonce, &self.aad(item), &mut v[13..])
            .ok_or(DropError::Wrap)?;
        v.extend_from_slice(&tag);
        Ok(v)
    }

    /// The sealed envelope inside a value [`ContactDrop::wrap`] made for item `item`.
    pub fn unwrap(&self, item: u64, value: &[u8]) -> Result<Vec<u8>, DropError> {
        if value.len() < WRAP_OVERHEAD || value[0] != DROP_VERSION {
            return Err(DropError::Unwrap);
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&value[1..13]);
        let (body, tag) = value[13..].split_at(value.len() - 13 - TAG_LEN);
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(tag);
        let mut out = body.to_vec();
        if !self
            .aead()?
            .open(nonce, &self.aad(item), &mut out, tag_bytes)
        {
            return Err(DropError::Unwrap);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use rand_core::OsRng;

    use super::*;

    #[test]
    fn a_drop_survives_its_encoding_and_wraps_for_its_holders_only() {
        let d = ContactDrop::generate(&mut OsRng);
        let bytes = d.encode();
        assert_eq!(bytes.len(), DROP_LEN);
        let copy = ContactDrop::decode(&bytes).unwrap();
        assert_eq!(copy.fingerprint(), d.fingerprint());
        assert_eq!(copy.key(), drop_key(&d.fingerprint()));
        let wrapped = d.wrap(7, b"sealed envelope", &mut OsRng).unwrap();
        assert_eq!(wrapped.len(), WRAP_OVERHEAD + 15);
        assert_eq!(copy.unwrap(7, &wrapped).unwrap(), b"sealed envelope");
        // Another item number, another drop, a flipped bit: refused.
        assert!(copy.unwrap(8, &wrapped).is_err());
        let other = ContactDrop::generate(&mut OsRng);
        assert!(other.unwrap(7, &wrapped).is_err());
        let mut bad = wrapped.clone();
        bad[20] ^= 1;
        assert!(d.unwrap(7, &bad).is_err());
        // Malformed input is an error, not a panic.
        for n in [0, 1, WRAP_OVERHEAD - 1] {
            assert!(d.unwrap(7, &wrapped[..n]).is_err());
        }
        assert!(ContactDrop::decode(&bytes[..DROP_LEN - 1]).is_err());
        let mut v2 = bytes.to_vec();
        v2[0] = 2;
        assert!(ContactDrop::decode(&v2).is_err());
    }
}

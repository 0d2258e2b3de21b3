//! Identity: a Dilithium3 signing key pair plus a hybrid KEM key pair (spec/02-crypto.md §2).
//!
//! Signatures are made over a 32-byte digest, SHA-256(domain ‖ parts…), so each use has its
//! own domain string and large inputs are hashed once, without copying.

use pqcrypto_dilithium::dilithium3;
use pqcrypto_traits::sign::{DetachedSignature as _, PublicKey as _, SecretKey as _};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::kem::{KemKeyPair, KemPublicKey, KeyLengthError};
use super::Fingerprint;

/// Dilithium3 public key length.
pub const PUBLIC_KEY_LEN: usize = 1952;
/// Dilithium3 secret key length.
pub const SECRET_KEY_LEN: usize = 4032;
/// Dilithium3 signature length.
pub const SIGNATURE_LEN: usize = 3309;

/// A signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("signature does not verify")]
pub struct BadSignature;

/// The digest a signature covers: SHA-256(domain ‖ parts…).
pub(crate) fn signing_digest(domain: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain);
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// A Dilithium3 public key, with its fingerprint computed once.
#[derive(Clone)]
pub struct PublicKey {
    key: dilithium3::PublicKey,
    fingerprint: Fingerprint,
}

impl PublicKey {
    /// Parses an encoded public key (exactly 1952 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicKey, KeyLengthError> {
        let key = dilithium3::PublicKey::from_bytes(bytes).map_err(|_| KeyLengthError {
            what: "Dilithium3 public key",
            expected: PUBLIC_KEY_LEN,
            found: bytes.len(),
        })?;
        Ok(PublicKey {
            key,
            fingerprint: Fingerprint::of_public_key(bytes),
        })
    }

    /// The encoded key.
    pub fn as_bytes(&self) -> &[u8] {
        self.key.as_bytes()
    }

    /// SHA-256 of the encoded key.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Verifies `signature` over SHA-256(`domain` ‖ `parts`…).
    pub fn verify(
        &self,
        domain: &[u8],
        parts: &[&[u8]],
        signature: &[u8],
    ) -> Result<(), BadSignature> {
        let sig = dilithium3::DetachedSignature::from_bytes(signature).map_err(|_| BadSignature)?;
        let digest = signing_digest(domain, parts);
        dilithium3::verify_detached_signature(&sig, &digest, &self.key).map_err(|_| BadSignature)
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({:?})", self.fingerprint)
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for PublicKey {}

/// A node's or user's identity: the Dilithium3 key pair that names it and the hybrid KEM
/// key pair that others seal mailbox messages to.
pub struct Identity {
    public: PublicKey,
    secret: dilithium3::SecretKey,
    kem: KemKeyPair,
}

impl Identity {
    /// Generates a new identity. Dilithium3 and ML-KEM key generation draw from the OS RNG
    /// inside pqcrypto; `rng` supplies the X25519 key.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Identity {
        let (pk, secret) = dilithium3::keypair();
        let fingerprint = Fingerprint::of_public_key(pk.as_bytes());
        Identity {
            public: PublicKey {
                key: pk,
                fingerprint,
            },
            secret,
            kem: KemKeyPair::generate(rng),
        }
    }

    /// Reassembles an identity from its parts (key file). Checks that the Dilithium halves
    /// belong together by signing and verifying a test digest.
    pub(crate) fn from_parts(
        public: &[u8],
        secret: &[u8],
        kem: KemKeyPair,
    ) -> Result<Identity, IdentityPartsError> {
        let public = PublicKey::from_bytes(public)?;
        let secret = dilithium3::SecretKey::from_bytes(secret).map_err(|_| KeyLengthError {
            what: "Dilithium3 secret key",
            expected: SECRET_KEY_LEN,
            found: secret.len(),
        })?;
        let id = Identity {
            public,
            secret,
            kem,
        };
        let probe = id.sign(b"dna/identity-check/v1", &[]);
        id.public
            .verify(b"dna/identity-check/v1", &[], &probe)
            .map_err(|_| IdentityPartsError::SigningPairMismatch)?;
        if !id.kem.is_consistent() {
            return Err(IdentityPartsError::KemPairMismatch);
        }
        Ok(id)
    }

    /// The public signing key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The fingerprint (user ID).
    pub fn fingerprint(&self) -> Fingerprint {
        self.public.fingerprint
    }

    /// The KEM public key others seal to (published in a `KemKey` record).
    pub fn kem_public(&self) -> &KemPublicKey {
        self.kem.public()
    }

    pub(crate) fn kem_pair(&self) -> &KemKeyPair {
        &self.kem
    }

    pub(crate) fn secret_bytes(&self) -> &[u8] {
        self.secret.as_bytes()
    }

    /// Signs SHA-256(`domain` ‖ `parts`…). Returns the 3309-byte signature.
    pub fn sign(&self, domain: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let digest = signing_digest(domain, parts);
        dilithium3::detached_sign(&digest, &self.secret)
            .as_bytes()
            .to_vec()
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.public.fingerprint)
    }
}

/// Key material does not form a valid identity.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IdentityPartsError {
    /// A key has the wrong length.
    #[error(transparent)]
    Length(#[from] KeyLengthError),
    /// The Dilithium secret key does not match the public key.
    #[error("the Dilithium3 secret key does not belong to the public key")]
    SigningPairMismatch,
    /// The KEM secret key does not match the KEM public key.
    #[error("the KEM secret key does not belong to the KEM public key")]
    KemPairMismatch,
}

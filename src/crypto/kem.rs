//! Hybrid KEM: ML-KEM-768 + X25519 (spec/02-crypto.md §3).
//!
//! The shared key is SHA-256(label ‖ ss_mlkem ‖ ss_x25519 ‖ ct_x25519 ‖ pk_x25519), the
//! X-Wing combiner shape: secure if either component is. ML-KEM key generation and
//! encapsulation draw from the OS RNG inside pqcrypto; the X25519 halves use the caller's
//! RNG.

use pqcrypto_mlkem::mlkem768;
use pqcrypto_traits::kem::{Ciphertext as _, PublicKey as _, SecretKey as _, SharedSecret as _};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use thiserror::Error;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};
use zeroize::Zeroizing;

/// Bytes are not a key of the expected form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{what}: expected {expected} bytes, got {found}")]
pub struct KeyLengthError {
    /// Which key.
    pub what: &'static str,
    /// Required length.
    pub expected: usize,
    /// Length given.
    pub found: usize,
}

/// ML-KEM-768 public key length.
pub const MLKEM_PUBLIC_KEY_LEN: usize = 1184;
/// ML-KEM-768 secret key length.
pub const MLKEM_SECRET_KEY_LEN: usize = 2400;
/// ML-KEM-768 ciphertext length.
pub const MLKEM_CIPHERTEXT_LEN: usize = 1088;
/// Hybrid public key: ML-KEM-768 key ‖ X25519 key.
pub const KEM_PUBLIC_KEY_LEN: usize = MLKEM_PUBLIC_KEY_LEN + 32;
/// Hybrid ciphertext: ML-KEM-768 ciphertext ‖ X25519 ephemeral key.
pub const KEM_CIPHERTEXT_LEN: usize = MLKEM_CIPHERTEXT_LEN + 32;

const COMBINER_LABEL: &[u8] = b"dna/hybrid-kem/v1";

/// A 32-byte shared key, wiped on drop.
pub(crate) type SharedKey = Zeroizing<[u8; 32]>;

/// The X25519 half produced an all-zero (non-contributory) shared secret: the peer's key is
/// a low-order point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("X25519 key agreement was not contributory (low-order public key)")]
pub struct NonContributory;

/// A hybrid KEM public key.
#[derive(Clone)]
pub struct KemPublicKey {
    mlkem: mlkem768::PublicKey,
    x25519: XPublic,
}

impl KemPublicKey {
    /// Parses `mlkem ‖ x25519` (exactly 1216 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<KemPublicKey, KeyLengthError> {
        let err = KeyLengthError {
            what: "hybrid KEM public key",
            expected: KEM_PUBLIC_KEY_LEN,
            found: bytes.len(),
        };
        if bytes.len() != KEM_PUBLIC_KEY_LEN {
            return Err(err);
        }
        let (m, x) = bytes.split_at(MLKEM_PUBLIC_KEY_LEN);
        let mlkem = mlkem768::PublicKey::from_bytes(m).map_err(|_| err)?;
        let x: [u8; 32] = x.try_into().map_err(|_| err)?;
        Ok(KemPublicKey {
            mlkem,
            x25519: XPublic::from(x),
        })
    }

    /// The encoding, `mlkem ‖ x25519`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(KEM_PUBLIC_KEY_LEN);
        v.extend_from_slice(self.mlkem.as_bytes());
        v.extend_from_slice(self.x25519.as_bytes());
        v
    }

    /// Encapsulates a fresh shared key to this public key. Returns the key and the
    /// 1120-byte ciphertext.
    pub(crate) fn encapsulate(
        &self,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(SharedKey, [u8; KEM_CIPHERTEXT_LEN]), NonContributory> {
        let (ss_m, ct_m) = mlkem768::encapsulate(&self.mlkem);
        let eph = StaticSecret::random_from_rng(&mut *rng);
        let eph_pub = XPublic::from(&eph);
        let ss_x = eph.diffie_hellman(&self.x25519);
        if !ss_x.was_contributory() {
            return Err(NonContributory);
        }
        let mut ct = [0u8; KEM_CIPHERTEXT_LEN];
        ct[..MLKEM_CIPHERTEXT_LEN].copy_from_slice(ct_m.as_bytes());
        ct[MLKEM_CIPHERTEXT_LEN..].copy_from_slice(eph_pub.as_bytes());
        let key = combine(
            ss_m.as_bytes(),
            ss_x.as_bytes(),
            eph_pub.as_bytes(),
            self.x25519.as_bytes(),
        );
        Ok((key, ct))
    }
}

impl PartialEq for KemPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.mlkem.as_bytes() == other.mlkem.as_bytes() && self.x25519 == other.x25519
    }
}
impl Eq for KemPublicKey {}

impl std::fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KemPublicKey(x25519={})",
            hex::encode(&self.x25519.as_bytes()[..6])
        )
    }
}

fn combine(ss_m: &[u8], ss_x: &[u8], ct_x: &[u8], pk_x: &[u8]) -> SharedKey {
    let mut h = Sha256::new();
    h.update(COMBINER_LABEL);
    h.update(ss_m);
    h.update(ss_x);
    h.update(ct_x);
    h.update(pk_x);
    Zeroizing::new(h.finalize().into())
}

/// A hybrid KEM key pair.
pub struct KemKeyPair {
    public: KemPublicKey,
    mlkem_secret: mlkem768::SecretKey,
    x25519_secret: StaticSecret,
}

impl KemKeyPair {
    /// Generates a key pair.
    pub fn generate(rng: &mut impl CryptoRngCore) -> KemKeyPair {
        let (pk, sk) = mlkem768::keypair();
        let x = StaticSecret::random_from_rng(rng);
        KemKeyPair {
            public: KemPublicKey {
                mlkem: pk,
                x25519: XPublic::from(&x),
            },
            mlkem_secret: sk,
            x25519_secret: x,
        }
    }

    /// The public half.
    pub fn public(&self) -> &KemPublicKey {
        &self.public
    }

    /// Reassembles a key pair from `public` (1216 bytes), the ML-KEM secret key and the
    /// X25519 secret scalar.
    pub(crate) fn from_parts(
        public: &[u8],
        mlkem_secret: &[u8],
        x25519_secret: [u8; 32],
    ) -> Result<KemKeyPair, KeyLengthError> {
        let public = KemPublicKey::from_bytes(public)?;
        let mlkem_secret =
            mlkem768::SecretKey::from_bytes(mlkem_secret).map_err(|_| KeyLengthError {
                what: "ML-KEM-768 secret key",
                expected: MLKEM_SECRET_KEY_LEN,
                found: mlkem_secret.len(),
            })?;
        Ok(KemKeyPair {
            public,
            mlkem_secret,
            x25519_secret: StaticSecret::from(x25519_secret),
        })
    }

    pub(crate) fn mlkem_secret_bytes(&self) -> &[u8] {
        self.mlkem_secret.as_bytes()
    }

    pub(crate) fn x25519_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.x25519_secret.to_bytes())
    }

    /// Whether the secret halves belong to the public halves.
    pub(crate) fn is_consistent(&self) -> bool {
        if XPublic::from(&self.x25519_secret) != self.public.x25519 {
            return false;
        }
        let (ss, ct) = mlkem768::encapsulate(&self.public.mlkem);
        let back = mlkem768::decapsulate(&ct, &self.mlkem_secret);
        ss.as_bytes() == back.as_bytes()
    }

    /// Recovers the shared key from a 1120-byte ciphertext. A wrong ML-KEM ciphertext yields
    /// an unrelated key (implicit rejection); the AEAD that uses it then fails.
    pub(crate) fn decapsulate(
        &self,
        ct: &[u8; KEM_CIPHERTEXT_LEN],
    ) -> Result<SharedKey, NonContributory> {
        let (ct_m, ct_x) = ct.split_at(MLKEM_CIPHERTEXT_LEN);
        // Length is fixed by the array type, so from_bytes cannot fail; map defensively.
        let ct_m = mlkem768::Ciphertext::from_bytes(ct_m).map_err(|_| NonContributory)?;
        let ss_m = mlkem768::decapsulate(&ct_m, &self.mlkem_secret);
        let mut eph = [0u8; 32];
        eph.copy_from_slice(ct_x);
        let ss_x = self.x25519_secret.diffie_hellman(&XPublic::from(eph));
        if !ss_x.was_contributory() {
            return Err(NonContributory);
        }
        Ok(combine(
            ss_m.as_bytes(),
            ss_x.as_bytes(),
            &eph,
            self.public.x25519.as_bytes(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn encapsulate_decapsulate_agree() {
        let pair = KemKeyPair::generate(&mut OsRng);
        let (k1, ct) = pair.public().encapsulate(&mut OsRng).unwrap();
        let k2 = pair.decapsulate(&ct).unwrap();
        assert_eq!(*k1, *k2);
        assert!(pair.is_consistent());
    }

    #[test]
    fn tampered_ciphertext_gives_another_key() {
        let pair = KemKeyPair::generate(&mut OsRng);
        let (k1, mut ct) = pair.public().encapsulate(&mut OsRng).unwrap();
        ct[5] ^= 1;
        assert_ne!(*k1, *pair.decapsulate(&ct).unwrap());
    }

    #[test]
    fn low_order_x25519_is_refused() {
        let pair = KemKeyPair::generate(&mut OsRng);
        let (_, mut ct) = pair.public().encapsulate(&mut OsRng).unwrap();
        ct[MLKEM_CIPHERTEXT_LEN..].fill(0);
        assert_eq!(pair.decapsulate(&ct).unwrap_err(), NonContributory);
    }

    #[test]
    fn public_key_round_trips() {
        let pair = KemKeyPair::generate(&mut OsRng);
        let bytes = pair.public().to_bytes();
        assert_eq!(bytes.len(), KEM_PUBLIC_KEY_LEN);
        assert_eq!(&KemPublicKey::from_bytes(&bytes).unwrap(), pair.public());
        assert!(KemPublicKey::from_bytes(&bytes[1..]).is_err());
    }
}

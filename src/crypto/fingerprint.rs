//! Fingerprints, DHT node IDs and derived DHT keys (spec/02-crypto.md §2).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Length of a fingerprint: SHA-256 of the Dilithium3 public key.
pub const FINGERPRINT_LEN: usize = 32;
/// Length of a DHT node ID or key: 160 bits.
pub const NODE_ID_LEN: usize = 20;

/// A user's ID: SHA-256 of their Dilithium3 public key. Shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; FINGERPRINT_LEN]);

impl Fingerprint {
    /// The fingerprint of an encoded public key.
    pub fn of_public_key(public_key: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(public_key).into())
    }

    /// The DHT node ID: the first 160 bits of the fingerprint.
    pub fn node_id(&self) -> NodeId {
        let mut id = [0u8; NODE_ID_LEN];
        id.copy_from_slice(&self.0[..NODE_ID_LEN]);
        NodeId(id)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; FINGERPRINT_LEN] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({}…)", &hex::encode(&self.0[..6]))
    }
}

/// A string is not a fingerprint (64 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a fingerprint: expected 64 hex digits")]
pub struct ParseFingerprintError;

impl FromStr for Fingerprint {
    type Err = ParseFingerprintError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; FINGERPRINT_LEN];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseFingerprintError)?;
        Ok(Fingerprint(out))
    }
}

/// A 160-bit Kademlia ID: a node's ID or a DHT key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; NODE_ID_LEN]);

impl NodeId {
    /// The first 160 bits of SHA-256(`domain` ‖ `parts`…): how every DHT key is derived.
    pub fn derive(domain: &[u8], parts: &[&[u8]]) -> NodeId {
        let mut h = Sha256::new();
        h.update(domain);
        for p in parts {
            h.update(p);
        }
        let digest = h.finalize();
        let mut id = [0u8; NODE_ID_LEN];
        id.copy_from_slice(&digest[..NODE_ID_LEN]);
        NodeId(id)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({}…)", &hex::encode(&self.0[..6]))
    }
}

//! HELLO: binds a QUIC connection to both ends' Dilithium identities (spec/03-session.md §2).
//!
//! ```text
//! version u8 = 1 | role u8 (0 = dialer, 1 = listener) | pk [1952] | sig [3309]
//! sig = Dilithium over H("dna/hello/v1" ‖ exporter [32] ‖ role)
//! ```
//! `exporter` is the TLS 1.3 exporter secret of this connection (label
//! `EXPORTER-dna-hello-v1`, no context). A man in the middle runs two TLS sessions with two
//! different exporters, so it cannot forward a HELLO from one to the other; the role byte
//! stops a peer from reflecting our own HELLO back at us.

use thiserror::Error;

use crate::crypto::{Fingerprint, Identity, PublicKey, PUBLIC_KEY_LEN, SIGNATURE_LEN};

/// The TLS exporter label.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-dna-hello-v1";
/// Length of the exporter secret.
pub const EXPORTER_LEN: usize = 32;
/// Length of a HELLO payload.
pub const HELLO_LEN: usize = 2 + PUBLIC_KEY_LEN + SIGNATURE_LEN;
const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"dna/hello/v1";

/// Which end of the QUIC connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We opened the connection.
    Dialer,
    /// We accepted it.
    Listener,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Dialer => 0,
            Role::Listener => 1,
        }
    }

    /// The other end's role.
    pub fn peer(self) -> Role {
        match self {
            Role::Dialer => Role::Listener,
            Role::Listener => Role::Dialer,
        }
    }
}

/// Why a HELLO was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HelloError {
    /// Wrong length.
    #[error("HELLO is {found} bytes, expected {HELLO_LEN}")]
    BadLength {
        /// Length given.
        found: usize,
    },
    /// Unknown version.
    #[error("unsupported HELLO version {found}")]
    UnsupportedVersion {
        /// Version byte.
        found: u8,
    },
    /// The role byte is not the peer's role (reflected or confused HELLO).
    #[error("HELLO claims the wrong role")]
    WrongRole,
    /// Malformed public key.
    #[error("malformed public key")]
    BadKey,
    /// Not the identity the dialer asked for.
    #[error("peer is {found}, expected {expected}")]
    UnexpectedPeer {
        /// The fingerprint dialed.
        expected: Fingerprint,
        /// The fingerprint presented.
        found: Fingerprint,
    },
    /// Not the DHT node dialed.
    #[error("peer {found} is not DHT node {expected}")]
    UnexpectedNode {
        /// The node ID dialed.
        expected: crate::crypto::NodeId,
        /// The fingerprint presented.
        found: Fingerprint,
    },
    /// The signature does not verify over this connection's exporter.
    #[error("HELLO signature does not verify for this connection")]
    BadSignature,
}

/// Our HELLO payload for a connection with `exporter`, in `role`.
pub fn hello(identity: &Identity, exporter: &[u8; EXPORTER_LEN], role: Role) -> Vec<u8> {
    let mut v = Vec::with_capacity(HELLO_LEN);
    v.push(VERSION);
    v.push(role.byte());
    v.extend_from_slice(identity.public_key().as_bytes());
    v.extend_from_slice(&identity.sign(DOMAIN, &[exporter, &[role.byte()]]));
    v
}

/// Verifies the peer's HELLO; `our_role` is our role, `expected` the fingerprint we dialed.
pub fn verify_hello(
    payload: &[u8],
    exporter: &[u8; EXPORTER_LEN],
    our_role: Role,
    expected: Option<Fingerprint>,
) -> Result<PublicKey, HelloError> {
    let pk = verify_hello_any(payload, exporter, our_role)?;
    if let Some(expected) = expected {
        if pk.fingerprint() != expected {
            return Err(HelloError::UnexpectedPeer {
                expected,
                found: pk.fingerprint(),
            });
        }
    }
    Ok(pk)
}

/// Verifies the peer's HELLO when only its DHT node ID (the first 160 bits of its
/// fingerprint) is known, as for a contact learned from the DHT.
pub fn verify_hello_node(
    payload: &[u8],
    exporter: &[u8; EXPORTER_LEN],
    our_role: Role,
    expected: crate::crypto::NodeId,
) -> Result<PublicKey, HelloError> {
    let pk = verify_hello_any(payload, exporter, our_role)?;
    if pk.fingerprint().node_id() != expected {
        return Err(HelloError::UnexpectedNode {
            expected,
            found: pk.fingerprint(),
        });
    }
    Ok(pk)
}

fn verify_hello_any(
    payload: &[u8],
    exporter: &[u8; EXPORTER_LEN],
    our_role: Role,
) -> Result<PublicKey, HelloError> {
    if payload.len() != HELLO_LEN {
        return Err(HelloError::BadLength {
            found: payload.len(),
        });
    }
    if payload[0] != VERSION {
        return Err(HelloError::UnsupportedVersion { found: payload[0] });
    }
    let role = our_role.peer().byte();
    if payload[1] != role {
        return Err(HelloError::WrongRole);
    }
    let pk_end = 2 + PUBLIC_KEY_LEN;
    let pk = PublicKey::from_bytes(&payload[2..pk_end]).map_err(|_| HelloError::BadKey)?;
    pk.verify(DOMAIN, &[exporter, &[role]], &payload[pk_end..])
        .map_err(|_| HelloError::BadSignature)?;
    Ok(pk)
}

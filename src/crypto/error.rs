//! Errors of opening protected messages and of the key exchange (spec/02-crypto.md §7).

use thiserror::Error;

use super::aead::KeySetupError;
use super::kem::NonContributory;
use super::Fingerprint;

/// Why a protected message (session or sealed form) could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Shorter than its fixed parts.
    #[error("truncated envelope: need {needed} bytes, have {available}")]
    Truncated {
        /// Minimum length.
        needed: usize,
        /// Length given.
        available: usize,
    },
    /// Unknown envelope or plaintext version.
    #[error("unsupported version {found}")]
    UnsupportedVersion {
        /// The version byte.
        found: u8,
    },
    /// The form byte names another form (1 = session, 2 = sealed).
    #[error("wrong envelope form {found} (expected {expected})")]
    WrongForm {
        /// Form expected by the caller.
        expected: u8,
        /// Form found.
        found: u8,
    },
    /// The message is addressed to someone else.
    #[error("message is for {found}, not for this identity ({expected})")]
    WrongRecipient {
        /// Our fingerprint.
        expected: Fingerprint,
        /// The recipient it names.
        found: Fingerprint,
    },
    /// The sender named inside does not match the authenticated sender.
    #[error("message claims sender {found}, but was authenticated as {expected}")]
    WrongSender {
        /// Who authenticated.
        expected: Fingerprint,
        /// Who the plaintext names.
        found: Fingerprint,
    },
    /// The sender's Dilithium signature does not verify.
    #[error("bad sender signature")]
    BadSignature,
    /// The AEAD tag does not verify: the ciphertext or its header was altered, or the key is
    /// wrong.
    #[error("ciphertext fails authentication (tampered or wrong key)")]
    TamperedCiphertext,
    /// A session counter at or below one already accepted.
    #[error("replayed counter {counter} (next expected {expected})")]
    ReplayedCounter {
        /// Counter received.
        counter: u64,
        /// Next counter the session accepts.
        expected: u64,
    },
    /// A session counter beyond the next expected: messages were dropped or reordered.
    #[error("out-of-order counter {counter} (next expected {expected})")]
    OutOfOrder {
        /// Counter received.
        counter: u64,
        /// Next counter the session accepts.
        expected: u64,
    },
    /// The sender's public key bytes are malformed.
    #[error("malformed sender key")]
    BadSenderKey,
    /// The hybrid KEM rejected the ciphertext.
    #[error(transparent)]
    Kem(#[from] NonContributory),
    /// The AEAD key could not be set up.
    #[error(transparent)]
    KeySetup(#[from] KeySetupError),
}

/// Why the authenticated key exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KexError {
    /// A handshake message has the wrong length.
    #[error("handshake message {kind}: expected {expected} bytes, got {found}")]
    BadLength {
        /// Message kind byte.
        kind: u8,
        /// Its fixed length.
        expected: usize,
        /// Length given.
        found: usize,
    },
    /// Unknown handshake version.
    #[error("unsupported handshake version {found}")]
    UnsupportedVersion {
        /// Version byte.
        found: u8,
    },
    /// Another handshake message came than the state expects.
    #[error("unexpected handshake message kind {found} (expected {expected})")]
    UnexpectedMessage {
        /// Kind expected.
        expected: u8,
        /// Kind found.
        found: u8,
    },
    /// The INIT names another responder.
    #[error("handshake addressed to {found}, not to this identity")]
    WrongRecipient {
        /// The responder it names.
        found: Fingerprint,
    },
    /// The peer's key is not the one the caller expected.
    #[error("peer is {found}, expected {expected}")]
    UnexpectedPeer {
        /// Expected fingerprint.
        expected: Fingerprint,
        /// Fingerprint of the key presented.
        found: Fingerprint,
    },
    /// The peer's transcript signature does not verify.
    #[error("bad transcript signature")]
    BadSignature,
    /// The peer's public key bytes are malformed.
    #[error("malformed peer key")]
    BadKey,
    /// The hybrid KEM failed.
    #[error(transparent)]
    Kem(#[from] NonContributory),
    /// The AEAD key could not be set up.
    #[error(transparent)]
    KeySetup(#[from] KeySetupError),
}

/// Why a message could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SealError {
    /// The session sent 2⁶⁴ − 1 messages; a new key exchange is needed.
    #[error("session counter exhausted: run a new key exchange")]
    CounterExhausted,
    /// The recipient's KEM key is unusable.
    #[error(transparent)]
    Kem(#[from] NonContributory),
    /// The AEAD refused the input (larger than it can encrypt).
    #[error("message too large to encrypt")]
    TooLarge,
    /// The AEAD key could not be set up.
    #[error(transparent)]
    KeySetup(#[from] KeySetupError),
}

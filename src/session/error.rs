//! Why a connection is closed, and the QUIC application close code it is closed with
//! (spec/03-session.md §7).

use thiserror::Error;

use crate::crypto::{KexError, OpenError};
use crate::wire::{FrameError, MessageType};

use super::hello::HelloError;

/// QUIC application close codes. A number is never reused.
pub mod code {
    /// Clean shutdown.
    pub const NO_ERROR: u32 = 0x00;
    /// A frame type not allowed in the connection's state or for the peer's role.
    pub const PROTOCOL_VIOLATION: u32 = 0x01;
    /// A frame failed to decode (bad magic, version, reserved bytes, type, CRC) or its
    /// payload is malformed.
    pub const MALFORMED_FRAME: u32 = 0x02;
    /// A frame declared a payload longer than the limit.
    pub const FRAME_TOO_LARGE: u32 = 0x03;
    /// HELLO failed: bad signature or not the identity the dialer expected.
    pub const AUTH_FAILED: u32 = 0x04;
    /// The peer opened more streams than allowed.
    pub const STREAM_LIMIT: u32 = 0x05;
    /// The end-to-end key exchange or a message's protection failed.
    pub const E2E_FAILED: u32 = 0x06;
    /// A second connection to the same peer lost the tie-break.
    pub const DUPLICATE_CONNECTION: u32 = 0x07;
    /// The peer was silent for longer than the idle limit.
    pub const PEER_GONE: u32 = 0x08;
    /// The peer's score fell below the ban threshold.
    pub const BANNED: u32 = 0x09;
    /// The node is at its connection limit.
    pub const CONNECTION_LIMIT: u32 = 0x0A;
    /// Closed on request of the local application (e.g. `Node::disconnect`).
    pub const CLOSED_BY_APPLICATION: u32 = 0x0B;
    /// The handshake (HELLO + key exchange) did not finish in time.
    pub const HANDSHAKE_TIMEOUT: u32 = 0x0C;
    /// The peer took none of our bytes for the write stall timeout while some waited.
    pub const SLOW_READER: u32 = 0x0D;
    /// The dialer's key exchange names another identity than the one answering: it
    /// reached a stale address. Costs the dialer nothing; it backs off to its longest
    /// redial delay, as if it had seen the wrong HELLO itself.
    pub const WRONG_RECIPIENT: u32 = 0x0E;
}

/// Why the session protocol ended a connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The byte stream did not decode into frames.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// A frame type the peer may not send now.
    #[error("unexpected {msg_type} frame while {state}")]
    UnexpectedFrame {
        /// The frame's type.
        msg_type: MessageType,
        /// The connection state.
        state: &'static str,
    },
    /// A frame's sequence number is not the next one.
    #[error("frame sequence {found}, expected {expected}")]
    BadSequence {
        /// Expected sequence.
        expected: u32,
        /// Sequence found.
        found: u32,
    },
    /// A payload is malformed for its type.
    #[error("malformed {msg_type} payload: {reason}")]
    BadPayload {
        /// The frame's type.
        msg_type: MessageType,
        /// What is wrong.
        reason: &'static str,
    },
    /// Connection authentication failed.
    #[error("authentication failed: {0}")]
    Auth(#[from] HelloError),
    /// The end-to-end key exchange failed.
    #[error("key exchange failed: {0}")]
    Kex(#[from] KexError),
    /// A DATA envelope did not open.
    #[error("end-to-end protection failed: {0}")]
    Open(#[from] OpenError),
    /// The peer acknowledged a message that was never sent.
    #[error("ACK for counter {acked} but only {sent} messages were sent")]
    AckBeyondSent {
        /// Cumulative ACK value received.
        acked: u64,
        /// Messages sent.
        sent: u64,
    },
    /// Nothing heard from the peer for too long.
    #[error("peer silent for {silent_ms} ms")]
    PeerGone {
        /// How long.
        silent_ms: u64,
    },
    /// HELLO and key exchange did not complete in time.
    #[error("handshake not finished after {ms} ms")]
    HandshakeTimeout {
        /// How long.
        ms: u64,
    },
    /// Bytes waited for the peer and it took none of them for too long.
    #[error("peer read nothing for {stalled_ms} ms while bytes waited for it")]
    SlowReader {
        /// How long.
        stalled_ms: u64,
    },
}

impl ConnError {
    /// The QUIC application close code for this error.
    pub fn code(&self) -> u32 {
        match self {
            ConnError::Frame(FrameError::PayloadTooLong { .. }) => code::FRAME_TOO_LARGE,
            ConnError::Frame(_) | ConnError::BadPayload { .. } => code::MALFORMED_FRAME,
            ConnError::UnexpectedFrame { .. }
            | ConnError::BadSequence { .. }
            | ConnError::AckBeyondSent { .. } => code::PROTOCOL_VIOLATION,
            ConnError::Auth(_) => code::AUTH_FAILED,
            ConnError::Kex(KexError::WrongRecipient { .. }) => code::WRONG_RECIPIENT,
            ConnError::Kex(_) | ConnError::Open(_) => code::E2E_FAILED,
            ConnError::PeerGone { .. } => code::PEER_GONE,
            ConnError::HandshakeTimeout { .. } => code::HANDSHAKE_TIMEOUT,
            ConnError::SlowReader { .. } => code::SLOW_READER,
        }
    }

    /// The score penalty for the peer that caused it (spec/03-session.md §8). A HELLO that
    /// proves another identity than the one we dialed costs nothing: we chose the address,
    /// and a stale address is no attack (the redial backs off to its longest delay instead).
    /// The mirror image, a key exchange addressed to another identity than ours, costs the
    /// dialer nothing either: it raced its own HELLO check, and its source may be shared.
    pub fn penalty(&self) -> i32 {
        if self.is_wrong_identity() {
            return 0;
        }
        match self.code() {
            code::AUTH_FAILED => 100,
            code::MALFORMED_FRAME | code::FRAME_TOO_LARGE | code::E2E_FAILED => 50,
            code::PROTOCOL_VIOLATION => 30,
            code::HANDSHAKE_TIMEOUT | code::SLOW_READER => 25,
            _ => 0,
        }
    }

    /// Whether the two ends are not who the dialer meant: a HELLO proving another identity
    /// than the one dialed, or (seen by the answering side) a key exchange addressed to
    /// another identity.
    pub fn is_wrong_identity(&self) -> bool {
        matches!(
            self,
            ConnError::Auth(HelloError::UnexpectedPeer { .. } | HelloError::UnexpectedNode { .. })
                | ConnError::Kex(KexError::WrongRecipient { .. })
        )
    }
}

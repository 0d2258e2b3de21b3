//! TURN client errors (spec/07-relay.md §2.3): why an allocation failed or was lost, each
//! naming the server; and why a call on the client was refused.

use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use super::message::ErrorReply;

/// Why an allocation, a refresh or a permission failed. Every error response code RFC 8656
/// names for the requests the client makes has its own variant (§§7–9, §19).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TurnError {
    /// No answer: every retransmission (UDP) or the one request (TCP) went unanswered.
    #[error("TURN server {0}: no answer")]
    Timeout(SocketAddr),
    /// 400 Bad Request.
    #[error("TURN server {server}: 400 Bad Request ({reason})")]
    BadRequest {
        /// The server.
        server: SocketAddr,
        /// Its reason phrase.
        reason: String,
    },
    /// 401 Unauthenticated to a request that carried credentials: the username or password
    /// is wrong (or a REST credential has expired).
    #[error("TURN server {0}: 401 Unauthenticated: username or password refused")]
    Unauthorized(SocketAddr),
    /// 403 Forbidden (e.g. a peer address the server does not relay to).
    #[error("TURN server {server}: 403 Forbidden ({reason})")]
    Forbidden {
        /// The server.
        server: SocketAddr,
        /// Its reason phrase.
        reason: String,
    },
    /// 437 Allocation Mismatch: no allocation (Refresh, CreatePermission) or already one
    /// (Allocate) for this 5-tuple.
    #[error("TURN server {0}: 437 Allocation Mismatch")]
    AllocationMismatch(SocketAddr),
    /// 438 Stale Nonce, still after the retries with the new nonce.
    #[error("TURN server {0}: 438 Stale Nonce, repeatedly")]
    StaleNonce(SocketAddr),
    /// 441 Wrong Credentials: not the credentials the allocation was made with.
    #[error("TURN server {0}: 441 Wrong Credentials")]
    WrongCredentials(SocketAddr),
    /// 442 Unsupported Transport Protocol: the server relays no UDP.
    #[error("TURN server {0}: 442 Unsupported Transport Protocol")]
    UnsupportedTransport(SocketAddr),
    /// 486 Allocation Quota Reached: this user has too many allocations.
    #[error("TURN server {0}: 486 Allocation Quota Reached")]
    QuotaReached(SocketAddr),
    /// 508 Insufficient Capacity: the server has no relay ports left.
    #[error("TURN server {0}: 508 Insufficient Capacity")]
    InsufficientCapacity(SocketAddr),
    /// Any other error code.
    #[error("TURN server {server}: error {code} ({reason})")]
    Other {
        /// The server.
        server: SocketAddr,
        /// ERROR-CODE.
        code: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// A success response without what it must carry (XOR-RELAYED-ADDRESS), or a 401/438
    /// without REALM and NONCE.
    #[error("TURN server {server}: malformed answer: {what}")]
    Malformed {
        /// The server.
        server: SocketAddr,
        /// What was missing.
        what: &'static str,
    },
    /// The credentials cannot be used (a field STUN cannot carry).
    #[error("TURN server {server}: unusable credentials: {why}")]
    Credentials {
        /// The server.
        server: SocketAddr,
        /// stun-rs's reason.
        why: String,
    },
}

impl TurnError {
    /// The error an error response stands for.
    pub fn from_reply(server: SocketAddr, e: &ErrorReply) -> TurnError {
        let reason = e.reason.clone();
        match e.code {
            400 => TurnError::BadRequest { server, reason },
            401 => TurnError::Unauthorized(server),
            403 => TurnError::Forbidden { server, reason },
            437 => TurnError::AllocationMismatch(server),
            438 => TurnError::StaleNonce(server),
            441 => TurnError::WrongCredentials(server),
            442 => TurnError::UnsupportedTransport(server),
            486 => TurnError::QuotaReached(server),
            508 => TurnError::InsufficientCapacity(server),
            code => TurnError::Other {
                server,
                code,
                reason,
            },
        }
    }
}

/// Why a call on the client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UseError {
    /// There is no allocation now.
    #[error("no TURN allocation")]
    NotAllocated,
    /// No permission was asked for this peer's IP.
    #[error("no TURN permission for {0}")]
    NoPermission(IpAddr),
    /// `max_permissions` are in use.
    #[error("TURN permission limit ({0}) reached")]
    TooManyPermissions(usize),
    /// More data than a Send indication carries.
    #[error("{0} bytes is more than a Send indication carries")]
    TooLong(usize),
}

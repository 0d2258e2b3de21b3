//! The DNA session protocol over QUIC (spec/03-session.md), sans-IO.
//!
//! * [`hello`]: binds a QUIC connection to both Dilithium identities.
//! * [`Connection`]: one connection's state machine — HELLO, the end-to-end key exchange,
//!   DATA/ACK, PING/PONG, PRESENCE.
//! * [`Outbox`] / [`Inbox`]: per-peer queues that outlive connections, so nothing
//!   unacknowledged is lost across a reconnect and nothing is delivered twice.

mod conn;
mod error;
pub mod hello;
mod outbox;
pub mod stream;

pub use conn::{ConnConfig, ConnEvent, Connection, Protection};
pub use error::{code, ConnError};
pub use hello::{HelloError, Role};
pub use outbox::{Inbox, Outbox, Outgoing, SendQueue, Source};

/// What a PRESENCE frame announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PresenceStatus {
    /// Going offline.
    Offline = 0,
    /// Online.
    Online = 1,
    /// Online but away.
    Away = 2,
}

impl PresenceStatus {
    /// The status numbered `b`.
    pub fn from_u8(b: u8) -> Option<PresenceStatus> {
        match b {
            0 => Some(PresenceStatus::Offline),
            1 => Some(PresenceStatus::Online),
            2 => Some(PresenceStatus::Away),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;

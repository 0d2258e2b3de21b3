//! A TURN client (RFC 8656), sans-IO: the fallback relay for pairs that neither a direct
//! path nor hole punching connects (spec/07-relay.md §2). The daemon drives it on the
//! node's one socket (`daemon::turn`, spec/07 §2.10); relaying QUIC over it is not reached
//! yet.
//!
//! - [`message`]: the TURN messages used, and ChannelData (§§7–12).
//! - [`client`]: the allocation state machine (§§7–11); [`config`]: its settings, limits,
//!   events and counters.
//! - [`tcp`]: framing on a TCP stream to the server (§3.1, §12.5).
//! - [`credentials`]: static and coturn REST (`use-auth-secret`) credentials (§5,
//!   RFC 8489 §9.2).
//! - [`error`]: typed errors, one per error response code.

pub mod client;
pub mod config;
pub mod credentials;
pub mod error;
pub mod message;
pub mod tcp;

#[cfg(test)]
mod client_tests;

pub use client::{Client, Transport, TurnConfig, TurnEvent, TurnStats};
pub use credentials::Credentials;
pub use error::{TurnError, UseError};
pub use tcp::TcpDecoder;

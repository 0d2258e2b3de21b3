//! The transport: one UDP socket shared by QUIC, STUN and TURN, and the TLS that QUIC runs
//! (spec/03-session.md §1–§2).
//!
//! [`demux`] is sans-IO; [`socket`] and [`tls`] are the I/O and configuration pieces the
//! driver in `daemon` composes.

pub mod demux;
pub mod relay;
pub mod socket;
pub mod tls;

pub use socket::{
    bind_udp, is_alias, is_relay_token, is_token, DnaSocket, RelayForwarder, RelayLimits,
    RelayRoute, SideChannels, SocketStats, TCP_FRAME_QUEUE,
};

//! The driver: the only code that touches sockets, clocks and OS randomness. It runs the
//! sans-IO cores (`session`, and later `dht`, `nat`) on tokio and quinn.
//!
//! [`Node`] is the public API of the transport layer: connect to a fingerprint at some
//! addresses, send messages, receive [`NodeEvent`]s.

// This module is the I/O driver: it reads the clock (see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod config;
mod conn;
mod dht;
mod dht_persist;
mod events;
mod node;
mod reach;
mod rendezvous;
mod score;
mod store;

pub use config::{DhtSettings, NodeConfig};
pub use conn::TransportStats;
pub use dht::{DhtError, DhtStats};
pub use node::{Node, NodeError, NodeEvent, NodeHandle, Path, PeerInfo, SendError};
pub use reach::{NatStatus, ReachError, Reached};
pub use score::BAN_THRESHOLD;
pub use store::{read_inbox, StoreError, StoredMessage, DB_DIR as STORE_DB_DIR};

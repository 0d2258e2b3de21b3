//! The driver: the only code that touches sockets, clocks and OS randomness. It runs the
//! sans-IO cores (`session`, `dht`, `nat`, `node`) on tokio and quinn (spec/06-node.md §2).
//!
//! [`Node`] is the public API: connect to a fingerprint at some addresses, send messages,
//! receive [`NodeEvent`]s, find and reach peers through the DHT and NATs.
//!
//! The modules form layers; none imports one above it (spec/06-node.md §1.2):
//!
//! | layer | modules |
//! | --- | --- |
//! | public API, accept and STUN loops | `node` |
//! | the task owning the node core (`node::Core`) | `core` |
//! | sessions and dial rounds; serving rendezvous | `conn`; `rendezvous` |
//! | the bundled relay's table and requests | `relay` |
//! | the node's routine: join, discovery, registration, presence, again on change | `routine` |
//! | reaching peers, punching, the caller's signalling | `reach` |
//! | names and contacts (spec/08-names.md) | `names` |
//! | the offline mailbox (spec/09-mailbox.md) | `mailbox` |
//! | connected peers for the status panel, on-demand PING (spec/10-control.md) | `peers_status` |
//! | the DHT over QUIC | `dht` |
//! | the TURN task | `turn` |
//! | shared state and leaves | `path` (which path a session is on), `shared`, `events`, `store`, `contacts`, `stun_routes`, `config`, `signal_frames`, `dht_persist`, `util`, `discovery_server`, `relay_server_table`, `mailbox_state` |

// This module is the I/O driver: it reads the clock (see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod app;
mod app_stream;
mod config;
mod conn;
mod contacts;
mod core;
mod delivered;
mod dht;
mod dht_persist;
mod discovery_server;
mod drop_app;
mod drops;
mod events;
mod handle;
mod mailbox;
mod mailbox_state;
mod names;
mod node;
mod os;
mod path;
mod peers_status;
mod reach;
mod relay_server;
mod relay_server_table;
mod rendezvous;
mod retry;
mod routine;
mod shared;
mod signal_frames;
mod spray;
mod store;
mod stun_routes;
mod turn;

pub use crate::node::scores::BAN_THRESHOLD;
pub use app::{App, AppMessage, AppStreams};
pub use app_stream::{
    AppStream, AppStreamError, APP_STREAM_QUEUE, OPEN_WAIT as APP_STREAM_OPEN_WAIT,
};
pub use config::{DhtSettings, NodeConfig, PRESENCE_LIFETIMES};
pub use contacts::{Contact, ContactError, OwnName, SaveError, MAX_CONTACTS, NAMES_FILE};
pub use dht::{DhtError, DhtStats};
pub use discovery_server::{DiscoveryServerConfig, FORWARD_QUEUE as DISCOVERY_FORWARD_QUEUE};
pub use events::{NodeEvent, Path, ReachStage};
pub use mailbox::{read_outbox, MailboxConfig, MailboxStats, OutboxEntry};
pub use names::{Claimed, NamesError, Resolved, MAX_OWN_NAMES};
pub use node::{Node, NodeError, PeerInfo, SendError};
pub use peers_status::PeerStatus;
pub use reach::{ReachError, Reached};
pub use relay_server::{RelayStatus, RelayedPeer};
pub use shared::{NatStatus, NodeHandle, TransportStats, TurnStatus};
pub use spray::PredictionStatus;
pub use store::{read_inbox, StoreError, StoredMessage, DB_DIR as STORE_DB_DIR};

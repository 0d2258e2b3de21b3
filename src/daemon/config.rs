//! Node configuration with documented defaults (spec/03-session.md §6).

use std::net::SocketAddr;
use std::time::Duration;

use crate::crypto::Fingerprint;
use crate::dht::DhtConfig;
use crate::node::rendezvous::RendezvousLimits;
use crate::session::ConnConfig;

/// The node's DHT role (spec/04-dht.md).
#[derive(Debug, Clone, Default)]
pub struct DhtSettings {
    /// Bootstrap nodes as `address + fingerprint`; joined at start.
    pub bootstrap: Vec<(SocketAddr, Fingerprint)>,
    /// DHT parameters (server or client, k, α, timers, store limits).
    pub config: DhtConfig,
    /// Where the routing table and held records are kept across restarts (sled); none: in
    /// memory only.
    pub data_dir: Option<std::path::PathBuf>,
}

/// Everything a node can be told. `Default` gives the values the spec states.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Address of the node's one UDP socket (default `[::]:0`, dual-stack where allowed).
    pub listen: SocketAddr,
    /// Session timers and limits (PING 30 s, gone after 60 s, handshake 10 s, 8192 in flight,
    /// 1 MiB frames).
    pub conn: ConnConfig,
    /// Most live connections in total (default 1024); more are refused.
    pub max_connections: usize,
    /// Concurrent bidirectional streams a peer may open (default 4; unidirectional: 0).
    pub max_streams_per_connection: u32,
    /// Streams beyond the session stream a peer may open over a connection's life before it
    /// is closed with STREAM_LIMIT (default 16).
    pub max_extra_streams: u32,
    /// First reconnect delay (default 1 s); doubles up to `reconnect_max`.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay (default 30 s).
    pub reconnect_max: Duration,
    /// QUIC keep-alive, to hold NAT mappings (default 15 s).
    pub keep_alive: Duration,
    /// The TURN server whose datagrams the socket hands to the TURN client (default none).
    pub turn_server: Option<SocketAddr>,
    /// Message IDs remembered per peer to drop duplicates: at least this many, at most twice
    /// (default 16384; keep it ≥ 2 × `conn.max_inflight`, the most a peer can resend after
    /// two cuts in a row).
    pub inbox_capacity: usize,
    /// Events buffered for the application before connections wait (default 16384).
    pub event_queue: usize,
    /// Bytes queued to a stream's writer before no more DATA is taken from the outbox
    /// (default 1 MiB).
    pub write_high_water: usize,
    /// Run a DHT node on this node's endpoint (default: none).
    pub dht: Option<DhtSettings>,
    /// Accept rendezvous registrations and forward CONNECTs for registered nodes (default
    /// false; `dna bootstrap` sets it). Needs `dht`. A node that does not serve answers
    /// RDV_REGISTER with CONNECT_ERROR 7 (spec/05 §4.3).
    pub rendezvous_server: bool,
    /// Limits of the rendezvous role: registration lifetime (300 s), per-source quota (32),
    /// per-network quota (256), cap (16,384), rates of RDV_REGISTER and CONNECT, the replay
    /// cache (spec/06-node.md, "Rendezvous"). CONNECT limits apply on every node, as callee.
    pub rendezvous: RendezvousLimits,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: SocketAddr::from(([0u16; 8], 0)),
            conn: ConnConfig::default(),
            max_connections: 1024,
            max_streams_per_connection: 4,
            max_extra_streams: 16,
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            keep_alive: Duration::from_secs(15),
            turn_server: None,
            inbox_capacity: 16384,
            event_queue: 16384,
            write_high_water: 1 << 20,
            dht: None,
            rendezvous_server: false,
            rendezvous: RendezvousLimits::default(),
        }
    }
}

impl NodeConfig {
    /// Defaults, listening on `listen`.
    pub fn listening_on(listen: SocketAddr) -> NodeConfig {
        NodeConfig {
            listen,
            ..NodeConfig::default()
        }
    }
}

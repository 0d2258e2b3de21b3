//! Node configuration with documented defaults (spec/03-session.md §6).

use std::net::SocketAddr;
use std::time::Duration;

use super::discovery_server::DiscoveryServerConfig;
use crate::crypto::Fingerprint;
use crate::dht::DhtConfig;
use crate::nat::responder::ResponderConfig;
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

impl DhtSettings {
    /// Joining through `bootstrap`, as a server or a client, with the default parameters,
    /// in memory.
    pub fn joining(bootstrap: Vec<(SocketAddr, Fingerprint)>, server: bool) -> DhtSettings {
        DhtSettings {
            bootstrap,
            config: DhtConfig {
                server,
                ..DhtConfig::default()
            },
            data_dir: None,
        }
    }
}

/// Everything a node can be told. `Default` gives the values the spec states.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Address of the node's one UDP socket (default `[::]:0`, dual-stack where allowed).
    pub listen: SocketAddr,
    /// Session timers and limits (PING 30 s, gone after 60 s, handshake 10 s, 8192 in flight,
    /// 1 MiB frames — HELLO-sized until the peer is authenticated —, a peer that reads
    /// nothing for 20 s while bytes wait for it is closed).
    pub conn: ConnConfig,
    /// Most live QUIC connections in total, session and DHT alike (default 1024); more are
    /// refused.
    pub max_connections: usize,
    /// Concurrent bidirectional streams a peer may open (default 4; unidirectional: 0).
    pub max_streams_per_connection: u32,
    /// Application streams of a peer's that may be refused (a kind nobody registered, a
    /// full queue, no STREAM_OPEN in time) over a connection's life before it is closed
    /// with STREAM_LIMIT (default 16; spec/03-session.md §10). Accepted streams do not
    /// count.
    pub max_extra_streams: u32,
    /// First reconnect delay (default 1 s); doubles up to `reconnect_max`, also across
    /// connections that fail before they are established (a HELLO refused, a handshake that
    /// timed out or was closed).
    pub reconnect_initial: Duration,
    /// Longest reconnect delay (default 30 s); also the delay after a dialed address
    /// answered with another identity than the one dialed.
    pub reconnect_max: Duration,
    /// QUIC keep-alive, to hold NAT mappings (default 15 s).
    pub keep_alive: Duration,
    /// The TURN server whose datagrams the socket hands to the TURN client (default none).
    pub turn_server: Option<SocketAddr>,
    /// Credentials for `turn_server`: with both set, the node allocates a relayed address
    /// there from its one socket and keeps it (spec/07-relay.md §2.10; default none).
    pub turn_credentials: Option<crate::nat::turn::Credentials>,
    /// The socket's relaying bounds: peers reached through the allocation (default 256) and
    /// unwrapped datagrams waiting for quinn (default 1024) (spec/07-relay.md §3).
    pub relay: crate::transport::RelayLimits,
    /// Permission requests waiting for the TURN task (default 64); more are refused and
    /// the CONNECT that asked goes on without them.
    pub turn_permit_queue: usize,
    /// Further TURN servers, tried in order when the one before fails or stops answering
    /// (spec/07-relay.md §2.12; same credentials; default none).
    pub turn_fallbacks: Vec<SocketAddr>,
    /// How long UDP to the TURN server may go unanswered before the node allocates over
    /// TCP instead and sends everything through the allocation (spec/07-relay.md §2.11;
    /// default 2 s; `None`: UDP only).
    pub turn_tcp_after: Option<Duration>,
    /// Message IDs remembered per peer to drop duplicates: at least this many, at most twice
    /// (default 16384; keep it ≥ 2 × `conn.max_inflight`, the most a peer can resend after
    /// two cuts in a row).
    pub inbox_capacity: usize,
    /// Events buffered for the application before connections wait (default 16384).
    pub event_queue: usize,
    /// Message bytes buffered in those events before connections wait (default 64 MiB).
    pub event_queue_bytes: usize,
    /// The write budget: bytes queued to a stream's writer before nothing more is queued —
    /// no DATA from the outbox and no control frames (default 1 MiB). A writer's queue
    /// holds at most this plus one flush (one frame of at most `conn.limits`, or the
    /// handshake's frames).
    pub write_high_water: usize,
    /// Traffic sources (IPv4 addresses, IPv6 /64s) whose scores are kept (default 65536);
    /// when full, the mildest score is forgotten first.
    pub max_scored_sources: usize,
    /// Run a DHT node on this node's endpoint (default: none).
    pub dht: Option<DhtSettings>,
    /// Where the message store lives (spec/06-node.md §3): with it, `send` returns once the
    /// message is on disk, unacknowledged messages survive restarts, and received messages
    /// are stored before they are acknowledged. None (the default): in memory only.
    pub store_dir: Option<std::path::PathBuf>,
    /// Delivery records (one per acknowledged batch) kept in the store (default 100000;
    /// the oldest go first).
    pub keep_delivered: usize,
    /// Peers (identities) whose state the node keeps: peer entries and the store's
    /// de-duplication windows (default 4096). Beyond it the least recently used entry
    /// without a connection or waiting messages is dropped.
    pub max_peers: usize,
    /// The STUN responder's limits (spec/05-nat.md §1.3): per source 32 answers at once,
    /// 10 per second, never more bytes than the source sent plus one minimal answer (an RFC
    /// 5780 server: five full answers); 4096 sources remembered; requests over 548 bytes
    /// dropped.
    pub stun_responder: ResponderConfig,
    /// Be an RFC 5780 NAT behaviour discovery server (spec/05-nat.md §2.1): three more UDP
    /// sockets, for STUN only, at the other address and port (default none: off; `dna
    /// bootstrap --other-address`). Needs `listen` to be a specific address.
    pub discovery_server: Option<DiscoveryServerConfig>,
    /// Accept rendezvous registrations and forward CONNECTs for registered nodes (default
    /// false; `dna bootstrap` sets it). Needs `dht`. A node that does not serve answers
    /// RDV_REGISTER with CONNECT_ERROR 7 (spec/05 §4.3).
    pub rendezvous_server: bool,
    /// Limits of the rendezvous role: registration lifetime (300 s), per-source quota (32),
    /// per-network quota (256), cap (16,384), rates of RDV_REGISTER and CONNECT, the replay
    /// cache (spec/06-node.md, "Rendezvous"). CONNECT limits apply on every node, as callee.
    pub rendezvous: RendezvousLimits,
    /// Relay for registered clients that both ask (the bundled relay, spec/07-relay.md §1),
    /// with these limits: 64 pairs, 256 waiting requests, 1 MiB/s per pair, 120 s idle,
    /// 1 h lifetime (default none: off; `dna bootstrap` turns it on). Needs
    /// `rendezvous_server`.
    pub relay_server: Option<crate::node::relay_server::RelayServerLimits>,
    /// Whether relays may carry our own sessions: `auto` (direct first), `never`, `only`
    /// (spec/07-relay.md §1.5; default `auto`).
    pub relay_policy: crate::node::reach::RelayPolicy,
    /// Punching this long without a pair: ask the bundled relay in parallel, and move the
    /// session to the direct path if punching finds one later (default 1 s: a punched pair
    /// in the NAT bed answers within 200 ms; spec/07-relay.md §1.9).
    pub relay_after: Duration,
    /// Predict ports where only that gives a direct path: a symmetric NAT facing a
    /// port-restricted cone (default true; spec/05-nat.md §5.5). Off, our CONNECT signals
    /// carry "NAT behaviour unknown", so neither side predicts.
    pub port_prediction: bool,
    /// A session still relayed is offered a new punching attempt this often, and moves to
    /// the direct path it finds (default 60 s; spec/07-relay.md §1.9).
    pub upgrade_interval: Duration,
    /// The offline mailbox (spec/09-mailbox.md): put after 10 s without a connection,
    /// fetch every 60 s, receipts read every 5 s, 7-day items (default on; needs `dht` and
    /// `store_dir`).
    pub mailbox: super::mailbox_state::MailboxConfig,
    /// Re-reach peers with messages waiting and no connection (spec/06-node.md §3.5):
    /// per peer 1 s doubling to 30 s, again at once when the peer is heard; at most 8
    /// reaches at a time and 120 a minute (default `None`: the application reaches peers
    /// itself with [`NodeHandle::reach`](super::NodeHandle::reach); `dna daemon` turns it on).
    pub retry: Option<crate::node::retry::RetryConfig>,
    /// How often the application republishes our presence (`dna daemon`: `refresh_secs`).
    /// A presence record expires [`PRESENCE_LIFETIMES`] of these after it is signed, so a
    /// node that crashed reads offline ("not found", seed 001) within three refresh
    /// intervals (default 120 s: 6 min; spec/05-nat.md §6).
    pub presence_refresh: Duration,
    /// The node's routine (`node::routine`, spec/06-node.md §1.4): join the DHT, fetch the
    /// mailbox, discover the NAT, serve or not, register at rendezvous nodes, publish
    /// presence — and again every `refresh` or when the network changed. Default `None`:
    /// the application does these itself; `dna daemon` and `dna bootstrap` turn it on, and
    /// [`NodeHandle::ready`](super::NodeHandle::ready) waits for its first round.
    pub routine: Option<crate::node::routine::RoutineConfig>,
    /// Message kinds owned by application protocols (spec/06-node.md §1.5): messages of
    /// these kinds go to the protocol's [`App`](super::App) (from
    /// [`Node::app`](super::Node::app)), each with a queue as large as the node's events,
    /// not to [`Node::next_event`](super::Node::next_event). Default: none (text and every
    /// other kind come as events).
    pub apps: Vec<crate::crypto::MessageKind>,
}

/// A presence record lives this many refresh intervals: one missed refresh is survived,
/// a crashed node is gone soon after.
pub const PRESENCE_LIFETIMES: u32 = 3;

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: SocketAddr::from(([0u16; 8], 0)),
            retry: None,
            routine: None,
            apps: Vec::new(),
            presence_refresh: Duration::from_secs(120),
            conn: ConnConfig::default(),
            max_connections: 1024,
            max_streams_per_connection: 4,
            max_extra_streams: 16,
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            keep_alive: Duration::from_secs(15),
            turn_server: None,
            turn_credentials: None,
            relay: Default::default(),
            turn_permit_queue: 64,
            turn_fallbacks: Vec::new(),
            turn_tcp_after: Some(Duration::from_secs(2)),
            inbox_capacity: 16384,
            event_queue: 16384,
            event_queue_bytes: 64 << 20,
            write_high_water: 1 << 20,
            max_scored_sources: 65536,
            dht: None,
            store_dir: None,
            keep_delivered: 100_000,
            max_peers: 4096,
            stun_responder: ResponderConfig::default(),
            discovery_server: None,
            rendezvous_server: false,
            rendezvous: RendezvousLimits::default(),
            relay_server: None,
            relay_policy: Default::default(),
            relay_after: Duration::from_secs(1),
            port_prediction: true,
            upgrade_interval: Duration::from_secs(60),
            mailbox: Default::default(),
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

//! dna-p2p: a peer-to-peer messaging stack — Kademlia DHT, NAT traversal, and end-to-end
//! encrypted DNA frames over QUIC.
//!
//! # Crate map
//!
//! | module | what | spec |
//! | --- | --- | --- |
//! | [`wire`] | the 32-byte DNA frame, its type registry, one-shot and streaming codecs | `spec/01-wire.md` |
//! | [`crypto`] | identity, hybrid KEM, session and sealed message forms, signed DHT records | `spec/02-crypto.md` |
//! | [`session`] | the session protocol on a QUIC stream: HELLO, key exchange, DATA/ACK, PING/PONG | `spec/03-session.md` |
//! | [`transport`] | the one UDP socket (QUIC + STUN + TURN demultiplexer), TLS configuration | `spec/03-session.md` |
//! | [`daemon`] | the tokio driver: [`daemon::Node`] composes socket, QUIC and session cores | `spec/03-session.md` |
//! | [`dht`] | Kademlia: routing table, lookups, record store, RPC codec, the node state machine (sans-IO) | `spec/04-dht.md` |
//! | [`source`] | who a limit applies to (IPv4 address, IPv6 /64; /24, /48) and bounded token buckets: a leaf every layer's limits use | `spec/06-node.md` §4.1 |
//! | [`node`] | the node's own decisions, sans-IO: the node core, peers, scores, reaching, re-reaching, rendezvous, relay | `spec/06-node.md` |
//! | [`files`] | file transfer, an application on the node: its sans-IO core (Merkle tree over 16 KiB leaves, messages, held leaves, safe names) and its task | `spec/11-files.md` |
//! | [`nat`] | STUN Binding client (RFC 8489 timers) and responder, sans-IO | `spec/05-nat.md` |
//! | [`fuzzing`] | the bodies of the fuzz targets, shared by `fuzz/` and `cargo test` | |
//!
//! # The layering rule
//!
//! Folders form layers, lowest first: `wire`, `crypto`, `source` → `session`, `nat` →
//! `dht`, `transport` → `node` → `daemon` → `files` (applications on the node) → `cli` (the binary). None imports a folder of its
//! own layer or above it, and no folder has an import cycle inside (`tests/layering.rs`).
//!
//! Protocol code is sans-IO: it takes `now`, bytes and an RNG as arguments and returns what
//! to send. It never reads a clock or touches a socket; `clippy.toml` forbids
//! `Instant::now` and `SystemTime::now`, and only the driver (`src/daemon/`, the CLI entry
//! point) may opt out. The one exception is pqcrypto's key generation and encapsulation,
//! which draw from the OS RNG inside the C implementation (spec/02-crypto.md §1).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod crypto;
pub mod daemon;
pub mod dht;
pub mod files;
pub mod fuzzing;
pub mod nat;
pub mod node;
pub mod session;
pub mod source;
pub mod transport;
pub mod wire;

//! The node's own decisions as sans-IO state machines (spec/06-node.md): what the daemon's
//! driver used to decide inside its tasks, now plain structs that take `now` and return
//! what to do, so tests and `netsim` can drive them without sockets.
//!
//! | module | what |
//! | --- | --- |
//! | [`core`] | the node core: one owner of the pieces below, driven by commands and time; batches for connections, dial rounds, the tie-break's outcome |
//! | [`peers`] | the peer table: outboxes, addresses, live connections, the duplicate tie-break, least-recently-used eviction |
//! | [`scores`] | misbehaviour scores by identity and by source, bounded; bans |
//! | [`reach`] | reaching a peer: lookup, direct dial, CONNECT through rendezvous nodes, punching — the order of attempts |
//! | [`retry`] | re-reaching peers with messages waiting: per-peer backoff 1 s → 30 s, reset when heard; bounded concurrency and rate |
//! | [`routine`] | the node's routine: join the DHT, fetch the mailbox, discover the NAT, serve or not, register, announce; again every refresh or when the network changed |
//! | [`rendezvous`] | the rendezvous role: registrations with expiry, quotas and a cap; CONNECT admission (rate limits, replay cache) |

pub mod addresses;
pub mod core;
pub mod dht_pool;
pub mod mailbox;
pub mod names;
pub mod peers;
pub mod reach;
pub mod relay_server;
pub mod rendezvous;
pub mod retry;
pub mod routine;
pub mod scores;

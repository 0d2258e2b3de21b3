//! The `[limits]` table of the daemon's TOML configuration (spec/06-node.md §5): every key
//! is optional and overrides one `NodeConfig` limit; what is not given keeps the default
//! the spec states. `dna status` shows the values in force under `limits`.

use std::time::Duration;

use serde::Deserialize;

use dna_p2p::daemon::NodeConfig;

/// `[limits]`: each key sets the `NodeConfig` field named in its doc.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct LimitsConfig {
    /// `max_connections` (1024): live QUIC connections, sessions and DHT.
    pub max_connections: Option<usize>,
    /// `max_peers` (4096): peer entries without a connection or waiting messages.
    pub max_peers: Option<usize>,
    /// `max_scored_sources` (65536): sources (IPv4 addresses, IPv6 /64s) with a score.
    pub max_scored_sources: Option<usize>,
    /// `event_queue` (16384): events waiting for the application.
    pub event_queue: Option<usize>,
    /// `event_queue_bytes` (64 MiB): message bytes in those events.
    pub event_queue_bytes: Option<usize>,
    /// `write_high_water` (1 MiB): bytes queued to one connection's writer.
    pub write_high_water: Option<usize>,
    /// `conn.write_stall_timeout` (20 s): a reader that takes nothing this long is closed.
    pub write_stall_secs: Option<u64>,
    /// `conn.handshake_timeout` (10 s): HELLO and key exchange.
    pub handshake_secs: Option<u64>,
    /// `inbox_capacity` (16384): IDs remembered per sender for de-duplication.
    pub inbox_capacity: Option<usize>,
    /// `keep_delivered` (100000): delivery records kept in the store.
    pub keep_delivered: Option<usize>,
    /// DHT store `max_bytes` (256 MiB).
    pub dht_store_bytes: Option<usize>,
    /// DHT store `per_network_bytes` (16 MiB per IPv4 /24 or IPv6 /48).
    pub dht_store_per_network_bytes: Option<usize>,
    /// DHT store `per_source_bytes` (4 MiB per IPv4 address or IPv6 /64).
    pub dht_store_per_source_bytes: Option<usize>,
    /// DHT store `per_publisher_bytes` (1 MiB).
    pub dht_store_per_publisher_bytes: Option<usize>,
    /// `rendezvous.lifetime` (300 s).
    pub rendezvous_lifetime_secs: Option<u64>,
    /// `rendezvous.per_source` (32).
    pub rendezvous_per_source: Option<usize>,
    /// `rendezvous.per_network` (256).
    pub rendezvous_per_network: Option<usize>,
    /// `rendezvous.max_registrations` (16384).
    pub rendezvous_max: Option<usize>,
    /// `stun_responder.burst` (32).
    pub stun_burst: Option<u32>,
    /// `stun_responder.per_second` (10).
    pub stun_per_second: Option<f64>,
    /// `stun_responder.max_sources` (4096).
    pub stun_max_sources: Option<usize>,
    /// `stun_responder.rfc5780_start_answers` (5): an RFC 5780 server's start credit per
    /// source, in full answers.
    pub stun_rfc5780_start_answers: Option<usize>,
    /// `relay.max_peers` (256): peers reached through our TURN allocation.
    pub relay_max_peers: Option<usize>,
    /// `relay.inject_queue` (1024): unwrapped relayed datagrams waiting for QUIC.
    pub relay_inject_queue: Option<usize>,
    /// `turn_permit_queue` (64): permission requests waiting for the TURN task.
    pub turn_permit_queue: Option<usize>,
}

fn set<T: Copy>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

impl LimitsConfig {
    /// Writes the given limits into `cfg`.
    pub(super) fn apply(&self, cfg: &mut NodeConfig) {
        set(&mut cfg.max_connections, self.max_connections);
        set(&mut cfg.max_peers, self.max_peers);
        set(&mut cfg.max_scored_sources, self.max_scored_sources);
        set(&mut cfg.event_queue, self.event_queue);
        set(&mut cfg.event_queue_bytes, self.event_queue_bytes);
        set(&mut cfg.write_high_water, self.write_high_water);
        set(&mut cfg.inbox_capacity, self.inbox_capacity);
        set(&mut cfg.keep_delivered, self.keep_delivered);
        let secs = |s: Option<u64>| s.map(Duration::from_secs);
        set(
            &mut cfg.conn.write_stall_timeout,
            secs(self.write_stall_secs),
        );
        set(&mut cfg.conn.handshake_timeout, secs(self.handshake_secs));
        if let Some(d) = cfg.dht.as_mut() {
            let s = &mut d.config.store;
            set(&mut s.max_bytes, self.dht_store_bytes);
            set(&mut s.per_network_bytes, self.dht_store_per_network_bytes);
            set(&mut s.per_source_bytes, self.dht_store_per_source_bytes);
            set(
                &mut s.per_publisher_bytes,
                self.dht_store_per_publisher_bytes,
            );
        }
        let r = &mut cfg.rendezvous;
        set(&mut r.lifetime, secs(self.rendezvous_lifetime_secs));
        set(&mut r.per_source, self.rendezvous_per_source);
        set(&mut r.per_network, self.rendezvous_per_network);
        set(&mut r.max_registrations, self.rendezvous_max);
        set(&mut cfg.relay.max_peers, self.relay_max_peers);
        set(&mut cfg.relay.inject_queue, self.relay_inject_queue);
        set(&mut cfg.turn_permit_queue, self.turn_permit_queue);
        let st = &mut cfg.stun_responder;
        set(&mut st.burst, self.stun_burst);
        set(&mut st.per_second, self.stun_per_second);
        set(&mut st.max_sources, self.stun_max_sources);
        set(
            &mut st.rfc5780_start_answers,
            self.stun_rfc5780_start_answers,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_keys_override_and_the_rest_keep_their_defaults() {
        let l: LimitsConfig = toml::from_str("max_peers = 7\nstun_burst = 3\n").unwrap();
        let mut cfg = NodeConfig::default();
        l.apply(&mut cfg);
        assert_eq!(cfg.max_peers, 7);
        assert_eq!(cfg.stun_responder.burst, 3);
        assert_eq!(cfg.max_connections, NodeConfig::default().max_connections);
        assert!(
            toml::from_str::<LimitsConfig>("max_pears = 7").is_err(),
            "typos are errors"
        );
    }
}

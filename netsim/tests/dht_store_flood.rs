//! A store flood at one DHT server (issue 9, Build 3): thousands of throwaway identities
//! from four networks (two IPv4 /24s, two IPv6 /48s — a fresh /64 per identity) store
//! mailbox-sized records; the store stops them at its per-network quotas, and a good
//! publisher from another network still stores.
// A simulation's epoch is one real Instant; everything after is simulated.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use netsim::dht_flood::{run, FloodConfig};

#[test]
fn throwaway_identities_from_few_networks_stop_at_the_network_quotas() {
    let cfg = FloodConfig {
        identities: 2000,
        ..FloodConfig::default()
    };
    let r = run(&cfg, Instant::now());
    println!(
        "{} identities from {} networks: stored {} ({} bytes encoded), refused {}, other {}; store holds {} records costing {} bytes (max {}), {} refusals, {} evictions; good publisher stored: {}",
        cfg.identities,
        cfg.v4_networks + cfg.v6_networks,
        r.stored,
        r.stored_bytes,
        r.refused,
        r.other,
        r.store.records,
        r.store.bytes,
        cfg.dht.store.max_bytes,
        r.store.refused,
        r.store.evicted,
        r.good_stored
    );
    assert!(r.good_stored, "the good publisher was refused");
    assert_eq!(r.other, 0, "every STORE answered STORED or REFUSED");
    // Four networks, each at most its quota: far below what 2000 × 77 KB would take.
    let cap = 4 * cfg.dht.store.per_network_bytes;
    assert!(
        r.stored_bytes <= cap,
        "the flood stored {} bytes, over four networks' quotas ({cap})",
        r.stored_bytes
    );
    // The store's own count: the good record on top of at most the four quotas.
    assert!(r.store.bytes <= cap + 80 * 1024);
    assert_eq!(r.store.records, r.stored + 1);
    assert_eq!(r.store.refused, r.refused as u64);
}

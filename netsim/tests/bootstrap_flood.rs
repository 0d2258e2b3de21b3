//! One bootstrap node — its whole node core: peer table, rendezvous role and DHT — under
//! 10,000 throwaway identities that open a session, register, store records (presence-sized, and ≈ 64 KB mailbox
//! items for a share) and send CONNECT offers (some replayed), from a few hundred IPv4
//! addresses (dense /24s, a few very busy addresses), IPv6 /64s and one walked /48 (issue 9,
//! "Done when"). A good client joins mid-attack and still registers, renews, stores and
//! finds its presence, and has its callers' CONNECTs forwarded and admitted; both cores'
//! memory stays within their limits. Prints the counts, the accounted bytes and peak RSS.
// A simulation's epoch is one real Instant; everything after is simulated.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use netsim::bootstrap_sim::{run, BootSimConfig};

#[test]
fn ten_thousand_throwaway_identities_at_one_bootstrap_do_not_lock_out_a_good_client() {
    let cfg = BootSimConfig::default();
    let r = run(&cfg, Instant::now());
    print!("{}", r.summary(&cfg));

    // The good client delivers: never refused, and it had its chance at every step.
    let g = &r.good;
    assert_eq!(g.first_refusal, None, "the good client was refused");
    assert!(g.registrations.0 > 0 && g.registrations.1 == 0);
    assert!(
        g.stores.0 > 1 && g.stores.0 == g.stores.1,
        "every STORE stored"
    );
    assert!(
        g.finds.0 > 0 && g.finds.0 == g.finds.1,
        "every lookup found it"
    );
    assert!(
        g.connects.0 > 100 && g.connects.0 == g.connects.2,
        "every good CONNECT forwarded and admitted"
    );

    // The attack met every kind of limit …
    let reg = (r.register.rate + r.reregister.rate, r.register.source_quota);
    assert!(reg.0 > 0 && reg.1 > 0 && r.register.network_quota > 0);
    assert!(r.store.source_quota > 0 && r.store.network_quota > 0);
    assert!(r.connect.replay > 0 && r.connect.source > 0);
    assert_eq!(r.store.other, 0, "every STORE answered STORED or REFUSED");

    // … and each core stayed within them. Registrations: at most a network's quota per
    // dense /24, IPv6 /48 and the walked /48, a source's per lone address; plus 3 good.
    let l = &cfg.rendezvous;
    let nets = usize::from(cfg.dense_v4_networks) + usize::from(cfg.v6_networks) + 1;
    let reg_cap = nets * l.per_network + cfg.lone_v4_addresses * l.per_source + 3;
    assert!(r.peak_registrations <= reg_cap.min(l.max_registrations));
    assert!(
        r.peak_rendezvous_bytes < 4 << 20,
        "rendezvous tables ≤ 4 MiB: {}",
        r.peak_rendezvous_bytes
    );
    // Store: a network's quota per network, a source's per lone address, plus the good
    // client's record; never over the store's cap.
    let s = &cfg.dht.store;
    let store_cap = nets * s.per_network_bytes + cfg.lone_v4_addresses * s.per_source_bytes;
    assert!(r.peak_store_bytes <= store_cap.min(s.max_bytes) + 16 * 1024);
    assert!(r.store.refused() > 0 && r.store.stored_mailbox > 0);
    // Peer table: every throwaway identity had its session, and the table stayed at its
    // cap, evicting the least recently used.
    assert_eq!(r.sessions, cfg.identities as u64, "every session accepted");
    assert!(
        r.peak_peer_entries <= cfg.max_peers && r.peer_table.1 > 0,
        "peer table bounded: peak {} of {}, {} evicted",
        r.peak_peer_entries,
        cfg.max_peers,
        r.peer_table.1
    );
}

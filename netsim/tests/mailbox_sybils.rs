//! Issue 20's sybil scenario end to end in simulation: 1,000 throwaway identities from 16
//! networks fill carol's requests mailbox at the k nodes that store it, while her 10
//! contacts — 8 writing to her contact drop, 2 that do not hold it yet writing to the
//! requests mailbox — leave one message each; carol's fetch (the daemon's own machine)
//! opens every contact's message exactly once.
// A simulation's epoch is one real Instant; everything after is simulated.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use netsim::mailbox_sim::{run, MailboxSimConfig};

#[test]
fn a_thousand_sybils_from_sixteen_networks_do_not_keep_a_contacts_message_out() {
    let cfg = MailboxSimConfig::default();
    let r = run(&cfg, Instant::now());
    print!("{}", r.summary(&cfg));
    let per_network = dna_p2p::dht::StoreConfig::default().mailbox_per_network;
    let per_key = dna_p2p::dht::StoreConfig::default().mailbox_per_key;
    // The flood had its chance: it filled the key at every storing node, and the key's
    // fairness evicted or refused the rest.
    assert_eq!(r.held.len(), cfg.dht.routing.k);
    for (all, strangers) in &r.held {
        assert_eq!(*all, per_key, "the flood filled the key");
        assert!(*strangers <= usize::from(cfg.sybil_networks) * per_network);
        // The contacts without the drop wrote to the requests mailbox: their items stay.
        assert_eq!(all - strangers, cfg.contacts_without_drop);
    }
    assert!(r.sybil_refused + r.evicted as usize > 0);
    for (n, why) in &r.contact_puts {
        assert!(*n >= 2, "a contact's item held by {n} nodes ({why})");
    }
    assert_eq!(r.delivered, cfg.contacts, "every contact's message, once");
    assert_eq!(r.invalid, 0);
}

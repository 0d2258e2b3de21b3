//! The offline mailbox between real nodes on loopback (spec/09-mailbox.md): bob is
//! offline, alice sends 20 messages and carol (a stranger) one; they are sealed into bob's
//! mailbox on the bootstrap node (mailbox storage on). Bob comes back, fetches them, gets
//! each exactly once, publishes a receipt; the storing node drops the items it lists, and
//! alice's outbox shows them delivered through the mailbox.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use dna_p2p::crypto::{Fingerprint, Identity};
use dna_p2p::daemon::{DhtSettings, MailboxConfig, Node, NodeConfig, NodeEvent};
use rand_core::OsRng;

fn config(
    server: bool,
    bootstrap: Vec<(SocketAddr, Fingerprint)>,
    dir: Option<&std::path::Path>,
) -> NodeConfig {
    NodeConfig {
        dht: Some(DhtSettings::joining(bootstrap, server)),
        rendezvous_server: server,
        store_dir: dir.map(Into::into),
        mailbox: MailboxConfig {
            // Put a waiting message in the mailbox at once (no connection), read receipts
            // often; fetches are asked for by the test.
            after: Duration::ZERO,
            receipt_poll: Duration::from_millis(200),
            // No presence here, so no sessions: drops go through the mailbox at once.
            drop_unseen: Duration::ZERO,
            ..MailboxConfig::default()
        },
        ..NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
    }
}

/// Polls `f` until it is true (each poll follows a round of the node's mailbox task);
/// panics with `what` after a minute.
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A client with the identity kept in `id_dir` and its message store in `store_dir`.
async fn client(
    seeds: &[(SocketAddr, Fingerprint)],
    id_dir: &std::path::Path,
    store_dir: &std::path::Path,
) -> Node {
    let (id, _) = Identity::load_or_create(id_dir, &mut OsRng).unwrap();
    let n = Node::bind(id, config(false, seeds.to_vec(), Some(store_dir)))
        .await
        .unwrap();
    n.dht_bootstrap().await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipient_gets_every_message_once_from_its_mailbox() {
    let boot = Node::bind(Identity::generate(&mut OsRng), config(true, vec![], None))
        .await
        .unwrap();
    let seeds = vec![(boot.local_addr(), boot.fingerprint())];
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let alice = client(&seeds, dirs[0].path(), dirs[0].path()).await;
    let carol = client(&seeds, dirs[2].path(), dirs[2].path()).await;

    // Bob was online once: his KEM key is published. Then he goes away.
    let bob = client(&seeds, dirs[1].path(), dirs[1].path()).await;
    let bob_fp = bob.fingerprint();
    assert!(bob.mailbox_publish_key().await.unwrap() >= 1);
    bob.shutdown(Duration::from_millis(200)).await;

    let n = 20;
    let bodies: Vec<Bytes> = (0..n).map(|i| Bytes::from(format!("m{i:02}"))).collect();
    alice.send_many(bob_fp, bodies.clone()).await.unwrap();
    // Carol has never spoken to bob: a stranger's first message.
    carol
        .send(bob_fp, Bytes::from_static(b"hello from a stranger"))
        .await
        .unwrap();
    until("alice's 20 items in the mailbox", async || {
        alice.mailbox_stats().await.items_put == n as u64
    })
    .await;
    until("carol's item in the mailbox", async || {
        carol.mailbox_stats().await.items_put == 1
    })
    .await;
    let before = boot.dht_stats().await.store;
    println!(
        "bob offline: {} mailbox items stored at the bootstrap node ({} records, {} bytes)",
        before.mailbox_items, before.records, before.bytes
    );
    assert_eq!(before.mailbox_items, n + 1);
    let states: Vec<_> = alice.outbox(100).await;
    assert_eq!(states.len(), n);
    // One node holds them (the bootstrap node, the only DHT server here): in the mailbox,
    // but not `sent` — that takes two holders (spec/09-mailbox.md §7).
    println!(
        "alice's outbox: {:?}",
        states
            .iter()
            .map(|e| (e.state, e.held_by))
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert!(states
        .iter()
        .all(|e| e.state == "queued" && e.held_by == Some(1) && e.path == Some("mailbox")));

    // Bob comes back (his identity; a fresh store: in one process the old node's store
    // stays locked until its tasks end) and fetches his mailbox.
    let mut bob = client(&seeds, dirs[1].path(), dirs[3].path()).await;
    let stats = bob.mailbox_fetch().await;
    let mut from_alice = Vec::new();
    let mut from_carol = 0;
    while let Ok(ev) = bob.events_try_recv() {
        if let NodeEvent::Message { from, body, .. } = ev {
            if from == alice.fingerprint() {
                from_alice.push(body);
            } else if from == carol.fingerprint() {
                from_carol += 1;
            }
        }
    }
    from_alice.sort();
    println!(
        "bob back: fetched {} items, {} new, {} duplicates dropped, {} invalid; \
         receipts published {}",
        stats.fetched, stats.new, stats.duplicates, stats.invalid, stats.receipts
    );
    assert_eq!(from_alice, bodies, "all 20, once each");
    assert_eq!(from_carol, 1, "the stranger's first message");
    assert_eq!(stats.new, n as u64 + 1);
    assert!(stats.receipts >= 1);
    let inbox = bob.stored_inbox();
    assert_eq!(inbox.len(), n + 1, "stored once each");

    // Alice sees the receipt: delivered through the mailbox, no longer queued for bob.
    until("alice's messages delivered (mailbox)", async || {
        alice.mailbox_stats().await.delivered == n as u64
    })
    .await;
    let states = alice.outbox(100).await;
    let via_mailbox = states
        .iter()
        .filter(|e| e.to == bob_fp && e.state == "delivered" && e.path == Some("mailbox"))
        .count();
    println!("alice's outbox: {via_mailbox} of {n} delivered (mailbox)");
    assert_eq!(via_mailbox, n);
    assert!(!alice.pending_peers().await.contains(&bob_fp));
    // The storing node dropped what the receipt lists.
    let after = boot.dht_stats().await.store;
    println!(
        "after the receipt: {} mailbox items left at the bootstrap node",
        after.mailbox_items
    );
    assert_eq!(after.mailbox_items, 0);

    // A second fetch finds nothing new: nothing is delivered twice.
    let again = bob.mailbox_fetch().await;
    assert_eq!(again.new, stats.new);
    assert_eq!(bob.stored_inbox().len(), n + 1);

    // Both paths: carol's next message goes to the mailbox (no session yet), then the
    // direct session delivers it first; the mailbox copy is then a duplicate, dropped by
    // message ID.
    carol
        .send(bob_fp, Bytes::from_static(b"twice?"))
        .await
        .unwrap();
    until("carol's second item in the mailbox", async || {
        carol.mailbox_stats().await.items_put == 2
    })
    .await;
    carol.connect(bob_fp, vec![bob.local_addr()]).await;
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(NodeEvent::Message { body, .. }) = bob.next_event().await {
                assert_eq!(body, Bytes::from_static(b"twice?"));
                break;
            }
        }
    })
    .await
    .expect("carol's message arrives directly");
    let last = bob.mailbox_fetch().await;
    println!(
        "a message delivered directly, then fetched from the mailbox: {} duplicate(s) \
         dropped, {} new",
        last.duplicates - again.duplicates,
        last.new - again.new
    );
    assert_eq!(last.duplicates - again.duplicates, 1);
    assert_eq!(last.new, again.new);
    assert_eq!(bob.stored_inbox().len(), n + 2, "stored once");
    while let Ok(ev) = bob.events_try_recv() {
        assert!(
            !matches!(ev, NodeEvent::Message { .. }),
            "no second message event: {ev:?}"
        );
    }
}

/// Seed 001's deployment: bootstrap nodes help with discovery and store no messages; a
/// reachable daemon (a DHT server) holds mailboxes. The sender and the recipient are never
/// online together: bob publishes his KEM key and leaves; alice writes him and leaves; bob
/// comes back and gets every message once, from the daemon's store alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_nodes_store_nothing_and_a_daemon_holds_the_mailbox() {
    let boot_config = |seeds: Vec<(SocketAddr, Fingerprint)>| {
        let mut c = config(true, seeds, None);
        if let Some(d) = c.dht.as_mut() {
            d.config.store.mailbox = false;
        }
        c
    };
    let boot1 = Node::bind(Identity::generate(&mut OsRng), boot_config(vec![]))
        .await
        .unwrap();
    let boot2 = Node::bind(
        Identity::generate(&mut OsRng),
        boot_config(vec![(boot1.local_addr(), boot1.fingerprint())]),
    )
    .await
    .unwrap();
    boot2.dht_bootstrap().await.unwrap();
    let seeds = vec![
        (boot1.local_addr(), boot1.fingerprint()),
        (boot2.local_addr(), boot2.fingerprint()),
    ];
    // The reachable daemon that holds mailboxes: a DHT server with mailbox storage on.
    let holder = Node::bind(
        Identity::generate(&mut OsRng),
        NodeConfig {
            rendezvous_server: false,
            ..config(true, seeds.clone(), None)
        },
    )
    .await
    .unwrap();
    holder.dht_bootstrap().await.unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();

    let bob = client(&seeds, dirs[1].path(), dirs[1].path()).await;
    let bob_fp = bob.fingerprint();
    assert!(bob.mailbox_publish_key().await.unwrap() >= 1);
    bob.shutdown(Duration::from_millis(200)).await;

    let alice = client(&seeds, dirs[0].path(), dirs[0].path()).await;
    let alice_fp = alice.fingerprint();
    let n = 10;
    let bodies: Vec<Bytes> = (0..n).map(|i| Bytes::from(format!("s{i:02}"))).collect();
    alice.send_many(bob_fp, bodies.clone()).await.unwrap();
    until("alice's items in the mailbox", async || {
        alice.mailbox_stats().await.items_put == n as u64
    })
    .await;
    let held = [
        boot1.dht_stats().await.store.mailbox_items,
        boot2.dht_stats().await.store.mailbox_items,
        holder.dht_stats().await.store.mailbox_items,
    ];
    println!(
        "mailbox items held: bootstrap nodes {:?}, the daemon {}",
        &held[..2],
        held[2]
    );
    assert_eq!(held, [0, 0, n], "only the daemon holds them");
    alice.shutdown(Duration::from_millis(200)).await;

    // Bob comes back while alice is away (a fresh store: see above).
    let mut bob = client(&seeds, dirs[1].path(), dirs[2].path()).await;
    let stats = bob.mailbox_fetch().await;
    let mut got = Vec::new();
    while let Ok(ev) = bob.events_try_recv() {
        if let NodeEvent::Message { from, body, .. } = ev {
            assert_eq!(from, alice_fp);
            got.push(body);
        }
    }
    got.sort();
    println!(
        "bob back, alice gone: {} of {n} from the daemon's store, {} new, {} duplicates",
        got.len(),
        stats.new,
        stats.duplicates
    );
    assert_eq!(got, bodies, "every message, once");
    assert_eq!(bob.stored_inbox().len(), n);
}

/// Contact drops (spec/09-mailbox.md §1.1): carol and alice add each other as contacts and
/// swap drops; carol goes offline and alice leaves three messages. The storing node holds
/// them under carol's drop key, published by the drop — nothing under carol's mailbox key,
/// and nothing that names alice or carol outside the wrapped envelopes. Carol, back, gets
/// all three once, and her drop's receipt marks them delivered in alice's outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::disallowed_methods)] // times one fetch of real nodes
async fn a_contacts_offline_messages_go_to_the_drop_and_name_nobody() {
    use dna_p2p::crypto::record::{drop_key, mailbox_key};
    use dna_p2p::crypto::RecordKind;
    let boot = Node::bind(Identity::generate(&mut OsRng), config(true, vec![], None))
        .await
        .unwrap();
    let seeds = vec![(boot.local_addr(), boot.fingerprint())];
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let alice = client(&seeds, dirs[0].path(), dirs[0].path()).await;
    let carol = client(&seeds, dirs[1].path(), dirs[1].path()).await;
    let (a_fp, c_fp) = (alice.fingerprint(), carol.fingerprint());
    assert!(carol.mailbox_publish_key().await.unwrap() >= 1);
    alice.contact_add(&c_fp.to_string(), None).await.unwrap();
    carol.contact_add(&a_fp.to_string(), None).await.unwrap();
    let carol_drop = carol.drop_id().expect("a node with a mailbox has a drop");
    // No presence here, so carol's drop reaches alice through alice's mailbox: she fetches.
    until("alice has carol's drop", async || {
        alice.mailbox_fetch().await;
        alice.drop_of(&c_fp) == Some(carol_drop)
    })
    .await;
    carol.shutdown(Duration::from_millis(200)).await;

    let bodies: Vec<Bytes> = (0..3).map(|i| Bytes::from(format!("d{i}"))).collect();
    let ids = alice.send_many(c_fp, bodies.clone()).await.unwrap();
    // (Alice's own drop, sent again to carol when carol's arrived, waits there too.)
    until("alice's three in carol's drop", async || {
        let o = alice.outbox(10).await;
        ids.iter()
            .all(|id| o.iter().any(|e| e.id == *id && e.held_by.is_some()))
    })
    .await;
    let in_drop = alice.dht_get(drop_key(&carol_drop)).await.unwrap();
    let in_mailbox = alice.dht_get(mailbox_key(&c_fp)).await.unwrap();
    let publishers: std::collections::BTreeSet<_> = in_drop
        .iter()
        .map(|r| r.publisher().fingerprint())
        .collect();
    println!(
        "under carol's drop key: {} records ({:?}), published by {} identity (the drop's); \
         under her mailbox key: {} items (none of the three)",
        in_drop.len(),
        in_drop
            .iter()
            .map(|r| r.kind())
            .collect::<std::collections::HashSet<_>>(),
        publishers.len(),
        in_mailbox
            .iter()
            .filter(|r| r.kind() == RecordKind::MailboxItem)
            .count()
    );
    assert!(in_drop.len() >= 3);
    assert!(in_drop.iter().all(|r| r.kind() == RecordKind::MailboxDrop));
    assert_eq!(publishers, [carol_drop].into_iter().collect());
    // (Alice's own drop may wait under carol's mailbox key: it went out before carol's
    // drop reached her.)
    let texts: Vec<u64> = ids.iter().map(dna_p2p::crypto::receipt::item_seq).collect();
    assert!(
        in_mailbox
            .iter()
            .all(|r| r.kind() != RecordKind::MailboxItem || !texts.contains(&r.seq())),
        "none of the three under carol's mailbox key"
    );
    // Nothing outside the wrapped envelope names alice or carol.
    for r in &in_drop {
        let v = r.value();
        for fp in [a_fp, c_fp] {
            assert!(
                !v.windows(32).any(|w| w == fp.0),
                "a fingerprint in the clear"
            );
        }
    }

    // Carol back (her identity, her drop; a fresh message store: see above).
    std::fs::copy(
        dirs[1].path().join("drop.key"),
        dirs[2].path().join("drop.key"),
    )
    .unwrap();
    let mut carol = client(&seeds, dirs[1].path(), dirs[2].path()).await;
    assert_eq!(carol.drop_id(), Some(carol_drop));
    // One fetch: the requests mailbox and the drop, two lookups however many contacts.
    let served = boot.dht_stats().await.requests_served;
    let started = std::time::Instant::now();
    let stats = carol.mailbox_fetch().await;
    let took = started.elapsed();
    let served = boot.dht_stats().await.requests_served - served;
    println!("one fetch: {served} requests to the storing node, {took:?}");
    let mut got = Vec::new();
    while let Ok(ev) = carol.events_try_recv() {
        if let NodeEvent::Message { from, body, .. } = ev {
            if from == a_fp {
                got.push(body);
            }
        }
    }
    got.sort();
    println!(
        "carol back: {} of 3 from her drop ({} new, {} duplicates)",
        got.len(),
        stats.new,
        stats.duplicates
    );
    assert_eq!(got, bodies, "every message, once");
    until("the drop's receipt at alice", async || {
        let o = alice.outbox(10).await;
        ids.iter().all(|id| {
            o.iter()
                .any(|e| e.id == *id && e.state == "delivered" && e.path == Some("mailbox"))
        })
    })
    .await;
    let left = alice.dht_get(drop_key(&carol_drop)).await.unwrap();
    println!(
        "after the receipt: {:?} under the drop key",
        left.iter().map(|r| r.kind()).collect::<Vec<_>>()
    );
    assert!(left.iter().all(|r| r.kind() == RecordKind::DropReceipt));
}

/// Removing a contact rotates the drop (spec/09-mailbox.md §1.1): the remaining contact gets
/// the new one, the removed one keeps only the old, which carol fetches until its items
/// expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_contact_rotates_the_drop_and_the_others_get_the_new_one() {
    let boot = Node::bind(Identity::generate(&mut OsRng), config(true, vec![], None))
        .await
        .unwrap();
    let seeds = vec![(boot.local_addr(), boot.fingerprint())];
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let carol = client(&seeds, dirs[0].path(), dirs[0].path()).await;
    let alice = client(&seeds, dirs[1].path(), dirs[1].path()).await;
    let bob = client(&seeds, dirs[2].path(), dirs[2].path()).await;
    let c_fp = carol.fingerprint();
    for n in [&alice, &bob] {
        assert!(n.mailbox_publish_key().await.unwrap() >= 1);
        n.contact_add(&c_fp.to_string(), None).await.unwrap();
        carol
            .contact_add(&n.fingerprint().to_string(), None)
            .await
            .unwrap();
    }
    let old = carol.drop_id().unwrap();
    // No presence here: drops travel through the mailboxes, so each fetches.
    until("alice and bob have carol's drop", async || {
        alice.mailbox_fetch().await;
        bob.mailbox_fetch().await;
        alice.drop_of(&c_fp) == Some(old) && bob.drop_of(&c_fp) == Some(old)
    })
    .await;
    carol
        .contact_remove(&bob.fingerprint().to_string())
        .await
        .unwrap();
    let new = carol.drop_id().unwrap();
    assert_ne!(new, old, "a new drop");
    assert!(
        dirs[0].path().join("drop.prev.key").exists(),
        "the old one kept"
    );
    until("alice has the new drop", async || {
        alice.mailbox_fetch().await;
        alice.drop_of(&c_fp) == Some(new)
    })
    .await;
    bob.mailbox_fetch().await;
    println!(
        "carol removed bob: her drop {} → {}; alice holds the new one, bob {}",
        &old.to_string()[..8],
        &new.to_string()[..8],
        if bob.drop_of(&c_fp) == Some(old) {
            "only the old"
        } else {
            "?"
        }
    );
    assert_eq!(bob.drop_of(&c_fp), Some(old));
}

/// The fetch cost (spec/09-mailbox.md §1.1): one fetch is two DHT lookups — the requests
/// mailbox and the drop — with no contact and with 100 contacts alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::disallowed_methods)] // times fetches of real nodes
async fn a_fetch_costs_two_lookups_however_many_contacts() {
    let boot = Node::bind(Identity::generate(&mut OsRng), config(true, vec![], None))
        .await
        .unwrap();
    let seeds = vec![(boot.local_addr(), boot.fingerprint())];
    let dir = tempfile::tempdir().unwrap();
    let carol = client(&seeds, dir.path(), dir.path()).await;
    let mut costs = Vec::new();
    for contacts in [0usize, 100] {
        for _ in 0..contacts {
            let fp = Identity::generate(&mut OsRng).fingerprint();
            carol.contact_add(&fp.to_string(), None).await.unwrap();
        }
        let before = carol.mailbox_stats().await;
        let started = std::time::Instant::now();
        let after = carol.mailbox_fetch().await;
        let took = started.elapsed();
        let lookups = after.fetch_lookups - before.fetch_lookups;
        let pages = after.fetch_pages - before.fetch_pages;
        println!("{contacts} contacts: one fetch = {lookups} lookups, {pages} pages, {took:?}");
        costs.push(lookups);
    }
    assert_eq!(costs, [2, 2]);
}

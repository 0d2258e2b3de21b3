//! The DHT over real QUIC on loopback: 2 bootstrap nodes and 20 nodes, each its own
//! identity, socket and endpoint. Every node announces its presence; nodes find each other's
//! records; an identity that never announced is "offline".

use std::time::Duration;

use dna_p2p::crypto::{Fingerprint, Identity};
use dna_p2p::daemon::{DhtSettings, Node, NodeConfig};
use dna_p2p::dht::DhtConfig;
use rand_core::OsRng;

async fn dht_node(bootstrap: Vec<(std::net::SocketAddr, Fingerprint)>) -> Node {
    let cfg = NodeConfig {
        dht: Some(DhtSettings {
            bootstrap,
            config: DhtConfig::default(),
            data_dir: None,
        }),
        ..NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
    };
    Node::bind(Identity::generate(&mut OsRng), cfg)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_announce_and_find_each_other() {
    let boot_a = dht_node(vec![]).await;
    let boot_b = dht_node(vec![(boot_a.local_addr(), boot_a.fingerprint())]).await;
    boot_b.dht_bootstrap().await.unwrap();
    let seeds = vec![
        (boot_a.local_addr(), boot_a.fingerprint()),
        (boot_b.local_addr(), boot_b.fingerprint()),
    ];
    let mut nodes = Vec::new();
    for _ in 0..20 {
        let n = dht_node(seeds.clone()).await;
        let size = tokio::time::timeout(Duration::from_secs(30), n.dht_bootstrap())
            .await
            .unwrap()
            .unwrap();
        assert!(size > 0, "joined");
        nodes.push(n);
    }
    // Everyone announces where it is.
    for n in &nodes {
        let value = n.local_addr().to_string().into_bytes();
        let held = n.announce(value).await.unwrap();
        assert!(held >= 1, "presence stored somewhere");
    }
    // Everyone finds someone else's presence — through the DHT, not directly.
    for (i, n) in nodes.iter().enumerate() {
        let other = &nodes[(i + 7) % nodes.len()];
        let rec = n
            .find_peer(other.fingerprint())
            .await
            .unwrap()
            .expect("found");
        assert_eq!(rec.publisher().fingerprint(), other.fingerprint());
        assert_eq!(rec.value(), other.local_addr().to_string().as_bytes());
    }
    // Someone who never announced is offline.
    let stranger = Identity::generate(&mut OsRng).fingerprint();
    assert_eq!(nodes[0].find_peer(stranger).await.unwrap(), None);
    // Tables hold proven nodes only: sizes are plausible for 22 nodes.
    for n in &nodes {
        assert!(
            n.dht_table_size().await >= 2 && n.dht_table_size().await <= 21,
            "table {}",
            n.dht_table_size().await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_announce_wins_and_bootstrap_survives_a_dead_seed() {
    let boot = dht_node(vec![]).await;
    let dead: std::net::SocketAddr = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    // The first seed never answers; the second does.
    let seeds = vec![
        (dead, Identity::generate(&mut OsRng).fingerprint()),
        (boot.local_addr(), boot.fingerprint()),
    ];
    let a = dht_node(seeds.clone()).await;
    let b = dht_node(seeds).await;
    assert!(a.dht_bootstrap().await.unwrap() > 0);
    assert!(b.dht_bootstrap().await.unwrap() > 0);
    a.announce(b"first".to_vec()).await.unwrap();
    a.announce(b"second".to_vec()).await.unwrap();
    let rec = b.find_peer(a.fingerprint()).await.unwrap().expect("found");
    assert_eq!(rec.value(), b"second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_table_and_records_survive_a_restart() {
    let boot = dht_node(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let seeds = vec![(boot.local_addr(), boot.fingerprint())];
    let config = |bootstrap: Vec<(std::net::SocketAddr, Fingerprint)>| NodeConfig {
        dht: Some(DhtSettings {
            bootstrap,
            config: DhtConfig::default(),
            data_dir: Some(dir.path().to_path_buf()),
        }),
        ..NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
    };
    let id_dir = dir.path().join("identity");
    let x = Node::bind(
        Identity::create_in(&id_dir, &mut OsRng).unwrap(),
        config(seeds.clone()),
    )
    .await
    .unwrap();
    x.dht_bootstrap().await.unwrap();
    let y = dht_node(seeds.clone()).await;
    y.dht_bootstrap().await.unwrap();
    y.announce(b"where y is".to_vec()).await.unwrap();
    assert!(x.dht_records_held().await >= 1, "x holds y's presence");
    let table = x.dht_table_size().await;
    assert!(table >= 2);
    x.shutdown(Duration::from_millis(200)).await;

    // Same identity, same data directory, and no bootstrap list this time.
    let x2 = Node::bind(Identity::load_from(&id_dir).unwrap(), config(vec![]))
        .await
        .unwrap();
    assert_eq!(x2.dht_table_size().await, table, "routing table restored");
    assert!(x2.dht_records_held().await >= 1, "records restored");
    // The restored table is enough to reach the network.
    let rec = x2
        .find_peer(y.fingerprint())
        .await
        .unwrap()
        .expect("found through the saved table");
    assert_eq!(rec.value(), b"where y is");
}

/// Two nodes only: the publisher keeps a copy of its own record (it is among the k closest),
/// and a node finds records it holds itself. Both once failed here. `stored_at` counts the
/// other node only: the publisher's own copy is no copy for when it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_find_each_other() {
    let bob = dht_node(vec![]).await;
    let alice = dht_node(vec![(bob.local_addr(), bob.fingerprint())]).await;
    alice.dht_bootstrap().await.unwrap();
    assert_eq!(
        bob.announce(b"bob".to_vec()).await.unwrap(),
        1,
        "alice (bob's own copy is not counted)"
    );
    assert_eq!(
        alice
            .find_peer(bob.fingerprint())
            .await
            .unwrap()
            .unwrap()
            .value(),
        b"bob"
    );
    assert_eq!(alice.announce(b"alice".to_vec()).await.unwrap(), 1);
    assert_eq!(
        bob.find_peer(alice.fingerprint())
            .await
            .unwrap()
            .unwrap()
            .value(),
        b"alice"
    );
}

/// A server that shuts down (spec/04-dht.md §3) says so as it closes its connections: the
/// bootstrap node drops it from its routing table at once and hands it to nobody. Gone
/// servers would otherwise cost every lookup that meets them a request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_shuts_down_leaves_the_routing_tables() {
    let boot = dht_node(vec![]).await;
    let seeds = vec![(boot.local_addr(), boot.fingerprint())];
    let a = dht_node(seeds.clone()).await;
    let b = dht_node(seeds).await;
    a.dht_bootstrap().await.unwrap();
    b.dht_bootstrap().await.unwrap();
    let before = boot.dht_table_size().await;
    assert_eq!(before, 2, "both servers are in the bootstrap node's table");
    a.shutdown(Duration::from_secs(1)).await;
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        while boot.dht_table_size().await > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let after = boot.dht_table_size().await;
    println!("bootstrap table: {before} before, {after} after one server shut down");
    assert!(gone.is_ok(), "the server that shut down left the table");
    // The other is still handed out.
    let found = boot.dht_table_size().await;
    assert_eq!(found, 1);
    drop(b);
}

/// Seed 001: "not found" means offline. A presence record lives three refresh intervals
/// (`PRESENCE_LIFETIMES`): a node that crashes without a word reads offline within that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::disallowed_methods)] // a test of real processes reads the wall clock
async fn a_crashed_peers_presence_expires_within_three_refresh_intervals() {
    use dna_p2p::daemon::PRESENCE_LIFETIMES;
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let refresh = Duration::from_secs(2);
    let boot = dht_node(vec![]).await;
    let seeds = vec![(boot.local_addr(), boot.fingerprint())];
    let a = {
        let cfg = NodeConfig {
            dht: Some(DhtSettings {
                bootstrap: seeds.clone(),
                config: DhtConfig::default(),
                data_dir: None,
            }),
            presence_refresh: refresh,
            ..NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
        };
        Node::bind(Identity::generate(&mut OsRng), cfg)
            .await
            .unwrap()
    };
    let b = dht_node(seeds).await;
    a.dht_bootstrap().await.unwrap();
    b.dht_bootstrap().await.unwrap();
    let signed_after = unix();
    assert!(a.announce_presence().await.unwrap() >= 1, "presence stored");
    let signed_before = unix();
    let rec = b
        .find_peer(a.fingerprint())
        .await
        .unwrap()
        .expect("online: found");
    let lifetime = refresh.as_secs() * u64::from(PRESENCE_LIFETIMES);
    println!(
        "presence signed at {signed_after}..={signed_before}, expires at {} ({lifetime} s = {PRESENCE_LIFETIMES} refresh intervals of {} s)",
        rec.expiry(),
        refresh.as_secs()
    );
    assert!(rec.expiry() >= signed_after + lifetime && rec.expiry() <= signed_before + lifetime);
    // A crash: no goodbye, no more refreshes.
    let fp = a.fingerprint();
    a.abort().await;
    while unix() <= rec.expiry() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The lookup ran (an answer, not an error) and found no live record.
    assert_eq!(b.find_peer(fp).await.unwrap(), None, "offline once expired");
}

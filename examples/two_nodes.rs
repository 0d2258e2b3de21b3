//! Two nodes on loopback: one announces itself in the DHT, the other finds it there,
//! connects to the address it announced, and sends an end-to-end encrypted message that is
//! acknowledged. `cargo run --release --example two_nodes`

use std::time::Duration;

use bytes::Bytes;
use dna_p2p::crypto::Identity;
use dna_p2p::daemon::{DhtSettings, Node, NodeConfig, NodeEvent};
use rand_core::OsRng;

fn config(bootstrap: Vec<(std::net::SocketAddr, dna_p2p::crypto::Fingerprint)>) -> NodeConfig {
    NodeConfig {
        dht: Some(DhtSettings {
            bootstrap,
            ..DhtSettings::default()
        }),
        ..NodeConfig::listening_on("127.0.0.1:0".parse().expect("loopback address"))
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut bob = Node::bind(Identity::generate(&mut OsRng), config(vec![])).await?;
    let alice = Node::bind(
        Identity::generate(&mut OsRng),
        config(vec![(bob.local_addr(), bob.fingerprint())]),
    )
    .await?;
    println!("bob   {} at {}", bob.fingerprint(), bob.local_addr());
    println!("alice {} at {}", alice.fingerprint(), alice.local_addr());

    alice.dht_bootstrap().await?;
    let held = bob
        .announce(bob.local_addr().to_string().into_bytes())
        .await?;
    println!("bob announced his presence; {held} node(s) hold it");

    let record = alice
        .find_peer(bob.fingerprint())
        .await?
        .ok_or("bob is offline")?;
    let addr = std::str::from_utf8(record.value())?.parse()?;
    println!(
        "alice found bob at {addr} (record sequence {})",
        record.seq()
    );

    alice.connect(bob.fingerprint(), vec![addr]).await;
    let id = alice
        .send(bob.fingerprint(), Bytes::from_static(b"hello, bob"))
        .await?;
    let body = loop {
        if let Some(NodeEvent::Message { body, .. }) = bob.next_event().await {
            break body;
        }
    };
    println!("bob received {:?}", String::from_utf8_lossy(&body));
    let mut alice = alice;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), alice.next_event()).await? {
            Some(NodeEvent::Acked { ids, .. }) if ids.contains(&id) => break,
            Some(_) => {}
            None => return Err("alice stopped".into()),
        }
    }
    println!("alice saw it acknowledged");
    alice.shutdown(Duration::from_secs(1)).await;
    bob.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

//! Messaging a peer known only by its fingerprint, with nothing but the library: a
//! bootstrap node, and two nodes that join the DHT through it. Bob publishes where he can
//! be reached (candidates, a rendezvous registration, his presence); alice sends to his
//! fingerprint and does nothing else — her node finds bob's presence in the DHT, sends
//! CONNECT through the rendezvous node, punches, and delivers (the node core's re-reach
//! schedule, `NodeConfig::retry`, spec/06-node.md §3.5). On loopback:
//! `cargo run --release --example by_fingerprint`

use std::time::{Duration, Instant};

use bytes::Bytes;
use dna_p2p::crypto::{Fingerprint, Identity};
use dna_p2p::daemon::{DhtSettings, Node, NodeConfig, NodeEvent};
use dna_p2p::node::retry::RetryConfig;
use rand_core::OsRng;

fn config(seeds: Vec<(std::net::SocketAddr, Fingerprint)>) -> NodeConfig {
    NodeConfig {
        // The bootstrap node also serves as a rendezvous node, as `dna bootstrap` does.
        rendezvous_server: seeds.is_empty(),
        dht: Some(DhtSettings::joining(seeds, true)),
        // Peers with messages waiting are reached by the node itself.
        retry: Some(RetryConfig::default()),
        ..NodeConfig::listening_on("127.0.0.1:0".parse().expect("loopback address"))
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::disallowed_methods)] // an example is a driver: it reads the clock
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let boot = Node::bind(Identity::generate(&mut OsRng), config(vec![])).await?;
    let seeds = vec![(boot.local_addr(), boot.fingerprint())];
    let mut bob = Node::bind(Identity::generate(&mut OsRng), config(seeds.clone())).await?;
    let mut alice = Node::bind(Identity::generate(&mut OsRng), config(seeds)).await?;
    for n in [&bob, &alice] {
        n.dht_bootstrap().await?;
        n.gather_candidates(&[boot.local_addr()]).await?;
    }
    bob.register_rendezvous(boot.local_addr(), boot.fingerprint())
        .await?;
    let held = bob.announce_presence().await?;
    println!(
        "bob   {} (presence held by {held} other node(s))",
        bob.fingerprint()
    );

    // All alice knows of bob is his fingerprint.
    let t0 = Instant::now();
    let id = alice
        .send(bob.fingerprint(), Bytes::from_static(b"hello bob"))
        .await?;
    println!(
        "alice {} sent {} to bob's fingerprint",
        alice.fingerprint(),
        hex(&id.0)
    );
    let wait = async {
        let mut got = false;
        let mut acked = false;
        while !(got && acked) {
            tokio::select! {
                Some(ev) = bob.next_event() => if let NodeEvent::Message { from, body, .. } = ev {
                    println!("bob got {:?} from {from} after {:?}", String::from_utf8_lossy(&body), t0.elapsed());
                    got = true;
                },
                Some(ev) = alice.next_event() => match ev {
                    NodeEvent::Reaching { stage, .. } => println!("alice: reaching bob: {}", stage.name()),
                    NodeEvent::Acked { ids, .. } if ids.contains(&id) => {
                        println!("alice: acknowledged after {:?}", t0.elapsed());
                        acked = true;
                    }
                    _ => {}
                },
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait).await?;
    for n in [alice, bob, boot] {
        n.shutdown(Duration::from_secs(1)).await;
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

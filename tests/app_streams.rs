//! Application streams (spec/03-session.md §10, spec/06-node.md §1.5): a protocol opens
//! its own QUIC stream to a connected peer, sealed end to end; bulk data on it does not hold
//! back the node's messages; a stream of a kind nobody registered is refused.

use std::time::Duration;

use bytes::Bytes;
use dna_p2p::crypto::{Identity, MessageKind};
use dna_p2p::daemon::{AppStreamError, Node, NodeConfig, NodeEvent};
use rand_core::OsRng;
use sha2::{Digest, Sha256};

/// A private kind (0x8000 and above are never registered: spec/02 §4.1).
const BULK: MessageKind = MessageKind(0x8002);
const WAIT: Duration = Duration::from_secs(60);

/// Waits for `node`'s session with someone to be up.
async fn up(node: &mut Node) {
    loop {
        match tokio::time::timeout(WAIT, node.next_event())
            .await
            .expect("the session comes up")
        {
            Some(NodeEvent::PeerUp { .. }) => return,
            Some(_) => {}
            None => panic!("the node ended"),
        }
    }
}

fn config(apps: Vec<MessageKind>) -> NodeConfig {
    NodeConfig {
        apps,
        ..NodeConfig::listening_on("127.0.0.1:0".parse().expect("loopback"))
    }
}

/// alice writes 16 MiB on a stream bob does not read yet, so her writer stalls on the
/// stream's flow control; meanwhile 20 texts go over the same connection and bob gets all
/// of them; then bob reads the stream: every byte, in order, and its sealed end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_bulk_stream_does_not_hold_back_messages() {
    let mut bob = Node::bind(Identity::generate(&mut OsRng), config(vec![BULK]))
        .await
        .unwrap();
    let mut alice = Node::bind(Identity::generate(&mut OsRng), config(vec![BULK]))
        .await
        .unwrap();
    let mut bob_bulk = bob.app(BULK).unwrap();
    let alice_bulk = alice.app(BULK).unwrap();
    alice
        .connect(bob.fingerprint(), vec![bob.local_addr()])
        .await;
    up(&mut alice).await;
    let mut s = tokio::time::timeout(WAIT, alice_bulk.open_stream(bob.fingerprint()))
        .await
        .expect("opened in time")
        .expect("opened");
    assert_eq!(s.peer(), bob.fingerprint());
    const TOTAL: usize = 16 << 20;
    let data: Vec<u8> = (0..TOTAL).map(|i| (i * 7 + i / 4096) as u8).collect();
    let want = Sha256::digest(&data);
    let (written_tx, mut written_rx) = tokio::sync::watch::channel(0usize);
    let writer = tokio::spawn(async move {
        for (i, chunk) in data.chunks(256 << 10).enumerate() {
            s.write(chunk).await.unwrap();
            let _ = written_tx.send((i + 1) * chunk.len());
        }
        s.finish().await.unwrap();
        s
    });
    let mut incoming = tokio::time::timeout(WAIT, bob_bulk.accept_stream())
        .await
        .expect("bob's protocol gets the stream")
        .unwrap();
    assert_eq!(
        (incoming.peer(), incoming.kind()),
        (alice.fingerprint(), BULK)
    );
    // The writer stalls: bob reads nothing yet. Wait until it has stopped moving.
    let mut stalled_at = 0;
    while let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(2), written_rx.changed()).await
    {
        stalled_at = *written_rx.borrow();
    }
    assert!(
        stalled_at < TOTAL,
        "the writer is held by the unread stream ({stalled_at} of {TOTAL} written)"
    );
    for n in 0..20 {
        alice
            .send(bob.fingerprint(), Bytes::from(format!("text {n}")))
            .await
            .unwrap();
    }
    let mut texts = 0;
    while texts < 20 {
        match tokio::time::timeout(WAIT, bob.next_event())
            .await
            .expect("texts arrive")
        {
            Some(NodeEvent::Message { kind, .. }) if kind == MessageKind::TEXT => texts += 1,
            Some(_) => {}
            None => panic!("bob's node ended"),
        }
    }
    let still = *written_rx.borrow();
    assert!(still < TOTAL, "the stream is still unread");
    println!(
        "writer stalled at {stalled_at} of {TOTAL} bytes (stream unread); 20 of 20 texts \
         delivered meanwhile; {still} written when the last text arrived"
    );
    let mut hash = Sha256::new();
    let mut got = 0usize;
    while let Some(chunk) = tokio::time::timeout(WAIT, incoming.read())
        .await
        .expect("the stream moves")
        .expect("a valid stream")
    {
        got += chunk.len();
        hash.update(&chunk);
    }
    assert_eq!(got, TOTAL);
    assert_eq!(hash.finalize(), want, "every byte, in order");
    let mut s = writer.await.unwrap();
    // bob ends his direction: alice reads the sealed end.
    incoming.finish().await.unwrap();
    assert!(s.read().await.unwrap().is_none());
    println!("bob read {got} bytes, sha-256 equal, both directions ended");
}

/// A stream of a kind bob never registered is reset: alice's read fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_a_kind_nobody_registered_is_refused() {
    let bob = Node::bind(Identity::generate(&mut OsRng), config(vec![]))
        .await
        .unwrap();
    let mut alice = Node::bind(Identity::generate(&mut OsRng), config(vec![BULK]))
        .await
        .unwrap();
    let alice_bulk = alice.app(BULK).unwrap();
    alice
        .connect(bob.fingerprint(), vec![bob.local_addr()])
        .await;
    up(&mut alice).await;
    let mut s = tokio::time::timeout(WAIT, alice_bulk.open_stream(bob.fingerprint()))
        .await
        .expect("opened in time")
        .expect("opened");
    let _ = s.write(b"hello").await;
    let r = tokio::time::timeout(WAIT, s.read())
        .await
        .expect("an answer");
    println!("alice's read: {r:?}");
    assert!(matches!(r, Err(AppStreamError::Quic(_))), "{r:?}");
    // The session itself is untouched: a message still goes through.
    alice
        .send(bob.fingerprint(), Bytes::from_static(b"still here"))
        .await
        .unwrap();
    drop(bob);
}

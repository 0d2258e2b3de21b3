//! File transfer between two nodes on loopback (spec/11-files.md), through the file
//! application (`dna_p2p::files`) on the node's extension point: an offer with a hostile
//! name, consent, every 16 KiB leaf checked against the root, the file whole; and a
//! transfer that resumes after the recipient's node is shut down mid-way and started again.

// A deadline for the transfer to get going reads the clock (no timing is asserted).
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use dna_p2p::crypto::{Fingerprint, Identity, MessageKind};
use dna_p2p::daemon::{Node, NodeConfig, NodeEvent};
use dna_p2p::files::{self, FileEvent, Files, FilesConfig};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(120);

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dna-files-{tag}-{}", OsRng.next_u64()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn node(id: Identity) -> Node {
    let cfg = NodeConfig {
        apps: vec![MessageKind::FILE],
        ..NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
    };
    Node::bind(id, cfg).await.unwrap()
}

fn app(node: &mut Node, dir: &Path) -> (Files, tokio::sync::mpsc::Receiver<FileEvent>) {
    let cfg = FilesConfig {
        state_dir: dir.join("state"),
        download_dir: dir.join("downloads"),
    };
    files::start(node.app(MessageKind::FILE).unwrap(), cfg)
}

async fn up(node: &mut Node) {
    loop {
        match tokio::time::timeout(WAIT, node.next_event())
            .await
            .expect("session up")
        {
            Some(NodeEvent::PeerUp { .. }) => return,
            Some(_) => {}
            None => panic!("node ended"),
        }
    }
}

async fn next(rx: &mut tokio::sync::mpsc::Receiver<FileEvent>) -> FileEvent {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a file event in time")
        .expect("the file application runs")
}

fn random_file(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let mut data = vec![0u8; len];
    OsRng.fill_bytes(&mut data);
    let p = dir.join(name);
    std::fs::write(&p, &data).unwrap();
    (p, Sha256::digest(&data).to_vec())
}

/// alice offers `len` random bytes to bob, bob accepts, and the transfer gets going: returns
/// once bob's bitmap is on disk (the file's hash, the transfer, the bitmap's path).
async fn started(
    alice_files: &Files,
    bob_files: &Files,
    bob_ev: &mut tokio::sync::mpsc::Receiver<FileEvent>,
    bob: Fingerprint,
    (da, db): (&Path, &Path),
    len: usize,
) -> (Vec<u8>, [u8; 16], PathBuf) {
    let (path, want) = random_file(da, "big.bin", len);
    let id = alice_files.send_file(bob, &path).await.unwrap();
    let FileEvent::Offer { .. } = next(bob_ev).await else {
        panic!("offer")
    };
    bob_files.accept(id).await.unwrap();
    let have = db.join("state").join(format!("{}.have", hex::encode(id)));
    let deadline = std::time::Instant::now() + WAIT;
    while !have.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the transfer got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (want, id, have)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_arrives_whole_checked_and_inside_the_download_directory() {
    let (da, db) = (tmp("a"), tmp("b"));
    let mut alice = node(Identity::generate(&mut OsRng)).await;
    let mut bob = node(Identity::generate(&mut OsRng)).await;
    let (alice_files, mut alice_ev) = app(&mut alice, &da);
    let (bob_files, mut bob_ev) = app(&mut bob, &db);
    alice
        .connect(bob.fingerprint(), vec![bob.local_addr()])
        .await;
    up(&mut alice).await;
    // A hidden name (the recipient's sanitizer is tested with path names in `files::name`).
    let (path, want) = random_file(&da, "..evil.bin", 5 * (1 << 20) + 123);
    let id = alice_files
        .send_file(bob.fingerprint(), &path)
        .await
        .unwrap();
    let FileEvent::Offer {
        id: got,
        name,
        size,
        from,
    } = next(&mut bob_ev).await
    else {
        panic!("an offer first")
    };
    assert_eq!(
        (got, size, from),
        (id, 5 * (1 << 20) + 123, alice.fingerprint())
    );
    assert_eq!(name, "evil.bin", "no leading dot, no path");
    bob_files.accept(id).await.unwrap();
    let FileEvent::Done {
        path: saved,
        leaves_twice,
        ..
    } = next(&mut bob_ev).await
    else {
        panic!("the file arrives")
    };
    assert_eq!(saved, db.join("downloads").join("evil.bin"));
    assert_eq!(
        Sha256::digest(std::fs::read(&saved).unwrap()).to_vec(),
        want
    );
    assert_eq!(leaves_twice, 0);
    assert_eq!(
        next(&mut alice_ev).await,
        FileEvent::Answered { id, accepted: true }
    );
    let FileEvent::Delivered { leaves_sent, .. } = next(&mut alice_ev).await else {
        panic!("alice hears it is done")
    };
    println!(
        "5 MiB + 123 B: {leaves_sent} leaves sent (the file has 321), SHA-256 equal, saved as {}",
        saved.display()
    );
    assert_eq!(leaves_sent, 321);
    let _ = std::fs::remove_dir_all(&da);
    let _ = std::fs::remove_dir_all(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_resumes_after_the_recipient_restarts() {
    let (da, db) = (tmp("a"), tmp("b"));
    let bob_dir = db.join("identity");
    Identity::load_or_create(&bob_dir, &mut OsRng).unwrap();
    let mut alice = node(Identity::generate(&mut OsRng)).await;
    let mut bob = node(Identity::load_from(&bob_dir).unwrap()).await;
    let bob_addr = bob.local_addr();
    let (alice_files, mut alice_ev) = app(&mut alice, &da);
    let (bob_files, mut bob_ev) = app(&mut bob, &db);
    alice.connect(bob.fingerprint(), vec![bob_addr]).await;
    up(&mut alice).await;
    const LEN: usize = 48 << 20;
    // Mid-way: once bob's bitmap on disk lists some leaves, his node goes away.
    let (want, _, have) = started(
        &alice_files,
        &bob_files,
        &mut bob_ev,
        bob.fingerprint(),
        (&da, &db),
        LEN,
    )
    .await;
    bob.shutdown(Duration::from_millis(100)).await;
    drop(bob_files);
    drop(bob_ev);
    let held_then = std::fs::read(&have).map(|b| b.len()).unwrap_or(0);
    // bob again: same identity, same directories; he finds alice where she was.
    let mut bob = node(Identity::load_from(&bob_dir).unwrap()).await;
    let (_bob_files, mut bob_ev) = app(&mut bob, &db);
    bob.connect(alice.fingerprint(), vec![alice.local_addr()])
        .await;

    let FileEvent::Done { path: saved, .. } = next(&mut bob_ev).await else {
        panic!("the transfer resumes and finishes")
    };
    assert_eq!(
        Sha256::digest(std::fs::read(&saved).unwrap()).to_vec(),
        want
    );
    // alice: accepted, then delivered.
    let mut sent = None;
    while sent.is_none() {
        if let FileEvent::Delivered { leaves_sent, .. } = next(&mut alice_ev).await {
            sent = Some(leaves_sent);
        }
    }
    let leaves = (LEN as u64).div_ceil(16 * 1024);
    let again = sent.unwrap() - leaves;
    println!(
        "48 MiB across a restart of the recipient: {} leaves sent for {leaves} (sent again: {again}, {} KiB); bitmap {held_then} B at the restart; SHA-256 equal",
        sent.unwrap(),
        again * 16
    );
    // At most the leaves written since the bitmap was last saved (32: 512 KiB) and those
    // in flight (the stream's 1 MiB window).
    assert!(
        again * 16 * 1024 <= (3 << 20) / 2,
        "sent again: {again} leaves"
    );
    let _ = std::fs::remove_dir_all(&da);
    let _ = std::fs::remove_dir_all(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_resumes_after_the_sender_restarts() {
    let (da, db) = (tmp("a"), tmp("b"));
    let alice_dir = da.join("identity");
    Identity::load_or_create(&alice_dir, &mut OsRng).unwrap();
    let mut alice = node(Identity::load_from(&alice_dir).unwrap()).await;
    let mut bob = node(Identity::generate(&mut OsRng)).await;
    let (alice_files, _alice_ev) = app(&mut alice, &da);
    let (bob_files, mut bob_ev) = app(&mut bob, &db);
    alice
        .connect(bob.fingerprint(), vec![bob.local_addr()])
        .await;
    up(&mut alice).await;
    const LEN: usize = 48 << 20;
    let (want, _, _) = started(
        &alice_files,
        &bob_files,
        &mut bob_ev,
        bob.fingerprint(),
        (&da, &db),
        LEN,
    )
    .await;
    // alice goes away mid-way and comes back: her offer is on disk, the tree hashed again.
    alice.shutdown(Duration::from_millis(100)).await;
    drop(alice_files);
    let mut alice = node(Identity::load_from(&alice_dir).unwrap()).await;
    let (_alice_files, mut alice_ev) = app(&mut alice, &da);
    alice
        .connect(bob.fingerprint(), vec![bob.local_addr()])
        .await;
    let FileEvent::Done { path: saved, .. } = next(&mut bob_ev).await else {
        panic!("the transfer resumes and finishes")
    };
    assert_eq!(
        Sha256::digest(std::fs::read(&saved).unwrap()).to_vec(),
        want
    );
    let FileEvent::Delivered { leaves_sent, .. } = next(&mut alice_ev).await else {
        panic!("the restarted sender hears it is done")
    };
    println!(
        "48 MiB across a restart of the sender: the restarted sender sent {leaves_sent} of 3072 leaves; SHA-256 equal"
    );
    assert!(leaves_sent < 3072, "only what was missing");
    let _ = std::fs::remove_dir_all(&da);
    let _ = std::fs::remove_dir_all(&db);
}

/// 100 offers from one peer: 16 wait for the user, 84 are dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_offers_keeps_a_bounded_few() {
    use dna_p2p::files::msg::FileMsg;
    let db = tmp("b");
    let mut mallory = node(Identity::generate(&mut OsRng)).await;
    let mut bob = node(Identity::generate(&mut OsRng)).await;
    let raw = mallory.app(MessageKind::FILE).unwrap();
    let (bob_files, _bob_ev) = app(&mut bob, &db);
    mallory
        .connect(bob.fingerprint(), vec![bob.local_addr()])
        .await;
    up(&mut mallory).await;
    for i in 0..100u8 {
        let offer = FileMsg::Meta {
            id: [i; 16],
            size: 1 << 40,
            root: [0; 32],
            name: format!("junk{i}"),
        };
        raw.send(bob.fingerprint(), offer.encode().into())
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + WAIT;
    let (held, dropped) = loop {
        let held = bob_files.list().await.unwrap().len() as u64;
        let dropped = bob_files.stats().await.unwrap().offers_dropped;
        if held + dropped == 100 {
            break (held, dropped);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bob took every offer in: {held} + {dropped}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("100 offers from one peer: {held} held for the user, {dropped} dropped");
    assert_eq!((held, dropped), (files::MAX_PENDING_PER_PEER as u64, 84));
    let _ = std::fs::remove_dir_all(&db);
}

/// The sender's file changes after the offer: the sender cancels, both sides report it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_after_its_offer_is_cancelled() {
    let (da, db) = (tmp("a"), tmp("b"));
    let mut alice = node(Identity::generate(&mut OsRng)).await;
    let mut bob = node(Identity::generate(&mut OsRng)).await;
    let (alice_files, mut alice_ev) = app(&mut alice, &da);
    let (bob_files, mut bob_ev) = app(&mut bob, &db);
    alice
        .connect(bob.fingerprint(), vec![bob.local_addr()])
        .await;
    up(&mut alice).await;
    let (path, _) = random_file(&da, "draft.txt", 100_000);
    let id = alice_files
        .send_file(bob.fingerprint(), &path)
        .await
        .unwrap();
    let FileEvent::Offer { .. } = next(&mut bob_ev).await else {
        panic!("offer")
    };
    random_file(&da, "draft.txt", 100_000);
    bob_files.accept(id).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        tokio::select! {
            Some(e) = alice_ev.recv() => if let FileEvent::Failed { reason, .. } = e { seen.push(format!("alice: {reason}")) },
            Some(e) = bob_ev.recv() => if let FileEvent::Failed { reason, .. } = e { seen.push(format!("bob: {reason}")) },
            _ = tokio::time::sleep(WAIT) => panic!("no cancel: {seen:?}"),
        }
    }
    println!("{seen:?}");
    assert!(seen
        .iter()
        .all(|s| s.ends_with("the file changed at the sender")));
    let _ = std::fs::remove_dir_all(&da);
    let _ = std::fs::remove_dir_all(&db);
}

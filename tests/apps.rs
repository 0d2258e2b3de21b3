//! Application protocols on the node (spec/06-node.md §1.5): a message carries a kind; a
//! protocol that registered its kind gets its messages on its own queue, text still comes
//! as events, and nothing goes to both.

use std::time::Duration;

use bytes::Bytes;
use dna_p2p::crypto::{Identity, MessageKind};
use dna_p2p::daemon::{Node, NodeConfig, NodeEvent};
use rand_core::OsRng;

/// A private kind (0x8000 and above are never registered: spec/02 §4.1).
const ECHO: MessageKind = MessageKind(0x8001);

fn config(apps: Vec<MessageKind>) -> NodeConfig {
    NodeConfig {
        apps,
        ..NodeConfig::listening_on("127.0.0.1:0".parse().expect("loopback"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_kind_goes_to_its_protocol_and_text_stays_an_event() {
    let mut bob = Node::bind(Identity::generate(&mut OsRng), config(vec![ECHO]))
        .await
        .unwrap();
    let mut alice = Node::bind(Identity::generate(&mut OsRng), config(vec![ECHO]))
        .await
        .unwrap();
    let mut bob_echo = bob.app(ECHO).expect("registered");
    assert!(bob.app(ECHO).is_none(), "taken once");
    assert!(bob.app(MessageKind::FILE).is_none(), "not registered");
    let alice_echo = alice.app(ECHO).unwrap();
    alice
        .connect(bob.fingerprint(), vec![bob.local_addr()])
        .await;

    // Interleaved: text, the protocol's message, text.
    alice
        .send(bob.fingerprint(), Bytes::from_static(b"text 1"))
        .await
        .unwrap();
    let app_id = alice_echo
        .send(bob.fingerprint(), Bytes::from_static(b"\x00\x01ping"))
        .await
        .unwrap();
    alice
        .send(bob.fingerprint(), Bytes::from_static(b"text 2"))
        .await
        .unwrap();

    let got = tokio::time::timeout(Duration::from_secs(20), bob_echo.recv())
        .await
        .expect("the protocol's message arrives")
        .unwrap();
    assert_eq!(got.from, alice.fingerprint());
    assert_eq!(got.id, app_id);
    assert_eq!(&got.body[..], b"\x00\x01ping");

    // Both texts arrive as events, and nothing of the protocol's kind does.
    let mut texts = Vec::new();
    while texts.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(20), bob.next_event())
            .await
            .expect("the texts arrive")
            .unwrap();
        if let NodeEvent::Message { kind, body, .. } = ev {
            assert_eq!(kind, MessageKind::TEXT, "only text comes as events here");
            texts.push(body);
        }
    }
    assert_eq!(texts, [&b"text 1"[..], &b"text 2"[..]]);
    // All three acknowledged to alice: the protocol's message is a message like any other.
    let mut acked = 0;
    while acked < 3 {
        match tokio::time::timeout(Duration::from_secs(20), alice.next_event())
            .await
            .expect("the ACKs arrive")
            .unwrap()
        {
            NodeEvent::Acked { ids, .. } => acked += ids.len(),
            NodeEvent::Message { .. } => panic!("alice got a message"),
            _ => {}
        }
    }
    println!("3 sent, 1 to the protocol, 2 as events, {acked} acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_kind_comes_as_an_event_with_its_kind() {
    let mut bob = Node::bind(Identity::generate(&mut OsRng), config(vec![]))
        .await
        .unwrap();
    let alice = Node::bind(Identity::generate(&mut OsRng), config(vec![]))
        .await
        .unwrap();
    alice
        .connect(bob.fingerprint(), vec![bob.local_addr()])
        .await;
    alice
        .send_kind(bob.fingerprint(), ECHO, [Bytes::from_static(b"raw")])
        .await
        .unwrap();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), bob.next_event())
            .await
            .expect("it arrives")
            .unwrap();
        if let NodeEvent::Message { kind, body, .. } = ev {
            assert_eq!((kind, &body[..]), (ECHO, &b"raw"[..]));
            break;
        }
    }
}

//! Hostile peers against a real node on loopback: each misbehaviour gets the connection
//! closed with its stated code and the peer scored down, and the node keeps serving others.
//! Also the impersonation cases: a man in the middle, a wrong identity, a reused certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dna_p2p::crypto::{Fingerprint, Identity, MessageKind};
use dna_p2p::daemon::{Node, NodeConfig, NodeEvent};
use dna_p2p::session::code;
use dna_p2p::session::hello::{hello, Role, EXPORTER_LABEL, HELLO_LEN};
use dna_p2p::transport::tls::{
    client_config, quic_configs, server_config, CertifiedKey, SERVER_NAME,
};
use dna_p2p::wire::{encode_frame, FrameLimits, MessageType};
use rand_core::OsRng;

async fn node() -> Node {
    Node::bind(
        Identity::generate(&mut OsRng),
        NodeConfig::listening_on("127.0.0.1:0".parse().unwrap()),
    )
    .await
    .unwrap()
}

fn client_endpoint(key: &CertifiedKey) -> quinn::Endpoint {
    client_endpoint_at(key, "127.0.0.1:0")
}

fn client_endpoint_at(key: &CertifiedKey, at: &str) -> quinn::Endpoint {
    let (_, client) = quic_configs(key).unwrap();
    let mut ep = quinn::Endpoint::client(at.parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(client)));
    ep
}

fn frame(t: MessageType, seq: u32, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    encode_frame(t, seq, payload, &FrameLimits::default(), &mut out).unwrap();
    out.freeze()
}

/// A hostile client: connects, opens the session stream and sends a valid HELLO.
struct Hostile {
    identity: Identity,
    conn: quinn::Connection,
    send: quinn::SendStream,
    _recv: quinn::RecvStream,
    _ep: quinn::Endpoint,
}

async fn hostile(target: SocketAddr, with_hello: bool) -> Hostile {
    let identity = Identity::generate(&mut OsRng);
    let ep = client_endpoint(&CertifiedKey::generate().unwrap());
    let conn = ep.connect(target, SERVER_NAME).unwrap().await.unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    if with_hello {
        let mut exporter = [0u8; 32];
        conn.export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
            .unwrap();
        send.write_all(&frame(
            MessageType::Hello,
            0,
            &hello(&identity, &exporter, Role::Dialer),
        ))
        .await
        .unwrap();
    }
    Hostile {
        identity,
        conn,
        send,
        _recv: recv,
        _ep: ep,
    }
}

/// The application close code the node closed `conn` with.
async fn close_code(conn: &quinn::Connection) -> u64 {
    let err = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("node did not close");
    match err {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        other => panic!("closed otherwise: {other}"),
    }
}

/// A well-behaved peer still gets a message through to `victim` and back. It comes from
/// another loopback address than the hostile clients (127.0.0.1): bans apply to the IP.
async fn still_serves(victim: &mut Node) {
    let good = Node::bind(
        Identity::generate(&mut OsRng),
        NodeConfig::listening_on("127.0.0.2:0".parse().unwrap()),
    )
    .await
    .unwrap();
    good.connect(victim.fingerprint(), vec![victim.local_addr()])
        .await;
    good.send(victim.fingerprint(), Bytes::from_static(b"still there?"))
        .await
        .unwrap();
    let fp = good.fingerprint();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(NodeEvent::Message { from, body, .. }) = victim.next_event().await {
                if from == fp {
                    return body;
                }
            }
        }
    })
    .await
    .expect("victim stopped serving");
    assert_eq!(&got[..], b"still there?");
    good.shutdown(Duration::from_millis(200)).await;
}

async fn score_of(victim: &Node, fp: &Fingerprint) -> i32 {
    // The node scores right after closing; give its task a moment.
    for _ in 0..100 {
        if let Some(info) = victim.peer_info(fp).await {
            if info.score < 0 {
                return info.score;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    victim.peer_info(fp).await.map(|i| i.score).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frame_closes_with_malformed_frame() {
    let mut victim = node().await;
    let mut h = hostile(victim.local_addr(), true).await;
    h.send.write_all(&[0x5A; 64]).await.unwrap();
    assert_eq!(close_code(&h.conn).await, code::MALFORMED_FRAME as u64);
    assert_eq!(score_of(&victim, &h.identity.fingerprint()).await, -50);
    still_serves(&mut victim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_length_closes_with_frame_too_large_before_the_payload() {
    let mut victim = node().await;
    let mut h = hostile(victim.local_addr(), true).await;
    let mut header = frame(MessageType::Ping, 1, &[0; 8])[..32].to_vec();
    header[12..16].copy_from_slice(&(64u32 << 20).to_be_bytes()); // 64 MiB declared, none sent
    h.send.write_all(&header).await.unwrap();
    assert_eq!(close_code(&h.conn).await, code::FRAME_TOO_LARGE as u64);
    assert_eq!(score_of(&victim, &h.identity.fingerprint()).await, -50);
    still_serves(&mut victim).await;
}

/// A peer with a live session opens application streams of a kind nobody registered
/// (spec/03-session.md §10): each is refused, and the 17th refusal closes the connection
/// with STREAM_LIMIT and scores the peer down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_flood_closes_with_stream_limit() {
    let mut victim = node().await;
    let junk = MessageKind(0x8009);
    let mut mallory = Node::bind(
        Identity::generate(&mut OsRng),
        NodeConfig {
            apps: vec![junk],
            ..NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
        },
    )
    .await
    .unwrap();
    mallory
        .connect(victim.fingerprint(), vec![victim.local_addr()])
        .await;
    let mut refused = 0;
    let mut ended = None;
    for _ in 0..100 {
        let Ok(mut s) = mallory
            .handle()
            .open_stream(victim.fingerprint(), junk)
            .await
        else {
            // Not (or no longer) connected: the session came down, or is still coming up.
            if refused > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = s.write(b"junk").await;
        if s.read().await.is_err() {
            refused += 1;
        }
    }
    while ended.is_none() {
        match tokio::time::timeout(Duration::from_secs(20), mallory.next_event())
            .await
            .expect("mallory's session ends")
        {
            // The victim closed: mallory's event names the victim's close code.
            Some(NodeEvent::PeerDown { reason, .. }) => ended = Some(reason),
            Some(_) => {}
            None => panic!("mallory's node ended"),
        }
    }
    let reason = ended.unwrap_or_default();
    println!("{refused} streams refused, then mallory's session ended: {reason}");
    assert!(
        reason.ends_with(&format!("(code {})", code::STREAM_LIMIT)),
        "closed with STREAM_LIMIT: {reason}"
    );
    assert!(refused > 16, "the limit had its chance: {refused} refusals");
    assert_eq!(score_of(&victim, &mallory.fingerprint()).await, -50);
    still_serves(&mut victim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_frame_type_closes_with_protocol_violation() {
    let mut victim = node().await;
    // KEX_ACCEPT is the listener's message: a dialer may not send it.
    let mut h = hostile(victim.local_addr(), true).await;
    h.send
        .write_all(&frame(MessageType::KexAccept, 1, &[0; 16]))
        .await
        .unwrap();
    assert_eq!(close_code(&h.conn).await, code::PROTOCOL_VIOLATION as u64);
    assert_eq!(score_of(&victim, &h.identity.fingerprint()).await, -30);
    // DATA before the key exchange finished.
    let mut h = hostile(victim.local_addr(), true).await;
    h.send
        .write_all(&frame(MessageType::Data, 1, b"early"))
        .await
        .unwrap();
    assert_eq!(close_code(&h.conn).await, code::PROTOCOL_VIOLATION as u64);
    still_serves(&mut victim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_offences_get_a_peer_banned() {
    let victim = node().await;
    let identity = Identity::generate(&mut OsRng);
    let key = CertifiedKey::generate().unwrap();
    let mut codes = Vec::new();
    for attempt in 0..3 {
        // Before the session is established, offences count against the source IP too:
        // after two, 127.0.0.1 is banned. The third attempt comes from another IP, where
        // the identity's own ban meets it.
        let ep = match attempt {
            0 | 1 => client_endpoint(&key),
            _ => client_endpoint_at(&key, "127.0.0.3:0"),
        };
        let conn = ep
            .connect(victim.local_addr(), SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        let mut exporter = [0u8; 32];
        conn.export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
            .unwrap();
        send.write_all(&frame(
            MessageType::Hello,
            0,
            &hello(&identity, &exporter, Role::Dialer),
        ))
        .await
        .unwrap();
        if attempt < 2 {
            send.write_all(&[0x5A; 64]).await.unwrap();
        }
        codes.push(close_code(&conn).await);
    }
    // Two malformed frames cost 2 × 50: the third connection's valid HELLO gets BANNED.
    assert_eq!(
        codes,
        [
            code::MALFORMED_FRAME as u64,
            code::MALFORMED_FRAME as u64,
            code::BANNED as u64
        ]
    );
    assert!(
        victim
            .peer_info(&identity.fingerprint())
            .await
            .unwrap()
            .score
            <= dna_p2p::daemon::BAN_THRESHOLD
    );
    let from_banned_ip = client_endpoint(&key)
        .connect(victim.local_addr(), SERVER_NAME)
        .unwrap()
        .await;
    assert!(from_banned_ip.is_err(), "127.0.0.1 is banned, any port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_hello_signature_is_auth_failed_and_scored_by_address() {
    let mut victim = node().await;
    let h = hostile(victim.local_addr(), false).await;
    let mut send = h.send;
    let identity = Identity::generate(&mut OsRng);
    // Signed over the wrong exporter: what a relaying man in the middle would have.
    let forged = hello(&identity, &[7; 32], Role::Dialer);
    send.write_all(&frame(MessageType::Hello, 0, &forged))
        .await
        .unwrap();
    assert_eq!(close_code(&h.conn).await, code::AUTH_FAILED as u64);
    let addr = h
        .conn
        .local_ip()
        .map(|ip| SocketAddr::new(ip, h._ep.local_addr().unwrap().port()));
    let addr = addr.unwrap_or_else(|| h._ep.local_addr().unwrap());
    assert_eq!(victim.addr_score(&addr).await, -100);
    still_serves(&mut victim).await;
}

/// A man in the middle with its own key: A dials M's address believing it is B. M relays the
/// session stream byte for byte to the real B. Neither side accepts the other's HELLO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relaying_man_in_the_middle_is_refused() {
    let mut a = node().await;
    let mut b = node().await;
    // Mallory: a QUIC server (for A) and a client (toward B), forwarding the session stream.
    let key = CertifiedKey::generate().unwrap();
    let (server, _) = quic_configs(&key).unwrap();
    let m_server = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(server)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let m_addr = m_server.local_addr().unwrap();
    let m_client = client_endpoint(&key);
    let b_addr = b.local_addr();
    let relay = tokio::spawn(async move {
        let from_a = m_server.accept().await.unwrap().await.unwrap();
        let to_b = m_client
            .connect(b_addr, SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (mut a_send, mut a_recv) = from_a.accept_bi().await.unwrap();
        let (mut b_send, mut b_recv) = to_b.open_bi().await.unwrap();
        // One byte of A's HELLO makes the stream visible to B, which answers with its HELLO;
        // M hands that to A first, so each side sees the other's HELLO through M.
        let first = a_recv.read_chunk(1, true).await.unwrap().unwrap();
        b_send.write_all(&first.bytes).await.unwrap();
        let mut b_hello = vec![0u8; 32 + HELLO_LEN];
        b_recv.read_exact(&mut b_hello).await.unwrap();
        a_send.write_all(&b_hello).await.unwrap();
        let up = async {
            while let Ok(Some(c)) = a_recv.read_chunk(65536, true).await {
                if b_send.write_all(&c.bytes).await.is_err() {
                    break;
                }
            }
        };
        let down = async {
            while let Ok(Some(c)) = b_recv.read_chunk(65536, true).await {
                if a_send.write_all(&c.bytes).await.is_err() {
                    break;
                }
            }
        };
        let _ =
            tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(up, down) }).await;
        (from_a, to_b)
    });
    a.connect(b.fingerprint(), vec![m_addr]).await;
    a.send(b.fingerprint(), Bytes::from_static(b"for B only"))
        .await
        .unwrap();
    let (from_a, to_b) = relay.await.unwrap();
    // B refuses A's forwarded HELLO: signed over the A–M exporter, not M–B.
    let code_b = close_code(&to_b).await;
    assert_eq!(code_b, code::AUTH_FAILED as u64);
    let code_a = close_code(&from_a).await;
    assert_eq!(code_a, code::AUTH_FAILED as u64);
    // Nothing was delivered, nobody came up.
    let quiet = tokio::time::timeout(Duration::from_millis(300), async {
        tokio::select! {
            Some(NodeEvent::Message { .. }) = b.next_event() => {}
            Some(NodeEvent::PeerUp { .. }) = a.next_event() => {}
        }
    })
    .await;
    assert!(
        quiet.is_err(),
        "a message or a PeerUp got through the man in the middle"
    );
    assert_eq!(
        a.peer_info(&b.fingerprint()).await.unwrap().queued
            + a.peer_info(&b.fingerprint()).await.unwrap().inflight,
        1,
        "the message waits for the real B"
    );
}

/// Dialing an address where another identity answers: refused, nothing sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_key_cannot_pose_as_the_one_dialed() {
    let a = node().await;
    let b = node().await;
    let mallory = node().await;
    a.connect(b.fingerprint(), vec![mallory.local_addr()]).await;
    a.send(b.fingerprint(), Bytes::from_static(b"for B only"))
        .await
        .unwrap();
    // A had its chance: the address answered with another identity, and A's next dial
    // round waits the longest delay (spec/06-node.md §4.2).
    let longest = NodeConfig::default().reconnect_max;
    for _ in 0..500 {
        if a.peer_info(&b.fingerprint()).await.unwrap().redial == longest {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        a.peer_info(&b.fingerprint()).await.unwrap().redial,
        longest,
        "the wrong identity was seen"
    );
    let info = a.peer_info(&b.fingerprint()).await.unwrap();
    assert!(!info.connected);
    assert_eq!(info.queued, 1, "kept for the real B");
    // Whichever side noticed first (A the HELLO, or mallory the key exchange addressed to
    // B: spec/03-session.md §7, WRONG_RECIPIENT), A's mistake cost A nothing there.
    assert_eq!(
        mallory.transport_stats().await.scored_sources,
        0,
        "a stale address is no attack"
    );
    assert!(
        mallory.peer_info(&b.fingerprint()).await.is_none()
            || !mallory.peer_info(&b.fingerprint()).await.unwrap().connected
    );
    assert!(mallory
        .peer_info(&a.fingerprint())
        .await
        .map(|i| !i.connected)
        .unwrap_or(true));
}

/// Another node's certificate is useless without its TLS key, and with it (stolen), still
/// useless without its Dilithium key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_reuse_another_nodes_certificate() {
    let theirs = CertifiedKey::generate().unwrap();
    let mine = CertifiedKey::generate().unwrap();
    // (1) Their certificate with my key: rustls refuses the pair, or the handshake fails.
    let stolen_cert_only = CertifiedKey {
        cert: theirs.cert.clone(),
        key: mine.key.clone_key(),
    };
    let refused = match server_config(&stolen_cert_only) {
        Err(_) => true,
        Ok(cfg) => {
            let server = quinn::crypto::rustls::QuicServerConfig::try_from(cfg).unwrap();
            let ep = quinn::Endpoint::server(
                quinn::ServerConfig::with_crypto(Arc::new(server)),
                "127.0.0.1:0".parse().unwrap(),
            )
            .unwrap();
            let addr = ep.local_addr().unwrap();
            tokio::spawn(async move {
                if let Some(i) = ep.accept().await {
                    let _ = i.await;
                }
            });
            let client = client_endpoint(&mine);
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                client.connect(addr, SERVER_NAME).unwrap(),
            )
            .await;
            !matches!(r, Ok(Ok(_)))
        }
    };
    assert!(refused, "TLS accepted a certificate without its key");
    // (2) Certificate and TLS key both stolen: the HELLO still needs the Dilithium key.
    let a = node().await;
    let b = node().await;
    let thief = Identity::generate(&mut OsRng);
    let (server, _) = quic_configs(&theirs).unwrap();
    let _ = client_config(&theirs).unwrap();
    let ep = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(server)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = ep.local_addr().unwrap();
    let serve = tokio::spawn(async move {
        let conn = ep.accept().await.unwrap().await.unwrap();
        let (mut send, _recv) = conn.accept_bi().await.unwrap();
        let mut exporter = [0u8; 32];
        conn.export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
            .unwrap();
        send.write_all(&frame(
            MessageType::Hello,
            0,
            &hello(&thief, &exporter, Role::Listener),
        ))
        .await
        .unwrap();
        close_code(&conn).await
    });
    a.connect(b.fingerprint(), vec![addr]).await;
    assert_eq!(serve.await.unwrap(), code::AUTH_FAILED as u64);
    assert!(!a.peer_info(&b.fingerprint()).await.unwrap().connected);
}

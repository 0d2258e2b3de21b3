//! The DHT driver's bounds attacked over real QUIC on loopback (issue 9, Build 3; spec/04 §5.1):
//! inbound requests that are never answered leave no responder behind, a query the caller
//! gives up on leaves no waiter, DHT connections count toward `max_connections`, and a bad
//! HELLO on a DHT connection is scored against its address until it is banned.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use dna_p2p::crypto::{Identity, NodeId};
use dna_p2p::daemon::{DhtSettings, Node, NodeConfig};
use dna_p2p::dht::{Body, DhtConfig, DhtMessage};
use dna_p2p::session::code;
use dna_p2p::session::hello::{hello, Role, EXPORTER_LABEL, HELLO_LEN};
use dna_p2p::transport::tls::{quic_dht_client, CertifiedKey, SERVER_NAME};
use dna_p2p::wire::{encode_frame, FrameLimits, MessageType, HEADER_LEN};
use rand_core::OsRng;

fn dht_config(server: bool) -> NodeConfig {
    let mut cfg = NodeConfig::listening_on("127.0.0.1:0".parse().unwrap());
    cfg.dht = Some(DhtSettings {
        bootstrap: vec![],
        config: DhtConfig {
            server,
            ..DhtConfig::default()
        },
        data_dir: None,
    });
    cfg
}

fn frame(t: MessageType, payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    encode_frame(
        t,
        0,
        payload,
        &FrameLimits {
            max_payload: 1 << 20,
        },
        &mut out,
    )
    .unwrap();
    out
}

/// A hostile DHT client written from spec/04 §5.1: its own endpoint, ALPN `dna-dht/1`.
struct Attacker {
    ep: quinn::Endpoint,
    cfg: quinn::ClientConfig,
}

impl Attacker {
    fn new() -> Attacker {
        let key = CertifiedKey::generate().unwrap();
        let cfg = quinn::ClientConfig::new(Arc::new(quic_dht_client(&key).unwrap()));
        let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        Attacker { ep, cfg }
    }

    fn addr(&self) -> SocketAddr {
        self.ep.local_addr().unwrap()
    }

    /// A DHT connection, or the error the node refused it with.
    async fn connect(&self, to: SocketAddr) -> Result<quinn::Connection, quinn::ConnectionError> {
        self.ep
            .connect_with(self.cfg.clone(), to, SERVER_NAME)
            .unwrap()
            .await
    }

    /// Connects and sends a HELLO: valid (a fresh identity) or signed over the wrong
    /// exporter. With a valid one, waits for the node's HELLO: it has counted us by then.
    async fn hello(&self, to: SocketAddr, valid: bool) -> Result<quinn::Connection, String> {
        let conn = self.connect(to).await.map_err(|e| e.to_string())?;
        let mut exporter = [0u8; 32];
        conn.export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
            .unwrap();
        if !valid {
            exporter = [7; 32];
        }
        let id = Identity::generate(&mut OsRng);
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&frame(
            MessageType::Hello,
            &hello(&id, &exporter, Role::Dialer),
        ))
        .await
        .map_err(|e| e.to_string())?;
        let _ = send.finish();
        if valid {
            let mut theirs = vec![0u8; HEADER_LEN + HELLO_LEN];
            recv.read_exact(&mut theirs)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(conn)
    }
}

/// Polls `f` until it holds (a node's tasks run concurrently with the test); panics after
/// 30 s, which only a broken node reaches.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    for _ in 0..3000 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

/// A client-mode node answers no FIND_NODE; each request used to leave its responder entry
/// behind for good. Now the entry goes when the request's task ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_dht_requests_leave_no_responders() {
    const REQUESTS: usize = 64;
    let mut cfg = dht_config(false);
    cfg.conn.handshake_timeout = Duration::from_millis(500);
    let victim = Node::bind(Identity::generate(&mut OsRng), cfg)
        .await
        .unwrap();
    let attacker = Attacker::new();
    let mut tasks = Vec::new();
    for c in 0..REQUESTS / 4 {
        // Four streams per connection: the node's limit of concurrent streams.
        let conn = attacker.hello(victim.local_addr(), true).await.unwrap();
        for i in 0..4 {
            let conn = conn.clone();
            tasks.push(tokio::spawn(async move {
                let (mut send, mut recv) = conn.open_bi().await.unwrap();
                let msg = DhtMessage {
                    id: (c * 4 + i) as u64,
                    flags: 0,
                    body: Body::FindNode {
                        target: NodeId([i as u8; 20]),
                    },
                };
                send.write_all(&frame(msg.msg_type(), &msg.encode()))
                    .await
                    .unwrap();
                send.finish().unwrap();
                // Nothing comes back; the stream ends when the node gives up.
                let _ = recv.read_to_end(1 << 20).await;
                conn
            }));
        }
    }
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.unwrap());
    }
    // Every request reached the node and its task ended: the node had its chance.
    eventually("all requests served", || async {
        victim.dht_stats().await.requests_served == REQUESTS as u64
    })
    .await;
    let s = victim.dht_stats().await;
    println!(
        "after {REQUESTS} unanswered requests: responders {} waiters {} (served {})",
        s.responders, s.waiters, s.requests_served
    );
    assert_eq!(s.responders, 0, "responder entries leaked");
    assert_eq!(s.waiters, 0);
    drop(conns);
    victim.shutdown(Duration::ZERO).await;
}

/// A caller that gives up on a query (its own timeout, a dropped request) used to leave its
/// waiter until the lookup ended on its own; now the waiter goes with the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_given_up_leaves_no_waiter() {
    // B joins A's table, then vanishes (no goodbye: a node that shuts down cleanly leaves
    // A's table at once): A's lookups then wait for B's request timeouts.
    let b = Node::bind(Identity::generate(&mut OsRng), dht_config(true))
        .await
        .unwrap();
    let mut cfg = dht_config(true);
    cfg.dht.as_mut().unwrap().bootstrap = vec![(b.local_addr(), b.fingerprint())];
    let a = Node::bind(Identity::generate(&mut OsRng), cfg)
        .await
        .unwrap();
    eventually("A knows B and its bootstrap is over", || async {
        a.dht_table_size().await == 1 && a.dht_stats().await.waiters == 0
    })
    .await;
    b.abort().await;
    let mut given_up = 0;
    for _ in 0..8 {
        let target = Identity::generate(&mut OsRng).fingerprint();
        let find = a.find_peer(target);
        tokio::pin!(find);
        // Give up as soon as the query is registered (the proof that it started).
        let started = tokio::select! {
            biased;
            _ = &mut find => false,
            _ = async {
                while a.dht_stats().await.waiters == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            } => true,
        };
        assert!(started, "a lookup to a silent node cannot finish at once");
        given_up += 1;
    }
    let s = a.dht_stats().await;
    println!(
        "after {given_up} queries given up: waiters {} responders {}",
        s.waiters, s.responders
    );
    assert_eq!(s.waiters, 0, "waiters leaked");
    a.shutdown(Duration::ZERO).await;
}

/// DHT connections used to escape `max_connections`: the node counted only session
/// connections. Now one counter covers both, so a flood of DHT connections stops at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dht_connections_count_toward_max_connections() {
    const MAX: usize = 4;
    let mut cfg = dht_config(true);
    cfg.max_connections = MAX;
    // Held connections count as busy (not evictable) for a handshake timeout: longer than
    // this test, so only the limit decides.
    cfg.conn.handshake_timeout = Duration::from_secs(600);
    let victim = Node::bind(Identity::generate(&mut OsRng), cfg)
        .await
        .unwrap();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..3 * MAX {
        // Each from its own address and identity: nothing but the total limit applies.
        let a = Attacker::new();
        match a.hello(victim.local_addr(), true).await {
            Ok(c) => held.push((a, c)),
            Err(_) => refused += 1,
        }
    }
    println!(
        "{} DHT connections tried at max_connections {MAX}: {} held, {refused} refused, node counts {}",
        3 * MAX,
        held.len(),
        victim.connection_count()
    );
    assert_eq!(held.len(), MAX, "DHT connections escaped max_connections");
    assert_eq!(victim.connection_count(), MAX);
    // Closing them frees the slots.
    for (_, c) in &held {
        c.close(0u32.into(), b"bye");
    }
    eventually("slots freed", || async { victim.connection_count() == 0 }).await;
    let late = Attacker::new();
    assert!(late.hello(victim.local_addr(), true).await.is_ok());
    victim.shutdown(Duration::ZERO).await;
}

/// At the limit, a DHT connection quiet for a handshake timeout gives its place to the
/// newcomer instead of the newcomer being refused: DHT connections are cheap to redial,
/// and a node contacted by the whole network must not lock itself up with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_limit_a_quiet_dht_connection_makes_room() {
    const MAX: usize = 2;
    let mut cfg = dht_config(true);
    cfg.max_connections = MAX;
    cfg.conn.handshake_timeout = Duration::from_millis(200);
    let victim = Node::bind(Identity::generate(&mut OsRng), cfg)
        .await
        .unwrap();
    let old: Vec<(Attacker, quinn::Connection)> = {
        let mut v = Vec::new();
        for _ in 0..MAX {
            let a = Attacker::new();
            let c = a.hello(victim.local_addr(), true).await.unwrap();
            v.push((a, c));
        }
        v
    };
    assert_eq!(victim.connection_count(), MAX);
    // Let both become quiet for longer than a handshake timeout.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let late = Attacker::new();
    let _new = late
        .hello(victim.local_addr(), true)
        .await
        .expect("a quiet DHT connection should have made room");
    let closed = tokio::time::timeout(
        Duration::from_secs(10),
        futures_select(old[0].1.closed(), old[1].1.closed()),
    )
    .await
    .expect("no old connection was closed");
    let reason = match closed {
        quinn::ConnectionError::ApplicationClosed(c) => c.reason,
        other => panic!("closed otherwise: {other}"),
    };
    eventually("count back at the limit", || async {
        victim.connection_count() == MAX
    })
    .await;
    println!(
        "at max_connections {MAX}: newcomer accepted, an old DHT connection closed ({:?}), node counts {}",
        String::from_utf8_lossy(&reason),
        victim.connection_count()
    );
    assert_eq!(&reason[..], b"evicted");
    victim.shutdown(Duration::ZERO).await;
}

async fn futures_select<T>(
    a: impl std::future::Future<Output = T>,
    b: impl std::future::Future<Output = T>,
) -> T {
    tokio::select! {
        x = a => x,
        x = b => x,
    }
}

/// A DHT connection that carries no request for twice the session idle timeout is closed,
/// and leaves the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_dht_connection_is_closed() {
    let mut cfg = dht_config(true);
    cfg.conn.idle_timeout = Duration::from_millis(300);
    let victim = Node::bind(Identity::generate(&mut OsRng), cfg)
        .await
        .unwrap();
    let a = Attacker::new();
    let conn = a.hello(victim.local_addr(), true).await.unwrap();
    assert_eq!(victim.connection_count(), 1);
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the idle connection stayed open");
    let reason = match closed {
        quinn::ConnectionError::ApplicationClosed(c) => c.reason,
        other => panic!("closed otherwise: {other}"),
    };
    eventually("count back to 0", || async {
        victim.connection_count() == 0
    })
    .await;
    println!(
        "idle DHT connection closed by the node ({:?}); count {} pooled {}",
        String::from_utf8_lossy(&reason),
        victim.connection_count(),
        victim.dht_stats().await.connections
    );
    assert_eq!(&reason[..], b"idle");
    assert_eq!(victim.dht_stats().await.connections, 0);
    victim.shutdown(Duration::ZERO).await;
}

/// A DHT HELLO that does not verify used to cost nothing; now it is AUTH_FAILED, scored
/// against the address like a session HELLO, and a banned address is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_dht_hello_is_scored_until_the_address_is_banned() {
    let victim = Node::bind(Identity::generate(&mut OsRng), dht_config(true))
        .await
        .unwrap();
    let attacker = Attacker::new();
    let conn = attacker.hello(victim.local_addr(), false).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("node did not close");
    let code = match closed {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        other => panic!("closed otherwise: {other}"),
    };
    let addr = attacker.addr();
    for _ in 0..3000 {
        if victim.addr_score(&addr).await < 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let score = victim.addr_score(&addr).await;
    println!("bad DHT HELLO: close code {code:#x}, address score {score}");
    assert_eq!(code, u64::from(code::AUTH_FAILED));
    assert!(score <= dna_p2p::daemon::BAN_THRESHOLD);
    // Banned: the next connection from that address is refused.
    assert!(attacker.connect(victim.local_addr()).await.is_err());
    victim.shutdown(Duration::ZERO).await;
}

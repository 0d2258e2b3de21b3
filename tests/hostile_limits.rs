//! Attacks on the transport's limits (spec/06-node.md, "Transport limits"), each against a
//! real node on loopback, each printing the figure it bounds:
//!
//! * many connections that declare a 1 MiB HELLO and send most of it, against a real
//!   `dna bootstrap` process: its peak RSS;
//! * a peer that sends PINGs and never reads: it is closed, our writer queue stays bounded;
//! * handshake timeouts and failures from one IP: the IP is banned, whatever the port;
//! * a dial answered by the wrong identity, or a forged HELLO: no redial every second, no
//!   redial of a banned address.
//!
//! Attackers use their own loopback addresses (127.x.y.z) so that per-IP bans of one test
//! do not touch another; each is a raw quinn endpoint with the project's TLS config.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dna_p2p::crypto::{Fingerprint, Identity};
use dna_p2p::daemon::{Node, NodeConfig, NodeEvent, BAN_THRESHOLD};
use dna_p2p::session::hello::{hello, Role, EXPORTER_LABEL, HELLO_LEN};
use dna_p2p::session::{code, ConnConfig, Connection};
use dna_p2p::transport::tls::{quic_configs, CertifiedKey, SERVER_NAME};
use dna_p2p::wire::{encode_frame, FrameDecoder, FrameLimits, MessageType, HEADER_LEN};
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, SeedableRng};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn frame(t: MessageType, seq: u32, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    encode_frame(t, seq, payload, &FrameLimits::default(), &mut out).unwrap();
    out.freeze()
}

/// A client endpoint on `at` (a fresh port each call) speaking the project's TLS.
fn endpoint_at(at: IpAddr, transport: Option<quinn::TransportConfig>) -> quinn::Endpoint {
    let (_, client) = quic_configs(&CertifiedKey::generate().unwrap()).unwrap();
    let mut cfg = quinn::ClientConfig::new(Arc::new(client));
    if let Some(t) = transport {
        cfg.transport_config(Arc::new(t));
    }
    let mut ep = quinn::Endpoint::client(SocketAddr::new(at, 0)).unwrap();
    ep.set_default_client_config(cfg);
    ep
}

/// A server endpoint on `at` speaking the project's TLS.
fn server_at(at: IpAddr) -> quinn::Endpoint {
    let (server, _) = quic_configs(&CertifiedKey::generate().unwrap()).unwrap();
    quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(server)),
        SocketAddr::new(at, 0),
    )
    .unwrap()
}

/// How the node ended `conn`: an application close code, or "refused".
async fn outcome(conn: &quinn::Connection) -> String {
    let err = tokio::time::timeout(Duration::from_secs(30), conn.closed())
        .await
        .expect("the node did not close the connection");
    describe(&err)
}

/// An application close as its code in hex; a refusal as "refused".
fn describe(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            format!("0x{:02x}", c.error_code.into_inner())
        }
        quinn::ConnectionError::ConnectionClosed(c)
            if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
        {
            "refused".to_owned()
        }
        other => format!("{other}"),
    }
}

fn code_str(c: u32) -> String {
    format!("0x{c:02x}")
}

async fn node_with(cfg: NodeConfig) -> Node {
    Node::bind(Identity::generate(&mut OsRng), cfg)
        .await
        .unwrap()
}

fn on(addr: &str) -> NodeConfig {
    NodeConfig::listening_on(addr.parse().unwrap())
}

/// A well-behaved node on `at` still gets a message through to `victim`.
async fn still_serves(victim: &mut Node, at: &str) {
    let good = node_with(on(&format!("{at}:0"))).await;
    good.connect(victim.fingerprint(), vec![victim.local_addr()])
        .await;
    good.send(victim.fingerprint(), Bytes::from_static(b"still there?"))
        .await
        .unwrap();
    let fp = good.fingerprint();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(NodeEvent::Message { from, .. }) = victim.next_event().await {
                if from == fp {
                    return;
                }
            }
        }
    })
    .await
    .expect("the victim stopped serving good peers");
    good.shutdown(Duration::from_millis(100)).await;
}

// ---------------------------------------------------------------------------------------
// (a) Memory before HELLO: many connections declaring a 1 MiB HELLO.

/// A `dna bootstrap` process on 127.0.0.1; killed on drop.
struct Bootstrap {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Bootstrap {
    fn start() -> Bootstrap {
        let dir = tempfile::tempdir().unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_dna"))
            .args(["bootstrap", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn dna bootstrap");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("dna bootstrap exited").unwrap();
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["event"] == "ready" {
                break v["addr"].as_str().unwrap().parse().unwrap();
            }
        };
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Bootstrap {
            child,
            addr,
            _dir: dir,
        }
    }

    /// A `VmRSS`/`VmHWM`-style line of /proc/<pid>/status, in KiB.
    fn kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Bootstrap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens `n` connections, each from its own source IP in 127.`net`.0.0/16 (so no per-IP
/// ban is what bounds them), each sending a HELLO header declaring `declared` bytes and then
/// `declared − 1` of them. Returns how the node ended each connection.
async fn pre_hello_flood(target: SocketAddr, net: u8, n: usize, declared: usize) -> Vec<String> {
    let mut header = frame(MessageType::Hello, 0, &[])[..HEADER_LEN].to_vec();
    header[12..16].copy_from_slice(&(declared as u32).to_be_bytes());
    let body = Bytes::from(vec![0u8; declared - 1]);
    let header = Bytes::from(header);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (header, body) = (header.clone(), body.clone());
        let at = IpAddr::from([127, net, (i / 250) as u8, (i % 250) as u8 + 1]);
        tasks.spawn(async move {
            let ep = endpoint_at(at, None);
            let conn = ep.connect(target, SERVER_NAME).unwrap().await.unwrap();
            let (mut send, _recv) = conn.open_bi().await.unwrap();
            // The writes fail once the node closes the connection: that is the point.
            let _ = send.write_all(&header).await;
            let _ = send.write_all(&body).await;
            let end = outcome(&conn).await;
            drop(ep);
            end
        });
    }
    let mut ends = Vec::new();
    while let Some(r) = tasks.join_next().await {
        ends.push(r.unwrap());
    }
    ends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_hello_buffers_are_hello_sized_whatever_the_declared_length() {
    let n: usize = std::env::var("HOSTILE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let boot = Bootstrap::start();
    let (rss0, hwm0) = (boot.kib("VmRSS:"), boot.kib("VmHWM:"));
    // The attack as found: a 1 MiB HELLO declared, 1 MiB − 1 sent.
    let ends = pre_hello_flood(boot.addr, 20, n, 1 << 20).await;
    let hwm_a = boot.kib("VmHWM:");
    // The worst a HELLO-sized limit allows: a HELLO-sized frame short of its last byte,
    // held until the handshake timeout (every connection is closed only by that).
    let ends_b = pre_hello_flood(boot.addr, 21, n, HELLO_LEN).await;
    let hwm_b = boot.kib("VmHWM:");
    let count = |v: &[String], c: u32| v.iter().filter(|e| **e == code_str(c)).count();
    println!(
        "pre-HELLO flood, {n} connections from {n} IPs against `dna bootstrap`: RSS before \
         {rss0} KiB (peak {hwm0} KiB); 1 MiB declared: peak {hwm_a} KiB (+{} KiB, {} KiB per \
         connection; ends: {} FRAME_TOO_LARGE, {} HANDSHAKE_TIMEOUT); {HELLO_LEN} B declared: \
         peak {hwm_b} KiB (+{} KiB over the first peak; {} HANDSHAKE_TIMEOUT)",
        hwm_a.saturating_sub(rss0),
        hwm_a.saturating_sub(rss0) / n as u64,
        count(&ends, code::FRAME_TOO_LARGE),
        count(&ends, code::HANDSHAKE_TIMEOUT),
        hwm_b.saturating_sub(hwm_a),
        count(&ends_b, code::HANDSHAKE_TIMEOUT),
    );
    // The HELLO-sized frames were held to the end: each connection timed out.
    assert_eq!(count(&ends_b, code::HANDSHAKE_TIMEOUT), n, "{ends_b:?}");
    // A declared 1 MiB is refused from the header alone.
    assert_eq!(count(&ends, code::FRAME_TOO_LARGE), n, "{ends:?}");
    // What the node holds per connection is far below what was declared: before the fix
    // every connection held 1 MiB.
    let per_conn = hwm_b.saturating_sub(rss0) / n as u64;
    assert!(
        per_conn < 256,
        "{per_conn} KiB per pre-HELLO connection (1 MiB before the fix)"
    );
}

// ---------------------------------------------------------------------------------------
// (b) A peer that sends PINGs and never reads.

/// Runs the real session handshake as a dialer over `conn` (reading only what the
/// handshake needs), then returns the stream, the next frame sequence number and the
/// identity it used.
async fn established(
    conn: &quinn::Connection,
    peer: dna_p2p::crypto::Fingerprint,
) -> (quinn::SendStream, quinn::RecvStream, u32, Fingerprint) {
    let mut exporter = [0u8; 32];
    conn.export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
        .unwrap();
    // The attacker drives the library's sans-IO core with the real clock.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    let me = Arc::new(Identity::generate(&mut OsRng));
    let fp = me.fingerprint();
    let mut core = Connection::dial(
        1,
        now,
        me,
        exporter,
        peer,
        ConnConfig::default(),
        ChaCha20Rng::seed_from_u64(7),
    );
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // Our own frames, counted to know the next sequence number.
    let mut ours = FrameDecoder::new(FrameLimits::default());
    let mut sent_frames = 0u32;
    loop {
        let mut out = BytesMut::new();
        core.poll_transmit(None, 1 << 20, &mut out);
        if !out.is_empty() {
            sent_frames += ours.feed_all(&out[..]).unwrap().len() as u32;
            send.write_all(&out).await.unwrap();
        }
        if core.is_established() {
            return (send, recv, sent_frames, fp);
        }
        let chunk = recv.read_chunk(65536, true).await.unwrap().unwrap();
        core.handle_input(now, &chunk.bytes).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_pings_and_never_reads_is_closed_and_our_queue_stays_bounded() {
    let high_water = 64 << 10;
    let mut cfg = on("127.0.0.1:0");
    cfg.write_high_water = high_water;
    cfg.conn.write_stall_timeout = Duration::from_secs(2);
    let mut victim = node_with(cfg).await;
    // The attacker grants us 16 KiB of stream window and never reads it.
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u32(16 << 10))
        .receive_window(quinn::VarInt::from_u32(32 << 10));
    let ep = endpoint_at(ip("127.0.5.1"), Some(t));
    let conn = ep
        .connect(victim.local_addr(), SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, _recv, mut seq, attacker) = established(&conn, victim.fingerprint()).await;
    let ping = |seq: &mut u32, out: &mut BytesMut| {
        encode_frame(
            MessageType::Ping,
            *seq,
            &u64::from(*seq).to_be_bytes(),
            &FrameLimits::default(),
            out,
        )
        .unwrap();
        *seq = seq.wrapping_add(1);
    };
    // A burst of 200,000 PINGs (8 MB), each of which the node used to answer with a
    // 40-byte PONG queued for a writer that cannot write.
    let burst = 200_000u32;
    let mut batch = BytesMut::new();
    for _ in 0..burst / 1000 {
        batch.clear();
        for _ in 0..1000 {
            ping(&mut seq, &mut batch);
        }
        send.write_all(&batch).await.unwrap();
    }
    // Then one PING per millisecond, so that each is answered, until the node closes us.
    let mut paced = 0u32;
    while conn.close_reason().is_none() && paced < 600_000 {
        batch.clear();
        ping(&mut seq, &mut batch);
        if send.write_all(&batch).await.is_err() {
            break;
        }
        paced += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let sent = burst + paced;
    let end = outcome(&conn).await;
    let stats = victim.transport_stats().await;
    println!(
        "PING flood, {sent} PINGs ({} KiB) sent, nothing read: closed with {end}; peak bytes \
         queued to our writer {} (budget {high_water}); queued now {}",
        sent as usize * 40 / 1024,
        stats.write_queued_peak,
        stats.write_queued,
    );
    assert_eq!(end, code_str(code::SLOW_READER));
    // Control frames share the write budget: the queue never grows past it by more than
    // the frames of one flush (at most a HELLO and a key exchange message).
    assert!(
        stats.write_queued_peak <= high_water + (16 << 10),
        "peak {} bytes queued with a budget of {high_water}",
        stats.write_queued_peak
    );
    // Scored: the session was established, so its identity answers for it.
    assert_eq!(
        victim.peer_info(&attacker).await.map(|p| p.score),
        Some(-25)
    );
    still_serves(&mut victim, "127.0.5.2").await;
}

// ---------------------------------------------------------------------------------------
// (c) Handshake timeouts and failures ban the source IP, not IP:port.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeouts_and_failures_ban_the_ip_whatever_the_port() {
    let mut cfg = on("127.0.0.1:0");
    cfg.conn.handshake_timeout = Duration::from_millis(300);
    let mut victim = node_with(cfg).await;
    // Timeouts: connect, open the session stream, say nothing. A fresh port every time.
    let slow = ip("127.0.6.1");
    let mut ends = Vec::new();
    for _ in 0..10 {
        let ep = endpoint_at(slow, None);
        match ep.connect(victim.local_addr(), SERVER_NAME).unwrap().await {
            Ok(conn) => {
                let _stream = conn.open_bi().await.unwrap();
                ends.push(outcome(&conn).await);
            }
            Err(e) => {
                ends.push(describe(&e));
                break;
            }
        }
    }
    println!("handshake timeouts from one IP, a new port each: {ends:?}");
    let refused = "refused".to_owned();
    assert_eq!(ends.last(), Some(&refused), "{ends:?}");
    assert!(ends[..ends.len() - 1]
        .iter()
        .all(|e| *e == code_str(code::HANDSHAKE_TIMEOUT)));
    assert!(victim.addr_score(&SocketAddr::new(slow, 1)).await <= BAN_THRESHOLD);

    // A forged HELLO (signed over another connection's exporter) from another IP.
    let forger = ip("127.0.6.2");
    let ep = endpoint_at(forger, None);
    let conn = ep
        .connect(victim.local_addr(), SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let forged = hello(&Identity::generate(&mut OsRng), &[7; 32], Role::Dialer);
    send.write_all(&frame(MessageType::Hello, 0, &forged))
        .await
        .unwrap();
    let first = outcome(&conn).await;
    let again = match endpoint_at(forger, None)
        .connect(victim.local_addr(), SERVER_NAME)
        .unwrap()
        .await
    {
        Ok(_) => "accepted".to_owned(),
        Err(e) => describe(&e),
    };
    println!("forged HELLO: {first}; the same IP from a new port: {again}");
    assert_eq!(first, code_str(code::AUTH_FAILED));
    assert_eq!(again, refused);
    // Another IP is served.
    still_serves(&mut victim, "127.0.6.3").await;
}

// ---------------------------------------------------------------------------------------
// (d) Redials after HELLO failures back off and skip banned addresses.

/// A QUIC server on `at` that counts connections and answers each session stream with a
/// HELLO: of a random identity (`forge` false: a node, but not the one dialed) or signed
/// over the wrong exporter (`forge` true).
fn impostor(at: IpAddr, forge: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let ep = server_at(at);
    let addr = ep.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok((mut send, _recv)) = conn.accept_bi().await else {
                    return;
                };
                let mut exporter = [0u8; 32];
                conn.export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
                    .unwrap();
                if forge {
                    exporter = [7; 32];
                }
                let h = hello(&Identity::generate(&mut OsRng), &exporter, Role::Listener);
                let _ = send.write_all(&frame(MessageType::Hello, 0, &h)).await;
                conn.closed().await;
            });
        }
    });
    (addr, count)
}

/// A QUIC server on `at` that refuses every connection, counting them: the reference
/// clock of the dial loop's own backoff.
fn refuser(at: IpAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let ep = server_at(at);
    let addr = ep.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            incoming.refuse();
        }
    });
    (addr, count)
}

async fn until(what: &str, cond: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("waited in vain for {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redials_after_hello_failures_back_off_and_skip_banned_addresses() {
    let mut cfg = on("127.0.0.1:0");
    cfg.reconnect_initial = Duration::from_millis(20);
    cfg.reconnect_max = Duration::from_secs(120);
    let a = node_with(cfg).await;
    let (wrong_id, wrong_id_n) = impostor(ip("127.0.7.1"), false);
    let (forger, forger_n) = impostor(ip("127.0.7.2"), true);
    let (refusing, refusing_n) = refuser(ip("127.0.7.3"));
    let fp = |_| Identity::generate(&mut OsRng).fingerprint();
    let (b, f, r) = (fp(0), fp(1), fp(2));
    a.connect(b, vec![wrong_id]).await;
    a.connect(f, vec![forger]).await;
    a.connect(r, vec![refusing]).await;
    // Every dial loop had its first attempt …
    until("first dials", || {
        wrong_id_n.load(Ordering::SeqCst) >= 1
            && forger_n.load(Ordering::SeqCst) >= 1
            && refusing_n.load(Ordering::SeqCst) >= 1
    })
    .await;
    tokio::time::timeout(Duration::from_secs(60), async {
        while a.addr_score(&forger).await > BAN_THRESHOLD {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("waited in vain for the forger's address to be scored");
    // … then the refused peer's dial loop, backing off 20, 40, 80 … ms, makes 8 attempts.
    until("8 refused dials", || refusing_n.load(Ordering::SeqCst) >= 8).await;
    let (w, fo, re) = (
        wrong_id_n.load(Ordering::SeqCst),
        forger_n.load(Ordering::SeqCst),
        refusing_n.load(Ordering::SeqCst),
    );
    println!(
        "dials while a refused address saw {re}: wrong identity {w}, forged HELLO (banned \
         address) {fo}"
    );
    assert!(
        w < re,
        "an address answering with the wrong identity is redialed at least as often as a \
         refusing one ({w} vs {re})"
    );
    assert_eq!(fo, 1, "a banned address was dialed again");
    assert!(!a.peer_info(&b).await.unwrap().connected);
}

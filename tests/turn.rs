//! The sans-IO TURN client (`dna_p2p::nat::turn`, spec/07-relay.md §2) against a real coturn
//! `turnserver` on loopback only: allocation through the 401 challenge, CreatePermission, a
//! plain UDP socket as the peer (it receives our Send indication's payload from the
//! relayed address, its reply comes back as a Data indication), Refresh, a stale nonce,
//! wrong and expired credentials, Refresh with lifetime 0 deleting the allocation, the REST
//! (`use-auth-secret`) scheme, and the same flow over TCP through the framing decoder.
//!
//! The test is the driver: it owns the sockets and reads the clock. Each coturn runs with
//! its own ports, is killed when its guard drops (also when a test fails), and logs to a
//! file in a temporary directory. Without `turnserver` the tests say SKIPPED and return —
//! except under `CI=true`, where a missing prerequisite fails.

#![allow(clippy::disallowed_methods)] // the driver reads the clock

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dna_p2p::nat::turn::credentials::rest_credential;
use dna_p2p::nat::turn::message::{encode_request, parse, Auth, Incoming, Request};
use dna_p2p::nat::turn::{
    Client, Credentials, TcpDecoder, Transport, TurnConfig, TurnError, TurnEvent,
};

const REALM: &str = "dna.test";
const SECRET: &str = "S-north-wind";
/// How long a driver loop waits for an event before the test fails (a hang guard; no test
/// asserts on how long anything took).
const PATIENCE: Duration = Duration::from_secs(60);

/// Whether `turnserver` is here; otherwise SKIPPED, or a failure under `CI=true`.
fn have_turnserver(test: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", "command -v turnserver"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        let msg = format!("{test}: needs turnserver (Debian package coturn)");
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg} (CI=true: a missing prerequisite fails the run)");
        }
        eprintln!("SKIPPED {msg}");
    }
    found
}

/// A running coturn; killed and reaped on drop.
struct Coturn {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Coturn {
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("turn.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Ten consecutive loopback ports free for UDP (and the first for TCP): the listening
/// port, coturn's alternative port, and eight relay ports.
fn free_ports() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let spread = (std::process::id() % 1000) as u16;
    loop {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = 40_000 + (spread * 13 + k * 10) % 20_000;
        let udp: Vec<_> = (base..base + 10)
            .map_while(|p| UdpSocket::bind(("127.0.0.1", p)).ok())
            .collect();
        if udp.len() == 10 && TcpListener::bind(("127.0.0.1", base)).is_ok() {
            return base;
        }
    }
}

/// Starts coturn on 127.0.0.1 with `extra` flags and waits until it answers a Binding
/// request.
fn coturn(extra: &[&str]) -> Coturn {
    coturn_on(free_ports(), extra)
}

/// [`coturn`] on `port` (and the nine ports after it).
fn coturn_on(port: u16, extra: &[&str]) -> Coturn {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
    let p = |x: u16| x.to_string();
    let mut args: Vec<String> = [
        "-n",
        "--no-cli",
        "--log-file",
        "stdout",
        "--simple-log",
        "--listening-ip",
        "127.0.0.1",
        "--relay-ip",
        "127.0.0.1",
        "--allow-loopback-peers",
        "--no-tls",
        "--no-dtls",
        "--realm",
        REALM,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "--listening-port".into(),
        p(port),
        "--alt-listening-port".into(),
        p(port + 1),
        "--min-port".into(),
        p(port + 2),
        "--max-port".into(),
        p(port + 9),
        "--log-file".into(),
        dir.path().join("turn.log").display().to_string(),
        "--pidfile".into(),
        dir.path().join("turn.pid").display().to_string(),
        "--userdb".into(),
        dir.path().join("turndb").display().to_string(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = Command::new("turnserver")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn turnserver");
    let c = Coturn {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        dir,
    };
    // Ready when it answers a Binding request.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    req.extend_from_slice(&[9; 12]);
    let deadline = Instant::now() + PATIENCE;
    let mut buf = [0u8; 1500];
    loop {
        probe.send_to(&req, c.addr).unwrap();
        if probe.recv_from(&mut buf).is_ok() {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "coturn never answered:\n{}",
            c.log_tail()
        );
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&(unix_now() ^ u64::from(std::process::id())).to_le_bytes());
    s
}

/// coturn grants at least 600 s; a 597 s margin makes the client refresh 3 s after each
/// grant, so that the tests see refreshes.
fn quick_refresh() -> TurnConfig {
    TurnConfig {
        refresh_margin: Duration::from_secs(597),
        ..TurnConfig::default()
    }
}

fn static_creds(password: &str) -> Credentials {
    Credentials::Static {
        username: "u".into(),
        password: password.into(),
    }
}

/// The client's way to the server.
trait Io {
    fn send(&mut self, bytes: &[u8]);
    /// One message from the server, waiting at most `wait`.
    fn recv(&mut self, wait: Duration) -> Option<Vec<u8>>;
}

struct UdpIo {
    sock: UdpSocket,
    server: SocketAddr,
}

impl Io for UdpIo {
    fn send(&mut self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.server).unwrap();
    }
    fn recv(&mut self, wait: Duration) -> Option<Vec<u8>> {
        self.sock.set_read_timeout(Some(wait)).unwrap();
        let mut buf = vec![0u8; 2048];
        let (n, from) = self.sock.recv_from(&mut buf).ok()?;
        assert_eq!(from, self.server, "only the server talks to this socket");
        buf.truncate(n);
        Some(buf)
    }
}

struct TcpIo {
    stream: TcpStream,
    decoder: TcpDecoder,
    pending: Vec<u8>,
}

impl Io for TcpIo {
    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }
    fn recv(&mut self, wait: Duration) -> Option<Vec<u8>> {
        loop {
            let mut rest = &self.pending[..];
            let frame = self.decoder.decode(&mut rest).expect("framing");
            self.pending.drain(..self.pending.len() - rest.len());
            if frame.is_some() {
                return frame;
            }
            self.stream.set_read_timeout(Some(wait)).unwrap();
            let mut buf = [0u8; 700]; // small reads: frames arrive in pieces
            let n = self.stream.read(&mut buf).ok()?;
            assert!(n > 0, "coturn closed the TCP connection");
            self.pending.extend_from_slice(&buf[..n]);
        }
    }
}

/// Runs the client until an event satisfies `until`; returns every event seen.
fn pump(c: &mut Client, io: &mut dyn Io, until: impl Fn(&TurnEvent) -> bool) -> Vec<TurnEvent> {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        let now = Instant::now();
        while let Some((_, bytes)) = c.poll_transmit(now) {
            io.send(&bytes);
        }
        while let Some(e) = c.poll_event() {
            let done = until(&e);
            seen.push(e);
            if done {
                return seen;
            }
        }
        assert!(now < deadline, "no awaited event; saw {seen:?}");
        let wait = c
            .poll_timeout()
            .map_or(Duration::from_millis(100), |t| {
                t.saturating_duration_since(now)
            })
            .clamp(Duration::from_millis(1), Duration::from_millis(100));
        if let Some(bytes) = io.recv(wait) {
            c.handle_input(Instant::now(), c.server(), &bytes);
        }
        c.handle_timeout(Instant::now());
    }
}

fn allocated(seen: &[TurnEvent]) -> SocketAddr {
    match seen.last() {
        Some(TurnEvent::Allocated {
            relayed,
            mapped,
            lifetime,
        }) => {
            println!("allocated: relayed {relayed}, mapped {mapped:?}, lifetime {lifetime:?}");
            *relayed
        }
        other => panic!("expected Allocated, got {other:?} after {seen:?}"),
    }
}

/// Permission for `peer`, a Send indication it receives from `relayed`, its reply back as
/// a Data indication.
fn relay_round_trip(c: &mut Client, io: &mut dyn Io, relayed: SocketAddr, peer: &UdpSocket) {
    let peer_addr = peer.local_addr().unwrap();
    c.create_permission(Instant::now(), peer_addr.ip()).unwrap();
    pump(c, io, |e| {
        *e == TurnEvent::PermissionCreated(peer_addr.ip())
    });
    exchange(c, io, relayed, peer);
}

/// A Send indication `peer` receives from `relayed`, its reply back as a Data indication.
fn exchange(c: &mut Client, io: &mut dyn Io, relayed: SocketAddr, peer: &UdpSocket) {
    let peer_addr = peer.local_addr().unwrap();
    io.send(&c.send(peer_addr, b"hello through TURN").unwrap());
    peer.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = peer.recv_from(&mut buf).expect("the peer gets our payload");
    println!(
        "peer {peer_addr} got {:?} from {from}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!((&buf[..n], from), (&b"hello through TURN"[..], relayed));
    peer.send_to(b"hello back", relayed).unwrap();
    let seen = pump(c, io, |e| matches!(e, TurnEvent::Data { .. }));
    assert_eq!(
        seen.last(),
        Some(&TurnEvent::Data {
            peer: peer_addr,
            data: b"hello back".to_vec()
        })
    );
}

/// One Allocate made by hand on `sock` (401, then authenticated): the server's verdict on
/// this 5-tuple. Used to show whether an allocation still exists (437) or not.
fn raw_allocate(sock: &UdpSocket, server: SocketAddr) -> Result<(), u16> {
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ask = |tid: [u8; 12], auth: Option<&Auth>| {
        let req = encode_request(tid, &Request::Allocate { lifetime: 60 }, auth);
        sock.send_to(&req, server).unwrap();
        let mut buf = [0u8; 1500];
        loop {
            let (n, _) = sock.recv_from(&mut buf).expect("an answer");
            if let Ok(Incoming::Response(r)) = parse(&buf[..n], auth.map(|a| &a.key)) {
                if r.tid == tid {
                    return r.outcome;
                }
            }
        }
    };
    let challenge = ask([0xA1; 12], None).expect_err("not without credentials");
    if challenge.code != 401 {
        return Err(challenge.code);
    }
    let auth = Auth::new(
        "u",
        "p",
        challenge.realm.as_deref().unwrap(),
        challenge.nonce.as_deref().unwrap(),
    )
    .unwrap();
    ask([0xA2; 12], Some(&auth)).map(|_| ()).map_err(|e| e.code)
}

#[test]
fn udp_allocate_permission_send_data_refresh_close() {
    if !have_turnserver("udp_allocate_permission_send_data_refresh_close") {
        return;
    }
    let server = coturn(&["--lt-cred-mech", "--user", "u:p"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut io = UdpIo {
        sock: sock.try_clone().unwrap(),
        server: server.addr,
    };
    let mut c = Client::new(
        server.addr,
        static_creds("p"),
        quick_refresh(),
        Instant::now(),
        unix_now(),
        seed(),
    );
    let seen = pump(&mut c, &mut io, |e| {
        matches!(e, TurnEvent::Allocated { .. })
    });
    let relayed = allocated(&seen);
    let st = c.stats();
    println!(
        "allocate: {} requests ({} retransmits), 401 answered then retried",
        st.requests, st.retransmits
    );
    assert!(
        st.requests >= 2,
        "the unauthenticated Allocate, then the authenticated one"
    );
    assert_eq!(relayed.ip(), server.addr.ip());

    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    relay_round_trip(&mut c, &mut io, relayed, &peer);

    for _ in 0..2 {
        let seen = pump(&mut c, &mut io, |e| {
            matches!(e, TurnEvent::Refreshed { .. })
        });
        println!("refreshed: {:?}", seen.last());
    }
    assert_eq!(c.stats().refreshes, 2);
    // Still relaying after the refreshes.
    io.send(
        &c.send(peer.local_addr().unwrap(), b"after refresh")
            .unwrap(),
    );
    let mut buf = [0u8; 100];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"after refresh"[..], relayed));

    // While the allocation lives, another Allocate on this 5-tuple is refused with 437;
    // after Refresh with lifetime 0 it succeeds.
    assert_eq!(
        raw_allocate(&sock, server.addr),
        Err(437),
        "{}",
        server.log_tail()
    );
    c.close(Instant::now());
    pump(&mut c, &mut io, |e| *e == TurnEvent::Closed);
    // coturn deletes it on its next timer tick, so ask until it is gone. The allocation
    // was granted 600 s and just refreshed: only the Refresh(0) can have deleted it.
    let deadline = Instant::now() + PATIENCE;
    let mut asked = 1;
    while raw_allocate(&sock, server.addr) == Err(437) {
        assert!(
            Instant::now() < deadline,
            "still allocated:\n{}",
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
        asked += 1;
    }
    println!(
        "after Refresh(0): Allocate on the same 5-tuple refused {} times with 437, then succeeded",
        asked - 1
    );
    println!("stats: {:?}", c.stats());
}

#[test]
fn udp_stale_nonce_is_retried() {
    if !have_turnserver("udp_stale_nonce_is_retried") {
        return;
    }
    // Nonces live 2 s; the client refreshes 3 s after allocating, with a stale nonce.
    let server = coturn(&["--lt-cred-mech", "--user", "u:p", "--stale-nonce=2"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut io = UdpIo {
        sock,
        server: server.addr,
    };
    let mut c = Client::new(
        server.addr,
        static_creds("p"),
        quick_refresh(),
        Instant::now(),
        unix_now(),
        seed(),
    );
    allocated(&pump(&mut c, &mut io, |e| {
        matches!(e, TurnEvent::Allocated { .. })
    }));
    let seen = pump(&mut c, &mut io, |e| {
        matches!(e, TurnEvent::Refreshed { .. })
    });
    println!(
        "refresh after the nonce went stale: {seen:?}; stats {:?}",
        c.stats()
    );
    assert!(c.stats().stale_nonces >= 1, "{}", server.log_tail());
}

#[test]
fn udp_wrong_and_expired_credentials_fail_typed() {
    if !have_turnserver("udp_wrong_and_expired_credentials_fail_typed") {
        return;
    }
    let lt = coturn(&["--lt-cred-mech", "--user", "u:p"]);
    let rest = coturn(&["--use-auth-secret", "--static-auth-secret", SECRET]);
    let expired = rest_credential(SECRET, "alice", unix_now() - 60);
    for (server, creds) in [
        (&lt, static_creds("not-p")),
        (
            &rest,
            Credentials::Static {
                username: expired.username,
                password: expired.password,
            },
        ),
    ] {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut io = UdpIo {
            sock,
            server: server.addr,
        };
        let mut c = Client::new(
            server.addr,
            creds,
            quick_refresh(),
            Instant::now(),
            unix_now(),
            seed(),
        );
        let seen = pump(&mut c, &mut io, |e| matches!(e, TurnEvent::Failed(_)));
        let err = match seen.last() {
            Some(TurnEvent::Failed(e)) => e.clone(),
            _ => unreachable!(),
        };
        println!("{err}");
        assert!(
            matches!(err, TurnError::Unauthorized(s) | TurnError::WrongCredentials(s) if s == server.addr),
            "{err:?}"
        );
        assert_eq!(c.poll_timeout(), None);
    }
}

#[test]
fn udp_rest_credentials_relay() {
    if !have_turnserver("udp_rest_credentials_relay") {
        return;
    }
    let server = coturn(&["--use-auth-secret", "--static-auth-secret", SECRET]);
    let creds = Credentials::Rest {
        secret: SECRET.into(),
        user: "alice".into(),
        ttl: Duration::from_secs(3600),
    };
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut io = UdpIo {
        sock,
        server: server.addr,
    };
    let mut c = Client::new(
        server.addr,
        creds,
        quick_refresh(),
        Instant::now(),
        unix_now(),
        seed(),
    );
    let relayed = allocated(&pump(&mut c, &mut io, |e| {
        matches!(e, TurnEvent::Allocated { .. })
    }));
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    relay_round_trip(&mut c, &mut io, relayed, &peer);
    c.close(Instant::now());
    pump(&mut c, &mut io, |e| *e == TurnEvent::Closed);
}

#[test]
fn tcp_allocate_permission_send_data() {
    if !have_turnserver("tcp_allocate_permission_send_data") {
        return;
    }
    let server = coturn(&["--lt-cred-mech", "--user", "u:p"]);
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut io = TcpIo {
        stream,
        decoder: TcpDecoder::new(dna_p2p::nat::turn::tcp::DEFAULT_MAX_FRAME),
        pending: Vec::new(),
    };
    let config = TurnConfig {
        transport: Transport::Tcp,
        ..quick_refresh()
    };
    let mut c = Client::new(
        server.addr,
        static_creds("p"),
        config,
        Instant::now(),
        unix_now(),
        seed(),
    );
    let relayed = allocated(&pump(&mut c, &mut io, |e| {
        matches!(e, TurnEvent::Allocated { .. })
    }));
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    relay_round_trip(&mut c, &mut io, relayed, &peer);
    pump(&mut c, &mut io, |e| {
        matches!(e, TurnEvent::Refreshed { .. })
    });
    c.close(Instant::now());
    pump(&mut c, &mut io, |e| *e == TurnEvent::Closed);
    let st = io.decoder.stats();
    println!(
        "over TCP: {} frames decoded, peak {} bytes buffered, {} retransmits; {:?}",
        st.frames,
        st.peak_buffered,
        c.stats().retransmits,
        c.stats()
    );
    assert_eq!(
        c.stats().retransmits,
        0,
        "no retransmissions on a reliable transport"
    );
}

#[test]
fn udp_server_restart_is_noticed_and_the_allocation_remade() {
    if !have_turnserver("udp_server_restart_is_noticed_and_the_allocation_remade") {
        return;
    }
    let first = coturn(&["--lt-cred-mech", "--user", "u:p"]);
    let addr = first.addr;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut io = UdpIo { sock, server: addr };
    // Short timers (2.2 s to give up) and room for re-allocations while coturn restarts.
    let config = TurnConfig {
        timers: dna_p2p::nat::stun::Timers::DISCOVERY,
        max_reallocations: 20,
        ..quick_refresh()
    };
    let mut c = Client::new(
        addr,
        static_creds("p"),
        config,
        Instant::now(),
        unix_now(),
        seed(),
    );
    let relayed = allocated(&pump(&mut c, &mut io, |e| {
        matches!(e, TurnEvent::Allocated { .. })
    }));
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    relay_round_trip(&mut c, &mut io, relayed, &peer);
    drop(first); // killed: the next Refresh goes unanswered
    let seen = pump(&mut c, &mut io, |e| matches!(e, TurnEvent::Lost(_)));
    println!("coturn killed: {:?}", seen.last());
    assert_eq!(
        seen.last(),
        Some(&TurnEvent::Lost(TurnError::Timeout(addr)))
    );
    let second = coturn_on(addr.port(), &["--lt-cred-mech", "--user", "u:p"]);
    let seen = pump(&mut c, &mut io, |e| {
        matches!(e, TurnEvent::Allocated { .. })
    });
    let lost = seen
        .iter()
        .filter(|e| matches!(e, TurnEvent::Lost(_)))
        .count();
    let relayed = allocated(&seen);
    println!(
        "coturn back: allocated again after {lost} more lost attempts; {:?}",
        c.stats()
    );
    // The permission is asked again by itself, and the relay works.
    pump(&mut c, &mut io, |e| {
        *e == TurnEvent::PermissionCreated(peer.local_addr().unwrap().ip())
    });
    exchange(&mut c, &mut io, relayed, &peer);
    drop(second);
}

/// The node keeps an allocation on its one socket (spec/07-relay.md §2.7): the socket
/// hands the TURN server's datagrams to the node's TURN task, which allocates, and the
/// relayed address shows in the node's status; at shutdown the allocation is released.
#[test]
fn the_node_keeps_an_allocation_on_its_one_socket() {
    if !have_turnserver("the_node_keeps_an_allocation_on_its_one_socket") {
        return;
    }
    let server = coturn(&["--lt-cred-mech", "--user", "u:p"]);
    let rt = runtime();
    rt.block_on(async {
        let cfg = dna_p2p::daemon::NodeConfig {
            turn_server: Some(server.addr),
            turn_credentials: Some(static_creds("p")),
            ..dna_p2p::daemon::NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
        };
        let id = dna_p2p::crypto::Identity::generate(&mut rand_core::OsRng);
        let mut node = dna_p2p::daemon::Node::bind(id, cfg).await.unwrap();
        assert!(
            node.take_turn_channel().is_none(),
            "the node's own TURN task has the channel"
        );
        let started = Instant::now();
        let status = loop {
            let st = node.turn_status();
            if st.relayed.is_some() || st.state == "failed" {
                break st;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "no allocation: {st:?}\n{}",
                server.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let relayed = status.relayed.expect("allocated");
        let routed = node.socket_stats().turn.load(Ordering::Relaxed);
        println!(
            "node allocated {relayed} at {} (mapped {:?}); {} requests, {} datagrams routed to \
             the TURN task",
            server.addr, status.mapped, status.stats.requests, routed
        );
        assert_eq!(status.state, "allocated");
        assert_eq!(relayed.ip(), server.addr.ip());
        assert!((server.addr.port() + 2..=server.addr.port() + 9).contains(&relayed.port()));
        assert_eq!(
            status.mapped,
            Some(node.local_addr()),
            "allocated from the node's one socket"
        );
        assert!(
            routed >= 2,
            "401 and the success came through the socket's side channel"
        );
        let h = node.handle();
        node.shutdown(Duration::from_millis(100)).await;
        let started = Instant::now();
        while h.turn_status().state != "closed" {
            assert!(
                started.elapsed() < PATIENCE,
                "never closed: {:?}",
                h.turn_status()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("after shutdown: {:?}", h.turn_status().state);
    });
}

/// A two-thread runtime for the node tests.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A node on loopback with the defaults.
fn loopback_cfg() -> dna_p2p::daemon::NodeConfig {
    dna_p2p::daemon::NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
}

/// A fresh identity.
fn identity() -> dna_p2p::crypto::Identity {
    dna_p2p::crypto::Identity::generate(&mut rand_core::OsRng)
}

/// Waits for the node's allocation; its relayed address.
async fn relayed_of(node: &dna_p2p::daemon::Node, server: &Coturn) -> SocketAddr {
    let started = Instant::now();
    loop {
        let st = node.turn_status();
        if let Some(r) = st.relayed {
            return r;
        }
        assert!(
            started.elapsed() < PATIENCE && st.state != "failed",
            "no allocation: {st:?}\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Collects `n` messages from the node's events; returns how many arrived per body.
async fn count_messages(
    mut node: dna_p2p::daemon::Node,
    n: usize,
) -> (
    dna_p2p::daemon::Node,
    std::collections::HashMap<Vec<u8>, u32>,
) {
    let mut seen = std::collections::HashMap::new();
    let mut total = 0;
    while total < n {
        let ev = tokio::time::timeout(PATIENCE, node.next_event())
            .await
            .expect("messages stopped arriving");
        if let Some(dna_p2p::daemon::NodeEvent::Message { body, .. }) = ev {
            *seen.entry(body.to_vec()).or_insert(0) += 1;
            total += 1;
        }
    }
    (node, seen)
}

/// QUIC over a relayed path (spec/07-relay.md §3): node B keeps an allocation on coturn,
/// node A has no TURN at all and dials B's relayed address as if it were B. A's packets
/// reach the relay as plain UDP and B as Data indications; B's answers leave as Send
/// indications and reach A from the relayed address. 1,000 messages each way arrive
/// exactly once, and B's socket counted the relayed datagrams.
#[test]
fn quic_runs_through_the_nodes_turn_allocation() {
    if !have_turnserver("quic_runs_through_the_nodes_turn_allocation") {
        return;
    }
    const N: usize = 1000;
    let server = coturn(&["--lt-cred-mech", "--user", "u:p"]);
    let rt = runtime();
    rt.block_on(async {
        let local = loopback_cfg;
        let b_cfg = dna_p2p::daemon::NodeConfig {
            turn_server: Some(server.addr),
            turn_credentials: Some(static_creds("p")),
            ..local()
        };
        let gen = identity;
        let b = dna_p2p::daemon::Node::bind(gen(), b_cfg).await.unwrap();
        let a = dna_p2p::daemon::Node::bind(gen(), local()).await.unwrap();
        let relayed = relayed_of(&b, &server).await;
        // The permission for A's IP (the CONNECT exchange asks for it in the daemon):
        // installed once coturn answers the CreatePermission.
        let answered = b.turn_status().stats.responses;
        assert!(b.turn_permit(a.local_addr().ip()));
        let started = Instant::now();
        while b.turn_status().stats.responses == answered {
            assert!(started.elapsed() < PATIENCE, "no permission answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (a_fp, b_fp) = (a.fingerprint(), b.fingerprint());
        let (ha, hb) = (a.handle(), b.handle());
        a.connect(b_fp, vec![relayed]).await;
        let at_b = tokio::spawn(count_messages(b, N));
        let at_a = tokio::spawn(count_messages(a, N));
        for i in 0..N {
            ha.send(b_fp, format!("a>b {i}").into_bytes().into())
                .await
                .unwrap();
            hb.send(a_fp, format!("b>a {i}").into_bytes().into())
                .await
                .unwrap();
        }
        let (b, at_b) = at_b.await.unwrap();
        let (a, at_a) = at_a.await.unwrap();
        for (seen, dir) in [(&at_b, "a>b"), (&at_a, "b>a")] {
            assert_eq!(seen.len(), N, "{dir}: distinct messages");
            assert!(seen.values().all(|&c| c == 1), "{dir}: a duplicate");
            assert!((0..N).all(|i| seen.contains_key(format!("{dir} {i}").as_bytes())));
        }
        let sb = b.socket_stats();
        let (rin, rout) = (
            sb.relayed_in.load(Ordering::Relaxed),
            sb.relayed_out.load(Ordering::Relaxed),
        );
        let sa = a.socket_stats();
        println!(
            "{N} messages each way through {relayed}: B's socket relayed_in {rin} \
             relayed_out {rout} (dropped {}), A's relayed_in {} (A has no TURN)",
            sb.dropped.load(Ordering::Relaxed),
            sa.relayed_in.load(Ordering::Relaxed)
        );
        assert!(rin > 0 && rout > 0, "the datagrams went through the relay");
        assert_eq!(sa.relayed_in.load(Ordering::Relaxed), 0);
        a.shutdown(Duration::from_millis(100)).await;
        b.shutdown(Duration::from_millis(100)).await;
    });
}

/// TURN over TCP in the node (spec/07-relay.md §2.11): node B is told UDP to the server
/// never answers (`turn_tcp_after` zero), so it allocates over TCP and sends *everything*
/// through the allocation. B dials A (a plain node) at A's own address — its QUIC leaves
/// as Send indications on the stream — and A dials B at B's relayed address; 1,000
/// messages each way arrive exactly once, and B's UDP socket sent nothing to A directly.
#[test]
fn everything_goes_over_turn_tcp_when_udp_gets_no_answer() {
    if !have_turnserver("everything_goes_over_turn_tcp_when_udp_gets_no_answer") {
        return;
    }
    const N: usize = 1000;
    let server = coturn(&["--lt-cred-mech", "--user", "u:p"]);
    let rt = runtime();
    rt.block_on(async {
        let local = loopback_cfg;
        let b_cfg = dna_p2p::daemon::NodeConfig {
            turn_server: Some(server.addr),
            turn_credentials: Some(static_creds("p")),
            turn_tcp_after: Some(Duration::ZERO),
            ..local()
        };
        let gen = identity;
        let b = dna_p2p::daemon::Node::bind(gen(), b_cfg).await.unwrap();
        let a = dna_p2p::daemon::Node::bind(gen(), local()).await.unwrap();
        let (ha, hb) = (a.handle(), b.handle());
        assert!(hb.turn_settled().await, "allocated: {:?}", b.turn_status());
        let st = b.turn_status();
        println!(
            "B: transport {}, relayed {:?}, mapped {:?}",
            st.transport, st.relayed, st.mapped
        );
        assert_eq!(st.transport, "tcp");
        assert!(hb.turn_over_tcp());
        let relayed = st.relayed.expect("relayed");
        let (a_fp, b_fp) = (a.fingerprint(), b.fingerprint());
        // B dials A at A's address: through the allocation.
        b.connect(a_fp, vec![a.local_addr()]).await;
        let at_b = tokio::spawn(count_messages(b, N));
        let at_a = tokio::spawn(count_messages(a, N));
        for i in 0..N {
            hb.send(a_fp, format!("b>a {i}").into_bytes().into())
                .await
                .unwrap();
        }
        let (a, at_a) = at_a.await.unwrap();
        // A dials B at its relayed address (A sees B there already: the same session).
        a.connect(b_fp, vec![relayed]).await;
        for i in 0..N {
            ha.send(b_fp, format!("a>b {i}").into_bytes().into())
                .await
                .unwrap();
        }
        let (b, at_b) = at_b.await.unwrap();
        for (seen, dir) in [(&at_b, "a>b"), (&at_a, "b>a")] {
            assert_eq!(seen.len(), N, "{dir}: distinct messages");
            assert!(seen.values().all(|&c| c == 1), "{dir}: a duplicate");
        }
        let sb = b.socket_stats();
        let (rin, rout) = (
            sb.relayed_in.load(Ordering::Relaxed),
            sb.relayed_out.load(Ordering::Relaxed),
        );
        let peers = hb.relay_status().peers;
        println!(
            "{N} messages each way over TURN/TCP: B relayed_in {rin} relayed_out {rout} \
             (dropped {}); B's routes: {:?}",
            sb.dropped.load(Ordering::Relaxed),
            peers
                .iter()
                .map(|p| (p.addr.clone(), p.path, p.bytes_in, p.bytes_out))
                .collect::<Vec<_>>()
        );
        assert!(rin > 0 && rout > 0);
        assert!(peers
            .iter()
            .any(|p| p.addr == a.local_addr().to_string() && p.path == "turn"));
        a.shutdown(Duration::from_millis(100)).await;
        b.shutdown(Duration::from_millis(100)).await;
    });
}

/// What a node's event loop saw: messages per body, and when its peer went down.
#[derive(Default)]
struct Seen {
    bodies: std::collections::HashMap<Vec<u8>, u32>,
    down_at: Option<Instant>,
}

/// Runs `node`'s events into a shared [`Seen`] until the node is dropped.
fn watch(
    mut node: dna_p2p::daemon::Node,
) -> (
    std::sync::Arc<std::sync::Mutex<Seen>>,
    tokio::task::JoinHandle<dna_p2p::daemon::Node>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
    let s = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            match tokio::time::timeout(Duration::from_millis(200), node.next_event()).await {
                Ok(Some(dna_p2p::daemon::NodeEvent::Message { body, .. })) => {
                    *s.lock().unwrap().bodies.entry(body.to_vec()).or_insert(0) += 1;
                }
                Ok(Some(dna_p2p::daemon::NodeEvent::PeerDown { .. })) => {
                    let mut g = s.lock().unwrap();
                    g.down_at.get_or_insert_with(Instant::now);
                }
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => return node,
            }
            if std::sync::Arc::strong_count(&s) == 1 {
                return node;
            }
        }
    });
    (seen, task)
}

/// coturn killed mid-session (spec/07-relay.md §2.11): B sends everything through its
/// allocation over TCP and holds a session with A. coturn dies: both report the other down
/// (their unacknowledged messages time out), B's TURN task connects again with back-off;
/// coturn returns on the same port: B allocates again (a new relayed address), B's session
/// to A comes back by itself, and every message either side sent before, during and after
/// the outage arrives exactly once.
#[test]
fn a_turn_tcp_session_survives_a_coturn_restart() {
    if !have_turnserver("a_turn_tcp_session_survives_a_coturn_restart") {
        return;
    }
    survive_an_outage(false);
}

/// `--turn` given twice (spec/07-relay.md §2.12): B's first TURN server dies mid-session
/// and stays dead; B's TURN task gives it up after two failed connects and allocates at
/// the second; the session comes back through it and nothing is lost.
#[test]
fn a_turn_tcp_session_moves_to_the_next_turn_server() {
    if !have_turnserver("a_turn_tcp_session_moves_to_the_next_turn_server") {
        return;
    }
    survive_an_outage(true);
}

/// The two tests above: `fallback` gives B a second server instead of restarting the first.
fn survive_an_outage(fallback: bool) {
    const N: usize = 50;
    let creds = ["--lt-cred-mech", "--user", "u:p"];
    let first = coturn(&creds);
    let port = first.addr.port();
    let spare = fallback.then(|| coturn(&creds));
    let rt = runtime();
    rt.block_on(async move {
        let local = loopback_cfg;
        let b_cfg = dna_p2p::daemon::NodeConfig {
            turn_server: Some(first.addr),
            turn_fallbacks: spare.iter().map(|c| c.addr).collect(),
            turn_credentials: Some(static_creds("p")),
            turn_tcp_after: Some(Duration::ZERO),
            ..local()
        };
        let gen = identity;
        let b = dna_p2p::daemon::Node::bind(gen(), b_cfg).await.unwrap();
        let a = dna_p2p::daemon::Node::bind(gen(), local()).await.unwrap();
        let (ha, hb) = (a.handle(), b.handle());
        assert!(hb.turn_settled().await, "allocated: {:?}", hb.turn_status());
        let before = hb.turn_status().relayed.unwrap();
        let (a_fp, b_fp) = (a.fingerprint(), b.fingerprint());
        b.connect(a_fp, vec![a.local_addr()]).await;
        let (at_a, ta) = watch(a);
        let (at_b, tb) = watch(b);
        let send = |round: &'static str| {
            let (ha, hb) = (ha.clone(), hb.clone());
            async move {
                for i in 0..N {
                    hb.send(a_fp, format!("b>a {round} {i}").into_bytes().into())
                        .await
                        .unwrap();
                    ha.send(b_fp, format!("a>b {round} {i}").into_bytes().into())
                        .await
                        .unwrap();
                }
            }
        };
        send("before").await;
        let arrived = |seen: &std::sync::Arc<std::sync::Mutex<Seen>>, n: usize| {
            seen.lock().unwrap().bodies.len() >= n
        };
        let started = Instant::now();
        while !(arrived(&at_a, N) && arrived(&at_b, N)) {
            assert!(started.elapsed() < PATIENCE, "first round did not arrive");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(first);
        let killed = Instant::now();
        send("during").await;
        // With a second server, B's traffic moves there within seconds and A, the QUIC
        // server of the session, follows B's new address: nobody need go down.
        while !fallback
            && (at_a.lock().unwrap().down_at.is_none() || at_b.lock().unwrap().down_at.is_none())
        {
            assert!(
                killed.elapsed() < PATIENCE,
                "a peer was never reported down"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let down = |s: &std::sync::Arc<std::sync::Mutex<Seen>>| {
            s.lock().unwrap().down_at.map(|t| t - killed)
        };
        let (down_a, down_b) = (down(&at_a), down(&at_b));
        let second = (!fallback).then(|| coturn_on(port, &creds));
        let back = Instant::now();
        send("after").await;
        while !(arrived(&at_a, 3 * N) && arrived(&at_b, 3 * N)) {
            assert!(
                back.elapsed() < 2 * PATIENCE,
                "not all arrived after the outage: a {} b {}; B's TURN {:?}",
                at_a.lock().unwrap().bodies.len(),
                at_b.lock().unwrap().bodies.len(),
                hb.turn_status()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after = hb.turn_status();
        println!(
            "coturn {} killed: A reported B down after {down_a:.1?}, B reported A down after \
             {down_b:.1?}; {}: all {} messages each way arrived {:.1?} after that; B's \
             relayed address {before} → {:?} (server {:?})",
            port,
            if fallback {
                "no restart, B has a second server"
            } else {
                "restarted"
            },
            3 * N,
            back.elapsed(),
            after.relayed,
            after.server
        );
        if fallback {
            assert_eq!(after.server, spare.as_ref().map(|c| c.addr));
        }
        for (seen, dir) in [(&at_a, "b>a"), (&at_b, "a>b")] {
            let g = seen.lock().unwrap();
            assert_eq!(g.bodies.len(), 3 * N, "{dir}: distinct messages");
            assert!(g.bodies.values().all(|&c| c == 1), "{dir}: a duplicate");
            for round in ["before", "during", "after"] {
                assert!((0..N).all(|i| g
                    .bodies
                    .contains_key(format!("{dir} {round} {i}").as_bytes())));
            }
        }
        if !fallback {
            assert!(down_a.is_some_and(|d| d < PATIENCE) && down_b.is_some_and(|d| d < PATIENCE));
        }
        drop((at_a, at_b));
        let (a, b) = (ta.await.unwrap(), tb.await.unwrap());
        a.shutdown(Duration::from_millis(100)).await;
        b.shutdown(Duration::from_millis(100)).await;
        drop((second, spare));
    });
}

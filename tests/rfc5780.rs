//! `dna bootstrap --other-address` as an RFC 5780 NAT discovery server on loopback
//! (spec/05-nat.md §2.1): its four sockets answer CHANGE-REQUEST from the socket asked for,
//! our discovery and coturn's `turnutils_natdiscovery` classify loopback through it, and a
//! flood spread over the four sockets gets one source's limit, not four. Behind real NATs:
//! `tests/nat.rs`, `discovery_through_dna_bootstrap_agrees_with_coturn`.
//!
//! `turnutils_natdiscovery` comes with Debian's coturn. Without it that part says so and
//! skips — except under `CI=true`, where it fails.

#![allow(clippy::disallowed_methods)] // the tests time real processes

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dna_p2p::nat::discovery::Discovery;
use dna_p2p::nat::stun::{Binding, Change, Options, Timers};
use netsim::testbed::DnaProcess;

const DNA: &str = env!("CARGO_BIN_EXE_dna");
const IP1: &str = "127.0.0.2";
const IP2: &str = "127.0.0.3";

/// A `dna bootstrap` on IP1 with `--other-address IP2`: the process and its four addresses
/// (IP1:P1, IP1:P2, IP2:P1, IP2:P2).
fn rfc5780_bootstrap(dir: &Path) -> (DnaProcess, [SocketAddr; 4]) {
    let p = DnaProcess::spawn(
        Path::new(DNA),
        None,
        "bootstrap",
        dir,
        &[
            "--listen".into(),
            format!("{IP1}:0"),
            "--other-address".into(),
            IP2.into(),
        ],
    )
    .expect("spawn dna");
    let ready = p
        .wait_event("ready", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("bootstrap ready; stderr: {}", p.stderr_tail()));
    let p1: SocketAddr = ready["addr"].as_str().expect("addr").parse().expect("addr");
    let (ip1, ip2): (IpAddr, IpAddr) = (IP1.parse().unwrap(), IP2.parse().unwrap());
    let p2 = p1.port() + 1;
    let addrs = [
        p1,
        SocketAddr::new(ip1, p2),
        SocketAddr::new(ip2, p1.port()),
        SocketAddr::new(ip2, p2),
    ];
    (p, addrs)
}

/// Our discovery (spec/05 §2), driven over a plain socket on 127.0.0.1.
fn our_discovery(server: SocketAddr) -> dna_p2p::nat::discovery::NatClass {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    let mut tids = [[0u8; 12]; 5];
    for (i, t) in tids.iter_mut().enumerate() {
        *t = [0xD0 + i as u8; 12];
    }
    let mut d = Discovery::new(server, vec![local.ip()], local.port(), tids, Instant::now());
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        d.handle_timeout(now);
        while let Some((to, bytes)) = d.poll_transmit(now) {
            sock.send_to(&bytes, to).unwrap();
        }
        if let Some(r) = d.result() {
            return r.clone().expect("classified");
        }
        let wait = d
            .poll_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait)).unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            d.handle_response(from, &buf[..n], Instant::now());
        }
    }
}

#[test]
fn our_discovery_and_turnutils_natdiscovery_classify_loopback_through_a_bootstrap() {
    let tmp = tempfile::tempdir().unwrap();
    let (_boot, addrs) = rfc5780_bootstrap(&tmp.path().join("boot"));
    // Each CHANGE-REQUEST variant to IP1:P1 is answered from the socket it names.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1500];
    for (i, (change, want)) in [
        (Change::Nothing, addrs[0]),
        (Change::Port, addrs[1]),
        (Change::IpAndPort, addrs[3]),
    ]
    .into_iter()
    .enumerate()
    {
        let opts = Options {
            timers: Timers::DISCOVERY,
            change,
            credentials: None,
        };
        let mut b = Binding::with_options(addrs[0], [0xA0 + i as u8; 12], opts, Instant::now());
        sock.send_to(b.poll_transmit(Instant::now()).unwrap().1, addrs[0])
            .unwrap();
        let (n, from) = sock.recv_from(&mut buf).expect("an answer");
        assert_eq!(from, want, "{change:?}");
        assert!(b.handle_response(from, &buf[..n]));
        let a = b.result().unwrap().clone().unwrap();
        println!(
            "{change:?}: answered from {from}, mapped {}, OTHER-ADDRESS {:?}",
            a.mapped, a.other
        );
        assert_eq!(a.mapped, sock.local_addr().unwrap());
        assert_eq!(a.other, Some(addrs[3]));
    }

    let ours = our_discovery(addrs[0]);
    println!(
        "our discovery through the bootstrap: {} {ours:?}",
        ours.name()
    );
    assert_eq!(ours.name(), "public");

    let found = Command::new("sh")
        .args(["-c", "command -v turnutils_natdiscovery"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        let msg = "turnutils_natdiscovery missing (Debian package coturn)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED {msg}");
        return;
    }
    let out = Command::new("timeout")
        .args([
            "20",
            "turnutils_natdiscovery",
            "-m",
            "-f",
            "-L",
            "127.0.0.4",
        ])
        .args(["-p", &addrs[0].port().to_string(), IP1])
        .output()
        .expect("run turnutils_natdiscovery");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let verdicts: Vec<&str> = stdout.lines().filter(|l| l.contains("NAT")).collect();
    println!("turnutils_natdiscovery: {verdicts:?}");
    assert!(!stdout.contains("timeout"), "{stdout}");
    assert!(
        verdicts
            .iter()
            .any(|l| l.contains("Endpoint Independent Filtering")),
        "{stdout}"
    );
    assert!(
        verdicts
            .iter()
            .any(|l| l.contains("Endpoint Independent Mapping")),
        "{stdout}"
    );
}

/// A flood from one source spread over the four sockets: one rate limit for the source
/// across them (32 at once, 10 per second), not one per socket (which would give four
/// bursts, 128). Our requests pay for their answers, so the byte rule does not bind here.
#[test]
fn a_flood_over_the_four_sockets_gets_one_sources_limit() {
    const SENT: usize = 1000;
    let tmp = tempfile::tempdir().unwrap();
    let (_boot, addrs) = rfc5780_bootstrap(&tmp.path().join("boot"));
    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    flood
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let start = Instant::now();
    let mut sent_bytes = 0;
    for i in 0..SENT {
        let mut tid = [0u8; 12];
        tid[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let to = addrs[i % 4];
        let mut b = Binding::new(to, tid, start);
        sent_bytes += flood
            .send_to(b.poll_transmit(start).unwrap().1, to)
            .unwrap();
        if i % 32 == 31 {
            std::thread::yield_now();
        }
    }
    // Another source then asks each socket: once its four answers are here, every flood
    // request each socket got before was handled (each socket's queue is in order).
    let other = UdpSocket::bind("127.0.0.5:0").unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let mut other_answered = 0;
    for (i, to) in addrs.iter().enumerate() {
        for _ in 0..3 {
            let mut b = Binding::new(*to, [0x70 + i as u8; 12], start);
            other
                .send_to(b.poll_transmit(start).unwrap().1, to)
                .unwrap();
            if let Ok((n, from)) = other.recv_from(&mut buf) {
                if b.handle_response(from, &buf[..n]) {
                    other_answered += 1;
                    break;
                }
            }
        }
    }
    let elapsed = start.elapsed();
    let (mut answers, mut answer_bytes) = (0usize, 0usize);
    while let Ok((n, from)) = flood.recv_from(&mut buf) {
        if addrs.contains(&from) {
            answers += 1;
            answer_bytes += n;
        }
    }
    println!(
        "flood from 127.0.0.1 over 4 sockets: {SENT} requests ({sent_bytes} B) in {:.3} s, \
         {answers} answered ({answer_bytes} B); 127.0.0.5 afterwards: {other_answered}/4 \
         sockets answered",
        elapsed.as_secs_f64()
    );
    assert_eq!(
        other_answered, 4,
        "another source is still answered on every socket"
    );
    let cfg = dna_p2p::nat::responder::ResponderConfig::default();
    let bound = f64::from(cfg.burst) + cfg.per_second * elapsed.as_secs_f64() + 1.0;
    assert!(answers >= 1);
    assert!(
        (answers as f64) <= bound,
        "{answers} answers to one source; one limit allows at most {bound:.0} in {elapsed:?}"
    );
    assert!(answer_bytes <= sent_bytes, "never more bytes than it got");
}

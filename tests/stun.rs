//! The STUN responder of a real `dna bootstrap` process on loopback (spec/05-nat.md §1):
//! coturn's `turnutils_stunclient` (a plain RFC 8489 Binding request, no FINGERPRINT) gets
//! its address back, and a flood from one source is cut at the per-source limit while
//! another source is still answered.
//!
//! `turnutils_stunclient` comes with Debian's coturn (`.ci/run` installs it). Without it the
//! interop test says so and skips — except under `CI=true`, where it fails.

#![allow(clippy::disallowed_methods)] // the tests time real processes

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dna_p2p::nat::stun::Binding;
use netsim::testbed::DnaProcess;

const DNA: &str = env!("CARGO_BIN_EXE_dna");

/// A `dna bootstrap` on 127.0.0.1 and the address of its one UDP socket.
fn bootstrap(dir: &Path) -> (DnaProcess, SocketAddr) {
    let p = DnaProcess::spawn(
        Path::new(DNA),
        None,
        "bootstrap",
        dir,
        &["--listen".into(), "127.0.0.1:0".into()],
    )
    .expect("spawn dna");
    let ready = p
        .wait_event("ready", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("bootstrap ready; stderr: {}", p.stderr_tail()));
    let addr = ready["addr"].as_str().expect("addr").parse().expect("addr");
    (p, addr)
}

/// A plain RFC 8489 Binding request: the 20-byte header, no attributes.
fn plain_request(tid: [u8; 12]) -> Vec<u8> {
    let mut v = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    v.extend_from_slice(&tid);
    v
}

/// The mapped address in `answer` to the transaction `tid` sent to `server`.
fn mapped(server: SocketAddr, tid: [u8; 12], answer: &[u8]) -> Option<SocketAddr> {
    let now = Instant::now();
    let mut b = Binding::new(server, tid, now);
    let _ = b.poll_transmit(now);
    if !b.handle_response(server, answer) {
        return None;
    }
    b.result()?.as_ref().ok().map(|a| a.mapped)
}

/// Where the interop test's prerequisite is missing: skip, or fail under `CI=true`.
fn skip_or_fail(msg: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg} (CI=true: a missing prerequisite fails the run)");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {msg}");
}

#[test]
fn turnutils_stunclient_learns_its_address_from_a_bootstrap_node() {
    let test = "turnutils_stunclient_learns_its_address_from_a_bootstrap_node";
    let found = Command::new("sh")
        .args(["-c", "command -v turnutils_stunclient"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        skip_or_fail(&format!(
            "{test}: needs turnutils_stunclient (Debian package coturn)"
        ));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_boot, server) = bootstrap(&tmp.path().join("boot"));

    // Our own plain request first, from a socket whose address we know exactly.
    let sock = UdpSocket::bind("127.0.0.4:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let tid = [0x5a; 12];
    sock.send_to(&plain_request(tid), server).unwrap();
    let mut buf = [0u8; 1500];
    let got = sock.recv_from(&mut buf).ok().map(|(n, from)| {
        assert_eq!(from, server);
        buf[..n].to_vec()
    });
    let got = got.as_deref().and_then(|a| mapped(server, tid, a));
    println!(
        "plain 20-byte Binding request from {}: mapped {:?}",
        sock.local_addr().unwrap(),
        got
    );
    assert_eq!(
        got,
        Some(sock.local_addr().unwrap()),
        "a plain Binding request is answered with the sender's address"
    );

    // coturn's client, bound to 127.0.0.3 so that the answer cannot be the server's own
    // address by accident. It prints "... UDP reflexive addr: IP:PORT".
    let mut child = Command::new("turnutils_stunclient")
        .args([
            "-L",
            "127.0.0.3",
            "-p",
            &server.port().to_string(),
            "127.0.0.1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run turnutils_stunclient");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!(
        "turnutils_stunclient: {}; stdout: {}",
        match status {
            Some(s) => s.to_string(),
            None => "TIMED OUT after 10 s (killed)".into(),
        },
        stdout.trim()
    );
    assert!(status.is_some(), "turnutils_stunclient got no answer");
    let reflexive: SocketAddr = stdout
        .lines()
        .find_map(|l| l.split("reflexive addr:").nth(1))
        .map(str::trim)
        .expect("a reflexive address in turnutils_stunclient's output")
        .parse()
        .expect("an address");
    assert_eq!(reflexive.ip().to_string(), "127.0.0.3");
    assert_ne!(reflexive.port(), 0);
    assert_ne!(reflexive.port(), server.port());
}

/// Receives on `sock` in a thread until `stop` and nothing more arrives: (answers, bytes).
fn count_answers(
    sock: UdpSocket,
    server: SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, usize)> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    std::thread::spawn(move || {
        let (mut n, mut bytes) = (0, 0);
        let mut buf = [0u8; 1500];
        loop {
            match sock.recv_from(&mut buf) {
                Ok((len, from)) => {
                    if from == server && dna_p2p::transport::demux::is_stun(&buf[..len]) {
                        n += 1;
                        bytes += len;
                    }
                }
                Err(_) if stop.load(Ordering::SeqCst) => return (n, bytes),
                Err(_) => {}
            }
        }
    })
}

#[test]
fn a_flood_from_one_source_is_cut_while_another_source_is_answered() {
    const SENT: usize = 1000;
    let tmp = tempfile::tempdir().unwrap();
    let (_boot, server) = bootstrap(&tmp.path().join("boot"));

    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let counter = count_answers(flood.try_clone().unwrap(), server, stop.clone());
    let start = Instant::now();
    let mut sent_bytes = 0;
    for i in 0..SENT {
        let mut tid = [0u8; 12];
        tid[..8].copy_from_slice(&(i as u64).to_be_bytes());
        tid[8] = 0xF1;
        let mut b = Binding::new(server, tid, start);
        let (_, req) = b.poll_transmit(start).unwrap();
        sent_bytes += flood.send_to(req, server).unwrap();
        if i % 32 == 31 {
            std::thread::yield_now();
        }
    }

    // Another source, after the flood: the node answers it. The node handles STUN in one
    // queue, in order: once this answer is here, every flood request it got was handled.
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let tid = [0x77; 12];
    let mut other_answered = None;
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        let mut b = Binding::new(server, tid, start);
        other
            .send_to(b.poll_transmit(start).unwrap().1, server)
            .unwrap();
        if let Ok((n, _)) = other.recv_from(&mut buf) {
            other_answered = mapped(server, tid, &buf[..n]);
            break;
        }
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (answers, answer_bytes) = counter.join().unwrap();
    println!(
        "flood from {}: {SENT} requests ({sent_bytes} B) in {:.3} s, {answers} answered \
         ({answer_bytes} B); 127.0.0.2 afterwards: {:?}",
        flood.local_addr().unwrap(),
        elapsed.as_secs_f64(),
        other_answered
    );
    assert_eq!(
        other_answered,
        Some(other.local_addr().unwrap()),
        "another source is still answered"
    );
    let cfg = dna_p2p::nat::responder::ResponderConfig::default();
    let bound = f64::from(cfg.burst) + cfg.per_second * elapsed.as_secs_f64() + 1.0;
    assert!(answers >= 1, "the first requests are answered");
    assert!(
        (answers as f64) <= bound,
        "{answers} answers to one source; the limit allows at most {bound:.0} in {elapsed:?}"
    );
    assert!(answer_bytes <= sent_bytes, "never more bytes than it got");
}

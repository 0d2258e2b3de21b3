//! The control API's event stream and the status panel (spec/10-control.md), with real `dna`
//! processes on loopback: a subscriber on bob's socket sees alice's `peer_up` and her
//! message; a subscriber that never reads is dropped once its queue is full while the node
//! keeps delivering (a message after the drop reaches the other subscriber and the inbox);
//! `dna status --json` shows the peer with its path and RTT; `dna ping --count N` prints N
//! probes with their RTT.

#![allow(clippy::disallowed_methods)] // waits for real processes

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netsim::testbed::DnaProcess;
use serde_json::{json, Value};

const DNA: &str = env!("CARGO_BIN_EXE_dna");
/// The subscriber queue the daemons run with (small, so a slow subscriber overflows soon).
const QUEUE: usize = 32;

fn start(dir: &Path, role: &str, args: &[String]) -> DnaProcess {
    DnaProcess::start_ready(Path::new(DNA), role, dir, args, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `{"cmd":"subscribe"}` on `dir`'s socket; the answer line.
fn subscribe(dir: &Path) -> (BufReader<UnixStream>, Value) {
    let mut s = UnixStream::connect(dir.join("control.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    writeln!(s, "{}", json!({"cmd": "subscribe"})).unwrap();
    let mut line = String::new();
    // The reader keeps whatever it read past the answer line.
    let mut r = BufReader::new(s);
    r.read_line(&mut line).unwrap();
    (r, serde_json::from_str(&line).unwrap())
}

/// A thread reading event lines from `s` into a channel.
fn reader(s: BufReader<UnixStream>) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in s.lines() {
            let Ok(line) = line else { return };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// The first event from `rx` matching `pred` within `within`; the events skipped are counted.
fn wait(rx: &mpsc::Receiver<Value>, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("event not seen in time");
        let v = rx.recv_timeout(left).expect("event not seen in time");
        if pred(&v) {
            return v;
        }
    }
}

fn ask(p: &DnaProcess, req: Value) -> Value {
    p.control(&req).unwrap()
}

fn cli(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(DNA)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn events_stream_to_subscribers_a_slow_one_is_dropped_and_status_and_ping_show_the_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!("retry_secs = 1\n[control]\nsubscriber_queue = {QUEUE}\n"),
    )
    .unwrap();
    let (boot, mut args) = DnaProcess::loopback_bootstrap(Path::new(DNA), &tmp.path().join("boot"))
        .unwrap_or_else(|e| panic!("{e}"));
    args.extend(["--config".into(), config.to_string_lossy().into_owned()]);
    let (a_dir, b_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let alice = start(&a_dir, "daemon", &args);
    let bob = start(&b_dir, "daemon", &args);
    let (a_fp, b_fp) = (alice.fingerprint().unwrap(), bob.fingerprint().unwrap());

    // Two subscribers on bob's socket: one reads, one never does.
    let (fast, hello) = subscribe(&b_dir);
    println!("subscribe → {hello}");
    assert_eq!(hello["ok"], true);
    assert_eq!(hello["queue"], QUEUE);
    let events = reader(fast);
    let (slow, _) = subscribe(&b_dir);

    // Alice → bob: bob's subscriber sees her session come up and her message.
    let v = ask(
        &alice,
        json!({"cmd": "send", "to": b_fp, "text": "hello subscriber"}),
    );
    assert_eq!(v["ok"], true, "{v}");
    let up = wait(&events, Duration::from_secs(60), |e| {
        e["event"] == "peer_up" && e["peer"] == a_fp.as_str()
    });
    println!("bob's subscriber: {up}");
    let msg = wait(&events, Duration::from_secs(60), |e| {
        e["event"] == "message"
    });
    println!("bob's subscriber: {msg}");
    assert_eq!(msg["from"], a_fp.as_str());
    assert_eq!(msg["text"], "hello subscriber");

    // Bursts of 32 KiB messages until the slow subscriber's socket and queue are full and
    // bob drops it; the reading subscriber sees each burst before the next one.
    let big = "x".repeat(32 << 10);
    let mut sent = 1usize;
    let mut dropped = 0;
    while dropped == 0 {
        assert!(sent < 1000, "the slow subscriber was never dropped");
        for _ in 0..8 {
            let v = ask(&alice, json!({"cmd": "send", "to": b_fp, "text": big}));
            assert_eq!(v["ok"], true, "{v}");
            sent += 1;
        }
        let want = sent;
        let mut seen = 0;
        // The reading subscriber keeps up: it gets every message of the burst.
        while seen < 8 {
            let e = wait(&events, Duration::from_secs(60), |e| {
                e["event"] == "message"
            });
            assert_eq!(e["text"].as_str().map(str::len), Some(big.len()));
            seen += 1;
        }
        let st = ask(&bob, json!({"cmd": "status"}));
        dropped = st["control"]["subscribers_dropped"].as_u64().unwrap();
        println!(
            "{want} messages sent: bob published {} event lines, dropped {dropped} subscriber(s), {} live",
            st["control"]["events_published"], st["control"]["subscribers"]
        );
    }
    assert_eq!(dropped, 1, "only the slow subscriber");

    // The node kept working: a message after the drop reaches the reading subscriber and
    // bob's inbox.
    let v = ask(
        &alice,
        json!({"cmd": "send", "to": b_fp, "text": "after the drop"}),
    );
    assert_eq!(v["ok"], true, "{v}");
    let after = wait(&events, Duration::from_secs(60), |e| {
        e["event"] == "message" && e["text"] == "after the drop"
    });
    println!("bob's subscriber after the drop: {after}");
    let inbox = ask(&bob, json!({"cmd": "inbox"}));
    let n = inbox["messages"].as_array().unwrap().len();
    println!("bob's inbox: {n} messages (sent {})", sent + 1);
    assert_eq!(n, sent + 1);
    let st = ask(&bob, json!({"cmd": "status"}));
    assert_eq!(
        st["control"]["subscribers"], 1,
        "the reading one is still there"
    );

    // The dropped subscriber: whole lines, then the final error line, then the end.
    let mut rest = String::new();
    let mut slow = slow;
    slow.read_to_string(&mut rest).unwrap();
    let lines: Vec<Value> = rest
        .lines()
        .map(|l| serde_json::from_str(l).expect("whole JSON lines only"))
        .collect();
    let last = lines.last().unwrap();
    println!(
        "the slow subscriber got {} lines ({} bytes) before it was dropped; last: {last}",
        lines.len() - 1,
        rest.len()
    );
    assert_eq!(last["event"], "error");
    assert!(
        lines.len() - 1 < sent + 8,
        "it was dropped while messages kept coming"
    );

    // The status panel: alice sees bob, direct, with an RTT and bytes.
    let (ok, out) = cli(&a_dir, &["status", "--json"]);
    assert!(ok, "{out}");
    let st: Value = serde_json::from_str(out.trim()).unwrap();
    let peer = st["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["fingerprint"] == b_fp.as_str())
        .cloned()
        .expect("bob in alice's peer table");
    println!("alice's status, bob's row: {peer}");
    assert_eq!(peer["connected"], true);
    assert_eq!(peer["path"], "direct");
    assert!(peer["rtt_ms"].as_f64().unwrap() > 0.0);
    assert!(peer["bytes_out"].as_u64().unwrap() > (sent * big.len()) as u64);
    assert_eq!(st["identity"]["fingerprint"], a_fp.as_str());
    assert!(st["dht"]["table"].as_u64().unwrap() >= 1);
    let (ok, table) = cli(&a_dir, &["status"]);
    assert!(ok);
    println!("{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(&b_fp[..16]))
        .expect("bob's row");
    assert!(row.contains("direct") && row.contains(" ms"), "{row}");

    // dna ping: one line per probe, each with an RTT and the path.
    let (ok, out) = cli(
        &a_dir,
        &["ping", &b_fp, "--count", "3", "--interval-ms", "100"],
    );
    println!("{out}");
    assert!(ok, "{out}");
    let probes: Vec<&str> = out.lines().collect();
    assert_eq!(probes.len(), 3);
    for p in &probes {
        assert!(
            p.starts_with("pong from ") && p.contains("via direct") && p.ends_with(" ms"),
            "{p}"
        );
    }
    let (ok, out) = cli(&a_dir, &["ping", &b_fp, "--count", "2", "--json"]);
    assert!(ok, "{out}");
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["path"], "direct");
        assert!(v["rtt_ms"].as_f64().unwrap() > 0.0, "{v}");
    }
    drop((alice, bob, boot));
}

#[test]
fn a_relayed_peer_shows_path_relay_in_status_and_ping() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("daemon.toml");
    std::fs::write(&config, "retry_secs = 1\nrelay = \"only\"\n").unwrap();
    let boot = start(
        &tmp.path().join("boot"),
        "bootstrap",
        &["--listen".into(), "127.0.0.1:0".into()],
    );
    let ready = boot.wait_event("ready", Duration::ZERO).unwrap();
    let boot_addr = ready["addr"].as_str().unwrap().to_owned();
    let args = vec![
        "--listen".to_string(),
        "127.0.0.1:0".into(),
        "--bootstrap".into(),
        format!("{boot_addr}@{}", ready["fp"].as_str().unwrap()),
        "--config".into(),
        config.to_string_lossy().into_owned(),
    ];
    let (a_dir, b_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let alice = start(&a_dir, "daemon", &args);
    let bob = start(&b_dir, "daemon", &args);
    let b_fp = bob.fingerprint().unwrap();

    let v = ask(
        &alice,
        json!({"cmd": "send", "to": b_fp, "text": "through the relay"}),
    );
    println!("alice: send → {v}");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["path"], "relay", "{v}");
    // The session is up once bob acknowledged the message.
    let acked = alice
        .wait_for(Duration::from_secs(60), |e| {
            e["event"] == "acked" && e["peer"] == b_fp.as_str()
        })
        .expect("bob acknowledged");
    println!("alice: {}", acked.json);
    // Her outbox says which way it went (spec/09-mailbox.md §7).
    let ob = ask(&alice, json!({"cmd": "outbox"}));
    let delivered: Vec<&Value> = ob["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] == "delivered")
        .collect();
    assert!(
        !delivered.is_empty() && delivered.iter().all(|m| m["path"] == "relay"),
        "{ob}"
    );

    // Alice's panel: bob is relayed through the bootstrap node, with the route's bytes.
    let (ok, out) = cli(&a_dir, &["status", "--json"]);
    assert!(ok, "{out}");
    let st: Value = serde_json::from_str(out.trim()).unwrap();
    let peer = st["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["fingerprint"] == b_fp.as_str())
        .cloned()
        .expect("bob in alice's peer table");
    println!("alice's status, bob's row: {peer}");
    assert_eq!(peer["path"], "relay");
    assert_eq!(peer["via"], boot_addr.as_str());
    assert!(peer["relay_bytes_out"].as_u64().unwrap() > 0);
    assert!(peer["rtt_ms"].as_f64().unwrap() > 0.0);

    let (ok, out) = cli(
        &a_dir,
        &["ping", &b_fp, "--count", "2", "--interval-ms", "100"],
    );
    println!("{out}");
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 2);
    assert!(out.lines().all(|l| l.contains("via relay")), "{out}");
    drop((alice, bob, boot));
}

/// `dna send` to a peer it is not connected to prints the steps of reaching it on stderr —
/// the daemon's `reaching` events (spec/10-control.md §2), read from a subscription the
/// CLI makes before its request. On loopback (no STUN server, so bob is not known to be
/// reachable) the steps are the DHT lookup, CONNECT through the bootstrap node, hole
/// punching, and the dial of the pair found. Another subscriber sees the same events.
#[test]
fn dna_send_prints_the_steps_of_reaching_a_new_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let (_boot, args) = DnaProcess::loopback_bootstrap(Path::new(DNA), &tmp.path().join("boot"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (a_dir, b_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let _alice = start(&a_dir, "daemon", &args);
    let bob = start(&b_dir, "daemon", &args);
    let b_fp = bob.fingerprint().unwrap();
    let (sub, _) = subscribe(&a_dir);
    let events = reader(sub);
    let out = Command::new(DNA)
        .args(["send", "--to", &b_fp, "hello, steps"])
        .arg("--data-dir")
        .arg(&a_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("dna send stderr:\n{stderr}");
    assert!(out.status.success(), "{stderr}");
    let short: String = b_fp.chars().take(8).collect();
    assert!(
        stderr.contains(&format!("… send: looking {short}… up in the DHT")),
        "{stderr}"
    );
    // Then bob's published address is dialed, or — when his presence did not list one yet
    // that answers — a CONNECT goes through the rendezvous node; either is the next step.
    assert!(
        stderr.contains("… send: dialing") || stderr.contains("… send: CONNECT to"),
        "{stderr}"
    );
    let ev = wait(&events, Duration::from_secs(10), |e| {
        e["event"] == "reaching" && e["stage"] == "lookup"
    });
    println!("alice's subscriber: {ev}");
    assert_eq!(ev["peer"], b_fp.as_str());
    let ev = wait(&events, Duration::from_secs(10), |e| {
        e["event"] == "reaching" && (e["stage"] == "dial" || e["stage"] == "connect")
    });
    println!("alice's subscriber: {ev}");
    assert!(bob
        .wait_for(Duration::from_secs(30), |e| e["text"] == "hello, steps")
        .is_some());
}

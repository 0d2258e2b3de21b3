//! Messages survive crashes (spec/06-node.md §3), with real `dna` processes on loopback:
//! every message a daemon accepted arrives exactly once, whichever side is killed with
//! SIGKILL (`kill -9`) and when. Counted in the recipient's stored inbox.

#![allow(clippy::disallowed_methods)] // waits for real processes

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use netsim::testbed::DnaProcess;
use serde_json::{json, Value};

const DNA: &str = env!("CARGO_BIN_EXE_dna");
const N: usize = 1000;
/// Padding of the drained messages (16 KiB each: the drain lasts long enough to be cut).
const PAD: usize = 16 * 1024;

fn text(prefix: &str, i: usize) -> String {
    match prefix {
        "drain" => format!("{prefix} {i} {}", "x".repeat(PAD)),
        _ => format!("{prefix} {i}"),
    }
}

fn start(dir: &Path, role: &str, args: &[String]) -> DnaProcess {
    DnaProcess::start_ready(Path::new(DNA), role, dir, args, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"))
}

struct Net {
    _tmp: tempfile::TempDir,
    _boot: DnaProcess,
    args: Vec<String>,
    a_dir: std::path::PathBuf,
    b_dir: std::path::PathBuf,
}

fn net() -> Net {
    let tmp = tempfile::tempdir().unwrap();
    let (boot, mut args) = DnaProcess::loopback_bootstrap(Path::new(DNA), &tmp.path().join("boot"))
        .unwrap_or_else(|e| panic!("{e}"));
    args.extend([
        "--config".into(),
        tmp.path()
            .join("daemon.toml")
            .to_string_lossy()
            .into_owned(),
    ]);
    // Retry reaching peers with messages waiting every second.
    std::fs::write(tmp.path().join("daemon.toml"), "retry_secs = 1\n").unwrap();
    Net {
        a_dir: tmp.path().join("a"),
        b_dir: tmp.path().join("b"),
        _boot: boot,
        args,
        _tmp: tmp,
    }
}

/// Sends `texts` to `to` over one control connection; every one must be accepted.
fn send_all(dir: &Path, to: &str, texts: impl Iterator<Item = String>) -> usize {
    let mut s = UnixStream::connect(dir.join("control.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut n = 0;
    for text in texts {
        writeln!(s, "{}", json!({"cmd": "send", "to": to, "text": text})).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ok"], true, "{v}");
        n += 1;
    }
    n
}

fn inbox(dir: &Path) -> Vec<Value> {
    let out = Command::new(DNA)
        .args(["inbox", "--all", "--json", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until `dir`'s inbox holds `n` messages (or the deadline), returns it.
fn wait_inbox(dir: &Path, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let got = inbox(dir);
        if got.len() >= n || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Exactly once: every text once, nothing else, no ID twice.
fn assert_exactly_once(got: &[Value], from: &str, prefix: &str) {
    let mut texts: HashMap<String, usize> = HashMap::new();
    let mut ids = HashSet::new();
    for m in got {
        assert_eq!(m["from"], from);
        assert!(
            ids.insert(m["id"].as_str().unwrap().to_owned()),
            "ID twice: {m}"
        );
        *texts
            .entry(m["text"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for i in 0..N {
        let t = text(prefix, i);
        assert_eq!(texts.get(&t), Some(&1), "{prefix} {i}: {:?}", texts.get(&t));
    }
    assert_eq!(got.len(), N);
}

#[test]
fn sender_killed_with_a_backlog_for_an_offline_recipient() {
    let net = net();
    let a = start(&net.a_dir, "daemon", &net.args);
    let b = start(&net.b_dir, "daemon", &net.args);
    let (a_fp, b_fp) = (a.fingerprint().unwrap(), b.fingerprint().unwrap());
    drop(b); // kill -9: the recipient is down
    let sent = send_all(&net.a_dir, &b_fp, (0..N).map(|i| text("backlog", i)));
    assert_eq!(sent, N);
    println!("accepted {sent} messages for the offline recipient");
    drop(a); // kill -9 of the sender with all of them unacknowledged
             // With no daemon running, `dna outbox` reads the store: all of them wait.
    let out = Command::new(DNA)
        .args(["outbox", "--json", "--data-dir"])
        .arg(&net.a_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let queued = listed.iter().filter(|m| m["state"] == "queued").count();
    println!(
        "dna outbox with the sender down: {} listed, {queued} queued",
        listed.len()
    );
    assert_eq!((listed.len(), queued), (N, N));
    assert!(listed.iter().all(|m| m["to"] == b_fp.as_str()));
    let _a = start(&net.a_dir, "daemon", &net.args);
    let _b = start(&net.b_dir, "daemon", &net.args);
    let got = wait_inbox(&net.b_dir, N, Duration::from_secs(120));
    println!("recipient's stored inbox: {} messages", got.len());
    assert_exactly_once(&got, &a_fp, "backlog");
}

#[test]
fn recipient_killed_while_a_backlog_drains() {
    let net = net();
    let a = start(&net.a_dir, "daemon", &net.args);
    let b = start(&net.b_dir, "daemon", &net.args);
    let (a_fp, b_fp) = (a.fingerprint().unwrap(), b.fingerprint().unwrap());
    drop(b);
    send_all(&net.a_dir, &b_fp, (0..N).map(|i| text("drain", i)));
    let b = start(&net.b_dir, "daemon", &net.args);
    // Kill it as soon as the backlog is flowing: it has had its chance to store some.
    let first = b.wait_for(Duration::from_secs(120), |e| e["event"] == "message");
    assert!(first.is_some(), "delivery started; {}", b.stderr_tail());
    let seen_before: Vec<Value> = b.events();
    drop(b);
    let before = inbox(&net.b_dir).len();
    println!("recipient killed with {before} of {N} stored");
    // The kill came mid-drain: some were stored (the event comes after the store), not all.
    assert!(
        before > 0 && before < N,
        "killed with {before} of {N} stored"
    );
    let b = start(&net.b_dir, "daemon", &net.args);
    let got = wait_inbox(&net.b_dir, N, Duration::from_secs(120));
    println!(
        "recipient's stored inbox after restart: {} messages",
        got.len()
    );
    assert_exactly_once(&got, &a_fp, "drain");
    // The application saw no message twice across both runs.
    let mut printed = HashSet::new();
    for e in seen_before.iter().chain(b.events().iter()) {
        if e["event"] == "message" {
            assert!(
                printed.insert(e["id"].as_str().unwrap().to_owned()),
                "printed twice: {e}"
            );
        }
    }
    println!("message events printed across both runs: {}", printed.len());
    drop(a);
}

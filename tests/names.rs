//! Names and contacts end to end (spec/08-names.md), with real `dna` processes on loopback:
//! alice claims "alice", bob resolves it, pins her as a contact and sends to "alice" by
//! name; carol's claim of "alice" is refused; and once "alice" resolves to another key (bob
//! moved to a network where carol holds the name), bob's pinned contact refuses it.

#![allow(clippy::disallowed_methods)] // waits for real processes

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use netsim::testbed::DnaProcess;
use serde_json::{json, Value};

const DNA: &str = env!("CARGO_BIN_EXE_dna");

fn start(dir: &Path, role: &str, args: &[String]) -> DnaProcess {
    DnaProcess::start_ready(Path::new(DNA), role, dir, args, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A bootstrap node; the arguments a daemon needs to join through it.
fn bootstrap(dir: &Path, config: &Path) -> (DnaProcess, Vec<String>) {
    let boot = start(dir, "bootstrap", &["--listen".into(), "127.0.0.1:0".into()]);
    let ready = boot.wait_event("ready", Duration::ZERO).unwrap();
    let seed = format!(
        "{}@{}",
        ready["addr"].as_str().unwrap(),
        ready["fp"].as_str().unwrap()
    );
    let args = vec![
        "--listen".to_string(),
        "127.0.0.1:0".into(),
        "--bootstrap".into(),
        seed,
        "--config".into(),
        config.to_string_lossy().into_owned(),
    ];
    (boot, args)
}

fn ask(p: &DnaProcess, req: Value) -> Value {
    let v = p.control(&req).unwrap();
    println!("{req} → {v}");
    v
}

/// `dna <args> --data-dir DIR`: exit status and stdout.
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

fn wait_inbox(p: &DnaProcess, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let v = p.control(&json!({"cmd": "inbox"})).unwrap();
        let got = v["messages"].as_array().cloned().unwrap_or_default();
        if got.len() >= n || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn claim_resolve_pin_send_by_name_and_refuse_a_changed_key() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("daemon.toml");
    std::fs::write(&config, "retry_secs = 1\n").unwrap();
    let dir = |n: &str| -> PathBuf { tmp.path().join(n) };
    let (boot1, args1) = bootstrap(&dir("boot1"), &config);
    let alice = start(&dir("alice"), "daemon", &args1);
    let bob = start(&dir("bob"), "daemon", &args1);
    let carol = start(&dir("carol"), "daemon", &args1);
    let (a_fp, c_fp) = (alice.fingerprint().unwrap(), carol.fingerprint().unwrap());

    // Alice claims her name through the CLI (capitals are lowered).
    let (ok, out) = cli(&dir("alice"), &["name", "claim", "Alice", "--json"]);
    let claimed: Value = serde_json::from_str(out.trim()).unwrap();
    println!("alice: dna name claim Alice → {claimed}");
    assert!(ok, "{claimed}");
    assert_eq!(claimed["name"], "alice");
    assert!(claimed["stored_at"].as_u64().unwrap() >= 1);

    // Bob resolves it and pins her.
    let r = ask(&bob, json!({"cmd": "name_resolve", "name": "alice"}));
    assert_eq!(r["fingerprint"], a_fp.as_str());
    let (ok, out) = cli(&dir("bob"), &["contacts", "add", "alice", "--json"]);
    let added: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(ok, "{added}");
    assert_eq!(added["contact"]["fingerprint"], a_fp.as_str());

    // Bob sends to "alice" by name; alice receives it.
    let (ok, out) = cli(&dir("bob"), &["send", "--to", "alice", "hello by name"]);
    println!("bob: dna send --to alice → {}", out.trim());
    assert!(ok, "{out}");
    let got = wait_inbox(&alice, 1, Duration::from_secs(60));
    println!("alice's inbox: {} message(s)", got.len());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["text"], "hello by name");
    assert_eq!(got[0]["from"], bob.fingerprint().unwrap().as_str());
    // `dna inbox --from` filters by sender; `dna outbox` lists bob's message with its state.
    let b_fp = bob.fingerprint().unwrap();
    let (ok, out) = cli(&dir("alice"), &["inbox", "--from", &b_fp[..12], "--json"]);
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let (ok, out) = cli(&dir("alice"), &["inbox", "--from", &a_fp[..12], "--json"]);
    assert!(ok && out.trim().is_empty(), "nothing from herself: {out}");
    // Bob is no contact of alice's: his message is a contact request, not in her inbox.
    let (ok, out) = cli(&dir("alice"), &["inbox", "--json"]);
    assert!(
        ok && out.trim().is_empty(),
        "a stranger's message is held apart: {out}"
    );
    let (ok, out) = cli(&dir("alice"), &["inbox", "--requests", "--json"]);
    assert!(
        ok && out.lines().count() == 1 && out.contains("\"contact\":false"),
        "{out}"
    );
    let (ok, out) = cli(
        &dir("alice"),
        &["contacts", "add", &b_fp, "--alias", "bob", "--json"],
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(&dir("alice"), &["inbox", "--json"]);
    println!("alice's inbox once bob is a contact: {}", out.trim());
    assert!(
        ok && out.lines().count() == 1 && out.contains("\"contact\":true"),
        "{out}"
    );
    let (ok, out) = cli(&dir("bob"), &["outbox", "--json"]);
    println!("bob: dna outbox --json → {}", out.trim());
    assert!(ok, "{out}");
    let entry: Value = serde_json::from_str(out.lines().next().unwrap_or("null")).unwrap();
    assert_eq!(entry["to"], a_fp.as_str(), "{entry}");
    assert_eq!(
        (&entry["state"], &entry["path"]),
        (&json!("delivered"), &json!("direct")),
        "{entry}"
    );
    // `dna inbox --follow` prints a message that arrives while it runs.
    let mut follow = Command::new(DNA)
        .args(["inbox", "--all", "--follow", "--json", "--data-dir"])
        .arg(dir("alice"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        first.contains("hello by name"),
        "the stored one first: {first}"
    );
    // The subscription follows the stored messages: send until one is printed (a message
    // sent before it was up is in the inbox, not in the stream).
    let mut followed = None;
    for i in 0..20 {
        let (ok, out) = cli(
            &dir("bob"),
            &["send", "--to", "alice", &format!("followed {i}")],
        );
        assert!(ok, "{out}");
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
            followed = Some(line);
            break;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let followed = followed.expect("a followed message printed");
    println!("dna inbox --follow printed: {followed}");
    assert!(followed.contains("followed"), "{followed}");
    // A name that is no contact is refused, not guessed.
    let v = ask(&bob, json!({"cmd": "send", "to": "dave", "text": "x"}));
    assert_eq!(v["ok"], false);

    // Carol's claim of "alice" is refused, naming the holder; her own name is fine.
    let v = ask(&carol, json!({"cmd": "name_claim", "name": "alice"}));
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["holder"], a_fp.as_str());
    let v = ask(&carol, json!({"cmd": "name_claim", "name": "carol"}));
    assert_eq!(v["ok"], true, "{v}");
    let r = ask(&bob, json!({"cmd": "name_resolve", "name": "alice"}));
    assert_eq!(r["fingerprint"], a_fp.as_str(), "still alice's");

    // "alice" comes to mean another key: network 1 goes away; in network 2, carol holds
    // the name. Bob moves there with his pinned contact list.
    drop((alice, bob, carol, boot1));
    let (_boot2, args2) = bootstrap(&dir("boot2"), &config);
    let carol = start(&dir("carol"), "daemon", &args2);
    let v = ask(&carol, json!({"cmd": "name_claim", "name": "alice"}));
    assert_eq!(v["ok"], true, "{v}");
    let bob = start(&dir("bob"), "daemon", &args2);
    let r = ask(&bob, json!({"cmd": "name_resolve", "name": "alice"}));
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["key_changed"], true);
    assert_eq!(
        (r["pinned"].as_str(), r["resolved"].as_str()),
        (Some(a_fp.as_str()), Some(c_fp.as_str()))
    );
    let v = ask(&bob, json!({"cmd": "contacts_add", "target": "alice"}));
    assert_eq!(v["key_changed"], true, "{v}");
    let (ok, _) = cli(&dir("bob"), &["contacts", "add", "alice"]);
    assert!(!ok, "the CLI exits non-zero on a key change");
    // The pin stands: "alice" still means alice's key for bob.
    let (ok, out) = cli(&dir("bob"), &["contacts", "list", "--json"]);
    assert!(ok);
    let list: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    println!("bob's contacts after the refused change: {list:?}");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["fingerprint"], a_fp.as_str());
}

/// Two claims for one name made apart (two networks, as in a partition), then a node that
/// reaches both: its lookup collects both claims and every resolver picks the same one,
/// the earliest claim time (ties: the smaller fingerprint).
#[test]
fn a_race_is_decided_by_the_earliest_claim_then_the_smaller_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("daemon.toml");
    std::fs::write(&config, "retry_secs = 1\n").unwrap();
    let dir = |n: &str| -> PathBuf { tmp.path().join(n) };
    let (_b1, args1) = bootstrap(&dir("boot1"), &config);
    let (_b2, args2) = bootstrap(&dir("boot2"), &config);
    let alice = start(&dir("alice"), "daemon", &args1);
    let a = ask(&alice, json!({"cmd": "name_claim", "name": "sam"}));
    assert_eq!(a["ok"], true, "{a}");
    let carol = start(&dir("carol"), "daemon", &args2);
    let c = ask(&carol, json!({"cmd": "name_claim", "name": "sam"}));
    assert_eq!(c["ok"], true, "{c}");
    // The rule, from the two signed claims.
    let key = |v: &Value| {
        (
            v["claimed_at"].as_u64().unwrap(),
            v["fingerprint"].as_str().unwrap().to_string(),
        )
    };
    let expected = key(&a).min(key(&c)).1;
    // Dave joins through both bootstrap nodes: both claims are found.
    let mut both = args1.clone();
    both.extend(["--bootstrap".to_string(), args2[3].clone()]);
    let dave = start(&dir("dave"), "daemon", &both);
    let r = ask(&dave, json!({"cmd": "name_resolve", "name": "sam"}));
    println!(
        "claims: alice {:?}, carol {:?}; dave resolves {} claims to {}",
        key(&a),
        key(&c),
        r["claims"],
        r["fingerprint"]
    );
    assert_eq!(r["claims"], 2, "{r}");
    assert_eq!(r["fingerprint"], expected.as_str());
}

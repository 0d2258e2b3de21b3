//! `dna devnet` end to end (issue 11 item 1): the built binary runs the whole demo on
//! loopback — two bootstrap nodes, alice, bob and carol as real `dna` processes — and every
//! step must pass: exit code 0, each step's JSON line `"ok":true` with the path the step
//! must take, and the final audit with nothing lost or duplicated. Afterwards no node of it
//! is left running and its temporary directory is gone.

use std::process::Command;

use serde_json::Value;

const DNA: &str = env!("CARGO_BIN_EXE_dna");

#[test]
fn devnet_runs_every_step() {
    // Ports outside Linux's ephemeral range (32768-60999), so other tests' sockets bound to
    // port 0 cannot take them between devnet's check and its nodes' bind.
    let out = Command::new(DNA)
        .args(["devnet", "--json", "--base-port", "23170"])
        .output()
        .expect("run dna devnet");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(out.status.success(), "exit status {}", out.status);

    let step = |name: &str| -> &Value {
        lines
            .iter()
            .find(|v| v["step"] == name)
            .unwrap_or_else(|| panic!("no step {name:?}"))
    };
    let expected = [
        ("network up", "loopback"),
        ("names claimed", "dht"),
        ("contacts added by name", "dht"),
        ("alice → bob", "direct"),
        ("bob → alice", "direct"),
        // Seed 003: no relay without the user's consent; then through the relay at once.
        ("alice → carol, no consent", "relay-needed"),
        ("consent: alice → carol", "relay"),
        ("carol → alice", "relay"),
        ("carol → bob", "relay"),
        ("carol goes offline", "-"),
        // Queued in the senders' outboxes, then put in carol's DHT mailbox; she fetches it
        // when she is back, and the step fails unless all of it came from there.
        ("alice → carol (offline)", "queued"),
        ("bob → carol (offline)", "queued"),
        ("in carol's DHT mailbox", "mailbox"),
        ("carol back online", "-"),
        ("carol receives 2 waiting", "mailbox"),
        ("burst alice → bob ×1000", "direct"),
    ];
    for (name, path) in expected {
        let v = step(name);
        assert_eq!(v["ok"], true, "{v}");
        let got = v["path"].as_str().unwrap_or_default();
        assert!(
            path.split('|').any(|p| p == got),
            "path {got}, expected {path}: {v}"
        );
    }
    assert_eq!(
        lines.iter().filter(|v| v.get("step").is_some()).count(),
        expected.len(),
        "one line per step, no failed step"
    );
    // Carol stopped on SIGINT (a lost SIGINT used to leave her running until killed, and
    // alice's session to her open until its idle timeout).
    let offline = step("carol goes offline");
    assert_eq!(offline["sigint"], true, "{offline}");
    assert_eq!(offline["peer_down_seen"], true, "{offline}");
    let burst = step("burst alice → bob ×1000");
    assert_eq!(burst["count"], 1000);
    let result = lines.last().expect("a result line");
    println!(
        "devnet: delivered {} lost {} duplicated {} mailbox {}; burst {} msg/s",
        result["delivered"],
        result["lost"],
        result["duplicated"],
        result["mailbox"],
        burst["msgs_per_s"]
    );
    assert_eq!(result["result"], "ok");
    assert_eq!(result["delivered"], 1007, "5 + 2 + 1,000 messages");
    let received = step("carol receives 2 waiting");
    assert_eq!(received["receipted"], 2, "{received}");
    assert_eq!(result["lost"], 0);
    assert_eq!(result["duplicated"], 0);

    // Nothing is left behind: the directory is removed (the children were killed first).
    let dir = step("network up")["dir"].as_str().unwrap().to_string();
    assert!(
        !std::path::Path::new(&dir).exists(),
        "{dir} should be removed"
    );
}

/// With no node holding mailbox items, the offline step has nothing to deliver from: the
/// devnet says ✗ on the step that claims the mailbox and exits 1 (it used to pass with the
/// senders' outboxes delivering instead).
#[test]
fn devnet_fails_when_its_mailbox_delivers_nothing() {
    let out = Command::new(DNA)
        .args([
            "devnet",
            "--json",
            "--base-port",
            "23190",
            "--no-mailbox-storage",
        ])
        .output()
        .expect("run dna devnet");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert_eq!(out.status.code(), Some(1), "exit status {}", out.status);
    let failed: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let step = failed[0]["step"].as_str().unwrap_or_default();
    assert!(
        step == "in carol's DHT mailbox" || step == "carol receives 2 waiting",
        "failed at {step}"
    );
    // The steps before it passed: the network ran, only the mailbox was missing.
    let passed: Vec<String> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["ok"] == true)
        .filter_map(|v| v["step"].as_str().map(str::to_owned))
        .collect();
    assert!(
        passed.iter().any(|s| s == "bob → carol (offline)"),
        "{passed:?}"
    );
}

/// The processes whose command line mentions `dir` (the devnet's nodes get `--data-dir
/// <dir>/<name>`).
fn processes_under(dir: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(dir) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// `--keep` leaves the five nodes running; SIGINT (Ctrl-C) or SIGTERM to devnet then kills
/// every one of them and removes the temporary directory.
#[test]
fn a_signal_stops_every_node_and_removes_the_directory() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    for (signal, base_port) in [("INT", "23270"), ("TERM", "23280")] {
        let mut child = Command::new(DNA)
            .args(["devnet", "--json", "--keep", "--base-port", base_port])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run dna devnet --keep");
        let mut kept = None;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            assert_ne!(v["ok"], false, "a step failed: {v}");
            if v["keep"] == true {
                kept = Some(v);
                break;
            }
        }
        let kept = kept.expect("the --keep line");
        let dir = kept["dir"].as_str().unwrap().to_string();
        let running = processes_under(&dir);
        assert_eq!(running.len(), 5, "five nodes kept running: {running:?}");
        let sent = Command::new("sh")
            .args(["-c", &format!("kill -{signal} {}", child.id())])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = child.wait().unwrap();
        let left = processes_under(&dir);
        println!(
            "SIG{signal}: devnet exited with {status}; nodes before: {}, after: {}; {dir} exists: {}",
            running.len(),
            left.len(),
            std::path::Path::new(&dir).exists()
        );
        assert_eq!(status.code(), Some(130));
        assert!(left.is_empty(), "still running: {left:?}");
        assert!(!std::path::Path::new(&dir).exists(), "{dir} is left");
    }
}

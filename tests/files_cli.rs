//! File transfer with real `dna` processes on loopback (spec/11-files.md): `dna send-file`
//! on alice's daemon, the `file_offer` event and `dna files` on bob's, `dna files accept`,
//! the file in bob's download directory with the same SHA-256, `file_done` and
//! `file_delivered`.

#![allow(clippy::disallowed_methods)] // waits for real processes

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use netsim::testbed::DnaProcess;
use rand_core::{OsRng, RngCore};
use serde_json::Value;
use sha2::{Digest, Sha256};

const DNA: &str = env!("CARGO_BIN_EXE_dna");

fn start(dir: &Path, args: &[String]) -> DnaProcess {
    DnaProcess::start_ready(Path::new(DNA), "daemon", dir, args, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn dna(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(DNA)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        println!("dna {args:?}: {err}");
    }
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn dna_send_file_and_dna_files_accept_move_a_file_between_daemons() {
    let tmp = tempfile::tempdir().unwrap();
    let (_boot, args) = DnaProcess::loopback_bootstrap(Path::new(DNA), &tmp.path().join("boot"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (a_dir, b_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let alice = start(&a_dir, &args);
    let bob = start(&b_dir, &args);
    let b_fp = bob.fingerprint().unwrap();
    let mut data = vec![0u8; 3 * (1 << 20) + 17];
    OsRng.fill_bytes(&mut data);
    let src = tmp.path().join("holiday.jpg");
    std::fs::write(&src, &data).unwrap();

    let (ok, out) = dna(&a_dir, &["send-file", "--to", &b_fp, src.to_str().unwrap()]);
    assert!(ok, "{out}");
    println!("alice: {}", out.trim());
    let offer = bob
        .wait_for(Duration::from_secs(60), |e| e["event"] == "file_offer")
        .expect("bob's daemon reports the offer")
        .json;
    println!("bob: {offer}");
    assert_eq!(offer["name"], "holiday.jpg");
    assert_eq!(offer["size"], data.len() as u64);
    let id = offer["id"].as_str().unwrap().to_owned();
    let (ok, listed) = dna(&b_dir, &["files", "--json"]);
    assert!(ok);
    let row: Value = serde_json::from_str(listed.lines().next().expect("one transfer")).unwrap();
    assert_eq!(
        (row["id"].as_str(), row["state"].as_str()),
        (Some(id.as_str()), Some("offered"))
    );

    let (ok, out) = dna(&b_dir, &["files", "accept", &id]);
    assert!(ok, "{out}");
    let done = bob
        .wait_for(Duration::from_secs(60), |e| e["event"] == "file_done")
        .expect("the file arrives")
        .json;
    println!("bob: {done}");
    let path = done["path"].as_str().unwrap();
    assert_eq!(Path::new(path), b_dir.join("downloads").join("holiday.jpg"));
    let got = std::fs::read(path).unwrap();
    assert_eq!(
        Sha256::digest(&got),
        Sha256::digest(&data),
        "the same bytes"
    );
    let delivered = alice
        .wait_for(Duration::from_secs(60), |e| e["event"] == "file_delivered")
        .expect("alice hears it is done")
        .json;
    println!("alice: {delivered}");
    assert_eq!(delivered["leaves_sent"], 193);
    let (ok, listed) = dna(&b_dir, &["files"]);
    assert!(ok);
    println!("bob's dna files:\n{listed}");
}

/// bob's progress: (leaves held, leaves) of the one transfer he receives.
fn progress(b_dir: &Path) -> Option<(u64, u64)> {
    let (ok, listed) = dna(b_dir, &["files", "--json"]);
    if !ok {
        return None;
    }
    let row: Value = serde_json::from_str(listed.lines().next()?).ok()?;
    Some((row["leaves_held"].as_u64()?, row["leaves"].as_u64()?))
}

/// Waits until bob's bitmap on disk lists at least `share` of the file's `n` leaves (read
/// straight from `<data>/files/<id>.have`: a poll costs microseconds, so the moment is
/// caught within one bitmap write, 512 KiB); the leaves it lists then.
fn until_share(b_dir: &Path, id: &str, n: u64, share: f64) -> u64 {
    let have = b_dir.join("files").join(format!("{id}.have"));
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(b) = std::fs::read(&have) {
            let held: u64 = b.iter().skip(8).map(|x| u64::from(x.count_ones())).sum();
            if held as f64 >= share * n as f64 {
                return held;
            }
        }
        assert!(std::time::Instant::now() < deadline, "the transfer stalled");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// `kill -9` of the sender at ≈ 30 %, later of the recipient at ≈ 70 %: both come back
/// with the same data directories, the transfer resumes and completes, and the bytes sent
/// again are counted. Size: `DNA_FILE_KILL_MIB` (default 64; the 256 with
/// `DNA_FILE_KILL_MIB=256`).
#[test]
fn a_transfer_survives_kill_9_of_the_sender_then_of_the_recipient() {
    let mib: usize = std::env::var("DNA_FILE_KILL_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let tmp = tempfile::tempdir().unwrap();
    let (_boot, args) = DnaProcess::loopback_bootstrap(Path::new(DNA), &tmp.path().join("boot"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (a_dir, b_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let mut alice = start(&a_dir, &args);
    let mut bob = start(&b_dir, &args);
    let b_fp = bob.fingerprint().unwrap();
    let mut data = vec![0u8; mib << 20];
    OsRng.fill_bytes(&mut data);
    let src = tmp.path().join("video.mkv");
    std::fs::write(&src, &data).unwrap();
    let (ok, out) = dna(&a_dir, &["send-file", "--to", &b_fp, src.to_str().unwrap()]);
    assert!(ok, "{out}");
    let offer = bob
        .wait_for(Duration::from_secs(60), |e| e["event"] == "file_offer")
        .expect("the offer")
        .json;
    let id = offer["id"].as_str().unwrap().to_owned();
    assert!(dna(&b_dir, &["files", "accept", &id]).0);

    let n = (data.len() as u64).div_ceil(16 * 1024);
    let h = until_share(&b_dir, &id, n, 0.3);
    alice.kill();
    // Nothing arrives while alice is down: what bob holds now is what he will not ask again.
    std::thread::sleep(Duration::from_millis(300));
    let (held_then, _) = progress(&b_dir).unwrap();
    println!("alice killed with bob at {h}/{n} leaves; {held_then} held once she was gone");
    let mut alice = start(&a_dir, &args);

    let h2 = until_share(&b_dir, &id, n, 0.7);
    bob.kill();
    println!("bob killed at {h2}/{n} leaves");
    let bob = start(&b_dir, &args);
    let done = bob
        .wait_for(Duration::from_secs(300), |e| e["event"] == "file_done")
        .expect("the transfer completes after both crashes")
        .json;
    let got = std::fs::read(done["path"].as_str().unwrap()).unwrap();
    assert_eq!(
        Sha256::digest(&got),
        Sha256::digest(&data),
        "the same bytes"
    );
    let delivered = alice
        .wait_for(Duration::from_secs(60), |e| e["event"] == "file_delivered")
        .expect("the restarted sender hears it is done")
        .json;
    let sent = delivered["leaves_sent"].as_u64().unwrap();
    let missing = n - held_then;
    let again = sent.saturating_sub(missing);
    println!(
        "{mib} MiB: the restarted sender sent {sent} leaves for the {missing} missing after its \
         crash; sent again after the recipient's crash: {again} leaves ({} KiB); SHA-256 equal",
        again * 16
    );
    // The recipient's crash costs at most the leaves since its last bitmap (512 KiB) and
    // those in flight (the stream's 1 MiB window).
    assert!(again * 16 <= 1536, "sent again: {again} leaves");
    alice.kill();
}

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

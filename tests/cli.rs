//! The `dna` binary as a user runs it: the spec's frame vectors through
//! `dna frame decode`, `encode` ↔ `decode`, and `dna id new/show`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn dna(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dna"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dna");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// (name, hex, expect) triples from spec/01-wire.md §6.
fn spec_vectors() -> Vec<(String, String, String)> {
    let spec =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/01-wire.md"))
            .unwrap();
    let mut out = Vec::new();
    let mut lines = spec.lines();
    while let Some(line) = lines.next() {
        if let Some(name) = line.strip_prefix("vector: ") {
            let hex = lines
                .next()
                .unwrap()
                .strip_prefix("hex: ")
                .unwrap()
                .to_owned();
            let expect = lines
                .next()
                .unwrap()
                .strip_prefix("expect: ")
                .unwrap()
                .to_owned();
            out.push((name.to_owned(), hex, expect));
        }
    }
    out
}

#[test]
fn spec_vectors_decode_to_the_stated_fields_or_error() {
    let vectors = spec_vectors();
    assert!(vectors.len() >= 10);
    for (name, hex, expect) in vectors {
        let o = dna(&["frame", "decode", "--json"], hex.as_bytes());
        let v: serde_json::Value =
            serde_json::from_str(stdout(&o).trim()).unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some(err) = expect.strip_prefix("error=") {
            assert_eq!(o.status.code(), Some(1), "{name} must exit 1");
            assert_eq!(v["error"], err, "{name}");
            assert!(
                String::from_utf8_lossy(&o.stderr).contains(err),
                "{name}: error on stderr"
            );
        } else {
            assert!(o.status.success(), "{name}");
            let got = format!(
                "type={} seq={} length={} crc={}",
                v["type"].as_str().unwrap(),
                v["seq"],
                v["length"],
                v["crc32"].as_str().unwrap()
            );
            assert_eq!(got, expect, "{name}");
        }
    }
}

#[test]
fn wrong_crc_prints_the_crc_error_in_text_mode() {
    let (_, hex, _) = spec_vectors()
        .into_iter()
        .find(|v| v.0 == "data-wrong-crc")
        .unwrap();
    let o = dna(&["frame", "decode"], hex.as_bytes());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("CRC mismatch: header says 0x3610a687, payload has 0x3610a686"),
        "{err}"
    );
}

#[test]
fn encode_then_decode_round_trips_text_and_raw() {
    let o = dna(
        &["frame", "encode", "--type", "DATA", "--seq", "1"],
        b"hello",
    );
    assert!(o.status.success());
    let (_, hex, _) = spec_vectors()
        .into_iter()
        .find(|v| v.0 == "data-hello")
        .unwrap();
    assert_eq!(stdout(&o).trim(), hex);
    let raw = dna(
        &[
            "frame", "encode", "--type", "presence", "--seq", "9", "--raw",
        ],
        &[1, 2, 3],
    );
    let d = dna(&["frame", "decode", "--raw"], &raw.stdout);
    assert!(d.status.success());
    let text = stdout(&d);
    assert!(
        text.contains("PRESENCE (0x0005)")
            && text.contains("sequence  9")
            && text.contains("3 bytes"),
        "{text}"
    );
}

#[test]
fn decode_reports_bad_hex_and_trailing_bytes() {
    let o = dna(&["frame", "decode"], b"zz");
    assert_eq!(o.status.code(), Some(2));
    let o = dna(
        &["frame", "decode", "--json"],
        b"444e412001000003000000000000000000000000000000000000000000000000ff",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("TrailingBytes"));
    let o = dna(&["frame", "encode", "--type", "GREETING"], b"");
    assert!(!o.status.success());
}

#[test]
fn id_new_then_show() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("node");
    let d = d.to_str().unwrap();
    let o = dna(&["id", "new", "--data-dir", d, "--json"], b"");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let created: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let fp = created["fingerprint"].as_str().unwrap();
    assert_eq!(fp.len(), 64);
    assert_eq!(created["node_id"].as_str().unwrap(), &fp[..40]);
    let o = dna(&["id", "show", "--data-dir", d, "--json"], b"");
    let shown: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(shown, created);
    let o = dna(&["id", "new", "--data-dir", d], b"");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to overwrite"));
    let o = dna(
        &[
            "id",
            "show",
            "--data-dir",
            dir.path().join("none").to_str().unwrap(),
        ],
        b"",
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("no identity"));
}

/// `dna config show` prints the effective configuration as TOML that `--config` takes back:
/// the flags win over defaults, and showing the saved file again prints the same.
#[test]
fn config_show_round_trips_through_a_config_file() {
    let dir = std::env::temp_dir().join(format!("dna-config-show-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_string_lossy().into_owned();
    let first = dna(
        &[
            "config",
            "show",
            "--data-dir",
            &d,
            "--relay",
            "only",
            "--listen",
            "127.0.0.1:4000",
        ],
        b"",
    );
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let text = stdout(&first);
    assert!(text.contains("relay = \"only\"") && text.contains("listen = \"127.0.0.1:4000\""));
    assert!(
        text.contains("[relay_server]") && text.contains("enabled = false"),
        "{text}"
    );
    let file = dir.join("dna.toml");
    std::fs::write(&file, &text).unwrap();
    let again = dna(
        &[
            "config",
            "show",
            "--data-dir",
            &d,
            "--config",
            &file.to_string_lossy(),
        ],
        b"",
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(stdout(&again), text, "the saved file reads back the same");
    let boot = dna(&["config", "show", "--data-dir", &d, "--as-bootstrap"], b"");
    assert!(
        stdout(&boot).contains("enabled = true"),
        "a bootstrap node relays"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

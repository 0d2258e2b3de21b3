//! `dna ping <contact|fingerprint> [--count N]`, the client of the `{"cmd":"ping"}`
//! request (`control::ping`, spec/10-control.md §4): one session PING per probe over the peer's live session — the
//! path messages take, direct or relayed — timed by its PONG, as `tailscale ping` does. A
//! peer with no session is reached first (DHT lookup, punching, relay), as `send` does.

// The client's pause between probes reads the clock: this is the driver.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

/// `dna ping`: `count` probes, `interval` apart; one line each.
pub(super) fn run(dir: &Path, to: &str, count: u32, interval: Duration, json: bool) -> ExitCode {
    let mut ok = 0;
    for i in 0..count {
        if i > 0 {
            std::thread::sleep(interval);
        }
        let v = match super::control::ask(dir, &json!({"cmd": "ping", "to": to})) {
            Some(Ok(v)) => v,
            Some(Err(e)) => json!({"ok": false, "error": e}),
            None => {
                eprintln!(
                    "error: no daemon at {}",
                    crate::control::path(dir).display()
                );
                return ExitCode::FAILURE;
            }
        };
        if json {
            println!("{v}");
        } else if v["ok"] == true {
            let fp = v["peer"].as_str().unwrap_or_default();
            let who = match v["name"].as_str() {
                Some(n) => format!("{n} ({})", crate::control::short(fp)),
                None => crate::control::short(fp).to_owned(),
            };
            println!(
                "pong from {who} via {} {} in {:.2} ms",
                v["path"].as_str().unwrap_or("-"),
                v["addr"].as_str().unwrap_or("-"),
                v["rtt_ms"].as_f64().unwrap_or(0.0)
            );
        } else {
            println!("ping {to}: {}", v["error"].as_str().unwrap_or("failed"));
        }
        if v["ok"] == true {
            ok += 1;
        }
    }
    if ok > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

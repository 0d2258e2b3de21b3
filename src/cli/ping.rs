//! `dna ping <contact|fingerprint> [--count N]` and the `{"cmd":"ping"}` request
//! (spec/10-control.md §4): one session PING per probe over the peer's live session — the
//! path messages take, direct or relayed — timed by its PONG, as `tailscale ping` does. A
//! peer with no session is reached first (DHT lookup, punching, relay), as `send` does.

// The client's pause between probes reads the clock: this is the driver.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use dna_p2p::crypto::Fingerprint;
use dna_p2p::daemon::NodeHandle;

use super::events::Hub;

/// How long one probe waits for its PONG by default.
pub(super) const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// A fingerprint, else a contact's alias or name.
pub(super) fn target(h: &NodeHandle, to: &str) -> Option<Fingerprint> {
    to.parse::<Fingerprint>()
        .ok()
        .or_else(|| h.contact_lookup(to).and_then(|c| c.fp()))
}

/// `{"cmd":"ping","to":…,"timeout_ms":…}`: one probe.
pub(super) async fn request(h: &NodeHandle, hub: &Hub, req: &Value) -> Value {
    let to = req["to"].as_str().unwrap_or_default();
    let Some(fp) = target(h, to) else {
        return json!({"ok": false, "error": format!(
            "{to:?} is not a fingerprint or a contact (add it: dna contacts add NAME)")});
    };
    let wait = req["timeout_ms"]
        .as_u64()
        .map_or(PING_TIMEOUT, Duration::from_millis)
        .min(Duration::from_secs(60));
    let mut reached = None;
    if !h.peers().await.iter().any(|p| p.peer == fp) {
        match h.reach(fp).await {
            Ok(r) => reached = Some(format!("{r:?}")),
            Err(e) => {
                return json!({"ok": false, "peer": fp.to_string(),
                    "error": format!("not reachable: {e}")})
            }
        }
    }
    // Registered before the PING leaves, so its PONG cannot be missed.
    let rtt = hub.next_rtt(fp);
    let mut sent = h.ping(fp).await;
    if !sent && reached.is_some() {
        // Reached, but the session may still be coming up: its first PING is the probe.
        sent = h.peers().await.iter().any(|p| p.peer == fp);
    }
    if !sent {
        return json!({"ok": false, "peer": fp.to_string(), "error": "no live session"});
    }
    let Ok(Ok(rtt)) = tokio::time::timeout(wait, rtt).await else {
        return json!({"ok": false, "peer": fp.to_string(),
            "error": format!("no PONG within {} ms", wait.as_millis())});
    };
    let p = h.peers().await.into_iter().find(|p| p.peer == fp);
    let name = h
        .contacts()
        .into_iter()
        .find(|c| c.fp() == Some(fp))
        .and_then(|c| c.alias.or(c.name));
    json!({
        "ok": true,
        "peer": fp.to_string(),
        "name": name,
        "rtt_ms": rtt.as_secs_f64() * 1e3,
        "path": p.as_ref().map(|p| p.path),
        "addr": p.as_ref().map(|p| p.remote.to_string()),
        "via": p.as_ref().and_then(|p| p.via).map(|a| a.to_string()),
        "reached": reached,
    })
}

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
                    super::control::path(dir).display()
                );
                return ExitCode::FAILURE;
            }
        };
        if json {
            println!("{v}");
        } else if v["ok"] == true {
            let fp = v["peer"].as_str().unwrap_or_default();
            let who = match v["name"].as_str() {
                Some(n) => format!("{n} ({})", super::status::short(fp)),
                None => super::status::short(fp).to_owned(),
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

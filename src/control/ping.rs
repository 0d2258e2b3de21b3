//! `{"cmd":"ping"}` (spec/10-control.md §4), the daemon's side of `dna ping`: one session
//! PING over the peer's live session, timed by its PONG; a peer with no session is reached
//! first, as `send` does.

use std::time::Duration;

use serde_json::{json, Value};

use dna_p2p::crypto::Fingerprint;
use dna_p2p::daemon::NodeHandle;

use super::events::Hub;

/// How long one probe waits for its PONG by default.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// A fingerprint, else a contact's alias or name.
pub(crate) fn target(h: &NodeHandle, to: &str) -> Option<Fingerprint> {
    to.parse::<Fingerprint>()
        .ok()
        .or_else(|| h.contact_lookup(to).and_then(|c| c.fp()))
}

/// `{"cmd":"ping","to":…,"timeout_ms":…}`: one probe.
pub(crate) async fn request(h: &NodeHandle, hub: &Hub, req: &Value) -> Value {
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

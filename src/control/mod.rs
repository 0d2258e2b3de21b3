//! The daemon's control socket, the server side (spec/06-node.md §6): `<data dir>/control.sock`,
//! a Unix socket only its owner may open, taking one JSON request per line and answering one
//! JSON object per line. Part of `dna daemon` (it drives a running node's `NodeHandle`),
//! apart from the CLI, which is its client (`cli::control`, `cli::status`, …).
//!
//! Every request and event is documented with examples in spec/10-control.md.
//! Requests: `{"cmd":"status"}` (`status`), `{"cmd":"subscribe"}` (the connection becomes
//! an event stream, `events`), `{"cmd":"ping","to":…}` (`ping`),
//! `{"cmd":"send","to":FP_OR_CONTACT,"text":TEXT}`, `{"cmd":"inbox"}`; names and contacts
//! (`name_*`, `contacts_*`) in `names`; the outbox and the mailbox (`outbox`, `mailbox`,
//! `mailbox_fetch`) in `mailbox`. A line longer than [`MAX_LINE`] ends the connection with
//! an error; bad JSON and unknown commands get `{"ok":false,"error":…}`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use dna_p2p::crypto::Fingerprint;
use dna_p2p::daemon::{NodeHandle, Reached};
use dna_p2p::files::Files;
use dna_p2p::nat::candidate::CandidateKind;

pub(crate) use events::{nat_facts, spawn_watch, ControlConfig, Hub, RELAY_HINT};

mod events;
mod files;
mod mailbox;
mod names;
mod ping;
mod status;

pub(crate) use files::event_json as file_event_json;
pub(crate) use status::short;

/// The longest request line (a 1 MiB message body, JSON-escaped, fits).
pub(crate) const MAX_LINE: usize = 8 << 20;
/// The socket's path in a data directory.
pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join("control.sock")
}

/// Control connections served at once.
const MAX_CLIENTS: usize = 64;

/// Binds the control socket (owner-only) and serves it; returns its path.
pub(crate) fn listen(
    dir: &Path,
    h: NodeHandle,
    hub: Arc<Hub>,
    files: Option<Files>,
) -> std::io::Result<PathBuf> {
    let p = path(dir);
    let _ = std::fs::remove_file(&p);
    let listener = tokio::net::UnixListener::bind(&p)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::warn!("control socket: too many clients, refusing one");
                continue;
            };
            let (h, hub, files) = (h.clone(), hub.clone(), files.clone());
            tokio::spawn(async move {
                serve(h, hub, files, stream).await;
                drop(permit);
            });
        }
    });
    Ok(p)
}

/// One client: lines in, answers out, until it closes or sends a line too long.
async fn serve(h: NodeHandle, hub: Arc<Hub>, files: Option<Files>, stream: tokio::net::UnixStream) {
    let (r, mut w) = stream.into_split();
    // `take` bounds what one line may make us buffer; reset per line.
    let mut r = BufReader::new(r.take(MAX_LINE as u64 + 1));
    let mut line = Vec::new();
    loop {
        line.clear();
        r.get_mut().set_limit(MAX_LINE as u64 + 1);
        match r.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let too_long = line.len() > MAX_LINE;
        let answer = if too_long {
            json!({"ok": false, "error": format!("request line longer than {MAX_LINE} bytes")})
        } else {
            match serde_json::from_slice::<Value>(&line) {
                // The connection becomes an event stream (spec/10-control.md §2).
                Ok(req) if req["cmd"] == "subscribe" => {
                    return events::stream(hub, r.into_inner().into_inner(), w).await;
                }
                Ok(req) => request(&h, &hub, files.as_ref(), &req).await,
                Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
            }
        };
        if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() || too_long {
            return;
        }
    }
}

/// One control request.
pub(crate) async fn request(
    h: &NodeHandle,
    hub: &Hub,
    files: Option<&Files>,
    req: &Value,
) -> Value {
    match req.get("cmd").and_then(Value::as_str) {
        Some("status") => status::status(h, hub).await,
        Some("ping") => ping::request(h, hub, req).await,
        Some("send") => {
            let to = req.get("to").and_then(Value::as_str).unwrap_or_default();
            let text = req.get("text").and_then(Value::as_str).unwrap_or_default();
            // A fingerprint, else a contact's alias or name (spec/08-names.md §5).
            let Some(to) = to
                .parse::<Fingerprint>()
                .ok()
                .or_else(|| h.contact_lookup(to).and_then(|c| c.fp()))
            else {
                return json!({"ok": false, "error": format!(
                    "{to:?} is not a fingerprint or a contact (add it: dna contacts add NAME)")});
            };
            send(h, to, text).await
        }
        Some("inbox") => {
            let msgs: Vec<Value> = h.stored_inbox().iter().map(inbox_json).collect();
            json!({"ok": true, "messages": msgs})
        }
        Some(cmd @ ("outbox" | "mailbox" | "mailbox_fetch")) => mailbox::request(h, cmd, req).await,
        Some(cmd) if cmd.starts_with("file") => files::request(h, files, cmd, req).await,
        Some(cmd) if cmd.starts_with("name_") || cmd.starts_with("contacts_") => {
            names::request(h, cmd, req).await
        }
        _ => {
            json!({"ok": false, "error": "unknown cmd (expected status, subscribe, ping, send, inbox, outbox, mailbox, mailbox_fetch, file_send, files, file_accept, file_reject, name_claim, name_resolve, contacts_add, contacts_list, contacts_allow_relay or contacts_remove; spec/10-control.md)"})
        }
    }
}

/// Reaches the peer if it is not connected, then queues the message; answers once the
/// message is stored. A peer that cannot be reached now still gets the message later: it
/// waits in the outbox (`"queued":true`; `"path"` says why: `queued` when the peer is
/// offline or already has messages waiting, `relay-needed` when no direct path exists)
/// and the daemon retries.
async fn send(h: &NodeHandle, to: Fingerprint, text: &str) -> Value {
    let info = h.peer_info(&to).await;
    let connected = info.as_ref().is_some_and(|p| p.connected);
    let waiting = info.as_ref().is_some_and(|p| p.queued + p.inflight > 0);
    let relayed = info.as_ref().is_some_and(|p| {
        p.addrs
            .iter()
            .copied()
            .any(dna_p2p::transport::is_relay_token)
    });
    // Behind a network without UDP every path is through TURN over TCP.
    let all_turn = h.turn_over_tcp();
    let (path, via, note) = if connected && all_turn {
        ("turn", "tcp", None)
    } else if connected && relayed {
        ("relay", "connected", None)
    } else if connected {
        ("direct", "connected", None)
    } else if waiting && h.relay_needed().contains(&to) {
        // Waiting for the user's consent to a relay (seed 003).
        ("relay-needed", "none", None)
    } else if waiting {
        // Messages are already waiting for this peer: the daemon is reaching it.
        ("queued", "none", None)
    } else {
        match h.reach(to).await {
            Ok(Reached::Direct { .. } | Reached::Punched { .. }) if all_turn => {
                ("turn", "tcp", None)
            }
            Ok(Reached::Direct { kind, .. }) => ("direct", kind.name(), None),
            // Punched toward the peer's TURN allocation: its network lets no UDP out.
            Ok(Reached::Punched {
                kind: CandidateKind::Relayed,
                ..
            }) => ("turn", "relay", None),
            Ok(Reached::Punched { kind, .. }) => ("direct", kind.name(), None),
            // Through the peer's TURN allocation (spec/07-relay.md §3).
            Ok(Reached::Relayed { .. }) => ("turn", "relay", None),
            // Through a rendezvous node's bundled relay (spec/07-relay.md §1).
            Ok(Reached::Bundled { .. }) => ("relay", "relay", None),
            // No direct path, and no relay allowed (or none to be had): the message
            // waits in the outbox (and the recipient's mailbox) until one appears.
            Ok(Reached::RelayNeeded) => ("relay-needed", "none", None),
            Ok(_) => ("queued", "none", None),
            Err(e) => ("queued", "none", Some(e.to_string())),
        }
    };
    match h.send(to, Bytes::copy_from_slice(text.as_bytes())).await {
        Ok(id) => {
            let mut v = json!({"ok": true, "id": hex::encode(id.0), "path": path, "via": via,
                "queued": !matches!(path, "direct" | "turn" | "relay")});
            if let Some(n) = note {
                v["note"] = json!(n);
            }
            if path == "relay-needed" && !h.relay_allowed(&to) {
                v["hint"] = json!(RELAY_HINT);
            }
            v
        }
        Err(e) => json!({"ok": false, "path": path, "error": e.to_string()}),
    }
}

/// One stored message as `dna inbox --json` prints it.
pub(crate) fn inbox_json(m: &dna_p2p::daemon::StoredMessage) -> Value {
    json!({
        "from": m.from.to_string(),
        "id": hex::encode(m.id.0),
        "text": String::from_utf8_lossy(&m.body),
        "received_ms": m.received_ms,
    })
}

//! The file application's control requests and events (spec/11-files.md, spec/10-control.md):
//! `{"cmd":"file_send","to":…,"path":…}`, `{"cmd":"files"}`, `{"cmd":"file_accept","id":…}`,
//! `{"cmd":"file_reject","id":…}`; the events `file_offer`, `file_answered`, `file_done`,
//! `file_delivered`, `file_failed`.

use serde_json::{json, Value};

use dna_p2p::crypto::Fingerprint;
use dna_p2p::daemon::NodeHandle;
use dna_p2p::files::{FileEvent, Files};

fn parse_id(v: &Value) -> Option<[u8; 16]> {
    hex::decode(v.as_str()?).ok()?.try_into().ok()
}

/// One file request (`cmd` starts with `file`).
pub(crate) async fn request(
    h: &NodeHandle,
    files: Option<&Files>,
    cmd: &str,
    req: &Value,
) -> Value {
    let Some(files) = files else {
        return json!({"ok": false, "error": "this node runs no file application (a bootstrap node)"});
    };
    let answer = match cmd {
        "file_send" => {
            let to = req["to"].as_str().unwrap_or_default();
            let Some(to) = to
                .parse::<Fingerprint>()
                .ok()
                .or_else(|| h.contact_lookup(to).and_then(|c| c.fp()))
            else {
                return json!({"ok": false, "error": format!("{to:?} is not a fingerprint or a contact")});
            };
            let path = std::path::PathBuf::from(req["path"].as_str().unwrap_or_default());
            if !path.is_absolute() {
                return json!({"ok": false, "error": "the path must be absolute (the daemon reads it)"});
            }
            files
                .send_file(to, &path)
                .await
                .map(|id| json!({"ok": true, "id": hex::encode(id)}))
        }
        "files" => files.list().await.map(|l| {
            let l: Vec<Value> = l
                .iter()
                .map(|t| {
                    json!({"id": hex::encode(t.id), "direction": if t.outgoing { "out" } else { "in" },
                        "peer": t.peer.to_string(), "name": t.name, "size": t.size, "state": t.state,
                        "leaves": t.leaves, "leaves_held": t.leaves_held})
                })
                .collect();
            json!({"ok": true, "files": l})
        }),
        "file_accept" | "file_reject" => {
            let Some(id) = parse_id(&req["id"]) else {
                return json!({"ok": false, "error": "id: 32 hex digits"});
            };
            let r = if cmd == "file_accept" {
                files.accept(id).await
            } else {
                files.reject(id).await
            };
            r.map(|()| json!({"ok": true}))
        }
        _ => return json!({"ok": false, "error": format!("unknown cmd {cmd:?}")}),
    };
    answer.unwrap_or_else(|e| json!({"ok": false, "error": e.to_string()}))
}

/// A file event as one JSON line.
pub(crate) fn event_json(ev: &FileEvent) -> Value {
    match ev {
        FileEvent::Offer {
            id,
            from,
            name,
            size,
        } => json!({"event": "file_offer",
            "id": hex::encode(id), "from": from.to_string(), "name": name, "size": size}),
        FileEvent::Answered { id, accepted } => {
            json!({"event": "file_answered", "id": hex::encode(id), "accepted": accepted})
        }
        FileEvent::Done {
            id,
            path,
            leaves_twice,
        } => json!({"event": "file_done",
            "id": hex::encode(id), "path": path.display().to_string(), "leaves_twice": leaves_twice}),
        FileEvent::Delivered { id, leaves_sent } => json!({"event": "file_delivered",
            "id": hex::encode(id), "leaves_sent": leaves_sent}),
        FileEvent::Failed { id, reason } => {
            json!({"event": "file_failed", "id": hex::encode(id), "reason": reason})
        }
    }
}

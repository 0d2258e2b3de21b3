//! The `name_*` and `contacts_*` control requests (spec/08-names.md §6, spec/10-control.md):
//! the daemon's side of `dna name …` and `dna contacts …` (their client is `cli::names`).

use serde_json::{json, Value};

use dna_p2p::daemon::{Contact, ContactError, NamesError, NodeHandle};

fn contact_json(c: &Contact) -> Value {
    json!({"fingerprint": c.fingerprint, "name": c.name, "alias": c.alias, "added_ms": c.added_ms,
        "allow_relay": c.allow_relay})
}

fn error_json(e: &NamesError) -> Value {
    let mut v = json!({"ok": false, "error": e.to_string()});
    match e {
        NamesError::Contact(ContactError::KeyChanged {
            pinned, resolved, ..
        }) => {
            v["key_changed"] = json!(true);
            v["pinned"] = json!(pinned.to_string());
            v["resolved"] = json!(resolved.to_string());
        }
        NamesError::Taken { holder, .. } => v["holder"] = json!(holder.to_string()),
        _ => {}
    }
    v
}

/// The control socket's side: `cmd` is a `name_*` or `contacts_*` request.
pub(crate) async fn request(h: &NodeHandle, cmd: &str, req: &Value) -> Value {
    let arg = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or_default();
    let answer = match cmd {
        "name_claim" => h.name_claim(arg("name")).await.map(|c| {
            json!({"ok": true, "name": c.name, "fingerprint": h.fingerprint().to_string(),
                "claimed_at": c.claimed_at, "expiry": c.expiry, "stored_at": c.stored_at})
        }),
        "name_resolve" => h.name_resolve(arg("name")).await.map(|r| {
            json!({"ok": true, "name": r.name, "fingerprint": r.fingerprint.to_string(),
                "claimed_at": r.claimed_at, "expiry": r.expiry, "claims": r.claims})
        }),
        "contacts_add" => {
            let alias = req.get("alias").and_then(Value::as_str);
            h.contact_add(arg("target"), alias)
                .await
                .map(|(c, new)| json!({"ok": true, "new": new, "contact": contact_json(&c)}))
        }
        "contacts_list" => {
            let list: Vec<Value> = h.contacts().iter().map(contact_json).collect();
            Ok(json!({"ok": true, "contacts": list}))
        }
        "contacts_allow_relay" => {
            let allow = req.get("allow").and_then(Value::as_bool).unwrap_or(true);
            h.contact_allow_relay(arg("target"), allow)
                .await
                .map(|c| json!({"ok": true, "contact": contact_json(&c)}))
        }
        "contacts_remove" => h
            .contact_remove(arg("target"))
            .await
            .map(|c| json!({"ok": true, "removed": contact_json(&c)})),
        _ => return json!({"ok": false, "error": format!("unknown cmd {cmd:?}")}),
    };
    answer.unwrap_or_else(|e| error_json(&e))
}

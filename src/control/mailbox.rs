//! Control requests of the offline mailbox (spec/09-mailbox.md §7):
//! `{"cmd":"outbox"}` lists outgoing messages with their state (`queued`, `sent`,
//! `delivered`) and path (`mailbox`, `session`), and `"waiting":"relay-needed"` for a
//! message that only a relay the user has not allowed could carry; `{"cmd":"mailbox_fetch"}` fetches our
//! mailbox now and answers with the mailbox's counters; `{"cmd":"mailbox"}` only the
//! counters.

use serde_json::{json, Value};

use dna_p2p::daemon::{MailboxStats, NodeHandle};

/// Most messages one `outbox` answer lists (waiting ones, and as many deliveries).
const MAX_LISTED: usize = 1000;

fn stats_json(s: &MailboxStats) -> Value {
    json!({
        "items_put": s.items_put,
        "delivered": s.delivered,
        "fetched": s.fetched,
        "new": s.new,
        "duplicates": s.duplicates,
        "invalid": s.invalid,
        "receipts": s.receipts,
        "fetches": s.fetches,
        "fetch_lookups": s.fetch_lookups,
        "fetch_pages": s.fetch_pages,
    })
}

/// One mailbox request (`cmd` is `outbox`, `mailbox` or `mailbox_fetch`).
pub(crate) async fn request(h: &NodeHandle, cmd: &str, req: &Value) -> Value {
    match cmd {
        "outbox" => {
            let max = req
                .get("max")
                .and_then(Value::as_u64)
                .map_or(MAX_LISTED, |m| (m as usize).min(MAX_LISTED));
            let consent = h.relay_needed();
            let list: Vec<Value> = h
                .outbox(max)
                .await
                .iter()
                .map(|e| {
                    let mut v = json!({
                        "to": e.to.to_string(),
                        "id": hex::encode(e.id.0),
                        "state": e.state,
                        "path": e.path,
                        "at_ms": e.at_ms,
                    });
                    if let Some(n) = e.held_by {
                        v["held_by"] = json!(n);
                    }
                    if let Some(why) = e.refused {
                        v["refused"] = json!(why);
                    }
                    if e.state != "delivered" && consent.contains(&e.to) {
                        // Only a relay can carry it; the user allowed none (seed 003).
                        v["waiting"] = json!("relay-needed");
                        v["hint"] = json!(super::RELAY_HINT);
                    }
                    v
                })
                .collect();
            json!({"ok": true, "messages": list})
        }
        "mailbox_fetch" => json!({"ok": true, "mailbox": stats_json(&h.mailbox_fetch().await)}),
        _ => json!({"ok": true, "mailbox": stats_json(&h.mailbox_stats().await)}),
    }
}

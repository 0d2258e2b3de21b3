//! `dna inbox [--from C] [--requests|--all] [--follow] [--json]` and `dna outbox [--json]`
//! (issue 11 item 3): clients of the control socket (spec/10-control.md). The inbox shows
//! messages from contacts; messages from anyone else are **contact requests**, held apart
//! (`--requests`) until `dna contacts add` accepts the sender. `--from` takes a contact's
//! alias or name (from `contacts_list`) or a fingerprint (or its first hex digits) and
//! shows that sender's messages, contact or not; `--follow` keeps printing messages as
//! they arrive, through a `subscribe` stream, until Ctrl-C.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::ExitCode;

use serde_json::{json, Value};

use super::control::ask;
use crate::control::{inbox_json, path};

/// What `--from` matches: a fingerprint's hex prefix (lowercase).
fn resolve_from(dir: &Path, from: &str) -> Result<String, String> {
    let lower = from.to_ascii_lowercase();
    if lower.len() >= 8 && lower.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(lower);
    }
    let list = match ask(dir, &json!({"cmd": "contacts_list"})) {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(e),
        None => {
            return Err(format!(
                "{from:?}: a name needs the running daemon's contacts"
            ))
        }
    };
    list["contacts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["alias"] == lower.as_str() || c["name"] == lower.as_str())
        .and_then(|c| c["fingerprint"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("{from:?} is no contact (dna contacts add {from})"))
}

/// Which messages `dna inbox` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Show {
    /// From contacts (the default).
    Contacts,
    /// From everyone else: contact requests.
    Requests,
    /// Both.
    All,
}

/// Our contacts' fingerprints: from the running daemon, else from the data directory's
/// names file (spec/08-names.md §4).
fn contact_fps(dir: &Path) -> HashSet<String> {
    let list = match ask(dir, &json!({"cmd": "contacts_list"})) {
        Some(Ok(v)) => v["contacts"].clone(),
        _ => std::fs::read(dir.join(dna_p2p::daemon::NAMES_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|v| v["contacts"].clone())
            .unwrap_or(Value::Null),
    };
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["fingerprint"].as_str().map(str::to_owned))
        .collect()
}

fn print(m: &Value, json_lines: bool, at_key: &str) {
    if json_lines {
        println!("{m}");
        return;
    }
    let from = m["from"].as_str().unwrap_or_default();
    println!(
        "{}  {}…  {}",
        m[at_key],
        &from[..from.len().min(16)],
        m["text"].as_str().unwrap_or_default()
    );
}

/// `dna inbox`: the stored received messages (oldest first), from the running daemon or,
/// when none runs, straight from the store; then, with `follow`, new ones as they arrive.
pub(super) fn inbox(
    dir: &Path,
    from: Option<&str>,
    show: Show,
    follow: bool,
    json_lines: bool,
) -> ExitCode {
    let prefix = match from.map(|f| resolve_from(dir, f)).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let contacts = contact_fps(dir);
    let is_contact = |m: &Value| m["from"].as_str().is_some_and(|f| contacts.contains(f));
    let wanted = |m: &Value| match prefix.as_deref() {
        // A sender asked for by name: its messages, contact or not.
        Some(p) => m["from"].as_str().is_some_and(|f| f.starts_with(p)),
        None => match show {
            Show::Contacts => is_contact(m),
            Show::Requests => !is_contact(m),
            Show::All => true,
        },
    };
    let mark = |m: &Value| {
        let mut m = m.clone();
        m["contact"] = json!(is_contact(&m));
        m
    };
    let msgs: Vec<Value> = match ask(dir, &json!({"cmd": "inbox"})) {
        Some(Ok(v)) if v["ok"] == true => v["messages"].as_array().cloned().unwrap_or_default(),
        Some(Ok(v)) => {
            eprintln!("error: {}", v["error"]);
            return ExitCode::FAILURE;
        }
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        None if follow => {
            eprintln!("error: --follow needs the running daemon");
            return ExitCode::FAILURE;
        }
        None => match dna_p2p::daemon::read_inbox(dir) {
            Ok(m) => m.iter().map(inbox_json).collect(),
            Err(e) => {
                eprintln!("error: {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        },
    };
    for m in msgs.iter().filter(|m| wanted(m)) {
        print(&mark(m), json_lines, "received_ms");
    }
    if show == Show::Contacts && prefix.is_none() && !json_lines {
        let held: Vec<&Value> = msgs.iter().filter(|m| !is_contact(m)).collect();
        let senders: HashSet<&str> = held.iter().filter_map(|m| m["from"].as_str()).collect();
        if !held.is_empty() {
            eprintln!(
                "{} message(s) from {} sender(s) who are not contacts are held as contact \
                 requests: dna inbox --requests; dna contacts add <fingerprint> accepts one",
                held.len(),
                senders.len()
            );
        }
    }
    if !follow {
        return ExitCode::SUCCESS;
    }
    let _ = std::io::stdout().flush();
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(path(dir)) else {
        eprintln!("error: no daemon at {}", path(dir).display());
        return ExitCode::FAILURE;
    };
    if writeln!(s, "{}", json!({"cmd": "subscribe"})).is_err() {
        eprintln!("error: cannot write to the control socket");
        return ExitCode::FAILURE;
    }
    for line in BufReader::new(s).lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v["event"] == "error" {
            eprintln!("error: the daemon ended the stream: {}", v["error"]);
            return ExitCode::FAILURE;
        }
        if v["event"] == "message" && wanted(&v) {
            print(&mark(&v), json_lines, "sent_ms");
            let _ = std::io::stdout().flush();
        }
    }
    ExitCode::SUCCESS
}

/// `dna outbox`: every outgoing message with its state (`queued`, `sent`, `delivered`)
/// and path (`mailbox`, `session`), from the running daemon — or, when none runs, straight
/// from the data directory's store (waiting messages then read `queued`: whether one sits
/// in a mailbox is the running daemon's ledger).
pub(super) fn outbox(dir: &Path, json_lines: bool) -> ExitCode {
    let msgs: Vec<Value> = match ask(dir, &json!({"cmd": "outbox"})) {
        Some(Ok(v)) if v["ok"] == true => v["messages"].as_array().cloned().unwrap_or_default(),
        Some(Ok(v)) => {
            eprintln!("error: {}", v["error"]);
            return ExitCode::FAILURE;
        }
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        None => match dna_p2p::daemon::read_outbox(dir, MAX_OFFLINE) {
            Ok(list) => list
                .iter()
                .map(|e| {
                    json!({
                        "to": e.to.to_string(),
                        "id": hex::encode(e.id.0),
                        "state": e.state,
                        "path": e.path,
                        "at_ms": e.at_ms,
                    })
                })
                .collect(),
            Err(e) => {
                eprintln!("error: {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        },
    };
    for m in &msgs {
        if json_lines {
            println!("{m}");
        } else {
            let to = m["to"].as_str().unwrap_or_default();
            let state = match m["path"].as_str() {
                Some(p) => format!("{} ({p})", m["state"].as_str().unwrap_or("?")),
                None => m["state"].as_str().unwrap_or("?").to_owned(),
            };
            println!(
                "{}  {}…  {}  {state}",
                m["at_ms"],
                &to[..to.len().min(16)],
                m["id"].as_str().unwrap_or_default()
            );
        }
    }
    ExitCode::SUCCESS
}

/// Most messages `dna outbox` lists from the store of a stopped daemon (waiting ones, and
/// as many deliveries), as the running daemon's listing.
const MAX_OFFLINE: usize = 1000;

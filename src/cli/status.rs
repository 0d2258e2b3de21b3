//! The status panel (spec/10-control.md §3): `{"cmd":"status"}` on the daemon's side, and
//! `dna status [--json] [--watch]` on the client's: identity and claimed names, NAT class and
//! public addresses, DHT table and stored records, and one row per peer (name or short
//! fingerprint, path, RTT, bytes in/out, last seen).

// The client's `--watch` loop and "last seen" read the clock: this is the driver.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use dna_p2p::crypto::Fingerprint;
use dna_p2p::daemon::NodeHandle;

use super::events::Hub;

/// How often `dna status --watch` redraws.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The first 16 hex digits of a fingerprint, as the panel shows strangers.
pub(super) fn short(fp: &str) -> &str {
    &fp[..fp.len().min(16)]
}

/// `{"cmd":"status"}`: everything `dna status --json` prints.
pub(super) async fn status(h: &NodeHandle, hub: &Hub) -> Value {
    let mut v = node_status(h).await;
    let fp = h.fingerprint().to_string();
    let names: Vec<String> = h.own_names().into_iter().map(|n| n.name).collect();
    v["identity"] = json!({"fingerprint": fp, "short": short(&fp), "names": names});
    v["public"] = super::events::nat_facts(h)["public"].clone();
    v["dht"] = json!({
        "table": h.dht_table_size().await,
        "records": h.dht_records_held().await,
        "serves": h.dht_serves().await,
    });
    v["peers"] = Value::Array(peers(h, hub).await);
    v["control"] = json!({
        "subscribers": hub.subscribers(),
        "subscriber_queue": hub.queue,
        "events_published": hub.published.load(Ordering::Relaxed),
        "subscribers_dropped": hub.dropped.load(Ordering::Relaxed),
    });
    v
}

/// One row per peer with a live session, then the peers remembered but down.
async fn peers(h: &NodeHandle, hub: &Hub) -> Vec<Value> {
    let labels: HashMap<Fingerprint, String> = h
        .contacts()
        .into_iter()
        .filter_map(|c| Some((c.fp()?, c.alias.clone().or(c.name.clone())?)))
        .collect();
    let mut seen = hub.seen();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut rows: Vec<Value> = h
        .peers()
        .await
        .into_iter()
        .map(|p| {
            let s = seen.remove(&p.peer).unwrap_or_default();
            let fp = p.peer.to_string();
            json!({
                "fingerprint": fp,
                "short": short(&fp),
                "name": labels.get(&p.peer),
                "connected": true,
                "path": p.path,
                "addr": p.remote.to_string(),
                "via": p.via.map(|a| a.to_string()),
                "upgraded_to": p.upgraded_to.map(|a| a.to_string()),
                // The latest session PING/PONG, else QUIC's estimate.
                "rtt_ms": ms(s.rtt.unwrap_or(p.quic_rtt)),
                "ping_rtt_ms": s.rtt.map(ms),
                "quic_rtt_ms": ms(p.quic_rtt),
                "bytes_in": p.bytes_in,
                "bytes_out": p.bytes_out,
                "relay_bytes_in": p.relay_bytes.map(|b| b.0),
                "relay_bytes_out": p.relay_bytes.map(|b| b.1),
                "last_seen_ms": (s.last_seen_ms > 0).then_some(s.last_seen_ms),
            })
        })
        .collect();
    let mut down: Vec<_> = seen.into_iter().collect();
    down.sort_by_key(|(_, s)| std::cmp::Reverse(s.last_seen_ms));
    rows.extend(down.into_iter().map(|(peer, s)| {
        let fp = peer.to_string();
        json!({
            "fingerprint": fp,
            "short": short(&fp),
            "name": labels.get(&peer),
            "connected": false,
            "path": Value::Null,
            "rtt_ms": s.rtt.map(ms),
            "last_seen_ms": s.last_seen_ms,
        })
    }));
    rows
}

/// `dna status`: the panel once, as a table or (`json`) the whole object; `watch` redraws
/// it every second until Ctrl-C.
pub(super) fn run(dir: &Path, json: bool, watch: bool) -> ExitCode {
    loop {
        let v = match super::control::ask_ok(dir, &json!({"cmd": "status"})) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let text = if json {
            format!("{v}\n")
        } else {
            render(&v, unix_ms())
        };
        if watch {
            // Clear the screen, cursor home, then the panel.
            print!("\x1b[2J\x1b[H{text}");
        } else {
            print!("{text}");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        if !watch {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(WATCH_EVERY);
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// Bytes as the panel shows them.
pub(super) fn bytes(v: &Value) -> String {
    let Some(b) = v.as_u64() else {
        return "-".into();
    };
    match b {
        b if b < 1 << 10 => format!("{b} B"),
        b if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        b if b < 1 << 30 => format!("{:.1} MiB", b as f64 / 1048576.0),
        b => format!("{:.1} GiB", b as f64 / 1073741824.0),
    }
}

fn ago(v: &Value, now_ms: u64) -> String {
    match v.as_u64() {
        None => "-".into(),
        Some(t) => {
            let s = now_ms.saturating_sub(t) / 1000;
            match s {
                s if s < 120 => format!("{s}s ago"),
                s if s < 7200 => format!("{}m ago", s / 60),
                s => format!("{}h ago", s / 3600),
            }
        }
    }
}

/// The panel as text.
pub(super) fn render(v: &Value, now_ms: u64) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let id = &v["identity"];
    let names: Vec<String> = id["names"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    let _ = writeln!(o, "node      {}", s(&id["fingerprint"]));
    let _ = writeln!(
        o,
        "names     {}",
        if names.is_empty() {
            "-".into()
        } else {
            names.join(", ")
        }
    );
    let public: Vec<String> = v["public"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    let _ = writeln!(
        o,
        "nat       {}  reachable: {}  public: {}",
        s(&v["nat"]),
        if v["reachable"] == true { "yes" } else { "no" },
        if public.is_empty() {
            "-".into()
        } else {
            public.join(" ")
        }
    );
    let _ = writeln!(
        o,
        "listen    {}  rendezvous: {}  relay policy: {}",
        s(&v["addr"]),
        v["rendezvous"].as_array().map_or(0, Vec::len),
        s(&v["relay"]["policy"])
    );
    let _ = writeln!(
        o,
        "dht       table {}  records {}",
        s(&v["dht"]["table"]),
        s(&v["dht"]["records"])
    );
    let _ = writeln!(
        o,
        "outbox    {} waiting  connections {}",
        s(&v["limits"]["outbox"]["messages"]),
        s(&v["connections"])
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<18} {:<7} {:>9} {:>10} {:>10}  LAST SEEN",
        "PEER", "PATH", "RTT", "IN", "OUT"
    );
    for p in v["peers"].as_array().into_iter().flatten() {
        let who = p["name"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| s(&p["short"]));
        let rtt = p["rtt_ms"]
            .as_f64()
            .map_or("-".into(), |r| format!("{r:.1} ms"));
        let path = if p["connected"] == true {
            s(&p["path"])
        } else {
            "down".into()
        };
        let _ = writeln!(
            o,
            "{:<18} {:<7} {:>9} {:>10} {:>10}  {}",
            who,
            path,
            rtt,
            bytes(&p["bytes_in"]),
            bytes(&p["bytes_out"]),
            ago(&p["last_seen_ms"], now_ms)
        );
    }
    o
}

/// `{"cmd":"status"}`: who we are, NAT facts, connections and the message store.
async fn node_status(h: &NodeHandle) -> Value {
    let st = h.nat_status();
    json!({
        "ok": true,
        "fp": h.fingerprint().to_string(),
        "addr": h.local_addr().to_string(),
        "nat": st.class.map(|c| c.name()),
        "mapping": st.class.map(|c| format!("{:?}", c.mapping)),
        "filtering": st.class.map(|c| format!("{:?}", c.filtering)),
        "port_preserved": st.class.map(|c| c.port_preserved),
        "sequential": st.class.map(|c| c.sequential),
        "reachable": st.presence().reachable,
        "candidates": st.candidates.iter().map(|c| json!({"kind": c.kind.name(), "addr": c.addr.to_string()})).collect::<Vec<_>>(),
        "rendezvous": st.rendezvous.iter().map(|(a, _)| a.to_string()).collect::<Vec<_>>(),
        "connections": h.connection_count(),
        "pending_peers": h.pending_peers().await.len(),
        "retry": h.retry_stats().map(|r| json!({
            "waiting": r.waiting,
            "running": r.running,
            "started": r.started,
            "heard": r.heard,
        })),
        "relay_needed": h.relay_needed().iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "rendezvous_role": h.rendezvous_stats().await,
        "turn": turn_status(h),
        "relay": h.relay_status(),
        "prediction": h.prediction_status(),
        "limits": limits(h).await,
    })
}

/// The TURN allocation, if the node keeps one.
fn turn_status(h: &NodeHandle) -> Value {
    let t = h.turn_status();
    match t.server {
        None => Value::Null,
        Some(server) => json!({
            "server": server.to_string(),
            "servers": h.config().turn_server.into_iter().chain(h.config().turn_fallbacks.iter().copied()).map(|a| a.to_string()).collect::<Vec<_>>(),
            "state": t.state,
            "transport": t.transport,
            "relayed": t.relayed.map(|a| a.to_string()),
            "mapped": t.mapped.map(|a| a.to_string()),
            "error": t.error,
            "allocations": t.stats.allocations,
            "requests": t.stats.requests,
            "retransmits": t.stats.retransmits,
        }),
    }
}

/// Every bounded table with its fill and its limit (spec/06-node.md §4).
async fn limits(h: &NodeHandle) -> Value {
    let cfg = h.config();
    let (peers, evicted) = h.peer_table().await;
    let dht = h.dht_stats().await;
    let dht_cfg = cfg.dht.as_ref().map(|d| d.config.store).unwrap_or_default();
    let stun = h.stun_stats();
    let ts = h.transport_stats().await;
    let outbox = h.outbox_len().await;
    json!({
        "connections": {"live": h.connection_count(), "max": cfg.max_connections},
        "peers": {"entries": peers, "max": cfg.max_peers, "evicted": evicted},
        "outbox": {"messages": outbox},
        "events": {"max": cfg.event_queue, "max_bytes": cfg.event_queue_bytes},
        "writer": {"high_water_bytes": cfg.write_high_water},
        "relay": {
            "relayed_in": h.socket_stats().relayed_in.load(std::sync::atomic::Ordering::Relaxed),
            "relayed_out": h.socket_stats().relayed_out.load(std::sync::atomic::Ordering::Relaxed),
            "max_peers": cfg.relay.max_peers,
            "inject_queue": cfg.relay.inject_queue,
            "turn_permit_queue": cfg.turn_permit_queue,
        },
        "transport": {
            "write_queued": ts.write_queued,
            "write_queued_peak": ts.write_queued_peak,
            "scored_sources": ts.scored_sources,
            "max_scored_sources": cfg.max_scored_sources,
        },
        "dht": {
            "responders": dht.responders,
            "waiters": dht.waiters,
            "connections": dht.connections,
            "records": dht.store.records,
            "bytes": dht.store.bytes,
            "max_bytes": dht_cfg.max_bytes,
            "per_network_bytes": dht_cfg.per_network_bytes,
            "per_source_bytes": dht_cfg.per_source_bytes,
            "per_publisher_bytes": dht_cfg.per_publisher_bytes,
            "refused": dht.store.refused,
            "evicted": dht.store.evicted,
            "mailbox_items": dht.store.mailbox_items,
            "mailbox_store": dht_cfg.mailbox,
            "mailbox_per_sender": dht_cfg.mailbox_per_sender,
            "mailbox_per_key": dht_cfg.mailbox_per_key,
            "mailbox_per_network": dht_cfg.mailbox_per_network,
            "mailbox_evicted": dht.store.mailbox_evicted,
        },
        "stun": {
            "answered": stun.answered,
            "answered_bytes": stun.answered_bytes,
            "rate_limited": stun.rate_limited,
            "over_budget": stun.over_budget,
            "malformed": stun.malformed,
            "oversize": stun.oversize,
            "changed": stun.changed,
            "dropped": stun.dropped,
            "rfc5780": cfg.discovery_server.is_some(),
            "burst": cfg.stun_responder.burst,
            "per_second": cfg.stun_responder.per_second,
            "max_sources": cfg.stun_responder.max_sources,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_contacts_and_shows_path_rtt_bytes() {
        let v = json!({
            "identity": {"fingerprint": "ab".repeat(32), "names": ["alice"]},
            "nat": "full-cone", "reachable": true, "public": ["192.0.2.1:4000"],
            "addr": "127.0.0.1:1", "rendezvous": [], "relay": {"policy": "auto"},
            "dht": {"table": 3, "records": 7}, "limits": {"outbox": {"messages": 0}},
            "connections": 2,
            "peers": [
                {"name": "bob", "short": "cd", "connected": true, "path": "relay",
                 "rtt_ms": 1.5, "bytes_in": 2048, "bytes_out": 10, "last_seen_ms": 9_000},
                {"name": null, "short": "ef01", "connected": false, "rtt_ms": null,
                 "last_seen_ms": 1_000},
            ],
        });
        let t = render(&v, 10_000);
        println!("{t}");
        assert!(t.contains("names     alice"));
        assert!(t.contains("table 3  records 7"));
        let bob = t.lines().find(|l| l.starts_with("bob")).unwrap();
        assert!(bob.contains("relay") && bob.contains("1.5 ms"));
        assert!(bob.contains("2.0 KiB") && bob.contains("10 B") && bob.contains("1s ago"));
        let down = t.lines().find(|l| l.starts_with("ef01")).unwrap();
        assert!(down.contains("down") && down.contains("9s ago"));
    }
}

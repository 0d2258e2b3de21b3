//! `{"cmd":"status"}`, the daemon's side of the status panel (spec/10-control.md §3):
//! identity and claimed names, NAT class and public addresses, DHT table and stored
//! records, one row per peer (name or short fingerprint, path, RTT, bytes in/out, last
//! seen) and every bounded table with its fill and limit. The panel is `cli::status`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use dna_p2p::crypto::Fingerprint;
use dna_p2p::daemon::NodeHandle;

use super::events::Hub;

/// The first 16 hex digits of a fingerprint, as the panel shows strangers.
pub(crate) fn short(fp: &str) -> &str {
    &fp[..fp.len().min(16)]
}

/// `{"cmd":"status"}`: everything `dna status --json` prints.
pub(crate) async fn status(h: &NodeHandle, hub: &Hub) -> Value {
    let mut v = node_status(h).await;
    let fp = h.fingerprint().to_string();
    let names: Vec<String> = h.own_names().into_iter().map(|n| n.name).collect();
    v["identity"] = json!({"fingerprint": fp, "short": short(&fp), "names": names});
    v["public"] = super::nat_facts(h)["public"].clone();
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

//! Step 4: carol goes offline, alice and bob write to her, carol comes back and the
//! messages arrive. Today they arrive from the senders' durable outboxes (spec/06-node.md
//! §3); when the DHT offline mailbox lands (issue 11 item 4), only [`Devnet::offline_delivery`]
//! changes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{
    daemon_config, fail, is_message, Devnet, Event, Failed, Sent, Step, DELIVERY, READY, STOP_GRACE,
};

/// A `peer_up` event's path (`Direct(ADDR)`) as a path name: a relay token is `relay`.
fn path_of_peer_up(e: &Value) -> &'static str {
    let p = e["path"].as_str().unwrap_or_default();
    let addr = p
        .strip_prefix("Direct(")
        .and_then(|s| s.strip_suffix(')'))
        .and_then(|s| s.parse::<SocketAddr>().ok());
    match addr {
        Some(a) if dna_p2p::transport::is_token(a) => "relay",
        Some(_) => "direct",
        None => "unknown",
    }
}

impl Devnet<'_> {
    /// Step 4: carol stops; alice and bob send to her; carol starts again with the same data
    /// directory; the messages arrive.
    pub(super) fn offline(&mut self) -> Result<(), Failed> {
        let step = "carol goes offline";
        let t0 = Instant::now();
        let carol_fp = self.fp("carol");
        let mark = self.alice.mark();
        let clean = self.carol.stop(STOP_GRACE);
        // Alice had a session with carol: her node notices it end.
        let noticed = self.alice.wait_after(mark, Duration::from_secs(10), |evs| {
            evs.iter()
                .any(|e| e.json["event"] == "peer_down" && e.json["peer"] == carol_fp.as_str())
        });
        let how = if clean {
            "carol's daemon stopped (SIGINT)"
        } else {
            "carol's daemon ignored SIGINT and was killed after 5 s"
        };
        let seen = if noticed {
            "; alice saw the session end"
        } else {
            "; alice has not noticed yet (her session to carol ends at its idle timeout)"
        };
        self.report.ok(&Step::new(step, "-", t0.elapsed())
            .detail(format!("{how}{seen}"))
            .extra(json!({"sigint": clean, "peer_down_seen": noticed})));

        let mut pending = Vec::new();
        for from in ["alice", "bob"] {
            let step = format!("{from} → carol (offline)");
            let text = format!("hello carol, {from} wrote while you were away");
            let t0 = Instant::now();
            let (ans, id) = self.send(from, "carol", &text).map_err(fail(&step))?;
            let path = ans["path"].as_str().unwrap_or("?").to_string();
            self.report.ok(&Step::new(&step, &path, t0.elapsed())
                .detail(format!(
                    "stored in {from}'s outbox{}",
                    if ans["queued"] == true {
                        ", waiting for carol"
                    } else {
                        ""
                    }
                ))
                .extra(json!({"from": from, "to": "carol", "id": id, "answer": ans})));
            pending.push((from, id));
        }

        let step = "carol back online";
        let marks: Vec<(&'static str, usize)> = pending
            .iter()
            .map(|(from, _)| (*from, self.node(from).mark()))
            .collect();
        let t0 = Instant::now();
        let old_port = self.carol_port;
        let mut cursor = old_port;
        let seeds = self.seeds.clone();
        let (carol, port) = self
            .net
            .start_free(
                &mut cursor,
                "carol",
                "daemon",
                &|p| daemon_config(p, &seeds, true),
                READY,
            )
            .map_err(fail(step))?;
        self.carol = carol;
        self.carol_port = port;
        if self.carol.ready("fp") != carol_fp {
            return Err((step.into(), "carol came back with another identity".into()));
        }
        let moved = if self.carol_port == old_port {
            String::new()
        } else {
            format!(" (on UDP {}: {old_port} was taken)", self.carol_port)
        };
        self.report
            .ok(&Step::new(step, "-", t0.elapsed()).detail(format!(
                "restarted with the same data directory and identity{moved}"
            )));
        let arrived = self.offline_delivery(&pending, &marks)?;
        self.report.ok(&arrived);
        Ok(())
    }

    /// How the messages sent while carol was offline reach her once she is back: waits
    /// for them in carol's events and says which way they came.
    ///
    /// Today they come from the senders' durable outboxes: each sender's daemon retries
    /// every `retry_secs` and delivers over a fresh session once carol is reachable again;
    /// the path is that session's (its `peer_up` event: a relay token means `relay`).
    ///
    /// When the DHT offline mailbox lands (issue 11 item 4, branch `mailbox`), this is the
    /// one function to change: take the path from where carol's inbox says the message came
    /// from (or the sender's outbox entry reading `delivered (mailbox)`), print `mailbox`
    /// and add those messages to `self.mailbox` (the RESULT line's `mailbox=`).
    fn offline_delivery(
        &mut self,
        pending: &[(&'static str, String)],
        marks: &[(&'static str, usize)],
    ) -> Result<Step, Failed> {
        let step = format!("carol receives {} waiting", pending.len());
        let f = fail(&step);
        let t0 = Instant::now();
        let all = self.carol.wait_after(0, DELIVERY, |evs| {
            pending
                .iter()
                .all(|(_, id)| evs.iter().any(|e| is_message(e, id)))
        });
        let evs = self.carol.events_since(0);
        let got = pending
            .iter()
            .filter(|(_, id)| evs.iter().any(|e| is_message(e, id)))
            .count();
        if !all {
            return Err(f(format!(
                "{got} of {} arrived within {} s; carol's log: {}",
                pending.len(),
                DELIVERY.as_secs(),
                self.carol.stderr_tail()
            )));
        }
        let last = pending
            .iter()
            .filter_map(|(_, id)| evs.iter().find(|e| is_message(e, id)).map(|e| e.at))
            .max()
            .unwrap_or(t0);
        // The path of each sender's new session to carol.
        let carol_fp = self.fp("carol");
        let (mut paths, mut kinds) = (Vec::new(), Vec::new());
        for (from, mark) in marks {
            // Its `peer_up` line may be read a moment after carol's `message` line.
            let is_up =
                |e: &Event| e.json["event"] == "peer_up" && e.json["peer"] == carol_fp.as_str();
            let sender = self.node(from);
            sender.wait_after(*mark, Duration::from_secs(5), |evs| evs.iter().any(is_up));
            let up = sender.events_since(*mark).into_iter().find(is_up);
            let path = up.map_or("unknown", |e| path_of_peer_up(&e.json));
            paths.push(format!("{from}: {path}"));
            kinds.push(path);
        }
        for (_, id) in pending {
            self.sent.push(Sent {
                to: "carol",
                id: id.clone(),
            });
        }
        kinds.dedup();
        let path = format!("outbox+{}", kinds.join("/"));
        Ok(Step::new(&step, path, last.saturating_duration_since(t0))
            .detail(format!(
                "{got} of {} arrived, retried from the senders' outboxes over new sessions \
                 ({}); not yet from the DHT mailbox",
                pending.len(),
                paths.join(", ")
            ))
            .extra(json!({"arrived": got, "from": "outbox", "session_paths": paths})))
    }
}

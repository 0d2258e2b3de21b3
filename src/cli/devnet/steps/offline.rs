//! Step 4: carol goes offline, alice and bob write to her, the messages go to carol's
//! DHT mailbox (spec/09-mailbox.md; the bootstrap nodes hold it in devnet), carol comes
//! back, fetches her mailbox and the messages arrive; her receipt marks them delivered
//! (mailbox) in the senders' outboxes. A message the sender's outbox delivers over a new
//! session first is counted that way instead: each path is reported as it happened.

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
        Some(a) if dna_p2p::transport::is_relay_token(a) => "relay",
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
        // The senders' mailbox tasks put the messages in carol's mailbox (after 1 s).
        let step = "in carol's DHT mailbox";
        let t0 = Instant::now();
        for (from, id) in &pending {
            let sent =
                wait_outbox(self.node(from), id, |e| e["state"] == "sent").map_err(fail(step))?;
            if !sent {
                return Err((
                    step.into(),
                    format!("{from}'s message {id} was not put in carol's mailbox within 20 s"),
                ));
            }
        }
        self.report
            .ok(&Step::new(step, "mailbox", t0.elapsed()).detail(
                "alice's and bob's messages sealed to carol and stored at the bootstrap nodes",
            ));

        let step = "carol back online";
        let marks: Vec<(&'static str, usize)> = pending
            .iter()
            .map(|(from, _)| (*from, self.node(from).mark()))
            .collect();
        let t0 = Instant::now();
        let restarted = t0;
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
        // Carol fetches her mailbox as soon as she is up (as the daemon does at start).
        self.carol
            .control(&json!({"cmd": "mailbox_fetch"}))
            .map_err(fail("carol fetches her mailbox"))?;
        let arrived = self.offline_delivery(&pending, &marks, restarted)?;
        self.report.ok(&arrived);
        Ok(())
    }

    /// How the messages sent while carol was offline reach her once she is back: waits
    /// for them in carol's events and says which way they came: from her mailbox (her
    /// mailbox counters' `new`, and the senders' outbox entries turning `delivered` via
    /// `mailbox` once her receipt is read), or over a new session from a sender's outbox
    /// (its `peer_up`: a relay token means `relay`) when that came first.
    fn offline_delivery(
        &mut self,
        pending: &[(&'static str, String)],
        marks: &[(&'static str, usize)],
        restarted: Instant,
    ) -> Result<Step, Failed> {
        let step = format!("carol receives {} waiting", pending.len());
        let f = fail(&step);
        // Times count from carol's restart (she fetches her mailbox before she is ready).
        let t0 = restarted;
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
        let from_mailbox = self
            .carol
            .control(&json!({"cmd": "mailbox"}))
            .ok()
            .and_then(|v| v["mailbox"]["new"].as_u64())
            .unwrap_or(0) as usize;
        if from_mailbox >= pending.len() {
            // Carol's receipt reaches the senders: their outboxes say delivered (mailbox).
            let mut receipted = 0;
            for (from, id) in pending {
                if wait_outbox(self.node(from), id, |e| {
                    e["state"] == "delivered" && e["path"] == "mailbox"
                })
                .unwrap_or(false)
                {
                    receipted += 1;
                }
            }
            for (_, id) in pending {
                self.sent.push(Sent {
                    to: "carol",
                    id: id.clone(),
                });
            }
            self.mailbox += from_mailbox;
            return Ok(
                Step::new(&step, "mailbox", last.saturating_duration_since(t0))
                    .detail(format!(
                        "{got} of {} fetched from carol's DHT mailbox, verified, stored once; her \
                     receipt marked {receipted} of {} delivered (mailbox) in the senders' outboxes",
                        pending.len(),
                        pending.len()
                    ))
                    .extra(json!({"arrived": got, "from": "mailbox", "receipted": receipted})),
            );
        }
        self.mailbox += from_mailbox;
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
        let path = match from_mailbox {
            0 => format!("outbox+{}", kinds.join("/")),
            _ => format!("mailbox+outbox+{}", kinds.join("/")),
        };
        Ok(Step::new(&step, path, last.saturating_duration_since(t0))
            .detail(format!(
                "{got} of {} arrived, {from_mailbox} from carol's DHT mailbox, the others \
                 retried from the senders' outboxes over new sessions ({})",
                pending.len(),
                paths.join(", ")
            ))
            .extra(json!({"arrived": got, "from": "outbox", "session_paths": paths})))
    }
}

/// Waits up to 20 s for `node`'s outbox entry `id` to satisfy `pred`.
fn wait_outbox(
    node: &super::super::procs::Proc,
    id: &str,
    pred: impl Fn(&Value) -> bool,
) -> Result<bool, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = node.control(&json!({"cmd": "outbox"}))?;
        let hit = v["messages"]
            .as_array()
            .is_some_and(|l| l.iter().any(|e| e["id"] == id && pred(e)));
        if hit {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

//! Step 4: carol goes offline, alice and bob write to her, the messages go to carol's
//! DHT mailbox (spec/09-mailbox.md; the bootstrap nodes hold it in devnet), carol comes
//! back, fetches her mailbox and the messages arrive; her receipt marks them delivered
//! (mailbox) in the senders' outboxes. The step fails unless every message came from the
//! mailbox and every receipt was read (`dna devnet --no-mailbox-storage` shows it fail).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{
    daemon_config, fail, is_message, Devnet, Failed, Sent, Step, DELIVERY, READY, STOP_GRACE,
};

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
        let t0 = Instant::now();
        let restarted = t0;
        let old_port = self.carol_port;
        let mut cursor = old_port;
        let seeds = self.seeds.clone();
        let store = self.store;
        let (carol, port) = self
            .net
            .start_free(
                &mut cursor,
                "carol",
                "daemon",
                &|p| daemon_config(p, &seeds, true, store),
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
        let arrived = self.offline_delivery(&pending, restarted)?;
        self.report.ok(&arrived);
        Ok(())
    }

    /// The messages sent while carol was offline reach her from her mailbox once she is
    /// back: waits for them in carol's events, then requires that her mailbox counters'
    /// `new` covers them all and that every sender's outbox entry turned `delivered` via
    /// `mailbox` when her receipt was read.
    fn offline_delivery(
        &mut self,
        pending: &[(&'static str, String)],
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
        // Carol's receipt reaches the senders: their outboxes say delivered (mailbox).
        let mut receipted = 0;
        for (from, id) in pending {
            if wait_outbox(self.node(from), id, |e| {
                e["state"] == "delivered" && e["path"] == "mailbox"
            })
            .map_err(&f)?
            {
                receipted += 1;
            }
        }
        // The step claims the mailbox: every message came from it and every receipt was
        // read, or it fails (a message the senders' outboxes delivered over a new session
        // would show the mailbox did nothing).
        if from_mailbox < pending.len() || receipted < pending.len() {
            return Err(f(format!(
                "{got} of {} arrived, but {from_mailbox} came from carol's DHT mailbox and \
                 {receipted} were marked delivered (mailbox) by her receipt",
                pending.len()
            )));
        }
        // (Carol's mailbox may hold more than these: the contact drops alice and bob
        // handed her while she was away, spec/09 §1.1. The count is of the messages.)
        self.mailbox += pending.len();
        for (_, id) in pending {
            self.sent.push(Sent {
                to: "carol",
                id: id.clone(),
            });
        }
        Ok(
            Step::new(&step, "mailbox", last.saturating_duration_since(t0))
                .detail(format!(
                    "{got} of {} fetched from carol's DHT mailbox, verified, stored once; her \
                     receipt marked {receipted} of {} delivered (mailbox) in the senders' outboxes",
                    pending.len(),
                    pending.len()
                ))
                .extra(json!({"arrived": got, "from": "mailbox", "receipted": receipted})),
        )
    }
}

/// Waits up to 20 s for `node`'s outbox entry `id` to satisfy `pred`.
pub(super) fn wait_outbox(
    node: &super::super::procs::Proc,
    id: &str,
    mut pred: impl FnMut(&Value) -> bool,
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

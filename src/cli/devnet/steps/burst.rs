//! Step 5, a burst of 1,000 messages alice → bob counted at bob, and the final audit of
//! every recipient's stored inbox (the RESULT line).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{fail, human, Devnet, Event, Failed, Sent, Step, BURST, DELIVERY};

impl Devnet<'_> {
    /// Step 5: 1,000 messages alice → bob on one control connection, counted at bob: all
    /// arrive, exactly once, in order.
    pub(super) fn burst(&mut self) -> Result<(), Failed> {
        let step = format!("burst alice → bob ×{BURST}");
        let f = fail(&step);
        let mark = self.bob.mark();
        let reqs: Vec<Value> = (0..BURST)
            .map(|i| json!({"cmd": "send", "to": "bob", "text": format!("burst {i:04}")}))
            .collect();
        let t0 = Instant::now();
        let answers = self.alice.control_pipelined(reqs).map_err(&f)?;
        let mut ids = Vec::with_capacity(BURST);
        let mut paths: HashMap<String, usize> = HashMap::new();
        for a in &answers {
            match a["id"].as_str() {
                Some(id) if a["ok"] == true => ids.push(id.to_string()),
                _ => return Err(f(format!("alice's daemon refused a send: {a}"))),
            }
            *paths
                .entry(a["path"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
        let queued = t0.elapsed();
        let index: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let seen = |evs: &[Event]| {
            evs.iter()
                .filter(|e| {
                    e.json["event"] == "message"
                        && e.json["id"].as_str().is_some_and(|i| index.contains_key(i))
                })
                .count()
        };
        self.bob
            .wait_after(mark, DELIVERY * 2, |evs| seen(evs) >= BURST);
        let evs = self.bob.events_since(mark);
        let order: Vec<(usize, Instant)> = evs
            .iter()
            .filter(|e| e.json["event"] == "message")
            .filter_map(|e| Some((*index.get(e.json["id"].as_str()?)?, e.at)))
            .collect();
        let mut count = vec![0usize; BURST];
        for (i, _) in &order {
            count[*i] += 1;
        }
        let missing = count.iter().filter(|c| **c == 0).count();
        let doubled: usize = count.iter().map(|c| c.saturating_sub(1)).sum();
        let in_order = order.windows(2).all(|w| w[0].0 < w[1].0);
        if missing > 0 || doubled > 0 || !in_order {
            return Err(f(format!(
                "at bob: {} of {BURST} arrived, {missing} missing, {doubled} duplicated, in \
                 order: {in_order}; bob's log: {}",
                BURST - missing,
                self.bob.stderr_tail()
            )));
        }
        let took = order
            .last()
            .map_or(Duration::ZERO, |(_, at)| at.saturating_duration_since(t0));
        let rate = BURST as f64 / took.as_secs_f64().max(1e-6);
        let mut by_path: Vec<(String, usize)> = paths.into_iter().collect();
        by_path.sort_by_key(|p| std::cmp::Reverse(p.1));
        let path = by_path.first().map_or("?".to_string(), |p| p.0.clone());
        for id in ids {
            self.sent.push(Sent { to: "bob", id });
        }
        self.report.ok(&Step::new(&step, path, took)
            .detail(format!(
                "{BURST} of {BURST} counted at bob, exactly once, in order; {rate:.0} msg/s \
                     (all stored in alice's outbox after {})",
                human(queued)
            ))
            .extra(json!({"count": BURST, "msgs_per_s": rate.round(),
                    "queued_ms": queued.as_millis() as u64, "paths": by_path})));
        Ok(())
    }

    /// The audit: every message sent, looked up in its recipient's stored inbox.
    pub(super) fn result(&self) -> Result<(), Failed> {
        let mut stored: HashMap<&str, HashMap<String, usize>> = HashMap::new();
        for n in ["alice", "bob", "carol"] {
            let v = self
                .node(n)
                .control(&json!({"cmd": "inbox"}))
                .map_err(fail("audit"))?;
            let mut ids = HashMap::new();
            for m in v["messages"].as_array().into_iter().flatten() {
                *ids.entry(m["id"].as_str().unwrap_or_default().to_string())
                    .or_default() += 1;
            }
            stored.insert(n, ids);
        }
        let (mut delivered, mut lost, mut duplicated) = (0, 0, 0);
        for s in &self.sent {
            match stored.get(s.to).and_then(|m| m.get(&s.id)).copied() {
                None | Some(0) => lost += 1,
                Some(c) => {
                    delivered += 1;
                    duplicated += c - 1;
                }
            }
        }
        let ok = lost == 0 && duplicated == 0;
        let verdict = if ok { "ok" } else { "failed" };
        self.report.line(
            &format!(
                "RESULT devnet={verdict} delivered={delivered} lost={lost} \
                 duplicated={duplicated} mailbox={}",
                self.mailbox
            ),
            json!({"result": verdict, "delivered": delivered, "lost": lost,
                "duplicated": duplicated, "mailbox": self.mailbox}),
        );
        if ok {
            Ok(())
        } else {
            Err((
                "audit".into(),
                format!("{lost} lost and {duplicated} duplicated in the stored inboxes"),
            ))
        }
    }
}

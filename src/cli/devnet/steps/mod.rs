//! The devnet's steps, in order: the network comes up; names and contacts; alice ↔ bob by
//! name; alice ↔ carol and carol → bob through a bootstrap node's bundled relay (carol has
//! `relay = "only"`); carol offline, messages to her, carol back (`offline`); a burst of
//! 1,000 messages and an audit of every recipient's stored inbox: delivered, lost,
//! duplicated (`burst`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::procs::{Event, Net, Proc};
use super::{human, Report, Step};

mod burst;
mod offline;

/// How long a node may take to print `ready`.
const READY: Duration = Duration::from_secs(60);
/// How long a message may take to arrive.
const DELIVERY: Duration = Duration::from_secs(60);
/// How long a node may take to stop after SIGINT before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The burst's size.
const BURST: usize = 1000;

/// A bootstrap node's config: loopback only; `store`: it holds offline mailboxes.
fn bootstrap_config(port: u16, seeds: &[String], store: bool) -> String {
    format!(
        "# dna devnet: a bootstrap node (DHT server, STUN, rendezvous, bundled relay) on loopback.\n\
         listen = \"127.0.0.1:{port}\"\n\
         bootstrap = {seeds:?}\n\
         # a small deployment: the bootstrap nodes hold offline mailboxes too\n\
         [mailbox]\n\
         store = {store}\n"
    )
}

/// A messenger node's config: loopback only, and intervals much shorter than a real node's
/// (refresh 120 s, retry 5 s) so the demo is quick.
fn daemon_config(port: u16, seeds: &[String], relay_only: bool, store: bool) -> String {
    let mut c = format!(
        "# dna devnet: a messenger node on loopback (embedded defaults, short intervals).\n\
         listen = \"127.0.0.1:{port}\"\n\
         bootstrap = {seeds:?}\n\
         refresh_secs = 10\n\
         network_check_secs = 5\n\
         retry_secs = 1\n\
         keep_alive_secs = 5\n"
    );
    if relay_only {
        c.push_str(
            "# never a direct path: always through a bootstrap node's relay\nrelay = \"only\"\n",
        );
    }
    c.push_str(
        "# a message waiting 1 s without a connection goes to the recipient's DHT mailbox\n\
         [mailbox]\n\
         after_secs = 1\n",
    );
    if !store {
        c.push_str("# --no-mailbox-storage: hold no one's mailbox items\nstore = false\n");
    }
    c
}

/// A message sent, for the final audit of the recipients' inboxes.
struct Sent {
    to: &'static str,
    id: String,
}

/// The running network.
struct Devnet<'a> {
    net: &'a Net,
    report: &'a Report,
    boots: Vec<Proc>,
    alice: Proc,
    bob: Proc,
    carol: Proc,
    /// Carol's port (she comes back on it if it is still free) and the bootstrap seeds.
    carol_port: u16,
    seeds: Vec<String>,
    fps: HashMap<&'static str, String>,
    sent: Vec<Sent>,
    /// Messages observed arriving from the DHT mailbox.
    mailbox: usize,
    /// Whether nodes hold mailbox items (`--no-mailbox-storage` turns it off).
    store: bool,
}

type Failed = (String, String);

/// Runs every step; the first failure is returned as (step, what failed).
pub(super) fn run_all(
    net: &Net,
    report: &Report,
    base_port: u16,
    keep: bool,
    store: bool,
) -> Result<(), Failed> {
    let mut d = up(net, report, base_port, store)?;
    d.names()?;
    d.message("alice", "bob", None)?;
    d.message("bob", "alice", None)?;
    // Daemons use a relay only with the user's consent (`relay = "ask"`, seed 003).
    d.relay_consent()?;
    d.message("carol", "alice", Some("relay"))?;
    // Carol calls someone new: the relay-only side is the caller this time.
    d.message("carol", "bob", Some("relay"))?;
    d.offline()?;
    d.burst()?;
    d.result()?;
    if keep {
        d.keep();
    }
    Ok(())
}

fn fail(step: &str) -> impl Fn(String) -> Failed + '_ {
    move |e| (step.to_string(), e)
}

/// Starts the two bootstrap nodes, then the three daemons, each waiting for its `ready`
/// line.
fn up<'a>(
    net: &'a Net,
    report: &'a Report,
    base_port: u16,
    store: bool,
) -> Result<Devnet<'a>, Failed> {
    let step = "network up";
    let f = fail(step);
    let t0 = Instant::now();
    let mut cursor = base_port;
    let seed = |p: &Proc| format!("{}@{}", p.ready("addr"), p.ready("fp"));
    let (boot1, p1) = net
        .start_free(
            &mut cursor,
            "boot1",
            "bootstrap",
            &|p| bootstrap_config(p, &[], store),
            READY,
        )
        .map_err(&f)?;
    let seeds1 = [seed(&boot1)];
    let (boot2, p2) = net
        .start_free(
            &mut cursor,
            "boot2",
            "bootstrap",
            &|p| bootstrap_config(p, &seeds1, store),
            READY,
        )
        .map_err(&f)?;
    let seeds = vec![seed(&boot1), seed(&boot2)];
    let mut daemon = |name: &str, relay_only: bool| {
        net.start_free(
            &mut cursor,
            name,
            "daemon",
            &|p| daemon_config(p, &seeds, relay_only, store),
            READY,
        )
        .map_err(&f)
    };
    let (alice, p3) = daemon("alice", false)?;
    let (bob, p4) = daemon("bob", false)?;
    let (carol, carol_port) = daemon("carol", true)?;
    let ports = [p1, p2, p3, p4, carol_port];
    let fps = HashMap::from([
        ("alice", alice.ready("fp")),
        ("bob", bob.ready("fp")),
        ("carol", carol.ready("fp")),
    ]);
    let addrs: Vec<String> = [&boot1, &boot2, &alice, &bob, &carol]
        .iter()
        .map(|p| format!("{} {}", p.name, p.ready("addr")))
        .collect();
    report.ok(&Step::new(step, "loopback", t0.elapsed())
        .detail(format!(
            "2 bootstrap + 3 daemons on 127.0.0.1, UDP {}; carol: relay = \"only\"",
            port_list(&ports)
        ))
        .extra(json!({"dir": net.root().display().to_string(), "nodes": addrs})));
    Ok(Devnet {
        net,
        report,
        boots: vec![boot1, boot2],
        alice,
        bob,
        carol,
        carol_port,
        seeds,
        fps,
        sent: Vec::new(),
        mailbox: 0,
        store,
    })
}

/// `47000-47004`, or `47000, 47002, …` when some were taken.
fn port_list(ports: &[u16]) -> String {
    match (ports.first(), ports.last()) {
        (Some(a), Some(b)) if usize::from(b - a) + 1 == ports.len() => format!("{a}-{b}"),
        _ => ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn is_message(e: &Event, id: &str) -> bool {
    e.json["event"] == "message" && e.json["id"] == id
}

impl Devnet<'_> {
    fn node(&self, name: &str) -> &Proc {
        match name {
            "alice" => &self.alice,
            "bob" => &self.bob,
            _ => &self.carol,
        }
    }

    fn fp(&self, name: &str) -> String {
        self.fps.get(name).cloned().unwrap_or_default()
    }

    /// `send` on `from`'s control socket, to a contact by name: (the answer, the message ID).
    fn send(&self, from: &str, to: &str, text: &str) -> Result<(Value, String), String> {
        let v = self
            .node(from)
            .control(&json!({"cmd": "send", "to": to, "text": text}))?;
        match v["id"].as_str() {
            Some(id) if v["ok"] == true => Ok((v.clone(), id.to_string())),
            _ => Err(format!("{from}'s daemon refused the send: {v}")),
        }
    }

    /// Step 1: every node claims its name, then adds the two others by name.
    fn names(&mut self) -> Result<(), Failed> {
        let names = ["alice", "bob", "carol"];
        let step = "names claimed";
        let t0 = Instant::now();
        let mut stored = Vec::new();
        for n in names {
            let v = self
                .node(n)
                .control(&json!({"cmd": "name_claim", "name": n}))
                .map_err(fail(step))?;
            if v["ok"] != true || v["fingerprint"] != self.fp(n).as_str() {
                return Err((step.into(), format!("{n}: name_claim answered {v}")));
            }
            stored.push(v["stored_at"].as_u64().unwrap_or(0));
        }
        self.report.ok(&Step::new(step, "dht", t0.elapsed())
            .detail(format!(
                "alice, bob, carol: signed claims stored at {stored:?} DHT nodes"
            ))
            .extra(json!({"stored_at": stored})));

        let step = "contacts added by name";
        let t0 = Instant::now();
        let mut pins = 0;
        for n in names {
            for other in names.iter().filter(|o| **o != n) {
                let v = self
                    .node(n)
                    .control(&json!({"cmd": "contacts_add", "target": other}))
                    .map_err(fail(step))?;
                if v["ok"] != true || v["contact"]["fingerprint"] != self.fp(other).as_str() {
                    return Err((
                        step.into(),
                        format!("{n} adding {other}: contacts_add answered {v}"),
                    ));
                }
                pins += 1;
            }
        }
        self.report.ok(&Step::new(step, "dht", t0.elapsed())
            .detail(format!(
                "{pins} contacts, each resolved in the DHT and pinned to the claimed key"
            ))
            .extra(json!({"contacts": pins})));
        Ok(())
    }

    /// Steps 2 and 3: one message by name, timed from the send request to the recipient's
    /// `message` event; `want` is the path it must take.
    fn message(
        &mut self,
        from: &'static str,
        to: &'static str,
        want: Option<&str>,
    ) -> Result<(), Failed> {
        let step = format!("{from} → {to}");
        let f = fail(&step);
        let dst = self.node(to);
        let mark = dst.mark();
        let text = format!("hello {to}, this is {from}");
        let t0 = Instant::now();
        let (ans, id) = self.send(from, to, &text).map_err(&f)?;
        let dst = self.node(to);
        let arrived = dst.wait_after(mark, DELIVERY, |evs| evs.iter().any(|e| is_message(e, &id)));
        let at = dst
            .events_since(mark)
            .into_iter()
            .find(|e| is_message(e, &id))
            .map(|e| e.at);
        let Some(at) = at.filter(|_| arrived) else {
            return Err(f(format!(
                "not delivered within {} s (send answered {ans}); {to}'s log: {}",
                DELIVERY.as_secs(),
                dst.stderr_tail()
            )));
        };
        // Where it went is what the sender's outbox recorded when the ACK came, not what
        // the send answer predicted.
        let mut delivered = None;
        offline::wait_outbox(self.node(from), &id, |e| {
            let done = e["state"] == "delivered";
            if done {
                delivered = e["path"].as_str().map(str::to_owned);
            }
            done
        })
        .map_err(&f)?;
        let Some(path) = delivered else {
            return Err(f(format!(
                "{to} got it, but {from}'s outbox does not say delivered within 20 s"
            )));
        };
        if let Some(w) = want {
            if path != w {
                return Err(f(format!(
                    "delivered, but the path was {path:?}, not {w:?} (send answered {ans})"
                )));
            }
        }
        self.sent.push(Sent { to, id: id.clone() });
        let how = if path == "relay" {
            "through a bootstrap node's bundled relay"
        } else {
            "by name"
        };
        self.report
            .ok(&Step::new(&step, path, at.saturating_duration_since(t0))
                .detail(format!("{how}: \"{text}\""))
                .extra(json!({"from": from, "to": to, "id": id, "via": ans["via"],
                    "predicted": ans["path"]})));
        Ok(())
    }

    /// Seed 003's consent: alice writes carol (relay-only) before allowing a relay — the
    /// send answers `relay-needed`, the outbox says so, nothing reaches carol; then alice
    /// (and bob) allow a relay for carol with `contacts_allow_relay` and the message goes
    /// through a bootstrap node's bundled relay.
    fn relay_consent(&mut self) -> Result<(), Failed> {
        let step = "alice → carol, no consent";
        let f = fail(step);
        let mark = self.carol.mark();
        let alice_mark = self.alice.mark();
        let text = "hello carol, this is alice (before consent)";
        let t0 = Instant::now();
        let (ans, id) = self.send("alice", "carol", text).map_err(&f)?;
        if ans["path"] != "relay-needed" || ans["hint"].as_str().is_none() {
            return Err(f(format!(
                "the send answered {ans}, not relay-needed with a hint"
            )));
        }
        // The node's own re-reach had its chance: the outbox marks the message.
        let marked = offline::wait_outbox(&self.alice, &id, |e| e["waiting"] == "relay-needed")
            .map_err(&f)?;
        if !marked {
            return Err(f(
                "alice's outbox never said relay-needed for the message within 20 s".into(),
            ));
        }
        let carol_fp = self.fp("carol");
        let said = self
            .alice
            .wait_after(alice_mark, Duration::from_secs(5), |evs| {
                evs.iter().any(|e| {
                    e.json["event"] == "relay_needed" && e.json["peer"] == carol_fp.as_str()
                })
            });
        if !said {
            return Err(f(
                "alice's node printed no relay_needed event for carol".into()
            ));
        }
        if self
            .carol
            .events_since(mark)
            .iter()
            .any(|e| is_message(e, &id))
        {
            return Err(f("carol got it without alice's consent to a relay".into()));
        }
        self.report.ok(&Step::new(step, "relay-needed", t0.elapsed())
            .detail("queued: the send, alice's outbox and her events say relay-needed, carol has nothing")
            .extra(json!({"id": id, "answer": ans})));

        let step = "consent: alice → carol";
        let f = fail(step);
        let t0 = Instant::now();
        for (who, whom) in [("alice", "carol"), ("bob", "carol")] {
            let v = self
                .node(who)
                .control(&json!({"cmd": "contacts_allow_relay", "target": whom}))
                .map_err(&f)?;
            if v["ok"] != true || v["contact"]["allow_relay"] != true {
                return Err(f(format!("{who} allowing a relay for {whom}: {v}")));
            }
        }
        let arrived = self
            .carol
            .wait_after(mark, DELIVERY, |evs| evs.iter().any(|e| is_message(e, &id)));
        if !arrived {
            return Err(f(format!(
                "not delivered within {} s of the consent; carol's log: {}",
                DELIVERY.as_secs(),
                self.carol.stderr_tail()
            )));
        }
        let mut path = None;
        offline::wait_outbox(&self.alice, &id, |e| {
            let done = e["state"] == "delivered";
            if done {
                path = e["path"].as_str().map(str::to_owned);
            }
            done
        })
        .map_err(&f)?;
        if path.as_deref() != Some("relay") {
            return Err(f(format!(
                "delivered, but alice's outbox says path {path:?}, not relay"
            )));
        }
        self.sent.push(Sent {
            to: "carol",
            id: id.clone(),
        });
        self.report.ok(&Step::new(step, "relay", t0.elapsed())
            .detail("alice and bob allow a relay for carol (`dna contacts allow-relay carol`); the waiting message goes through a bootstrap node's bundled relay at once")
            .extra(json!({"id": id})));
        Ok(())
    }

    /// `--keep`: print where everything is and wait for Ctrl-C (the signal handler cleans up).
    fn keep(&self) -> ! {
        let dir = self.net.root().display().to_string();
        let nodes: Vec<Value> = [&self.alice, &self.bob, &self.carol]
            .iter()
            .chain(self.boots.iter().collect::<Vec<_>>().iter())
            .map(|p| {
                json!({"name": p.name, "fp": p.ready("fp"), "addr": p.ready("addr"),
                    "data_dir": p.data.display().to_string(),
                    "control": p.socket().display().to_string()})
            })
            .collect();
        let mut text = format!("\nThe devnet keeps running; Ctrl-C stops it and removes {dir}\n");
        for n in &nodes {
            text.push_str(&format!(
                "  {:<6} {}  control socket {}\n",
                n["name"].as_str().unwrap_or_default(),
                n["addr"].as_str().unwrap_or_default(),
                n["control"].as_str().unwrap_or_default()
            ));
        }
        let (dna, alice) = (self.net.exe().display(), self.alice.data.display());
        text.push_str(&format!(
            "Try:\n  {dna} send --data-dir {alice} --to bob \"hi bob\"\n  \
             {dna} inbox --data-dir {}\n  {dna} status --data-dir {alice}\n  \
             {dna} contacts list --data-dir {alice}",
            self.bob.data.display()
        ));
        self.report
            .line(&text, json!({"keep": true, "dir": dir, "nodes": nodes}));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

//! `dna devnet` (issue 11 item 1): a whole network on loopback in one command, to see the
//! system work. Two `dna bootstrap` and three `dna daemon` processes (alice, bob, carol; carol
//! with `relay = "only"`) are started by re-executing this binary, each with an embedded
//! config file and a data directory under one temporary directory; then names, contacts,
//! messages by name (direct), through a bootstrap node's bundled relay (spec/07-relay.md §1),
//! to a node that is offline and comes back, and a burst of 1,000 messages. One line per
//! step with the path and the time; the last line is
//! `RESULT devnet=ok delivered=<n> lost=0 duplicated=0 mailbox=<n>`.
//!
//! Everything is on 127.0.0.1; the children are killed and the directory removed at the end,
//! on a failure, and on SIGINT/SIGTERM (`procs`).

// The CLI is a driver: it reads the clock to time the steps.
#![allow(clippy::disallowed_methods)]

mod procs;
mod steps;

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

/// Run a whole network on 127.0.0.1 to see it work: five nodes, names, contacts,
/// direct and relayed messages, offline delivery, a burst of 1,000.
///
/// Starts two bootstrap nodes and three daemons (alice, bob, carol) as child processes on
/// 127.0.0.1, with temporary data directories and built-in configs. They claim names and
/// add each other as contacts by name; alice and bob exchange messages (direct); carol
/// has relay = "only", so alice ↔ carol and carol → bob go through a bootstrap node's
/// bundled relay; carol goes offline, alice and bob write to her, she comes back and gets
/// both; alice sends bob 1,000 messages, counted at bob; every inbox is audited. One line
/// per step with the path and the time, then `RESULT devnet=ok delivered=N lost=0
/// duplicated=0 mailbox=N`; exits non-zero if a step fails. Ctrl-C (or SIGTERM) stops
/// every node and removes the directories. Needs no root and nothing but this binary.
#[derive(Debug, clap::Args)]
pub(super) struct DevnetArgs {
    /// Print one JSON object per step (`step`, `ok`, `path`, `ms`, …) and a last one with
    /// the result, instead of text lines.
    #[arg(long)]
    json: bool,
    /// After the steps (or a failed step), keep the five nodes running until Ctrl-C and
    /// print their data directories, so you can try `dna send`, `dna status`,
    /// `dna inbox --data-dir …` (each node's log: `<data dir>/stderr.log`).
    #[arg(long)]
    keep: bool,
    /// The first UDP port to try on 127.0.0.1; the five nodes take the first free ports
    /// from here on.
    #[arg(long, value_name = "PORT", default_value_t = 47000)]
    base_port: u16,
    /// No node holds offline mailbox items (`[mailbox] store = false` everywhere): the
    /// offline step then has no mailbox to deliver from and fails — what the devnet prints
    /// when its mailbox does nothing.
    #[arg(long)]
    no_mailbox_storage: bool,
}

/// One step's outcome, printed as one line.
pub(super) struct Step {
    /// What was done, e.g. `alice → bob`.
    pub name: String,
    /// The path used (`direct`, `relay`, `queued`, `dht`, …).
    pub path: String,
    /// How long it took.
    pub took: Duration,
    /// More, for people (`2 of 2 arrived`).
    pub detail: String,
    /// More, for scripts (merged into the JSON object).
    pub extra: Value,
}

impl Step {
    pub fn new(name: impl Into<String>, path: impl Into<String>, took: Duration) -> Step {
        Step {
            name: name.into(),
            path: path.into(),
            took,
            detail: String::new(),
            extra: json!({}),
        }
    }

    pub fn detail(mut self, d: impl Into<String>) -> Step {
        self.detail = d.into();
        self
    }

    pub fn extra(mut self, v: Value) -> Step {
        self.extra = v;
        self
    }
}

/// Prints steps as they finish.
pub(super) struct Report {
    json: bool,
}

impl Report {
    pub fn ok(&self, s: &Step) {
        if self.json {
            let mut v = json!({"step": s.name, "ok": true, "path": s.path,
                "ms": ms(s.took), "detail": s.detail});
            if let (Some(o), Some(extra)) = (v.as_object_mut(), s.extra.as_object()) {
                o.extend(extra.clone());
            }
            println!("{v}");
        } else {
            println!(
                "✓ {:<26} {:<13} {:>8}  {}",
                s.name,
                s.path,
                human(s.took),
                s.detail
            );
        }
    }

    pub fn failed(&self, step: &str, error: &str) {
        if self.json {
            println!("{}", json!({"step": step, "ok": false, "error": error}));
        } else {
            println!("✗ {step:<26} FAILED: {error}");
            println!(
                "  (--keep keeps the nodes and their logs for a look; RUST_LOG=info logs more)"
            );
        }
    }

    pub fn line(&self, text: &str, v: Value) {
        if self.json {
            println!("{v}");
        } else {
            println!("{text}");
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// `0.4 ms`, `12 ms`, `1.24 s`.
pub(super) fn human(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// Runs `dna devnet`.
pub(super) fn run(args: DevnetArgs) -> ExitCode {
    let report = Report { json: args.json };
    let net = match procs::Net::create() {
        Ok(n) => n,
        Err(e) => {
            report.failed("setup", &e);
            return ExitCode::FAILURE;
        }
    };
    // A panic anywhere below still kills the children and removes the directory.
    let guard = CleanUp(net.clone());
    let result = steps::run_all(
        &net,
        &report,
        args.base_port,
        args.keep,
        !args.no_mailbox_storage,
    );
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) if net.signalled() => {
            // Ctrl-C: the nodes went away under the step; the signal handler exits.
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Err((step, e)) => {
            report.failed(&step, &e);
            if args.keep {
                // Leave the nodes up for inspection (logs: <dir>/<node>/stderr.log).
                report.line(
                    &format!(
                        "--keep: the nodes keep running; their logs are in {}/*/stderr.log; \
                         Ctrl-C stops them and removes the directory",
                        net.root().display()
                    ),
                    json!({"keep": true, "dir": net.root().display().to_string()}),
                );
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            ExitCode::FAILURE
        }
    };
    drop(guard);
    code
}

struct CleanUp(procs::Net);

impl Drop for CleanUp {
    fn drop(&mut self) {
        self.0.clean_up();
    }
}

//! `dna name …` and `dna contacts …` (spec/08-names.md §6): clients of the control socket;
//! its side of those requests is `control::names`.
//!
//! Requests: `{"cmd":"name_claim","name":N}`, `{"cmd":"name_resolve","name":N}`,
//! `{"cmd":"contacts_add","target":NAME_OR_FP,"alias":A?}`, `{"cmd":"contacts_list"}`,
//! `{"cmd":"contacts_remove","target":ALIAS_NAME_OR_FP}`,
//! `{"cmd":"contacts_allow_relay","target":ALIAS_NAME_OR_FP,"allow":true}`.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Value};

use super::DataDir;

/// `dna name`.
#[derive(Debug, Subcommand)]
pub(super) enum NameCommand {
    /// Claim a name for this node's identity: first come, first served. The claim is signed,
    /// stored at the DHT nodes closest to the name, republished by the daemon while it runs
    /// (every 56 h) and lapses 7 days after the last republish. Names are 3-32 characters of
    /// a-z, 0-9 and '-' (capitals are lowered); a name someone else holds is refused with
    /// the holder's fingerprint.
    Claim {
        #[command(flatten)]
        data_dir: DataDir,
        /// The name.
        name: String,
        /// Print the daemon's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Look a name up in the DHT and print the fingerprint that holds it (when several
    /// claims are found, the earliest claim wins). Refused if a contact is pinned under this
    /// name to another key.
    Resolve {
        #[command(flatten)]
        data_dir: DataDir,
        /// The name.
        name: String,
        /// Print the daemon's JSON answer.
        #[arg(long)]
        json: bool,
    },
}

/// `dna contacts`.
#[derive(Debug, Subcommand)]
pub(super) enum ContactsCommand {
    /// Add a contact by name (resolved through the DHT) or fingerprint, and pin its key:
    /// from now on the name or alias means this key, and a later resolution to another key
    /// is refused loudly (trust on first use). Prints the fingerprint pinned.
    Add {
        #[command(flatten)]
        data_dir: DataDir,
        /// A name (e.g. `alice`) or a 64-hex fingerprint.
        target: String,
        /// A local alias to use with `dna send --to` (same rules as names).
        #[arg(long)]
        alias: Option<String>,
        /// Print the daemon's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// List the contacts: alias, name, pinned fingerprint.
    List {
        #[command(flatten)]
        data_dir: DataDir,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Allow a relay (a bootstrap node's, or TURN) to carry sessions with a contact when no
    /// direct path exists — the consent `relay = "ask"`, the daemon's default, waits for
    /// (seed 003). Messages waiting for it go out at once. `--off` takes it back.
    AllowRelay {
        #[command(flatten)]
        data_dir: DataDir,
        /// The alias, name or fingerprint.
        target: String,
        /// No longer allow a relay for it.
        #[arg(long)]
        off: bool,
        /// Print the daemon's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Remove a contact (by alias, name or fingerprint); its name may then be pinned anew.
    Remove {
        #[command(flatten)]
        data_dir: DataDir,
        /// The alias, name or fingerprint.
        target: String,
        /// Print the daemon's JSON answer.
        #[arg(long)]
        json: bool,
    },
}

/// One request; the answer as JSON (`--json`) or as a line for people. Exit code: whether
/// the daemon said ok.
fn run_one(dir: &Path, req: Value, json_out: bool, human: impl Fn(&Value) -> String) -> ExitCode {
    let v = match super::control::ask(dir, &req) {
        None => {
            eprintln!(
                "error: no daemon at {}",
                crate::control::path(dir).display()
            );
            return ExitCode::FAILURE;
        }
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        Some(Ok(v)) => v,
    };
    let ok = v["ok"] == true;
    if json_out {
        println!("{v}");
    } else if ok {
        println!("{}", human(&v));
    } else {
        eprintln!("error: {}", v["error"].as_str().unwrap_or("failed"));
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// `dna name …`.
pub(super) fn run_name(cmd: NameCommand) -> ExitCode {
    match cmd {
        NameCommand::Claim {
            data_dir,
            name,
            json,
        } => run_one(
            &data_dir.resolve(),
            json!({"cmd": "name_claim", "name": name}),
            json,
            |v| {
                format!(
                    "claimed {} for {} (stored at {} nodes; republished while the daemon runs)",
                    s(&v["name"]),
                    s(&v["fingerprint"]),
                    v["stored_at"]
                )
            },
        ),
        NameCommand::Resolve {
            data_dir,
            name,
            json,
        } => run_one(
            &data_dir.resolve(),
            json!({"cmd": "name_resolve", "name": name}),
            json,
            |v| format!("{}  {}", s(&v["name"]), s(&v["fingerprint"])),
        ),
    }
}

/// `dna contacts …`.
pub(super) fn run_contacts(cmd: ContactsCommand) -> ExitCode {
    match cmd {
        ContactsCommand::Add {
            data_dir,
            target,
            alias,
            json,
        } => run_one(
            &data_dir.resolve(),
            json!({"cmd": "contacts_add", "target": target, "alias": alias}),
            json,
            |v| {
                let c = &v["contact"];
                let what = if v["new"] == true {
                    "pinned"
                } else {
                    "already pinned"
                };
                format!(
                    "{what} {} → {}",
                    c["alias"].as_str().or(c["name"].as_str()).unwrap_or("-"),
                    s(&c["fingerprint"])
                )
            },
        ),
        ContactsCommand::List { data_dir, json } => {
            let dir = data_dir.resolve();
            let v = match super::control::ask_ok(&dir, &json!({"cmd": "contacts_list"})) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            for c in v["contacts"].as_array().into_iter().flatten() {
                if json {
                    println!("{c}");
                } else {
                    println!(
                        "{:<16} {:<16} {}",
                        s(&c["alias"]),
                        s(&c["name"]),
                        s(&c["fingerprint"])
                    );
                }
            }
            ExitCode::SUCCESS
        }
        ContactsCommand::AllowRelay {
            data_dir,
            target,
            off,
            json,
        } => run_one(
            &data_dir.resolve(),
            json!({"cmd": "contacts_allow_relay", "target": target, "allow": !off}),
            json,
            |v| {
                let c = &v["contact"];
                let what = if c["allow_relay"] == true {
                    "a relay may carry sessions with"
                } else {
                    "no relay for"
                };
                format!(
                    "{what} {} ({})",
                    c["alias"].as_str().or(c["name"].as_str()).unwrap_or("-"),
                    s(&c["fingerprint"])
                )
            },
        ),
        ContactsCommand::Remove {
            data_dir,
            target,
            json,
        } => run_one(
            &data_dir.resolve(),
            json!({"cmd": "contacts_remove", "target": target}),
            json,
            |v| format!("removed {}", s(&v["removed"]["fingerprint"])),
        ),
    }
}

//! `dna send-file --to C PATH` and `dna files [accept|reject ID] [--json]` (spec/11-files.md):
//! clients of the control socket; its side is `control::files`.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Value};

use super::control::ask_ok;
use super::DataDir;

/// `dna files …`.
#[derive(Debug, Subcommand)]
pub(super) enum FilesCommand {
    /// Accept an offered file: the transfer starts (and resumes by itself after
    /// interruptions); it lands in the daemon's download directory.
    Accept {
        #[command(flatten)]
        data_dir: DataDir,
        /// The transfer's ID (from `dna files` or the `file_offer` event).
        id: String,
    },
    /// Refuse an offered file.
    Reject {
        #[command(flatten)]
        data_dir: DataDir,
        /// The transfer's ID.
        id: String,
    },
}

fn answer(r: Result<Value, String>, human: impl Fn(&Value) -> String) -> ExitCode {
    match r {
        Ok(v) => {
            println!("{}", human(&v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `dna send-file`: the daemon hashes the file and offers it.
pub(super) fn send_file(dir: &Path, to: &str, path: &Path) -> ExitCode {
    let path = match std::path::absolute(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let req = json!({"cmd": "file_send", "to": to, "path": path.display().to_string()});
    answer(ask_ok(dir, &req), |v| {
        format!(
            "offered {} (id {})",
            path.display(),
            v["id"].as_str().unwrap_or("")
        )
    })
}

/// `dna files`: the transfers under way, or `accept` / `reject` one.
pub(super) fn files(dir: &Path, cmd: Option<FilesCommand>, json_out: bool) -> ExitCode {
    match cmd {
        Some(FilesCommand::Accept { data_dir, id }) => {
            let dir = data_dir.resolve_or(dir);
            answer(
                ask_ok(&dir, &json!({"cmd": "file_accept", "id": id})),
                |_| "accepted".into(),
            )
        }
        Some(FilesCommand::Reject { data_dir, id }) => {
            let dir = data_dir.resolve_or(dir);
            answer(
                ask_ok(&dir, &json!({"cmd": "file_reject", "id": id})),
                |_| "rejected".into(),
            )
        }
        None => answer(ask_ok(dir, &json!({"cmd": "files"})), |v| {
            let list = v["files"].as_array().cloned().unwrap_or_default();
            if json_out {
                return list
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n");
            }
            if list.is_empty() {
                return "no transfers".into();
            }
            list.iter()
                .map(|t| {
                    let held = t["leaves_held"].as_u64().map_or(String::new(), |h| {
                        let n = t["leaves"].as_u64().unwrap_or(1).max(1);
                        format!(" {:.0}%", h as f64 * 100.0 / n as f64)
                    });
                    format!(
                        "{} {:3} {:9} {} {} B{}  {}",
                        t["id"].as_str().unwrap_or(""),
                        t["direction"].as_str().unwrap_or(""),
                        t["state"].as_str().unwrap_or(""),
                        t["name"].as_str().unwrap_or(""),
                        t["size"],
                        held,
                        &t["peer"].as_str().unwrap_or("")
                            [..16.min(t["peer"].as_str().unwrap_or("").len())],
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        }),
    }
}

//! `dna id new` / `dna id show`.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use rand_core::OsRng;
use serde_json::json;
use sha2::{Digest, Sha256};

use dna_p2p::crypto::Identity;

use super::DataDir;

#[derive(Debug, Subcommand)]
pub(super) enum IdCommand {
    /// Generate a new identity in the data directory (refuses to overwrite one).
    New {
        #[command(flatten)]
        data_dir: DataDir,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the identity stored in the data directory.
    Show {
        #[command(flatten)]
        data_dir: DataDir,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn run(cmd: IdCommand) -> ExitCode {
    let (dir, json, result) = match cmd {
        IdCommand::New { data_dir, json } => {
            let dir = data_dir.resolve();
            let r = Identity::create_in(&dir, &mut OsRng);
            (dir, json, r)
        }
        IdCommand::Show { data_dir, json } => {
            let dir = data_dir.resolve();
            let r = Identity::load_from(&dir);
            (dir, json, r)
        }
    };
    match result {
        Ok(id) => {
            print_identity(&id, &dir, json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                println!("{}", json!({ "error": e.to_string() }));
            }
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_identity(id: &Identity, dir: &Path, json: bool) {
    let fp = id.fingerprint();
    let kem = hex::encode(Sha256::digest(id.kem_public().to_bytes()));
    let file = Identity::key_file(dir);
    if json {
        let v = json!({
            "fingerprint": fp.to_string(),
            "node_id": fp.node_id().to_string(),
            "kem_key_sha256": kem,
            "key_file": file.display().to_string(),
        });
        println!("{v}");
    } else {
        println!("fingerprint  {fp}");
        println!("node id      {}", fp.node_id());
        println!("kem key      sha256 {kem}");
        println!("key file     {}", file.display());
    }
}

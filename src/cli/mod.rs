//! The `dna` command line: argument definitions and dispatch. Part of the driver layer: it
//! reads stdin, writes stdout and touches the data directory; the library does the rest.

mod control;
mod daemon;
mod devnet;
mod files;
mod frame;
mod id;
mod inbox;
mod limits;
mod names;
mod ping;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// dna — peer-to-peer messenger node and tools.
#[derive(Debug, Parser)]
#[command(name = "dna", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    // Help text: on `devnet::DevnetArgs`.
    Devnet(devnet::DevnetArgs),
    /// Decode and encode DNA frames (spec/01-wire.md), for debugging.
    #[command(subcommand)]
    Frame(frame::FrameCommand),
    /// Create and show the node's identity (Dilithium3 key pair and KEM key).
    #[command(subcommand)]
    Id(id::IdCommand),
    /// Run a messenger node: join the DHT, discover the NAT (with --stun), register at
    /// rendezvous nodes when not directly reachable, publish presence, print events as JSON
    /// lines, and take requests on `<data dir>/control.sock` (see `dna send`, `dna status`).
    Daemon(daemon::DaemonArgs),
    /// Run a public bootstrap node: DHT server, STUN responder and rendezvous node on one
    /// UDP port (give --listen a public address and port).
    Bootstrap(daemon::DaemonArgs),
    /// Send a text message to a contact through the running daemon: finds it in the DHT,
    /// punches through NATs if needed, and prints how it was reached.
    Send {
        #[command(flatten)]
        data_dir: DataDir,
        /// The contact's fingerprint (hex), or a contact's alias or name (`dna contacts add`).
        #[arg(long)]
        to: String,
        /// The message text.
        text: String,
    },
    /// Offer a file to a contact (spec/11-files.md): the daemon hashes it (a SHA-256 tree over
    /// 16 KiB leaves) and sends the offer; once accepted, every 16 KiB is checked on arrival.
    SendFile {
        #[command(flatten)]
        data_dir: DataDir,
        /// The contact's fingerprint, alias or name.
        #[arg(long)]
        to: String,
        /// The file.
        path: PathBuf,
    },
    /// File transfers: without a subcommand, those under way (offers waiting, files being
    /// received or sent, with progress); `accept ID` / `reject ID` answer an offer.
    Files {
        #[command(flatten)]
        data_dir: DataDir,
        /// One JSON object per transfer.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        cmd: Option<files::FilesCommand>,
    },
    /// The status panel: identity and names, NAT class and public addresses, DHT table
    /// and records, and every peer with its path (direct/relay/turn), RTT, bytes and last
    /// seen (spec/10-control.md §3).
    Status {
        #[command(flatten)]
        data_dir: DataDir,
        /// The whole status object as one JSON line.
        #[arg(long)]
        json: bool,
        /// Redraw every second until Ctrl-C.
        #[arg(long)]
        watch: bool,
    },
    /// Measure the round trip to a peer over its session, one line per probe with the path
    /// (reaches the peer first if no session is up; spec/10-control.md §4).
    Ping {
        #[command(flatten)]
        data_dir: DataDir,
        /// A contact's alias or name, or a fingerprint (hex).
        target: String,
        /// Probes to send.
        #[arg(long, short = 'c', default_value_t = 4)]
        count: u32,
        /// Pause between probes, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// One JSON object per probe.
        #[arg(long)]
        json: bool,
    },
    /// Claim and resolve human names (first come, signed, in the DHT; spec/08-names.md).
    #[command(subcommand)]
    Name(names::NameCommand),
    /// The contact list: names and fingerprints pinned on first use.
    #[command(subcommand)]
    Contacts(names::ContactsCommand),
    /// List the received messages from contacts, oldest first, from the running daemon or,
    /// when none runs, from the data directory's store. Messages from others are contact
    /// requests, held apart: --requests lists them, --all both.
    Inbox {
        #[command(flatten)]
        data_dir: DataDir,
        /// Only messages from this contact (alias or name) or fingerprint (or its first hex
        /// digits, at least 8).
        #[arg(long, value_name = "CONTACT")]
        from: Option<String>,
        /// After the stored messages, print new ones as they arrive (needs the running
        /// daemon; Ctrl-C stops).
        #[arg(long)]
        follow: bool,
        /// Only contact requests: messages from senders who are not contacts (held out of
        /// the inbox until `dna contacts add` accepts the sender).
        #[arg(long, conflicts_with = "all")]
        requests: bool,
        /// Messages from contacts and contact requests together.
        #[arg(long)]
        all: bool,
        /// One JSON object per line: from, id, text, received_ms (sent_ms for followed
        /// ones), contact (whether the sender is a contact).
        #[arg(long)]
        json: bool,
    },
    /// Configuration: `dna config show [--as-bootstrap] [daemon flags]` prints the effective
    /// configuration (file, flags, defaults) as TOML; every key is documented in
    /// spec/06-node.md §5 and `dna daemon --help`.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List outgoing messages with their state: queued (waiting), sent (in the recipient's
    /// DHT mailbox, no receipt yet) or delivered, and the path (session or mailbox). Works
    /// without a running daemon too, from the data directory's store (waiting messages then
    /// read queued: the mailbox's put ledger lives in the running daemon).
    Outbox {
        #[command(flatten)]
        data_dir: DataDir,
        /// One JSON object per line: to, id, state, path, at_ms.
        #[arg(long)]
        json: bool,
    },
}

/// `dna config …`.
#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration of `dna daemon` (or, with --as-bootstrap, of `dna
    /// bootstrap`) given these flags and --config file, as TOML.
    Show {
        /// With `dna bootstrap`'s defaults (it relays; it serves rendezvous).
        #[arg(long)]
        as_bootstrap: bool,
        #[command(flatten)]
        args: daemon::DaemonArgs,
    },
}

/// Where the node keeps its identity and state: `--data-dir`, else `$DNA_DATA_DIR`, else
/// the XDG data directory `$XDG_DATA_HOME/dna` (`$HOME/.local/share/dna` when unset) — or
/// `$HOME/.dna` where an older version left one.
#[derive(Debug, clap::Args)]
struct DataDir {
    /// Data directory [default: $DNA_DATA_DIR, else $XDG_DATA_HOME/dna, i.e.
    /// ~/.local/share/dna; an existing ~/.dna is still used].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDir {
    /// The directory given here, else `outer` (a subcommand's `--data-dir` or its parent's).
    fn resolve_or(&self, outer: &std::path::Path) -> PathBuf {
        match &self.data_dir {
            Some(d) => d.clone(),
            None => outer.to_path_buf(),
        }
    }

    fn resolve(&self) -> PathBuf {
        default_data_dir(
            self.data_dir.clone(),
            std::env::var_os("DNA_DATA_DIR").map(PathBuf::from),
            std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
            std::env::var_os("HOME").map(PathBuf::from),
        )
    }
}

/// The data directory from the flag, `$DNA_DATA_DIR`, `$XDG_DATA_HOME` and `$HOME`, in this
/// order (XDG Base Directory: a relative `$XDG_DATA_HOME` is ignored).
fn default_data_dir(
    flag: Option<PathBuf>,
    env: Option<PathBuf>,
    xdg: Option<PathBuf>,
    home: Option<PathBuf>,
) -> PathBuf {
    if let Some(d) = flag.or(env) {
        return d;
    }
    let home = home.unwrap_or_else(|| PathBuf::from("."));
    let legacy = home.join(".dna");
    if legacy.join("identity.key").exists() {
        return legacy;
    }
    match xdg.filter(|x| x.is_absolute()) {
        Some(x) => x.join("dna"),
        None => home.join(".local/share/dna"),
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Devnet(args) => devnet::run(args),
        Command::Frame(cmd) => frame::run(cmd),
        Command::Id(cmd) => id::run(cmd),
        Command::Daemon(args) => daemon::run(args, false),
        Command::Bootstrap(args) => daemon::run(args, true),
        Command::Send { data_dir, to, text } => control::client(
            &data_dir.resolve(),
            serde_json::json!({"cmd": "send", "to": to, "text": text}),
        ),
        Command::Status {
            data_dir,
            json,
            watch,
        } => status::run(&data_dir.resolve(), json, watch),
        Command::Ping {
            data_dir,
            target,
            count,
            interval_ms,
            json,
        } => ping::run(
            &data_dir.resolve(),
            &target,
            count,
            std::time::Duration::from_millis(interval_ms),
            json,
        ),
        Command::Inbox {
            data_dir,
            from,
            follow,
            requests,
            all,
            json,
        } => {
            let show = match (requests, all) {
                (true, _) => inbox::Show::Requests,
                (_, true) => inbox::Show::All,
                _ => inbox::Show::Contacts,
            };
            inbox::inbox(&data_dir.resolve(), from.as_deref(), show, follow, json)
        }
        Command::Outbox { data_dir, json } => inbox::outbox(&data_dir.resolve(), json),
        Command::SendFile { data_dir, to, path } => {
            files::send_file(&data_dir.resolve(), &to, &path)
        }
        Command::Files {
            data_dir,
            json,
            cmd,
        } => files::files(&data_dir.resolve(), cmd, json),
        Command::Config(ConfigCommand::Show { as_bootstrap, args }) => {
            daemon::show_config(args, as_bootstrap)
        }
        Command::Name(cmd) => names::run_name(cmd),
        Command::Contacts(cmd) => names::run_contacts(cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_dir_follows_flag_env_xdg_home() {
        let p = |s: &str| Some(PathBuf::from(s));
        let home = std::env::temp_dir().join(format!("dna-home-{}", std::process::id()));
        let h = Some(home.clone());
        assert_eq!(
            default_data_dir(p("/f"), p("/e"), p("/x"), h.clone()),
            PathBuf::from("/f")
        );
        assert_eq!(
            default_data_dir(None, p("/e"), p("/x"), h.clone()),
            PathBuf::from("/e")
        );
        assert_eq!(
            default_data_dir(None, None, p("/x"), h.clone()),
            PathBuf::from("/x/dna")
        );
        assert_eq!(
            default_data_dir(None, None, p("rel"), h.clone()),
            home.join(".local/share/dna"),
            "a relative XDG_DATA_HOME is ignored"
        );
        std::fs::create_dir_all(home.join(".dna")).unwrap();
        std::fs::write(home.join(".dna/identity.key"), b"x").unwrap();
        assert_eq!(default_data_dir(None, None, p("/x"), h), home.join(".dna"));
        let _ = std::fs::remove_dir_all(&home);
    }
}

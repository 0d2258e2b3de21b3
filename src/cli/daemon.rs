//! `dna daemon` (a messenger node) and `dna bootstrap` (a public DHT, STUN and rendezvous
//! node): configuration, start-up sequence, event output and the control socket.
//!
//! Both print one JSON object per line on stdout for each event (`ready`, `message`,
//! `peer_up`, `peer_down`, `acked`, `rtt`, `presence`; spec/10-control.md §2, where control
//! subscribers get the same lines); logs go to stderr (`RUST_LOG` filters them). The
//! daemon listens on `<data dir>/control.sock` for one-line JSON requests, which
//! `dna send` and `dna status` make (spec/05-nat.md §6 lists the requests).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rand_core::OsRng;
use serde::Deserialize;
use serde_json::{json, Value};

use dna_p2p::crypto::{Fingerprint, Identity};
use dna_p2p::daemon::{DhtSettings, DiscoveryServerConfig, Node, NodeConfig};
use dna_p2p::dht::DhtConfig;
use dna_p2p::node::reach::RelayPolicy;
use dna_p2p::node::relay_server::RelayServerLimits;
use dna_p2p::node::retry::RetryConfig;
use dna_p2p::node::routine::RoutineConfig;

use super::DataDir;

/// Settings of `dna daemon` and `dna bootstrap`, from `--config FILE` (TOML) and flags
/// (flags win). Every field has a default.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct DaemonConfig {
    /// The one UDP socket (default `0.0.0.0:0` for a daemon).
    pub listen: SocketAddr,
    /// DHT bootstrap nodes as `ADDR@FINGERPRINT` (default none).
    pub bootstrap: Vec<String>,
    /// RFC 5780 STUN servers for NAT behaviour discovery (default none: no discovery).
    pub stun: Vec<SocketAddr>,
    /// How many bootstrap nodes to register at as rendezvous nodes when not directly
    /// reachable (default 2).
    pub rendezvous: usize,
    /// Re-run discovery, renew registrations and republish presence this often (default
    /// 120 s, at least 10 s; presence records live three of these, so a crashed node reads
    /// offline within 6 min; registrations live 5 min).
    pub refresh_secs: u64,
    /// QUIC keep-alive on every connection, to hold NAT mappings (default 15 s: NATs that
    /// forget a silent UDP flow after 30 s are common).
    pub keep_alive_secs: u64,
    /// Check this often whether our addresses changed (host addresses, or the mapping the
    /// first STUN server sees); a change triggers discovery, registration and presence at
    /// once (default 25 s).
    pub network_check_secs: u64,
    /// A peer with messages waiting and no connection is reached again after this long,
    /// the delay doubling after each failure up to `retry_max_secs`, and at once when the
    /// peer is heard (it connects to us, or its presence is stored here) (default 1 s;
    /// seed 004; spec/06-node.md §3.5).
    pub retry_secs: u64,
    /// The longest delay between two reaches of one peer (default 30 s).
    pub retry_max_secs: u64,
    /// Reaches of waiting peers running at once, at most (default 8).
    pub reach_concurrency: usize,
    /// Reaches of waiting peers started per minute over all peers, at most (default 120:
    /// 1,000 offline contacts cost 120 lookups a minute, not one each every few seconds).
    pub reach_per_minute: u32,
    /// `[limits]`: the node's limits (spec/06-node.md §5); each key optional.
    pub limits: super::limits::LimitsConfig,
    /// Answer RFC 5780 NAT behaviour discovery (spec/05-nat.md §2.1) with this second
    /// address of the host: three more UDP sockets for STUN only, at `listen`'s address
    /// with `other_port`, and at this address with both ports (default none: off; meant for
    /// `dna bootstrap`, whose `listen` must then be a specific address).
    pub other_address: Option<IpAddr>,
    /// The RFC 5780 server's second port (default: `listen`'s port + 1).
    pub other_port: Option<u16>,
    /// TURN servers, `"HOST:PORT"` or a list of them (default none): with `turn_user` and
    /// `turn_password` (or `turn_secret`), the node keeps a relayed address at the first,
    /// and moves to the next when one fails (spec/07-relay.md §2.10, §2.12).
    #[serde(deserialize_with = "one_or_many")]
    pub turn: Vec<String>,
    /// The TURN servers' long-term credential: user (default none; with `turn_secret`, the
    /// user part of the REST username, may be left out).
    pub turn_user: Option<String>,
    /// The TURN servers' long-term credential: password (default none).
    pub turn_password: Option<String>,
    /// coturn's `static-auth-secret` (its `use-auth-secret` REST scheme): credentials valid
    /// for a day are made from it, instead of a password (default none; spec/07 §2.4).
    pub turn_secret: Option<String>,
    /// How long UDP to the TURN server may go unanswered before the node allocates over
    /// TCP and sends everything through the allocation (default 2000 ms; 0: UDP only;
    /// spec/07-relay.md §2.11).
    pub turn_tcp_after_ms: u64,
    /// Whether relays may carry our sessions: `"ask"` (direct first; a relay only for
    /// contacts the user allowed with `dna contacts allow-relay`, seed 003), `"auto"`
    /// (direct first, then a relay for anyone),
    /// `"never"`, `"only"` (never a direct path; the peer learns no address of ours)
    /// (default `"ask"`; spec/07-relay.md §1.5). A bootstrap node's own relay for others
    /// is `[relay_server]`, on by the operator's choice.
    pub relay: RelayPolicy,
    /// Serve in the DHT while reachable (design brief, decision 9: hold records and mailbox
    /// items for others; default true; false keeps the node a DHT client whatever its NAT:
    /// spec/09-mailbox.md, "Who stores").
    pub dht_serve: bool,
    /// Punching this long without a pair: ask the relay in parallel (default 1000 ms).
    pub relay_after_ms: u64,
    /// Port prediction toward a peer whose NAT pairs with ours only that way (symmetric ↔
    /// port-restricted cone; default true; spec/05-nat.md §5.5). Off: our CONNECT signals
    /// say "NAT behaviour unknown", so neither side predicts.
    pub port_prediction: bool,
    /// A session still relayed gets a new punching attempt this often (default 60 s).
    pub upgrade_secs: u64,
    /// `[relay_server]`: the bundled relay (spec/07-relay.md §1.4).
    pub relay_server: RelayServerConfig,
    /// `[mailbox]`: the offline mailbox (spec/09-mailbox.md §7).
    pub mailbox: MailboxToml,
    /// `[control]`: the control socket's event stream (spec/10-control.md §5).
    pub control: crate::control::ControlConfig,
    /// Where received files go (default `<data dir>/downloads`; spec/11-files.md).
    pub download_dir: Option<PathBuf>,
}

/// `[mailbox]`: every key optional.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct MailboxToml {
    /// Hold other nodes' mailbox items in our DHT store (default: on for a DHT server that
    /// is not a bootstrap node; `dna bootstrap` refuses them unless this is true or
    /// `--store-mailbox` is given, for a small deployment).
    pub store: Option<bool>,
    /// Put a message waiting this long with no connection in the recipient's mailbox
    /// (default 10 s).
    pub after_secs: u64,
    /// Fetch our own mailbox this often (default 60 s), and at start.
    pub poll_secs: u64,
}

impl Default for MailboxToml {
    fn default() -> Self {
        MailboxToml {
            store: None,
            after_secs: 10,
            poll_secs: 60,
        }
    }
}

/// `[relay_server]`: relaying for registered clients that both ask. Every key optional.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RelayServerConfig {
    /// Relay at all (default: on for `dna bootstrap`, off for `dna daemon`, which would
    /// need to be a rendezvous node).
    pub enabled: Option<bool>,
    /// Relayed pairs at once (default 64).
    pub max_pairs: usize,
    /// Requests waiting for their other side at once (default 256).
    pub max_waiting: usize,
    /// Pairs one source (IPv4 address, IPv6 /64) may be an end of (default 8).
    pub per_source_pairs: usize,
    /// Requests one node may have waiting at once (default 8).
    pub per_node_waiting: usize,
    /// Bytes per second per pair, both directions together (default 1048576).
    pub pair_rate: u64,
    /// A pair that forwarded nothing this long ends (default 120 s).
    pub pair_idle_secs: u64,
    /// A pair ends this long after it was made; its ends ask again (default 3600 s).
    pub pair_lifetime_secs: u64,
}

impl Default for RelayServerConfig {
    fn default() -> Self {
        let d = RelayServerLimits::default();
        RelayServerConfig {
            enabled: None,
            max_pairs: d.max_pairs,
            max_waiting: d.max_waiting,
            per_source_pairs: d.per_source_pairs,
            per_node_waiting: d.per_node_waiting,
            pair_rate: d.pair_rate,
            pair_idle_secs: d.pair_idle.as_secs(),
            pair_lifetime_secs: d.pair_lifetime.as_secs(),
        }
    }
}

impl RelayServerConfig {
    /// The limits, if this node relays.
    fn limits(&self, bootstrap: bool) -> Option<RelayServerLimits> {
        self.enabled
            .unwrap_or(bootstrap)
            .then(|| RelayServerLimits {
                max_pairs: self.max_pairs,
                max_waiting: self.max_waiting,
                per_source_pairs: self.per_source_pairs,
                per_node_waiting: self.per_node_waiting,
                pair_rate: self.pair_rate.max(1),
                pair_idle: Duration::from_secs(self.pair_idle_secs.max(1)),
                pair_lifetime: Duration::from_secs(self.pair_lifetime_secs.max(1)),
                ..RelayServerLimits::default()
            })
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            bootstrap: Vec::new(),
            stun: Vec::new(),
            rendezvous: 2,
            refresh_secs: 120,
            keep_alive_secs: 15,
            network_check_secs: 25,
            retry_secs: 1,
            retry_max_secs: 30,
            reach_concurrency: 8,
            reach_per_minute: 120,
            limits: Default::default(),
            other_address: None,
            turn: Vec::new(),
            turn_user: None,
            turn_password: None,
            turn_secret: None,
            turn_tcp_after_ms: 2000,
            other_port: None,
            relay: RelayPolicy::Ask,
            dht_serve: true,
            relay_after_ms: 1000,
            port_prediction: true,
            upgrade_secs: 60,
            relay_server: RelayServerConfig::default(),
            mailbox: MailboxToml::default(),
            control: Default::default(),
            download_dir: None,
        }
    }
}

/// Flags shared by `daemon` and `bootstrap`.
#[derive(Debug, clap::Args)]
pub(super) struct DaemonArgs {
    #[command(flatten)]
    data_dir: DataDir,
    /// TOML configuration file (keys: listen, bootstrap, stun, rendezvous, refresh_secs,
    /// keep_alive_secs, network_check_secs, retry_secs, other_address, other_port, turn,
    /// turn_user, turn_password, turn_tcp_after_ms, relay, relay_after_ms, port_prediction, upgrade_secs,
    /// dht_serve, and the tables
    /// `[limits]` (spec/06-node.md §5), `[relay_server]` (spec/07-relay.md §1.4), `[mailbox]`
    /// (spec/09-mailbox.md §7) and `[control]` (spec/10-control.md §5)).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address of the node's one UDP socket [default: 0.0.0.0:0].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// A DHT bootstrap node, `ADDR@FINGERPRINT` (repeatable).
    #[arg(long, value_name = "ADDR@FP")]
    bootstrap: Vec<String>,
    /// An RFC 5780 STUN server for NAT discovery, e.g. coturn with two addresses
    /// (repeatable; the first that answers is used).
    #[arg(long, value_name = "ADDR")]
    stun: Vec<SocketAddr>,
    /// Be an RFC 5780 NAT discovery server too (for `dna bootstrap`): this second address
    /// of the host, with --listen's port and --other-port [default: off].
    #[arg(long, value_name = "IP")]
    other_address: Option<IpAddr>,
    /// The RFC 5780 server's second port [default: the --listen port + 1].
    #[arg(long, value_name = "PORT")]
    other_port: Option<u16>,
    /// A TURN server (RFC 8656), HOST:PORT (repeatable: the next is used when one fails):
    /// the node allocates a relayed address there from its one socket and keeps it, over
    /// TCP when UDP gets no answer; needs --turn-user and --turn-password, or
    /// --turn-secret [default: none].
    #[arg(long, value_name = "HOST:PORT")]
    turn: Vec<String>,
    /// The TURN servers' long-term credential: user name.
    #[arg(long, value_name = "USER", requires = "turn")]
    turn_user: Option<String>,
    /// The TURN servers' long-term credential: password.
    #[arg(long, value_name = "PASSWORD", requires = "turn")]
    turn_password: Option<String>,
    /// coturn's static-auth-secret (its use-auth-secret "REST API" scheme): time-limited
    /// credentials are made from it instead of a password.
    #[arg(
        long,
        value_name = "SECRET",
        requires = "turn",
        conflicts_with = "turn_password"
    )]
    turn_secret: Option<String>,
    /// Whether relays may carry this node's sessions: ask (direct first; a relay only for
    /// contacts allowed with `dna contacts allow-relay`), auto (direct first, then a
    /// bootstrap node's relay, then TURN, for anyone), never, or only (always relayed;
    /// peers never learn this node's addresses) [default: ask].
    #[arg(long, value_name = "POLICY")]
    relay: Option<RelayPolicy>,
    /// Do not relay for others (`dna bootstrap` relays for its registered clients by
    /// default; the same as `[relay_server] enabled = false`).
    #[arg(long)]
    no_relay_server: bool,
    /// Hold other nodes' offline mailbox items (for `dna bootstrap` in a small deployment;
    /// the same as `[mailbox] store = true`) [default: off for `dna bootstrap`].
    #[arg(long)]
    store_mailbox: bool,
    /// Never predict ports: toward a symmetric NAT from a port-restricted cone (or the
    /// other way) the session then goes through a relay (the same as `port_prediction =
    /// false`; spec/05-nat.md §5.5) [default: predict].
    #[arg(long)]
    no_port_prediction: bool,
}

impl DaemonArgs {
    fn resolve(&self) -> Result<(PathBuf, DaemonConfig), String> {
        let mut cfg = match &self.config {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?
            }
            None => DaemonConfig::default(),
        };
        if let Some(l) = self.listen {
            cfg.listen = l;
        }
        cfg.bootstrap.extend(self.bootstrap.iter().cloned());
        cfg.stun.extend(self.stun.iter().copied());
        cfg.other_address = self.other_address.or(cfg.other_address);
        cfg.other_port = self.other_port.or(cfg.other_port);
        if !self.turn.is_empty() {
            cfg.turn = self.turn.clone();
        }
        cfg.turn_user = self.turn_user.clone().or(cfg.turn_user);
        cfg.turn_password = self.turn_password.clone().or(cfg.turn_password);
        cfg.turn_secret = self.turn_secret.clone().or(cfg.turn_secret);
        cfg.relay = self.relay.unwrap_or(cfg.relay);
        if self.no_relay_server {
            cfg.relay_server.enabled = Some(false);
        }
        if self.store_mailbox {
            cfg.mailbox.store = Some(true);
        }
        if self.no_port_prediction {
            cfg.port_prediction = false;
        }
        Ok((self.data_dir.resolve(), cfg))
    }
}

fn parse_bootstrap(list: &[String]) -> Result<Vec<(SocketAddr, Fingerprint)>, String> {
    list.iter()
        .map(|s| {
            let (a, f) = s
                .split_once('@')
                .ok_or_else(|| format!("bootstrap {s:?}: expected ADDR@FINGERPRINT"))?;
            let addr = a.parse().map_err(|e| format!("bootstrap {s:?}: {e}"))?;
            let fp = f.parse().map_err(|e| format!("bootstrap {s:?}: {e}"))?;
            Ok((addr, fp))
        })
        .collect()
}

/// The `ADDR@FINGERPRINT` others pass to `--bootstrap` to join through this node. A
/// wildcard listen address has no address to show: `<PUBLIC IP>` stands in for it.
fn join_line(addr: std::net::SocketAddr, fp: &Fingerprint) -> String {
    if addr.ip().is_unspecified() {
        format!("<PUBLIC IP>:{}@{fp}", addr.port())
    } else {
        format!("{addr}@{fp}")
    }
}

fn emit(v: Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// `dna config show`: the effective configuration — the file given with `--config`, the
/// flags over it, every other key at its default — as TOML, ready to be saved as a config
/// file. `bootstrap`: with `dna bootstrap`'s defaults where they differ.
pub(super) fn show_config(args: DaemonArgs, bootstrap: bool) -> ExitCode {
    let (dir, mut cfg) = match args.resolve() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Resolve the role-dependent defaults so the file says what runs.
    cfg.relay_server.enabled = Some(cfg.relay_server.enabled.unwrap_or(bootstrap));
    match toml::to_string_pretty(&cfg) {
        Ok(text) => {
            println!(
                "# dna {}: effective configuration (data directory {})\n{text}",
                if bootstrap { "bootstrap" } else { "daemon" },
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `dna daemon` (`bootstrap` false) or `dna bootstrap`.
pub(super) fn run(args: DaemonArgs, bootstrap: bool) -> ExitCode {
    init_logs();
    let (dir, cfg) = match args.resolve() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(dir, cfg, bootstrap)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::disallowed_methods)] // the CLI's run loop is a driver: it reads the clock
async fn serve(dir: PathBuf, cfg: DaemonConfig, bootstrap: bool) -> Result<(), String> {
    let seeds = parse_bootstrap(&cfg.bootstrap)?;
    let (identity, _) = Identity::load_or_create(&dir, &mut OsRng).map_err(|e| e.to_string())?;
    let mut dht_config = DhtConfig {
        server: bootstrap,
        ..DhtConfig::default()
    };
    // Seed 001: bootstrap nodes help with discovery and store no messages, unless told.
    dht_config.store.mailbox = cfg.mailbox.store.unwrap_or(!bootstrap);
    let node_cfg = NodeConfig {
        dht: Some(DhtSettings {
            bootstrap: seeds.clone(),
            config: dht_config,
            data_dir: Some(dir.join("dht")),
        }),
        store_dir: Some(dir.clone()),
        keep_alive: Duration::from_secs(cfg.keep_alive_secs.max(1)),
        rendezvous_server: bootstrap,
        relay_server: cfg.relay_server.limits(bootstrap),
        relay_policy: cfg.relay,
        relay_after: Duration::from_millis(cfg.relay_after_ms),
        port_prediction: cfg.port_prediction,
        upgrade_interval: Duration::from_secs(cfg.upgrade_secs.max(1)),
        presence_refresh: Duration::from_secs(cfg.refresh_secs.max(10)),
        // A bootstrap node queues nothing of its own to reach.
        retry: (!bootstrap).then(|| RetryConfig {
            initial: Duration::from_secs(cfg.retry_secs.max(1)),
            max: Duration::from_secs(cfg.retry_max_secs.max(1)),
            concurrent: cfg.reach_concurrency,
            per_minute: cfg.reach_per_minute,
        }),
        discovery_server: cfg.other_address.map(|other_ip| DiscoveryServerConfig {
            other_ip,
            other_port: cfg.other_port,
        }),
        ..NodeConfig::listening_on(cfg.listen)
    };
    let mut node_cfg = node_cfg;
    cfg.limits.apply(&mut node_cfg);
    node_cfg.mailbox.after = Duration::from_secs(cfg.mailbox.after_secs);
    node_cfg.mailbox.poll = Duration::from_secs(cfg.mailbox.poll_secs.max(1));
    if let Some((servers, creds)) = turn_settings(&cfg, node_cfg.listen)? {
        node_cfg.turn_server = servers.first().copied();
        node_cfg.turn_fallbacks = servers[1..].to_vec();
        node_cfg.turn_tcp_after =
            (cfg.turn_tcp_after_ms > 0).then(|| Duration::from_millis(cfg.turn_tcp_after_ms));
        node_cfg.turn_credentials = Some(creds);
    }
    // The routine (join, mailbox, discovery, registration, presence; again every refresh
    // or when the network changed) is the node's own: `node::routine`, spec/06 §1.4.
    node_cfg.routine = Some(RoutineConfig {
        seeds: seeds.clone(),
        stun: cfg.stun.clone(),
        refresh: Duration::from_secs(cfg.refresh_secs.max(10)),
        network_check: Duration::from_secs(cfg.network_check_secs.max(1)),
        rendezvous: cfg.rendezvous,
        dht_serve: cfg.dht_serve,
        relay: cfg.relay,
        messenger: !bootstrap,
    });
    // File transfer (spec/11): a messenger's application; a bootstrap node runs none.
    if !bootstrap {
        node_cfg.apps.push(dna_p2p::crypto::MessageKind::FILE);
    }
    let mut node = Node::bind(identity, node_cfg)
        .await
        .map_err(|e| e.to_string())?;
    let (files, mut file_events) = match node.app(dna_p2p::crypto::MessageKind::FILE) {
        Some(app) => {
            let fcfg = dna_p2p::files::FilesConfig {
                state_dir: dir.join("files"),
                download_dir: cfg
                    .download_dir
                    .clone()
                    .unwrap_or_else(|| dir.join("downloads")),
            };
            let (f, ev) = dna_p2p::files::start(app, fcfg);
            (Some(f), Some(ev))
        }
        None => (None, None),
    };
    let h = node.handle();
    h.ready().await;
    let table = h.dht_table_size().await;
    let hub = std::sync::Arc::new(crate::control::Hub::new(&cfg.control));
    let control =
        crate::control::listen(&dir, h.clone(), hub.clone(), files).map_err(|e| e.to_string())?;
    crate::control::spawn_watch(h.clone(), hub.clone());
    let st = h.nat_status();
    let join = join_line(h.local_addr(), &h.fingerprint());
    if bootstrap {
        // What operators hand out (README, "Deploying").
        eprintln!("dna bootstrap: others join with --bootstrap {join}");
    }
    emit(json!({
        "event": "ready",
        "fp": h.fingerprint().to_string(),
        "addr": h.local_addr().to_string(),
        "join": join,
        "role": if bootstrap { "bootstrap" } else { "daemon" },
        "dht_table": table,
        "nat": st.class.map(|c| c.name()),
        "mapping": st.class.map(|c| format!("{:?}", c.mapping)),
        "filtering": st.class.map(|c| format!("{:?}", c.filtering)),
        "sequential": st.class.map(|c| c.sequential),
        "reachable": st.presence().reachable,
        "rendezvous": st.rendezvous.len(),
    }));
    // One listener for the whole loop: a `ctrl_c()` made anew each turn is not listening
    // while an event is printed, and a SIGINT that arrives then is lost.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // SIGTERM (systemd, `kill`) shuts down as cleanly as SIGINT.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("SIGTERM handler: {e}"))?;
    loop {
        tokio::select! {
            ev = node.next_event() => match ev {
                // One JSON line per event: on stdout and to control subscribers.
                Some(ev) => if let Some(v) = hub.node_event(&ev) { emit(v) },
                None => break,
            },
            Some(ev) = async { file_events.as_mut()?.recv().await } => {
                let v = crate::control::file_event_json(&ev);
                hub.publish(&v);
                emit(v);
            }
            _ = &mut ctrl_c => break,
            _ = term.recv() => break,
        }
    }
    tracing::info!("shutting down");
    let _ = std::fs::remove_file(&control);
    node.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

/// The TURN servers (resolved, of the socket's family) and their credentials, if any are
/// configured.
fn turn_settings(
    cfg: &DaemonConfig,
    listen: std::net::SocketAddr,
) -> Result<Option<(Vec<std::net::SocketAddr>, dna_p2p::nat::turn::Credentials)>, String> {
    use dna_p2p::nat::turn::{credentials::DEFAULT_REST_TTL, Credentials};
    if cfg.turn.is_empty() {
        return Ok(None);
    }
    let creds = match (&cfg.turn_user, &cfg.turn_password, &cfg.turn_secret) {
        (_, Some(_), Some(_)) => {
            return Err("--turn-password and --turn-secret: one of them".into())
        }
        (Some(u), Some(p), None) => Credentials::Static {
            username: u.clone(),
            password: p.clone(),
        },
        (user, None, Some(secret)) => Credentials::Rest {
            secret: secret.clone(),
            user: user.clone().unwrap_or_default(),
            ttl: DEFAULT_REST_TTL,
        },
        _ => return Err("--turn needs --turn-user and --turn-password, or --turn-secret".into()),
    };
    // A dual-stack socket (`[::]`) reaches servers of both families.
    let dual = listen.is_ipv6() && listen.ip().is_unspecified();
    let mut servers = Vec::new();
    for t in &cfg.turn {
        let server = std::net::ToSocketAddrs::to_socket_addrs(t.as_str())
            .map_err(|e| format!("--turn {t}: {e}"))?
            .find(|a| dual || a.is_ipv4() == listen.is_ipv4())
            .ok_or_else(|| format!("--turn {t}: no address of the socket's family"))?;
        if !servers.contains(&server) {
            servers.push(server);
        }
    }
    Ok(Some((servers, creds)))
}

/// `"x"` or `["x", "y"]` in the config file.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `turn` is one server or a list; the password or the REST secret, not both.
    #[test]
    fn turn_servers_and_credentials_from_the_config_file() {
        let one: DaemonConfig =
            toml::from_str("turn = \"127.0.0.1:3478\"\nturn_user = \"u\"\nturn_password = \"p\"")
                .unwrap();
        let listen = "0.0.0.0:0".parse().unwrap();
        let (servers, creds) = turn_settings(&one, listen).unwrap().unwrap();
        assert_eq!(servers, vec!["127.0.0.1:3478".parse().unwrap()]);
        assert!(matches!(
            creds,
            dna_p2p::nat::turn::Credentials::Static { .. }
        ));
        let many: DaemonConfig = toml::from_str(
            "turn = [\"127.0.0.1:3478\", \"127.0.0.2:3478\", \"127.0.0.1:3478\"]\nturn_secret = \"s\"",
        )
        .unwrap();
        let (servers, creds) = turn_settings(&many, listen).unwrap().unwrap();
        assert_eq!(servers.len(), 2, "duplicates dropped");
        assert!(matches!(
            creds,
            dna_p2p::nat::turn::Credentials::Rest { .. }
        ));
        let both = DaemonConfig {
            turn_password: Some("p".into()),
            ..many
        };
        assert!(turn_settings(&both, listen).is_err());
        let none = DaemonConfig {
            turn_password: None,
            turn_secret: None,
            ..both
        };
        assert!(turn_settings(&none, listen).is_err());
        assert!(turn_settings(&DaemonConfig::default(), listen)
            .unwrap()
            .is_none());
    }
}

//! `dna daemon` (a messenger node) and `dna bootstrap` (a public DHT, STUN and rendezvous
//! node): configuration, start-up sequence, event output and the control socket.
//!
//! Both print one JSON object per line on stdout for each event (`ready`, `message`,
//! `peer_up`, `peer_down`, `acked`); logs go to stderr (`RUST_LOG` filters them). The
//! daemon listens on `<data dir>/control.sock` for one-line JSON requests, which
//! `dna send` and `dna status` make (spec/05-nat.md §6 lists the requests).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use rand_core::OsRng;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use dna_p2p::crypto::{Fingerprint, Identity};
use dna_p2p::daemon::{DhtSettings, Node, NodeConfig, NodeEvent, NodeHandle, Reached};
use dna_p2p::dht::DhtConfig;

use super::DataDir;

/// Settings of `dna daemon` and `dna bootstrap`, from `--config FILE` (TOML) and flags
/// (flags win). Every field has a default.
#[derive(Debug, Clone, Deserialize)]
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
    /// 120 s; presence records live 50 min, registrations 5 min).
    pub refresh_secs: u64,
    /// QUIC keep-alive on every connection, to hold NAT mappings (default 15 s: NATs that
    /// forget a silent UDP flow after 30 s are common).
    pub keep_alive_secs: u64,
    /// Check this often whether our addresses changed (host addresses, or the mapping the
    /// first STUN server sees); a change triggers discovery, registration and presence at
    /// once (default 25 s).
    pub network_check_secs: u64,
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
        }
    }
}

/// Flags shared by `daemon` and `bootstrap`.
#[derive(Debug, clap::Args)]
pub(super) struct DaemonArgs {
    #[command(flatten)]
    data_dir: DataDir,
    /// TOML configuration file (keys: listen, bootstrap, stun, rendezvous, refresh_secs,
    /// keep_alive_secs, network_check_secs).
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

async fn serve(dir: PathBuf, cfg: DaemonConfig, bootstrap: bool) -> Result<(), String> {
    let seeds = parse_bootstrap(&cfg.bootstrap)?;
    let (identity, _) = Identity::load_or_create(&dir, &mut OsRng).map_err(|e| e.to_string())?;
    let dht_config = DhtConfig {
        server: bootstrap,
        ..DhtConfig::default()
    };
    let node_cfg = NodeConfig {
        dht: Some(DhtSettings {
            bootstrap: seeds.clone(),
            config: dht_config,
            data_dir: Some(dir.join("dht")),
        }),
        keep_alive: Duration::from_secs(cfg.keep_alive_secs.max(1)),
        rendezvous_server: bootstrap,
        ..NodeConfig::listening_on(cfg.listen)
    };
    let node = Node::bind(identity, node_cfg)
        .await
        .map_err(|e| e.to_string())?;
    let h = node.handle();
    let table = if seeds.is_empty() {
        0
    } else {
        h.dht_bootstrap().await.unwrap_or(0)
    };
    if !bootstrap {
        refresh(&h, &cfg, &seeds).await;
    }
    let control = dir.join("control.sock");
    let _ = std::fs::remove_file(&control);
    let listener = tokio::net::UnixListener::bind(&control).map_err(|e| e.to_string())?;
    {
        let h = h.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(control_conn(h.clone(), stream));
            }
        });
    }
    let st = h.nat_status();
    emit(json!({
        "event": "ready",
        "fp": h.fingerprint().to_string(),
        "addr": h.local_addr().to_string(),
        "role": if bootstrap { "bootstrap" } else { "daemon" },
        "dht_table": table,
        "nat": st.class.map(|c| c.name()),
        "mapping": st.class.map(|c| format!("{:?}", c.mapping)),
        "filtering": st.class.map(|c| format!("{:?}", c.filtering)),
        "reachable": st.presence().reachable,
        "rendezvous": st.rendezvous.len(),
    }));
    if !bootstrap {
        let (h, cfg, seeds) = (h.clone(), cfg.clone(), seeds.clone());
        tokio::spawn(async move {
            let every = Duration::from_secs(cfg.refresh_secs.max(10));
            let check = Duration::from_secs(cfg.network_check_secs.max(1));
            let probe = cfg.stun.first().copied().or(seeds.first().map(|s| s.0));
            let mut next_refresh = tokio::time::Instant::now() + every;
            loop {
                tokio::time::sleep(check.min(every)).await;
                let changed = match probe {
                    Some(server) => h.network_changed(server).await,
                    None => false,
                };
                if changed {
                    tracing::info!("our addresses changed: discovering and publishing again");
                }
                if changed || tokio::time::Instant::now() >= next_refresh {
                    refresh(&h, &cfg, &seeds).await;
                    next_refresh = tokio::time::Instant::now() + every;
                }
            }
        });
    }
    let mut node = node;
    loop {
        tokio::select! {
            ev = node.next_event() => match ev {
                Some(ev) => print_event(ev),
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let _ = std::fs::remove_file(&control);
    node.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

/// Discovery, rendezvous registration and presence (spec/05 §2, §4): at start and every
/// `refresh_secs`, so a changed network is noticed.
async fn refresh(h: &NodeHandle, cfg: &DaemonConfig, seeds: &[(SocketAddr, Fingerprint)]) {
    let mut classified = false;
    for server in &cfg.stun {
        match h.discover_nat(*server).await {
            Ok(c) => {
                tracing::info!(nat = c.name(), mapped = %c.mapped, "NAT discovery");
                classified = true;
                break;
            }
            Err(e) => tracing::warn!(%server, error = %e, "NAT discovery failed"),
        }
    }
    if !classified {
        // No RFC 5780 server: candidates from the bootstrap nodes' STUN answers.
        let servers: Vec<SocketAddr> = seeds.iter().map(|(a, _)| *a).collect();
        match h.gather_candidates(&servers).await {
            Ok(same) => tracing::info!(
                endpoint_independent_mapping = ?same,
                "candidates from bootstrap STUN (NAT class unknown: using rendezvous)"
            ),
            Err(e) => tracing::warn!(error = %e, "no STUN answer: host candidates only"),
        }
    }
    let reachable = h.nat_status().presence().reachable;
    if !reachable {
        let mut ok = 0;
        for (addr, fp) in seeds {
            if ok >= cfg.rendezvous {
                break;
            }
            match h.register_rendezvous(*addr, *fp).await {
                Ok(_) => ok += 1,
                Err(e) => tracing::warn!(rendezvous = %addr, error = %e, "registration failed"),
            }
        }
    }
    if let Err(e) = h.announce_presence().await {
        tracing::warn!(error = %e, "publishing presence failed");
    }
}

fn print_event(ev: NodeEvent) {
    let v = match ev {
        NodeEvent::Message { from, id, body, .. } => json!({
            "event": "message",
            "from": from.to_string(),
            "id": hex::encode(id.0),
            "text": String::from_utf8_lossy(&body),
        }),
        NodeEvent::PeerUp { peer, path, rtt } => json!({
            "event": "peer_up",
            "peer": peer.to_string(),
            "path": format!("{path:?}"),
            "rtt_ms": rtt.as_secs_f64() * 1e3,
        }),
        NodeEvent::PeerDown { peer, reason, .. } => json!({
            "event": "peer_down", "peer": peer.to_string(), "reason": reason,
        }),
        NodeEvent::Acked { peer, ids } => json!({
            "event": "acked", "peer": peer.to_string(), "count": ids.len(),
        }),
        _ => return,
    };
    emit(v);
}

async fn control_conn(h: NodeHandle, stream: tokio::net::UnixStream) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match serde_json::from_str::<Value>(&line) {
            Ok(req) => control_request(&h, &req).await,
            Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
        };
        if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
            break;
        }
    }
}

/// One control request: `{"cmd":"status"}` or `{"cmd":"send","to":FP,"text":TEXT}`.
async fn control_request(h: &NodeHandle, req: &Value) -> Value {
    match req.get("cmd").and_then(Value::as_str) {
        Some("status") => {
            let st = h.nat_status();
            json!({
                "ok": true,
                "fp": h.fingerprint().to_string(),
                "addr": h.local_addr().to_string(),
                "nat": st.class.map(|c| c.name()),
                "mapping": st.class.map(|c| format!("{:?}", c.mapping)),
                "filtering": st.class.map(|c| format!("{:?}", c.filtering)),
                "port_preserved": st.class.map(|c| c.port_preserved),
                "reachable": st.presence().reachable,
                "candidates": st.candidates.iter().map(|c| json!({"kind": c.kind.name(), "addr": c.addr.to_string()})).collect::<Vec<_>>(),
                "rendezvous": st.rendezvous.iter().map(|(a, _)| a.to_string()).collect::<Vec<_>>(),
                "connections": h.connection_count(),
                "rendezvous_role": h.rendezvous_stats(),
            })
        }
        Some("send") => {
            let to = req.get("to").and_then(Value::as_str).unwrap_or_default();
            let text = req.get("text").and_then(Value::as_str).unwrap_or_default();
            let Ok(to) = to.parse::<Fingerprint>() else {
                return json!({"ok": false, "error": "bad fingerprint in \"to\""});
            };
            send(h, to, text).await
        }
        _ => json!({"ok": false, "error": "unknown cmd (expected status or send)"}),
    }
}

async fn send(h: &NodeHandle, to: Fingerprint, text: &str) -> Value {
    let connected = h.peer_info(&to).is_some_and(|p| p.connected);
    let (path, via) = if connected {
        ("direct", "connected")
    } else {
        match h.reach(to).await {
            Ok(Reached::Direct { kind, .. }) => ("direct", kind.name()),
            Ok(Reached::Punched { kind, .. }) => ("direct", kind.name()),
            Ok(Reached::RelayNeeded) => ("relay-needed", "none"),
            Ok(_) => ("failed", "none"),
            Err(e) => return json!({"ok": false, "path": "failed", "error": e.to_string()}),
        }
    };
    match h.send(to, Bytes::copy_from_slice(text.as_bytes())) {
        Ok(id) => json!({"ok": true, "id": hex::encode(id.0), "path": path, "via": via}),
        Err(e) => json!({"ok": false, "path": path, "error": e.to_string()}),
    }
}

/// `dna send` / `dna status`: one request to a running daemon's control socket.
pub(super) fn control(dir: &Path, req: Value) -> ExitCode {
    use std::io::{BufRead, Write};
    let path = dir.join("control.sock");
    let mut s = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: no daemon at {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    if writeln!(s, "{req}").is_err() {
        return ExitCode::FAILURE;
    }
    let mut line = String::new();
    if std::io::BufReader::new(&s).read_line(&mut line).is_err() {
        return ExitCode::FAILURE;
    }
    print!("{line}");
    let ok = serde_json::from_str::<Value>(&line)
        .ok()
        .and_then(|v| v.get("ok").and_then(Value::as_bool))
        .unwrap_or(false);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

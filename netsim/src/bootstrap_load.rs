//! One real `dna bootstrap` process under N concurrent clients on loopback (issue 11,
//! "Bootstrap under load"; `netsim bootstrap-load --clients N`).
//!
//! The bootstrap node is the release `dna` binary in its own process; the clients are real
//! nodes in this process — each its own identity, UDP socket and QUIC endpoint, bound to
//! its own loopback address (127.A.B.1, one /24 each, as clients from distinct networks
//! would be: the bootstrap's per-source and per-network limits see N sources) — that join
//! the DHT through the bootstrap (as DHT clients: the bootstrap is the only server, so it
//! answers every request), publish their presence record, then look up other clients'
//! presence records. The figures: publishes and lookups per second the bootstrap answered,
//! how many failed, and its memory (`VmHWM` − `VmRSS` before the clients, per client).
//! Both processes share the machine's cores: the rates are a floor for the bootstrap alone.
//! Every client stays connected; the lookups in flight at once are bounded (`--inflight`,
//! default 64): with all N at once the client process itself starves on two cores and its
//! lookups time out (a lone server's 250 ms request timeout, spec/04-dht.md §3) before the
//! bootstrap is the limit — measured, with 100 clients and no bound, 75–439 of 2,000.

// A benchmark of real processes: it reads the wall clock.
#![allow(clippy::disallowed_methods)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dna_p2p::crypto::{Fingerprint, Identity};
use dna_p2p::daemon::{DhtSettings, Node, NodeConfig};
use rand::rngs::OsRng;
use rand::Rng;

use crate::testbed::DnaProcess;

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// Clients that joined.
    pub clients: usize,
    /// Presence records published (answered STORED by the bootstrap).
    pub published: u64,
    /// Publishes that failed.
    pub publish_failed: u64,
    /// Publishes per second over the publish phase.
    pub publishes_per_s: f64,
    /// Lookups that found the record.
    pub lookups: u64,
    /// Lookups that failed or found nothing.
    pub lookup_failed: u64,
    /// Lookups per second over the lookup phase.
    pub lookups_per_s: f64,
    /// The bootstrap's resident memory before the clients came, MiB.
    pub base_mib: f64,
    /// Its peak resident memory, MiB.
    pub peak_mib: f64,
    /// Why lookups failed, and how often.
    pub why: std::collections::BTreeMap<String, u64>,
}

impl LoadReport {
    /// Peak memory growth per connected client, KiB.
    pub fn kib_per_client(&self) -> f64 {
        (self.peak_mib - self.base_mib) * 1024.0 / self.clients.max(1) as f64
    }

    /// The `RESULT` line.
    pub fn line(&self) -> String {
        format!(
            "RESULT bootstrap_load clients={} lookups_per_s={:.0} lookups={} lookup_failed={} \
             publishes_per_s={:.0} published={} publish_failed={} bootstrap_peak_mib={:.1} \
             kib_per_client={:.1}",
            self.clients,
            self.lookups_per_s,
            self.lookups,
            self.lookup_failed,
            self.publishes_per_s,
            self.published,
            self.publish_failed,
            self.peak_mib,
            self.kib_per_client()
        )
    }
}

/// A `/proc/<pid>/status` field in MiB.
fn proc_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Client `i`'s loopback address: 127.A.B.1, a /24 of its own.
fn client_addr(i: usize) -> SocketAddr {
    let n = i + 256; // 127.1.0.1 first: 127.0.0.0/24 is the bootstrap's
    SocketAddr::from((Ipv4Addr::new(127, (n >> 8) as u8, n as u8, 1), 0))
}

/// Runs `clients` clients, each doing `lookups` lookups (at most `inflight` at once over
/// all clients), against a fresh `dna bootstrap` (`dna`) with its data in `data`.
pub async fn run(
    dna: &Path,
    data: &Path,
    clients: usize,
    lookups: usize,
    inflight: usize,
) -> Result<LoadReport, String> {
    if clients == 0 || clients > 60_000 {
        return Err("--clients: 1 to 60,000".into());
    }
    // Room for every client's connection.
    let cfg = data.join("boot.toml");
    std::fs::write(
        &cfg,
        format!("[limits]\nmax_connections = {}\n", clients + 64),
    )
    .map_err(|e| e.to_string())?;
    let boot = DnaProcess::start_ready(
        dna,
        "bootstrap",
        &data.join("boot"),
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--config".into(),
            cfg.display().to_string(),
        ],
        Duration::from_secs(60),
    )?;
    let ready = boot.wait_event("ready", Duration::ZERO).unwrap_or_default();
    let seed: (SocketAddr, Fingerprint) = ready["join"]
        .as_str()
        .and_then(|j| j.split_once('@'))
        .and_then(|(a, f)| Some((a.parse().ok()?, f.parse().ok()?)))
        .ok_or_else(|| format!("no join line in {ready}"))?;
    let pid = boot.pid();
    let base_mib = proc_mib(pid, "VmRSS:");

    // Join: a few dozen handshakes at a time.
    let mut nodes: Vec<Arc<Node>> = Vec::with_capacity(clients);
    for chunk in (0..clients).collect::<Vec<_>>().chunks(64) {
        let joins: Vec<_> = chunk
            .iter()
            .map(|&i| {
                tokio::spawn(async move {
                    let cfg = NodeConfig {
                        dht: Some(DhtSettings::joining(vec![seed], false)),
                        ..NodeConfig::listening_on(client_addr(i))
                    };
                    let n = Node::bind(Identity::generate(&mut OsRng), cfg)
                        .await
                        .map_err(|e| format!("client {i}: {e}"))?;
                    n.dht_bootstrap()
                        .await
                        .map_err(|e| format!("client {i} join: {e}"))?;
                    Ok::<_, String>(n)
                })
            })
            .collect();
        for j in joins {
            nodes.push(Arc::new(j.await.map_err(|e| e.to_string())??));
        }
    }

    let live = |what: &str| {
        if std::env::var_os("DNA_LOAD_STATUS").is_some() {
            let st = boot
                .control(&serde_json::json!({"cmd": "status"}))
                .unwrap_or_default();
            eprintln!(
                "{what}: bootstrap connections {}",
                st["limits"]["connections"]
            );
        }
    };
    live("joined");
    // Every client publishes its presence at once.
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let tasks: Vec<_> = nodes
        .iter()
        .map(|n| {
            let (n, ok, failed) = (n.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                match n.announce_presence().await {
                    Ok(stored) if stored > 0 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let publish_s = start.elapsed().as_secs_f64();
    let (published, publish_failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));

    live("published");
    // Every client looks up `lookups` other clients' presence, all at once.
    let fps: Arc<Vec<Fingerprint>> = Arc::new(nodes.iter().map(|n| n.fingerprint()).collect());
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let why = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let gate = Arc::new(tokio::sync::Semaphore::new(inflight.max(1)));
    let start = Instant::now();
    let tasks: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (n, fps, ok, failed) = (n.clone(), fps.clone(), ok.clone(), failed.clone());
            let targets: Vec<usize> = (0..lookups)
                .map(|_| {
                    let t = rand::thread_rng().gen_range(0..fps.len());
                    if t == i {
                        (t + 1) % fps.len()
                    } else {
                        t
                    }
                })
                .collect();
            let (why, gate) = (why.clone(), gate.clone());
            tokio::spawn(async move {
                for t in targets {
                    let Ok(_slot) = gate.acquire().await else {
                        return;
                    };
                    let r = n.find_peer(fps[t]).await;
                    if let Ok(Some(_)) = r {
                        ok.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    failed.fetch_add(1, Ordering::Relaxed);
                    let what = match r {
                        Err(e) => e.to_string(),
                        _ => "not found".to_owned(),
                    };
                    let mut w = why.lock().unwrap_or_else(|p| p.into_inner());
                    *w.entry(what).or_insert(0u64) += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let lookup_s = start.elapsed().as_secs_f64();
    let peak_mib = proc_mib(pid, "VmHWM:");
    let (found, lookup_failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let why = std::mem::take(&mut *why.lock().unwrap_or_else(|p| p.into_inner()));
    if std::env::var_os("DNA_LOAD_STATUS").is_some() {
        // Debugging: what the bootstrap counted.
        let st = boot.control(&serde_json::json!({"cmd": "status"}));
        eprintln!("bootstrap status: {st:?}");
    }
    drop(nodes);
    drop(boot);
    Ok(LoadReport {
        clients,
        published,
        publish_failed,
        publishes_per_s: published as f64 / publish_s.max(1e-9),
        lookups: found,
        lookup_failed,
        lookups_per_s: found as f64 / lookup_s.max(1e-9),
        base_mib,
        peak_mib,
        why,
    })
}

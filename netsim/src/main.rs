//! `netsim` — run dna-p2p's sans-IO cores in simulation. See `netsim --help`.
#![forbid(unsafe_code)]
// The command is a driver: it measures wall time.
#![allow(clippy::disallowed_methods)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use netsim::dht_sim::{run, DhtSimConfig, Evil};
use netsim::LinkModel;
use serde_json::json;

/// Seeded simulations of the dna-p2p protocols. Same seed, same result.
#[derive(Debug, Parser)]
#[command(name = "netsim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Kademlia at scale: N nodes join, some crash, then random lookups; prints success
    /// rate, rounds and messages per lookup, simulated latency, wall time, peak memory.
    Dht {
        /// Nodes in the network.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Lookups to measure.
        #[arg(long, default_value_t = 200)]
        lookups: usize,
        /// Fraction of nodes that crash without notice before the lookups (0.0–1.0).
        #[arg(long, default_value_t = 0.0)]
        churn: f64,
        /// Fraction of nodes that misbehave.
        #[arg(long, default_value_t = 0.0)]
        evil: f64,
        /// Misbehaviour: `drop` (never answer), `wrong` (answer with random nodes) or `flood`
        /// (send forged STOREs).
        #[arg(long, default_value = "drop")]
        evil_kind: String,
        /// One-way link latency in ms (plus up to half of it as jitter).
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
        /// Datagram loss probability.
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Partition into two halves for this many seconds before the lookups, then heal and
        /// wait 600 s; lookups then cross the former cut.
        #[arg(long)]
        partition_s: Option<u64>,
        /// Seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The NAT matrix (as root): builds the namespace test bed with kernel NATs of six
    /// types (and the extra ones), coturn and two bootstrap nodes, runs every pair of the six
    /// (21) with real `dna` daemons — b publishes presence, a sends it a message — tears the
    /// bed down, and prints per pair the path (direct / relay-needed / failed) and the time
    /// to delivery.
    NatMatrix {
        /// One JSON object per pair: {"a","b","path","ms","via"}.
        #[arg(long)]
        json: bool,
        /// The `dna` binary [default: built now with cargo, same profile as this command].
        #[arg(long)]
        dna: Option<std::path::PathBuf>,
        /// Run only this pair, `TYPE:TYPE` (repeatable), e.g. `symmetric:full-cone`; any
        /// type by name, also the extra ones (symmetric-seq, ipv6-firewall, same-lan,
        /// same-lan-hairpin), which the default matrix leaves out.
        #[arg(long, visible_alias = "pair", value_name = "A:B")]
        only: Vec<String>,
        /// Both daemons of each pair keep an allocation on the bed's coturn (its first
        /// address): pairs without a direct path go through it (`path` "turn").
        #[arg(long)]
        turn: bool,
        /// Run each chosen pair this many times, one attempt after the other with fresh
        /// daemons (fresh NAT mappings), print every attempt (with the port-prediction
        /// probes both sides sent) and, last, one line per pair: {"pair","attempts",
        /// "direct","probes_p50","ms_p50"} — attempts whose session reached a direct path,
        /// at once or within 5 s of a first message through a relay, and over those the
        /// median probes and time from `send` until the session was direct.
        #[arg(long, value_name = "N", default_value_t = 1)]
        repeat: usize,
    },
    /// Reaching a peer through simulated NATs of the test bed's types (the matrix's six with
    /// symmetric-seq for udp-blocked): the node's own
    /// reaching code (the caller's `Reach`, the callee's answer, punching with port
    /// prediction, the bundled relay's server) on a simulated clock. Prints per pair what
    /// the caller's reach reported, the first path and when (simulated ms since the reach
    /// began), when the session was direct, and the checks sent. Fails if a pair that can
    /// go direct did not, or (without loss) a pair's first path took `relay_after` (1 s).
    Reach {
        /// Only this pair, `TYPE:TYPE` (repeatable), e.g. `port-restricted:symmetric`.
        #[arg(long, value_name = "A:B")]
        pair: Vec<String>,
        /// Runs per pair (seeds `seed`, `seed + 1`, …).
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// One-way latency of every hop in ms (plus up to half of it as jitter).
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
        /// Datagram loss probability on every hop (signalling is reliable: it rides QUIC).
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// One JSON object per run.
        #[arg(long)]
        json: bool,
    },
    /// One real `dna bootstrap` process under N concurrent clients on loopback (each its
    /// own identity, socket and address 127.A.B.1): they join the DHT through it, publish
    /// their presence, then look each other up; prints lookups and publishes per second it
    /// answered, failures, and its peak memory per connected client.
    BootstrapLoad {
        /// Concurrent clients.
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Lookups per client (each of a random other client's presence record).
        #[arg(long, default_value_t = 20)]
        lookups: usize,
        /// Lookups in flight at once, over all clients (every client stays connected).
        #[arg(long, default_value_t = 64)]
        inflight: usize,
        /// The `dna` binary [default: built now with cargo, same profile as this command].
        #[arg(long)]
        dna: Option<std::path::PathBuf>,
    },
    /// One bootstrap node's rendezvous and DHT cores under throwaway identities that
    /// register, store and CONNECT, while a good client registers and delivers; prints the
    /// counts per reason, the accounted memory and peak RSS. Fails if the client is refused.
    BootstrapFlood {
        /// Throwaway identities.
        #[arg(long, default_value_t = 10_000)]
        identities: usize,
        /// Seed.
        #[arg(long, default_value_t = 11)]
        seed: u64,
    },
    /// The offline mailbox under a sybil flood (issue 20): N storing nodes; throwaway
    /// identities from a few /24s fill the recipient's requests mailbox at its k storing
    /// nodes while her contacts leave one message each (most through her contact drop);
    /// then she fetches with the daemon's fetch. Prints what the storing nodes hold, what the
    /// fetch cost, and how many contacts' messages arrived; fails unless every one did.
    MailboxFlood {
        /// Storing nodes.
        #[arg(long, default_value_t = 60)]
        servers: usize,
        /// Throwaway identities.
        #[arg(long, default_value_t = 1000)]
        sybils: usize,
        /// /24 networks they send from.
        #[arg(long, default_value_t = 16)]
        networks: u8,
        /// Items each throwaway identity puts.
        #[arg(long, default_value_t = 2)]
        items: usize,
        /// Body bytes of each of their items.
        #[arg(long, default_value_t = 1024)]
        body: usize,
        /// The recipient's contacts (one message each).
        #[arg(long, default_value_t = 10)]
        contacts: usize,
        /// Contacts that do not hold her drop yet (they write to the requests mailbox).
        #[arg(long, default_value_t = 2)]
        without_drop: usize,
        /// Seed.
        #[arg(long, default_value_t = 20)]
        seed: u64,
    },
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Builds (if needed) and finds the `dna` binary of this workspace, same profile.
fn dna_binary() -> Result<std::path::PathBuf, String> {
    let release = !cfg!(debug_assertions);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-q", "-p", "dna-p2p", "--bin", "dna"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    if release {
        cmd.arg("--release");
    }
    let st = cmd.status().map_err(|e| format!("cargo: {e}"))?;
    if !st.success() {
        return Err("building dna failed".into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no exe dir")?;
    Ok(dir.join("dna"))
}

fn nat_matrix(
    json: bool,
    dna: Option<std::path::PathBuf>,
    only: &[String],
    turn: bool,
    repeat: usize,
) -> ExitCode {
    use netsim::testbed::{missing_prerequisites, pairs, NatType, TestBed};
    let missing = missing_prerequisites();
    if !missing.is_empty() {
        eprintln!("error: the NAT test bed needs {}", missing.join(", "));
        return ExitCode::FAILURE;
    }
    let dna = match dna.map_or_else(dna_binary, Ok) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut chosen = Vec::new();
    for o in only {
        let named = o
            .split_once(':')
            .and_then(|(a, b)| Some((NatType::from_name(a)?, NatType::from_name(b)?)));
        match named {
            Some(p) => chosen.push(p),
            None => {
                let names: Vec<&str> = NatType::every().map(NatType::name).collect();
                eprintln!(
                    "error: --only {o:?}: want TYPE:TYPE, types: {}",
                    names.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    if chosen.is_empty() {
        chosen = pairs();
    }
    let started = Instant::now();
    // With --turn the bootstrap nodes do not relay: the pairs without a direct path show
    // coturn; without it, the bootstrap nodes' bundled relay.
    let boot_extra: Vec<String> = if turn {
        vec!["--no-relay-server".into()]
    } else {
        Vec::new()
    };
    let mut tb = match TestBed::build_with(&dna, &boot_extra) {
        Ok(tb) => tb,
        Err(e) => {
            eprintln!("error: building the test bed: {e}");
            return ExitCode::FAILURE;
        }
    };
    if turn {
        tb.pair_args = tb.turn_args_for(1);
    }
    if repeat > 1 {
        let summaries: Vec<_> = chosen
            .iter()
            .map(|&(a, b)| {
                tb.repeat_pair(a, b, repeat, |i, r| {
                    let mut line = r.json();
                    line["attempt"] = (i + 1).into();
                    line["probes"] = r.probes.into();
                    line["direct_ms"] = r.direct_ms.map(|m| (m * 10.0).round() / 10.0).into();
                    eprintln!("{line}");
                    if r.ms.is_none() || std::env::var_os("DNA_TEST_TAIL").is_some() {
                        eprintln!("  {}", r.detail);
                    }
                })
            })
            .collect();
        drop(tb);
        eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
        for s in summaries {
            println!("{}", s.json());
        }
        return ExitCode::SUCCESS;
    }
    let results = tb.run_pairs(&chosen, |r| {
        let (a, b) = (r.a, r.b);
        if json {
            println!("{}", r.json());
        } else {
            println!(
                "{:>20} ↔ {:<20} {:<13} {:<6} {}",
                a.name(),
                b.name(),
                r.path,
                r.via,
                r.ms.map_or("-".into(), |m| format!("{m:.0} ms"))
            );
        }
        if !r.detail.is_empty() {
            eprintln!("  {} ↔ {}: {}", a.name(), b.name(), r.detail);
        }
    });
    drop(tb);
    // Where each session ended: a pair that only prediction takes direct starts on the
    // relay and moves (spec/07-relay.md §1.9).
    let direct = results.iter().filter(|r| r.ended == "direct").count();
    let first_direct = results.iter().filter(|r| r.path == "direct").count();
    let expected = results
        .iter()
        .filter(|r| NatType::direct_expected(r.a, r.b))
        .count();
    let mut ms: Vec<f64> = results.iter().filter_map(|r| r.ms).collect();
    ms.sort_by(f64::total_cmp);
    let median = ms.get(ms.len() / 2).copied();
    eprintln!(
        "direct: {direct} of {} pairs ended direct (expected {expected}; {first_direct} sent their first message direct); median time to delivery {}, slowest {}; total {:.1} s",
        results.len(),
        median.map_or("-".into(), |m| format!("{m:.0} ms")),
        ms.last().map_or("-".into(), |m| format!("{m:.0} ms")),
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

/// `netsim reach`.
fn reach(
    pairs: &[String],
    runs: usize,
    latency_ms: u64,
    loss: f64,
    seed: u64,
    json: bool,
) -> ExitCode {
    use netsim::reach_sim::{matrix, run, NatType, PathKind, ReachSimConfig, SIMULATED};
    let link = LinkModel {
        latency: Duration::from_millis(latency_ms),
        jitter: Duration::from_millis(latency_ms / 2),
        loss,
    };
    let outcomes = if pairs.is_empty() {
        matrix(&SIMULATED, runs.max(1), seed, link, Instant::now())
    } else {
        let mut all = Vec::new();
        for p in pairs {
            let parsed = p
                .split_once(':')
                .and_then(|(a, b)| Some((NatType::from_name(a)?, NatType::from_name(b)?)))
                .filter(|(a, b)| SIMULATED.contains(a) && SIMULATED.contains(b));
            let Some((a, b)) = parsed else {
                eprintln!(
                    "error: --pair {p:?}: TYPE:TYPE of {:?}",
                    SIMULATED.map(NatType::name)
                );
                return ExitCode::from(2);
            };
            for r in 0..runs.max(1) {
                let mut cfg = ReachSimConfig::pair(a, b, seed + r as u64);
                cfg.link = link;
                all.push(run(cfg, Instant::now()));
            }
        }
        all
    };
    let ms = |d: Option<Duration>| d.map_or("-".to_owned(), |d| d.as_millis().to_string());
    if !json {
        println!(
            "{:<19} {:<19} {:<26} {:>7} {:>8} {:>9} {:>7} {:>9}",
            "caller",
            "callee",
            "reach reported",
            "first",
            "first_ms",
            "direct_ms",
            "checks",
            "predicted"
        );
    }
    let mut bad = 0;
    for o in &outcomes {
        let (first, first_t) = o.first.map_or(("none", None), |(k, t)| (k.name(), Some(t)));
        let can_go_direct = NatType::direct_expected(o.caller, o.callee);
        // Without loss, every first path is up before `relay_after` (1 s) would have
        // passed; with loss, QUIC's retransmissions take what they take.
        let bound = if loss == 0.0 { 1 } else { 30 };
        let late = first_t.is_none_or(|t| t >= Duration::from_secs(bound));
        let ok = !late && (o.direct_at.is_some() || !can_go_direct);
        bad += usize::from(!ok);
        if json {
            println!(
                "{}",
                json!({
                    "caller": o.caller.name(), "callee": o.callee.name(), "reached": o.reached,
                    "first": first, "first_ms": first_t.map(|t| t.as_millis() as u64),
                    "direct_ms": o.direct_at.map(|t| t.as_millis() as u64),
                    "end": o.end().map(PathKind::name), "checks": o.checks,
                    "predicted": o.predicted, "ok": ok,
                })
            );
        } else {
            println!(
                "{:<19} {:<19} {:<26} {:>7} {:>8} {:>9} {:>7} {:>9}{}",
                o.caller.name(),
                o.callee.name(),
                o.reached,
                first,
                ms(first_t),
                ms(o.direct_at),
                o.checks,
                o.predicted,
                if ok { "" } else { "  ✗" }
            );
        }
    }
    let direct = outcomes.iter().filter(|o| o.direct_at.is_some()).count();
    let mut firsts: Vec<Duration> = outcomes
        .iter()
        .filter_map(|o| o.first.map(|f| f.1))
        .collect();
    firsts.sort();
    let pct = |q: f64| {
        firsts
            .get(((firsts.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    eprintln!(
        "{} runs: {} ended direct, first path p50 {} ms, max {} ms (simulated; one-way hop {} ms ± {}); {} not as expected",
        outcomes.len(),
        direct,
        ms(pct(0.5)),
        ms(pct(1.0)),
        latency_ms,
        latency_ms / 2,
        bad
    );
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let command = Cli::parse().command;
    if let Command::NatMatrix {
        json,
        dna,
        only,
        turn,
        repeat,
    } = command
    {
        return nat_matrix(json, dna, &only, turn, repeat);
    }
    if let Command::BootstrapLoad {
        clients,
        lookups,
        inflight,
        dna,
    } = command
    {
        let dna = match dna.map_or_else(dna_binary, Ok) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let dir = std::env::temp_dir().join(format!("dna-bootstrap-load-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let rt = match tokio::runtime::Runtime::new() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let started = Instant::now();
        let r = rt.block_on(netsim::bootstrap_load::run(
            &dna, &dir, clients, lookups, inflight,
        ));
        drop(rt);
        let _ = std::fs::remove_dir_all(&dir);
        return match r {
            Ok(r) => {
                println!("{}", r.line());
                for (why, n) in &r.why {
                    eprintln!("lookups failed: {n} × {why}");
                }
                eprintln!(
                    "bootstrap memory {:.1} MiB before the clients, peak {:.1} MiB; {:.1} s",
                    r.base_mib,
                    r.peak_mib,
                    started.elapsed().as_secs_f64()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Reach {
        pair,
        runs,
        latency_ms,
        loss,
        seed,
        json,
    } = command
    {
        return reach(&pair, runs, latency_ms, loss, seed, json);
    }
    if let Command::MailboxFlood {
        servers,
        sybils,
        networks,
        items,
        body,
        contacts,
        without_drop,
        seed,
    } = command
    {
        use netsim::mailbox_sim::{run, MailboxSimConfig};
        let cfg = MailboxSimConfig {
            servers,
            sybils,
            sybil_networks: networks,
            items_per_sybil: items,
            sybil_body: body,
            contacts,
            contacts_without_drop: without_drop.min(contacts),
            seed,
            ..MailboxSimConfig::default()
        };
        let (start, r) = (Instant::now(), run(&cfg, Instant::now()));
        print!("{}", r.summary(&cfg));
        println!("  wall time {:.1} s", start.elapsed().as_secs_f64());
        return if r.delivered == cfg.contacts {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if let Command::BootstrapFlood { identities, seed } = command {
        use netsim::bootstrap_sim::{run, BootSimConfig};
        let cfg = BootSimConfig {
            identities,
            seed,
            ..BootSimConfig::default()
        };
        let (start, r) = (Instant::now(), run(&cfg, Instant::now()));
        print!("{}", r.summary(&cfg));
        println!("  wall time {:.1} s", start.elapsed().as_secs_f64());
        return if r.good.locked_out() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let Command::Dht {
        nodes,
        lookups,
        churn,
        evil,
        evil_kind,
        latency_ms,
        loss,
        partition_s,
        seed,
        json,
    } = command
    else {
        unreachable!("handled above");
    };
    let evil_kind = match evil_kind.as_str() {
        "drop" => Evil::Drop,
        "wrong" => Evil::WrongNodes,
        "flood" => Evil::FloodStores,
        other => {
            eprintln!("error: unknown --evil-kind {other:?} (drop, wrong or flood)");
            return ExitCode::from(2);
        }
    };
    let cfg = DhtSimConfig {
        nodes,
        lookups,
        churn,
        evil: (evil, evil_kind),
        seed,
        link: LinkModel {
            latency: Duration::from_millis(latency_ms),
            jitter: Duration::from_millis(latency_ms / 2),
            loss,
        },
        partition: partition_s.map(|s| (Duration::from_secs(s), Duration::from_secs(600))),
        ..DhtSimConfig::default()
    };
    let start = Instant::now();
    let report = run(&cfg, start);
    let wall = start.elapsed().as_secs_f64();
    let rounds = |p| report.percentile(p, |s| f64::from(s.rounds));
    let msgs = |p| report.percentile(p, |s| f64::from(s.requests));
    let ms = |p| report.percentile(p, |s| s.elapsed.as_secs_f64() * 1000.0);
    let log2n = (nodes as f64).log2();
    if json {
        println!(
            "{}",
            json!({
                "nodes": nodes, "lookups": lookups, "churn": churn, "evil": evil, "seed": seed,
                "success_rate": report.success_rate(),
                "finished": report.results.len(),
                "rounds_p50": rounds(50.0), "rounds_p90": rounds(90.0), "rounds_p99": rounds(99.0),
                "msgs_p50": msgs(50.0), "msgs_p90": msgs(90.0), "msgs_p99": msgs(99.0),
                "latency_ms_p50": ms(50.0), "latency_ms_p90": ms(90.0), "latency_ms_p99": ms(99.0),
                "log2_n": log2n,
                "mean_table": report.mean_table,
                "messages_total": report.messages,
                "sim_s": report.sim_time.as_secs_f64(),
                "wall_s": wall,
                "peak_mem_mb": peak_rss_mb(),
            })
        );
    } else {
        println!(
            "netsim dht: {nodes} nodes, {lookups} lookups, churn {churn}, evil {evil}, seed {seed}"
        );
        println!(
            "  success rate        {:.4} ({} of {} finished)",
            report.success_rate(),
            report.results.len(),
            lookups
        );
        println!(
            "  rounds  p50/p90/p99 {} / {} / {}   (log2 N = {log2n:.1})",
            rounds(50.0),
            rounds(90.0),
            rounds(99.0)
        );
        println!(
            "  msgs    p50/p90/p99 {} / {} / {}",
            msgs(50.0),
            msgs(90.0),
            msgs(99.0)
        );
        println!(
            "  latency p50/p90/p99 {:.0} / {:.0} / {:.0} ms (simulated)",
            ms(50.0),
            ms(90.0),
            ms(99.0)
        );
        println!("  mean table size     {:.0}", report.mean_table);
        println!("  messages            {}", report.messages);
        println!(
            "  wall time           {wall:.1} s   peak memory {:.0} MiB",
            peak_rss_mb()
        );
    }
    ExitCode::SUCCESS
}

//! Transport throughput on loopback, three variants side by side in one run:
//!
//! * **raw quinn** — same quinn version, TLS and transport settings, one unidirectional
//!   stream A→B, no framing, no end-to-end crypto;
//! * **framed** — our nodes: DNA frames, CRC, cumulative ACKs back, the plaintext message
//!   structure as an opaque payload (no AEAD);
//! * **end-to-end** — framed plus the session form (one ChaCha20-Poly1305 per message).
//!
//! Workloads: bulk (8192 × 64 KiB) and small (600,000 × 256 B). Each figure is the median
//! of five runs, variants interleaved (raw, framed, end-to-end, raw, …). The last line is
//! `RESULT bulk_vs_quinn=… small_vs_quinn=… e2e_bulk_vs_quinn=… e2e_small_vs_quinn=… bulk_mib_s=… small_msgs_s=… durable_small_msgs_s=… durable_vs_memory=…`.
//!
//! The durable pair: end-to-end 256 B messages (100,000) with both nodes' message stores
//! on disk against the same in memory, interleaved, medians of five.
#![allow(clippy::disallowed_methods)] // a benchmark is a driver: it reads the clock.

#[path = "common/quinn_pair.rs"]
mod quinn_pair;

use std::time::{Duration, Instant};

use bytes::Bytes;
use dna_p2p::crypto::Identity;
use dna_p2p::daemon::{Node, NodeConfig, NodeEvent};
use dna_p2p::session::{ConnConfig, Protection};
use rand_core::OsRng;

#[derive(Clone, Copy)]
struct Workload {
    name: &'static str,
    size: usize,
    count: usize,
}

const BULK: Workload = Workload {
    name: "bulk 64 KiB",
    size: 64 * 1024,
    count: 8192,
};
const SMALL: Workload = Workload {
    name: "small 256 B",
    size: 256,
    count: 600_000,
};

/// The durable comparison: 256 B messages, fewer (each is written twice to disk).
const DURABLE: Workload = Workload {
    name: "durable 256 B",
    size: 256,
    count: 100_000,
};

/// Messages per second moved A→B.
async fn raw_quinn(w: Workload) -> f64 {
    let (conn_a, conn_b) = quinn_pair::connected_pair().await;
    let body = Bytes::from(vec![0x5A; w.size]);
    let total = w.size * w.count;
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        let mut s = conn_a.open_uni().await.unwrap();
        for _ in 0..w.count {
            s.write_all(&body).await.unwrap();
        }
        s.finish().unwrap();
        conn_a
    });
    let mut r = conn_b.accept_uni().await.unwrap();
    let mut got = 0;
    while got < total {
        match r.read_chunk(usize::MAX, true).await.unwrap() {
            Some(c) => got += c.bytes.len(),
            None => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, total);
    let conn_a = sender.await.unwrap();
    conn_a.close(0u32.into(), b"done");
    w.count as f64 / secs
}

/// Messages per second delivered by our nodes, A→B, each acknowledged.
async fn ours(w: Workload, protection: Protection) -> f64 {
    ours_with(w, protection, false).await
}

/// As [`ours`]; `durable`: both nodes have a message store (the sender's outbox and the
/// receiver's inbox on disk, group-committed; spec/06-node.md §3).
async fn ours_with(w: Workload, protection: Protection, durable: bool) -> f64 {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = NodeConfig {
        conn: ConnConfig {
            protection,
            ..ConnConfig::default()
        },
        ..NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
    };
    let store = |d: &tempfile::TempDir| NodeConfig {
        store_dir: durable.then(|| d.path().to_path_buf()),
        ..cfg.clone()
    };
    let mut a = Node::bind(Identity::generate(&mut OsRng), store(&dirs.0))
        .await
        .unwrap();
    let mut b = Node::bind(Identity::generate(&mut OsRng), store(&dirs.1))
        .await
        .unwrap();
    a.connect(b.fingerprint(), vec![b.local_addr()]).await;
    while !matches!(b.next_event().await, Some(NodeEvent::PeerUp { .. })) {}
    let fb = b.fingerprint();
    let handle = a.handle();
    // A's events (PeerUp, ACKs, RTT) must be drained.
    let drain = tokio::spawn(async move {
        let mut acked = 0;
        while acked < w.count {
            match a.next_event().await {
                Some(NodeEvent::Acked { ids, .. }) => acked += ids.len(),
                Some(_) => {}
                None => break,
            }
        }
        a
    });
    let body = Bytes::from(vec![0x5A; w.size]);
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        let batch = 1024;
        let mut left = w.count;
        while left > 0 {
            let n = left.min(batch);
            handle
                .send_many(fb, std::iter::repeat_n(body.clone(), n))
                .await
                .unwrap();
            left -= n;
            tokio::task::yield_now().await;
        }
    });
    let mut got = 0;
    while got < w.count {
        if let Some(NodeEvent::Message { body, .. }) = b.next_event().await {
            debug_assert_eq!(body.len(), w.size);
            got += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    sender.await.unwrap();
    let a = drain.await.unwrap();
    a.shutdown(Duration::from_millis(100)).await;
    b.shutdown(Duration::from_millis(100)).await;
    w.count as f64 / secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn mib_s(w: Workload, msgs_s: f64) -> f64 {
    msgs_s * w.size as f64 / (1024.0 * 1024.0)
}

async fn measure(w: Workload) -> (f64, f64, f64) {
    let (mut raw, mut framed, mut e2e) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        raw.push(raw_quinn(w).await);
        framed.push(ours(w, Protection::UnprotectedForBenchmarks).await);
        e2e.push(ours(w, Protection::EndToEnd).await);
    }
    let (r, f, e) = (median(raw), median(framed), median(e2e));
    println!(
        "{:<12} raw quinn {:>9.0} msg/s {:>6.0} MiB/s | framed {:>9.0} msg/s {:>6.0} MiB/s ({:.2}×) | end-to-end {:>9.0} msg/s {:>6.0} MiB/s ({:.2}×)",
        w.name,
        r,
        mib_s(w, r),
        f,
        mib_s(w, f),
        f / r,
        e,
        mib_s(w, e),
        e / r
    );
    (r, f, e)
}

/// Durable against in-memory delivery, end to end, small messages (medians of interleaved
/// runs): (durable msg/s, memory msg/s).
async fn measure_durable(w: Workload) -> (f64, f64) {
    let (mut mem, mut dur) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        mem.push(ours_with(w, Protection::EndToEnd, false).await);
        dur.push(ours_with(w, Protection::EndToEnd, true).await);
    }
    let (m, d) = (median(mem), median(dur));
    println!(
        "{:<12} end-to-end in memory {:>9.0} msg/s | durable (sled, group commit) {:>9.0} msg/s ({:.2}×)",
        w.name,
        m,
        d,
        d / m
    );
    (d, m)
}

fn main() {
    // `cargo test --benches` runs this once as a smoke test; `cargo bench` passes --bench.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Profiling aid: TRANSPORT_BENCH=raw|framed|e2e with TRANSPORT_WORKLOAD=bulk|small runs
        // one variant for a longer time (or TRANSPORT_COUNT messages).
        if std::env::var("TRANSPORT_BENCH").as_deref() == Ok("durable") {
            measure_durable(DURABLE).await;
            return;
        }
        if let Ok(variant) = std::env::var("TRANSPORT_BENCH") {
            let mut w = match std::env::var("TRANSPORT_WORKLOAD").as_deref() {
                Ok("bulk") => Workload { count: BULK.count * 4, ..BULK },
                _ => Workload { count: SMALL.count * 4, ..SMALL },
            };
            // TRANSPORT_COUNT=n: that many messages instead.
            if let Some(n) = std::env::var("TRANSPORT_COUNT").ok().and_then(|n| n.parse().ok()) {
                w.count = n;
            }
            let rate = match variant.as_str() {
                "raw" => raw_quinn(w).await,
                "framed" => ours(w, Protection::UnprotectedForBenchmarks).await,
                _ => ours(w, Protection::EndToEnd).await,
            };
            println!("{variant} {}: {rate:.0} msg/s, {:.0} MiB/s", w.name, mib_s(w, rate));
            return;
        }
        if smoke {
            let tiny = Workload { name: "smoke", size: 256, count: 1000 };
            raw_quinn(tiny).await;
            ours(tiny, Protection::UnprotectedForBenchmarks).await;
            ours(tiny, Protection::EndToEnd).await;
            ours_with(tiny, Protection::EndToEnd, true).await;
            println!("transport bench smoke run ok");
            return;
        }
        let (br, bf, be) = measure(BULK).await;
        let (sr, sf, se) = measure(SMALL).await;
        let (dur, mem) = measure_durable(DURABLE).await;
        println!(
            "RESULT bulk_vs_quinn={:.3} small_vs_quinn={:.3} e2e_bulk_vs_quinn={:.3} e2e_small_vs_quinn={:.3} bulk_mib_s={:.0} small_msgs_s={:.0} durable_small_msgs_s={:.0} durable_vs_memory={:.3}",
            bf / br,
            sf / sr,
            be / br,
            se / sr,
            mib_s(BULK, bf),
            sf,
            dur,
            dur / mem
        );
    });
}

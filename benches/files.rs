//! File transfer against raw quinn on loopback, in one run (spec/11-files.md; issue 21):
//!
//! * **raw quinn** — the same quinn, TLS and transport settings: one unidirectional stream
//!   A→B carrying the file's bytes in 64 KiB writes, read and dropped; no framing, no
//!   end-to-end crypto, no hashing, no disk;
//! * **file** — two nodes with the file application (`dna_p2p::files`): the recipient asks
//!   for ranges on a FILE stream, every 16 KiB leaf arrives sealed end to end with its audit
//!   path, is checked against the root and written to the partial file (synced every
//!   512 KiB), then moved into the download directory. Timed from the accept to the
//!   recipient's `Done`; the sender hashed the file before the offer (not timed).
//!
//! Size: 1 GiB with `cargo bench --bench files` (`FILES_BENCH_MIB` to change it), 16 MiB as
//! the smoke run of `cargo test --benches`. Both ends run in this process: the memory figure
//! is their sum. Last line: `RESULT file_vs_quinn=… file_mib_s=… quinn_mib_s=…
//! rss_growth_mib=…`.
#![allow(clippy::disallowed_methods)] // a benchmark is a driver: it reads the clock.

#[path = "common/quinn_pair.rs"]
mod quinn_pair;

use std::time::{Duration, Instant};

use bytes::Bytes;
use dna_p2p::crypto::{Identity, MessageKind};
use dna_p2p::daemon::{Node, NodeConfig, NodeEvent};
use dna_p2p::files::{self, FileEvent, FilesConfig};
use rand_core::{OsRng, RngCore};

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// MiB/s of `len` bytes over one raw quinn stream.
async fn raw_quinn(len: usize) -> f64 {
    let (conn_a, conn_b) = quinn_pair::connected_pair().await;
    let body = Bytes::from(vec![0x5A; 64 * 1024]);
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        let mut s = conn_a.open_uni().await.unwrap();
        let mut left = len;
        while left > 0 {
            let n = left.min(body.len());
            s.write_all(&body[..n]).await.unwrap();
            left -= n;
        }
        s.finish().unwrap();
        conn_a
    });
    let mut r = conn_b.accept_uni().await.unwrap();
    let mut got = 0;
    while let Some(c) = r.read_chunk(usize::MAX, true).await.unwrap() {
        got += c.bytes.len();
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, len);
    sender.await.unwrap().close(0u32.into(), b"done");
    len as f64 / (1 << 20) as f64 / secs
}

/// MiB/s of a `len`-byte file through the file application; the RSS growth over the run.
async fn file(len: usize) -> (f64, f64) {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = NodeConfig {
        apps: vec![MessageKind::FILE],
        ..NodeConfig::listening_on("127.0.0.1:0".parse().unwrap())
    };
    let mut a = Node::bind(Identity::generate(&mut OsRng), cfg.clone())
        .await
        .unwrap();
    let mut b = Node::bind(Identity::generate(&mut OsRng), cfg)
        .await
        .unwrap();
    let fcfg = |d: &tempfile::TempDir| FilesConfig {
        state_dir: d.path().join("state"),
        download_dir: d.path().join("downloads"),
    };
    let (fa, mut ea) = files::start(a.app(MessageKind::FILE).unwrap(), fcfg(&dirs.0));
    let (fb, mut eb) = files::start(b.app(MessageKind::FILE).unwrap(), fcfg(&dirs.1));
    a.connect(b.fingerprint(), vec![b.local_addr()]).await;
    while !matches!(a.next_event().await, Some(NodeEvent::PeerUp { .. })) {}
    // The source, written in 1 MiB pieces (never the whole file in memory).
    let src = dirs.0.path().join("source.bin");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&src).unwrap();
        let mut piece = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            OsRng.fill_bytes(&mut piece);
            let n = left.min(piece.len());
            f.write_all(&piece[..n]).unwrap();
            left -= n;
        }
    }
    let rss0 = rss_mib();
    let id = fa.send_file(b.fingerprint(), &src).await.unwrap();
    let Some(FileEvent::Offer { .. }) = eb.recv().await else {
        panic!("the offer")
    };
    let start = Instant::now();
    fb.accept(id).await.unwrap();
    let path = loop {
        match eb.recv().await {
            Some(FileEvent::Done { path, .. }) => break path,
            Some(FileEvent::Failed { reason, .. }) => panic!("{reason}"),
            Some(_) => {}
            None => panic!("the recipient's application ended"),
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let growth = rss_mib() - rss0;
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len as u64);
    while !matches!(ea.recv().await, Some(FileEvent::Delivered { .. }) | None) {}
    a.shutdown(Duration::from_millis(100)).await;
    b.shutdown(Duration::from_millis(100)).await;
    (len as f64 / (1 << 20) as f64 / secs, growth)
}

fn main() {
    // `cargo test --benches` runs this once as a smoke test; `cargo bench` passes --bench.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let mib: usize = std::env::var("FILES_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 16 } else { 1024 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let len = mib << 20;
        let quinn = raw_quinn(len).await;
        println!("raw quinn, {mib} MiB: {quinn:.0} MiB/s");
        let (ours, growth) = file(len).await;
        println!("file, {mib} MiB: {ours:.0} MiB/s, RSS +{growth:.0} MiB (both ends)");
        println!(
            "RESULT file_vs_quinn={:.3} file_mib_s={ours:.0} quinn_mib_s={quinn:.0} rss_growth_mib={growth:.0}",
            ours / quinn
        );
    });
}

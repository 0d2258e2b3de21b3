//! The bootstrap-under-load benchmark (`netsim bootstrap-load`, README "Benchmarks") on a
//! small count, so that it keeps working: one real `dna bootstrap` process answers 50
//! concurrent client nodes (each its own identity, socket and /24 on loopback) that join,
//! publish their presence and look each other up — every publish stored, every lookup
//! answered with the record. The rates are printed, not asserted.

use std::path::Path;

const DNA: &str = env!("CARGO_BIN_EXE_dna");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bootstrap_answers_fifty_concurrent_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let r = netsim::bootstrap_load::run(Path::new(DNA), tmp.path(), 50, 5, 16)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{}", r.line());
    assert_eq!(r.clients, 50);
    assert_eq!((r.published, r.publish_failed), (50, 0), "{}", r.line());
    assert_eq!((r.lookups, r.lookup_failed), (250, 0), "{}", r.line());
    assert!(r.peak_mib >= r.base_mib && r.base_mib > 0.0, "{}", r.line());
}

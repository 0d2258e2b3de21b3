//! The DHT at CI size (≥ 1,000 nodes) in the simulator: the success criteria, the
//! partition-and-heal scenario, misbehaving nodes, and determinism.
// A simulation's epoch is one real Instant; everything after is simulated.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use netsim::dht_sim::{run, DhtReport, DhtSimConfig, Evil};

fn sim(cfg: DhtSimConfig) -> DhtReport {
    let r = run(&cfg, Instant::now());
    eprintln!(
        "{} nodes churn {} evil {:?} partition {:?}: success {:.4}, rounds p50 {} p99 {}, msgs p50 {}",
        cfg.nodes,
        cfg.churn,
        cfg.evil,
        cfg.partition,
        r.success_rate(),
        r.percentile(50.0, |s| f64::from(s.rounds)),
        r.percentile(99.0, |s| f64::from(s.rounds)),
        r.percentile(50.0, |s| f64::from(s.requests)),
    );
    r
}

#[test]
fn thousand_nodes_without_churn_find_every_target_in_few_rounds() {
    let r = sim(DhtSimConfig {
        nodes: 1000,
        lookups: 300,
        seed: 11,
        ..DhtSimConfig::default()
    });
    assert_eq!(r.results.len(), 300, "every lookup finished");
    assert!(r.success_rate() >= 0.999, "success {}", r.success_rate());
    assert!(r.percentile(50.0, |s| f64::from(s.rounds)) <= 4.0);
    assert!(r.percentile(99.0, |s| f64::from(s.rounds)) <= 6.0);
}

#[test]
fn thousand_nodes_with_thirty_percent_crashed() {
    let r = sim(DhtSimConfig {
        nodes: 1000,
        lookups: 300,
        churn: 0.3,
        seed: 12,
        ..DhtSimConfig::default()
    });
    assert!(r.success_rate() >= 0.99, "success {}", r.success_rate());
}

#[test]
fn lookups_cross_a_healed_partition() {
    // Ten minutes cut in two halves, healed, ten minutes later: lookups from one former half
    // for nodes of the other.
    let r = sim(DhtSimConfig {
        nodes: 1000,
        lookups: 200,
        seed: 13,
        partition: Some((Duration::from_secs(600), Duration::from_secs(600))),
        ..DhtSimConfig::default()
    });
    assert!(
        r.success_rate() >= 0.99,
        "success across the former cut {}",
        r.success_rate()
    );
}

#[test]
fn misbehaving_nodes_do_not_stop_lookups() {
    let drop = sim(DhtSimConfig {
        nodes: 1000,
        lookups: 200,
        evil: (0.1, Evil::Drop),
        seed: 14,
        ..DhtSimConfig::default()
    });
    assert!(
        drop.success_rate() >= 0.99,
        "10% silent: {}",
        drop.success_rate()
    );
    let wrong = sim(DhtSimConfig {
        nodes: 1000,
        lookups: 200,
        evil: (0.1, Evil::WrongNodes),
        seed: 15,
        ..DhtSimConfig::default()
    });
    assert!(
        wrong.success_rate() >= 0.95,
        "10% lying: {}",
        wrong.success_rate()
    );
}

#[test]
fn same_seed_same_run() {
    let cfg = DhtSimConfig {
        nodes: 300,
        lookups: 50,
        churn: 0.2,
        seed: 99,
        ..DhtSimConfig::default()
    };
    let a = run(&cfg, Instant::now());
    let b = run(&cfg, Instant::now());
    let key = |r: &DhtReport| {
        r.results
            .iter()
            .map(|x| (x.found, x.stats.rounds, x.stats.requests, x.stats.elapsed))
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&a), key(&b));
    assert_eq!(a.messages, b.messages);
    let c = run(&DhtSimConfig { seed: 100, ..cfg }, Instant::now());
    assert_ne!(a.messages, c.messages, "another seed, another run");
}

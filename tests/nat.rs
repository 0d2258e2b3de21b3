//! NAT traversal against real kernel NATs (spec/05-nat.md §7): the namespace test bed of
//! `netsim::testbed`, real `dna` processes, a real coturn.
//!
//! Needs root, `ip`, `nft`, `turnserver` and `turnutils_natdiscovery`. Without them the
//! tests say what is missing and skip — except under `CI=true`, where a missing
//! prerequisite fails them: the matrix never silently does not run.

#![allow(clippy::disallowed_methods)] // the tests time real processes

use std::path::Path;

use netsim::testbed::{missing_prerequisites, pairs, NatType, TestBed};

/// The test bed, or `None` (skip) where it cannot run outside CI.
fn test_bed(test: &str) -> Option<TestBed> {
    test_bed_with(test, &[])
}

/// [`test_bed`] with extra arguments for its bootstrap nodes.
fn test_bed_with(test: &str, bootstrap_extra: &[String]) -> Option<TestBed> {
    let missing = missing_prerequisites();
    if !missing.is_empty() {
        let msg = format!("{test}: the NAT test bed needs {}", missing.join(", "));
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg} (CI=true: a missing prerequisite fails the run)");
        }
        // Straight to stderr, past libtest's capture: a skip is always seen.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED {msg}");
        return None;
    }
    Some(
        TestBed::build_with(Path::new(env!("CARGO_BIN_EXE_dna")), bootstrap_extra)
            .expect("build the test bed"),
    )
}

/// A `dna bootstrap` node is a public STUN server: coturn's `turnutils_stunclient` (plain
/// Binding requests, no FINGERPRINT) behind every router type learns its public address
/// from it — the router's public IP.
#[test]
fn turnutils_stunclient_learns_its_public_address_from_a_bootstrap_node() {
    let Some(tb) = test_bed("turnutils_stunclient_learns_its_public_address_from_a_bootstrap_node")
    else {
        return;
    };
    let server: std::net::SocketAddr = tb.bootstrap_args[0]
        .split('@')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("the bootstrap node's address");
    for nat in NatType::ALL {
        let host = tb.host(nat, 'a');
        let reflexive = tb
            .turnutils_stunclient(host, server)
            .expect("run turnutils_stunclient");
        eprintln!(
            "{:>20}: turnutils_stunclient → {:?} (router public {})",
            nat.name(),
            reflexive,
            host.public_ip
        );
        let reflexive = reflexive.expect("an answer from the bootstrap node");
        assert_eq!(
            reflexive.ip(),
            std::net::IpAddr::V4(host.public_ip),
            "{}",
            nat.name()
        );
    }
}

/// turnutils_natdiscovery (coturn's RFC 5780 client) and our discovery, run from the same
/// host, agree on mapping and filtering behind every router type — and both match what the
/// router is built to be.
#[test]
fn discovery_agrees_with_turnutils_natdiscovery() {
    let Some(tb) = test_bed("discovery_agrees_with_turnutils_natdiscovery") else {
        return;
    };
    for nat in NatType::ALL {
        let host = tb.host(nat, 'a');
        let theirs = tb
            .turnutils_discovery(host)
            .expect("turnutils_natdiscovery");
        let daemon = tb.daemon(host).expect("daemon");
        let ready = daemon
            .wait_event("ready", std::time::Duration::ZERO)
            .expect("ready");
        let field = |k: &str| {
            ready
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("none")
                .to_string()
        };
        let ours = (field("mapping"), field("filtering"));
        let expected = nat.expected();
        eprintln!(
            "{:>20}: turnutils {:?}, ours {:?} (class {})",
            nat.name(),
            theirs,
            ours,
            field("nat")
        );
        assert_eq!(ours, theirs, "{}: our discovery vs turnutils", nat.name());
        assert_eq!(
            (ours.0.as_str(), ours.1.as_str()),
            expected,
            "{}: not what the router is built to be",
            nat.name()
        );
        assert_eq!(field("nat"), nat.name());
    }
}

/// Every pair of the five types, each side behind its own NAT: b publishes its presence, a
/// sends it a message without having seen it before. 13 pairs connect directly; port-
/// restricted ↔ symmetric and symmetric ↔ symmetric report "relay-needed".
#[test]
fn nat_matrix() {
    let Some(tb) = test_bed("nat_matrix") else {
        return;
    };
    let mut results = Vec::new();
    for (a, b) in pairs() {
        let r = tb.run_pair(a, b);
        eprintln!("{}  {}", r.json(), r.detail);
        results.push(r);
    }
    let mut ms: Vec<f64> = results.iter().filter_map(|r| r.ms).collect();
    ms.sort_by(f64::total_cmp);
    eprintln!(
        "direct: {} of 15; median time to delivery {:?} ms",
        results.iter().filter(|r| r.path == "direct").count(),
        ms.get(ms.len() / 2)
    );
    for r in &results {
        let want = if NatType::direct_expected(r.a, r.b) {
            "direct"
        } else {
            "relay-needed"
        };
        assert_eq!(
            r.path,
            want,
            "{} ↔ {}: {}",
            r.a.name(),
            r.b.name(),
            r.detail
        );
        if want == "direct" {
            assert!(r.ms.is_some(), "{} ↔ {}: delivered", r.a.name(), r.b.name());
        }
    }
}

/// The routers forget a silent UDP mapping after 30 s. After 45 s of application silence,
/// (1) the punched connection still carries a message without a reconnect, and (2) a new
/// caller still reaches the callee through the rendezvous node — both held by the 15 s
/// QUIC keep-alive. (`DNA_TEST_KEEP_ALIVE_SECS=60`, applied to every node, shows the test
/// failing without it.)
#[test]
fn keepalives_hold_nat_mappings_through_silence() {
    use std::time::Duration;
    let cfg = std::env::temp_dir().join(format!("dna-keepalive-{}.toml", std::process::id()));
    let extra = match std::env::var("DNA_TEST_KEEP_ALIVE_SECS") {
        Ok(secs) => {
            std::fs::write(&cfg, format!("keep_alive_secs = {secs}\n")).unwrap();
            vec!["--config".to_string(), cfg.to_string_lossy().into_owned()]
        }
        Err(_) => vec![],
    };
    let Some(tb) = test_bed_with("keepalives_hold_nat_mappings_through_silence", &extra) else {
        return;
    };
    let callee = tb
        .daemon_with(tb.host(NatType::PortRestricted, 'b'), &extra)
        .unwrap();
    let caller = tb
        .daemon_with(tb.host(NatType::AddressRestricted, 'a'), &extra)
        .unwrap();
    let to = callee.fingerprint().unwrap();
    let send = |from: &netsim::testbed::DnaProcess, text: &str| {
        let reply = from
            .control(&serde_json::json!({"cmd": "send", "to": to, "text": text}))
            .unwrap();
        let delivered = callee
            .wait_for(Duration::from_secs(30), |e| {
                e.get("text").and_then(|t| t.as_str()) == Some(text)
            })
            .is_some();
        (reply, delivered)
    };
    let (reply, delivered) = send(&caller, "before the silence");
    assert!(delivered, "first message: {reply}");

    std::thread::sleep(Duration::from_secs(45));

    let (reply, delivered) = send(&caller, "after 45 s of silence");
    assert_eq!(reply.get("via").and_then(|v| v.as_str()), Some("connected"));
    assert!(delivered, "the punched path survived: {reply}");
    let down = |p: &netsim::testbed::DnaProcess| p.wait_event("peer_down", Duration::ZERO);
    assert_eq!(down(&callee), None, "no reconnect on the callee");
    assert_eq!(down(&caller), None, "no reconnect on the caller");

    let late = tb
        .daemon_with(tb.host(NatType::FullCone, 'a'), &extra)
        .unwrap();
    let (reply, delivered) = send(&late, "a new caller after the silence");
    assert!(
        delivered,
        "the registration at the rendezvous node survived: {reply}"
    );
    let _ = std::fs::remove_file(&cfg);
}

/// The callee's router gets a new public address. The daemon notices within its 25 s
/// network check, discovers again, re-registers and republishes; a caller that never saw it
/// reaches it at the new address.
#[test]
fn a_renumbered_uplink_is_noticed_and_published() {
    use std::time::{Duration, Instant};
    let Some(tb) = test_bed("a_renumbered_uplink_is_noticed_and_published") else {
        return;
    };
    let host = tb.host(NatType::PortRestricted, 'a').clone();
    let callee = tb.daemon(&host).unwrap();
    let srflx = |p: &netsim::testbed::DnaProcess| -> Option<String> {
        let st = p.control(&serde_json::json!({"cmd": "status"})).ok()?;
        st["candidates"]
            .as_array()?
            .iter()
            .find(|c| c["kind"] == "srflx")
            .and_then(|c| c["addr"].as_str())
            .map(str::to_owned)
    };
    let before = srflx(&callee).expect("a server-reflexive candidate");
    assert!(
        before.starts_with(&format!("{}:", host.public_ip)),
        "{before}"
    );

    let new_ip: std::net::Ipv4Addr = "198.18.0.200".parse().unwrap();
    tb.renumber_router(&host, new_ip).unwrap();
    let changed_at = Instant::now();
    let after = loop {
        match srflx(&callee) {
            Some(a) if a.starts_with("198.18.0.200:") => break a,
            _ if changed_at.elapsed() > Duration::from_secs(60) => {
                panic!("not noticed in 60 s; stderr: {}", callee.stderr_tail())
            }
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    };
    eprintln!(
        "uplink renumbered: {before} → {after}, noticed after {:.1} s",
        changed_at.elapsed().as_secs_f64()
    );

    let caller = tb.daemon(tb.host(NatType::Public, 'b')).unwrap();
    let to = callee.fingerprint().unwrap();
    let reply = caller
        .control(&serde_json::json!({"cmd": "send", "to": to, "text": "at your new address"}))
        .unwrap();
    assert_eq!(reply["path"], "direct", "{reply}");
    assert!(
        callee
            .wait_for(Duration::from_secs(30), |e| e["text"]
                == "at your new address")
            .is_some(),
        "delivered at the new address: {reply}"
    );
}

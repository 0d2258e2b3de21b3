//! NAT traversal against real kernel NATs (spec/05-nat.md §7): the namespace test bed of
//! `netsim::testbed`, real `dna` processes, a real coturn.
//!
//! The six matrix types (21 pairs, `udp-blocked` among them) and the extra ones
//! (symmetric-seq, ipv6-firewall, same-lan, same-lan-hairpin), each with a test of the
//! router's behaviour with plain datagrams, and coturn's TURN with the bed's credentials.
//!
//! Needs root, `ip`, `nft`, `turnserver` and `turnutils_natdiscovery`. Without them the
//! tests say what is missing and skip — except under `CI=true`, where a missing
//! prerequisite fails them: the matrix never silently does not run.

#![allow(clippy::disallowed_methods)] // the tests time real processes

use std::path::Path;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netsim::testbed::{missing_prerequisites, pairs, NatType, Received, TestBed};

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
    let started = std::time::Instant::now();
    let tb = TestBed::build_with(Path::new(env!("CARGO_BIN_EXE_dna")), bootstrap_extra)
        .expect("build the test bed");
    eprintln!(
        "{test}: test bed built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Some(tb)
}

/// A `dna bootstrap` node is a public STUN server: coturn's `turnutils_stunclient` (plain
/// Binding requests, no FINGERPRINT) behind every router type learns its public address
/// from it — the router's public IP — except behind `udp-blocked`, whose router drops the
/// requests (its counter shows they reached it).
#[test]
fn turnutils_stunclient_learns_its_public_address_from_a_bootstrap_node() {
    let Some(tb) = test_bed("turnutils_stunclient_learns_its_public_address_from_a_bootstrap_node")
    else {
        return;
    };
    let server: SocketAddr = tb.bootstrap_args[0]
        .split('@')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("the bootstrap node's address");
    for nat in NatType::every() {
        let host = tb.host(nat, 'a');
        let dropped = |h: &netsim::testbed::Host| {
            let r = h.router.as_deref().expect("a router");
            tb.nft_counter(r, "ip dnanat", "udp_out_dropped").unwrap()
        };
        let before = (nat == NatType::UdpBlocked).then(|| dropped(host));
        let reflexive = tb
            .turnutils_stunclient(host, server)
            .expect("run turnutils_stunclient");
        eprintln!(
            "{:>20}: turnutils_stunclient → {:?} (router public {})",
            nat.name(),
            reflexive,
            host.public_ip
        );
        if let Some(before) = before {
            let after = dropped(host);
            eprintln!("{:>20}  router dropped {} outbound UDP", "", after - before);
            assert_eq!(reflexive, None, "no UDP leaves a udp-blocked router");
            assert!(
                after > before,
                "the requests reached the router: {before} → {after}"
            );
            continue;
        }
        let reflexive = reflexive.expect("an answer from the bootstrap node");
        assert_eq!(reflexive.ip(), IpAddr::V4(host.public_ip), "{}", nat.name());
    }
}

/// turnutils_natdiscovery (coturn's RFC 5780 client) and our discovery, run from the same
/// host, agree on mapping and filtering behind every router type — and both match what the
/// router is built to be (the extra types: their IPv4 behaviour); ours also tells
/// symmetric-seq's consecutive ports from symmetric's random ones (`sequential`, spec/05
/// §5.5). Behind `udp-blocked` both
/// fail: turnutils times out, and the daemon logs "NAT discovery failed" (today it then
/// waits out its other UDP exchanges and prints `ready` with `nat: null` after ~103 s; the
/// matrix rows show that).
#[test]
fn discovery_agrees_with_turnutils_natdiscovery() {
    let Some(tb) = test_bed("discovery_agrees_with_turnutils_natdiscovery") else {
        return;
    };
    for nat in NatType::every() {
        let host = tb.host(nat, 'a');
        let theirs = tb
            .turnutils_discovery(host)
            .expect("turnutils_natdiscovery");
        if nat == NatType::UdpBlocked {
            let daemon = tb.start_daemon(host, &[]).expect("daemon");
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !daemon.stderr_tail().contains("NAT discovery failed")
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            let log = daemon.stderr_tail();
            eprintln!(
                "{:>20}: turnutils {theirs:?}, ours: {}",
                nat.name(),
                log.split(" | ")
                    .find(|l| l.contains("NAT discovery failed"))
                    .unwrap_or("-")
            );
            assert_eq!(theirs, ("unknown".into(), "unknown".into()));
            assert!(log.contains("NAT discovery failed"), "{log}");
            assert_eq!(nat.expected(), None);
            continue;
        }
        let daemon = tb.daemon(host).expect("daemon");
        let ready = daemon.wait_event("ready", Duration::ZERO).expect("ready");
        let field = |k: &str| {
            ready
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("none")
                .to_string()
        };
        let ours = (field("mapping"), field("filtering"));
        let expected = nat.expected().expect("discovery works");
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
        assert_eq!(field("nat"), nat.ipv4_like().name());
        // Port allocation told apart (spec/05 §2, §5.5): only symmetric-seq hands out
        // consecutive ports; fully random symmetric does not.
        let sequential = ready.get("sequential").and_then(|v| v.as_bool());
        eprintln!("{:>20}  sequential ports: {sequential:?}", "");
        if ours.0 == "AddressAndPortDependent" {
            assert_eq!(
                sequential,
                Some(nat == NatType::SymmetricSeq),
                "{}",
                nat.name()
            );
        } else {
            assert_eq!(sequential, Some(false), "{}", nat.name());
        }
    }
}

/// One binary is enough for discovery (spec/05 §2.1): behind each of the five classic
/// types, the daemon's discovery with `dna bootstrap` (SERVER_A:4000, `--other-address
/// SERVER_B`) as its only STUN server gives the class, mapping and filtering it gives with
/// coturn; and coturn's own client, `turnutils_natdiscovery -m -f`, pointed at the bootstrap
/// node, gives the verdicts it gives pointed at coturn — all of them what the router is
/// built to be.
#[test]
fn discovery_through_dna_bootstrap_agrees_with_coturn() {
    use netsim::testbed::{rfc5780_bootstrap, SERVER_A, STUN_PORT};
    let Some(tb) = test_bed("discovery_through_dna_bootstrap_agrees_with_coturn") else {
        return;
    };
    let coturn = SocketAddr::from((SERVER_A, STUN_PORT));
    let boot = rfc5780_bootstrap();
    let types = [
        NatType::Public,
        NatType::FullCone,
        NatType::AddressRestricted,
        NatType::PortRestricted,
        NatType::Symmetric,
    ];
    for nat in types {
        let host = tb.host(nat, 'a');
        let mut classes = Vec::new();
        for server in [coturn, boot] {
            let theirs = tb
                .turnutils_discovery_at(host, server)
                .expect("turnutils_natdiscovery");
            let daemon = tb
                .start_daemon_discovering_with(host, server, &[])
                .expect("daemon");
            tb.wait_ready(&daemon, host).expect("ready");
            let ready = daemon.wait_event("ready", Duration::ZERO).expect("ready");
            let field = |k: &str| {
                ready
                    .get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or("none")
                    .to_string()
            };
            let ours = (field("nat"), field("mapping"), field("filtering"));
            eprintln!(
                "{:>18} via {server}: ours {ours:?}, turnutils {theirs:?}",
                nat.name()
            );
            classes.push((ours, theirs));
        }
        let (with_coturn, with_boot) = (&classes[0], &classes[1]);
        println!(
            "{:>18}: ours {} (coturn) / {} (dna bootstrap); turnutils {:?} / {:?}",
            nat.name(),
            with_coturn.0 .0,
            with_boot.0 .0,
            with_coturn.1,
            with_boot.1
        );
        assert_eq!(with_boot.0, with_coturn.0, "{}: our discovery", nat.name());
        assert_eq!(with_boot.1, with_coturn.1, "{}: turnutils", nat.name());
        let expected = nat.expected().expect("discovery works");
        assert_eq!(with_boot.0 .0, nat.name());
        assert_eq!((with_boot.0 .1.as_str(), with_boot.0 .2.as_str()), expected);
        assert_eq!((with_boot.1 .0.as_str(), with_boot.1 .1.as_str()), expected);
    }
}

/// Every pair of the six matrix types (21), each side behind its own NAT: b publishes its
/// presence, a sends it a message without having seen it before. 14 pairs connect
/// directly (port-restricted ↔ symmetric by port prediction, spec/05-nat.md §5.5);
/// symmetric ↔ symmetric delivers through the bootstrap node's bundled relay ("relay");
/// the six pairs with a `udp-blocked` side go
/// through TURN over TCP ("turn"): that side's daemon gets no answer over UDP, allocates
/// on the bed's coturn over TCP and sends everything through it (spec/07-relay.md §2.11).
#[test]
fn nat_matrix() {
    let Some(tb) = test_bed("nat_matrix") else {
        return;
    };
    let started = std::time::Instant::now();
    let results = tb.run_pairs(&pairs(), |r| eprintln!("{}  {}", r.json(), r.detail));
    let mut ms: Vec<f64> = results.iter().filter_map(|r| r.ms).collect();
    ms.sort_by(f64::total_cmp);
    eprintln!(
        "direct: {} of {}; median time to delivery {:?} ms; {:.1} s",
        results.iter().filter(|r| r.path == "direct").count(),
        results.len(),
        ms.get(ms.len() / 2),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(results.len(), 21);
    for r in &results {
        let blocked = r.a == NatType::UdpBlocked || r.b == NatType::UdpBlocked;
        let want = if blocked {
            "turn"
        } else if NatType::direct_expected(r.a, r.b) {
            "direct"
        } else {
            "relay"
        };
        assert!(r.ms.is_some(), "{} ↔ {}: delivered", r.a.name(), r.b.name());
        if NatType::needs_prediction(r.a, r.b) {
            // Direct at once, or after a first message through the relay while the probes
            // ran (≈ 3 % of attempts: 1 s of probes misses with p ≈ e^-3.6).
            assert!(
                r.direct_ms.is_some(),
                "{} ↔ {}: direct by prediction: {} {}",
                r.a.name(),
                r.b.name(),
                r.json(),
                r.detail
            );
            continue;
        }
        assert_eq!(
            r.path,
            want,
            "{} ↔ {}: {}",
            r.a.name(),
            r.b.name(),
            r.detail
        );
    }
}

/// Port prediction (spec/05-nat.md §5.5) in CI time, issue 12's figure on a smaller
/// count: port-restricted ↔ symmetric, 10 attempts with the easy side calling and 10 with
/// the hard side calling, fresh daemons (fresh NAT mappings) each time. At least 19 of the
/// 20 end on a direct path, found by probes (the median attempt sent some); the summary
/// lines are those of `netsim nat-matrix --pair A:B --repeat N`.
#[test]
fn port_restricted_and_symmetric_connect_directly_by_port_prediction() {
    let Some(tb) = test_bed("port_restricted_and_symmetric_connect_directly_by_port_prediction")
    else {
        return;
    };
    use NatType::*;
    let (mut attempts, mut direct) = (0, 0);
    for (a, b) in [(PortRestricted, Symmetric), (Symmetric, PortRestricted)] {
        let s = tb.repeat_pair(a, b, 10, |i, r| {
            eprintln!("{} {} probes {}  {}", i + 1, r.json(), r.probes, r.detail)
        });
        println!("{}", s.json());
        attempts += s.attempts;
        direct += s.direct;
        assert!(
            s.probes_p50.is_some_and(|p| p > 0),
            "{}: the direct paths came from probes: {}",
            s.pair,
            s.json()
        );
    }
    assert_eq!(attempts, 20);
    assert!(direct >= 19, "direct in {direct} of {attempts} attempts");
}

/// The extra types' pairs, run as `nat-matrix --only A:B` runs them: the two same-LAN
/// pairs connect over their host candidates (the LAN path, also where the router would
/// hairpin), ipv6-firewall ↔ ipv6-firewall connects directly over IPv6 through both
/// stateful firewalls (the bed runs those daemons dual-stack, `--listen [::]:0`; their only
/// host candidates another LAN can reach are the global IPv6 addresses, and a host pair
/// outranks the IPv4 server-reflexive one), symmetric-seq behaves as symmetric (direct
/// toward full cone, direct by port prediction toward port-restricted — its sequential
/// ports probed first — and through the bootstrap node's relay toward itself).
#[test]
fn extra_pairs() {
    let Some(tb) = test_bed("extra_pairs") else {
        return;
    };
    use NatType::*;
    let extra = [
        (SameLan, SameLan),
        (SameLanHairpin, SameLanHairpin),
        (Ipv6Firewall, Ipv6Firewall),
        (FullCone, SymmetricSeq),
        (PortRestricted, SymmetricSeq),
        (SymmetricSeq, SymmetricSeq),
    ];
    let results = tb.run_pairs(&extra, |r| eprintln!("{}", r.json()));
    for r in &results {
        let want = if NatType::direct_expected(r.a, r.b) {
            "direct"
        } else {
            "relay"
        };
        assert!(r.ms.is_some(), "{} ↔ {}: delivered", r.a.name(), r.b.name());
        if NatType::needs_prediction(r.a, r.b) {
            assert!(r.direct_ms.is_some(), "{}: direct by prediction", r.json());
            continue;
        }
        if matches!(r.a, SameLan | SameLanHairpin | Ipv6Firewall) {
            // Issue 12 item 4: the LAN path (host candidates), hairpinning router or not;
            // item 3: IPv6 host candidates through the firewalls.
            assert_eq!(
                r.via,
                "host",
                "{} ↔ {}: {}",
                r.a.name(),
                r.b.name(),
                r.detail
            );
        }
        assert_eq!(
            r.path,
            want,
            "{} ↔ {}: {}",
            r.a.name(),
            r.b.name(),
            r.detail
        );
    }
}

/// The routers forget a silent UDP mapping after 30 s. After 45 s of application silence,
/// (1) the punched connection still carries a message without a reconnect, and (2) a new
/// caller still reaches the callee through the rendezvous node — both held by the 15 s
/// QUIC keep-alive. (`DNA_TEST_KEEP_ALIVE_SECS=60`, applied to every node, shows the test
/// failing without it.)
#[test]
fn keepalives_hold_nat_mappings_through_silence() {
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
    use std::time::Instant;
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

/// coturn in the bed relays with its long-term credentials: from a port-restricted host over
/// UDP, and from the `udp-blocked` host over TCP (the only thing its router lets out), two
/// `turnutils_uclient` clients allocate relayed addresses in coturn's small port range and
/// exchange 5 messages each through them; a wrong password gets no allocation. Behind the
/// `udp-blocked` router, UDP and TCP to anything but the TURN port are dropped (its counters
/// show the attempts arrived), TCP to the TURN port connects.
#[test]
fn turn_relays_with_credentials_and_over_tcp_through_a_udp_blocked_router() {
    use netsim::testbed::{turn_servers, TURN_PASSWORD, TURN_RELAY_PORTS};
    let Some(tb) =
        test_bed("turn_relays_with_credentials_and_over_tcp_through_a_udp_blocked_router")
    else {
        return;
    };
    let in_range = |a: &SocketAddr| (TURN_RELAY_PORTS.0..=TURN_RELAY_PORTS.1).contains(&a.port());
    for (nat, tcp) in [
        (NatType::PortRestricted, false),
        (NatType::UdpBlocked, true),
    ] {
        let host = tb.host(nat, 'a');
        let r = tb.turnutils_uclient(host, tcp, TURN_PASSWORD).unwrap();
        eprintln!(
            "{:>16} over {}: relays {:?}, sent {}, received {}",
            nat.name(),
            if tcp { "TCP" } else { "UDP" },
            r.relays,
            r.sent,
            r.received
        );
        assert!(r.relays.len() >= 2, "one per client at least: {r:?}");
        assert!(r.relays.iter().all(in_range), "{r:?}");
        assert_eq!((r.sent, r.received), (10, 10), "{r:?}");
        let wrong = tb.turnutils_uclient(host, tcp, "not-the-password").unwrap();
        assert!(
            wrong.allocation_failed && wrong.relays.is_empty(),
            "{wrong:?}"
        );
    }

    let host = tb.host(NatType::UdpBlocked, 'a');
    let router = host.router.clone().unwrap();
    let counter = |name: &str| tb.nft_counter(&router, "ip dnanat", name).unwrap();
    let echo_addr = SocketAddr::from((netsim::testbed::SERVER_A, 7000));
    let _echo = tb.public_echo(&[echo_addr]).unwrap();
    let mut probe = tb
        .udp_probe(&host.ns, "0.0.0.0:0".parse().unwrap())
        .unwrap();
    let (udp0, other0) = (counter("udp_out_dropped"), counter("other_out_dropped"));
    assert_eq!(probe.mapped_by(echo_addr).unwrap(), None, "UDP got out");
    let udp1 = counter("udp_out_dropped");
    assert_eq!(
        udp1,
        udp0 + 1,
        "the datagram reached the router and was dropped there"
    );
    let turn_tcp = probe
        .tcp_connect(turn_servers()[0], Duration::from_secs(5))
        .unwrap();
    let boot = SocketAddr::from((netsim::testbed::SERVER_A, netsim::testbed::BOOTSTRAP_PORT));
    let other_tcp = probe.tcp_connect(boot, Duration::from_secs(2)).unwrap();
    let other1 = counter("other_out_dropped");
    eprintln!(
        "udp-blocked: UDP to the echo dropped ({udp0} → {udp1}); TCP to {} {turn_tcp}; TCP to {boot} {other_tcp} (dropped {other0} → {other1})",
        turn_servers()[0]
    );
    assert_eq!(turn_tcp, "tcp-connected");
    assert_eq!(other_tcp, "tcp-timeout");
    assert!(
        other1 > other0,
        "the SYN reached the router and was dropped there"
    );
}

/// The external ports three router types give one inside socket talking to 10 different
/// destinations: port-restricted keeps one port (EIM), symmetric (`masquerade
/// fully-random`) a random port per destination, symmetric-seq consecutive ports.
#[test]
fn symmetric_seq_allocates_consecutive_ports() {
    let Some(tb) = test_bed("symmetric_seq_allocates_consecutive_ports") else {
        return;
    };
    let dests: Vec<SocketAddr> = (0..10)
        .map(|i| SocketAddr::from((netsim::testbed::SERVER_A, 7100 + i)))
        .collect();
    let _echo = tb.public_echo(&dests).unwrap();
    let mut seen = std::collections::HashMap::new();
    for nat in [
        NatType::PortRestricted,
        NatType::Symmetric,
        NatType::SymmetricSeq,
    ] {
        let host = tb.host(nat, 'a');
        let mut probe = tb
            .udp_probe(&host.ns, "0.0.0.0:0".parse().unwrap())
            .unwrap();
        let ports: Vec<u16> = dests
            .iter()
            .map(|d| probe.mapped_by(*d).unwrap().expect("an echo").port())
            .collect();
        eprintln!(
            "{:>16}: inside port {} → {ports:?}",
            nat.name(),
            probe.local.port()
        );
        seen.insert(nat, ports);
    }
    let pr = &seen[&NatType::PortRestricted];
    assert!(pr.iter().all(|p| *p == pr[0]), "EIM: one port {pr:?}");
    let sym = &seen[&NatType::Symmetric];
    let distinct: std::collections::HashSet<_> = sym.iter().collect();
    assert_eq!(
        distinct.len(),
        sym.len(),
        "APDM: a port per destination {sym:?}"
    );
    let seq = &seen[&NatType::SymmetricSeq];
    assert!(
        seq.windows(2).all(|w| w[1] == w[0] + 1),
        "sequential: {seq:?}"
    );
}

/// The `ipv6-firewall` router forwards IPv6 without NAT and lets in only what belongs to a
/// flow the inside opened: a datagram from the public side to the host's global address is
/// dropped (the firewall's counter shows it arrived) until the host has sent to that
/// address and port; then the answer passes, from the same sender, and the counter stays.
/// Over IPv4 the same host is behind a port-restricted NAT.
#[test]
fn ipv6_firewall_admits_only_flows_the_inside_opened() {
    let Some(tb) = test_bed("ipv6_firewall_admits_only_flows_the_inside_opened") else {
        return;
    };
    let host = tb.host(NatType::Ipv6Firewall, 'a');
    let ip6 = host.ip6.expect("an IPv6 address");
    let router = host.router.clone().unwrap();
    let dropped = || {
        tb.nft_counter(&router, "inet dnafw6", "unsolicited_in")
            .unwrap()
    };
    let outside_addr = SocketAddr::from((netsim::testbed::SERVER_A6, 7200));
    let mut outside = tb.udp_probe(tb.public_ns(), outside_addr).unwrap();
    let mut inside = tb
        .udp_probe(&host.ns, SocketAddr::from((ip6, 7300)))
        .unwrap();

    let before = dropped();
    outside.send_to(inside.local, "unsolicited").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while dropped() == before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = dropped();
    let unsolicited = inside.recv(Duration::from_millis(300)).unwrap();
    eprintln!(
        "unsolicited to {}: {unsolicited:?}; firewall drops {before} → {after}",
        inside.local
    );
    assert_eq!(after, before + 1, "the datagram reached the firewall");
    assert_eq!(unsolicited, Received::Timeout);

    inside.send_to(outside_addr, "opening").unwrap();
    let got = outside.recv(Duration::from_secs(5)).unwrap();
    assert_eq!(
        got,
        Received::Datagram(inside.local, "opening".into()),
        "no NAT: the outside sees the host's own address"
    );
    outside.send_to(inside.local, "answer").unwrap();
    let answer = inside.recv(Duration::from_secs(5)).unwrap();
    eprintln!(
        "after the inside opened the flow: {answer:?}; drops {}",
        dropped()
    );
    assert_eq!(answer, Received::Datagram(outside_addr, "answer".into()));
    assert_eq!(dropped(), after);

    let echo_addr = SocketAddr::from((netsim::testbed::SERVER_A, 7201));
    let _echo = tb.public_echo(&[echo_addr]).unwrap();
    let mut v4 = tb
        .udp_probe(&host.ns, "0.0.0.0:0".parse().unwrap())
        .unwrap();
    let mapped = v4.mapped_by(echo_addr).unwrap().expect("an echo over IPv4");
    eprintln!("IPv4: {} → {mapped}", v4.local);
    assert_eq!(mapped.ip(), IpAddr::V4(host.public_ip));
}

/// Two hosts behind one router. Host b learns its mapping from a public echo; host a sends
/// to that public address and port. Without hairpinning (the `same-lan` router: Linux
/// masquerade) the router takes the datagram as addressed to itself and answers ICMP port
/// unreachable — host a sees `refused` and b nothing. With hairpinning (`same-lan-hairpin`)
/// b gets it from a's own public mapping, and b's answer to that address reaches a.
#[test]
fn same_lan_hairpinning_only_where_the_router_does_it() {
    let Some(tb) = test_bed("same_lan_hairpinning_only_where_the_router_does_it") else {
        return;
    };
    let echo_addr = SocketAddr::from((netsim::testbed::SERVER_A, 7400));
    let _echo = tb.public_echo(&[echo_addr]).unwrap();
    for hairpin in [false, true] {
        let (ha, hb) = (tb.lan_host(hairpin, 'a'), tb.lan_host(hairpin, 'b'));
        assert_eq!(ha.router, hb.router, "one router");
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let mut a = tb.udp_probe(&ha.ns, any).unwrap();
        let mut b = tb.udp_probe(&hb.ns, any).unwrap();
        let mapped_a = a.mapped_by(echo_addr).unwrap().expect("a's mapping");
        let mapped_b = b.mapped_by(echo_addr).unwrap().expect("b's mapping");
        a.connect(mapped_b).unwrap();
        a.send("across the LAN via the public address").unwrap();
        let at_a = a.recv(Duration::from_secs(2)).unwrap();
        let at_b = b.recv(Duration::from_secs(2)).unwrap();
        eprintln!(
            "{:>16}: a {} (public {mapped_a}) → b's public {mapped_b}: a saw {at_a:?}, b saw {at_b:?}",
            ha.nat.name(),
            a.local
        );
        if !hairpin {
            assert_eq!(
                at_a,
                Received::Refused,
                "the router answered port unreachable"
            );
            assert_eq!(at_b, Received::Timeout);
            continue;
        }
        assert_eq!(
            at_b,
            Received::Datagram(mapped_a, "across the LAN via the public address".into()),
            "hairpinned, from a's public mapping"
        );
        b.send_to(mapped_a, "back").unwrap();
        let back = a.recv(Duration::from_secs(2)).unwrap();
        eprintln!("{:>16}  b answered a's public address: a saw {back:?}", "");
        assert_eq!(back, Received::Datagram(mapped_b, "back".into()));
    }
}

/// The pairs without a direct path deliver through the bootstrap node's bundled relay
/// (spec/07-relay.md §1): punching fails on both ends, both ask the rendezvous node that
/// carried the offer, and the session runs over it. No TURN server is configured; port
/// prediction is off (`--no-port-prediction`), so port-restricted ↔ symmetric has no
/// direct path either.
#[test]
fn pairs_without_a_direct_path_deliver_through_the_bundled_relay() {
    let Some(mut tb) = test_bed("pairs_without_a_direct_path_deliver_through_the_bundled_relay")
    else {
        return;
    };
    tb.pair_args = vec!["--no-port-prediction".into()];
    let pairs = [
        (NatType::PortRestricted, NatType::Symmetric),
        (NatType::Symmetric, NatType::PortRestricted),
        (NatType::Symmetric, NatType::Symmetric),
    ];
    deliver_all_via(&tb, &pairs, "relay");
}

/// Runs `pairs`; each must deliver through `path` (`"via":"relay"`).
fn deliver_all_via(tb: &TestBed, pairs: &[(NatType, NatType)], path: &str) {
    let results = tb.run_pairs(pairs, |r| eprintln!("{}  {}", r.json(), r.detail));
    for r in &results {
        println!("{}", r.json());
        assert_eq!(
            (r.path.as_str(), r.via.as_str()),
            (path, "relay"),
            "{} ↔ {}: {}",
            r.a.name(),
            r.b.name(),
            r.detail
        );
        assert!(r.ms.is_some(), "{} ↔ {}: delivered", r.a.name(), r.b.name());
        assert_eq!(
            r.ended,
            path,
            "{} ↔ {}: the session stayed",
            r.a.name(),
            r.b.name()
        );
    }
}

/// Decision 9, by default: a daemon whose presence says it is reachable (public host, full
/// cone) serves in the DHT; one behind a port-restricted NAT stays a client (`dna status` →
/// `dht.serves`); `dht_serve = false` keeps even a public daemon a client.
#[test]
fn reachable_daemons_serve_in_the_dht_and_others_are_clients() {
    let cfg = std::env::temp_dir().join(format!("dna-dht-serve-{}.toml", std::process::id()));
    std::fs::write(&cfg, "dht_serve = false\n").unwrap();
    let off = ["--config".to_string(), cfg.display().to_string()];
    let Some(tb) = test_bed("reachable_daemons_serve_in_the_dht_and_others_are_clients") else {
        return;
    };
    for (nat, extra, serves) in [
        (NatType::Public, &[][..], true),
        (NatType::FullCone, &[][..], true),
        (NatType::PortRestricted, &[][..], false),
        (NatType::Public, &off[..], false),
    ] {
        let p = tb.daemon_with(tb.host(nat, 'a'), extra).unwrap();
        let st = p.control(&serde_json::json!({"cmd": "status"})).unwrap();
        println!(
            "{} {extra:?}: reachable {}, dht serves {}",
            nat.name(),
            st["reachable"],
            st["dht"]["serves"]
        );
        assert_eq!(st["reachable"], nat != NatType::PortRestricted, "{st}");
        assert_eq!(st["dht"]["serves"], serves, "{}: {st}", nat.name());
    }
    let _ = std::fs::remove_file(&cfg);
}

/// The bundled relay's node dies mid-session (issue 10; spec/07-relay.md §1.8): the caller
/// reports the peer down (messages wait for ACKs that do not come: the 20 s ACK timeout of
/// spec/03 §6), reaches it again through the other bootstrap node (the callee is registered
/// at both) and its relay, and every message sent meanwhile arrives exactly once. The
/// times are printed, not asserted.
#[test]
fn a_relayed_session_survives_its_relay_node_dying() {
    use std::time::Instant;
    let Some(mut tb) = test_bed("a_relayed_session_survives_its_relay_node_dying") else {
        return;
    };
    let callee = tb.daemon(tb.host(NatType::Symmetric, 'b')).unwrap();
    let caller = tb.daemon(tb.host(NatType::Symmetric, 'a')).unwrap();
    let to = callee.fingerprint().unwrap();
    let send = |text: &str| {
        caller
            .control(&serde_json::json!({"cmd": "send", "to": to, "text": text}))
            .unwrap()
    };
    let arrived = |text: &str, within: Duration| {
        callee
            .wait_for(within, |e| {
                e.get("text").and_then(|t| t.as_str()) == Some(text)
            })
            .is_some()
    };
    let reply = send("before");
    assert_eq!(reply["path"], "relay", "{reply}");
    assert!(arrived("before", Duration::from_secs(30)), "{reply}");
    let status = caller
        .control(&serde_json::json!({"cmd": "status"}))
        .unwrap();
    let relay = status["relay"]["peers"][0]["via"]
        .as_str()
        .expect("a relayed peer")
        .to_owned();
    assert!(tb.kill_bootstrap(&relay), "{relay} is a bootstrap node");
    let killed = Instant::now();
    let texts: Vec<String> = (0..20).map(|i| format!("during {i}")).collect();
    for t in &texts {
        send(t);
    }
    let down = caller
        .wait_for(Duration::from_secs(90), |e| e["event"] == "peer_down")
        .expect("the peer is reported down");
    let down_s = (down.at - killed).as_secs_f64();
    for t in &texts {
        assert!(
            arrived(t, Duration::from_secs(120)),
            "{t} not delivered; caller: {}; callee: {}",
            caller.stderr_tail(),
            callee.stderr_tail()
        );
    }
    let back_s = killed.elapsed().as_secs_f64();
    let status = caller
        .control(&serde_json::json!({"cmd": "status"}))
        .unwrap();
    let vias: Vec<&str> = status["relay"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["via"].as_str())
        .collect();
    let events = callee.events();
    let count = |t: &str| events.iter().filter(|e| e["text"] == t).count();
    println!(
        "relay {relay} killed: peer down after {down_s:.1} s, 20 messages sent meanwhile all \
         delivered after {back_s:.1} s; caller's relayed routes now via {vias:?}"
    );
    assert!(texts.iter().all(|t| count(t) == 1), "each exactly once");
    assert!(
        vias.iter().any(|v| *v != relay),
        "through the other relay: {vias:?}"
    );
}

/// A relayed session moves to the direct path (issue 10; spec/07-relay.md §1.9). Two
/// port-restricted hosts, a blocking rule in a's router between them: punching finds no
/// pair within `relay_after`, the session starts through the bootstrap node's relay. The
/// test sends 10,000 messages and lifts the rule while they flow; the punching attempt,
/// still running, finds the pair and the caller's socket moves the session under the
/// peer's token. Every message arrives once, in order, and the caller's outbox empties.
#[test]
fn a_relayed_session_moves_to_the_direct_path_when_the_block_is_lifted() {
    use std::time::Instant;
    let Some(tb) = test_bed("a_relayed_session_moves_to_the_direct_path_when_the_block_is_lifted")
    else {
        return;
    };
    let (ha, hb) = (
        tb.host(NatType::PortRestricted, 'a').clone(),
        tb.host(NatType::PortRestricted, 'b').clone(),
    );
    let callee = tb.daemon(&hb).unwrap();
    let caller = tb.daemon(&ha).unwrap();
    tb.block(&ha, hb.public_ip).unwrap();
    let to = callee.fingerprint().unwrap();
    let send = |text: &str| {
        caller
            .control(&serde_json::json!({"cmd": "send", "to": to, "text": text}))
            .unwrap()
    };
    let started = Instant::now();
    let reply = send("m00000");
    assert_eq!(reply["path"], "relay", "{reply}");
    let n = 10_000;
    let mut lifted = None;
    for i in 1..n {
        send(&format!("m{i:05}"));
        if lifted.is_none() && started.elapsed() > Duration::from_secs(3) {
            lifted = Some((i, tb.unblock(&ha).unwrap()));
        }
    }
    let (lifted_at, dropped) = lifted.unwrap_or_else(|| (n, tb.unblock(&ha).unwrap()));
    let last = format!("m{:05}", n - 1);
    assert!(
        callee
            .wait_for(Duration::from_secs(120), |e| e["text"] == last.as_str())
            .is_some(),
        "the last message arrived; callee: {}",
        callee.stderr_tail()
    );
    let texts: Vec<String> = callee
        .events()
        .iter()
        .filter(|e| e["event"] == "message")
        .filter_map(|e| e["text"].as_str().map(str::to_owned))
        .collect();
    let want: Vec<String> = (0..n).map(|i| format!("m{i:05}")).collect();
    let status = caller
        .control(&serde_json::json!({"cmd": "status"}))
        .unwrap();
    let route = &status["relay"]["peers"][0];
    let pending = status["pending_peers"].as_u64();
    println!(
        "10,000 messages; block lifted after message {lifted_at} ({dropped} packets dropped \
         by it); callee got {} messages, in order: {}; caller's route: via {} → direct {}, \
         {} B relayed out; peers with messages waiting: {pending:?}",
        texts.len(),
        texts == want,
        route["via"],
        route["direct"],
        route["bytes_out"]
    );
    assert!(dropped > 0, "the block was in the way");
    assert_eq!(texts, want, "all 10,000, once each, in order");
    assert!(
        route["direct"].is_string(),
        "moved to the direct path: {route}"
    );
    assert_eq!(pending, Some(0), "everything acknowledged");
}

/// A session still relayed after its first punching attempt ended is offered new ones
/// (`upgrade_secs`, 15 s here): the block is lifted 15 s after the session started through
/// the bootstrap node's relay, and the next attempt moves it to the direct path; messages
/// sent before and after arrive once each.
#[test]
fn a_session_relayed_for_long_moves_to_the_direct_path_later() {
    relayed_for_long_then_direct(
        "a_session_relayed_for_long_moves_to_the_direct_path_later",
        "relay",
    );
}

/// The same through coturn (spec/07-relay.md §3.7): bootstrap nodes without the bundled
/// relay, both daemons with TURN; the session starts on a TURN pair (dialed under a local
/// alias) and the upgrade loop moves it to the direct path once the block is lifted.
#[test]
fn a_turn_session_moves_to_the_direct_path_later() {
    relayed_for_long_then_direct("a_turn_session_moves_to_the_direct_path_later", "turn");
}

/// Two port-restricted hosts, a block between them, a session through `relay` ("relay":
/// the bundled relay; "turn": coturn); lifted 15 s later, the session moves to direct.
fn relayed_for_long_then_direct(name: &str, relay: &str) {
    use std::time::Instant;
    let cfg = std::env::temp_dir().join(format!("dna-upgrade-{relay}-{}.toml", std::process::id()));
    std::fs::write(&cfg, "upgrade_secs = 15\n").unwrap();
    let mut extra = vec!["--config".to_string(), cfg.display().to_string()];
    let bootstrap_extra: Vec<String> = match relay {
        "turn" => vec!["--no-relay-server".into()],
        _ => Vec::new(),
    };
    let Some(tb) = test_bed_with(name, &bootstrap_extra) else {
        return;
    };
    if relay == "turn" {
        extra.extend(tb.turn_args_for(1));
    }
    let (ha, hb) = (
        tb.host(NatType::PortRestricted, 'a').clone(),
        tb.host(NatType::PortRestricted, 'b').clone(),
    );
    let callee = tb.daemon_with(&hb, &extra).unwrap();
    let caller = tb.daemon_with(&ha, &extra).unwrap();
    tb.block(&ha, hb.public_ip).unwrap();
    let to = callee.fingerprint().unwrap();
    let send = |text: &str| {
        caller
            .control(&serde_json::json!({"cmd": "send", "to": to, "text": text}))
            .unwrap()
    };
    let reply = send("relayed");
    assert_eq!(reply["path"], relay, "{reply}");
    let relayed_at = Instant::now();
    // The first attempt ends 10 s after the answer; lift the block after it.
    std::thread::sleep(Duration::from_secs(15));
    let dropped = tb.unblock(&ha).unwrap();
    // The session's path as `dna status` shows it.
    let path = |p: &netsim::testbed::DnaProcess| {
        p.control(&serde_json::json!({"cmd": "status"})).unwrap()["peers"][0].clone()
    };
    assert_eq!(
        path(&caller)["path"],
        relay,
        "still relayed when the block is lifted"
    );
    let moved = loop {
        let p = path(&caller);
        if p["path"] == "direct" {
            break p;
        }
        assert!(
            relayed_at.elapsed() < Duration::from_secs(120),
            "not moved: {p}; caller: {}",
            caller.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let moved_s = relayed_at.elapsed().as_secs_f64();
    send("direct");
    for t in ["relayed", "direct"] {
        assert!(callee
            .wait_for(Duration::from_secs(30), |e| e["text"] == t)
            .is_some());
    }
    let count = |t: &str| callee.events().iter().filter(|e| e["text"] == t).count();
    println!(
        "{relay}: block lifted 15 s into the relayed session ({dropped} packets dropped by \
         it); moved to {} {moved_s:.1} s after the session started; both messages once: {}",
        moved["upgraded_to"],
        count("relayed") == 1 && count("direct") == 1
    );
    assert_eq!((count("relayed"), count("direct")), (1, 1));
    let _ = std::fs::remove_file(&cfg);
}

/// The two pairs without a direct path deliver through coturn (spec/07-relay.md §3.4),
/// whichever side keeps an allocation there: both; only the caller (the callee punches
/// toward the caller's relayed candidate, the caller learns the callee behind its own
/// relay and dials it through it); only the callee (punching fails, the caller dials the
/// callee's relayed candidate).
#[test]
fn pairs_without_a_direct_path_deliver_through_turn() {
    // Bootstrap nodes that do not relay: coturn is the only relay.
    let Some(mut tb) = test_bed_with(
        "pairs_without_a_direct_path_deliver_through_turn",
        &["--no-relay-server".to_string()],
    ) else {
        return;
    };
    let pairs = [
        (NatType::PortRestricted, NatType::Symmetric),
        (NatType::Symmetric, NatType::Symmetric),
    ];
    // Without port prediction, port-restricted ↔ symmetric has no direct path either.
    let no_prediction = "--no-port-prediction".to_string();
    tb.pair_args = tb.turn_args_for(1);
    tb.pair_args.push(no_prediction.clone());
    eprintln!("both sides with TURN:");
    deliver_all_via(&tb, &pairs, "turn");
    tb.pair_args = vec![no_prediction];
    for side in [0, 1] {
        eprintln!("only {} with TURN:", ["the caller", "the callee"][side]);
        tb.side_args = Default::default();
        tb.side_args[side] = tb.turn_args_for(1);
        deliver_all_via(&tb, &pairs, "turn");
    }
}

/// Seed 003's consent behind real NATs: two daemons with `relay = "ask"` (the default) on
/// symmetric NATs, where only a relay can carry a session. alice's message to bob waits:
/// the send answers `relay-needed` with a hint, her daemon says so in a `relay_needed`
/// event, and bob has nothing. Once alice allows a relay for bob (bob allowed one for
/// alice already), the waiting message goes through the bootstrap node's bundled relay.
#[test]
fn relay_ask_on_symmetric_nats_waits_for_consent_then_delivers() {
    let Some(mut tb) = test_bed("relay_ask_on_symmetric_nats_waits_for_consent_then_delivers")
    else {
        return;
    };
    // No prediction between the two symmetric sides: nothing direct to hope for.
    tb.pair_args = vec!["--no-port-prediction".into()];
    let ask = [
        "--relay".to_string(),
        "ask".to_string(),
        "--no-port-prediction".into(),
    ];
    let bob = tb
        .daemon_with(tb.host(NatType::Symmetric, 'b'), &ask)
        .unwrap();
    let alice = tb
        .daemon_with(tb.host(NatType::Symmetric, 'a'), &ask)
        .unwrap();
    let (fa, fb) = (alice.fingerprint().unwrap(), bob.fingerprint().unwrap());
    let ctl = |p: &netsim::testbed::DnaProcess, req: serde_json::Value| {
        let v = p.control(&req).unwrap();
        assert_eq!(v["ok"], true, "{req} → {v}");
        v
    };
    ctl(
        &bob,
        serde_json::json!({"cmd": "contacts_add", "target": fa}),
    );
    ctl(
        &bob,
        serde_json::json!({"cmd": "contacts_allow_relay", "target": fa}),
    );
    let text = "hello bob, through a relay once I allow it";
    let sent = ctl(
        &alice,
        serde_json::json!({"cmd": "send", "to": fb, "text": text}),
    );
    println!("send without consent: {sent}");
    assert_eq!(sent["path"], "relay-needed", "{sent}");
    assert_eq!(sent["queued"], true, "{sent}");
    assert!(
        sent["hint"]
            .as_str()
            .is_some_and(|h| h.contains("allow-relay")),
        "{sent}"
    );
    let needed = alice.wait_for(Duration::from_secs(30), |e| {
        e["event"] == "relay_needed" && e["peer"].as_str() == Some(fb.as_str())
    });
    assert!(needed.is_some(), "alice's daemon says relay_needed for bob");
    // The reach that found only a relay has ended (the event came after it): nothing may
    // have reached bob.
    let early = bob.wait_for(Duration::ZERO, |e| e["event"] == "message");
    assert!(
        early.is_none(),
        "bob got a message before consent: {early:?}"
    );
    let allowed = std::time::Instant::now();
    ctl(
        &alice,
        serde_json::json!({"cmd": "contacts_add", "target": fb}),
    );
    ctl(
        &alice,
        serde_json::json!({"cmd": "contacts_allow_relay", "target": fb}),
    );
    let got = bob.wait_for(Duration::from_secs(30), |e| {
        e["event"] == "message" && e["text"].as_str() == Some(text)
    });
    let got = got.expect("delivered after consent");
    let ms = (got.at - allowed).as_secs_f64() * 1e3;
    let status = ctl(&alice, serde_json::json!({"cmd": "status"}));
    let path = status["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["fingerprint"].as_str() == Some(fb.as_str()))
        .map(|p| p["path"].clone());
    println!("delivered {ms:.1} ms after consent; alice's session to bob: {path:?}");
    assert_eq!(path, Some(serde_json::json!("relay")));
}

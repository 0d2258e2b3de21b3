use super::*;

fn b(m: Mapping, f: Filtering, sequential: bool) -> Behaviour {
    Behaviour {
        class: Some((m, f)),
        sequential,
    }
}

const EI: Mapping = Mapping::EndpointIndependent;
const APDM: Mapping = Mapping::AddressAndPortDependent;
const OPEN: Filtering = Filtering::EndpointIndependent;
const ADDR: Filtering = Filtering::AddressDependent;
const PORT: Filtering = Filtering::AddressAndPortDependent;

#[test]
fn the_behaviour_byte_round_trips_and_junk_reads_as_unknown() {
    for m in [EI, Mapping::AddressDependent, APDM] {
        for f in [OPEN, ADDR, PORT] {
            for s in [false, true] {
                let x = b(m, f, s);
                assert_eq!(Behaviour::decode(x.encode()), x);
            }
        }
    }
    assert_eq!(Behaviour::UNKNOWN.encode(), 0);
    for junk in [0x00, 0x03, 0x83, 0x8c, 0xa0, 0xc0, 0x7f] {
        assert_eq!(Behaviour::decode(junk), Behaviour::UNKNOWN, "{junk:#x}");
    }
}

#[test]
fn only_symmetric_facing_a_port_restricted_cone_predicts() {
    let pr = b(EI, PORT, false);
    let sym = b(APDM, PORT, false);
    let seq = b(APDM, PORT, true);
    assert_eq!(role(sym, pr), Some(Role::Spray));
    assert_eq!(role(pr, sym), Some(Role::Probe { sequential: false }));
    assert_eq!(role(pr, seq), Some(Role::Probe { sequential: true }));
    // Punching works without it, or nothing would.
    assert_eq!(role(sym, b(EI, ADDR, false)), None);
    assert_eq!(role(b(EI, OPEN, false), sym), None);
    assert_eq!(role(sym, sym), None);
    assert_eq!(role(pr, pr), None);
    assert_eq!(role(Behaviour::UNKNOWN, sym), None);
    assert_eq!(role(pr, Behaviour::UNKNOWN), None);
}

fn run(p: &mut Prober, start: Instant) -> Vec<SocketAddr> {
    let mut all = Vec::new();
    let mut now = start;
    while let Some(t) = p.poll_timeout() {
        now = now.max(t);
        let burst = p.poll_probes(now);
        assert!(burst.len() <= 10, "a burst is at most 10");
        all.extend(burst);
    }
    // Nothing more, whenever asked.
    assert!(p.poll_probes(now + Duration::from_secs(60)).is_empty());
    all
}

#[test]
fn an_attempt_never_sends_more_than_its_budget_and_is_paced() {
    let t0 = crate::nat::tests::t0();
    let target: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let cfg = ProbeConfig::default();
    let mut p = Prober::new(target, false, cfg, u32::MAX, [7; 32], t0);
    let all = run(&mut p, t0);
    assert_eq!(all.len(), 2048, "the attempt's budget, no more");
    assert_eq!(p.sent(), 2048);
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "no port twice");
    assert!(all
        .iter()
        .all(|a| a.ip() == target.ip() && a.port() >= LOWEST_PORT));
    // A smaller grant from the ledger is the limit.
    let mut p = Prober::new(target, false, cfg, 300, [7; 32], t0);
    assert_eq!(run(&mut p, t0).len(), 300);
    // Paced: 10 per 10 ms.
    let mut p = Prober::new(target, false, cfg, u32::MAX, [7; 32], t0);
    assert_eq!(p.poll_probes(t0).len(), 10);
    assert!(p.poll_probes(t0 + Duration::from_millis(9)).is_empty());
    assert_eq!(p.poll_probes(t0 + Duration::from_millis(10)).len(), 10);
    // Stopped: nothing more.
    p.stop();
    assert!(p.poll_probes(t0 + Duration::from_secs(1)).is_empty());
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn a_sequential_nat_is_probed_upward_from_its_last_port_first() {
    let t0 = crate::nat::tests::t0();
    let cfg = ProbeConfig::default();
    let target: SocketAddr = "198.51.100.7:65530".parse().unwrap();
    let mut p = Prober::new(target, true, cfg, u32::MAX, [1; 32], t0);
    let all = run(&mut p, t0);
    let ports: Vec<u16> = all.iter().map(|a| a.port()).collect();
    // 65531..=65535, then wrapping to the lowest port.
    assert_eq!(
        &ports[..7],
        &[65531, 65532, 65533, 65534, 65535, 1024, 1025]
    );
    assert_eq!(ports[511], 1024 + 506);
    let distinct: HashSet<_> = ports.iter().collect();
    assert_eq!(distinct.len(), 2048, "then random ports, none twice");
}

#[test]
fn the_ledger_caps_probes_per_ip_and_ips() {
    let t0 = crate::nat::tests::t0();
    let mut l = Ledger::new(Duration::from_secs(600), 4096, 3);
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    assert_eq!(l.grant(ip, 2048, t0), 2048);
    assert_eq!(l.grant(ip, 2048, t0), 2048);
    assert_eq!(l.grant(ip, 2048, t0), 0, "two attempts per window");
    l.refund(ip, 100);
    assert_eq!(l.grant(ip, 2048, t0), 100, "what was not sent comes back");
    let later = t0 + Duration::from_secs(600);
    assert_eq!(l.grant(ip, 2048, later), 2048, "a new window");
    for i in 1..=2u8 {
        assert_eq!(l.grant(IpAddr::from([10, 0, 0, i]), 10, later), 10);
    }
    assert_eq!(l.len(), 3);
    assert_eq!(l.grant(IpAddr::from([10, 0, 0, 9]), 10, later), 0, "full");
    // Old entries make room.
    let much_later = later + Duration::from_secs(601);
    assert_eq!(l.grant(IpAddr::from([10, 0, 0, 9]), 10, much_later), 10);
    assert_eq!(l.len(), 1);
}

#[test]
fn only_two_destination_dependent_mappings_are_hopeless() {
    let sym = b(APDM, PORT, false);
    let sym_seq = b(APDM, PORT, true);
    let addr_dep = b(Mapping::AddressDependent, ADDR, false);
    let port_restricted = b(EI, PORT, false);
    let full_cone = b(EI, OPEN, false);
    assert!(hopeless(sym, sym));
    assert!(hopeless(sym_seq, sym_seq));
    assert!(hopeless(sym, addr_dep));
    // A cone side punches (or predicts, facing a symmetric one); unknown is never hopeless.
    assert!(!hopeless(sym, port_restricted));
    assert!(!hopeless(port_restricted, sym));
    assert!(!hopeless(full_cone, sym));
    assert!(!hopeless(sym, Behaviour::UNKNOWN));
    assert!(!hopeless(Behaviour::UNKNOWN, Behaviour::UNKNOWN));
}

#[test]
fn prediction_pairs_and_hopeless_pairs_start_on_a_relay() {
    let pr = b(EI, PORT, false);
    let sym = b(APDM, PORT, false);
    assert!(relay_first(sym, sym));
    assert!(relay_first(pr, sym));
    assert!(relay_first(sym, pr));
    assert!(!relay_first(pr, pr));
    assert!(!relay_first(b(EI, OPEN, false), sym));
    assert!(!relay_first(Behaviour::UNKNOWN, sym));
}

#[test]
fn plan_names_each_sides_part_and_the_address_it_aims_at() {
    use crate::nat::candidate::{Candidate, CandidateKind};
    let decode = Behaviour::decode;
    let (port_restricted, symmetric_seq, cone) = (decode(0x88), decode(0x9A), decode(0x80));
    let srflx: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let cands = [
        Candidate::new(CandidateKind::Host, "10.0.0.2:4000".parse().unwrap(), 2),
        Candidate::new(CandidateKind::ServerReflexive, srflx, 1),
    ];
    assert_eq!(
        plan(symmetric_seq, port_restricted, &cands),
        Some(Need::Spray { to: srflx })
    );
    assert_eq!(
        plan(port_restricted, symmetric_seq, &cands),
        Some(Need::Probe {
            target: srflx,
            sequential: true
        })
    );
    assert_eq!(
        plan(cone, symmetric_seq, &cands),
        None,
        "punches without it"
    );
    let v6_only = [Candidate::new(
        CandidateKind::ServerReflexive,
        "[2001:db8::7]:40000".parse().unwrap(),
        1,
    )];
    assert_eq!(
        plan(port_restricted, symmetric_seq, &v6_only),
        None,
        "no NAT to predict"
    );
}

//! Two punching agents wired through modelled NATs (the real test is the namespace matrix).

use super::*;
use crate::nat::candidate::CandidateKind as K;

fn creds(a: &str, b: &str) -> PunchCreds {
    PunchCreds {
        local_ufrag: a.into(),
        local_pwd: format!("{a}-password-0123456789"),
        remote_ufrag: b.into(),
        remote_pwd: format!("{b}-password-0123456789"),
    }
}

/// Outside view of a side: `mapped(dst)` is the source address its packets show to `dst`;
/// `admits(src)` says whether its NAT lets a packet from `src` in, given whom it sent to.
struct Side {
    host: SocketAddr,
    symmetric: bool,
    port_restricted: bool,
    sent_to: Vec<SocketAddr>,
}

impl Side {
    fn mapped(&self, dst: SocketAddr) -> SocketAddr {
        let port = if self.symmetric {
            20000 + dst.port() % 1000
        } else {
            self.host.port()
        };
        SocketAddr::new(self.host.ip(), port)
    }
    fn admits(&self, src: SocketAddr) -> bool {
        !self.port_restricted || self.sent_to.contains(&src)
    }
}

fn run(
    a_side: Side,
    b_side: Side,
    a_cands: Vec<Candidate>,
    b_cands: Vec<Candidate>,
) -> (PunchResult, PunchResult) {
    let t = crate::nat::tests::t0();
    let cfg = PunchConfig::default();
    let mut a = Punch::new(creds("aaaa", "bbbb"), &b_cands, true, [1; 4], cfg, t);
    let mut b = Punch::new(creds("bbbb", "aaaa"), &a_cands, false, [2; 4], cfg, t);
    let mut sides = [a_side, b_side];
    let mut now = t;
    for _ in 0..10_000 {
        if a.result().is_some() && b.result().is_some() {
            break;
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
        loop {
            let mut moved = false;
            let mut queue = Vec::new();
            while let Some((to, bytes)) = a.poll_transmit() {
                queue.push((0usize, to, bytes));
            }
            while let Some((to, bytes)) = b.poll_transmit() {
                queue.push((1usize, to, bytes));
            }
            for (i, to, bytes) in queue {
                moved = true;
                let j = 1 - i;
                let src = sides[i].mapped(to);
                sides[i].sent_to.push(to);
                // A symmetric NAT admits only replies on the mapping made for `src`; a cone
                // admits on its one port, filtered by what it has sent to.
                let accept = if sides[j].symmetric {
                    sides[j].sent_to.contains(&src) && sides[j].mapped(src) == to
                } else {
                    to == sides[j].host && sides[j].admits(src)
                };
                if accept {
                    let agent = if j == 0 { &mut a } else { &mut b };
                    agent.handle_stun(src, &bytes, now);
                }
            }
            if !moved {
                break;
            }
        }
        now += Duration::from_millis(10);
    }
    (a.result().unwrap(), b.result().unwrap())
}

fn side(ip: &str, symmetric: bool, port_restricted: bool) -> Side {
    Side {
        host: format!("{ip}:5000").parse().unwrap(),
        symmetric,
        port_restricted,
        sent_to: vec![],
    }
}

fn srflx(ip: &str) -> Vec<Candidate> {
    vec![Candidate::new(
        K::ServerReflexive,
        format!("{ip}:5000").parse().unwrap(),
        65535,
    )]
}

#[test]
fn port_restricted_pair_punches_over_server_reflexive_candidates() {
    let (a, b) = run(
        side("198.18.0.11", false, true),
        side("198.18.0.12", false, true),
        srflx("198.18.0.11"),
        srflx("198.18.0.12"),
    );
    let PunchResult::Connected(s) = a else {
        panic!("{a:?}")
    };
    assert_eq!(s.remote, "198.18.0.12:5000".parse().unwrap());
    assert!(matches!(b, PunchResult::Connected(_)));
}

#[test]
fn a_symmetric_side_is_reached_at_its_peer_reflexive_address() {
    // a: symmetric (its STUN-advertised port is useless to b); b: open.
    let (a, b) = run(
        side("198.18.0.11", true, false),
        side("198.18.0.12", false, false),
        srflx("198.18.0.11"),
        srflx("198.18.0.12"),
    );
    assert!(matches!(a, PunchResult::Connected(_)), "{a:?}");
    let PunchResult::Connected(s) = b else {
        panic!("{b:?}")
    };
    assert_eq!(s.kind, K::PeerReflexive);
}

#[test]
fn symmetric_against_port_restricted_fails_at_the_deadline() {
    let (a, b) = run(
        side("198.18.0.11", true, true),
        side("198.18.0.12", false, true),
        srflx("198.18.0.11"),
        srflx("198.18.0.12"),
    );
    assert_eq!((a, b), (PunchResult::Failed, PunchResult::Failed));
}

#[test]
fn checks_with_the_wrong_password_are_not_answered() {
    let t = crate::nat::tests::t0();
    let mut a = Punch::new(
        creds("aaaa", "bbbb"),
        &srflx("198.18.0.12"),
        true,
        [1; 4],
        PunchConfig::default(),
        t,
    );
    let mut wrong = creds("bbbb", "aaaa");
    wrong.remote_pwd = "not-the-password-of-aaaa".into();
    let mut b = Punch::new(
        wrong,
        &srflx("198.18.0.11"),
        false,
        [2; 4],
        PunchConfig::default(),
        t,
    );
    b.handle_timeout(t);
    let (_, probe) = b.poll_transmit().unwrap();
    assert!(!a.handle_stun("198.18.0.12:5000".parse().unwrap(), &probe, t));
    assert_eq!(
        a.poll_transmit().map(|(to, _)| to),
        None,
        "nothing sent: no answer, no triggered check"
    );
}

/// A check that came through our own TURN allocation teaches a `relay` pair (lowest
/// priority), not a peer-reflexive one: it serves only when no direct pair answers.
#[test]
fn a_check_through_our_own_relay_teaches_a_relay_pair() {
    let t = crate::nat::tests::t0();
    let mut a = Punch::new(
        creds("aaaa", "bbbb"),
        &srflx("198.18.0.12"),
        true,
        [1; 4],
        PunchConfig::default(),
        t,
    );
    let mut b = Punch::new(
        creds("bbbb", "aaaa"),
        &srflx("198.18.0.11"),
        false,
        [2; 4],
        PunchConfig::default(),
        t,
    );
    b.handle_timeout(t);
    let (_, check) = b.poll_transmit().unwrap();
    // b's mapping toward our relayed address, as the relay saw it.
    let behind_relay: SocketAddr = "198.18.0.12:7777".parse().unwrap();
    assert!(a.handle_stun_via(behind_relay, &check, t, true));
    // The answer, then a triggered check toward it.
    let mut to_b = Vec::new();
    while let Some((to, bytes)) = a.poll_transmit() {
        if to == behind_relay {
            to_b.push(bytes);
        }
    }
    assert_eq!(to_b.len(), 2, "answer and triggered check");
    let from_a: SocketAddr = "198.18.0.11:5000".parse().unwrap();
    assert!(b.handle_stun(from_a, &to_b[1], t));
    let answer = std::iter::from_fn(|| b.poll_transmit())
        .find(|(to, _)| *to == from_a)
        .map(|(_, bytes)| bytes)
        .unwrap();
    assert!(a.handle_stun_via(behind_relay, &answer, t, true));
    assert_eq!(a.first_working(), None, "a relay pair is never the first");
    // Nothing better within the settle time, and punching had its `relay_wait`: the
    // attempt settles on it.
    let cfg = PunchConfig::default();
    a.handle_timeout(t + cfg.settle + Duration::from_millis(1));
    assert_eq!(a.result(), None, "not before relay_wait");
    a.handle_timeout(t + cfg.relay_wait);
    let Some(PunchResult::Connected(sel)) = a.result() else {
        panic!("settled: {:?}", a.result());
    };
    assert_eq!((sel.remote, sel.kind), (behind_relay, K::Relayed));
}

/// Port prediction inside an attempt (spec/05-nat.md §5.5): the probes are authenticated
/// checks to ports of the hard side's IP, never more than the budget however long the
/// attempt runs, and they stop once the hard side's check arrives from the port hit.
#[test]
fn prediction_probes_stay_within_the_budget_and_stop_at_the_first_answer() {
    use crate::nat::predict::{ProbeConfig, Prober};
    let t0 = crate::nat::tests::t0();
    let hard: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let cands = vec![Candidate::new(K::ServerReflexive, hard, 100)];
    let drive = |stop_after: Option<u32>| {
        let cfg = PunchConfig::default();
        let mut p = Punch::new(creds("aaaa", "bbbb"), &cands, true, [1; 4], cfg, t0);
        p.predict(Prober::new(
            hard,
            false,
            ProbeConfig::default(),
            2048,
            [9; 32],
            t0,
        ));
        let mut probes = 0u32;
        let mut now = t0;
        while let Some(t) = p.poll_timeout() {
            now = t;
            p.handle_timeout(now);
            let hit = SocketAddr::new(hard.ip(), 31337);
            while let Some((to, bytes)) = p.poll_transmit() {
                // The pair's own checks, and (after the hit) the answer and triggered
                // check to the port that was hit, are not probes.
                if to != hard && to != hit {
                    assert_eq!(to.ip(), hard.ip(), "probes go to the hard side's IP only");
                    let user = stun::request_username(&bytes);
                    assert_eq!(user.as_deref(), Some("bbbb:aaaa"), "an authenticated check");
                    probes += 1;
                }
            }
            if Some(probes) == stop_after {
                // The hard side's check from the port that was hit.
                let mut c = Punch::new(
                    creds("bbbb", "aaaa"),
                    &[Candidate::new(
                        K::ServerReflexive,
                        "192.0.2.1:5000".parse().unwrap(),
                        1,
                    )],
                    false,
                    [2; 4],
                    cfg,
                    now,
                );
                c.handle_timeout(now);
                let (_, check) = c.poll_transmit().unwrap();
                assert!(p.handle_stun(hit, &check, now));
            }
        }
        (
            probes,
            p.predicted_probes(),
            now.saturating_duration_since(t0),
        )
    };
    let (sent, counted, ran) = drive(None);
    println!("no answer: {sent} probes over {ran:?}");
    assert_eq!(
        (sent, counted),
        (2048, 2048),
        "the attempt's budget, no more"
    );
    assert!(
        ran >= PunchConfig::default().deadline,
        "ran to its deadline"
    );
    let (sent, counted, _) = drive(Some(100));
    println!("hit after 100: {sent} probes");
    assert_eq!(
        (sent, counted),
        (100, 100),
        "none after the hard side's check"
    );
}

/// A relay must never stop a direct attempt (spec/07-relay.md §1.9): with port prediction
/// running, a check that came through our own TURN allocation from the hard side's IP does
/// not stop the probes (it left the hard side's NAT toward the TURN server, not toward us),
/// and the relay pair it teaches does not end the attempt before [`PREDICTION_WINDOW`].
#[test]
fn a_relay_pair_does_not_stop_port_prediction() {
    use crate::nat::predict::{ProbeConfig, Prober};
    let t0 = crate::nat::tests::t0();
    let hard: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let cands = vec![Candidate::new(K::ServerReflexive, hard, 100)];
    let cfg = PunchConfig::default();
    let mut a = Punch::new(creds("aaaa", "bbbb"), &cands, true, [1; 4], cfg, t0);
    a.predict(Prober::new(
        hard,
        false,
        ProbeConfig::default(),
        2048,
        [9; 32],
        t0,
    ));
    a.handle_timeout(t0);
    while a.poll_transmit().is_some() {}
    // The hard side's check, through our relay, from its mapping toward the TURN server.
    let mut b = Punch::new(
        creds("bbbb", "aaaa"),
        &[Candidate::new(
            K::ServerReflexive,
            "192.0.2.1:5000".parse().unwrap(),
            1,
        )],
        false,
        [2; 4],
        cfg,
        t0,
    );
    b.handle_timeout(t0);
    let (_, check) = b.poll_transmit().unwrap();
    let via_turn = SocketAddr::new(hard.ip(), 55555);
    assert!(a.handle_stun_via(via_turn, &check, t0, true));
    // Our triggered check toward it, answered through the relay: a relay pair works.
    let triggered: Vec<Vec<u8>> = std::iter::from_fn(|| a.poll_transmit())
        .filter(|(to, _)| *to == via_turn)
        .map(|(_, b)| b)
        .collect();
    assert!(b.handle_stun(
        "192.0.2.1:5000".parse().unwrap(),
        triggered.last().unwrap(),
        t0
    ));
    let answer = std::iter::from_fn(|| b.poll_transmit())
        .map(|(_, b)| b)
        .last()
        .unwrap();
    assert!(a.handle_stun_via(via_turn, &answer, t0, true));
    // Past `relay_wait` the probes still go, and the attempt has not ended.
    let later = t0 + cfg.relay_wait + Duration::from_millis(100);
    let before = a.predicted_probes();
    a.handle_timeout(later);
    assert_eq!(a.result(), None, "no end before the prediction window");
    assert!(a.predicted_probes() > before, "the probes go on");
    // With no direct pair by the end of the window, the relay pair it is.
    a.handle_timeout(t0 + PREDICTION_WINDOW);
    let Some(PunchResult::Connected(sel)) = a.result() else {
        panic!("settled: {:?}", a.result());
    };
    assert_eq!((sel.remote, sel.kind), (via_turn, K::Relayed));
}

/// The hard side's check from the side socket a prediction probe hit reaches us directly
/// while a relay pair already works and `relay_wait` is zero (a pair that starts on the
/// relay): the attempt waits for the answer to our triggered check and settles on the
/// direct pair, not on the relay pair (seen in `nat-matrix --turn`, port-restricted ↔
/// symmetric, before this rule).
#[test]
fn a_check_heard_directly_gets_its_answer_before_a_relay_pair_settles() {
    use crate::nat::predict::{ProbeConfig, Prober};
    let t0 = crate::nat::tests::t0();
    let hard: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let easy: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let cands = vec![Candidate::new(K::ServerReflexive, hard, 100)];
    let cfg = PunchConfig {
        relay_wait: Duration::ZERO,
        ..PunchConfig::default()
    };
    let mut a = Punch::new(creds("aaaa", "bbbb"), &cands, true, [1; 4], cfg, t0);
    a.predict(Prober::new(
        hard,
        false,
        ProbeConfig::default(),
        2048,
        [9; 32],
        t0,
    ));
    a.handle_timeout(t0);
    while a.poll_transmit().is_some() {}
    let mut b = Punch::new(
        creds("bbbb", "aaaa"),
        &[Candidate::new(K::ServerReflexive, easy, 1)],
        false,
        [2; 4],
        cfg,
        t0,
    );
    b.handle_timeout(t0);
    // A relay pair works: the hard side's check through our TURN allocation, answered.
    let (_, check) = b.poll_transmit().unwrap();
    let via_turn = SocketAddr::new(hard.ip(), 55555);
    assert!(a.handle_stun_via(via_turn, &check, t0, true));
    let triggered = std::iter::from_fn(|| a.poll_transmit())
        .filter(|(to, _)| *to == via_turn)
        .map(|(_, b)| b)
        .last()
        .unwrap();
    assert!(b.handle_stun(easy, &triggered, t0));
    let answer = std::iter::from_fn(|| b.poll_transmit())
        .map(|(_, b)| b)
        .last()
        .unwrap();
    let t1 = t0 + Duration::from_millis(50);
    assert!(a.handle_stun_via(via_turn, &answer, t1, true));
    // The relay goes first here: the session may start on the relay pair at once.
    assert_eq!(a.first_working().map(|s| s.remote), Some(via_turn));
    // A side socket's check, straight from the hard side's NAT: prediction hit.
    let side = SocketAddr::new(hard.ip(), 61000);
    let t2 = t0 + Duration::from_millis(300);
    b.handle_timeout(t2);
    let (_, check) = b.poll_transmit().unwrap();
    assert!(a.handle_stun(side, &check, t2));
    assert!(a.predicted_probes() > 0);
    let to_side: Vec<Vec<u8>> = std::iter::from_fn(|| a.poll_transmit())
        .filter(|(to, _)| *to == side)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(to_side.len(), 2, "the answer and our triggered check");
    // Prediction stopped and the relay pair is long proven, but the triggered check is
    // in flight: no end yet.
    a.handle_timeout(t2 + Duration::from_millis(1));
    assert_eq!(a.result(), None, "waits for the triggered check");
    // Its answer proves the direct pair; the attempt settles on it.
    assert!(b.handle_stun(easy, &to_side[1], t2));
    let answer = std::iter::from_fn(|| b.poll_transmit())
        .map(|(_, b)| b)
        .last()
        .unwrap();
    let t3 = t2 + Duration::from_millis(5);
    assert!(a.handle_stun(side, &answer, t3));
    a.handle_timeout(t3 + cfg.settle);
    let Some(PunchResult::Connected(sel)) = a.result() else {
        panic!("settled: {:?}", a.result());
    };
    assert_eq!((sel.remote, sel.kind), (side, K::PeerReflexive));
}

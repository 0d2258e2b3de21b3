use std::time::Duration;

use rand_core::OsRng;

use super::*;
use crate::crypto::Identity;
use crate::nat::punch::Selected;
use crate::nat::signal::SignalKind;

const NOW_MS: u64 = 1_800_000_000_000;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn rdv(port: u16) -> (SocketAddr, Fingerprint) {
    (
        SocketAddr::from(([192, 0, 2, 1], port)),
        Fingerprint([port as u8; 32]),
    )
}

fn presence(reachable: bool, rendezvous: Vec<(SocketAddr, Fingerprint)>) -> PresenceInfo {
    PresenceInfo {
        reachable,
        nat: String::new(),
        candidates: vec![
            Candidate::new(CandidateKind::Host, sa("10.0.0.2:4000"), 100),
            Candidate::new(CandidateKind::ServerReflexive, sa("198.51.100.2:4000"), 90),
        ],
        rendezvous,
    }
}

fn start(me: Fingerprint, peer: Fingerprint) -> Reach {
    let mut r = Reach::new(me, peer, [7; 8], "ufra".into(), "p".repeat(32));
    assert_eq!(r.poll_action(), Some(Action::FindPresence));
    assert_eq!(r.poll_action(), None, "waits for the lookup");
    r
}

fn answer(callee: &Identity, to: Fingerprint, session: [u8; 8], time_ms: u64) -> Vec<u8> {
    answer_with(callee, to, session, time_ms, None)
}

fn answer_with(
    callee: &Identity,
    to: Fingerprint,
    session: [u8; 8],
    time_ms: u64,
    relayed: Option<SocketAddr>,
) -> Vec<u8> {
    let mut candidates = vec![Candidate::new(
        CandidateKind::ServerReflexive,
        sa("203.0.113.9:5000"),
        90,
    )];
    candidates.extend(relayed.map(|a| Candidate::new(CandidateKind::Relayed, a, 0)));
    Signal {
        nat: crate::nat::predict::Behaviour::UNKNOWN,
        kind: SignalKind::Answer,
        from: callee.public_key().clone(),
        to,
        session,
        time_ms,
        ufrag: "cuf1".into(),
        pwd: "q".repeat(32),
        candidates,
    }
    .sign(callee)
}

#[test]
fn no_record_means_offline() {
    let mut r = start(Fingerprint([1; 32]), Fingerprint([2; 32]));
    r.handle_presence(None);
    assert_eq!(
        r.poll_action(),
        Some(Action::Done(Err(ReachFailure::Offline)))
    );
}

#[test]
fn a_reachable_peer_is_dialed_server_reflexive_first() {
    let mut r = start(Fingerprint([1; 32]), Fingerprint([2; 32]));
    r.handle_presence(Some(Ok(presence(true, vec![]))));
    assert_eq!(
        r.poll_action(),
        Some(Action::Dial {
            addrs: vec![sa("198.51.100.2:4000"), sa("10.0.0.2:4000")]
        })
    );
    assert_eq!(
        r.poll_action(),
        Some(Action::Done(Ok(Reached::Direct {
            addr: sa("198.51.100.2:4000"),
            kind: CandidateKind::ServerReflexive
        })))
    );
}

#[test]
fn offers_go_through_each_rendezvous_until_one_answers_then_the_punched_pair_is_dialed() {
    let me = Identity::generate(&mut OsRng);
    let callee = Identity::generate(&mut OsRng);
    let mut r = start(me.fingerprint(), callee.fingerprint());
    r.handle_presence(Some(Ok(presence(false, vec![rdv(1), rdv(2)]))));
    assert_eq!(r.poll_action(), Some(Action::Offer { via: rdv(1) }));
    r.handle_offer(NOW_MS, Err(ReachFailure::Rendezvous("timed out")));
    assert_eq!(r.poll_action(), Some(Action::Offer { via: rdv(2) }));
    let a = answer(&callee, me.fingerprint(), r.session(), NOW_MS);
    r.handle_offer(NOW_MS, Ok(a));
    let Some(Action::Punch {
        creds, candidates, ..
    }) = r.poll_action()
    else {
        panic!("punching expected");
    };
    assert_eq!(
        (creds.remote_ufrag.as_str(), creds.local_ufrag.as_str()),
        ("cuf1", "ufra")
    );
    assert_eq!(candidates.len(), 1);
    let sel = Selected {
        remote: sa("203.0.113.9:5001"),
        kind: CandidateKind::PeerReflexive,
        rtt: Duration::from_millis(3),
    };
    r.handle_punch(PunchResult::Connected(sel));
    assert_eq!(
        r.poll_action(),
        Some(Action::Dial {
            addrs: vec![sa("203.0.113.9:5001")]
        })
    );
    assert!(matches!(
        r.poll_action(),
        Some(Action::Done(Ok(Reached::Punched { .. })))
    ));
    assert_eq!(r.poll_action(), None);
}

#[test]
fn every_rendezvous_failing_reports_the_last_failure_and_no_pair_means_a_relay() {
    let me = Identity::generate(&mut OsRng);
    let callee = Identity::generate(&mut OsRng);
    let mut r = start(me.fingerprint(), callee.fingerprint());
    r.handle_presence(Some(Ok(presence(false, vec![rdv(1)]))));
    assert_eq!(r.poll_action(), Some(Action::Offer { via: rdv(1) }));
    r.handle_offer(NOW_MS, Err(ReachFailure::ConnectRefused("busy")));
    assert_eq!(
        r.poll_action(),
        Some(Action::Done(Err(ReachFailure::ConnectRefused("busy"))))
    );

    let mut r = start(me.fingerprint(), callee.fingerprint());
    r.handle_presence(Some(Ok(presence(false, vec![rdv(1)]))));
    r.poll_action();
    let a = answer(&callee, me.fingerprint(), r.session(), NOW_MS);
    r.handle_offer(NOW_MS, Ok(a));
    assert!(matches!(r.poll_action(), Some(Action::Punch { .. })));
    r.handle_punch(PunchResult::Failed);
    assert_eq!(r.poll_action(), Some(Action::Relay { via: rdv(1) }));
    r.handle_relay(Err(ReachFailure::ConnectRefused("not a relay")));
    assert_eq!(
        r.poll_action(),
        Some(Action::Done(Ok(Reached::RelayNeeded)))
    );
}

#[test]
fn no_pair_at_all_and_a_relayed_candidate_dials_the_peers_relay() {
    let me = Identity::generate(&mut OsRng);
    let callee = Identity::generate(&mut OsRng);
    let relay = sa("192.0.2.50:49160");
    let mut r = start(me.fingerprint(), callee.fingerprint());
    r.handle_presence(Some(Ok(presence(false, vec![rdv(1)]))));
    r.poll_action();
    let a = answer_with(&callee, me.fingerprint(), r.session(), NOW_MS, Some(relay));
    r.handle_offer(NOW_MS, Ok(a));
    let Some(Action::Punch { candidates, .. }) = r.poll_action() else {
        panic!("punching expected");
    };
    // The relayed candidate is checked too, last (spec/07-relay.md §3.4).
    assert_eq!(candidates.len(), 2);
    assert_eq!(
        candidates.last().map(|c| c.kind),
        Some(CandidateKind::Relayed)
    );
    assert!(candidates[..1]
        .iter()
        .all(|c| c.kind != CandidateKind::Relayed));
    r.handle_punch(PunchResult::Failed);
    // The bundled relay first; it refuses, so the peer's TURN allocation.
    assert_eq!(r.poll_action(), Some(Action::Relay { via: rdv(1) }));
    r.handle_relay(Err(ReachFailure::ConnectRefused("the relay is full")));
    assert_eq!(r.poll_action(), Some(Action::Dial { addrs: vec![relay] }));
    assert_eq!(
        r.poll_action(),
        Some(Action::Done(Ok(Reached::Relayed { addr: relay })))
    );
    assert_eq!(r.poll_action(), None);
}

#[test]
fn a_reachable_peer_is_dialed_without_its_relayed_candidate() {
    let mut r = start(Fingerprint([1; 32]), Fingerprint([2; 32]));
    let mut info = presence(true, vec![]);
    info.candidates.push(Candidate::new(
        CandidateKind::Relayed,
        sa("192.0.2.50:49160"),
        0,
    ));
    r.handle_presence(Some(Ok(info)));
    let Some(Action::Dial { addrs }) = r.poll_action() else {
        panic!("dial expected");
    };
    assert_eq!(addrs, vec![sa("198.51.100.2:4000"), sa("10.0.0.2:4000")]);
}

#[test]
fn answers_from_someone_else_for_another_session_or_stale_are_refused() {
    let me = Identity::generate(&mut OsRng);
    let callee = Identity::generate(&mut OsRng);
    let mallory = Identity::generate(&mut OsRng);
    let cases = [
        answer(&mallory, me.fingerprint(), [7; 8], NOW_MS),
        answer(&callee, me.fingerprint(), [8; 8], NOW_MS),
        answer(&callee, me.fingerprint(), [7; 8], NOW_MS - 3_600_000),
        b"garbage".to_vec(),
    ];
    for bytes in cases {
        let mut r = start(me.fingerprint(), callee.fingerprint());
        r.handle_presence(Some(Ok(presence(false, vec![rdv(1)]))));
        r.poll_action();
        r.handle_offer(NOW_MS, Ok(bytes));
        assert!(
            matches!(
                r.poll_action(),
                Some(Action::Done(Err(ReachFailure::BadAnswer(_))))
            ),
            "refused"
        );
    }
}

/// Seed 000's order: after punching fails, the rendezvous node that carried the answer
/// relays (its token is dialed) before the peer's TURN allocation is tried.
#[test]
fn no_pair_asks_the_bundled_relay_before_turn() {
    let me = Identity::generate(&mut OsRng);
    let callee = Identity::generate(&mut OsRng);
    let turn = sa("192.0.2.50:49160");
    let token = sa("240.1.2.3:4567");
    let mut r = start(me.fingerprint(), callee.fingerprint());
    r.handle_presence(Some(Ok(presence(false, vec![rdv(1), rdv(2)]))));
    assert_eq!(r.poll_action(), Some(Action::Offer { via: rdv(1) }));
    r.handle_offer(NOW_MS, Err(ReachFailure::Rendezvous("timed out")));
    assert_eq!(r.poll_action(), Some(Action::Offer { via: rdv(2) }));
    let a = answer_with(&callee, me.fingerprint(), r.session(), NOW_MS, Some(turn));
    r.handle_offer(NOW_MS, Ok(a));
    assert!(matches!(r.poll_action(), Some(Action::Punch { .. })));
    r.handle_punch(PunchResult::Failed);
    assert_eq!(
        r.poll_action(),
        Some(Action::Relay { via: rdv(2) }),
        "the node that answered relays"
    );
    r.handle_relay(Ok(token));
    assert_eq!(r.poll_action(), Some(Action::Dial { addrs: vec![token] }));
    assert_eq!(
        r.poll_action(),
        Some(Action::Done(Ok(Reached::Bundled {
            relay: rdv(2).0,
            token
        })))
    );
}

/// `never`: no relay of either kind; `only`: a reachable peer is not dialed and no
/// punching happens, the offer goes straight to the relay.
#[test]
fn the_relay_policy_is_followed() {
    let me = Identity::generate(&mut OsRng);
    let callee = Identity::generate(&mut OsRng);
    let turn = sa("192.0.2.50:49160");
    let mut r = start(me.fingerprint(), callee.fingerprint()).with_policy(RelayPolicy::Never);
    r.handle_presence(Some(Ok(presence(false, vec![rdv(1)]))));
    r.poll_action();
    let a = answer_with(&callee, me.fingerprint(), r.session(), NOW_MS, Some(turn));
    r.handle_offer(NOW_MS, Ok(a));
    assert!(matches!(r.poll_action(), Some(Action::Punch { .. })));
    r.handle_punch(PunchResult::Failed);
    assert_eq!(
        r.poll_action(),
        Some(Action::Done(Ok(Reached::RelayNeeded))),
        "never: not even the peer's TURN allocation"
    );

    let mut r = start(me.fingerprint(), callee.fingerprint()).with_policy(RelayPolicy::Only);
    r.handle_presence(Some(Ok(presence(true, vec![rdv(1)]))));
    assert_eq!(
        r.poll_action(),
        Some(Action::Offer { via: rdv(1) }),
        "only: a reachable peer is not dialed"
    );
    let a = answer(&callee, me.fingerprint(), r.session(), NOW_MS);
    r.handle_offer(NOW_MS, Ok(a));
    assert_eq!(
        r.poll_action(),
        Some(Action::Relay { via: rdv(1) }),
        "only: no punching"
    );
    assert_eq!("only".parse::<RelayPolicy>(), Ok(RelayPolicy::Only));
    assert!("sometimes".parse::<RelayPolicy>().is_err());
}

/// Punching slow: the relay is asked while punching goes on (spec/07-relay.md §1.9). The
/// relay's grant first: the token is dialed (the driver upgrades later). Punching first:
/// the pair is dialed and the relay's answer is not waited for. The relay refusing while
/// punching goes on: punching decides, then the peer's TURN candidate.
#[test]
fn a_slow_punch_asks_the_relay_in_parallel() {
    let me = Identity::generate(&mut OsRng);
    let callee = Identity::generate(&mut OsRng);
    let token = sa("240.1.2.3:4567");
    let turn = sa("192.0.2.50:49160");
    let punched = |r: &mut Reach| {
        r.handle_presence(Some(Ok(presence(false, vec![rdv(1)]))));
        r.poll_action();
        let a = answer_with(&callee, me.fingerprint(), r.session(), NOW_MS, Some(turn));
        r.handle_offer(NOW_MS, Ok(a));
        assert!(matches!(r.poll_action(), Some(Action::Punch { .. })));
        r.handle_punch_slow();
        assert_eq!(r.poll_action(), Some(Action::Relay { via: rdv(1) }));
    };
    // The grant first.
    let mut r = start(me.fingerprint(), callee.fingerprint());
    punched(&mut r);
    r.handle_relay(Ok(token));
    assert_eq!(r.poll_action(), Some(Action::Dial { addrs: vec![token] }));
    assert!(matches!(
        r.poll_action(),
        Some(Action::Done(Ok(Reached::Bundled { .. })))
    ));
    // Punching first.
    let mut r = start(me.fingerprint(), callee.fingerprint());
    punched(&mut r);
    let pair = sa("203.0.113.9:5000");
    r.handle_punch(PunchResult::Connected(Selected {
        remote: pair,
        kind: CandidateKind::ServerReflexive,
        rtt: Duration::from_millis(3),
    }));
    assert_eq!(r.poll_action(), Some(Action::Dial { addrs: vec![pair] }));
    assert!(matches!(
        r.poll_action(),
        Some(Action::Done(Ok(Reached::Punched { .. })))
    ));
    // The relay refuses, then punching fails: the TURN candidate, without asking again.
    let mut r = start(me.fingerprint(), callee.fingerprint());
    punched(&mut r);
    r.handle_relay(Err(ReachFailure::ConnectRefused("the relay is full")));
    assert_eq!(r.poll_action(), None, "punching decides");
    r.handle_punch(PunchResult::Failed);
    assert_eq!(r.poll_action(), Some(Action::Dial { addrs: vec![turn] }));
    // Punching fails while the relay is asked: the relay's answer decides.
    let mut r = start(me.fingerprint(), callee.fingerprint());
    punched(&mut r);
    r.handle_punch(PunchResult::Failed);
    assert_eq!(r.poll_action(), None);
    r.handle_relay(Ok(token));
    assert_eq!(r.poll_action(), Some(Action::Dial { addrs: vec![token] }));
}

/// The first pair that answered starts the session at once, dialed at the driver's alias,
/// reported at the pair's address (spec/05-nat.md §5.2).
#[test]
fn the_first_working_pair_is_dialed_at_an_alias() {
    let me = Identity::generate(&mut OsRng);
    let callee = Identity::generate(&mut OsRng);
    let mut r = start(me.fingerprint(), callee.fingerprint());
    r.handle_presence(Some(Ok(presence(false, vec![rdv(1)]))));
    r.poll_action();
    let a = answer(&callee, me.fingerprint(), r.session(), NOW_MS);
    r.handle_offer(NOW_MS, Ok(a));
    assert!(matches!(r.poll_action(), Some(Action::Punch { .. })));
    let sel = Selected {
        remote: sa("203.0.113.9:5000"),
        kind: CandidateKind::ServerReflexive,
        rtt: Duration::from_millis(2),
    };
    let alias = sa("250.1.2.3:4");
    r.handle_punched_at(sel, alias);
    assert_eq!(r.poll_action(), Some(Action::Dial { addrs: vec![alias] }));
    assert_eq!(
        r.poll_action(),
        Some(Action::Done(Ok(Reached::Punched {
            addr: sel.remote,
            kind: sel.kind
        })))
    );
}

/// A callee with `relay = "only"` answers without candidates and asks the relay at once
/// (its request waits there `RELAY_WAIT`, 8 s). A caller with `auto` has nothing to punch
/// toward: it must ask the relay at once too, not after a 10 s punching attempt with no
/// candidate, by when the callee's request has lapsed (issue 11's devnet: alice → carol
/// ended `relay-needed` every time).
#[test]
fn an_answer_without_candidates_goes_to_the_relay_at_once() {
    let me = Identity::generate(&mut OsRng);
    let callee = Identity::generate(&mut OsRng);
    let relay_only_answer = |r: &Reach| {
        Signal {
            nat: crate::nat::predict::Behaviour::UNKNOWN,
            kind: SignalKind::Answer,
            from: callee.public_key().clone(),
            to: me.fingerprint(),
            session: r.session(),
            time_ms: NOW_MS,
            ufrag: "cuf1".into(),
            pwd: "q".repeat(32),
            candidates: Vec::new(),
        }
        .sign(&callee)
    };
    let mut r = start(me.fingerprint(), callee.fingerprint());
    r.handle_presence(Some(Ok(presence(false, vec![rdv(1)]))));
    assert_eq!(r.poll_action(), Some(Action::Offer { via: rdv(1) }));
    let a = relay_only_answer(&r);
    r.handle_offer(NOW_MS, Ok(a));
    let next = r.poll_action();
    println!("auto caller, answer without candidates → {next:?}");
    assert_eq!(next, Some(Action::Relay { via: rdv(1) }), "no punching");

    // `never`: nothing to punch and no relay: the message waits.
    let mut r = start(me.fingerprint(), callee.fingerprint()).with_policy(RelayPolicy::Never);
    r.handle_presence(Some(Ok(presence(false, vec![rdv(1)]))));
    r.poll_action();
    let a = relay_only_answer(&r);
    r.handle_offer(NOW_MS, Ok(a));
    assert_eq!(
        r.poll_action(),
        Some(Action::Done(Ok(Reached::RelayNeeded)))
    );
}

/// A pair that punching found through the peer's relayed candidate is reported as `relay`
/// (the session runs through the peer's TURN allocation: `dna send` says `turn`).
#[test]
fn a_pair_through_the_peers_relayed_candidate_is_a_relay_pair() {
    let me = Identity::generate(&mut OsRng);
    let callee = Identity::generate(&mut OsRng);
    let relay = sa("192.0.2.50:49160");
    let mut r = start(me.fingerprint(), callee.fingerprint());
    r.handle_presence(Some(Ok(presence(false, vec![rdv(1)]))));
    r.poll_action();
    let a = answer_with(&callee, me.fingerprint(), r.session(), NOW_MS, Some(relay));
    r.handle_offer(NOW_MS, Ok(a));
    assert!(matches!(r.poll_action(), Some(Action::Punch { .. })));
    r.handle_punch(PunchResult::Connected(crate::nat::punch::Selected {
        remote: relay,
        kind: CandidateKind::ServerReflexive,
        rtt: std::time::Duration::from_millis(3),
    }));
    assert_eq!(r.poll_action(), Some(Action::Dial { addrs: vec![relay] }));
    assert_eq!(
        r.poll_action(),
        Some(Action::Done(Ok(Reached::Punched {
            addr: relay,
            kind: CandidateKind::Relayed
        })))
    );
}

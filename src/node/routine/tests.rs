use super::*;

#[allow(clippy::disallowed_methods)] // any instant will do as the fake clock's zero
fn t0() -> Instant {
    Instant::now()
}

fn seed(n: u8) -> (SocketAddr, Fingerprint) {
    (
        SocketAddr::from(([192, 0, 2, n], 4000)),
        Fingerprint([n; 32]),
    )
}

fn stun(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, n], 3478))
}

fn cfg() -> RoutineConfig {
    RoutineConfig {
        stun: vec![stun(1), stun(2)],
        ..RoutineConfig::messenger(vec![seed(1), seed(2), seed(3)])
    }
}

/// Runs actions until the routine has none, answering each with `answer`; the actions.
fn run(r: &mut Routine, now: Instant, answer: &mut dyn FnMut(&Action) -> Done) -> Vec<Action> {
    let mut done = Vec::new();
    while let Some(a) = r.poll_action() {
        if a != Action::Ready {
            let d = answer(&a);
            r.handle(now, d);
        }
        done.push(a);
        assert!(done.len() < 100, "the routine does not end: {done:?}");
    }
    done
}

/// A NATed node: discovery at the second server, registered at two rendezvous nodes.
fn natted(a: &Action) -> Done {
    match a {
        Action::JoinDht => Done::Joined { table: 5 },
        Action::Discover { server } => Done::Discovered {
            ok: *server == stun(2),
            reachable: false,
        },
        Action::Register { .. } => Done::Registered { ok: true },
        Action::CheckNetwork { .. } => Done::Checked { changed: false },
        Action::GatherCandidates { .. } => Done::Gathered { reachable: false },
        _ => Done::Ok,
    }
}

#[test]
fn a_natted_messenger_joins_fetches_discovers_registers_announces_then_is_ready() {
    let now = t0();
    let mut r = Routine::new(cfg());
    let actions = run(&mut r, now, &mut natted);
    assert_eq!(
        actions,
        [
            Action::JoinDht,
            Action::FetchMailbox,
            Action::Discover { server: stun(1) },
            Action::Discover { server: stun(2) },
            Action::ServeDht(false),
            Action::Register {
                addr: seed(1).0,
                fp: seed(1).1
            },
            Action::Register {
                addr: seed(2).0,
                fp: seed(2).1
            },
            Action::Announce,
            Action::PublishKemKey,
            Action::Ready,
        ]
    );
    let st = r.stats();
    assert_eq!((st.rounds, st.registered, st.ready), (1, 2, true));
    // Next: a network check at 25 s (the round is due at 120 s).
    assert_eq!(r.poll_timeout(), Some(now + Duration::from_secs(25)));
}

#[test]
fn a_reachable_node_serves_in_the_dht_and_registers_nowhere() {
    let mut r = Routine::new(cfg());
    let actions = run(&mut r, t0(), &mut |a| match a {
        Action::Discover { .. } => Done::Discovered {
            ok: true,
            reachable: true,
        },
        other => natted(other),
    });
    assert!(actions.contains(&Action::ServeDht(true)));
    assert!(!actions.iter().any(|a| matches!(a, Action::Register { .. })));
}

#[test]
fn relay_only_never_serves_and_always_registers() {
    let mut r = Routine::new(RoutineConfig {
        relay: RelayPolicy::Only,
        ..cfg()
    });
    let actions = run(&mut r, t0(), &mut |a| match a {
        Action::Discover { .. } => Done::Discovered {
            ok: true,
            reachable: true,
        },
        other => natted(other),
    });
    assert!(actions.contains(&Action::ServeDht(false)));
    let regs = actions
        .iter()
        .filter(|a| matches!(a, Action::Register { .. }))
        .count();
    assert_eq!(regs, 2);
}

#[test]
fn no_rfc5780_server_answers_so_candidates_come_from_the_seeds() {
    let mut r = Routine::new(cfg());
    let actions = run(&mut r, t0(), &mut |a| match a {
        Action::Discover { .. } => Done::Discovered {
            ok: false,
            reachable: false,
        },
        other => natted(other),
    });
    let servers: Vec<SocketAddr> = [seed(1), seed(2), seed(3)].iter().map(|s| s.0).collect();
    assert!(actions.contains(&Action::GatherCandidates { servers }));
}

#[test]
fn failed_registrations_go_on_to_the_next_seed_and_a_failed_join_skips_the_mailbox() {
    let mut r = Routine::new(cfg());
    let actions = run(&mut r, t0(), &mut |a| match a {
        Action::JoinDht => Done::Joined { table: 0 },
        Action::Register { addr, .. } => Done::Registered {
            ok: *addr != seed(1).0,
        },
        other => natted(other),
    });
    let regs = actions
        .iter()
        .filter(|a| matches!(a, Action::Register { .. }))
        .count();
    assert_eq!(regs, 3, "seed 1 refused: seeds 2 and 3 make the two wanted");
    assert!(!actions.contains(&Action::FetchMailbox));
    assert!(
        !actions.contains(&Action::PublishKemKey),
        "not joined: nothing to publish into"
    );
    assert_eq!(actions.last(), Some(&Action::Ready));
}

#[test]
fn checks_every_25_s_and_a_round_every_120_s_or_at_once_after_a_change() {
    let start = t0();
    let mut r = Routine::new(cfg());
    run(&mut r, start, &mut natted);
    // 25 s: a check, no change, no round.
    let t = start + Duration::from_secs(25);
    r.handle_timeout(t);
    assert_eq!(
        run(&mut r, t, &mut natted),
        [Action::CheckNetwork { server: stun(1) }]
    );
    // 50 s: the addresses changed: a round at once (no join, no mailbox, no key).
    let t = start + Duration::from_secs(50);
    r.handle_timeout(t);
    let actions = run(&mut r, t, &mut |a| match a {
        Action::CheckNetwork { .. } => Done::Checked { changed: true },
        other => natted(other),
    });
    assert_eq!(actions[0], Action::CheckNetwork { server: stun(1) });
    assert_eq!(actions[1], Action::Discover { server: stun(1) });
    assert_eq!(actions.last(), Some(&Action::Announce));
    assert_eq!(r.stats().network_changes, 1);
    assert_eq!(r.stats().rounds, 2);
    // The next round is 120 s after that one; checks keep their 25 s.
    assert_eq!(r.poll_timeout(), Some(t + Duration::from_secs(25)));
    let mut at = t;
    let mut rounds = 0;
    for _ in 0..5 {
        at = r.poll_timeout().unwrap();
        r.handle_timeout(at);
        if run(&mut r, at, &mut natted).contains(&Action::Announce) {
            rounds += 1;
        }
    }
    assert_eq!(at, t + Duration::from_secs(120));
    assert_eq!(rounds, 1, "one round in 120 s without a change");
}

#[test]
fn a_bootstrap_node_only_joins() {
    let mut r = Routine::new(RoutineConfig {
        messenger: false,
        ..cfg()
    });
    assert_eq!(
        run(&mut r, t0(), &mut natted),
        [Action::JoinDht, Action::Ready]
    );
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn an_answer_that_does_not_fit_is_ignored() {
    let now = t0();
    let mut r = Routine::new(cfg());
    assert_eq!(r.poll_action(), Some(Action::JoinDht));
    r.handle(now, Done::Registered { ok: true });
    assert_eq!(r.poll_action(), None, "still joining");
    r.handle(now, Done::Joined { table: 1 });
    assert_eq!(r.poll_action(), Some(Action::FetchMailbox));
}

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;

#[allow(clippy::disallowed_methods)] // any instant will do as the fake clock's zero
fn t0() -> Instant {
    Instant::now()
}

fn id(n: u8) -> NodeId {
    NodeId([n; 20])
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 4000 + u16::from(n)))
}

fn granted(r: Result<Ask, RelayRefusal>) -> Grant {
    match r {
        Ok(Ask::Granted(g)) => g,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn pair(r: &mut RelayServer, a: u8, b: u8, now: Instant, rng: &mut ChaCha20Rng) -> (Grant, Grant) {
    assert_eq!(r.ask(id(a), addr(a), id(b), now, rng), Ok(Ask::Waiting));
    let gb = granted(r.ask(id(b), addr(b), id(a), now, rng));
    let ga = r.grant(id(a), id(b)).expect("a's grant once b asked");
    (ga, gb)
}

#[test]
fn both_ends_must_ask_and_tokens_cross() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let now = t0();
    let mut r = RelayServer::new(RelayServerLimits::default());
    assert_eq!(
        r.ask(id(1), addr(1), id(2), now, &mut rng),
        Ok(Ask::Waiting)
    );
    assert_eq!(r.grant(id(1), id(2)), None, "one side asking makes no pair");
    let gb = granted(r.ask(id(2), addr(2), id(1), now, &mut rng));
    let ga = r.grant(id(1), id(2)).unwrap();
    assert_eq!(ga.own_token, gb.peer_token);
    assert_eq!(ga.peer_token, gb.own_token);
    for t in [ga.own_token, ga.peer_token] {
        let SocketAddr::V4(v4) = t else {
            panic!("tokens are IPv4")
        };
        assert_eq!(v4.ip().octets()[0] & 0xF8, 0xF0, "token {t} in 240.0.0.0/5");
    }
    // a → b: sent to b's token from a's address, arrives at b from a's token.
    assert_eq!(
        r.forward(addr(1), ga.peer_token, 100, now),
        Ok((addr(2), ga.own_token))
    );
    assert_eq!(
        r.forward(addr(2), gb.peer_token, 50, now),
        Ok((addr(1), gb.own_token))
    );
    let s = r.stats(now);
    assert_eq!((s.pairs, s.forwarded, s.forwarded_bytes), (1, 2, 150));
    assert_eq!(s.detail[0].bytes.iter().sum::<u64>(), 150);
}

#[test]
fn strangers_and_spoofed_sources_are_dropped() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let now = t0();
    let mut r = RelayServer::new(RelayServerLimits::default());
    let (ga, _) = pair(&mut r, 1, 2, now, &mut rng);
    // From a third address, to a real token: not the pair's end.
    assert_eq!(
        r.forward(addr(3), ga.peer_token, 10, now),
        Err(Drop::Unknown)
    );
    // To a token nobody holds.
    let bogus: SocketAddr = "240.1.2.3:4".parse().unwrap();
    assert_eq!(r.forward(addr(1), bogus, 10, now), Err(Drop::Unknown));
    // b sending "to itself" (its own token) is not a path either.
    assert_eq!(
        r.forward(addr(2), ga.peer_token, 10, now),
        Err(Drop::Unknown)
    );
    assert_eq!(r.stats(now).dropped_unknown, 3);
    assert_eq!(
        r.ask(id(1), addr(1), id(1), now, &mut rng),
        Err(RelayRefusal::SamePeer)
    );
}

#[test]
fn pairs_and_waiting_requests_are_capped() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let now = t0();
    let limits = RelayServerLimits {
        max_pairs: 2,
        max_waiting: 3,
        ..RelayServerLimits::default()
    };
    let mut r = RelayServer::new(limits);
    pair(&mut r, 1, 2, now, &mut rng);
    pair(&mut r, 3, 4, now, &mut rng);
    assert_eq!(
        r.ask(id(5), addr(5), id(6), now, &mut rng),
        Ok(Ask::Waiting)
    );
    assert_eq!(
        r.ask(id(6), addr(6), id(5), now, &mut rng),
        Err(RelayRefusal::Full),
        "a third pair is refused"
    );
    assert_eq!(
        r.ask(id(7), addr(7), id(8), now, &mut rng),
        Ok(Ask::Waiting)
    );
    assert_eq!(
        r.ask(id(9), addr(9), id(10), now, &mut rng),
        Ok(Ask::Waiting)
    );
    assert_eq!(
        r.ask(id(11), addr(11), id(12), now, &mut rng),
        Err(RelayRefusal::Busy)
    );
    // Asking again for an up pair is its grant, not a new pair.
    assert!(matches!(
        r.ask(id(1), addr(1), id(2), now, &mut rng),
        Ok(Ask::Granted(_))
    ));
    let s = r.stats(now);
    assert_eq!((s.pairs, s.waiting, s.refused, s.made), (2, 3, 2, 2));
}

#[test]
fn the_byte_rate_caps_a_pair() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let t0 = t0();
    let limits = RelayServerLimits {
        pair_rate: 10_000,
        ..RelayServerLimits::default()
    };
    let mut r = RelayServer::new(limits);
    let (ga, _) = pair(&mut r, 1, 2, t0, &mut rng);
    // Ten seconds of 1,000-byte datagrams every millisecond: 100× the rate.
    let mut passed = 0u64;
    for ms in 0..10_000u64 {
        let now = t0 + Duration::from_millis(ms);
        if r.forward(addr(1), ga.peer_token, 1000, now).is_ok() {
            passed += 1000;
        }
    }
    // One second's bucket at the start plus 10 s × 10,000 B/s.
    println!("offered 10,000,000 bytes in 10 s at 10,000 B/s: {passed} forwarded");
    assert!(passed <= 10_000 + 10 * 10_000, "{passed}");
    assert!(passed >= 10 * 10_000 - 1000, "{passed}");
    assert!(r.stats(t0 + Duration::from_secs(10)).dropped_rate > 9_000);
}

#[test]
fn idle_pairs_expire_and_lifetime_ends_busy_ones() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let t0 = t0();
    let limits = RelayServerLimits {
        pair_idle: Duration::from_secs(10),
        pair_lifetime: Duration::from_secs(60),
        ..RelayServerLimits::default()
    };
    let mut r = RelayServer::new(limits);
    let (ga, _) = pair(&mut r, 1, 2, t0, &mut rng);
    let (gc, _) = pair(&mut r, 3, 4, t0, &mut rng);
    // Pair 3–4 stays busy, 1–2 goes quiet.
    for s in 1..59 {
        let now = t0 + Duration::from_secs(s);
        assert!(
            r.forward(addr(3), gc.peer_token, 10, now).is_ok(),
            "second {s}"
        );
    }
    assert_eq!(r.pairs(), 1, "the idle pair is gone");
    assert_eq!(
        r.forward(addr(1), ga.peer_token, 10, t0 + Duration::from_secs(59)),
        Err(Drop::Unknown)
    );
    r.handle_timeout(t0 + Duration::from_secs(60));
    assert_eq!(r.pairs(), 0, "the busy pair ends at its lifetime");
    // A waiting request ends after `wait`.
    assert_eq!(r.ask(id(5), addr(5), id(6), t0, &mut rng), Ok(Ask::Waiting));
    r.handle_timeout(t0 + RELAY_WAIT);
    assert_eq!(r.stats(t0).waiting, 0);
}

#[test]
fn grants_round_trip_and_other_lengths_are_refused() {
    let g = Grant {
        peer_token: "240.1.2.3:4".parse().unwrap(),
        own_token: "247.255.0.9:65535".parse().unwrap(),
        lifetime: Duration::from_secs(3600),
    };
    let bytes = g.encode();
    assert_eq!(Grant::decode(&bytes), Some(g));
    assert_eq!(Grant::decode(&bytes[..15]), None);
    assert_eq!(Grant::decode(&[&bytes[..], &[0]].concat()), None);
}

/// Sybils on one host: 20 identities behind one address pair up among themselves; the
/// source's quota stops them at 8 pairs, and a client elsewhere still gets one. One client
/// asking for 20 peers waits for 8 at most.
#[test]
fn one_source_cannot_take_every_pair_or_waiting_slot() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let now = t0();
    let mut r = RelayServer::new(RelayServerLimits::default());
    let sybil = |i: u8| SocketAddr::from(([10, 9, 9, 9], 5000 + u16::from(i)));
    let mut made = 0;
    let mut refused = 0;
    for i in 0..10u8 {
        let (a, b) = (100 + 2 * i, 101 + 2 * i);
        let _ = r.ask(id(a), sybil(a), id(b), now, &mut rng);
        match r.ask(id(b), sybil(b), id(a), now, &mut rng) {
            Ok(Ask::Granted(_)) => made += 1,
            Err(RelayRefusal::Quota) => refused += 1,
            other => panic!("{other:?}"),
        }
        r.give_up(id(a), id(b));
    }
    println!("10 pairs asked from one address: {made} made, {refused} refused (quota 8)");
    assert_eq!((made, refused), (8, 2));
    pair(&mut r, 1, 2, now, &mut rng);
    assert_eq!(r.pairs(), 9, "another source still gets a pair");
    let mut waiting = 0;
    for p in 0..20u8 {
        if r.ask(id(3), addr(3), id(200 - p), now, &mut rng) == Ok(Ask::Waiting) {
            waiting += 1;
        }
    }
    println!("one client asking for 20 peers: {waiting} wait (quota 8)");
    assert_eq!(waiting, 8);
}

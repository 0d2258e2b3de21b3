//! Attacks on the rendezvous core: expiry, renewal, rate limits, quotas, the cap, replays,
//! and one caller's flood behind a shared rendezvous node.

use super::*;
use crate::crypto::Identity;
use crate::nat::signal::{Signal, SignalKind, MAX_CLOCK_SKEW_MS};
use rand_core::OsRng;

fn t0() -> Instant {
    crate::nat::tests::t0()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn id(n: u32) -> NodeId {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&n.to_be_bytes());
    NodeId(b)
}

/// Limits where only the quota under test binds.
fn loose() -> RendezvousLimits {
    RendezvousLimits {
        register_rate: Rate {
            burst: 100_000,
            per_second: 0.0,
        },
        ..RendezvousLimits::default()
    }
}

#[test]
fn a_registration_expires_at_its_stated_lifetime_and_a_renewal_extends_it() {
    let t = t0();
    let mut r = Registry::new(true, &RendezvousLimits::default());
    let life = r.register(id(1), ip("198.18.0.1"), 7u32, t).unwrap();
    assert_eq!(life, Duration::from_secs(300));
    assert_eq!(r.poll_timeout(), Some(t + life));
    assert_eq!(
        r.lookup(&id(1), t + life - Duration::from_millis(1)),
        Some(&7)
    );
    assert_eq!(
        r.lookup(&id(1), t + life),
        None,
        "expired: not forwarded to"
    );
    r.handle_timeout(t + life);
    assert!(r.is_empty());
    assert_eq!(r.stats().expired, 1);
    assert_eq!(r.poll_timeout(), None);

    // Renewed 200 s in: lives until 500 s, over the new connection.
    r.register(id(2), ip("198.18.0.1"), 1, t).unwrap();
    r.register(id(2), ip("198.18.0.1"), 2, t + Duration::from_secs(200))
        .unwrap();
    assert_eq!(r.lookup(&id(2), t + Duration::from_secs(450)), Some(&2));
    r.handle_timeout(t + Duration::from_secs(450));
    assert_eq!(r.len(), 1);
    assert_eq!(r.lookup(&id(2), t + Duration::from_secs(500)), None);
    r.handle_timeout(t + Duration::from_secs(500));
    let s = r.stats();
    assert_eq!((s.live, s.registered, s.renewed, s.expired), (0, 2, 1, 2));
}

#[test]
fn a_node_not_serving_as_rendezvous_refuses() {
    let mut r = Registry::new(false, &RendezvousLimits::default());
    assert_eq!(
        r.register(id(1), ip("198.18.0.1"), 0u8, t0()),
        Err(RegisterError::NotServing)
    );
    assert_eq!(
        RegisterError::NotServing.code(),
        ConnectErrorCode::NotRendezvous
    );
    assert_eq!(r.stats().refused_not_serving, 1);
}

#[test]
fn registrations_are_rate_limited_per_source() {
    let t = t0();
    let limits = RendezvousLimits {
        per_source: 1000,
        ..RendezvousLimits::default()
    };
    let mut r = Registry::new(true, &limits);
    let burst = limits.register_rate.burst;
    for n in 0..burst {
        r.register(id(n), ip("198.18.0.1"), (), t).unwrap();
    }
    // Renewals count too.
    assert_eq!(
        r.register(id(0), ip("198.18.0.1"), (), t),
        Err(RegisterError::RateLimited)
    );
    // Another source has its own bucket.
    r.register(id(1000), ip("198.18.0.2"), (), t).unwrap();
    // 0.5/s: one more after 2 s.
    let later = t + Duration::from_secs(2);
    r.register(id(2000), ip("198.18.0.1"), (), later).unwrap();
    assert_eq!(
        r.register(id(2001), ip("198.18.0.1"), (), later),
        Err(RegisterError::RateLimited)
    );
    assert_eq!(r.stats().refused_rate, 2);
}

#[test]
fn one_source_holds_at_most_its_quota_and_still_renews() {
    let t = t0();
    let mut r = Registry::new(true, &loose());
    let accepted = (0..100)
        .filter(|n| r.register(id(*n), ip("198.18.0.1"), (), t).is_ok())
        .count();
    println!("100 identities from one IPv4 address: {accepted} registered");
    assert_eq!(accepted, 32);
    assert_eq!(
        r.register(id(500), ip("198.18.0.1"), (), t),
        Err(RegisterError::SourceQuota(32))
    );
    assert_eq!(
        r.register(id(3), ip("198.18.0.1"), (), t),
        Ok(Duration::from_secs(300)),
        "a renewal at the quota"
    );
    r.register(id(501), ip("198.18.0.2"), (), t).unwrap();
    // Expired registrations free the quota.
    let later = t + Duration::from_secs(300);
    r.register(id(502), ip("198.18.0.1"), (), later).unwrap();
    assert_eq!(r.stats().refused_source_quota, 69);
}

#[test]
fn walking_around_inside_one_ipv6_slash_64_is_one_source() {
    let t = t0();
    let mut r = Registry::new(true, &loose());
    let accepted = (0..100u32)
        .filter(|n| {
            let a = ip(&format!("2001:db8:1:2:{:x}::{:x}", n * 7 + 1, n + 1));
            r.register(id(*n), a, (), t).is_ok()
        })
        .count();
    println!("100 identities from 100 addresses inside one /64: {accepted} registered");
    assert_eq!(accepted, 32);

    // One /64 per identity, all inside one /48: the network quota holds.
    let mut r = Registry::new(true, &loose());
    let accepted = (0..1000u32)
        .filter(|n| {
            let a = ip(&format!("2001:db8:1:{:x}::1", n));
            r.register(id(*n), a, (), t).is_ok()
        })
        .count();
    println!("1000 identities from 1000 /64s inside one /48: {accepted} registered");
    assert_eq!(accepted, 256);
    assert_eq!(
        r.register(id(9999), ip("2001:db8:1:ffff::1"), (), t),
        Err(RegisterError::NetworkQuota(256))
    );
    r.register(id(9999), ip("2001:db8:2::1"), (), t).unwrap();
}

#[test]
fn a_full_table_refuses_after_dropping_expired_and_evicts_the_largest_source_first() {
    let t = t0();
    let limits = RendezvousLimits {
        max_registrations: 64,
        ..loose()
    };
    // 64 sources with one registration each: full, and no source holds more than a
    // newcomer: refused.
    let mut r = Registry::new(true, &limits);
    for n in 0..64 {
        r.register(id(n), ip(&format!("198.18.1.{n}")), (), t)
            .unwrap();
    }
    assert_eq!(
        r.register(id(100), ip("198.18.2.1"), (), t),
        Err(RegisterError::Full(64))
    );
    assert_eq!(r.len(), 64);
    assert_eq!(r.stats().refused_full, 1);
    // Once they expire, the newcomer gets in.
    let later = t + Duration::from_secs(300);
    r.register(id(100), ip("198.18.2.1"), (), later).unwrap();
    assert_eq!(r.len(), 1);

    // Two attacker sources fill the table with 32 each; a good client from a third
    // source takes the place of one of theirs, and the attacker cannot take it back.
    let mut r = Registry::new(true, &limits);
    for n in 0..64 {
        let a = if n % 2 == 0 {
            "198.18.3.1"
        } else {
            "198.18.3.2"
        };
        r.register(id(n), ip(a), (), t).unwrap();
    }
    r.register(id(200), ip("198.18.4.1"), (), t).unwrap();
    assert_eq!(r.lookup(&id(200), t), Some(&()));
    assert_eq!(r.len(), 64);
    assert_eq!(r.stats().evicted, 1);
    // The source that lost one would hold 32 again, no more than the other: full. The
    // other holds its quota.
    let mut again: Vec<_> = ["198.18.3.1", "198.18.3.2"]
        .iter()
        .zip(300..)
        .map(|(a, n)| r.register(id(n), ip(a), (), t))
        .collect();
    again.sort_by_key(|x| format!("{x:?}"));
    assert_eq!(
        again,
        [
            Err(RegisterError::Full(64)),
            Err(RegisterError::SourceQuota(32))
        ]
    );
    assert_eq!(r.lookup(&id(200), t), Some(&()));
}

#[test]
fn a_registrant_that_moves_is_counted_at_its_new_source() {
    let t = t0();
    let mut r = Registry::new(true, &loose());
    r.register(id(1), ip("198.18.0.1"), 1u8, t).unwrap();
    r.register(id(1), ip("198.18.0.2"), 2u8, t).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r.stats().sources, 1);
    assert!(r.remove_if(&id(1), |c| *c == 2));
    assert!(r.is_empty());
    assert_eq!(r.stats().sources, 0);
}

fn offer(from: &Identity, session: u8, time_ms: u64) -> Signal {
    Signal {
        nat: crate::nat::predict::Behaviour::UNKNOWN,
        kind: SignalKind::Offer,
        from: from.public_key().clone(),
        to: crate::crypto::Fingerprint([9; 32]),
        session: [session; 8],
        time_ms,
        ufrag: "abcd1234".into(),
        pwd: "0123456789abcdef0123456789abcdef".into(),
        candidates: vec![],
    }
}

#[test]
fn a_replayed_offer_is_refused_for_its_freshness_window() {
    let t = t0();
    let ms = 1_000_000_000;
    let l = RendezvousLimits::default();
    let mut c = ConnectLimits::new(
        l.connect_per_source,
        l.connect_per_caller,
        4,
        WhenFull::Refuse,
        64,
    );
    let a = Identity::generate(&mut OsRng);
    let o = offer(&a, 1, ms);
    c.admit(&o, t, ms).unwrap();
    assert_eq!(c.admit(&o, t, ms), Err(ConnectRefusal::Replayed));
    // Still remembered at the end of the window, when it is still fresh.
    let end = Duration::from_millis(MAX_CLOCK_SKEW_MS);
    assert_eq!(
        c.admit(&o, t + end, ms + MAX_CLOCK_SKEW_MS),
        Err(ConnectRefusal::Replayed)
    );
    // Past it: stale, and forgotten.
    let past = Duration::from_millis(MAX_CLOCK_SKEW_MS + 1);
    assert_eq!(
        c.admit(&o, t + past, ms + MAX_CLOCK_SKEW_MS + 1),
        Err(ConnectRefusal::Stale)
    );
    c.handle_timeout(t + past);
    assert_eq!(c.stats().remembered, 0);
    // An offer timed 60 s ahead of our clock is remembered for 120 s.
    let ahead = offer(&a, 2, ms + MAX_CLOCK_SKEW_MS);
    c.admit(&ahead, t, ms).unwrap();
    assert_eq!(
        c.poll_timeout(),
        Some(t + Duration::from_millis(2 * MAX_CLOCK_SKEW_MS + 1))
    );
    // The same session from another caller is another offer.
    let b = Identity::generate(&mut OsRng);
    c.admit(&offer(&b, 1, ms), t, ms).unwrap();
    // Bounded: 4 live entries fill it; the next fresh offer is refused as busy.
    c.admit(&offer(&b, 3, ms), t, ms).unwrap();
    c.admit(&offer(&b, 4, ms), t, ms).unwrap();
    assert_eq!(c.admit(&offer(&b, 5, ms), t, ms), Err(ConnectRefusal::Busy));
    assert_eq!(ConnectRefusal::Busy.code(), ConnectErrorCode::Busy);
    let s = c.stats();
    assert_eq!(
        (s.admitted, s.refused_replay, s.refused_busy, s.remembered),
        (5, 2, 1, 4)
    );

    // A rendezvous node's full cache forgets the entry expiring first instead.
    let mut f = ConnectLimits::new(
        l.connect_per_source,
        l.connect_per_caller,
        2,
        WhenFull::ForgetOldest,
        64,
    );
    f.admit(&offer(&b, 1, ms - 1000), t, ms).unwrap();
    f.admit(&offer(&b, 2, ms), t, ms).unwrap();
    f.admit(&offer(&b, 3, ms), t, ms).unwrap();
    assert_eq!(
        f.admit(&offer(&b, 2, ms), t, ms),
        Err(ConnectRefusal::Replayed)
    );
    assert_eq!(
        f.admit(&offer(&b, 1, ms - 1000), t, ms),
        Ok(()),
        "forgotten"
    );
    assert_eq!(f.stats().remembered, 2);
}

/// The old limiter keyed the callee's bucket on the rendezvous node's address: one
/// caller used it up for everyone behind that node. Now the rendezvous node limits each
/// caller and source, and the callee's bucket per forwarder is twice the per-source one.
#[test]
fn one_callers_flood_does_not_lock_out_another_caller_behind_the_same_rendezvous() {
    let t = t0();
    let ms = 1_000_000_000;
    let mut rdv: Rendezvous<()> = Rendezvous::new(true, &RendezvousLimits::default());
    let mut callee: Rendezvous<()> = Rendezvous::new(false, &RendezvousLimits::default());
    let rdv_ip = ip("198.18.0.1");
    // One path: caller → rendezvous node (forwarding) → callee (answering).
    let mut send = |from: IpAddr, o: &Signal| -> Result<(), ConnectRefusal> {
        rdv.forwarding.check_source(from, t)?;
        rdv.forwarding.admit(o, t, ms)?;
        callee.answering.check_source(rdv_ip, t)?;
        callee.answering.admit(o, t, ms)
    };
    let abuser = Identity::generate(&mut OsRng);
    let through = (0..=255u8)
        .filter(|s| send(ip("198.18.9.9"), &offer(&abuser, *s, ms)).is_ok())
        .count();
    println!("one caller, 256 offers at once: {through} reached the callee");
    assert_eq!(through, 10, "the caller's burst");
    // Many identities from another source: its bucket at the rendezvous node.
    let ids: Vec<Identity> = (0..30).map(|_| Identity::generate(&mut OsRng)).collect();
    let more = ids
        .iter()
        .filter(|i| send(ip("198.18.8.8"), &offer(i, 0, ms)).is_ok())
        .count();
    println!("30 identities from one other address: {more} reached the callee");
    assert_eq!(more, 20, "the source's burst");
    let good = Identity::generate(&mut OsRng);
    assert_eq!(send(ip("198.18.7.7"), &offer(&good, 0, ms)), Ok(()));
    let s = rdv.stats();
    println!(
        "rendezvous: admitted {}, refused per caller {}, per source {}; callee admitted {}",
        s.forwarding.admitted,
        s.forwarding.refused_caller,
        s.forwarding.refused_source,
        callee.stats().answering.admitted
    );
}

//! The re-reach schedule on a fake clock.

use super::*;

#[allow(clippy::disallowed_methods)] // any instant will do as the fake clock's zero
fn t0() -> Instant {
    Instant::now()
}

fn fp(i: u32) -> Fingerprint {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    Fingerprint(b)
}

/// Runs the schedule from `t0` to `until` in steps of `step`; every reach takes `took` and
/// fails, except those of `reachable` after `back_at`. Returns (time, peer) of each start.
fn run(
    r: &mut Retry,
    t0: Instant,
    until: Duration,
    step: Duration,
    took: Duration,
) -> Vec<(Duration, Fingerprint)> {
    let mut started = Vec::new();
    let mut running: Vec<(Instant, Fingerprint)> = Vec::new();
    let mut now = t0;
    while now < t0 + until {
        loop {
            running.retain(|(end, peer)| {
                if *end <= now {
                    r.finished(now, *peer, Attempt::Failed);
                    false
                } else {
                    true
                }
            });
            let Some(peer) = r.poll_reach(now) else {
                break;
            };
            started.push((now - t0, peer));
            running.push((now + took, peer));
        }
        now += step;
    }
    started
}

#[test]
fn a_peer_backs_off_from_one_second_doubling_to_thirty() {
    let t0 = t0();
    let mut r = Retry::new(RetryConfig::default());
    r.sync(t0, [fp(1)]);
    let starts = run(
        &mut r,
        t0,
        Duration::from_secs(200),
        Duration::from_millis(100),
        Duration::ZERO,
    );
    let gaps: Vec<u64> = starts
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).as_millis() as u64 / 100)
        .collect();
    // In tenths of a second: 1, 2, 4, 8, 16, then 30 from there on.
    assert_eq!(&gaps[..7], &[10, 20, 40, 80, 160, 300, 300]);
}

#[test]
fn a_thousand_offline_contacts_cost_a_bounded_number_of_reaches() {
    let t0 = t0();
    let cfg = RetryConfig::default();
    let mut r = Retry::new(cfg);
    r.sync(t0, (0..1000).map(fp));
    // Each reach takes 2 s (a lookup that finds no presence) and fails.
    let starts = run(
        &mut r,
        t0,
        Duration::from_secs(600),
        Duration::from_millis(100),
        Duration::from_secs(2),
    );
    let mut per_minute = [0u32; 10];
    for (at, _) in &starts {
        per_minute[(at.as_secs() / 60) as usize] += 1;
    }
    println!(
        "1,000 offline contacts, reaches started per minute (bound {}, burst {}): {:?}; \
         one full reach per contact every 5 s would be 12,000",
        cfg.per_minute, cfg.per_minute, per_minute
    );
    // The first minute spends the burst too; every later one at most the rate.
    assert!(per_minute[0] <= 2 * cfg.per_minute);
    for m in &per_minute[1..] {
        assert!(*m <= cfg.per_minute + 1, "{per_minute:?}");
    }
    // And the budget is used: the schedule is not idle while peers wait.
    assert!(per_minute[5] >= cfg.per_minute - 1, "{per_minute:?}");
    // Concurrency never above the bound.
    assert!(r.stats().running <= cfg.concurrent);
}

#[test]
fn a_peer_heard_among_a_thousand_is_reached_at_once() {
    let t0 = t0();
    let cfg = RetryConfig::default();
    let mut r = Retry::new(cfg);
    r.sync(t0, (0..1000).map(fp));
    // Ten minutes of hopeless 10 s reaches: every slot is busy, the tokens spent.
    let mut starts = run(
        &mut r,
        t0,
        Duration::from_secs(600),
        Duration::from_millis(100),
        Duration::from_secs(10),
    );
    // 10 s reaches, 8 at a time: the slots are what binds, all taken.
    assert_eq!(r.stats().running, cfg.concurrent);
    let back = (0..1000).map(fp).find(|p| !r.running.contains(p)).unwrap();
    let heard_at = t0 + Duration::from_secs(600);
    r.heard(heard_at, back);
    assert_eq!(r.stats().heard, 1);
    let mut now = heard_at;
    let reached_at = loop {
        if let Some(p) = r.poll_reach(now) {
            starts.push((now - t0, p));
            if p == back {
                break now;
            }
        }
        now += Duration::from_millis(100);
        assert!(now < heard_at + Duration::from_secs(60), "never reached");
    };
    let after = reached_at - heard_at;
    println!("a heard peer among 1,000 waiting was reached {after:?} after it was heard");
    assert!(after <= Duration::from_secs(2));
    // The schedule's own wake-up says so too.
    assert!(r.poll_timeout().is_none_or(|t| t >= heard_at));
}

#[test]
fn heard_during_a_failed_reach_goes_again_at_once() {
    let t0 = t0();
    let mut r = Retry::new(RetryConfig::default());
    r.sync(t0, [fp(1)]);
    assert_eq!(r.poll_reach(t0), Some(fp(1)));
    let t1 = t0 + Duration::from_secs(1);
    r.heard(t1, fp(1));
    // Not a second one while the first runs.
    assert_eq!(r.poll_reach(t1), None);
    let t2 = t0 + Duration::from_secs(3);
    r.finished(t2, fp(1), Attempt::Failed);
    assert_eq!(r.poll_timeout(), Some(t2));
    assert_eq!(r.poll_reach(t2), Some(fp(1)));
}

#[test]
fn a_heard_peer_keeps_its_place_at_the_front_for_a_few_attempts() {
    let t0 = t0();
    let mut r = Retry::new(RetryConfig {
        per_minute: 1,
        ..RetryConfig::default()
    });
    r.sync(t0, (0..100).map(fp));
    // Spend the one token.
    let first = r.poll_reach(t0).unwrap();
    r.finished(t0, first, Attempt::Failed);
    assert_eq!(r.poll_reach(t0), None, "no token left");
    let back = fp(50);
    r.heard(t0, back);
    // Its first reach fails (the news raced the record); it goes again after 1 s, then
    // 2 s, ahead of the 99 others that were due long before, with no token.
    let mut now = t0;
    let mut at = Vec::new();
    for _ in 0..HEARD_ATTEMPTS {
        now = r.poll_timeout().unwrap();
        assert_eq!(r.poll_reach(now), Some(back));
        at.push((now - t0).as_secs());
        r.finished(now, back, Attempt::Failed);
    }
    assert_eq!(at, [0, 1, 3]);
    // Then it waits in line with the others.
    now += Duration::from_secs(10);
    assert_ne!(r.poll_reach(now), Some(back));
}

#[test]
fn peers_no_longer_waiting_leave_the_schedule() {
    let t0 = t0();
    let mut r = Retry::new(RetryConfig::default());
    r.sync(t0, [fp(1), fp(2)]);
    assert_eq!(r.stats().waiting, 2);
    let first = r.poll_reach(t0).unwrap();
    r.sync(t0, [fp(2)]);
    assert_eq!(r.stats().waiting, 1);
    r.finished(t0, first, Attempt::Failed);
    // Hearing a peer that waits for nothing changes nothing.
    r.heard(t0, fp(9));
    assert_eq!(r.stats().heard, 0);
    let mut left = Vec::new();
    while let Some(p) = r.poll_reach(t0) {
        left.push(p);
    }
    if first == fp(1) {
        assert_eq!(left, vec![fp(2)]);
    } else {
        assert!(left.is_empty());
    }
    assert_eq!(r.stats().running, left.len());
}

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::crypto::MessageKind;

fn msg(n: u8, timestamp_ms: u64) -> Outgoing {
    Outgoing {
        id: MessageId([n; 16]),
        timestamp_ms,
        kind: MessageKind::TEXT,
        body: Bytes::from_static(b"hi"),
    }
}

#[allow(clippy::disallowed_methods)] // any instant will do as the fake clock's zero
fn t0() -> Instant {
    Instant::now()
}

fn fp(n: u8) -> Fingerprint {
    Fingerprint([n; 32])
}

#[test]
fn rounds_come_in_order_and_each_waits_its_interval() {
    let t0 = t0();
    let cfg = MailboxConfig::default();
    let mut m = Mailbox::new(cfg, t0);
    assert_eq!(m.poll_round(t0), Some(Round::PublishKem));
    assert_eq!(m.poll_round(t0), Some(Round::Fetch));
    assert_eq!(m.poll_round(t0), Some(Round::Put));
    // Receipts are due, but nothing waits for one.
    assert_eq!(m.poll_round(t0), None);
    m.kem_published(t0, true);
    // The next: the put tick (5 s at most), then the receipt poll.
    assert_eq!(
        m.poll_timeout(),
        t0 + cfg.receipt_poll.min(Duration::from_secs(5))
    );
    // Asked to fetch: at once.
    m.fetch_now(t0);
    assert_eq!(m.poll_round(t0), Some(Round::Fetch));
    // The key again a day after it was stored; 5 s after a failure.
    let day = t0 + Duration::from_secs(24 * 3600);
    let mut later = m.poll_round(day);
    while later.is_some() && later != Some(Round::PublishKem) {
        later = m.poll_round(day);
    }
    assert_eq!(later, Some(Round::PublishKem));
    m.kem_published(day, false);
    assert!(m.poll_timeout() <= day + Duration::from_secs(5));
}

#[test]
fn due_picks_what_waited_long_enough_and_is_not_put_or_backing_off() {
    let t0 = t0();
    let cfg = MailboxConfig {
        max_puts_per_round: 3,
        ..MailboxConfig::default()
    };
    let mut m = Mailbox::new(cfg, t0);
    let now_ms = 1_000_000;
    let old = now_ms - cfg.after.as_millis() as u64;
    let waiting = vec![
        (fp(1), msg(1, old)),
        (fp(1), msg(2, old)),
        (fp(2), msg(3, now_ms - 1)), // too young
        (fp(3), msg(4, old)),
        (fp(3), msg(5, old)),
    ];
    let due = m.due(t0, now_ms, waiting.clone(), true);
    assert_eq!(
        due.iter().map(|(p, v)| (*p, v.len())).collect::<Vec<_>>(),
        vec![(fp(1), 2), (fp(3), 1)],
        "three at most, by recipient"
    );
    m.put_stored(t0, fp(1), MessageId([1; 16]), MIN_HOLDERS);
    m.put_failed(fp(3), "mailbox full", t0);
    let due = m.due(t0, now_ms, waiting.clone(), true);
    assert_eq!(
        due.iter().map(|(p, v)| (*p, v.len())).collect::<Vec<_>>(),
        vec![(fp(1), 1)],
        "put already, or backing off"
    );
    // The backoff ends after `poll`.
    let due = m.due(t0 + cfg.poll, now_ms, waiting, true);
    assert!(due.iter().any(|(p, _)| *p == fp(3)));
    // A message delivered over a session meanwhile leaves the ledger.
    assert!(m.waiting_for(&fp(1)));
    m.due(t0, now_ms, vec![], true);
    assert!(!m.waiting_for(&fp(1)));
    assert_eq!(m.stats().items_put, 1);
}

#[test]
fn a_listing_cut_at_the_cap_forgets_nothing() {
    let t0 = t0();
    let mut m = Mailbox::new(MailboxConfig::default(), t0);
    m.put_stored(t0, fp(1), MessageId([1; 16]), MIN_HOLDERS);
    m.due(t0, 0, vec![], false);
    assert!(m.waiting_for(&fp(1)));
}

#[test]
fn a_receipt_marks_what_it_lists_and_only_that() {
    let t0 = t0();
    let mut m = Mailbox::new(MailboxConfig::default(), t0);
    let me = fp(9);
    for n in 1..=3 {
        m.put_stored(t0, fp(1), MessageId([n; 16]), MIN_HOLDERS);
    }
    m.put_stored(t0, fp(2), MessageId([4; 16]), MIN_HOLDERS);
    let r = Receipt {
        entries: vec![
            (me, item_seq(&MessageId([1; 16]))),
            (me, item_seq(&MessageId([2; 16]))),
            (fp(7), item_seq(&MessageId([3; 16]))), // another sender's item
            (me, item_seq(&MessageId([4; 16]))),    // not this peer's
        ],
    };
    let mut ids = m.receipt(&me, fp(1), &r);
    ids.sort();
    assert_eq!(ids, vec![MessageId([1; 16]), MessageId([2; 16])]);
    assert_eq!(m.stats().delivered, 2);
    assert_eq!(m.put_ids().len(), 2);
    assert!(m.receipt(&me, fp(1), &r).is_empty(), "once");
    assert_eq!(m.poll_round(t0), Some(Round::PublishKem));
    m.poll_round(t0);
    m.poll_round(t0);
    assert_eq!(m.poll_round(t0), Some(Round::Receipts(vec![fp(1), fp(2)])));
}

#[test]
fn a_fetch_adds_to_the_receipt_once_and_keeps_it_bounded() {
    let t0 = t0();
    let mut m = Mailbox::new(MailboxConfig::default(), t0);
    let f = Fetched {
        copies: 6,
        new: 2,
        duplicates: 1,
        invalid: 1,
        listed: vec![(fp(1), 1), (fp(1), 2)],
        lookups: 2,
        pages: 3,
    };
    assert!(m.fetched(f.clone()));
    assert!(!m.fetched(f), "nothing new for the receipt");
    assert_eq!(m.receipt_entries(), vec![(fp(1), 1), (fp(1), 2)]);
    let s = m.stats();
    assert_eq!(
        (s.fetched, s.new, s.duplicates, s.invalid, s.fetches),
        (12, 4, 2, 2, 2)
    );
    assert_eq!((s.fetch_lookups, s.fetch_pages), (4, 6));
    let many = Fetched {
        listed: (0..MAX_RECEIPT_ENTRIES as u64 + 5)
            .map(|i| (fp(2), i))
            .collect(),
        ..Fetched::default()
    };
    assert!(m.fetched(many));
    let entries = m.receipt_entries();
    assert_eq!(entries.len(), MAX_RECEIPT_ENTRIES);
    assert_eq!(
        entries.last(),
        Some(&(fp(2), MAX_RECEIPT_ENTRIES as u64 + 4)),
        "newest kept"
    );
}

/// Honest states (spec/09-mailbox.md §7): an item held by one other node only is put
/// again after `poll` until two hold it; a recipient whose puts fail backs off — `poll`,
/// doubling — and the view says why, until a put succeeds.
#[test]
fn an_item_held_by_one_node_is_put_again_and_failures_back_off_doubling() {
    let t0 = t0();
    let cfg = MailboxConfig {
        after: Duration::ZERO,
        ..MailboxConfig::default()
    };
    let mut m = Mailbox::new(cfg, t0);
    let waiting = vec![(fp(1), msg(1, 0)), (fp(2), msg(2, 0))];
    let due = |m: &mut Mailbox, at: Instant| -> Vec<Fingerprint> {
        let d = m.due(at, 0, waiting.clone(), true);
        d.into_iter().map(|(p, _)| p).collect()
    };
    m.put_stored(t0, fp(1), msg(1, 0).id, 1);
    m.put_failed(fp(2), "mailbox full", t0);
    assert_eq!(m.put_view().held_by.get(&msg(1, 0).id), Some(&1));
    assert_eq!(m.put_view().refused.get(&fp(2)), Some(&"mailbox full"));
    assert!(due(&mut m, t0).is_empty(), "neither before `poll`");
    assert_eq!(due(&mut m, t0 + cfg.poll), vec![fp(1), fp(2)]);
    // Two hold it now: not put again. fp(2) fails again: twice the wait.
    let t1 = t0 + cfg.poll;
    m.put_stored(t1, fp(1), msg(1, 0).id, 2);
    m.put_failed(fp(2), "no storing node", t1);
    assert!(due(&mut m, t1 + cfg.poll).is_empty());
    assert_eq!(due(&mut m, t1 + 2 * cfg.poll), vec![fp(2)]);
    assert_eq!(m.put_view().refused.get(&fp(2)), Some(&"no storing node"));
    m.put_stored(t1, fp(2), msg(2, 0).id, 3);
    assert!(
        m.put_view().refused.is_empty(),
        "a put that worked ends the backoff"
    );
    assert_eq!(m.stats().items_put, 2, "each message counted once");
}

use super::*;
use crate::node::retry::{Attempt, RetryConfig};

use bytes::Bytes;

use crate::crypto::MessageId;

type TestCore = Core<u64, u64>;

#[allow(clippy::disallowed_methods)] // any instant will do as the fake clock's zero
fn t0() -> Instant {
    Instant::now()
}

fn fp(b: u8) -> Fingerprint {
    Fingerprint([b; 32])
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn msg(i: u32) -> Outgoing {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&i.to_be_bytes());
    Outgoing {
        id: MessageId(id),
        timestamp_ms: 0,
        kind: crate::crypto::MessageKind::TEXT,
        body: Bytes::from(i.to_be_bytes().to_vec()),
    }
}

fn core(me: u8, window: usize) -> TestCore {
    Core::new(
        fp(me),
        CoreConfig {
            max_peers: 16,
            inbox_capacity: 64,
            hash_key: [1, 2],
            max_scored_sources: 16,
            window,
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(8),
            rendezvous_server: false,
            rendezvous: RendezvousLimits::default(),
            retry: None,
            mailbox: None,
        },
    )
}

fn outputs(c: &mut TestCore) -> Vec<Output<u64>> {
    std::iter::from_fn(|| c.poll_output()).collect()
}

/// The message numbers of the batches handed to connection `handle`.
fn batches_to(outs: &[Output<u64>], to: u64) -> Vec<u32> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Batch { handle, msgs } if *handle == to => Some(msgs),
            _ => None,
        })
        .flatten()
        .map(|m| u32::from_be_bytes(m.body[..4].try_into().unwrap()))
        .collect()
}

fn dials(outs: &[Output<u64>]) -> Vec<(Fingerprint, Vec<SocketAddr>)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Dial { peer, addrs } => Some((*peer, addrs.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_connection_is_handed_its_window_and_more_as_acks_come() {
    let now = t0();
    let mut c = core(1, 4);
    let b = fp(2);
    c.send(now, b, (0..10).map(msg).collect());
    assert!(outputs(&mut c).is_empty(), "no address: nothing to dial");
    c.authenticated(7, b, false, addr(2), 70).unwrap();
    assert_eq!(batches_to(&outputs(&mut c), 70), [0, 1, 2, 3]);
    c.acked(b, 7, 2, 9);
    let outs = outputs(&mut c);
    assert_eq!(batches_to(&outs, 70), [4, 5]);
    // The core's outbox is the ledger: the counter comes back as the messages' IDs, with
    // the driver's path code.
    let delivered: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Delivered { peer, ids, path } => Some((*peer, ids.clone(), *path)),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, vec![(b, vec![msg(0).id, msg(1).id], 9)]);
    assert_eq!(c.peer(&b).unwrap().inflight, 4);
    assert_eq!(c.peer(&b).unwrap().queued, 4);
}

#[test]
fn what_an_ended_connection_did_not_get_acknowledged_goes_to_the_next_first() {
    let now = t0();
    let mut c = core(1, 4);
    let b = fp(2);
    c.connect(now, b, vec![addr(2)]);
    c.send(now, b, (0..6).map(msg).collect());
    c.authenticated(7, b, false, addr(2), 70).unwrap();
    assert_eq!(batches_to(&outputs(&mut c), 70), [0, 1, 2, 3]);
    c.acked(b, 7, 1, 0);
    outputs(&mut c);
    c.connection_ended(
        now,
        Ended {
            conn_id: 7,
            peer: Some(b),
            dialed: None,
            registered: true,
            established: true,
            remote: addr(2),
            penalty: 0,
            failed: false,
            wrong_identity: false,
        },
    );
    assert_eq!(c.peer(&b).unwrap().queued, 5, "1 acknowledged, 5 back");
    c.authenticated(8, b, false, addr(2), 80).unwrap();
    assert_eq!(batches_to(&outputs(&mut c), 80), [1, 2, 3, 4]);
}

#[test]
fn the_tie_break_closes_the_loser_on_both_ends() {
    let (a, b) = (fp(1), fp(2));
    let mut at_a = core(1, 4);
    let mut at_b = core(2, 4);
    // Connection 10 dialed by A, 20 dialed by B; each end sees them in another order.
    at_a.authenticated(20, b, false, addr(2), 20).unwrap();
    at_a.authenticated(10, b, true, addr(2), 10).unwrap();
    let closed_at_a: Vec<u64> = outputs(&mut at_a)
        .into_iter()
        .filter_map(|o| match o {
            Output::Close { handle, code, .. } if code == code::DUPLICATE_CONNECTION => {
                Some(handle)
            }
            _ => None,
        })
        .collect();
    assert_eq!(closed_at_a, [20]);
    at_b.authenticated(10, a, false, addr(1), 10).unwrap();
    assert_eq!(
        at_b.authenticated(20, a, true, addr(1), 20),
        Err(Refused::Duplicate)
    );
}

#[test]
fn dial_rounds_back_off_and_skip_banned_addresses() {
    let start = t0();
    let mut c = core(1, 4);
    let b = fp(2);
    let (good, bad) = (addr(2), SocketAddr::from(([10, 0, 0, 9], 9)));
    c.connect(start, b, vec![good, bad]);
    c.handle_timeout(start);
    assert_eq!(dials(&outputs(&mut c)), [(b, vec![good, bad])]);
    // Nothing is due while the round runs.
    assert_eq!(c.poll_timeout(), None);
    c.handle(
        start,
        Input::PenalizeSource {
            addr: bad,
            amount: 100,
        },
    );
    let mut at = start;
    let mut waits = Vec::new();
    for _ in 0..5 {
        c.dial_failed(at, b);
        let next = c.poll_timeout().unwrap();
        waits.push((next - at).as_secs());
        at = next;
        c.handle_timeout(at);
        assert_eq!(
            dials(&outputs(&mut c)),
            [(b, vec![good])],
            "banned left out"
        );
    }
    assert_eq!(waits, [1, 2, 4, 8, 8]);
}

#[test]
fn a_peer_banned_for_what_it_did_is_refused_and_not_redialed() {
    let now = t0();
    let mut c = core(1, 4);
    let b = fp(2);
    c.connect(now, b, vec![addr(2)]);
    c.authenticated(7, b, true, addr(2), 70).unwrap();
    c.connection_ended(
        now,
        Ended {
            conn_id: 7,
            peer: Some(b),
            dialed: Some(b),
            registered: true,
            established: true,
            remote: addr(2),
            penalty: 100,
            failed: false,
            wrong_identity: false,
        },
    );
    c.handle_timeout(now + Duration::from_secs(3600));
    assert!(
        dials(&outputs(&mut c)).is_empty(),
        "no dial to a banned peer"
    );
    assert_eq!(c.poll_timeout(), None, "and none scheduled");
    assert_eq!(
        c.authenticated(8, b, false, addr(2), 80),
        Err(Refused::Banned)
    );
    assert_eq!(
        c.query(t0(), Query::AddrBanned(addr(3))),
        Answer::Flag(true),
        "its source is banned too, any port"
    );
}

#[test]
fn presence_goes_to_live_connections_and_to_each_new_one() {
    let now = t0();
    let mut c = core(1, 4);
    c.authenticated(7, fp(2), false, addr(2), 70).unwrap();
    outputs(&mut c);
    c.set_presence(PresenceStatus::Online);
    assert!(outputs(&mut c).contains(&Output::Presence {
        handle: 70,
        status: PresenceStatus::Online
    }));
    c.authenticated(8, fp(3), false, addr(3), 80).unwrap();
    assert!(outputs(&mut c).contains(&Output::Presence {
        handle: 80,
        status: PresenceStatus::Online
    }));
    c.send(now, fp(3), vec![msg(1)]);
    assert_eq!(batches_to(&outputs(&mut c), 80), [1]);
}

fn received(c: &mut TestCore, ids: &[u32]) -> usize {
    let msgs = ids
        .iter()
        .map(|&i| Message {
            sender: fp(2),
            recipient: fp(1),
            id: msg(i).id,
            timestamp_ms: 0,
            kind: crate::crypto::MessageKind::TEXT,
            body: Bytes::new(),
        })
        .collect();
    match c.handle(t0(), Input::Received { peer: fp(2), msgs }) {
        Reply::New(new) => new.len(),
        r => panic!("{r:?}"),
    }
}

/// The node's one de-duplication (spec/06-node.md §1.1): each ID is new once; the window
/// begins with what the store held (a resend after a restart is not new); what could not
/// be stored is new again.
#[test]
fn each_message_id_is_new_once_across_a_restart_and_again_if_not_stored() {
    let mut c = core(1, 4);
    assert_eq!(received(&mut c, &[1, 2]), 2);
    assert_eq!(received(&mut c, &[2, 3]), 1);
    // A restart: the store held 1, 2 and 3.
    let mut c = core(1, 4);
    let ids = [1, 2, 3].iter().map(|&i| msg(i).id).collect();
    c.handle(t0(), Input::Seen { peer: fp(2), ids });
    assert_eq!(received(&mut c, &[1, 2, 3, 4]), 1);
    // 4 could not be stored: its resend is new.
    let ids = vec![msg(4).id];
    c.handle(t0(), Input::NotStored { peer: fp(2), ids });
    assert_eq!(received(&mut c, &[4]), 1);
    assert_eq!(received(&mut c, &[4]), 0);
}

#[test]
fn redials_double_after_failures_and_a_wrong_identity_waits_longest() {
    let (s, initial, max) = (
        Duration::from_secs,
        Duration::from_secs(1),
        Duration::from_secs(30),
    );
    let mut d = Duration::ZERO;
    let mut seen = Vec::new();
    for _ in 0..7 {
        d = next_redial(d, false, initial, max);
        seen.push(d.as_secs());
    }
    assert_eq!(seen, [1, 2, 4, 8, 16, 30, 30]);
    assert_eq!(next_redial(Duration::ZERO, true, initial, max), s(30));
    assert_eq!(next_redial(s(2), true, initial, max), s(30));
}

fn reaches(outs: &[Output<u64>]) -> Vec<Fingerprint> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Reach { peer } => Some(*peer),
            _ => None,
        })
        .collect()
}

/// Runs the core's timers from `from` for `secs` seconds in 100 ms steps; every reach it
/// asks for fails at once. The reaches asked, with when.
fn run_reaches(c: &mut TestCore, from: Instant, secs: u64) -> Vec<(Duration, Fingerprint)> {
    let mut asked = Vec::new();
    let mut now = from;
    while now < from + Duration::from_secs(secs) {
        if c.poll_timeout().is_some_and(|t| t <= now) {
            c.handle_timeout(now);
        }
        for peer in reaches(&outputs(c)) {
            asked.push((now - from, peer));
            c.reach_finished(now, peer, Attempt::Failed);
        }
        now += Duration::from_millis(100);
    }
    asked
}

#[test]
fn a_peer_with_messages_waiting_is_reached_with_backoff_until_it_connects() {
    let now = t0();
    let mut c = Core::new(
        fp(1),
        CoreConfig {
            retry: Some(RetryConfig::default()),
            mailbox: None,
            ..core(1, 4).cfg
        },
    );
    c.start_retry(now);
    let b = fp(2);
    c.send(now, b, (0..3).map(msg).collect());
    let asked = run_reaches(&mut c, now, 16);
    let at: Vec<u64> = asked.iter().map(|(t, _)| t.as_secs()).collect();
    // No address to dial: reached at once (not at the schedule's next look), then 1, 2, 4
    // and 8 s apart.
    assert!(asked.iter().all(|(_, p)| *p == b));
    assert_eq!(at, [0, 1, 3, 7, 15], "{asked:?}");
    assert_eq!(retry_stats(&c).waiting, 1);
    // It connects: no more reaches.
    let later = now + Duration::from_secs(16);
    c.authenticated(7, b, false, addr(2), 70).unwrap();
    let asked = run_reaches(&mut c, later, 60);
    assert!(asked.is_empty(), "{asked:?}");
    assert_eq!(retry_stats(&c).waiting, 0);
    assert_eq!(retry_stats(&c).started, 5);
}

fn retry_stats(c: &TestCore) -> crate::node::retry::RetryStats {
    match c.query(t0(), Query::Retry) {
        Answer::Retry(Some(s)) => s,
        other => panic!("no re-reach schedule: {other:?}"),
    }
}

/// A session with a peer whose items wait in its mailbox is handed nothing until its
/// receipt was read (spec/09-mailbox.md §1.1): the core asks for the receipt; what the
/// receipt lists leaves the outbox as delivered by the mailbox; the rest goes after.
#[test]
fn a_session_after_the_mailbox_waits_for_the_receipt() {
    use crate::crypto::receipt::{item_seq, Receipt};
    use crate::node::core::{MailboxInput, MailboxReply};
    let now = t0();
    let mut c = core(1, 16);
    c.mailbox = Some(crate::node::mailbox::Mailbox::new(
        crate::node::mailbox::MailboxConfig::default(),
        now,
    ));
    let b = fp(2);
    c.send(now, b, (0..3).map(msg).collect());
    let put = MailboxInput::PutStored {
        peer: b,
        id: msg(0).id,
        held_by: 2,
    };
    c.handle(now, Input::Mailbox(put));
    outputs(&mut c);
    c.authenticated(7, b, false, addr(2), 70).unwrap();
    let outs = outputs(&mut c);
    assert!(
        batches_to(&outs, 70).is_empty(),
        "nothing before the receipt"
    );
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::ReadReceipt { peer } if *peer == b)));
    // Its receipt lists message 0: delivered by the mailbox, never handed to the session.
    let receipt = Receipt {
        entries: vec![(fp(1), item_seq(&msg(0).id))],
    };
    let got = c.handle(
        now,
        Input::Mailbox(MailboxInput::Receipt {
            peer: b,
            receipt,
            drop: None,
        }),
    );
    assert_eq!(
        got,
        Reply::Mailbox(MailboxReply::Delivered(vec![msg(0).id]))
    );
    c.handle(now, Input::ReceiptRead(b));
    assert_eq!(batches_to(&outputs(&mut c), 70), [1, 2]);
}

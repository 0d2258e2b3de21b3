//! Two `Connection`s wired back to back in memory, on a fake clock.
// The fake clock needs one real `Instant` to start from; everything after is arithmetic.
#![allow(clippy::disallowed_methods)]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::OsRng;

use super::*;
use crate::crypto::{Identity, KexError, MessageId};
use crate::wire::{encode_frame, FrameLimits, MessageType};

fn ids() -> &'static (Arc<Identity>, Arc<Identity>, Arc<Identity>) {
    static IDS: OnceLock<(Arc<Identity>, Arc<Identity>, Arc<Identity>)> = OnceLock::new();
    IDS.get_or_init(|| {
        (
            Arc::new(Identity::generate(&mut OsRng)),
            Arc::new(Identity::generate(&mut OsRng)),
            Arc::new(Identity::generate(&mut OsRng)),
        )
    })
}

struct Pair {
    now: Instant,
    a: Connection,
    b: Connection,
    a_out: Outbox,
    b_out: Outbox,
    a_events: Vec<ConnEvent>,
    b_events: Vec<ConnEvent>,
}

fn rng(n: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(n)
}

impl Pair {
    fn new(conn_id: u64, cfg: ConnConfig) -> Pair {
        let (alice, bob, _) = ids();
        let now = Instant::now();
        let exporter = [conn_id as u8; 32];
        Pair {
            now,
            a: Connection::dial(
                conn_id,
                now,
                alice.clone(),
                exporter,
                bob.fingerprint(),
                cfg.clone(),
                rng(1),
            ),
            b: Connection::accept(conn_id, now, bob.clone(), exporter, cfg, rng(2)),
            a_out: Outbox::default(),
            b_out: Outbox::default(),
            a_events: Vec::new(),
            b_events: Vec::new(),
        }
    }

    /// Moves bytes both ways until both sides are quiet.
    fn run(&mut self) -> Result<(), (char, ConnError)> {
        for _ in 0..100 {
            let mut ab = BytesMut::new();
            self.a
                .poll_transmit(Some(&mut self.a_out), 1 << 20, &mut ab);
            let mut ba = BytesMut::new();
            self.b
                .poll_transmit(Some(&mut self.b_out), 1 << 20, &mut ba);
            if ab.is_empty() && ba.is_empty() {
                return Ok(());
            }
            self.b.handle_input(self.now, &ab).map_err(|e| ('b', e))?;
            self.a.handle_input(self.now, &ba).map_err(|e| ('a', e))?;
            while let Some(e) = self.a.poll_event() {
                if let ConnEvent::Acked { below } = e {
                    self.a_out.ack_below(self.a.id(), below);
                }
                self.a_events.push(e);
            }
            while let Some(e) = self.b.poll_event() {
                if let ConnEvent::Acked { below } = e {
                    self.b_out.ack_below(self.b.id(), below);
                }
                self.b_events.push(e);
            }
        }
        panic!("no quiescence");
    }
}

fn msg(n: u32) -> Outgoing {
    Outgoing {
        id: MessageId::random(&mut OsRng),
        timestamp_ms: 1_700_000_000_000 + n as u64,
        kind: crate::crypto::MessageKind::TEXT,
        body: Bytes::from(n.to_be_bytes().to_vec()),
    }
}

fn bodies(events: &[ConnEvent]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            ConnEvent::Message(m) => Some(u32::from_be_bytes(m.body[..4].try_into().unwrap())),
            _ => None,
        })
        .collect()
}

#[test]
fn handshake_then_messages_both_ways_all_acked() {
    for protection in [Protection::EndToEnd, Protection::UnprotectedForBenchmarks] {
        let mut p = Pair::new(
            1,
            ConnConfig {
                protection,
                ..ConnConfig::default()
            },
        );
        for n in 0..500 {
            p.a_out.push(msg(n));
            p.b_out.push(msg(10_000 + n));
        }
        p.run().unwrap();
        let (alice, bob, _) = ids();
        assert!(p.a_events.contains(&ConnEvent::Authenticated {
            peer: bob.fingerprint()
        }));
        assert!(p.b_events.contains(&ConnEvent::Authenticated {
            peer: alice.fingerprint()
        }));
        assert!(p.a.is_established() && p.b.is_established());
        assert_eq!(bodies(&p.b_events), (0..500).collect::<Vec<_>>());
        assert_eq!(bodies(&p.a_events), (10_000..10_500).collect::<Vec<_>>());
        assert!(
            p.a_out.is_empty() && p.b_out.is_empty(),
            "every message acknowledged"
        );
        assert_eq!(p.a.unacked(), 0);
    }
}

#[test]
fn messages_in_flight_at_a_cut_are_resent_and_deduplicated() {
    let mut p = Pair::new(1, ConnConfig::default());
    for n in 0..100 {
        p.a_out.push(msg(n));
    }
    // Handshake and send, but deliver the DATA to Bob without letting his ACK back.
    p.run().unwrap();
    let mut inbox = Inbox::new(10_000, [3, 4]);
    let first: Vec<_> = p
        .b_events
        .iter()
        .filter_map(|e| match e {
            ConnEvent::Message(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(first.len(), 100);
    for m in &first[..60] {
        assert!(inbox.accept(m.id));
    }
    // Pretend the last 40 ACKs were lost: put them back in flight on connection 1.
    let mut out = Outbox::default();
    for m in &first {
        out.push(Outgoing {
            id: m.id,
            timestamp_ms: m.timestamp_ms,
            kind: crate::crypto::MessageKind::TEXT,
            body: m.body.clone(),
        });
    }
    for c in 0..100 {
        out.take_next(1, c);
    }
    out.ack_below(1, 60);
    // The connection dies; the 40 unacknowledged go back and ride connection 2.
    assert_eq!(out.requeue(1), 40);
    let mut q = Pair::new(2, ConnConfig::default());
    q.a_out = out;
    q.a_out.push(msg(100));
    q.run().unwrap();
    let second: Vec<_> = q
        .b_events
        .iter()
        .filter_map(|e| match e {
            ConnEvent::Message(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(second.len(), 41);
    let mut delivered = 60;
    for m in &second {
        if inbox.accept(m.id) {
            delivered += 1;
        }
    }
    assert_eq!(delivered, 101, "each message delivered exactly once");
    assert!(q.a_out.is_empty());
}

#[test]
fn a_man_in_the_middle_cannot_forward_hello() {
    // Alice and Bob each hold a TLS session with Mallory: two different exporters.
    let (alice, bob, _) = ids();
    let now = Instant::now();
    let mut a = Connection::dial(
        1,
        now,
        alice.clone(),
        [1; 32],
        bob.fingerprint(),
        ConnConfig::default(),
        rng(1),
    );
    let mut b = Connection::accept(2, now, bob.clone(), [2; 32], ConnConfig::default(), rng(2));
    let mut ab = BytesMut::new();
    a.poll_transmit(None, 1 << 20, &mut ab);
    let err = b.handle_input(now, &ab).unwrap_err();
    assert_eq!(err, ConnError::Auth(HelloError::BadSignature));
    assert_eq!(err.code(), code::AUTH_FAILED);
}

#[test]
fn dialer_refuses_an_unexpected_identity() {
    let (alice, bob, carol) = ids();
    let now = Instant::now();
    let mut a = Connection::dial(
        1,
        now,
        alice.clone(),
        [1; 32],
        bob.fingerprint(),
        ConnConfig::default(),
        rng(1),
    );
    let mut c = Connection::accept(
        1,
        now,
        carol.clone(),
        [1; 32],
        ConnConfig::default(),
        rng(2),
    );
    let mut ca = BytesMut::new();
    c.poll_transmit(None, 1 << 20, &mut ca);
    assert_eq!(
        a.handle_input(now, &ca).unwrap_err(),
        ConnError::Auth(HelloError::UnexpectedPeer {
            expected: bob.fingerprint(),
            found: carol.fingerprint()
        })
    );
}

#[test]
fn a_reflected_hello_is_refused() {
    let (alice, bob, _) = ids();
    let now = Instant::now();
    let mut a = Connection::dial(
        1,
        now,
        alice.clone(),
        [1; 32],
        bob.fingerprint(),
        ConnConfig::default(),
        rng(1),
    );
    let mut own = BytesMut::new();
    a.poll_transmit(None, 1 << 20, &mut own);
    assert_eq!(
        a.handle_input(now, &own).unwrap_err(),
        ConnError::Auth(HelloError::WrongRole)
    );
}

fn raw(t: MessageType, seq: u32, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    encode_frame(t, seq, payload, &FrameLimits::default(), &mut out).unwrap();
    out.freeze()
}

#[test]
fn frames_out_of_place_are_protocol_violations() {
    let (_, bob, _) = ids();
    let now = Instant::now();
    // DATA before HELLO.
    let mut b = Connection::accept(1, now, bob.clone(), [1; 32], ConnConfig::default(), rng(2));
    let err = b
        .handle_input(now, &raw(MessageType::Data, 0, b"x"))
        .unwrap_err();
    assert!(matches!(
        err,
        ConnError::UnexpectedFrame {
            msg_type: MessageType::Data,
            ..
        }
    ));
    assert_eq!(err.code(), code::PROTOCOL_VIOLATION);
    // A frame out of sequence.
    let mut b = Connection::accept(1, now, bob.clone(), [1; 32], ConnConfig::default(), rng(2));
    let err = b
        .handle_input(now, &raw(MessageType::Ping, 5, &[0; 8]))
        .unwrap_err();
    assert_eq!(
        err,
        ConnError::BadSequence {
            expected: 0,
            found: 5
        }
    );
    // After a proper handshake: KEX_ACCEPT sent by the dialer, a second HELLO, DATA before
    // the key exchange finished.
    for (t, payload) in [
        (MessageType::KexAccept, &[0u8; 4][..]),
        (MessageType::Hello, &[0u8; 4][..]),
        (MessageType::Data, &[0u8; 4][..]),
    ] {
        let mut p = Pair::new(1, ConnConfig::default());
        let mut ab = BytesMut::new();
        p.a.poll_transmit(None, 1 << 20, &mut ab);
        // Deliver HELLO only (first frame), then the hostile frame with the next sequence.
        let hello_len = 32 + hello::HELLO_LEN;
        let hello = ab.split_to(hello_len);
        p.b.handle_input(p.now, &hello).unwrap();
        let err = p.b.handle_input(p.now, &raw(t, 1, payload)).unwrap_err();
        assert!(
            matches!(err, ConnError::UnexpectedFrame { .. }),
            "{t}: {err:?}"
        );
    }
}

#[test]
fn malformed_and_oversized_frames_are_errors_with_codes() {
    let (_, bob, _) = ids();
    let now = Instant::now();
    let mut b = Connection::accept(1, now, bob.clone(), [1; 32], ConnConfig::default(), rng(2));
    let err = b.handle_input(now, &[0xFF; 40]).unwrap_err();
    assert_eq!(err.code(), code::MALFORMED_FRAME);
    let mut b = Connection::accept(1, now, bob.clone(), [1; 32], ConnConfig::default(), rng(2));
    let mut big = BytesMut::from(&raw(MessageType::Data, 0, b"")[..]);
    big[12..16].copy_from_slice(&(2u32 << 20).to_be_bytes());
    let err = b.handle_input(now, &big).unwrap_err();
    assert_eq!(err.code(), code::FRAME_TOO_LARGE);
}

#[test]
fn ack_beyond_what_was_sent_is_a_violation() {
    let mut p = Pair::new(1, ConnConfig::default());
    p.run().unwrap();
    let seq = 3; // HELLO, KEX_INIT, KEX_FINISH came before (PING follows later).
    let err =
        p.b.handle_input(p.now, &raw(MessageType::Ack, seq, &9u64.to_be_bytes()))
            .unwrap_err();
    assert_eq!(err, ConnError::AckBeyondSent { acked: 9, sent: 0 });
}

#[test]
fn ping_gives_rtt_and_silence_means_gone() {
    let cfg = ConnConfig {
        ping_interval: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(60),
        ..ConnConfig::default()
    };
    let mut p = Pair::new(1, cfg);
    p.run().unwrap();
    // First PING is due at establishment.
    p.a.handle_timeout(p.now).unwrap();
    let mut ab = BytesMut::new();
    p.a.poll_transmit(None, 1 << 20, &mut ab);
    p.b.handle_input(p.now, &ab).unwrap();
    let mut ba = BytesMut::new();
    p.b.poll_transmit(None, 1 << 20, &mut ba);
    let later = p.now + Duration::from_millis(40);
    p.a.handle_input(later, &ba).unwrap();
    assert_eq!(p.a.rtt(), Some(Duration::from_millis(40)));
    assert_eq!(p.a.poll_timeout(), p.now + Duration::from_secs(30));
    // Nothing more from Bob: gone 60 s after the last input.
    let gone = later + Duration::from_secs(60);
    assert!(p.a.handle_timeout(gone - Duration::from_millis(1)).is_ok());
    let err = p.a.handle_timeout(gone).unwrap_err();
    assert_eq!(err.code(), code::PEER_GONE);
}

#[test]
fn presence_is_announced() {
    let mut p = Pair::new(1, ConnConfig::default());
    p.run().unwrap();
    p.a.send_presence(PresenceStatus::Away);
    p.run().unwrap();
    assert!(p
        .b_events
        .contains(&ConnEvent::Presence(PresenceStatus::Away)));
    let err =
        p.b.handle_input(p.now, &raw(MessageType::Presence, 4, &[9]))
            .unwrap_err();
    assert!(matches!(err, ConnError::BadPayload { .. }));
}

#[test]
fn handshake_must_finish_in_time() {
    let (alice, bob, _) = ids();
    let now = Instant::now();
    let mut a = Connection::dial(
        1,
        now,
        alice.clone(),
        [1; 32],
        bob.fingerprint(),
        ConnConfig::default(),
        rng(1),
    );
    assert_eq!(a.poll_timeout(), now + Duration::from_secs(10));
    assert_eq!(
        a.handle_timeout(now + Duration::from_secs(10))
            .unwrap_err()
            .code(),
        code::HANDSHAKE_TIMEOUT
    );
}

#[test]
fn before_hello_only_a_hello_sized_frame_is_admitted() {
    let (_, bob, _) = ids();
    let now = Instant::now();
    // A HELLO header declaring one byte more than a HELLO: refused from the header alone.
    for declared in [hello::HELLO_LEN as u32 + 1, 1 << 20] {
        let mut b = Connection::accept(1, now, bob.clone(), [1; 32], ConnConfig::default(), rng(2));
        let mut h = BytesMut::from(&raw(MessageType::Hello, 0, b"")[..]);
        h[12..16].copy_from_slice(&declared.to_be_bytes());
        let err = b.handle_input(now, &h).unwrap_err();
        assert_eq!(err.code(), code::FRAME_TOO_LARGE, "{declared}: {err}");
        assert_eq!(b.buffered(), 0);
    }
    // A HELLO-sized frame in progress holds what arrived, no more.
    let mut b = Connection::accept(1, now, bob.clone(), [1; 32], ConnConfig::default(), rng(2));
    let mut h = BytesMut::from(&raw(MessageType::Hello, 0, b"")[..]);
    h[12..16].copy_from_slice(&(hello::HELLO_LEN as u32).to_be_bytes());
    h.extend_from_slice(&[0; 100]);
    b.handle_input(now, &h).unwrap();
    assert_eq!(b.buffered(), 32 + 100);
    // Once authenticated, the session's limit applies: a 200 KB message goes through.
    let mut p = Pair::new(1, ConnConfig::default());
    p.run().unwrap();
    p.a_out.push(Outgoing {
        id: MessageId([9; 16]),
        timestamp_ms: 1,
        kind: crate::crypto::MessageKind::TEXT,
        body: Bytes::from(vec![7u8; 200_000]),
    });
    p.run().unwrap();
    assert!(p
        .b_events
        .iter()
        .any(|e| matches!(e, ConnEvent::Message(m) if m.body.len() == 200_000)));
}

#[test]
fn ping_before_hello_is_a_violation_and_pings_coalesce_into_one_pong() {
    let (_, bob, _) = ids();
    let now = Instant::now();
    let mut b = Connection::accept(1, now, bob.clone(), [1; 32], ConnConfig::default(), rng(2));
    let err = b
        .handle_input(now, &raw(MessageType::Ping, 0, &[0; 8]))
        .unwrap_err();
    assert_eq!(err.code(), code::PROTOCOL_VIOLATION);
    let mut out = BytesMut::new();
    b.poll_transmit(None, 1 << 20, &mut out);
    assert_eq!(out.len(), 32 + hello::HELLO_LEN, "our HELLO and no PONG");

    let mut p = Pair::new(1, ConnConfig::default());
    p.run().unwrap();
    // 1000 PINGs while our writer is full: nothing is queued …
    let mut pings = BytesMut::new();
    for n in 0..1000u32 {
        pings.extend_from_slice(&raw(MessageType::Ping, 3 + n, &u64::from(n).to_be_bytes()));
    }
    p.b.handle_input(p.now, &pings).unwrap();
    let mut out = BytesMut::new();
    p.b.poll_transmit(None, 0, &mut out);
    assert!(
        out.is_empty(),
        "nothing leaves while the writer holds its budget"
    );
    // … and once it has room, one PONG answers the latest PING.
    p.b.poll_transmit(None, 1 << 20, &mut out);
    let frames = crate::wire::FrameDecoder::new(FrameLimits::default())
        .feed_all(&out[..])
        .unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].header.msg_type, MessageType::Pong);
    assert_eq!(&frames[0].payload[..], &999u64.to_be_bytes());
}

#[test]
fn presence_changes_coalesce_into_the_latest() {
    let mut p = Pair::new(1, ConnConfig::default());
    p.run().unwrap();
    for s in [
        PresenceStatus::Away,
        PresenceStatus::Online,
        PresenceStatus::Away,
    ] {
        p.a.send_presence(s);
    }
    p.run().unwrap();
    let got: Vec<_> = p
        .b_events
        .iter()
        .filter(|e| matches!(e, ConnEvent::Presence(_)))
        .collect();
    assert_eq!(got, [&ConnEvent::Presence(PresenceStatus::Away)]);
}

#[test]
fn a_writer_that_moves_nothing_while_bytes_wait_is_a_slow_reader() {
    let cfg = ConnConfig {
        write_stall_timeout: Duration::from_secs(20),
        ..ConnConfig::default()
    };
    let mut p = Pair::new(1, cfg);
    p.run().unwrap();
    let t0 = p.now;
    let s = Duration::from_secs;
    p.a.handle_timeout(t0).unwrap(); // the first PING; the next is due at 30 s
                                     // Nothing waiting: no stall however long.
    p.a.handle_writer(t0, false, false);
    assert!(p.a.poll_timeout() > t0 + s(20));
    // Bytes wait; progress at 10 s restarts the clock; none after.
    p.a.handle_writer(t0, true, false);
    assert_eq!(p.a.poll_timeout(), t0 + s(20));
    p.a.handle_writer(t0 + s(10), true, true);
    p.a.handle_writer(t0 + s(15), true, false);
    assert_eq!(p.a.poll_timeout(), t0 + s(30));
    p.a.handle_input(t0 + s(29), &[]).unwrap(); // the peer still sends: not idle
    assert!(p.a.handle_timeout(t0 + s(29)).is_ok());
    let err = p.a.handle_timeout(t0 + s(30)).unwrap_err();
    assert_eq!(err.code(), code::SLOW_READER);
    assert_eq!(err.penalty(), 25);
    // A writer that catches up is never a slow reader.
    let mut q = Pair::new(2, ConnConfig::default());
    q.run().unwrap();
    q.a.handle_writer(t0, true, false);
    q.a.handle_writer(t0 + s(1), false, true);
    assert!(q.a.handle_timeout(t0 + s(21)).is_ok());
}

#[test]
fn a_wrong_identity_costs_no_score_and_timeouts_do() {
    let (_, bob, carol) = ids();
    let wrong = ConnError::Auth(HelloError::UnexpectedPeer {
        expected: bob.fingerprint(),
        found: carol.fingerprint(),
    });
    assert_eq!(wrong.code(), code::AUTH_FAILED);
    assert_eq!(wrong.penalty(), 0);
    assert!(wrong.is_wrong_identity());
    assert_eq!(ConnError::Auth(HelloError::BadSignature).penalty(), 100);
    assert_eq!(ConnError::HandshakeTimeout { ms: 1 }.penalty(), 25);
}

#[test]
fn a_key_exchange_for_someone_else_costs_no_score_and_says_so() {
    let (_, bob, _) = ids();
    let misdialed = ConnError::Kex(KexError::WrongRecipient {
        found: bob.fingerprint(),
    });
    assert_eq!(misdialed.code(), code::WRONG_RECIPIENT);
    assert_eq!(misdialed.penalty(), 0);
    assert!(misdialed.is_wrong_identity());
    assert_eq!(
        ConnError::Kex(KexError::BadSignature).code(),
        code::E2E_FAILED
    );
    assert_eq!(ConnError::Kex(KexError::BadSignature).penalty(), 50);
}

#[test]
fn a_read_cut_into_segments_anywhere_delivers_the_same_messages() {
    for protection in [Protection::EndToEnd, Protection::UnprotectedForBenchmarks] {
        let mut p = Pair::new(
            1,
            ConnConfig {
                protection,
                ..ConnConfig::default()
            },
        );
        p.run().unwrap();
        for n in 0..300 {
            p.a_out.push(Outgoing {
                body: Bytes::from(vec![n as u8; 1 + (n as usize * 37) % 700]),
                ..msg(n)
            });
        }
        let mut ab = BytesMut::new();
        p.a.poll_transmit(Some(&mut p.a_out), 1 << 20, &mut ab);
        // Segments of 1, 7, 100, 333 and 1000 bytes, in turn: frames straddle them.
        let mut segments = Vec::new();
        let mut rest = ab.freeze();
        for len in [1usize, 7, 100, 333, 1000].into_iter().cycle() {
            if rest.is_empty() {
                break;
            }
            segments.push(rest.split_to(len.min(rest.len())));
        }
        // Half the reads at once, the rest one segment per read.
        let half = segments.len() / 2;
        p.b.handle_segments(p.now, &segments[..half]).unwrap();
        for s in &segments[half..] {
            p.b.handle_segments(p.now, std::slice::from_ref(s)).unwrap();
        }
        let got: Vec<_> = std::iter::from_fn(|| p.b.poll_event())
            .filter_map(|e| match e {
                ConnEvent::Message(m) => Some(m.body),
                _ => None,
            })
            .collect();
        println!(
            "{protection:?}: {} segments, {} messages",
            segments.len(),
            got.len()
        );
        assert_eq!(got.len(), 300);
        for (n, body) in got.iter().enumerate() {
            assert_eq!(&body[..], &vec![n as u8; 1 + (n * 37) % 700][..]);
        }
    }
}

/// DATA in flight and nothing at all from the peer for `ack_timeout`: gone, long before
/// `idle_timeout`. A peer that keeps acknowledging, or a connection with nothing in
/// flight, is not.
#[test]
fn a_peer_that_acknowledges_nothing_while_data_waits_is_gone() {
    let s = Duration::from_secs;
    let mut p = Pair::new(1, ConnConfig::default());
    p.run().unwrap();
    let t0 = p.now;
    p.a.handle_timeout(t0).unwrap();
    // Nothing in flight: no ACK deadline before the PING.
    assert_eq!(p.a.poll_timeout(), t0 + s(30));
    // Acknowledged traffic for 40 s: never gone.
    for i in 0..40u32 {
        p.now = t0 + s(u64::from(i));
        p.a_out.push(msg(i));
        p.run().unwrap();
        p.a.handle_timeout(p.now).unwrap();
    }
    // Now the path dies: a message goes out and nothing comes back.
    let dead = t0 + s(40);
    p.a_out.push(msg(99));
    let mut lost = BytesMut::new();
    p.a.poll_transmit(Some(&mut p.a_out), 1 << 20, &mut lost);
    assert!(!lost.is_empty());
    // The deadline arms at once (a past instant), then sits 20 s after the last input.
    assert!(p.a.poll_timeout() <= dead);
    p.a.handle_timeout(dead).unwrap();
    assert_eq!(p.a.poll_timeout(), dead + s(20));
    p.a.handle_timeout(dead + s(19)).unwrap();
    let err = p.a.handle_timeout(dead + s(20)).unwrap_err();
    println!("DATA unacknowledged, peer silent: {err} (idle limit 60 s)");
    assert!(matches!(err, ConnError::PeerGone { .. }), "{err}");
}

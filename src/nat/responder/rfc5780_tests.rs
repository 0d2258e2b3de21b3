//! The RFC 5780 server's answers (spec/05 §2.1): each CHANGE-REQUEST variant on each of the
//! four sockets, RESPONSE-ORIGIN and OTHER-ADDRESS, and the limits — one rate limit and one
//! byte rule per source across all four sockets, with the larger start credit that lets an
//! unpadded client (turnutils_natdiscovery) finish one run.

use stun_rs::attributes::discovery::{OtherAddress, ResponseOrigin};
use stun_rs::attributes::stun::{Fingerprint, XorMappedAddress};
use stun_rs::{MessageClass, MessageDecoderBuilder, StunMessage};

use super::*;
use crate::nat::stun::{Binding, Change, Options, ServerAddressError, Timers};

fn t0() -> Instant {
    crate::nat::tests::t0()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const ALL: [ServerSocket; 4] = [
    ServerSocket::PRIMARY,
    ServerSocket::OTHER_PORT,
    ServerSocket::OTHER_IP,
    ServerSocket::OTHER_BOTH,
];

fn v4_server() -> ServerAddresses {
    ServerAddresses::new(sa("198.18.0.2:4000"), "198.18.0.3".parse().unwrap(), 4001).unwrap()
}

fn v6_server() -> ServerAddresses {
    ServerAddresses::new(
        sa("[2001:db8::2]:4000"),
        "2001:db8::3".parse().unwrap(),
        4001,
    )
    .unwrap()
}

/// A Binding request with CHANGE-REQUEST flags `change` (if any) and FINGERPRINT if asked,
/// nothing else: what coturn's turnutils_natdiscovery sends (20 or 28 bytes without
/// FINGERPRINT).
fn request(tid: u8, change: Option<u32>, fingerprint: bool) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
    m.extend_from_slice(&[tid; 12]);
    if let Some(c) = change {
        m.extend_from_slice(&[0x00, 0x03, 0, 4]);
        m.extend_from_slice(&c.to_be_bytes());
    }
    finish(m, fingerprint)
}

fn finish(mut m: Vec<u8>, fingerprint: bool) -> Vec<u8> {
    let extra = if fingerprint { 8 } else { 0 };
    let len = (m.len() - 20 + extra) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    if fingerprint {
        let crc = crc32fast::hash(&m) ^ 0x5354_554E;
        m.extend_from_slice(&[0x80, 0x28, 0, 4]);
        m.extend_from_slice(&crc.to_be_bytes());
    }
    m
}

fn decode(answer: &[u8]) -> StunMessage {
    MessageDecoderBuilder::default()
        .build()
        .decode(answer)
        .expect("a well-formed answer")
        .0
}

fn unlimited(server: ServerAddresses) -> StunResponder {
    StunResponder::rfc5780(
        ResponderConfig {
            burst: u32::MAX,
            per_second: 1e9,
            ..ResponderConfig::default()
        },
        server,
    )
}

#[test]
fn every_change_request_on_every_socket_leaves_from_the_socket_it_names() {
    let now = t0();
    for (server, from) in [
        (v4_server(), sa("203.0.113.9:5000")),
        (v6_server(), sa("[2001:db8:9::9]:5000")),
    ] {
        let (mut answered, mut changed) = (0, 0);
        for on in ALL {
            for (ip, port) in [(false, false), (false, true), (true, false), (true, true)] {
                for fp in [false, true] {
                    // A fresh responder each time: these requests do not pay (the byte rule
                    // has its own tests below).
                    let mut r = unlimited(server);
                    let flags = u32::from(ip) << 2 | u32::from(port) << 1;
                    let change = (ip || port).then_some(flags);
                    let reply = r
                        .handle_on(now, on, from, &request(1, change, fp))
                        .expect("answered");
                    let want = on.changed(ip, port);
                    assert_eq!(reply.via, want, "on {on:?}, change ip={ip} port={port}");
                    let msg = decode(&reply.bytes);
                    assert_eq!(msg.class(), MessageClass::SuccessResponse);
                    let addr = |a: Option<SocketAddr>| a.expect("attribute present");
                    let mapped = msg
                        .get::<XorMappedAddress>()
                        .and_then(|a| a.as_xor_mapped_address().ok())
                        .map(|a| *a.socket_address());
                    let origin = msg
                        .get::<ResponseOrigin>()
                        .and_then(|a| a.as_response_origin().ok())
                        .map(|a| *a.socket_address());
                    let other = msg
                        .get::<OtherAddress>()
                        .and_then(|a| a.as_other_address().ok())
                        .map(|a| *a.socket_address());
                    assert_eq!(addr(mapped), from);
                    assert_eq!(addr(origin), server.addr(want), "RESPONSE-ORIGIN");
                    assert_eq!(
                        addr(other),
                        server.addr(on.changed(true, true)),
                        "OTHER-ADDRESS: both changed from the socket asked"
                    );
                    assert_eq!(msg.get::<Fingerprint>().is_some(), fp);
                    let size = full_answer(from.ip()) + if fp { 8 } else { 0 };
                    assert_eq!(reply.bytes.len(), size);
                    answered += r.stats().answered;
                    changed += r.stats().changed;
                }
            }
        }
        println!(
            "{}: {answered} answers, {changed} from another socket",
            if from.is_ipv4() { "IPv4" } else { "IPv6" },
        );
        assert_eq!((answered, changed), (32, 24));
    }
}

#[test]
fn the_four_sockets_are_four_distinct_addresses_of_one_family() {
    let p = sa("198.18.0.2:4000");
    let ip2 = "198.18.0.3".parse().unwrap();
    let s = v4_server();
    assert_eq!(
        ALL.map(|x| s.addr(x).to_string()),
        [
            "198.18.0.2:4000",
            "198.18.0.2:4001",
            "198.18.0.3:4000",
            "198.18.0.3:4001"
        ]
    );
    let e = |p, ip, port| ServerAddresses::new(p, ip, port).err();
    assert_eq!(e(p, ip2, 4000), Some(ServerAddressError::Same));
    assert_eq!(e(p, p.ip(), 4001), Some(ServerAddressError::Same));
    assert_eq!(
        e(sa("0.0.0.0:4000"), ip2, 4001),
        Some(ServerAddressError::Unspecified)
    );
    assert_eq!(
        e(p, "2001:db8::3".parse().unwrap(), 4001),
        Some(ServerAddressError::Family)
    );
}

#[test]
fn attributes_it_does_not_implement_get_420_from_the_socket_asked() {
    let now = t0();
    let mut r = unlimited(v4_server());
    let from = sa("203.0.113.9:5000");
    // PADDING (0x0026) and RESPONSE-PORT (0x0027) are RFC 5780's too, but not implemented.
    for t in [0x0026u16, 0x0027] {
        let mut m = request(2, Some(6), false);
        m.truncate(m.len());
        m.extend_from_slice(&t.to_be_bytes());
        m.extend_from_slice(&[0, 4, 0, 0, 0, 0]);
        let m = finish(m, false);
        let reply = r.handle_on(now, ServerSocket::OTHER_IP, from, &m).unwrap();
        assert_eq!(
            reply.via,
            ServerSocket::OTHER_IP,
            "a 420 leaves from where it was asked"
        );
        assert_eq!(decode(&reply.bytes).class(), MessageClass::ErrorResponse);
    }
    // A plain responder still refuses CHANGE-REQUEST with 420 (one address only).
    let a = StunResponder::new(ResponderConfig::default())
        .handle(now, from, &request(3, Some(6), false))
        .unwrap();
    assert_eq!(decode(&a).class(), MessageClass::ErrorResponse);
}

#[test]
fn malformed_change_requests_are_errors_not_panics() {
    let now = t0();
    let mut r = unlimited(v4_server());
    let from = sa("203.0.113.9:5000");
    for value in [
        &[][..],
        &[0, 6][..],
        &[0, 0, 0, 6, 0, 0, 0, 0][..],
        &[0xFF; 4][..],
    ] {
        let mut m = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
        m.extend_from_slice(&[4; 12]);
        m.extend_from_slice(&[0x00, 0x03, 0, value.len() as u8]);
        m.extend_from_slice(value);
        m.resize(m.len().next_multiple_of(4), 0);
        let m = finish(m, false);
        let got = r.handle_on(now, ServerSocket::PRIMARY, from, &m);
        println!(
            "CHANGE-REQUEST value {value:?}: {:?}",
            got.as_ref().map(|r| r.via)
        );
        if value == [0xFF; 4] {
            // Bits other than the two flags are ignored.
            assert_eq!(got.map(|r| r.via), Ok(ServerSocket::OTHER_BOTH));
        }
    }
}

/// Our client pads every request to the largest answer of its server's family (64 bytes for
/// IPv4, 100 for IPv6): it never spends the start credit, on any socket, with or without
/// CHANGE-REQUEST.
#[test]
fn our_requests_pay_for_rfc5780_answers_on_every_socket() {
    let now = t0();
    for (server, from) in [
        (v4_server(), sa("203.0.113.9:5000")),
        (v6_server(), sa("[2001:db8:9::9]:5000")),
    ] {
        let mut r = unlimited(server);
        for i in 0..250u8 {
            for on in ALL {
                for change in [Change::Nothing, Change::Port, Change::IpAndPort] {
                    let opts = Options {
                        timers: Timers::DISCOVERY,
                        change,
                        credentials: None,
                    };
                    let mut b = Binding::with_options(server.addr(on), [i; 12], opts, now);
                    let req = b.poll_transmit(now).unwrap().1.to_vec();
                    assert!(req.len() >= crate::nat::stun::largest_answer(server.addr(on)));
                    let reply = r.handle_on(now, on, from, &req).expect("answered");
                    assert!(b.handle_response(server.addr(reply.via), &reply.bytes));
                    let answer = b.result().unwrap().as_ref().unwrap();
                    assert_eq!(answer.mapped, from);
                    assert_eq!(answer.other, Some(server.addr(on.changed(true, true))));
                }
            }
        }
        let s = r.stats();
        println!(
            "{}: {} of our requests answered, {} over budget",
            if from.is_ipv4() { "IPv4" } else { "IPv6" },
            s.answered,
            s.over_budget
        );
        assert_eq!((s.answered, s.over_budget), (3000, 0));
    }
}

/// turnutils_natdiscovery -m -f behind a symmetric NAT: six unpadded requests (20 or 28
/// bytes) for six full answers. The start credit covers one such run per source; a second
/// run right after is refused in part; and at every point the source was answered with at
/// most what it sent plus the start credit.
#[test]
fn one_unpadded_discovery_run_per_source_and_the_byte_rule_at_every_point() {
    let now = t0();
    let run: [(ServerSocket, Option<u32>); 6] = [
        (ServerSocket::PRIMARY, None),
        (ServerSocket::OTHER_IP, None),
        (ServerSocket::OTHER_BOTH, None),
        (ServerSocket::PRIMARY, None),
        (ServerSocket::PRIMARY, Some(6)),
        (ServerSocket::PRIMARY, Some(2)),
    ];
    for (server, from) in [
        (v4_server(), sa("203.0.113.9:5000")),
        (v6_server(), sa("[2001:db8:9::9]:5000")),
    ] {
        let mut r = unlimited(server);
        let start = r.start_credit(from.ip());
        let (mut received, mut sent) = (0usize, 0usize);
        let mut answered = [0usize; 2];
        for (round, counted) in answered.iter_mut().enumerate() {
            for (i, (on, change)) in run.iter().enumerate() {
                let req = request((round * 6 + i) as u8, *change, false);
                received += req.len();
                if let Ok(reply) = r.handle_on(now, *on, from, &req) {
                    sent += reply.bytes.len();
                    *counted += 1;
                }
                assert!(
                    sent <= received + start,
                    "{sent} B answered for {received} B"
                );
            }
        }
        println!(
            "{}: start credit {start} B; run 1 answered {}/6, run 2 {}/6; {sent} B answered \
             for {received} B received",
            if from.is_ipv4() { "IPv4" } else { "IPv6" },
            answered[0],
            answered[1]
        );
        assert_eq!(answered[0], 6, "the first run is answered in full");
        assert!(answered[1] < 6, "a second run is not paid for");
    }
}

/// A spoofed flood across the four sockets: one rate limit and one byte rule for the
/// source, not four. With four responders (one per socket) the source would get four bursts
/// and four start credits.
#[test]
fn one_rate_limit_and_one_byte_rule_across_the_four_sockets() {
    let start = t0();
    let mut r = StunResponder::rfc5780(
        ResponderConfig {
            burst: 4,
            per_second: 2.0,
            ..ResponderConfig::default()
        },
        v4_server(),
    );
    let victim = sa("203.0.113.9:5000");
    let plain = request(1, None, false);
    let ok: Vec<bool> = (0..8)
        .map(|i| r.handle_on(start, ALL[i % 4], victim, &plain).is_ok())
        .collect();
    assert_eq!(ok, [true, true, true, true, false, false, false, false]);

    // Unlimited rate: only the byte rule is left; 1000 plain requests spread over the sockets.
    let mut r = unlimited(v4_server());
    let (mut received, mut sent) = (0usize, 0usize);
    let credit = r.start_credit(victim.ip());
    for i in 0..1000usize {
        received += plain.len();
        let change = [None, Some(2), Some(4), Some(6)][i % 4];
        let req = request(1, change, false);
        received += req.len() - plain.len();
        if let Ok(reply) = r.handle_on(start, ALL[(i / 4) % 4], victim, &req) {
            sent += reply.bytes.len();
        }
        assert!(sent <= received + credit);
    }
    let s = r.stats();
    println!(
        "flood of 1000 unpadded requests over 4 sockets: {} answered ({sent} B for {received} \
         B received, start credit {credit} B), {} over budget",
        s.answered, s.over_budget
    );
    assert!(sent <= received + credit);
}

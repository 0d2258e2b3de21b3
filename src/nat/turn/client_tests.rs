//! The client state machine against a hand-built server (spec/07-relay.md §2.2).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun_rs::attributes::stun::{
    ErrorCode, Fingerprint, MessageIntegrity, Nonce, Realm, UserName, XorMappedAddress,
};
use stun_rs::attributes::turn::{LifeTime, XorPeerAddress, XorRelayedAddress};
use stun_rs::{
    DecoderContextBuilder, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder,
    StunAttribute, StunMessage, StunMessageBuilder,
};

use super::client::{Client, Transport, TurnConfig, TurnEvent};
use super::credentials::Credentials;
use super::error::{TurnError, UseError};
use super::message::{data_indication, Auth};
use crate::nat::tests::t0;

const REALM: &str = "dna.test";

fn server() -> SocketAddr {
    "192.0.2.1:3478".parse().unwrap()
}
fn relayed() -> SocketAddr {
    "192.0.2.1:50000".parse().unwrap()
}
fn peer() -> SocketAddr {
    "198.51.100.20:4000".parse().unwrap()
}
fn key(pass: &str) -> HMACKey {
    Auth::new("u", pass, REALM, "n").unwrap().key
}

fn client(config: TurnConfig, now: Instant) -> Client {
    let creds = Credentials::Static {
        username: "u".into(),
        password: "p".into(),
    };
    Client::new(server(), creds, config, now, 1_700_000_000, [7; 32])
}

fn decode(bytes: &[u8]) -> StunMessage {
    MessageDecoderBuilder::default()
        .build()
        .decode(bytes)
        .unwrap()
        .0
}

/// The server's answer to `req`: `attrs`, then MESSAGE-INTEGRITY when `key` is given.
fn answer(
    req: &[u8],
    class: MessageClass,
    attrs: Vec<StunAttribute>,
    key: Option<HMACKey>,
) -> Vec<u8> {
    let m = decode(req);
    let mut b = StunMessageBuilder::new(m.method(), class).with_transaction_id(*m.transaction_id());
    for a in attrs {
        b = b.with_attribute(a);
    }
    if let Some(k) = key {
        b = b.with_attribute(MessageIntegrity::new(k));
    }
    let mut buf = vec![0; 1024];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, &b.with_attribute(Fingerprint::default()).build())
        .unwrap();
    buf.truncate(n);
    buf
}

fn error(req: &[u8], code: u16, nonce: Option<&str>, key: Option<HMACKey>) -> Vec<u8> {
    let mut attrs: Vec<StunAttribute> =
        vec![ErrorCode::new(stun_rs::ErrorCode::new(code, "test").unwrap()).into()];
    if let Some(n) = nonce {
        attrs.push(Realm::new(REALM).unwrap().into());
        attrs.push(Nonce::new(n).unwrap().into());
    }
    answer(req, MessageClass::ErrorResponse, attrs, key)
}

fn allocate_ok(req: &[u8], lifetime: u32) -> Vec<u8> {
    let attrs: Vec<StunAttribute> = vec![
        XorRelayedAddress::from(relayed()).into(),
        XorMappedAddress::from("203.0.113.5:40000".parse::<SocketAddr>().unwrap()).into(),
        LifeTime::new(lifetime).into(),
    ];
    answer(req, MessageClass::SuccessResponse, attrs, Some(key("p")))
}

fn ok(req: &[u8], lifetime: Option<u32>) -> Vec<u8> {
    let attrs: Vec<StunAttribute> = lifetime
        .map(|l| LifeTime::new(l).into())
        .into_iter()
        .collect();
    answer(req, MessageClass::SuccessResponse, attrs, Some(key("p")))
}

fn next(c: &mut Client, now: Instant) -> Vec<u8> {
    let (to, bytes) = c.poll_transmit(now).expect("a request");
    assert_eq!(to, server());
    bytes
}

fn events(c: &mut Client) -> Vec<TurnEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// Allocates through a 401 challenge; returns the client at `now`.
fn allocated(config: TurnConfig, now: Instant) -> Client {
    let mut c = client(config, now);
    let first = next(&mut c, now);
    assert!(
        decode(&first).get::<UserName>().is_none(),
        "first Allocate is unauthenticated"
    );
    assert!(c.handle_input(now, server(), &error(&first, 401, Some("n1"), None)));
    let second = next(&mut c, now);
    let m = decode(&second);
    assert_eq!(m.get::<Nonce>().unwrap().as_nonce().unwrap().as_str(), "n1");
    // The server can verify it with MD5(u:realm:p).
    let ctx = DecoderContextBuilder::default()
        .with_key(key("p"))
        .with_validation()
        .build();
    MessageDecoderBuilder::default()
        .with_context(ctx)
        .build()
        .decode(&second)
        .unwrap();
    assert!(c.handle_input(now, server(), &allocate_ok(&second, 600)));
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Allocated {
            relayed: relayed(),
            mapped: Some("203.0.113.5:40000".parse().unwrap()),
            lifetime: Duration::from_secs(600),
        }]
    );
    c
}

#[test]
fn allocates_after_a_401_challenge() {
    let c = allocated(TurnConfig::default(), t0());
    assert_eq!(c.relayed(), Some(relayed()));
    assert_eq!(c.stats().allocations, 1);
}

#[test]
fn stale_nonce_is_retried_with_the_new_nonce() {
    let now = t0();
    let mut c = client(TurnConfig::default(), now);
    let r1 = next(&mut c, now);
    c.handle_input(now, server(), &error(&r1, 401, Some("n1"), None));
    let r2 = next(&mut c, now);
    c.handle_input(now, server(), &error(&r2, 438, Some("n2"), None));
    let r3 = next(&mut c, now);
    let nonce = decode(&r3)
        .get::<Nonce>()
        .unwrap()
        .as_nonce()
        .unwrap()
        .as_str()
        .to_owned();
    assert_eq!(nonce, "n2");
    c.handle_input(now, server(), &allocate_ok(&r3, 600));
    assert!(matches!(events(&mut c)[..], [TurnEvent::Allocated { .. }]));
    assert_eq!(c.stats().stale_nonces, 1);
}

#[test]
fn wrong_password_is_a_typed_401_failure() {
    let now = t0();
    let mut c = client(TurnConfig::default(), now);
    let r1 = next(&mut c, now);
    c.handle_input(now, server(), &error(&r1, 401, Some("n1"), None));
    let r2 = next(&mut c, now);
    c.handle_input(now, server(), &error(&r2, 401, Some("n1"), None));
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Failed(TurnError::Unauthorized(server()))]
    );
    assert_eq!(c.poll_timeout(), None);
    assert!(c.poll_transmit(now).is_none());
}

#[test]
fn every_allocate_error_code_is_typed() {
    let s = server();
    let reason = "test".to_string();
    for (code, want) in [
        (
            400,
            TurnError::BadRequest {
                server: s,
                reason: reason.clone(),
            },
        ),
        (
            403,
            TurnError::Forbidden {
                server: s,
                reason: reason.clone(),
            },
        ),
        (441, TurnError::WrongCredentials(s)),
        (442, TurnError::UnsupportedTransport(s)),
        (486, TurnError::QuotaReached(s)),
        (508, TurnError::InsufficientCapacity(s)),
        (
            599,
            TurnError::Other {
                server: s,
                code: 599,
                reason: reason.clone(),
            },
        ),
    ] {
        let now = t0();
        let mut c = client(TurnConfig::default(), now);
        let r1 = next(&mut c, now);
        c.handle_input(now, server(), &error(&r1, 401, Some("n1"), None));
        let r2 = next(&mut c, now);
        c.handle_input(now, server(), &error(&r2, code, None, Some(key("p"))));
        assert_eq!(
            events(&mut c),
            vec![TurnEvent::Failed(want.clone())],
            "{code}"
        );
        println!("{code}: {want}");
    }
}

#[test]
fn forged_and_unmatched_answers_are_ignored() {
    let now = t0();
    let mut c = client(TurnConfig::default(), now);
    let r1 = next(&mut c, now);
    c.handle_input(now, server(), &error(&r1, 401, Some("n1"), None));
    let r2 = next(&mut c, now);
    // Wrong key, no key, wrong source, a transaction nobody asked.
    let forged = answer(
        &r2,
        MessageClass::SuccessResponse,
        vec![],
        Some(key("guess")),
    );
    assert!(!c.handle_input(now, server(), &forged));
    let bare = answer(&r2, MessageClass::SuccessResponse, vec![], None);
    assert!(!c.handle_input(now, server(), &bare));
    assert!(!c.handle_input(now, peer(), &allocate_ok(&r2, 600)));
    assert!(
        !c.handle_input(now, server(), &allocate_ok(&r1, 600)),
        "answered already"
    );
    assert_eq!(c.stats().unverified, 2);
    assert!(events(&mut c).is_empty());
    assert!(c.handle_input(now, server(), &allocate_ok(&r2, 600)));
}

#[test]
fn refresh_at_lifetime_minus_margin_or_half() {
    let now = t0();
    let mut c = allocated(TurnConfig::default(), now);
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(540)));
    let at = now + Duration::from_secs(540);
    let r = next(&mut c, at);
    assert_eq!(
        decode(&r)
            .get::<LifeTime>()
            .unwrap()
            .as_life_time()
            .unwrap()
            .as_u32(),
        600
    );
    c.handle_input(at, server(), &ok(&r, Some(100)));
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Refreshed {
            lifetime: Duration::from_secs(100)
        }]
    );
    assert_eq!(
        c.poll_timeout(),
        Some(at + Duration::from_secs(40)),
        "100 - 60 s"
    );
    let at = at + Duration::from_secs(40);
    let r = next(&mut c, at);
    c.handle_input(at, server(), &ok(&r, Some(50)));
    assert_eq!(
        c.poll_timeout(),
        Some(at + Duration::from_secs(25)),
        "half of 50 s, not longer than the margin"
    );
}

#[test]
fn a_silent_server_is_noticed_and_the_allocation_remade() {
    let start = t0();
    let mut c = allocated(TurnConfig::default(), start);
    let mut now = start + Duration::from_secs(540);
    let mut refreshes = 0;
    let mut lost = None;
    while lost.is_none() {
        while c.poll_transmit(now).is_some() {
            refreshes += 1;
        }
        now = c.poll_timeout().unwrap();
        c.handle_timeout(now);
        lost = events(&mut c)
            .into_iter()
            .find(|e| matches!(e, TurnEvent::Lost(_)));
    }
    assert_eq!(lost, Some(TurnEvent::Lost(TurnError::Timeout(server()))));
    println!(
        "refresh sent {refreshes} times, lost after {:?}",
        now - start
    );
    assert_eq!(refreshes, 7);
    assert_eq!(now - start, Duration::from_millis(540_000 + 39_500));
    // A new Allocate goes out, authenticated with the nonce it has.
    let r = next(&mut c, now);
    assert!(decode(&r).get::<UserName>().is_some());
    c.handle_input(now, server(), &allocate_ok(&r, 600));
    assert!(matches!(events(&mut c)[..], [TurnEvent::Allocated { .. }]));
}

#[test]
fn allocation_mismatch_on_refresh_reallocates_and_on_allocate_clears_first() {
    let now = t0();
    let mut c = allocated(TurnConfig::default(), now);
    let at = now + Duration::from_secs(540);
    let r = next(&mut c, at);
    c.handle_input(at, server(), &error(&r, 437, None, Some(key("p"))));
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Lost(TurnError::AllocationMismatch(server()))]
    );
    let a = next(&mut c, at);
    c.handle_input(at, server(), &error(&a, 437, None, Some(key("p"))));
    let clear = next(&mut c, at);
    assert_eq!(
        decode(&clear)
            .get::<LifeTime>()
            .unwrap()
            .as_life_time()
            .unwrap()
            .as_u32(),
        0
    );
    c.handle_input(at, server(), &ok(&clear, Some(0)));
    let again = next(&mut c, at);
    c.handle_input(at, server(), &allocate_ok(&again, 600));
    assert!(matches!(events(&mut c)[..], [TurnEvent::Allocated { .. }]));
}

#[test]
fn permissions_are_sent_refreshed_and_gate_data() {
    let now = t0();
    let mut c = client(TurnConfig::default(), now);
    c.create_permission(now, peer().ip()).unwrap();
    assert_eq!(c.send(peer(), b"x"), Err(UseError::NotAllocated));
    let r1 = next(&mut c, now);
    c.handle_input(now, server(), &error(&r1, 401, Some("n1"), None));
    let r2 = next(&mut c, now);
    c.handle_input(now, server(), &allocate_ok(&r2, 600));
    let p = next(&mut c, now);
    let m = decode(&p);
    let asked = m
        .get::<XorPeerAddress>()
        .unwrap()
        .as_xor_peer_address()
        .unwrap();
    assert_eq!(asked.socket_address().ip(), peer().ip());
    c.handle_input(now, server(), &ok(&p, None));
    let ev = events(&mut c);
    assert_eq!(ev.last(), Some(&TurnEvent::PermissionCreated(peer().ip())));
    // Data from the permitted peer is delivered, from another is not.
    assert!(c.handle_input(now, server(), &data_indication([1; 12], peer(), b"hi")));
    let stranger: SocketAddr = "198.51.100.99:4000".parse().unwrap();
    assert!(!c.handle_input(now, server(), &data_indication([2; 12], stranger, b"no")));
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Data {
            peer: peer(),
            data: b"hi".to_vec()
        }]
    );
    assert_eq!(c.stats().data_dropped, 1);
    assert!(c.send(peer(), b"out").is_ok());
    assert_eq!(
        c.send(stranger, b"x"),
        Err(UseError::NoPermission(stranger.ip()))
    );
    // Refreshed 60 s before its 300 s lifetime.
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(240)));
    let at = now + Duration::from_secs(240);
    let again = next(&mut c, at);
    c.handle_input(at, server(), &ok(&again, None));
    assert_eq!(c.stats().permission_refreshes, 1);
}

#[test]
fn permission_limit_and_data_queue_bound() {
    let now = t0();
    let config = TurnConfig {
        max_permissions: 2,
        max_queued_data: 10,
        ..TurnConfig::default()
    };
    let mut c = allocated(config, now);
    c.create_permission(now, peer().ip()).unwrap();
    c.create_permission(now, IpAddr::from([198, 51, 100, 21]))
        .unwrap();
    assert_eq!(
        c.create_permission(now, IpAddr::from([198, 51, 100, 22])),
        Err(UseError::TooManyPermissions(2))
    );
    for i in 0..100u8 {
        c.handle_input(now, server(), &data_indication([i; 12], peer(), &[i; 100]));
    }
    let delivered = events(&mut c)
        .iter()
        .filter(|e| matches!(e, TurnEvent::Data { .. }))
        .count();
    println!(
        "100 Data indications unpolled: {delivered} queued, {} dropped",
        c.stats().data_dropped
    );
    assert_eq!((delivered, c.stats().data_dropped), (10, 90));
}

#[test]
fn close_sends_lifetime_zero() {
    let now = t0();
    let mut c = allocated(TurnConfig::default(), now);
    c.close(now);
    let r = next(&mut c, now);
    assert_eq!(
        decode(&r)
            .get::<LifeTime>()
            .unwrap()
            .as_life_time()
            .unwrap()
            .as_u32(),
        0
    );
    c.handle_input(now, server(), &ok(&r, Some(0)));
    assert_eq!(events(&mut c), vec![TurnEvent::Closed]);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn tcp_sends_once_and_waits_ti() {
    let start = t0();
    let config = TurnConfig {
        transport: Transport::Tcp,
        ..TurnConfig::default()
    };
    let mut c = client(config, start);
    let mut sent = 0;
    let mut now = start;
    loop {
        while c.poll_transmit(now).is_some() {
            sent += 1;
        }
        match c.poll_timeout() {
            Some(t) => now = t,
            None => break,
        }
        c.handle_timeout(now);
    }
    assert_eq!(sent, 1);
    assert_eq!(now - start, Duration::from_millis(39_500));
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Failed(TurnError::Timeout(server()))]
    );
}

//! Bodies of the fuzz targets in `fuzz/`. They live in the library so that `cargo test`
//! (`tests/fuzz_corpus.rs`) replays every committed corpus file through exactly the code
//! the fuzzer runs. Each function panics only when an invariant is broken.
#![doc(hidden)]

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use rand_core::OsRng;

use crate::crypto::{kex, sealed, Identity, Record, Session};
use crate::wire::{decode_frame, FrameDecoder, FrameError, FrameLimits};

fn limits() -> FrameLimits {
    // Small enough that fuzz inputs reach the length checks from both sides.
    FrameLimits { max_payload: 4096 }
}

/// One-shot decode never panics; a decoded frame re-encodes to the same bytes.
pub fn frame_decode(data: &[u8]) {
    if let Ok((frame, used)) = decode_frame(data, &limits()) {
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        assert_eq!(&out[..], &data[..used], "re-encoding changed the frame");
    }
}

/// Any chunking of the input yields the same frames and the same error as one-shot
/// decoding. The first byte chooses the chunk sizes.
pub fn frame_stream(data: &[u8]) {
    let Some((&seed, data)) = data.split_first() else {
        return;
    };
    // One-shot: decode frame after frame.
    let mut expected = Vec::new();
    let mut rest = data;
    let expected_end = loop {
        if rest.is_empty() {
            break Ok(());
        }
        match decode_frame(rest, &limits()) {
            Ok((f, used)) => {
                expected.push((f.header, Bytes::copy_from_slice(f.payload)));
                rest = &rest[used..];
            }
            Err(e) => break Err(e),
        }
    };
    // Streaming, in chunks of 1..=(seed % 64 + 1) bytes varying with position.
    let mut dec = FrameDecoder::new(limits());
    let mut got = Vec::new();
    let input = Bytes::copy_from_slice(data);
    let mut at = 0;
    let mut stream_err = None;
    let mut i = 0usize;
    while at < input.len() && stream_err.is_none() {
        let n = 1
            + (usize::from(seed).wrapping_mul(31).wrapping_add(i * 7)
                % (usize::from(seed % 64) + 1));
        let mut chunk = input.slice(at..(at + n).min(input.len()));
        at += chunk.len();
        i += 1;
        while !chunk.is_empty() {
            match dec.feed(&mut chunk) {
                Ok(Some(f)) => got.push((f.header, f.payload)),
                Ok(None) => {}
                Err(e) => {
                    stream_err = Some(e);
                    break;
                }
            }
        }
    }
    let stream_end = match stream_err {
        Some(e) => Err(e),
        None => dec.finish(),
    };
    assert_eq!(got, expected, "chunking changed the frames");
    match (&expected_end, &stream_end) {
        (Err(FrameError::Truncated { .. }), Err(FrameError::Truncated { .. })) => {}
        _ => assert_eq!(expected_end, stream_end, "chunking changed the error"),
    }
    // The lending decoder, same chunking: same frames, same end.
    let mut dec = FrameDecoder::new(limits());
    let mut lent = Vec::new();
    let mut lent_err = None;
    let (mut at, mut i) = (0, 0usize);
    'chunks: while at < data.len() {
        let n = 1
            + (usize::from(seed).wrapping_mul(31).wrapping_add(i * 7)
                % (usize::from(seed % 64) + 1));
        let mut chunk = &data[at..(at + n).min(data.len())];
        at += chunk.len();
        i += 1;
        while !chunk.is_empty() {
            match dec.decode(&mut chunk) {
                Ok(Some(f)) => lent.push((f.header(), Bytes::copy_from_slice(f.payload()))),
                Ok(None) => {}
                Err(e) => {
                    lent_err = Some(e);
                    break 'chunks;
                }
            }
        }
    }
    let lent_end = match lent_err {
        Some(e) => Err(e),
        None => dec.finish(),
    };
    assert_eq!(lent, expected, "the lending decoder changed the frames");
    assert_eq!(lent_end, stream_end, "the lending decoder changed the end");
}

struct EnvelopeFixture {
    alice: Identity,
    bob: Identity,
    bob_session: Session,
}

fn envelope_fixture() -> &'static EnvelopeFixture {
    static FIXTURE: OnceLock<EnvelopeFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let alice = Identity::generate(&mut OsRng);
        let bob = Identity::generate(&mut OsRng);
        let (init_state, init) = kex::Initiator::start(&alice, bob.fingerprint(), &mut OsRng);
        let (resp_state, accept) = kex::Responder::on_init(&bob, &init, None, &mut OsRng)
            .unwrap_or_else(|e| panic!("fixture handshake: {e}"));
        let (_alice_session, finish) = init_state
            .on_accept(&alice, &accept)
            .unwrap_or_else(|e| panic!("fixture handshake: {e}"));
        let bob_session = resp_state
            .on_finish(&finish)
            .unwrap_or_else(|e| panic!("fixture handshake: {e}"));
        EnvelopeFixture {
            alice,
            bob,
            bob_session,
        }
    })
}

/// Garbage never panics when opened as a session-form or sealed envelope, or as a key
/// exchange message.
pub fn envelope_open(data: &[u8]) {
    let fx = envelope_fixture();
    let mut session = fx.bob_session.clone();
    assert!(
        session.open(BytesMut::from(data)).is_err()
            || data.len() >= crate::crypto::SESSION_OVERHEAD
    );
    let _ = sealed::open(&fx.bob, data);
    let _ = sealed::verify_sender(data);
    let _ = kex::Responder::on_init(&fx.bob, data, None, &mut OsRng);
    let (init_state, _) = kex::Initiator::start(&fx.alice, fx.bob.fingerprint(), &mut OsRng);
    let _ = init_state.on_accept(&fx.alice, data);
}

/// Garbage never panics when verified as a record; a record that verifies re-encodes to the
/// same bytes.
pub fn record_verify(data: &[u8]) {
    // A fixed "now" keeps runs reproducible.
    const NOW: u64 = 1_800_000_000;
    if let Ok(r) = Record::verify(data, NOW) {
        assert_eq!(r.encode(), data, "re-encoding changed the record");
    }
}

/// A DHT payload never panics the codec; a decoded message re-encodes to the same bytes; the
/// node state machine takes any decoded message. The first two bytes pick the frame type.
pub fn dht_message(data: &[u8]) {
    use crate::dht::{Contact, DhtMessage};
    use crate::wire::MessageType;
    let Some((head, payload)) = data.split_first_chunk::<2>() else {
        return;
    };
    let t = 0x0100 + (u16::from_be_bytes(*head) % 8);
    let Some(t) = MessageType::from_u16(t) else {
        return;
    };
    let Ok(msg) = DhtMessage::decode(t, payload) else {
        return;
    };
    assert_eq!(msg.encode(), payload, "re-encoding changed the DHT message");
    let (now, mut dht) = dht_fixture();
    let from = Contact {
        id: crate::crypto::NodeId([7; 20]),
        addr: std::net::SocketAddr::from(([10, 0, 0, 7], 4567)),
    };
    dht.handle_message(now, from, msg);
    while dht.poll_transmit().is_some() {}
    dht.handle_timeout(now + std::time::Duration::from_secs(3));
}

// A fuzz run needs one real starting instant; the state machine takes it as input.
#[allow(clippy::disallowed_methods)]
fn dht_fixture() -> (std::time::Instant, crate::dht::Dht) {
    let now = std::time::Instant::now();
    let dht = crate::dht::Dht::new(
        crate::crypto::NodeId([1; 20]),
        crate::dht::DhtConfig::default(),
        (now, 1_800_000_000),
        1,
    );
    (now, dht)
}

/// Any datagram given to the STUN responder or to a waiting Binding transaction never
/// panics; an answer the responder makes is itself a well-formed STUN message, and the
/// rate-limited responder (spec/05 §1.2) never answers a source with more bytes than it sent
/// plus one minimal answer.
pub fn stun_message(data: &[u8]) {
    use crate::nat::responder::{minimal_answer, ResponderConfig, StunResponder};
    use crate::nat::stun::{respond, transaction_id, Binding};
    let from = std::net::SocketAddr::from(([192, 0, 2, 1], 3478));
    if let Some(answer) = respond(from, data) {
        assert!(
            crate::transport::demux::is_stun(&answer),
            "the responder made a malformed answer"
        );
    }
    let (now, _) = dht_fixture();
    let mut responder = StunResponder::new(ResponderConfig::default());
    let six = std::net::SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 3478));
    for source in [from, six] {
        let mut sent = 0;
        for i in 0..3u64 {
            let at = now + std::time::Duration::from_millis(i);
            if let Ok(answer) = responder.handle(at, source, data) {
                assert!(crate::transport::demux::is_stun(&answer));
                assert_eq!(
                    answer.get(8..20),
                    data.get(8..20),
                    "the request's transaction"
                );
                sent += answer.len();
            }
            let received = data.len() * (i as usize + 1);
            assert!(
                sent <= received + minimal_answer(source.ip()),
                "{sent} bytes answered for {received}"
            );
        }
    }
    let st = responder.stats();
    assert_eq!(
        st.answered + st.rate_limited + st.over_budget + st.malformed + st.oversize + st.not_for_us,
        6
    );
    // The RFC 5780 server (spec/05 §2.1): on each of its four sockets, an answer is
    // well-formed, leaves from one of them, and the byte rule holds with its start credit.
    let server = crate::nat::stun::ServerAddresses::new(
        std::net::SocketAddr::from(([198, 18, 0, 2], 4000)),
        std::net::IpAddr::from([198, 18, 0, 3]),
        4001,
    )
    .expect("four distinct addresses");
    let mut rfc5780 = StunResponder::rfc5780(ResponderConfig::default(), server);
    let (mut sent, mut received) = (0, 0);
    for (i, on) in [(false, false), (false, true), (true, false), (true, true)]
        .into_iter()
        .enumerate()
    {
        let on = crate::nat::stun::ServerSocket {
            ip: on.0,
            port: on.1,
        };
        received += data.len();
        let at = now + std::time::Duration::from_millis(i as u64);
        if let Ok(reply) = rfc5780.handle_on(at, on, from, data) {
            assert!(crate::transport::demux::is_stun(&reply.bytes));
            sent += reply.bytes.len();
        }
        assert!(sent <= received + rfc5780.start_credit(from.ip()));
    }
    let mut b = Binding::new(from, transaction_id(data).unwrap_or([0; 12]), now);
    let _ = b.poll_transmit(now);
    b.handle_response(from, data);
    // The authenticated paths: a connectivity check's answer, and a punching attempt that
    // takes the datagram as a check or as an answer (spec/05 §5).
    let _ = crate::nat::stun::request_username(data);
    if let Some(answer) = crate::nat::stun::respond_authenticated(from, data, "fuzz-password") {
        assert!(crate::transport::demux::is_stun(&answer));
    }
    let cand = crate::nat::candidate::Candidate::new(
        crate::nat::candidate::CandidateKind::ServerReflexive,
        from,
        65535,
    );
    let creds = crate::nat::punch::PunchCreds {
        local_ufrag: "aaaa".into(),
        local_pwd: "fuzz-password".into(),
        remote_ufrag: "bbbb".into(),
        remote_pwd: "fuzz-password".into(),
    };
    let tag = transaction_id(data).map_or([0; 4], |t| [t[0], t[1], t[2], t[3]]);
    let mut p = crate::nat::punch::Punch::new(
        creds,
        &[cand],
        true,
        tag,
        crate::nat::punch::PunchConfig::default(),
        now,
    );
    p.handle_timeout(now);
    while p.poll_transmit().is_some() {}
    p.handle_stun(from, data, now);
}

/// Signalling input never panics: a presence value (spec/05 §4.1) that decodes re-encodes
/// to a value that decodes to the same thing; a CONNECT body is parsed and verified.
pub fn signal_message(data: &[u8]) {
    use crate::nat::candidate::PresenceInfo;
    if let Ok(info) = PresenceInfo::decode(data) {
        assert_eq!(
            PresenceInfo::decode(&info.encode()).as_ref(),
            Ok(&info),
            "presence value does not round-trip"
        );
    }
    if let Ok(sig) = crate::nat::signal::Signal::verify(data) {
        let me = sig.to;
        let _ = sig.check_offer(&me, sig.time_ms);
    }
}

/// TURN input never panics (spec/07-relay.md §2): a parsed Data indication or ChannelData
/// re-encodes to something that parses the same; the TCP framing decoder yields the same
/// frames and the same error however the stream is cut, and never holds more than its
/// limit; an allocated client takes the bytes as a datagram and as TCP frames — and, when
/// the first byte is odd, with its pending transaction's ID spliced in, so that the
/// response paths (verification, error codes, permissions) are reached.
pub fn turn_message(data: &[u8]) {
    use crate::nat::turn::message::{data_indication, encode_channel_data, parse, Incoming};
    use crate::nat::turn::tcp::{FramingError, TcpDecoder};
    let Some((&sel, data)) = data.split_first() else {
        return;
    };
    static FIXTURE: OnceLock<(
        std::time::Instant,
        crate::nat::turn::Client,
        stun_rs::HMACKey,
    )> = OnceLock::new();
    let (now, client, key) = FIXTURE.get_or_init(turn_fixture);
    let (now, mut client, key) = (*now, client.clone(), key.clone());
    for k in [None, Some(&key)] {
        match parse(data, k) {
            Ok(Incoming::Data { peer, data: d }) => {
                let again = data_indication([0; 12], peer, &d);
                assert_eq!(
                    parse(&again, None),
                    Ok(Incoming::Data { peer, data: d }),
                    "Data indication does not round-trip"
                );
            }
            Ok(Incoming::ChannelData { channel, data: d }) => {
                let again = encode_channel_data(channel, &d, true).expect("a parsed channel");
                assert_eq!(
                    parse(&again, None),
                    Ok(Incoming::ChannelData { channel, data: d }),
                    "ChannelData does not round-trip"
                );
            }
            _ => {}
        }
    }
    // TCP framing: one-shot vs chunks of 1..=(sel % 32 + 1) bytes.
    let max = 64 + usize::from(sel) * 8;
    let run = |cut: usize| -> (Vec<Vec<u8>>, Option<FramingError>, usize) {
        let mut dec = TcpDecoder::new(max);
        let mut frames = Vec::new();
        for chunk in data.chunks(cut.max(1)) {
            let mut rest = chunk;
            while !rest.is_empty() {
                match dec.decode(&mut rest) {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => {}
                    Err(e) => return (frames, Some(e), dec.stats().peak_buffered),
                }
            }
        }
        (frames, None, dec.stats().peak_buffered)
    };
    let whole = run(data.len());
    let cut = run(usize::from(sel % 32) + 1);
    assert_eq!(whole.0, cut.0, "chunking changed the TCP frames");
    assert_eq!(whole.1, cut.1, "chunking changed the TCP framing error");
    assert!(
        whole.2.max(cut.2) <= max,
        "the TCP decoder held more than its limit"
    );
    // The client, allocated, with a CreatePermission in flight.
    let server = client.server();
    let mut input = data.to_vec();
    if sel & 1 == 1 && input.len() >= 20 {
        if let Some((_, pending)) = client.poll_transmit(now) {
            input[8..20].copy_from_slice(&pending[8..20]);
        }
    }
    client.handle_input(now, server, &input);
    for f in &whole.0 {
        client.handle_input(now, server, f);
    }
    let later = now + std::time::Duration::from_secs(u64::from(sel) * 10);
    client.handle_timeout(later);
    while client.poll_transmit(later).is_some() {}
    while client.poll_event().is_some() {}
}

/// A TURN client allocated through a canned 401 and success (built here with stun-rs, as
/// a server would), with a permission for 192.0.2.9 asked; and the long-term key.
#[allow(clippy::disallowed_methods)]
fn turn_fixture() -> (
    std::time::Instant,
    crate::nat::turn::Client,
    stun_rs::HMACKey,
) {
    use crate::nat::turn::message::Auth;
    use crate::nat::turn::{Client, Credentials, TurnConfig};
    use stun_rs::attributes::stun::{ErrorCode, MessageIntegrity, Nonce, Realm};
    use stun_rs::attributes::turn::{LifeTime, XorRelayedAddress};
    use stun_rs::{MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessageBuilder};
    let now = std::time::Instant::now();
    let server = std::net::SocketAddr::from(([192, 0, 2, 1], 3478));
    let creds = Credentials::Static {
        username: "u".into(),
        password: "p".into(),
    };
    let mut c = Client::new(
        server,
        creds,
        TurnConfig::default(),
        now,
        1_700_000_000,
        [3; 32],
    );
    let key = Auth::new("u", "p", "r", "n").expect("fixture").key;
    let answer = |req: &[u8], ok: bool| -> Vec<u8> {
        let (m, _) = MessageDecoderBuilder::default()
            .build()
            .decode(req)
            .expect("our request");
        let class = if ok {
            MessageClass::SuccessResponse
        } else {
            MessageClass::ErrorResponse
        };
        let mut b =
            StunMessageBuilder::new(m.method(), class).with_transaction_id(*m.transaction_id());
        b = if ok {
            b.with_attribute(XorRelayedAddress::from(std::net::SocketAddr::from((
                [192, 0, 2, 1],
                50_000,
            ))))
            .with_attribute(LifeTime::new(600))
            .with_attribute(MessageIntegrity::new(key.clone()))
        } else {
            let code = stun_rs::ErrorCode::new(401, "Unauthorized").expect("fixture");
            b.with_attribute(ErrorCode::new(code))
                .with_attribute(Realm::new("r").expect("fixture"))
                .with_attribute(Nonce::new("n").expect("fixture"))
        };
        let mut buf = vec![0; 512];
        let n = MessageEncoderBuilder::default()
            .build()
            .encode(&mut buf, &b.build())
            .expect("fixture");
        buf.truncate(n);
        buf
    };
    let (_, first) = c.poll_transmit(now).expect("Allocate");
    c.handle_input(now, server, &answer(&first, false));
    let (_, second) = c.poll_transmit(now).expect("authenticated Allocate");
    c.handle_input(now, server, &answer(&second, true));
    assert!(c.relayed().is_some(), "fixture allocated");
    c.create_permission(now, std::net::IpAddr::from([192, 0, 2, 9]))
        .expect("one permission");
    (now, c, key)
}

/// Bundled-relay input never panics (spec/07-relay.md §1): RELAY_GRANTED that decodes
/// re-encodes to the same bytes; a Send indication from the fixture's client parses, its
/// re-encoding parses the same, and the relay's table either drops it or forwards it to the
/// pair's other end under the sender's token; a Data indication parses the same way.
pub fn relay_datagram(data: &[u8]) {
    use crate::node::relay_server::Grant;
    use crate::transport::relay::{
        encode_indication, parse_indication, DATA_INDICATION, SEND_INDICATION,
    };
    if let Some(g) = Grant::decode(data) {
        assert_eq!(&g.encode()[..], data, "RELAY_GRANTED does not round-trip");
    }
    static FIXTURE: OnceLock<(std::time::Instant, RelayFixture)> = OnceLock::new();
    let (now, fx) = FIXTURE.get_or_init(|| {
        #[allow(clippy::disallowed_methods)] // any instant will do as the fixture's clock
        let now = std::time::Instant::now();
        (now, relay_fixture(now))
    });
    for kind in [SEND_INDICATION, DATA_INDICATION] {
        let Some((peer, payload)) = parse_indication(kind, data) else {
            continue;
        };
        let mut again = Vec::new();
        encode_indication(&mut again, kind, [0; 12], peer, payload).expect("parsed, so short");
        assert_eq!(
            parse_indication(kind, &again),
            Some((peer, payload)),
            "indication does not round-trip"
        );
        if kind == SEND_INDICATION {
            let mut table = fx.table.clone();
            if let Ok((to, from_token)) = table.forward(fx.a, peer, payload.len(), *now) {
                assert_eq!((to, from_token), (fx.b, fx.a_token), "forwarded astray");
            }
        }
    }
}

/// A relay with one pair: `a` (token `a_token`) and `b`.
#[derive(Debug)]
struct RelayFixture {
    table: crate::node::relay_server::RelayServer,
    a: std::net::SocketAddr,
    b: std::net::SocketAddr,
    a_token: std::net::SocketAddr,
}

fn relay_fixture(now: std::time::Instant) -> RelayFixture {
    use crate::crypto::NodeId;
    use crate::node::relay_server::{Ask, RelayServer, RelayServerLimits};
    use rand_chacha::rand_core::SeedableRng;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    let mut table = RelayServer::new(RelayServerLimits::default());
    let (a, b) = (
        std::net::SocketAddr::from(([192, 0, 2, 1], 4000)),
        std::net::SocketAddr::from(([192, 0, 2, 2], 4000)),
    );
    let (ia, ib) = (NodeId([1; 20]), NodeId([2; 20]));
    let _ = table.ask(ia, a, ib, now, &mut rng);
    let a_token = match table.ask(ib, b, ia, now, &mut rng) {
        Ok(Ask::Granted(g)) => g.peer_token,
        other => panic!("the fixture's pair: {other:?}"),
    };
    RelayFixture {
        table,
        a,
        b,
        a_token,
    }
}

/// The fixture relay's token of `b` (seeds for `relay_datagram`).
pub fn relay_fixture_b_token() -> std::net::SocketAddr {
    #[allow(clippy::disallowed_methods)] // any instant will do as the fixture's clock
    let now = std::time::Instant::now();
    let fx = relay_fixture(now);
    match fx.table.grant(
        crate::crypto::NodeId([1; 20]),
        crate::crypto::NodeId([2; 20]),
    ) {
        Some(g) => g.peer_token,
        None => panic!("the fixture's pair is up"),
    }
}

/// The fixed secret of the `app_stream` target (a fuzzer that forges the AEAD would be a
/// finding; its inputs reach the framing and the checks before it).
fn app_stream_secret() -> crate::crypto::stream::StreamSecret {
    crate::crypto::stream::StreamSecret(zeroize::Zeroizing::new([0x5A; 32]))
}

/// An application stream's reader (`session::stream::Opener`) fed arbitrary bytes never
/// panics and never yields more than it was fed. The first byte chooses the side (bit 0:
/// acceptor) and the chunking.
pub fn app_stream(data: &[u8]) {
    let (got, _) = app_stream_read(data);
    assert!(got <= data.len(), "read more than was fed");
}

/// What `app_stream` reads from `data`: the data bytes, and whether the stream ended with
/// its sealed end (after its STREAM_OPEN, for the acceptor).
pub fn app_stream_read(data: &[u8]) -> (usize, bool) {
    use crate::session::stream::{Opener, Read};
    let Some((&seed, data)) = data.split_first() else {
        return (0, false);
    };
    let acceptor = seed & 1 == 1;
    let Ok((_, recv)) = app_stream_secret().keys(4, !acceptor) else {
        return (0, false);
    };
    let mut o = Opener::new(recv, acceptor);
    let step = usize::from(seed >> 1) + 1;
    let (mut got, mut opened) = (0usize, !acceptor);
    for piece in data.chunks(step) {
        let mut input = Bytes::copy_from_slice(piece);
        loop {
            match o.read(&mut input) {
                Ok(Some(Read::Data(b))) => got += b.len(),
                Ok(Some(Read::Open(_))) => opened = true,
                Ok(Some(Read::End)) => {}
                Ok(None) => break,
                Err(_) => return (got, false),
            }
        }
    }
    (got, opened && o.finish().is_ok())
}

/// A valid input of `app_stream`: the opener's direction of a stream of kind 0x8002 with
/// two chunks and its end, read by the acceptor in 16-byte pieces.
pub fn app_stream_seed() -> Vec<u8> {
    use crate::session::stream::Sealer;
    let mut out = BytesMut::new();
    if let Ok((send, _)) = app_stream_secret().keys(4, true) {
        let mut s = Sealer::new(send);
        let _ = s.open(crate::crypto::MessageKind(0x8002), &mut out);
        let _ = s.data(b"first chunk", &mut out);
        let _ = s.data(&[7u8; 300], &mut out);
        let _ = s.finish(&mut out);
    }
    let mut v = vec![(15 << 1) | 1];
    v.extend_from_slice(&out);
    v
}

/// A file protocol message (`files::msg`) from arbitrary bytes: an error or a message that
/// re-encodes to bytes parsing to the same message; the held-leaf bitmap's parser and a
/// chunk's audit-path check on the same bytes never panic.
pub fn file_message(data: &[u8]) {
    use crate::files::{have::Have, msg::FileMsg, tree};
    if let Ok(m) = FileMsg::decode(data) {
        assert_eq!(FileMsg::decode(&m.encode()).as_ref(), Ok(&m), "round trip");
        if let FileMsg::Chunk { leaf, path, data } = &m {
            let n = leaf.saturating_add(u64::from(data.len() as u16));
            let _ = tree::verify(&[0; 32], n, *leaf, &tree::leaf_hash(data), path);
        }
    }
    let n = data.first().map_or(0, |b| u64::from(*b) * 37);
    let _ = Have::decode(data.get(1..).unwrap_or_default(), n);
}

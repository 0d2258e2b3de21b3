//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/*`) through the code the
//! fuzz targets run, so stable `cargo test` covers what the fuzzer found. Also holds the
//! generator of the seed corpora (`cargo test --test fuzz_corpus -- --ignored`).

use std::fs;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use dna_p2p::crypto::{kex, sealed, Identity, MessageId, Record, RecordKind};
use dna_p2p::fuzzing;
use dna_p2p::wire::{encode_frame, FrameLimits, MessageType};
use rand_core::OsRng;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn replay(target: &str, run: fn(&[u8])) {
    let dir = corpus_dir(target);
    let mut n = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} panicked", path.display());
        n += 1;
    }
    assert!(n > 0, "{target}: empty corpus at {}", dir.display());
    eprintln!("{target}: replayed {n} corpus files");
}

#[test]
fn frame_decode_corpus() {
    replay("frame_decode", fuzzing::frame_decode);
}

#[test]
fn frame_stream_corpus() {
    replay("frame_stream", fuzzing::frame_stream);
}

#[test]
fn app_stream_corpus() {
    replay("app_stream", fuzzing::app_stream);
}

/// The seed is a whole valid stream: the acceptor reads its open, both chunks and its end.
#[test]
fn app_stream_seed_reads_back() {
    let seed = fuzzing::app_stream_seed();
    let on_disk = fs::read(corpus_dir("app_stream").join("valid-stream")).unwrap();
    assert_eq!(
        seed.len(),
        on_disk.len(),
        "the committed seed is the generator's"
    );
    assert_eq!(fuzzing::app_stream_read(&seed), (311, true));
    // One byte changed anywhere after the selector, and the stream no longer reads whole.
    for at in [1, 10, 40, seed.len() - 1] {
        let mut bad = seed.clone();
        bad[at] ^= 0x40;
        assert_ne!(
            fuzzing::app_stream_read(&bad),
            (311, true),
            "flipped byte {at}"
        );
    }
}

/// Writes the `app_stream` seed (deterministic: a fixed secret).
#[test]
#[ignore]
fn write_app_stream_seed() {
    write("app_stream", "valid-stream", &fuzzing::app_stream_seed());
}

#[test]
fn file_message_corpus() {
    replay("file_message", fuzzing::file_message);
}

/// Writes the `file_message` seeds: one message of each type.
#[test]
#[ignore]
fn write_file_message_seeds() {
    use dna_p2p::files::msg::{FileMsg, Reason};
    use dna_p2p::files::tree::Tree;
    let id = [3u8; 16];
    let data = vec![9u8; 40_000];
    let tree = Tree::of(&data);
    let seeds = [
        (
            "meta",
            FileMsg::Meta {
                id,
                size: 40_000,
                root: tree.root(),
                name: "notes.txt".into(),
            },
        ),
        ("accept", FileMsg::Accept { id }),
        (
            "reject",
            FileMsg::Reject {
                id,
                reason: Reason::TooLarge,
            },
        ),
        (
            "cancel",
            FileMsg::Cancel {
                id,
                reason: Reason::Changed,
            },
        ),
        (
            "range",
            FileMsg::Range {
                id,
                ranges: vec![(0, 1), (2, 3)],
            },
        ),
        (
            "chunk",
            FileMsg::Chunk {
                leaf: 2,
                path: tree.path(2),
                data: data[32_768..].to_vec().into(),
            },
        ),
        ("done", FileMsg::Done { id }),
    ];
    for (name, m) in seeds {
        write("file_message", name, &m.encode());
    }
}

#[test]
fn envelope_open_corpus() {
    replay("envelope_open", fuzzing::envelope_open);
}

#[test]
fn record_verify_corpus() {
    replay("record_verify", fuzzing::record_verify);
}

#[test]
fn signal_message_corpus() {
    replay("signal_message", fuzzing::signal_message);
}

#[test]
fn stun_message_corpus() {
    replay("stun_message", fuzzing::stun_message);
}

#[test]
fn dht_message_corpus() {
    replay("dht_message", fuzzing::dht_message);
}

#[test]
fn turn_message_corpus() {
    replay("turn_message", fuzzing::turn_message);
}

#[test]
fn relay_datagram_corpus() {
    replay("relay_datagram", fuzzing::relay_datagram);
}

/// Seeds for `relay_datagram` (spec/07-relay.md §1): a grant, a Send indication from the
/// fixture's client to its peer's token (forwarded), one to another token (dropped), a
/// Data indication. `cargo test --test fuzz_corpus -- --ignored write_relay_seed_corpus`.
#[test]
#[ignore = "writes the seed corpus; run on demand"]
fn write_relay_seed_corpus() {
    use dna_p2p::node::relay_server::Grant;
    use dna_p2p::transport::relay::{encode_indication, DATA_INDICATION, SEND_INDICATION};
    let grant = Grant {
        peer_token: "240.1.2.3:4".parse().unwrap(),
        own_token: "241.5.6.7:8".parse().unwrap(),
        lifetime: std::time::Duration::from_secs(3600),
    };
    write("relay_datagram", "grant", &grant.encode());
    let b = fuzzing::relay_fixture_b_token();
    for (name, kind, to) in [
        ("send-to-peer", SEND_INDICATION, b),
        (
            "send-astray",
            SEND_INDICATION,
            "240.9.9.9:9".parse().unwrap(),
        ),
        ("data", DATA_INDICATION, b),
    ] {
        let mut v = Vec::new();
        encode_indication(&mut v, kind, [3; 12], to, &[0x40; 64]).unwrap();
        write("relay_datagram", name, &v);
    }
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = corpus_dir(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), data).unwrap();
}

fn frame(t: MessageType, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(t, seq, payload, &FrameLimits::default(), &mut out).unwrap();
    out.to_vec()
}

/// Writes the seed corpora. Run once; the files are committed.
#[test]
#[ignore]
fn write_seed_corpus() {
    // Frames: the spec vectors plus a few more shapes.
    let spec =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/01-wire.md")).unwrap();
    let mut lines = spec.lines();
    while let Some(line) = lines.next() {
        if let Some(name) = line.strip_prefix("vector: ") {
            let hex = lines.next().unwrap().strip_prefix("hex: ").unwrap();
            let bytes = hex::decode(hex).unwrap();
            write("frame_decode", &format!("spec-{name}"), &bytes);
            let mut s = vec![7u8];
            s.extend_from_slice(&bytes);
            write("frame_stream", &format!("spec-{name}"), &s);
        }
    }
    let mut stream = vec![13u8];
    for (i, t) in MessageType::ALL.iter().enumerate() {
        stream.extend(frame(*t, i as u32, &vec![i as u8; i * 37]));
    }
    write("frame_stream", "all-types", &stream);
    write(
        "frame_decode",
        "data-4k",
        &frame(MessageType::Data, 9, &[0xAB; 4096]),
    );
    write(
        "frame_decode",
        "data-4k-plus-one",
        &frame(MessageType::Data, 9, &[0xAB; 4097]),
    );

    // Envelopes and handshake messages.
    let alice = Identity::generate(&mut OsRng);
    let bob = Identity::generate(&mut OsRng);
    let (i, init) = kex::Initiator::start(&alice, bob.fingerprint(), &mut OsRng);
    let (r, accept) = kex::Responder::on_init(&bob, &init, None, &mut OsRng).unwrap();
    let (mut a, finish) = i.on_accept(&alice, &accept).unwrap();
    r.on_finish(&finish).unwrap();
    write("envelope_open", "kex-init", &init);
    write("envelope_open", "kex-accept", &accept);
    write("envelope_open", "kex-finish", &finish);
    let mut env = BytesMut::new();
    a.seal(
        MessageId([5; 16]),
        1,
        dna_p2p::crypto::MessageKind::TEXT,
        b"session body",
        &mut env,
    )
    .unwrap();
    write("envelope_open", "session-form", &env);
    let s = sealed::seal(
        &alice,
        bob.fingerprint(),
        bob.kem_public(),
        MessageId([6; 16]),
        2,
        dna_p2p::crypto::MessageKind::TEXT,
        b"sealed body",
        &mut OsRng,
    )
    .unwrap();
    write("envelope_open", "sealed-form", &s);

    // Records of each kind (fuzzing::record_verify checks them at a fixed time).
    const NOW: u64 = 1_800_000_000;
    let records = [
        (
            "presence",
            Record::sign(
                &alice,
                RecordKind::Presence,
                1,
                NOW + 600,
                b"127.0.0.1:4567".to_vec(),
                NOW - 10,
            ),
        ),
        (
            "name",
            Record::sign(
                &alice,
                RecordKind::NameClaim,
                1,
                NOW + 600,
                dna_p2p::crypto::name::NameClaim {
                    claimed_at: NOW - 10,
                    name: "alice".into(),
                }
                .encode(),
                NOW - 10,
            ),
        ),
        (
            "kem",
            Record::sign(
                &alice,
                RecordKind::KemKey,
                1,
                NOW + 600,
                alice.kem_public().to_bytes(),
                NOW - 10,
            ),
        ),
        (
            "mailbox",
            Record::sign(
                &alice,
                RecordKind::MailboxItem,
                1,
                NOW + 600,
                s.clone(),
                NOW - 10,
            ),
        ),
    ];
    for (name, r) in records {
        write("record_verify", name, &r.unwrap().encode());
    }

    // DHT messages: two bytes of type selector (0..8 → 0x0100..0x0107), then the payload.
    use dna_p2p::dht::{Body, Contact, DhtMessage, StoreStatus};
    let contact = |n: u8| Contact {
        id: dna_p2p::crypto::NodeId([n; 20]),
        addr: std::net::SocketAddr::from(([10, 0, 0, n], 4567)),
    };
    let presence = Record::sign(
        &alice,
        RecordKind::Presence,
        1,
        NOW + 600,
        b"x".to_vec(),
        NOW - 10,
    )
    .unwrap()
    .encode();
    let messages = [
        (
            "find-node",
            Body::FindNode {
                target: dna_p2p::crypto::NodeId([3; 20]),
            },
        ),
        (
            "nodes",
            Body::Nodes {
                nodes: (1..=20).map(contact).collect(),
            },
        ),
        (
            "find-value",
            Body::FindValue {
                key: dna_p2p::crypto::NodeId([4; 20]),
            },
        ),
        (
            "value",
            Body::Value {
                records: vec![presence.clone()],
                nodes: vec![contact(9)],
            },
        ),
        ("store", Body::Store { record: presence }),
        (
            "stored",
            Body::Stored {
                status: StoreStatus::Stale,
            },
        ),
        ("ping", Body::Ping),
        ("pong", Body::Pong),
    ];
    // STUN: a Binding request and the responder's answer.
    let server: std::net::SocketAddr = "192.0.2.1:3478".parse().unwrap();
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    let mut b = dna_p2p::nat::stun::Binding::new(server, [5; 12], now);
    let request = b.poll_transmit(now).unwrap().1.to_vec();
    write("stun_message", "binding-request", &request);
    write(
        "stun_message",
        "binding-answer",
        &dna_p2p::nat::stun::respond(server, &request).unwrap(),
    );

    for (name, body) in messages {
        let m = DhtMessage {
            id: 42,
            flags: 1,
            body,
        };
        let sel = m.msg_type().to_u16() - 0x0100;
        let mut data = sel.to_be_bytes().to_vec();
        data.extend_from_slice(&m.encode());
        write("dht_message", name, &data);
    }
}

/// Seeds for the NAT parsers (spec/05): an authenticated connectivity check and its answer,
/// a presence value, a signed CONNECT offer. `cargo test --test fuzz_corpus -- --ignored`.
#[test]
#[ignore = "writes the seed corpus; run on demand"]
fn write_nat_seed_corpus() {
    use dna_p2p::nat::candidate::{Candidate, CandidateKind, PresenceInfo};
    use dna_p2p::nat::signal::{Signal, SignalKind};
    use dna_p2p::nat::stun::{respond_authenticated, Binding, Credentials, Options};
    let peer: std::net::SocketAddr = "192.0.2.1:3478".parse().unwrap();
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    let creds = Credentials {
        username: "aaaa:bbbb".into(),
        password: "fuzz-password".into(),
    };
    let mut b = Binding::with_options(
        peer,
        [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
        Options {
            credentials: Some(creds),
            ..Options::default()
        },
        now,
    );
    let check = b.poll_transmit(now).unwrap().1.to_vec();
    write("stun_message", "check-request", &check);
    write(
        "stun_message",
        "check-answer",
        &respond_authenticated(peer, &check, "fuzz-password").unwrap(),
    );
    let cands = vec![
        Candidate::new(
            CandidateKind::Host,
            "10.1.0.2:40000".parse().unwrap(),
            65535,
        ),
        Candidate::new(
            CandidateKind::ServerReflexive,
            "198.18.0.11:40000".parse().unwrap(),
            65535,
        ),
    ];
    let id = Identity::generate(&mut OsRng);
    let info = PresenceInfo {
        reachable: false,
        nat: "port-restricted".into(),
        candidates: cands.clone(),
        rendezvous: vec![("198.18.0.2:4000".parse().unwrap(), id.fingerprint())],
    };
    write("signal_message", "presence", &info.encode());
    let offer = Signal {
        nat: dna_p2p::nat::predict::Behaviour::UNKNOWN,
        kind: SignalKind::Offer,
        from: id.public_key().clone(),
        to: id.fingerprint(),
        session: [1; 8],
        time_ms: 1_800_000_000_000,
        ufrag: "abcd".into(),
        pwd: "0123456789abcdef0123456789abcdef".into(),
        candidates: cands,
    };
    write("signal_message", "offer", &offer.sign(&id));
}

/// Seeds for `stun_message`'s RFC 5780 path (spec/05-nat.md §2.1): a discovery request with
/// CHANGE-REQUEST(ip, port) and the RFC 5780 server's answer to it.
/// `cargo test --test fuzz_corpus -- --ignored write_rfc5780_seed_corpus`.
#[test]
#[ignore = "writes the seed corpus; run on demand"]
fn write_rfc5780_seed_corpus() {
    use dna_p2p::nat::stun::{
        respond_rfc5780, Binding, Change, Options, ServerAddresses, ServerSocket, Timers,
    };
    let primary: std::net::SocketAddr = "198.18.0.2:4000".parse().unwrap();
    let server = ServerAddresses::new(primary, "198.18.0.3".parse().unwrap(), 4001).unwrap();
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    let opts = Options {
        timers: Timers::DISCOVERY,
        change: Change::IpAndPort,
        credentials: None,
    };
    let mut b = Binding::with_options(primary, [6; 12], opts, now);
    let request = b.poll_transmit(now).unwrap().1.to_vec();
    write("stun_message", "change-request", &request);
    let (_, answer) = respond_rfc5780(
        "203.0.113.9:5000".parse().unwrap(),
        &request,
        ServerSocket::PRIMARY,
        &server,
    )
    .unwrap();
    write("stun_message", "rfc5780-answer", &answer);
}

/// Seeds for `turn_message` (spec/07-relay.md §2): each starts with the selector byte (odd:
/// the client's pending transaction ID is spliced in). A Data indication, ChannelData, a
/// TCP stream of both, our own requests, and a 438 / 437 / success answer shape.
/// `cargo test --test fuzz_corpus -- --ignored write_turn_seed_corpus`.
#[test]
#[ignore = "writes the seed corpus; run on demand"]
fn write_turn_seed_corpus() {
    use dna_p2p::nat::turn::message::{
        data_indication, encode_channel_data, encode_request, Auth, Request,
    };
    let peer: std::net::SocketAddr = "192.0.2.9:4000".parse().unwrap();
    let with = |sel: u8, bytes: &[u8]| [&[sel][..], bytes].concat();
    let data = data_indication([1; 12], peer, b"a QUIC packet, say");
    let chan = encode_channel_data(0x4000, b"abcde", true).unwrap();
    write("turn_message", "data-indication", &with(0, &data));
    write("turn_message", "channel-data", &with(0, &chan));
    write(
        "turn_message",
        "tcp-stream",
        &with(6, &[data.clone(), chan, data].concat()),
    );
    let auth = Auth::new("u", "p", "r", "n").unwrap();
    for (name, req) in [
        ("allocate", Request::Allocate { lifetime: 600 }),
        ("refresh-0", Request::Refresh { lifetime: 0 }),
        ("permission", Request::CreatePermission { peer }),
    ] {
        write(
            "turn_message",
            name,
            &with(1, &encode_request([2; 12], &req, Some(&auth))),
        );
    }
    // Answer shapes: a CreatePermission response header (method 0x0008) with ERROR-CODE
    // 438 + REALM + NONCE, and a bare success; the odd selector gives them the live ID.
    let mut err = vec![0x01, 0x18, 0x00, 0x1c, 0x21, 0x12, 0xA4, 0x42];
    err.extend_from_slice(&[0; 12]);
    err.extend_from_slice(&[0x00, 0x09, 0x00, 0x08, 0, 0, 4, 38, b'S', b't', b'a', b'l']);
    err.extend_from_slice(&[0x00, 0x14, 0x00, 0x01, b'r', 0, 0, 0]);
    err.extend_from_slice(&[0x00, 0x15, 0x00, 0x02, b'n', b'2', 0, 0]);
    write("turn_message", "stale-nonce", &with(1, &err));
    let mut ok = vec![0x01, 0x08, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    ok.extend_from_slice(&[0; 12]);
    write("turn_message", "bare-success", &with(1, &ok));
}

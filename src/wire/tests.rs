//! Unit and property tests of the frame codec. Each `FrameError` variant has its own test.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn limits() -> FrameLimits {
    FrameLimits::default()
}

fn frame_bytes(t: MessageType, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(t, seq, payload, &limits(), &mut out).unwrap();
    out.to_vec()
}

/// A frame with the given raw header fields, CRC computed unless given.
fn raw_frame(
    magic: u32,
    version: u16,
    t: u16,
    len: u32,
    reserved: [u8; 12],
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&magic.to_be_bytes());
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(&t.to_be_bytes());
    v.extend_from_slice(&7u32.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    v.extend_from_slice(&reserved);
    v.extend_from_slice(payload);
    v
}

fn decode_err(bytes: &[u8]) -> FrameError {
    decode_frame(bytes, &limits()).unwrap_err()
}

#[test]
fn error_truncated_header() {
    let f = frame_bytes(MessageType::Ping, 0, b"");
    assert_eq!(
        decode_err(&f[..31]),
        FrameError::Truncated {
            needed: 32,
            available: 31
        }
    );
    assert_eq!(
        decode_err(&[]),
        FrameError::Truncated {
            needed: 32,
            available: 0
        }
    );
}

#[test]
fn error_truncated_payload() {
    let f = frame_bytes(MessageType::Data, 1, b"hello");
    assert_eq!(
        decode_err(&f[..35]),
        FrameError::Truncated {
            needed: 37,
            available: 35
        }
    );
}

#[test]
fn error_bad_magic() {
    let f = raw_frame(0x444E_4121, VERSION, 1, 0, [0; 12], b"");
    assert_eq!(decode_err(&f), FrameError::BadMagic { found: 0x444E_4121 });
}

#[test]
fn error_unsupported_version() {
    let f = raw_frame(MAGIC, 0x0200, 1, 0, [0; 12], b"");
    assert_eq!(
        decode_err(&f),
        FrameError::UnsupportedVersion { found: 0x0200 }
    );
    let f = raw_frame(MAGIC, 0x0101, 1, 0, [0; 12], b"");
    assert_eq!(
        decode_err(&f),
        FrameError::UnsupportedVersion { found: 0x0101 }
    );
}

#[test]
fn error_unknown_type() {
    for t in [0u16, 0x000C, 0x0108, 0x0500, 0xFFFF] {
        let f = raw_frame(MAGIC, VERSION, t, 0, [0; 12], b"");
        assert_eq!(decode_err(&f), FrameError::UnknownType { found: t });
    }
}

#[test]
fn error_payload_too_long_is_checked_before_the_payload_arrives() {
    // Only the header: the length error must come out, not Truncated.
    let f = raw_frame(MAGIC, VERSION, 1, DEFAULT_MAX_PAYLOAD + 1, [0; 12], b"");
    assert_eq!(
        decode_err(&f),
        FrameError::PayloadTooLong {
            length: DEFAULT_MAX_PAYLOAD + 1,
            max: DEFAULT_MAX_PAYLOAD
        }
    );
    let f = raw_frame(MAGIC, VERSION, 1, u32::MAX, [0; 12], b"");
    let mut dec = FrameDecoder::new(limits());
    assert!(matches!(
        dec.feed(&mut &f[..]),
        Err(FrameError::PayloadTooLong {
            length: u32::MAX,
            ..
        })
    ));
    assert_eq!(dec.buffered(), 0);
    // A smaller configured limit applies.
    let small = FrameLimits { max_payload: 4 };
    let f = frame_bytes(MessageType::Data, 1, b"hello");
    assert_eq!(
        decode_frame(&f, &small).unwrap_err(),
        FrameError::PayloadTooLong { length: 5, max: 4 }
    );
}

#[test]
fn error_crc_mismatch() {
    let mut f = frame_bytes(MessageType::Data, 1, b"hello");
    let last = f.len() - 1;
    f[last] ^= 0x01;
    assert_eq!(
        decode_err(&f),
        FrameError::CrcMismatch {
            expected: 0x3610_a686,
            computed: crc32fast::hash(b"helln")
        }
    );
}

#[test]
fn error_reserved_not_zero() {
    for i in 0..12 {
        let mut reserved = [0u8; 12];
        reserved[i] = 0x80;
        let f = raw_frame(MAGIC, VERSION, 3, 0, reserved, b"");
        assert_eq!(
            decode_err(&f),
            FrameError::ReservedNotZero {
                offset: 20 + i,
                value: 0x80
            }
        );
    }
}

#[test]
fn error_trailing_bytes() {
    let mut f = frame_bytes(MessageType::Ping, 0, b"");
    f.extend_from_slice(b"xyz");
    assert_eq!(
        decode_exact(&f, &limits()).unwrap_err(),
        FrameError::TrailingBytes { count: 3 }
    );
    assert_eq!(decode_frame(&f, &limits()).unwrap().1, 32);
}

#[test]
fn encode_refuses_oversized_payload() {
    let small = FrameLimits { max_payload: 4 };
    let mut out = BytesMut::new();
    assert_eq!(
        encode_frame(MessageType::Data, 0, b"hello", &small, &mut out),
        Err(EncodeError::PayloadTooLong { length: 5, max: 4 })
    );
    assert!(out.is_empty());
}

#[test]
fn stream_decoder_reports_truncation_at_end_of_stream() {
    let f = frame_bytes(MessageType::Data, 1, b"hello");
    let mut dec = FrameDecoder::new(limits());
    assert_eq!(dec.feed(&mut &f[..10]), Ok(None));
    assert_eq!(
        dec.finish(),
        Err(FrameError::Truncated {
            needed: 32,
            available: 10
        })
    );
    assert_eq!(dec.feed(&mut &f[10..35]), Ok(None));
    assert_eq!(
        dec.finish(),
        Err(FrameError::Truncated {
            needed: 37,
            available: 35
        })
    );
    let frame = dec.feed(&mut &f[35..]).unwrap().unwrap();
    assert_eq!(&frame.payload[..], b"hello");
    assert_eq!(dec.finish(), Ok(()));
}

#[test]
fn stream_decoder_stays_failed_after_an_error() {
    let mut bad = frame_bytes(MessageType::Data, 1, b"hello");
    bad[0] = b'X';
    let good = frame_bytes(MessageType::Ping, 2, b"");
    let mut dec = FrameDecoder::new(limits());
    let err = dec.feed(&mut &bad[..]).unwrap_err();
    assert!(matches!(err, FrameError::BadMagic { .. }));
    assert_eq!(dec.feed(&mut &good[..]), Err(err.clone()));
    assert_eq!(dec.finish(), Err(err));
}

#[test]
fn stream_decoder_payload_is_zero_copy_when_whole() {
    let mut all = BytesMut::new();
    for seq in 0..3 {
        encode_frame(
            MessageType::Data,
            seq,
            &[seq as u8; 100],
            &limits(),
            &mut all,
        )
        .unwrap();
    }
    let chunk: Bytes = all.freeze();
    let base = chunk.as_ptr() as usize;
    let mut input = chunk.clone();
    let mut dec = FrameDecoder::new(limits());
    for seq in 0..3u32 {
        let frame = dec.feed(&mut input).unwrap().unwrap();
        assert_eq!(frame.header.seq, seq);
        let offset = frame.payload.as_ptr() as usize - base;
        assert_eq!(
            offset,
            seq as usize * 132 + 32,
            "payload must point into the chunk"
        );
    }
    assert!(input.is_empty());
}

/// The vectors of spec/01-wire.md §6, read from the spec itself.
#[test]
fn spec_vectors() {
    let spec = include_str!("../../spec/01-wire.md");
    let mut checked = 0;
    let mut lines = spec.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("vector: ") else {
            continue;
        };
        let hex_line = lines
            .next()
            .and_then(|l| l.strip_prefix("hex: "))
            .expect(name);
        let expect = lines
            .next()
            .and_then(|l| l.strip_prefix("expect: "))
            .expect(name);
        let bytes = hex::decode(hex_line).expect(name);
        let got = match decode_exact(&bytes, &limits()) {
            Ok(f) => format!(
                "type={} seq={} length={} crc=0x{:08x}",
                f.header.msg_type, f.header.seq, f.header.payload_len, f.header.crc32
            ),
            Err(e) => format!("error={}", error_name(&e)),
        };
        assert_eq!(got, expect, "vector {name}");
        if let Ok(f) = decode_exact(&bytes, &limits()) {
            let mut again = BytesMut::new();
            f.encode(&mut again);
            assert_eq!(&again[..], &bytes[..], "vector {name} re-encodes");
        }
        checked += 1;
    }
    assert!(
        checked >= 10,
        "spec/01-wire.md lost its vectors ({checked} found)"
    );
}

/// The variant name, as the spec and the CLI print it.
pub(crate) fn error_name(e: &FrameError) -> String {
    let debug = format!("{e:?}");
    debug
        .split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn payload_memory_grows_with_arrived_bytes_not_the_declared_length() {
    // A header declaring 1 MiB, then the payload in 1000-byte pieces.
    let payload = vec![0xA5u8; 1 << 20];
    let f = frame_bytes(MessageType::Data, 1, &payload);
    let mut dec = FrameDecoder::new(limits());
    let mut input = &f[..HEADER_LEN + 10];
    assert_eq!(dec.feed(&mut input), Ok(None));
    assert_eq!(dec.allocated(), 10, "10 bytes arrived, 10 allocated");
    let mut at = HEADER_LEN + 10;
    let mut frame = None;
    while at < f.len() {
        let mut chunk = &f[at..(at + 1000).min(f.len())];
        at += chunk.len();
        if let Some(fr) = dec.feed(&mut chunk).unwrap() {
            frame = Some(fr);
            break;
        }
        let arrived = dec.buffered() - HEADER_LEN;
        assert!(
            dec.allocated() < 2 * arrived,
            "{} for {arrived}",
            dec.allocated()
        );
        assert!(dec.allocated() <= payload.len());
    }
    assert_eq!(frame.unwrap().payload, payload);
    assert_eq!(dec.allocated(), 0);
}

#[test]
fn new_limits_apply_from_the_next_header() {
    let small = FrameLimits { max_payload: 8 };
    let mut dec = FrameDecoder::new(small);
    let nine = frame_bytes(MessageType::Data, 1, &[1; 9]);
    let mut two = frame_bytes(MessageType::Ping, 0, &[0; 8]);
    two.extend_from_slice(&nine);
    // First frame within the small limit; then the limit rises and the second is admitted.
    let mut input = &two[..];
    assert!(dec.feed(&mut input).unwrap().is_some());
    dec.set_limits(limits());
    assert_eq!(dec.limits(), limits());
    assert_eq!(dec.feed(&mut input).unwrap().unwrap().payload.len(), 9);
    // The same two frames under the small limit throughout: refused from the header.
    let mut dec = FrameDecoder::new(small);
    assert_eq!(
        dec.feed_all(&two[..]),
        Err(FrameError::PayloadTooLong { length: 9, max: 8 })
    );
}

fn any_type() -> impl Strategy<Value = MessageType> {
    prop::sample::select(MessageType::ALL.to_vec())
}

proptest! {
    #[test]
    fn round_trip(t in any_type(), seq in any::<u32>(), payload in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut out = BytesMut::new();
        let header = encode_frame(t, seq, &payload, &limits(), &mut out).unwrap();
        prop_assert_eq!(out.len(), HEADER_LEN + payload.len());
        prop_assert_eq!(header.frame_len(), out.len());
        prop_assert_eq!(header.payload_len as usize, payload.len());
        let (frame, used) = decode_frame(&out, &limits()).unwrap();
        prop_assert_eq!(used, out.len());
        prop_assert_eq!(frame.header, header);
        prop_assert_eq!(frame.payload, &payload[..]);
    }

    #[test]
    fn any_chunking_gives_the_same_frames(
        frames in prop::collection::vec((any_type(), any::<u32>(), prop::collection::vec(any::<u8>(), 0..300)), 0..8),
        cuts in prop::collection::vec(1usize..64, 0..64),
    ) {
        let mut all = BytesMut::new();
        for (t, seq, p) in &frames {
            encode_frame(*t, *seq, p, &limits(), &mut all).unwrap();
        }
        let all = all.freeze();
        let mut dec = FrameDecoder::new(limits());
        let mut got = Vec::new();
        let mut rest = all.clone();
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cut.next().unwrap_or(&usize::MAX)).min(rest.len());
            let mut chunk = rest.split_to(n);
            while !chunk.is_empty() {
                if let Some(f) = dec.feed(&mut chunk).unwrap() {
                    got.push(f);
                }
            }
        }
        prop_assert_eq!(dec.finish(), Ok(()));
        prop_assert_eq!(got.len(), frames.len());
        for (f, (t, seq, p)) in got.iter().zip(&frames) {
            prop_assert_eq!(f.header.msg_type, *t);
            prop_assert_eq!(f.header.seq, *seq);
            prop_assert_eq!(&f.payload[..], &p[..]);
        }
    }

    #[test]
    fn a_partial_payload_never_holds_twice_what_arrived(
        len in 1usize..20_000,
        cuts in prop::collection::vec(1usize..3000, 1..64),
    ) {
        let f = frame_bytes(MessageType::Data, 1, &vec![3u8; len]);
        let mut dec = FrameDecoder::new(limits());
        let mut rest = &f[..];
        let mut cut = cuts.iter().cycle();
        let mut done = false;
        while !rest.is_empty() {
            let n = (*cut.next().unwrap_or(&1)).min(rest.len());
            let (mut chunk, tail) = rest.split_at(n);
            rest = tail;
            while !chunk.is_empty() {
                done |= dec.feed(&mut chunk).unwrap().is_some();
                let arrived = dec.buffered().saturating_sub(HEADER_LEN);
                prop_assert!(dec.allocated() <= len);
                prop_assert!(dec.allocated() <= 2 * arrived);
            }
        }
        prop_assert!(done);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_frame(&bytes, &limits());
        let mut dec = FrameDecoder::new(limits());
        let _ = dec.feed_all(&bytes[..]);
    }
}

#[test]
fn a_payload_whose_rest_is_in_hand_is_allocated_once() {
    let payload = vec![0x5Au8; 3000];
    let f = frame_bytes(MessageType::Data, 1, &payload);
    let cut = HEADER_LEN + 10;
    // The caller holds the rest (the next segment of the same read): one allocation of the
    // payload's length, which is what arrived.
    let mut dec = FrameDecoder::new(limits());
    let mut first = &f[..cut];
    assert_eq!(dec.decode_ahead(&mut first, f.len() - cut), Ok(None));
    assert_eq!(dec.allocated(), payload.len());
    let mut rest = &f[cut..];
    match dec.decode_ahead(&mut rest, 0) {
        Ok(Some(Decoded::Owned(fr))) => assert_eq!(fr.payload, payload),
        other => panic!("{other:?}"),
    }
    // One byte short of the whole payload in hand: growth follows arrived bytes as before.
    let mut dec = FrameDecoder::new(limits());
    let mut first = &f[..cut];
    assert_eq!(dec.decode_ahead(&mut first, f.len() - cut - 1), Ok(None));
    println!("allocated {} for 10 arrived bytes", dec.allocated());
    assert_eq!(dec.allocated(), 10);
}

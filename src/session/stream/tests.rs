//! Application stream framing: both directions round trip in any split; a reordered,
//! forged, foreign or truncated stream is refused; arbitrary bytes never panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use zeroize::Zeroizing;

use super::*;
use crate::crypto::stream::StreamSecret;

fn pair(id: u64) -> ((Sealer, Opener), (Sealer, Opener)) {
    let s = StreamSecret(Zeroizing::new([9; 32]));
    let (os, or) = s.keys(id, true).unwrap();
    let (as_, ar) = s.keys(id, false).unwrap();
    (
        (Sealer::new(os), Opener::new(or, false)),
        (Sealer::new(as_), Opener::new(ar, true)),
    )
}

/// Everything `o` reads from `bytes` fed in pieces of `step`.
fn read_all(o: &mut Opener, bytes: &[u8], step: usize) -> Result<Vec<Read>, StreamError> {
    let mut out = Vec::new();
    for piece in bytes.chunks(step.max(1)) {
        let mut input = Bytes::copy_from_slice(piece);
        while let Some(r) = o.read(&mut input)? {
            out.push(r);
        }
    }
    Ok(out)
}

#[test]
fn both_directions_round_trip_and_end() {
    let ((mut os, mut or), (mut as_, mut ar)) = pair(4);
    let mut wire = BytesMut::new();
    os.open(MessageKind(0x8001), &mut wire).unwrap();
    let big = vec![7u8; MAX_CHUNK * 2 + 5];
    os.data(&big, &mut wire).unwrap();
    os.finish(&mut wire).unwrap();
    assert_eq!(os.data(b"late", &mut wire), Err(StreamError::Ended));
    let got = read_all(&mut ar, &wire, 1000).unwrap();
    assert_eq!(got[0], Read::Open(MessageKind(0x8001)));
    let data: Vec<u8> = got[1..got.len() - 1]
        .iter()
        .flat_map(|r| match r {
            Read::Data(b) => b.to_vec(),
            _ => panic!("{r:?}"),
        })
        .collect();
    assert_eq!(data, big);
    assert_eq!(got.len(), 5, "open, three chunks, end");
    assert_eq!(got.last(), Some(&Read::End));
    assert!(ar.finish().is_ok());
    let mut back = BytesMut::new();
    as_.data(b"ok", &mut back).unwrap();
    as_.finish(&mut back).unwrap();
    let got = read_all(&mut or, &back, 3).unwrap();
    assert_eq!(got, vec![Read::Data(Bytes::from_static(b"ok")), Read::End]);
}

#[test]
fn reordered_forged_foreign_and_truncated_streams_are_refused() {
    let ((mut os, _), (_, _)) = pair(4);
    let mut first = BytesMut::new();
    os.open(MessageKind(1), &mut first).unwrap();
    let mut second = BytesMut::new();
    os.data(b"one", &mut second).unwrap();
    // Data before the open.
    let (_, (_, mut ar)) = pair(4);
    assert_eq!(
        read_all(&mut ar, &second, 64),
        Err(StreamError::Unexpected(MessageType::StreamData))
    );
    // A flipped byte in the sealed chunk (CRC recomputed, as an attacker would).
    let (_, (_, mut ar)) = pair(4);
    let mut forged = BytesMut::new();
    let mut payload = second[32..].to_vec();
    payload[0] ^= 1;
    encode_frame(MessageType::StreamData, 1, &payload, &limits(), &mut forged).unwrap();
    read_all(&mut ar, &first, 64).unwrap();
    assert_eq!(read_all(&mut ar, &forged, 64), Err(StreamError::Forged));
    // The same bytes on another stream.
    let (_, (_, mut other)) = pair(8);
    assert_eq!(read_all(&mut other, &first, 64), Err(StreamError::Forged));
    // A chunk replayed.
    let (_, (_, mut ar)) = pair(4);
    read_all(&mut ar, &first, 64).unwrap();
    read_all(&mut ar, &second, 64).unwrap();
    assert_eq!(
        read_all(&mut ar, &second, 64),
        Err(StreamError::OutOfOrder {
            expected: 2,
            found: 1
        })
    );
    // Cut before the sealed end.
    assert_eq!(ar.finish(), Err(StreamError::Truncated));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096), step in 1usize..512, acceptor: bool) {
        let s = StreamSecret(Zeroizing::new([1; 32]));
        let (_, r) = s.keys(0, !acceptor).unwrap();
        let mut o = Opener::new(r, acceptor);
        let _ = read_all(&mut o, &bytes, step);
        let _ = o.finish();
    }
}

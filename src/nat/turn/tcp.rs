//! TURN over TCP (RFC 8656 §3.1; spec/07-relay.md §2.7): on a stream to the server, STUN
//! messages and ChannelData follow each other back to back with no other framing. A STUN
//! message says its length in its header (and is always a multiple of 4 bytes); ChannelData
//! says the length of its data, and over TCP is padded to a multiple of 4 (§12.5).
//!
//! [`TcpDecoder`] takes bytes as they arrive and yields whole messages. It never holds more
//! than one frame of at most `max_frame` bytes: a longer frame (a peer's oversized datagram
//! in a Data indication) is skipped as it streams past and counted, and the stream goes on.
//! Bytes that cannot start a frame (first two bits `1x`, a reserved channel number, a STUN
//! header without the magic cookie or with a length not a multiple of 4) are a framing
//! error: the stream is out of step and must be closed; the error is sticky.

use thiserror::Error;

use super::message::CHANNEL_NUMBERS;
use crate::nat::stun::{STUN_HEADER_LEN, STUN_MAGIC_COOKIE};

/// Default for [`TcpDecoder::new`]'s `max_frame`: room for a Data indication carrying any
/// QUIC datagram (at most 1,500 bytes here) and every control message; larger frames are
/// skipped, not buffered.
pub const DEFAULT_MAX_FRAME: usize = 4096;

/// Why a TURN TCP stream cannot be read any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FramingError {
    /// A frame starts with bits `1x`: neither STUN (`00`) nor ChannelData (`01`).
    #[error("TURN stream out of step: first byte {0:#04x}")]
    BadFirstByte(u8),
    /// ChannelData with a reserved channel number (0x5000–0x7FFF).
    #[error("TURN stream: reserved channel number {0:#06x}")]
    ReservedChannel(u16),
    /// A STUN header without the magic cookie, or whose length is not a multiple of 4.
    #[error("TURN stream: malformed STUN header")]
    BadStunHeader,
}

/// Counters of a [`TcpDecoder`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Whole frames yielded.
    pub frames: u64,
    /// Frames longer than `max_frame`, skipped.
    pub oversize: u64,
    /// The most bytes ever held at once.
    pub peak_buffered: usize,
}

/// Splits a TURN TCP stream into messages (see the module docs).
#[derive(Debug, Clone)]
pub struct TcpDecoder {
    max_frame: usize,
    buf: Vec<u8>,
    /// The current frame's length on the wire (with padding), once its header is read.
    need: Option<usize>,
    /// The current frame's length without padding.
    keep: usize,
    /// Bytes of an oversized frame still to drop.
    skip: usize,
    failed: Option<FramingError>,
    stats: TcpStats,
}

/// Frame length on the wire and without padding, from the first four bytes.
fn frame_len(h: &[u8]) -> Result<(usize, usize), FramingError> {
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    match h[0] >> 6 {
        0 if len % 4 == 0 => Ok((STUN_HEADER_LEN + len, STUN_HEADER_LEN + len)),
        0 => Err(FramingError::BadStunHeader),
        1 => {
            let channel = u16::from_be_bytes([h[0], h[1]]);
            if CHANNEL_NUMBERS.contains(&channel) {
                Ok(((4 + len).next_multiple_of(4), 4 + len))
            } else {
                Err(FramingError::ReservedChannel(channel))
            }
        }
        _ => Err(FramingError::BadFirstByte(h[0])),
    }
}

impl TcpDecoder {
    /// A decoder that holds frames of at most `max_frame` bytes (at least 20, a STUN
    /// header) and skips longer ones.
    pub fn new(max_frame: usize) -> TcpDecoder {
        TcpDecoder {
            max_frame: max_frame.max(STUN_HEADER_LEN),
            buf: Vec::new(),
            need: None,
            keep: 0,
            skip: 0,
            failed: None,
            stats: TcpStats::default(),
        }
    }

    /// Bytes held now (part of one frame).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Counters.
    pub fn stats(&self) -> TcpStats {
        self.stats
    }

    fn fill(&mut self, input: &mut &[u8], upto: usize) -> bool {
        let take = upto.saturating_sub(self.buf.len()).min(input.len());
        self.buf.extend_from_slice(&input[..take]);
        *input = &input[take..];
        self.stats.peak_buffered = self.stats.peak_buffered.max(self.buf.len());
        self.buf.len() >= upto
    }

    /// Consumes bytes from `input` up to the end of the next whole frame and returns that
    /// frame (ChannelData without its padding); `Ok(None)` once `input` is used up without
    /// completing one. Call again with the rest of `input` until it is empty.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, FramingError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        loop {
            if self.skip > 0 {
                let n = self.skip.min(input.len());
                *input = &input[n..];
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(None);
                }
            }
            let need = match self.need {
                Some(n) => n,
                None => {
                    if !self.fill(input, 4) {
                        return Ok(None);
                    }
                    let (wire, keep) = frame_len(&self.buf).inspect_err(|e| {
                        self.failed = Some(*e);
                    })?;
                    if wire > self.max_frame {
                        self.skip = wire - self.buf.len();
                        self.buf.clear();
                        self.stats.oversize += 1;
                        continue;
                    }
                    self.need = Some(wire);
                    self.keep = keep;
                    wire
                }
            };
            let complete = self.fill(input, need);
            if self.buf[0] >> 6 == 0 && self.buf.len() >= 8 && self.buf[4..8] != STUN_MAGIC_COOKIE {
                self.failed = Some(FramingError::BadStunHeader);
                return Err(FramingError::BadStunHeader);
            }
            if !complete {
                return Ok(None);
            }
            let mut frame = std::mem::take(&mut self.buf);
            frame.truncate(self.keep);
            self.need = None;
            self.stats.frames += 1;
            return Ok(Some(frame));
        }
    }
}

/// A message as it goes on a TURN TCP stream: STUN messages are already a multiple of
/// 4 bytes; ChannelData is padded (§12.5).
pub fn frame_for_tcp(mut message: Vec<u8>) -> Vec<u8> {
    message.resize(message.len().next_multiple_of(4), 0);
    message
}

#[cfg(test)]
mod tests {
    use super::super::message::{data_indication, encode_channel_data};
    use super::*;
    use proptest::prelude::*;

    fn all(dec: &mut TcpDecoder, mut input: &[u8]) -> Result<Vec<Vec<u8>>, FramingError> {
        let mut out = Vec::new();
        while !input.is_empty() {
            if let Some(f) = dec.decode(&mut input)? {
                out.push(f);
            }
        }
        Ok(out)
    }

    #[test]
    fn stun_and_channel_data_back_to_back() {
        let peer = "192.0.2.9:5000".parse().unwrap();
        let a = data_indication([1; 12], peer, b"hello");
        let b = encode_channel_data(0x4000, b"xyz", true).unwrap();
        let stream = [a.clone(), b, a.clone()].concat();
        let mut dec = TcpDecoder::new(DEFAULT_MAX_FRAME);
        let frames = all(&mut dec, &stream).unwrap();
        assert_eq!(
            frames,
            vec![a.clone(), vec![0x40, 0, 0, 3, b'x', b'y', b'z'], a]
        );
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn oversized_frames_are_skipped_and_the_stream_goes_on() {
        let peer = "192.0.2.9:5000".parse().unwrap();
        let big = data_indication([1; 12], peer, &[7; 10_000]);
        let small = data_indication([2; 12], peer, b"ok");
        let stream = [big, small.clone()].concat();
        let mut dec = TcpDecoder::new(1024);
        let mut frames = Vec::new();
        for chunk in stream.chunks(333) {
            frames.extend(all(&mut dec, chunk).unwrap());
        }
        assert_eq!(frames, vec![small]);
        let st = dec.stats();
        println!(
            "oversize frames skipped: {}, peak buffered: {} bytes",
            st.oversize, st.peak_buffered
        );
        assert_eq!(st.oversize, 1);
        assert!(st.peak_buffered <= 1024);
    }

    #[test]
    fn garbage_is_a_sticky_error() {
        let mut dec = TcpDecoder::new(DEFAULT_MAX_FRAME);
        assert_eq!(
            all(&mut dec, &[0x80, 0, 0, 0]),
            Err(FramingError::BadFirstByte(0x80))
        );
        assert!(dec.decode(&mut &[0u8; 20][..]).is_err());
        let mut dec = TcpDecoder::new(DEFAULT_MAX_FRAME);
        assert_eq!(
            all(&mut dec, &[0x50, 0, 0, 0]),
            Err(FramingError::ReservedChannel(0x5000))
        );
        let mut dec = TcpDecoder::new(DEFAULT_MAX_FRAME);
        assert_eq!(
            all(&mut dec, &[0, 1, 0, 4, 1, 2, 3, 4]),
            Err(FramingError::BadStunHeader)
        );
    }

    proptest! {
        #[test]
        fn chunking_does_not_change_the_frames(
            datas in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..6),
            cut in 1usize..50,
        ) {
            let peer = "192.0.2.9:5000".parse().unwrap();
            let mut stream = Vec::new();
            let mut want = Vec::new();
            for (i, d) in datas.iter().enumerate() {
                if i % 2 == 0 {
                    let m = data_indication([i as u8; 12], peer, d);
                    want.push(m.clone());
                    stream.extend(m);
                } else {
                    stream.extend(encode_channel_data(0x4000 + i as u16, d, true).unwrap());
                    want.push(encode_channel_data(0x4000 + i as u16, d, false).unwrap());
                }
            }
            let mut dec = TcpDecoder::new(DEFAULT_MAX_FRAME);
            let mut got = Vec::new();
            for chunk in stream.chunks(cut) {
                got.extend(all(&mut dec, chunk).unwrap());
            }
            prop_assert_eq!(got, want);
        }

        #[test]
        fn never_panics_and_stays_bounded(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000),
            cut in 1usize..64, max in 0usize..300,
        ) {
            let mut dec = TcpDecoder::new(max);
            for chunk in bytes.chunks(cut) {
                if all(&mut dec, chunk).is_err() {
                    break;
                }
                prop_assert!(dec.buffered() <= max.max(STUN_HEADER_LEN));
            }
        }
    }
}

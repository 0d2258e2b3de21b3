//! An application stream's framing (spec/03-session.md §10), sans-IO: what goes on a QUIC
//! stream an application protocol opens beside the session stream, and what comes off it.
//!
//! ```text
//! opener → acceptor:  STREAM_OPEN  seq 0   sealed(kind u16)
//!                     STREAM_DATA  seq 1…  sealed(chunk)      … an empty chunk ends it
//! acceptor → opener:  STREAM_DATA  seq 0…  sealed(chunk)      … an empty chunk ends it
//! ```
//!
//! Every frame is a DNA frame whose payload is one AEAD under the stream's key for its
//! direction (`crypto::stream`), counter = the frame's sequence number: chunks arrive in
//! order or not at all, and a direction ends only with its sealed empty chunk — a stream
//! cut short (QUIC FIN or reset without it) is an error, not a short file. Chunks hold at
//! most [`MAX_CHUNK`] bytes; the reader's frame limit keeps a peer from declaring more.

use bytes::{Bytes, BytesMut};

use crate::crypto::stream::{ChunkKey, STREAM_TAG_LEN};
use crate::crypto::MessageKind;
use crate::wire::{encode_frame, FrameDecoder, FrameError, FrameLimits, MessageType};

/// Most plaintext bytes in one STREAM_DATA frame.
pub const MAX_CHUNK: usize = 64 * 1024;

fn limits() -> FrameLimits {
    FrameLimits {
        max_payload: (MAX_CHUNK + STREAM_TAG_LEN) as u32,
    }
}

/// What is wrong with a stream's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The bytes are not DNA frames within the stream's limits.
    #[error("stream framing: {0}")]
    Frame(#[from] FrameError),
    /// A frame of a type that has no place here (or STREAM_OPEN where data was due).
    #[error("unexpected {0} frame on an application stream")]
    Unexpected(MessageType),
    /// A frame out of order (its sequence number is not the next).
    #[error("chunk {found} where {expected} was due")]
    OutOfOrder {
        /// The next sequence number.
        expected: u32,
        /// The one that came.
        found: u32,
    },
    /// A frame that does not open under the stream's key.
    #[error("a chunk does not authenticate")]
    Forged,
    /// The stream ended (QUIC FIN) before its sealed end.
    #[error("the stream was cut short")]
    Truncated,
    /// Data after the sealed end, or a write after `finish`.
    #[error("the stream already ended")]
    Ended,
    /// More chunks than sequence numbers.
    #[error("stream too long")]
    TooLong,
}

/// The sending half of a stream's framing.
#[derive(Debug)]
pub struct Sealer {
    key: ChunkKey,
    next: u32,
    ended: bool,
}

impl Sealer {
    /// A sender under `key`; the opener's first frame is [`Sealer::open`].
    pub fn new(key: ChunkKey) -> Sealer {
        Sealer {
            key,
            next: 0,
            ended: false,
        }
    }

    fn frame(
        &mut self,
        ty: MessageType,
        plain: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), StreamError> {
        if self.ended {
            return Err(StreamError::Ended);
        }
        let seq = self.next;
        self.next = seq.checked_add(1).ok_or(StreamError::TooLong)?;
        let mut buf = Vec::with_capacity(plain.len() + STREAM_TAG_LEN);
        buf.extend_from_slice(plain);
        let tag = self
            .key
            .seal(ty.to_u16(), seq, &mut buf)
            .ok_or(StreamError::TooLong)?;
        buf.extend_from_slice(&tag);
        encode_frame(ty, seq, &buf, &limits(), out).map_err(|_| StreamError::TooLong)?;
        Ok(())
    }

    /// The opener's STREAM_OPEN naming the application protocol.
    pub fn open(&mut self, kind: MessageKind, out: &mut BytesMut) -> Result<(), StreamError> {
        self.frame(MessageType::StreamOpen, &kind.0.to_be_bytes(), out)
    }

    /// `data` as STREAM_DATA frames of at most [`MAX_CHUNK`] bytes each (none for empty
    /// data: an empty chunk is the end).
    pub fn data(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), StreamError> {
        for chunk in data.chunks(MAX_CHUNK) {
            self.frame(MessageType::StreamData, chunk, out)?;
        }
        Ok(())
    }

    /// The sealed end of this direction.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), StreamError> {
        self.frame(MessageType::StreamData, &[], out)?;
        self.ended = true;
        Ok(())
    }
}

/// What a reader took from its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// The opener's STREAM_OPEN: the application protocol it names.
    Open(MessageKind),
    /// A chunk of data.
    Data(Bytes),
    /// The sealed end.
    End,
}

/// The receiving half of a stream's framing.
#[derive(Debug)]
pub struct Opener {
    key: ChunkKey,
    decoder: FrameDecoder,
    next: u32,
    /// The acceptor's reader expects STREAM_OPEN first.
    want_open: bool,
    ended: bool,
}

impl Opener {
    /// A reader under `key`; `acceptor`: it reads the opener's direction, which begins with
    /// STREAM_OPEN.
    pub fn new(key: ChunkKey, acceptor: bool) -> Opener {
        Opener {
            key,
            decoder: FrameDecoder::new(limits()),
            next: 0,
            want_open: acceptor,
            ended: false,
        }
    }

    /// Whether the sealed end was read.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The next frame out of `input` (consumed as far as it was read), or None when the
    /// input holds no whole frame yet. After an error the stream is unusable.
    pub fn read(&mut self, input: &mut Bytes) -> Result<Option<Read>, StreamError> {
        let Some(frame) = self.decoder.feed(input)? else {
            return Ok(None);
        };
        if self.ended {
            return Err(StreamError::Ended);
        }
        let (ty, seq) = (frame.header.msg_type, frame.header.seq);
        let expected_ty = if self.want_open {
            MessageType::StreamOpen
        } else {
            MessageType::StreamData
        };
        if ty != expected_ty {
            return Err(StreamError::Unexpected(ty));
        }
        if seq != self.next {
            return Err(StreamError::OutOfOrder {
                expected: self.next,
                found: seq,
            });
        }
        let mut body = BytesMut::from(&frame.payload[..]);
        if body.len() < STREAM_TAG_LEN {
            return Err(StreamError::Forged);
        }
        let tag_at = body.len() - STREAM_TAG_LEN;
        let mut tag = [0u8; STREAM_TAG_LEN];
        tag.copy_from_slice(&body[tag_at..]);
        body.truncate(tag_at);
        if !self.key.open(ty.to_u16(), seq, &mut body, tag) {
            return Err(StreamError::Forged);
        }
        self.next = seq.checked_add(1).ok_or(StreamError::TooLong)?;
        if self.want_open {
            self.want_open = false;
            let kind = <[u8; 2]>::try_from(&body[..]).map_err(|_| StreamError::Forged)?;
            return Ok(Some(Read::Open(MessageKind(u16::from_be_bytes(kind)))));
        }
        if body.is_empty() {
            self.ended = true;
            return Ok(Some(Read::End));
        }
        Ok(Some(Read::Data(body.freeze())))
    }

    /// The stream's bytes ended (QUIC FIN): an error unless the sealed end was read.
    pub fn finish(&self) -> Result<(), StreamError> {
        if self.ended {
            Ok(())
        } else {
            Err(StreamError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests;

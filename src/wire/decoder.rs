//! Streaming frame decoder (spec/01-wire.md §5).
//!
//! Bytes arrive in arbitrary chunks, as a QUIC stream delivers them; [`FrameDecoder::feed`]
//! takes from a chunk only what the current frame needs and yields whole frames. Memory
//! stays bounded: at most one header (32 bytes) and one payload, whose length was checked
//! against [`FrameLimits`] *before* any payload byte was buffered. The payload buffer grows
//! with the bytes that arrived (doubling, never past the declared length), not with the
//! length a peer declared: a header announcing 1 MiB followed by nothing costs nothing.
//! A caller holding more of the stream than the input it feeds says how much
//! ([`FrameDecoder::decode_ahead`]); when those bytes complete the payload, it is sized at
//! once — they have arrived.
//! When a chunk already holds the whole payload, the frame's payload is a zero-copy slice
//! of the chunk. The limits can change between frames ([`FrameDecoder::set_limits`]): a
//! session allows only a HELLO-sized frame until the peer is authenticated.
//!
//! After an error the stream is unrecoverable (framing is lost); the decoder keeps
//! returning that error.

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{check_crc, FrameRef, Header, HeaderView, HEADER_LEN};
use super::{FrameError, FrameLimits};

/// A decoded frame owning its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The validated header (CRC checked against `payload`).
    pub header: Header,
    /// The payload.
    pub payload: Bytes,
}

#[derive(Debug)]
enum State {
    Header {
        buf: [u8; HEADER_LEN],
        filled: usize,
    },
    Payload {
        header: Header,
        /// The payload so far; its capacity is at most the declared length.
        buf: Vec<u8>,
    },
    Failed(FrameError),
}

impl State {
    fn fresh() -> State {
        State::Header {
            buf: [0; HEADER_LEN],
            filled: 0,
        }
    }
}

/// Incremental decoder for a stream of DNA frames.
#[derive(Debug)]
pub struct FrameDecoder {
    limits: FrameLimits,
    state: State,
}

/// A frame from [`FrameDecoder::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'i> {
    /// The frame lay whole in the input: its payload is a slice of it.
    Lent(FrameRef<'i>),
    /// The frame was assembled from several inputs: the decoder hands it over.
    Owned(Frame),
}

impl Decoded<'_> {
    /// The validated header.
    pub fn header(&self) -> Header {
        match self {
            Decoded::Lent(f) => f.header,
            Decoded::Owned(f) => f.header,
        }
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        match self {
            Decoded::Lent(f) => f.payload,
            Decoded::Owned(f) => &f.payload,
        }
    }

    /// The payload as a mutable buffer: without copying when the decoder assembled it.
    pub fn into_payload_mut(self) -> BytesMut {
        match self {
            Decoded::Lent(f) => BytesMut::from(f.payload),
            Decoded::Owned(f) => f
                .payload
                .try_into_mut()
                .unwrap_or_else(|b| BytesMut::from(&b[..])),
        }
    }
}

/// A source of stream bytes: `Bytes` (payloads are zero-copy slices of it) or `&[u8]`
/// (payloads are copied).
pub trait Input {
    /// The bytes not yet consumed.
    fn chunk(&self) -> &[u8];
    /// Consumes `n` bytes (n ≤ `chunk().len()`).
    fn skip(&mut self, n: usize);
    /// Consumes `n` bytes (n ≤ `chunk().len()`) and returns them.
    fn take(&mut self, n: usize) -> Bytes;
}

impl Input for Bytes {
    fn chunk(&self) -> &[u8] {
        self
    }
    fn skip(&mut self, n: usize) {
        self.advance(n);
    }
    fn take(&mut self, n: usize) -> Bytes {
        self.split_to(n)
    }
}

impl Input for &[u8] {
    fn chunk(&self) -> &[u8] {
        self
    }
    fn skip(&mut self, n: usize) {
        *self = &self[n..];
    }
    fn take(&mut self, n: usize) -> Bytes {
        let (head, tail) = self.split_at(n);
        *self = tail;
        Bytes::copy_from_slice(head)
    }
}

impl FrameDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: FrameLimits) -> FrameDecoder {
        FrameDecoder {
            limits,
            state: State::fresh(),
        }
    }

    /// Changes the limits for the frames whose headers come next (a frame in progress keeps
    /// the length it was admitted with).
    pub fn set_limits(&mut self, limits: FrameLimits) {
        self.limits = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> FrameLimits {
        self.limits
    }

    /// Consumes bytes from `input` until one frame is complete (returned) or `input` is
    /// empty (`Ok(None)`). Call again while `input` is not empty.
    pub fn feed<I: Input>(&mut self, input: &mut I) -> Result<Option<Frame>, FrameError> {
        self.feed_ahead(input, 0)
    }

    fn feed_ahead<I: Input>(
        &mut self,
        input: &mut I,
        ahead: usize,
    ) -> Result<Option<Frame>, FrameError> {
        match self.step(input, ahead) {
            Ok(frame) => Ok(frame),
            Err(e) => {
                self.state = State::Failed(e.clone());
                Err(e)
            }
        }
    }

    /// Like [`FrameDecoder::feed`], but a frame that lies whole in `input` is lent as a
    /// slice of it (no copy, no reference count: [`Decoded::Lent`]); one assembled from
    /// several inputs is handed over by value ([`Decoded::Owned`], its payload uniquely
    /// owned, so it can be decrypted in place without another copy). Consumes from `input`
    /// exactly what `feed` would.
    #[inline]
    pub fn decode<'i>(&mut self, input: &mut &'i [u8]) -> Result<Option<Decoded<'i>>, FrameError> {
        self.decode_ahead(input, 0)
    }

    /// Like [`FrameDecoder::decode`], from a caller that already holds `ahead` more bytes of
    /// the stream after `input` (the next segments of one read). A payload that straddles
    /// into them is allocated at its full length at once instead of by doubling: the bytes
    /// have arrived, so memory still follows arrived bytes.
    #[inline]
    pub fn decode_ahead<'i>(
        &mut self,
        input: &mut &'i [u8],
        ahead: usize,
    ) -> Result<Option<Decoded<'i>>, FrameError> {
        if let State::Header { filled: 0, .. } = self.state {
            if let Some(h) = input.first_chunk::<HEADER_LEN>() {
                let header = match Header::parse_array(h, &self.limits) {
                    Ok(h) => h,
                    Err(e) => {
                        self.state = State::Failed(e.clone());
                        return Err(e);
                    }
                };
                let whole: &'i [u8] = input;
                if let Some(payload) = whole.get(HEADER_LEN..header.frame_len()) {
                    if let Err(e) = check_crc(&header, payload) {
                        self.state = State::Failed(e.clone());
                        return Err(e);
                    }
                    *input = &whole[header.frame_len()..];
                    return Ok(Some(Decoded::Lent(FrameRef { header, payload })));
                }
            }
        }
        Ok(self.feed_ahead(input, ahead)?.map(Decoded::Owned))
    }

    /// Feeds all of `input` and collects every frame it completes.
    pub fn feed_all<I: Input>(&mut self, mut input: I) -> Result<Vec<Frame>, FrameError> {
        let mut frames = Vec::new();
        while !input.chunk().is_empty() {
            if let Some(frame) = self.feed(&mut input)? {
                frames.push(frame);
            }
        }
        Ok(frames)
    }

    /// Declares the end of the stream: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        match &self.state {
            State::Header { filled: 0, .. } => Ok(()),
            State::Header { filled, .. } => Err(FrameError::Truncated {
                needed: HEADER_LEN,
                available: *filled,
            }),
            State::Payload { header, buf } => Err(FrameError::Truncated {
                needed: header.frame_len(),
                available: HEADER_LEN + buf.len(),
            }),
            State::Failed(e) => Err(e.clone()),
        }
    }

    /// Bytes of an incomplete frame held by the decoder.
    pub fn buffered(&self) -> usize {
        match &self.state {
            State::Header { filled, .. } => *filled,
            State::Payload { buf, .. } => HEADER_LEN + buf.len(),
            State::Failed(_) => 0,
        }
    }

    /// Bytes the decoder has allocated for an incomplete payload (≤ twice what arrived,
    /// ≤ the declared length).
    pub fn allocated(&self) -> usize {
        match &self.state {
            State::Payload { buf, .. } => buf.capacity(),
            _ => 0,
        }
    }

    fn step<I: Input>(&mut self, input: &mut I, ahead: usize) -> Result<Option<Frame>, FrameError> {
        loop {
            match &mut self.state {
                State::Failed(e) => return Err(e.clone()),
                State::Header { buf, filled } => {
                    let header = if *filled == 0 && input.chunk().len() >= HEADER_LEN {
                        let header =
                            Header::parse(&HeaderView::new_checked(input.chunk())?, &self.limits)?;
                        input.skip(HEADER_LEN);
                        header
                    } else {
                        let n = (HEADER_LEN - *filled).min(input.chunk().len());
                        buf[*filled..*filled + n].copy_from_slice(&input.chunk()[..n]);
                        input.skip(n);
                        *filled += n;
                        if *filled < HEADER_LEN {
                            return Ok(None);
                        }
                        Header::parse(&HeaderView::new_checked(&buf[..])?, &self.limits)?
                    };
                    self.state = State::Payload {
                        header,
                        buf: Vec::new(),
                    };
                }
                State::Payload { header, buf } => {
                    let len = header.payload_len as usize;
                    let payload = if buf.is_empty() && input.chunk().len() >= len {
                        input.take(len)
                    } else {
                        let n = (len - buf.len()).min(input.chunk().len());
                        if buf.capacity() == 0 && n + ahead >= len {
                            // The rest is in the caller's hands: one allocation.
                            buf.reserve_exact(len);
                        }
                        grow(buf, n, len);
                        buf.extend_from_slice(&input.chunk()[..n]);
                        input.skip(n);
                        if buf.len() < len {
                            return Ok(None);
                        }
                        Bytes::from(std::mem::take(buf))
                    };
                    let header = *header;
                    self.state = State::fresh();
                    check_crc(&header, &payload)?;
                    return Ok(Some(Frame { header, payload }));
                }
            }
        }
    }
}

/// Makes room for `n` more bytes in `buf`, a payload of `len` bytes in the making: at least
/// double the capacity (amortised copies) but never more than `len`, and never on the word
/// of the header alone — only for bytes that arrived.
fn grow(buf: &mut Vec<u8>, n: usize, len: usize) {
    let need = buf.len() + n;
    if need <= buf.capacity() {
        return;
    }
    let target = need.max(buf.capacity() * 2).min(len);
    buf.reserve_exact(target - buf.len());
}

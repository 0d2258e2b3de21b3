//! The 32-byte DNA frame header and one-shot frame codec (spec/01-wire.md §2).
//!
//! Shaped like smoltcp's `wire`: [`HeaderView`] is a zero-copy view over header bytes with
//! offsets in [`field`]; [`Header`] is the parsed, validated representation;
//! [`Header::emit`] writes it back. [`decode_frame`] parses one frame from a slice without
//! copying its payload; [`encode_frame`] appends one to a `BytesMut`.
//!
//! Parsing never panics and never allocates: every read is bounds-checked first.

use bytes::{BufMut, BytesMut};

use super::{EncodeError, FrameError, MessageType};

/// `"DNA "` as a big-endian u32.
pub const MAGIC: u32 = 0x444E_4120;
/// The only version this implementation speaks (1.0).
pub const VERSION: u16 = 0x0100;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 32;
/// Default maximum payload length: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: u32 = 1 << 20;

/// Byte ranges of the header fields (all big-endian).
pub mod field {
    use std::ops::Range;

    /// Magic `"DNA "`.
    pub const MAGIC: Range<usize> = 0..4;
    /// Protocol version.
    pub const VERSION: Range<usize> = 4..6;
    /// Message type (registry in `types`).
    pub const TYPE: Range<usize> = 6..8;
    /// Sequence number.
    pub const SEQ: Range<usize> = 8..12;
    /// Payload length in bytes.
    pub const LENGTH: Range<usize> = 12..16;
    /// CRC32 (IEEE, as crc32fast computes it) of the payload.
    pub const CRC: Range<usize> = 16..20;
    /// Reserved, must be zero.
    pub const RESERVED: Range<usize> = 20..32;
}

/// Limits a decoder enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest payload accepted, in bytes (default 1 MiB).
    pub max_payload: u32,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// A zero-copy view over at least [`HEADER_LEN`] bytes. Accessors read raw field values;
/// nothing is validated until [`Header::parse`].
#[derive(Debug, Clone, Copy)]
pub struct HeaderView<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HeaderView<T> {
    /// Wraps `buffer` after checking it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Self, FrameError> {
        let available = buffer.as_ref().len();
        if available < HEADER_LEN {
            return Err(FrameError::Truncated {
                needed: HEADER_LEN,
                available,
            });
        }
        Ok(HeaderView { buffer })
    }

    fn bytes<const N: usize>(&self, range: std::ops::Range<usize>) -> [u8; N] {
        let mut out = [0u8; N];
        // new_checked guaranteed HEADER_LEN bytes and every field range lies inside it.
        out.copy_from_slice(&self.buffer.as_ref()[range]);
        out
    }

    /// The magic field.
    pub fn magic(&self) -> u32 {
        u32::from_be_bytes(self.bytes(field::MAGIC))
    }
    /// The version field.
    pub fn version(&self) -> u16 {
        u16::from_be_bytes(self.bytes(field::VERSION))
    }
    /// The raw type number.
    pub fn msg_type(&self) -> u16 {
        u16::from_be_bytes(self.bytes(field::TYPE))
    }
    /// The sequence number.
    pub fn seq(&self) -> u32 {
        u32::from_be_bytes(self.bytes(field::SEQ))
    }
    /// The declared payload length.
    pub fn payload_len(&self) -> u32 {
        u32::from_be_bytes(self.bytes(field::LENGTH))
    }
    /// The declared payload CRC32.
    pub fn crc32(&self) -> u32 {
        u32::from_be_bytes(self.bytes(field::CRC))
    }
    /// The reserved bytes.
    pub fn reserved(&self) -> [u8; 12] {
        self.bytes(field::RESERVED)
    }
}

/// A validated header: magic, version and reserved bytes were right, the type is
/// registered and the length is within limits. The CRC is checked against the payload by
/// the decoders, not here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Registered message type.
    pub msg_type: MessageType,
    /// Sequence number.
    pub seq: u32,
    /// Payload length (≤ the limit it was parsed under).
    pub payload_len: u32,
    /// CRC32 of the payload.
    pub crc32: u32,
}

impl Header {
    /// Validates a header, in the order of spec/01-wire.md §4: magic, version, reserved,
    /// type, length.
    pub fn parse<T: AsRef<[u8]>>(
        view: &HeaderView<T>,
        limits: &FrameLimits,
    ) -> Result<Header, FrameError> {
        match view.buffer.as_ref().first_chunk::<HEADER_LEN>() {
            Some(h) => Header::parse_array(h, limits),
            // new_checked guaranteed the length; this arm is never taken.
            None => Err(FrameError::Truncated {
                needed: HEADER_LEN,
                available: view.buffer.as_ref().len(),
            }),
        }
    }

    /// [`Header::parse`] on exactly the 32 header bytes: fixed offsets, no bounds checks,
    /// the reserved bytes compared as two integers.
    #[inline]
    pub fn parse_array(h: &[u8; HEADER_LEN], limits: &FrameLimits) -> Result<Header, FrameError> {
        let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let magic = be32(0);
        if magic != MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
        let version = u16::from_be_bytes([h[4], h[5]]);
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion { found: version });
        }
        let reserved_a =
            u64::from_ne_bytes([h[20], h[21], h[22], h[23], h[24], h[25], h[26], h[27]]);
        let reserved_b = u32::from_ne_bytes([h[28], h[29], h[30], h[31]]);
        if reserved_a | u64::from(reserved_b) != 0 {
            let (i, &value) = h[field::RESERVED]
                .iter()
                .enumerate()
                .find(|(_, b)| **b != 0)
                .unwrap_or((0, &0));
            return Err(FrameError::ReservedNotZero {
                offset: field::RESERVED.start + i,
                value,
            });
        }
        let raw_type = u16::from_be_bytes([h[6], h[7]]);
        let msg_type =
            MessageType::from_u16(raw_type).ok_or(FrameError::UnknownType { found: raw_type })?;
        let payload_len = be32(12);
        if payload_len > limits.max_payload {
            return Err(FrameError::PayloadTooLong {
                length: payload_len,
                max: limits.max_payload,
            });
        }
        Ok(Header {
            msg_type,
            seq: be32(8),
            payload_len,
            crc32: be32(16),
        })
    }

    /// The header for `payload`, with its CRC computed.
    pub fn for_payload(
        msg_type: MessageType,
        seq: u32,
        payload: &[u8],
    ) -> Result<Header, EncodeError> {
        let payload_len =
            u32::try_from(payload.len()).map_err(|_| EncodeError::PayloadTooLong {
                length: payload.len(),
                max: u32::MAX,
            })?;
        Ok(Header {
            msg_type,
            seq,
            payload_len,
            crc32: crc32fast::hash(payload),
        })
    }

    /// The 32 header bytes.
    pub fn emit(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[field::MAGIC].copy_from_slice(&MAGIC.to_be_bytes());
        out[field::VERSION].copy_from_slice(&VERSION.to_be_bytes());
        out[field::TYPE].copy_from_slice(&self.msg_type.to_u16().to_be_bytes());
        out[field::SEQ].copy_from_slice(&self.seq.to_be_bytes());
        out[field::LENGTH].copy_from_slice(&self.payload_len.to_be_bytes());
        out[field::CRC].copy_from_slice(&self.crc32.to_be_bytes());
        out
    }

    /// Header plus payload length.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize
    }
}

/// A decoded frame borrowing its payload from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// The validated header (CRC already checked against `payload`).
    pub header: Header,
    /// The payload, `header.payload_len` bytes.
    pub payload: &'a [u8],
}

/// Decodes the frame at the start of `input`; returns it and the number of bytes it took.
/// Bytes after the frame are left alone (see [`decode_exact`]).
#[inline]
pub fn decode_frame<'a>(
    input: &'a [u8],
    limits: &FrameLimits,
) -> Result<(FrameRef<'a>, usize), FrameError> {
    let h = input
        .first_chunk::<HEADER_LEN>()
        .ok_or(FrameError::Truncated {
            needed: HEADER_LEN,
            available: input.len(),
        })?;
    let header = Header::parse_array(h, limits)?;
    let total = header.frame_len();
    let payload = input.get(HEADER_LEN..total).ok_or(FrameError::Truncated {
        needed: total,
        available: input.len(),
    })?;
    check_crc(&header, payload)?;
    Ok((FrameRef { header, payload }, total))
}

/// Decodes `input` as exactly one frame; trailing bytes are an error.
pub fn decode_exact<'a>(input: &'a [u8], limits: &FrameLimits) -> Result<FrameRef<'a>, FrameError> {
    let (frame, used) = decode_frame(input, limits)?;
    match input.len() - used {
        0 => Ok(frame),
        count => Err(FrameError::TrailingBytes { count }),
    }
}

/// Checks the payload against the header's CRC32.
#[inline]
pub(crate) fn check_crc(header: &Header, payload: &[u8]) -> Result<(), FrameError> {
    let computed = crc32fast::hash(payload);
    if computed == header.crc32 {
        Ok(())
    } else {
        Err(FrameError::CrcMismatch {
            expected: header.crc32,
            computed,
        })
    }
}

/// Appends one frame (header and payload) to `out`, refusing payloads over `limits`.
pub fn encode_frame(
    msg_type: MessageType,
    seq: u32,
    payload: &[u8],
    limits: &FrameLimits,
    out: &mut BytesMut,
) -> Result<Header, EncodeError> {
    if payload.len() > limits.max_payload as usize {
        return Err(EncodeError::PayloadTooLong {
            length: payload.len(),
            max: limits.max_payload,
        });
    }
    let header = Header::for_payload(msg_type, seq, payload)?;
    out.reserve(header.frame_len());
    out.put_slice(&header.emit());
    out.put_slice(payload);
    Ok(header)
}

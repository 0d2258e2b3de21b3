//! DNA frames: the 32-byte header, the type registry and the codecs (spec/01-wire.md).
//!
//! Everything here parses untrusted bytes: nothing panics, nothing allocates more than the
//! configured [`FrameLimits`] allow, every violation is its own [`FrameError`] variant.
//!
//! ```text
//! 0      4        6     8        12       16      20             32
//! +------+--------+-----+--------+--------+-------+--------------+---------+
//! |"DNA "|version |type |sequence| length | CRC32 | reserved (0) | payload |
//! +------+--------+-----+--------+--------+-------+--------------+---------+
//! ```

mod decoder;
mod error;
mod frame;
mod types;

pub mod addr;
pub use decoder::{Decoded, Frame, FrameDecoder, Input};
pub use error::{EncodeError, FrameError};
pub use frame::{
    decode_exact, decode_frame, encode_frame, field, FrameLimits, FrameRef, Header, HeaderView,
    DEFAULT_MAX_PAYLOAD, HEADER_LEN, MAGIC, VERSION,
};
pub use types::{
    MessageType, UnknownTypeName, DHT_RANGE, FILE_RANGE, MAILBOX_RANGE, SESSION_RANGE,
    SIGNALLING_RANGE,
};

impl Frame {
    /// Appends this frame's bytes to `out`.
    pub fn encode(&self, out: &mut bytes::BytesMut) {
        out.reserve(self.header.frame_len());
        out.extend_from_slice(&self.header.emit());
        out.extend_from_slice(&self.payload);
    }
}

impl FrameRef<'_> {
    /// Appends this frame's bytes to `out`.
    pub fn encode(&self, out: &mut bytes::BytesMut) {
        out.reserve(self.header.frame_len());
        out.extend_from_slice(&self.header.emit());
        out.extend_from_slice(self.payload);
    }
}

#[cfg(test)]
mod tests;

//! Errors of the frame codec (spec/01-wire.md §4). One variant per violation.

use thiserror::Error;

/// Why a frame could not be decoded. Every variant is a distinct violation of
/// spec/01-wire.md; a peer that causes any of them is disconnected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The input ended before the frame did.
    #[error("truncated frame: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the frame needs (32 for the header, 32 + length once the header is known).
        needed: usize,
        /// Bytes that were available.
        available: usize,
    },
    /// The first four bytes are not `"DNA "` (0x444E4120).
    #[error("bad magic 0x{found:08x} (expected 0x444e4120, \"DNA \")")]
    BadMagic {
        /// The four bytes found, big-endian.
        found: u32,
    },
    /// The version is not one this implementation speaks (only 0x0100).
    #[error("unsupported version 0x{found:04x} (this node speaks 0x0100)")]
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// The type number is not in the registry.
    #[error("unknown message type 0x{found:04x}")]
    UnknownType {
        /// The type number found.
        found: u16,
    },
    /// The declared payload length exceeds the configured maximum. Checked before any
    /// payload byte is buffered.
    #[error("payload length {length} exceeds the maximum of {max} bytes")]
    PayloadTooLong {
        /// The declared length.
        length: u32,
        /// The configured maximum.
        max: u32,
    },
    /// The payload's CRC32 differs from the header's.
    #[error("CRC mismatch: header says 0x{expected:08x}, payload has 0x{computed:08x}")]
    CrcMismatch {
        /// The checksum in the header.
        expected: u32,
        /// The checksum of the payload received.
        computed: u32,
    },
    /// One of the 12 reserved bytes is not zero.
    #[error("reserved byte at offset {offset} is 0x{value:02x}, must be zero")]
    ReservedNotZero {
        /// Offset of the first non-zero reserved byte within the frame.
        offset: usize,
        /// Its value.
        value: u8,
    },
    /// A one-shot decode of exactly one frame found bytes after it.
    #[error("{count} unexpected bytes after the frame")]
    TrailingBytes {
        /// How many bytes followed the frame.
        count: usize,
    },
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The payload is longer than the limit the receiver enforces.
    #[error("payload of {length} bytes exceeds the maximum of {max} bytes")]
    PayloadTooLong {
        /// The payload length.
        length: usize,
        /// The configured maximum.
        max: u32,
    },
}

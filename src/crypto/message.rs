//! The plaintext message structure both protected forms carry (spec/02-crypto.md §4).
//!
//! ```text
//! version u8 = 2 | sender fp [32] | recipient fp [32] | message id [16] | timestamp_ms u64
//!   | kind u16 | body
//! ```
//!
//! The kind says which application protocol the body belongs to ([`MessageKind`]; the
//! registry is spec/02-crypto.md §4.1). It is inside the encryption: relays and storing
//! nodes do not learn it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rand_core::CryptoRngCore;

use super::{Fingerprint, OpenError};

/// Version byte of the plaintext structure (1 had no kind).
pub const MESSAGE_VERSION: u8 = 2;
/// Length of the plaintext header before the body.
pub const MESSAGE_HEADER_LEN: usize = 1 + 32 + 32 + 16 + 8 + 2;

/// Which application protocol a message's body belongs to (spec/02-crypto.md §4.1: the
/// registry; a number is never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MessageKind(pub u16);

impl MessageKind {
    /// Chat text, UTF-8 (what `dna send` sends).
    pub const TEXT: MessageKind = MessageKind(0);
    /// File transfer (reserved for spec/11-files.md).
    pub const FILE: MessageKind = MessageKind(1);
    /// Group channels (reserved for spec/12-groups.md).
    pub const GROUP: MessageKind = MessageKind(2);
    /// A contact drop handed to a contact (spec/09-mailbox.md §1.1): body
    /// `crypto::drop::ContactDrop::encode`. Taken by the node, never delivered as a message.
    pub const DROP: MessageKind = MessageKind(3);
    /// The first of the kinds left to private and experimental protocols (0x8000–0xFFFF):
    /// never registered, never reserved.
    pub const PRIVATE: MessageKind = MessageKind(0x8000);
}

impl std::fmt::Display for MessageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            MessageKind::TEXT => f.write_str("text"),
            MessageKind::FILE => f.write_str("file"),
            MessageKind::GROUP => f.write_str("group"),
            MessageKind::DROP => f.write_str("drop"),
            MessageKind(k) => write!(f, "{k:#06x}"),
        }
    }
}

/// A 128-bit message ID: random, chosen by the sender; receivers de-duplicate by it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// A fresh random ID.
    pub fn random(rng: &mut impl CryptoRngCore) -> MessageId {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        MessageId(id)
    }
}

impl std::fmt::Debug for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageId({})", hex::encode(self.0))
    }
}

/// An opened (or to-be-sealed) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The sender's fingerprint.
    pub sender: Fingerprint,
    /// The recipient's fingerprint.
    pub recipient: Fingerprint,
    /// The sender-chosen ID.
    pub id: MessageId,
    /// Sender's clock, milliseconds since the Unix epoch (informational, not trusted).
    pub timestamp_ms: u64,
    /// The application protocol the body belongs to.
    pub kind: MessageKind,
    /// The application payload.
    pub body: Bytes,
}

/// Appends the plaintext encoding to `out`.
pub(crate) fn encode(
    out: &mut BytesMut,
    sender: &Fingerprint,
    recipient: &Fingerprint,
    id: &MessageId,
    timestamp_ms: u64,
    kind: MessageKind,
    body: &[u8],
) {
    out.reserve(MESSAGE_HEADER_LEN + body.len());
    out.put_u8(MESSAGE_VERSION);
    out.put_slice(&sender.0);
    out.put_slice(&recipient.0);
    out.put_slice(&id.0);
    out.put_u64(timestamp_ms);
    out.put_u16(kind.0);
    out.put_slice(body);
}

/// Parses a decrypted plaintext; the body is split off without copying.
pub(crate) fn parse(mut plain: BytesMut) -> Result<Message, OpenError> {
    let header = parse_header(&plain)?;
    let body = plain.split_off(MESSAGE_HEADER_LEN).freeze();
    Ok(header.with_body(body))
}

/// Parses a plaintext the caller holds as a slice: only the body is copied (one allocation).
pub(crate) fn parse_slice(plain: &[u8]) -> Result<Message, OpenError> {
    let header = parse_header(plain)?;
    Ok(header.with_body(Bytes::copy_from_slice(&plain[MESSAGE_HEADER_LEN..])))
}

/// Parses a plaintext in a buffer of its own: the body is a view of that buffer, with no copy
/// and — when the buffer has no spare capacity — no further allocation (a split
/// `BytesMut` allocates a shared header; a whole `Vec` turned into `Bytes` does not).
pub(crate) fn parse_vec(plain: Vec<u8>) -> Result<Message, OpenError> {
    let header = parse_header(&plain)?;
    let mut body = Bytes::from(plain);
    body.advance(MESSAGE_HEADER_LEN);
    Ok(header.with_body(body))
}

/// A plaintext message's header fields.
struct ParsedHeader {
    sender: Fingerprint,
    recipient: Fingerprint,
    id: MessageId,
    timestamp_ms: u64,
    kind: MessageKind,
}

impl ParsedHeader {
    fn with_body(self, body: Bytes) -> Message {
        Message {
            sender: self.sender,
            recipient: self.recipient,
            id: self.id,
            timestamp_ms: self.timestamp_ms,
            kind: self.kind,
            body,
        }
    }
}

fn parse_header(plain: &[u8]) -> Result<ParsedHeader, OpenError> {
    let Some(h) = plain.first_chunk::<MESSAGE_HEADER_LEN>() else {
        return Err(OpenError::Truncated {
            needed: MESSAGE_HEADER_LEN,
            available: plain.len(),
        });
    };
    if h[0] != MESSAGE_VERSION {
        return Err(OpenError::UnsupportedVersion { found: h[0] });
    }
    let mut sender = [0u8; 32];
    sender.copy_from_slice(&h[1..33]);
    let mut recipient = [0u8; 32];
    recipient.copy_from_slice(&h[33..65]);
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[65..81]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&h[81..89]);
    Ok(ParsedHeader {
        sender: Fingerprint(sender),
        recipient: Fingerprint(recipient),
        id: MessageId(id),
        timestamp_ms: u64::from_be_bytes(ts),
        kind: MessageKind(u16::from_be_bytes([h[89], h[90]])),
    })
}

//! Signed, self-certifying DHT records (spec/02-crypto.md §8).
//!
//! ```text
//! 0     version u8 = 1
//! 1     kind u8
//! 2     DHT key [20]
//! 22    sequence u64
//! 30    expiry u64 (Unix seconds; signed, so an old record cannot be given new life)
//! 38    publisher public key [1952]
//! 1990  value length u32
//! 1994  value [length]
//! ..    signature [3309] over SHA-256("dna/record/v1" ‖ bytes 0 .. end of value)
//! ```
//! A [`Record`] value exists only after it was signed by us or verified: the key must be the
//! one derived for its kind from the publisher's key (or, for names and mailbox items, from
//! the value, with the publisher bound inside), the value within its kind's limit, the
//! expiry in the future but not too far, the signature valid.

use std::fmt;

use thiserror::Error;

use super::identity::{PublicKey, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use super::kem::KemPublicKey;
use super::{name, sealed, Fingerprint, Identity, NodeId};

const VERSION: u8 = 1;
pub(crate) const DOMAIN: &[u8] = b"dna/record/v1";
/// Bytes before the value.
pub const RECORD_HEADER_LEN: usize = 1994;

mod field {
    use std::ops::Range;
    pub const VERSION: usize = 0;
    pub const KIND: usize = 1;
    pub const KEY: Range<usize> = 2..22;
    pub const SEQ: Range<usize> = 22..30;
    pub const EXPIRY: Range<usize> = 30..38;
    pub const PUBLISHER: Range<usize> = 38..1990;
    pub const VALUE_LEN: Range<usize> = 1990..1994;
}

/// What a record says. Numbers are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum RecordKind {
    /// Where a node is: addresses, NAT type, rendezvous nodes. Key from the publisher.
    Presence = 1,
    /// A human name claimed by the publisher. Key from the name.
    NameClaim = 2,
    /// A sealed message waiting for an offline recipient. Key from the recipient.
    MailboxItem = 3,
    /// The publisher's hybrid KEM public key, for sealing. Key from the publisher.
    KemKey = 4,
    /// The items a recipient fetched from its mailbox (spec/09-mailbox.md §5). Key from
    /// the publisher: its own mailbox key, so the nodes holding its items see it.
    MailboxReceipt = 5,
    /// A contact's message in a recipient's contact drop (spec/09-mailbox.md §1.1): a
    /// sealed envelope wrapped under the drop's secret, published by the drop's identity.
    /// Key from the publisher: `drop_key`.
    MailboxDrop = 6,
    /// The drop items a recipient fetched, published by the drop's identity under its
    /// `drop_key` (as `MailboxReceipt` for a mailbox key).
    DropReceipt = 7,
}

impl RecordKind {
    /// The kind numbered `n`.
    pub fn from_u8(n: u8) -> Option<RecordKind> {
        Some(match n {
            1 => RecordKind::Presence,
            2 => RecordKind::NameClaim,
            3 => RecordKind::MailboxItem,
            4 => RecordKind::KemKey,
            5 => RecordKind::MailboxReceipt,
            6 => RecordKind::MailboxDrop,
            7 => RecordKind::DropReceipt,
            _ => return None,
        })
    }

    /// A mailbox item, of a mailbox or of a contact drop: one slot per item number.
    pub fn is_item(self) -> bool {
        matches!(self, RecordKind::MailboxItem | RecordKind::MailboxDrop)
    }

    /// A receipt, of a mailbox or of a contact drop: drops the items it lists.
    pub fn is_receipt(self) -> bool {
        matches!(self, RecordKind::MailboxReceipt | RecordKind::DropReceipt)
    }

    /// Largest value accepted, in bytes.
    pub fn max_value_len(self) -> usize {
        match self {
            RecordKind::Presence => 2048,
            RecordKind::NameClaim => name::MAX_CLAIM_LEN,
            RecordKind::MailboxItem => MAX_MAILBOX_BODY + sealed::SEALED_OVERHEAD,
            RecordKind::KemKey => super::kem::KEM_PUBLIC_KEY_LEN,
            RecordKind::MailboxReceipt | RecordKind::DropReceipt => super::receipt::MAX_RECEIPT_LEN,
            RecordKind::MailboxDrop => {
                MAX_MAILBOX_BODY + sealed::SEALED_OVERHEAD + super::drop::WRAP_OVERHEAD
            }
        }
    }

    /// Longest lifetime a record may declare, in seconds from `now`.
    pub fn max_ttl_secs(self) -> u64 {
        match self {
            RecordKind::Presence => 60 * 60,
            RecordKind::NameClaim => name::CLAIM_TTL_SECS,
            RecordKind::MailboxItem => MAILBOX_TTL_SECS,
            RecordKind::KemKey => 30 * 24 * 3600,
            RecordKind::MailboxReceipt | RecordKind::MailboxDrop | RecordKind::DropReceipt => {
                MAILBOX_TTL_SECS
            }
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Longest name in a name claim (spec/08-names.md).
pub const MAX_NAME_LEN: usize = name::MAX_NAME_LEN;
/// Largest message body a mailbox item may carry.
pub const MAX_MAILBOX_BODY: usize = 64 * 1024;
/// Longest life of a mailbox item or receipt: 7 days (spec/09-mailbox.md §4).
pub const MAILBOX_TTL_SECS: u64 = 7 * 24 * 3600;

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Shorter than its declared parts.
    #[error("truncated record: need {needed} bytes, have {available}")]
    Truncated {
        /// Length required.
        needed: usize,
        /// Length given.
        available: usize,
    },
    /// Bytes after the signature.
    #[error("{count} unexpected bytes after the record")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// Unknown record version.
    #[error("unsupported record version {found}")]
    UnsupportedVersion {
        /// Version byte.
        found: u8,
    },
    /// Unknown kind number.
    #[error("unknown record kind {found}")]
    UnknownKind {
        /// Kind byte.
        found: u8,
    },
    /// The value exceeds the kind's limit (checked before the value is read).
    #[error("{kind} value of {length} bytes exceeds the limit of {max}")]
    ValueTooLarge {
        /// Record kind.
        kind: RecordKind,
        /// Declared length.
        length: usize,
        /// Limit.
        max: usize,
    },
    /// The value is not well-formed for its kind.
    #[error("invalid {kind} value: {reason}")]
    InvalidValue {
        /// Record kind.
        kind: RecordKind,
        /// What is wrong.
        reason: &'static str,
    },
    /// The DHT key is not the one derived for this publisher and kind: someone tried to
    /// write under a key that is not theirs.
    #[error("record key {found} is not the derived key {expected}")]
    KeyMismatch {
        /// The derived key.
        expected: NodeId,
        /// The key the record names.
        found: NodeId,
    },
    /// The record's expiry has passed.
    #[error("record expired at {expiry} (now {now})")]
    Expired {
        /// Declared expiry.
        expiry: u64,
        /// The time of checking.
        now: u64,
    },
    /// The expiry lies further ahead than the kind allows.
    #[error("record expiry {expiry} is beyond the allowed {max}")]
    ExpiryTooFar {
        /// Declared expiry.
        expiry: u64,
        /// Latest allowed expiry.
        max: u64,
    },
    /// The publisher key bytes are malformed.
    #[error("malformed publisher key")]
    BadPublisherKey,
    /// The signature does not verify.
    #[error("bad record signature")]
    BadSignature,
}

/// A record that was signed here or verified: every field is known to be valid.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    kind: RecordKind,
    key: NodeId,
    seq: u64,
    expiry: u64,
    publisher: PublicKey,
    value: Vec<u8>,
    signature: Vec<u8>,
}

/// The key a presence record of `publisher` lives under: H160("dna/presence" ‖ fingerprint).
pub fn presence_key(publisher: &Fingerprint) -> NodeId {
    NodeId::derive(b"dna/presence", &[&publisher.0])
}

/// The key a KEM key record of `publisher` lives under: H160("dna/kem" ‖ fingerprint).
pub fn kem_key(publisher: &Fingerprint) -> NodeId {
    NodeId::derive(b"dna/kem", &[&publisher.0])
}

/// The key mailbox items for `recipient` live under: H160("dna/mailbox" ‖ fingerprint).
pub fn mailbox_key(recipient: &Fingerprint) -> NodeId {
    NodeId::derive(b"dna/mailbox", &[&recipient.0])
}

pub use super::drop::drop_key;

/// The key claims of `name` (normalised, spec/08-names.md) live under:
/// H160("dna/name" ‖ name).
pub fn name_key(name: &str) -> NodeId {
    NodeId::derive(b"dna/name", &[name.as_bytes()])
}

/// The key a record of `kind` with `value` by `publisher` must be stored under.
fn derive_key(
    kind: RecordKind,
    publisher: &PublicKey,
    value: &[u8],
) -> Result<NodeId, RecordError> {
    let invalid = |reason| RecordError::InvalidValue { kind, reason };
    match kind {
        RecordKind::Presence => Ok(presence_key(&publisher.fingerprint())),
        RecordKind::KemKey => {
            KemPublicKey::from_bytes(value).map_err(|_| invalid("not a hybrid KEM public key"))?;
            Ok(kem_key(&publisher.fingerprint()))
        }
        RecordKind::NameClaim => {
            let claim = name::NameClaim::decode(value).ok_or(invalid(
                "not claim time + a name of 3-32 a-z 0-9 - (spec/08-names.md)",
            ))?;
            Ok(name_key(&claim.name))
        }
        RecordKind::MailboxItem => {
            let header = sealed::inspect(value).map_err(|_| invalid("not a sealed envelope"))?;
            if header.sender != *publisher {
                return Err(invalid("sealed envelope sender is not the publisher"));
            }
            Ok(mailbox_key(&header.recipient))
        }
        RecordKind::MailboxReceipt => {
            super::receipt::Receipt::decode(value).ok_or(invalid("not a mailbox receipt"))?;
            Ok(mailbox_key(&publisher.fingerprint()))
        }
        RecordKind::MailboxDrop => {
            let wrapped =
                value.len() >= super::drop::WRAP_OVERHEAD && value[0] == super::drop::DROP_VERSION;
            if !wrapped {
                return Err(invalid("not a wrapped drop item"));
            }
            Ok(drop_key(&publisher.fingerprint()))
        }
        RecordKind::DropReceipt => {
            super::receipt::Receipt::decode(value).ok_or(invalid("not a drop receipt"))?;
            Ok(drop_key(&publisher.fingerprint()))
        }
    }
}

fn check_expiry(kind: RecordKind, expiry: u64, now: u64) -> Result<(), RecordError> {
    if expiry <= now {
        return Err(RecordError::Expired { expiry, now });
    }
    let max = now.saturating_add(kind.max_ttl_secs());
    if expiry > max {
        return Err(RecordError::ExpiryTooFar { expiry, max });
    }
    Ok(())
}

impl Record {
    /// Signs a new record. `now` and `expiry` are Unix seconds.
    pub fn sign(
        identity: &Identity,
        kind: RecordKind,
        seq: u64,
        expiry: u64,
        value: Vec<u8>,
        now: u64,
    ) -> Result<Record, RecordError> {
        let max = kind.max_value_len();
        if value.len() > max {
            return Err(RecordError::ValueTooLarge {
                kind,
                length: value.len(),
                max,
            });
        }
        check_expiry(kind, expiry, now)?;
        let publisher = identity.public_key().clone();
        let key = derive_key(kind, &publisher, &value)?;
        let mut record = Record {
            kind,
            key,
            seq,
            expiry,
            publisher,
            value,
            signature: Vec::new(),
        };
        let body = record.signed_bytes();
        record.signature = identity.sign(DOMAIN, &[&body]);
        Ok(record)
    }

    /// Parses and verifies an encoded record at time `now` (Unix seconds). Cheap checks come
    /// first; the signature last.
    pub fn verify(bytes: &[u8], now: u64) -> Result<Record, RecordError> {
        let min = RECORD_HEADER_LEN + SIGNATURE_LEN;
        if bytes.len() < min {
            return Err(RecordError::Truncated {
                needed: min,
                available: bytes.len(),
            });
        }
        if bytes[field::VERSION] != VERSION {
            return Err(RecordError::UnsupportedVersion {
                found: bytes[field::VERSION],
            });
        }
        let kind = RecordKind::from_u8(bytes[field::KIND]).ok_or(RecordError::UnknownKind {
            found: bytes[field::KIND],
        })?;
        let value_len = u32::from_be_bytes(array(&bytes[field::VALUE_LEN])) as usize;
        if value_len > kind.max_value_len() {
            return Err(RecordError::ValueTooLarge {
                kind,
                length: value_len,
                max: kind.max_value_len(),
            });
        }
        let total = min + value_len;
        if bytes.len() < total {
            return Err(RecordError::Truncated {
                needed: total,
                available: bytes.len(),
            });
        }
        if bytes.len() > total {
            return Err(RecordError::TrailingBytes {
                count: bytes.len() - total,
            });
        }
        let key = NodeId(array(&bytes[field::KEY]));
        let seq = u64::from_be_bytes(array(&bytes[field::SEQ]));
        let expiry = u64::from_be_bytes(array(&bytes[field::EXPIRY]));
        check_expiry(kind, expiry, now)?;
        let publisher = PublicKey::from_bytes(&bytes[field::PUBLISHER])
            .map_err(|_| RecordError::BadPublisherKey)?;
        let value_end = RECORD_HEADER_LEN + value_len;
        let value = &bytes[RECORD_HEADER_LEN..value_end];
        let expected = derive_key(kind, &publisher, value)?;
        if expected != key {
            return Err(RecordError::KeyMismatch {
                expected,
                found: key,
            });
        }
        let (signed, signature) = bytes.split_at(value_end);
        publisher
            .verify(DOMAIN, &[signed], signature)
            .map_err(|_| RecordError::BadSignature)?;
        Ok(Record {
            kind,
            key,
            seq,
            expiry,
            publisher,
            value: value.to_vec(),
            signature: signature.to_vec(),
        })
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(RECORD_HEADER_LEN + self.value.len() + SIGNATURE_LEN);
        v.push(VERSION);
        v.push(self.kind as u8);
        v.extend_from_slice(&self.key.0);
        v.extend_from_slice(&self.seq.to_be_bytes());
        v.extend_from_slice(&self.expiry.to_be_bytes());
        v.extend_from_slice(self.publisher.as_bytes());
        // value.len() ≤ max_value_len(), far below u32::MAX.
        v.extend_from_slice(&(self.value.len() as u32).to_be_bytes());
        v.extend_from_slice(&self.value);
        debug_assert_eq!(PUBLIC_KEY_LEN, field::PUBLISHER.len());
        v
    }

    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.signed_bytes();
        v.extend_from_slice(&self.signature);
        v
    }

    /// The kind.
    pub fn kind(&self) -> RecordKind {
        self.kind
    }
    /// The DHT key it lives under.
    pub fn key(&self) -> NodeId {
        self.key
    }
    /// The publisher's sequence number; a storer keeps the highest.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// Expiry, Unix seconds.
    pub fn expiry(&self) -> u64 {
        self.expiry
    }
    /// The publisher's key.
    pub fn publisher(&self) -> &PublicKey {
        &self.publisher
    }
    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("kind", &self.kind)
            .field("key", &self.key)
            .field("seq", &self.seq)
            .field("expiry", &self.expiry)
            .field("publisher", &self.publisher.fingerprint())
            .field("value_len", &self.value.len())
            .finish()
    }
}

fn array<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    a
}

//! Records checked before they reach the node (spec/04-dht.md §6.2). A record's signature
//! check is the DHT's costliest step (Dilithium over up to 80 KB), so the driver checks in
//! the task that read the message, off the task that owns the [`Dht`](super::Dht), and
//! hands the node a [`Checked`] message; the node then only re-checks expiry.
//!
//! A [`VerifiedRecord`] exists only after [`Record::verify`] passed on its bytes, or for a
//! [`Record`] signed here: the store keeps these, never unchecked bytes.

use std::fmt;
use std::sync::Arc;

use super::rpc::{Body, DhtMessage};
use crate::crypto::{Fingerprint, NodeId, Record, RecordError, RecordKind};

/// An encoded record whose signature, key, size and expiry were checked, with the fields the
/// store needs. The bytes are shared: cloning is cheap (persistence snapshots do it).
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedRecord {
    kind: RecordKind,
    key: NodeId,
    publisher: Fingerprint,
    seq: u64,
    expiry: u64,
    bytes: Arc<[u8]>,
}

impl VerifiedRecord {
    /// Verifies `bytes` at `now` (Unix seconds).
    pub fn verify(bytes: &[u8], now: u64) -> Result<VerifiedRecord, RecordError> {
        let r = Record::verify(bytes, now)?;
        Ok(VerifiedRecord::with_bytes(&r, bytes.into()))
    }

    /// A record signed (or verified) here.
    pub fn from_record(r: &Record) -> VerifiedRecord {
        VerifiedRecord::with_bytes(r, r.encode().into())
    }

    fn with_bytes(r: &Record, bytes: Arc<[u8]>) -> VerifiedRecord {
        VerifiedRecord {
            kind: r.kind(),
            key: r.key(),
            publisher: r.publisher().fingerprint(),
            seq: r.seq(),
            expiry: r.expiry(),
            bytes,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> RecordKind {
        self.kind
    }

    /// The DHT key it lives under.
    pub fn key(&self) -> NodeId {
        self.key
    }

    /// Its publisher's fingerprint.
    pub fn publisher(&self) -> Fingerprint {
        self.publisher
    }

    /// The publisher's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Expiry, Unix seconds.
    pub fn expiry(&self) -> u64 {
        self.expiry
    }

    /// The encoded record.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Which of its publisher's records under its key this is: a mailbox item's sequence
    /// number (one slot per item, spec/09-mailbox.md §2), 0 for every other kind (one
    /// record per publisher and key).
    pub fn item(&self) -> u64 {
        match self.kind {
            k if k.is_item() => self.seq,
            _ => 0,
        }
    }

    /// The record's value (between the header and the signature).
    pub fn value(&self) -> &[u8] {
        let end = self
            .bytes
            .len()
            .saturating_sub(crate::crypto::SIGNATURE_LEN);
        self.bytes
            .get(crate::crypto::record::RECORD_HEADER_LEN..end)
            .unwrap_or(&[])
    }
}

impl fmt::Debug for VerifiedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedRecord")
            .field("key", &self.key)
            .field("publisher", &self.publisher)
            .field("seq", &self.seq)
            .field("expiry", &self.expiry)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// A DHT message whose records (a STORE's one, a VALUE's up to 8) were checked; the record
/// bytes moved out of the message into the results.
#[derive(Debug)]
pub struct Checked {
    pub(crate) msg: DhtMessage,
    pub(crate) records: Vec<Result<VerifiedRecord, RecordError>>,
}

impl Checked {
    /// Checks the records `msg` carries at `now` (Unix seconds).
    pub fn new(mut msg: DhtMessage, now: u64) -> Checked {
        let records = match &mut msg.body {
            Body::Store { record } => vec![VerifiedRecord::verify(record, now)],
            Body::Value { records, .. } => records
                .iter()
                .map(|b| VerifiedRecord::verify(b, now))
                .collect(),
            _ => Vec::new(),
        };
        match &mut msg.body {
            Body::Store { record } => *record = Vec::new(),
            Body::Value { records, .. } => records.clear(),
            _ => {}
        }
        Checked { msg, records }
    }

    /// The message (its record bytes moved out).
    pub fn message(&self) -> &DhtMessage {
        &self.msg
    }
}

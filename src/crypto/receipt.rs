//! Mailbox receipts and item numbers (spec/09-mailbox.md §2, §5).
//!
//! A mailbox item is numbered by its sender: [`item_seq`] of the message ID is the item
//! record's sequence number, so one message has one item however often it is sealed again.
//! A receipt, published by the recipient under its own mailbox key, lists the items it
//! fetched as (sender fingerprint, item number) pairs:
//!
//! ```text
//! count u16 | count × (sender fingerprint [32] | item seq u64)     integers big-endian
//! ```

use super::{Fingerprint, MessageId};

/// Most entries in one receipt: the most items a storing node holds under one mailbox key.
pub const MAX_RECEIPT_ENTRIES: usize = 1024;
/// Bytes of one entry.
pub const RECEIPT_ENTRY_LEN: usize = 40;
/// Largest receipt value.
pub const MAX_RECEIPT_LEN: usize = 2 + MAX_RECEIPT_ENTRIES * RECEIPT_ENTRY_LEN;

/// The item number of message `id`: its first 8 bytes, big-endian, with the lowest bit set
/// (never 0, the slot of records that are not items).
pub fn item_seq(id: &MessageId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.0[..8]);
    u64::from_be_bytes(b) | 1
}

/// The items a recipient fetched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// (sender, item seq) pairs, at most [`MAX_RECEIPT_ENTRIES`].
    pub entries: Vec<(Fingerprint, u64)>,
}

impl Receipt {
    /// The encoding; entries beyond [`MAX_RECEIPT_ENTRIES`] are left out (the first kept).
    pub fn encode(&self) -> Vec<u8> {
        let n = self.entries.len().min(MAX_RECEIPT_ENTRIES);
        let mut v = Vec::with_capacity(2 + n * RECEIPT_ENTRY_LEN);
        v.extend_from_slice(&(n as u16).to_be_bytes());
        for (fp, seq) in &self.entries[..n] {
            v.extend_from_slice(&fp.0);
            v.extend_from_slice(&seq.to_be_bytes());
        }
        v
    }

    /// Parses a receipt; `None` unless the bytes are exactly one.
    pub fn decode(b: &[u8]) -> Option<Receipt> {
        let n = usize::from(u16::from_be_bytes(b.get(..2)?.try_into().ok()?));
        if n > MAX_RECEIPT_ENTRIES || b.len() != 2 + n * RECEIPT_ENTRY_LEN {
            return None;
        }
        let entries = b[2..]
            .chunks_exact(RECEIPT_ENTRY_LEN)
            .map(|c| {
                let mut fp = [0u8; 32];
                fp.copy_from_slice(&c[..32]);
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&c[32..]);
                (Fingerprint(fp), u64::from_be_bytes(seq))
            })
            .collect();
        Some(Receipt { entries })
    }

    /// Whether the receipt lists item `seq` of `sender`.
    pub fn covers(&self, sender: &Fingerprint, seq: u64) -> bool {
        self.entries.iter().any(|(f, s)| f == sender && *s == seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_malformed_receipts() {
        let r = Receipt {
            entries: vec![(Fingerprint([1; 32]), 7), (Fingerprint([2; 32]), 9)],
        };
        let b = r.encode();
        assert_eq!(Receipt::decode(&b), Some(r.clone()));
        assert!(r.covers(&Fingerprint([2; 32]), 9));
        assert!(!r.covers(&Fingerprint([2; 32]), 7));
        assert_eq!(Receipt::decode(&b[..b.len() - 1]), None);
        assert_eq!(Receipt::decode(&[0xff, 0xff]), None);
        assert_eq!(Receipt::decode(&[]), None);
        assert_eq!(item_seq(&MessageId([0; 16])), 1);
    }
}

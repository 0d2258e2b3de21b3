//! A message as a mailbox item, and what a put's answer means (spec/09-mailbox.md §1.1, §7),
//! sans-IO: the record the daemon's mailbox task — and `netsim`'s mailbox scenario — puts,
//! and how many nodes hold it afterwards.

use rand_core::CryptoRngCore;

use crate::crypto::drop::ContactDrop;
use crate::crypto::receipt::item_seq;
use crate::crypto::record::RecordKind;
use crate::crypto::{sealed, Fingerprint, Identity, KemPublicKey, Record};
use crate::dht::{StoreStatus, VerifiedRecord};
use crate::session::Outgoing;

/// Why a message could not become an item.
#[derive(Debug, thiserror::Error)]
pub enum ItemError {
    /// Sealing to the recipient's KEM key failed.
    #[error("cannot seal the item: {0}")]
    Seal(#[from] crate::crypto::SealError),
    /// Wrapping for the recipient's drop failed.
    #[error("cannot wrap the item: {0}")]
    Wrap(#[from] crate::crypto::drop::DropError),
    /// Signing the record failed (a value beyond the record limits).
    #[error("cannot sign the item: {0}")]
    Sign(String),
}

/// Where an item goes and who writes it.
#[derive(Debug, Clone, Copy)]
pub struct ItemTo<'a> {
    /// The recipient.
    pub peer: Fingerprint,
    /// Its published KEM key.
    pub kem: &'a KemPublicKey,
    /// The drop it gave us, if it did: the item goes there, signed by the drop; otherwise
    /// to its requests mailbox, signed by us.
    pub drop: Option<&'a ContactDrop>,
}

/// `m` sealed by `me` to `to`, numbered by its message ID ([`item_seq`]), signed at `now_s`
/// (Unix seconds) to live `ttl_secs` (at most the item kind's).
pub fn item_record(
    me: &Identity,
    to: ItemTo<'_>,
    m: &Outgoing,
    now_s: u64,
    ttl_secs: u64,
    rng: &mut impl CryptoRngCore,
) -> Result<VerifiedRecord, ItemError> {
    let sealed = sealed::seal(
        me,
        to.peer,
        to.kem,
        m.id,
        m.timestamp_ms,
        m.kind,
        &m.body,
        rng,
    )?;
    let expiry = now_s + ttl_secs.min(RecordKind::MailboxItem.max_ttl_secs());
    let seq = item_seq(&m.id);
    let r = match to.drop {
        Some(d) => {
            let value = d.wrap(seq, &sealed, rng)?;
            Record::sign(
                d.identity(),
                RecordKind::MailboxDrop,
                seq,
                expiry,
                value,
                now_s,
            )
        }
        None => Record::sign(me, RecordKind::MailboxItem, seq, expiry, sealed, now_s),
    };
    r.map(|r| VerifiedRecord::from_record(&r))
        .map_err(|e| ItemError::Sign(e.to_string()))
}

/// How many other nodes hold an item after a put (those that stored it, and those that
/// answered `Conflict`: they hold this message's item sealed before — the item number is
/// the message's), and, if none does, why in a few words: the refusal most nodes gave, or
/// that no storing node answered.
pub fn held(stored_at: usize, asked: usize, refused: &[StoreStatus]) -> (usize, &'static str) {
    let conflict = refused
        .iter()
        .filter(|s| **s == StoreStatus::Conflict)
        .count();
    let n = stored_at + conflict;
    if n > 0 {
        return (n, "");
    }
    if asked == 0 {
        return (0, "no storing node");
    }
    let most = refused
        .iter()
        .max_by_key(|s| refused.iter().filter(|t| t == s).count())
        .map_or("no answer from the storing nodes", |s| s.reason());
    (0, most)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_counts_conflicts_and_names_the_commonest_refusal() {
        use StoreStatus::*;
        assert_eq!(held(1, 3, &[Conflict]), (2, ""));
        assert_eq!(held(0, 0, &[]), (0, "no storing node"));
        let (n, why) = held(0, 3, &[MailboxFull, MailboxFull, Refused]);
        assert_eq!((n, why), (0, MailboxFull.reason()));
        assert_eq!(held(0, 2, &[]), (0, "no answer from the storing nodes"));
    }
}

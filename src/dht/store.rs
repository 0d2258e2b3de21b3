//! The record store of a DHT node (spec/04-dht.md §4): signed records (spec/02-crypto.md §8)
//! verified before they are kept, keyed by (DHT key, publisher).
//!
//! Rules: a lower sequence number than the one held is refused; an equal one only with
//! identical bytes; expired records are dropped; quotas bound how much one publisher and one
//! source address may store.

use std::collections::HashMap;
use std::net::IpAddr;

use thiserror::Error;

use crate::crypto::{Fingerprint, NodeId, Record, RecordError};

/// Store limits.
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// Records held in total (default 100,000).
    pub max_records: usize,
    /// Records one publisher may hold here (default 64).
    pub per_publisher: usize,
    /// Records one source address may have stored here (default 512).
    pub per_source: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_records: 100_000,
            per_publisher: 64,
            per_source: 512,
        }
    }
}

/// Why a record was not stored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record did not verify.
    #[error("invalid record: {0}")]
    Invalid(#[from] RecordError),
    /// A newer record of this publisher is held.
    #[error("stale record: sequence {got} is below the {held} held")]
    Stale {
        /// Sequence held.
        held: u64,
        /// Sequence offered.
        got: u64,
    },
    /// Same sequence, different bytes.
    #[error("conflicting record: sequence {seq} is held with other content")]
    Conflict {
        /// The sequence.
        seq: u64,
    },
    /// The publisher holds its quota here.
    #[error("publisher quota reached")]
    PublisherQuota,
    /// The source address stored its quota here.
    #[error("source address quota reached")]
    SourceQuota,
    /// The store is full.
    #[error("store full")]
    Full,
}

/// What a successful `put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A new record.
    New,
    /// Replaced an older sequence.
    Updated,
    /// The identical record was already held.
    Unchanged,
}

#[derive(Debug, Clone)]
struct Held {
    record: Record,
    bytes: Vec<u8>,
    source: IpAddr,
}

/// Records held by one node.
#[derive(Debug, Default)]
pub struct RecordStore {
    cfg: StoreConfig,
    records: HashMap<(NodeId, Fingerprint), Held>,
    by_publisher: HashMap<Fingerprint, usize>,
    by_source: HashMap<IpAddr, usize>,
}

impl RecordStore {
    /// An empty store.
    pub fn new(cfg: StoreConfig) -> RecordStore {
        RecordStore {
            cfg,
            ..RecordStore::default()
        }
    }

    /// Verifies and stores an encoded record received from `source` at `now` (Unix seconds).
    pub fn put(&mut self, bytes: &[u8], source: IpAddr, now: u64) -> Result<Stored, StoreError> {
        let record = Record::verify(bytes, now)?;
        let publisher = record.publisher().fingerprint();
        let slot = (record.key(), publisher);
        if let Some(held) = self.records.get_mut(&slot) {
            let have = held.record.seq();
            return match record.seq().cmp(&have) {
                std::cmp::Ordering::Less => Err(StoreError::Stale {
                    held: have,
                    got: record.seq(),
                }),
                std::cmp::Ordering::Equal if held.bytes == bytes => Ok(Stored::Unchanged),
                std::cmp::Ordering::Equal => Err(StoreError::Conflict { seq: have }),
                std::cmp::Ordering::Greater => {
                    held.record = record;
                    held.bytes = bytes.to_vec();
                    Ok(Stored::Updated)
                }
            };
        }
        if self.records.len() >= self.cfg.max_records {
            self.expire(now);
            if self.records.len() >= self.cfg.max_records {
                return Err(StoreError::Full);
            }
        }
        if self.by_publisher.get(&publisher).copied().unwrap_or(0) >= self.cfg.per_publisher {
            return Err(StoreError::PublisherQuota);
        }
        if self.by_source.get(&source).copied().unwrap_or(0) >= self.cfg.per_source {
            return Err(StoreError::SourceQuota);
        }
        *self.by_publisher.entry(publisher).or_default() += 1;
        *self.by_source.entry(source).or_default() += 1;
        self.records.insert(
            slot,
            Held {
                record,
                bytes: bytes.to_vec(),
                source,
            },
        );
        Ok(Stored::New)
    }

    /// The encoded records under `key` that have not expired at `now`, newest sequence first.
    pub fn get(&self, key: &NodeId, now: u64) -> Vec<&[u8]> {
        let mut found: Vec<&Held> = self
            .records
            .iter()
            .filter(|((k, _), h)| k == key && h.record.expiry() > now)
            .map(|(_, h)| h)
            .collect();
        found.sort_by_key(|h| std::cmp::Reverse(h.record.seq()));
        found.into_iter().map(|h| h.bytes.as_slice()).collect()
    }

    /// Drops expired records.
    pub fn expire(&mut self, now: u64) {
        let dead: Vec<(NodeId, Fingerprint)> = self
            .records
            .iter()
            .filter(|(_, h)| h.record.expiry() <= now)
            .map(|(k, _)| *k)
            .collect();
        for slot in dead {
            if let Some(h) = self.records.remove(&slot) {
                decrement(&mut self.by_publisher, &slot.1);
                decrement(&mut self.by_source, &h.source);
            }
        }
    }

    /// Every record held, encoded (for replication and persistence).
    pub fn all(&self) -> impl Iterator<Item = (&Record, &[u8])> {
        self.records
            .values()
            .map(|h| (&h.record, h.bytes.as_slice()))
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

fn decrement<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: &K) {
    if let Some(n) = m.get_mut(k) {
        *n -= 1;
        if *n == 0 {
            m.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Identity, RecordKind};
    use rand_core::OsRng;

    const NOW: u64 = 1_800_000_000;

    fn presence(id: &Identity, seq: u64, value: &[u8]) -> Vec<u8> {
        Record::sign(
            id,
            RecordKind::Presence,
            seq,
            NOW + 600,
            value.to_vec(),
            NOW,
        )
        .unwrap()
        .encode()
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn newer_replaces_older_is_refused_equal_only_if_identical() {
        let id = Identity::generate(&mut OsRng);
        let mut s = RecordStore::new(StoreConfig::default());
        assert_eq!(s.put(&presence(&id, 5, b"a"), ip(1), NOW), Ok(Stored::New));
        assert_eq!(
            s.put(&presence(&id, 5, b"a"), ip(1), NOW),
            Ok(Stored::Unchanged)
        );
        assert_eq!(
            s.put(&presence(&id, 5, b"b"), ip(1), NOW),
            Err(StoreError::Conflict { seq: 5 })
        );
        assert_eq!(
            s.put(&presence(&id, 4, b"old"), ip(1), NOW),
            Err(StoreError::Stale { held: 5, got: 4 })
        );
        assert_eq!(
            s.put(&presence(&id, 6, b"new"), ip(1), NOW),
            Ok(Stored::Updated)
        );
        let key = crate::crypto::record::presence_key(&id.fingerprint());
        let got = s.get(&key, NOW);
        assert_eq!(got.len(), 1);
        assert_eq!(Record::verify(got[0], NOW).unwrap().value(), b"new");
    }

    #[test]
    fn invalid_records_are_refused() {
        let id = Identity::generate(&mut OsRng);
        let mut s = RecordStore::new(StoreConfig::default());
        let mut forged = presence(&id, 1, b"a");
        let n = forged.len();
        forged[n - 1] ^= 1;
        assert_eq!(
            s.put(&forged, ip(1), NOW),
            Err(StoreError::Invalid(RecordError::BadSignature))
        );
        assert!(matches!(
            s.put(&[1, 2, 3], ip(1), NOW),
            Err(StoreError::Invalid(_))
        ));
        assert!(s.is_empty());
    }

    #[test]
    fn records_under_someone_elses_key_and_oversized_records_are_refused() {
        let alice = Identity::generate(&mut OsRng);
        let bob = Identity::generate(&mut OsRng);
        let mut s = RecordStore::new(StoreConfig::default());
        // Alice's correctly signed record, re-keyed under Bob's presence key and re-signed.
        let mut bytes = presence(&alice, 1, b"a");
        bytes[2..22].copy_from_slice(&crate::crypto::record::presence_key(&bob.fingerprint()).0);
        bytes.truncate(bytes.len() - crate::crypto::SIGNATURE_LEN);
        let sig = alice.sign(crate::crypto::record::DOMAIN, &[&bytes]);
        bytes.extend_from_slice(&sig);
        assert!(matches!(
            s.put(&bytes, ip(1), NOW),
            Err(StoreError::Invalid(RecordError::KeyMismatch { .. }))
        ));
        // A value over the presence limit, declared in the header.
        let mut big = presence(&alice, 1, b"a");
        big[1990..1994].copy_from_slice(&(1u32 << 20).to_be_bytes());
        assert!(matches!(
            s.put(&big, ip(1), NOW),
            Err(StoreError::Invalid(RecordError::ValueTooLarge { .. }))
        ));
        assert!(s.is_empty());
    }

    #[test]
    fn quotas_and_expiry() {
        let cfg = StoreConfig {
            max_records: 10,
            per_publisher: 1,
            per_source: 2,
        };
        let mut s = RecordStore::new(cfg);
        let ids: Vec<Identity> = (0..3).map(|_| Identity::generate(&mut OsRng)).collect();
        let a = &ids[0];
        s.put(&presence(a, 1, b"x"), ip(1), NOW).unwrap();
        let name = Record::sign(
            a,
            RecordKind::NameClaim,
            1,
            NOW + 60,
            b"alice".to_vec(),
            NOW,
        )
        .unwrap()
        .encode();
        assert_eq!(s.put(&name, ip(2), NOW), Err(StoreError::PublisherQuota));
        s.put(&presence(&ids[1], 1, b"x"), ip(1), NOW).unwrap();
        assert_eq!(
            s.put(&presence(&ids[2], 1, b"x"), ip(1), NOW),
            Err(StoreError::SourceQuota)
        );
        assert_eq!(
            s.put(&presence(&ids[2], 1, b"x"), ip(3), NOW),
            Ok(Stored::New)
        );
        // All expire at NOW + 600.
        s.expire(NOW + 600);
        assert!(s.is_empty());
        assert_eq!(
            s.put(&presence(&ids[2], 2, b"y"), ip(1), NOW + 1),
            Ok(Stored::New),
            "quotas freed"
        );
    }
}

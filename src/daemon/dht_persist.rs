//! The DHT's memory across restarts (spec/04-dht.md §6.1): routing-table contacts and held
//! records in a sled database in the data directory. Loaded at start — so the saved table is
//! tried before the bootstrap nodes — and saved every 30 s and at shutdown.
//!
//! A save writes a [`Snapshot`] the core task took (it owns the DHT), on a blocking thread: the
//! table (a few thousand small entries, rewritten whole) and the records that changed since
//! the last save (all of them only the first time, or after a failed save). Each record is
//! saved under its slot (key ‖ publisher fingerprint) with the address that stored it, so the
//! store's quotas apply to it again after a restart.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use crate::crypto::{NodeId, NODE_ID_LEN};
use crate::dht::{Contact, StoreChanges};

/// The database file's directory name inside the data directory.
pub const DB_DIR: &str = "dht.sled";

/// Records as saved before they carried their source (read once, then dropped).
const LEGACY_RECORDS: &str = "records";

pub(crate) struct Persist {
    table: sled::Tree,
    held: sled::Tree,
    db: sled::Db,
}

/// A saved record: the address that stored it (`None`: this node) and its encoding.
pub(crate) type SavedRecord = (Option<IpAddr>, Vec<u8>);

/// What to write: taken by the task that owns the DHT, written on a blocking thread.
pub(crate) struct Snapshot {
    pub(crate) contacts: Vec<Contact>,
    pub(crate) changes: StoreChanges,
}

impl Snapshot {
    /// The table and the store's changes now (the node core builds the same in its
    /// `Output::DhtSave`).
    #[cfg(test)]
    fn take(dht: &mut crate::dht::Dht) -> Snapshot {
        Snapshot {
            contacts: dht.table().contacts().collect(),
            changes: dht.take_store_changes(),
        }
    }

    /// Records it writes (and removes).
    pub(crate) fn records(&self) -> (usize, usize) {
        (self.changes.upserts.len(), self.changes.removed.len())
    }
}

/// `key [20] | publisher [32]`, and for a mailbox item its number (u64 BE).
fn slot_key(key: &NodeId, publisher: &crate::crypto::Fingerprint, item: u64) -> Vec<u8> {
    let mut k = [&key.0[..], &publisher.0[..]].concat();
    if item != 0 {
        k.extend_from_slice(&item.to_be_bytes());
    }
    k
}

/// `tag u8 (0 this node, 4, 6) | address | record`.
fn encode_held(source: Option<IpAddr>, record: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(17 + record.len());
    match source {
        None => v.push(0),
        Some(IpAddr::V4(a)) => {
            v.push(4);
            v.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            v.push(6);
            v.extend_from_slice(&a.octets());
        }
    }
    v.extend_from_slice(record);
    v
}

fn decode_held(v: &[u8]) -> Option<SavedRecord> {
    let (&tag, rest) = v.split_first()?;
    match tag {
        0 => Some((None, rest.to_vec())),
        4 if rest.len() >= 4 => {
            let a: [u8; 4] = rest[..4].try_into().ok()?;
            Some((Some(IpAddr::from(a)), rest[4..].to_vec()))
        }
        6 if rest.len() >= 16 => {
            let a: [u8; 16] = rest[..16].try_into().ok()?;
            Some((Some(IpAddr::from(a)), rest[16..].to_vec()))
        }
        _ => None,
    }
}

impl Persist {
    pub(crate) fn open(data_dir: &Path) -> sled::Result<Persist> {
        let db = sled::open(data_dir.join(DB_DIR))?;
        Ok(Persist {
            table: db.open_tree("table")?,
            held: db.open_tree("held")?,
            db,
        })
    }

    /// Saved contacts and records (with the address that stored them). Entries that do not
    /// parse are skipped (and reported): the records are verified again when loaded into
    /// the store.
    pub(crate) fn load(&self) -> (Vec<Contact>, Vec<SavedRecord>) {
        let mut contacts = Vec::new();
        for item in self.table.iter().flatten() {
            let (k, v) = item;
            let id: Option<[u8; NODE_ID_LEN]> = k.as_ref().try_into().ok();
            let addr = std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse::<SocketAddr>().ok());
            match (id, addr) {
                (Some(id), Some(addr)) => contacts.push(Contact {
                    id: NodeId(id),
                    addr,
                }),
                _ => tracing::warn!("skipping a damaged saved DHT contact"),
            }
        }
        let mut records = Vec::new();
        for (_, v) in self.held.iter().flatten() {
            match decode_held(&v) {
                Some(r) => records.push(r),
                None => tracing::warn!("skipping a damaged saved DHT record"),
            }
        }
        let legacy = self
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == LEGACY_RECORDS.as_bytes());
        if let (true, Ok(t)) = (legacy, self.db.open_tree(LEGACY_RECORDS)) {
            records.extend(t.iter().flatten().map(|(_, v)| (None, v.to_vec())));
        }
        (contacts, records)
    }

    /// Writes `snap`: the table whole, the records that changed (all of them if the
    /// snapshot is full, replacing what was saved).
    pub(crate) fn write(&self, snap: &Snapshot) -> sled::Result<()> {
        self.table.clear()?;
        for c in &snap.contacts {
            self.table.insert(c.id.0, c.addr.to_string().as_bytes())?;
        }
        let ch = &snap.changes;
        if ch.full {
            self.held.clear()?;
            self.db.drop_tree(LEGACY_RECORDS)?;
        }
        for (rec, source) in &ch.upserts {
            self.held.insert(
                slot_key(&rec.key(), &rec.publisher(), rec.item()),
                encode_held(*source, rec.bytes()),
            )?;
        }
        for (key, publisher, item) in &ch.removed {
            self.held.remove(slot_key(key, publisher, *item))?;
        }
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Identity, Record, RecordKind};
    use crate::dht::{Dht, DhtConfig};
    use rand_core::OsRng;
    use std::time::{Duration, Instant};

    #[test]
    fn saves_write_only_what_changed_and_records_come_back_with_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let unix = 1_800_000_000;
        let mut dht = Dht::new(NodeId([1; 20]), DhtConfig::default(), (now, unix), 1);
        let (a, b) = (
            Identity::generate(&mut OsRng),
            Identity::generate(&mut OsRng),
        );
        let rec = |id: &Identity, seq, ttl| {
            Record::sign(
                id,
                RecordKind::Presence,
                seq,
                unix + ttl,
                vec![seq as u8],
                unix,
            )
            .unwrap()
            .encode()
        };
        let from: IpAddr = "2001:db8::7".parse().unwrap();
        dht.restore_record(&rec(&a, 1, 3000), Some(from), now)
            .unwrap();
        dht.restore_record(&rec(&b, 1, 10), None, now).unwrap();
        let p = Persist::open(dir.path()).unwrap();
        let snap = Snapshot::take(&mut dht);
        assert_eq!(snap.records(), (2, 0));
        p.write(&snap).unwrap();
        assert_eq!(
            Snapshot::take(&mut dht).records(),
            (0, 0),
            "nothing changed"
        );
        // A newer record of A: one write. B's expires at the next refresh: one removal.
        dht.restore_record(&rec(&a, 2, 3000), Some(from), now)
            .unwrap();
        dht.handle_timeout(now + Duration::from_secs(301));
        let snap = Snapshot::take(&mut dht);
        assert_eq!(snap.records(), (1, 1));
        p.write(&snap).unwrap();
        drop(p);
        let (_, records) = Persist::open(dir.path()).unwrap().load();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0], (Some(from), rec(&a, 2, 3000)));
    }

    #[test]
    fn held_values_carry_their_source() {
        for source in [
            None,
            Some(IpAddr::from([198, 18, 0, 1])),
            Some("2001:db8::1".parse().unwrap()),
        ] {
            let v = encode_held(source, b"record");
            assert_eq!(decode_held(&v), Some((source, b"record".to_vec())));
        }
        assert_eq!(decode_held(&[4, 1, 2]), None);
        assert_eq!(decode_held(&[9]), None);
    }
}

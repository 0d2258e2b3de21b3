//! The DHT's memory across restarts (spec/04-dht.md §6.1): routing-table contacts and held
//! records in a sled database in the data directory. Loaded at start — so the saved table is
//! tried before the bootstrap nodes — and saved every 30 s and at shutdown.

use std::net::SocketAddr;
use std::path::Path;

use crate::crypto::{NodeId, NODE_ID_LEN};
use crate::dht::{Contact, Dht};

/// The database file's directory name inside the data directory.
pub const DB_DIR: &str = "dht.sled";

pub(crate) struct Persist {
    table: sled::Tree,
    records: sled::Tree,
    db: sled::Db,
}

impl Persist {
    pub(crate) fn open(data_dir: &Path) -> sled::Result<Persist> {
        let db = sled::open(data_dir.join(DB_DIR))?;
        Ok(Persist {
            table: db.open_tree("table")?,
            records: db.open_tree("records")?,
            db,
        })
    }

    /// Saved contacts and records. Entries that do not parse are skipped (and reported):
    /// the records are verified again when loaded into the store.
    pub(crate) fn load(&self) -> (Vec<Contact>, Vec<Vec<u8>>) {
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
        let records = self
            .records
            .iter()
            .flatten()
            .map(|(_, v)| v.to_vec())
            .collect();
        (contacts, records)
    }

    /// Replaces what is saved with the current table and records.
    pub(crate) fn save(&self, dht: &Dht) -> sled::Result<()> {
        self.table.clear()?;
        for c in dht.table().contacts() {
            self.table.insert(c.id.0, c.addr.to_string().as_bytes())?;
        }
        self.records.clear()?;
        for (i, (_, bytes)) in dht.store().all().enumerate() {
            self.records.insert((i as u64).to_be_bytes(), bytes)?;
        }
        self.db.flush()?;
        Ok(())
    }
}

//! Contact drops kept by the daemon (spec/09-mailbox.md §1.1): our own drop, kept in
//! `<store dir>/drop.key`, and the one before it, `drop.prev.key`, still fetched for
//! [`PREVIOUS_KEPT`] after a rotation; the drops our contacts gave us, in
//! `<store dir>/drops/<fp>`; and the contacts ours went to, `<store dir>/drops/sent`.
//! Removing a contact rotates our drop ([`Drops::rotate`]): the new one goes to the
//! remaining contacts, and the removed one cannot write to it. A leaf: the task that hands
//! drops out and takes them in is `drop_app`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand_core::OsRng;

use super::os::{lock, write_private};
use crate::crypto::drop::ContactDrop;
use crate::crypto::Fingerprint;

const OWN_FILE: &str = "drop.key";
const PREV_FILE: &str = "drop.prev.key";
/// How long the drop before a rotation is still fetched: its items' longest life.
pub(crate) const PREVIOUS_KEPT: Duration =
    Duration::from_secs(crate::crypto::record::MAILBOX_TTL_SECS);
const DIR: &str = "drops";
const SENT_FILE: &str = "sent";

/// Our drop and our contacts' drops.
pub(crate) struct Drops {
    dir: PathBuf,
    store_dir: PathBuf,
    own: Mutex<Arc<ContactDrop>>,
    /// When our drop was made (its file's time).
    own_since: Mutex<SystemTime>,
    /// The drop before the last rotation, until when it is fetched.
    previous: Mutex<Option<(Arc<ContactDrop>, SystemTime)>>,
    theirs: Mutex<HashMap<Fingerprint, Arc<ContactDrop>>>,
    sent: Mutex<HashSet<Fingerprint>>,
}

impl Drops {
    /// Loads (or makes) our drop and loads the drops kept in `store_dir`. Files that do not
    /// parse are reported and skipped.
    pub(crate) fn open(store_dir: &Path) -> std::io::Result<Drops> {
        let dir = store_dir.join(DIR);
        create_private_dir(&dir)?;
        let own_path = store_dir.join(OWN_FILE);
        let own = match std::fs::read(&own_path) {
            Ok(bytes) => ContactDrop::decode(&bytes).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let d = ContactDrop::generate(&mut OsRng);
                write_private(&own_path, &d.encode())?;
                d
            }
            Err(e) => return Err(e),
        };
        let own_since = std::fs::metadata(&own_path)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        let previous = std::fs::read(store_dir.join(PREV_FILE))
            .ok()
            .and_then(|b| ContactDrop::decode(&b).ok())
            .and_then(|d| {
                let rotated = std::fs::metadata(store_dir.join(PREV_FILE))
                    .and_then(|m| m.modified())
                    .ok()?;
                Some((Arc::new(d), rotated + PREVIOUS_KEPT))
            });
        let mut theirs = HashMap::new();
        for e in std::fs::read_dir(&dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(fp) = name.parse::<Fingerprint>() else {
                continue;
            };
            match std::fs::read(e.path()).map(|b| ContactDrop::decode(&b)) {
                Ok(Ok(d)) => {
                    theirs.insert(fp, Arc::new(d));
                }
                _ => {
                    tracing::warn!(file = %e.path().display(), "skipping a contact drop that does not load")
                }
            }
        }
        let sent = std::fs::read_to_string(dir.join(SENT_FILE))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        Ok(Drops {
            dir,
            store_dir: store_dir.to_path_buf(),
            own: Mutex::new(Arc::new(own)),
            own_since: Mutex::new(own_since),
            previous: Mutex::new(previous),
            theirs: Mutex::new(theirs),
            sent: Mutex::new(sent),
        })
    }

    /// Our drop: our contacts write to it.
    pub(crate) fn own(&self) -> Arc<ContactDrop> {
        lock(&self.own).clone()
    }

    /// Our drops to fetch at `now`: the current one, and the one before a rotation while
    /// its items may live.
    pub(crate) fn to_fetch(&self, now: SystemTime) -> Vec<Arc<ContactDrop>> {
        let mut v = vec![self.own()];
        if let Some((d, until)) = lock(&self.previous).as_ref() {
            if now < *until {
                v.push(d.clone());
            }
        }
        v
    }

    /// Rotates our drop if it was made `epoch` or longer before `now`; returns whether it
    /// did.
    pub(crate) async fn rotate_if_older(
        &self,
        epoch: Duration,
        now: SystemTime,
    ) -> std::io::Result<bool> {
        let since = *lock(&self.own_since);
        if now.duration_since(since).unwrap_or_default() < epoch {
            return Ok(false);
        }
        self.rotate().await.map(|()| true)
    }

    /// A new drop of ours (a contact was removed: it must not write to the new one; or
    /// its epoch is over, [`Drops::rotate_if_older`]). The
    /// old one is kept for fetching ([`PREVIOUS_KEPT`]); the new one goes to every
    /// remaining contact (the list of where ours went is emptied). Files are written off
    /// the async workers.
    pub(crate) async fn rotate(&self) -> std::io::Result<()> {
        let new = Arc::new(ContactDrop::generate(&mut OsRng));
        let old = self.own();
        let (dir, store_dir) = (self.dir.clone(), self.store_dir.clone());
        let (new_bytes, old_bytes) = (new.encode(), old.encode());
        tokio::task::spawn_blocking(move || {
            write_private(&store_dir.join(PREV_FILE), &old_bytes)?;
            write_private(&store_dir.join(OWN_FILE), &new_bytes)?;
            write_private(&dir.join(SENT_FILE), b"")
        })
        .await
        .map_err(std::io::Error::other)??;
        *lock(&self.previous) = Some((old, SystemTime::now() + PREVIOUS_KEPT));
        *lock(&self.own) = new;
        *lock(&self.own_since) = SystemTime::now();
        lock(&self.sent).clear();
        Ok(())
    }

    /// The contacts our drop went to.
    pub(crate) fn sent(&self) -> HashSet<Fingerprint> {
        lock(&self.sent).clone()
    }

    /// Our drop is due to `peer` again (the list on disk follows at the next
    /// [`Drops::mark_sent`]).
    pub(crate) fn unsend(&self, peer: &Fingerprint) {
        lock(&self.sent).remove(peer);
    }

    /// The drop `peer` gave us, if it is a contact that did.
    pub(crate) fn of(&self, peer: &Fingerprint) -> Option<Arc<ContactDrop>> {
        lock(&self.theirs).get(peer).cloned()
    }

    /// Keeps `peer`'s drop (written off the async workers); returns whether it is new or
    /// changed.
    pub(crate) async fn learn(&self, peer: Fingerprint, bytes: &[u8]) -> Result<bool, String> {
        let d = ContactDrop::decode(bytes).map_err(|e| e.to_string())?;
        if self
            .of(&peer)
            .is_some_and(|old| old.fingerprint() == d.fingerprint())
        {
            return Ok(false);
        }
        let path = self.dir.join(peer.to_string());
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || write_private(&path, &bytes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        lock(&self.theirs).insert(peer, Arc::new(d));
        Ok(true)
    }

    /// Records that our drop went to `peers` (written off the async workers).
    pub(crate) async fn mark_sent(&self, peers: &[Fingerprint]) -> Result<(), String> {
        let text = {
            let mut sent = lock(&self.sent);
            sent.extend(peers.iter().copied());
            sent.iter().map(|f| format!("{f}\n")).collect::<String>()
        };
        let path = self.dir.join(SENT_FILE);
        tokio::task::spawn_blocking(move || write_private(&path, text.as_bytes()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A drop made an epoch ago rotates, once: the old one is still fetched, and the new
    /// one is due to every contact again.
    #[tokio::test]
    async fn a_drop_rotates_when_its_epoch_is_over() {
        let dir = std::env::temp_dir().join(format!("dna-drops-{}", rand::random::<u64>()));
        let epoch = Duration::from_secs(28 * 24 * 3600);
        let first = {
            let d = Drops::open(&dir).unwrap();
            d.mark_sent(&[Fingerprint([7; 32])]).await.unwrap();
            d.own().fingerprint()
        };
        // The file says the drop was made 29 days ago.
        let f = std::fs::File::options()
            .write(true)
            .open(dir.join(OWN_FILE))
            .unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(29 * 24 * 3600))
            .unwrap();
        let d = Drops::open(&dir).unwrap();
        assert_eq!(d.own().fingerprint(), first);
        let now = SystemTime::now();
        assert!(d.rotate_if_older(epoch, now).await.unwrap(), "rotated");
        assert_ne!(d.own().fingerprint(), first);
        assert!(d.sent().is_empty(), "the new drop is due to every contact");
        let fetched: Vec<_> = d.to_fetch(now).iter().map(|d| d.fingerprint()).collect();
        assert!(fetched.contains(&first), "the old one is still fetched");
        assert!(!d.rotate_if_older(epoch, now).await.unwrap(), "once");
        // And after a restart the new drop's time is its file's.
        let again = Drops::open(&dir).unwrap();
        assert!(!again.rotate_if_older(epoch, now).await.unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

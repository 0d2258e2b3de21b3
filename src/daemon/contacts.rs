//! The contact list (spec/08-names.md §5): fingerprints pinned on first use, under a name
//! and/or a local alias; and [`Names`], which keeps it with our own claimed names in
//! `<data dir>/names.json` (owner-only, replaced atomically). The DHT side is `names`.
//!
//! Trust on first use: the first fingerprint a name resolved to is pinned; a later
//! resolution of that name (or alias) to another key is refused with both fingerprints in
//! the error, never silently followed. Removing the contact is the explicit way to accept a
//! new key.

use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::os::lock;

use crate::crypto::name::{normalize, NameError};
use crate::crypto::Fingerprint;

/// Most contacts kept (the list is the user's own; the bound keeps the file and each
/// lookup small).
pub const MAX_CONTACTS: usize = 10_000;

/// One pinned contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The pinned key's fingerprint (hex).
    pub fingerprint: String,
    /// The DHT name it was added by, if any.
    pub name: Option<String>,
    /// A local alias, if given (same character rules as names).
    pub alias: Option<String>,
    /// When it was pinned (Unix milliseconds).
    pub added_ms: u64,
    /// Whether a relay may carry sessions with it when no direct path exists (the user's
    /// consent under `relay = "ask"`: `dna contacts allow-relay`; seed 003).
    #[serde(default)]
    pub allow_relay: bool,
}

impl Contact {
    /// The pinned fingerprint.
    pub fn fp(&self) -> Option<Fingerprint> {
        self.fingerprint.parse().ok()
    }

    fn answers_to(&self, label: &str) -> bool {
        self.alias.as_deref() == Some(label) || self.name.as_deref() == Some(label)
    }
}

/// Why a contact operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContactError {
    /// The name or alias is pinned to another key.
    #[error(
        "KEY CHANGED: {label:?} is pinned to {pinned}, but now resolves to {resolved}; refused \
         (if the change is expected, `dna contacts remove {label}` and add it again)"
    )]
    KeyChanged {
        /// The name or alias.
        label: String,
        /// The fingerprint pinned on first use.
        pinned: Fingerprint,
        /// The fingerprint it resolves to now.
        resolved: Fingerprint,
    },
    /// No contact answers to this.
    #[error("no contact {0:?}")]
    NotFound(String),
    /// The list could not be saved.
    #[error("{0}")]
    Save(#[from] SaveError),
    /// The list holds [`MAX_CONTACTS`].
    #[error("the contact list is full ({MAX_CONTACTS} contacts)")]
    Full,
    /// The alias breaks the name rules.
    #[error("bad alias: {0}")]
    BadAlias(NameError),
}

/// The file, in the data directory.
pub const NAMES_FILE: &str = "names.json";

/// The names file could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("saving {NAMES_FILE}: {0}")]
pub struct SaveError(pub String);

/// A name we claimed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnName {
    /// The name.
    pub name: String,
    /// Its claim time, kept by every republish (Unix seconds).
    pub claimed_at: u64,
}

/// What `names.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct NamesFile {
    #[serde(default)]
    pub(crate) names: Vec<OwnName>,
    #[serde(default)]
    pub(crate) contacts: ContactBook,
}

/// The node's names and contacts, with the file they are kept in (none: memory only).
pub(crate) struct Names {
    path: Option<PathBuf>,
    /// What the file holds now; readers take it briefly, never across I/O.
    state: Mutex<NamesFile>,
    /// One update at a time: held across the file write (on a blocking thread), so updates
    /// reach the file in order and none is lost between two writers.
    writer: tokio::sync::Mutex<()>,
}

impl Names {
    /// Loads `<dir>/names.json`: empty if missing; if unreadable, it is renamed to
    /// `names.json.corrupt` (a warning, not a failure) so its pins are not overwritten.
    pub(crate) fn open(dir: Option<&std::path::Path>) -> Names {
        let path = dir.map(|d| d.join(NAMES_FILE));
        let state = match path.as_ref().map(std::fs::read) {
            Some(Ok(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                // Kept aside, not overwritten: it holds the pins.
                let p = path.as_ref().map(|p| p.with_extension("json.corrupt"));
                if let (Some(from), Some(to)) = (path.as_ref(), p.as_ref()) {
                    let _ = std::fs::rename(from, to);
                }
                tracing::warn!(error = %e, kept = ?p, "{NAMES_FILE} unreadable: moved aside, starting without names");
                NamesFile::default()
            }),
            _ => NamesFile::default(),
        };
        Names {
            path,
            state: Mutex::new(state),
            writer: tokio::sync::Mutex::new(()),
        }
    }

    /// Applies `f` to a copy and, if it succeeded, writes the file (temporary file, fsync,
    /// rename) on a blocking thread, then makes the copy current: the async workers never
    /// wait on the disk.
    pub(crate) async fn update<T, E: From<SaveError>>(
        &self,
        f: impl FnOnce(&mut NamesFile) -> Result<T, E>,
    ) -> Result<T, E> {
        let _writer = self.writer.lock().await;
        let mut next = lock(&self.state).clone();
        let out = f(&mut next)?;
        if let Some(p) = self.path.clone() {
            let bytes = serde_json::to_vec_pretty(&next).map_err(|e| SaveError(e.to_string()))?;
            tokio::task::spawn_blocking(move || super::os::write_private(&p, &bytes))
                .await
                .map_err(|e| SaveError(e.to_string()))?
                .map_err(|e| SaveError(e.to_string()))?;
        }
        *lock(&self.state) = next;
        Ok(out)
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&NamesFile) -> T) -> T {
        f(&lock(&self.state))
    }
}

/// The contact list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactBook {
    contacts: Vec<Contact>,
}

impl ContactBook {
    /// Every contact, in the order added.
    pub fn list(&self) -> &[Contact] {
        &self.contacts
    }

    /// Whether the contact pinned to `fp` allows a relay.
    pub fn allows_relay(&self, fp: &Fingerprint) -> bool {
        self.contacts
            .iter()
            .any(|c| c.allow_relay && c.fp().as_ref() == Some(fp))
    }

    /// Allows (or no longer allows) a relay for the contact `label` names.
    pub fn set_allow_relay(&mut self, label: &str, allow: bool) -> Result<Contact, ContactError> {
        let c = self
            .contacts
            .iter_mut()
            .find(|c| c.answers_to(label) || c.fingerprint == label)
            .ok_or_else(|| ContactError::NotFound(label.to_owned()))?;
        c.allow_relay = allow;
        Ok(c.clone())
    }

    /// The contact `label` names: an alias, a name, or a full fingerprint.
    pub fn lookup(&self, label: &str) -> Option<&Contact> {
        let lower = label.to_ascii_lowercase();
        self.contacts
            .iter()
            .find(|c| c.alias.as_deref() == Some(&lower))
            .or_else(|| {
                self.contacts
                    .iter()
                    .find(|c| c.name.as_deref() == Some(&lower))
            })
            .or_else(|| self.contacts.iter().find(|c| c.fingerprint == lower))
    }

    /// Refuses `resolved` as the key of `label` if a contact pinned another key under it.
    pub fn check(&self, label: &str, resolved: &Fingerprint) -> Result<(), ContactError> {
        match self
            .contacts
            .iter()
            .find(|c| c.answers_to(label) && c.fp().as_ref() != Some(resolved))
        {
            Some(c) => Err(ContactError::KeyChanged {
                label: label.to_string(),
                pinned: c.fp().unwrap_or(Fingerprint([0; 32])),
                resolved: *resolved,
            }),
            None => Ok(()),
        }
    }

    /// Pins `fp` (known by `name`, if it was resolved from one) under `alias`. Returns the
    /// contact and whether it is new. A name or alias already pinned to another key is
    /// refused ([`ContactError::KeyChanged`]); for a contact already pinned, a new alias
    /// replaces the old and a name is filled in if it had none.
    pub fn pin(
        &mut self,
        fp: Fingerprint,
        name: Option<String>,
        alias: Option<&str>,
        now_ms: u64,
    ) -> Result<(Contact, bool), ContactError> {
        let alias = alias
            .map(normalize)
            .transpose()
            .map_err(ContactError::BadAlias)?;
        for label in name.iter().chain(alias.iter()) {
            self.check(label, &fp)?;
        }
        let hex = fp.to_string();
        if let Some(c) = self.contacts.iter_mut().find(|c| c.fingerprint == hex) {
            if c.name.is_none() {
                c.name = name;
            }
            if alias.is_some() {
                c.alias = alias;
            }
            return Ok((c.clone(), false));
        }
        if self.contacts.len() >= MAX_CONTACTS {
            return Err(ContactError::Full);
        }
        let c = Contact {
            fingerprint: hex,
            name,
            alias,
            added_ms: now_ms,
            allow_relay: false,
        };
        self.contacts.push(c.clone());
        Ok((c, true))
    }

    /// Removes the contact `label` names (alias, name or fingerprint).
    pub fn remove(&mut self, label: &str) -> Result<Contact, ContactError> {
        let fp = self
            .lookup(label)
            .map(|c| c.fingerprint.clone())
            .ok_or_else(|| ContactError::NotFound(label.to_string()))?;
        let i = self
            .contacts
            .iter()
            .position(|c| c.fingerprint == fp)
            .ok_or_else(|| ContactError::NotFound(label.to_string()))?;
        Ok(self.contacts.remove(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(b: u8) -> Fingerprint {
        Fingerprint([b; 32])
    }

    #[test]
    fn a_pinned_name_that_resolves_to_another_key_is_refused() {
        let mut book = ContactBook::default();
        let (c, new) = book.pin(fp(1), Some("alice".into()), None, 5).unwrap();
        assert!(new && c.name.as_deref() == Some("alice"));
        // Same key again: unchanged, alias added.
        let (c, new) = book
            .pin(fp(1), Some("alice".into()), Some("Al1"), 6)
            .unwrap();
        assert!(!new && c.alias.as_deref() == Some("al1"));
        // The name now resolves to another key.
        let e = book.pin(fp(2), Some("alice".into()), None, 7).unwrap_err();
        println!("{e}");
        assert_eq!(
            e,
            ContactError::KeyChanged {
                label: "alice".into(),
                pinned: fp(1),
                resolved: fp(2),
            }
        );
        let text = e.to_string();
        assert!(text.contains(&fp(1).to_string()) && text.contains(&fp(2).to_string()));
        // An alias taken by another contact is refused the same way.
        assert!(matches!(
            book.pin(fp(3), None, Some("al1"), 8),
            Err(ContactError::KeyChanged { .. })
        ));
        assert_eq!(book.check("alice", &fp(1)), Ok(()));
        assert!(book.check("al1", &fp(2)).is_err());
        assert_eq!(book.list().len(), 1);
    }

    #[tokio::test]
    async fn the_list_survives_a_restart_and_a_corrupt_file_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let names = Names::open(Some(dir.path()));
        names
            .update(|f| {
                f.contacts.pin(fp(1), Some("alice".into()), None, 1)?;
                Ok::<_, ContactError>(())
            })
            .await
            .unwrap();
        let again = Names::open(Some(dir.path()));
        assert_eq!(
            again.read(|f| f.contacts.lookup("alice").and_then(Contact::fp)),
            Some(fp(1))
        );
        std::fs::write(dir.path().join(NAMES_FILE), b"{not json").unwrap();
        let fresh = Names::open(Some(dir.path()));
        assert!(fresh.read(|f| f.contacts.list().is_empty()));
        assert!(dir.path().join("names.json.corrupt").exists());
    }

    #[test]
    fn lookup_by_alias_name_or_fingerprint_and_remove() {
        let mut book = ContactBook::default();
        book.pin(fp(1), Some("alice".into()), Some("ally"), 1)
            .unwrap();
        book.pin(fp(2), None, Some("bob"), 2).unwrap();
        assert_eq!(book.lookup("ALLY").unwrap().fp(), Some(fp(1)));
        assert_eq!(book.lookup("alice").unwrap().fp(), Some(fp(1)));
        assert_eq!(book.lookup(&fp(2).to_string()).unwrap().fp(), Some(fp(2)));
        assert!(book.lookup("carol").is_none());
        assert_eq!(book.remove("alice").unwrap().fp(), Some(fp(1)));
        assert_eq!(
            book.remove("alice"),
            Err(ContactError::NotFound("alice".into()))
        );
        // After removal the name may be pinned to a new key.
        assert!(book.pin(fp(9), Some("alice".into()), None, 3).unwrap().1);
        assert!(matches!(
            book.pin(fp(4), None, Some("a b"), 4),
            Err(ContactError::BadAlias(_))
        ));
    }
}

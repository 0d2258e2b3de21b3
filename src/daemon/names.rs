//! Names and contacts in the daemon (spec/08-names.md §4–§5): claiming a name in the DHT,
//! resolving one, republishing our own claims, and the pinned contact list — all kept in
//! `<data dir>/names.json` (owner-only).
//!
//! Claiming: look the name up; if another publisher's claim wins the race rule, refuse.
//! Otherwise sign a claim (claim time kept across republishes) and put it to the k closest
//! nodes (the DHT's put path, which also re-sends it every refresh interval), then look it
//! up again: if another claim won meanwhile, withdraw ours. A task signs a fresh claim for
//! each of our names every [`CLAIM_REPUBLISH_SECS`] (a third of the 7-day lifetime).

use std::sync::Weak;
use std::time::Duration;

use super::contacts::{Contact, ContactError, OwnName, SaveError};
use super::dht::{query, DhtError};
use super::os::unix_ms;
use super::shared::{NodeHandle, Shared};
use crate::crypto::name::{
    normalize, winner, NameClaim, NameError, CLAIM_REPUBLISH_SECS, CLAIM_TTL_SECS,
};
use crate::crypto::record::{name_key, RecordKind};
use crate::crypto::{Fingerprint, Record};
use crate::dht::{DhtEvent, VerifiedRecord};
use crate::node::core::{DhtQuery, Input};
use crate::node::names;

/// Most names one node claims (each costs a signature and a put per republish).
pub const MAX_OWN_NAMES: usize = 16;
/// After a failed republish, the next try.
const RETRY: Duration = Duration::from_secs(30);

/// Why a name or contact request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NamesError {
    /// Not a valid name.
    #[error("{0}")]
    Invalid(#[from] NameError),
    /// The DHT failed or is not configured.
    #[error("{0}")]
    Dht(#[from] DhtError),
    /// Another publisher's claim wins.
    #[error("name {name:?} is taken by {holder} (claimed at {claimed_at})")]
    Taken {
        /// The name.
        name: String,
        /// The winning claim's publisher.
        holder: Fingerprint,
        /// Its claim time (Unix seconds).
        claimed_at: u64,
    },
    /// No claim for the name was found.
    #[error("no claim for {0:?} found")]
    NotFound(String),
    /// We hold [`MAX_OWN_NAMES`] names.
    #[error("this node holds {MAX_OWN_NAMES} names already")]
    TooMany,
    /// A contact rule refused it (e.g. a pinned key changed).
    #[error("{0}")]
    Contact(#[from] ContactError),
    /// The names file could not be written.
    #[error("{0}")]
    Storage(#[from] SaveError),
}

/// A name resolved through the DHT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The name.
    pub name: String,
    /// The winning claim's publisher.
    pub fingerprint: Fingerprint,
    /// Its claim time (Unix seconds).
    pub claimed_at: u64,
    /// When its current record expires (Unix seconds).
    pub expiry: u64,
    /// Claims from distinct publishers found (more than one: a race was decided).
    pub claims: usize,
}

/// A claim made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The name.
    pub name: String,
    /// Claim time (Unix seconds).
    pub claimed_at: u64,
    /// Expiry of the record just published.
    pub expiry: u64,
    /// DHT nodes that hold it (this node included when it is one of the k closest).
    pub stored_at: usize,
}

/// The valid claims for `name` in the DHT, one per publisher (newest).
async fn lookup(shared: &Shared, name: &str) -> Result<Vec<(NameClaim, Record)>, DhtError> {
    if shared.dht.is_none() {
        return Err(DhtError::Disabled);
    }
    let key = name_key(name);
    let ev = query(shared, DhtQuery::FindValue(key)).await?;
    let DhtEvent::FoundValue { records, .. } = ev else {
        return Ok(Vec::new());
    };
    let now = unix_ms() / 1000;
    Ok(records
        .iter()
        .filter_map(|b| Record::verify(b, now).ok())
        .filter(|r| r.kind() == RecordKind::NameClaim && r.key() == key)
        .filter_map(|r| NameClaim::decode(r.value()).map(|c| (c, r)))
        .filter(|(c, _)| c.name == name)
        .collect())
}

/// The claims found, each with its publisher.
fn publishers(found: Vec<(NameClaim, Record)>) -> Vec<(NameClaim, Fingerprint)> {
    found
        .into_iter()
        .map(|(c, r)| (c, r.publisher().fingerprint()))
        .collect()
}

fn decide(name: &str, found: &[(NameClaim, Record)]) -> Option<Resolved> {
    let (fingerprint, r) = winner(
        found
            .iter()
            .map(|(c, r)| (c, r.publisher().fingerprint(), r)),
    )?;
    Some(Resolved {
        name: name.to_string(),
        fingerprint,
        claimed_at: NameClaim::decode(r.value()).map_or(0, |c| c.claimed_at),
        expiry: r.expiry(),
        claims: found.len(),
    })
}

/// Signs a claim for `name` made at `claimed_at` and puts it; returns (expiry, stored_at).
async fn publish(shared: &Shared, name: &str, claimed_at: u64) -> Result<(u64, usize), DhtError> {
    let now_s = unix_ms() / 1000;
    let seq = super::dht::next_record_seq(shared).await?;
    let expiry = now_s + CLAIM_TTL_SECS;
    let value = NameClaim {
        claimed_at,
        name: name.to_string(),
    }
    .encode();
    let record = Record::sign(
        &shared.identity,
        RecordKind::NameClaim,
        seq,
        expiry,
        value,
        now_s,
    )
    .map_err(|e| DhtError::Record(e.to_string()))?;
    let record = VerifiedRecord::from_record(&record);
    match query(shared, DhtQuery::Put(record)).await? {
        DhtEvent::Put { stored_at, .. } => Ok((expiry, stored_at)),
        _ => Err(DhtError::Timeout),
    }
}

/// Stops republishing our claim for `name` (it lost a race).
async fn withdraw(shared: &Shared, name: &str) {
    let key = name_key(name);
    shared.core.input(Input::DhtUnpublish(key)).await;
}

/// Signs a fresh claim for each of our names every [`CLAIM_REPUBLISH_SECS`] (retrying a
/// failed one after [`RETRY`]), until the node stops.
/// Holds the node weakly: it ends once the node is gone or stopped.
pub(crate) async fn republish_loop(shared: Weak<Shared>) {
    // Let the bootstrap run first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.dht.is_none() || shared.stopped.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let own = shared.names.read(|f| f.names.clone());
        let mut failed = false;
        for n in own {
            match publish(&shared, &n.name, n.claimed_at).await {
                Ok((_, stored_at)) if stored_at > 0 => {
                    tracing::debug!(name = %n.name, stored_at, "name claim republished");
                }
                Ok(_) => failed = true,
                Err(e) => {
                    tracing::debug!(name = %n.name, error = %e, "name republish failed");
                    failed = true;
                }
            }
        }
        let wait = if failed {
            RETRY
        } else {
            Duration::from_secs(CLAIM_REPUBLISH_SECS)
        };
        drop(shared);
        tokio::time::sleep(wait).await;
    }
}

/// [`NodeHandle::name_claim`].
pub(crate) async fn name_claim(handle: &NodeHandle, name: &str) -> Result<Claimed, NamesError> {
    let name = normalize(name)?;
    let shared = &handle.shared;
    let me = handle.fingerprint();
    let held = shared
        .names
        .read(|f| f.names.iter().find(|n| n.name == name).cloned());
    if held.is_none() && shared.names.read(|f| f.names.len()) >= MAX_OWN_NAMES {
        return Err(NamesError::TooMany);
    }
    let claimed_at = held.as_ref().map_or(unix_ms() / 1000, |n| n.claimed_at);
    let ours = NameClaim {
        claimed_at,
        name: name.clone(),
    };
    // The decisions are `node::names`': first come before the put, the race rule after.
    let taken = |h: names::Holder| NamesError::Taken {
        name: name.clone(),
        holder: h.fingerprint,
        claimed_at: h.claimed_at,
    };
    let found = publishers(lookup(shared, &name).await?);
    if let Some(h) = names::before_put(me, &found, &ours, held.is_some()) {
        if held.is_some() {
            forget_name(handle, &name).await;
        }
        return Err(taken(h));
    }
    let (expiry, stored_at) = publish(shared, &name, claimed_at).await?;
    let found = publishers(lookup(shared, &name).await?);
    if let Some(h) = names::after_put(me, &found, &ours) {
        forget_name(handle, &name).await;
        return Err(taken(h));
    }
    shared
        .names
        .update(|f| {
            if !f.names.iter().any(|n| n.name == name) {
                f.names.push(OwnName {
                    name: name.clone(),
                    claimed_at,
                });
            }
            Ok::<_, NamesError>(())
        })
        .await?;
    tracing::info!(%name, stored_at, "name claimed");
    Ok(Claimed {
        name,
        claimed_at,
        expiry,
        stored_at,
    })
}

/// Stops claiming `name`: no more republishing, and out of `names.json` (it lost).
async fn forget_name(handle: &NodeHandle, name: &str) {
    withdraw(&handle.shared, name).await;
    let r = handle
        .shared
        .names
        .update(|f| {
            f.names.retain(|n| n.name != name);
            Ok::<_, NamesError>(())
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "forgetting a lost name");
    }
}

/// [`NodeHandle::own_names`].
pub(crate) fn own_names(handle: &NodeHandle) -> Vec<OwnName> {
    handle.shared.names.read(|f| f.names.clone())
}

/// [`NodeHandle::name_resolve`].
pub(crate) async fn name_resolve(handle: &NodeHandle, name: &str) -> Result<Resolved, NamesError> {
    let name = normalize(name)?;
    let found = lookup(&handle.shared, &name).await?;
    let r = decide(&name, &found).ok_or_else(|| NamesError::NotFound(name.clone()))?;
    handle
        .shared
        .names
        .read(|f| f.contacts.check(&name, &r.fingerprint))?;
    Ok(r)
}

/// [`NodeHandle::contact_add`].
pub(crate) async fn contact_add(
    handle: &NodeHandle,
    target: &str,
    alias: Option<&str>,
) -> Result<(Contact, bool), NamesError> {
    let (fp, name) = match target.parse::<Fingerprint>() {
        Ok(fp) => (fp, None),
        Err(_) => {
            let r = handle.name_resolve(target).await?;
            (r.fingerprint, Some(r.name))
        }
    };
    let now = unix_ms();
    handle
        .shared
        .names
        .update(|f| Ok(f.contacts.pin(fp, name, alias, now)?))
        .await
}

/// [`NodeHandle::contacts`].
pub(crate) fn contacts(handle: &NodeHandle) -> Vec<Contact> {
    handle.shared.names.read(|f| f.contacts.list().to_vec())
}

/// [`NodeHandle::contact_lookup`].
pub(crate) fn contact_lookup(handle: &NodeHandle, label: &str) -> Option<Contact> {
    handle
        .shared
        .names
        .read(|f| f.contacts.lookup(label).cloned())
}

/// [`NodeHandle::contact_allow_relay`].
pub(crate) async fn contact_allow_relay(
    handle: &NodeHandle,
    label: &str,
    allow: bool,
) -> Result<Contact, NamesError> {
    let c = handle
        .shared
        .names
        .update(|f| Ok::<_, NamesError>(f.contacts.set_allow_relay(label, allow)?))
        .await?;
    if let (true, Some(peer)) = (allow, c.fp()) {
        handle.shared.core.input(Input::Heard(peer)).await;
    }
    Ok(c)
}

/// [`NodeHandle::contact_remove`].
pub(crate) async fn contact_remove(
    handle: &NodeHandle,
    label: &str,
) -> Result<Contact, NamesError> {
    let c = handle
        .shared
        .names
        .update(|f| Ok::<_, NamesError>(f.contacts.remove(label)?))
        .await?;
    if let Some(d) = &handle.shared.drops {
        if let Err(e) = d.rotate().await {
            tracing::warn!(error = %e, "cannot rotate our contact drop");
        }
    }
    Ok(c)
}

//! The contact-drop protocol (spec/09-mailbox.md §1.1): an application protocol on the
//! node's extension point (message kind [`MessageKind::DROP`](crate::crypto::MessageKind),
//! spec/06-node.md §1.5) that hands our drop to each contact and keeps the drops contacts
//! send us (`drops`).
//!
//! Who gets ours: every contact, once (the `drops` list of where it went), looked at every
//! [`CHECK_EVERY`]: over a live session as soon as there is one, else once the contact was
//! added `MailboxConfig::drop_unseen` ago (then it goes as any message: reaching, the
//! mailbox). The
//! drop never starts a reach of its own for a contact just added: the first message the
//! user sends decides how that contact is reached (and says `relay-needed` if it must).
//! Whose we take: a contact's only (a stranger's is dropped, so strangers cannot grow the
//! directory). The first time a contact's drop arrives, ours is due to it again whatever
//! the list says: it may have dropped ours when we were not its contact yet.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;

use super::drops::Drops;
use super::events::{EventRx, NodeEvent};
use super::shared::{NodeHandle, Shared};
use crate::crypto::{Fingerprint, MessageKind};
use crate::node::core::{Answer, Query};

/// How often the contact list is compared with the contacts our drop went to.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The drop protocol's task: hands our drop to every contact that has not had it, and
/// keeps the drops contacts send us (`rx`: the node's queue for kind DROP). Holds the node
/// weakly: it ends with the node.
pub(crate) async fn run(shared: Weak<Shared>, mut rx: EventRx) {
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = check.tick() => {
                let Some(s) = shared.upgrade() else { return };
                hand_out(&s).await;
            }
            ev = rx.recv() => {
                let Some(ev) = ev else { return };
                let NodeEvent::Message { from, body, .. } = ev else { continue };
                let Some(s) = shared.upgrade() else { return };
                take(&s, from, &body).await;
            }
        }
    }
}

/// A DROP message from `from`: kept if `from` is a contact; the first time, ours goes back.
async fn take(shared: &Arc<Shared>, from: Fingerprint, body: &[u8]) {
    let Some(drops) = shared.drops.clone() else {
        return;
    };
    if !is_contact(shared, &from) {
        tracing::debug!(%from, "a contact drop from a stranger: dropped");
        return;
    }
    match drops.learn(from, body).await {
        Ok(true) => {
            tracing::info!(%from, "contact drop received: our offline messages to it go there");
            // It may have dropped ours before we were its contact: due again.
            drops.unsend(&from);
            hand_out(shared).await;
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(%from, error = %e, "a contact drop that does not load"),
    }
}

fn is_contact(shared: &Shared, fp: &Fingerprint) -> bool {
    shared.names.read(|f| {
        f.contacts
            .list()
            .iter()
            .any(|c| c.fp().as_ref() == Some(fp))
    })
}

/// Our drop to each contact that has not had it (a new one first if its epoch is over).
async fn hand_out(shared: &Arc<Shared>) {
    let Some(drops) = shared.drops.clone() else {
        return;
    };
    let epoch = shared.cfg.mailbox.drop_epoch;
    match drops
        .rotate_if_older(epoch, std::time::SystemTime::now())
        .await
    {
        Ok(true) => tracing::info!("contact drop rotated: its epoch is over"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "cannot rotate our contact drop"),
    }
    let now_ms = super::os::unix_ms();
    let unseen = shared.cfg.mailbox.drop_unseen.as_millis() as u64;
    let contacts: Vec<(Fingerprint, bool)> = shared.names.read(|f| {
        f.contacts
            .list()
            .iter()
            .filter_map(|c| Some((c.fp()?, now_ms.saturating_sub(c.added_ms) >= unseen)))
            .collect()
    });
    let sent = drops.sent();
    let mut due = Vec::new();
    for (c, old) in contacts.into_iter().filter(|(c, _)| !sent.contains(c)) {
        let live = matches!(
            shared.core.query(Query::LiveConnection(c)).await,
            Some(Answer::Conn(Some(_)))
        );
        if live || old {
            due.push(c);
        }
    }
    if !due.is_empty() {
        send_own(shared, &drops, &due).await;
    }
}

/// Queues our drop to `to` (durable, end-to-end encrypted like any message) and records it.
async fn send_own(shared: &Arc<Shared>, drops: &Drops, to: &[Fingerprint]) {
    let me = shared.identity.fingerprint();
    let node = NodeHandle {
        shared: shared.clone(),
    };
    let body = Bytes::from(drops.own().encode().to_vec());
    let mut sent = Vec::new();
    for peer in to.iter().filter(|p| **p != me) {
        match node
            .send_kind(*peer, MessageKind::DROP, [body.clone()])
            .await
        {
            Ok(_) => sent.push(*peer),
            Err(e) => tracing::warn!(%peer, error = %e, "cannot queue our contact drop"),
        }
    }
    if let Err(e) = drops.mark_sent(&sent).await {
        tracing::warn!(error = %e, "cannot record where our contact drop went");
    }
}

//! Delivered messages, recorded and announced (spec/06-node.md §1.1, §3.5). The node core's
//! outbox is the one ledger of what is in flight: a connection reports a cumulative ACK as
//! a counter, the core turns it into message IDs (`Output::Delivered`), and this task marks
//! them delivered in the store, with the path they went on, then queues the application's
//! `Acked` events. One task, so both keep the order the ACKs came in; the core task hands
//! over without waiting (the channel holds at most what the application queued: a message
//! is delivered once), and a slow application slows this task only.

use std::sync::Weak;

use tokio::sync::mpsc;

use super::events::NodeEvent;
use super::shared::Shared;
use super::store::Cmd;
use crate::crypto::{Fingerprint, MessageId};

/// Messages to one peer acknowledged on one path (the store's path code).
pub(crate) type Delivered = (Fingerprint, Vec<MessageId>, u8);

/// The channel the core task hands deliveries to, and the task that takes them.
pub(crate) fn spawn(weak: Weak<Shared>) -> mpsc::UnboundedSender<Delivered> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(weak, rx));
    tx
}

async fn run(weak: Weak<Shared>, mut rx: mpsc::UnboundedReceiver<Delivered>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        // What came together is written together: one store command per path.
        if let Some(store) = &shared.store {
            let mut by_path: Vec<(u8, Vec<MessageId>)> = Vec::new();
            for (_, ids, path) in &batch {
                match by_path.iter_mut().find(|(p, _)| p == path) {
                    Some((_, all)) => all.extend_from_slice(ids),
                    None => by_path.push((*path, ids.clone())),
                }
            }
            for (path, ids) in by_path {
                if store.cmd(Cmd::DeliveredVia { ids, path }).is_err() {
                    tracing::warn!("message store closed: deliveries not recorded");
                }
            }
        }
        let events = batch
            .drain(..)
            .map(|(peer, ids, _)| NodeEvent::Acked { peer, ids })
            .collect();
        if shared.events.send_all(events).await.is_err() {
            return;
        }
    }
}

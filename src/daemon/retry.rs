//! Carries out the node core's [`Output::Reach`](crate::node::core::Output): one task per
//! reach the re-reach schedule allows (`node::retry`, spec/06-node.md §3.5), which reports
//! back how it went. The schedule's bounds keep these tasks few.

use std::sync::Arc;

use super::reach::Reached;
use super::shared::{NodeHandle, Shared};
use super::NodeEvent;
use crate::crypto::Fingerprint;
use crate::node::core::Input;
use crate::node::reach::RelayPolicy;
use crate::node::retry::Attempt;

/// Reaches `peer` and tells the core how it went.
pub(crate) async fn reach(shared: Arc<Shared>, peer: Fingerprint) {
    let h = NodeHandle {
        shared: shared.clone(),
    };
    // What the peer already took from its mailbox is not sent again.
    super::mailbox::before_reach(&shared, peer).await;
    let how = match h.reach(peer).await {
        // Only a relay could carry it, and none may or can.
        Ok(Reached::RelayNeeded) => {
            let asked = shared.cfg.relay_policy == RelayPolicy::Ask
                && !super::reach::relay_allowed(&shared, &peer);
            if asked {
                tracing::info!(%peer, "only a relay can carry it: waiting for the user's consent");
                let _ = shared.events.try_send(NodeEvent::RelayNeeded { peer });
            }
            Attempt::RelayNeeded
        }
        Ok(r) => {
            tracing::info!(%peer, reached = ?r, "reached a peer with messages waiting");
            Attempt::Reached
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "peer with messages waiting not reachable yet");
            Attempt::Failed
        }
    };
    shared.core.input(Input::ReachDone { peer, how }).await;
}

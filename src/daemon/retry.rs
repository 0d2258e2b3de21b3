//! Carries out the node core's [`Output::Reach`](crate::node::core::Output): one task per
//! reach the re-reach schedule allows (`node::retry`, spec/06-node.md §3.5), which reports
//! back how it went. The schedule's bounds keep these tasks few.

use std::sync::Arc;

use super::reach::Reached;
use super::state::{CoreCmd, NodeHandle, Shared};
use crate::crypto::Fingerprint;

/// Reaches `peer` and tells the core how it went.
pub(crate) async fn reach(shared: Arc<Shared>, peer: Fingerprint) {
    let h = NodeHandle {
        shared: shared.clone(),
    };
    let reached = match h.reach(peer).await {
        // Only a relay could carry it, and none may or can: as good as not found.
        Ok(Reached::RelayNeeded) => false,
        Ok(r) => {
            tracing::info!(%peer, reached = ?r, "reached a peer with messages waiting");
            true
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "peer with messages waiting not reachable yet");
            false
        }
    };
    shared.core.send(CoreCmd::ReachDone { peer, reached }).await;
}

//! Carries out the node's routine (`node::routine`, spec/06-node.md §1.4): one task per
//! node started with [`NodeConfig::routine`](super::NodeConfig) set. It does each
//! [`Action`] with the node's own calls (DHT, NAT discovery, registration, presence,
//! mailbox), hands the result back, sleeps until the routine's next timeout, and publishes
//! its counters (`Shared::routine`; [`NodeHandle::ready`] waits for the first round).

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Instant;

use super::shared::{NodeHandle, Shared};
use crate::node::routine::{Action, Done, Routine, RoutineConfig, RoutineStats};

/// Runs the routine until the node closes.
pub(crate) async fn run(shared: Weak<Shared>, cfg: RoutineConfig) {
    let mut routine = Routine::new(cfg);
    {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // Behind a network without UDP everything goes through TURN over TCP: that is set
        // up before anything else is sent.
        NodeHandle { shared }.turn_settled().await;
    }
    loop {
        while let Some(action) = routine.poll_action() {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if shared.closing.load(Ordering::Relaxed) {
                return;
            }
            let h = NodeHandle { shared };
            if let Some(done) = perform(&h, action).await {
                routine.handle(Instant::now(), done);
            }
            let stats = routine.stats();
            h.shared.routine.send_if_modified(|old| {
                let changed = *old != stats;
                *old = stats;
                changed
            });
        }
        let Some(at) = routine.poll_timeout() else {
            return;
        };
        tokio::time::sleep_until(at.into()).await;
        routine.handle_timeout(Instant::now());
    }
}

/// Does one action; its result (`None`: the action has none).
async fn perform(h: &NodeHandle, action: Action) -> Option<Done> {
    Some(match action {
        Action::JoinDht => Done::Joined {
            table: h.dht_bootstrap().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "joining the DHT failed");
                0
            }),
        },
        Action::FetchMailbox => {
            let m = h.mailbox_fetch().await;
            if m.new > 0 {
                tracing::info!(messages = m.new, "fetched from our mailbox at start");
            }
            Done::Ok
        }
        Action::Discover { server } => match h.discover_nat(server).await {
            Ok(c) => {
                tracing::info!(nat = c.name(), mapped = %c.mapped, "NAT discovery");
                Done::Discovered {
                    ok: true,
                    reachable: h.nat_status().presence().reachable,
                }
            }
            Err(e) => {
                tracing::warn!(%server, error = %e, "NAT discovery failed");
                Done::Discovered {
                    ok: false,
                    reachable: false,
                }
            }
        },
        Action::GatherCandidates { servers } => {
            match h.gather_candidates(&servers).await {
                Ok(same) => tracing::info!(
                    endpoint_independent_mapping = ?same,
                    "candidates from bootstrap STUN (NAT class unknown: using rendezvous)"
                ),
                Err(e) => tracing::warn!(error = %e, "no STUN answer: host candidates only"),
            }
            Done::Gathered {
                reachable: h.nat_status().presence().reachable,
            }
        }
        Action::ServeDht(serve) => {
            h.serve_dht(serve).await;
            Done::Ok
        }
        Action::Register { addr, fp } => Done::Registered {
            ok: match h.register_rendezvous(addr, fp).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(rendezvous = %addr, error = %e, "registration failed");
                    false
                }
            },
        },
        Action::Announce => {
            if let Err(e) = h.announce_presence().await {
                tracing::warn!(error = %e, "publishing presence failed");
            }
            Done::Ok
        }
        Action::PublishKemKey => {
            if let Err(e) = h.mailbox_publish_key().await {
                tracing::warn!(error = %e, "publishing our KEM key failed");
            }
            Done::Ok
        }
        Action::Ready => return None,
        Action::CheckNetwork { server } => {
            let changed = h.network_changed(server).await;
            if changed {
                tracing::info!("our addresses changed: discovering and publishing again");
            }
            Done::Checked { changed }
        }
    })
}

/// [`NodeHandle::ready`].
pub(crate) async fn ready(handle: &NodeHandle) -> bool {
    if handle.shared.cfg.routine.is_none() {
        return true;
    }
    let mut rx = handle.shared.routine.subscribe();
    let ready = rx.wait_for(|s| s.ready).await.is_ok();
    ready
}

/// [`NodeHandle::routine_stats`].
pub(crate) fn routine_stats(handle: &NodeHandle) -> RoutineStats {
    *handle.shared.routine.borrow()
}

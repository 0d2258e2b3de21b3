//! What the TURN task's UDP and TCP phases share (spec/07-relay.md §2.10–§2.11): the
//! published status, the relay candidate, the permissions the node asked for, and the
//! handling of the client's events.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Instant;

use super::super::os::{unix_ms, with_rng};
use super::super::shared::{Shared, TurnStatus};
use crate::nat::candidate::{Candidate, CandidateKind};
use crate::nat::turn::{Client, Credentials, TurnConfig, TurnError, TurnEvent};

/// What an event means for the task.
pub(crate) enum Next {
    /// Go on.
    Continue,
    /// The allocation is released (shutdown): the task ends.
    Closed,
    /// The client gave up with this error.
    Failed(TurnError),
}

/// The peer IPs the node asked permissions for, oldest first, at most `max` (the
/// client's `max_permissions`): one more drops the oldest, and the socket forgets it
/// was asked (its next datagram to that IP asks again). Kept across clients, so a new
/// allocation (a new TCP connection) gets them all again.
pub(crate) struct Permits {
    ips: VecDeque<IpAddr>,
    max: usize,
}

impl Permits {
    pub(crate) fn new(max: usize) -> Permits {
        Permits {
            ips: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Asks `client` for a permission for `ip` (once per IP).
    pub(crate) fn ask(&mut self, shared: &Shared, client: &mut Client, now: Instant, ip: IpAddr) {
        if self.ips.contains(&ip) {
            return;
        }
        if self.ips.len() >= self.max {
            if let Some(old) = self.ips.pop_front() {
                client.remove_permission(old);
                shared.socket.forget_turn_permit(old);
            }
        }
        self.ips.push_back(ip);
        if let Err(e) = client.create_permission(now, ip) {
            tracing::debug!(%ip, error = %e, "TURN permission refused");
        }
    }

    /// Forgets `ip` (the server refused its permission): asking again makes it anew.
    pub(crate) fn forget(&mut self, ip: IpAddr) {
        self.ips.retain(|i| *i != ip);
    }

    /// Asks a new client for every permission asked so far.
    pub(crate) fn replay(&self, client: &mut Client, now: Instant) {
        for ip in &self.ips {
            let _ = client.create_permission(now, *ip);
        }
    }
}

/// Publishes what an event changed.
pub(crate) fn on_event(shared: &Shared, client: &Client, ev: TurnEvent) -> Next {
    match ev {
        TurnEvent::Allocated {
            relayed, mapped, ..
        } => {
            tracing::info!(%relayed, server = %client.server(), "TURN allocation made");
            publish(shared, client, |st| {
                st.state = "allocated";
                st.relayed = Some(relayed);
                st.mapped = mapped;
                st.error = None;
            });
            set_relay_candidate(shared, Some(relayed));
        }
        TurnEvent::Lost(e) => {
            set_relay_candidate(shared, None);
            tracing::warn!(error = %e, "TURN allocation lost: allocating again");
            publish(shared, client, |st| {
                st.state = "lost";
                st.relayed = None;
                st.error = Some(e.to_string());
            });
        }
        TurnEvent::Failed(e) => {
            set_relay_candidate(shared, None);
            publish(shared, client, |st| {
                st.state = "failed";
                st.relayed = None;
                st.error = Some(e.to_string());
            });
            return Next::Failed(e);
        }
        TurnEvent::Closed => {
            set_relay_candidate(shared, None);
            publish(shared, client, |st| {
                st.state = "closed";
                st.relayed = None;
            });
            return Next::Closed;
        }
        // Permission outcomes show in the counters; Data indications never get here (the
        // socket unwraps them for quinn).
        _ => publish(shared, client, |_| {}),
    }
    Next::Continue
}

/// Our `relay` candidate (lowest priority) is `relayed`, or there is none.
pub(crate) fn set_relay_candidate(shared: &Shared, relayed: Option<std::net::SocketAddr>) {
    shared.nat.status.send_modify(|st| {
        st.candidates.retain(|c| c.kind != CandidateKind::Relayed);
        st.candidates
            .extend(relayed.map(|a| Candidate::new(CandidateKind::Relayed, a, 0)));
    });
}

/// Publishes the client's counters and what `f` changes.
pub(crate) fn publish(shared: &Shared, client: &Client, f: impl FnOnce(&mut TurnStatus)) {
    shared.nat.turn.send_modify(|st| {
        f(st);
        st.stats = client.stats();
    });
}

/// A client with a fresh random seed for its transaction IDs.
pub(crate) fn new_client(
    server: std::net::SocketAddr,
    credentials: Credentials,
    config: TurnConfig,
    now: Instant,
) -> Client {
    let mut seed = [0u8; 32];
    with_rng(|r| rand_core::RngCore::fill_bytes(r, &mut seed));
    Client::new(server, credentials, config, now, unix_ms() / 1000, seed)
}

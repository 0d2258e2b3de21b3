//! The TURN task (spec/07-relay.md §2.7): drives the sans-IO [`Client`] on the node's one
//! socket. The socket hands it every datagram from the configured TURN server (its side
//! channel); what the client sends leaves from the same socket, so the allocation's
//! 5-tuple is the one QUIC uses. The allocation is kept — refreshed, re-made when the
//! server forgets it — and released (Refresh 0) at shutdown. What it holds is published as
//! [`TurnStatus`] (`dna status`).
//!
//! Relayed QUIC (spec/07-relay.md §3): the relayed address is published as our `relay`
//! candidate while allocated; the task takes [`TurnCmd::Permit`] from the CONNECT exchange
//! (the peer's candidate IPs) and keeps those permissions; the QUIC datagrams themselves
//! never pass through here — the socket wraps and unwraps them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::state::{Shared, TurnCmd, TurnStatus};
use super::util::{unix_ms, with_rng};
use crate::nat::candidate::{Candidate, CandidateKind};
use crate::nat::turn::{Client, Credentials, TurnConfig, TurnEvent};
use crate::transport::socket::Datagram;

/// How long the task waits for the Refresh 0's answer at shutdown.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

impl crate::daemon::NodeHandle {
    /// Asks our TURN allocation for a permission for `ip` (what the CONNECT exchange
    /// does for the peer's candidates): the peer's datagrams to our relayed address then
    /// reach us. `false` when the node keeps no allocation or the queue is full.
    pub fn turn_permit(&self, ip: std::net::IpAddr) -> bool {
        self.shared.nat.turn_permit([ip])
    }
}

/// Allocates at `server` and keeps the allocation until the node stops.
pub(crate) async fn run(
    shared: Arc<Shared>,
    server: std::net::SocketAddr,
    credentials: Credentials,
    mut rx: mpsc::Receiver<Datagram>,
) {
    // Commands that may wait for the task (`turn_permit_queue`); more are refused (the
    // CONNECT that asked goes on without them). Each CONNECT asks for a few.
    let (cmd_tx, mut cmds) = mpsc::channel(shared.cfg.turn_permit_queue.max(1));
    // Set once: one TURN task per node.
    let _ = shared.nat.turn_cmd.set(cmd_tx);
    let mut seed = [0u8; 32];
    with_rng(|r| rand_core::RngCore::fill_bytes(r, &mut seed));
    let now = Instant::now();
    let mut client = Client::new(
        server,
        credentials,
        TurnConfig::default(),
        now,
        unix_ms() / 1000,
        seed,
    );
    publish(&shared, &client, |st| {
        st.server = Some(server);
        st.state = "allocating";
    });
    let mut closing: Option<Instant> = None;
    loop {
        let now = Instant::now();
        while let Some((to, bytes)) = client.poll_transmit(now) {
            // A lost datagram is what the client's timers are for.
            let _ = shared.socket.send_raw(to, &bytes).await;
        }
        while let Some(ev) = client.poll_event() {
            if on_event(&shared, &client, ev) {
                return;
            }
        }
        if closing.is_none() && shared.stopped.load(Ordering::Relaxed) {
            client.close(now);
            closing = Some(now + CLOSE_WAIT);
            continue;
        }
        let mut wake = client
            .poll_timeout()
            .unwrap_or(now + Duration::from_secs(1));
        // Look at the node's state at least once a second (shutdown).
        wake = wake.min(now + Duration::from_secs(1));
        if let Some(end) = closing {
            if now >= end {
                publish(&shared, &client, |st| st.state = "closed");
                return;
            }
            wake = wake.min(end);
        }
        tokio::select! {
            d = rx.recv() => match d {
                Some((from, bytes)) => {
                    client.handle_input(Instant::now(), from, &bytes);
                }
                None => return,
            },
            Some(TurnCmd::Permit(ip)) = cmds.recv() => {
                if let Err(e) = client.create_permission(Instant::now(), ip) {
                    tracing::debug!(%ip, error = %e, "TURN permission refused");
                }
            }
            () = tokio::time::sleep_until(wake.into()) => client.handle_timeout(Instant::now()),
        }
    }
}

/// Publishes what an event changed; `true` when the task is done.
fn on_event(shared: &Shared, client: &Client, ev: TurnEvent) -> bool {
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
            tracing::warn!(error = %e, "TURN: giving up on this server");
            publish(shared, client, |st| {
                st.state = "failed";
                st.relayed = None;
                st.error = Some(e.to_string());
            });
            return true;
        }
        TurnEvent::Closed => {
            set_relay_candidate(shared, None);
            publish(shared, client, |st| {
                st.state = "closed";
                st.relayed = None;
            });
            return true;
        }
        // Permission outcomes show in the counters; Data indications never get here (the
        // socket unwraps them for quinn).
        _ => publish(shared, client, |_| {}),
    }
    false
}

/// Our `relay` candidate (lowest priority) is `relayed`, or there is none.
fn set_relay_candidate(shared: &Shared, relayed: Option<std::net::SocketAddr>) {
    shared.nat.status.send_modify(|st| {
        st.candidates.retain(|c| c.kind != CandidateKind::Relayed);
        st.candidates
            .extend(relayed.map(|a| Candidate::new(CandidateKind::Relayed, a, 0)));
    });
}

fn publish(shared: &Shared, client: &Client, f: impl FnOnce(&mut TurnStatus)) {
    shared.nat.turn.send_modify(|st| {
        f(st);
        st.stats = client.stats();
    });
}

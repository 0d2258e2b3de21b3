//! The TURN task (spec/07-relay.md §2.7): drives the sans-IO [`Client`] on the node's one
//! socket. The socket hands it every datagram from the configured TURN server (its side
//! channel); what the client sends leaves from the same socket, so the allocation's
//! 5-tuple is the one QUIC uses. The allocation is kept — refreshed, re-made when the
//! server forgets it — and released (Refresh 0) at shutdown. What it holds is published as
//! [`TurnStatus`] (`dna status`). Relaying QUIC over it is not reached yet (spec/07 §1).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::state::{Shared, TurnStatus};
use super::util::{unix_ms, with_rng};
use crate::nat::turn::{Client, Credentials, TurnConfig, TurnEvent};
use crate::transport::socket::Datagram;

/// How long the task waits for the Refresh 0's answer at shutdown.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Allocates at `server` and keeps the allocation until the node stops.
pub(crate) async fn run(
    shared: Arc<Shared>,
    server: std::net::SocketAddr,
    credentials: Credentials,
    mut rx: mpsc::Receiver<Datagram>,
) {
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
        }
        TurnEvent::Lost(e) => {
            tracing::warn!(error = %e, "TURN allocation lost: allocating again");
            publish(shared, client, |st| {
                st.state = "lost";
                st.relayed = None;
                st.error = Some(e.to_string());
            });
        }
        TurnEvent::Failed(e) => {
            tracing::warn!(error = %e, "TURN: giving up on this server");
            publish(shared, client, |st| {
                st.state = "failed";
                st.relayed = None;
                st.error = Some(e.to_string());
            });
            return true;
        }
        TurnEvent::Closed => {
            publish(shared, client, |st| {
                st.state = "closed";
                st.relayed = None;
            });
            return true;
        }
        // Permissions and data belong to relayed sessions (not reached yet).
        _ => publish(shared, client, |_| {}),
    }
    false
}

fn publish(shared: &Shared, client: &Client, f: impl FnOnce(&mut TurnStatus)) {
    shared.nat.turn.send_modify(|st| {
        f(st);
        st.stats = client.stats();
    });
}

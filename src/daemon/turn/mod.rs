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
//!
//! TURN over TCP (spec/07-relay.md §2.11): when UDP to the server goes unanswered for
//! `turn_tcp_after`, the task hands over to [`super::turn_tcp`], which allocates over a
//! TCP stream and makes the socket send everything through the allocation.

mod allocation;
mod tcp;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::shared::{NodeHandle, Shared, TurnCmd};
use crate::nat::turn::{Credentials, TurnConfig, TurnError};
use crate::transport::socket::Datagram;
use allocation::{new_client, on_event, publish, Next, Permits};

/// How long the task waits for the Refresh 0's answer at shutdown.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// [`NodeHandle::turn_permit`].
pub(crate) fn turn_permit(handle: &NodeHandle, ip: std::net::IpAddr) -> bool {
    handle.shared.nat.turn_permit([ip])
}

/// How long [`settled`] waits beyond `turn_tcp_after`: a TCP connect and an allocation.
const SETTLE_MARGIN: Duration = Duration::from_secs(8);

/// [`NodeHandle::turn_settled`].
pub(crate) async fn turn_settled(handle: &NodeHandle) -> bool {
    settled(&handle.shared).await
}

/// [`NodeHandle::turn_over_tcp`].
pub(crate) fn turn_over_tcp(handle: &NodeHandle) -> bool {
    handle.shared.socket.turn_over_tcp()
}

/// See [`crate::daemon::NodeHandle::turn_settled`].
pub(crate) async fn settled(shared: &Shared) -> bool {
    if shared.cfg.turn_server.is_none() || shared.cfg.turn_credentials.is_none() {
        return false;
    }
    let max = shared.cfg.turn_tcp_after.unwrap_or_default() + SETTLE_MARGIN;
    let mut rx = shared.nat.turn.subscribe();
    let done = tokio::time::timeout(
        max,
        rx.wait_for(|st| matches!(st.state, "allocated" | "failed" | "closed")),
    )
    .await;
    matches!(done, Ok(Ok(st)) if st.state == "allocated")
}

/// Allocates at `first` (or, when it fails, at the next of `turn_fallbacks`, in turn) and
/// keeps the allocation until the node stops: over UDP, or over TCP when UDP gets no
/// answer (spec/07-relay.md §2.11–§2.12).
pub(crate) async fn run(
    shared: Arc<Shared>,
    first: std::net::SocketAddr,
    credentials: Credentials,
    mut rx: mpsc::Receiver<Datagram>,
) {
    // Commands that may wait for the task (`turn_permit_queue`); more are refused (the
    // CONNECT that asked goes on without them). Each CONNECT asks for a few.
    let (cmd_tx, mut cmds) = mpsc::channel(shared.cfg.turn_permit_queue.max(1));
    // Set once: one TURN task per node.
    let _ = shared.nat.turn_cmd.set(cmd_tx);
    let servers: Vec<_> = std::iter::once(first)
        .chain(shared.cfg.turn_fallbacks.iter().copied())
        .collect();
    let rotate = servers.len() > 1;
    let mut permits = Permits::new(TurnConfig::default().max_permissions);
    let mut tcp: Option<tcp::Link> = None;
    // Servers that failed in a row; after a whole round, a pause (doubling to 30 s).
    let mut failed_in_a_row = 0usize;
    let mut pause = Duration::from_secs(1);
    for server in servers.iter().copied().cycle() {
        if shared.stopped.load(Ordering::Relaxed) {
            return;
        }
        if failed_in_a_row > 0 && failed_in_a_row % servers.len() == 0 {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(30));
        }
        shared.socket.use_turn_server(server);
        let mut over_tcp = tcp.is_some();
        if !over_tcp {
            match run_udp(
                &shared,
                server,
                credentials.clone(),
                &mut rx,
                &mut cmds,
                &mut permits,
            )
            .await
            {
                UdpEnd::Stopped => return,
                UdpEnd::Failed => {
                    failed_in_a_row += 1;
                    continue;
                }
                UdpEnd::NoAnswer => {
                    tracing::warn!(%server, "no answer from the TURN server over UDP: trying TCP");
                    over_tcp = true;
                }
            }
        }
        if over_tcp {
            let link = tcp.get_or_insert_with(|| tcp::Link::new(&shared));
            let end = tcp::run(
                &shared,
                server,
                credentials.clone(),
                &mut cmds,
                &mut permits,
                link,
                rotate,
            )
            .await;
            match end {
                tcp::TcpEnd::Stopped => return,
                tcp::TcpEnd::Allocated => {
                    failed_in_a_row = 0;
                    pause = Duration::from_secs(1);
                }
                tcp::TcpEnd::Failed => failed_in_a_row += 1,
            }
            if !rotate && !shared.stopped.load(Ordering::Relaxed) {
                // One server: `tcp::run` keeps trying it by itself until it gives up
                // for good (a refusal): so does the task.
                return;
            }
        }
    }
}

/// How the UDP phase ended.
#[derive(Debug, PartialEq, Eq)]
enum UdpEnd {
    /// Closed, or the node stopped: the task ends.
    Stopped,
    /// The client failed (refused, or the server stopped answering): the next server.
    Failed,
    /// The server never answered within `turn_tcp_after`: try TCP.
    NoAnswer,
}

async fn run_udp(
    shared: &Arc<Shared>,
    server: std::net::SocketAddr,
    credentials: Credentials,
    rx: &mut mpsc::Receiver<Datagram>,
    cmds: &mut mpsc::Receiver<TurnCmd>,
    permits: &mut Permits,
) -> UdpEnd {
    let started = Instant::now();
    let mut client = new_client(server, credentials, TurnConfig::default(), started);
    publish(shared, &client, |st| {
        st.server = Some(server);
        st.transport = "udp";
        st.state = "allocating";
    });
    let give_up = shared.cfg.turn_tcp_after.map(|d| started + d);
    let mut closing: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let silent = client.stats().responses == 0;
        if silent && closing.is_none() && give_up.is_some_and(|t| now >= t) {
            return UdpEnd::NoAnswer;
        }
        while let Some((to, bytes)) = client.poll_transmit(now) {
            // A lost datagram is what the client's timers are for.
            let _ = shared.socket.send_raw(to, &bytes).await;
        }
        while let Some(ev) = client.poll_event() {
            match on_event(shared, &client, ev) {
                Next::Continue => {}
                Next::Failed(TurnError::Timeout(_)) if silent && give_up.is_some() => {
                    return UdpEnd::NoAnswer;
                }
                Next::Failed(e) => {
                    tracing::warn!(%server, error = %e, "TURN: giving up on this server");
                    return UdpEnd::Failed;
                }
                Next::Closed => return UdpEnd::Stopped,
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
        if let (Some(t), true) = (give_up, silent) {
            wake = wake.min(t);
        }
        if let Some(end) = closing {
            if now >= end {
                publish(shared, &client, |st| st.state = "closed");
                return UdpEnd::Stopped;
            }
            wake = wake.min(end);
        }
        tokio::select! {
            d = rx.recv() => match d {
                Some((from, bytes)) => {
                    client.handle_input(Instant::now(), from, &bytes);
                }
                None => return UdpEnd::Stopped,
            },
            Some(TurnCmd::Permit(ip)) = cmds.recv() => {
                permits.ask(shared, &mut client, Instant::now(), ip);
            }
            () = tokio::time::sleep_until(wake.into()) => client.handle_timeout(Instant::now()),
        }
    }
}

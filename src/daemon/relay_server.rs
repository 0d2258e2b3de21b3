//! The bundled relay's driver (spec/07-relay.md §1): a rendezvous node that relays. The
//! table is the sans-IO [`RelayServer`](crate::node::relay_server::RelayServer), shared with the
//! socket as `relay_server_table::RelayShared`; this module answers RELAY_REQUEST on signalling
//! streams and reports the relay's status.
//!
//! The client's side (asking, adding the route) is in `reach`.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::os::with_rng;
use super::shared::{NodeHandle, Shared};
use super::signal_frames::frame;
use crate::crypto::{Fingerprint, FINGERPRINT_LEN};
use crate::dht::Contact;
use crate::nat::signal::ConnectErrorCode;
use crate::node::core::{Answer, Query};
use crate::node::relay_server::{Ask, Grant, RelayRefusal, RelayServerStats, RELAY_WAIT};
use crate::transport::is_relay_token;
use crate::wire::MessageType;

/// RELAY_REQUEST from `peer` (authenticated by its HELLO) over `conn`: both it and the
/// peer it names must be registered here; the answer comes when the other side asked too
/// (RELAY_GRANTED) or after at most [`RELAY_WAIT`] (CONNECT_ERROR `PeerDidNotAsk`).
pub(crate) async fn serve_request(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    peer: Contact,
    payload: &[u8],
) -> BytesMut {
    match request(shared, conn, peer, payload).await {
        Ok(g) => frame(MessageType::RelayGranted, &g.encode()),
        Err(code) => {
            tracing::debug!(peer = %peer.addr, reason = code.reason(), "relay request refused");
            frame(MessageType::ConnectError, &[code as u8])
        }
    }
}

async fn request(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    peer: Contact,
    payload: &[u8],
) -> Result<Grant, ConnectErrorCode> {
    let relay = shared.relay.as_ref().ok_or(ConnectErrorCode::NotRelay)?;
    let bytes: [u8; FINGERPRINT_LEN] = payload
        .try_into()
        .map_err(|_| ConnectErrorCode::Malformed)?;
    let (me, other) = (peer.id, Fingerprint(bytes).node_id());
    // Strangers are refused: both ends hold a live registration here.
    let mut registered = true;
    for id in [me, other] {
        match shared.core.query(Query::Registration(id)).await {
            Some(Answer::Registration(r)) => registered &= r.is_some(),
            _ => return Err(ConnectErrorCode::Busy),
        }
    }
    if !registered {
        return Err(ConnectErrorCode::NotRegistered);
    }
    let addr = conn.remote_address();
    let wait = relay.table().limits().wait.min(RELAY_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let first = with_rng(|rng| relay.table().ask(me, addr, other, Instant::now(), rng));
    match first {
        Ok(Ask::Granted(g)) => {
            relay.made.notify_waiters();
            tracing::info!(a = %me, b = %other, "relayed pair up");
            return Ok(g);
        }
        Ok(Ask::Waiting) => {}
        Err(RelayRefusal::SamePeer) => return Err(ConnectErrorCode::Malformed),
        Err(RelayRefusal::Quota) => return Err(ConnectErrorCode::Quota),
        Err(_) => return Err(ConnectErrorCode::RelayFull),
    }
    loop {
        let made = relay.made.notified();
        tokio::pin!(made);
        made.as_mut().enable();
        if let Some(g) = relay.table().grant(me, other) {
            return Ok(g);
        }
        if tokio::time::timeout_at(deadline, made).await.is_err() {
            relay.table().give_up(me, other);
            return Err(ConnectErrorCode::PeerDidNotAsk);
        }
    }
}

/// One peer whose datagrams a relay carries for us.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RelayedPeer {
    /// The peer's address as QUIC sees it: a token at a bundled relay, or its TURN
    /// relayed address.
    pub addr: String,
    /// `relay` (a bundled relay) or `turn`.
    pub path: &'static str,
    /// The relay node or TURN server.
    pub via: String,
    /// Payload bytes received from the peer through it.
    pub bytes_in: u64,
    /// Payload bytes sent to the peer through it.
    pub bytes_out: u64,
    /// The direct address the session moved to, if it did (spec/07-relay.md §1.9).
    pub direct: Option<String>,
}

/// What relays carry for this node, and what it relays for others.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RelayStatus {
    /// The relay policy: `auto`, `never` or `only`.
    pub policy: &'static str,
    /// Peers reached through a relay.
    pub peers: Vec<RelayedPeer>,
    /// Bytes sent and received through relays in total.
    pub bytes_in: u64,
    /// See `bytes_in`.
    pub bytes_out: u64,
    /// The bundled relay's counters and pairs, if this node relays.
    pub server: Option<RelayServerStats>,
}

/// [`NodeHandle::socket_routes`].
pub(crate) fn socket_routes(handle: &NodeHandle) -> usize {
    handle.shared.socket.routes().len()
}

/// [`NodeHandle::relay_status`].
pub(crate) fn relay_status(handle: &NodeHandle) -> RelayStatus {
    let mut peers: Vec<RelayedPeer> = handle
        .shared
        .socket
        .routes()
        .into_iter()
        .filter(|(_, r)| !r.local)
        .map(|(addr, r)| RelayedPeer {
            addr: addr.to_string(),
            path: if r.bundled && is_relay_token(addr) {
                "relay"
            } else {
                "turn"
            },
            via: r.server.to_string(),
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            direct: r.direct.map(|d| d.to_string()),
        })
        .collect();
    peers.sort_by(|a, b| a.addr.cmp(&b.addr));
    RelayStatus {
        policy: handle.shared.cfg.relay_policy.name(),
        bytes_in: peers.iter().map(|p| p.bytes_in).sum(),
        bytes_out: peers.iter().map(|p| p.bytes_out).sum(),
        peers,
        server: handle.shared.relay.as_ref().map(|r| r.stats()),
    }
}

//! Which path a peer's session is on (spec/07-relay.md §1.9, §3.6): the one function every
//! report of it uses — the `PeerUp` event, the outbox's delivered path, `dna status`'s
//! peers and so devnet's steps. It reads the socket's routes (relay tokens, local aliases,
//! routes through our TURN allocation) and the peers' TURN addresses we dialed.

use std::net::SocketAddr;

use super::events::Path;
use super::shared::Shared;
use super::store::{PATH_DIRECT, PATH_RELAY, PATH_TURN};
use crate::transport::is_relay_token;

/// The path of a session whose QUIC remote address is `remote`, as the socket routes it
/// now:
///
/// - everything is `Turn` while the node sends all through its allocation over TCP;
/// - a local alias or an upgraded relay token is the address it is routed to: `Turn` when
///   that is a peer's TURN relayed address, else `Direct`;
/// - a bundled relay's token is `Relay`;
/// - a peer our socket reaches through our TURN server, or a peer's TURN relayed address
///   dialed directly, is `Turn`;
/// - anything else is `Direct`.
pub(crate) fn path_of(shared: &Shared, remote: SocketAddr) -> Path {
    let (socket, nat) = (&shared.socket, &shared.nat);
    let direct = socket.direct_of(remote);
    if socket.turn_over_tcp() {
        return Path::Turn(direct.unwrap_or(remote));
    }
    match direct {
        Some(d) if nat.is_peer_relay(d) => Path::Turn(d),
        Some(d) => Path::Direct(d),
        None if is_relay_token(remote) => Path::Relay(remote),
        None if socket.route(remote).is_some() || nat.is_peer_relay(remote) => Path::Turn(remote),
        None => Path::Direct(remote),
    }
}

/// The path byte of a delivery over a session with `remote` (spec/09-mailbox.md §7).
pub(crate) fn delivery_path(shared: &Shared, remote: SocketAddr) -> u8 {
    match path_of(shared, remote) {
        Path::Direct(_) => PATH_DIRECT,
        Path::Relay(_) => PATH_RELAY,
        Path::Turn(_) => PATH_TURN,
    }
}

//! The connected peers as the status panel shows them (spec/10-control.md §3): for each live
//! session its remote address, its path (`direct`, `relay` through a bundled relay, `turn`),
//! QUIC's RTT estimate and the bytes its QUIC connection moved; and the on-demand session
//! PING that `dna ping` times (spec/10-control.md §4).

use std::net::SocketAddr;
use std::time::Duration;

use super::shared::{ConnCmd, NodeHandle};
use crate::crypto::Fingerprint;

/// One peer with a live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// Who.
    pub peer: Fingerprint,
    /// The session's remote address as QUIC sees it (a relay token for a relayed peer).
    pub remote: SocketAddr,
    /// Other addresses known for the peer, the newest first.
    pub addrs: Vec<SocketAddr>,
    /// `direct`, `relay` (a bundled relay, spec/07-relay.md §1) or `turn`.
    pub path: &'static str,
    /// The relay node or TURN server carrying it, if relayed.
    pub via: Option<SocketAddr>,
    /// The direct address a relayed session moved to (spec/07-relay.md §1.9).
    pub upgraded_to: Option<SocketAddr>,
    /// QUIC's smoothed round-trip estimate on the session's connection.
    pub quic_rtt: Duration,
    /// UDP payload bytes received on the connection (QUIC's count).
    pub bytes_in: u64,
    /// UDP payload bytes sent on the connection (QUIC's count).
    pub bytes_out: u64,
    /// Bytes the relay route carried, in and out (relayed peers only).
    pub relay_bytes: Option<(u64, u64)>,
}

/// What the socket's route for `remote` says besides the path: `(via, upgraded_to, relay
/// bytes in and out)`.
type RouteFacts = (Option<SocketAddr>, Option<SocketAddr>, Option<(u64, u64)>);

fn route_facts(
    remote: SocketAddr,
    routes: &[(SocketAddr, crate::transport::RelayRoute)],
) -> RouteFacts {
    match routes.iter().find(|(a, _)| *a == remote) {
        // A punched peer's local alias (spec/05-nat.md §5.2).
        Some((_, r)) if r.local => (None, r.direct, None),
        Some((_, r)) => (Some(r.server), r.direct, Some((r.bytes_in, r.bytes_out))),
        None => (None, None, None),
    }
}

/// [`NodeHandle::peers`].
pub(crate) async fn peers(handle: &NodeHandle) -> Vec<PeerStatus> {
    let links = handle.shared.core.links().await;
    let routes = handle.shared.socket.routes();
    let mut out: Vec<PeerStatus> = links
        .into_iter()
        .map(|(peer, addrs, h)| {
            let remote = h.conn.remote_address();
            let (via, upgraded_to, relay_bytes) = route_facts(remote, &routes);
            // The path every report uses (`daemon::path`).
            let path = super::path::path_of(&handle.shared, remote).name();
            let stats = h.conn.stats();
            PeerStatus {
                peer,
                remote,
                addrs,
                path,
                via,
                upgraded_to,
                quic_rtt: h.conn.rtt(),
                bytes_in: stats.udp_rx.bytes,
                bytes_out: stats.udp_tx.bytes,
                relay_bytes,
            }
        })
        .collect();
    out.sort_by_key(|p| p.peer.0);
    out
}

/// [`NodeHandle::ping`].
pub(crate) async fn ping(handle: &NodeHandle, peer: Fingerprint) -> bool {
    let links = handle.shared.core.links().await;
    let link = links.into_iter().find(|(f, _, _)| *f == peer).map(|l| l.2);
    match link {
        Some(h) => h.tx.try_send(ConnCmd::Ping).is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::RelayRoute;

    #[test]
    fn route_facts_name_the_carrier_its_bytes_and_the_upgrade() {
        let token: SocketAddr = "240.0.0.7:9".parse().unwrap();
        let plain: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let server: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let route = |local, direct| RelayRoute {
            server,
            bundled: true,
            bytes_in: 10,
            bytes_out: 20,
            direct,
            local,
        };
        let routes = vec![(token, route(false, None))];
        assert_eq!(
            route_facts(token, &routes),
            (Some(server), None, Some((10, 20)))
        );
        assert_eq!(route_facts(plain, &routes), (None, None, None));
        let up = vec![(token, route(false, Some(plain)))];
        assert_eq!(
            route_facts(token, &up),
            (Some(server), Some(plain), Some((10, 20)))
        );
        // A punched pair's local alias is no carrier.
        let alias = vec![(token, route(true, Some(plain)))];
        assert_eq!(route_facts(token, &alias), (None, Some(plain), None));
    }
}

//! Side sockets of port prediction (spec/05-nat.md §5.5). The hard side of a prediction
//! opens extra UDP sockets; the one the easy side's probe reaches becomes the path to that
//! peer: a *side route* sends everything for the peer (QUIC, STUN) from that socket, and
//! what the socket receives from the peer is handed in through [`DnaSocket::side_input`]
//! — STUN to the STUN queue, QUIC to quinn as if it had arrived on the main socket. quinn
//! keeps one endpoint and one connection table; only the peer's 5-tuple differs.
//!
//! The daemon owns the side sockets' reading tasks (`daemon::spray`); the socket only
//! routes. At most [`MAX_SIDE_ROUTES`] peers have a side route.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use quinn::udp::{RecvMeta, Transmit};

use super::{canonical, classify, is_stun, DnaSocket, Route};

/// Peers reached through a side socket at most.
pub const MAX_SIDE_ROUTES: usize = 32;

/// Peer (canonical address) → the side socket that reaches it: a non-blocking std socket
/// (a clone of the reader's), so that a send never depends on a reactor's readiness cache.
pub(super) type SideRoutes = HashMap<SocketAddr, Arc<std::net::UdpSocket>>;

impl DnaSocket {
    fn sides(&self) -> MutexGuard<'_, SideRoutes> {
        // Plain inserts and removals: a panic elsewhere cannot leave them half-done.
        self.side.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reaches `peer` through `socket` from now on. `false` when [`MAX_SIDE_ROUTES`] peers
    /// have one already.
    pub fn add_side_route(&self, peer: SocketAddr, socket: Arc<std::net::UdpSocket>) -> bool {
        let peer = canonical(peer);
        let mut s = self.sides();
        if !s.contains_key(&peer) && s.len() >= MAX_SIDE_ROUTES {
            return false;
        }
        s.insert(peer, socket);
        self.sided.store(true, Ordering::Release);
        true
    }

    /// Reaches `peer` from the main socket again.
    pub fn remove_side_route(&self, peer: SocketAddr) {
        let mut s = self.sides();
        s.remove(&canonical(peer));
        self.sided.store(!s.is_empty(), Ordering::Release);
    }

    /// Whether `peer` is reached through a side socket.
    pub fn has_side_route(&self, peer: SocketAddr) -> bool {
        self.sided.load(Ordering::Acquire) && self.sides().contains_key(&canonical(peer))
    }

    /// Peers with a side route.
    pub fn side_routes(&self) -> usize {
        self.sides().len()
    }

    /// Sends `t` through the side socket of its destination, if it has one (each GSO
    /// segment as its own datagram: the side socket has no GSO). `None`: no side route.
    pub(super) fn side_send(&self, t: &Transmit) -> Option<io::Result<()>> {
        if !self.sided.load(Ordering::Acquire) {
            return None;
        }
        let to = canonical(t.destination);
        let sock = self.sides().get(&to).cloned()?;
        let to = match (to, sock.local_addr()) {
            (SocketAddr::V4(v4), Ok(SocketAddr::V6(_))) => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            (a, _) => a,
        };
        let seg = t.segment_size.unwrap_or(t.contents.len()).max(1);
        for chunk in t.contents.chunks(seg) {
            match sock.send_to(chunk, to) {
                Ok(_) => {}
                // Full: dropped like a lost datagram; QUIC repairs it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(()))
    }

    /// A datagram a side socket received from `from` (its peer): STUN to the STUN queue,
    /// QUIC to quinn (as from the peer's local alias, if it has one), anything else
    /// dropped. `dst_ip`: the side socket's address.
    pub fn side_input(&self, from: SocketAddr, data: &[u8], dst_ip: Option<IpAddr>) {
        let from = canonical(from);
        match classify(from, data, None) {
            Route::Quic => {}
            Route::Stun if is_stun(data) => return self.dispatch(Route::Stun, from, data),
            _ => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let peer = self
            .alias(from)
            .map_or(self.present(from), |a| self.present(a));
        {
            let mut r = self.relay();
            if r.inject.len() >= self.limits.inject_queue {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let m = RecvMeta {
                addr: peer,
                len: data.len(),
                stride: data.len(),
                ecn: None,
                dst_ip,
            };
            r.inject.push_back((m, data.to_vec()));
            self.injected.store(true, Ordering::Release);
        }
        if let Some(w) = self
            .recv_waker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            w.wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn bound() -> tokio::net::UdpSocket {
        tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap()
    }

    /// A side route carries QUIC both ways and its STUN to the STUN queue; the table is
    /// bounded.
    #[tokio::test]
    async fn a_side_route_carries_a_peer_both_ways_and_is_bounded() {
        let main = crate::transport::socket::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let (s, mut chans) = DnaSocket::new(main, None).unwrap();
        let side = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        side.set_nonblocking(true).unwrap();
        let side = Arc::new(side);
        let peer = bound().await;
        let peer_addr = peer.local_addr().unwrap();
        assert!(s.add_side_route(peer_addr, side.clone()));
        // Outbound: a two-segment GSO transmit leaves the side socket as two datagrams.
        let t = Transmit {
            destination: peer_addr,
            ecn: None,
            contents: &[0x40u8; 20],
            segment_size: Some(10),
            src_ip: None,
        };
        quinn::AsyncUdpSocket::try_send(&*s, &t).unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..2 {
            let (n, from) = peer.recv_from(&mut buf).await.unwrap();
            assert_eq!((n, from), (10, side.local_addr().unwrap()));
        }
        // Inbound STUN goes to the STUN queue as from the peer.
        let t0 = crate::nat::tests::t0();
        let mut stun = crate::nat::stun::Binding::new(peer_addr, [3; 12], t0);
        let req = stun.poll_transmit(t0).unwrap().1.to_vec();
        s.side_input(peer_addr, &req, None);
        let (from, bytes) = chans.stun.recv().await.unwrap();
        assert_eq!((from, &bytes[..]), (peer_addr, &req[..]));
        // Inbound QUIC waits for quinn.
        s.side_input(peer_addr, &[0x40; 30], None);
        assert_eq!(s.relay().inject.len(), 1);
        // Bounded.
        for port in 1..=(MAX_SIDE_ROUTES as u16 + 5) {
            s.add_side_route(SocketAddr::from(([127, 0, 0, 9], port)), side.clone());
        }
        assert_eq!(s.side_routes(), MAX_SIDE_ROUTES);
        s.remove_side_route(peer_addr);
        assert!(!s.has_side_route(peer_addr));
    }
}

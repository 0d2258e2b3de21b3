//! The socket's side of TURN over TCP (spec/07-relay.md §2.11). When UDP to the TURN
//! server gets no answer, the node concludes that its network lets no UDP out and sends
//! *everything* through its allocation, over a TCP stream to the server: the relayed
//! address becomes its public address. Outbound, a datagram to any address (QUIC, STUN
//! probes) becomes a Send indication handed to the TURN task's stream writer, and the
//! peer's IP is asked for a permission once. Until the server has installed that
//! permission, the indications go to the TURN task instead, which holds them and writes
//! them once it is (a server drops a Send indication without a permission, and the first
//! packets to a new peer — a QUIC Initial, a DHT request — would be lost). Inbound, the TURN task hands every frame it
//! reads to [`DnaSocket::turn_tcp_input`]; a Data indication is unwrapped for quinn (or the
//! STUN queue) as if it had arrived on the UDP socket, and quinn's receive task is woken.
//!
//! Seen from outside, such a node sits behind an endpoint-independent mapping (the
//! relayed address) with address-dependent filtering (the permissions): punching works as
//! behind an address-restricted cone NAT.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use tokio::sync::mpsc;

use super::{canonical, encode_indication, parse_indication, DnaSocket};
use super::{DATA_INDICATION, SEND_INDICATION};

/// Frames (Send indications) that may wait for the TCP writer; beyond it they are dropped
/// and counted (QUIC repairs the loss).
pub const TCP_FRAME_QUEUE: usize = 1024;

/// What the socket needs from the TURN task to send over TCP.
#[derive(Debug)]
pub struct TurnTcpLink {
    /// The current connection's writer; `None` between connections (datagrams dropped).
    frames: Mutex<Option<mpsc::Sender<Bytes>>>,
    /// Peer IPs that need a permission.
    permits: mpsc::Sender<IpAddr>,
    /// Indications for peers whose permission is not installed yet: the TURN task holds
    /// them.
    held: mpsc::Sender<(IpAddr, Bytes)>,
    /// IPs already asked for (bounded: cleared when full; asking twice is harmless).
    asked: Mutex<HashSet<IpAddr>>,
    /// IPs whose permission the server installed (bounded like `asked`).
    installed: Mutex<HashSet<IpAddr>>,
    max_asked: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain inserts and replacements: a panic elsewhere cannot leave them half-done.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DnaSocket {
    /// Sends everything through the TURN allocation over TCP from now on (once; later
    /// calls are ignored). `permits` receives each peer IP that needs a permission.
    /// `false` without a TURN server.
    /// `held` receives the indications for peers whose permission is not installed yet.
    pub fn use_turn_tcp(
        &self,
        permits: mpsc::Sender<IpAddr>,
        held: mpsc::Sender<(IpAddr, Bytes)>,
    ) -> bool {
        if self.turn_servers.is_empty() {
            return false;
        }
        let _ = self.tcp.set(TurnTcpLink {
            frames: Mutex::new(None),
            permits,
            held,
            asked: Mutex::new(HashSet::new()),
            installed: Mutex::new(HashSet::new()),
            max_asked: self.limits.max_peers,
        });
        true
    }

    /// The server installed the permission for `ip`: indications to it go straight to the
    /// stream from now on.
    pub fn turn_permit_installed(&self, ip: IpAddr) {
        if let Some(link) = self.tcp.get() {
            let mut installed = lock(&link.installed);
            if installed.len() >= link.max_asked {
                installed.clear();
            }
            installed.insert(ip);
        }
    }

    /// No permission is installed any more (a new allocation): indications are held
    /// again until the TURN task has them re-made.
    pub fn turn_permits_reset(&self) {
        if let Some(link) = self.tcp.get() {
            lock(&link.installed).clear();
        }
    }

    /// Whether everything goes through the TURN allocation over TCP.
    pub fn turn_over_tcp(&self) -> bool {
        self.tcp.get().is_some()
    }

    /// The writer of the current TCP connection to the TURN server (`None`: between
    /// connections, datagrams are dropped).
    pub fn set_turn_tcp_writer(&self, frames: Option<mpsc::Sender<Bytes>>) {
        if let Some(link) = self.tcp.get() {
            *lock(&link.frames) = frames;
        }
    }

    /// Forgets that `ip` was asked for a permission (the TURN task dropped it): the next
    /// datagram to it asks again.
    pub fn forget_turn_permit(&self, ip: IpAddr) {
        if let Some(link) = self.tcp.get() {
            lock(&link.asked).remove(&ip);
            lock(&link.installed).remove(&ip);
        }
    }

    /// The TURN server when every datagram to `to` goes through the allocation.
    pub(super) fn default_route(&self, to: SocketAddr) -> Option<SocketAddr> {
        let server = self.turn_server()?;
        self.tcp.get()?;
        (!self.is_turn_server(canonical(to)) && canonical(to) != canonical(server))
            .then_some(server)
    }

    /// Whether the TURN server can relay to `to`: same family as the server, and not an
    /// address only a LAN can reach (private, link-local, unique-local, multicast,
    /// unspecified; loopback only when the server is on loopback itself). A peer's host
    /// candidates are such addresses; coturn ends the whole allocation when a send from
    /// its relay socket fails ("Network is unreachable"), so they are never handed to it.
    pub(super) fn relayable(&self, to: SocketAddr) -> bool {
        let Some(server) = self.turn_server().map(canonical) else {
            return false;
        };
        let to = canonical(to);
        if to.port() == 0 || to.is_ipv4() != server.is_ipv4() {
            return false;
        }
        if to.ip().is_loopback() {
            return server.ip().is_loopback();
        }
        match to.ip() {
            IpAddr::V4(v4) => {
                !(v4.is_private()
                    || v4.is_link_local()
                    || v4.is_multicast()
                    || v4.is_broadcast()
                    || v4.is_unspecified())
            }
            IpAddr::V6(v6) => {
                let s0 = v6.segments()[0];
                !(v6.is_multicast()
                    || v6.is_unspecified()
                    || s0 & 0xFE00 == 0xFC00
                    || s0 & 0xFFC0 == 0xFE80)
            }
        }
    }

    /// Sends `t` (any number of GSO segments) as Send indications on the TCP stream.
    pub(super) fn send_over_tcp(&self, link: &TurnTcpLink, t: &Transmit) -> io::Result<()> {
        let peer = canonical(t.destination);
        {
            let mut asked = lock(&link.asked);
            if !asked.contains(&peer.ip()) {
                if asked.len() >= link.max_asked {
                    asked.clear();
                }
                if link.permits.try_send(peer.ip()).is_ok() {
                    asked.insert(peer.ip());
                }
            }
        }
        let Some(tx) = lock(&link.frames).clone() else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let installed = lock(&link.installed).contains(&peer.ip());
        let seg = t.segment_size.unwrap_or(t.contents.len()).max(1);
        let mut sent = 0u64;
        for s in t.contents.chunks(seg) {
            let mut buf = Vec::new();
            if encode_indication(&mut buf, SEND_INDICATION, self.next_tid(), peer, s).is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "segment too long",
                ));
            }
            // A full queue is a loss QUIC repairs.
            let ok = if installed {
                tx.try_send(Bytes::from(buf)).is_ok()
            } else {
                link.held.try_send((peer.ip(), Bytes::from(buf))).is_ok()
            };
            if ok {
                sent += 1;
                if let Some(r) = self.relay().peers.get_mut(&peer) {
                    r.bytes_out += s.len() as u64;
                }
            } else {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.stats.relayed_out.fetch_add(sent, Ordering::Relaxed);
        Ok(())
    }

    /// One frame read from the TCP stream to the TURN server: a Data indication is
    /// unwrapped (for quinn or the STUN queue, as from its peer) and `true` returned;
    /// anything else is the TURN client's (`false`).
    pub fn turn_tcp_input(&self, frame: &[u8]) -> bool {
        let Some(server) = self.turn_server() else {
            return false;
        };
        let Some((peer, payload)) = parse_indication(DATA_INDICATION, frame) else {
            return false;
        };
        let meta = RecvMeta {
            addr: server,
            len: frame.len(),
            stride: frame.len(),
            ecn: None,
            dst_ip: None,
        };
        self.unwrap_turn_data(&meta, peer, payload);
        if let Some(w) = lock(&self.recv_waker).as_ref() {
            w.wake_by_ref();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode_indication;
    use super::*;
    use quinn::AsyncUdpSocket;
    use std::sync::Arc;

    fn socket(turn: SocketAddr) -> Arc<DnaSocket> {
        let udp = crate::transport::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        DnaSocket::new(udp, Some(turn)).unwrap().0
    }

    /// Over TCP, a datagram to any address becomes a Send indication for the writer, its
    /// IP is asked for a permission once, and a Data indication read from the stream
    /// reaches quinn as from its peer.
    #[tokio::test]
    async fn everything_goes_through_the_allocation_over_tcp() {
        let turn: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        let s = socket(turn);
        let (ptx, mut prx) = mpsc::channel(8);
        let (htx, mut hrx) = mpsc::channel(8);
        let (ftx, mut frx) = mpsc::channel(8);
        assert!(s.use_turn_tcp(ptx, htx));
        let peer: SocketAddr = "127.0.0.9:4000".parse().unwrap();
        let quic = vec![0x40u8; 100];
        // No writer yet: dropped, counted.
        let t = Transmit {
            destination: peer,
            ecn: None,
            contents: &quic,
            segment_size: None,
            src_ip: None,
        };
        s.try_send(&t).unwrap();
        assert_eq!(s.stats().dropped.load(Ordering::Relaxed), 1);
        s.set_turn_tcp_writer(Some(ftx));
        let two = [quic.clone(), vec![0x41u8; 100]].concat();
        let t = Transmit {
            contents: &two,
            segment_size: Some(100),
            ..t
        };
        // Before the permission is installed the TURN task holds them; after, the writer
        // takes them.
        s.try_send(&t).unwrap();
        s.turn_permit_installed(peer.ip());
        s.try_send(&t).unwrap();
        for want in [0x40u8, 0x41] {
            let (ip, f) = hrx.try_recv().unwrap();
            let (to, data) = parse_indication(SEND_INDICATION, &f).unwrap();
            assert_eq!((ip, to, data.len(), data[0]), (peer.ip(), peer, 100, want));
            let f = frx.try_recv().unwrap();
            let (to, data) = parse_indication(SEND_INDICATION, &f).unwrap();
            assert_eq!((to, data.len(), data[0]), (peer, 100, want));
        }
        assert!(hrx.try_recv().is_err() && frx.try_recv().is_err());
        assert_eq!(prx.try_recv().unwrap(), peer.ip());
        assert!(prx.try_recv().is_err(), "the IP is asked for once");
        assert_eq!(s.route(peer), Some(turn));
        // The server's own address is never wrapped (the TURN task talks to it).
        assert_eq!(s.default_route(turn), None);
        // A forgotten permission is asked again.
        s.forget_turn_permit(peer.ip());
        s.try_send(&t).unwrap();
        assert_eq!(prx.try_recv().unwrap(), peer.ip());

        let mut data = Vec::new();
        encode_indication(&mut data, DATA_INDICATION, [7; 12], peer, &quic).unwrap();
        assert!(s.turn_tcp_input(&data));
        assert!(!s.turn_tcp_input(&[0u8; 20]), "not a Data indication");
        let mut buf = vec![0u8; 2048];
        let mut meta = [RecvMeta::default()];
        let mut bufs = [std::io::IoSliceMut::new(&mut buf)];
        let n = std::future::poll_fn(|cx| s.poll_recv(cx, &mut bufs, &mut meta))
            .await
            .unwrap();
        assert_eq!((n, meta[0].addr, meta[0].len), (1, peer, 100));
    }

    /// A Data indication read from the stream while quinn waits wakes it, also when quinn
    /// began waiting before the node went over to TCP (the bed's first handshakes through
    /// TURN/TCP stalled for 10 s before this).
    #[tokio::test]
    async fn a_frame_from_the_stream_wakes_the_receiver() {
        let turn: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        let s = socket(turn);
        let (ptx, _prx) = mpsc::channel(8);
        let (htx, _hrx) = mpsc::channel(8);
        let peer: SocketAddr = "127.0.0.9:4000".parse().unwrap();
        let r = s.clone();
        let recv = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut meta = [RecvMeta::default()];
            let mut bufs = [std::io::IoSliceMut::new(&mut buf)];
            std::future::poll_fn(|cx| r.poll_recv(cx, &mut bufs, &mut meta))
                .await
                .map(|n| (n, meta[0].addr))
        });
        // Let the receiver park first (before the stream begins: TCP mode is set later).
        while s.recv_waker.lock().unwrap().is_none() {
            tokio::task::yield_now().await;
        }
        assert!(s.use_turn_tcp(ptx, htx));
        let mut data = Vec::new();
        encode_indication(&mut data, DATA_INDICATION, [7; 12], peer, &[0x40; 50]).unwrap();
        assert!(s.turn_tcp_input(&data));
        assert_eq!(recv.await.unwrap().unwrap(), (1, peer));
    }
}

#[cfg(test)]
mod bounds {
    use super::super::{encode_indication, TURN_STUN_MEMORY};
    use super::*;
    use std::sync::Arc;

    /// What peers can grow on the TURN/TCP path stays bounded: 300 STUN messages through
    /// the relay leave the last 256 transaction IDs (the oldest forgotten), and permission
    /// requests for 300 peer IPs never hold more than `relay.max_peers` IPs as asked.
    #[tokio::test]
    async fn stun_memory_and_asked_permissions_are_bounded() {
        let turn: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        let udp = crate::transport::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let s: Arc<DnaSocket> = DnaSocket::new(udp, Some(turn)).unwrap().0;
        let (ptx, mut prx) = mpsc::channel(1024);
        let (htx, _hrx) = mpsc::channel(8);
        assert!(s.use_turn_tcp(ptx, htx));
        let stun = |i: u32| {
            let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
            m.extend_from_slice(&[0; 8]);
            m.extend_from_slice(&i.to_be_bytes());
            m
        };
        let peer: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        for i in 0..300u32 {
            let mut d = Vec::new();
            encode_indication(&mut d, DATA_INDICATION, [7; 12], peer, &stun(i)).unwrap();
            assert!(s.turn_tcp_input(&d));
        }
        let kept = s.turn_stun.lock().unwrap().len();
        assert_eq!(kept, TURN_STUN_MEMORY);
        assert!(!s.came_via_turn(&stun(0)), "the oldest forgotten");
        assert!(s.came_via_turn(&stun(299)));
        let (ftx, _frx) = mpsc::channel(8);
        s.set_turn_tcp_writer(Some(ftx));
        let link = s.tcp.get().unwrap();
        let mut most = 0;
        for i in 0..300u32 {
            let to = SocketAddr::from((std::net::Ipv4Addr::from(0xC633_6400 + i), 9));
            let t = Transmit {
                destination: to,
                ecn: None,
                contents: &[0x40; 20],
                segment_size: None,
                src_ip: None,
            };
            s.send_over_tcp(link, &t).unwrap();
            most = most.max(lock(&link.asked).len());
        }
        let asked = std::iter::from_fn(|| prx.try_recv().ok()).count();
        println!(
            "STUN through the relay: 300 in, {kept} IDs kept; 300 peer IPs: {asked} permission \
             requests, at most {most} held as asked (bound {})",
            link.max_asked
        );
        assert!(most <= link.max_asked);
        assert_eq!(asked, 300, "each asked once");
    }
}

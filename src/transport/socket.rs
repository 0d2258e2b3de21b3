//! The node's one UDP socket (design brief, decision 2): quinn runs on it through
//! [`quinn::AsyncUdpSocket`]; STUN and TURN datagrams are taken out before quinn sees them
//! ([`super::demux`]); [`DnaSocket::send_raw`] sends probes from the same port.
//!
//! The wrapper delegates to quinn's own tokio socket (so GSO/GRO and ECN stay on) and
//! filters each received batch in place: a non-QUIC segment inside a GRO batch is cut out
//! and the rest closed up.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, TokioRuntime, UdpPoller};
use tokio::sync::mpsc;

use super::demux::{classify, Route};

/// How many STUN or TURN datagrams may wait for their handler before new ones are dropped.
pub const SIDE_QUEUE: usize = 1024;

/// A datagram for the STUN agent or TURN client.
pub type Datagram = (SocketAddr, Bytes);

/// Receivers of the datagrams the socket takes out for STUN and TURN.
pub struct SideChannels {
    /// STUN messages (not from the TURN server).
    pub stun: mpsc::Receiver<Datagram>,
    /// Everything from the TURN server.
    pub turn: mpsc::Receiver<Datagram>,
}

/// Counters of what the demultiplexer did.
#[derive(Debug, Default)]
pub struct SocketStats {
    /// Datagrams handed to the STUN queue.
    pub stun: AtomicU64,
    /// Datagrams handed to the TURN queue.
    pub turn: AtomicU64,
    /// Datagrams dropped: unknown protocol, or a full queue.
    pub dropped: AtomicU64,
}

/// The shared socket.
pub struct DnaSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    turn_server: Option<SocketAddr>,
    stun_tx: mpsc::Sender<Datagram>,
    turn_tx: mpsc::Sender<Datagram>,
    stats: SocketStats,
}

impl fmt::Debug for DnaSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnaSocket")
            .field("local", &self.inner.local_addr().ok())
            .field("turn_server", &self.turn_server)
            .finish_non_exhaustive()
    }
}

/// Binds a UDP socket; an unspecified IPv6 address is bound dual-stack where the OS allows.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // Dual-stack is best effort: some systems forbid it.
        let _ = s.set_only_v6(false);
    }
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

impl DnaSocket {
    /// Wraps a bound socket. Must run inside a tokio runtime.
    pub fn new(
        socket: std::net::UdpSocket,
        turn_server: Option<SocketAddr>,
    ) -> io::Result<(Arc<DnaSocket>, SideChannels)> {
        let inner = TokioRuntime.wrap_udp_socket(socket)?;
        let (stun_tx, stun) = mpsc::channel(SIDE_QUEUE);
        let (turn_tx, turn) = mpsc::channel(SIDE_QUEUE);
        let s = Arc::new(DnaSocket {
            inner,
            turn_server,
            stun_tx,
            turn_tx,
            stats: SocketStats::default(),
        });
        Ok((s, SideChannels { stun, turn }))
    }

    /// What the demultiplexer did so far.
    pub fn stats(&self) -> &SocketStats {
        &self.stats
    }

    /// Sends one datagram from this socket (STUN probes, TURN requests).
    pub async fn send_raw(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        let mut poller = self.inner.clone().create_io_poller();
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents: bytes,
            segment_size: None,
            src_ip: None,
        };
        loop {
            match self.inner.try_send(&transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx)).await?;
                }
                r => return r,
            }
        }
    }

    fn dispatch(&self, route: Route, from: SocketAddr, data: &[u8]) {
        let (tx, counter) = match route {
            Route::Stun => (&self.stun_tx, &self.stats.stun),
            Route::Turn => (&self.turn_tx, &self.stats.turn),
            Route::Quic | Route::Drop => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        match tx.try_send((from, Bytes::copy_from_slice(data))) {
            Ok(()) => counter.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.stats.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Takes non-QUIC segments out of one received buffer; returns the QUIC bytes left.
    fn filter(&self, from: SocketAddr, buf: &mut [u8], stride: usize) -> usize {
        let mut len = buf.len();
        let stride = if stride == 0 { len } else { stride };
        let mut at = 0;
        while at < len {
            let end = (at + stride).min(len);
            match classify(from, &buf[at..end], self.turn_server) {
                Route::Quic => at = end,
                route => {
                    self.dispatch(route, from, &buf[at..end]);
                    buf.copy_within(end..len, at);
                    len -= end - at;
                }
            }
        }
        len
    }
}

impl AsyncUdpSocket for DnaSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            let mut kept = 0;
            for i in 0..n {
                let m = meta[i];
                let len = m.len.min(bufs[i].len());
                let left = self.filter(m.addr, &mut bufs[i][..len], m.stride);
                if left == 0 {
                    continue;
                }
                if kept != i {
                    let (head, tail) = bufs.split_at_mut(i);
                    head[kept][..left].copy_from_slice(&tail[0][..left]);
                }
                meta[kept] = RecvMeta { len: left, ..m };
                kept += 1;
            }
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

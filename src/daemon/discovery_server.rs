//! The RFC 5780 discovery server's driver (spec/05-nat.md §2.1): `dna bootstrap
//! --other-address IP2` keeps its one socket IP1:P1 and opens three more UDP sockets, for
//! STUN only — IP1:P2, IP2:P1, IP2:P2 — so NAT behaviour discovery needs no coturn.
//!
//! One task owns the three sockets and one [`StunResponder::rfc5780`] for all four, so the
//! rate limit and the byte rule hold per source across them. The node's STUN loop hands it
//! every Binding request that reaches the node's socket ([`Forward::offer`], a bounded
//! queue: a full queue drops the request, counted `dropped`); the task answers each from the
//! socket the sans-IO responder names — the node's socket through
//! [`DnaSocket::send_raw`], or one of its own. Its counters are the node's `stun_stats`.
//! This module imports no other driver module.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::nat::responder::{ResponderConfig, ResponderStats, StunResponder};
use crate::nat::stun::{ServerAddresses, ServerSocket};
use crate::transport::DnaSocket;

/// Binding requests from the node's socket that may wait for the discovery server (each at
/// most `max_request`, 548 bytes: ≈ 140 KiB); more are dropped and counted.
pub const FORWARD_QUEUE: usize = 256;

/// Where the RFC 5780 server's second address and port are (spec/05 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryServerConfig {
    /// IP2: a second address of the host, of the family of the node's own (specific,
    /// not 0.0.0.0 or ::) address IP1.
    pub other_ip: std::net::IpAddr,
    /// P2: the second port (default: the node's port P1 + 1).
    pub other_port: Option<u16>,
}

/// The three extra sockets, bound, before the task runs.
#[derive(Debug)]
pub struct DiscoveryServer {
    addrs: ServerAddresses,
    sockets: [(ServerSocket, UdpSocket); 3],
}

/// Binds IP1:P2, IP2:P1 and IP2:P2 next to the node's socket `primary` (IP1:P1).
pub async fn bind(primary: SocketAddr, cfg: &DiscoveryServerConfig) -> io::Result<DiscoveryServer> {
    let other_port = cfg
        .other_port
        .or_else(|| primary.port().checked_add(1))
        .unwrap_or(0);
    let addrs = ServerAddresses::new(primary, cfg.other_ip, other_port)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut bound = Vec::with_capacity(3);
    for s in [
        ServerSocket::OTHER_PORT,
        ServerSocket::OTHER_IP,
        ServerSocket::OTHER_BOTH,
    ] {
        let at = addrs.addr(s);
        let socket = UdpSocket::bind(at)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("RFC 5780 socket {at}: {e}")))?;
        bound.push((s, socket));
    }
    let [a, b, c]: [(ServerSocket, UdpSocket); 3] = bound
        .try_into()
        .map_err(|_| io::Error::other("three sockets"))?;
    tracing::info!(
        primary = %primary,
        other = %addrs.addr(ServerSocket::OTHER_BOTH),
        "RFC 5780 discovery server: four sockets"
    );
    Ok(DiscoveryServer {
        addrs,
        sockets: [a, b, c],
    })
}

/// The node's STUN loop's way to hand Binding requests to the discovery server.
#[derive(Debug)]
pub struct Forward {
    tx: mpsc::Sender<(SocketAddr, Bytes)>,
    dropped: Arc<AtomicU64>,
}

impl Forward {
    /// Takes `bytes` from `from` if it is a Binding request (message type 0x0001): the
    /// discovery server answers it, or drops it when its queue is full (counted). `false`:
    /// not a Binding request, the caller's to handle.
    pub fn offer(&self, from: SocketAddr, bytes: &Bytes) -> bool {
        if bytes.get(..2) != Some(&[0x00, 0x01][..]) {
            return false;
        }
        if self.tx.try_send((from, bytes.clone())).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        true
    }
}

impl DiscoveryServer {
    /// Starts the task: answers on all four sockets, with limits `cfg`, sending from the
    /// node's socket `main` what leaves from IP1:P1, and publishing counters to `stats`.
    pub fn spawn(
        self,
        main: Arc<DnaSocket>,
        cfg: ResponderConfig,
        stats: watch::Sender<ResponderStats>,
    ) -> Forward {
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let responder = StunResponder::rfc5780(cfg, self.addrs);
        let sockets = self.sockets.map(|(s, u)| (s, Arc::new(u)));
        tokio::spawn(run(rx, sockets, main, responder, stats, dropped.clone()));
        Forward { tx, dropped }
    }
}

async fn run(
    mut rx: mpsc::Receiver<(SocketAddr, Bytes)>,
    sockets: [(ServerSocket, Arc<UdpSocket>); 3],
    main: Arc<DnaSocket>,
    mut responder: StunResponder,
    stats: watch::Sender<ResponderStats>,
    dropped: Arc<AtomicU64>,
) {
    // One byte more than the longest request looked at, so a longer one shows as oversize.
    let len = responder.config().max_request + 1;
    let (mut b0, mut b1, mut b2) = (vec![0u8; len], vec![0u8; len], vec![0u8; len]);
    let [(s0, u0), (s1, u1), (s2, u2)] = &sockets;
    loop {
        let (on, from, data): (ServerSocket, SocketAddr, Bytes) = tokio::select! {
            d = rx.recv() => match d {
                Some((from, bytes)) => (ServerSocket::PRIMARY, from, bytes),
                // The node's STUN loop ended: the node is gone.
                None => return,
            },
            r = u0.recv_from(&mut b0) => match r {
                Ok((n, from)) => (*s0, from, Bytes::copy_from_slice(&b0[..n])),
                Err(e) => { tracing::debug!(error = %e, "RFC 5780 socket"); continue; }
            },
            r = u1.recv_from(&mut b1) => match r {
                Ok((n, from)) => (*s1, from, Bytes::copy_from_slice(&b1[..n])),
                Err(e) => { tracing::debug!(error = %e, "RFC 5780 socket"); continue; }
            },
            r = u2.recv_from(&mut b2) => match r {
                Ok((n, from)) => (*s2, from, Bytes::copy_from_slice(&b2[..n])),
                Err(e) => { tracing::debug!(error = %e, "RFC 5780 socket"); continue; }
            },
        };
        let reply = responder.handle_on(Instant::now(), on, from, &data);
        let mut s = responder.stats();
        s.dropped = dropped.load(Ordering::Relaxed);
        stats.send_replace(s);
        let Ok(reply) = reply else {
            continue;
        };
        let sent = match sockets.iter().find(|(s, _)| *s == reply.via) {
            Some((_, u)) => u.send_to(&reply.bytes, from).await.map(|_| ()),
            None => main.send_raw(from, &reply.bytes).await,
        };
        if let Err(e) = sent {
            tracing::debug!(%from, via = ?reply.via, error = %e, "RFC 5780 answer not sent");
        }
    }
}

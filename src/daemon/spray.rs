//! Port prediction, the driver side (spec/05-nat.md §5.5): which part this node plays in
//! an attempt ([`plan`]), and the hard side's side sockets ([`Spray`]). The sans-IO parts
//! are `nat::predict` (role, probe schedule, budget) and `nat::punch` (the probes and the
//! sprayed checks); the socket's side routes are `transport::socket::side`.
//!
//! The hard side opens up to [`SPRAY_SOCKETS`] UDP sockets and sends one authenticated
//! check from each toward the easy side's public address. Each socket gets a task that
//! waits for a datagram from the easy side's IP; the first socket to hear one wins: the
//! socket routes the sender through it (QUIC and STUN alike), and the others close when
//! the attempt ends. The winner's task carries the peer's datagrams in until the route is
//! removed (the connection ended) or nothing came for [`SIDE_IDLE`].

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

use super::os::with_rng;
use super::shared::Shared;
use crate::nat::candidate::Candidate;
use crate::nat::predict::{self, Behaviour, Need, ProbeConfig, Prober, SPRAY_SOCKETS};
use crate::node::core::{Input, Reply};
use crate::transport::socket::canonical;

/// A winning side socket that heard nothing from its peer this long closes and removes
/// its route (QUIC keep-alives come every 15 s).
pub(crate) const SIDE_IDLE: Duration = Duration::from_secs(120);
/// A side socket's receive buffer before it wins (only the first datagram matters), and
/// after (a whole QUIC datagram).
const SPRAY_BUF: usize = 2048;
const SIDE_BUF: usize = 65_536;

/// What this node does in an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Hard side: side sockets toward the peer's public address.
    Spray { to: SocketAddr },
    /// Easy side: probe ports of `target`'s IP, `budget` at most.
    Probe {
        target: SocketAddr,
        sequential: bool,
        budget: u32,
    },
}

/// Our NAT behaviour as our CONNECT signals state it: unknown when prediction is off, so
/// that neither side predicts.
pub(crate) fn our_behaviour(shared: &Shared) -> Behaviour {
    if !shared.cfg.port_prediction {
        return Behaviour::UNKNOWN;
    }
    Behaviour::of(shared.nat.status.borrow().class.as_ref())
}

/// Our part in an attempt toward a peer whose verified, fresh signal stated `remote`
/// and these candidates (`nat::predict::plan`), with the easy side's probes granted by the
/// node core's per-peer budget; `None` when the pair needs no prediction, the peer
/// published no public address of our family, or the budget is spent.
pub(crate) async fn plan(shared: &Shared, remote: Behaviour, cands: &[Candidate]) -> Option<Plan> {
    match predict::plan(our_behaviour(shared), remote, cands)? {
        Need::Spray { to } => Some(Plan::Spray { to }),
        Need::Probe { target, sequential } => {
            let (ip, want) = (target.ip(), ProbeConfig::default().budget);
            // The per-peer budget is the node core's (decision 10).
            let budget = match shared.core.ask(Input::GrantProbes { ip, want }).await {
                Some(Reply::Count(n)) => n,
                _ => 0,
            };
            (budget > 0).then_some(Plan::Probe {
                target,
                sequential,
                budget,
            })
        }
    }
}

/// The easy side's prober for a [`Plan::Probe`].
pub(crate) fn prober(target: SocketAddr, sequential: bool, budget: u32) -> Prober {
    let mut seed = [0u8; 32];
    with_rng(|r| rand_core::RngCore::fill_bytes(r, &mut seed));
    Prober::new(
        target,
        sequential,
        ProbeConfig::default(),
        budget,
        seed,
        Instant::now(),
    )
}

/// Probes granted but not sent go back to the peer's budget.
pub(crate) async fn probes_done(shared: &Shared, ip: IpAddr, granted: u32, sent: u32) {
    let unsent = granted.saturating_sub(sent);
    if unsent > 0 {
        let n = unsent;
        shared.core.input(Input::RefundProbes { ip, n }).await;
    }
}

/// The hard side's side sockets for one attempt. Dropping it closes every socket but the
/// winner's.
pub(crate) struct Spray {
    shared: Arc<Shared>,
    readers: Vec<AbortHandle>,
    winner: Arc<AtomicUsize>,
}

impl Drop for Spray {
    fn drop(&mut self) {
        let won = self.winner.load(Ordering::SeqCst);
        for (i, r) in self.readers.iter().enumerate() {
            if i != won {
                r.abort();
            }
        }
        self.shared
            .nat
            .predict
            .spraying
            .store(false, Ordering::SeqCst);
    }
}

impl Spray {
    /// Opens a side socket per check in `checks` (fewer if the OS refuses more), sends
    /// each check from its socket to `to`, and starts the readers. `None` when another
    /// spray is open (one at a time: 256 sockets each).
    pub(crate) async fn open(
        shared: &Arc<Shared>,
        to: SocketAddr,
        checks: Vec<Vec<u8>>,
    ) -> Option<Spray> {
        if shared.nat.predict.spraying.swap(true, Ordering::SeqCst) {
            return None;
        }
        let mut spray = Spray {
            shared: shared.clone(),
            readers: Vec::with_capacity(checks.len().min(SPRAY_SOCKETS)),
            winner: Arc::new(AtomicUsize::new(usize::MAX)),
        };
        let any: SocketAddr = if to.is_ipv4() {
            ([0u8; 4], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        for (i, check) in checks.iter().take(SPRAY_SOCKETS).enumerate() {
            let (sock, send) = match side_socket(any) {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!(opened = i, error = %e, "port prediction: no more side sockets");
                    break;
                }
            };
            let _ = send.send_to(check, to);
            let reader = read_side(shared.clone(), sock, send, i, to.ip(), spray.winner.clone());
            spray.readers.push(tokio::spawn(reader).abort_handle());
        }
        shared
            .nat
            .predict
            .sockets
            .fetch_add(spray.readers.len() as u64, Ordering::Relaxed);
        tracing::info!(%to, sockets = spray.readers.len(), "port prediction: side sockets open");
        Some(spray)
    }
}

/// A side socket bound to `any`: the reader's tokio socket and a non-blocking std clone of
/// it for sending.
fn side_socket(any: SocketAddr) -> std::io::Result<(UdpSocket, Arc<std::net::UdpSocket>)> {
    let std = std::net::UdpSocket::bind(any)?;
    std.set_nonblocking(true)?;
    let send = Arc::new(std.try_clone()?);
    Ok((UdpSocket::from_std(std)?, send))
}

/// One side socket: waits for the peer's IP; the first socket to hear it routes the
/// sender through itself and carries its datagrams in from then on.
async fn read_side(
    shared: Arc<Shared>,
    sock: UdpSocket,
    send: Arc<std::net::UdpSocket>,
    index: usize,
    peer_ip: IpAddr,
    winner: Arc<AtomicUsize>,
) {
    let mut buf = vec![0u8; SPRAY_BUF];
    let mut peer: Option<SocketAddr> = None;
    let local = sock.local_addr().ok().map(|a| a.ip());
    loop {
        let got = tokio::time::timeout(SIDE_IDLE, sock.recv_from(&mut buf)).await;
        let (n, from) = match got {
            Ok(Ok(x)) => x,
            // An ICMP error reported on the socket: nothing to read, keep waiting.
            Ok(Err(_)) => continue,
            Err(_) => match peer {
                // Idle: the session is gone or moved.
                Some(p) => {
                    shared.socket.remove_side_route(p);
                    return;
                }
                None => continue,
            },
        };
        let from = canonical(from);
        if shared.stopped.load(Ordering::Relaxed) {
            return;
        }
        match peer {
            Some(p) if p != from => continue,
            Some(p) => {
                if !shared.socket.has_side_route(p) {
                    // The connection ended.
                    return;
                }
            }
            None if from.ip() != peer_ip => continue,
            None => {
                let first = winner
                    .compare_exchange(usize::MAX, index, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
                if !first || !shared.socket.add_side_route(from, send.clone()) {
                    return;
                }
                shared.nat.predict.hits.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%from, side = ?sock.local_addr().ok(), "port prediction: a probe reached side socket {index}");
                peer = Some(from);
                buf.resize(SIDE_BUF, 0);
            }
        }
        shared.socket.side_input(from, &buf[..n], local);
    }
}

/// Port prediction's counters, for `dna status` (spec/05-nat.md §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct PredictionStatus {
    /// Whether this node predicts (`port_prediction`).
    pub enabled: bool,
    /// Punching attempts that predicted, either side.
    pub attempts: u64,
    /// Probes sent to predicted ports (easy side).
    pub probes: u64,
    /// Side sockets opened (hard side).
    pub sockets: u64,
    /// Side sockets a probe reached (hard side).
    pub hits: u64,
    /// Peers reached through a side socket now.
    pub side_routes: usize,
}

/// [`NodeHandle::prediction_status`](super::NodeHandle::prediction_status).
pub(crate) fn prediction_status(handle: &super::NodeHandle) -> PredictionStatus {
    let p = &handle.shared.nat.predict;
    PredictionStatus {
        enabled: handle.shared.cfg.port_prediction,
        attempts: p.attempts.load(Ordering::Relaxed),
        probes: p.probes.load(Ordering::Relaxed),
        sockets: p.sockets.load(Ordering::Relaxed),
        hits: p.hits.load(Ordering::Relaxed),
        side_routes: handle.shared.socket.side_routes(),
    }
}

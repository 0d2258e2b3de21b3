//! The node's one UDP socket (design brief, decision 2): quinn runs on it through
//! [`quinn::AsyncUdpSocket`]; STUN and TURN datagrams are taken out before quinn sees them
//! ([`super::demux`]); [`DnaSocket::send_raw`] sends probes from the same port.
//!
//! The wrapper delegates to quinn's own tokio socket (so GSO/GRO and ECN stay on) and
//! filters each received batch in place: a non-QUIC segment inside a GRO batch is cut out
//! and the rest closed up.
//!
//! Relayed peers (spec/07-relay.md §3.1): a peer whose datagrams arrive as TURN Data
//! indications from our TURN server is remembered, and quinn sees it as an ordinary
//! address. Inbound, the indication is unwrapped and handed to quinn as a datagram from
//! the peer (a STUN payload goes to the STUN queue instead, as from the peer); outbound,
//! a datagram to a relayed peer leaves as Send indications to the TURN server (one per
//! GSO segment, sent as one GSO batch again).
//!
//! The bundled relay (spec/07-relay.md §1) uses the same two messages: a peer reached
//! through a relay node has a *token* address (240.0.0.0/5, never routed) that the relay
//! gave; Send indications to the relay node carry the token, Data indications from it are
//! unwrapped like the TURN server's (only those: its QUIC and STUN are ordinary traffic).
//! A datagram for a token without a route is dropped, never sent to the network. On a
//! relay node, a [`RelayForwarder`] passes Send indications from its clients on as Data
//! indications, in the receive path, without a copy to another task.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, TokioRuntime, UdpPoller};
use tokio::sync::mpsc;

use super::demux::{classify, is_stun, Route};
use super::relay::{
    encode_indication, indication_len, parse_indication, DATA_INDICATION, SEND_INDICATION,
};

mod side;
mod turn_tcp;
pub use side::MAX_SIDE_ROUTES;
pub use turn_tcp::{TurnTcpLink, TCP_FRAME_QUEUE};

/// How many STUN or TURN datagrams may wait for their handler before new ones are dropped.
pub const SIDE_QUEUE: usize = 1024;
/// Most relayed peers the socket remembers; a Data indication from one more peer is still
/// delivered, but the peer is not added (our answers to it then go direct). Peers come only
/// from the TURN server, which relays only from IPs we gave a permission.
pub const MAX_RELAYED_PEERS: usize = 256;
/// Most unwrapped relayed datagrams waiting for quinn's next receive call (several Data
/// indications can arrive in one GRO batch; the first few fill quinn's buffers and the
/// rest wait here). Beyond it they are dropped and counted.
pub const INJECT_QUEUE: usize = 1024;
/// A GSO batch of Send indications is cut into sends of at most this many bytes (UDP's
/// 64 KiB limit, with the indications' overhead on top of quinn's batch).
const MAX_GSO_BYTES: usize = 60_000;

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
    /// QUIC datagrams that arrived through our TURN allocation (Data indications unwrapped).
    pub relayed_in: AtomicU64,
    /// QUIC datagrams (GSO segments) sent through our TURN allocation (Send indications).
    pub relayed_out: AtomicU64,
    /// Datagrams to a token address without a route, or (over TURN/TCP) to an address the
    /// TURN server cannot relay to: dropped, never sent.
    pub unrouted: AtomicU64,
    /// (Relay node.) Send indications passed on as Data indications.
    pub forwarded: AtomicU64,
    /// (Relay node.) Send indications the forwarder refused (no pair, wrong source, rate).
    pub forward_refused: AtomicU64,
}

/// Where a relayed peer's datagrams go, and what went each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayRoute {
    /// The TURN server or relay node that carries them.
    pub server: SocketAddr,
    /// Whether `server` is a bundled relay (else our TURN server, or none: `local`).
    pub bundled: bool,
    /// A local alias of a punched peer (spec/05-nat.md §5.2): no relay, only `direct`.
    pub local: bool,
    /// Payload bytes received from the peer through it.
    pub bytes_in: u64,
    /// Payload bytes sent to the peer through it.
    pub bytes_out: u64,
    /// The direct address the session moved to (spec/07-relay.md §1.9): datagrams go
    /// there unwrapped, and QUIC from there is shown to quinn as from the token.
    pub direct: Option<SocketAddr>,
}

/// A relay node's forwarding decision, called by the socket for every Send indication
/// (spec/07-relay.md §1.3): `from` sent `len` bytes for `token`; `Some((to, from_token))`
/// passes them on to `to` as a Data indication from `from_token`.
pub trait RelayForwarder: Send + Sync {
    /// Decides one datagram.
    fn forward(
        &self,
        from: SocketAddr,
        token: SocketAddr,
        len: usize,
    ) -> Option<(SocketAddr, SocketAddr)>;
}

/// Whether `a` is a virtual address of this socket's: a bundled relay's token
/// (240.0.0.0/5) or a local alias of a punched peer (248.0.0.0/5) — 240.0.0.0/4 is
/// reserved and never routed; also as an IPv4-mapped IPv6 address. Never sent to the
/// network.
pub fn is_token(a: SocketAddr) -> bool {
    match canonical(a) {
        SocketAddr::V4(v4) => v4.ip().octets()[0] & 0xF0 == 0xF0,
        SocketAddr::V6(_) => false,
    }
}

/// Whether `a` is a bundled relay's token (240.0.0.0/5): a relayed peer's address.
pub fn is_relay_token(a: SocketAddr) -> bool {
    match canonical(a) {
        SocketAddr::V4(v4) => v4.ip().octets()[0] & 0xF8 == 0xF0,
        SocketAddr::V6(_) => false,
    }
}

/// Whether `a` is a local alias of a punched peer (248.0.0.0/5, without
/// 255.255.255.255's /8).
pub fn is_alias(a: SocketAddr) -> bool {
    match canonical(a) {
        SocketAddr::V4(v4) => (248..255).contains(&v4.ip().octets()[0]),
        SocketAddr::V6(_) => false,
    }
}

/// An IPv4-mapped IPv6 address as IPv4; others unchanged.
pub(crate) fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::new(ip.into(), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

/// What the relayed path keeps between calls. Behind a `Mutex` because quinn's
/// `poll_recv` and `try_send` take `&self` and may run on different threads; it is held
/// only to look a peer up or to move a datagram, never across an `.await` or a syscall.
#[derive(Debug, Default)]
struct RelayState {
    /// Peers reached through a relay (canonical addresses).
    peers: HashMap<SocketAddr, RelayRoute>,
    /// Bundled relay nodes whose Data indications are unwrapped.
    servers: HashSet<SocketAddr>,
    /// Direct addresses of upgraded peers → their tokens.
    aliases: HashMap<SocketAddr, SocketAddr>,
    /// Unwrapped datagrams waiting for quinn: (its metadata, its bytes).
    inject: VecDeque<(RecvMeta, Vec<u8>)>,
}

/// The shared socket.
pub struct DnaSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    /// The configured TURN servers (their datagrams go to the TURN queue); one is in use
    /// at a time: `active_turn`.
    turn_servers: Vec<SocketAddr>,
    active_turn: std::sync::atomic::AtomicUsize,
    stun_tx: mpsc::Sender<Datagram>,
    turn_tx: mpsc::Sender<Datagram>,
    stats: SocketStats,
    relay: Mutex<RelayState>,
    /// Whether `relay.peers` is non-empty: keeps `try_send` lock-free while nothing is
    /// relayed.
    relaying: AtomicBool,
    /// Whether `relay.inject` may hold datagrams: keeps `poll_recv` lock-free otherwise.
    injected: AtomicBool,
    /// Whether `relay.aliases` is non-empty: keeps `poll_recv` lock-free otherwise.
    aliased: AtomicBool,
    /// Transaction IDs of Send indications: a random prefix and a counter (indications get
    /// no answer; the ID only has to look random to middleboxes).
    tid_prefix: u32,
    tid_next: AtomicU64,
    limits: RelayLimits,
    /// Whether quinn's addresses are IPv6 (a dual-stack socket): relayed peers are shown
    /// to it IPv4-mapped then.
    v6: bool,
    /// Set on a relay node.
    forwarder: OnceLock<Arc<dyn RelayForwarder>>,
    /// Set once UDP to the TURN server got no answer: everything goes through the
    /// allocation, over TCP (spec/07-relay.md §2.11).
    tcp: OnceLock<TurnTcpLink>,
    /// quinn's receive task, woken when a datagram from the TCP stream waits for it.
    recv_waker: Mutex<Option<Waker>>,
    /// Transaction IDs of the last STUN messages that came through our TURN allocation
    /// (at most [`TURN_STUN_MEMORY`]): the punching driver asks ([`Self::came_via_turn`]).
    turn_stun: Mutex<VecDeque<[u8; 12]>>,
    /// Peers reached through a side socket of port prediction ([`side`]).
    side: Mutex<side::SideRoutes>,
    /// Whether `side` is non-empty: keeps `try_send` lock-free otherwise.
    sided: AtomicBool,
}

/// How many transaction IDs of STUN through our TURN allocation the socket remembers.
pub const TURN_STUN_MEMORY: usize = 256;

/// Bounds of the socket's relaying (spec/07-relay.md §3; `NodeConfig::relay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// Peers reached through our TURN allocation at most (default
    /// [`MAX_RELAYED_PEERS`], 256); more are not relayed.
    pub max_peers: usize,
    /// Unwrapped datagrams waiting for quinn at most (default [`INJECT_QUEUE`], 1024); more
    /// are dropped and counted.
    pub inject_queue: usize,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_peers: MAX_RELAYED_PEERS,
            inject_queue: INJECT_QUEUE,
        }
    }
}

impl fmt::Debug for DnaSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnaSocket")
            .field("local", &self.inner.local_addr().ok())
            .field("turn_servers", &self.turn_servers)
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
    /// Wraps a bound socket with the default [`RelayLimits`]. Must run inside a tokio
    /// runtime.
    pub fn new(
        socket: std::net::UdpSocket,
        turn_server: Option<SocketAddr>,
    ) -> io::Result<(Arc<DnaSocket>, SideChannels)> {
        DnaSocket::with_limits(socket, turn_server, RelayLimits::default())
    }

    /// Wraps a bound socket with these relay limits. Must run inside a tokio runtime.
    pub fn with_limits(
        socket: std::net::UdpSocket,
        turn_server: Option<SocketAddr>,
        limits: RelayLimits,
    ) -> io::Result<(Arc<DnaSocket>, SideChannels)> {
        DnaSocket::with_turn_servers(socket, turn_server.into_iter().collect(), limits)
    }

    /// Wraps a bound socket with several TURN servers (the first in use; see
    /// [`Self::use_turn_server`]) and these relay limits. Must run inside a tokio runtime.
    pub fn with_turn_servers(
        socket: std::net::UdpSocket,
        turn_servers: Vec<SocketAddr>,
        limits: RelayLimits,
    ) -> io::Result<(Arc<DnaSocket>, SideChannels)> {
        let v6 = socket.local_addr()?.is_ipv6();
        let inner = TokioRuntime.wrap_udp_socket(socket)?;
        let (stun_tx, stun) = mpsc::channel(SIDE_QUEUE);
        let (turn_tx, turn) = mpsc::channel(SIDE_QUEUE);
        let s = Arc::new(DnaSocket {
            inner,
            turn_servers,
            active_turn: std::sync::atomic::AtomicUsize::new(0),
            stun_tx,
            turn_tx,
            stats: SocketStats::default(),
            relay: Mutex::new(RelayState::default()),
            relaying: AtomicBool::new(false),
            injected: AtomicBool::new(false),
            aliased: AtomicBool::new(false),
            // std's hasher keys are random per process: a prefix without a new crate.
            tid_prefix: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish() as u32,
            tid_next: AtomicU64::new(0),
            limits,
            v6,
            forwarder: OnceLock::new(),
            tcp: OnceLock::new(),
            recv_waker: Mutex::new(None),
            turn_stun: Mutex::new(VecDeque::new()),
            side: Mutex::new(side::SideRoutes::new()),
            sided: AtomicBool::new(false),
        });
        Ok((s, SideChannels { stun, turn }))
    }

    /// What the demultiplexer did so far.
    pub fn stats(&self) -> &SocketStats {
        &self.stats
    }

    /// The TURN server in use.
    pub fn turn_server(&self) -> Option<SocketAddr> {
        self.turn_servers
            .get(self.active_turn.load(Ordering::Acquire))
            .copied()
    }

    /// Whether `a` is one of the configured TURN servers.
    fn is_turn_server(&self, a: SocketAddr) -> bool {
        self.turn_servers.contains(&a)
    }

    /// Uses the configured TURN server `server` from now on (the TURN task moved to it
    /// after the one before failed): relayed datagrams go through it. `false` if it is not
    /// configured.
    pub fn use_turn_server(&self, server: SocketAddr) -> bool {
        match self.turn_servers.iter().position(|s| *s == server) {
            Some(i) => {
                self.active_turn.store(i, Ordering::Release);
                true
            }
            None => false,
        }
    }

    fn relay(&self) -> MutexGuard<'_, RelayState> {
        // A panic while holding it cannot leave the state inconsistent (plain inserts).
        self.relay.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes this socket a relay node's: Send indications go to `f` (once; later calls
    /// are ignored).
    pub fn set_forwarder(&self, f: Arc<dyn RelayForwarder>) {
        let _ = self.forwarder.set(f);
    }

    /// Whether `peer` is reached through a relay.
    pub fn is_relayed(&self, peer: SocketAddr) -> bool {
        self.route(peer).is_some()
    }

    /// The relay that carries `peer`'s datagrams, if one does (an upgraded peer's
    /// datagrams go direct: see [`Self::direct_of`]).
    pub fn route(&self, peer: SocketAddr) -> Option<SocketAddr> {
        if !self.relaying.load(Ordering::Acquire) {
            return None;
        }
        self.relay()
            .peers
            .get(&canonical(peer))
            .filter(|r| r.direct.is_none())
            .map(|r| r.server)
    }

    /// Where `peer`'s datagrams go: `(server, direct)`.
    fn choose(&self, peer: SocketAddr) -> Option<(SocketAddr, Option<SocketAddr>)> {
        if !self.relaying.load(Ordering::Acquire) {
            return None;
        }
        self.relay()
            .peers
            .get(&canonical(peer))
            .map(|r| (r.server, r.direct))
    }

    /// The direct address a relayed peer moved to, if it did.
    pub fn direct_of(&self, token: SocketAddr) -> Option<SocketAddr> {
        self.choose(token).and_then(|(_, d)| d)
    }

    /// Moves the peer at `token` to the direct path `addr` (spec/07-relay.md §1.9): its
    /// datagrams go to `addr` from now on, and QUIC arriving from `addr` is shown to quinn
    /// as from `token`, so the session does not notice. `false` if `token` has no bundled
    /// route.
    pub fn set_direct(&self, token: SocketAddr, addr: SocketAddr) -> bool {
        let (token, addr) = (canonical(token), canonical(addr));
        let mut r = self.relay();
        let Some(route) = r.peers.get_mut(&token) else {
            return false;
        };
        if !route.bundled && !route.local {
            return false;
        }
        let old = route.direct.replace(addr);
        if let Some(old) = old {
            r.aliases.remove(&old);
        }
        r.aliases.insert(addr, token);
        self.aliased.store(true, Ordering::Release);
        true
    }

    /// The token an upgraded peer's direct address stands for.
    fn alias(&self, from: SocketAddr) -> Option<SocketAddr> {
        if !self.aliased.load(Ordering::Acquire) {
            return None;
        }
        self.relay().aliases.get(&canonical(from)).copied()
    }

    /// Every relayed peer and its route.
    pub fn routes(&self) -> Vec<(SocketAddr, RelayRoute)> {
        self.relay().peers.iter().map(|(p, r)| (*p, *r)).collect()
    }

    /// Reaches `peer` through our TURN allocation from now on (also done by itself when a
    /// Data indication from it arrives). `false` when there is no TURN server, `peer` is
    /// the server, or [`RelayLimits::max_peers`] are known.
    pub fn add_relayed(&self, peer: SocketAddr) -> bool {
        match self.turn_server() {
            Some(server) if server != peer && !self.is_turn_server(peer) => {
                self.add_route(peer, server, false)
            }
            _ => false,
        }
    }

    /// Reaches the peer with this token through the relay node `server` from now on (its
    /// Data indications are unwrapped from now on too). `false` when [`RelayLimits::max_peers`]
    /// are known or `token` is not a token address.
    pub fn add_bundled_route(&self, token: SocketAddr, server: SocketAddr) -> bool {
        if !is_relay_token(token) {
            return false;
        }
        let server = canonical(server);
        {
            let mut r = self.relay();
            // Relay nodes we use: bounded like the routes through them.
            if !r.servers.contains(&server) && r.servers.len() >= self.limits.max_peers {
                return false;
            }
            r.servers.insert(server);
        }
        self.add_route(token, server, true)
    }

    /// Reaches a punched peer at the local alias `alias` (248.0.0.0/5): datagrams to it go
    /// to `direct`, QUIC from `direct` reaches quinn as from `alias`; [`Self::set_direct`]
    /// moves it to a better pair later (spec/05-nat.md §5.2). `false` when `alias` is not an
    /// alias address or [`RelayLimits::max_peers`] are known.
    pub fn add_local_route(&self, alias: SocketAddr, direct: SocketAddr) -> bool {
        if !is_alias(alias) || !self.add_route(alias, canonical(direct), false) {
            return false;
        }
        if let Some(r) = self.relay().peers.get_mut(&canonical(alias)) {
            r.local = true;
        }
        self.set_direct(alias, direct)
    }

    fn add_route(&self, peer: SocketAddr, server: SocketAddr, bundled: bool) -> bool {
        let peer = canonical(peer);
        let mut r = self.relay();
        let len = r.peers.len();
        match r.peers.get_mut(&peer) {
            Some(route) => {
                route.server = server;
                route.bundled = bundled;
            }
            None if len >= self.limits.max_peers => return false,
            None => {
                r.peers.insert(
                    peer,
                    RelayRoute {
                        server,
                        bundled,
                        bytes_in: 0,
                        bytes_out: 0,
                        direct: None,
                        local: false,
                    },
                );
            }
        }
        self.relaying.store(true, Ordering::Release);
        true
    }

    /// QUIC arrived from `from` directly: a route through a TURN server for it is dropped
    /// (bundled and local routes stay: they are how the session knows the peer).
    fn direct_seen(&self, from: SocketAddr) {
        let from = canonical(from);
        let mut r = self.relay();
        let turn = r
            .peers
            .get(&from)
            .is_some_and(|route| !route.bundled && !route.local && route.direct.is_none());
        if turn && self.is_turn_server(r.peers[&from].server) {
            r.peers.remove(&from);
            self.relaying.store(!r.peers.is_empty(), Ordering::Release);
        }
    }

    /// Reaches `peer` directly again.
    pub fn remove_relayed(&self, peer: SocketAddr) {
        let mut r = self.relay();
        if let Some(route) = r.peers.remove(&canonical(peer)) {
            if let Some(d) = route.direct {
                r.aliases.remove(&d);
            }
        }
        self.relaying.store(!r.peers.is_empty(), Ordering::Release);
        self.aliased.store(!r.aliases.is_empty(), Ordering::Release);
    }

    /// How quinn sees `a`: IPv4-mapped on a dual-stack socket.
    fn present(&self, a: SocketAddr) -> SocketAddr {
        match a {
            SocketAddr::V4(v4) if self.v6 => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            a => a,
        }
    }

    fn next_tid(&self) -> [u8; 12] {
        let mut tid = [0u8; 12];
        tid[..4].copy_from_slice(&self.tid_prefix.to_be_bytes());
        tid[4..].copy_from_slice(&self.tid_next.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        tid
    }

    /// Sends `t` to a relayed peer: each segment wrapped in a Send indication to the TURN
    /// server, the indications sent as GSO batches again (equal-size segments make
    /// equal-size indications; only the last may be shorter, as GSO wants).
    fn send_relayed(&self, server: SocketAddr, t: &Transmit) -> io::Result<()> {
        // A route through a TURN server goes through the one in use.
        let server = match self.turn_server() {
            Some(active) if self.is_turn_server(server) => {
                if let Some(link) = self.tcp.get() {
                    return self.send_over_tcp(link, t);
                }
                active
            }
            _ => server,
        };
        let peer = canonical(t.destination);
        let seg = t.segment_size.unwrap_or(t.contents.len()).max(1);
        let stride = indication_len(peer, seg);
        let per_batch =
            (MAX_GSO_BYTES / stride).clamp(1, self.inner.max_transmit_segments().max(1));
        let mut sent_any = false;
        let mut buf = Vec::new();
        for batch in t.contents.chunks(seg * per_batch) {
            buf.clear();
            let mut n = 0;
            for s in batch.chunks(seg) {
                if encode_indication(&mut buf, SEND_INDICATION, self.next_tid(), peer, s).is_none()
                {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "segment too long",
                    ));
                }
                n += 1;
            }
            let out = Transmit {
                destination: self.present(server),
                // The relay does not carry ECN marks; quinn then turns ECN off for the path.
                ecn: None,
                contents: &buf,
                segment_size: (n > 1).then_some(stride),
                src_ip: t.src_ip,
            };
            match self.inner.try_send(&out) {
                Ok(()) => {
                    sent_any = true;
                    self.stats.relayed_out.fetch_add(n, Ordering::Relaxed);
                    if let Some(r) = self.relay().peers.get_mut(&peer) {
                        r.bytes_out += batch.len() as u64;
                    }
                }
                // What went out already must not go twice; the rest is a loss QUIC repairs.
                Err(_) if sent_any => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Moves waiting unwrapped datagrams into quinn's buffers; how many.
    fn drain_injected(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> usize {
        if !self.injected.load(Ordering::Acquire) {
            return 0;
        }
        let mut r = self.relay();
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some((m, data)) = r.inject.pop_front() else {
                break;
            };
            if data.len() > bufs[n].len() {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            bufs[n][..data.len()].copy_from_slice(&data);
            meta[n] = m;
            n += 1;
        }
        self.injected.store(!r.inject.is_empty(), Ordering::Release);
        n
    }

    /// A datagram from the TURN server: a Data indication is unwrapped (its peer becomes a
    /// relayed peer; STUN inside goes to the STUN queue as from the peer, anything else
    /// waits for quinn); everything else goes to the TURN queue.
    fn sort_turn_datagram(&self, meta: &RecvMeta, data: &[u8]) {
        let Some((peer, payload)) = parse_indication(DATA_INDICATION, data) else {
            // The TURN server is often our STUN server too: its Binding answers belong to
            // the STUN agent (the TURN client sends no Binding).
            let route = if is_binding(data) {
                Route::Stun
            } else {
                Route::Turn
            };
            return self.dispatch(route, meta.addr, data);
        };
        self.unwrap_turn_data(meta, peer, payload);
    }

    /// The payload of a Data indication from our TURN server. QUIC makes its peer a relayed
    /// peer (our answers must come from the relayed address it sent to); STUN does not — a
    /// punching check through our relay may come from an address we also reach directly —
    /// but its transaction ID is remembered for [`Self::came_via_turn`].
    fn unwrap_turn_data(&self, meta: &RecvMeta, peer: SocketAddr, payload: &[u8]) {
        if let Some(tid) = crate::nat::stun::transaction_id(payload) {
            let mut m = self.turn_stun.lock().unwrap_or_else(|e| e.into_inner());
            if m.len() >= TURN_STUN_MEMORY {
                m.pop_front();
            }
            m.push_back(tid);
        } else {
            self.add_relayed(peer);
        }
        self.unwrapped(meta, peer, payload);
    }

    /// Whether this STUN message came through our TURN allocation (by its transaction ID,
    /// among the last [`TURN_STUN_MEMORY`]).
    pub fn came_via_turn(&self, stun: &[u8]) -> bool {
        let Some(tid) = crate::nat::stun::transaction_id(stun) else {
            return false;
        };
        self.turn_stun
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&tid)
    }

    /// Sends `bytes` to `to` through our TURN allocation (a Send indication), whatever the
    /// route to `to` is: the punching driver's answers and checks toward a peer it heard
    /// through the relay.
    pub async fn send_via_turn(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        let Some(server) = self.turn_server() else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no TURN server"));
        };
        let t = Transmit {
            destination: to,
            ecn: None,
            contents: bytes,
            segment_size: None,
            src_ip: None,
        };
        if let Some(link) = self.tcp.get() {
            return self.send_over_tcp(link, &t);
        }
        let mut buf = Vec::new();
        if encode_indication(
            &mut buf,
            SEND_INDICATION,
            self.next_tid(),
            canonical(to),
            bytes,
        )
        .is_none()
        {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "too long"));
        }
        self.send_raw(server, &buf).await
    }

    /// A STUN-shaped datagram not from the TURN server: a client's Send indication on a
    /// relay node, or a Data indication from a relay node we use. `false`: neither, it is
    /// ordinary STUN.
    fn relay_datagram(&self, meta: &RecvMeta, data: &[u8]) -> bool {
        let from = canonical(meta.addr);
        if let Some(f) = self.forwarder.get() {
            if let Some((token, payload)) = parse_indication(SEND_INDICATION, data) {
                match f.forward(from, canonical(token), payload.len()) {
                    Some((to, from_token)) => {
                        let mut buf = Vec::with_capacity(data.len());
                        let _ = encode_indication(
                            &mut buf,
                            DATA_INDICATION,
                            self.next_tid(),
                            from_token,
                            payload,
                        );
                        let t = Transmit {
                            destination: self.present(to),
                            ecn: None,
                            contents: &buf,
                            segment_size: None,
                            src_ip: meta.dst_ip,
                        };
                        // A full send buffer is a loss QUIC repairs.
                        match self.inner.try_send(&t) {
                            Ok(()) => self.stats.forwarded.fetch_add(1, Ordering::Relaxed),
                            Err(_) => self.stats.dropped.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    None => {
                        self.stats.forward_refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                return true;
            }
        }
        if !self.relaying.load(Ordering::Acquire) || !self.relay().servers.contains(&from) {
            return false;
        }
        let Some((peer, payload)) = parse_indication(DATA_INDICATION, data) else {
            return false;
        };
        if !is_token(peer) || !self.add_route(peer, from, true) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.unwrapped(meta, peer, payload);
        true
    }

    /// The payload of a Data indication from `peer`: STUN to the STUN queue as from the
    /// peer, QUIC to quinn (through the injection queue).
    fn unwrapped(&self, meta: &RecvMeta, peer: SocketAddr, payload: &[u8]) {
        let peer = self.present(canonical(peer));
        if is_stun(payload) {
            return self.dispatch(Route::Stun, peer, payload);
        }
        if classify(peer, payload, None) != Route::Quic {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // A punched peer under a local alias, reached through our TURN allocation (over
        // TCP): its QUIC comes as from the alias, as over UDP (`poll_recv`).
        let peer = self.alias(peer).map_or(peer, |a| self.present(a));
        let mut r = self.relay();
        if r.inject.len() >= self.limits.inject_queue {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(route) = r.peers.get_mut(&canonical(peer)) {
            route.bytes_in += payload.len() as u64;
        }
        let m = RecvMeta {
            addr: peer,
            len: payload.len(),
            stride: payload.len(),
            ecn: None,
            dst_ip: meta.dst_ip,
        };
        r.inject.push_back((m, payload.to_vec()));
        self.injected.store(true, Ordering::Release);
        self.stats.relayed_in.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends one datagram from this socket (STUN probes, TURN requests); to a relayed peer
    /// through the TURN server.
    pub async fn send_raw(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        self.send_one(to, bytes, false).await
    }

    /// Sends one datagram straight to `to` from this socket, whatever relay route `to`
    /// has: a punching check is about the direct path (spec/07-relay.md §3.6). Over
    /// TURN/TCP, where nothing goes straight, and to a virtual address, as
    /// [`Self::send_raw`].
    pub async fn send_direct(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        let straight = self.tcp.get().is_none() && !is_token(to);
        self.send_one(to, bytes, straight).await
    }

    /// One datagram, waiting while the socket is not writable: through the relay routes,
    /// or `straight` past them.
    async fn send_one(&self, to: SocketAddr, bytes: &[u8], straight: bool) -> io::Result<()> {
        let mut poller = self.inner.clone().create_io_poller();
        let transmit = Transmit {
            destination: self.present(canonical(to)),
            ecn: None,
            contents: bytes,
            segment_size: None,
            src_ip: None,
        };
        loop {
            let sent = if straight {
                self.send_straight(&transmit)
            } else {
                AsyncUdpSocket::try_send(self, &transmit)
            };
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx)).await?;
                }
                r => return r,
            }
        }
    }

    /// Sends past the relay routes: through the peer's side socket if it has one (port
    /// prediction, spec/05-nat.md §5.5), else from the main socket.
    fn send_straight(&self, t: &Transmit) -> io::Result<()> {
        match self.side_send(t) {
            Some(r) => r,
            None => self.inner.try_send(t),
        }
    }

    fn dispatch(&self, route: Route, from: SocketAddr, data: &[u8]) {
        // STUN and TURN see IPv4 peers as IPv4, also on a dual-stack socket.
        let from = canonical(from);
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
    /// Everything from the TURN server is taken out ([`Self::sort_turn_datagram`]).
    fn filter(&self, meta: &RecvMeta, buf: &mut [u8]) -> usize {
        let (from, stride) = (meta.addr, meta.stride);
        let mut len = buf.len();
        let stride = if stride == 0 { len } else { stride };
        if self.is_turn_server(canonical(from)) {
            for seg in buf.chunks(stride) {
                self.sort_turn_datagram(meta, seg);
            }
            return 0;
        }
        let mut at = 0;
        while at < len {
            let end = (at + stride).min(len);
            match classify(from, &buf[at..end], None) {
                Route::Quic => at = end,
                route => {
                    if route != Route::Stun || !self.relay_datagram(meta, &buf[at..end]) {
                        self.dispatch(route, from, &buf[at..end]);
                    }
                    buf.copy_within(end..len, at);
                    len -= end - at;
                }
            }
        }
        len
    }
}

/// Whether `d` is a STUN message of method Binding (any class; RFC 8489 §5: the method
/// bits leave out the two class bits 0x0110).
fn is_binding(d: &[u8]) -> bool {
    is_stun(d) && u16::from_be_bytes([d[0], d[1]]) & !0x0110 == 0x0001
}

impl AsyncUdpSocket for DnaSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        match self.choose(transmit.destination) {
            Some((_, Some(direct))) => {
                let t = Transmit {
                    destination: self.present(direct),
                    ..*transmit
                };
                // Over TURN/TCP even a "direct" pair is the far side of our allocation.
                if let Some(server) = self.default_route(direct) {
                    if !self.relayable(direct) {
                        self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    return self.send_relayed(server, &t);
                }
                // A pair found through our own TURN allocation (its checks came as Data
                // indications): the direct address is behind our relay.
                if let Some((server, None)) = self.choose(direct) {
                    if self.is_turn_server(server) {
                        return self.send_relayed(server, &t);
                    }
                }
                return self.send_straight(&t);
            }
            Some((server, None)) => return self.send_relayed(server, transmit),
            None => {}
        }
        if is_token(transmit.destination) {
            // Reserved addresses never reach the network.
            self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if let Some(server) = self.default_route(transmit.destination) {
            if !self.relayable(transmit.destination) {
                // Only a LAN reaches it, and ours lets nothing out but TURN.
                self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            self.add_relayed(transmit.destination);
            return self.send_relayed(server, transmit);
        }
        if self.v6 && transmit.destination.is_ipv4() {
            // A dual-stack socket sends to IPv4 peers at their IPv4-mapped address.
            let t = Transmit {
                destination: self.present(transmit.destination),
                ..*transmit
            };
            return self.send_straight(&t);
        }
        self.send_straight(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            // Unwrapped relayed datagrams first: they were received earlier.
            let n = self.drain_injected(bufs, meta);
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                Poll::Pending => {
                    // Datagrams from a TURN TCP stream arrive from another task, which
                    // wakes us; kept from the first wait on, since the stream may begin
                    // while quinn already waits.
                    {
                        let mut w = self.recv_waker.lock().unwrap_or_else(|e| e.into_inner());
                        if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                            *w = Some(cx.waker().clone());
                        }
                    }
                    if self.injected.load(Ordering::Acquire) {
                        continue;
                    }
                    return Poll::Pending;
                }
                other => return other,
            };
            let mut kept = 0;
            for i in 0..n {
                let m = meta[i];
                let len = m.len.min(bufs[i].len());
                let left = self.filter(&m, &mut bufs[i][..len]);
                if left == 0 {
                    continue;
                }
                if kept != i {
                    let (head, tail) = bufs.split_at_mut(i);
                    head[kept][..left].copy_from_slice(&tail[0][..left]);
                }
                // QUIC straight from a peer we reached through our TURN allocation: the
                // peer moved its session to a direct path (spec/07 §3.6); answer it there.
                if self.relaying.load(Ordering::Acquire) && self.tcp.get().is_none() {
                    self.direct_seen(m.addr);
                }
                // An upgraded peer's direct datagrams come as from its token.
                let addr = self.alias(m.addr).map_or(m.addr, |t| self.present(t));
                meta[kept] = RecvMeta {
                    len: left,
                    addr,
                    ..m
                };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::relay::{encode_indication, DATA_INDICATION};

    fn socket(turn: SocketAddr) -> Arc<DnaSocket> {
        let udp = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        DnaSocket::new(udp, Some(turn)).unwrap().0
    }

    /// Several Data indications in one GRO buffer (one source, one stride): payloads of
    /// 1197–1200 bytes pad to the same size, so the stride cannot be kept for quinn. Each is
    /// unwrapped into its own datagram from its peer, in order; a STUN payload goes to the
    /// STUN queue as from its peer; garbage goes to the TURN queue.
    #[tokio::test]
    async fn a_gro_batch_of_data_indications_becomes_one_datagram_each() {
        let turn: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        let s = socket(turn);
        let peers: Vec<SocketAddr> = (0..4)
            .map(|i| SocketAddr::from(([192, 0, 2, 7], 5000 + i)))
            .collect();
        let mut batch = Vec::new();
        let mut want = Vec::new();
        for (i, p) in peers.iter().enumerate() {
            let mut payload = vec![0x40 | i as u8; 1197 + i];
            payload[1] = i as u8;
            encode_indication(&mut batch, DATA_INDICATION, [i as u8; 12], *p, &payload).unwrap();
            want.push((*p, payload));
        }
        let stride = batch.len() / 4;
        let meta = RecvMeta {
            addr: turn,
            len: batch.len(),
            stride,
            ecn: None,
            dst_ip: None,
        };
        assert_eq!(s.filter(&meta, &mut batch), 0, "nothing left in place");
        let mut storage = vec![vec![0u8; 1500]; 3];
        let mut metas = [RecvMeta::default(); 3];
        let mut got = Vec::new();
        loop {
            let mut bufs: Vec<IoSliceMut> =
                storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let n = s.drain_injected(&mut bufs, &mut metas);
            if n == 0 {
                break;
            }
            for (m, b) in metas.iter().zip(&storage).take(n) {
                got.push((m.addr, b[..m.len].to_vec()));
            }
        }
        assert_eq!(got, want);
        assert!(peers.iter().all(|p| s.is_relayed(*p)));
        assert_eq!(s.stats().relayed_in.load(Ordering::Relaxed), 4);
    }

    /// Relayed datagrams quinn does not take wait in a queue of `relay.inject_queue`;
    /// beyond it they are dropped and counted, and the queue never grows past its bound.
    #[tokio::test]
    async fn the_injection_queue_is_bounded() {
        let turn: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        let udp = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let limits = RelayLimits {
            max_peers: 4,
            inject_queue: 8,
        };
        let (s, _side) = DnaSocket::with_limits(udp, Some(turn), limits).unwrap();
        let peer: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        for i in 0..20u8 {
            let mut buf = Vec::new();
            let payload = vec![0x40 | (i & 0x3F); 100];
            encode_indication(&mut buf, DATA_INDICATION, [i; 12], peer, &payload).unwrap();
            let meta = RecvMeta {
                addr: turn,
                len: buf.len(),
                stride: buf.len(),
                ecn: None,
                dst_ip: None,
            };
            assert_eq!(s.filter(&meta, &mut buf), 0);
        }
        let mut storage = vec![vec![0u8; 1500]; 32];
        let mut metas = [RecvMeta::default(); 32];
        let mut bufs: Vec<IoSliceMut> = storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let queued = s.drain_injected(&mut bufs, &mut metas);
        let dropped = s.stats().dropped.load(Ordering::Relaxed);
        println!("20 relayed datagrams not taken: {queued} queued (bound 8), {dropped} dropped");
        assert_eq!((queued, dropped), (8, 12));
    }

    #[tokio::test]
    async fn stun_through_the_relay_and_garbage_from_the_server() {
        let turn: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        let udp = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let (s, mut side) = DnaSocket::new(udp, Some(turn)).unwrap();
        let peer: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let mut check = vec![0x00, 0x01, 0x00, 0x00];
        check.extend_from_slice(&crate::transport::demux::STUN_MAGIC_COOKIE);
        check.extend_from_slice(&[9; 12]);
        let mut buf = Vec::new();
        encode_indication(&mut buf, DATA_INDICATION, [1; 12], peer, &check).unwrap();
        buf.extend_from_slice(&[0xFF; 3]);
        let meta = RecvMeta {
            addr: turn,
            len: buf.len(),
            stride: buf.len() - 3,
            ecn: None,
            dst_ip: None,
        };
        assert_eq!(s.filter(&meta, &mut buf), 0);
        assert_eq!(side.stun.try_recv().unwrap(), (peer, Bytes::from(check)));
        assert_eq!(
            side.turn.try_recv().unwrap().1,
            Bytes::from_static(&[0xFF; 3])
        );
        // A Binding answer from the TURN server (our STUN server too) goes to STUN.
        let mut answer = vec![0x01, 0x01, 0x00, 0x00];
        answer.extend_from_slice(&crate::transport::demux::STUN_MAGIC_COOKIE);
        answer.extend_from_slice(&[3; 12]);
        let meta = RecvMeta {
            len: answer.len(),
            stride: answer.len(),
            ..meta
        };
        assert_eq!(s.filter(&meta, &mut answer.clone()), 0);
        assert_eq!(side.stun.try_recv().unwrap(), (turn, Bytes::from(answer)));
        assert_eq!(s.stats().relayed_in.load(Ordering::Relaxed), 0);
    }

    /// A GSO transmit to a relayed peer leaves as one Send indication per segment, to the
    /// TURN server, each carrying its segment.
    #[tokio::test]
    async fn a_gso_transmit_to_a_relayed_peer_becomes_send_indications() {
        use crate::transport::relay::{parse_indication, SEND_INDICATION};
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let s = socket(server.local_addr().unwrap());
        let peer: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        assert!(s.add_relayed(peer));
        let contents: Vec<u8> = (0..1200 * 2 + 700)
            .map(|i| (i % 251) as u8 | 0x40)
            .collect();
        let t = Transmit {
            destination: peer,
            ecn: None,
            contents: &contents,
            segment_size: Some(1200),
            src_ip: None,
        };
        let mut poller = s.clone().create_io_poller();
        loop {
            match AsyncUdpSocket::try_send(&*s, &t) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
                        .await
                        .unwrap();
                }
                r => break r.unwrap(),
            }
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 2000];
        while got.len() < contents.len() {
            let n = server.recv(&mut buf).unwrap();
            let (to, data) = parse_indication(SEND_INDICATION, &buf[..n]).unwrap();
            assert_eq!(to, peer);
            got.extend_from_slice(data);
        }
        assert_eq!(got, contents);
        assert_eq!(s.stats().relayed_out.load(Ordering::Relaxed), 3);
    }

    /// A bundled relay's peer moved to a direct path: datagrams to its token leave
    /// unwrapped toward the direct address, and QUIC from that address reaches quinn as
    /// from the token; a token without a route is never sent anywhere.
    #[tokio::test]
    async fn an_upgraded_peer_is_reached_directly_under_its_token() {
        let udp = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let (s, _side) = DnaSocket::new(udp, None).unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let relay: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let token: SocketAddr = "240.7.7.7:7".parse().unwrap();
        let stray: SocketAddr = "240.8.8.8:8".parse().unwrap();
        assert!(s.add_bundled_route(token, relay));
        assert_eq!(s.route(token), Some(relay));
        assert!(s.set_direct(token, peer.local_addr().unwrap()));
        assert_eq!(s.route(token), None, "no longer through the relay");
        s.send_raw(token, &[0x41; 40]).await.unwrap();
        s.send_raw(stray, &[0x42; 40]).await.unwrap();
        let mut buf = [0u8; 100];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&[0x41u8; 40][..], s.inner.local_addr().unwrap())
        );
        assert_eq!(s.stats().unrouted.load(Ordering::Relaxed), 1);
        peer.send_to(&[0x43; 30], s.inner.local_addr().unwrap())
            .unwrap();
        let mut storage = vec![0u8; 1500];
        let mut metas = [RecvMeta::default(); 1];
        let n = std::future::poll_fn(|cx| {
            let mut bufs = [IoSliceMut::new(&mut storage)];
            s.poll_recv(cx, &mut bufs, &mut metas)
        })
        .await
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(metas[0].addr, token, "shown as from the token");
        assert_eq!(&storage[..metas[0].len], &[0x43; 30]);
    }

    /// A local alias (248/5) goes straight to its pair and moves with `set_direct`; it is
    /// not a relay token, and a relay token is not an alias.
    #[tokio::test]
    async fn a_local_alias_follows_its_pair() {
        let udp = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let (s, _side) = DnaSocket::new(udp, None).unwrap();
        let first = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let better = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for p in [&first, &better] {
            p.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
        }
        let alias: SocketAddr = "250.1.2.3:4".parse().unwrap();
        assert!(is_alias(alias) && is_token(alias) && !is_relay_token(alias));
        assert!(!s.add_local_route("240.1.2.3:4".parse().unwrap(), first.local_addr().unwrap()));
        assert!(s.add_local_route(alias, first.local_addr().unwrap()));
        s.send_raw(alias, &[0x41; 10]).await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(first.recv(&mut buf).unwrap(), 10);
        assert!(s.set_direct(alias, better.local_addr().unwrap()));
        s.send_raw(alias, &[0x42; 12]).await.unwrap();
        assert_eq!(better.recv(&mut buf).unwrap(), 12);
        assert_eq!(s.route(alias), None, "never through a relay");
    }

    #[test]
    fn the_relayed_set_is_bounded_and_never_holds_the_server() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let turn: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        let s = socket(turn);
        assert!(!s.add_relayed(turn));
        let added = (0..MAX_RELAYED_PEERS as u16 + 10)
            .filter(|i| s.add_relayed(SocketAddr::from(([192, 0, 2, 7], *i))))
            .count();
        println!("relayed peers kept: {added} of {}", MAX_RELAYED_PEERS + 10);
        assert_eq!(added, MAX_RELAYED_PEERS);
        s.remove_relayed(SocketAddr::from(([192, 0, 2, 7], 0)));
        assert!(!s.is_relayed(SocketAddr::from(([192, 0, 2, 7], 0))));
    }
}

#[cfg(test)]
mod several_turn_servers {
    use super::*;

    /// With two TURN servers, datagrams from either go to the TURN queue, and a relayed
    /// peer's datagrams go through the one in use — also a peer added while the other was.
    #[tokio::test]
    async fn relayed_datagrams_follow_the_server_in_use() {
        let s1 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let s2 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&s1, &s2] {
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
        }
        let (a1, a2) = (s1.local_addr().unwrap(), s2.local_addr().unwrap());
        let udp = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let (s, _side) =
            DnaSocket::with_turn_servers(udp, vec![a1, a2], RelayLimits::default()).unwrap();
        assert_eq!(s.turn_server(), Some(a1));
        assert!(!s.add_relayed(a2), "a TURN server is never a relayed peer");
        let peer: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        assert!(s.add_relayed(peer));
        let quic = [0x40u8; 64];
        let mut buf = [0u8; 1500];
        s.send_raw(peer, &quic).await.unwrap();
        let n = s1.recv(&mut buf).unwrap();
        assert_eq!(
            parse_indication(SEND_INDICATION, &buf[..n]).unwrap().0,
            peer
        );
        assert!(s.use_turn_server(a2));
        assert!(!s.use_turn_server(peer), "only a configured server");
        s.send_raw(peer, &quic).await.unwrap();
        let n = s2.recv(&mut buf).unwrap();
        assert_eq!(
            parse_indication(SEND_INDICATION, &buf[..n]).unwrap().0,
            peer
        );
        assert_eq!(s.route(peer), Some(a1), "the route keeps its first server");
    }
}

//! The bundled relay as sans-IO state (spec/07-relay.md §1): which pairs of registered
//! clients this node relays for, under which virtual addresses, within which limits. The
//! driver (`daemon::relay`) reads the clock and calls in; the socket calls
//! [`RelayServer::forward`] for every Send indication a client sends.
//!
//! - A pair exists only after **both** ends asked for each other ([`RelayServer::ask`]); the
//!   first one's request waits ([`RelayServerLimits::wait`]), bounded in number.
//! - Each side of a pair gets a **token**: a virtual address in 240.0.0.0/5 (reserved
//!   IPv4, never routed), unique in this relay. A client sends Send indications whose
//!   XOR-PEER-ADDRESS is the peer's token; the relay checks that the datagram comes from the
//!   address the client asked from, and passes it on as a Data indication whose
//!   XOR-PEER-ADDRESS is the sender's token. The payload (QUIC, end-to-end encrypted) is
//!   not looked at.
//! - Limits: pairs at once, bytes per second per pair (a token bucket over both
//!   directions), a pair's idle time and its whole lifetime.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand_core::RngCore;

use crate::crypto::NodeId;
use crate::source::Source;

/// How long a request waits for the other side at most (spec/07-relay.md §1.2); the
/// asking client's own timeout is longer.
pub const RELAY_WAIT: Duration = Duration::from_secs(8);

/// Limits of the bundled relay (`NodeConfig::relay_server`). `Default` gives the values in
/// spec/07-relay.md §1.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayServerLimits {
    /// Relayed pairs at once (default 64); a request beyond is refused.
    pub max_pairs: usize,
    /// Requests waiting for their other side at once (default 256); more are refused.
    pub max_waiting: usize,
    /// Pairs one source (IPv4 address, IPv6 /64) may be an end of (default 8): a host
    /// with many identities cannot take every pair.
    pub per_source_pairs: usize,
    /// Requests one node may have waiting at once (default 8): one client cannot take
    /// every waiting slot.
    pub per_node_waiting: usize,
    /// Bytes per second one pair may send, both directions together (default 1 MiB/s);
    /// the bucket holds one second's worth. Datagrams beyond it are dropped (QUIC's
    /// congestion control then slows down).
    pub pair_rate: u64,
    /// A pair that forwarded nothing this long is dropped (default 120 s; QUIC keep-alive
    /// sends every 15 s).
    pub pair_idle: Duration,
    /// A pair is dropped this long after it was made, busy or not (default 1 h); its ends
    /// ask again.
    pub pair_lifetime: Duration,
    /// How long a request waits for the other side (default [`RELAY_WAIT`]).
    pub wait: Duration,
}

impl Default for RelayServerLimits {
    fn default() -> Self {
        RelayServerLimits {
            max_pairs: 64,
            max_waiting: 256,
            per_source_pairs: 8,
            per_node_waiting: 8,
            pair_rate: 1 << 20,
            pair_idle: Duration::from_secs(120),
            pair_lifetime: Duration::from_secs(3600),
            wait: RELAY_WAIT,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayRefusal {
    /// A client asked for a pair with itself.
    #[error("a pair needs two different peers")]
    SamePeer,
    /// [`RelayServerLimits::max_pairs`] pairs are relayed already.
    #[error("the relay is full")]
    Full,
    /// [`RelayServerLimits::max_waiting`] requests wait already.
    #[error("too many requests are waiting")]
    Busy,
    /// The asker (or the source it asks from) holds its quota of pairs or waiting
    /// requests.
    #[error("the asker holds its quota")]
    Quota,
}

/// Why a datagram was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// No pair has this token, or the sender is not the pair's other end.
    Unknown,
    /// The pair's byte rate is spent.
    Rate,
}

/// What a granted request gives the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The peer's token: where the client sends (as XOR-PEER-ADDRESS).
    pub peer_token: SocketAddr,
    /// The client's own token: what the peer sees as its address.
    pub own_token: SocketAddr,
    /// How long the pair lives at most.
    pub lifetime: Duration,
}

/// Bytes of a RELAY_GRANTED payload (spec/07-relay.md §1.2): the peer's token, ours (each
/// IPv4 ‖ port), the lifetime in seconds (u32), big-endian.
pub const GRANT_LEN: usize = 16;

impl Grant {
    /// RELAY_GRANTED's payload. Tokens are IPv4; an IPv6 one (never made here) is sent as
    /// 0.0.0.0:0.
    pub fn encode(&self) -> [u8; GRANT_LEN] {
        let mut out = [0u8; GRANT_LEN];
        let put = |out: &mut [u8], a: SocketAddr| {
            if let SocketAddr::V4(v4) = a {
                out[..4].copy_from_slice(&v4.ip().octets());
                out[4..6].copy_from_slice(&v4.port().to_be_bytes());
            }
        };
        put(&mut out[0..6], self.peer_token);
        put(&mut out[6..12], self.own_token);
        let secs = u32::try_from(self.lifetime.as_secs()).unwrap_or(u32::MAX);
        out[12..16].copy_from_slice(&secs.to_be_bytes());
        out
    }

    /// Reads RELAY_GRANTED's payload; `None` unless it is exactly [`GRANT_LEN`] bytes.
    pub fn decode(p: &[u8]) -> Option<Grant> {
        let p: &[u8; GRANT_LEN] = p.try_into().ok()?;
        let v4 = |b: &[u8]| {
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(b[0], b[1], b[2], b[3]),
                u16::from_be_bytes([b[4], b[5]]),
            ))
        };
        Some(Grant {
            peer_token: v4(&p[0..6]),
            own_token: v4(&p[6..12]),
            lifetime: Duration::from_secs(u64::from(u32::from_be_bytes([
                p[12], p[13], p[14], p[15],
            ]))),
        })
    }
}

/// The outcome of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// The pair is up.
    Granted(Grant),
    /// The other side has not asked yet; ask [`RelayServer::grant`] again when something
    /// changed, until [`RelayServerLimits::wait`] is over.
    Waiting,
}

#[derive(Debug, Clone, Copy)]
struct Side {
    id: NodeId,
    addr: SocketAddr,
    token: SocketAddr,
    bytes: u64,
}

#[derive(Debug, Clone)]
struct Pair {
    sides: [Side; 2],
    made: Instant,
    last: Instant,
    bucket: u64,
    refilled: Instant,
    dropped: u64,
}

/// One pair in [`RelayServerStats`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PairStats {
    /// The two ends (node IDs, hex).
    pub ends: [String; 2],
    /// Bytes each end sent through the relay.
    pub bytes: [u64; 2],
    /// Datagrams dropped for the byte rate.
    pub dropped: u64,
    /// Seconds since the pair was made.
    pub age_secs: u64,
}

/// The relay's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RelayServerStats {
    /// Pairs relayed now.
    pub pairs: usize,
    /// Requests waiting for their other side.
    pub waiting: usize,
    /// Pairs made so far.
    pub made: u64,
    /// Requests refused because the relay was full or too many waited.
    pub refused: u64,
    /// Datagrams and bytes forwarded.
    pub forwarded: u64,
    /// Payload bytes forwarded.
    pub forwarded_bytes: u64,
    /// Datagrams dropped: no pair, or not from the pair's end.
    pub dropped_unknown: u64,
    /// Datagrams dropped for a pair's byte rate.
    pub dropped_rate: u64,
    /// Pairs ended by idleness or lifetime.
    pub expired: u64,
    /// Each pair.
    pub detail: Vec<PairStats>,
}

type PairKey = (NodeId, NodeId);

fn key(a: NodeId, b: NodeId) -> PairKey {
    if a.0 <= b.0 {
        (a, b)
    } else {
        (b, a)
    }
}

/// The bundled relay's table.
#[derive(Debug, Clone)]
pub struct RelayServer {
    limits: RelayServerLimits,
    /// Requests waiting: (asker, wanted peer) → (asker's address, since).
    waiting: HashMap<(NodeId, NodeId), (SocketAddr, Instant)>,
    pairs: HashMap<PairKey, Pair>,
    /// Token → its pair and side.
    tokens: HashMap<SocketAddr, (PairKey, usize)>,
    next_sweep: Option<Instant>,
    stats: RelayServerStats,
}

impl RelayServer {
    /// An empty relay with these limits.
    pub fn new(limits: RelayServerLimits) -> RelayServer {
        RelayServer {
            limits,
            waiting: HashMap::new(),
            pairs: HashMap::new(),
            tokens: HashMap::new(),
            next_sweep: None,
            stats: RelayServerStats::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &RelayServerLimits {
        &self.limits
    }

    /// `me` (whose datagrams come from `addr`) asks to be relayed to `peer`. Asking again
    /// refreshes the address and the wait; asking for a pair that is up returns its grant.
    pub fn ask(
        &mut self,
        me: NodeId,
        addr: SocketAddr,
        peer: NodeId,
        now: Instant,
        rng: &mut impl RngCore,
    ) -> Result<Ask, RelayRefusal> {
        self.sweep(now);
        if me == peer {
            return Err(RelayRefusal::SamePeer);
        }
        let k = key(me, peer);
        if let Some(p) = self.pairs.get_mut(&k) {
            let i = usize::from(p.sides[1].id == me);
            p.sides[i].addr = addr;
        }
        if let Some(g) = self.grant_of(&k, me) {
            return Ok(Ask::Granted(g));
        }
        if let Some((peer_addr, _)) = self.waiting.get(&(peer, me)).copied() {
            if self.pairs.len() >= self.limits.max_pairs {
                self.stats.refused += 1;
                return Err(RelayRefusal::Full);
            }
            let quota = self.limits.per_source_pairs;
            if self.source_pairs(addr) >= quota || self.source_pairs(peer_addr) >= quota {
                self.stats.refused += 1;
                return Err(RelayRefusal::Quota);
            }
            self.waiting.remove(&(peer, me));
            let me_side = self.side(me, addr, rng);
            let peer_side = self.side(peer, peer_addr, rng);
            let sides = if k.0 == me {
                [me_side, peer_side]
            } else {
                [peer_side, me_side]
            };
            for (i, s) in sides.iter().enumerate() {
                self.tokens.insert(s.token, (k, i));
            }
            self.pairs.insert(
                k,
                Pair {
                    sides,
                    made: now,
                    last: now,
                    bucket: self.limits.pair_rate,
                    refilled: now,
                    dropped: 0,
                },
            );
            self.stats.made += 1;
            return Ok(self.grant_of(&k, me).map_or(Ask::Waiting, Ask::Granted));
        }
        if !self.waiting.contains_key(&(me, peer)) {
            if self.waiting.len() >= self.limits.max_waiting {
                self.stats.refused += 1;
                return Err(RelayRefusal::Busy);
            }
            let mine = self.waiting.keys().filter(|(a, _)| *a == me).count();
            if mine >= self.limits.per_node_waiting {
                self.stats.refused += 1;
                return Err(RelayRefusal::Quota);
            }
        }
        self.waiting.insert((me, peer), (addr, now));
        Ok(Ask::Waiting)
    }

    /// Pairs with an end at `addr`'s source (IPv4 address, IPv6 /64).
    fn source_pairs(&self, addr: SocketAddr) -> usize {
        let src = Source::of(addr.ip());
        self.pairs
            .values()
            .filter(|p| p.sides.iter().any(|s| Source::of(s.addr.ip()) == src))
            .count()
    }

    /// The grant for `me`'s pair with `peer`, once it is up.
    pub fn grant(&self, me: NodeId, peer: NodeId) -> Option<Grant> {
        self.grant_of(&key(me, peer), me)
    }

    /// Forgets `me`'s waiting request for `peer` (its wait is over).
    pub fn give_up(&mut self, me: NodeId, peer: NodeId) {
        self.waiting.remove(&(me, peer));
    }

    fn grant_of(&self, k: &PairKey, me: NodeId) -> Option<Grant> {
        let p = self.pairs.get(k)?;
        let i = usize::from(p.sides[1].id == me);
        Some(Grant {
            own_token: p.sides[i].token,
            peer_token: p.sides[1 - i].token,
            lifetime: self.limits.pair_lifetime,
        })
    }

    fn side(&self, id: NodeId, addr: SocketAddr, rng: &mut impl RngCore) -> Side {
        loop {
            // 240.0.0.0/5: reserved, never routed, and without 255.255.255.255.
            let ip = Ipv4Addr::from(0xF000_0000 | (rng.next_u32() & 0x07FF_FFFF));
            let port = (rng.next_u32() as u16).max(1);
            let token = SocketAddr::V4(SocketAddrV4::new(ip, port));
            if !self.tokens.contains_key(&token) {
                return Side {
                    id,
                    addr,
                    token,
                    bytes: 0,
                };
            }
        }
    }

    /// A Send indication from `from` for `token` carrying `len` bytes: where to send it on
    /// as a Data indication, and the sender's token to put in it.
    pub fn forward(
        &mut self,
        from: SocketAddr,
        token: SocketAddr,
        len: usize,
        now: Instant,
    ) -> Result<(SocketAddr, SocketAddr), Drop> {
        self.sweep(now);
        let Some((k, to)) = self.tokens.get(&token).copied() else {
            self.stats.dropped_unknown += 1;
            return Err(Drop::Unknown);
        };
        let rate = self.limits.pair_rate;
        let Some(p) = self.pairs.get_mut(&k) else {
            self.stats.dropped_unknown += 1;
            return Err(Drop::Unknown);
        };
        let sender = 1 - to;
        if p.sides[sender].addr != from {
            self.stats.dropped_unknown += 1;
            return Err(Drop::Unknown);
        }
        let elapsed = now.saturating_duration_since(p.refilled);
        let gained = (u128::from(rate) * elapsed.as_nanos() / 1_000_000_000) as u64;
        if gained > 0 {
            p.bucket = (p.bucket + gained).min(rate);
            p.refilled = now;
        }
        let len64 = len as u64;
        if p.bucket < len64 {
            p.dropped += 1;
            self.stats.dropped_rate += 1;
            return Err(Drop::Rate);
        }
        p.bucket -= len64;
        p.last = now;
        p.sides[sender].bytes += len64;
        self.stats.forwarded += 1;
        self.stats.forwarded_bytes += len64;
        Ok((p.sides[to].addr, p.sides[sender].token))
    }

    /// Drops waiting requests and pairs whose time is over (also done by every call, at
    /// most once a second).
    pub fn handle_timeout(&mut self, now: Instant) {
        let wait = self.limits.wait;
        self.waiting
            .retain(|_, (_, since)| now.saturating_duration_since(*since) < wait);
        let (idle, life) = (self.limits.pair_idle, self.limits.pair_lifetime);
        let ended: Vec<PairKey> = self
            .pairs
            .iter()
            .filter(|(_, p)| {
                now.saturating_duration_since(p.last) >= idle
                    || now.saturating_duration_since(p.made) >= life
            })
            .map(|(k, _)| *k)
            .collect();
        for k in ended {
            if let Some(p) = self.pairs.remove(&k) {
                for s in p.sides {
                    self.tokens.remove(&s.token);
                }
                self.stats.expired += 1;
            }
        }
        self.next_sweep = Some(now + Duration::from_secs(1));
    }

    fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|t| now >= t) {
            self.handle_timeout(now);
        }
    }

    /// Pairs relayed now.
    pub fn pairs(&self) -> usize {
        self.pairs.len()
    }

    /// The counters, with each pair.
    pub fn stats(&self, now: Instant) -> RelayServerStats {
        let mut s = self.stats.clone();
        s.pairs = self.pairs.len();
        s.waiting = self.waiting.len();
        s.detail = self
            .pairs
            .values()
            .map(|p| PairStats {
                ends: p.sides.map(|x| x.id.to_string()),
                bytes: p.sides.map(|x| x.bytes),
                dropped: p.dropped,
                age_secs: now.saturating_duration_since(p.made).as_secs(),
            })
            .collect();
        s
    }
}

#[cfg(test)]
mod tests;

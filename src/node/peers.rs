//! The peer table (spec/06-node.md §1.2, §4.3; spec/03-session.md §4): everything the node
//! keeps per peer identity — outbox, de-duplication window, addresses, whether the
//! application wants the peer, the live connection and the dial state — and the decisions
//! about them: which of two connections to one peer survives (the tie-break), when a peer
//! needs a dial, and which entry to drop when the table is full.
//!
//! Sans-IO: no clock, no sockets, no tasks. The driver keeps its per-connection handle in
//! `C` (a `quinn::Connection` and a wake-up in the daemon; a plain number in tests and
//! `netsim`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::crypto::Fingerprint;
use crate::session::{Inbox, Outbox};

/// Addresses remembered per peer (the newest first).
pub const MAX_PEER_ADDRS: usize = 8;

/// A peer's live connection.
#[derive(Debug)]
pub struct Live<C> {
    /// The driver's connection number (the outbox's key for messages in flight on it).
    pub conn_id: u64,
    /// The fingerprint of the side that dialed it (the tie-break's input).
    pub dialer: Fingerprint,
    /// The driver's handle.
    pub handle: C,
}

/// What the node keeps about one peer.
#[derive(Debug)]
pub struct Peer<C> {
    /// Messages to it: queued and in flight.
    pub outbox: Outbox,
    /// IDs recently received from it (in-memory de-duplication, without a store).
    pub inbox: Inbox,
    /// Where to dial it, the newest first (at most [`MAX_PEER_ADDRS`]).
    pub addrs: Vec<SocketAddr>,
    /// The application asked for this peer: keep reconnecting.
    pub want: bool,
    /// The live connection, if any.
    pub active: Option<Live<C>>,
    /// A dial is in progress (until its connection registers or ends).
    pub dialing: bool,
    /// The delay before the next dial after connections that failed before they were
    /// established (zero: none failed since the last success).
    pub redial: Duration,
    /// A session came up while our items wait in its mailbox: nothing is handed to it
    /// until its receipt was read (`Input::ReceiptRead`).
    pub receipt_first: bool,
    used: u64,
}

impl<C> Peer<C> {
    fn new(inbox_capacity: usize, key: [u64; 2]) -> Peer<C> {
        Peer {
            outbox: Outbox::default(),
            inbox: Inbox::new(inbox_capacity, key),
            addrs: Vec::new(),
            want: false,
            active: None,
            dialing: false,
            redial: Duration::ZERO,
            receipt_first: false,
            used: 0,
        }
    }

    /// Whether the entry may be dropped to make room: nothing live, nothing waiting, and
    /// the application did not ask for the peer.
    fn evictable(&self) -> bool {
        self.active.is_none() && !self.dialing && !self.want && self.outbox.is_empty()
    }

    /// Whether a connection should be (re)established.
    pub fn needs_connection(&self) -> bool {
        self.active.is_none() && !self.addrs.is_empty() && (self.want || !self.outbox.is_empty())
    }
}

/// The outcome of [`PeerTable::register`].
#[derive(Debug, PartialEq, Eq)]
pub enum Registration<C> {
    /// The connection is the peer's live one; `replaced` (if any) lost and must be closed
    /// with DUPLICATE_CONNECTION.
    Live {
        /// The previous live connection's handle.
        replaced: Option<C>,
    },
    /// The connection lost the tie-break: close it with DUPLICATE_CONNECTION.
    Duplicate,
}

/// Whether a connection dialed by `new_dialer` replaces a live one dialed by `old_dialer`:
/// keep the connection whose dialer has the lower fingerprint; if the same side dialed
/// both, keep the newer (spec/03-session.md §4). Both ends apply it and agree.
pub fn replaces(new_dialer: &Fingerprint, old_dialer: &Fingerprint) -> bool {
    new_dialer <= old_dialer
}

/// All peers, bounded: at most `max_peers` entries that could be dropped.
#[derive(Debug)]
pub struct PeerTable<C> {
    peers: HashMap<Fingerprint, Peer<C>>,
    max_peers: usize,
    inbox_capacity: usize,
    hash_key: [u64; 2],
    tick: u64,
    evicted: u64,
}

impl<C> PeerTable<C> {
    /// A table keeping at most `max_peers` evictable entries; each peer's in-memory
    /// de-duplication window holds at least `inbox_capacity` IDs, hashed under `hash_key`.
    pub fn new(max_peers: usize, inbox_capacity: usize, hash_key: [u64; 2]) -> PeerTable<C> {
        PeerTable {
            peers: HashMap::new(),
            max_peers: max_peers.max(1),
            inbox_capacity,
            hash_key,
            tick: 0,
            evicted: 0,
        }
    }

    /// The entry of `fp`, made if needed. A new entry in a full table evicts the least
    /// recently used entry with nothing live or waiting. Entries with a connection (bounded
    /// by the connection limit) or that the application asked for are never evicted.
    pub fn entry(&mut self, fp: Fingerprint) -> &mut Peer<C> {
        self.tick += 1;
        if !self.peers.contains_key(&fp) && self.peers.len() >= self.max_peers {
            let stalest = self
                .peers
                .iter()
                .filter(|(_, p)| p.evictable())
                .min_by_key(|(_, p)| p.used)
                .map(|(f, _)| *f);
            if let Some(f) = stalest {
                self.peers.remove(&f);
                self.evicted += 1;
            }
        }
        let (cap, key) = (self.inbox_capacity, self.hash_key);
        let p = self.peers.entry(fp).or_insert_with(|| Peer::new(cap, key));
        p.used = self.tick;
        p
    }

    /// The entry of `fp`, if there is one.
    pub fn get(&self, fp: &Fingerprint) -> Option<&Peer<C>> {
        self.peers.get(fp)
    }

    /// The entry of `fp`, if there is one, to change it.
    pub fn get_mut(&mut self, fp: &Fingerprint) -> Option<&mut Peer<C>> {
        self.peers.get_mut(fp)
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = (&Fingerprint, &Peer<C>)> {
        self.peers.iter()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Entries evicted since the start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Adds addresses for `fp`, the given ones first (after a peer restarts its old ones are
    /// stale), keeping at most [`MAX_PEER_ADDRS`].
    pub fn add_addrs(&mut self, fp: Fingerprint, addrs: Vec<SocketAddr>) {
        let p = self.entry(fp);
        let old = std::mem::take(&mut p.addrs);
        for a in addrs.into_iter().chain(old) {
            if !p.addrs.contains(&a) && p.addrs.len() < MAX_PEER_ADDRS {
                p.addrs.push(a);
            }
        }
    }

    /// Peers with messages waiting and no live connection.
    pub fn pending(&self) -> Vec<Fingerprint> {
        self.peers
            .iter()
            .filter(|(_, p)| p.active.is_none() && !p.outbox.is_empty())
            .map(|(fp, _)| *fp)
            .collect()
    }

    /// A connection to `peer` authenticated: make it the live one, or refuse it (the
    /// tie-break). `we_dialed` says which side dialed it; `remote` is learned as the peer's
    /// address when it dialed us and we know none.
    pub fn register(
        &mut self,
        me: Fingerprint,
        peer: Fingerprint,
        conn_id: u64,
        we_dialed: bool,
        remote: SocketAddr,
        handle: C,
    ) -> Registration<C> {
        let dialer = if we_dialed { me } else { peer };
        let p = self.entry(peer);
        if !we_dialed && p.addrs.is_empty() {
            p.addrs.push(remote);
        }
        if let Some(old) = &p.active {
            if !replaces(&dialer, &old.dialer) {
                return Registration::Duplicate;
            }
        }
        if we_dialed {
            p.dialing = false;
        }
        let replaced = p
            .active
            .replace(Live {
                conn_id,
                dialer,
                handle,
            })
            .map(|l| l.handle);
        Registration::Live { replaced }
    }

    /// Connection `conn_id` to `peer` ended: its unacknowledged messages go back to the
    /// front of the outbox; if it was the live one, the peer has none now.
    pub fn connection_ended(&mut self, peer: Fingerprint, conn_id: u64) {
        let p = self.entry(peer);
        p.outbox.requeue(conn_id);
        if p.active.as_ref().map(|a| a.conn_id) == Some(conn_id) {
            p.active = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(b: u8) -> Fingerprint {
        Fingerprint([b; 32])
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn both_ends_keep_the_connection_dialed_by_the_lower_fingerprint() {
        let (a, b) = (fp(1), fp(2));
        // Connection 10 dialed by A, 20 dialed by B; each end registers them in a
        // different order.
        let mut at_a: PeerTable<u64> = PeerTable::new(8, 16, [0, 0]);
        let mut at_b: PeerTable<u64> = PeerTable::new(8, 16, [0, 0]);
        assert_eq!(
            at_a.register(a, b, 1, false, addr(2), 20),
            Registration::Live { replaced: None }
        );
        assert_eq!(
            at_a.register(a, b, 2, true, addr(2), 10),
            Registration::Live { replaced: Some(20) }
        );
        assert_eq!(
            at_b.register(b, a, 1, false, addr(1), 10),
            Registration::Live { replaced: None }
        );
        assert_eq!(
            at_b.register(b, a, 2, true, addr(1), 20),
            Registration::Duplicate
        );
        assert_eq!(at_a.get(&b).unwrap().active.as_ref().unwrap().handle, 10);
        assert_eq!(at_b.get(&a).unwrap().active.as_ref().unwrap().handle, 10);
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_used_idle_entry_only() {
        let mut t: PeerTable<u64> = PeerTable::new(2, 16, [0, 0]);
        t.entry(fp(1)).want = true;
        t.entry(fp(2));
        t.entry(fp(3));
        assert!(t.get(&fp(1)).is_some(), "wanted peers stay");
        assert!(t.get(&fp(2)).is_none(), "the idle one went");
        assert_eq!((t.len(), t.evicted()), (2, 1));
        t.entry(fp(3)).want = true;
        t.entry(fp(4));
        assert_eq!(
            t.len(),
            3,
            "nothing evictable: the table grows past its cap"
        );
    }

    #[test]
    fn addresses_newest_first_and_bounded() {
        let mut t: PeerTable<u64> = PeerTable::new(2, 16, [0, 0]);
        t.add_addrs(fp(1), vec![addr(1), addr(2)]);
        t.add_addrs(fp(1), vec![addr(3), addr(1)]);
        assert_eq!(
            t.get(&fp(1)).unwrap().addrs,
            vec![addr(3), addr(1), addr(2)]
        );
        t.add_addrs(fp(1), (100..120).map(addr).collect());
        assert_eq!(t.get(&fp(1)).unwrap().addrs.len(), MAX_PEER_ADDRS);
    }
}

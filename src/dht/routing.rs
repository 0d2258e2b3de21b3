//! The Kademlia routing table (spec/04-dht.md §2): 160 k-buckets by common-prefix length
//! (the equivalent of bucket splitting), least-recently-seen order, a replacement cache per
//! bucket, eviction of the least-recently-seen entry only after it failed a ping, and at most
//! `per_subnet` entries from one /24 (IPv4) or /48 (IPv6) per bucket.
//!
//! Sans-IO: when a full bucket needs a liveness check, [`RoutingTable::insert`] returns
//! [`Insert::Pending`] naming the node to ping; the caller pings and reports back with
//! [`RoutingTable::on_ping_result`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::contact::{subnet, Contact, Distance};
use crate::crypto::NodeId;

/// Routing table parameters.
#[derive(Debug, Clone, Copy)]
pub struct RoutingConfig {
    /// Bucket size (default 20).
    pub k: usize,
    /// Entries from one /24 or /48 per bucket (default 2).
    pub per_subnet: usize,
    /// Failed requests after which an entry is dropped in favour of a replacement
    /// (default 2).
    pub max_failures: u8,
    /// How long a liveness ping may take before the entry counts as dead (default 5 s).
    pub ping_timeout: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            k: 20,
            per_subnet: 2,
            max_failures: 2,
            ping_timeout: Duration::from_secs(5),
        }
    }
}

/// What [`RoutingTable::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// New entry.
    Added,
    /// Known entry, moved to most-recently-seen.
    Updated,
    /// The bucket is full: the candidate waits in the replacement cache; ping this node
    /// (the least recently seen) and report with `on_ping_result`.
    Pending {
        /// The node to ping.
        ping: Contact,
    },
    /// The bucket is full and already checking a node; the candidate waits in the cache.
    Cached,
    /// Refused: too many entries from the candidate's address range in that bucket.
    SubnetLimit,
    /// Our own ID.
    Local,
}

#[derive(Debug, Clone)]
struct Entry {
    contact: Contact,
    failures: u8,
}

#[derive(Debug, Default, Clone)]
struct Bucket {
    /// Least recently seen first.
    entries: Vec<Entry>,
    replacements: VecDeque<Contact>,
    /// A liveness check under way: the node pinged and when.
    pinging: Option<(NodeId, Instant)>,
}

/// The routing table of one node.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    local: NodeId,
    cfg: RoutingConfig,
    buckets: Vec<Bucket>,
}

impl RoutingTable {
    /// An empty table for `local`.
    pub fn new(local: NodeId, cfg: RoutingConfig) -> RoutingTable {
        RoutingTable {
            local,
            cfg,
            buckets: vec![Bucket::default(); 160],
        }
    }

    /// Our ID.
    pub fn local(&self) -> NodeId {
        self.local
    }

    fn index(&self, id: &NodeId) -> Option<usize> {
        let lz = Distance::between(&self.local, id).leading_zeros();
        (lz < 160).then_some(lz as usize)
    }

    /// Records that `contact` is alive (it answered us, or a proven server contacted us).
    pub fn insert(&mut self, contact: Contact, now: Instant) -> Insert {
        let Some(i) = self.index(&contact.id) else {
            return Insert::Local;
        };
        let cfg = self.cfg;
        let b = &mut self.buckets[i];
        if let Some(pos) = b.entries.iter().position(|e| e.contact.id == contact.id) {
            let mut e = b.entries.remove(pos);
            e.contact = contact;
            e.failures = 0;
            b.entries.push(e);
            return Insert::Updated;
        }
        let net = subnet(&contact.addr);
        if b.entries
            .iter()
            .filter(|e| subnet(&e.contact.addr) == net)
            .count()
            >= cfg.per_subnet
        {
            return Insert::SubnetLimit;
        }
        if b.entries.len() < cfg.k {
            b.entries.push(Entry {
                contact,
                failures: 0,
            });
            return Insert::Added;
        }
        if !b.replacements.iter().any(|c| c.id == contact.id) {
            if b.replacements.len() >= cfg.k {
                b.replacements.pop_front();
            }
            b.replacements.push_back(contact);
        }
        match b.pinging {
            Some(_) => Insert::Cached,
            None => {
                let oldest = b.entries[0].contact;
                b.pinging = Some((oldest.id, now));
                Insert::Pending { ping: oldest }
            }
        }
    }

    /// The answer (or not) to a liveness ping of `id`: alive keeps it (as most recently
    /// seen); dead evicts it and promotes the newest replacement.
    pub fn on_ping_result(&mut self, id: &NodeId, alive: bool, now: Instant) {
        let Some(i) = self.index(id) else { return };
        let b = &mut self.buckets[i];
        if b.pinging.map(|(p, _)| p) == Some(*id) {
            b.pinging = None;
        }
        if alive {
            if let Some(pos) = b.entries.iter().position(|e| e.contact.id == *id) {
                let mut e = b.entries.remove(pos);
                e.failures = 0;
                b.entries.push(e);
            }
        } else {
            self.evict(i, id, now);
        }
    }

    /// A request to `id` went unanswered. After `max_failures` in a row the entry is
    /// replaced — if a replacement is waiting; otherwise it stays (a table never empties
    /// itself during a partition).
    pub fn on_failure(&mut self, id: &NodeId, now: Instant) {
        let Some(i) = self.index(id) else { return };
        let max = self.cfg.max_failures;
        let b = &mut self.buckets[i];
        let Some(e) = b.entries.iter_mut().find(|e| e.contact.id == *id) else {
            return;
        };
        e.failures = e.failures.saturating_add(1);
        if e.failures >= max && !b.replacements.is_empty() {
            self.evict(i, id, now);
        }
    }

    fn evict(&mut self, i: usize, id: &NodeId, _now: Instant) {
        let per_subnet = self.cfg.per_subnet;
        let b = &mut self.buckets[i];
        let Some(pos) = b.entries.iter().position(|e| e.contact.id == *id) else {
            return;
        };
        b.entries.remove(pos);
        // Newest replacement that fits the subnet limit.
        while let Some(c) = b.replacements.pop_back() {
            let net = subnet(&c.addr);
            if b.entries
                .iter()
                .filter(|e| subnet(&e.contact.addr) == net)
                .count()
                < per_subnet
            {
                b.entries.push(Entry {
                    contact: c,
                    failures: 0,
                });
                break;
            }
        }
    }

    /// Liveness pings that took too long: their nodes count as dead. Returns them.
    pub fn expire_pings(&mut self, now: Instant) -> Vec<NodeId> {
        let timeout = self.cfg.ping_timeout;
        let expired: Vec<NodeId> = self
            .buckets
            .iter()
            .filter_map(|b| b.pinging)
            .filter(|(_, at)| now >= *at + timeout)
            .map(|(id, _)| id)
            .collect();
        for id in &expired {
            self.on_ping_result(id, false, now);
        }
        expired
    }

    /// `id` said it is going away (it closed its connection to us on shutdown): its
    /// entry goes at once, the newest waiting replacement takes its place, and it is no
    /// longer handed out in answers — a gone server would cost every lookup that meets it
    /// a request timeout (spec/04-dht.md §3). It comes back by contacting us again.
    pub fn left(&mut self, id: &NodeId, now: Instant) {
        let Some(i) = self.index(id) else { return };
        self.evict(i, id, now);
        self.buckets[i].replacements.retain(|c| c.id != *id);
    }

    /// Removes `id` outright (a node that proved hostile).
    pub fn remove(&mut self, id: &NodeId) {
        if let Some(i) = self.index(id) {
            self.buckets[i].entries.retain(|e| e.contact.id != *id);
            self.buckets[i].replacements.retain(|c| c.id != *id);
        }
    }

    /// Whether `id` is in the table.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.index(id)
            .is_some_and(|i| self.buckets[i].entries.iter().any(|e| e.contact.id == *id))
    }

    /// The `n` known contacts closest to `target`, nearest first.
    pub fn closest(&self, target: &NodeId, n: usize) -> Vec<Contact> {
        let mut all: Vec<(Distance, Contact)> = self
            .buckets
            .iter()
            .flat_map(|b| b.entries.iter())
            .map(|e| (Distance::between(target, &e.contact.id), e.contact))
            .collect();
        if all.len() > n && n > 0 {
            all.select_nth_unstable_by_key(n - 1, |(d, _)| *d);
            all.truncate(n);
        }
        all.sort_unstable_by_key(|(d, _)| *d);
        all.into_iter().map(|(_, c)| c).collect()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.entries.len()).sum()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry.
    pub fn contacts(&self) -> impl Iterator<Item = Contact> + '_ {
        self.buckets
            .iter()
            .flat_map(|b| b.entries.iter().map(|e| e.contact))
    }

    /// Indexes of non-empty buckets, and the highest one: what a refresh walks.
    pub fn bucket_depth(&self) -> usize {
        self.buckets
            .iter()
            .rposition(|b| !b.entries.is_empty())
            .map_or(0, |i| i + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(first: u8, last: u8) -> NodeId {
        let mut v = [0u8; 20];
        v[0] = first;
        v[19] = last;
        NodeId(v)
    }

    fn c(first: u8, last: u8, ip: &str) -> Contact {
        Contact {
            id: id(first, last),
            addr: format!("{ip}:4567").parse().unwrap(),
        }
    }

    #[allow(clippy::disallowed_methods)] // a test clock's starting point
    fn now() -> Instant {
        Instant::now()
    }

    fn cfg(k: usize) -> RoutingConfig {
        RoutingConfig {
            k,
            ..RoutingConfig::default()
        }
    }

    #[test]
    fn fills_then_asks_to_ping_the_least_recently_seen() {
        let t0 = now();
        let mut t = RoutingTable::new(id(0, 0), cfg(3));
        for n in 1..=3 {
            assert_eq!(
                t.insert(c(0x80, n, &format!("10.0.{n}.1")), t0),
                Insert::Added
            );
        }
        assert_eq!(t.insert(c(0x80, 1, "10.0.1.1"), t0), Insert::Updated);
        // Full: the least recently seen is now #2.
        assert_eq!(
            t.insert(c(0x80, 4, "10.0.4.1"), t0),
            Insert::Pending {
                ping: c(0x80, 2, "10.0.2.1")
            }
        );
        assert_eq!(t.insert(c(0x80, 5, "10.0.5.1"), t0), Insert::Cached);
        // #2 answers: it stays, nothing is evicted.
        t.on_ping_result(&id(0x80, 2), true, t0);
        assert!(t.contains(&id(0x80, 2)) && !t.contains(&id(0x80, 4)));
        // Next candidate: #3 is least recently seen now; it fails the ping and is replaced by
        // the newest cached candidate.
        assert_eq!(
            t.insert(c(0x80, 6, "10.0.6.1"), t0),
            Insert::Pending {
                ping: c(0x80, 3, "10.0.3.1")
            }
        );
        t.on_ping_result(&id(0x80, 3), false, t0);
        assert!(!t.contains(&id(0x80, 3)));
        assert!(t.contains(&id(0x80, 6)));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn at_most_two_per_subnet_per_bucket() {
        let t0 = now();
        let mut t = RoutingTable::new(id(0, 0), cfg(20));
        assert_eq!(t.insert(c(0x80, 1, "10.9.9.1"), t0), Insert::Added);
        assert_eq!(t.insert(c(0x80, 2, "10.9.9.2"), t0), Insert::Added);
        assert_eq!(t.insert(c(0x80, 3, "10.9.9.3"), t0), Insert::SubnetLimit);
        // Another bucket has its own allowance.
        assert_eq!(t.insert(c(0x40, 3, "10.9.9.3"), t0), Insert::Added);
        let v6a = Contact {
            id: id(0x80, 7),
            addr: "[2001:db8:1::1]:1".parse().unwrap(),
        };
        let v6b = Contact {
            id: id(0x80, 8),
            addr: "[2001:db8:1::2]:1".parse().unwrap(),
        };
        let v6c = Contact {
            id: id(0x80, 9),
            addr: "[2001:db8:1:ffff::3]:1".parse().unwrap(),
        };
        assert_eq!(t.insert(v6a, t0), Insert::Added);
        assert_eq!(t.insert(v6b, t0), Insert::Added);
        assert_eq!(t.insert(v6c, t0), Insert::SubnetLimit, "same /48");
    }

    #[test]
    fn failures_evict_only_when_a_replacement_waits() {
        let t0 = now();
        let mut t = RoutingTable::new(id(0, 0), cfg(1));
        t.insert(c(0x80, 1, "10.0.1.1"), t0);
        t.on_failure(&id(0x80, 1), t0);
        t.on_failure(&id(0x80, 1), t0);
        assert!(t.contains(&id(0x80, 1)), "no replacement: keep it");
        assert!(matches!(
            t.insert(c(0x80, 2, "10.0.2.1"), t0),
            Insert::Pending { .. }
        ));
        t.on_failure(&id(0x80, 1), t0);
        assert!(!t.contains(&id(0x80, 1)) && t.contains(&id(0x80, 2)));
    }

    #[test]
    fn a_node_that_left_goes_at_once_and_a_replacement_takes_its_place() {
        let t0 = now();
        let mut t = RoutingTable::new(id(0, 0), cfg(1));
        t.insert(c(0x80, 1, "10.0.1.1"), t0);
        // Full bucket: #2 waits as a replacement.
        assert!(matches!(
            t.insert(c(0x80, 2, "10.0.2.1"), t0),
            Insert::Pending { .. }
        ));
        t.left(&id(0x80, 1), t0);
        assert!(!t.contains(&id(0x80, 1)) && t.contains(&id(0x80, 2)));
        // Without a replacement it goes too (unlike a failure): it said it is gone.
        t.left(&id(0x80, 2), t0);
        assert!(t.is_empty());
        assert!(t.closest(&id(0x80, 0), 20).is_empty(), "handed to nobody");
        // Unknown IDs are ignored.
        t.left(&id(0x40, 9), t0);
    }

    #[test]
    fn closest_is_sorted_by_xor_distance() {
        let t0 = now();
        let mut t = RoutingTable::new(id(0, 0), cfg(20));
        for n in 1..=40u8 {
            t.insert(c(n, n, &format!("10.{n}.0.1")), t0);
        }
        let target = id(5, 0);
        let got = t.closest(&target, 5);
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].id, id(5, 5));
        for w in got.windows(2) {
            assert!(Distance::between(&target, &w[0].id) < Distance::between(&target, &w[1].id));
        }
    }

    #[test]
    fn expired_pings_count_as_dead() {
        let t0 = now();
        let mut t = RoutingTable::new(id(0, 0), cfg(1));
        t.insert(c(0x80, 1, "10.0.1.1"), t0);
        t.insert(c(0x80, 2, "10.0.2.1"), t0);
        assert!(t.expire_pings(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(
            t.expire_pings(t0 + Duration::from_secs(5)),
            vec![id(0x80, 1)]
        );
        assert!(t.contains(&id(0x80, 2)));
    }
}

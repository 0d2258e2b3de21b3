//! One fetch of our offline mailbox (spec/09-mailbox.md §1.1, §5), sans-IO: each of our
//! contact drops, then the requests mailbox, read key by key from the k closest nodes, page by
//! page, within a byte budget; then every item opened and checked. The driver — the daemon's
//! mailbox task, or `netsim`'s mailbox scenario — carries out each [`FetchQuery`] and hands
//! its answer back; nothing here waits, reads a clock or touches a socket.
//!
//! ```text
//! for each key: FindNode(key) ─▶ closest ─▶ for each node: Page(after) … until a short page
//! finish(identity) ─▶ Opened { by sender: messages, listed, invalid, cost }
//! ```
//!
//! One value is kept per (publisher, item): a copy read from a second node is counted, not
//! kept twice. A request item opens only if its sealed sender is its record's publisher; a
//! drop item only if it unwraps with the drop's secret and its record is the drop's. Either
//! way the item number is the message's ([`item_seq`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::crypto::drop::ContactDrop;
use crate::crypto::receipt::item_seq;
use crate::crypto::record::{mailbox_key, RecordKind};
use crate::crypto::{sealed, Fingerprint, Identity, Message, NodeId};
use crate::dht::rpc::MAX_RECORDS;
use crate::dht::{Contact, DhtEvent, StoreConfig, VerifiedRecord};

/// Bytes of mailbox items one fetch holds at most (over all storing nodes): a storing node
/// that answers with many large items of many made-up senders cannot make the recipient
/// hold more; what is left waits for the next fetch, once the receipt dropped what was
/// taken.
pub const MAX_FETCH_BYTES: usize = 64 << 20;

/// A DHT request the fetch needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchQuery {
    /// The k closest nodes of a key; answer with [`DhtEvent::FoundNodes`].
    FindNode(NodeId),
    /// One page of a key's items at one node; answer with [`DhtEvent::Page`].
    Page {
        /// The storing node.
        to: Contact,
        /// The key.
        key: NodeId,
        /// The last (publisher, item) of the page before.
        after: Option<(Fingerprint, u64)>,
    },
}

/// What one fetch cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchCost {
    /// Item copies read, over every storing node.
    pub copies: u64,
    /// Lookups made (one per key).
    pub lookups: u64,
    /// Pages asked.
    pub pages: u64,
}

/// What a finished fetch found.
#[derive(Debug, Default)]
pub struct Opened {
    /// The messages that opened, by their sender.
    pub by_sender: HashMap<Fingerprint, Vec<Message>>,
    /// (record publisher, item number) of every item that opened: our receipts' entries.
    pub listed: Vec<(Fingerprint, u64)>,
    /// Items that did not open or were not what they claimed.
    pub invalid: u64,
    /// What it cost.
    pub cost: FetchCost,
}

/// Where items are read: our requests mailbox, or one of our drops.
#[derive(Debug)]
enum Source {
    Requests(NodeId),
    Drop(Arc<ContactDrop>),
}

impl Source {
    fn key(&self) -> NodeId {
        match self {
            Source::Requests(k) => *k,
            Source::Drop(d) => d.key(),
        }
    }

    fn kind(&self) -> RecordKind {
        match self {
            Source::Requests(_) => RecordKind::MailboxItem,
            Source::Drop(_) => RecordKind::MailboxDrop,
        }
    }
}

/// The key being read.
#[derive(Debug)]
struct Reading {
    /// Index in `sources`.
    source: usize,
    /// None until the lookup answered.
    node: Option<Contact>,
    /// Nodes still to read.
    nodes: VecDeque<Contact>,
    after: Option<(Fingerprint, u64)>,
    /// Pages asked of `node`.
    pages_here: usize,
}

/// One fetch. See the module documentation.
#[derive(Debug)]
pub struct Fetch {
    sources: Vec<Source>,
    next: usize,
    reading: Option<Reading>,
    /// A query is out.
    waiting: bool,
    /// A lookup failed: the fetch reports nothing.
    failed: bool,
    budget: usize,
    cost: FetchCost,
    /// One value per (source, publisher, item).
    items: Vec<HashMap<(Fingerprint, u64), Vec<u8>>>,
}

impl Fetch {
    /// A fetch of `drops` and of `me`'s requests mailbox (the current drop, and the one
    /// before a rotation while its items may live), at most `budget` bytes of values.
    pub fn new(me: Fingerprint, drops: Vec<Arc<ContactDrop>>, budget: usize) -> Fetch {
        // The drops first: strangers cannot fill them, so a flooded requests mailbox never
        // spends the budget before our contacts' items are read.
        let mut sources: Vec<Source> = drops.into_iter().map(Source::Drop).collect();
        sources.push(Source::Requests(mailbox_key(&me)));
        let items = sources.iter().map(|_| HashMap::new()).collect();
        Fetch {
            sources,
            next: 0,
            reading: None,
            waiting: false,
            failed: false,
            budget,
            cost: FetchCost::default(),
            items,
        }
    }

    /// Pages asked of one node for one key at most: a full mailbox's worth.
    fn most_pages() -> usize {
        StoreConfig::default().mailbox_per_key / MAX_RECORDS + 2
    }

    /// The next request to carry out, or None while one is out or when the fetch is done.
    pub fn poll_query(&mut self) -> Option<FetchQuery> {
        if self.waiting || self.failed {
            return None;
        }
        loop {
            let Some(r) = &mut self.reading else {
                if self.budget == 0 {
                    return None;
                }
                let source = self.next;
                let key = self.sources.get(source)?.key();
                self.next += 1;
                self.reading = Some(Reading {
                    source,
                    node: None,
                    nodes: VecDeque::new(),
                    after: None,
                    pages_here: 0,
                });
                self.cost.lookups += 1;
                self.waiting = true;
                return Some(FetchQuery::FindNode(key));
            };
            let key = self.sources[r.source].key();
            match r.node {
                Some(to) if self.budget > 0 && r.pages_here < Self::most_pages() => {
                    r.pages_here += 1;
                    self.cost.pages += 1;
                    self.waiting = true;
                    return Some(FetchQuery::Page {
                        to,
                        key,
                        after: r.after,
                    });
                }
                _ => match r.nodes.pop_front() {
                    Some(n) if self.budget > 0 => {
                        r.node = Some(n);
                        r.after = None;
                        r.pages_here = 0;
                    }
                    _ => self.reading = None,
                },
            }
        }
    }

    /// The answer to the last query (None: it failed). `now_s` (Unix seconds) checks the
    /// records' validity.
    pub fn answer(&mut self, ev: Option<DhtEvent>, now_s: u64) {
        self.waiting = false;
        let Some(r) = &mut self.reading else {
            return;
        };
        if r.node.is_none() {
            match ev {
                Some(DhtEvent::FoundNodes { closest, .. }) => {
                    r.nodes = closest.into();
                    // An empty Some ends this key at the next poll.
                    r.node = r.nodes.pop_front();
                    if r.node.is_none() {
                        self.reading = None;
                    }
                }
                _ => {
                    self.failed = true;
                    self.reading = None;
                }
            }
            return;
        }
        let source = &self.sources[r.source];
        let (key, kind) = (source.key(), source.kind());
        let Some(DhtEvent::Page {
            records,
            answered: true,
            ..
        }) = ev
        else {
            r.node = None;
            return;
        };
        let full = records.len() >= MAX_RECORDS;
        let mut last = None;
        for b in &records {
            let Ok(v) = VerifiedRecord::verify(b, now_s) else {
                continue;
            };
            if v.kind() != kind || v.key() != key {
                continue;
            }
            let Some(left) = self.budget.checked_sub(v.value().len()) else {
                // The first that does not fit ends the fetch; the rest waits for the next.
                self.budget = 0;
                break;
            };
            self.budget = left;
            self.cost.copies += 1;
            last = Some((v.publisher(), v.item()));
            self.items[r.source]
                .entry((v.publisher(), v.item()))
                .or_insert_with(|| v.value().to_vec());
        }
        match (full, last) {
            (true, Some(l)) if self.budget > 0 => r.after = Some(l),
            _ => r.node = None,
        }
    }

    /// Whether the fetch is over: every key read, the budget spent, or a lookup failed.
    pub fn is_done(&self) -> bool {
        self.failed
            || (self.reading.is_none() && (self.next >= self.sources.len() || self.budget == 0))
    }

    /// Opens what was read with our identity; None if a lookup failed (the fetch reports
    /// nothing, spec/09-mailbox.md §5).
    pub fn finish(self, me: &Identity) -> Option<Opened> {
        if self.failed {
            return None;
        }
        let mut out = Opened {
            cost: self.cost,
            ..Opened::default()
        };
        for (source, items) in self.sources.iter().zip(self.items) {
            for ((publisher, item), value) in items {
                let opened = match source {
                    Source::Requests(_) => sealed::open(me, &value)
                        .ok()
                        .filter(|(_, sender)| sender.fingerprint() == publisher),
                    Source::Drop(d) if publisher == d.fingerprint() => d
                        .unwrap(item, &value)
                        .ok()
                        .and_then(|s| sealed::open(me, &s).ok()),
                    Source::Drop(_) => None,
                };
                match opened {
                    Some((msg, sender)) if item_seq(&msg.id) == item => {
                        out.listed.push((publisher, item));
                        out.by_sender
                            .entry(sender.fingerprint())
                            .or_default()
                            .push(msg);
                    }
                    _ => out.invalid += 1,
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests;

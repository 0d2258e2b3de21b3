//! Per-peer outbox and inbox (spec/03-session.md §5). They outlive connections: messages not
//! yet acknowledged go back to the front of the queue when a connection ends and are sent
//! again on the next; the receiver drops what it has seen by message ID.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;

use crate::crypto::MessageId;

/// A message waiting to be sent or acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its ID (the receiver de-duplicates by it).
    pub id: MessageId,
    /// Sender's timestamp, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// The application protocol the body belongs to.
    pub kind: crate::crypto::MessageKind,
    /// The body.
    pub body: Bytes,
}

/// Where a connection takes the DATA it sends ([`super::Connection::poll_transmit`]): the
/// peer's ledger ([`Outbox`], which records each message in flight under its session
/// counter), or the plain queue of batches a driver's connection holds ([`SendQueue`]) when
/// the ledger is elsewhere (the node core's: spec/06-node.md §1.1).
pub trait Source {
    /// Messages waiting.
    fn waiting(&self) -> usize;
    /// Their body bytes.
    fn waiting_bytes(&self) -> usize;
    /// The next message, sent on connection `conn` under session counter `counter`.
    fn take(&mut self, conn: u64, counter: u64) -> Option<Outgoing>;
}

/// Messages handed to one connection and not sent yet, in order: no ledger — the node core
/// knows which counter is which message and turns the peer's cumulative ACK into IDs.
#[derive(Debug, Default)]
pub struct SendQueue {
    msgs: VecDeque<Outgoing>,
    bytes: usize,
}

impl SendQueue {
    /// Appends a message.
    pub fn push(&mut self, msg: Outgoing) {
        self.bytes += msg.body.len();
        self.msgs.push_back(msg);
    }
}

impl Source for SendQueue {
    fn waiting(&self) -> usize {
        self.msgs.len()
    }

    fn waiting_bytes(&self) -> usize {
        self.bytes
    }

    fn take(&mut self, _conn: u64, _counter: u64) -> Option<Outgoing> {
        let m = self.msgs.pop_front()?;
        self.bytes -= m.body.len();
        Some(m)
    }
}

impl Source for Outbox {
    fn waiting(&self) -> usize {
        self.queued()
    }

    fn waiting_bytes(&self) -> usize {
        self.queued_bytes()
    }

    fn take(&mut self, conn: u64, counter: u64) -> Option<Outgoing> {
        self.take_next(conn, counter).cloned()
    }
}

/// Messages to one peer: queued, and in flight on some connection.
#[derive(Debug, Default)]
pub struct Outbox {
    queued: VecDeque<Outgoing>,
    /// Body bytes of the queued messages (to size the sender's output at once).
    queued_bytes: usize,
    /// (connection id, session counter, message), in send order.
    inflight: VecDeque<(u64, u64, Outgoing)>,
}

impl Outbox {
    /// Queues a message at the back.
    pub fn push(&mut self, msg: Outgoing) {
        self.queued_bytes += msg.body.len();
        self.queued.push_back(msg);
    }

    /// Drops the queued (not in flight) messages among `ids`: they were delivered another
    /// way (the recipient's mailbox receipt). Returns how many were dropped.
    pub fn forget_queued(&mut self, ids: &[crate::crypto::MessageId]) -> usize {
        let before = self.queued.len();
        self.queued.retain(|m| !ids.contains(&m.id));
        self.queued_bytes = self.queued.iter().map(|m| m.body.len()).sum();
        before - self.queued.len()
    }

    /// Messages not yet sent.
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// Body bytes of the messages not yet sent.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Messages sent but not acknowledged.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Whether nothing is waiting or in flight.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.inflight.is_empty()
    }

    /// Takes the next message to send on connection `conn`, recording it in flight under
    /// session counter `counter`.
    pub fn take_next(&mut self, conn: u64, counter: u64) -> Option<&Outgoing> {
        let msg = self.queued.pop_front()?;
        self.queued_bytes -= msg.body.len();
        self.inflight.push_back((conn, counter, msg));
        self.inflight.back().map(|(_, _, m)| m)
    }

    /// Connection `conn` acknowledged every counter below `below`: returns those messages.
    /// ACKs are cumulative and arrive in send order, so this pops from the front: O(acked).
    pub fn ack_below(&mut self, conn: u64, below: u64) -> Vec<MessageId> {
        let mut acked = Vec::new();
        while let Some((c, counter, _)) = self.inflight.front() {
            if *c != conn || *counter >= below {
                break;
            }
            if let Some((_, _, m)) = self.inflight.pop_front() {
                acked.push(m.id);
            }
        }
        // Stopped at another connection's entry (a duplicate that lost the tie-break and is
        // not requeued yet): ours may lie behind it. Rare; the slow path.
        if self.inflight.front().is_some_and(|(c, _, _)| *c != conn) {
            self.inflight.retain(|(c, counter, m)| {
                let done = *c == conn && *counter < below;
                if done {
                    acked.push(m.id);
                }
                !done
            });
        }
        acked
    }

    /// Connection `conn` ended: its unacknowledged messages go back to the front, in their
    /// original order. Returns how many.
    pub fn requeue(&mut self, conn: u64) -> usize {
        let mut back = Vec::new();
        self.inflight.retain(|(c, _, m)| {
            if *c == conn {
                back.push(m.clone());
                false
            } else {
                true
            }
        });
        let n = back.len();
        for m in back.into_iter().rev() {
            self.queued_bytes += m.body.len();
            self.queued.push_front(m);
        }
        n
    }
}

/// The IDs of messages recently received from one peer, to drop duplicates.
///
/// Two generations: IDs go into `current`; when it holds `capacity`, it becomes `previous`
/// and the old `previous` is cleared and reused. So the last `capacity` IDs (and at most
/// 2 × `capacity`) are always remembered, and nothing is removed one entry at a time — the
/// per-message eviction of a large table was a cache miss per message.
#[derive(Debug)]
pub struct Inbox {
    current: HashSet<MessageId, IdHashKey>,
    previous: HashSet<MessageId, IdHashKey>,
    capacity: usize,
}

impl Inbox {
    /// An inbox remembering at least the last `capacity` IDs, hashing them under `key`
    /// (random per node, so a peer cannot choose IDs that collide).
    pub fn new(capacity: usize, key: [u64; 2]) -> Inbox {
        Inbox {
            current: HashSet::with_hasher(IdHashKey(key)),
            previous: HashSet::with_hasher(IdHashKey(key)),
            capacity: capacity.max(1),
        }
    }

    /// Records `id`; returns false if it was seen before (a duplicate).
    pub fn accept(&mut self, id: MessageId) -> bool {
        if self.previous.contains(&id) || !self.current.insert(id) {
            return false;
        }
        if self.current.len() >= self.capacity {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        true
    }

    /// Forgets `id` (it was taken but could not be kept): it is new again.
    pub fn forget(&mut self, id: &MessageId) {
        self.current.remove(id);
        self.previous.remove(id);
    }
}

/// A keyed hash for random 128-bit IDs: the two halves, each XORed with a secret key, folded
/// by one 64×64→128-bit multiply (the core of wyhash/foldhash). SipHash costs several times
/// more and was the top item of the small-message profile.
#[derive(Debug, Clone, Copy)]
pub struct IdHashKey(pub [u64; 2]);

impl std::hash::BuildHasher for IdHashKey {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            key: self.0,
            acc: 0,
            words: 0,
        }
    }
}

/// The hasher of [`IdHashKey`].
#[derive(Debug)]
pub struct IdHasher {
    key: [u64; 2],
    acc: u64,
    words: u64,
}

impl IdHasher {
    fn mix(&mut self, word: u64) {
        let k = self.key[(self.words & 1) as usize];
        let m = u128::from(word ^ k) * u128::from(self.acc ^ self.key[1] ^ 0x9E37_79B9_7F4A_7C15);
        self.acc = (m as u64) ^ ((m >> 64) as u64);
        self.words += 1;
    }
}

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w));
        }
    }

    fn write_usize(&mut self, _len: usize) {
        // Slices announce their length; every ID is 16 bytes, so it carries no information.
    }

    fn finish(&self) -> u64 {
        self.acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u8) -> Outgoing {
        Outgoing {
            id: MessageId([n; 16]),
            timestamp_ms: 0,
            kind: crate::crypto::MessageKind::TEXT,
            body: Bytes::from(vec![n]),
        }
    }

    #[test]
    fn ack_removes_and_requeue_restores_order() {
        let mut o = Outbox::default();
        for n in 0..5 {
            o.push(msg(n));
        }
        for c in 0..4 {
            assert_eq!(o.take_next(1, c).unwrap().id, MessageId([c as u8; 16]));
        }
        assert_eq!(
            o.ack_below(1, 2),
            vec![MessageId([0; 16]), MessageId([1; 16])]
        );
        assert_eq!(
            o.ack_below(2, 9),
            vec![],
            "another connection's ACK does not apply"
        );
        assert_eq!(o.queued_bytes(), 1);
        assert_eq!(o.requeue(1), 2);
        assert_eq!(o.queued_bytes(), 3);
        let order: Vec<u8> = std::iter::from_fn(|| o.queued.pop_front())
            .map(|m| m.body[0])
            .collect();
        assert_eq!(order, [2, 3, 4]);
    }

    #[test]
    fn inbox_drops_duplicates_and_stays_bounded() {
        let mut i = Inbox::new(3, [1, 2]);
        assert!(i.accept(MessageId([1; 16])));
        assert!(!i.accept(MessageId([1; 16])));
        for n in 2..10 {
            assert!(i.accept(MessageId([n; 16])));
        }
        // The last 3 are remembered; memory stays within two generations.
        for n in 7..10 {
            assert!(!i.accept(MessageId([n; 16])));
        }
        assert!(i.current.len() + i.previous.len() <= 6);
        assert!(i.accept(MessageId([1; 16])), "long forgotten");
    }
}

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
    /// The body.
    pub body: Bytes,
}

/// Messages to one peer: queued, and in flight on some connection.
#[derive(Debug, Default)]
pub struct Outbox {
    queued: VecDeque<Outgoing>,
    /// (connection id, session counter, message), in send order.
    inflight: VecDeque<(u64, u64, Outgoing)>,
}

impl Outbox {
    /// Queues a message at the back.
    pub fn push(&mut self, msg: Outgoing) {
        self.queued.push_back(msg);
    }

    /// Messages not yet sent.
    pub fn queued(&self) -> usize {
        self.queued.len()
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
        self.inflight.push_back((conn, counter, msg));
        self.inflight.back().map(|(_, _, m)| m)
    }

    /// Connection `conn` acknowledged every counter below `below`: returns those messages.
    pub fn ack_below(&mut self, conn: u64, below: u64) -> Vec<MessageId> {
        let mut acked = Vec::new();
        self.inflight.retain(|(c, counter, m)| {
            let done = *c == conn && *counter < below;
            if done {
                acked.push(m.id);
            }
            !done
        });
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
            self.queued.push_front(m);
        }
        n
    }
}

/// The IDs of messages recently received from one peer, to drop duplicates. Bounded: the
/// oldest IDs are forgotten first.
#[derive(Debug)]
pub struct Inbox {
    seen: HashSet<MessageId>,
    order: VecDeque<MessageId>,
    capacity: usize,
}

impl Inbox {
    /// An inbox remembering the last `capacity` IDs.
    pub fn new(capacity: usize) -> Inbox {
        Inbox {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `id`; returns false if it was seen before (a duplicate).
    pub fn accept(&mut self, id: MessageId) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u8) -> Outgoing {
        Outgoing {
            id: MessageId([n; 16]),
            timestamp_ms: 0,
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
        assert_eq!(o.requeue(1), 2);
        let order: Vec<u8> = std::iter::from_fn(|| o.queued.pop_front())
            .map(|m| m.body[0])
            .collect();
        assert_eq!(order, [2, 3, 4]);
    }

    #[test]
    fn inbox_drops_duplicates_and_stays_bounded() {
        let mut i = Inbox::new(3);
        assert!(i.accept(MessageId([1; 16])));
        assert!(!i.accept(MessageId([1; 16])));
        for n in 2..10 {
            assert!(i.accept(MessageId([n; 16])));
        }
        assert_eq!(i.seen.len(), 3);
    }
}

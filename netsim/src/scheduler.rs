//! The event queue: a min-heap on (time, insertion sequence). Ties keep insertion order,
//! so a run never depends on heap internals.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

struct Entry<E> {
    at: Duration,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Discrete-event scheduler over simulated time.
pub struct Scheduler<E> {
    now: Duration,
    next_seq: u64,
    heap: BinaryHeap<Reverse<Entry<E>>>,
}

impl<E> Default for Scheduler<E> {
    fn default() -> Self {
        Scheduler {
            now: Duration::ZERO,
            next_seq: 0,
            heap: BinaryHeap::new(),
        }
    }
}

impl<E> Scheduler<E> {
    /// An empty scheduler at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current simulated time: that of the last event popped.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Schedules `event` at `at`; a time in the past is clamped to now (events never run
    /// backwards).
    pub fn schedule_at(&mut self, at: Duration, event: E) {
        let at = at.max(self.now);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(Entry { at, seq, event }));
    }

    /// Schedules `event` after `delay` from now.
    pub fn schedule_in(&mut self, delay: Duration, event: E) {
        self.schedule_at(self.now + delay, event);
    }

    /// Removes the earliest event, advancing the clock to its time.
    pub fn pop(&mut self) -> Option<(Duration, E)> {
        let Reverse(e) = self.heap.pop()?;
        self.now = e.at;
        Some((e.at, e.event))
    }

    /// The time of the earliest pending event.
    pub fn peek_time(&self) -> Option<Duration> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Pending events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_order_and_ties_in_insertion_order() {
        let mut s = Scheduler::new();
        s.schedule_at(Duration::from_millis(30), "c");
        s.schedule_at(Duration::from_millis(10), "a1");
        s.schedule_at(Duration::from_millis(10), "a2");
        s.schedule_at(Duration::from_millis(20), "b");
        let order: Vec<_> = std::iter::from_fn(|| s.pop()).map(|(_, e)| e).collect();
        assert_eq!(order, ["a1", "a2", "b", "c"]);
        assert_eq!(s.now(), Duration::from_millis(30));
    }

    #[test]
    fn time_never_runs_backwards() {
        let mut s = Scheduler::new();
        s.schedule_at(Duration::from_secs(5), 1);
        s.pop();
        s.schedule_at(Duration::from_secs(1), 2);
        assert_eq!(s.pop(), Some((Duration::from_secs(5), 2)));
        s.schedule_in(Duration::from_secs(1), 3);
        assert_eq!(s.peek_time(), Some(Duration::from_secs(6)));
    }
}

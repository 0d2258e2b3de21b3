//! The offline mailbox's shared state and settings (spec/09-mailbox.md §4–§7): a leaf, so
//! `shared` can hold it; the task and the requests are in `mailbox`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::crypto::{Fingerprint, MessageId};

/// Mailbox settings (spec/09-mailbox.md §4, §7).
#[derive(Debug, Clone, Copy)]
pub struct MailboxConfig {
    /// Use the mailbox at all (default true; needs a DHT and a message store).
    pub enabled: bool,
    /// An outbox message waits this long with no live connection before it is put in the
    /// recipient's mailbox (default 10 s).
    pub after: Duration,
    /// Fetch our own mailbox this often (default 60 s), and at start.
    pub poll: Duration,
    /// Read the receipts of recipients with items waiting this often (default 5 s).
    pub receipt_poll: Duration,
    /// Lifetime of our items and receipts (default and most: 7 days).
    pub ttl_secs: u64,
    /// Most items put per round (default 256; the rest wait for the next round).
    pub max_puts_per_round: usize,
    /// Most outbox messages remembered as put in a mailbox (default 65536).
    pub max_tracked: usize,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        MailboxConfig {
            enabled: true,
            after: Duration::from_secs(10),
            poll: Duration::from_secs(60),
            receipt_poll: Duration::from_secs(5),
            ttl_secs: crate::crypto::record::MAILBOX_TTL_SECS,
            max_puts_per_round: 256,
            max_tracked: 65536,
        }
    }
}

/// The mailbox's counters (for `dna status`, tests and devnet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MailboxStats {
    /// Items we put (stored at one node at least).
    pub items_put: u64,
    /// Our messages a receipt reported delivered.
    pub delivered: u64,
    /// Items fetched from our mailbox (every copy from every node).
    pub fetched: u64,
    /// New messages stored from our mailbox.
    pub new: u64,
    /// Fetched messages dropped as already stored.
    pub duplicates: u64,
    /// Items that did not open (not for us, tampered).
    pub invalid: u64,
    /// Receipts published.
    pub receipts: u64,
    /// Completed fetches of our mailbox.
    pub fetches: u64,
}

/// One message's state, as `dna outbox` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The recipient.
    pub to: Fingerprint,
    /// The message ID.
    pub id: MessageId,
    /// `queued` (waiting), `sent` (in the recipient's mailbox, no receipt yet) or
    /// `delivered`.
    pub state: &'static str,
    /// `mailbox` for a message put in or delivered through the mailbox; `session` for one
    /// acknowledged over a session (direct or relayed); none while queued.
    pub path: Option<&'static str>,
    /// Send time (queued, sent) or delivery time (delivered), ms since the Unix epoch.
    pub at_ms: u64,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// Outbox messages in a mailbox, awaiting a receipt: recipient, put ms.
    pub(crate) put: HashMap<MessageId, (Fingerprint, u64)>,
    /// Our receipt's entries, oldest first.
    pub(crate) receipt: VecDeque<(Fingerprint, u64)>,
    /// Recipients whose last put failed (no KEM key, no node stored it): not tried again
    /// before this time. At most `MAX_BACKOFF` entries.
    pub(crate) backoff: HashMap<Fingerprint, Instant>,
    pub(crate) stats: MailboxStats,
}

/// What the node's tasks share about the mailbox.
#[derive(Debug, Default)]
pub(crate) struct MailboxShared {
    pub(crate) state: Mutex<State>,
    /// Wakes the task for a fetch now.
    pub(crate) kick: std::sync::Arc<Notify>,
    /// Fetches asked for by [`NodeHandle::mailbox_fetch`], and the highest request a
    /// finished fetch started after.
    pub(crate) requested: AtomicU64,
    pub(crate) served: AtomicU64,
    pub(crate) done: Notify,
}

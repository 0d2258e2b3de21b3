//! What the node's tasks share about the offline mailbox (spec/09-mailbox.md §5–§7): the
//! wake-ups of the mailbox task and the outbox listing's entry. A leaf, so `shared` can hold
//! it; the rounds' state and decisions are the node core's (`node::mailbox`), the task that
//! carries them out is `mailbox`.

use std::sync::atomic::AtomicU64;

use tokio::sync::Notify;

use crate::crypto::{Fingerprint, MessageId};
pub use crate::node::mailbox::{MailboxConfig, MailboxStats};

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
    /// For a message in a mailbox: how many other nodes hold its item (`sent` from
    /// [`MIN_HOLDERS`](crate::node::mailbox::MIN_HOLDERS) on).
    pub held_by: Option<usize>,
    /// For a waiting message: why the last put to its recipient failed, if it did.
    pub refused: Option<&'static str>,
}

/// What the node's tasks share about the mailbox.
#[derive(Debug, Default)]
pub(crate) struct MailboxShared {
    /// Wakes the task for a fetch now.
    pub(crate) kick: std::sync::Arc<Notify>,
    /// Fetches asked for by [`NodeHandle::mailbox_fetch`], and the highest request a
    /// finished fetch started after.
    pub(crate) requested: AtomicU64,
    pub(crate) served: AtomicU64,
    pub(crate) done: Notify,
}

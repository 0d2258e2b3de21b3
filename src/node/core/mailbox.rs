//! The mailbox rounds as inputs to the node core (spec/09-mailbox.md §5–§7): the core owns
//! the one [`Mailbox`] (no lock: the driver's mailbox task and the dialers speak to it
//! through [`Input::Mailbox`] and [`Query::Mailbox`] like everything else), and a receipt
//! that reports messages delivered drops them from the core's outbox in the same step.

use std::time::Instant;

use crate::crypto::receipt::Receipt;
use crate::crypto::{Fingerprint, MessageId};
use crate::session::Outgoing;

use super::super::mailbox::{Fetched, Mailbox, MailboxStats, PutView, Round};
#[cfg(doc)]
use super::io::{Input, Query};
use super::Core;

/// Mailbox work for [`Input::Mailbox`]; each replies [`MailboxReply`].
#[derive(Debug)]
pub enum MailboxInput {
    /// What round is due now: [`MailboxReply::Round`].
    NextRound,
    /// The application wants a fetch now.
    FetchNow,
    /// How publishing our KEM key went (`true`: stored at one node at least).
    KemPublished(bool),
    /// The outbox's waiting messages (`complete`: not cut at a cap), listed for a
    /// [`Round::Put`] at Unix ms `now_ms`: [`MailboxReply::Due`].
    Due {
        /// The wall clock (the messages' timestamps are on it).
        now_ms: u64,
        /// Recipient and message, as the store lists them.
        waiting: Vec<(Fingerprint, Outgoing)>,
        /// The listing is the whole outbox.
        complete: bool,
    },
    /// One item held by `held_by` other nodes (at least one) after a put.
    PutStored {
        /// Its recipient.
        peer: Fingerprint,
        /// Its message.
        id: MessageId,
        /// Other nodes that hold it.
        held_by: usize,
    },
    /// Putting to this recipient failed, `why`: it backs off, and the outbox says why.
    PutFailed {
        /// The recipient.
        peer: Fingerprint,
        /// Why, in a few words ("mailbox full", "no KEM key published", …).
        why: &'static str,
    },
    /// A recipient's newest receipt, verified as its own (or its contact drop's):
    /// [`MailboxReply::Delivered`].
    Receipt {
        /// Whose.
        peer: Fingerprint,
        /// What it lists.
        receipt: Receipt,
        /// Whose items it lists: `None` for ours (a receipt of `peer`'s mailbox), the
        /// drop's identity for a receipt of `peer`'s contact drop (spec/09-mailbox.md
        /// §1.1: every item there is published by the drop).
        drop: Option<Fingerprint>,
    },
    /// A fetch of our mailbox ended: [`MailboxReply::Receipt`].
    Fetched(Fetched),
    /// Our receipt was published.
    ReceiptPublished,
}

/// The core's answer to a [`MailboxInput`].
#[derive(Debug, PartialEq, Eq)]
pub enum MailboxReply {
    /// Nothing to say (also: the node runs no mailbox).
    Done,
    /// The round due now, if any, and when one is next due.
    Round(Option<Round>, Instant),
    /// The messages to put now, by recipient.
    Due(Vec<(Fingerprint, Vec<Outgoing>)>),
    /// The messages the receipt reported delivered (gone from the outbox too).
    Delivered(Vec<MessageId>),
    /// Our receipt's entries when the fetch added some (publish it), else `None`.
    Receipt(Option<Vec<(Fingerprint, u64)>>),
}

/// What [`Query::Mailbox`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxView {
    /// The counters.
    pub stats: MailboxStats,
    /// Our messages in a mailbox, awaiting a receipt, with their holders; and the
    /// recipients whose puts fail, with why.
    pub put: PutView,
}

impl<C: Clone, R: Clone + PartialEq> Core<C, R> {
    /// The mailbox, started at `now` on first use (with [`super::CoreConfig::mailbox`]).
    fn mailbox_at(&mut self, now: Instant) -> Option<&mut Mailbox> {
        if self.mailbox.is_none() {
            self.mailbox = Some(Mailbox::new(self.cfg.mailbox?, now));
        }
        self.mailbox.as_mut()
    }

    pub(super) fn handle_mailbox(&mut self, now: Instant, input: MailboxInput) -> MailboxReply {
        let me = self.me;
        let Some(m) = self.mailbox_at(now) else {
            return MailboxReply::Done;
        };
        match input {
            MailboxInput::NextRound => {
                let round = m.poll_round(now);
                return MailboxReply::Round(round, m.poll_timeout());
            }
            MailboxInput::FetchNow => m.fetch_now(now),
            MailboxInput::KemPublished(ok) => m.kem_published(now, ok),
            MailboxInput::Due {
                now_ms,
                waiting,
                complete,
            } => return MailboxReply::Due(m.due(now, now_ms, waiting, complete)),
            MailboxInput::PutStored { peer, id, held_by } => m.put_stored(now, peer, id, held_by),
            MailboxInput::PutFailed { peer, why } => m.put_failed(peer, why, now),
            MailboxInput::Receipt {
                peer,
                receipt,
                drop,
            } => {
                let ids = m.receipt(&drop.unwrap_or(me), peer, &receipt);
                if !ids.is_empty() {
                    self.forget(&peer, &ids);
                }
                return MailboxReply::Delivered(ids);
            }
            MailboxInput::Fetched(f) => {
                let changed = m.fetched(f);
                return MailboxReply::Receipt(changed.then(|| m.receipt_entries()));
            }
            MailboxInput::ReceiptPublished => m.receipt_published(),
        }
        MailboxReply::Done
    }

    pub(super) fn mailbox_view(&self) -> Option<MailboxView> {
        self.mailbox.as_ref().map(|m| MailboxView {
            stats: m.stats(),
            put: m.put_view(),
        })
    }

    pub(super) fn mailbox_waiting_for(&self, peer: &Fingerprint) -> bool {
        self.mailbox.as_ref().is_some_and(|m| m.waiting_for(peer))
    }
}

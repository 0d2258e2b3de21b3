//! What goes into the node core and what comes out (spec/06-node.md §1.1): the closed
//! enums a driver speaks to [`Core`] with, as `str0m`'s `Rtc` is driven.
//!
//! - [`Input`]: everything that happens to the node — the application's requests, a
//!   connection's life, a reach's end, a rendezvous request, a DHT message — fed with
//!   [`Core::handle`]. Most inputs have nothing to say back ([`Reply::Done`]); an input that
//!   asks for a decision the caller acts on at once (admit this CONNECT? is this connection
//!   the live one?) gets it as the [`Reply`].
//! - [`Output`]: what the driver is asked to do, taken with [`Core::poll_output`] until
//!   `None`, after every input and timeout.
//! - [`Query`]: read-only questions answered from the state as it is ([`Core::query`]);
//!   nothing changes, so a driver may answer them in any order.
//!
//! No closure crosses this boundary: a driver cannot run code on the core's state, only say
//! what happened and read what it asks.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::crypto::{Fingerprint, Message, MessageId, NodeId};
use crate::dht::VerifiedRecord;
use crate::dht::{Checked, Contact, DhtEvent, DhtMessage, QueryId, StoreChanges, StoreStats};
use crate::nat::signal::Signal;
use crate::session::{Outgoing, PresenceStatus};

use super::super::rendezvous::{ConnectRefusal, RegisterError, RendezvousStats};
use super::super::retry::{Attempt, RetryStats};
use super::{Core, Ended, PeerSnapshot, Refused};

/// Something that happened to the node, for [`Core::handle`].
#[derive(Debug)]
pub enum Input<C, R> {
    // ---- the application
    /// Messages to `peer` (already durable if the node has a store): queue them, hand them
    /// to its live connection or dial.
    Send {
        /// The recipient.
        peer: Fingerprint,
        /// The messages, oldest first.
        msgs: Vec<Outgoing>,
    },
    /// Messages to `peer` delivered another way (its mailbox receipt): out of the queue, so
    /// they are not sent directly too. Replies [`Reply::Count`] (how many were dropped).
    Delivered {
        /// The recipient.
        peer: Fingerprint,
        /// The messages.
        ids: Vec<MessageId>,
    },
    /// Keep a connection to `peer` at `addrs` (newest first) until [`Input::Disconnect`].
    Connect {
        /// Who.
        peer: Fingerprint,
        /// Where.
        addrs: Vec<SocketAddr>,
    },
    /// The application no longer wants `peer`: its connection closes, no redial.
    Disconnect(Fingerprint),
    /// Cut the live connection to `peer` and reconnect (what a network failure does).
    Reset(Fingerprint),
    /// Our presence, announced to every connected peer and to each new one.
    Presence(PresenceStatus),
    /// No more dials or reaches from now on (shutdown).
    Stop,

    // ---- connections
    /// A connection's peer authenticated (HELLO verified). Replies [`Reply::Session`]: the
    /// live connection now, or refused (banned; the loser of the tie-break, spec/03 §4),
    /// which the caller closes.
    Authenticated {
        /// The driver's connection number.
        conn_id: u64,
        /// The peer.
        peer: Fingerprint,
        /// Whether we dialed it.
        we_dialed: bool,
        /// Its address.
        remote: SocketAddr,
        /// The driver's handle, given back in outputs.
        handle: C,
    },
    /// Connection `conn_id` to `peer` acknowledged every message it was handed below counter
    /// `below`: the core's outbox, the one ledger of what is in flight, turns it into
    /// message IDs ([`Output::Delivered`]).
    Acked {
        /// The peer.
        peer: Fingerprint,
        /// The connection.
        conn_id: u64,
        /// Counters below this are acknowledged.
        below: u64,
        /// The driver's code for the path the connection runs on, handed back with the
        /// IDs (the store records it: spec/06-node.md §3.5).
        path: u8,
    },
    /// Messages received from `peer`, over a session or fetched from its mailbox. Replies
    /// [`Reply::New`], the ones not seen before — the node's one de-duplication
    /// (spec/03-session.md §5, spec/06-node.md §1.1): the driver stores those (with a
    /// store) and delivers them.
    Received {
        /// The sender.
        peer: Fingerprint,
        /// The messages.
        msgs: Vec<Message>,
    },
    /// At start, the IDs the store holds from `peer`, oldest first: its de-duplication
    /// window begins with them, so a resend after our restart is not delivered twice.
    Seen {
        /// The sender.
        peer: Fingerprint,
        /// The IDs.
        ids: Vec<MessageId>,
    },
    /// Messages [`Input::Received`] found new could not be stored: they are forgotten, so
    /// the sender's resend (it got no ACK) is taken as new.
    NotStored {
        /// The sender.
        peer: Fingerprint,
        /// Their IDs.
        ids: Vec<MessageId>,
    },
    /// A connection ended.
    Ended(Ended),
    /// A dial round ([`Output::Dial`]) reached no address.
    DialFailed(Fingerprint),
    /// A dial round has a QUIC connection (the connection reports the rest).
    DialConnected(Fingerprint),
    /// Takes `amount` points from the source of `addr` (a DHT handshake failed).
    PenalizeSource {
        /// The source.
        addr: SocketAddr,
        /// Points.
        amount: i32,
    },

    // ---- reaching peers (spec/05-nat.md §5, spec/06-node.md §3.5)
    /// Start the re-reach schedule ([`super::CoreConfig::retry`]): from now on the core asks
    /// for [`Output::Reach`] of peers with messages waiting.
    StartRetry,
    /// The receipts [`Output::ReadReceipt`] asked for were read (or could not be): the
    /// session with `peer` is handed what is still queued.
    ReceiptRead(Fingerprint),
    /// A reach asked with [`Output::Reach`] ended.
    ReachDone {
        /// Who.
        peer: Fingerprint,
        /// How.
        how: Attempt,
    },
    /// Something new about `peer` (the user's consent to a relay): reach it again now if
    /// messages wait for it.
    Heard(Fingerprint),
    /// Port prediction wants `want` probes toward `ip` (spec/05 §5.5). Replies
    /// [`Reply::Count`]: the probes granted and booked (fewer, or none, once the budget
    /// for the window is spent).
    GrantProbes {
        /// The peer's address.
        ip: IpAddr,
        /// Probes wanted.
        want: u32,
    },
    /// Probes granted toward `ip` but not sent.
    RefundProbes {
        /// The peer's address.
        ip: IpAddr,
        /// How many.
        n: u32,
    },

    // ---- the rendezvous role (spec/05-nat.md §4.3, spec/06-node.md §4.4)
    /// RDV_REGISTER from `peer` (source `ip`) over `conn`. Replies [`Reply::Registered`].
    Register {
        /// The registering node.
        peer: NodeId,
        /// Its source address.
        ip: IpAddr,
        /// The connection it registered over.
        conn: R,
    },
    /// The connection `conn` ended or was found closed: `peer`'s registration goes if it
    /// was made over it.
    Unregister {
        /// The registered node.
        peer: NodeId,
        /// The connection that ended.
        conn: R,
    },
    /// A CONNECT arrived on a connection from `ip`: the source's token bucket, before its
    /// signature is checked. `answering`: the offer is for us, else it is to forward.
    /// Replies [`Reply::Admission`].
    ConnectFrom {
        /// For us (`true`) or to forward.
        answering: bool,
        /// The delivering connection's source.
        ip: IpAddr,
    },
    /// The CONNECT's offer, its signature verified: freshness, the replay cache, the
    /// caller's bucket. Replies [`Reply::Admission`].
    ConnectOffer {
        /// For us (`true`) or to forward.
        answering: bool,
        /// The verified offer.
        offer: Box<Signal>,
        /// Wall-clock time, milliseconds since the Unix epoch (the offer's freshness).
        unix_ms: u64,
    },

    // ---- the DHT (spec/04-dht.md)
    /// A DHT message from `from`, checked (decoded, records verified) by the driver: a
    /// request it answers at once ([`Output::DhtSend`]), or an answer to one of ours.
    Dht {
        /// The sender.
        from: Contact,
        /// The message.
        msg: Checked,
    },
    /// Starts a DHT query. Replies [`Reply::Query`]; its result comes as
    /// [`Output::DhtEvent`].
    DhtQuery(DhtQuery),
    /// `peer` shut down: out of the routing table at once (spec/04-dht.md §3).
    DhtPeerLeft(NodeId),
    /// Stop republishing our record under this key (a name claim that lost its race).
    DhtUnpublish(NodeId),
    /// Serve in the DHT or not (decision 9). Replies [`Reply::Serves`]: whether it serves.
    DhtServe(bool),
    /// Save the DHT: an [`Output::DhtSave`] follows with the table and the store's changes
    /// (`everything`: every record, after a failed write).
    DhtSave {
        /// Every record, not only the changes.
        everything: bool,
    },
    /// The sequence number for the next record this node signs. Replies [`Reply::Seq`].
    NextRecordSeq {
        /// Wall-clock time, milliseconds since the Unix epoch (a floor, so a restarted
        /// node's records still replace its older ones).
        unix_ms: u64,
    },

    // ---- the offline mailbox
    /// Mailbox work: what round is due, what to put, what a receipt or a fetch found
    /// (spec/09-mailbox.md §5–§7); replies [`Reply::Mailbox`].
    Mailbox(MailboxInput),
}

/// A DHT query to start ([`Input::DhtQuery`]).
#[derive(Debug)]
pub enum DhtQuery {
    /// The k closest nodes to an ID.
    FindNode(NodeId),
    /// The records under a key.
    FindValue(NodeId),
    /// Store a record at the k closest nodes and republish it.
    Put(VerifiedRecord),
    /// Store a record at the k closest nodes once (a mailbox item).
    PutOnce(VerifiedRecord),
    /// Ask one node for a page of a mailbox (spec/09-mailbox.md §6).
    Page {
        /// The node.
        to: Contact,
        /// The mailbox key.
        key: NodeId,
        /// The last item already fetched.
        after: Option<(Fingerprint, u64)>,
    },
    /// Join the network through these seeds.
    Bootstrap(Vec<Contact>),
}

pub use super::mailbox::{MailboxInput, MailboxReply, MailboxView};

/// The core's answer to an [`Input`].
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Nothing to say.
    Done,
    /// A number: messages dropped, probes granted.
    Count(u32),
    /// [`Input::Authenticated`]: the live connection now, or why not.
    Session(Result<(), Refused>),
    /// [`Input::Received`]: the messages not seen before.
    New(Vec<Message>),
    /// [`Input::Register`]: the granted lifetime, and whether the connection is new to the
    /// registry (its end should then be reported), or why not.
    Registered(Result<(Duration, bool), RegisterError>),
    /// [`Input::ConnectFrom`], [`Input::ConnectOffer`]: admitted, or why not.
    Admission(Result<(), ConnectRefusal>),
    /// [`Input::DhtQuery`]: the query started (`None`: this node runs no DHT).
    Query(Option<QueryId>),
    /// [`Input::DhtServe`]: whether the DHT serves now.
    Serves(bool),
    /// [`Input::NextRecordSeq`].
    Seq(u64),
    /// [`Input::Mailbox`].
    Mailbox(MailboxReply),
}

/// What the driver is asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<C> {
    /// Hand these messages to the connection behind `handle`; it sends them in this order.
    Batch {
        /// The connection.
        handle: C,
        /// The messages, oldest first.
        msgs: Vec<Outgoing>,
    },
    /// Tell the connection our presence (it announces it once the session is up).
    Presence {
        /// The connection.
        handle: C,
        /// Our status.
        status: PresenceStatus,
    },
    /// Close the connection with this code.
    Close {
        /// The connection.
        handle: C,
        /// Close code (spec/03-session.md §7).
        code: u32,
        /// Why, in words.
        reason: &'static str,
    },
    /// Try these addresses of `peer`, one after another, until a connection is up; report
    /// [`Input::DialFailed`] if none is.
    Dial {
        /// Who.
        peer: Fingerprint,
        /// Where, the newest first; banned addresses left out.
        addrs: Vec<SocketAddr>,
    },
    /// Reach `peer` (DHT lookup, CONNECT, punching: spec/05 §5) — it has messages waiting
    /// and no connection — and report how it went with [`Input::ReachDone`].
    Reach {
        /// Who.
        peer: Fingerprint,
    },
    /// A session with `peer` came up while items of ours wait in its mailbox: read its
    /// receipts (spec/09-mailbox.md §5) and report [`Input::ReceiptRead`]; nothing is
    /// handed to the session before, so what it fetched goes no second time over the
    /// session and its outbox entries say `mailbox`.
    ReadReceipt {
        /// Who.
        peer: Fingerprint,
    },
    /// These messages to `peer` were acknowledged on the path `path` (the code the driver
    /// gave with [`Input::Acked`]): record them delivered, tell the application.
    Delivered {
        /// The peer.
        peer: Fingerprint,
        /// The messages, in the order they were sent.
        ids: Vec<MessageId>,
        /// The driver's path code.
        path: u8,
    },
    /// Send a DHT message: a request (its answer comes back as [`Input::Dht`]) or the
    /// answer to a request fed in with [`Input::Dht`].
    DhtSend {
        /// To whom.
        to: Contact,
        /// The message.
        msg: DhtMessage,
    },
    /// A DHT query's result.
    DhtEvent(DhtEvent),
    /// Write the DHT's table and the store's changes ([`Input::DhtSave`]).
    DhtSave {
        /// The routing table's contacts.
        contacts: Vec<Contact>,
        /// The records that changed.
        changes: StoreChanges,
    },
}

/// A read-only question for [`Core::query`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// What the core knows about a peer: [`Answer::Peer`].
    Peer(Fingerprint),
    /// Peers with a live connection, their addresses and the driver's handle:
    /// [`Answer::Links`].
    Links,
    /// The driver's number of a peer's live connection: [`Answer::Conn`].
    LiveConnection(Fingerprint),
    /// Peers with messages waiting and no live connection: [`Answer::Peers`].
    Pending,
    /// Peers whose last reach found that only a relay could carry their messages, and the
    /// user allowed none (`relay = "ask"`): [`Answer::Peers`].
    RelayNeeded,
    /// Messages waiting (queued or unacknowledged) over all peers: [`Answer::Count`].
    OutboxLen,
    /// Whether a peer that is connected or being dialed still has messages waiting:
    /// [`Answer::Flag`].
    Draining,
    /// The peer table's entries and evictions so far: [`Answer::PeerTable`].
    PeerTable,
    /// Whether a connection from this address is refused before its handshake:
    /// [`Answer::Flag`].
    AddrBanned(SocketAddr),
    /// The score of this address's source: [`Answer::Score`].
    AddrScore(SocketAddr),
    /// Sources with a score: [`Answer::Count`].
    ScoredSources,
    /// The connection a node registered over, if it is registered: [`Answer::Registration`].
    Registration(NodeId),
    /// The rendezvous role's counters: [`Answer::Rendezvous`].
    Rendezvous,
    /// The DHT's figures: [`Answer::Dht`].
    Dht,
    /// The re-reach schedule's counters: [`Answer::Retry`].
    Retry,
    /// The mailbox's counters and ledger: [`Answer::Mailbox`].
    Mailbox,
    /// Whether items of ours wait in this peer's mailbox: [`Answer::Flag`].
    MailboxWaitingFor(Fingerprint),
}

/// The DHT's figures ([`Query::Dht`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhtView {
    /// Whether it serves (answers requests, holds records).
    pub serves: bool,
    /// Contacts in the routing table.
    pub table: usize,
    /// Requests sent and not answered yet.
    pub pending_requests: usize,
    /// The record store.
    pub store: StoreStats,
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<C, R> {
    /// [`Query::Peer`].
    Peer(Option<PeerSnapshot>),
    /// [`Query::Links`].
    Links(Vec<(Fingerprint, Vec<SocketAddr>, C)>),
    /// [`Query::LiveConnection`].
    Conn(Option<u64>),
    /// [`Query::Pending`], [`Query::RelayNeeded`].
    Peers(Vec<Fingerprint>),
    /// [`Query::OutboxLen`], [`Query::ScoredSources`].
    Count(usize),
    /// [`Query::Draining`], [`Query::AddrBanned`].
    Flag(bool),
    /// [`Query::PeerTable`]: entries, evictions so far.
    PeerTable(usize, u64),
    /// [`Query::AddrScore`].
    Score(i32),
    /// [`Query::Registration`].
    Registration(Option<R>),
    /// [`Query::Rendezvous`].
    Rendezvous(RendezvousStats),
    /// [`Query::Dht`] (`None`: no DHT).
    Dht(Option<DhtView>),
    /// [`Query::Retry`] (`None`: no re-reach schedule).
    Retry(Option<RetryStats>),
    /// [`Query::Mailbox`] (`None`: no mailbox, or not started yet).
    Mailbox(Option<MailboxView>),
}

impl<C: Clone, R: Clone + PartialEq> Core<C, R> {
    /// Feeds one input; see [`Input`] for what each replies. Outputs it causes wait in
    /// [`Core::poll_output`].
    pub fn handle(&mut self, now: Instant, input: Input<C, R>) -> Reply {
        match input {
            Input::Send { peer, msgs } => self.send(now, peer, msgs),
            Input::Delivered { peer, ids } => {
                let n = self.forget(&peer, &ids);
                return Reply::Count(u32::try_from(n).unwrap_or(u32::MAX));
            }
            Input::Connect { peer, addrs } => self.connect(now, peer, addrs),
            Input::Disconnect(peer) => self.disconnect(peer),
            Input::Reset(peer) => self.reset(peer),
            Input::Presence(status) => self.set_presence(status),
            Input::Stop => self.stop(),
            Input::Authenticated {
                conn_id,
                peer,
                we_dialed,
                remote,
                handle,
            } => {
                let r = self.authenticated(conn_id, peer, we_dialed, remote, handle);
                return Reply::Session(r);
            }
            Input::Acked {
                peer,
                conn_id,
                below,
                path,
            } => self.acked(peer, conn_id, below, path),
            Input::Received { peer, msgs } => return Reply::New(self.received(peer, msgs)),
            Input::Seen { peer, ids } => {
                let inbox = &mut self.peers.entry(peer).inbox;
                for id in ids {
                    inbox.accept(id);
                }
            }
            Input::NotStored { peer, ids } => {
                let inbox = &mut self.peers.entry(peer).inbox;
                for id in &ids {
                    inbox.forget(id);
                }
            }
            Input::Ended(e) => self.connection_ended(now, e),
            Input::DialFailed(peer) => self.dial_failed(now, peer),
            Input::DialConnected(peer) => self.dial_connected(peer),
            Input::PenalizeSource { addr, amount } => self.scores.penalize_source(addr, amount),
            Input::StartRetry => self.start_retry(now),
            Input::ReachDone { peer, how } => self.reach_finished(now, peer, how),
            Input::ReceiptRead(peer) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.receipt_first = false;
                }
                self.top_up(peer);
            }
            Input::Heard(peer) => self.heard(now, peer),
            Input::GrantProbes { ip, want } => {
                return Reply::Count(self.probe_budget.grant(ip, want, now));
            }
            Input::RefundProbes { ip, n } => self.probe_budget.refund(ip, n),
            Input::Register { peer, ip, conn } => {
                let new = self.rdv.registry.lookup(&peer, now) != Some(&conn);
                let r = self.rdv.registry.register(peer, ip, conn, now);
                return Reply::Registered(r.map(|lifetime| (lifetime, new)));
            }
            Input::Unregister { peer, conn } => {
                self.rdv.registry.remove_if(&peer, |c| *c == conn);
            }
            Input::ConnectFrom { answering, ip } => {
                return Reply::Admission(self.rdv.limits(answering).check_source(ip, now));
            }
            Input::ConnectOffer {
                answering,
                offer,
                unix_ms,
            } => {
                let r = self.rdv.limits(answering).admit(&offer, now, unix_ms);
                return Reply::Admission(r);
            }
            Input::Dht { from, msg } => self.handle_dht(now, from, msg),
            Input::DhtQuery(q) => return Reply::Query(self.start_query(now, q)),
            Input::DhtPeerLeft(id) => {
                if let Some(d) = self.dht.as_mut() {
                    d.peer_left(&id, now);
                }
            }
            Input::DhtUnpublish(key) => {
                if let Some(d) = self.dht.as_mut() {
                    d.unpublish(&key);
                }
            }
            Input::DhtServe(serve) => {
                let Some(d) = self.dht.as_mut() else {
                    return Reply::Serves(false);
                };
                if d.is_server() != serve {
                    tracing::info!(serve, "DHT role changed");
                }
                d.set_server(serve);
                return Reply::Serves(serve);
            }
            Input::DhtSave { everything } => {
                if let Some(d) = self.dht.as_mut() {
                    if everything {
                        d.mark_store_changed();
                    }
                    self.out.push_back(Output::DhtSave {
                        contacts: d.table().contacts().collect(),
                        changes: d.take_store_changes(),
                    });
                }
            }
            Input::NextRecordSeq { unix_ms } => return Reply::Seq(self.next_record_seq(unix_ms)),
            Input::Mailbox(m) => return Reply::Mailbox(self.handle_mailbox(now, m)),
        }
        Reply::Done
    }

    /// Answers a read-only question from the state as it is at `now`.
    pub fn query(&self, now: Instant, q: Query) -> Answer<C, R> {
        match q {
            Query::Peer(peer) => Answer::Peer(self.peer(&peer)),
            Query::Links => Answer::Links(self.live_links()),
            Query::LiveConnection(peer) => Answer::Conn(self.live_connection(&peer)),
            Query::Pending => Answer::Peers(self.peers.pending()),
            Query::RelayNeeded => Answer::Peers(self.relay_needed()),
            Query::OutboxLen => Answer::Count(self.outbox_len()),
            Query::Draining => Answer::Flag(self.draining()),
            Query::PeerTable => Answer::PeerTable(self.peers.len(), self.peers.evicted()),
            Query::AddrBanned(addr) => Answer::Flag(self.scores.addr_banned(&addr)),
            Query::AddrScore(addr) => Answer::Score(self.scores.addr(&addr)),
            Query::ScoredSources => Answer::Count(self.scores.sources()),
            Query::Registration(id) => {
                Answer::Registration(self.rdv.registry.lookup(&id, now).cloned())
            }
            Query::Rendezvous => Answer::Rendezvous(self.rdv.stats()),
            Query::Dht => Answer::Dht(self.dht.as_ref().map(|d| DhtView {
                serves: d.is_server(),
                table: d.table().len(),
                pending_requests: d.pending_requests(),
                store: d.store().stats(),
            })),
            Query::Retry => Answer::Retry(self.retry.as_ref().map(|(r, _)| r.stats())),
            Query::Mailbox => Answer::Mailbox(self.mailbox_view()),
            Query::MailboxWaitingFor(peer) => Answer::Flag(self.mailbox_waiting_for(&peer)),
        }
    }
}

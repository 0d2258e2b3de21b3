//! The node core (spec/06-node.md §1): one owner of the node's state — the peer table with
//! outboxes and de-duplication windows, scores and bans, our presence, the rendezvous role,
//! the DHT state machine — and of the decisions about them: which connection to a peer survives,
//! which messages a connection carries next, when to dial whom, whom to refuse.
//!
//! Sans-IO, driven as `str0m`'s `Rtc` is (`core/io.rs`): [`Core::handle`] takes an [`Input`],
//! [`Core::poll_output`] and [`Core::poll_timeout`] / [`Core::handle_timeout`] say what to
//! do and when, [`Core::query`] answers read-only questions. Nothing else is public: the
//! methods below are what `handle` dispatches to. The daemon runs it in one task
//! (`daemon::core`); `netsim` and the tests drive it the same way.
//!
//! **Messages leave by owned batches.** A connection is handed messages (clones of the
//! outbox's, the bodies shared) and seals and sends them itself, off the core: the core
//! only moves messages from "queued" to "in flight on connection N". At most
//! [`CoreConfig::window`] messages are handed to a connection and not yet acknowledged. The
//! connection reports cumulative ACKs by session counter; counters are the order messages
//! were handed in, so the core needs no message IDs from it. When a connection ends, what
//! it was handed and did not get acknowledged goes back to the front of the outbox.
//!
//! `C` is the driver's handle on a connection (its command channel in the daemon, a number
//! in tests); `R` is the handle the rendezvous registry keeps on a registered node's
//! connection.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::crypto::{Fingerprint, Message};
use crate::dht::Dht;
use crate::session::{code, Outgoing, PresenceStatus};

use super::peers::{PeerTable, Registration};
use super::rendezvous::{Rendezvous, RendezvousLimits};
use super::retry::{Attempt, Retry, RetryConfig};
use super::scores::Scores;

pub mod connect;
mod io;
mod mailbox;
pub use io::{
    Answer, DhtQuery, DhtView, Input, MailboxInput, MailboxReply, MailboxView, Output, Query, Reply,
};

/// How often the re-reach schedule is told which peers wait.
const RETRY_SYNC: Duration = Duration::from_secs(1);

/// The core's limits and timers.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Peer entries that may be dropped when idle (least recently used first).
    pub max_peers: usize,
    /// The in-memory de-duplication window per peer (used without a message store).
    pub inbox_capacity: usize,
    /// Key of the de-duplication windows' hash.
    pub hash_key: [u64; 2],
    /// Traffic sources (and identities) with a score.
    pub max_scored_sources: usize,
    /// Messages handed to one connection and not yet acknowledged, at most.
    pub window: usize,
    /// First delay between dial rounds after a failure; doubles up to `reconnect_max`.
    pub reconnect_initial: Duration,
    /// Longest delay between dial rounds.
    pub reconnect_max: Duration,
    /// Whether this node accepts rendezvous registrations.
    pub rendezvous_server: bool,
    /// The rendezvous role's limits.
    pub rendezvous: RendezvousLimits,
    /// Re-reaching peers with messages waiting ([`Output::Reach`]); `None`: the
    /// application reaches peers itself.
    pub retry: Option<RetryConfig>,
    /// The offline mailbox's rounds (`None`: this node runs none: no DHT, no store, or
    /// turned off).
    pub mailbox: Option<super::mailbox::MailboxConfig>,
}

/// Why a connection was refused when its peer authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The peer is banned.
    Banned,
    /// Another connection to the peer won the tie-break (spec/03-session.md §4).
    Duplicate,
}

/// How a connection ended, as the driver reports it to [`Input::Ended`].
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    /// The driver's connection number.
    pub conn_id: u64,
    /// The authenticated peer, if HELLO verified.
    pub peer: Option<Fingerprint>,
    /// The peer we dialed (`None`: the peer dialed us).
    pub dialed: Option<Fingerprint>,
    /// Whether it became the peer's live connection.
    pub registered: bool,
    /// Whether the session was established.
    pub established: bool,
    /// The remote address.
    pub remote: SocketAddr,
    /// Points the peer and its source lose for how it ended.
    pub penalty: i32,
    /// It failed before the session was up (not a duplicate or a ban): redial with backoff.
    pub failed: bool,
    /// The address answered with another identity than the one dialed.
    pub wrong_identity: bool,
}

/// A snapshot of one peer's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSnapshot {
    /// Whether a connection is live.
    pub connected: bool,
    /// Addresses known for it, the newest first.
    pub addrs: Vec<SocketAddr>,
    /// Messages queued, not yet handed to a connection.
    pub queued: usize,
    /// Messages handed to a connection, not yet acknowledged.
    pub inflight: usize,
    /// Its score (0 is clean; at −100 it is banned).
    pub score: i32,
    /// The delay after its last failed dial round (zero: none failed).
    pub redial: Duration,
}

/// The driver's handle on a peer's live connection, with what it was handed.
#[derive(Debug)]
struct Link<C> {
    handle: C,
    /// Messages handed to it (the next one's counter).
    handed: u64,
    /// Messages it acknowledged (all counters below this).
    acked: u64,
}

/// The node core. See the module documentation.
#[derive(Debug)]
pub struct Core<C, R> {
    me: Fingerprint,
    cfg: CoreConfig,
    peers: PeerTable<Link<C>>,
    scores: Scores,
    rdv: Rendezvous<R>,
    presence: Option<PresenceStatus>,
    /// Dial rounds scheduled: when, and the delay waited for it.
    dial_due: HashMap<Fingerprint, (Instant, Duration)>,
    /// Dial rounds running, with the delay waited for each (the next failure doubles it).
    rounds: HashMap<Fingerprint, Duration>,
    /// No more dials.
    stopped: bool,
    out: VecDeque<Output<C>>,
    /// The DHT state machine, if this node runs one (its own `poll_transmit` and
    /// `poll_event` give its output; its timers run in [`Core::handle_timeout`]).
    dht: Option<Dht>,
    /// The sequence number of the last record this node signed.
    last_seq: u64,
    /// Port prediction's per-peer probe budget (spec/05-nat.md §5.5).
    probe_budget: crate::nat::predict::Ledger,
    /// The re-reach schedule and when it is next told which peers wait.
    retry: Option<(Retry, Instant)>,
    /// The offline mailbox's rounds, started on first use.
    mailbox: Option<super::mailbox::Mailbox>,
}

impl<C: Clone, R: Clone + PartialEq> Core<C, R> {
    /// A core for the node with fingerprint `me`.
    pub fn new(me: Fingerprint, cfg: CoreConfig) -> Core<C, R> {
        Core {
            me,
            peers: PeerTable::new(cfg.max_peers, cfg.inbox_capacity, cfg.hash_key),
            scores: Scores::new(cfg.max_scored_sources),
            rdv: Rendezvous::new(cfg.rendezvous_server, &cfg.rendezvous),
            presence: None,
            dial_due: HashMap::new(),
            rounds: HashMap::new(),
            stopped: false,
            out: VecDeque::new(),
            dht: None,
            last_seq: 0,
            probe_budget: crate::nat::predict::Ledger::default(),
            retry: None,
            mailbox: None,
            cfg,
        }
    }

    /// Starts the re-reach schedule now (with [`CoreConfig::retry`] set): from here on the
    /// core asks for [`Output::Reach`] of peers with messages waiting.
    fn start_retry(&mut self, now: Instant) {
        if let (Some(cfg), None) = (self.cfg.retry, &self.retry) {
            self.retry = Some((Retry::new(cfg), now));
        }
    }

    /// How the reach asked with [`Output::Reach`] ended.
    fn reach_finished(&mut self, now: Instant, peer: Fingerprint, how: Attempt) {
        if let Some((r, _)) = self.retry.as_mut() {
            r.finished(now, peer, how);
        }
        self.start_reaches(now);
    }

    /// Something new about `peer` (its presence, the user's consent to a relay): if
    /// messages wait for it, it is reached again now.
    fn heard(&mut self, now: Instant, peer: Fingerprint) {
        if let Some((r, _)) = self.retry.as_mut() {
            r.heard(now, peer);
        }
        self.start_reaches(now);
    }

    /// Peers with messages waiting whose last reach found that only a relay could carry
    /// them, and the user allowed none (`relay = "ask"`).
    fn relay_needed(&self) -> Vec<Fingerprint> {
        self.retry
            .as_ref()
            .map(|(r, _)| r.relay_needed().collect())
            .unwrap_or_default()
    }

    /// A DHT message from `from`, checked (decoded, records verified) by the driver.
    fn handle_dht(&mut self, now: Instant, from: crate::dht::Contact, msg: crate::dht::Checked) {
        let Some(d) = self.dht.as_mut() else {
            return;
        };
        d.handle_checked(now, from, msg);
        while let Some(peer) = d.poll_presence() {
            if let Some((r, _)) = self.retry.as_mut() {
                r.heard(now, peer);
            }
        }
        self.start_reaches(now);
    }

    /// Asks for the reaches the schedule allows now.
    fn start_reaches(&mut self, now: Instant) {
        let Some((r, _)) = self.retry.as_mut().filter(|_| !self.stopped) else {
            return;
        };
        while let Some(peer) = r.poll_reach(now) {
            self.out.push_back(Output::Reach { peer });
        }
    }

    /// The core with a DHT state machine to own.
    pub fn with_dht(mut self, dht: Dht) -> Core<C, R> {
        self.dht = Some(dht);
        self
    }

    /// Starts a DHT query (`None`: no DHT).
    fn start_query(&mut self, now: Instant, q: DhtQuery) -> Option<crate::dht::QueryId> {
        let d = self.dht.as_mut()?;
        Some(match q {
            DhtQuery::FindNode(id) => d.find_node(id, now),
            DhtQuery::FindValue(key) => d.find_value(key, now),
            DhtQuery::Put(r) => d.put_verified(r, now),
            DhtQuery::PutOnce(r) => d.put_once(r, now),
            DhtQuery::Page { to, key, after } => d.fetch_page(to, key, after, now),
            DhtQuery::Bootstrap(seeds) => d.bootstrap(seeds, now),
        })
    }

    /// The sequence number for the next record this node signs: above the last one, and at
    /// least `unix_ms` so a restarted node's records still replace its older ones.
    fn next_record_seq(&mut self, unix_ms: u64) -> u64 {
        self.last_seq = (self.last_seq + 1).max(unix_ms);
        self.last_seq
    }

    // ---- the application's requests

    /// Queues messages to `peer` (already durable if the node has a store) and hands them
    /// to its live connection or schedules a dial.
    fn send(&mut self, now: Instant, peer: Fingerprint, msgs: Vec<Outgoing>) {
        let p = self.peers.entry(peer);
        for m in msgs {
            p.outbox.push(m);
        }
        self.top_up(peer);
        self.ensure_dialing(now, peer, Duration::ZERO);
        // No connection and no address to dial: only a reach can help, so the re-reach
        // schedule hears of the peer now rather than at its next once-a-second look.
        let unreachable = self
            .peers
            .get_mut(&peer)
            .is_some_and(|p| p.active.is_none() && p.addrs.is_empty());
        if let Some((_, sync)) = self.retry.as_mut().filter(|_| unreachable) {
            *sync = (*sync).min(now);
        }
    }

    /// Messages to `peer` delivered another way (its mailbox receipt): dropped from the
    /// queue, so they are not sent directly too. Returns how many were dropped.
    fn forget(&mut self, peer: &Fingerprint, ids: &[crate::crypto::MessageId]) -> usize {
        self.peers
            .get_mut(peer)
            .map_or(0, |p| p.outbox.forget_queued(ids))
    }

    /// The application wants a connection to `peer` at `addrs`, kept up until
    /// [`Core::disconnect`].
    fn connect(&mut self, now: Instant, peer: Fingerprint, addrs: Vec<SocketAddr>) {
        self.peers.add_addrs(peer, addrs);
        self.peers.entry(peer).want = true;
        self.ensure_dialing(now, peer, Duration::ZERO);
    }

    /// The application no longer wants `peer`: its connection closes, no redial.
    fn disconnect(&mut self, peer: Fingerprint) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.want = false;
            if let Some(a) = &p.active {
                self.out.push_back(Output::Close {
                    handle: a.handle.handle.clone(),
                    code: code::CLOSED_BY_APPLICATION,
                    reason: "disconnect",
                });
            }
        }
    }

    /// Cuts the live connection to `peer` and lets the node reconnect (a network failure).
    fn reset(&mut self, peer: Fingerprint) {
        if let Some(a) = self.peers.get(&peer).and_then(|p| p.active.as_ref()) {
            self.out.push_back(Output::Close {
                handle: a.handle.handle.clone(),
                code: code::CLOSED_BY_APPLICATION,
                reason: "reset",
            });
        }
    }

    /// Our presence, announced to every connected peer and to each new one.
    fn set_presence(&mut self, status: PresenceStatus) {
        self.presence = Some(status);
        for (_, p) in self.peers.iter() {
            if let Some(a) = &p.active {
                self.out.push_back(Output::Presence {
                    handle: a.handle.handle.clone(),
                    status,
                });
            }
        }
    }

    /// No more dials from now on (shutdown).
    fn stop(&mut self) {
        self.stopped = true;
        self.dial_due.clear();
        self.rounds.clear();
    }

    // ---- connections

    /// A connection's peer authenticated: make it the live one (handing it messages and
    /// our presence), or refuse it — banned peers, and the loser of the tie-break
    /// (spec/03-session.md §4), whose handle the caller closes.
    fn authenticated(
        &mut self,
        conn_id: u64,
        peer: Fingerprint,
        we_dialed: bool,
        remote: SocketAddr,
        handle: C,
    ) -> Result<(), Refused> {
        if self.scores.peer_banned(&peer) {
            return Err(Refused::Banned);
        }
        let link = Link {
            handle: handle.clone(),
            handed: 0,
            acked: 0,
        };
        match self
            .peers
            .register(self.me, peer, conn_id, we_dialed, remote, link)
        {
            Registration::Duplicate => return Err(Refused::Duplicate),
            Registration::Live { replaced } => {
                if let Some(old) = replaced {
                    self.out.push_back(Output::Close {
                        handle: old.handle,
                        code: code::DUPLICATE_CONNECTION,
                        reason: "duplicate connection",
                    });
                }
            }
        }
        if let Some(status) = self.presence {
            self.out.push_back(Output::Presence { handle, status });
        }
        if self.mailbox_waiting_for(&peer) {
            self.peers.entry(peer).receipt_first = true;
            self.out.push_back(Output::ReadReceipt { peer });
            return Ok(());
        }
        self.top_up(peer);
        Ok(())
    }

    /// Connection `conn_id` to `peer` acknowledged every message it was handed below
    /// counter `below`; it may be handed more.
    fn acked(&mut self, peer: Fingerprint, conn_id: u64, below: u64, path: u8) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let ids = p.outbox.ack_below(conn_id, below);
        if !ids.is_empty() {
            self.out.push_back(Output::Delivered { peer, ids, path });
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(a) = p.active.as_mut().filter(|a| a.conn_id == conn_id) {
            a.handle.acked = a.handle.acked.max(below);
        }
        self.top_up(peer);
    }

    /// Which of the messages just received from `peer` are new (its de-duplication
    /// window, spec/03-session.md §5; with a store it began with the stored IDs).
    fn received(&mut self, peer: Fingerprint, msgs: Vec<Message>) -> Vec<Message> {
        let inbox = &mut self.peers.entry(peer).inbox;
        msgs.into_iter().filter(|m| inbox.accept(m.id)).collect()
    }

    /// A connection ended: scores for how it ended (the source answers too, before and
    /// after the session was up: identities are free, addresses are not), messages it
    /// did not get acknowledged go back to the outbox, and a redial is scheduled where
    /// one is wanted — with backoff after failures before the session was up.
    fn connection_ended(&mut self, now: Instant, e: Ended) {
        if let Some(peer) = e.peer {
            self.scores.penalize_peer(peer, e.penalty);
        }
        self.scores.penalize_source(e.remote, e.penalty);
        if let Some(peer) = e.peer {
            self.peers.connection_ended(peer, e.conn_id);
            // What came back goes to the live connection if another one is up.
            self.top_up(peer);
        }
        if let (Some(dialed), false) = (e.dialed, e.registered) {
            self.peers.entry(dialed).dialing = false;
        }
        let (initial, max) = (self.cfg.reconnect_initial, self.cfg.reconnect_max);
        let mut redial = [e.peer, e.dialed];
        if redial[0] == redial[1] {
            redial[1] = None;
        }
        for fp in redial.into_iter().flatten() {
            if self.scores.peer_banned(&fp) {
                continue;
            }
            let p = self.peers.entry(fp);
            if e.established {
                p.redial = Duration::ZERO;
            } else if e.failed {
                p.redial = next_redial(p.redial, e.wrong_identity, initial, max);
            }
            let delay = p.redial.max(initial);
            self.ensure_dialing(now, fp, delay);
        }
    }

    /// A dial round for `peer` reached no address: the next round comes after a doubled
    /// delay (the first after `reconnect_initial`), up to `reconnect_max`.
    fn dial_failed(&mut self, now: Instant, peer: Fingerprint) {
        let waited = self.rounds.remove(&peer).unwrap_or_default();
        self.schedule_after_failure(now, peer, waited);
    }

    fn schedule_after_failure(&mut self, now: Instant, peer: Fingerprint, waited: Duration) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if self.stopped || !p.needs_connection() {
            p.dialing = false;
            return;
        }
        let delay = if waited.is_zero() {
            self.cfg.reconnect_initial
        } else {
            (waited * 2).min(self.cfg.reconnect_max)
        };
        self.dial_due.insert(peer, (now + delay, delay));
    }

    /// A dial round for `peer` has a QUIC connection: it is the connection's to report.
    fn dial_connected(&mut self, peer: Fingerprint) {
        self.rounds.remove(&peer);
    }

    // ---- what queries read

    /// What the core knows about `peer`.
    fn peer(&self, peer: &Fingerprint) -> Option<PeerSnapshot> {
        let p = self.peers.get(peer)?;
        Some(PeerSnapshot {
            connected: p.active.is_some(),
            addrs: p.addrs.clone(),
            queued: p.outbox.queued(),
            inflight: p.outbox.inflight(),
            score: self.scores.peer(peer),
            redial: p.redial,
        })
    }

    /// Peers with a live connection, the addresses known for each and the driver's handle
    /// on that connection (for the status panel and on-demand PINGs).
    fn live_links(&self) -> Vec<(Fingerprint, Vec<SocketAddr>, C)> {
        self.peers
            .iter()
            .filter_map(|(f, p)| {
                Some((
                    *f,
                    p.addrs.clone(),
                    p.active.as_ref()?.handle.handle.clone(),
                ))
            })
            .collect()
    }

    /// The driver's number of `peer`'s live connection, if it has one.
    fn live_connection(&self, peer: &Fingerprint) -> Option<u64> {
        self.peers.get(peer)?.active.as_ref().map(|a| a.conn_id)
    }

    /// Messages waiting (queued or unacknowledged), over all peers.
    fn outbox_len(&self) -> usize {
        self.peers
            .iter()
            .map(|(_, p)| p.outbox.queued() + p.outbox.inflight())
            .sum()
    }

    /// Whether a peer that is connected or being dialed still has messages waiting.
    fn draining(&self) -> bool {
        self.peers
            .iter()
            .any(|(_, p)| (p.active.is_some() || p.dialing) && !p.outbox.is_empty())
    }

    // ---- driving

    /// What the driver should do next: the core's own outputs first, then the DHT's
    /// messages and query results.
    pub fn poll_output(&mut self) -> Option<Output<C>> {
        if let Some(o) = self.out.pop_front() {
            return Some(o);
        }
        let d = self.dht.as_mut()?;
        if let Some(t) = d.poll_transmit() {
            return Some(Output::DhtSend {
                to: t.to,
                msg: t.msg,
            });
        }
        d.poll_event().map(Output::DhtEvent)
    }

    /// When [`Core::handle_timeout`] has work next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let dials = self.dial_due.values().map(|(at, _)| *at).min();
        let dht = self.dht.as_ref().map(|d| d.poll_timeout());
        let (retry, sync) = match &self.retry {
            Some((r, sync)) if !self.stopped => (r.poll_timeout(), Some(*sync)),
            _ => (None, None),
        };
        [dials, self.rdv.poll_timeout(), dht, retry, sync]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs what is due: dial rounds, the rendezvous role's expiries, the DHT's timers, the
    /// re-reach schedule.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.rdv.handle_timeout(now);
        if let Some((r, sync)) = self.retry.as_mut().filter(|(_, at)| now >= *at) {
            r.sync(now, self.peers.pending());
            *sync = now + RETRY_SYNC;
        }
        self.start_reaches(now);
        if let Some(d) = self.dht.as_mut().filter(|d| now >= d.poll_timeout()) {
            d.handle_timeout(now);
        }
        let due: Vec<(Fingerprint, Duration)> = self
            .dial_due
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(fp, (_, waited))| (*fp, *waited))
            .collect();
        for (peer, waited) in due {
            self.dial_due.remove(&peer);
            let Some(p) = self.peers.get_mut(&peer) else {
                continue;
            };
            if self.stopped || !p.needs_connection() || self.scores.peer_banned(&peer) {
                p.dialing = false;
                continue;
            }
            let addrs: Vec<SocketAddr> = p
                .addrs
                .iter()
                .filter(|a| !self.scores.addr_banned(a))
                .copied()
                .collect();
            if addrs.is_empty() {
                // Every address banned: try again later.
                self.schedule_after_failure(now, peer, waited);
                continue;
            }
            self.rounds.insert(peer, waited);
            self.out.push_back(Output::Dial { peer, addrs });
        }
    }

    /// Starts dial rounds for `peer` after `delay` if it needs a connection and none is
    /// being made.
    fn ensure_dialing(&mut self, now: Instant, peer: Fingerprint, delay: Duration) {
        if self.stopped {
            return;
        }
        let p = self.peers.entry(peer);
        if p.dialing || !p.needs_connection() {
            return;
        }
        p.dialing = true;
        self.dial_due.insert(peer, (now + delay, delay));
    }

    /// Hands `peer`'s live connection what fits in its window.
    fn top_up(&mut self, peer: Fingerprint) {
        let window = self.cfg.window as u64;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.receipt_first {
            return;
        }
        let Some(active) = p.active.as_mut() else {
            return;
        };
        let link = &mut active.handle;
        let room = window.saturating_sub(link.handed.saturating_sub(link.acked)) as usize;
        let n = room.min(p.outbox.queued());
        if n == 0 {
            return;
        }
        let mut msgs = Vec::with_capacity(n);
        for _ in 0..n {
            match p.outbox.take_next(active.conn_id, link.handed) {
                Some(m) => msgs.push(m.clone()),
                None => break,
            }
            link.handed += 1;
        }
        self.out.push_back(Output::Batch {
            handle: link.handle.clone(),
            msgs,
        });
    }
}

/// The delay before redialing a peer after a dialed connection failed before it was
/// established, given the delay after the previous such failure (`prev`, zero if none):
/// doubling from `initial` to `max` — and `max` at once when the address answered with
/// another identity than the one dialed (spec/06-node.md §4.2).
pub fn next_redial(
    prev: Duration,
    wrong_identity: bool,
    initial: Duration,
    max: Duration,
) -> Duration {
    if wrong_identity {
        max
    } else if prev.is_zero() {
        initial.min(max)
    } else {
        (prev * 2).clamp(initial.min(max), max)
    }
}

#[cfg(test)]
mod tests;

//! The driver's shared state (spec/06-node.md §1.2): what the node's tasks hold in common —
//! the sockets, the configuration, the command channel of the task that owns the node core
//! ([`CoreCmd`]), the DHT connection pool and database handle (the two locks left, §1.3). This module imports
//! no other driver module with functions in it, so the driver's modules form layers without
//! cycles:
//!
//! ```text
//! node (public API, accept and STUN loops)
//!   └─ core (the task owning node::Core)
//!        ├─ conn (sessions, dial rounds) ├─ rendezvous (serving) ─ reach (punching) ─ dht
//!        └──────── shared, events, store, config, util, signal_frames, dht_persist
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::events::EventTx;
use super::store::Store;
use super::NodeConfig;
use crate::crypto::{Fingerprint, Identity, NodeId};
use crate::dht::{Checked, Contact, Dht, DhtEvent, DhtMessage};
use crate::nat::candidate::{Candidate, PresenceInfo};
use crate::nat::discovery::NatClass;
use crate::node::core::{Answer, Core, DhtQuery, Input, Query, Reply};
use crate::session::{Outgoing, PresenceStatus};
use crate::transport::DnaSocket;

/// The driver's handle on a connection, kept by the node core for the live one.
#[derive(Clone)]
pub(crate) struct ConnHandle {
    pub(crate) conn: quinn::Connection,
    /// The connection task's commands: batches of messages, our presence. Its capacity
    /// exceeds what the core may have outstanding ([`conn_queue`]), so the core's
    /// `try_send` never finds it full.
    pub(crate) tx: mpsc::Sender<ConnCmd>,
    /// The session's stream keys once it is established (application streams).
    pub(crate) streams: super::app_stream::StreamKeys,
}

impl std::fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnHandle")
            .field("remote", &self.conn.remote_address())
            .finish()
    }
}

/// What the node core tells a connection task.
pub(crate) enum ConnCmd {
    /// Messages to send, in this order (owned; the connection task seals them).
    Batch(Vec<Outgoing>),
    /// Our presence, announced once the session is up.
    Presence(PresenceStatus),
    /// Send a PING now (`NodeHandle::ping`); the PONG comes back as `NodeEvent::Rtt`.
    Ping,
}

/// The capacity of a connection task's command queue: every batch carries at least one
/// message and at most `window` messages are outstanding, plus room for presence changes.
pub(crate) fn conn_queue(window: usize) -> usize {
    window + 64
}

/// Messages the core hands one connection ahead of its ACKs: twice what the session keeps
/// in flight, so a batch is ready when the window moves.
pub(crate) fn window(cfg: &super::NodeConfig) -> usize {
    usize::try_from(cfg.conn.max_inflight)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        .max(1)
}

/// The node core as the driver holds it: connection handles for the peer table, QUIC
/// connections for the rendezvous registry.
pub(crate) type DriverCore = Core<ConnHandle, RdvConn>;

/// The handle the rendezvous registry keeps on a registered node's connection: two are the
/// same connection when quinn says so (`stable_id`).
#[derive(Debug, Clone)]
pub(crate) struct RdvConn(pub(crate) quinn::Connection);

impl PartialEq for RdvConn {
    fn eq(&self, other: &RdvConn) -> bool {
        self.0.stable_id() == other.0.stable_id()
    }
}

/// An input to the node core as the driver feeds it.
pub(crate) type CoreInput = Input<ConnHandle, RdvConn>;
/// The core's answer to a [`Query`] as the driver reads it.
pub(crate) type CoreAnswer = Answer<ConnHandle, RdvConn>;

/// Commands to the task that owns the node core (`daemon::core`): the core's closed inputs
/// and queries (spec/06-node.md §1.1), plus the three whose answer the task routes.
pub(crate) enum CoreCmd {
    /// Something happened; nothing to answer.
    Input(CoreInput),
    /// An input whose [`Reply`] the sender waits for.
    Ask(CoreInput, oneshot::Sender<Reply>),
    /// A read-only question.
    Query(Query, oneshot::Sender<CoreAnswer>),
    /// Messages received (over a session, or from a mailbox): the core keeps the new ones
    /// ([`Input::Received`](crate::node::core::Input)), the store (if any) writes them,
    /// and they come back on `reply` ([`Stored`](super::store::Stored)).
    Received {
        from: Fingerprint,
        msgs: Vec<crate::crypto::Message>,
        upto: u64,
        reply: mpsc::UnboundedSender<super::store::Stored>,
    },
    /// An inbound DHT request from `from` (signatures checked by the sender); the answer,
    /// if the DHT gives one, goes to `reply`.
    DhtInbound {
        from: Contact,
        msg: Checked,
        reply: oneshot::Sender<DhtMessage>,
    },
    /// Starts a DHT query; its event goes to `reply`.
    DhtQuery {
        query: DhtQuery,
        reply: oneshot::Sender<DhtEvent>,
    },
    /// The shutdown's last save of the DHT: the snapshot goes to `reply`.
    SaveDht {
        reply: oneshot::Sender<super::dht_persist::Snapshot>,
    },
}

/// Commands waiting for the core task; senders wait when it is full.
pub(crate) const CORE_QUEUE: usize = 1024;

/// The sending side of the core task's queue.
#[derive(Clone)]
pub(crate) struct CoreTx(pub(crate) mpsc::Sender<CoreCmd>);

impl CoreTx {
    /// Queues a command; `false` once the core task is gone.
    pub(crate) async fn send(&self, cmd: CoreCmd) -> bool {
        self.0.send(cmd).await.is_ok()
    }

    /// Feeds an input; `false` once the core task is gone.
    pub(crate) async fn input(&self, input: CoreInput) -> bool {
        self.send(CoreCmd::Input(input)).await
    }

    /// Feeds an input and waits for the core's reply (`None` once the task is gone).
    pub(crate) async fn ask(&self, input: CoreInput) -> Option<Reply> {
        let (tx, rx) = oneshot::channel();
        self.0.send(CoreCmd::Ask(input, tx)).await.ok()?;
        rx.await.ok()
    }

    /// Peers with a live connection, their addresses and the connection (none once the
    /// task is gone).
    pub(crate) async fn links(&self) -> Vec<(Fingerprint, Vec<SocketAddr>, ConnHandle)> {
        match self.query(Query::Links).await {
            Some(Answer::Links(l)) => l,
            _ => Vec::new(),
        }
    }

    /// Asks a read-only question (`None` once the task is gone).
    pub(crate) async fn query(&self, q: Query) -> Option<CoreAnswer> {
        let (tx, rx) = oneshot::channel();
        self.0.send(CoreCmd::Query(q, tx)).await.ok()?;
        rx.await.ok()
    }
}

impl Shared {
    /// Delivers received messages (and other events) in order: a message whose kind an
    /// application protocol registered goes to that protocol's queue, the rest to the
    /// node's events. Waits while a queue is full; `Err` once the application is gone.
    pub(crate) async fn deliver(&self, evs: Vec<super::NodeEvent>) -> Result<(), ()> {
        if self.apps.is_empty() {
            return self.events.send_all(evs).await;
        }
        let mut run: Vec<super::NodeEvent> = Vec::new();
        let mut run_to: Option<&EventTx> = None;
        for ev in evs {
            let to = match &ev {
                super::NodeEvent::Message { kind, .. } => self.apps.get(kind),
                _ => None,
            }
            .unwrap_or(&self.events);
            if run_to.is_some_and(|r| !std::ptr::eq(r, to)) {
                if let Some(r) = run_to {
                    r.send_all(std::mem::take(&mut run)).await?;
                }
            }
            run_to = Some(to);
            run.push(ev);
        }
        match run_to {
            Some(r) if !run.is_empty() => r.send_all(run).await,
            _ => Ok(()),
        }
    }
}

/// What the core task publishes of its re-reach schedule (`Shared::retry_view`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RetryView {
    pub(crate) stats: Option<crate::node::retry::RetryStats>,
    pub(crate) relay_needed: Vec<Fingerprint>,
}

pub(crate) struct Shared {
    pub(crate) identity: Arc<Identity>,
    pub(crate) cfg: NodeConfig,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) client_cfg: quinn::ClientConfig,
    pub(crate) socket: Arc<DnaSocket>,
    pub(crate) local: SocketAddr,
    /// The task that owns the node core: peers, outboxes, scores, the rendezvous role.
    pub(crate) core: CoreTx,
    pub(crate) events: EventTx,
    /// The event queues of the application protocols registered at bind
    /// ([`NodeConfig::apps`]): their messages go there instead of `events`.
    pub(crate) apps: HashMap<crate::crypto::MessageKind, EventTx>,
    /// Their stream queues: accepted application streams of their kind
    /// (spec/03-session.md §10).
    pub(crate) app_streams:
        HashMap<crate::crypto::MessageKind, mpsc::Sender<super::app_stream::AppStream>>,
    pub(crate) next_conn: AtomicU64,
    pub(crate) live: AtomicUsize,
    /// No new sends or inbound connections; connections and dials in progress finish.
    pub(crate) closing: AtomicBool,
    /// Past the shutdown grace period: no more dials at all.
    pub(crate) stopped: AtomicBool,
    /// The DHT, if this node runs one.
    pub(crate) dht: Option<Arc<DhtShared>>,
    /// Registrations for the STUN loop's routing table (`stun_routes`).
    pub(crate) stun_routes: mpsc::Sender<super::stun_routes::StunRoute>,
    /// NAT class, candidates, rendezvous registrations and punching attempts (spec/05).
    pub(crate) nat: NatShared,
    /// The STUN responder's counters, published by the task that owns it.
    pub(crate) stun_stats: tokio::sync::watch::Sender<crate::nat::responder::ResponderStats>,
    /// The re-reach schedule's counters and the peers waiting for a relay the user has not
    /// allowed, published by the core task after each pass that changed them.
    pub(crate) retry_view: tokio::sync::watch::Sender<RetryView>,
    /// The node's routine's counters (`daemon::routine`), `ready` once its first round is done.
    pub(crate) routine: tokio::sync::watch::Sender<crate::node::routine::RoutineStats>,
    /// The message store, if the node has one, and its inbox tree (for listing).
    pub(crate) store: Option<Store>,
    pub(crate) inbox: Option<sled::Tree>,
    /// Counters of the connection drivers.
    pub(crate) conn_counters: ConnCounters,
    /// Signalling streams for the rendezvous task (bounded; full: dropped).
    pub(crate) signalling: mpsc::Sender<SignalStream>,
    /// The bundled relay's table, if this node relays (spec/07-relay.md §1).
    pub(crate) relay: Option<Arc<super::relay_server_table::RelayShared>>,
    /// Our claimed names and the contact list (spec/08-names.md).
    pub(crate) names: super::contacts::Names,
    /// The offline mailbox's state (spec/09-mailbox.md).
    pub(crate) mailbox: super::mailbox_state::MailboxShared,
    /// Contact drops (spec/09-mailbox.md §1.1): ours and our contacts'; with the mailbox
    /// only (it needs the message store).
    pub(crate) drops: Option<Arc<super::drops::Drops>>,
}

/// A cheap, clonable handle for sending and managing peers from any task.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) shared: Arc<Shared>,
}

// ---- DHT

/// A pooled DHT connection and when it last carried a request (ms on the pool's clock).
pub(crate) struct Pooled {
    pub(crate) conn: quinn::Connection,
    pub(crate) used: Arc<AtomicU64>,
}

impl DhtShared {
    /// Milliseconds since the pool's epoch.
    pub(crate) fn clock(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// The DHT driver's shared pieces: the connection pool and the database. The DHT state
/// machine itself is owned by the node core (`node::Core::dht`), and what waits for it
/// (answers to inbound requests, the API's queries) by the core task.
pub(crate) struct DhtShared {
    /// Taken (saved and closed) at shutdown: sled holds a lock on its files while open.
    /// The lock orders the writes of snapshots taken by the core task.
    pub(crate) persist: Mutex<Option<super::dht_persist::Persist>>,
    pub(crate) client_cfg: quinn::ClientConfig,
    /// Authenticated connections by peer, reused for requests both ways.
    pub(crate) conns: Mutex<HashMap<NodeId, Pooled>>,
    /// Dials in progress, one per peer: a second caller waits for the first and reuses its
    /// connection. An entry lives while someone dials or waits (so at most one per
    /// concurrent caller).
    pub(crate) dialing: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<()>>>>,
    /// Zero of the pool's use clock ([`DhtShared::clock`]).
    pub(crate) epoch: Instant,
    /// Inbound request streams whose serving task ended (answered, refused or timed out).
    pub(crate) served: AtomicU64,
    /// API queries waiting for their event in the core task (a gauge for `dna status`).
    pub(crate) waiting: AtomicUsize,
    /// Inbound requests waiting for the core's answer (a gauge for `dna status`).
    pub(crate) answering: AtomicUsize,
    /// The last snapshot could not be written: the next one writes everything.
    pub(crate) save_failed: AtomicBool,
}

/// Loads the saved table and records into `dht` (before the core owns it).
pub(crate) fn load_dht(dht: &mut Dht, persist: &super::dht_persist::Persist, now: Instant) {
    let (contacts, records) = persist.load();
    let (n_contacts, n_records) = (contacts.len(), records.len());
    for c in contacts {
        dht.add_contact(c, now);
    }
    let kept = records
        .iter()
        .filter(|(source, r)| dht.restore_record(r, *source, now).is_ok())
        .count();
    // The first save rewrites what is saved: expired records go, old formats too.
    dht.mark_store_changed();
    tracing::info!(
        contacts = n_contacts,
        records = n_records,
        kept,
        "DHT state loaded"
    );
}

impl DhtShared {
    pub(crate) fn new(
        client_cfg: quinn::ClientConfig,
        persist: Option<super::dht_persist::Persist>,
        now: Instant,
    ) -> DhtShared {
        DhtShared {
            persist: Mutex::new(persist),
            client_cfg,
            conns: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashMap::new()),
            epoch: now,
            served: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            answering: AtomicUsize::new(0),
            save_failed: AtomicBool::new(false),
        }
    }
}

// ---- NAT

/// What this node knows about its own reachability.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatStatus {
    /// The discovered class, if discovery ran and succeeded.
    pub class: Option<NatClass>,
    /// Our candidates (host, server-reflexive).
    pub candidates: Vec<Candidate>,
    /// Rendezvous nodes we are registered at.
    pub rendezvous: Vec<(SocketAddr, Fingerprint)>,
}

impl NatStatus {
    /// The presence value that publishes this status (spec/05 §4.1).
    pub fn presence(&self) -> PresenceInfo {
        PresenceInfo {
            reachable: self.class.is_some_and(|c| c.reachable()),
            nat: self.class.map_or("", |c| c.name()).to_owned(),
            candidates: self.candidates.clone(),
            rendezvous: self.rendezvous.clone(),
        }
    }
}

/// The node's TURN allocation (spec/07-relay.md §2.7), as the TURN task last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TurnStatus {
    /// The TURN server.
    pub server: Option<SocketAddr>,
    /// `udp`, or `tcp` once UDP to the server got no answer (spec/07-relay.md §2.11).
    pub transport: &'static str,
    /// `allocating`, `allocated`, `lost` (a new Allocate is on its way), `connecting`
    /// (TCP), `failed` or `closed`.
    pub state: &'static str,
    /// The relayed address, while allocated.
    pub relayed: Option<SocketAddr>,
    /// Our address as the TURN server sees it.
    pub mapped: Option<SocketAddr>,
    /// The last error, if any.
    pub error: Option<String>,
    /// The client's counters.
    pub stats: crate::nat::turn::TurnStats,
}

/// NAT state shared by the node's tasks.
pub(crate) struct NatShared {
    /// Our NAT facts: one value, written by discovery and registration (`send_modify`),
    /// read by presence and status (`borrow`, never held across an `.await`).
    pub(crate) status: tokio::sync::watch::Sender<NatStatus>,
    /// Whether this node accepts rendezvous registrations (the registry is in the core).
    pub(crate) serves_rendezvous: bool,
    /// Punching attempts running (their routes are in the STUN loop's table).
    pub(crate) punch_attempts: AtomicUsize,
    /// The TURN allocation: one value, written by the TURN task.
    pub(crate) turn: tokio::sync::watch::Sender<TurnStatus>,
    /// Commands to the TURN task; set by the task when it starts (none without one).
    pub(crate) turn_cmd: std::sync::OnceLock<tokio::sync::mpsc::Sender<TurnCmd>>,
    /// Peers' TURN relayed addresses we reached them at (newest last, at most
    /// [`PEER_RELAYS`]): `dna status` shows such a session's path as `turn`.
    pub(crate) peer_relays: std::sync::Mutex<std::collections::VecDeque<SocketAddr>>,
    /// Port prediction (spec/05-nat.md §5.5).
    pub(crate) predict: PredictShared,
}

/// Port prediction's state and counters (spec/05-nat.md §5.5; `dna status` shows them).
#[derive(Debug, Default)]
pub(crate) struct PredictShared {
    /// A spray (256 side sockets) is open: one at a time.
    pub(crate) spraying: std::sync::atomic::AtomicBool,
    /// Attempts that predicted, either side.
    pub(crate) attempts: std::sync::atomic::AtomicU64,
    /// Probes sent (easy side).
    pub(crate) probes: std::sync::atomic::AtomicU64,
    /// Side sockets opened (hard side).
    pub(crate) sockets: std::sync::atomic::AtomicU64,
    /// Side sockets a probe reached (hard side).
    pub(crate) hits: std::sync::atomic::AtomicU64,
}

/// How many peers' relayed addresses [`NatShared::peer_relays`] remembers.
pub(crate) const PEER_RELAYS: usize = 256;

impl NatShared {
    /// Remembers that `addr` is a peer's TURN relayed address.
    pub(crate) fn note_peer_relay(&self, addr: SocketAddr) {
        let mut v = self.peer_relays.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|a| *a != addr);
        if v.len() >= PEER_RELAYS {
            v.pop_front();
        }
        v.push_back(addr);
    }

    /// Whether `addr` is a peer's TURN relayed address we reached it at.
    pub(crate) fn is_peer_relay(&self, addr: SocketAddr) -> bool {
        self.peer_relays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&addr)
    }
}

/// What the TURN task is asked to do (spec/07-relay.md §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TurnCmd {
    /// Install (and keep refreshing) a permission for this peer IP.
    Permit(std::net::IpAddr),
}

impl NatShared {
    /// Asks the TURN task, if there is one, for permissions for `ips`; `false` when there
    /// is no task or its queue is full (a CONNECT flood must not block the caller).
    pub(crate) fn turn_permit(&self, ips: impl IntoIterator<Item = std::net::IpAddr>) -> bool {
        let Some(tx) = self.turn_cmd.get() else {
            return false;
        };
        ips.into_iter()
            .all(|ip| tx.try_send(TurnCmd::Permit(ip)).is_ok())
    }

    /// NAT state for a node configured with `cfg`; it accepts registrations only if it is
    /// configured as a rendezvous server and runs a DHT (registrations ride on DHT
    /// connections).
    pub(crate) fn new(cfg: &super::NodeConfig) -> NatShared {
        NatShared {
            status: tokio::sync::watch::Sender::new(NatStatus::default()),
            serves_rendezvous: serves_rendezvous(cfg),
            punch_attempts: AtomicUsize::new(0),
            turn: tokio::sync::watch::Sender::new(TurnStatus::default()),
            turn_cmd: std::sync::OnceLock::new(),
            peer_relays: Default::default(),
            predict: PredictShared::default(),
        }
    }
}

/// Whether a node configured with `cfg` accepts rendezvous registrations: configured as a
/// rendezvous server and running a DHT (registrations ride on DHT connections).
pub(crate) fn serves_rendezvous(cfg: &super::NodeConfig) -> bool {
    cfg.rendezvous_server && cfg.dht.is_some()
}

// ---- connection counters

/// Counters of the connection drivers, shared by all of them (shown by `dna status`).
#[derive(Debug, Default)]
pub(crate) struct ConnCounters {
    /// Bytes waiting for the stream writers, summed over connections.
    pub(crate) write_queued: AtomicUsize,
    /// The most bytes that ever waited for one connection's writer.
    pub(crate) write_queued_peak: AtomicUsize,
    /// Inbound connections refused because `max_connections` were live.
    pub(crate) refused_full: AtomicUsize,
}

impl ConnCounters {
    pub(crate) fn queued(&self, conn_queued: usize, added: usize) {
        self.write_queued.fetch_add(added, Ordering::Relaxed);
        self.write_queued_peak
            .fetch_max(conn_queued, Ordering::Relaxed);
    }

    pub(crate) fn written(&self, n: usize) {
        sub(&self.write_queued, n);
    }
}

/// Subtracts without wrapping: a connection's teardown may release its bytes twice.
pub(crate) fn sub(counter: &AtomicUsize, n: usize) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

/// A snapshot of the connection drivers' counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TransportStats {
    /// Bytes waiting for the stream writers now, over all connections.
    pub write_queued: usize,
    /// The most bytes that ever waited for one connection's writer.
    pub write_queued_peak: usize,
    /// Traffic sources (IPv4 addresses, IPv6 /64s) with a score.
    pub scored_sources: usize,
    /// Inbound connections refused because `max_connections` were live.
    pub refused_full: usize,
}

/// A signalling stream a peer opened on a DHT connection, handed from the DHT driver to
/// the rendezvous task over a bounded channel (full: the stream is dropped, which resets
/// it; the caller retries or uses another rendezvous node).
pub(crate) struct SignalStream {
    pub(crate) conn: quinn::Connection,
    pub(crate) peer: Contact,
    pub(crate) bytes: Vec<u8>,
    pub(crate) send: quinn::SendStream,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peers' relayed addresses are bounded: the oldest goes first.
    #[test]
    fn peer_relays_are_bounded() {
        let cfg = super::super::NodeConfig::listening_on("127.0.0.1:0".parse().unwrap());
        let nat = NatShared::new(&cfg);
        let addr = |i: usize| SocketAddr::from(([198, 18, (i / 256) as u8, (i % 256) as u8], 1));
        for i in 0..PEER_RELAYS + 10 {
            nat.note_peer_relay(addr(i));
        }
        assert_eq!(nat.peer_relays.lock().unwrap().len(), PEER_RELAYS);
        assert!(!nat.is_peer_relay(addr(9)), "the oldest are gone");
        assert!(nat.is_peer_relay(addr(10)) && nat.is_peer_relay(addr(PEER_RELAYS + 9)));
    }
}

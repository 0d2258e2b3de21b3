//! The node: the tokio driver that owns the socket, the QUIC endpoint and the clock, and
//! runs one sans-IO [`Connection`](crate::session::Connection) per QUIC connection
//! (spec/03-session.md).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_core::OsRng;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::crypto::{Fingerprint, Identity, MessageId, MessageKind};
use crate::session::{code, Outgoing, PresenceStatus};
use crate::transport::tls::{quic_configs, CertifiedKey, TlsError};
use crate::transport::{bind_udp, DnaSocket, SideChannels};

use super::conn::drive;
use super::events::{EventRx, NodeEvent};
use super::os::{unix_ms, with_rng};
use super::shared::{CoreTx, NatShared, NodeHandle, Shared};
use super::store::{Store, StoreError, StoreLimits, StoredMessage};
use super::stun_routes::{StunRoute, StunRoutes};
use super::NodeConfig;
use crate::node::core::{Answer, Core, CoreConfig, Input, Query};
use crate::node::reach::RelayPolicy;

/// Starting a node failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Binding or wrapping the UDP socket failed.
    #[error("socket: {0}")]
    Socket(#[from] std::io::Error),
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The DHT database could not be opened.
    #[error("DHT storage: {0}")]
    Storage(String),
    /// The message store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Sending failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SendError {
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The message store could not take the message: it was not accepted.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The body is larger than a frame can carry.
    #[error("message body of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Body length.
        len: usize,
        /// Limit.
        max: usize,
    },
}

/// A snapshot of what the node knows about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Whether a connection is live.
    pub connected: bool,
    /// Addresses known for it.
    pub addrs: Vec<SocketAddr>,
    /// Messages queued, not yet sent.
    pub queued: usize,
    /// Messages sent, not yet acknowledged.
    pub inflight: usize,
    /// Its score (0 is clean; at −100 it is banned).
    pub score: i32,
    /// The delay before the next dial round after the last failed one (zero: none
    /// failed; the longest at once when an address answered with another identity).
    pub redial: Duration,
}

/// A running node. Dropping it stops nothing; call [`Node::shutdown`].
pub struct Node {
    handle: NodeHandle,
    events: EventRx,
    /// The registered application protocols' queues, until taken ([`Node::app`]).
    apps: HashMap<MessageKind, EventRx>,
    app_streams: HashMap<MessageKind, tokio::sync::mpsc::Receiver<super::AppStream>>,
    turn: Option<mpsc::Receiver<crate::transport::socket::Datagram>>,
}

impl Node {
    /// Binds the socket, starts the QUIC endpoint and the accept loop.
    pub async fn bind(identity: Identity, mut cfg: NodeConfig) -> Result<Node, NodeError> {
        let hash_key = [
            rand_core::RngCore::next_u64(&mut OsRng),
            rand_core::RngCore::next_u64(&mut OsRng),
        ];
        let (store, backlog, seen, inbox) = match &cfg.store_dir {
            Some(dir) => {
                let limits = StoreLimits {
                    dedup_window: cfg.inbox_capacity,
                    dedup_senders: cfg.max_peers,
                    keep_delivered: cfg.keep_delivered,
                };
                let o = Store::open(dir, limits)?;
                (Some(o.store), o.backlog, o.seen, Some(o.inbox))
            }
            None => (None, Vec::new(), Vec::new(), None),
        };
        // With a store, a message is acknowledged only once it is stored.
        cfg.conn.ack_on_confirm = store.is_some();
        let udp = bind_udp(cfg.listen)?;
        let turn_servers = cfg
            .turn_server
            .into_iter()
            .chain(cfg.turn_fallbacks.iter().copied())
            .collect();
        let (socket, side) = DnaSocket::with_turn_servers(udp, turn_servers, cfg.relay)?;
        let key = CertifiedKey::generate()?;
        let (server_crypto, client_crypto) = quic_configs(&key)?;
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(cfg.max_streams_per_connection.into())
            .max_concurrent_uni_streams(0u8.into())
            .keep_alive_interval(Some(cfg.keep_alive));
        let idle = cfg.conn.idle_timeout + Duration::from_secs(5);
        if let Ok(t) = quinn::IdleTimeout::try_from(idle) {
            transport.max_idle_timeout(Some(t));
        }
        let transport = Arc::new(transport);
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport.clone());
        let mut client_cfg = quinn::ClientConfig::new(Arc::new(client_crypto));
        client_cfg.transport_config(transport);
        let dht_client = match &cfg.dht {
            Some(_) => {
                let mut c = quinn::ClientConfig::new(Arc::new(
                    crate::transport::tls::quic_dht_client(&key)?,
                ));
                c.transport_config(transport_for_dht(&cfg));
                Some(c)
            }
            None => None,
        };
        let mut endpoint_cfg = quinn::EndpointConfig::default();
        endpoint_cfg.grease_quic_bit(false);
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_cfg,
            Some(server),
            socket.clone(),
            Arc::new(quinn::TokioRuntime),
        )?;
        let (dht, dht_core) = match (&cfg.dht, dht_client) {
            (Some(settings), Some(client)) => {
                let now = Instant::now();
                let mut dht = crate::dht::Dht::new(
                    identity.fingerprint().node_id(),
                    settings.config,
                    (now, unix_ms() / 1000),
                    rand_core::RngCore::next_u64(&mut OsRng),
                );
                let persist = match &settings.data_dir {
                    Some(dir) => Some(
                        super::dht_persist::Persist::open(dir)
                            .map_err(|e| NodeError::Storage(e.to_string()))?,
                    ),
                    None => None,
                };
                if let Some(p) = &persist {
                    super::shared::load_dht(&mut dht, p, now);
                }
                let shared = super::shared::DhtShared::new(client, persist, now);
                (Some(Arc::new(shared)), Some(dht))
            }
            _ => (None, None),
        };
        // Contact drops ride the mailbox (spec/09-mailbox.md §1.1): the node owns kind DROP.
        let drops = match (&cfg.store_dir, cfg.mailbox.enabled && cfg.dht.is_some()) {
            (Some(dir), true) => Some(Arc::new(super::drops::Drops::open(dir)?)),
            _ => None,
        };
        if drops.is_some() && !cfg.apps.contains(&MessageKind::DROP) {
            cfg.apps.push(MessageKind::DROP);
        }
        let (events_tx, events) = super::events::channel(cfg.event_queue, cfg.event_queue_bytes);
        let (mut app_tx, mut app_rx) = (HashMap::new(), HashMap::new());
        let (mut stream_tx, mut stream_rx) = (HashMap::new(), HashMap::new());
        for kind in &cfg.apps {
            let (tx, rx) = super::events::channel(cfg.event_queue, cfg.event_queue_bytes);
            app_tx.insert(*kind, tx);
            app_rx.insert(*kind, rx);
            let (tx, rx) = tokio::sync::mpsc::channel(super::app_stream::APP_STREAM_QUEUE);
            stream_tx.insert(*kind, tx);
            stream_rx.insert(*kind, rx);
        }
        let local = quinn::AsyncUdpSocket::local_addr(&*socket)?;
        let rfc5780 = match &cfg.discovery_server {
            Some(d) => Some(super::discovery_server::bind(local, d).await?),
            None => None,
        };
        let mut core = Core::new(
            identity.fingerprint(),
            CoreConfig {
                max_peers: cfg.max_peers,
                inbox_capacity: cfg.inbox_capacity,
                hash_key,
                max_scored_sources: cfg.max_scored_sources,
                window: super::shared::window(&cfg),
                reconnect_initial: cfg.reconnect_initial,
                reconnect_max: cfg.reconnect_max,
                rendezvous_server: super::shared::serves_rendezvous(&cfg),
                rendezvous: cfg.rendezvous.clone(),
                retry: cfg.retry.filter(|_| cfg.dht.is_some()),
                mailbox: Some(cfg.mailbox)
                    .filter(|m| m.enabled && cfg.dht.is_some() && store.is_some()),
            },
        );
        if let Some(d) = dht_core {
            core = core.with_dht(d);
        }
        let pending: usize = backlog.iter().map(|(_, m)| m.len()).sum();
        let now = Instant::now();
        core.handle(now, Input::StartRetry);
        // The de-duplication windows begin with what the store holds.
        for (peer, ids) in seen {
            core.handle(now, Input::Seen { peer, ids });
        }
        for (peer, msgs) in backlog {
            core.handle(now, Input::Send { peer, msgs });
        }
        if pending > 0 {
            tracing::info!(
                messages = pending,
                "unacknowledged messages loaded from the store"
            );
        }
        let nat = NatShared::new(&cfg);
        let relay = match (&cfg.relay_server, super::shared::serves_rendezvous(&cfg)) {
            (Some(limits), true) => {
                let r = Arc::new(super::relay_server_table::RelayShared::new(*limits));
                socket.set_forwarder(r.clone());
                Some(r)
            }
            _ => None,
        };
        let (core_tx, core_rx) = super::core::channel();
        let (routes_tx, routes_rx) = mpsc::channel(super::stun_routes::ROUTE_QUEUE);
        let (signalling, signal_rx) = mpsc::channel(super::rendezvous::SIGNAL_QUEUE);
        let cfg_store_dir = cfg.store_dir.clone();
        let shared = Arc::new(Shared {
            identity: Arc::new(identity),
            cfg,
            endpoint,
            client_cfg,
            socket,
            local,
            core: CoreTx(core_tx),
            events: events_tx,
            apps: app_tx,
            app_streams: stream_tx,
            next_conn: AtomicU64::new(1),
            live: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            dht,
            stun_routes: routes_tx,
            nat,
            stun_stats: tokio::sync::watch::Sender::new(Default::default()),
            retry_view: tokio::sync::watch::Sender::new(Default::default()),
            routine: tokio::sync::watch::Sender::new(Default::default()),
            store,
            inbox,
            conn_counters: Default::default(),
            signalling,
            relay,
            names: super::contacts::Names::open(cfg_store_dir.as_deref()),
            mailbox: Default::default(),
            drops,
        });
        tokio::spawn(super::core::run(shared.clone(), core, core_rx));
        tokio::spawn(accept_loop(shared.clone()));
        tokio::spawn(super::names::republish_loop(Arc::downgrade(&shared)));
        if shared.dht.is_some()
            && matches!(
                shared.cfg.relay_policy,
                RelayPolicy::Auto | RelayPolicy::Ask
            )
        {
            tokio::spawn(super::reach::upgrade_loop(
                Arc::downgrade(&shared),
                shared.cfg.upgrade_interval,
            ));
        }
        super::mailbox::spawn(&shared);
        if let Some(r) = shared.cfg.routine.clone() {
            tokio::spawn(super::routine::run(Arc::downgrade(&shared), r));
        }
        tokio::spawn(super::rendezvous::signalling_loop(
            shared.clone(),
            signal_rx,
        ));
        let SideChannels { stun, turn } = side;
        // With credentials for the TURN server, the node keeps an allocation there itself.
        let turn = match (shared.cfg.turn_server, shared.cfg.turn_credentials.clone()) {
            (Some(server), Some(creds)) => {
                tokio::spawn(super::turn::run(shared.clone(), server, creds, turn));
                None
            }
            _ => Some(turn),
        };
        if shared.dht.is_some() {
            let seeds = super::dht::seeds(
                &shared
                    .cfg
                    .dht
                    .as_ref()
                    .map(|s| s.bootstrap.clone())
                    .unwrap_or_default(),
            );
            if !seeds.is_empty() {
                let shared = shared.clone();
                tokio::spawn(async move {
                    // Behind a network without UDP the join must go through TURN.
                    super::turn::settled(&shared).await;
                    let _ = super::dht::bootstrap(&shared, seeds).await;
                });
            }
        }
        tracing::info!(fingerprint = %shared.identity.fingerprint(), addr = %shared.local, "node up");
        let rfc5780 = rfc5780.map(|d| {
            let cfg = shared.cfg.stun_responder.clone();
            d.spawn(shared.socket.clone(), cfg, shared.stun_stats.clone())
        });
        tokio::spawn(stun_loop(shared.clone(), stun, routes_rx, rfc5780));
        let mut app_rx = app_rx;
        if shared.drops.is_some() {
            if let Some(rx) = app_rx.remove(&MessageKind::DROP) {
                tokio::spawn(super::drop_app::run(Arc::downgrade(&shared), rx));
            }
        }
        Ok(Node {
            handle: NodeHandle { shared },
            events,
            apps: app_rx,
            app_streams: stream_rx,
            turn,
        })
    }

    /// The application protocol that owns `kind` (registered in [`NodeConfig::apps`]):
    /// its messages and its sends. `None` if the kind was not registered or already taken.
    pub fn app(&mut self, kind: MessageKind) -> Option<super::App> {
        let rx = self.apps.remove(&kind)?;
        let streams = self.app_streams.remove(&kind)?;
        Some(super::App::new(kind, rx, streams, self.handle.clone()))
    }

    /// Message bytes waiting in the event queue for the application (at most
    /// `event_queue_bytes`).
    pub fn event_bytes_queued(&self) -> usize {
        self.events.bytes_queued()
    }

    /// A handle for sending from other tasks.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// The next event; `None` after shutdown.
    pub async fn next_event(&mut self) -> Option<NodeEvent> {
        self.events.recv().await
    }

    /// The next event if one is ready.
    pub fn events_try_recv(&mut self) -> Result<NodeEvent, mpsc::error::TryRecvError> {
        self.events.try_recv()
    }

    /// The datagrams the socket takes out for a TURN client the application runs itself
    /// (once; `None` when the node keeps its own allocation: `turn_credentials` set). STUN
    /// datagrams are handled by the node itself.
    pub fn take_turn_channel(
        &mut self,
    ) -> Option<mpsc::Receiver<crate::transport::socket::Datagram>> {
        self.turn.take()
    }

    /// Stops accepting new messages and connections, waits up to `grace` for every queued
    /// message to be acknowledged by a peer that is connected or being dialed, then closes
    /// all connections with NO_ERROR and the reason `shutdown`: DHT peers drop us from
    /// their routing tables at once (spec/04-dht.md §2).
    pub async fn shutdown(self, grace: Duration) {
        self.stop(grace, super::dht::SHUTDOWN_REASON).await;
    }

    /// Stops at once without saying goodbye, as a crash would look to DHT peers: they keep
    /// us in their tables until requests to us fail (connections still close, with the
    /// reason `aborted`). For tests of how peers cope with nodes that vanish.
    pub async fn abort(self) {
        self.stop(Duration::ZERO, b"aborted").await;
    }

    async fn stop(self, grace: Duration, reason: &[u8]) {
        let s = &self.handle.shared;
        s.closing.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        loop {
            let draining = matches!(
                s.core.query(Query::Draining).await,
                Some(Answer::Flag(true))
            );
            if !draining || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        s.stopped.store(true, Ordering::SeqCst);
        s.core.input(Input::Stop).await;
        if let Some(d) = &s.dht {
            super::dht::close(s, d).await;
        }
        s.endpoint.close(code::NO_ERROR.into(), reason);
        let _ = tokio::time::timeout(Duration::from_secs(1), s.endpoint.wait_idle()).await;
    }
}

impl std::ops::Deref for Node {
    type Target = NodeHandle;
    fn deref(&self) -> &NodeHandle {
        &self.handle
    }
}

/// [`NodeHandle::fingerprint`].
pub(crate) fn fingerprint(handle: &NodeHandle) -> Fingerprint {
    handle.shared.identity.fingerprint()
}

/// [`NodeHandle::local_addr`].
pub(crate) fn local_addr(handle: &NodeHandle) -> SocketAddr {
    handle.shared.local
}

/// [`NodeHandle::connect`].
pub(crate) async fn connect(handle: &NodeHandle, peer: Fingerprint, addrs: Vec<SocketAddr>) {
    handle
        .shared
        .core
        .input(Input::Connect { peer, addrs })
        .await;
}

/// [`NodeHandle::send`].
pub(crate) async fn send(
    handle: &NodeHandle,
    peer: Fingerprint,
    body: Bytes,
) -> Result<MessageId, SendError> {
    let mut ids = handle.send_many(peer, [body]).await?;
    ids.pop().ok_or(SendError::ShuttingDown)
}

/// [`NodeHandle::send_many`].
pub(crate) async fn send_many(
    handle: &NodeHandle,
    peer: Fingerprint,
    bodies: impl IntoIterator<Item = Bytes>,
) -> Result<Vec<MessageId>, SendError> {
    handle.send_kind(peer, MessageKind::TEXT, bodies).await
}

/// [`NodeHandle::send_kind`].
pub(crate) async fn send_kind(
    handle: &NodeHandle,
    peer: Fingerprint,
    kind: MessageKind,
    bodies: impl IntoIterator<Item = Bytes>,
) -> Result<Vec<MessageId>, SendError> {
    if handle.shared.closing.load(Ordering::Relaxed) {
        return Err(SendError::ShuttingDown);
    }
    let max = handle.shared.cfg.conn.limits.max_payload as usize - crate::crypto::SESSION_OVERHEAD;
    let now = unix_ms();
    let mut msgs = Vec::new();
    for body in bodies {
        if body.len() > max {
            return Err(SendError::TooLarge {
                len: body.len(),
                max,
            });
        }
        msgs.push(Outgoing {
            id: with_rng(MessageId::random),
            timestamp_ms: now,
            kind,
            body,
        });
    }
    if let Some(store) = &handle.shared.store {
        store.enqueue(peer, msgs.clone()).await?;
    }
    let ids = msgs.iter().map(|m| m.id).collect();
    if !handle.shared.core.input(Input::Send { peer, msgs }).await {
        return Err(SendError::ShuttingDown);
    }
    Ok(ids)
}

/// [`NodeHandle::pending_peers`].
pub(crate) async fn pending_peers(handle: &NodeHandle) -> Vec<Fingerprint> {
    match handle.shared.core.query(Query::Pending).await {
        Some(Answer::Peers(p)) => p,
        _ => Vec::new(),
    }
}

/// [`NodeHandle::stored_inbox`].
pub(crate) fn stored_inbox(handle: &NodeHandle) -> Vec<StoredMessage> {
    handle
        .shared
        .inbox
        .as_ref()
        .map(super::store::inbox_of)
        .unwrap_or_default()
}

/// [`NodeHandle::set_presence`].
pub(crate) async fn set_presence(handle: &NodeHandle, status: PresenceStatus) {
    handle.shared.core.input(Input::Presence(status)).await;
}

/// [`NodeHandle::disconnect`].
pub(crate) async fn disconnect(handle: &NodeHandle, peer: Fingerprint) {
    handle.shared.core.input(Input::Disconnect(peer)).await;
}

/// [`NodeHandle::reset_connection`].
pub(crate) async fn reset_connection(handle: &NodeHandle, peer: Fingerprint) {
    handle.shared.core.input(Input::Reset(peer)).await;
}

/// [`NodeHandle::peer_info`].
pub(crate) async fn peer_info(handle: &NodeHandle, peer: &Fingerprint) -> Option<PeerInfo> {
    let Some(Answer::Peer(Some(p))) = handle.shared.core.query(Query::Peer(*peer)).await else {
        return None;
    };
    Some(PeerInfo {
        connected: p.connected,
        addrs: p.addrs,
        queued: p.queued,
        inflight: p.inflight,
        score: p.score,
        redial: p.redial,
    })
}

/// [`NodeHandle::addr_score`].
pub(crate) async fn addr_score(handle: &NodeHandle, addr: &SocketAddr) -> i32 {
    match handle.shared.core.query(Query::AddrScore(*addr)).await {
        Some(Answer::Score(n)) => n,
        _ => 0,
    }
}

/// [`NodeHandle::retry_stats`].
pub(crate) fn retry_stats(handle: &NodeHandle) -> Option<crate::node::retry::RetryStats> {
    handle.shared.retry_view.borrow().stats
}

/// [`NodeHandle::relay_allowed`].
pub(crate) fn relay_allowed(handle: &NodeHandle, peer: &Fingerprint) -> bool {
    match handle.shared.cfg.relay_policy {
        RelayPolicy::Auto | RelayPolicy::Only => true,
        RelayPolicy::Never => false,
        RelayPolicy::Ask => super::reach::relay_allowed(&handle.shared, peer),
    }
}

/// [`NodeHandle::relay_needed`].
pub(crate) fn relay_needed(handle: &NodeHandle) -> Vec<Fingerprint> {
    handle.shared.retry_view.borrow().relay_needed.clone()
}

/// [`NodeHandle::stun_stats`].
pub(crate) fn stun_stats(handle: &NodeHandle) -> crate::nat::responder::ResponderStats {
    *handle.shared.stun_stats.borrow()
}

/// [`NodeHandle::outbox_len`].
pub(crate) async fn outbox_len(handle: &NodeHandle) -> usize {
    match handle.shared.core.query(Query::OutboxLen).await {
        Some(Answer::Count(n)) => n,
        _ => 0,
    }
}

/// [`NodeHandle::config`].
pub(crate) fn config(handle: &NodeHandle) -> &NodeConfig {
    &handle.shared.cfg
}

/// [`NodeHandle::peer_table`].
pub(crate) async fn peer_table(handle: &NodeHandle) -> (usize, u64) {
    match handle.shared.core.query(Query::PeerTable).await {
        Some(Answer::PeerTable(n, evicted)) => (n, evicted),
        _ => (0, 0),
    }
}

/// [`NodeHandle::connection_count`].
pub(crate) fn connection_count(handle: &NodeHandle) -> usize {
    handle.shared.live.load(Ordering::Relaxed)
}

fn dht(handle: &NodeHandle) -> Result<&Arc<super::shared::DhtShared>, super::dht::DhtError> {
    handle
        .shared
        .dht
        .as_ref()
        .ok_or(super::dht::DhtError::Disabled)
}

/// [`NodeHandle::dht_bootstrap`].
pub(crate) async fn dht_bootstrap(handle: &NodeHandle) -> Result<usize, super::dht::DhtError> {
    dht(handle)?;
    let seeds = super::dht::seeds(
        &handle
            .shared
            .cfg
            .dht
            .as_ref()
            .map(|s| s.bootstrap.clone())
            .unwrap_or_default(),
    );
    super::dht::bootstrap(&handle.shared, seeds).await
}

/// [`NodeHandle::announce`].
pub(crate) async fn announce(
    handle: &NodeHandle,
    value: Vec<u8>,
) -> Result<usize, super::dht::DhtError> {
    dht(handle)?;
    super::dht::announce(&handle.shared, value).await
}

/// [`NodeHandle::find_peer`].
pub(crate) async fn find_peer(
    handle: &NodeHandle,
    peer: Fingerprint,
) -> Result<Option<crate::crypto::Record>, super::dht::DhtError> {
    dht(handle)?;
    super::dht::find_peer(&handle.shared, peer).await
}

/// [`NodeHandle::dht_get`].
pub(crate) async fn dht_get(
    handle: &NodeHandle,
    key: crate::crypto::NodeId,
) -> Result<Vec<crate::crypto::Record>, super::dht::DhtError> {
    dht(handle)?;
    let ev = super::dht::query(&handle.shared, crate::node::core::DhtQuery::FindValue(key)).await?;
    let crate::dht::DhtEvent::FoundValue { records, .. } = ev else {
        return Ok(Vec::new());
    };
    let now = super::os::unix_ms() / 1000;
    Ok(records
        .iter()
        .filter_map(|b| crate::crypto::Record::verify(b, now).ok())
        .filter(|r| r.key() == key)
        .collect())
}

/// [`NodeHandle::drop_id`].
pub(crate) fn drop_id(handle: &NodeHandle) -> Option<Fingerprint> {
    handle.shared.drops.as_ref().map(|d| d.own().fingerprint())
}

/// [`NodeHandle::drop_of`].
pub(crate) fn drop_of(handle: &NodeHandle, peer: &Fingerprint) -> Option<Fingerprint> {
    handle
        .shared
        .drops
        .as_ref()
        .and_then(|d| d.of(peer))
        .map(|d| d.fingerprint())
}

/// The DHT's figures from the core (`None`: no DHT).
async fn dht_view(handle: &NodeHandle) -> Option<crate::node::core::DhtView> {
    match handle.shared.core.query(Query::Dht).await {
        Some(Answer::Dht(v)) => v,
        _ => None,
    }
}

/// [`NodeHandle::dht_records_held`].
pub(crate) async fn dht_records_held(handle: &NodeHandle) -> usize {
    dht_view(handle).await.map_or(0, |d| d.store.records)
}

/// [`NodeHandle::dht_stats`].
pub(crate) async fn dht_stats(handle: &NodeHandle) -> super::dht::DhtStats {
    match &handle.shared.dht {
        Some(d) => super::dht::stats(&handle.shared, d).await,
        None => Default::default(),
    }
}

/// [`NodeHandle::dht_table_size`].
pub(crate) async fn dht_table_size(handle: &NodeHandle) -> usize {
    dht_view(handle).await.map_or(0, |d| d.table)
}

/// [`NodeHandle::stun_binding`].
pub(crate) async fn stun_binding(
    handle: &NodeHandle,
    server: SocketAddr,
) -> Result<SocketAddr, crate::nat::stun::BindingError> {
    let tid = handle.transaction_id();
    let binding = crate::nat::stun::Binding::new(server, tid, Instant::now());
    handle.stun_transaction(binding).await.map(|a| a.mapped)
}

/// [`NodeHandle::transaction_id`].
pub(crate) fn transaction_id() -> [u8; 12] {
    let mut tid = [0u8; 12];
    with_rng(|r| rand_core::RngCore::fill_bytes(r, &mut tid));
    tid
}

/// [`NodeHandle::stun_transaction`].
pub(crate) async fn stun_transaction(
    handle: &NodeHandle,
    mut binding: crate::nat::stun::Binding,
) -> Result<crate::nat::stun::Answer, crate::nat::stun::BindingError> {
    let tid = binding.transaction_id();
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Registered before the first request leaves; the route goes once `rx` is dropped.
    let _ = handle
        .shared
        .stun_routes
        .send(StunRoute::Transaction { tid, tx })
        .await;
    let result = loop {
        let now = Instant::now();
        while let Some((to, request)) = binding.poll_transmit(now) {
            let request = request.to_vec();
            // A send failure is a lost datagram: the retransmission timer covers it.
            let _ = handle.shared.socket.send_raw(to, &request).await;
        }
        binding.handle_timeout(now);
        if let Some(r) = binding.result() {
            break r.clone();
        }
        let Some(wake) = binding.poll_timeout() else {
            continue;
        };
        if let Ok(Some((from, bytes))) = tokio::time::timeout_at(wake.into(), rx.recv()).await {
            binding.handle_response(from, &bytes);
        }
    };
    result
}

/// [`NodeHandle::turn_status`].
pub(crate) fn turn_status(handle: &NodeHandle) -> crate::daemon::TurnStatus {
    handle.shared.nat.turn.borrow().clone()
}

/// [`NodeHandle::socket_stats`].
pub(crate) fn socket_stats(handle: &NodeHandle) -> &crate::transport::SocketStats {
    handle.shared.socket.stats()
}

/// [`NodeHandle::send_raw`].
pub(crate) async fn send_raw(
    handle: &NodeHandle,
    to: SocketAddr,
    bytes: &[u8],
) -> std::io::Result<()> {
    handle.shared.socket.send_raw(to, bytes).await
}

/// Answers STUN Binding requests on the node's socket, within the responder's limits, and
/// hands answers to the transactions waiting for them (spec/05-nat.md §1).
async fn stun_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<crate::transport::socket::Datagram>,
    mut routes_rx: mpsc::Receiver<StunRoute>,
    rfc5780: Option<super::discovery_server::Forward>,
) {
    let mut responder =
        crate::nat::responder::StunResponder::new(shared.cfg.stun_responder.clone());
    let mut routes = StunRoutes::default();
    loop {
        // Registrations first: one is always queued before its first request leaves, so
        // it is in the table before an answer can be taken.
        let (from, bytes) = tokio::select! {
            biased;
            Some(r) = routes_rx.recv() => {
                routes.add(r);
                continue;
            }
            d = rx.recv() => match d {
                Some(d) => d,
                None => return,
            },
        };
        if routes.deliver_to_punch(from, &bytes) {
            continue;
        }
        if let Some(server) = &rfc5780 {
            // An RFC 5780 server answers every Binding request (spec/05-nat.md §2.1).
            if !server.offer(from, &bytes) {
                routes.deliver_to_transaction(from, &bytes);
            }
            continue;
        }
        let answer = responder.handle(Instant::now(), from, &bytes);
        shared.stun_stats.send_replace(responder.stats());
        if let Ok(answer) = answer {
            let _ = shared.socket.send_raw(from, &answer).await;
            continue;
        }
        routes.deliver_to_transaction(from, &bytes);
    }
}

fn is_dht(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol)
        .is_some_and(|p| p == crate::transport::tls::ALPN_DHT)
}

fn transport_for_dht(cfg: &NodeConfig) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // Each request is a stream; allow a few in parallel.
    t.max_concurrent_bidi_streams(64u8.into())
        .max_concurrent_uni_streams(0u8.into())
        .keep_alive_interval(Some(cfg.keep_alive));
    Arc::new(t)
}

async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let from = incoming.remote_address();
        if shared.closing.load(Ordering::Relaxed) {
            incoming.refuse();
            continue;
        }
        let full = shared.live.load(Ordering::Relaxed) >= shared.cfg.max_connections;
        let made_room = match (&shared.dht, full) {
            (Some(d), true) => super::dht::evict_idle(&shared, d).await,
            _ => false,
        };
        if full && !made_room {
            tracing::warn!(%from, "connection limit reached: refusing");
            shared
                .conn_counters
                .refused_full
                .fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        }
        let banned = shared.core.query(Query::AddrBanned(from)).await;
        if !matches!(banned, Some(Answer::Flag(false))) {
            tracing::warn!(%from, "banned address: refusing");
            incoming.refuse();
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) if is_dht(&conn) => match &shared.dht {
                    Some(d) => super::dht::accept(shared.clone(), d.clone(), conn).await,
                    None => conn.close(code::PROTOCOL_VIOLATION.into(), b"no DHT here"),
                },
                Ok(conn) => drive(shared, conn, None).await,
                Err(e) => tracing::debug!(%from, error = %e, "incoming handshake failed"),
            }
        });
    }
}

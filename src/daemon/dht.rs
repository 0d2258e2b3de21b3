//! The DHT over the transport (spec/04-dht.md §5.1): the sans-IO [`Dht`] driven on the
//! node's QUIC endpoint and socket.
//!
//! DHT connections use ALPN `dna-dht/1`. The dialer opens the first stream and both sides
//! send HELLO (spec/03 §2) on it; the dialer requires the peer's fingerprint to start with
//! the contact's 160-bit node ID, so every routing-table entry is a proven identity. After
//! that, each request is one bidirectional stream: the request frame, FIN; the answer frame,
//! FIN. Either side may ask.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::oneshot;

use super::os::{lock, unix_ms};
use super::shared::{CoreCmd, DhtShared, Pooled, Shared, SignalStream};
use crate::crypto::record::{presence_key, RecordKind};
use crate::crypto::{Fingerprint, NodeId, Record};
use crate::dht::{Checked, Contact, DhtEvent, DhtMessage, StoreStats, VerifiedRecord};
use crate::node::core::{Answer, DhtQuery, Input, Query, Reply};
use crate::session::hello::{
    hello, verify_hello, verify_hello_node, HelloError, Role, EXPORTER_LABEL, EXPORTER_LEN,
    HELLO_LEN,
};
use crate::session::ConnError;
use crate::transport::tls::SERVER_NAME;
use crate::wire::{decode_exact, encode_frame, FrameLimits, MessageType, HEADER_LEN};

/// The largest DHT frame read (a VALUE with 8 maximal records fits).
const MAX_DHT_FRAME: usize = 1 << 20;

/// Saves one last time and closes the database (shutdown): the snapshot is taken by the
/// core task, written here.
pub(crate) async fn close(shared: &Shared, d: &DhtShared) {
    let (reply, rx) = oneshot::channel();
    if !shared.core.send(CoreCmd::SaveDht { reply }).await {
        lock(&d.persist).take();
        return;
    }
    if let Ok(snap) = rx.await {
        if let Err(e) = write_snapshot(d, &snap) {
            tracing::warn!(error = %e, "saving the DHT state failed");
        }
    }
    lock(&d.persist).take();
}

/// Writes a snapshot to the database, if it is still open.
pub(crate) fn write_snapshot(
    d: &DhtShared,
    snap: &super::dht_persist::Snapshot,
) -> sled::Result<()> {
    let persist = lock(&d.persist);
    let Some(p) = persist.as_ref() else {
        return Ok(());
    };
    p.write(snap)?;
    let (saved, removed) = snap.records();
    tracing::debug!(saved, removed, "DHT state saved");
    Ok(())
}

/// How long a DHT query from the API may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a DHT connection may carry no request before it is closed: twice the session
/// idle timeout (default 2 min). Connections that hold a rendezvous registration (ours at
/// them, or theirs here) stay.
fn idle_limit(shared: &Shared) -> Duration {
    shared.cfg.conn.idle_timeout * 2
}

/// Whether the connection to `peer` holds a rendezvous registration (ours there, theirs
/// here): those stay open while idle, they are how a NATed node is reached.
async fn holds_registration(shared: &Shared, peer: &NodeId, conn: &quinn::Connection) -> bool {
    let theirs = match shared.core.query(Query::Registration(*peer)).await {
        Some(Answer::Registration(Some(r))) => r.0.stable_id() == conn.stable_id(),
        // Not registered; or the core is gone: the node is stopping, keep nothing for it.
        _ => false,
    };
    theirs
        || shared
            .nat
            .status
            .borrow()
            .rendezvous
            .iter()
            .any(|(_, fp)| fp.node_id() == *peer)
}

/// At the connection limit: closes the least recently used DHT connection that carried no
/// request for a handshake timeout (none is in flight) and holds no registration, so a new
/// connection can take its place. Returns whether one was closed.
pub(crate) async fn evict_idle(shared: &Shared, d: &DhtShared) -> bool {
    let quiet = shared.cfg.conn.handshake_timeout.as_millis() as u64;
    let (order, handles): (
        Vec<NodeId>,
        std::collections::HashMap<NodeId, quinn::Connection>,
    ) = {
        let conns = lock(&d.conns);
        let uses = conns
            .iter()
            .map(|(id, p)| (*id, p.used.load(Ordering::Relaxed)));
        let order = crate::node::dht_pool::eviction_order(uses, d.clock(), quiet);
        let handles = order
            .iter()
            .filter_map(|id| Some((*id, conns.get(id)?.conn.clone())));
        (order.clone(), handles.collect())
    };
    let mut victim = None;
    for id in order {
        let Some(c) = handles.get(&id) else { continue };
        if !holds_registration(shared, &id, c).await {
            victim = Some((id, c.clone()));
            break;
        }
    }
    let Some((id, conn)) = victim else {
        return false;
    };
    lock(&d.conns).remove(&id);
    conn.close(crate::session::code::NO_ERROR.into(), b"evicted");
    tracing::debug!(peer = %conn.remote_address(), "connection limit: idle DHT connection closed");
    true
}

/// The reason a node gives when it closes its connections on shutdown.
pub(crate) const SHUTDOWN_REASON: &[u8] = b"shutdown";

/// Whether a connection ended because the peer shut down (closed it with
/// [`SHUTDOWN_REASON`]), rather than by a timeout or an error.
fn said_goodbye(e: &quinn::ConnectionError) -> bool {
    matches!(e, quinn::ConnectionError::ApplicationClosed(c) if c.reason.as_ref() == SHUTDOWN_REASON)
}

/// `peer` shut down: out of our routing table at once, so that we hand it to nobody
/// (spec/04-dht.md §3).
async fn peer_left(shared: &Shared, peer: Contact) {
    let id = peer.id;
    shared.core.input(Input::DhtPeerLeft(id)).await;
    tracing::debug!(peer = %peer.addr, "DHT peer shut down: out of the routing table");
}

/// The DHT driver's bookkeeping, for `dna status` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DhtStats {
    /// Inbound requests waiting for the state machine's answer.
    pub responders: usize,
    /// API queries (announce, find, bootstrap) waiting for their result.
    pub waiters: usize,
    /// Authenticated DHT connections held for reuse.
    pub connections: usize,
    /// Inbound request streams served to their end (answered, refused or timed out).
    pub requests_served: u64,
    /// The record store: records, their cost in bytes, refusals, evictions.
    pub store: StoreStats,
}

/// The figures of `d` now.
pub(crate) async fn stats(shared: &Shared, d: &DhtShared) -> DhtStats {
    let store = match shared.core.query(Query::Dht).await {
        Some(Answer::Dht(Some(v))) => v.store,
        _ => StoreStats::default(),
    };
    DhtStats {
        responders: d.answering.load(Ordering::Relaxed),
        waiters: d.waiting.load(Ordering::Relaxed),
        connections: lock(&d.conns).len(),
        requests_served: d.served.load(Ordering::Relaxed),
        store,
    }
}

/// An inbound request waiting for the core's answer, counted while it waits (a gauge).
struct Answering<'a>(&'a DhtShared);

impl<'a> Answering<'a> {
    fn new(d: &'a DhtShared) -> Answering<'a> {
        d.answering.fetch_add(1, Ordering::Relaxed);
        Answering(d)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One live QUIC connection in the node's count (`Shared::live`, which `max_connections`
/// limits): DHT connections count like session connections.
struct Live(Arc<Shared>);

impl Live {
    fn new(shared: &Arc<Shared>) -> Live {
        shared.live.fetch_add(1, Ordering::SeqCst);
        Live(shared.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a DHT operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DhtError {
    /// The node runs without a DHT.
    #[error("this node has no DHT configured")]
    Disabled,
    /// The query did not finish in time.
    #[error("DHT query timed out")]
    Timeout,
    /// The record was refused locally.
    #[error("record refused: {0}")]
    Record(String),
}

fn frame(msg: &DhtMessage) -> BytesMut {
    let mut out = BytesMut::new();
    // DHT payloads are bounded well below the frame limit by their own limits.
    let _ = encode_frame(
        msg.msg_type(),
        0,
        &msg.encode(),
        &FrameLimits {
            max_payload: MAX_DHT_FRAME as u32,
        },
        &mut out,
    );
    out
}

fn parse(bytes: &[u8]) -> Option<DhtMessage> {
    let f = decode_exact(
        bytes,
        &FrameLimits {
            max_payload: MAX_DHT_FRAME as u32,
        },
    )
    .ok()?;
    DhtMessage::decode(f.header.msg_type, f.payload).ok()
}

/// One request to `to`; the answer goes to the state machine. Failures are left to its
/// request timeout.
pub(crate) async fn request(shared: Arc<Shared>, d: Arc<DhtShared>, to: Contact, msg: DhtMessage) {
    let timeout = shared.cfg.conn.handshake_timeout;
    let exchange = async {
        let conn = connect(&shared, &d, to).await?;
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        send.write_all(&frame(&msg)).await.ok()?;
        send.finish().ok()?;
        let bytes = recv.read_to_end(MAX_DHT_FRAME + HEADER_LEN).await.ok()?;
        parse(&bytes)
    };
    if let Ok(Some(answer)) = tokio::time::timeout(timeout, exchange).await {
        // Signatures are checked here, off the core's task.
        let msg = Checked::new(answer, unix_ms() / 1000);
        shared.core.input(Input::Dht { from: to, msg }).await;
    }
}

/// Reads the peer's HELLO frame: exactly a HELLO's size, whatever a header declares.
/// `Err(None)`: the peer went away; `Err(Some(e))`: it sent something else than a HELLO.
async fn read_hello(recv: &mut quinn::RecvStream) -> Result<Vec<u8>, Option<ConnError>> {
    let mut buf = vec![0u8; HEADER_LEN + HELLO_LEN];
    recv.read_exact(&mut buf).await.map_err(|_| None)?;
    let f = decode_exact(&buf, &FrameLimits::default()).map_err(|e| Some(e.into()))?;
    if f.header.msg_type != MessageType::Hello {
        return Err(Some(ConnError::UnexpectedFrame {
            msg_type: f.header.msg_type,
            state: "DHT handshake",
        }));
    }
    Ok(f.payload.to_vec())
}

/// Closes `conn` for `e` and scores its address, as the session path does for a failed
/// handshake (spec/03 §8): before HELLO verified, the address is all we know.
async fn refuse(shared: &Shared, conn: &quinn::Connection, e: &ConnError) {
    let addr = conn.remote_address();
    tracing::warn!(%addr, error = %e, "DHT peer failed its handshake");
    let penalty = e.penalty();
    // Scored before the close goes out (the core takes commands in order).
    let amount = penalty;
    shared
        .core
        .input(Input::PenalizeSource { addr, amount })
        .await;
    conn.close(e.code().into(), e.to_string().as_bytes());
}

fn exporter(conn: &quinn::Connection) -> Option<[u8; EXPORTER_LEN]> {
    let mut e = [0u8; EXPORTER_LEN];
    conn.export_keying_material(&mut e, EXPORTER_LABEL, b"")
        .ok()?;
    Some(e)
}

fn hello_frame(shared: &Shared, exporter: &[u8; EXPORTER_LEN], role: Role) -> BytesMut {
    let mut out = BytesMut::new();
    let _ = encode_frame(
        MessageType::Hello,
        0,
        &hello(&shared.identity, exporter, role),
        &FrameLimits::default(),
        &mut out,
    );
    out
}

/// The pooled connection to `id`, if it is open.
fn pooled(d: &DhtShared, id: &NodeId) -> Option<quinn::Connection> {
    let conns = lock(&d.conns);
    let p = conns.get(id)?;
    if p.conn.close_reason().is_some() {
        return None;
    }
    p.used.store(d.clock(), Ordering::Relaxed);
    Some(p.conn.clone())
}

/// A proven DHT connection to `to`: reused, or dialed and authenticated now. One dial per
/// peer at a time: callers that come while one is in progress wait for it and reuse its
/// connection (the join at start and the daemon's own join opened two connections to each
/// bootstrap node before, counted twice against its connection limit).
pub(crate) async fn connect(
    shared: &Arc<Shared>,
    d: &Arc<DhtShared>,
    to: Contact,
) -> Option<quinn::Connection> {
    if let Some(c) = pooled(d, &to.id) {
        return Some(c);
    }
    let gate = lock(&d.dialing).entry(to.id).or_default().clone();
    let turn = gate.lock().await;
    let conn = match pooled(d, &to.id) {
        Some(c) => Some(c),
        None => dial(shared, d, to).await,
    };
    drop(turn);
    let mut dialing = lock(&d.dialing);
    // The map's reference and ours: nobody else waits.
    if Arc::strong_count(&gate) <= 2 {
        dialing.remove(&to.id);
    }
    conn
}

/// Dials `to`, authenticates it and pools the connection.
async fn dial(shared: &Arc<Shared>, d: &Arc<DhtShared>, to: Contact) -> Option<quinn::Connection> {
    let conn = shared
        .endpoint
        .connect_with(d.client_cfg.clone(), to.addr, SERVER_NAME)
        .ok()?
        .await
        .ok()?;
    let live = Live::new(shared);
    let ex = exporter(&conn)?;
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    send.write_all(&hello_frame(shared, &ex, Role::Dialer))
        .await
        .ok()?;
    let _ = send.finish();
    let theirs = match read_hello(&mut recv).await {
        Ok(h) => h,
        Err(e) => {
            if let Some(e) = e {
                refuse(shared, &conn, &e).await;
            }
            return None;
        }
    };
    match verify_hello_node(&theirs, &ex, Role::Dialer, to.id) {
        Ok(_) => {}
        // Someone else at a contact's address (a stale or planted contact): not its fault,
        // and scoring it would let a liar get innocent addresses banned.
        Err(e @ HelloError::UnexpectedNode { .. }) => {
            tracing::debug!(addr = %to.addr, error = %e, "DHT contact is someone else now");
            conn.close(crate::session::code::AUTH_FAILED.into(), b"auth");
            return None;
        }
        Err(e) => {
            refuse(shared, &conn, &ConnError::Auth(e)).await;
            return None;
        }
    }
    let used = pool(d, to.id, &conn);
    tokio::spawn(serve(
        shared.clone(),
        d.clone(),
        conn.clone(),
        to,
        live,
        used,
    ));
    Some(conn)
}

/// Puts an authenticated connection in the pool; its use clock, starting now.
fn pool(d: &DhtShared, peer: NodeId, conn: &quinn::Connection) -> Arc<AtomicU64> {
    let used = Arc::new(AtomicU64::new(d.clock()));
    let pooled = Pooled {
        conn: conn.clone(),
        used: used.clone(),
    };
    lock(&d.conns).insert(peer, pooled);
    used
}

/// An inbound DHT connection: HELLO, then serve its requests. It counts as a live
/// connection from here on; a failed or late HELLO is scored against its address.
pub(crate) async fn accept(shared: Arc<Shared>, d: Arc<DhtShared>, conn: quinn::Connection) {
    let live = Live::new(&shared);
    let run = async {
        let ex = exporter(&conn).ok_or(None)?;
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|_| None)?;
        let theirs = read_hello(&mut recv).await?;
        let pk = verify_hello(&theirs, &ex, Role::Listener, None)
            .map_err(|e| Some(ConnError::Auth(e)))?;
        send.write_all(&hello_frame(&shared, &ex, Role::Listener))
            .await
            .map_err(|_| None)?;
        let _ = send.finish();
        let peer = Contact {
            id: pk.fingerprint().node_id(),
            addr: conn.remote_address(),
        };
        Ok::<_, Option<ConnError>>(peer)
    };
    let timeout = shared.cfg.conn.handshake_timeout;
    let failure = match tokio::time::timeout(timeout, run).await {
        Ok(Ok(peer)) => {
            let used = pool(&d, peer.id, &conn);
            return serve(shared, d, conn, peer, live, used).await;
        }
        Ok(Err(e)) => e,
        Err(_) => Some(ConnError::HandshakeTimeout {
            ms: timeout.as_millis() as u64,
        }),
    };
    if let Some(e) = failure {
        refuse(&shared, &conn, &e).await;
    }
}

/// Answers the requests `peer` sends on `conn`, one stream each, and closes the
/// connection once it carried no request (either way) for [`idle_limit`].
/// `_live` keeps the connection in the node's count until it ends.
async fn serve(
    shared: Arc<Shared>,
    d: Arc<DhtShared>,
    conn: quinn::Connection,
    peer: Contact,
    _live: Live,
    used: Arc<AtomicU64>,
) {
    let idle = idle_limit(&shared);
    loop {
        let quiet = Duration::from_millis(d.clock().saturating_sub(used.load(Ordering::Relaxed)));
        let stream = tokio::select! {
            s = conn.accept_bi() => s,
            _ = tokio::time::sleep(idle.saturating_sub(quiet)) => {
                let quiet = d.clock().saturating_sub(used.load(Ordering::Relaxed));
                if Duration::from_millis(quiet) >= idle
                    && !holds_registration(&shared, &peer.id, &conn).await
                {
                    conn.close(crate::session::code::NO_ERROR.into(), b"idle");
                    break;
                }
                // Used meanwhile, or held for a registration: look again later.
                if Duration::from_millis(quiet) >= idle {
                    used.store(d.clock(), Ordering::Relaxed);
                }
                continue;
            }
        };
        let (mut send, mut recv) = match stream {
            Ok(s) => s,
            Err(e) => {
                if said_goodbye(&e) {
                    peer_left(&shared, peer).await;
                }
                break;
            }
        };
        used.store(d.clock(), Ordering::Relaxed);
        let d = d.clone();
        let (shared, conn) = (shared.clone(), conn.clone());
        let timeout = shared.cfg.conn.handshake_timeout;
        tokio::spawn(async move {
            let answer = async {
                let bytes = recv.read_to_end(MAX_DHT_FRAME + HEADER_LEN).await.ok()?;
                if super::signal_frames::is_signalling(&bytes) {
                    // The rendezvous task serves it; a full queue drops (resets) the stream.
                    let s = SignalStream {
                        conn: conn.clone(),
                        peer,
                        bytes: bytes.to_vec(),
                        send,
                    };
                    if shared.signalling.try_send(s).is_err() {
                        tracing::debug!(peer = %peer.addr, "signalling queue full: stream dropped");
                    }
                    return Some(());
                }
                let msg = parse(&bytes)?;
                if !msg.is_request() {
                    return None;
                }
                let _answering = Answering::new(&d);
                // A STORE's signature is checked here, off the core's task.
                let msg = Checked::new(msg, unix_ms() / 1000);
                let (reply, rx) = oneshot::channel();
                let inbound = CoreCmd::DhtInbound {
                    from: peer,
                    msg,
                    reply,
                };
                if !shared.core.send(inbound).await {
                    return None;
                }
                let answer = rx.await.ok()?;
                send.write_all(&frame(&answer)).await.ok()?;
                send.finish().ok()
            };
            let _ = tokio::time::timeout(timeout, answer).await;
            d.served.fetch_add(1, Ordering::Relaxed);
        });
    }
    lock(&d.conns).retain(|_, p| p.conn.stable_id() != conn.stable_id());
}

/// Starts a query in the core task and waits for its event.
pub(crate) async fn query(shared: &Shared, query: DhtQuery) -> Result<DhtEvent, DhtError> {
    let (reply, rx) = oneshot::channel();
    if !shared.core.send(CoreCmd::DhtQuery { query, reply }).await {
        return Err(DhtError::Timeout);
    }
    match tokio::time::timeout(QUERY_TIMEOUT, rx).await {
        Ok(Ok(ev)) => Ok(ev),
        _ => Err(DhtError::Timeout),
    }
}

/// The sequence number for the next record this node signs (the core keeps the last one).
pub(crate) async fn next_record_seq(shared: &Shared) -> Result<u64, DhtError> {
    let unix_ms = unix_ms();
    match shared.core.ask(Input::NextRecordSeq { unix_ms }).await {
        Some(Reply::Seq(seq)) => Ok(seq),
        _ => Err(DhtError::Timeout),
    }
}

/// Signs and stores our presence record (value: what peers need to reach us). Returns how
/// many nodes hold it.
pub(crate) async fn announce(shared: &Shared, value: Vec<u8>) -> Result<usize, DhtError> {
    let now_s = unix_ms() / 1000;
    let seq = next_record_seq(shared).await?;
    let lifetime = shared.cfg.presence_refresh * super::config::PRESENCE_LIFETIMES;
    let record = Record::sign(
        &shared.identity,
        RecordKind::Presence,
        seq,
        now_s + lifetime.as_secs().max(1),
        value,
        now_s,
    )
    .map_err(|e| DhtError::Record(e.to_string()))?;
    // Signed here: encoded off the core's task, nothing to verify.
    let record = VerifiedRecord::from_record(&record);
    match query(shared, DhtQuery::Put(record)).await? {
        DhtEvent::Put { stored_at, .. } => Ok(stored_at),
        _ => Err(DhtError::Timeout),
    }
}

/// The newest valid presence record of `peer`, or `None` ("offline").
pub(crate) async fn find_peer(
    shared: &Shared,
    peer: Fingerprint,
) -> Result<Option<Record>, DhtError> {
    let key = presence_key(&peer);
    let ev = query(shared, DhtQuery::FindValue(key)).await?;
    let DhtEvent::FoundValue { records, .. } = ev else {
        return Ok(None);
    };
    let now_s = unix_ms() / 1000;
    Ok(records
        .iter()
        .filter_map(|b| Record::verify(b, now_s).ok())
        .filter(|r| r.publisher().fingerprint() == peer)
        .max_by_key(|r| r.seq()))
}

/// Joins through the configured bootstrap nodes.
pub(crate) async fn bootstrap(shared: &Shared, seeds: Vec<Contact>) -> Result<usize, DhtError> {
    match query(shared, DhtQuery::Bootstrap(seeds)).await? {
        DhtEvent::Bootstrapped { table_size, .. } => Ok(table_size),
        _ => Ok(0),
    }
}

/// Seeds from `address + fingerprint` pairs.
pub(crate) fn seeds(list: &[(SocketAddr, Fingerprint)]) -> Vec<Contact> {
    list.iter()
        .map(|(addr, fp)| Contact {
            id: fp.node_id(),
            addr: *addr,
        })
        .collect()
}

//! The DHT over the transport (spec/04-dht.md §5.1): the sans-IO [`Dht`] driven on the
//! node's QUIC endpoint and socket.
//!
//! DHT connections use ALPN `dna-dht/1`. The dialer opens the first stream and both sides
//! send HELLO (spec/03 §2) on it; the dialer requires the peer's fingerprint to start with
//! the contact's 160-bit node ID, so every routing-table entry is a proven identity. After
//! that, each request is one bidirectional stream: the request frame, FIN; the answer frame,
//! FIN. Either side may ask.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::{oneshot, Notify};

use super::node::{lock, unix_ms, Shared};
use crate::crypto::record::{presence_key, RecordKind};
use crate::crypto::{Fingerprint, NodeId, Record};
use crate::dht::{Contact, Dht, DhtEvent, DhtMessage, QueryId, Transmit};
use crate::session::hello::{
    hello, verify_hello, verify_hello_node, Role, EXPORTER_LABEL, EXPORTER_LEN, HELLO_LEN,
};
use crate::transport::tls::SERVER_NAME;
use crate::wire::{decode_exact, encode_frame, FrameLimits, MessageType, HEADER_LEN};

/// The largest DHT frame read (a VALUE with 8 maximal records fits).
const MAX_DHT_FRAME: usize = 1 << 20;
/// How often the table and records are saved.
const SAVE_EVERY: Duration = Duration::from_secs(30);

/// Saves the table and records, if this node persists them.
pub(crate) fn save(d: &DhtShared) {
    if let Some(p) = lock(&d.persist).as_ref() {
        let dht = lock(&d.dht);
        if let Err(e) = p.save(&dht) {
            tracing::warn!(error = %e, "saving the DHT state failed");
        }
    }
}

/// Saves one last time and closes the database.
pub(crate) fn close(d: &DhtShared) {
    save(d);
    lock(&d.persist).take();
}

/// How long a DHT query from the API may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// DHT state shared by the node's tasks.
pub(crate) struct DhtShared {
    pub(crate) dht: Mutex<Dht>,
    /// Taken (saved and closed) at shutdown: sled holds a lock on its files while open.
    persist: Mutex<Option<super::dht_persist::Persist>>,
    pub(crate) wake: Notify,
    pub(crate) client_cfg: quinn::ClientConfig,
    conns: Mutex<HashMap<NodeId, quinn::Connection>>,
    responders: Mutex<HashMap<(NodeId, u64), oneshot::Sender<DhtMessage>>>,
    waiters: Mutex<HashMap<QueryId, oneshot::Sender<DhtEvent>>>,
    last_seq: Mutex<u64>,
    /// Inbound request streams whose serving task ended (answered, refused or timed out).
    served: AtomicU64,
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
    /// Records held.
    pub records: usize,
}

/// The figures of `d` now.
pub(crate) fn stats(d: &DhtShared) -> DhtStats {
    DhtStats {
        responders: lock(&d.responders).len(),
        waiters: lock(&d.waiters).len(),
        connections: lock(&d.conns).len(),
        requests_served: d.served.load(Ordering::Relaxed),
        records: lock(&d.dht).store().len(),
    }
}

impl DhtShared {
    pub(crate) fn new(
        mut dht: Dht,
        client_cfg: quinn::ClientConfig,
        persist: Option<super::dht_persist::Persist>,
        now: Instant,
    ) -> DhtShared {
        if let Some(p) = &persist {
            let (contacts, records) = p.load();
            let (n_contacts, n_records) = (contacts.len(), records.len());
            for c in contacts {
                dht.add_contact(c, now);
            }
            let kept = records
                .iter()
                .filter(|r| dht.restore_record(r, now).is_ok())
                .count();
            tracing::info!(
                contacts = n_contacts,
                records = n_records,
                kept,
                "DHT state loaded"
            );
        }
        DhtShared {
            persist: Mutex::new(persist),
            dht: Mutex::new(dht),
            wake: Notify::new(),
            client_cfg,
            conns: Mutex::new(HashMap::new()),
            responders: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            last_seq: Mutex::new(0),
            served: AtomicU64::new(0),
        }
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

/// Runs the state machine's timers and sends what it wants sent. One per node.
pub(crate) async fn driver(shared: Arc<Shared>, d: Arc<DhtShared>) {
    let mut next_save = Instant::now() + SAVE_EVERY;
    loop {
        let deadline = tokio::time::Instant::from_std(lock(&d.dht).poll_timeout().min(next_save));
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = d.wake.notified() => {}
        }
        if shared.stopped.load(Ordering::Relaxed) {
            save(&d);
            return;
        }
        if Instant::now() >= next_save {
            save(&d);
            next_save = Instant::now() + SAVE_EVERY;
        }
        let now = Instant::now();
        let (transmits, events) = {
            let mut dht = lock(&d.dht);
            if now >= dht.poll_timeout() {
                dht.handle_timeout(now);
            }
            (
                std::iter::from_fn(|| dht.poll_transmit()).collect::<Vec<_>>(),
                std::iter::from_fn(|| dht.poll_event()).collect::<Vec<_>>(),
            )
        };
        for t in transmits {
            route(&shared, &d, t);
        }
        let mut waiters = lock(&d.waiters);
        for ev in events {
            let q = match &ev {
                DhtEvent::FoundNodes { query, .. }
                | DhtEvent::FoundValue { query, .. }
                | DhtEvent::Put { query, .. }
                | DhtEvent::Bootstrapped { query, .. } => *query,
            };
            if let Some(w) = waiters.remove(&q) {
                let _ = w.send(ev);
            }
        }
    }
}

fn route(shared: &Arc<Shared>, d: &Arc<DhtShared>, t: Transmit) {
    if t.msg.is_request() {
        tokio::spawn(request(shared.clone(), d.clone(), t.to, t.msg));
    } else if let Some(tx) = lock(&d.responders).remove(&(t.to.id, t.msg.id)) {
        let _ = tx.send(t.msg);
    }
}

/// One request to `to`; the answer goes to the state machine. Failures are left to its
/// request timeout.
async fn request(shared: Arc<Shared>, d: Arc<DhtShared>, to: Contact, msg: DhtMessage) {
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
        lock(&d.dht).handle_message(Instant::now(), to, answer);
        d.wake.notify_one();
    }
}

async fn read_hello(recv: &mut quinn::RecvStream) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; HEADER_LEN + HELLO_LEN];
    recv.read_exact(&mut buf).await.ok()?;
    let f = decode_exact(&buf, &FrameLimits::default()).ok()?;
    (f.header.msg_type == MessageType::Hello).then(|| f.payload.to_vec())
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

/// A proven DHT connection to `to`: reused, or dialed and authenticated now.
pub(crate) async fn connect(
    shared: &Arc<Shared>,
    d: &Arc<DhtShared>,
    to: Contact,
) -> Option<quinn::Connection> {
    if let Some(c) = lock(&d.conns).get(&to.id) {
        if c.close_reason().is_none() {
            return Some(c.clone());
        }
    }
    let conn = shared
        .endpoint
        .connect_with(d.client_cfg.clone(), to.addr, SERVER_NAME)
        .ok()?
        .await
        .ok()?;
    let ex = exporter(&conn)?;
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    send.write_all(&hello_frame(shared, &ex, Role::Dialer))
        .await
        .ok()?;
    let _ = send.finish();
    let theirs = read_hello(&mut recv).await?;
    if let Err(e) = verify_hello_node(&theirs, &ex, Role::Dialer, to.id) {
        tracing::warn!(addr = %to.addr, error = %e, "DHT peer failed authentication");
        conn.close(crate::session::code::AUTH_FAILED.into(), b"auth");
        return None;
    }
    lock(&d.conns).insert(to.id, conn.clone());
    tokio::spawn(serve(shared.clone(), d.clone(), conn.clone(), to));
    Some(conn)
}

/// An inbound DHT connection: HELLO, then serve its requests.
pub(crate) async fn accept(shared: Arc<Shared>, d: Arc<DhtShared>, conn: quinn::Connection) {
    let run = async {
        let ex = exporter(&conn)?;
        let (mut send, mut recv) = conn.accept_bi().await.ok()?;
        let theirs = read_hello(&mut recv).await?;
        let pk = match verify_hello(&theirs, &ex, Role::Listener, None) {
            Ok(pk) => pk,
            Err(e) => {
                tracing::warn!(addr = %conn.remote_address(), error = %e, "DHT peer failed authentication");
                conn.close(crate::session::code::AUTH_FAILED.into(), b"auth");
                return None;
            }
        };
        send.write_all(&hello_frame(&shared, &ex, Role::Listener))
            .await
            .ok()?;
        let _ = send.finish();
        let peer = Contact {
            id: pk.fingerprint().node_id(),
            addr: conn.remote_address(),
        };
        lock(&d.conns).insert(peer.id, conn.clone());
        Some(peer)
    };
    if let Ok(Some(peer)) = tokio::time::timeout(shared.cfg.conn.handshake_timeout, run).await {
        serve(shared, d, conn, peer).await;
    }
}

/// Answers the requests `peer` sends on `conn`, one stream each.
async fn serve(shared: Arc<Shared>, d: Arc<DhtShared>, conn: quinn::Connection, peer: Contact) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let d = d.clone();
        let (shared, conn) = (shared.clone(), conn.clone());
        let timeout = shared.cfg.conn.handshake_timeout;
        tokio::spawn(async move {
            let answer = async {
                let bytes = recv.read_to_end(MAX_DHT_FRAME + HEADER_LEN).await.ok()?;
                if super::rendezvous::is_signalling(&bytes) {
                    super::rendezvous::serve_stream(&shared, &conn, peer, &bytes, send).await;
                    return Some(());
                }
                let msg = parse(&bytes)?;
                if !msg.is_request() {
                    return None;
                }
                let (tx, rx) = oneshot::channel();
                lock(&d.responders).insert((peer.id, msg.id), tx);
                lock(&d.dht).handle_message(Instant::now(), peer, msg);
                d.wake.notify_one();
                let answer = rx.await.ok()?;
                send.write_all(&frame(&answer)).await.ok()?;
                send.finish().ok()
            };
            let _ = tokio::time::timeout(timeout, answer).await;
            d.served.fetch_add(1, Ordering::Relaxed);
        });
    }
    lock(&d.conns).retain(|_, c| c.stable_id() != conn.stable_id());
}

/// Starts a query under the DHT lock and waits for its event.
pub(crate) async fn query(
    d: &DhtShared,
    start: impl FnOnce(&mut Dht, Instant) -> QueryId,
) -> Result<DhtEvent, DhtError> {
    let rx = {
        let mut dht = lock(&d.dht);
        let q = start(&mut dht, Instant::now());
        let (tx, rx) = oneshot::channel();
        lock(&d.waiters).insert(q, tx);
        rx
    };
    d.wake.notify_one();
    match tokio::time::timeout(QUERY_TIMEOUT, rx).await {
        Ok(Ok(ev)) => Ok(ev),
        _ => Err(DhtError::Timeout),
    }
}

/// Signs and stores our presence record (value: what peers need to reach us). Returns how
/// many nodes hold it.
pub(crate) async fn announce(
    shared: &Shared,
    d: &DhtShared,
    value: Vec<u8>,
) -> Result<usize, DhtError> {
    let now_s = unix_ms() / 1000;
    let seq = {
        let mut last = lock(&d.last_seq);
        *last = (*last + 1).max(unix_ms());
        *last
    };
    let record = Record::sign(
        &shared.identity,
        RecordKind::Presence,
        seq,
        now_s + 3000,
        value,
        now_s,
    )
    .map_err(|e| DhtError::Record(e.to_string()))?;
    let bytes = record.encode();
    let rx = {
        let mut dht = lock(&d.dht);
        let q = dht
            .put(bytes, Instant::now())
            .map_err(|e| DhtError::Record(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        lock(&d.waiters).insert(q, tx);
        rx
    };
    d.wake.notify_one();
    match tokio::time::timeout(QUERY_TIMEOUT, rx).await {
        Ok(Ok(DhtEvent::Put { stored_at, .. })) => Ok(stored_at),
        Ok(Ok(_)) => Err(DhtError::Timeout),
        _ => Err(DhtError::Timeout),
    }
}

/// The newest valid presence record of `peer`, or `None` ("offline").
pub(crate) async fn find_peer(
    d: &DhtShared,
    peer: Fingerprint,
) -> Result<Option<Record>, DhtError> {
    let key = presence_key(&peer);
    let ev = query(d, |dht, now| dht.find_value(key, now)).await?;
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
pub(crate) async fn bootstrap(d: &DhtShared, seeds: Vec<Contact>) -> Result<usize, DhtError> {
    match query(d, |dht, now| dht.bootstrap(seeds, now)).await? {
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

//! Driving one QUIC connection: the session stream's reader and writer, the stream guard,
//! and the loop that feeds the sans-IO [`Connection`] with bytes and time
//! (spec/03-session.md §3–§8). Also the dial loop with its backoff, and the limits of
//! spec/06-node.md "Transport limits": the write budget shared by every frame, the stalled
//! writer reported to the core, scoring of handshake failures by source, redial backoff.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand_chacha::ChaCha20Rng;
use rand_core::OsRng;
use rand_core::SeedableRng;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::crypto::Fingerprint;
use crate::session::hello::{EXPORTER_LABEL, EXPORTER_LEN};
use crate::session::{code, ConnError, ConnEvent, Connection};
use crate::transport::tls::SERVER_NAME;

use super::events::{NodeEvent, Path};
use super::state::{sub, ConnHandle, NodeHandle, Peers, Shared, TransportStats};
use super::store::{Cmd, Stored};
use super::util::lock;
use crate::node::peers::Registration;

impl NodeHandle {
    /// The connection drivers' counters.
    pub fn transport_stats(&self) -> TransportStats {
        let c = &self.shared.conn_counters;
        TransportStats {
            write_queued: c.write_queued.load(Ordering::Relaxed),
            write_queued_peak: c.write_queued_peak.load(Ordering::Relaxed),
            scored_sources: lock(&self.shared.scores).sources(),
        }
    }
}

/// Why a connection ended, from the driver's point of view.
enum End {
    /// The protocol found the peer at fault (or timed out).
    Protocol(ConnError),
    /// The peer opened too many streams.
    StreamFlood,
    /// The peer is banned.
    Banned,
    /// Lost the duplicate-connection tie-break.
    Duplicate,
    /// Closed by either side, or the network: nobody to blame here.
    Closed(String),
}

impl End {
    fn code(&self) -> u32 {
        match self {
            End::Protocol(e) => e.code(),
            End::StreamFlood => code::STREAM_LIMIT,
            End::Banned => code::BANNED,
            End::Duplicate => code::DUPLICATE_CONNECTION,
            End::Closed(_) => code::NO_ERROR,
        }
    }

    fn penalty(&self) -> i32 {
        match self {
            End::Protocol(e) => e.penalty(),
            End::StreamFlood => 50,
            _ => 0,
        }
    }

    fn reason(&self) -> String {
        match self {
            End::Protocol(e) => e.to_string(),
            End::StreamFlood => "too many streams".to_owned(),
            End::Banned => "banned".to_owned(),
            End::Duplicate => "duplicate connection".to_owned(),
            End::Closed(r) => r.clone(),
        }
    }
}

/// The delay before redialing a peer after a dialed connection failed before it was
/// established, given the delay after the previous such failure (`prev`, zero if none):
/// the normal backoff, doubling from `initial` to `max` — and `max` at once when the address
/// answered with another identity than the one dialed (spec/06-node.md).
pub(crate) fn next_redial(
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

/// Starts a dial task for `peer` if it needs a connection and none is being made.
pub(crate) fn ensure_dialing(
    shared: &Arc<Shared>,
    peers: &mut Peers,
    fp: Fingerprint,
    delay: Duration,
) {
    if shared.stopped.load(Ordering::Relaxed) {
        return;
    }
    let p = peers.entry(fp);
    if p.dialing || !p.needs_connection() {
        return;
    }
    p.dialing = true;
    tokio::spawn(dial_loop(shared.clone(), fp, delay));
}

/// Tries `peer`'s addresses, except banned ones, until a QUIC connection is up, waiting
/// `delay` first and then 1, 2, 4 … up to the configured maximum between rounds.
pub(crate) async fn dial_loop(shared: Arc<Shared>, peer: Fingerprint, mut delay: Duration) {
    loop {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let addrs = {
            let mut peers = lock(&shared.peers);
            let Some(p) = peers.get_mut(&peer) else {
                return;
            };
            if shared.stopped.load(Ordering::Relaxed) || !p.needs_connection() {
                p.dialing = false;
                return;
            }
            p.addrs.clone()
        };
        for addr in addrs {
            if lock(&shared.scores).addr_banned(&addr) {
                tracing::debug!(%peer, %addr, "banned address: not dialing it");
                continue;
            }
            let connecting =
                match shared
                    .endpoint
                    .connect_with(shared.client_cfg.clone(), addr, SERVER_NAME)
                {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(%peer, %addr, error = %e, "cannot dial");
                        continue;
                    }
                };
            match tokio::time::timeout(shared.cfg.conn.handshake_timeout, connecting).await {
                Ok(Ok(conn)) => {
                    // Still "dialing" until the connection registers or ends (drive clears
                    // it), so no second dial starts while HELLO is on its way.
                    tokio::spawn(drive(shared.clone(), conn, Some(peer)));
                    return;
                }
                Ok(Err(e)) => tracing::debug!(%peer, %addr, error = %e, "dial failed"),
                Err(_) => tracing::debug!(%peer, %addr, "dial timed out"),
            }
        }
        delay = if delay.is_zero() {
            shared.cfg.reconnect_initial
        } else {
            (delay * 2).min(shared.cfg.reconnect_max)
        };
    }
}

/// Runs one connection to its end, then cleans up: unacknowledged messages go back to the
/// outbox, the peer is scored if it misbehaved, and a reconnect is scheduled if wanted.
/// `expected` is the peer we dialed (`None`: we accepted).
pub(crate) async fn drive(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    expected: Option<Fingerprint>,
) {
    shared.live.fetch_add(1, Ordering::SeqCst);
    let conn_id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let remote = conn.remote_address();
    let mut st = State {
        peer: None,
        established: false,
        received: 0,
        unstored: 0,
        registered: false,
    };
    let end = run(&shared, &conn, conn_id, expected, &mut st).await;
    shared.live.fetch_sub(1, Ordering::SeqCst);
    let code = end.code();
    // Scored before the close goes out: a peer reconnecting on seeing it finds its score.
    {
        let penalty = end.penalty();
        let mut scores = lock(&shared.scores);
        if let Some(peer) = st.peer {
            scores.penalize_peer(peer, penalty);
        }
        // The source answers for what happened too, before and after the session is
        // established: identities are free to make, addresses are not, so a stream of
        // fresh identities from one source ends in a ban of the source.
        scores.penalize_source(remote, penalty);
    }
    if code != code::NO_ERROR {
        tracing::warn!(peer = ?st.peer, %remote, code, reason = %end.reason(), "closing connection");
        conn.close(code.into(), end.reason().as_bytes());
    }
    {
        let mut peers = lock(&shared.peers);
        if let Some(peer) = st.peer {
            peers.connection_ended(peer, conn_id);
        }
        if let (Some(dialed), false) = (expected, st.registered) {
            peers.entry(dialed).dialing = false;
        }
        // Redial with backoff: a connection that failed before it was established (HELLO
        // refused, handshake timed out or closed) doubles the delay; success resets it.
        let failed = !st.established && !matches!(end, End::Duplicate | End::Banned);
        let wrong_identity = matches!(&end, End::Protocol(e) if e.is_wrong_identity());
        let (initial, max) = (shared.cfg.reconnect_initial, shared.cfg.reconnect_max);
        let scores = lock(&shared.scores);
        let mut redial = [st.peer, expected];
        if redial[0] == redial[1] {
            redial[1] = None;
        }
        for fp in redial.into_iter().flatten() {
            if scores.peer_banned(&fp) {
                continue;
            }
            let p = peers.entry(fp);
            if st.established {
                p.redial = Duration::ZERO;
            } else if failed {
                p.redial = next_redial(p.redial, wrong_identity, initial, max);
            }
            let delay = p.redial.max(initial);
            ensure_dialing(&shared, &mut peers, fp, delay);
        }
    }
    let Some(peer) = st.peer else { return };
    if st.established {
        let _ = shared
            .events
            .send(NodeEvent::PeerDown {
                peer,
                code,
                reason: end.reason(),
            })
            .await;
    }
}

struct State {
    peer: Option<Fingerprint>,
    established: bool,
    /// Messages received on this connection (the next one's session counter).
    received: u64,
    /// Received messages handed to the store and not yet confirmed stored.
    unstored: u64,
    /// The connection became the peer's live one (which also ends our dial).
    registered: bool,
}

/// Reads whatever the stream has ready — up to 32 received segments, zero-copy — per hop.
async fn read_loop(mut recv: quinn::RecvStream, tx: mpsc::Sender<Vec<Bytes>>) {
    const SEGMENTS: usize = 32;
    let mut bufs: [Bytes; SEGMENTS] = std::array::from_fn(|_| Bytes::new());
    loop {
        match recv.read_chunks(&mut bufs).await {
            Ok(Some(n)) => {
                let batch = bufs[..n].iter_mut().map(std::mem::take).collect();
                if tx.send(batch).await.is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}

/// The writer's side of the budget: bytes handed to it and not yet taken by the stream
/// (`queued`), and all bytes the stream took (`written`: progress, also partial).
#[derive(Default)]
struct Writer {
    queued: AtomicUsize,
    written: AtomicU64,
}

/// Hands queued chunks to the stream as fast as its flow control lets them go. Partial
/// writes count as progress, so a slow reader is told from one that reads nothing.
async fn write_loop(
    shared: Arc<Shared>,
    mut send: quinn::SendStream,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    writer: Arc<Writer>,
    progress: Arc<Notify>,
) {
    /// Whatever is still queued when the writer ends (or is aborted) leaves the counters.
    struct Release(Arc<Shared>, Arc<Writer>);
    impl Drop for Release {
        fn drop(&mut self) {
            let left = self.1.queued.swap(0, Ordering::Relaxed);
            self.0.conn_counters.written(left);
        }
    }
    let _release = Release(shared.clone(), writer.clone());
    while let Some(mut chunk) = rx.recv().await {
        while !chunk.is_empty() {
            let n = match send.write_chunks(std::slice::from_mut(&mut chunk)).await {
                Ok(w) => w.bytes,
                Err(_) => return,
            };
            sub(&writer.queued, n);
            writer.written.fetch_add(n as u64, Ordering::Relaxed);
            shared.conn_counters.written(n);
            progress.notify_one();
        }
    }
    let _ = send.finish();
}

/// Accepts and refuses every stream beyond the session stream; too many ends the connection.
async fn stream_guard(conn: quinn::Connection, max_extra: u32, flood: oneshot::Sender<()>) {
    let mut extra = 0u32;
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        extra += 1;
        let _ = recv.stop(0u32.into());
        let _ = send.reset(0u32.into());
        if extra > max_extra {
            let _ = flood.send(());
            return;
        }
    }
}

async fn run(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    conn_id: u64,
    expected: Option<Fingerprint>,
    st: &mut State,
) -> End {
    let cfg = &shared.cfg;
    let mut exporter = [0u8; EXPORTER_LEN];
    if conn
        .export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
        .is_err()
    {
        return End::Closed("TLS exporter unavailable".to_owned());
    }
    let stream = match expected {
        Some(_) => conn.open_bi().await,
        None => match tokio::time::timeout(cfg.conn.handshake_timeout, conn.accept_bi()).await {
            Ok(r) => r,
            Err(_) => {
                return End::Protocol(ConnError::HandshakeTimeout {
                    ms: cfg.conn.handshake_timeout.as_millis() as u64,
                })
            }
        },
    };
    let (send, recv) = match stream {
        Ok(s) => s,
        Err(e) => return End::Closed(e.to_string()),
    };
    let rng = match ChaCha20Rng::from_rng(OsRng) {
        Ok(r) => r,
        Err(e) => return End::Closed(format!("OS RNG: {e}")),
    };
    let now = Instant::now();
    let identity = shared.identity.clone();
    let mut core = match expected {
        Some(peer) => Connection::dial(
            conn_id,
            now,
            identity,
            exporter,
            peer,
            cfg.conn.clone(),
            rng,
        ),
        None => Connection::accept(conn_id, now, identity, exporter, cfg.conn.clone(), rng),
    };

    let (chunk_tx, mut chunk_rx) = mpsc::channel::<Vec<Bytes>>(64);
    // Unbounded in chunks, bounded in bytes: `flush` queues nothing while the writer holds
    // the write budget (`write_high_water`), so it holds at most that plus one flush.
    let (write_tx, write_rx) = mpsc::unbounded_channel::<Bytes>();
    let writer = Arc::new(Writer::default());
    let mut written = 0u64;
    let progress = Arc::new(Notify::new());
    let (flood_tx, mut flood_rx) = oneshot::channel();
    let tasks = [
        tokio::spawn(read_loop(recv, chunk_tx)),
        tokio::spawn(write_loop(
            shared.clone(),
            send,
            write_rx,
            writer.clone(),
            progress.clone(),
        )),
        tokio::spawn(stream_guard(conn.clone(), cfg.max_extra_streams, flood_tx)),
    ];
    let wake = Arc::new(Notify::new());
    let (stored_tx, mut stored_rx) = mpsc::unbounded_channel::<Stored>();
    // Received messages waiting for the store before no more input is read.
    let max_unstored = cfg.conn.max_inflight.max(1);
    let mut presence_sent = None;
    let mut out = BytesMut::new();
    // These futures live across passes: made anew each pass, they locked quinn's connection
    // state (`closed`), the timer wheel and the Notify lists every time.
    let closed = conn.closed();
    tokio::pin!(closed);
    let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(core.poll_timeout()));
    tokio::pin!(sleep);
    let woken = wake.notified();
    tokio::pin!(woken);
    let progressed = progress.notified();
    tokio::pin!(progressed);
    let end = loop {
        // Output first: HELLO leaves before anything is read.
        if let Err(end) = flush(
            shared,
            &mut core,
            st,
            &writer.queued,
            &mut out,
            &write_tx,
            &mut presence_sent,
        ) {
            break end;
        }
        // The core times a writer that has bytes waiting and moves none (SLOW_READER).
        let now_written = writer.written.load(Ordering::Relaxed);
        core.handle_writer(
            Instant::now(),
            writer.queued.load(Ordering::Relaxed) > 0,
            now_written != written,
        );
        written = now_written;
        let deadline = tokio::time::Instant::from_std(core.poll_timeout());
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        let step = tokio::select! {
            biased;
            Some(stored) = stored_rx.recv() => on_stored(shared, &mut core, st, stored).await,
            chunk = chunk_rx.recv(), if st.unstored < max_unstored => match chunk {
                Some(batch) => {
                    // Everything already read goes in before the next flush: one ACK per burst.
                    let now = Instant::now();
                    let mut r = core.handle_segments(now, &batch);
                    while r.is_ok() {
                        match chunk_rx.try_recv() {
                            Ok(more) => r = core.handle_segments(now, &more),
                            Err(_) => break,
                        }
                    }
                    r.map_err(End::Protocol)
                }
                None => Err(End::Closed(conn.close_reason().map(|r| r.to_string()).unwrap_or_else(|| "session stream ended".to_owned()))),
            },
            _ = &mut flood_rx => Err(End::StreamFlood),
            _ = &mut woken => {
                woken.set(wake.notified());
                Ok(())
            }
            _ = &mut progressed => {
                progressed.set(progress.notified());
                Ok(())
            }
            _ = &mut sleep => core.handle_timeout(Instant::now()).map_err(End::Protocol),
            e = &mut closed => Err(End::Closed(e.to_string())),
        };
        if let Err(end) = step {
            break end;
        }
        if let Err(end) = handle_events(
            shared, conn, conn_id, expected, &mut core, st, &wake, &stored_tx,
        )
        .await
        {
            break end;
        }
    };
    for t in tasks {
        t.abort();
    }
    // Bytes still queued leave the counters (the writer's own release may come later).
    shared
        .conn_counters
        .written(writer.queued.swap(0, Ordering::Relaxed));
    // HELLO may have verified in the same read that then failed: blame the proven identity.
    if st.peer.is_none() {
        st.peer = core.peer();
    }
    end
}

fn flush(
    shared: &Arc<Shared>,
    core: &mut Connection,
    st: &State,
    queued: &AtomicUsize,
    out: &mut BytesMut,
    write_tx: &mpsc::UnboundedSender<Bytes>,
    presence_sent: &mut Option<crate::session::PresenceStatus>,
) -> Result<(), End> {
    if st.established {
        let presence = *lock(&shared.presence);
        if presence.is_some() && presence != *presence_sent {
            if let Some(p) = presence {
                core.send_presence(p);
            }
            *presence_sent = presence;
        }
    }
    let budget = shared
        .cfg
        .write_high_water
        .saturating_sub(queued.load(Ordering::Relaxed));
    {
        let mut peers = lock(&shared.peers);
        let outbox = st
            .peer
            .filter(|_| st.established)
            .and_then(|fp| peers.get_mut(&fp))
            .filter(|p| p.active.as_ref().map(|a| a.conn_id) == Some(core.id()))
            .map(|p| &mut p.outbox);
        core.poll_transmit(outbox, budget, out);
    }
    if !out.is_empty() {
        let chunk = out.split().freeze();
        let now_queued = queued.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len();
        shared.conn_counters.queued(now_queued, chunk.len());
        write_tx
            .send(chunk)
            .map_err(|_| End::Closed("session stream writer ended".to_owned()))?;
    }
    Ok(())
}

/// The store has the messages up to `stored.upto`: acknowledge them, deliver the new ones.
async fn on_stored(
    shared: &Arc<Shared>,
    core: &mut Connection,
    st: &mut State,
    stored: Stored,
) -> Result<(), End> {
    let new = stored
        .new
        .map_err(|e| End::Closed(format!("cannot store received messages: {e}")))?;
    st.unstored = st.received - stored.upto;
    core.confirm(stored.upto);
    let events: Vec<_> = new
        .into_iter()
        .map(|m| NodeEvent::Message {
            from: m.sender,
            id: m.id,
            timestamp_ms: m.timestamp_ms,
            body: m.body,
        })
        .collect();
    if !events.is_empty() && shared.events.send_all(events).await.is_err() {
        return Err(End::Closed("node stopped".to_owned()));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn handle_events(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    conn_id: u64,
    expected: Option<Fingerprint>,
    core: &mut Connection,
    st: &mut State,
    wake: &Arc<Notify>,
    stored_tx: &mpsc::UnboundedSender<Stored>,
) -> Result<(), End> {
    let Collected {
        events,
        to_store,
        delivered,
    } = collect_events(shared, conn, conn_id, expected, core, st, wake)?;
    if let Some(store) = &shared.store {
        let closed = |_| End::Closed("message store closed".to_owned());
        if !delivered.is_empty() {
            store
                .cmd(Cmd::Delivered { ids: delivered })
                .await
                .map_err(closed)?;
        }
        if let (Some(from), false) = (st.peer, to_store.is_empty()) {
            st.unstored += to_store.len() as u64;
            store
                .cmd(Cmd::Received {
                    from,
                    msgs: to_store,
                    upto: st.received,
                    reply: stored_tx.clone(),
                })
                .await
                .map_err(closed)?;
        }
    }
    if !events.is_empty() && shared.events.send_all(events).await.is_err() {
        return Err(End::Closed("node stopped".to_owned()));
    }
    Ok(())
}

/// What one pass over the core's events produced.
struct Collected {
    events: Vec<NodeEvent>,
    /// Received messages for the store (with a store, they are delivered once stored).
    to_store: Vec<crate::crypto::Message>,
    /// Acknowledged messages, for the store.
    delivered: Vec<crate::crypto::MessageId>,
}

/// Turns the core's events into node events, doing the outbox and inbox work under one lock.
fn collect_events(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    conn_id: u64,
    expected: Option<Fingerprint>,
    core: &mut Connection,
    st: &mut State,
    wake: &Arc<Notify>,
) -> Result<Collected, End> {
    let mut out = Vec::with_capacity(core.pending_events());
    let mut to_store = Vec::new();
    let mut delivered = Vec::new();
    // One lock for the whole batch; channel sends happen after it is released.
    let mut peers = None;
    // An event the run of messages below read past.
    let mut next = None;
    while let Some(ev) = next.take().or_else(|| core.poll_event()) {
        match ev {
            ConnEvent::Authenticated { peer } => {
                st.peer = Some(peer);
                drop(peers.take());
                register(shared, conn, conn_id, expected, peer, wake)?;
                st.registered = true;
            }
            ConnEvent::Established => {
                st.established = true;
                let peer = st
                    .peer
                    .ok_or_else(|| End::Closed("established without a peer".to_owned()))?;
                out.push(NodeEvent::PeerUp {
                    peer,
                    path: Path::Direct(conn.remote_address()),
                    rtt: conn.rtt(),
                });
            }
            ConnEvent::Message(first) => {
                // A run of messages: the peer's inbox is looked up once for all of them.
                let mut inbox = match (st.peer, shared.store.is_some()) {
                    (Some(fp), false) => Some(
                        &mut peers
                            .get_or_insert_with(|| lock(&shared.peers))
                            .entry(fp)
                            .inbox,
                    ),
                    _ => None,
                };
                let mut run = Some(first);
                while let Some(m) = run.take() {
                    st.received += 1;
                    match (&mut inbox, st.peer) {
                        (Some(inbox), _) => {
                            if inbox.accept(m.id) {
                                out.push(NodeEvent::Message {
                                    from: m.sender,
                                    id: m.id,
                                    timestamp_ms: m.timestamp_ms,
                                    body: m.body,
                                });
                            }
                        }
                        // With a store, messages are delivered once stored.
                        (None, Some(_)) => to_store.push(m),
                        (None, None) => {}
                    }
                    match core.poll_event() {
                        Some(ConnEvent::Message(m)) => run = Some(m),
                        other => next = other,
                    }
                }
            }
            ConnEvent::Acked { below } => {
                let Some(peer) = st.peer else { continue };
                let peers = peers.get_or_insert_with(|| lock(&shared.peers));
                let ids = peers.entry(peer).outbox.ack_below(conn_id, below);
                if !ids.is_empty() {
                    if shared.store.is_some() {
                        delivered.extend_from_slice(&ids);
                    }
                    out.push(NodeEvent::Acked { peer, ids });
                }
            }
            ConnEvent::Rtt(rtt) => {
                if let Some(peer) = st.peer {
                    out.push(NodeEvent::Rtt { peer, rtt });
                }
            }
            ConnEvent::Presence(status) => {
                if let Some(peer) = st.peer {
                    out.push(NodeEvent::Presence { peer, status });
                }
            }
        }
    }
    Ok(Collected {
        events: out,
        to_store,
        delivered,
    })
}

/// Makes this connection the peer's live one, or refuses it: banned peers, and the loser of
/// the duplicate tie-break (`node::peers`, spec/03-session.md §4).
fn register(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    conn_id: u64,
    expected: Option<Fingerprint>,
    peer: Fingerprint,
    wake: &Arc<Notify>,
) -> Result<(), End> {
    if lock(&shared.scores).peer_banned(&peer) {
        return Err(End::Banned);
    }
    let handle = ConnHandle {
        conn: conn.clone(),
        wake: wake.clone(),
    };
    let me = shared.identity.fingerprint();
    let r = lock(&shared.peers).register(
        me,
        peer,
        conn_id,
        expected.is_some(),
        conn.remote_address(),
        handle,
    );
    match r {
        Registration::Duplicate => Err(End::Duplicate),
        Registration::Live { replaced } => {
            if let Some(old) = replaced {
                old.conn
                    .close(code::DUPLICATE_CONNECTION.into(), b"duplicate connection");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redials_double_after_failures_and_a_wrong_identity_waits_longest() {
        let (s, initial, max) = (
            Duration::from_secs,
            Duration::from_secs(1),
            Duration::from_secs(30),
        );
        let mut d = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..7 {
            d = next_redial(d, false, initial, max);
            seen.push(d.as_secs());
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(next_redial(Duration::ZERO, true, initial, max), s(30));
        assert_eq!(next_redial(s(2), true, initial, max), s(30));
    }
}

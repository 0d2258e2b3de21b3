//! Driving one QUIC connection: the session stream's reader and writer, the stream guard,
//! and the loop that feeds the sans-IO [`Connection`] with bytes and time
//! (spec/03-session.md §3–§8). Also the dial loop with its backoff.

use std::sync::atomic::{AtomicUsize, Ordering};
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

use super::node::{lock, Active, NodeEvent, NodeHandle, Path, Shared};

/// Counters of the connection drivers, shared by all of them (shown by `dna status`).
#[derive(Debug, Default)]
pub(crate) struct ConnCounters {
    /// Bytes waiting for the stream writers, summed over connections.
    write_queued: AtomicUsize,
    /// The most bytes that ever waited for one connection's writer.
    write_queued_peak: AtomicUsize,
}

impl ConnCounters {
    fn queued(&self, conn_queued: usize, added: usize) {
        self.write_queued.fetch_add(added, Ordering::Relaxed);
        self.write_queued_peak
            .fetch_max(conn_queued, Ordering::Relaxed);
    }

    fn written(&self, n: usize) {
        self.write_queued.fetch_sub(n, Ordering::Relaxed);
    }
}

/// A snapshot of the connection drivers' counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TransportStats {
    /// Bytes waiting for the stream writers now, over all connections.
    pub write_queued: usize,
    /// The most bytes that ever waited for one connection's writer.
    pub write_queued_peak: usize,
}

impl NodeHandle {
    /// The connection drivers' counters.
    pub fn transport_stats(&self) -> TransportStats {
        let c = &self.shared.conn_counters;
        TransportStats {
            write_queued: c.write_queued.load(Ordering::Relaxed),
            write_queued_peak: c.write_queued_peak.load(Ordering::Relaxed),
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

/// Tries `peer`'s addresses until a QUIC connection is up, waiting `delay` first and then
/// 1, 2, 4 … up to the configured maximum between rounds.
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
        registered: false,
    };
    let end = run(&shared, &conn, conn_id, expected, &mut st).await;
    shared.live.fetch_sub(1, Ordering::SeqCst);
    let code = end.code();
    if code != code::NO_ERROR {
        tracing::warn!(peer = ?st.peer, %remote, code, reason = %end.reason(), "closing connection");
        conn.close(code.into(), end.reason().as_bytes());
    }
    lock(&shared.scores).penalize(st.peer, remote, end.penalty());
    {
        let mut peers = lock(&shared.peers);
        if let Some(peer) = st.peer {
            let p = shared.peer_entry(&mut peers, peer);
            p.outbox.requeue(conn_id);
            if p.active.as_ref().map(|a| a.conn_id) == Some(conn_id) {
                p.active = None;
            }
        }
        if let (Some(dialed), false) = (expected, st.registered) {
            shared.peer_entry(&mut peers, dialed).dialing = false;
        }
        let scores = lock(&shared.scores);
        for fp in [st.peer, expected].into_iter().flatten() {
            if !scores.peer_banned(&fp) {
                shared.ensure_dialing(&mut peers, fp, shared.cfg.reconnect_initial);
            }
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

async fn write_loop(
    shared: Arc<Shared>,
    mut send: quinn::SendStream,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
    progress: Arc<Notify>,
) {
    while let Some(chunk) = rx.recv().await {
        let n = chunk.len();
        if send.write_chunk(chunk).await.is_err() {
            return;
        }
        queued.fetch_sub(n, Ordering::Relaxed);
        shared.conn_counters.written(n);
        progress.notify_one();
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
    let (write_tx, write_rx) = mpsc::unbounded_channel::<Bytes>();
    let queued = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let (flood_tx, mut flood_rx) = oneshot::channel();
    let tasks = [
        tokio::spawn(read_loop(recv, chunk_tx)),
        tokio::spawn(write_loop(
            shared.clone(),
            send,
            write_rx,
            queued.clone(),
            progress.clone(),
        )),
        tokio::spawn(stream_guard(conn.clone(), cfg.max_extra_streams, flood_tx)),
    ];
    let wake = Arc::new(Notify::new());
    let mut presence_sent = None;
    let mut out = BytesMut::new();
    let end = loop {
        // Output first: HELLO leaves before anything is read.
        if let Err(end) = flush(
            shared,
            &mut core,
            st,
            &queued,
            &mut out,
            &write_tx,
            &mut presence_sent,
        ) {
            break end;
        }
        let deadline = tokio::time::Instant::from_std(core.poll_timeout());
        let step = tokio::select! {
            biased;
            chunk = chunk_rx.recv() => match chunk {
                Some(batch) => {
                    // Everything already read goes in before the next flush: one ACK per burst.
                    let now = Instant::now();
                    let mut r = batch.iter().try_for_each(|b| core.handle_input(now, b));
                    while r.is_ok() {
                        match chunk_rx.try_recv() {
                            Ok(more) => r = more.iter().try_for_each(|b| core.handle_input(now, b)),
                            Err(_) => break,
                        }
                    }
                    r.map_err(End::Protocol)
                }
                None => Err(End::Closed(conn.close_reason().map(|r| r.to_string()).unwrap_or_else(|| "session stream ended".to_owned()))),
            },
            _ = &mut flood_rx => Err(End::StreamFlood),
            _ = wake.notified() => Ok(()),
            _ = progress.notified() => Ok(()),
            _ = tokio::time::sleep_until(deadline) => core.handle_timeout(Instant::now()).map_err(End::Protocol),
            e = conn.closed() => Err(End::Closed(e.to_string())),
        };
        if let Err(end) = step {
            break end;
        }
        if let Err(end) = handle_events(shared, conn, conn_id, expected, &mut core, st, &wake).await
        {
            break end;
        }
    };
    for t in tasks {
        t.abort();
    }
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

async fn handle_events(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    conn_id: u64,
    expected: Option<Fingerprint>,
    core: &mut Connection,
    st: &mut State,
    wake: &Arc<Notify>,
) -> Result<(), End> {
    let out = collect_events(shared, conn, conn_id, expected, core, st, wake)?;
    for event in out {
        if shared.events.send(event).await.is_err() {
            return Err(End::Closed("node stopped".to_owned()));
        }
    }
    Ok(())
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
) -> Result<Vec<NodeEvent>, End> {
    let mut out = Vec::new();
    // One lock for the whole batch; channel sends happen after it is released.
    let mut peers = None;
    while let Some(ev) = core.poll_event() {
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
            ConnEvent::Message(m) => {
                let Some(fp) = st.peer else { continue };
                let peers = peers.get_or_insert_with(|| lock(&shared.peers));
                if shared.peer_entry(peers, fp).inbox.accept(m.id) {
                    out.push(NodeEvent::Message {
                        from: m.sender,
                        id: m.id,
                        timestamp_ms: m.timestamp_ms,
                        body: m.body,
                    });
                }
            }
            ConnEvent::Acked { below } => {
                let Some(peer) = st.peer else { continue };
                let peers = peers.get_or_insert_with(|| lock(&shared.peers));
                let ids = shared
                    .peer_entry(peers, peer)
                    .outbox
                    .ack_below(conn_id, below);
                if !ids.is_empty() {
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
    Ok(out)
}

/// Makes this connection the peer's live one, or refuses it: banned peers, and the loser of
/// the duplicate tie-break — keep the connection whose dialer has the lower fingerprint; if
/// the same side dialed both, keep the newer (spec/03-session.md §4).
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
    let me = shared.identity.fingerprint();
    let dialer = if expected.is_some() { me } else { peer };
    let mut peers = lock(&shared.peers);
    let p = shared.peer_entry(&mut peers, peer);
    if expected.is_none() && p.addrs.is_empty() {
        p.addrs.push(conn.remote_address());
    }
    if let Some(old) = &p.active {
        if dialer > old.dialer {
            return Err(End::Duplicate);
        }
        old.conn
            .close(code::DUPLICATE_CONNECTION.into(), b"duplicate connection");
    }
    if expected.is_some() {
        p.dialing = false;
    }
    p.active = Some(Active {
        conn_id,
        conn: conn.clone(),
        dialer,
        wake: wake.clone(),
    });
    Ok(())
}

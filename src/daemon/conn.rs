//! Driving one QUIC connection: the session stream's reader and writer, the application
//! streams' acceptor (`app_stream`),
//! and the loop that feeds the sans-IO [`Connection`] with bytes and time
//! (spec/03-session.md §3–§8). The connection task owns what it sends: the node core hands
//! it batches of messages ([`ConnCmd::Batch`]); it seals them, sends them, and reports
//! ACKs and its end to the core (spec/06-node.md §1–§2). Also one dial round, and the
//! limits of spec/06-node.md §4: the write budget shared by every frame, the stalled
//! writer, scoring of handshake failures by source.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rand_chacha::ChaCha20Rng;
use rand_core::OsRng;
use rand_core::SeedableRng;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::crypto::stream::StreamSecret;
use crate::crypto::Fingerprint;
use crate::node::core::{Answer, Ended, Input, Query, Refused, Reply};
use crate::session::hello::{EXPORTER_LABEL, EXPORTER_LEN};
use crate::session::{code, ConnError, ConnEvent, Connection, PresenceStatus, SendQueue, Source};
use crate::transport::tls::SERVER_NAME;

use super::events::NodeEvent;
use super::path::{delivery_path, path_of};
use super::shared::{
    conn_queue, sub, ConnCmd, ConnHandle, CoreCmd, NodeHandle, Shared, TransportStats,
};
use super::store::Stored;

/// [`NodeHandle::transport_stats`].
pub(crate) async fn transport_stats(handle: &NodeHandle) -> TransportStats {
    let c = &handle.shared.conn_counters;
    TransportStats {
        write_queued: c.write_queued.load(Ordering::Relaxed),
        write_queued_peak: c.write_queued_peak.load(Ordering::Relaxed),
        refused_full: c.refused_full.load(Ordering::Relaxed),
        scored_sources: match handle.shared.core.query(Query::ScoredSources).await {
            Some(Answer::Count(n)) => n,
            _ => 0,
        },
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
    /// The answering node closed with WRONG_RECIPIENT: our key exchange named another
    /// identity than its own, so the address we dialed belongs to someone else now.
    Misdialed,
    /// Closed by either side, or the network: nobody to blame here.
    Closed(String),
}

/// How a connection closed by the other side or the network ended for us.
fn peer_closed(e: Option<quinn::ConnectionError>, otherwise: &str) -> End {
    match e {
        Some(quinn::ConnectionError::ApplicationClosed(c))
            if c.error_code == quinn::VarInt::from_u32(code::WRONG_RECIPIENT) =>
        {
            End::Misdialed
        }
        Some(e) => End::Closed(e.to_string()),
        None => End::Closed(otherwise.to_owned()),
    }
}

impl End {
    fn code(&self) -> u32 {
        match self {
            End::Protocol(e) => e.code(),
            End::StreamFlood => code::STREAM_LIMIT,
            End::Banned => code::BANNED,
            End::Duplicate => code::DUPLICATE_CONNECTION,
            End::Misdialed | End::Closed(_) => code::NO_ERROR,
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
            End::Misdialed => "the address answered with another identity".to_owned(),
            End::Closed(r) => r.clone(),
        }
    }
}

/// One dial round for `peer` (the core decides when, and which addresses): tries them in
/// order until a QUIC connection is up, then drives it; tells the core if none answered.
pub(crate) async fn dial_round(shared: Arc<Shared>, peer: Fingerprint, addrs: Vec<SocketAddr>) {
    // A peer with items in its mailbox may have fetched them: its receipt first, so they
    // are not sent twice (spec/09-mailbox.md §5).
    super::mailbox::before_reach(&shared, peer).await;
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
                // Still "dialing" until the connection registers or ends, so no second
                // dial starts while HELLO is on its way.
                shared.core.input(Input::DialConnected(peer)).await;
                drive(shared, conn, Some(peer)).await;
                return;
            }
            Ok(Err(e)) => tracing::debug!(%peer, %addr, error = %e, "dial failed"),
            Err(_) => tracing::debug!(%peer, %addr, "dial timed out"),
        }
    }
    shared.core.input(Input::DialFailed(peer)).await;
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
        outbox: SendQueue::default(),
        presence: None,
        keys: watch::channel(None).0,
    };
    let end = run(&shared, &conn, conn_id, expected, &mut st).await;
    shared.live.fetch_sub(1, Ordering::SeqCst);
    // A punched session's local alias (spec/05-nat.md §5.2) served this connection only:
    // its route goes with it, so the socket's routes stay bounded over a long life.
    // A side socket of port prediction (spec/05-nat.md §5.5) that carried its path goes
    // too.
    let direct = shared.socket.direct_of(remote).unwrap_or(remote);
    shared.socket.remove_side_route(direct);
    if crate::transport::is_alias(remote) {
        shared.socket.remove_relayed(remote);
    }
    let code = end.code();
    // Scores, requeueing and redials are the core's. Told before the close goes out: the
    // core takes commands in order, so a peer reconnecting on seeing the close finds its
    // score.
    shared
        .core
        .input(Input::Ended(Ended {
            conn_id,
            peer: st.peer,
            dialed: expected,
            registered: st.registered,
            established: st.established,
            remote,
            penalty: end.penalty(),
            failed: !st.established && !matches!(end, End::Duplicate | End::Banned),
            wrong_identity: match &end {
                End::Protocol(e) => e.is_wrong_identity(),
                End::Misdialed => true,
                _ => false,
            },
        }))
        .await;
    if code != code::NO_ERROR {
        tracing::warn!(peer = ?st.peer, %remote, code, reason = %end.reason(), "closing connection");
        conn.close(code.into(), end.reason().as_bytes());
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
    /// The messages the core handed this connection: to send, and sent and not yet
    /// acknowledged (session counters in the order they were handed).
    outbox: SendQueue,
    /// Our presence as the core last told it.
    presence: Option<PresenceStatus>,
    /// The session's stream keys, published once it is established (application
    /// streams: `app_stream`).
    keys: watch::Sender<Option<(Fingerprint, StreamSecret)>>,
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
        Err(e) => return peer_closed(Some(e), ""),
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
        tokio::spawn(super::app_stream::accept_loop(
            conn.clone(),
            st.keys.subscribe(),
            shared.app_streams.clone(),
            cfg.max_extra_streams,
            flood_tx,
        )),
    ];
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<ConnCmd>(conn_queue(super::shared::window(cfg)));
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
                None => Err(peer_closed(conn.close_reason(), "session stream ended")),
            },
            _ = &mut flood_rx => Err(End::StreamFlood),
            Some(cmd) = cmd_rx.recv() => {
                on_cmd(st, &mut core, cmd);
                // Everything the core sent so far goes into this pass's flush.
                while let Ok(cmd) = cmd_rx.try_recv() {
                    on_cmd(st, &mut core, cmd);
                }
                Ok(())
            }
            _ = &mut progressed => {
                progressed.set(progress.notified());
                Ok(())
            }
            _ = &mut sleep => core.handle_timeout(Instant::now()).map_err(End::Protocol),
            e = &mut closed => Err(peer_closed(Some(e), "")),
        };
        if let Err(end) = step {
            break end;
        }
        if let Err(end) = handle_events(
            shared, conn, conn_id, expected, &mut core, st, &cmd_tx, &stored_tx,
        )
        .await
        {
            break end;
        }
    };
    for t in tasks {
        t.abort();
    }
    // Received messages on their way to the store (or the core's de-duplication) are still
    // delivered: without a store they may already be acknowledged. Every request answers
    // or is dropped, so this ends once our own sender is gone.
    drop(stored_tx);
    while st.unstored > 0 {
        let Some(stored) = stored_rx.recv().await else {
            break;
        };
        if on_stored(shared, &mut core, st, stored).await.is_err() {
            break;
        }
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
    st: &mut State,
    queued: &AtomicUsize,
    out: &mut BytesMut,
    write_tx: &mpsc::UnboundedSender<Bytes>,
    presence_sent: &mut Option<PresenceStatus>,
) -> Result<(), End> {
    if st.established && st.presence.is_some() && st.presence != *presence_sent {
        if let Some(p) = st.presence {
            core.send_presence(p);
        }
        *presence_sent = st.presence;
    }
    let budget = shared
        .cfg
        .write_high_water
        .saturating_sub(queued.load(Ordering::Relaxed));
    let outbox = (st.established && st.registered).then_some(&mut st.outbox as &mut dyn Source);
    core.poll_transmit(outbox, budget, out);
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

/// A command from the node core.
fn on_cmd(st: &mut State, core: &mut Connection, cmd: ConnCmd) {
    match cmd {
        ConnCmd::Batch(msgs) => {
            for m in msgs {
                st.outbox.push(m);
            }
        }
        ConnCmd::Presence(p) => st.presence = Some(p),
        ConnCmd::Ping => core.ping_now(Instant::now()),
    }
}

/// The store has the messages up to `stored.upto`: acknowledge them, deliver the new ones.
async fn on_stored(
    shared: &Arc<Shared>,
    core: &mut Connection,
    st: &mut State,
    stored: Stored,
) -> Result<(), End> {
    if let Some(e) = stored.failed {
        // Not acknowledged: the sender sends them again, and the core takes them as new.
        if let Some(peer) = st.peer {
            let ids = stored.new.iter().map(|m| m.id).collect();
            let _ = shared.core.input(Input::NotStored { peer, ids }).await;
        }
        return Err(End::Closed(format!("cannot store received messages: {e}")));
    }
    let new = stored.new;
    st.unstored = st.received - stored.upto;
    core.confirm(stored.upto);
    let events: Vec<_> = new
        .into_iter()
        .map(|m| NodeEvent::Message {
            from: m.sender,
            id: m.id,
            timestamp_ms: m.timestamp_ms,
            kind: m.kind,
            body: m.body,
        })
        .collect();
    if !events.is_empty() && shared.deliver(events).await.is_err() {
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
    cmd_tx: &mpsc::Sender<ConnCmd>,
    stored_tx: &mpsc::UnboundedSender<Stored>,
) -> Result<(), End> {
    let mut events = Vec::with_capacity(core.pending_events());
    let mut to_store = Vec::new();
    let mut acked_below = None;
    while let Some(ev) = core.poll_event() {
        match ev {
            ConnEvent::Authenticated { peer } => {
                st.peer = Some(peer);
                let streams = st.keys.subscribe();
                register(shared, conn, conn_id, expected, peer, cmd_tx, streams).await?;
                st.registered = true;
            }
            ConnEvent::Established => {
                st.established = true;
                if let (Some(peer), Some(secret)) = (st.peer, core.stream_secret()) {
                    st.keys.send_replace(Some((peer, secret)));
                }
                let peer = st
                    .peer
                    .ok_or_else(|| End::Closed("established without a peer".to_owned()))?;
                events.push(NodeEvent::PeerUp {
                    peer,
                    path: path_of(shared, conn.remote_address()),
                    rtt: conn.rtt(),
                });
            }
            ConnEvent::Message(m) => {
                st.received += 1;
                if st.peer.is_some() {
                    to_store.push(m);
                }
            }
            // The ledger is the core's: it turns the counter into message IDs.
            ConnEvent::Acked { below } => acked_below = Some(below),
            ConnEvent::Rtt(rtt) => {
                if let Some(peer) = st.peer {
                    events.push(NodeEvent::Rtt { peer, rtt });
                }
            }
            ConnEvent::Presence(status) => {
                if let Some(peer) = st.peer {
                    events.push(NodeEvent::Presence { peer, status });
                }
            }
        }
    }
    let gone = || End::Closed("node stopped".to_owned());
    if let (Some(peer), Some(below)) = (st.peer, acked_below) {
        let acked = Input::Acked {
            peer,
            conn_id,
            below,
            path: delivery_path(shared, conn.remote_address()),
        };
        if !shared.core.input(acked).await {
            return Err(gone());
        }
    }
    // Received messages go to the core, which keeps the new ones; they are acknowledged
    // and delivered once stored (or at once, without a store): the answer comes on
    // `stored_tx`.
    if let (Some(from), false) = (st.peer, to_store.is_empty()) {
        st.unstored += to_store.len() as u64;
        let cmd = CoreCmd::Received {
            from,
            msgs: to_store,
            upto: st.received,
            reply: stored_tx.clone(),
        };
        if !shared.core.send(cmd).await {
            return Err(gone());
        }
    }
    if !events.is_empty() && shared.events.send_all(events).await.is_err() {
        return Err(gone());
    }
    Ok(())
}

/// Makes this connection the peer's live one, or refuses it: banned peers, and the loser of
/// the duplicate tie-break — the node core decides (`node::core`, spec/03-session.md §4).
async fn register(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    conn_id: u64,
    expected: Option<Fingerprint>,
    peer: Fingerprint,
    cmd_tx: &mpsc::Sender<ConnCmd>,
    streams: super::app_stream::StreamKeys,
) -> Result<(), End> {
    let handle = ConnHandle {
        conn: conn.clone(),
        tx: cmd_tx.clone(),
        streams,
    };
    let (we_dialed, remote) = (expected.is_some(), conn.remote_address());
    let input = Input::Authenticated {
        conn_id,
        peer,
        we_dialed,
        remote,
        handle,
    };
    match shared.core.ask(input).await {
        Some(Reply::Session(Ok(()))) => Ok(()),
        Some(Reply::Session(Err(Refused::Banned))) => Err(End::Banned),
        Some(Reply::Session(Err(Refused::Duplicate))) => Err(End::Duplicate),
        _ => Err(End::Closed("node stopped".to_owned())),
    }
}

//! The task that owns the node core (spec/06-node.md §1, §2): the one place the node's
//! state lives — peers, outboxes, scores, the rendezvous role and the DHT state machine. It
//! takes commands from the API, the connection tasks and the serving tasks over one bounded
//! queue ([`CORE_QUEUE`]), runs them on the sans-IO [`Core`](crate::node::core::Core) with
//! the time, and carries out what the core asks: batches and presence to connection tasks
//! (`try_send` on queues sized so they never fill), closes, dial rounds, DHT requests,
//! answers and query events. It never waits on anything but its own queue and its timer;
//! the DHT database is written on a blocking thread from a snapshot taken here.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::conn::dial_round;
use super::dht_persist::Snapshot;
use super::state::{ConnCmd, ConnHandle, CoreCmd, DhtShared, DriverCore, Shared, CORE_QUEUE};
use super::store::Stored;
use super::util::lock;
use crate::dht::{DhtEvent, DhtMessage, QueryId};
use crate::node::core::Output;

/// Commands taken per pass before the core's output is carried out.
const BATCH: usize = 256;
/// How often the DHT's table and records are saved.
const SAVE_EVERY: Duration = Duration::from_secs(30);

/// The core task's queue.
pub(crate) fn channel() -> (mpsc::Sender<CoreCmd>, mpsc::Receiver<CoreCmd>) {
    mpsc::channel(CORE_QUEUE)
}

/// What waits for the DHT state machine, owned by the core task.
#[derive(Default)]
struct DhtWaits {
    /// API queries, by query: the event goes to the sender. A caller that gave up dropped
    /// its receiver; such entries go at the start of the next pass.
    queries: HashMap<QueryId, oneshot::Sender<DhtEvent>>,
    /// Inbound requests of this pass, by (peer, request ID): the DHT answers requests at
    /// once, so what is unanswered when the pass ends gets no answer (the sender is
    /// dropped, which ends the request's task).
    answers: HashMap<(crate::crypto::NodeId, u64), oneshot::Sender<DhtMessage>>,
}

/// Runs the core until every sender of its queue is gone.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut core: DriverCore,
    mut rx: mpsc::Receiver<CoreCmd>,
) {
    // `shared` holds a sender of our own queue: hold it weakly, or the task never ends.
    let weak = Arc::downgrade(&shared);
    let dht = shared.dht.clone();
    drop(shared);
    let mut waits = DhtWaits::default();
    let mut cmds = Vec::with_capacity(BATCH);
    let mut next_save = Instant::now() + SAVE_EVERY;
    loop {
        let mut deadline = core.poll_timeout();
        if dht.is_some() {
            deadline = Some(deadline.map_or(next_save, |d| d.min(next_save)));
        }
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            n = rx.recv_many(&mut cmds, BATCH) => {
                if n == 0 {
                    return;
                }
                let now = Instant::now();
                if let Some(d) = &dht {
                    // Queries whose callers gave up go before anything reads the count.
                    waits.queries.retain(|_, tx| !tx.is_closed());
                    d.waiting.store(waits.queries.len(), Ordering::Relaxed);
                }
                for cmd in cmds.drain(..) {
                    handle(&mut core, &mut waits, now, cmd);
                }
            }
            () = sleep => {
                let now = Instant::now();
                core.handle_timeout(now);
                if let Some(d) = dht.as_ref().filter(|_| now >= next_save) {
                    save(d, &mut core);
                    next_save = now + SAVE_EVERY;
                }
            }
        }
        let Some(shared) = weak.upgrade() else {
            return;
        };
        while let Some(out) = core.poll_output() {
            carry_out(&shared, out);
        }
        if let Some(st) = core.retry_stats() {
            shared.retry_view.send_if_modified(|old| {
                if old.stats == Some(st) {
                    return false;
                }
                // The peers waiting for consent are few: listed anew on each change.
                old.relay_needed = core.relay_needed();
                old.stats = Some(st);
                true
            });
        }
        if let Some(d) = &dht {
            dht_output(&shared, d, &mut core, &mut waits);
        }
    }
}

fn handle(core: &mut DriverCore, waits: &mut DhtWaits, now: Instant, cmd: CoreCmd) {
    match cmd {
        CoreCmd::Send { peer, msgs } => core.send(now, peer, msgs),
        CoreCmd::Acked {
            peer,
            conn_id,
            below,
        } => core.acked(peer, conn_id, below),
        CoreCmd::Received {
            from,
            msgs,
            upto,
            reply,
        } => {
            let new = core.received(from, msgs);
            let _ = reply.send(Stored { upto, new: Ok(new) });
        }
        CoreCmd::Ended(e) => core.connection_ended(now, e),
        CoreCmd::DialFailed(peer) => core.dial_failed(now, peer),
        CoreCmd::DialConnected(peer) => core.dial_connected(peer),
        CoreCmd::ReachDone { peer, how } => core.reach_finished(now, peer, how),
        CoreCmd::Heard(peer) => core.heard(now, peer),
        CoreCmd::DhtInbound { from, msg, reply } => {
            if core.dht().is_some() {
                waits.answers.insert((from.id, msg.msg.id), reply);
                core.handle_dht(now, from, msg);
            }
        }
        CoreCmd::DhtAnswer { from, msg } => core.handle_dht(now, from, msg),
        CoreCmd::DhtQuery { start, reply } => {
            if let Some(d) = core.dht_mut() {
                let q = start(d, now);
                waits.queries.insert(q, reply);
            }
        }
        CoreCmd::Call(f) => f(core, now),
    }
}

fn carry_out(shared: &Arc<Shared>, out: Output<ConnHandle>) {
    match out {
        Output::Batch { handle, msgs } => to_conn(&handle, ConnCmd::Batch(msgs)),
        Output::Presence { handle, status } => to_conn(&handle, ConnCmd::Presence(status)),
        Output::Close {
            handle,
            code,
            reason,
        } => handle.conn.close(code.into(), reason.as_bytes()),
        Output::Dial { peer, addrs } => {
            tokio::spawn(dial_round(shared.clone(), peer, addrs));
        }
        Output::Reach { peer } => {
            tokio::spawn(super::retry::reach(shared.clone(), peer));
        }
    }
}

/// What the DHT state machine produced: requests go out (one task each), answers to the
/// inbound requests waiting for them, events to the queries waiting for them.
fn dht_output(shared: &Arc<Shared>, d: &Arc<DhtShared>, core: &mut DriverCore, w: &mut DhtWaits) {
    let Some(dht) = core.dht_mut() else {
        return;
    };
    while let Some(t) = dht.poll_transmit() {
        if t.msg.is_request() {
            tokio::spawn(super::dht::request(shared.clone(), d.clone(), t.to, t.msg));
        } else if let Some(tx) = w.answers.remove(&(t.to.id, t.msg.id)) {
            let _ = tx.send(t.msg);
        }
    }
    // The DHT answers at once: a request it did not answer now gets no answer.
    w.answers.clear();
    while let Some(ev) = dht.poll_event() {
        let q = match &ev {
            DhtEvent::FoundNodes { query, .. }
            | DhtEvent::FoundValue { query, .. }
            | DhtEvent::Put { query, .. }
            | DhtEvent::Page { query, .. }
            | DhtEvent::Bootstrapped { query, .. } => *query,
        };
        if let Some(tx) = w.queries.remove(&q) {
            let _ = tx.send(ev);
        }
    }
    d.waiting.store(w.queries.len(), Ordering::Relaxed);
}

/// Saves the DHT's table and the records that changed, if this node persists them: the
/// snapshot is taken here, written on a blocking thread (the persistence lock keeps writes
/// in order). A failed write makes the next save write everything.
pub(crate) fn save(d: &Arc<DhtShared>, core: &mut DriverCore) {
    if lock(&d.persist).is_none() {
        return;
    }
    let Some(dht) = core.dht_mut() else {
        return;
    };
    if d.save_failed.swap(false, Ordering::Relaxed) {
        dht.mark_store_changed();
    }
    let snap = Snapshot::take(dht);
    let d = d.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = super::dht::write_snapshot(&d, &snap) {
            // Everything again next time; the core marks it when told.
            tracing::warn!(error = %e, "saving the DHT state failed");
            d.save_failed.store(true, Ordering::Relaxed);
        }
    });
}

/// Hands a command to a connection task. Its queue holds more than the core ever has
/// outstanding, so it is full only if the task stopped reading: then it is closed, and
/// what it was handed goes back to the outbox when it ends.
fn to_conn(handle: &ConnHandle, cmd: ConnCmd) {
    match handle.tx.try_send(cmd) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::error!(peer = %handle.conn.remote_address(), "connection task stopped taking commands: closing it");
            handle.conn.close(
                crate::session::code::CLOSED_BY_APPLICATION.into(),
                b"connection task stalled",
            );
        }
    }
}

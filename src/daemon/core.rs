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
use super::os::lock;
use super::shared::{ConnCmd, ConnHandle, CoreCmd, DhtShared, DriverCore, Shared, CORE_QUEUE};
use super::store::{Store, Stored};
use crate::dht::{DhtEvent, DhtMessage, QueryId};
use crate::node::core::{Answer, Input, Output, Query, Reply};

/// Commands taken per pass before the core's output is carried out.
const BATCH: usize = 256;
/// The longest a new session waits for the peer's mailbox receipts (`Output::ReadReceipt`).
const RECEIPT_WAIT: Duration = Duration::from_secs(2);
/// How often the DHT's table and records are saved.
const SAVE_EVERY: Duration = Duration::from_secs(30);

/// The core task's queue.
pub(crate) fn channel() -> (mpsc::Sender<CoreCmd>, mpsc::Receiver<CoreCmd>) {
    mpsc::channel(CORE_QUEUE)
}

/// What the core task hands its outputs to: who waits for the DHT state machine, and the
/// delivery task.
struct Waits {
    /// API queries, by query: the event goes to the sender. A caller that gave up dropped
    /// its receiver; such entries go at the start of the next pass.
    queries: HashMap<QueryId, oneshot::Sender<DhtEvent>>,
    /// Inbound requests of this pass, by (peer, request ID): the DHT answers requests at
    /// once, so what is unanswered when the pass ends gets no answer (the sender is
    /// dropped, which ends the request's task).
    answers: HashMap<(crate::crypto::NodeId, u64), oneshot::Sender<DhtMessage>>,
    /// The shutdown's last save: its snapshot goes here, to be written by the closing task.
    final_save: Option<oneshot::Sender<Snapshot>>,
    /// Deliveries go to the task that records and announces them (`daemon::delivered`).
    delivered: mpsc::UnboundedSender<super::delivered::Delivered>,
    /// The message store, if the node keeps one: received messages the core found new
    /// go there before they are acknowledged.
    store: Option<Store>,
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
    let store = shared.store.clone();
    drop(shared);
    let mut waits = Waits {
        queries: HashMap::new(),
        answers: HashMap::new(),
        final_save: None,
        delivered: super::delivered::spawn(weak.clone()),
        store,
    };
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
                    let everything = d.save_failed.swap(false, Ordering::Relaxed);
                    core.handle(now, Input::DhtSave { everything });
                    next_save = now + SAVE_EVERY;
                }
            }
        }
        let Some(shared) = weak.upgrade() else {
            return;
        };
        while let Some(out) = core.poll_output() {
            carry_out(&shared, dht.as_ref(), &mut waits, out);
        }
        // The DHT answers at once: a request it did not answer now gets no answer.
        waits.answers.clear();
        if let Some(d) = &dht {
            d.waiting.store(waits.queries.len(), Ordering::Relaxed);
        }
        publish_retry(&shared, &core, Instant::now());
    }
}

/// Publishes the re-reach schedule's counters and the peers waiting for consent when they
/// changed (`Shared::retry_view`).
fn publish_retry(shared: &Shared, core: &DriverCore, now: Instant) {
    let Answer::Retry(Some(st)) = core.query(now, Query::Retry) else {
        return;
    };
    shared.retry_view.send_if_modified(|old| {
        if old.stats == Some(st) {
            return false;
        }
        // The peers waiting for consent are few: listed anew on each change.
        if let Answer::Peers(p) = core.query(now, Query::RelayNeeded) {
            old.relay_needed = p;
        }
        old.stats = Some(st);
        true
    });
}

fn handle(core: &mut DriverCore, waits: &mut Waits, now: Instant, cmd: CoreCmd) {
    match cmd {
        CoreCmd::Input(input) => {
            core.handle(now, input);
        }
        CoreCmd::Ask(input, reply) => {
            let _ = reply.send(core.handle(now, input));
        }
        CoreCmd::Query(q, reply) => {
            // Answers are as of now: what is due (expiries) runs first.
            core.handle_timeout(now);
            let _ = reply.send(core.query(now, q));
        }
        CoreCmd::Received {
            from,
            msgs,
            upto,
            reply,
        } => {
            // The one de-duplication; the store writes what is new, then the connection
            // acknowledges and delivers it.
            let new = match core.handle(now, Input::Received { peer: from, msgs }) {
                Reply::New(new) => new,
                _ => Vec::new(),
            };
            match &waits.store {
                Some(store) => store.persist(from, new, upto, reply),
                None => {
                    let _ = reply.send(Stored {
                        upto,
                        new,
                        failed: None,
                    });
                }
            }
        }
        CoreCmd::DhtInbound { from, msg, reply } => {
            waits.answers.insert((from.id, msg.msg.id), reply);
            core.handle(now, Input::Dht { from, msg });
        }
        CoreCmd::DhtQuery { query, reply } => {
            if let Reply::Query(Some(q)) = core.handle(now, Input::DhtQuery(query)) {
                waits.queries.insert(q, reply);
            }
        }
        CoreCmd::SaveDht { reply } => {
            waits.final_save = Some(reply);
            core.handle(now, Input::DhtSave { everything: false });
        }
    }
}

fn carry_out(
    shared: &Arc<Shared>,
    dht: Option<&Arc<DhtShared>>,
    waits: &mut Waits,
    out: Output<ConnHandle>,
) {
    match out {
        Output::Delivered { peer, ids, path } => {
            let _ = waits.delivered.send((peer, ids, path));
        }
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
        Output::ReadReceipt { peer } => {
            let shared = shared.clone();
            tokio::spawn(async move {
                // A slow DHT holds the session back at most this long: what the receipt
                // would have listed then goes over the session (the peer drops repeats).
                let read = super::mailbox::receipt_of(&shared, peer);
                let _ = tokio::time::timeout(RECEIPT_WAIT, read).await;
                shared.core.input(Input::ReceiptRead(peer)).await;
            });
        }
        Output::DhtSend { to, msg } => {
            if msg.is_request() {
                if let Some(d) = dht {
                    tokio::spawn(super::dht::request(shared.clone(), d.clone(), to, msg));
                }
            } else if let Some(tx) = waits.answers.remove(&(to.id, msg.id)) {
                let _ = tx.send(msg);
            }
        }
        Output::DhtEvent(ev) => {
            let q = match &ev {
                DhtEvent::FoundNodes { query, .. }
                | DhtEvent::FoundValue { query, .. }
                | DhtEvent::Put { query, .. }
                | DhtEvent::Page { query, .. }
                | DhtEvent::Bootstrapped { query, .. } => *query,
            };
            if let Some(tx) = waits.queries.remove(&q) {
                let _ = tx.send(ev);
            }
        }
        Output::DhtSave { contacts, changes } => {
            let snap = Snapshot { contacts, changes };
            match (waits.final_save.take(), dht) {
                (Some(tx), _) => {
                    let _ = tx.send(snap);
                }
                (None, Some(d)) => save(d, snap),
                (None, None) => {}
            }
        }
    }
}

/// Writes a snapshot of the DHT on a blocking thread, if this node persists it (the
/// persistence lock keeps writes in order). A failed write makes the next save write
/// everything.
fn save(d: &Arc<DhtShared>, snap: Snapshot) {
    if lock(&d.persist).is_none() {
        return;
    }
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

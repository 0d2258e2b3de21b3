//! The task that owns the node core (spec/06-node.md §1, §2): the one place the node's
//! per-peer state lives. It takes commands from the API, the connection tasks and the
//! serving tasks over one bounded queue ([`CORE_QUEUE`]), runs them on the sans-IO
//! [`Core`](crate::node::core::Core) with the time, and carries out what the core asks:
//! batches and presence to connection tasks (`try_send` on queues sized so they never fill),
//! closes, dial rounds. It never waits on anything but its own queue and its timer.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::conn::dial_round;
use super::state::{ConnCmd, ConnHandle, CoreCmd, DriverCore, Shared, CORE_QUEUE};
use super::store::Stored;
use crate::node::core::Output;

/// Commands taken per pass before the core's output is carried out.
const BATCH: usize = 256;

/// The core task's queue.
pub(crate) fn channel() -> (mpsc::Sender<CoreCmd>, mpsc::Receiver<CoreCmd>) {
    mpsc::channel(CORE_QUEUE)
}

/// Runs the core until every sender of its queue is gone.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut core: DriverCore,
    mut rx: mpsc::Receiver<CoreCmd>,
) {
    // `shared` holds a sender of our own queue: hold it weakly, or the task never ends.
    let weak = Arc::downgrade(&shared);
    drop(shared);
    let mut cmds = Vec::with_capacity(BATCH);
    loop {
        let deadline = core.poll_timeout();
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
                for cmd in cmds.drain(..) {
                    handle(&mut core, now, cmd);
                }
            }
            () = sleep => core.handle_timeout(Instant::now()),
        }
        let Some(shared) = weak.upgrade() else {
            return;
        };
        while let Some(out) = core.poll_output() {
            carry_out(&shared, out);
        }
    }
}

fn handle(core: &mut DriverCore, now: Instant, cmd: CoreCmd) {
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
    }
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

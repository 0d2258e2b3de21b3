//! The rendezvous node's side of signalling over DHT connections (spec/05-nat.md §4.3):
//! registration and CONNECT forwarding; offers addressed to us go to `reach`. The caller's
//! side (registering, sending CONNECT) is in `reach`. Each exchange is one bidirectional
//! stream on a `dna-dht/1` connection, like a DHT request: one frame, FIN; one frame, FIN.
//!
//! A node behind NAT registers at its rendezvous nodes over the DHT connections it keeps to
//! them (QUIC keep-alive holds its NAT mapping). A caller sends CONNECT to one of them; the
//! rendezvous node opens a stream to the registered callee over the callee's own connection,
//! forwards the bytes unchanged and carries the answer back. It only forwards: the offer and
//! the answer are signed by their senders.
//!
//! What is registered, until when, and which offers pass are decided by the sans-IO
//! [`Rendezvous`](crate::node::rendezvous::Rendezvous) core; this driver reads the clock
//! and does the I/O.

use std::future::Future;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::mpsc;

use super::shared::{ConnHandle, CoreAnswer, CoreInput, RdvConn, Shared, SignalStream};
use super::signal_frames::now_ms;
use super::signal_frames::{frame, limits, FORWARD_TIMEOUT, MAX_SIGNAL_FRAME};
use crate::dht::Contact;
use crate::nat::signal::{ConnectErrorCode, Signal};
use crate::node::core::connect::{admit_connect, Admitted, CoreAccess};
use crate::node::core::{Input, Query, Reply};
use crate::wire::{decode_exact, MessageType, HEADER_LEN};

/// Signalling streams waiting for the rendezvous task; when full, new ones are dropped
/// (reset), and the caller retries.
pub(crate) const SIGNAL_QUEUE: usize = 256;

/// The rendezvous task: serves every signalling stream the DHT driver hands over, each in
/// a task of its own (forwarding waits up to [`FORWARD_TIMEOUT`] for the callee).
pub(crate) async fn signalling_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<SignalStream>) {
    while let Some(s) = rx.recv().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_stream(&shared, &s.conn, s.peer, &s.bytes, s.send).await;
        });
    }
}

/// Serves one signalling stream a peer opened on a DHT connection.
async fn serve_stream(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    peer: Contact,
    bytes: &[u8],
    mut send: quinn::SendStream,
) {
    let Ok(f) = decode_exact(bytes, &limits()) else {
        return;
    };
    let reply = match f.header.msg_type {
        MessageType::RdvRegister => Some(register_here(shared, conn, peer).await),
        MessageType::RelayRequest => {
            Some(super::relay_server::serve_request(shared, conn, peer, f.payload).await)
        }
        MessageType::Connect => Some(
            match forward_or_answer(shared, conn, peer, f.payload).await {
                Ok(answer) => frame(MessageType::ConnectAnswer, &answer),
                Err(code) => frame(MessageType::ConnectError, &[code as u8]),
            },
        ),
        _ => None,
    };
    if let Some(r) = reply {
        let _ = send.write_all(&r).await;
    }
    let _ = send.finish();
}

/// RDV_REGISTER from `peer` (authenticated by its HELLO) over `conn`: RDV_REGISTERED with
/// the lifetime, or CONNECT_ERROR with the reason's code. A registration made over a new
/// connection is dropped when that connection ends.
async fn register_here(shared: &Arc<Shared>, conn: &quinn::Connection, peer: Contact) -> BytesMut {
    let ip = conn.remote_address().ip();
    let register = Input::Register {
        peer: peer.id,
        ip,
        conn: RdvConn(conn.clone()),
    };
    let Some(Reply::Registered(r)) = shared.core.ask(register).await else {
        return frame(MessageType::ConnectError, &[ConnectErrorCode::Busy as u8]);
    };
    match r {
        Ok((lifetime, new_conn)) => {
            tracing::debug!(peer = %peer.addr, "registered for rendezvous");
            if new_conn {
                // The registration goes when its connection ends.
                let (shared, conn, id) = (shared.clone(), conn.clone(), peer.id);
                tokio::spawn(async move {
                    conn.closed().await;
                    let conn = RdvConn(conn);
                    shared
                        .core
                        .input(Input::Unregister { peer: id, conn })
                        .await;
                });
            }
            let secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
            frame(MessageType::RdvRegistered, &secs.to_be_bytes())
        }
        Err(e) => {
            tracing::debug!(peer = %peer.addr, error = %e, "rendezvous registration refused");
            frame(MessageType::ConnectError, &[e.code() as u8])
        }
    }
}

/// The core task's queue as [`admit_connect`] reaches the core.
struct Queue<'a>(&'a super::shared::CoreTx);

impl CoreAccess<ConnHandle, RdvConn> for Queue<'_> {
    fn ask(&mut self, input: CoreInput) -> impl Future<Output = Option<Reply>> + Send {
        self.0.ask(input)
    }

    fn query(&mut self, q: Query) -> impl Future<Output = Option<CoreAnswer>> + Send {
        self.0.query(q)
    }
}

/// A CONNECT for us is answered; one for a node registered here is forwarded. Either way
/// the offer is admitted first (spec/06-node.md, "Rendezvous"): a token from the bucket of
/// the delivering connection's source before the signature is checked, then freshness,
/// the replay cache and the caller's bucket.
async fn forward_or_answer(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    from: Contact,
    offer: &[u8],
) -> Result<Vec<u8>, ConnectErrorCode> {
    let me = shared.identity.fingerprint();
    let for_me = Signal::recipient(offer).ok_or(ConnectErrorCode::Malformed)? == me;
    if !for_me && !shared.nat.serves_rendezvous {
        // Nobody registers here: no signature check for it.
        return Err(ConnectErrorCode::NotRegistered);
    }
    let remote = conn.remote_address();
    // The admission's order is the node's (`node::core::connect`); the signature is checked
    // in this task, off the core's.
    let open = |c: &RdvConn| c.0.close_reason().is_none();
    let mut queue = Queue(&shared.core);
    let admitted = admit_connect(&mut queue, for_me, remote.ip(), offer, now_ms(), open)
        .await
        .map_err(|e| {
            tracing::debug!(peer = %remote, error = %e, "CONNECT refused");
            e.code()
        })?;
    let target = match admitted {
        // `from` is the rendezvous node that forwarded it: it may relay us too.
        Admitted::ForUs(signal) => return super::reach::answer_offer(shared, signal, from).await,
        Admitted::Forward { to, .. } => to.0,
    };
    let exchange = async {
        let (mut s, mut r) = target.open_bi().await.ok()?;
        s.write_all(&frame(MessageType::Connect, offer))
            .await
            .ok()?;
        s.finish().ok()?;
        r.read_to_end(MAX_SIGNAL_FRAME + HEADER_LEN).await.ok()
    };
    let bytes = tokio::time::timeout(FORWARD_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
        .ok_or(ConnectErrorCode::TargetTimeout)?;
    let f = decode_exact(&bytes, &limits()).map_err(|_| ConnectErrorCode::Malformed)?;
    match f.header.msg_type {
        MessageType::ConnectAnswer => Ok(f.payload.to_vec()),
        // The callee's own refusal is passed on as it is.
        MessageType::ConnectError => Err(f
            .payload
            .first()
            .and_then(|b| ConnectErrorCode::from_u8(*b))
            .unwrap_or(ConnectErrorCode::Malformed)),
        _ => Err(ConnectErrorCode::Malformed),
    }
}

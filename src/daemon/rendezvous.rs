//! Rendezvous signalling over DHT connections (spec/05-nat.md §4.3): registration, CONNECT
//! forwarding, and both ends of a CONNECT exchange. Each exchange is one bidirectional
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::dht::DhtShared;
use super::node::{lock, unix_ms, Shared};
use super::reach::ReachError;
use crate::dht::Contact;
use crate::nat::signal::{ConnectErrorCode, Signal};
use crate::node::rendezvous::{ConnectLimits, ConnectRefusal};
use crate::wire::{
    decode_exact, encode_frame, FrameLimits, HeaderView, MessageType, HEADER_LEN, SIGNALLING_RANGE,
};

/// Largest signalling frame (a signed signal with 16 candidates is ≈ 5.7 KB).
const MAX_SIGNAL_FRAME: usize = 16 * 1024;
/// How long a rendezvous node waits for the callee's answer.
pub(crate) const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

fn limits() -> FrameLimits {
    FrameLimits {
        max_payload: MAX_SIGNAL_FRAME as u32,
    }
}

pub(crate) fn frame(t: MessageType, payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    // Signals are bounded by their own limits, far below the frame limit.
    let _ = encode_frame(t, 0, payload, &limits(), &mut out);
    out
}

/// Whether a stream's frame belongs to signalling rather than to the DHT.
pub(crate) fn is_signalling(bytes: &[u8]) -> bool {
    HeaderView::new_checked(bytes).is_ok_and(|h| SIGNALLING_RANGE.contains(&h.msg_type()))
}

/// Serves one signalling stream a peer opened on a DHT connection.
pub(crate) async fn serve_stream(
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
        MessageType::RdvRegister => Some(register_here(shared, conn, peer)),
        MessageType::Connect => Some(match forward_or_answer(shared, conn, f.payload).await {
            Ok(answer) => frame(MessageType::ConnectAnswer, &answer),
            Err(code) => frame(MessageType::ConnectError, &[code as u8]),
        }),
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
fn register_here(shared: &Arc<Shared>, conn: &quinn::Connection, peer: Contact) -> BytesMut {
    let now = Instant::now();
    let ip = conn.remote_address().ip();
    let mut rdv = lock(&shared.nat.rdv);
    let same_conn = rdv
        .registry
        .lookup(&peer.id, now)
        .is_some_and(|c| c.stable_id() == conn.stable_id());
    match rdv.registry.register(peer.id, ip, conn.clone(), now) {
        Ok(lifetime) => {
            drop(rdv);
            tracing::debug!(peer = %peer.addr, "registered for rendezvous");
            if !same_conn {
                let (shared, conn, id) = (shared.clone(), conn.clone(), peer.id);
                tokio::spawn(async move {
                    conn.closed().await;
                    lock(&shared.nat.rdv)
                        .registry
                        .remove_if(&id, |c| c.stable_id() == conn.stable_id());
                });
            }
            let secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
            frame(MessageType::RdvRegistered, &secs.to_be_bytes())
        }
        Err(e) => {
            drop(rdv);
            tracing::debug!(peer = %peer.addr, error = %e, "rendezvous registration refused");
            frame(MessageType::ConnectError, &[e.code() as u8])
        }
    }
}

/// A CONNECT for us is answered; one for a node registered here is forwarded. Either way
/// the offer is admitted first (spec/06-node.md, "Rendezvous"): a token from the bucket of
/// the delivering connection's source before the signature is checked, then freshness,
/// the replay cache and the caller's bucket.
async fn forward_or_answer(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    offer: &[u8],
) -> Result<Vec<u8>, ConnectErrorCode> {
    let me = shared.identity.fingerprint();
    let for_me = Signal::recipient(offer).ok_or(ConnectErrorCode::Malformed)? == me;
    if !for_me && !lock(&shared.nat.rdv).registry.serves() {
        // Nobody registers here: no signature check for it.
        return Err(ConnectErrorCode::NotRegistered);
    }
    let admit = |f: &mut dyn FnMut(&mut ConnectLimits) -> Result<(), ConnectRefusal>| {
        let mut rdv = lock(&shared.nat.rdv);
        let limits = if for_me {
            &mut rdv.answering
        } else {
            &mut rdv.forwarding
        };
        f(limits).map_err(|e| {
            tracing::debug!(peer = %conn.remote_address(), error = %e, "CONNECT refused");
            e.code()
        })
    };
    admit(&mut |l| l.check_source(conn.remote_address().ip(), Instant::now()))?;
    let signal = Signal::verify(offer).map_err(|_| ConnectErrorCode::Malformed)?;
    admit(&mut |l| l.admit(&signal, Instant::now(), now_ms()))?;
    if for_me {
        return super::reach::answer_offer(shared, signal).await;
    }
    let target = {
        let mut rdv = lock(&shared.nat.rdv);
        let id = signal.to.node_id();
        match rdv.registry.lookup(&id, Instant::now()).cloned() {
            Some(c) if c.close_reason().is_none() => c,
            Some(c) => {
                rdv.registry
                    .remove_if(&id, |x| x.stable_id() == c.stable_id());
                return Err(ConnectErrorCode::NotRegistered);
            }
            None => return Err(ConnectErrorCode::NotRegistered),
        }
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

/// One exchange with `rdv`: send `t` with `payload`, return the answer frame's type and
/// payload.
async fn exchange(
    shared: &Arc<Shared>,
    d: &Arc<DhtShared>,
    rdv: Contact,
    t: MessageType,
    payload: &[u8],
) -> Result<(MessageType, Vec<u8>), ReachError> {
    let run = async {
        let conn = super::dht::connect(shared, d, rdv)
            .await
            .ok_or(ReachError::Rendezvous("unreachable"))?;
        let (mut s, mut r) = conn
            .open_bi()
            .await
            .map_err(|_| ReachError::Rendezvous("stream refused"))?;
        s.write_all(&frame(t, payload))
            .await
            .map_err(|_| ReachError::Rendezvous("write failed"))?;
        let _ = s.finish();
        let bytes = r
            .read_to_end(MAX_SIGNAL_FRAME + HEADER_LEN)
            .await
            .map_err(|_| ReachError::Rendezvous("no answer"))?;
        let f = decode_exact(&bytes, &limits()).map_err(|_| ReachError::Rendezvous("malformed"))?;
        Ok((f.header.msg_type, f.payload.to_vec()))
    };
    tokio::time::timeout(FORWARD_TIMEOUT + Duration::from_secs(5), run)
        .await
        .unwrap_or(Err(ReachError::Rendezvous("timed out")))
}

/// Registers at `rdv`; returns the granted lifetime.
pub(crate) async fn register(
    shared: &Arc<Shared>,
    d: &Arc<DhtShared>,
    rdv: Contact,
) -> Result<Duration, ReachError> {
    match exchange(shared, d, rdv, MessageType::RdvRegister, &[]).await? {
        (MessageType::RdvRegistered, p) if p.len() == 4 => {
            Ok(Duration::from_secs(u64::from(u32::from_be_bytes([
                p[0], p[1], p[2], p[3],
            ]))))
        }
        (MessageType::ConnectError, p) => Err(ReachError::RegistrationRefused(
            p.first()
                .and_then(|b| ConnectErrorCode::from_u8(*b))
                .map_or("unknown", ConnectErrorCode::reason),
        )),
        _ => Err(ReachError::Rendezvous("registration refused")),
    }
}

/// Sends our signed offer through `rdv`; returns the callee's signed answer bytes.
pub(crate) async fn connect_via(
    shared: &Arc<Shared>,
    d: &Arc<DhtShared>,
    rdv: Contact,
    offer: &[u8],
) -> Result<Vec<u8>, ReachError> {
    match exchange(shared, d, rdv, MessageType::Connect, offer).await? {
        (MessageType::ConnectAnswer, p) => Ok(p),
        (MessageType::ConnectError, p) => Err(ReachError::ConnectRefused(
            p.first()
                .and_then(|b| ConnectErrorCode::from_u8(*b))
                .map_or("unknown", ConnectErrorCode::reason),
        )),
        _ => Err(ReachError::Rendezvous("unexpected answer")),
    }
}

/// Our clock for signal timestamps.
pub(crate) fn now_ms() -> u64 {
    unix_ms()
}

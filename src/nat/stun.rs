//! STUN Binding (RFC 8489), sans-IO: a client transaction with the RFC's retransmission
//! timers, and the responder every node runs on its one socket (spec/05-nat.md §1).
//!
//! Requests and answers carry FINGERPRINT; answers carry XOR-MAPPED-ADDRESS. The encoding is
//! stun-rs's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_rs::attributes::stun::{Fingerprint, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{
    DecoderContextBuilder, MessageClass, MessageDecoder, MessageDecoderBuilder,
    MessageEncoderBuilder, StunMessageBuilder, TransactionId,
};
use thiserror::Error;

/// Initial retransmission timeout (RFC 8489 §6.2.1).
pub const RTO: Duration = Duration::from_millis(500);
/// Requests sent before giving up.
pub const RC: u32 = 7;
/// After the last request, wait this many RTOs for an answer.
pub const RM: u32 = 16;

/// Why a Binding transaction failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BindingError {
    /// No answer after Rc requests and Rm × RTO.
    #[error("no STUN answer from {0}")]
    Timeout(SocketAddr),
    /// The server answered with an error response.
    #[error("STUN error response from {0}")]
    ErrorResponse(SocketAddr),
    /// The success response carried no XOR-MAPPED-ADDRESS.
    #[error("STUN answer without XOR-MAPPED-ADDRESS")]
    NoMappedAddress,
}

fn encode(msg: &stun_rs::StunMessage) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, msg)
        .ok()?;
    buf.truncate(n);
    Some(buf)
}

/// A decoder that checks FINGERPRINT.
fn decoder() -> MessageDecoder {
    MessageDecoderBuilder::default()
        .with_context(DecoderContextBuilder::default().with_validation().build())
        .build()
}

/// The transaction ID of a STUN message, if `bytes` is one.
pub fn transaction_id(bytes: &[u8]) -> Option<[u8; 12]> {
    if !crate::transport::demux::is_stun(bytes) {
        return None;
    }
    let mut t = [0u8; 12];
    t.copy_from_slice(&bytes[8..20]);
    Some(t)
}

/// Answers a Binding request from `from` with a success response naming `from`
/// (XOR-MAPPED-ADDRESS). Anything else — answers, indications, other methods, malformed or
/// FINGERPRINT-less input — gets no answer.
pub fn respond(from: SocketAddr, request: &[u8]) -> Option<Vec<u8>> {
    let (msg, _) = decoder().decode(request).ok()?;
    if msg.method() != BINDING
        || msg.class() != MessageClass::Request
        || msg.get::<Fingerprint>().is_none()
    {
        return None;
    }
    let answer = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
        .with_transaction_id(*msg.transaction_id())
        .with_attribute(XorMappedAddress::from(from))
        .with_attribute(Fingerprint::default())
        .build();
    encode(&answer)
}

/// One Binding transaction with `server`.
#[derive(Debug, Clone)]
pub struct Binding {
    server: SocketAddr,
    tid: [u8; 12],
    request: Vec<u8>,
    sent: u32,
    next: Instant,
    rto: Duration,
    result: Option<Result<SocketAddr, BindingError>>,
}

impl Binding {
    /// A transaction with `server`; `tid` must be random (the caller's RNG).
    pub fn new(server: SocketAddr, tid: [u8; 12], now: Instant) -> Binding {
        let msg = StunMessageBuilder::new(BINDING, MessageClass::Request)
            .with_transaction_id(TransactionId::from(tid))
            .with_attribute(Fingerprint::default())
            .build();
        Binding {
            server,
            tid,
            request: encode(&msg).unwrap_or_default(),
            sent: 0,
            next: now,
            rto: RTO,
            result: None,
        }
    }

    /// The transaction ID.
    pub fn transaction_id(&self) -> [u8; 12] {
        self.tid
    }

    /// The request to send now, if one is due: at 0, RTO, 3 RTO, 7 RTO … (doubling), Rc
    /// times.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, &[u8])> {
        if self.result.is_some() || self.sent >= RC || now < self.next {
            return None;
        }
        self.sent += 1;
        self.next = if self.sent == RC {
            now + RTO * RM
        } else {
            now + self.rto
        };
        self.rto *= 2;
        Some((self.server, &self.request))
    }

    /// Feeds a datagram; true if it answered this transaction (from the server, same ID).
    pub fn handle_response(&mut self, from: SocketAddr, bytes: &[u8]) -> bool {
        if self.result.is_some() || from != self.server || transaction_id(bytes) != Some(self.tid) {
            return false;
        }
        let Ok((msg, _)) = decoder().decode(bytes) else {
            return false;
        };
        if msg.method() != BINDING {
            return false;
        }
        self.result = Some(match msg.class() {
            MessageClass::SuccessResponse => msg
                .get::<XorMappedAddress>()
                .and_then(|a| a.as_xor_mapped_address().ok())
                .map(|a| *a.socket_address())
                .ok_or(BindingError::NoMappedAddress),
            MessageClass::ErrorResponse => Err(BindingError::ErrorResponse(from)),
            _ => return false,
        });
        true
    }

    /// Gives up once the last request went unanswered for Rm × RTO.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.result.is_none() && self.sent >= RC && now >= self.next {
            self.result = Some(Err(BindingError::Timeout(self.server)));
        }
    }

    /// When to call again (`poll_transmit` or `handle_timeout`).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.result.is_none().then_some(self.next)
    }

    /// The outcome, once there is one: our address as the server sees it.
    pub fn result(&self) -> Option<&Result<SocketAddr, BindingError>> {
        self.result.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // a test clock's starting point
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn binding_round_trip_through_the_responder() {
        let now = t0();
        let server: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let me: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let mut b = Binding::new(server, [9; 12], now);
        let (to, req) = b.poll_transmit(now).unwrap();
        assert_eq!(to, server);
        let req = req.to_vec();
        assert!(crate::transport::demux::is_stun(&req));
        let answer = respond(me, &req).unwrap();
        assert!(
            !b.handle_response("192.0.2.9:3478".parse().unwrap(), &answer),
            "wrong source"
        );
        assert!(b.handle_response(server, &answer));
        assert_eq!(b.result(), Some(&Ok(me)));
        assert_eq!(b.poll_timeout(), None);
    }

    #[test]
    fn retransmits_on_the_rfc_schedule_then_gives_up() {
        let start = t0();
        let server: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let mut b = Binding::new(server, [1; 12], start);
        let mut sent_at = Vec::new();
        let mut now = start;
        while b.result().is_none() {
            if b.poll_transmit(now).is_some() {
                sent_at.push((now - start).as_millis());
            }
            b.handle_timeout(now);
            now = b.poll_timeout().unwrap_or(now);
        }
        assert_eq!(sent_at, [0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!((now - start).as_millis(), 39500);
        assert_eq!(b.result(), Some(&Err(BindingError::Timeout(server))));
    }

    #[test]
    fn the_responder_ignores_what_is_not_a_binding_request() {
        let me: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        assert_eq!(respond(me, b"not stun at all"), None);
        let answer = respond(
            me,
            Binding::new(me, [2; 12], t0())
                .poll_transmit(t0())
                .unwrap()
                .1,
        )
        .unwrap();
        assert_eq!(respond(me, &answer), None, "an answer is not answered");
        let mut bad = Binding::new(me, [3; 12], t0())
            .poll_transmit(t0())
            .unwrap()
            .1
            .to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1; // FINGERPRINT no longer matches
        assert_eq!(respond(me, &bad), None);
    }
}

//! STUN Binding (RFC 8489), sans-IO: a client transaction with the RFC's retransmission
//! timers, and the answers of the responder every node runs on its one socket
//! (spec/05-nat.md §1; the responder's limits are `nat::responder`).
//!
//! The responder answers any Binding request without credentials: a success response with
//! XOR-MAPPED-ADDRESS (plus FINGERPRINT when the request carried one), or 420 with
//! UNKNOWN-ATTRIBUTES when the request carries a comprehension-required attribute it does
//! not implement. A responder with two addresses and two ports is an RFC 5780 server
//! ([`respond_rfc5780`], spec/05 §2.1): its answers add RESPONSE-ORIGIN and OTHER-ADDRESS,
//! and it honours CHANGE-REQUEST by naming the socket the answer leaves from. Our own
//! requests carry SOFTWARE and FINGERPRINT, which makes them as long as the largest answer
//! they can get, from either kind of server (spec/05 §1.2). A transaction may also carry
//! CHANGE-REQUEST (RFC 5780 behaviour discovery, spec/05 §2) or short-term credentials
//! (USERNAME + MESSAGE-INTEGRITY, the connectivity checks of spec/05 §5). The encoding is
//! stun-rs's.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun_rs::attributes::discovery::{
    ChangeRequest, ChangeRequestFlags, OtherAddress, ResponseOrigin,
};
use stun_rs::attributes::stun::{
    ErrorCode, Fingerprint, MessageIntegrity, Software, UnknownAttributes, UserName,
    XorMappedAddress,
};
use stun_rs::methods::BINDING;
use stun_rs::{
    DecoderContextBuilder, HMACKey, MessageClass, MessageDecoder, MessageDecoderBuilder,
    MessageEncoderBuilder, StunMessage, StunMessageBuilder, TransactionId,
};
use thiserror::Error;

/// STUN's magic cookie (RFC 8489 §5).
pub const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// STUN header length.
pub const STUN_HEADER_LEN: usize = 20;

/// Whether `d` is a well-formed STUN message header: two zero bits, the magic cookie, and a
/// length field that matches the datagram and is a multiple of 4.
pub fn is_stun(d: &[u8]) -> bool {
    d.len() >= STUN_HEADER_LEN
        && d[0] & 0xC0 == 0
        && d[4..8] == STUN_MAGIC_COOKIE
        && usize::from(u16::from_be_bytes([d[2], d[3]])) + STUN_HEADER_LEN == d.len()
        && d.len() % 4 == 0
}

/// Initial retransmission timeout (RFC 8489 §6.2.1).
pub const RTO: Duration = Duration::from_millis(500);
/// Requests sent before giving up.
pub const RC: u32 = 7;
/// After the last request, wait this many RTOs for an answer.
pub const RM: u32 = 16;

/// A transaction's retransmission timers: first RTO (doubling), requests sent, and how many
/// RTOs to wait after the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// First retransmission timeout; doubles after each request.
    pub rto: Duration,
    /// Requests sent before giving up.
    pub rc: u32,
    /// RTOs waited after the last request.
    pub rm: u32,
}

impl Timers {
    /// RFC 8489 §6.2.1: 500 ms, 7 requests, 16 RTOs (failure at 39.5 s).
    pub const RFC8489: Timers = Timers {
        rto: RTO,
        rc: RC,
        rm: RM,
    };
    /// Behaviour discovery (spec/05 §2): 200 ms, 4 requests, 4 RTOs. A filtering test
    /// expects silence as a possible answer, so it must not wait 39.5 s for it: it concludes
    /// "no answer" after 2.2 s.
    pub const DISCOVERY: Timers = Timers {
        rto: Duration::from_millis(200),
        rc: 4,
        rm: 4,
    };
}

/// What a Binding request asks the server to change about its answer (RFC 5780 §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Answer from the address asked.
    Nothing,
    /// Answer from the other port.
    Port,
    /// Answer from the other address and port.
    IpAndPort,
}

/// Short-term credentials (RFC 8489 §9.1): USERNAME, and the password that keys
/// MESSAGE-INTEGRITY of the request and of its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// USERNAME: `<their ufrag>:<our ufrag>` in a connectivity check (spec/05 §5).
    pub username: String,
    /// The password both the request and its answer are keyed with (the answerer's).
    pub password: String,
}

/// A successful Binding answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// XOR-MAPPED-ADDRESS: where the server saw the request come from.
    pub mapped: SocketAddr,
    /// Where the answer came from (differs from the server asked after a CHANGE-REQUEST).
    pub from: SocketAddr,
    /// OTHER-ADDRESS, if the server supports RFC 5780.
    pub other: Option<SocketAddr>,
}

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
    /// A success answer without an address in it.
    #[error("STUN answer without XOR-MAPPED-ADDRESS")]
    NoMappedAddress,
    /// The driver could not send or receive (a socket error, in words).
    #[error("socket: {0}")]
    Io(String),
}

fn encode(msg: &StunMessage) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 512];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, msg)
        .ok()?;
    buf.truncate(n);
    Some(buf)
}

fn decoder(key: Option<&str>) -> MessageDecoder {
    let mut ctx = DecoderContextBuilder::default().with_validation();
    if let Some(k) = key.and_then(|p| HMACKey::new_short_term(p).ok()) {
        ctx = ctx.with_key(k);
    }
    MessageDecoderBuilder::default()
        .with_context(ctx.build())
        .build()
}

/// The transaction ID of a STUN message (bytes 8..20), if `bytes` looks like STUN.
pub fn transaction_id(bytes: &[u8]) -> Option<[u8; 12]> {
    if !is_stun(bytes) {
        return None;
    }
    let mut t = [0u8; 12];
    t.copy_from_slice(&bytes[8..20]);
    Some(t)
}

/// The USERNAME of a Binding request, if it carries one. Nothing is verified yet: the
/// username says which password [`respond_authenticated`] checks the request with.
pub fn request_username(request: &[u8]) -> Option<String> {
    let (msg, _) = MessageDecoderBuilder::default()
        .build()
        .decode(request)
        .ok()?;
    if msg.method() != BINDING || msg.class() != MessageClass::Request {
        return None;
    }
    msg.get::<UserName>()
        .and_then(|a| a.as_user_name().ok())
        .map(|u| u.as_str().to_owned())
}

/// Attribute types that mean "credentials": such a request is a connectivity check
/// (spec/05 §5) and is answered only by the punching attempt its USERNAME names.
const CREDENTIAL_ATTRIBUTES: [u16; 4] = [
    0x0006, // USERNAME
    0x0008, // MESSAGE-INTEGRITY
    0x001C, // MESSAGE-INTEGRITY-SHA256
    0x001E, // USERHASH
];
/// At most this many attribute types are listed in a 420's UNKNOWN-ATTRIBUTES.
pub const MAX_UNKNOWN_LISTED: usize = 16;
/// SOFTWARE in our requests, padded with spaces so that a request (header, SOFTWARE,
/// FINGERPRINT) is as long as the largest success answer it can get ([`largest_answer`]):
/// a responder that answers only what it was paid for never refuses it.
const SOFTWARE: &str = concat!("dna-p2p/", env!("CARGO_PKG_VERSION"));
/// The CHANGE-REQUEST attribute type (RFC 5780 §7.2).
const CHANGE_REQUEST: u16 = 0x0003;

/// The largest success answer a server of `server`'s family gives our requests: an RFC 5780
/// answer — header, XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN, OTHER-ADDRESS, FINGERPRINT — of
/// 64 bytes to an IPv4 server, 100 to an IPv6 one (a plain responder's is 40 or 52).
pub fn largest_answer(server: SocketAddr) -> usize {
    match mapped_address(server) {
        SocketAddr::V4(_) => 20 + 3 * 12 + 8,
        SocketAddr::V6(_) => 20 + 3 * 24 + 8,
    }
}

/// One of the four sockets of an RFC 5780 server, by what it changes of the primary
/// address IP1:P1: `ip` (IP2 instead of IP1) and `port` (P2 instead of P1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerSocket {
    /// On the other IP address.
    pub ip: bool,
    /// On the other port.
    pub port: bool,
}

impl ServerSocket {
    /// IP1:P1, the node's own socket.
    pub const PRIMARY: ServerSocket = ServerSocket {
        ip: false,
        port: false,
    };
    /// IP1:P2.
    pub const OTHER_PORT: ServerSocket = ServerSocket {
        ip: false,
        port: true,
    };
    /// IP2:P1.
    pub const OTHER_IP: ServerSocket = ServerSocket {
        ip: true,
        port: false,
    };
    /// IP2:P2.
    pub const OTHER_BOTH: ServerSocket = ServerSocket {
        ip: true,
        port: true,
    };

    /// The socket that differs from this one in the IP address (if `ip`) and the port (if
    /// `port`): where an answer to CHANGE-REQUEST(`ip`, `port`) received here leaves from.
    pub fn changed(self, ip: bool, port: bool) -> ServerSocket {
        ServerSocket {
            ip: self.ip ^ ip,
            port: self.port ^ port,
        }
    }
}

/// Why two addresses do not make an RFC 5780 server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ServerAddressError {
    /// The primary or the other address is unspecified (0.0.0.0, ::): RESPONSE-ORIGIN and
    /// OTHER-ADDRESS must name real addresses.
    #[error("an RFC 5780 server needs specific addresses, not 0.0.0.0 or ::")]
    Unspecified,
    /// The two addresses are of different families.
    #[error("the other address must be of the primary address's family")]
    Family,
    /// The other address or port equals the primary one (or a port is 0).
    #[error("the other address and port must differ from the primary ones")]
    Same,
}

/// The addresses of an RFC 5780 server: the primary IP1:P1 and the other IP2 and port P2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerAddresses {
    primary: SocketAddr,
    other_ip: IpAddr,
    other_port: u16,
}

impl ServerAddresses {
    /// Checks that the four sockets are four distinct, specific addresses of one family.
    pub fn new(
        primary: SocketAddr,
        other_ip: IpAddr,
        other_port: u16,
    ) -> Result<ServerAddresses, ServerAddressError> {
        if primary.ip().is_unspecified() || other_ip.is_unspecified() {
            return Err(ServerAddressError::Unspecified);
        }
        if primary.is_ipv4() != other_ip.is_ipv4() {
            return Err(ServerAddressError::Family);
        }
        if primary.ip() == other_ip
            || primary.port() == other_port
            || primary.port() == 0
            || other_port == 0
        {
            return Err(ServerAddressError::Same);
        }
        Ok(ServerAddresses {
            primary,
            other_ip,
            other_port,
        })
    }

    /// The address of socket `s`.
    pub fn addr(&self, s: ServerSocket) -> SocketAddr {
        SocketAddr::new(
            if s.ip {
                self.other_ip
            } else {
                self.primary.ip()
            },
            if s.port {
                self.other_port
            } else {
                self.primary.port()
            },
        )
    }
}

/// Why the responder does not answer a datagram (before any limit applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Unanswered {
    /// Not a well-formed STUN message, or a FINGERPRINT that does not match.
    #[error("malformed STUN message")]
    Malformed,
    /// A well-formed message that is not a Binding request: an answer, an indication, or
    /// another method.
    #[error("not a Binding request")]
    NotBindingRequest,
    /// A request with credentials that no punching attempt claimed.
    #[error("a connectivity check for no punching attempt")]
    Credentials,
}

/// The address a Binding answer reports for `from`: an IPv4-mapped IPv6 source (a
/// dual-stack socket's view of an IPv4 client) is reported as the IPv4 address it is.
pub fn mapped_address(from: SocketAddr) -> SocketAddr {
    match from {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => from,
        },
        v4 => v4,
    }
}

/// The answer to a Binding request from `from`, before any limit: a success response with
/// XOR-MAPPED-ADDRESS, or 420 (Unknown Attribute) listing the comprehension-required
/// attributes it does not implement (all but the credential ones; CHANGE-REQUEST too: this
/// responder has one address). Either carries FINGERPRINT if and only if the request did.
/// Requests with credentials are answered only by [`respond_authenticated`].
pub fn respond_to(from: SocketAddr, request: &[u8]) -> Result<Vec<u8>, Unanswered> {
    answer(from, request, None).map(|(_, a)| a)
}

/// The answer of an RFC 5780 server (spec/05 §2.1) to a Binding request from `from` that
/// arrived on its socket `on`, before any limit, and the socket it leaves from. As
/// [`respond_to`], except that CHANGE-REQUEST is understood — the answer leaves from
/// `on.changed(change IP, change port)` — and a success answer also carries RESPONSE-ORIGIN
/// (the socket it leaves from) and OTHER-ADDRESS (the socket differing from `on` in both
/// address and port, where a both-changed answer would leave from). A 420 leaves from `on`.
pub fn respond_rfc5780(
    from: SocketAddr,
    request: &[u8],
    on: ServerSocket,
    server: &ServerAddresses,
) -> Result<(ServerSocket, Vec<u8>), Unanswered> {
    answer(from, request, Some((on, server)))
}

fn answer(
    from: SocketAddr,
    request: &[u8],
    rfc5780: Option<(ServerSocket, &ServerAddresses)>,
) -> Result<(ServerSocket, Vec<u8>), Unanswered> {
    // Unvalidated first, to sort requests from the rest; then FINGERPRINT, if present.
    let (msg, _) = MessageDecoderBuilder::default()
        .build()
        .decode(request)
        .map_err(|_| Unanswered::Malformed)?;
    if msg.method() != BINDING || msg.class() != MessageClass::Request {
        return Err(Unanswered::NotBindingRequest);
    }
    let types = msg.attributes().iter().map(|a| a.attribute_type().as_u16());
    if types.clone().any(|t| CREDENTIAL_ATTRIBUTES.contains(&t)) {
        return Err(Unanswered::Credentials);
    }
    let fingerprint = msg.get::<Fingerprint>().is_some();
    if fingerprint && decoder(None).decode(request).is_err() {
        return Err(Unanswered::Malformed);
    }
    let understood = |t: u16| rfc5780.is_some() && t == CHANGE_REQUEST;
    let mut unknown: Vec<u16> = Vec::new();
    for t in types.filter(|t| *t < 0x8000 && !understood(*t)) {
        if !unknown.contains(&t) && unknown.len() < MAX_UNKNOWN_LISTED {
            unknown.push(t);
        }
    }
    let on = rfc5780.map_or(ServerSocket::PRIMARY, |(on, _)| on);
    let (via, answer) = if unknown.is_empty() {
        let b = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
            .with_transaction_id(*msg.transaction_id())
            .with_attribute(XorMappedAddress::from(mapped_address(from)));
        match rfc5780 {
            None => (on, b),
            Some((on, server)) => {
                // The first CHANGE-REQUEST counts; stun-rs has checked its length.
                let flags = msg
                    .get::<ChangeRequest>()
                    .and_then(|a| a.as_change_request().ok())
                    .map(|c| c.flags())
                    .unwrap_or_default();
                let via = on.changed(
                    flags.contains(ChangeRequestFlags::ChangeIp),
                    flags.contains(ChangeRequestFlags::ChangePort),
                );
                let b = b
                    .with_attribute(ResponseOrigin::from(server.addr(via)))
                    .with_attribute(OtherAddress::from(server.addr(on.changed(true, true))));
                (via, b)
            }
        }
    } else {
        let code =
            stun_rs::ErrorCode::new(420, "Unknown Attribute").map_err(|_| Unanswered::Malformed)?;
        let b = StunMessageBuilder::new(BINDING, MessageClass::ErrorResponse)
            .with_transaction_id(*msg.transaction_id())
            .with_attribute(ErrorCode::new(code))
            .with_attribute(UnknownAttributes::from(unknown.as_slice()));
        (on, b)
    };
    let answer = if fingerprint {
        answer.with_attribute(Fingerprint::default())
    } else {
        answer
    };
    let bytes = encode(&answer.build()).ok_or(Unanswered::Malformed)?;
    Ok((via, bytes))
}

/// [`respond_to`]'s answer, if there is one.
pub fn respond(from: SocketAddr, request: &[u8]) -> Option<Vec<u8>> {
    respond_to(from, request).ok()
}

/// The answer to a connectivity check keyed with our `password`: `None` unless the request
/// is a Binding request whose MESSAGE-INTEGRITY and FINGERPRINT verify. The answer carries
/// XOR-MAPPED-ADDRESS and is keyed with the same password.
pub fn respond_authenticated(from: SocketAddr, request: &[u8], password: &str) -> Option<Vec<u8>> {
    let (msg, _) = decoder(Some(password)).decode(request).ok()?;
    if msg.method() != BINDING
        || msg.class() != MessageClass::Request
        || msg.get::<Fingerprint>().is_none()
        || msg.get::<MessageIntegrity>().is_none()
    {
        return None;
    }
    let key = HMACKey::new_short_term(password).ok()?;
    let answer = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
        .with_transaction_id(*msg.transaction_id())
        .with_attribute(XorMappedAddress::from(from))
        .with_attribute(MessageIntegrity::new(key))
        .with_attribute(Fingerprint::default())
        .build();
    encode(&answer)
}

/// How a [`Binding`] transaction is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Retransmission timers.
    pub timers: Timers,
    /// CHANGE-REQUEST (RFC 5780); the answer may then come from another address.
    pub change: Change,
    /// Short-term credentials; the answer must then verify with the same password.
    pub credentials: Option<Credentials>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timers: Timers::RFC8489,
            change: Change::Nothing,
            credentials: None,
        }
    }
}

/// One Binding transaction (client side), sans-IO: [`poll_transmit`](Binding::poll_transmit)
/// for what to send, [`handle_response`](Binding::handle_response) for datagrams with our
/// transaction ID, [`handle_timeout`](Binding::handle_timeout) when
/// [`poll_timeout`](Binding::poll_timeout) passes.
#[derive(Debug, Clone)]
pub struct Binding {
    server: SocketAddr,
    tid: [u8; 12],
    request: Vec<u8>,
    opts: Options,
    sent: u32,
    next: Instant,
    rto: Duration,
    result: Option<Result<Answer, BindingError>>,
}

impl Binding {
    /// A plain Binding request to `server` (RFC 8489 timers), first sent at `now`.
    pub fn new(server: SocketAddr, tid: [u8; 12], now: Instant) -> Binding {
        Binding::with_options(server, tid, Options::default(), now)
    }

    /// A Binding request with CHANGE-REQUEST and/or credentials.
    pub fn with_options(server: SocketAddr, tid: [u8; 12], opts: Options, now: Instant) -> Binding {
        let mut b = StunMessageBuilder::new(BINDING, MessageClass::Request)
            .with_transaction_id(TransactionId::from(tid));
        let flags = match opts.change {
            Change::Nothing => None,
            Change::Port => Some(ChangeRequestFlags::ChangePort.into()),
            Change::IpAndPort => {
                Some(ChangeRequestFlags::ChangeIp | ChangeRequestFlags::ChangePort)
            }
        };
        if flags.is_some() {
            b = b.with_attribute(ChangeRequest::new(flags));
        }
        match &opts.credentials {
            Some(c) => {
                if let (Ok(u), Ok(k)) = (
                    UserName::new(c.username.as_str()),
                    HMACKey::new_short_term(c.password.as_str()),
                ) {
                    b = b.with_attribute(u).with_attribute(MessageIntegrity::new(k));
                }
            }
            None => {
                // Pays for the answer (spec/05 §1.2): header 20, SOFTWARE 4 + text, FINGERPRINT
                // 8 — the text padded with spaces to make the largest answer's length.
                let text = largest_answer(server) - 32;
                if let Ok(sw) = Software::new(format!("{SOFTWARE:<text$}")) {
                    b = b.with_attribute(sw);
                }
            }
        }
        let msg = b.with_attribute(Fingerprint::default()).build();
        Binding {
            server,
            tid,
            request: encode(&msg).unwrap_or_default(),
            rto: opts.timers.rto,
            opts,
            sent: 0,
            next: now,
            result: None,
        }
    }

    /// The transaction ID, for routing answers to this transaction.
    pub fn transaction_id(&self) -> [u8; 12] {
        self.tid
    }

    /// Where the request goes.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The request to send now, if one is due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, &[u8])> {
        let t = self.opts.timers;
        if self.result.is_some() || self.sent >= t.rc || now < self.next {
            return None;
        }
        self.sent += 1;
        self.next = if self.sent == t.rc {
            now + t.rto * t.rm
        } else {
            now + self.rto
        };
        self.rto *= 2;
        Some((self.server, &self.request))
    }

    /// Takes an answer; returns whether it ended the transaction. Without CHANGE-REQUEST an
    /// answer counts only from the server asked; with credentials only if its
    /// MESSAGE-INTEGRITY verifies with the password.
    pub fn handle_response(&mut self, from: SocketAddr, bytes: &[u8]) -> bool {
        if self.result.is_some()
            || (self.opts.change == Change::Nothing && from != self.server)
            || transaction_id(bytes) != Some(self.tid)
        {
            return false;
        }
        let key = self.opts.credentials.as_ref().map(|c| c.password.as_str());
        let Ok((msg, _)) = decoder(key).decode(bytes) else {
            return false;
        };
        if msg.method() != BINDING || (key.is_some() && msg.get::<MessageIntegrity>().is_none()) {
            return false;
        }
        self.result = Some(match msg.class() {
            MessageClass::SuccessResponse => msg
                .get::<XorMappedAddress>()
                .and_then(|a| a.as_xor_mapped_address().ok())
                .map(|a| Answer {
                    mapped: *a.socket_address(),
                    from,
                    other: msg
                        .get::<OtherAddress>()
                        .and_then(|o| o.as_other_address().ok())
                        .map(|o| *o.socket_address()),
                })
                .ok_or(BindingError::NoMappedAddress),
            MessageClass::ErrorResponse => Err(BindingError::ErrorResponse(from)),
            _ => return false,
        });
        true
    }

    /// Gives up once the last request's wait has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.result.is_none() && self.sent >= self.opts.timers.rc && now >= self.next {
            self.result = Some(Err(BindingError::Timeout(self.server)));
        }
    }

    /// When to call [`handle_timeout`](Binding::handle_timeout) or poll again; `None` once
    /// done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.result.is_none().then_some(self.next)
    }

    /// The outcome, once there is one.
    pub fn result(&self) -> Option<&Result<Answer, BindingError>> {
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
        assert!(is_stun(&req));
        let answer = respond(me, &req).unwrap();
        assert!(
            !b.handle_response("192.0.2.9:3478".parse().unwrap(), &answer),
            "wrong source"
        );
        assert!(b.handle_response(server, &answer));
        assert_eq!(b.result().unwrap().as_ref().unwrap().mapped, me);
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
#[cfg(test)]
mod auth_tests {
    use super::*;
    #[test]
    fn authenticated_round_trip() {
        let now = crate::nat::tests::t0();
        let server: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let me: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let creds = Credentials {
            username: "bbbb:aaaa".into(),
            password: "bbbb-password-0123456789".into(),
        };
        let mut b = Binding::with_options(
            server,
            [9; 12],
            Options {
                credentials: Some(creds),
                ..Options::default()
            },
            now,
        );
        let (_, req) = b.poll_transmit(now).unwrap();
        let req = req.to_vec();
        assert_eq!(request_username(&req).as_deref(), Some("bbbb:aaaa"));
        assert_eq!(
            respond_authenticated(me, &req, "wrong-password-000000000"),
            None
        );
        let answer = respond_authenticated(me, &req, "bbbb-password-0123456789").expect("answered");
        assert!(b.handle_response(server, &answer));
        assert_eq!(b.result().unwrap().as_ref().unwrap().mapped, me);
    }
}

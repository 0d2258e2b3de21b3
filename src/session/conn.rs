//! The session protocol on one QUIC connection, as a sans-IO state machine
//! (spec/03-session.md §3–§6).
//!
//! Input: stream bytes ([`Connection::handle_input`]) and time ([`Connection::handle_timeout`]).
//! Output: bytes to write ([`Connection::poll_transmit`]), events ([`Connection::poll_event`])
//! and the next deadline ([`Connection::poll_timeout`]). The driver owns the QUIC stream and
//! the clock; this type owns the protocol.
//!
//! ```text
//! AwaitHello ──HELLO ok──▶ Handshaking ──KEX done──▶ Established
//!     dialer sends HELLO + KEX_INIT at once; listener HELLO, then KEX_ACCEPT on KEX_INIT
//! ```
//!
//! Limits against hostile peers (spec/06-node.md, "Transport limits"): until HELLO verifies,
//! the decoder admits only a HELLO-sized frame; frames the peer can make us answer (PONG,
//! ACK) and PRESENCE are coalesced to one pending each and, like all control frames, leave
//! only while the writer is within its budget; a writer that has bytes waiting and makes no
//! progress for `write_stall_timeout` ends the connection (SLOW_READER).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;

use crate::crypto::{kex, Fingerprint, Identity, Message, Session};
use crate::wire::{Decoded, FrameDecoder, FrameLimits, Header, MessageType, HEADER_LEN};

use super::hello::{hello, verify_hello, Role, EXPORTER_LEN, HELLO_LEN};
use super::outbox::Source;
use super::{ConnError, PresenceStatus};

/// The frame limits before the peer's HELLO verified: a HELLO and nothing larger.
fn hello_limits(after: FrameLimits) -> FrameLimits {
    FrameLimits {
        max_payload: after.max_payload.min(HELLO_LEN as u32),
    }
}

/// How DATA payloads are protected. Without the `bench-plaintext` feature (benchmarks
/// only) the one value is [`Protection::EndToEnd`]: nothing in a node's configuration can
/// turn end-to-end encryption off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protection {
    /// Session form (spec/02-crypto.md §5). The only mode a node uses.
    EndToEnd,
    /// The plaintext message structure without AEAD and without key exchange. Exists only so
    /// the transport benchmark can measure framing apart from encryption.
    #[cfg(any(test, feature = "bench-plaintext"))]
    UnprotectedForBenchmarks,
}

impl Protection {
    /// Whether this is the benchmark-only plaintext mode.
    fn is_plaintext(self) -> bool {
        #[cfg(any(test, feature = "bench-plaintext"))]
        if self == Protection::UnprotectedForBenchmarks {
            return true;
        }
        false
    }
}

/// Timers and limits of a connection (spec/03-session.md §6).
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// PING interval (default 30 s).
    pub ping_interval: Duration,
    /// A peer silent this long is gone (default 60 s).
    pub idle_timeout: Duration,
    /// HELLO and key exchange must finish within this (default 10 s).
    pub handshake_timeout: Duration,
    /// Most DATA frames in flight, unacknowledged (default 8192).
    pub max_inflight: u64,
    /// Frame limits once the peer is authenticated (default: 1 MiB payloads). Until its
    /// HELLO verifies, a peer may send only frames of at most a HELLO's size (5263 B).
    pub limits: FrameLimits,
    /// Acknowledge only what the driver confirmed with [`Connection::confirm`] — after it
    /// stored the messages (default false: acknowledge on receipt).
    pub ack_on_confirm: bool,
    /// A peer that takes none of our bytes for this long while some wait for it is closed
    /// with SLOW_READER (default 20 s).
    pub write_stall_timeout: Duration,
    /// A peer that sends us nothing at all — no ACK, no PONG — for this long while DATA
    /// of ours waits for its ACK is gone (default 20 s; spec/03-session.md §6): a dead path
    /// with messages on it is noticed long before `idle_timeout`.
    pub ack_timeout: Duration,
    /// End-to-end protection (always [`Protection::EndToEnd`] outside benchmarks).
    pub protection: Protection,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            max_inflight: 8192,
            limits: FrameLimits::default(),
            ack_on_confirm: false,
            write_stall_timeout: Duration::from_secs(20),
            ack_timeout: Duration::from_secs(20),
            protection: Protection::EndToEnd,
        }
    }
}

/// What happened on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEvent {
    /// HELLO verified: the peer is who it says (and who we dialed).
    Authenticated {
        /// The peer's fingerprint.
        peer: Fingerprint,
    },
    /// The end-to-end session is ready: messages flow.
    Established,
    /// A message arrived (not yet de-duplicated: the driver's inbox does that).
    Message(Message),
    /// The peer acknowledged every message with a counter below `below`.
    Acked {
        /// Cumulative acknowledgement.
        below: u64,
    },
    /// A fresh round-trip time from PING/PONG.
    Rtt(Duration),
    /// The peer announced its presence.
    Presence(PresenceStatus),
}

enum Kex {
    Idle,
    Initiator(Box<kex::Initiator>),
    Responder(Box<kex::Responder>),
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    Handshaking,
    Established,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::AwaitHello => "awaiting HELLO",
            Phase::Handshaking => "running the key exchange",
            Phase::Established => "established",
        }
    }
}

/// One connection's session protocol.
pub struct Connection {
    id: u64,
    role: Role,
    cfg: ConnConfig,
    identity: Arc<Identity>,
    exporter: [u8; EXPORTER_LEN],
    expected: Option<Fingerprint>,
    rng: ChaCha20Rng,
    decoder: FrameDecoder,
    control: BytesMut,
    /// The nonce of the latest PING not yet answered: PINGs coalesce into one PONG.
    pong_due: Option<[u8; 8]>,
    /// A PRESENCE not yet sent: only the latest status is.
    presence_due: Option<PresenceStatus>,
    /// Since when bytes wait for the writer with no progress.
    stalled_since: Option<Instant>,
    /// Since when DATA of ours waits for an ACK (armed by the timer, cleared by progress).
    awaiting_ack: Option<Instant>,
    tx_seq: u32,
    rx_seq: u32,
    phase: Phase,
    peer: Option<Fingerprint>,
    kex: Kex,
    session: Option<Session>,
    sent: u64,
    acked_below: u64,
    received: u64,
    /// With `ack_on_confirm`: received messages the driver has stored.
    confirmed: u64,
    ack_due: bool,
    started: Instant,
    last_rx: Instant,
    next_ping: Option<Instant>,
    ping: Option<(u64, Instant)>,
    rtt: Option<Duration>,
    events: VecDeque<ConnEvent>,
}

fn u64_payload(msg_type: MessageType, p: &[u8]) -> Result<u64, ConnError> {
    let a: [u8; 8] = p.try_into().map_err(|_| ConnError::BadPayload {
        msg_type,
        reason: "expected 8 bytes",
    })?;
    Ok(u64::from_be_bytes(a))
}

impl Connection {
    /// The dialing side, expecting `peer`. `id` names the connection in the outbox; `rng` is
    /// seeded by the driver.
    pub fn dial(
        id: u64,
        now: Instant,
        identity: Arc<Identity>,
        exporter: [u8; EXPORTER_LEN],
        peer: Fingerprint,
        cfg: ConnConfig,
        rng: ChaCha20Rng,
    ) -> Connection {
        let mut c = Connection::new(
            id,
            now,
            Role::Dialer,
            identity,
            exporter,
            Some(peer),
            cfg,
            rng,
        );
        if c.cfg.protection == Protection::EndToEnd {
            let (state, init) = kex::Initiator::start(&c.identity, peer, &mut c.rng);
            c.push_frame(MessageType::KexInit, &init);
            c.kex = Kex::Initiator(Box::new(state));
        }
        c
    }

    /// The accepting side; the peer's identity is learned from its HELLO.
    pub fn accept(
        id: u64,
        now: Instant,
        identity: Arc<Identity>,
        exporter: [u8; EXPORTER_LEN],
        cfg: ConnConfig,
        rng: ChaCha20Rng,
    ) -> Connection {
        Connection::new(id, now, Role::Listener, identity, exporter, None, cfg, rng)
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        id: u64,
        now: Instant,
        role: Role,
        identity: Arc<Identity>,
        exporter: [u8; EXPORTER_LEN],
        expected: Option<Fingerprint>,
        cfg: ConnConfig,
        rng: ChaCha20Rng,
    ) -> Connection {
        let mut c = Connection {
            id,
            role,
            decoder: FrameDecoder::new(hello_limits(cfg.limits)),
            cfg,
            identity,
            exporter,
            expected,
            rng,
            control: BytesMut::new(),
            pong_due: None,
            presence_due: None,
            stalled_since: None,
            awaiting_ack: None,
            tx_seq: 0,
            rx_seq: 0,
            phase: Phase::AwaitHello,
            peer: None,
            kex: Kex::Idle,
            session: None,
            sent: 0,
            acked_below: 0,
            received: 0,
            confirmed: 0,
            ack_due: false,
            started: now,
            last_rx: now,
            next_ping: None,
            ping: None,
            rtt: None,
            events: VecDeque::new(),
        };
        let h = hello(&c.identity, &c.exporter, role);
        c.push_frame(MessageType::Hello, &h);
        c
    }

    /// The connection's id (the outbox's key for its in-flight messages).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The authenticated peer, once HELLO verified.
    pub fn peer(&self) -> Option<Fingerprint> {
        self.peer
    }

    /// Whether messages can flow.
    pub fn is_established(&self) -> bool {
        self.phase == Phase::Established
    }

    /// The secret of this connection's application streams (spec/03-session.md §10), once
    /// the end-to-end session is up.
    pub fn stream_secret(&self) -> Option<crate::crypto::stream::StreamSecret> {
        self.session
            .as_ref()
            .filter(|_| self.is_established())
            .map(Session::stream_secret)
    }

    /// The latest round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Sends a PING at the next [`Connection::handle_timeout`] (at `now`), for an
    /// on-demand round-trip measurement (`dna ping`); its PONG gives [`ConnEvent::Rtt`].
    /// A PING still unanswered is superseded (its late PONG is ignored).
    pub fn ping_now(&mut self, now: Instant) {
        if self.phase == Phase::Established {
            self.next_ping = Some(now);
        }
    }

    /// Messages sent on this connection and not yet acknowledged.
    pub fn unacked(&self) -> u64 {
        self.sent - self.acked_below
    }

    /// Messages received so far (the counter the next one gets is this).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// With [`ConnConfig::ack_on_confirm`]: the first `upto` received messages are stored;
    /// an ACK covering them is due. Values beyond what was received, or behind an earlier
    /// confirmation, change nothing.
    pub fn confirm(&mut self, upto: u64) {
        if upto > self.confirmed && upto <= self.received {
            self.confirmed = upto;
            self.ack_due = true;
        }
    }

    /// Queues a PRESENCE frame (replacing one not yet sent).
    pub fn send_presence(&mut self, status: PresenceStatus) {
        if self.phase != Phase::AwaitHello {
            self.presence_due = Some(status);
        }
    }

    /// Bytes of an incomplete frame the decoder holds.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// The driver's report on its writer: whether bytes wait for it (`waiting`) and whether
    /// it moved any to the stream since the last report (`progressed`). Bytes waiting with no
    /// progress for `write_stall_timeout` end the connection at the next
    /// [`Connection::handle_timeout`].
    pub fn handle_writer(&mut self, now: Instant, waiting: bool, progressed: bool) {
        self.stalled_since = match (waiting, self.stalled_since) {
            (false, _) => None,
            (true, Some(since)) if !progressed => Some(since),
            (true, _) => Some(now),
        };
    }

    fn push_frame(&mut self, msg_type: MessageType, payload: &[u8]) {
        let header = Header {
            msg_type,
            seq: self.tx_seq,
            // Control payloads are at most a HELLO or key-exchange message (< 7 KB).
            payload_len: payload.len() as u32,
            crc32: crc32fast::hash(payload),
        };
        self.tx_seq = self.tx_seq.wrapping_add(1);
        self.control.reserve(HEADER_LEN + payload.len());
        self.control.put_slice(&header.emit());
        self.control.put_slice(payload);
    }

    /// Feeds bytes read from the session stream. Stops at the first error: the driver closes
    /// the connection with [`ConnError::code`].
    pub fn handle_input(&mut self, now: Instant, input: &[u8]) -> Result<(), ConnError> {
        self.handle_input_ahead(now, input, 0)
    }

    /// Feeds the segments of one read of the session stream, in order: as
    /// [`Connection::handle_input`] on each, except that a frame straddling two segments is
    /// assembled in one allocation (the decoder is told what follows).
    pub fn handle_segments<B: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        segments: &[B],
    ) -> Result<(), ConnError> {
        let mut ahead: usize = segments.iter().map(|s| s.as_ref().len()).sum();
        for s in segments {
            let s = s.as_ref();
            ahead -= s.len();
            self.handle_input_ahead(now, s, ahead)?;
        }
        Ok(())
    }

    fn handle_input_ahead(
        &mut self,
        now: Instant,
        mut input: &[u8],
        ahead: usize,
    ) -> Result<(), ConnError> {
        self.last_rx = now;
        while !input.is_empty() {
            if let Some(frame) = self.decoder.decode_ahead(&mut input, ahead)? {
                self.handle_frame(now, frame)?;
            }
        }
        Ok(())
    }

    fn unexpected(&self, msg_type: MessageType) -> ConnError {
        ConnError::UnexpectedFrame {
            msg_type,
            state: self.phase.name(),
        }
    }

    fn handle_frame(&mut self, now: Instant, frame: Decoded<'_>) -> Result<(), ConnError> {
        let header = frame.header();
        if header.seq != self.rx_seq {
            return Err(ConnError::BadSequence {
                expected: self.rx_seq,
                found: header.seq,
            });
        }
        self.rx_seq = self.rx_seq.wrapping_add(1);
        let t = header.msg_type;
        if (self.phase, t) == (Phase::Established, MessageType::Data) {
            let msg = self.open(frame)?;
            self.received += 1;
            self.ack_due |= !self.cfg.ack_on_confirm;
            self.events.push_back(ConnEvent::Message(msg));
            return Ok(());
        }
        let payload = frame.payload();
        match (self.phase, t) {
            (Phase::AwaitHello, MessageType::Hello) => {
                let pk = verify_hello(payload, &self.exporter, self.role, self.expected)?;
                let peer = pk.fingerprint();
                self.peer = Some(peer);
                // Authenticated: the peer may now send frames of the session's size.
                self.decoder.set_limits(self.cfg.limits);
                self.phase = Phase::Handshaking;
                self.events.push_back(ConnEvent::Authenticated { peer });
                if self.cfg.protection.is_plaintext() {
                    self.establish(now);
                }
            }
            (Phase::AwaitHello, _) => return Err(self.unexpected(t)),
            (_, MessageType::Hello) => return Err(self.unexpected(t)),
            (Phase::Handshaking, MessageType::KexInit) if self.role == Role::Listener => {
                if !matches!(self.kex, Kex::Idle) {
                    return Err(self.unexpected(t));
                }
                let (state, accept) =
                    kex::Responder::on_init(&self.identity, payload, self.peer, &mut self.rng)?;
                self.push_frame(MessageType::KexAccept, &accept);
                self.kex = Kex::Responder(Box::new(state));
            }
            (Phase::Handshaking, MessageType::KexAccept) if self.role == Role::Dialer => {
                let Kex::Initiator(state) = std::mem::replace(&mut self.kex, Kex::Done) else {
                    return Err(self.unexpected(t));
                };
                let (session, finish) = state.on_accept(&self.identity, payload)?;
                self.push_frame(MessageType::KexFinish, &finish);
                self.session = Some(session);
                self.establish(now);
            }
            (Phase::Handshaking, MessageType::KexFinish) if self.role == Role::Listener => {
                let Kex::Responder(state) = std::mem::replace(&mut self.kex, Kex::Done) else {
                    return Err(self.unexpected(t));
                };
                self.session = Some(state.on_finish(payload)?);
                self.establish(now);
            }
            (_, MessageType::Ping) => {
                // Only the latest PING is answered: a peer cannot make us queue PONGs.
                self.pong_due = Some(u64_payload(t, payload)?.to_be_bytes());
            }
            (_, MessageType::Pong) => {
                let nonce = u64_payload(t, payload)?;
                if let Some((expected, sent)) = self.ping {
                    if nonce == expected {
                        let rtt = now.saturating_duration_since(sent);
                        self.rtt = Some(rtt);
                        self.ping = None;
                        self.events.push_back(ConnEvent::Rtt(rtt));
                    }
                }
            }
            (_, MessageType::Presence) => {
                let status = match *payload {
                    [b] => PresenceStatus::from_u8(b),
                    _ => None,
                }
                .ok_or(ConnError::BadPayload {
                    msg_type: t,
                    reason: "expected one status byte 0, 1 or 2",
                })?;
                self.events.push_back(ConnEvent::Presence(status));
            }
            (Phase::Established, MessageType::Ack) => {
                let below = u64_payload(t, payload)?;
                if below > self.sent {
                    return Err(ConnError::AckBeyondSent {
                        acked: below,
                        sent: self.sent,
                    });
                }
                if below > self.acked_below {
                    self.acked_below = below;
                    self.awaiting_ack = None;
                    self.events.push_back(ConnEvent::Acked { below });
                }
            }
            _ => return Err(self.unexpected(t)),
        }
        Ok(())
    }

    fn establish(&mut self, now: Instant) {
        self.phase = Phase::Established;
        self.events.push_back(ConnEvent::Established);
        // A first PING right away gives an RTT figure with the connection.
        self.next_ping = Some(now);
    }

    /// Opens a DATA payload with one allocation at most: a payload lent from the stream's
    /// bytes is copied once into the message's own buffer; one the decoder assembled is
    /// taken over (decrypted in place).
    fn open(&mut self, frame: Decoded<'_>) -> Result<Message, ConnError> {
        let msg = match (&mut self.session, frame) {
            (Some(session), Decoded::Lent(f)) => session.open_slice(f.payload)?,
            (Some(session), owned) => session.open(owned.into_payload_mut())?,
            (None, Decoded::Lent(f)) => crate::crypto::parse_plaintext_slice(f.payload)?,
            (None, owned) => crate::crypto::parse_plaintext_vec(owned.into_payload_mut().into())?,
        };
        if self.session.is_none() {
            let peer = self.peer.unwrap_or(msg.sender);
            if msg.sender != peer {
                return Err(crate::crypto::OpenError::WrongSender {
                    expected: peer,
                    found: msg.sender,
                }
                .into());
            }
        }
        Ok(msg)
    }

    /// Writes pending frames into `out`: control frames first (PONG, PRESENCE and ACK
    /// coalesced to one each), then DATA taken from `outbox` (the peer's) while fewer than
    /// `max_inflight` are unacknowledged and at most about `budget` bytes of DATA were added.
    /// `budget` is what the writer may still take: at 0 nothing is written, control frames
    /// included, so a peer that does not read cannot make us queue bytes.
    pub fn poll_transmit(
        &mut self,
        outbox: Option<&mut dyn Source>,
        budget: usize,
        out: &mut BytesMut,
    ) {
        if budget == 0 {
            return;
        }
        if let Some(nonce) = self.pong_due.take() {
            self.push_frame(MessageType::Pong, &nonce);
        }
        if let Some(status) = self.presence_due.take() {
            self.push_frame(MessageType::Presence, &[status as u8]);
        }
        if self.ack_due {
            self.ack_due = false;
            let below = match self.cfg.ack_on_confirm {
                true => self.confirmed,
                false => self.received,
            }
            .to_be_bytes();
            self.push_frame(MessageType::Ack, &below);
        }
        out.extend_from_slice(&self.control.split());
        let Some(outbox) = outbox else { return };
        if self.phase != Phase::Established {
            return;
        }
        // Room for what will be taken, at once rather than by doubling: the queued
        // messages with their frame and envelope overhead (at most the budget and one more).
        let room = self.cfg.max_inflight.saturating_sub(self.unacked()) as usize;
        let n = outbox.waiting().min(room);
        if n > 0 {
            let per_msg = HEADER_LEN + crate::crypto::SESSION_OVERHEAD;
            let avg = outbox.waiting_bytes() / outbox.waiting();
            out.reserve((n * (per_msg + avg)).min(budget + per_msg + avg));
        }
        let start = out.len();
        while out.len() - start < budget && self.unacked() < self.cfg.max_inflight {
            let counter = self.sent;
            let Some(msg) = outbox.take(self.id, counter) else {
                break;
            };
            let header_at = out.len();
            out.put_bytes(0, HEADER_LEN);
            let local = self.identity.fingerprint();
            match (&mut self.session, self.peer) {
                (Some(session), _) => {
                    if session
                        .seal(msg.id, msg.timestamp_ms, msg.kind, &msg.body, out)
                        .is_err()
                    {
                        // Counter exhausted: the message stays in flight in the peer's
                        // ledger; the connection will be replaced and the message resent.
                        out.truncate(header_at);
                        break;
                    }
                }
                (None, Some(peer)) => {
                    crate::crypto::encode_plaintext(
                        out,
                        &local,
                        &peer,
                        &msg.id,
                        msg.timestamp_ms,
                        msg.kind,
                        &msg.body,
                    );
                }
                (None, None) => {
                    out.truncate(header_at);
                    break;
                }
            }
            let payload = &out[header_at + HEADER_LEN..];
            let header = Header {
                msg_type: MessageType::Data,
                seq: self.tx_seq,
                payload_len: payload.len() as u32,
                crc32: crc32fast::hash(payload),
            };
            self.tx_seq = self.tx_seq.wrapping_add(1);
            out[header_at..header_at + HEADER_LEN].copy_from_slice(&header.emit());
            self.sent += 1;
        }
    }

    /// Runs timers: handshake deadline, idle limit, stalled writer, PING.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnError> {
        if let Some(since) = self.stalled_since {
            if now >= since + self.cfg.write_stall_timeout {
                return Err(ConnError::SlowReader {
                    stalled_ms: now.saturating_duration_since(since).as_millis() as u64,
                });
            }
        }
        if self.phase != Phase::Established && now >= self.started + self.cfg.handshake_timeout {
            return Err(ConnError::HandshakeTimeout {
                ms: now.saturating_duration_since(self.started).as_millis() as u64,
            });
        }
        let silent = now.saturating_duration_since(self.last_rx);
        if self.unacked() == 0 {
            self.awaiting_ack = None;
        } else if self.phase == Phase::Established {
            let since = *self.awaiting_ack.get_or_insert(now);
            let waited = now.saturating_duration_since(since.max(self.last_rx));
            if waited >= self.cfg.ack_timeout {
                return Err(ConnError::PeerGone {
                    silent_ms: silent.as_millis() as u64,
                });
            }
        }
        if silent >= self.cfg.idle_timeout {
            return Err(ConnError::PeerGone {
                silent_ms: silent.as_millis() as u64,
            });
        }
        if let Some(at) = self.next_ping {
            if now >= at {
                let nonce = self.rng.next_u64();
                self.ping = Some((nonce, now));
                self.push_frame(MessageType::Ping, &nonce.to_be_bytes());
                self.next_ping = Some(now + self.cfg.ping_interval);
            }
        }
        Ok(())
    }

    /// When [`Connection::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.last_rx + self.cfg.idle_timeout;
        if self.phase != Phase::Established {
            t = t.min(self.started + self.cfg.handshake_timeout);
        }
        if let Some(p) = self.next_ping {
            t = t.min(p);
        }
        if let Some(since) = self.stalled_since {
            t = t.min(since + self.cfg.write_stall_timeout);
        }
        if self.phase == Phase::Established && self.unacked() > 0 {
            t = t.min(match self.awaiting_ack {
                Some(since) => since.max(self.last_rx) + self.cfg.ack_timeout,
                // Arm it at once.
                None => self.last_rx,
            });
        }
        t
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ConnEvent> {
        self.events.pop_front()
    }

    /// How many events [`Connection::poll_event`] has ready.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }
}

//! The TURN client's allocation state machine (RFC 8656 §§7–11; spec/07-relay.md §2.2),
//! sans-IO in the manner of quinn-proto: the driver feeds it datagrams from the server
//! ([`Client::handle_input`]) and the time ([`Client::handle_timeout`]), sends what
//! [`Client::poll_transmit`] gives, and reads [`Client::poll_event`].
//!
//! Allocate (unauthenticated) → 401 with REALM and NONCE → Allocate again with the
//! long-term credential (§7.1, RFC 8489 §9.2); 438 Stale Nonce → again with the new nonce.
//! Once allocated: Refresh at `lifetime − refresh_margin` (at half the lifetime if that is
//! not longer than the margin, §7.2); CreatePermission per peer IP, refreshed 60 s before its 300 s lifetime (§9);
//! Send indications out and Data indications in (§§10–11). A transaction that gets no
//! answer, or a Refresh or CreatePermission that the server no longer knows the allocation
//! for, loses the allocation: [`TurnEvent::Lost`], then a new Allocate (permissions are
//! asked again). [`Client::close`] sends Refresh with LIFETIME 0 (§7.2).

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stun_rs::HMACKey;

pub use super::config::{Transport, TurnConfig, TurnEvent, TurnStats, PERMISSION_LIFETIME};
use super::credentials::{Credentials, LongTerm};
use super::error::{TurnError, UseError};
use super::message::{
    encode_request, parse, send_indication, Auth, ErrorReply, Incoming, Request, Response, Success,
    MAX_SEND_DATA,
};
use crate::nat::stun::{transaction_id, Timers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Allocating,
    Allocated {
        relayed: SocketAddr,
        refresh_at: Instant,
    },
    Closing,
    Closed,
    Failed,
}

#[derive(Debug, Clone)]
struct Tx {
    tid: [u8; 12],
    request: Request,
    bytes: Vec<u8>,
    key: Option<HMACKey>,
    sent: u32,
    next: Instant,
    rto: Duration,
    auth_tries: u32,
}

#[derive(Debug, Clone, Copy)]
struct Permission {
    installed: bool,
    refresh_at: Option<Instant>,
}

/// A TURN client for one server (see the module docs).
#[derive(Debug, Clone)]
pub struct Client {
    server: SocketAddr,
    config: TurnConfig,
    timers: Timers,
    credentials: Credentials,
    long_term: LongTerm,
    auth: Option<Auth>,
    /// Wall-clock seconds at `t0`, for REST credentials.
    unix0: u64,
    t0: Instant,
    rng: ChaCha8Rng,
    state: State,
    txs: Vec<Tx>,
    permissions: BTreeMap<IpAddr, Permission>,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<TurnEvent>,
    queued_data: usize,
    reallocations: u32,
    cleared_mismatch: bool,
    stats: TurnStats,
}

impl Client {
    /// A client that starts allocating on `server` at `now`. `unix_now` is the wall clock at
    /// `now` (seconds since 1970; REST credentials expire by it); `seed` seeds the
    /// transaction IDs.
    pub fn new(
        server: SocketAddr,
        credentials: Credentials,
        config: TurnConfig,
        now: Instant,
        unix_now: u64,
        seed: [u8; 32],
    ) -> Client {
        let mut c = Client {
            server,
            timers: config.effective_timers(),
            config,
            long_term: credentials.at(unix_now),
            credentials,
            auth: None,
            unix0: unix_now,
            t0: now,
            rng: ChaCha8Rng::from_seed(seed),
            state: State::Allocating,
            txs: Vec::new(),
            permissions: BTreeMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            queued_data: 0,
            reallocations: 0,
            cleared_mismatch: false,
            stats: TurnStats::default(),
        };
        c.start_allocate(now);
        c
    }

    /// The server this client talks to.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The relayed address, while allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relayed, .. } => Some(relayed),
            _ => None,
        }
    }

    /// Counters.
    pub fn stats(&self) -> TurnStats {
        self.stats
    }

    /// Permissions asked for (installed or not).
    pub fn permission_count(&self) -> usize {
        self.permissions.len()
    }

    fn lifetime_secs(&self) -> u32 {
        u32::try_from(self.config.lifetime.as_secs()).unwrap_or(u32::MAX)
    }

    fn start(&mut self, now: Instant, request: Request, auth_tries: u32) {
        let tid = {
            let mut t = [0u8; 12];
            self.rng.fill_bytes(&mut t);
            t
        };
        let bytes = encode_request(tid, &request, self.auth.as_ref());
        self.out.push_back(bytes.clone());
        self.stats.requests += 1;
        let t = self.timers;
        let next = if t.rc <= 1 {
            now + t.rto * t.rm
        } else {
            now + t.rto
        };
        self.txs.push(Tx {
            tid,
            request,
            bytes,
            key: self.auth.as_ref().map(|a| a.key.clone()),
            sent: 1,
            next,
            rto: t.rto * 2,
            auth_tries,
        });
    }

    fn in_flight(&self, f: impl Fn(&Request) -> bool) -> bool {
        self.txs.iter().any(|t| f(&t.request))
    }

    fn start_allocate(&mut self, now: Instant) {
        // REST credentials are made afresh for each allocation (spec/07 §2.4).
        let unix = self
            .unix0
            .saturating_add(now.saturating_duration_since(self.t0).as_secs());
        let lt = self.credentials.at(unix);
        if lt != self.long_term {
            self.long_term = lt;
            if let Some(a) = self.auth.take() {
                self.set_auth(&a.realm.clone(), &a.nonce.clone());
            }
        }
        let lifetime = self.lifetime_secs();
        self.start(now, Request::Allocate { lifetime }, 0);
    }

    fn set_auth(&mut self, realm: &str, nonce: &str) -> bool {
        match Auth::new(
            &self.long_term.username,
            &self.long_term.password,
            realm,
            nonce,
        ) {
            Ok(a) => {
                self.auth = Some(a);
                true
            }
            Err(e) => {
                let err = TurnError::Credentials {
                    server: self.server,
                    why: e.to_string(),
                };
                self.fail(err);
                false
            }
        }
    }

    fn fail(&mut self, err: TurnError) {
        tracing::warn!(server = %self.server, error = %err, "TURN client gives up");
        self.txs.clear();
        self.out.clear();
        self.state = State::Failed;
        self.events.push_back(TurnEvent::Failed(err));
    }

    /// The allocation is gone: say so, and allocate again (bounded by
    /// `max_reallocations`).
    fn lose(&mut self, now: Instant, err: TurnError) {
        tracing::info!(server = %self.server, error = %err, "TURN allocation lost");
        self.txs.clear();
        for p in self.permissions.values_mut() {
            *p = Permission {
                installed: false,
                refresh_at: None,
            };
        }
        self.events.push_back(TurnEvent::Lost(err.clone()));
        self.reallocations += 1;
        if self.reallocations > self.config.max_reallocations {
            self.fail(err);
            return;
        }
        self.state = State::Allocating;
        self.start_allocate(now);
    }

    /// Asks for (and keeps refreshing) a permission for `peer`'s IP; sent once allocated.
    pub fn create_permission(&mut self, now: Instant, peer: IpAddr) -> Result<(), UseError> {
        if self.permissions.contains_key(&peer) {
            return Ok(());
        }
        if self.permissions.len() >= self.config.max_permissions {
            return Err(UseError::TooManyPermissions(self.config.max_permissions));
        }
        self.permissions.insert(
            peer,
            Permission {
                installed: false,
                refresh_at: None,
            },
        );
        if matches!(self.state, State::Allocated { .. }) {
            self.start(
                now,
                Request::CreatePermission {
                    peer: (peer, 0).into(),
                },
                0,
            );
        }
        Ok(())
    }

    /// Whether the server has installed the permission for `peer` (and it has not been
    /// lost since).
    pub fn has_permission(&self, peer: IpAddr) -> bool {
        self.permissions.get(&peer).is_some_and(|p| p.installed)
    }

    /// Stops refreshing the permission for `peer` (the server lets it expire).
    pub fn remove_permission(&mut self, peer: IpAddr) {
        self.permissions.remove(&peer);
        self.txs.retain(
            |t| !matches!(t.request, Request::CreatePermission { peer: p } if p.ip() == peer),
        );
    }

    /// A Send indication carrying `data` to `peer`, to be sent to [`Client::server`].
    /// Needs an allocation and a permission asked for the peer's IP.
    pub fn send(&mut self, peer: SocketAddr, data: &[u8]) -> Result<Vec<u8>, UseError> {
        if self.relayed().is_none() {
            return Err(UseError::NotAllocated);
        }
        if !self.permissions.contains_key(&peer.ip()) {
            return Err(UseError::NoPermission(peer.ip()));
        }
        if data.len() > MAX_SEND_DATA {
            return Err(UseError::TooLong(data.len()));
        }
        let mut tid = [0u8; 12];
        self.rng.fill_bytes(&mut tid);
        Ok(send_indication(tid, peer, data))
    }

    /// Deletes the allocation (Refresh with LIFETIME 0); [`TurnEvent::Closed`] follows.
    pub fn close(&mut self, now: Instant) {
        match self.state {
            State::Allocated { .. } => {
                self.txs.clear();
                self.state = State::Closing;
                self.start(now, Request::Refresh { lifetime: 0 }, 0);
            }
            State::Allocating => {
                self.txs.clear();
                self.out.clear();
                self.state = State::Closed;
                self.events.push_back(TurnEvent::Closed);
            }
            State::Closing | State::Closed | State::Failed => {}
        }
    }

    /// Takes a datagram (or a TCP frame) from `from`; returns whether it was for this
    /// client: a response to one of its transactions, or a Data indication it delivered.
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        if from != self.server {
            return false;
        }
        let live = transaction_id(bytes).and_then(|t| self.txs.iter().position(|x| x.tid == t));
        if let Some(i) = live {
            match parse(bytes, self.txs[i].key.as_ref()) {
                Ok(Incoming::Response(r)) if r.method == self.txs[i].request.method() => {
                    // A success to an authenticated request must carry MESSAGE-INTEGRITY
                    // (it verified, or parsing failed); an error may not (RFC 8489 §9.2.5).
                    if r.outcome.is_ok() && self.txs[i].key.is_some() && !r.integrity {
                        self.stats.unverified += 1;
                        return false;
                    }
                    let tx = self.txs.swap_remove(i);
                    self.stats.responses += 1;
                    self.on_response(now, tx, r);
                    return true;
                }
                Ok(_) => {}
                Err(_) => {
                    self.stats.unverified += 1;
                    return false;
                }
            }
        } else if let Ok(Incoming::Data { peer, data }) = parse(bytes, None) {
            if self.relayed().is_some()
                && self.permissions.contains_key(&peer.ip())
                && self.queued_data < self.config.max_queued_data
            {
                self.queued_data += 1;
                self.stats.data_in += 1;
                self.events.push_back(TurnEvent::Data { peer, data });
                return true;
            }
            self.stats.data_dropped += 1;
            return false;
        }
        self.stats.ignored += 1;
        false
    }

    fn on_response(&mut self, now: Instant, tx: Tx, r: Response) {
        match r.outcome {
            Err(e) if e.code == 401 || e.code == 438 => self.on_challenge(now, tx, &e),
            Err(e) => self.on_error(now, tx, TurnError::from_reply(self.server, &e)),
            Ok(s) => self.on_success(now, tx, s),
        }
    }

    /// 401 or 438: retry with the realm and nonce given, unless a 401 answers credentials
    /// already sent for the same realm (they are wrong) or the retries are used up.
    fn on_challenge(&mut self, now: Instant, tx: Tx, e: &ErrorReply) {
        let err = TurnError::from_reply(self.server, e);
        let (Some(realm), Some(nonce)) = (&e.realm, &e.nonce) else {
            let what = "401/438 without REALM and NONCE";
            return self.on_error(
                now,
                tx,
                TurnError::Malformed {
                    server: self.server,
                    what,
                },
            );
        };
        let same_realm = self.auth.as_ref().is_some_and(|a| &a.realm == realm);
        if (e.code == 401 && tx.key.is_some() && same_realm)
            || tx.auth_tries >= self.config.max_auth_retries
        {
            return self.on_error(now, tx, err);
        }
        if e.code == 438 {
            self.stats.stale_nonces += 1;
        }
        if self.set_auth(realm, nonce) {
            self.start(now, tx.request, tx.auth_tries + 1);
        }
    }

    fn on_error(&mut self, now: Instant, tx: Tx, err: TurnError) {
        tracing::debug!(server = %self.server, request = ?tx.request, error = %err, "TURN error");
        match (tx.request, self.state) {
            (Request::Refresh { lifetime: 0 }, State::Closing) => self.closed(),
            (Request::Refresh { lifetime: 0 }, State::Allocating) => self.start_allocate(now),
            // An allocation already exists for our 5-tuple (an earlier one of ours whose
            // answer was lost, or a restart on the same port): delete it once, then retry.
            (Request::Allocate { .. }, _)
                if err == TurnError::AllocationMismatch(self.server) && !self.cleared_mismatch =>
            {
                self.cleared_mismatch = true;
                self.start(now, Request::Refresh { lifetime: 0 }, 0);
            }
            // Re-allocating after a loss: keep trying while the budget lasts.
            (Request::Allocate { .. }, _)
                if matches!(err, TurnError::Timeout(_)) && self.reallocations > 0 =>
            {
                self.lose(now, err)
            }
            (Request::Allocate { .. }, _) => self.fail(err),
            // The server refused this peer; the allocation itself is fine.
            (Request::CreatePermission { peer }, State::Allocated { .. })
                if !matches!(
                    err,
                    TurnError::AllocationMismatch(_) | TurnError::Timeout(_)
                ) =>
            {
                self.permissions.remove(&peer.ip());
                self.events
                    .push_back(TurnEvent::PermissionFailed(peer.ip(), err));
            }
            (_, State::Allocated { .. }) => self.lose(now, err),
            _ => {}
        }
    }

    fn on_success(&mut self, now: Instant, tx: Tx, s: Success) {
        let granted = |asked: u32| Duration::from_secs(u64::from(s.lifetime.unwrap_or(asked)));
        match (tx.request, self.state) {
            (Request::Allocate { lifetime }, State::Allocating) => {
                let Some(relayed) = s.relayed else {
                    let what = "Allocate success without XOR-RELAYED-ADDRESS";
                    return self.fail(TurnError::Malformed {
                        server: self.server,
                        what,
                    });
                };
                let lifetime = granted(lifetime);
                self.state = State::Allocated {
                    relayed,
                    refresh_at: now + self.refresh_delay(lifetime),
                };
                self.stats.allocations += 1;
                self.reallocations = 0;
                tracing::info!(server = %self.server, %relayed, ?lifetime, "TURN allocation");
                self.events.push_back(TurnEvent::Allocated {
                    relayed,
                    mapped: s.mapped,
                    lifetime,
                });
                let peers: Vec<IpAddr> = self.permissions.keys().copied().collect();
                for ip in peers {
                    self.start(
                        now,
                        Request::CreatePermission {
                            peer: (ip, 0).into(),
                        },
                        0,
                    );
                }
            }
            (Request::Refresh { lifetime: 0 }, State::Closing) => self.closed(),
            (Request::Refresh { lifetime: 0 }, State::Allocating) => self.start_allocate(now),
            (Request::Refresh { lifetime }, State::Allocated { relayed, .. }) => {
                let lifetime = granted(lifetime);
                if lifetime.is_zero() {
                    return self.lose(now, TurnError::AllocationMismatch(self.server));
                }
                self.state = State::Allocated {
                    relayed,
                    refresh_at: now + self.refresh_delay(lifetime),
                };
                self.stats.refreshes += 1;
                self.events.push_back(TurnEvent::Refreshed { lifetime });
            }
            (Request::CreatePermission { peer }, State::Allocated { .. }) => {
                let refresh_at = Some(now + PERMISSION_LIFETIME - Duration::from_secs(60));
                if let Some(p) = self.permissions.get_mut(&peer.ip()) {
                    if p.installed {
                        self.stats.permission_refreshes += 1;
                    } else {
                        self.events
                            .push_back(TurnEvent::PermissionCreated(peer.ip()));
                    }
                    *p = Permission {
                        installed: true,
                        refresh_at,
                    };
                }
            }
            _ => {}
        }
    }

    fn closed(&mut self) {
        self.txs.clear();
        self.state = State::Closed;
        self.events.push_back(TurnEvent::Closed);
    }

    /// When to refresh an allocation granted `lifetime`: `refresh_margin` before it ends,
    /// or at half of it when it is not longer than the margin.
    fn refresh_delay(&self, lifetime: Duration) -> Duration {
        if lifetime > self.config.refresh_margin {
            lifetime - self.config.refresh_margin
        } else {
            lifetime / 2
        }
    }

    /// Retransmits, gives up on unanswered transactions, and starts the refreshes that are
    /// due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let t = self.timers;
        let mut expired = Vec::new();
        for (i, tx) in self.txs.iter_mut().enumerate() {
            if now < tx.next {
                continue;
            }
            if tx.sent < t.rc {
                tx.sent += 1;
                tx.next = if tx.sent == t.rc {
                    now + t.rto * t.rm
                } else {
                    now + tx.rto
                };
                tx.rto *= 2;
                self.out.push_back(tx.bytes.clone());
                self.stats.retransmits += 1;
            } else {
                expired.push(i);
            }
        }
        // Handle at most one expiry per call: handling one can clear the others.
        if let Some(&i) = expired.first() {
            let tx = self.txs.swap_remove(i);
            return self.on_error(now, tx, TurnError::Timeout(self.server));
        }
        if let State::Allocated { refresh_at, .. } = self.state {
            if now >= refresh_at && !self.in_flight(|r| matches!(r, Request::Refresh { .. })) {
                let lifetime = self.lifetime_secs();
                self.start(now, Request::Refresh { lifetime }, 0);
            }
            let due: Vec<IpAddr> = self
                .permissions
                .iter()
                .filter(|(_, p)| p.refresh_at.is_some_and(|at| now >= at))
                .map(|(ip, _)| *ip)
                .collect();
            for ip in due {
                if let Some(p) = self.permissions.get_mut(&ip) {
                    p.refresh_at = None;
                }
                self.start(
                    now,
                    Request::CreatePermission {
                        peer: (ip, 0).into(),
                    },
                    0,
                );
            }
        }
    }

    /// The next datagram to send to the server (after running the timers due at `now`).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        if self.out.is_empty() {
            self.handle_timeout(now);
        }
        self.out.pop_front().map(|b| (self.server, b))
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        let e = self.events.pop_front()?;
        if matches!(e, TurnEvent::Data { .. }) {
            self.queued_data -= 1;
        }
        Some(e)
    }

    /// When [`Client::handle_timeout`] must next run; `None` once closed or failed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.state, State::Closed | State::Failed) {
            return None;
        }
        let txs = self.txs.iter().map(|t| t.next);
        let refresh = match self.state {
            State::Allocated { refresh_at, .. }
                if !self.in_flight(|r| matches!(r, Request::Refresh { .. })) =>
            {
                Some(refresh_at)
            }
            _ => None,
        };
        let perms = self.permissions.values().filter_map(|p| p.refresh_at);
        txs.chain(refresh).chain(perms).min()
    }
}

//! Reaching a peer through NATs (spec/05-nat.md §2–§5), the driver side: runs behaviour
//! discovery, publishes candidates, registers at rendezvous nodes, exchanges CONNECT
//! signals, and runs the sans-IO [`Punch`] on the node's one socket before QUIC dials the
//! pair that worked.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::RngCore;
use tokio::sync::{mpsc, oneshot};

use super::events::ReachStage;
use super::os::with_rng;
use super::shared::{DhtShared, NatStatus, NodeHandle, Shared};
use super::signal_frames::{frame, limits, now_ms, FORWARD_TIMEOUT, MAX_SIGNAL_FRAME};
use super::spray::{our_behaviour, plan as plan_prediction, prober, probes_done, Plan, Spray};
use super::stun_routes::StunRoute;
use crate::crypto::Fingerprint;
use crate::dht::Contact;
use crate::nat::candidate::{Candidate, CandidateKind, PresenceInfo};
use crate::nat::discovery::{Discovery, DiscoveryError, NatClass};
use crate::nat::punch::{Punch, PunchConfig, PunchCreds, PunchResult, Selected};
use crate::nat::signal::{ConnectErrorCode, Signal, SignalKind};
use crate::nat::stun;
use crate::node::addresses;
use crate::node::core::{Answer, Input, Query, Reply};
use crate::node::reach::answer::{self, AskRelay, Callee};
pub use crate::node::reach::Reached;
use crate::node::reach::{Action, Reach, ReachFailure, RelayPolicy};
use crate::node::rendezvous::RendezvousStats;
use crate::transport::socket::Datagram;
use crate::wire::{decode_exact, MessageType, HEADER_LEN};

/// After its result, a punching attempt keeps answering the peer's checks this long.
const LINGER: Duration = Duration::from_secs(5);
/// Most punching attempts at once; a CONNECT beyond is answered "busy". Each attempt
/// sends at most 50 checks per remote candidate (10 s / 200 ms), so this also bounds what a
/// flood of offers can make us send.
const MAX_PUNCH_ATTEMPTS: usize = 32;

/// Why reaching a peer failed before punching could start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReachError {
    /// The DHT lookup failed.
    #[error("DHT: {0}")]
    Dht(#[from] super::dht::DhtError),
    /// The peer has no presence record: offline.
    #[error("the peer has no presence record (offline)")]
    Offline,
    /// Its presence value did not decode.
    #[error("bad presence value: {0}")]
    BadPresence(String),
    /// The rendezvous node refused the registration (the reason it gave).
    #[error("registration refused: {0}")]
    RegistrationRefused(&'static str),
    /// Talking to a rendezvous node failed.
    #[error("rendezvous: {0}")]
    Rendezvous(&'static str),
    /// The rendezvous node refused the CONNECT.
    #[error("CONNECT refused: {0}")]
    ConnectRefused(&'static str),
    /// The callee's answer did not verify.
    #[error("bad CONNECT answer: {0}")]
    BadAnswer(String),
}

impl From<ReachFailure> for ReachError {
    fn from(f: ReachFailure) -> ReachError {
        match f {
            ReachFailure::Offline => ReachError::Offline,
            ReachFailure::BadPresence(e) => ReachError::BadPresence(e),
            ReachFailure::Rendezvous(e) => ReachError::Rendezvous(e),
            ReachFailure::ConnectRefused(e) => ReachError::ConnectRefused(e),
            ReachFailure::BadAnswer(e) => ReachError::BadAnswer(e),
        }
    }
}

impl ReachError {
    /// What the reach machine makes of a failed CONNECT exchange.
    fn into_failure(self) -> ReachFailure {
        match self {
            ReachError::ConnectRefused(e) => ReachFailure::ConnectRefused(e),
            ReachError::Rendezvous(e) | ReachError::RegistrationRefused(e) => {
                ReachFailure::Rendezvous(e)
            }
            other => ReachFailure::BadAnswer(other.to_string()),
        }
    }
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    with_rng(|r| r.fill_bytes(&mut b));
    hex::encode(b)
}

/// Where the socket's STUN handler delivers a punching attempt's datagrams: checks by our
/// ufrag, answers by transaction-ID tag. Made before the offer or answer goes out, so a
/// check that arrives before the attempt starts waits for it. Dropping it removes the
/// routes.
struct PunchRoute {
    shared: Arc<Shared>,
    tag: [u8; 4],
    rx: mpsc::UnboundedReceiver<Datagram>,
}

impl PunchRoute {
    async fn new(shared: &Arc<Shared>, ufrag: &str) -> PunchRoute {
        let mut tag = [0u8; 4];
        with_rng(|r| r.fill_bytes(&mut tag));
        let (tx, rx) = mpsc::unbounded_channel();
        shared.nat.punch_attempts.fetch_add(1, Ordering::SeqCst);
        let route = PunchRoute {
            shared: shared.clone(),
            tag,
            rx,
        };
        let r = StunRoute::Punch {
            tag,
            ufrag: ufrag.to_owned(),
            tx,
        };
        // The STUN loop is gone only at shutdown: the attempt then simply hears nothing.
        let _ = shared.stun_routes.send(r).await;
        route
    }
}

impl Drop for PunchRoute {
    fn drop(&mut self) {
        // The STUN loop forgets the routes once it finds `rx` gone.
        self.shared
            .nat
            .punch_attempts
            .fetch_sub(1, Ordering::SeqCst);
    }
}

/// A punching attempt in its task: the first pair that answered (at once), and the
/// result once it settled.
struct Punching {
    first: oneshot::Receiver<Selected>,
    done: oneshot::Receiver<PunchResult>,
}

/// Runs one punching attempt; the first working pair and the result come as soon as there
/// are, the attempt keeps answering checks for [`LINGER`] after it. With a prediction
/// `plan` (spec/05-nat.md §5.5), the hard side's side sockets are open and their checks
/// sent before this returns (before the callee's answer goes out); the easy side probes
/// within the attempt.
async fn start_punch(
    shared: &Arc<Shared>,
    mut route: PunchRoute,
    creds: PunchCreds,
    remote: Vec<Candidate>,
    controlling: bool,
    plan: Option<Plan>,
    relay_wait: Duration,
) -> Punching {
    let tag = route.tag;
    // Relayed candidates are checked too, at the lowest priority (spec/07-relay.md §3.4):
    // a pair through either side's TURN allocation serves when no direct pair answers,
    // within the punching instead of after it. The callee's checks toward the caller's
    // relayed candidate let the caller learn the callee behind its own relay
    // (`handle_stun_via`); the caller's checks toward the callee's find the callee's.
    let mut remote = remote;
    let direct: Vec<SocketAddr> = remote
        .iter()
        .filter(|c| c.kind != CandidateKind::Relayed)
        .map(|c| c.addr)
        .collect();
    // A node whose network lets no UDP out publishes its relayed address twice.
    remote.retain(|c| c.kind != CandidateKind::Relayed || !direct.contains(&c.addr));
    let (done_tx, done_rx) = oneshot::channel();
    let (first_tx, first_rx) = oneshot::channel();
    let mut punch = Punch::new(
        creds,
        &remote,
        controlling,
        tag,
        PunchConfig {
            relay_wait,
            ..PunchConfig::default()
        },
        Instant::now(),
    );
    let mut spray = None;
    let mut probing = None;
    match plan {
        Some(Plan::Spray { to }) => {
            let n = crate::nat::predict::SPRAY_SOCKETS;
            let checks = punch.spray_checks(to, n, Instant::now());
            spray = Spray::open(shared, to, checks).await;
        }
        Some(Plan::Probe {
            target,
            sequential,
            budget,
        }) => {
            tracing::info!(%target, sequential, budget, "port prediction: probing");
            punch.predict(prober(target, sequential, budget));
            probing = Some((target.ip(), budget));
        }
        None => {}
    }
    if plan.is_some() {
        shared.nat.predict.attempts.fetch_add(1, Ordering::Relaxed);
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut done_tx = Some(done_tx);
        let mut first_tx = Some(first_tx);
        let mut ended_at: Option<Instant> = None;
        let mut probes_counted = 0;
        loop {
            let now = Instant::now();
            punch.handle_timeout(now);
            // Prediction probes are counted as they go (`dna status`).
            let probes = punch.predicted_probes();
            if probes > probes_counted {
                let more = u64::from(probes - probes_counted);
                shared.nat.predict.probes.fetch_add(more, Ordering::Relaxed);
                probes_counted = probes;
            }
            // Answers to checks that came through our own TURN allocation, and checks
            // toward peers heard only through it, go through it.
            while let Some((to, bytes, via_turn)) = punch.poll_transmit_via() {
                let _ = if via_turn {
                    shared.socket.send_via_turn(to, &bytes).await
                } else {
                    // Straight, also to a peer whose QUIC now comes through a relay.
                    shared.socket.send_direct(to, &bytes).await
                };
            }
            if let Some(sel) = punch.first_working() {
                if let Some(tx) = first_tx.take() {
                    // A first pair behind our own relay (the relay goes first): QUIC to
                    // it goes through the relay too.
                    if punch.via_relay(sel.remote) {
                        shared.socket.add_relayed(sel.remote);
                    }
                    let _ = tx.send(sel);
                }
            }
            if let Some(r) = punch.result() {
                if let Some(tx) = done_tx.take() {
                    tracing::info!(
                        ?r,
                        probes = punch.probes_sent(),
                        predicted = punch.predicted_probes(),
                        "hole punching ended"
                    );
                    // A pair behind our own relay: QUIC to it goes through the relay too.
                    if let PunchResult::Connected(sel) = r {
                        if punch.via_relay(sel.remote) {
                            shared.socket.add_relayed(sel.remote);
                        }
                    }
                    let _ = tx.send(r);
                }
                let end = *ended_at.get_or_insert(now);
                if now >= end + LINGER || shared.stopped.load(std::sync::atomic::Ordering::Relaxed)
                {
                    break;
                }
            }
            let wake = punch
                .poll_timeout()
                .unwrap_or_else(|| ended_at.unwrap_or(now) + LINGER);
            if let Ok(Some((from, bytes))) =
                tokio::time::timeout_at(wake.into(), route.rx.recv()).await
            {
                // Through our own TURN allocation (not over TCP, where everything is).
                let relayed = !shared.socket.turn_over_tcp() && shared.socket.came_via_turn(&bytes);
                punch.handle_stun_via(from, &bytes, Instant::now(), relayed);
            }
        }
        drop(route);
        drop(spray);
        if let Some((ip, granted)) = probing {
            probes_done(&shared, ip, granted, punch.predicted_probes()).await;
        }
    });
    Punching {
        first: first_rx,
        done: done_rx,
    }
}

/// Answers an offer addressed to us (forwarded by the rendezvous node `via`): the node's
/// decision (`node::reach::answer`) carried out — the answer signed, punching toward the
/// caller started, and the bundled relay asked when the decision says.
/// Returns the signed answer.
pub(crate) async fn answer_offer(
    shared: &Arc<Shared>,
    offer: Signal,
    via: Contact,
) -> Result<Vec<u8>, ConnectErrorCode> {
    let caller = offer.from.fingerprint();
    let candidates = shared.nat.status.borrow().candidates.clone();
    let ctx = Callee {
        key: shared.identity.public_key(),
        now_ms: now_ms(),
        punching: (
            shared.nat.punch_attempts.load(Ordering::SeqCst),
            MAX_PUNCH_ATTEMPTS,
        ),
        policy: relay_policy(shared, &caller),
        candidates: &candidates,
        nat: our_behaviour(shared),
        relay_after: shared.cfg.relay_after,
        can_relay: shared.dht.is_some(),
        creds: (random_hex(4), random_hex(16)),
    };
    let plan = match answer::answer(&offer, &shared.identity.fingerprint(), ctx) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%caller, error = %e, "CONNECT refused");
            return Err(e.code());
        }
    };
    let signed = plan.answer.sign(&shared.identity);
    let Some(punch) = plan.punch else {
        if plan.relay == AskRelay::Now {
            tracing::info!(%caller, relay = %via.addr, "CONNECT: relay only, asking the relay");
            tokio::spawn(callee_relay(
                shared.clone(),
                via,
                caller,
                None,
                Duration::ZERO,
            ));
        }
        return Ok(signed);
    };
    // If we keep a TURN allocation, the caller may end up dialing our relayed candidate.
    shared.nat.turn_permit(punch.permit);
    tracing::info!(%caller, "CONNECT: punching toward the caller");
    // Punching runs on; its result matters to the caller, which dials.
    let route = PunchRoute::new(shared, &punch.creds.local_ufrag).await;
    // The offer is verified and fresh: only now may it make us predict (spec/05 §5.5).
    let predict = plan_prediction(shared, punch.nat, &punch.candidates).await;
    let punched = start_punch(
        shared,
        route,
        punch.creds,
        punch.candidates,
        false,
        predict,
        punch.relay_wait,
    )
    .await
    .done;
    if let AskRelay::UnlessPunchedWithin(wait) = plan.relay {
        tokio::spawn(callee_relay(
            shared.clone(),
            via,
            caller,
            Some(punched),
            wait,
        ));
    }
    Ok(signed)
}

/// The relay policy in force toward `peer`: the configured one, with `ask` resolved by
/// the user's consent for this peer (`auto` if its contact allows a relay, else `never`:
/// seed 003), except that a node whose traffic all goes through TURN over TCP
/// (spec/07-relay.md §2.11) asks no bundled relay under `auto` — its datagrams to a relay
/// node would have to be wrapped twice, and the TURN allocation already is a relay;
/// punching through it works as behind a restricted cone.
pub(crate) fn relay_policy(shared: &Shared, peer: &Fingerprint) -> RelayPolicy {
    match shared.cfg.relay_policy.toward(relay_allowed(shared, peer)) {
        RelayPolicy::Auto if shared.socket.turn_over_tcp() => RelayPolicy::Never,
        p => p,
    }
}

/// Whether the user allowed a relay for `peer` (its contact's `allow_relay`).
pub(crate) fn relay_allowed(shared: &Shared, peer: &Fingerprint) -> bool {
    shared.names.read(|f| f.contacts.allows_relay(peer))
}

/// The callee's half of a bundled relay pair: once punching failed (or at once), ask the
/// rendezvous node that forwarded the offer to relay us to the caller.
async fn callee_relay(
    shared: Arc<Shared>,
    via: Contact,
    caller: Fingerprint,
    punched: Option<oneshot::Receiver<PunchResult>>,
    wait: Duration,
) {
    if let Some(mut rx) = punched {
        // A pair within `relay_after`: no relay. Failed, or still punching: ask (the
        // caller does the same at the same moment; a late pair moves the session).
        if let Ok(Ok(PunchResult::Connected(_))) = tokio::time::timeout(wait, &mut rx).await {
            return;
        }
    }
    let Some(d) = shared.dht.clone() else { return };
    match request_relay(&shared, &d, via, caller).await {
        Ok(token) => tracing::info!(%caller, relay = %via.addr, %token, "relayed pair up"),
        Err(e) => tracing::info!(%caller, relay = %via.addr, error = %e, "no relayed pair"),
    }
}

/// The wildcard address, any port, of `to`'s family.
fn any_port_of_family(to: SocketAddr) -> SocketAddr {
    match to {
        SocketAddr::V4(_) => ([0u8; 4], 0).into(),
        SocketAddr::V6(_) => ([0u16; 8], 0).into(),
    }
}

/// The address the OS would send from toward `to` (no packet is sent: a UDP `connect`
/// only picks a route).
fn route_source(to: SocketAddr) -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind(any_port_of_family(to)).ok()?;
    s.connect(to).ok()?;
    Some(s.local_addr().ok()?.ip())
}

/// Our host candidates now (`node::addresses::host_candidates` over the interfaces'
/// addresses), the one on the route toward `server` first.
fn host_candidates(local: SocketAddr, server: SocketAddr) -> Vec<Candidate> {
    let interfaces: Vec<IpAddr> = match local.ip().is_unspecified() {
        true => if_addrs::get_if_addrs()
            .unwrap_or_default()
            .iter()
            .map(|i| i.ip())
            .collect(),
        false => Vec::new(),
    };
    addresses::host_candidates(local, route_source(server), &interfaces)
}

/// [`NodeHandle::discover_nat`].
pub(crate) async fn discover_nat(
    handle: &NodeHandle,
    server: SocketAddr,
) -> Result<NatClass, DiscoveryError> {
    let host_cands = host_candidates(handle.local_addr(), server);
    let host: Vec<IpAddr> = host_cands.iter().map(|c| c.addr.ip()).collect();
    let probe = tokio::net::UdpSocket::bind(any_port_of_family(server))
        .await
        .map_err(|e| DiscoveryError::Unreachable(stun::BindingError::Io(e.to_string())))?;
    let probe_port = probe.local_addr().map(|a| a.port()).unwrap_or(0);
    let tids = [(); 5].map(|_| handle.transaction_id());
    let mut d = Discovery::new(server, host.clone(), probe_port, tids, Instant::now());
    let mut buf = vec![0u8; 1500];
    let result = loop {
        let now = Instant::now();
        d.handle_timeout(now);
        while let Some((to, bytes)) = d.poll_transmit(now) {
            // A lost datagram is covered by the retransmission timers.
            let _ = probe.send_to(&bytes, to).await;
        }
        if let Some(r) = d.result() {
            break r.clone();
        }
        let Some(wake) = d.poll_timeout() else {
            continue;
        };
        if let Ok(Ok((n, from))) =
            tokio::time::timeout_at(wake.into(), probe.recv_from(&mut buf)).await
        {
            d.handle_response(from, &buf[..n], Instant::now());
        }
    };
    let class = result?;
    let mut cands = host_cands;
    if !class.no_nat {
        match handle.stun_binding(server).await {
            Ok(mapped) => cands.push(Candidate::new(
                CandidateKind::ServerReflexive,
                mapped,
                65535,
            )),
            Err(e) => return Err(DiscoveryError::Unreachable(e)),
        }
    }
    handle.shared.nat.status.send_modify(|st| {
        st.class = Some(class);
        st.candidates = addresses::with_relayed(cands, &st.candidates);
    });
    Ok(class)
}

/// [`NodeHandle::gather_candidates`].
pub(crate) async fn gather_candidates(
    handle: &NodeHandle,
    servers: &[SocketAddr],
) -> Result<Option<bool>, stun::BindingError> {
    let first = *servers
        .first()
        .ok_or_else(|| stun::BindingError::Io("no STUN server".into()))?;
    let mut cands = host_candidates(handle.local_addr(), first);
    let mut mapped = Vec::new();
    let mut last_err = None;
    for s in servers.iter().take(2) {
        match handle.stun_binding(*s).await {
            Ok(m) => mapped.push(m),
            Err(e) => last_err = Some(e),
        }
    }
    let Some(m1) = mapped.first().copied() else {
        return Err(last_err.unwrap_or(stun::BindingError::Timeout(first)));
    };
    if !cands.iter().any(|c| c.addr.ip() == m1.ip()) {
        cands.push(Candidate::new(CandidateKind::ServerReflexive, m1, 65535));
    }
    handle.shared.nat.status.send_modify(|st| {
        st.class = None;
        st.candidates = addresses::with_relayed(cands, &st.candidates);
    });
    Ok(mapped.get(1).map(|m2| *m2 == m1))
}

/// [`NodeHandle::network_changed`].
pub(crate) async fn network_changed(handle: &NodeHandle, server: SocketAddr) -> bool {
    let published = handle.nat_status().candidates;
    let host_now = host_candidates(handle.local_addr(), server);
    if addresses::hosts_changed(&published, &host_now) {
        return true;
    }
    let opts = stun::Options {
        timers: stun::Timers::DISCOVERY,
        ..stun::Options::default()
    };
    let binding =
        stun::Binding::with_options(server, handle.transaction_id(), opts, Instant::now());
    let answer = handle.stun_transaction(binding).await;
    tracing::debug!(?answer, "network check");
    addresses::mapping_changed(&published, &host_now, answer.ok().map(|a| a.mapped))
}

/// [`NodeHandle::nat_status`].
pub(crate) fn nat_status(handle: &NodeHandle) -> NatStatus {
    handle.shared.nat.status.borrow().clone()
}

/// [`NodeHandle::rendezvous_stats`].
pub(crate) async fn rendezvous_stats(handle: &NodeHandle) -> RendezvousStats {
    // The core task runs what is due (expiries) before it answers a query.
    match handle.shared.core.query(Query::Rendezvous).await {
        Some(Answer::Rendezvous(s)) => s,
        _ => RendezvousStats::default(),
    }
}

/// [`NodeHandle::register_rendezvous`].
pub(crate) async fn register_rendezvous(
    handle: &NodeHandle,
    addr: SocketAddr,
    fp: Fingerprint,
) -> Result<Duration, ReachError> {
    let d = dht_shared(handle)?;
    let lifetime = register(
        &handle.shared,
        &d,
        Contact {
            id: fp.node_id(),
            addr,
        },
    )
    .await?;
    handle.shared.nat.status.send_if_modified(|st| {
        let new = !st.rendezvous.contains(&(addr, fp));
        if new {
            st.rendezvous.push((addr, fp));
        }
        new
    });
    Ok(lifetime)
}

/// [`NodeHandle::announce_presence`].
pub(crate) async fn announce_presence(handle: &NodeHandle) -> Result<usize, super::dht::DhtError> {
    let mut info = handle.nat_status().presence();
    if handle.shared.cfg.relay_policy == RelayPolicy::Only {
        // Reached through our rendezvous nodes' relays only: no address of ours.
        info.reachable = false;
        info.candidates.clear();
    }
    let value = info.encode();
    handle.announce(value).await
}

/// [`NodeHandle::request_relay`].
pub(crate) async fn request_relay_for(
    handle: &NodeHandle,
    addr: SocketAddr,
    fp: Fingerprint,
    peer: Fingerprint,
) -> Result<SocketAddr, ReachError> {
    let d = dht_shared(handle)?;
    let relay = Contact {
        id: fp.node_id(),
        addr,
    };
    request_relay(&handle.shared, &d, relay, peer).await
}

/// [`NodeHandle::serve_dht`].
pub(crate) async fn serve_dht(handle: &NodeHandle, serve: bool) -> bool {
    matches!(
        handle.shared.core.ask(Input::DhtServe(serve)).await,
        Some(Reply::Serves(true))
    )
}

/// [`NodeHandle::dht_serves`].
pub(crate) async fn dht_serves(handle: &NodeHandle) -> bool {
    matches!(
        handle.shared.core.query(Query::Dht).await,
        Some(Answer::Dht(Some(v))) if v.serves
    )
}

fn dht_shared(handle: &NodeHandle) -> Result<Arc<DhtShared>, ReachError> {
    handle
        .shared
        .dht
        .clone()
        .ok_or(ReachError::Dht(super::dht::DhtError::Disabled))
}

/// [`NodeHandle::reach`].
pub(crate) async fn reach(handle: &NodeHandle, peer: Fingerprint) -> Result<Reached, ReachError> {
    reach_with(handle, peer, relay_policy(&handle.shared, &peer), true).await
}

/// [`NodeHandle::try_direct`].
pub(crate) async fn try_direct(handle: &NodeHandle, peer: Fingerprint, token: SocketAddr) -> bool {
    match reach_with(handle, peer, RelayPolicy::Never, false).await {
        Ok(Reached::Punched {
            kind: CandidateKind::Relayed,
            ..
        }) => false,
        Ok(Reached::Punched { addr, .. }) | Ok(Reached::Direct { addr, .. }) => {
            let moved = handle.shared.socket.set_direct(token, addr);
            if moved {
                tracing::info!(%peer, %token, direct = %addr, "relayed session moved to a direct path");
            }
            moved
        }
        _ => false,
    }
}

/// Reports a step of reaching `peer` to the application (progress: dropped when the
/// event queue is full, never waited for).
fn progress(handle: &NodeHandle, peer: Fingerprint, stage: ReachStage) {
    let _ = handle
        .shared
        .events
        .try_send(super::NodeEvent::Reaching { peer, stage });
}

/// Whether a dial at `addr` runs through a TURN allocation: the peer's relayed
/// candidate, or an address our socket reaches through our own.
fn through_turn(handle: &NodeHandle, addr: SocketAddr, peer_relay: Option<SocketAddr>) -> bool {
    let socket = &handle.shared.socket;
    peer_relay == Some(addr)
        || (socket.turn_server().is_some() && socket.route(addr) == socket.turn_server())
}

/// A fresh local alias (248.0.0.0/5) routed to `direct`, if the socket has room.
fn alias_for(handle: &NodeHandle, direct: SocketAddr) -> Option<SocketAddr> {
    for _ in 0..8 {
        let (ip, port) = with_rng(|r| (r.next_u32(), r.next_u32() as u16));
        // 248.0.0.0–254.255.255.255 (255/8 holds the broadcast address).
        let first = 248 + (ip >> 24) % 7;
        let ip = std::net::Ipv4Addr::from((first << 24) | (ip & 0x00FF_FFFF));
        let alias = SocketAddr::from((ip, port.max(1)));
        if handle.shared.socket.route(alias).is_none()
            && handle.shared.socket.direct_of(alias).is_none()
            && handle.shared.socket.add_local_route(alias, direct)
        {
            return Some(alias);
        }
    }
    None
}

/// [`Self::reach`] with this policy; `dial` false: find the path, do not dial it.
async fn reach_with(
    handle: &NodeHandle,
    peer: Fingerprint,
    policy: RelayPolicy,
    dial: bool,
) -> Result<Reached, ReachError> {
    let d = dht_shared(handle)?;
    let mut session = [0u8; 8];
    with_rng(|r| r.fill_bytes(&mut session));
    let mut attempt = Reach::new(
        handle.fingerprint(),
        peer,
        session,
        random_hex(4),
        random_hex(16),
    )
    .with_policy(policy)
    .with_timing(our_behaviour(&handle.shared), handle.shared.cfg.relay_after);
    // Made before the first offer leaves (the callee starts checking as soon as it
    // answers), with the signed offer; reused for every rendezvous node.
    let mut offer: Option<(PunchRoute, Vec<u8>)> = None;
    // A punching attempt still going on after `relay_after` (the relay is asked too).
    let mut punching: Option<oneshot::Receiver<PunchResult>> = None;
    loop {
        let Some(action) = attempt.poll_action() else {
            // The machine waits for the punching attempt that goes on.
            if let Some(rx) = punching.take() {
                attempt.handle_punch(rx.await.unwrap_or(PunchResult::Failed));
                continue;
            }
            // Every other action's result is handed back before the next poll.
            return Err(ReachError::Rendezvous("reach attempt stalled"));
        };
        match action {
            Action::FindPresence => {
                progress(handle, peer, ReachStage::Lookup);
                let record = handle.find_peer(peer).await?;
                let info =
                    record.map(|r| PresenceInfo::decode(r.value()).map_err(|e| e.to_string()));
                attempt.handle_presence(info);
            }
            Action::Dial { addrs } if dial => {
                progress(handle, peer, ReachStage::Dial);
                // A session through a TURN allocation (the peer's relayed candidate,
                // or an address behind our own relay) is dialed under a local alias,
                // so the upgrade loop can move it to a direct path later (spec/07 §3.6).
                let addrs = match addrs.as_slice() {
                    [one] if through_turn(handle, *one, attempt.peer_relay()) => {
                        alias_for(handle, *one).map_or(addrs.clone(), |alias| vec![alias])
                    }
                    _ => addrs,
                };
                handle.connect(peer, addrs).await
            }
            Action::Dial { .. } => {}
            Action::Offer { via: (addr, fp) } => {
                progress(handle, peer, ReachStage::Connect(addr));
                if offer.is_none() {
                    let (ufrag, pwd) = attempt.credentials();
                    let route = PunchRoute::new(&handle.shared, ufrag).await;
                    let signed = Signal {
                        kind: SignalKind::Offer,
                        from: handle.shared.identity.public_key().clone(),
                        to: peer,
                        session,
                        time_ms: now_ms(),
                        ufrag: ufrag.to_owned(),
                        pwd: pwd.to_owned(),
                        // `only`: the peer learns no address of ours.
                        candidates: match policy {
                            RelayPolicy::Only => Vec::new(),
                            _ => handle.nat_status().candidates,
                        },
                        nat: our_behaviour(&handle.shared),
                    }
                    .sign(&handle.shared.identity);
                    offer = Some((route, signed));
                }
                let Some((_, signed)) = &offer else { continue };
                let rdv = Contact {
                    id: fp.node_id(),
                    addr,
                };
                let r = connect_via(&handle.shared, &d, rdv, signed).await;
                if let Err(e) = &r {
                    tracing::debug!(rendezvous = %addr, error = %e, "CONNECT failed");
                }
                attempt.handle_offer(now_ms(), r.map_err(ReachError::into_failure));
            }
            Action::Punch {
                creds,
                candidates,
                nat,
                relay_wait,
            } => {
                // Our allocation (if any) lets the callee's datagrams through.
                handle.shared.nat.turn_permit(answer::peer_ips(&candidates));
                let Some((route, _)) = offer.take() else {
                    attempt.handle_punch(PunchResult::Failed);
                    continue;
                };
                // The answer is verified and fresh (`Reach::handle_offer`).
                let predict = plan_prediction(&handle.shared, nat, &candidates).await;
                progress(handle, peer, ReachStage::Punch(predict.is_some()));
                let Punching { first, mut done } = start_punch(
                    &handle.shared,
                    route,
                    creds,
                    candidates,
                    true,
                    predict,
                    relay_wait,
                )
                .await;
                let early = async {
                    match first.await {
                        Ok(sel) => sel,
                        // Ended without a pair: `done` says so.
                        Err(_) => std::future::pending().await,
                    }
                };
                let wait = tokio::time::sleep(relay_wait);
                tokio::select! {
                    sel = early, if dial => {
                        // The first pair that answered: the session starts on it now,
                        // under a local alias the settled pair can replace.
                        match alias_for(handle, sel.remote) {
                            Some(alias) => {
                                tokio::spawn(settle_alias(handle.shared.clone(), peer, alias, sel.remote, done));
                                attempt.handle_punched_at(sel, alias);
                            }
                            None => attempt.handle_punch(done.await.unwrap_or(PunchResult::Failed)),
                        }
                    }
                    r = &mut done => attempt.handle_punch(r.unwrap_or(PunchResult::Failed)),
                    _ = wait => {
                        // A few round trips without a pair: the relay in parallel.
                        punching = Some(done);
                        attempt.handle_punch_slow();
                    }
                }
            }
            Action::Relay { via: (addr, fp) } => {
                progress(handle, peer, ReachStage::Relay(addr));
                let relay = Contact {
                    id: fp.node_id(),
                    addr,
                };
                let req = request_relay(&handle.shared, &d, relay, peer);
                tokio::pin!(req);
                // Whichever comes first: the relay's answer, or the punching result.
                let r = loop {
                    let Some(rx) = punching.as_mut() else {
                        break Some(req.as_mut().await);
                    };
                    tokio::select! {
                        r = req.as_mut() => break Some(r),
                        p = rx => {
                            punching = None;
                            let p = p.unwrap_or(PunchResult::Failed);
                            let won = matches!(p, PunchResult::Connected(_));
                            attempt.handle_punch(p);
                            if won {
                                break None;
                            }
                        }
                    }
                };
                let Some(r) = r else { continue };
                match (&r, punching.take()) {
                    (Ok(token), Some(rx)) => {
                        // Relayed now; direct as soon as punching finds a pair.
                        tokio::spawn(upgrade_when_punched(
                            handle.shared.clone(),
                            peer,
                            *token,
                            rx,
                        ));
                    }
                    (Err(e), rx) => {
                        tracing::info!(relay = %addr, error = %e, "no relayed pair");
                        punching = rx;
                    }
                    (Ok(_), None) => {}
                }
                attempt.handle_relay(r.map_err(ReachError::into_failure));
            }
            Action::Done(r) => {
                if let Ok(
                    Reached::Relayed { addr }
                    | Reached::Punched {
                        addr,
                        kind: CandidateKind::Relayed,
                    },
                ) = &r
                {
                    handle.shared.nat.note_peer_relay(*addr);
                }
                return r.map_err(ReachError::from);
            }
        }
    }
}

/// Every `upgrade_interval`, each peer whose session still runs through a bundled relay
/// gets a new punching attempt (spec/07-relay.md §1.9), one peer after the other.
pub(crate) async fn upgrade_loop(shared: std::sync::Weak<Shared>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.closing.load(Ordering::Relaxed) {
            return;
        }
        let h = NodeHandle { shared };
        let connected = h.shared.core.links().await;
        for (peer, addrs, _) in connected {
            let socket = &h.shared.socket;
            let relayed = addrs.into_iter().find(|a| {
                let token = crate::transport::is_relay_token(*a)
                    && socket.route(*a).is_some()
                    && socket.direct_of(*a).is_none();
                // A TURN session under its local alias (spec/07 §3.6).
                let turn = crate::transport::is_alias(*a)
                    && socket
                        .direct_of(*a)
                        .is_some_and(|d| h.shared.nat.is_peer_relay(d));
                token || turn
            });
            if let Some(token) = relayed {
                h.try_direct(peer, token).await;
            }
        }
    }
}

/// When the punching attempt settles on a better pair than the first one that answered,
/// the session moves to it under its alias (spec/05-nat.md §5.2).
async fn settle_alias(
    shared: Arc<Shared>,
    peer: Fingerprint,
    alias: SocketAddr,
    first: SocketAddr,
    done: oneshot::Receiver<PunchResult>,
) {
    if let Ok(PunchResult::Connected(sel)) = done.await {
        if sel.remote != first && shared.socket.set_direct(alias, sel.remote) {
            tracing::info!(%peer, from = %first, to = %sel.remote, "session moved to the settled pair");
        }
    }
}

/// The caller's half of the upgrade (spec/07-relay.md §1.9): when the punching attempt
/// that went on beside the relayed session finds a pair, the socket moves the peer's token
/// to it. QUIC keeps its connection (we are its client, the token its address); the callee's
/// quinn sees our packets from a new address and migrates its path, as QUIC servers do.
async fn upgrade_when_punched(
    shared: Arc<Shared>,
    peer: Fingerprint,
    token: SocketAddr,
    rx: oneshot::Receiver<PunchResult>,
) {
    if let Ok(PunchResult::Connected(sel)) = rx.await {
        if shared.socket.set_direct(token, sel.remote) {
            tracing::info!(%peer, %token, direct = %sel.remote, "relayed session moved to a direct path");
        }
    }
}

/// Asks `relay` (a rendezvous node we are registered at) to relay us to `peer`; on a
/// grant, the socket routes the peer's token through it. Returns the token.
pub(crate) async fn request_relay(
    shared: &Arc<Shared>,
    d: &Arc<DhtShared>,
    relay: Contact,
    peer: Fingerprint,
) -> Result<SocketAddr, ReachError> {
    match exchange(shared, d, relay, MessageType::RelayRequest, peer.as_bytes()).await? {
        (MessageType::RelayGranted, p) => {
            let g = crate::node::relay_server::Grant::decode(&p)
                .ok_or(ReachError::Rendezvous("malformed RELAY_GRANTED"))?;
            if !shared.socket.add_bundled_route(g.peer_token, relay.addr) {
                return Err(ReachError::Rendezvous("no room for another relayed peer"));
            }
            Ok(g.peer_token)
        }
        (MessageType::ConnectError, p) => Err(ReachError::ConnectRefused(
            p.first()
                .and_then(|b| ConnectErrorCode::from_u8(*b))
                .map_or("unknown", ConnectErrorCode::reason),
        )),
        _ => Err(ReachError::Rendezvous("unexpected answer")),
    }
}

// ---- the caller's side of rendezvous signalling

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

#[cfg(test)]
mod predict_tests;

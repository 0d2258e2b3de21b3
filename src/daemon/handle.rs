//! [`NodeHandle`]: the node's whole public interface in one place, each method a call into
//! the module that carries it out (spec/06-node.md §2).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::app_stream::{AppStream, AppStreamError};
use super::contacts::{Contact, OwnName};
use super::dht::DhtError;
use super::mailbox_state::{MailboxStats, OutboxEntry};
use super::names::{Claimed, NamesError, Resolved};
use super::node::{PeerInfo, SendError};
use super::peers_status::PeerStatus;
use super::reach::ReachError;
use super::relay_server::RelayStatus;
use super::shared::{NatStatus, NodeHandle, TransportStats};
use super::store::StoredMessage;
use super::NodeConfig;
use crate::crypto::{Fingerprint, MessageId, MessageKind};
use crate::nat::discovery::{DiscoveryError, NatClass};
use crate::nat::stun;
use crate::node::reach::Reached;
use crate::node::rendezvous::RendezvousStats;
use crate::node::routine::RoutineStats;
use crate::session::PresenceStatus;

impl NodeHandle {
    // ---- app

    /// Opens an application stream of `kind` to the connected `peer` (what
    /// [`App::open_stream`](super::App::open_stream) does; spec/03-session.md §10).
    pub async fn open_stream(
        &self,
        peer: Fingerprint,
        kind: MessageKind,
    ) -> Result<AppStream, AppStreamError> {
        super::app::open_stream(self, peer, kind).await
    }

    // ---- conn

    /// The connection drivers' counters.
    pub async fn transport_stats(&self) -> TransportStats {
        super::conn::transport_stats(self).await
    }

    // ---- mailbox

    /// Publishes our KEM key record now (the mailbox task also does, at start and
    /// daily): what others seal mailbox items to. Returns how many nodes hold it.
    pub async fn mailbox_publish_key(&self) -> Result<usize, DhtError> {
        super::mailbox::mailbox_publish_key(self).await
    }

    /// The mailbox's counters.
    pub async fn mailbox_stats(&self) -> MailboxStats {
        super::mailbox::mailbox_stats(self).await
    }

    /// Fetches our mailbox now (the mailbox task does it) and waits until that fetch is
    /// done; returns the counters after it. Without a mailbox task, returns at once.
    pub async fn mailbox_fetch(&self) -> MailboxStats {
        super::mailbox::mailbox_fetch(self).await
    }

    /// The outbox (at most `max` waiting messages) and the last `max` deliveries, newest
    /// deliveries last: each message with its state and path (spec/09-mailbox.md §7).
    pub async fn outbox(&self, max: usize) -> Vec<OutboxEntry> {
        super::mailbox::outbox(self, max).await
    }

    // ---- names

    /// Claims `name` (normalised; spec/08-names.md): refused if another publisher's claim
    /// wins the race rule, before or after ours is put. Claiming a name we hold republishes
    /// it with its original claim time.
    pub async fn name_claim(&self, name: &str) -> Result<Claimed, NamesError> {
        super::names::name_claim(self, name).await
    }

    /// The names this node claimed (republished while it runs).
    pub fn own_names(&self) -> Vec<OwnName> {
        super::names::own_names(self)
    }

    /// Resolves `name` through the DHT (race rule applied). A contact pinned under this name
    /// to another key makes it fail with [`ContactError::KeyChanged`](super::ContactError::KeyChanged).
    pub async fn name_resolve(&self, name: &str) -> Result<Resolved, NamesError> {
        super::names::name_resolve(self, name).await
    }

    /// Adds a contact by fingerprint, or by name (resolved through the DHT and pinned: trust
    /// on first use), under an optional alias. Returns the contact and whether it is new.
    pub async fn contact_add(
        &self,
        target: &str,
        alias: Option<&str>,
    ) -> Result<(Contact, bool), NamesError> {
        super::names::contact_add(self, target, alias).await
    }

    /// Every contact, in the order added.
    pub fn contacts(&self) -> Vec<Contact> {
        super::names::contacts(self)
    }

    /// The contact an alias, name or fingerprint names.
    pub fn contact_lookup(&self, label: &str) -> Option<Contact> {
        super::names::contact_lookup(self, label)
    }

    /// Allows (`true`) or no longer allows a relay to carry sessions with the contact
    /// `label` names, when no direct path exists (the consent `relay = "ask"` waits for;
    /// seed 003). Allowed, the peer is reached again at once if messages wait for it.
    pub async fn contact_allow_relay(
        &self,
        label: &str,
        allow: bool,
    ) -> Result<Contact, NamesError> {
        super::names::contact_allow_relay(self, label, allow).await
    }

    /// Removes a contact by alias, name or fingerprint. Our contact drop rotates: the
    /// removed contact holds the old one, which is only fetched until its items expire;
    /// the remaining contacts get the new one (spec/09-mailbox.md §1.1).
    pub async fn contact_remove(&self, label: &str) -> Result<Contact, NamesError> {
        super::names::contact_remove(self, label).await
    }

    // ---- node

    /// Our fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        super::node::fingerprint(self)
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> SocketAddr {
        super::node::local_addr(self)
    }

    /// Asks for a connection to `peer` at `addrs` and keeps it up (reconnecting with
    /// backoff) until [`NodeHandle::disconnect`].
    pub async fn connect(&self, peer: Fingerprint, addrs: Vec<SocketAddr>) {
        super::node::connect(self, peer, addrs).await
    }

    /// Queues a message to `peer`; it is sent as soon as a connection is up and resent after
    /// reconnects until acknowledged ([`NodeEvent::Acked`](super::NodeEvent::Acked)). With a message store, this
    /// returns once the message is on disk.
    pub async fn send(&self, peer: Fingerprint, body: Bytes) -> Result<MessageId, SendError> {
        super::node::send(self, peer, body).await
    }

    /// Queues several messages to `peer` at once (one store commit, one lock, one wake-up),
    /// in order. With a message store, this returns once they are on disk; none is queued
    /// if any is refused.
    pub async fn send_many(
        &self,
        peer: Fingerprint,
        bodies: impl IntoIterator<Item = Bytes>,
    ) -> Result<Vec<MessageId>, SendError> {
        super::node::send_many(self, peer, bodies).await
    }

    /// Queues messages of `kind` (an application protocol's, spec/06-node.md §1.5) to
    /// `peer`, in order, as [`NodeHandle::send_many`] does for text.
    pub async fn send_kind(
        &self,
        peer: Fingerprint,
        kind: MessageKind,
        bodies: impl IntoIterator<Item = Bytes>,
    ) -> Result<Vec<MessageId>, SendError> {
        super::node::send_kind(self, peer, kind, bodies).await
    }

    /// Peers with messages waiting and no live connection: the application reaches them
    /// (DHT lookup, punching) so the outbox can drain.
    pub async fn pending_peers(&self) -> Vec<Fingerprint> {
        super::node::pending_peers(self).await
    }

    /// The received messages in the store, oldest first (empty without a store).
    pub fn stored_inbox(&self) -> Vec<StoredMessage> {
        super::node::stored_inbox(self)
    }

    /// Announces our presence to every connected peer (and to each new one).
    pub async fn set_presence(&self, status: PresenceStatus) {
        super::node::set_presence(self, status).await
    }

    /// Closes the connection to `peer` and stops reconnecting.
    pub async fn disconnect(&self, peer: Fingerprint) {
        super::node::disconnect(self, peer).await
    }

    /// Cuts the live connection to `peer` (not the process) and lets the node reconnect:
    /// what a network failure looks like.
    pub async fn reset_connection(&self, peer: Fingerprint) {
        super::node::reset_connection(self, peer).await
    }

    /// What the node knows about `peer`.
    pub async fn peer_info(&self, peer: &Fingerprint) -> Option<PeerInfo> {
        super::node::peer_info(self, peer).await
    }

    /// The score of an address, for failures before a peer authenticated.
    pub async fn addr_score(&self, addr: &SocketAddr) -> i32 {
        super::node::addr_score(self, addr).await
    }

    /// The re-reach schedule's counters (`None`: it does not run; spec/06-node.md §3.5).
    pub fn retry_stats(&self) -> Option<crate::node::retry::RetryStats> {
        super::node::retry_stats(self)
    }

    /// Whether a relay may carry sessions with `peer`: `relay = "auto"` or `"only"`, or
    /// `"ask"` and the user allowed it for this contact (seed 003).
    pub fn relay_allowed(&self, peer: &Fingerprint) -> bool {
        super::node::relay_allowed(self, peer)
    }

    /// Peers with messages waiting that only a relay could carry, for which the user
    /// allowed none (`relay = "ask"`; spec/07-relay.md §1.5).
    pub fn relay_needed(&self) -> Vec<Fingerprint> {
        super::node::relay_needed(self)
    }

    /// What the STUN responder answered and refused so far.
    pub fn stun_stats(&self) -> crate::nat::responder::ResponderStats {
        super::node::stun_stats(self)
    }

    /// Messages waiting in outboxes (queued or unacknowledged), over all peers.
    pub async fn outbox_len(&self) -> usize {
        super::node::outbox_len(self).await
    }

    /// The node's configuration (its limits, for `dna status`).
    pub fn config(&self) -> &NodeConfig {
        super::node::config(self)
    }

    /// Entries in the peer table, and how many were evicted so far.
    pub async fn peer_table(&self) -> (usize, u64) {
        super::node::peer_table(self).await
    }

    /// Live QUIC connections.
    pub fn connection_count(&self) -> usize {
        super::node::connection_count(self)
    }

    /// Joins (again) through the configured bootstrap nodes; returns the routing table size.
    pub async fn dht_bootstrap(&self) -> Result<usize, super::dht::DhtError> {
        super::node::dht_bootstrap(self).await
    }

    /// Stores our signed presence record (`value`: how to reach us) at the k nodes closest
    /// to its key; returns how many hold it.
    pub async fn announce(&self, value: Vec<u8>) -> Result<usize, super::dht::DhtError> {
        super::node::announce(self, value).await
    }

    /// The newest valid presence record of `peer`, or `None` if it has none ("offline").
    pub async fn find_peer(
        &self,
        peer: Fingerprint,
    ) -> Result<Option<crate::crypto::Record>, super::dht::DhtError> {
        super::node::find_peer(self, peer).await
    }

    /// The valid records a lookup finds under `key` (what any node may ask the DHT).
    pub async fn dht_get(
        &self,
        key: crate::crypto::NodeId,
    ) -> Result<Vec<crate::crypto::Record>, super::dht::DhtError> {
        super::node::dht_get(self, key).await
    }

    /// Our contact drop's identity (spec/09-mailbox.md §1.1), if the node keeps a mailbox.
    pub fn drop_id(&self) -> Option<Fingerprint> {
        super::node::drop_id(self)
    }

    /// The identity of the drop `peer` gave us, if it is a contact that did.
    pub fn drop_of(&self, peer: &Fingerprint) -> Option<Fingerprint> {
        super::node::drop_of(self, peer)
    }

    /// Records this node holds for the DHT (0 without a DHT).
    pub async fn dht_records_held(&self) -> usize {
        super::node::dht_records_held(self).await
    }

    /// The DHT driver's bookkeeping: requests and queries waiting, connections, records
    /// (all zero without a DHT).
    pub async fn dht_stats(&self) -> super::dht::DhtStats {
        super::node::dht_stats(self).await
    }

    /// Entries in the DHT routing table (0 without a DHT).
    pub async fn dht_table_size(&self) -> usize {
        super::node::dht_table_size(self).await
    }

    /// Our address as `server` sees it: a STUN Binding transaction (RFC 8489 timers) from the
    /// node's own socket, so the answer names the address our QUIC traffic uses.
    pub async fn stun_binding(
        &self,
        server: SocketAddr,
    ) -> Result<SocketAddr, crate::nat::stun::BindingError> {
        super::node::stun_binding(self, server).await
    }

    /// A fresh random STUN transaction ID.
    pub fn transaction_id(&self) -> [u8; 12] {
        super::node::transaction_id()
    }

    /// Runs one STUN transaction from the node's socket to its end.
    pub async fn stun_transaction(
        &self,
        binding: crate::nat::stun::Binding,
    ) -> Result<crate::nat::stun::Answer, crate::nat::stun::BindingError> {
        super::node::stun_transaction(self, binding).await
    }

    /// The TURN allocation, if the node keeps one (`turn_server` with `turn_credentials`).
    pub fn turn_status(&self) -> crate::daemon::TurnStatus {
        super::node::turn_status(self)
    }

    /// What the socket's demultiplexer sorted so far.
    pub fn socket_stats(&self) -> &crate::transport::SocketStats {
        super::node::socket_stats(self)
    }

    /// Sends a raw datagram from the node's socket (STUN probes).
    pub async fn send_raw(&self, to: SocketAddr, bytes: &[u8]) -> std::io::Result<()> {
        super::node::send_raw(self, to, bytes).await
    }

    // ---- peers_status

    /// Every peer with a live session (at most `max_peers`), sorted by fingerprint.
    pub async fn peers(&self) -> Vec<PeerStatus> {
        super::peers_status::peers(self).await
    }

    /// Asks `peer`'s live session to send a PING now; its PONG arrives as
    /// [`NodeEvent::Rtt`](super::NodeEvent::Rtt). `false` if no session is live.
    pub async fn ping(&self, peer: Fingerprint) -> bool {
        super::peers_status::ping(self, peer).await
    }

    // ---- reach

    /// Classifies the NAT in front of us against an RFC 5780 STUN server (spec/05 §2) and
    /// records our candidates: host addresses (the one on the route to `server` first) and
    /// the server-reflexive address of the node's socket.
    ///
    /// The tests run from a fresh socket of their own: the node's socket has talked to
    /// bootstrap nodes and peers, which opened an address-restricted NAT's filter for
    /// them and would make it look like a full cone. Only the server-reflexive candidate
    /// comes from the node's socket (one plain Binding to `server`).
    pub async fn discover_nat(&self, server: SocketAddr) -> Result<NatClass, DiscoveryError> {
        super::reach::discover_nat(self, server).await
    }

    /// Without an RFC 5780 server: gathers candidates from plain Binding answers of up to
    /// two STUN servers (bootstrap nodes answer STUN on their DHT port). The class stays
    /// unknown — filtering cannot be told this way — so the node counts as not directly
    /// reachable and uses rendezvous. Returns whether the two servers saw the same mapping
    /// (`None` with one answer): endpoint-independent mapping, if so.
    pub async fn gather_candidates(
        &self,
        servers: &[SocketAddr],
    ) -> Result<Option<bool>, stun::BindingError> {
        super::reach::gather_candidates(self, servers).await
    }

    /// Whether the addresses we publish went stale since the last discovery: the host
    /// addresses changed, or `server` now sees the node's socket at another address (a new
    /// uplink, a NAT reboot, a DHCP lease). One quick Binding (discovery timers, ≤ 2.2 s),
    /// which also refreshes the mapping toward `server`.
    pub async fn network_changed(&self, server: SocketAddr) -> bool {
        super::reach::network_changed(self, server).await
    }

    /// What this node knows about its own reachability.
    pub fn nat_status(&self) -> NatStatus {
        super::reach::nat_status(self)
    }

    /// The rendezvous role's counters: registrations held, accepted, expired and refused
    /// by reason; CONNECTs admitted and refused, as rendezvous and as callee.
    pub async fn rendezvous_stats(&self) -> RendezvousStats {
        super::reach::rendezvous_stats(self).await
    }

    /// Registers at a rendezvous node (a DHT node given as address and fingerprint) and
    /// names it in our presence from now on. Returns the granted lifetime.
    pub async fn register_rendezvous(
        &self,
        addr: SocketAddr,
        fp: Fingerprint,
    ) -> Result<Duration, ReachError> {
        super::reach::register_rendezvous(self, addr, fp).await
    }

    /// Publishes our presence record with the current NAT status; returns how many DHT
    /// nodes hold it.
    pub async fn announce_presence(&self) -> Result<usize, super::dht::DhtError> {
        super::reach::announce_presence(self).await
    }

    /// Asks the rendezvous node at `addr` (fingerprint `fp`) to relay us to `peer`
    /// (spec/07-relay.md §1.2); answers once `peer` asked too. Returns the peer's token,
    /// which the socket now routes through the relay. `reach` does this by itself when
    /// punching fails.
    pub async fn request_relay(
        &self,
        addr: SocketAddr,
        fp: Fingerprint,
        peer: Fingerprint,
    ) -> Result<SocketAddr, ReachError> {
        super::reach::request_relay_for(self, addr, fp, peer).await
    }

    /// Serve in the DHT or not (decision 9: a node whose presence says it is reachable
    /// serves — answers requests, holds records and mailbox items — the others are
    /// clients). Whether the DHT now serves; `false` without a DHT.
    pub async fn serve_dht(&self, serve: bool) -> bool {
        super::reach::serve_dht(self, serve).await
    }

    /// Whether this node serves in the DHT now (decision 9).
    pub async fn dht_serves(&self) -> bool {
        super::reach::dht_serves(self).await
    }

    /// Finds `peer` through the DHT and gets a direct path to it (spec/05 §5): dial it if
    /// its presence says it is reachable, else exchange CONNECT through one of its
    /// rendezvous nodes and punch. On success the node dials QUIC over the path found and
    /// keeps the connection up ([`NodeHandle::connect`]); messages queued with
    /// [`NodeHandle::send`] flow as soon as it is up.
    pub async fn reach(&self, peer: Fingerprint) -> Result<Reached, ReachError> {
        super::reach::reach(self, peer).await
    }

    /// A punching attempt toward a peer whose session runs through the bundled relay at
    /// `token` (spec/07-relay.md §1.9): CONNECT and punching as [`Self::reach`] does, no
    /// relay, no dial; a pair found moves the session there. Whether it moved.
    pub async fn try_direct(&self, peer: Fingerprint, token: SocketAddr) -> bool {
        super::reach::try_direct(self, peer, token).await
    }

    // ---- relay_server

    /// Routes in the socket: relayed peers and local aliases of punched peers (bounded by
    /// `relay.max_peers`; an alias goes with its connection).
    pub fn socket_routes(&self) -> usize {
        super::relay_server::socket_routes(self)
    }

    /// What relays carry for this node (per peer and in total) and, on a relay node, what
    /// it relays (spec/07-relay.md §1.6).
    pub fn relay_status(&self) -> RelayStatus {
        super::relay_server::relay_status(self)
    }

    // ---- routine

    /// Waits until the node's routine finished its first round (joined, discovered,
    /// registered, announced); at once if the node runs no routine. `false` if the node
    /// closed first.
    pub async fn ready(&self) -> bool {
        super::routine::ready(self).await
    }

    /// The routine's counters (all zero without a routine).
    pub fn routine_stats(&self) -> RoutineStats {
        super::routine::routine_stats(self)
    }

    // ---- turn

    /// Asks our TURN allocation for a permission for `ip` (what the CONNECT exchange
    /// does for the peer's candidates): the peer's datagrams to our relayed address then
    /// reach us. `false` when the node keeps no allocation or the queue is full.
    pub fn turn_permit(&self, ip: std::net::IpAddr) -> bool {
        super::turn::turn_permit(self, ip)
    }

    /// Waits until the node's TURN task holds an allocation or gave up (at most
    /// `turn_tcp_after` + 8 s); at once without one. What the node sends first (DHT join,
    /// discovery) then goes the way it must: through the allocation over TCP when UDP is
    /// blocked. `true` when allocated.
    pub async fn turn_settled(&self) -> bool {
        super::turn::turn_settled(self).await
    }

    /// Whether everything the node sends goes through its TURN allocation over TCP (UDP
    /// to the server got no answer; spec/07-relay.md §2.11).
    pub fn turn_over_tcp(&self) -> bool {
        super::turn::turn_over_tcp(self)
    }

    // ---- spray

    /// Port prediction's counters.
    pub fn prediction_status(&self) -> super::spray::PredictionStatus {
        super::spray::prediction_status(self)
    }

    // ---- the node's life

    /// Whether the node still runs (false once it is shutting down or stopped): a task an
    /// application started ends when this turns false, so the node's socket can close.
    pub fn is_running(&self) -> bool {
        use std::sync::atomic::Ordering;
        !self.shared.stopped.load(Ordering::Relaxed) && !self.shared.closing.load(Ordering::Relaxed)
    }
}

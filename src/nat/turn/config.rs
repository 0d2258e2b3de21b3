//! The TURN client's settings, limits, events and counters (spec/07-relay.md §2.2, §2.5).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::error::TurnError;
use crate::nat::stun::Timers;

/// A permission lasts 300 s (RFC 8656 §9).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);

/// How the client reaches the server; the relayed transport is UDP either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Over UDP: requests are retransmitted on the configured timers.
    Udp,
    /// Over TCP (§3.1): each request is sent once and times out after what the UDP timers
    /// add up to (RFC 8489 §6.2.2, Ti = 39.5 s by default).
    Tcp,
}

/// The client's settings and limits (spec/07 §2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnConfig {
    /// UDP or TCP to the server.
    pub transport: Transport,
    /// Retransmission timers (RFC 8489 §6.2.1: 500 ms, 7 requests, 16 RTOs).
    pub timers: Timers,
    /// LIFETIME asked for in Allocate and Refresh (the server may grant less). 600 s.
    pub lifetime: Duration,
    /// Refresh this long before the allocation expires; at half the lifetime when the
    /// lifetime granted is not longer. 60 s.
    pub refresh_margin: Duration,
    /// Peer IPs with a permission at once. 64.
    pub max_permissions: usize,
    /// Retries of one request after 401 or 438. 3.
    pub max_auth_retries: u32,
    /// Allocations lost in a row (each followed by a new Allocate) before the client gives
    /// up. 3.
    pub max_reallocations: u32,
    /// Data events waiting for [`Client::poll_event`](super::Client::poll_event); more are dropped and counted. 256.
    pub max_queued_data: usize,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            transport: Transport::Udp,
            timers: Timers::RFC8489,
            lifetime: Duration::from_secs(600),
            refresh_margin: Duration::from_secs(60),
            max_permissions: 64,
            max_auth_retries: 3,
            max_reallocations: 3,
            max_queued_data: 256,
        }
    }
}

impl TurnConfig {
    /// The timers a transaction runs on: over TCP one send and one wait as long as all the
    /// UDP retransmissions.
    pub(super) fn effective_timers(&self) -> Timers {
        let t = self.timers;
        match self.transport {
            Transport::Udp => t,
            Transport::Tcp => {
                let rtos = (1u32 << t.rc.clamp(1, 16).saturating_sub(1)) - 1 + t.rm;
                Timers {
                    rto: t.rto * rtos,
                    rc: 1,
                    rm: 1,
                }
            }
        }
    }
}

/// What the client tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEvent {
    /// An allocation was made (first, or again after [`TurnEvent::Lost`]).
    Allocated {
        /// XOR-RELAYED-ADDRESS: where peers send to reach us.
        relayed: SocketAddr,
        /// XOR-MAPPED-ADDRESS: our address as the server sees it (if it said).
        mapped: Option<SocketAddr>,
        /// The lifetime granted.
        lifetime: Duration,
    },
    /// A Refresh succeeded.
    Refreshed {
        /// The lifetime granted.
        lifetime: Duration,
    },
    /// The permission for this peer IP is installed (first time, or after a re-allocation).
    PermissionCreated(IpAddr),
    /// The server refused the permission (it was removed).
    PermissionFailed(IpAddr, TurnError),
    /// A Data indication: `data` from `peer` through the relay.
    Data {
        /// The peer.
        peer: SocketAddr,
        /// What it sent.
        data: Vec<u8>,
    },
    /// The allocation is gone (no answer, or the server forgot it); a new Allocate is on
    /// its way.
    Lost(TurnError),
    /// The client gave up; it does nothing more. The driver may make a new one later.
    Failed(TurnError),
    /// [`Client::close`](super::Client::close) finished (the server deleted the allocation, or did not answer).
    Closed,
}

/// Counters, for tests and `dna status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnStats {
    /// Requests sent, first transmissions.
    pub requests: u64,
    /// Retransmissions.
    pub retransmits: u64,
    /// Responses matched to a transaction and accepted.
    pub responses: u64,
    /// 438 Stale Nonce answers (each retried with the new nonce).
    pub stale_nonces: u64,
    /// Datagrams from the server that matched no transaction or were not understood.
    pub ignored: u64,
    /// Datagrams with a live transaction ID that failed verification (MESSAGE-INTEGRITY or
    /// FINGERPRINT, or a success without MESSAGE-INTEGRITY to an authenticated request).
    pub unverified: u64,
    /// Data indications delivered as events.
    pub data_in: u64,
    /// Data indications dropped: no permission for the peer, or the event queue full.
    pub data_dropped: u64,
    /// Allocations made.
    pub allocations: u64,
    /// Refreshes that succeeded.
    pub refreshes: u64,
    /// Permission refreshes that succeeded.
    pub permission_refreshes: u64,
}

//! The bundled relay's table as the driver shares it (spec/07-relay.md §1.3): the sans-IO
//! [`RelayServer`] behind a lock, read with the clock, and the socket's
//! [`RelayForwarder`]. A leaf: the requests and the status are in `relay`.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

use crate::node::relay_server::{RelayServer, RelayServerLimits, RelayServerStats};
use crate::transport::RelayForwarder;

/// The relay's table, shared by the socket (forwarding) and the signalling tasks
/// (requests). The lock is held for one lookup or one request, never across an `.await`.
pub(crate) struct RelayShared {
    table: Mutex<RelayServer>,
    /// Woken when a pair is made, so the request waiting for it answers.
    pub(crate) made: Notify,
}

impl RelayShared {
    pub(crate) fn new(limits: RelayServerLimits) -> RelayShared {
        RelayShared {
            table: Mutex::new(RelayServer::new(limits)),
            made: Notify::new(),
        }
    }

    pub(crate) fn table(&self) -> MutexGuard<'_, RelayServer> {
        // A panic while holding it cannot leave the table half-changed in a way that
        // matters more than the panic.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The relay's counters with each pair.
    pub(crate) fn stats(&self) -> RelayServerStats {
        self.table().stats(Instant::now())
    }
}

impl RelayForwarder for RelayShared {
    fn forward(
        &self,
        from: SocketAddr,
        token: SocketAddr,
        len: usize,
    ) -> Option<(SocketAddr, SocketAddr)> {
        self.table().forward(from, token, len, Instant::now()).ok()
    }
}

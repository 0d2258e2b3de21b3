//! The DHT connection pool's policy (spec/06-node.md §4.5), sans-IO: which pooled
//! connection goes when the node is at its connection limit. The pool itself (QUIC
//! handles and their last use) is the driver's resource (`daemon::dht`); the choice is made
//! here, from numbers.

use crate::crypto::NodeId;

/// The pooled connections that may be closed to make room, best first: those that carried
/// no request for `quiet` ms (none is in flight: a request waits at most a handshake
/// timeout), least recently used first. `pool` gives each connection's peer and last use
/// (ms on the pool's clock); the driver then closes the first that holds no rendezvous
/// registration (ours at that node, or the node's at ours: `node::rendezvous`).
pub fn eviction_order(
    pool: impl IntoIterator<Item = (NodeId, u64)>,
    now_ms: u64,
    quiet_ms: u64,
) -> Vec<NodeId> {
    let mut idle: Vec<(u64, NodeId)> = pool
        .into_iter()
        .filter(|(_, used)| now_ms.saturating_sub(*used) >= quiet_ms)
        .map(|(id, used)| (used, id))
        .collect();
    idle.sort();
    idle.into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_idle_connection_goes_first_and_busy_ones_never() {
        let id = |n: u8| NodeId([n; 20]);
        let pool = [(id(1), 500), (id(2), 100), (id(3), 9_990), (id(4), 300)];
        assert_eq!(
            eviction_order(pool, 10_000, 1_000),
            vec![id(2), id(4), id(1)],
            "id 3 was used 10 ms ago"
        );
        assert!(eviction_order(pool, 1_000, 1_000).is_empty(), "all busy");
    }
}

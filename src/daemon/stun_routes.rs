//! Where the STUN loop delivers the STUN datagrams that are not requests for the responder
//! (spec/05-nat.md §1, §5): answers to our Binding transactions by transaction ID, and a
//! punching attempt's checks (by our ufrag) and answers (by the transaction-ID tag the
//! attempt chose). The table is owned by the STUN loop's task; transactions and attempts
//! register over a bounded queue before their first request leaves, and an entry goes when
//! its receiver is dropped (the waiting side is done).

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::sync::mpsc;

use crate::nat::stun;
use crate::transport::socket::Datagram;

/// Registrations waiting for the STUN loop; senders wait when it is full.
pub(crate) const ROUTE_QUEUE: usize = 256;

/// A registration: where datagrams for a transaction or a punching attempt go.
pub(crate) enum StunRoute {
    /// Answers to one Binding transaction.
    Transaction {
        tid: [u8; 12],
        tx: mpsc::UnboundedSender<Datagram>,
    },
    /// A punching attempt's checks (USERNAME starting with `ufrag`) and answers
    /// (transaction IDs starting with `tag`).
    Punch {
        tag: [u8; 4],
        ufrag: String,
        tx: mpsc::UnboundedSender<Datagram>,
    },
}

/// The STUN loop's routing table.
#[derive(Default)]
pub(crate) struct StunRoutes {
    by_tid: HashMap<[u8; 12], mpsc::UnboundedSender<Datagram>>,
    by_tag: HashMap<[u8; 4], mpsc::UnboundedSender<Datagram>>,
    by_ufrag: HashMap<String, mpsc::UnboundedSender<Datagram>>,
}

/// Entries held before closed ones are swept on the next registration.
const SWEEP_ABOVE: usize = 64;

impl StunRoutes {
    pub(crate) fn add(&mut self, r: StunRoute) {
        if self.by_tid.len() + self.by_tag.len() > SWEEP_ABOVE {
            self.by_tid.retain(|_, tx| !tx.is_closed());
            self.by_tag.retain(|_, tx| !tx.is_closed());
            self.by_ufrag.retain(|_, tx| !tx.is_closed());
        }
        match r {
            StunRoute::Transaction { tid, tx } => {
                self.by_tid.insert(tid, tx);
            }
            StunRoute::Punch { tag, ufrag, tx } => {
                self.by_tag.insert(tag, tx.clone());
                self.by_ufrag.insert(ufrag, tx);
            }
        }
    }

    /// Hands a datagram to the punching attempt it belongs to; `false` if none.
    pub(crate) fn deliver_to_punch(&mut self, from: SocketAddr, bytes: &[u8]) -> bool {
        match stun::request_username(bytes) {
            Some(user) => {
                let local = user.split(':').next().unwrap_or_default();
                deliver(&mut self.by_ufrag, local, from, bytes)
            }
            None => stun::transaction_id(bytes).is_some_and(|t| {
                let mut tag = [0u8; 4];
                tag.copy_from_slice(&t[..4]);
                deliver(&mut self.by_tag, &tag, from, bytes)
            }),
        }
    }

    /// Hands an answer to the Binding transaction waiting for it; `false` if none.
    pub(crate) fn deliver_to_transaction(&mut self, from: SocketAddr, bytes: &[u8]) -> bool {
        stun::transaction_id(bytes).is_some_and(|t| deliver(&mut self.by_tid, &t, from, bytes))
    }
}

fn deliver<K, Q>(
    map: &mut HashMap<K, mpsc::UnboundedSender<Datagram>>,
    key: &Q,
    from: SocketAddr,
    bytes: &[u8],
) -> bool
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    let Some(tx) = map.get(key) else {
        return false;
    };
    if tx
        .send((from, bytes::Bytes::copy_from_slice(bytes)))
        .is_ok()
    {
        return true;
    }
    // The waiting side is done: forget it.
    map.remove(key);
    false
}

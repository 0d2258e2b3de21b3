//! The Kademlia DHT, sans-IO (spec/04-dht.md): 160-bit IDs, XOR distance, k = 20 buckets,
//! α = 3 iterative lookups, signed self-certifying records. The same state machine runs in
//! netsim (thousands of nodes in one process) and in the daemon over QUIC.

mod checked;
mod contact;
mod lookup;
mod node;
mod routing;
pub mod rpc;
mod store;

pub use checked::{Checked, VerifiedRecord};
pub use contact::{subnet, Contact, Distance};
pub use lookup::{Lookup, LookupConfig};
pub use node::{Dht, DhtConfig, DhtEvent, LookupStats, QueryId, Transmit};
pub use routing::{Insert, RoutingConfig, RoutingTable};
pub use rpc::{Body, DhtMessage, DhtWireError, StoreStatus};
pub use store::{
    QuotaRefusals, RecordStore, StoreChanges, StoreConfig, StoreError, StoreStats, Stored,
    RECORD_OVERHEAD,
};

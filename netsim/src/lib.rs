//! netsim: the seeded, single-threaded discrete-event simulator that runs dna-p2p's sans-IO
//! cores (design brief, "How it is proven").
//!
//! Shaped after smoltcp's `tests/netsim.rs` and turmoil: simulated time is a [`Duration`]
//! since the start of the run, events wait in a [`Scheduler`] ordered by (time, insertion
//! order), and every random choice comes from one seeded [`SimRng`], so the same seed gives
//! the same run, event for event. [`LinkModel`] draws per-datagram latency and loss.
//!
//! The protocol cores take `now`; the simulator hands them `epoch + sim_time`, where the
//! driver took `epoch` once. Nothing here reads a clock.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bootstrap_load;
pub mod bootstrap_sim;
pub mod dht_flood;
pub mod dht_sim;
mod link;
pub mod mailbox_sim;
pub mod rdv_sim;
pub mod reach_sim;
mod scheduler;
pub mod testbed;

pub use link::LinkModel;
pub use scheduler::Scheduler;

/// The simulator's only source of randomness: ChaCha8 from a `u64` seed.
pub type SimRng = rand_chacha::ChaCha8Rng;

/// A seeded RNG for a run.
pub fn rng(seed: u64) -> SimRng {
    use rand::SeedableRng;
    SimRng::seed_from_u64(seed)
}

pub use std::time::Duration;

//! Small driver helpers: the wall clock and poisoned-lock recovery.

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// A poisoned lock only means another task panicked while holding it; the maps inside stay
/// consistent, so carry on with them.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch, from the system clock.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

thread_local! {
    /// Message IDs and transaction IDs: ChaCha20 seeded once per thread from the OS, not a
    /// system call per message and no lock shared by the node's tasks.
    static RNG: std::cell::RefCell<Option<rand_chacha::ChaCha20Rng>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this thread's random generator (seeded from the OS on first use).
pub(crate) fn with_rng<T>(f: impl FnOnce(&mut rand_chacha::ChaCha20Rng) -> T) -> T {
    use rand_core::SeedableRng;
    RNG.with(|cell| {
        let mut slot = cell.borrow_mut();
        let rng = slot.get_or_insert_with(rand_chacha::ChaCha20Rng::from_entropy);
        f(rng)
    })
}

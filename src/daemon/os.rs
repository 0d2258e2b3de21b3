//! What the driver takes from the operating system, in one place: the wall clock, random
//! numbers seeded from the OS, owner-only files replaced atomically, and recovery from a
//! poisoned lock.

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

/// Writes `bytes` to `path`, readable by its owner only, replacing it atomically: a
/// temporary file beside it (`<path>.tmp`) is written and synced, then renamed over it, so
/// a crash leaves the old file or the new one, never half of one.
pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

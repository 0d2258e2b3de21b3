//! NAT traversal (spec/05-nat.md), sans-IO: the STUN Binding client and responder (§1) and
//! the responder's per-source limits (§1.1–1.3), NAT behaviour discovery (§2), candidates
//! and the presence value (§3, §4.1), rendezvous signalling (§4), hole punching (§5) and port prediction (§5.5).
//! The driver is `daemon::reach`.

pub mod candidate;
pub mod discovery;
pub mod predict;
pub mod punch;
pub mod responder;
pub mod signal;
pub mod stun;
pub mod turn;

#[cfg(test)]
pub(crate) mod tests {
    /// A test clock's starting point.
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn t0() -> std::time::Instant {
        std::time::Instant::now()
    }
}

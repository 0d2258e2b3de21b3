//! NAT traversal (spec/05-nat.md), sans-IO: the STUN Binding client and responder (§1),
//! NAT behaviour discovery (§2).

pub mod discovery;
pub mod stun;

#[cfg(test)]
pub(crate) mod tests {
    /// A test clock's starting point.
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn t0() -> std::time::Instant {
        std::time::Instant::now()
    }
}

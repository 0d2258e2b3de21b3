//! NAT traversal (spec/05-nat.md), sans-IO. So far: STUN Binding client and responder.

pub mod stun;

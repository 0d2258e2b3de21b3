//! NAT behaviour discovery (RFC 5780 §4.3–4.4, in RFC 4787's terms), sans-IO: which
//! mapping and filtering the NAT in front of this node applies, from the answers of a STUN
//! server with two addresses and two ports (spec/05-nat.md §2).
//!
//! Filtering is probed first, while the NAT has seen traffic to the primary address only: a
//! mapping probe to the server's other address would open an address-restricted NAT's
//! filter for that address and make it look like a full cone.
//!
//! 1. Binding to the primary address → mapped address M1, OTHER-ADDRESS O. M1 equal to one
//!    of our host addresses: no NAT.
//! 2. Together: CHANGE-REQUEST(ip+port) (an answer from O means endpoint-independent
//!    filtering) and CHANGE-REQUEST(port) (an answer, without the first, means
//!    address-dependent filtering); neither answers: address-and-port-dependent.
//! 3. Binding to O's address with the primary port → M2; M2 = M1: endpoint-independent
//!    mapping. Otherwise Binding to O → M3; M3 = M2: address-dependent, else
//!    address-and-port-dependent mapping.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::stun::{Answer, Binding, BindingError, Change, Options, Timers};

/// How the NAT maps an inside address and port to an outside one (RFC 4787 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mapping {
    /// The same mapping for every destination (also: no NAT).
    EndpointIndependent,
    /// A new mapping per destination address.
    AddressDependent,
    /// A new mapping per destination address and port ("symmetric").
    AddressAndPortDependent,
}

/// Which inbound packets the NAT lets through to a mapping (RFC 4787 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Filtering {
    /// From anyone ("full cone").
    EndpointIndependent,
    /// From addresses the inside host has sent to ("address-restricted").
    AddressDependent,
    /// From address-and-port pairs the inside host has sent to ("port-restricted").
    AddressAndPortDependent,
}

/// What discovery found out about the path to the public network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatClass {
    /// Our address and port as the server saw them.
    pub mapped: SocketAddr,
    /// No NAT: the server saw one of our host addresses.
    pub no_nat: bool,
    /// The mapping behaviour.
    pub mapping: Mapping,
    /// The filtering behaviour.
    pub filtering: Filtering,
    /// The NAT kept our port (or there is no NAT).
    pub port_preserved: bool,
    /// The NAT gave discovery's mappings consecutive ports (each 1–8 above the one
    /// before): it allocates sequentially, and the next mapping's port is predictable
    /// (spec/05 §5.5). Only for a mapping that depends on the destination.
    pub sequential: bool,
}

impl NatClass {
    /// Anyone can reach us at `mapped` without our sending first: endpoint-independent
    /// mapping and filtering (no NAT and an open firewall, or a full cone).
    pub fn reachable(&self) -> bool {
        self.mapping == Mapping::EndpointIndependent
            && self.filtering == Filtering::EndpointIndependent
    }

    /// The test bed's name for this class (spec/05 §7): `public`, `full-cone`,
    /// `address-restricted`, `port-restricted` or `symmetric`.
    pub fn name(&self) -> &'static str {
        match (self.no_nat, self.mapping, self.filtering) {
            (true, _, Filtering::EndpointIndependent) => "public",
            (_, Mapping::EndpointIndependent, Filtering::EndpointIndependent) => "full-cone",
            (_, Mapping::EndpointIndependent, Filtering::AddressDependent) => "address-restricted",
            (_, Mapping::EndpointIndependent, Filtering::AddressAndPortDependent) => {
                "port-restricted"
            }
            _ => "symmetric",
        }
    }
}

/// Why discovery could not classify the NAT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The primary Binding failed: no server, or UDP blocked.
    #[error("STUN server unreachable: {0}")]
    Unreachable(BindingError),
    /// The server does not support RFC 5780 (no OTHER-ADDRESS, or it equals the primary).
    #[error("the STUN server gives no usable OTHER-ADDRESS (no RFC 5780 support)")]
    NoOtherAddress,
    /// A mapping test to the other address failed.
    #[error("mapping test failed: {0}")]
    MappingTest(BindingError),
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per discovery run; boxing buys nothing
enum Phase {
    Primary(Binding),
    Filtering {
        m1: SocketAddr,
        other: SocketAddr,
        both: Binding,
        port: Binding,
    },
    MappingAddr {
        m1: SocketAddr,
        other: SocketAddr,
        filtering: Filtering,
        probe: Binding,
    },
    MappingPort {
        m1: SocketAddr,
        m2: SocketAddr,
        filtering: Filtering,
        probe: Binding,
    },
    Done(Result<NatClass, DiscoveryError>),
}

/// One discovery run against `server`, from the socket whose host addresses are `host`.
#[derive(Debug)]
pub struct Discovery {
    host: Vec<IpAddr>,
    local_port: u16,
    tids: [[u8; 12]; 5],
    phase: Phase,
}

impl Discovery {
    /// Starts at `now`. `tids`: five fresh random transaction IDs (the driver owns the
    /// randomness); `host`: our interface addresses; `local_port`: our socket's port.
    pub fn new(
        server: SocketAddr,
        host: Vec<IpAddr>,
        local_port: u16,
        tids: [[u8; 12]; 5],
        now: Instant,
    ) -> Discovery {
        let probe = Binding::with_options(server, tids[0], opts(Change::Nothing), now);
        Discovery {
            host,
            local_port,
            tids,
            phase: Phase::Primary(probe),
        }
    }

    fn bindings(&mut self) -> Vec<&mut Binding> {
        match &mut self.phase {
            Phase::Primary(b) => vec![b],
            Phase::Filtering { both, port, .. } => vec![both, port],
            Phase::MappingAddr { probe, .. } | Phase::MappingPort { probe, .. } => vec![probe],
            Phase::Done(_) => vec![],
        }
    }

    /// The next request to send, if one is due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        self.bindings()
            .into_iter()
            .find_map(|b| b.poll_transmit(now).map(|(to, r)| (to, r.to_vec())))
    }

    /// The transaction IDs answers may carry.
    pub fn transaction_ids(&self) -> [[u8; 12]; 5] {
        self.tids
    }

    /// Takes a STUN answer; returns whether it was one of ours.
    pub fn handle_response(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) -> bool {
        let taken = self
            .bindings()
            .into_iter()
            .any(|b| b.handle_response(from, bytes));
        if taken {
            self.advance(now);
        }
        taken
    }

    /// Runs the transactions' timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for b in self.bindings() {
            b.handle_timeout(now);
        }
        self.advance(now);
    }

    /// When to call [`handle_timeout`](Discovery::handle_timeout); `None` once done.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.bindings()
            .into_iter()
            .filter_map(|b| b.poll_timeout())
            .min()
    }

    /// The class, once discovery has ended.
    pub fn result(&self) -> Option<&Result<NatClass, DiscoveryError>> {
        match &self.phase {
            Phase::Done(r) => Some(r),
            _ => None,
        }
    }

    fn class(&self, mapped: SocketAddr, mapping: Mapping, filtering: Filtering) -> NatClass {
        NatClass {
            mapped,
            no_nat: self.host.contains(&mapped.ip()),
            mapping,
            filtering,
            port_preserved: mapped.port() == self.local_port,
            sequential: false,
        }
    }

    fn advance(&mut self, now: Instant) {
        let next = match &self.phase {
            Phase::Primary(b) => match b.result() {
                None => return,
                Some(Err(e)) => Phase::Done(Err(DiscoveryError::Unreachable(e.clone()))),
                Some(Ok(Answer { mapped, other, .. })) => match other {
                    Some(o) if o.ip() != b.server().ip() && o.port() != b.server().port() => {
                        Phase::Filtering {
                            m1: *mapped,
                            other: *o,
                            both: Binding::with_options(
                                b.server(),
                                self.tids[1],
                                opts(Change::IpAndPort),
                                now,
                            ),
                            port: Binding::with_options(
                                b.server(),
                                self.tids[2],
                                opts(Change::Port),
                                now,
                            ),
                        }
                    }
                    _ => Phase::Done(Err(DiscoveryError::NoOtherAddress)),
                },
            },
            Phase::Filtering {
                m1,
                other,
                both,
                port,
            } => {
                let (Some(rb), Some(rp)) = (both.result(), port.result()) else {
                    // An answer to the both-changed test settles it; otherwise wait for both.
                    if !matches!(both.result(), Some(Ok(_))) {
                        return;
                    }
                    self.after_filtering(*m1, *other, Filtering::EndpointIndependent, now);
                    return;
                };
                let filtering = match (rb, rp) {
                    (Ok(_), _) => Filtering::EndpointIndependent,
                    (Err(_), Ok(_)) => Filtering::AddressDependent,
                    (Err(_), Err(_)) => Filtering::AddressAndPortDependent,
                };
                self.after_filtering(*m1, *other, filtering, now);
                return;
            }
            Phase::MappingAddr {
                m1,
                other,
                filtering,
                probe,
            } => match probe.result() {
                None => return,
                Some(Err(e)) => Phase::Done(Err(DiscoveryError::MappingTest(e.clone()))),
                Some(Ok(a)) if a.mapped == *m1 => Phase::Done(Ok(self.class(
                    *m1,
                    Mapping::EndpointIndependent,
                    *filtering,
                ))),
                Some(Ok(a)) => Phase::MappingPort {
                    m1: *m1,
                    m2: a.mapped,
                    filtering: *filtering,
                    probe: Binding::with_options(*other, self.tids[4], opts(Change::Nothing), now),
                },
            },
            Phase::MappingPort {
                m1,
                m2,
                filtering,
                probe,
            } => match probe.result() {
                None => return,
                Some(Err(e)) => Phase::Done(Err(DiscoveryError::MappingTest(e.clone()))),
                Some(Ok(a)) => {
                    let (mapping, ports) = if a.mapped == *m2 {
                        (Mapping::AddressDependent, vec![m1.port(), m2.port()])
                    } else {
                        let p = vec![m1.port(), m2.port(), a.mapped.port()];
                        (Mapping::AddressAndPortDependent, p)
                    };
                    let mut class = self.class(*m1, mapping, *filtering);
                    class.sequential = ports
                        .windows(2)
                        .all(|w| (1..=8).contains(&w[1].wrapping_sub(w[0])));
                    Phase::Done(Ok(class))
                }
            },
            Phase::Done(_) => return,
        };
        self.phase = next;
        // A phase may be decided at once (never in practice: each starts with a request).
    }

    fn after_filtering(&mut self, m1: SocketAddr, other: SocketAddr, f: Filtering, now: Instant) {
        let Phase::Filtering { both, .. } = &self.phase else {
            return;
        };
        let primary_port = both.server().port();
        let probe = Binding::with_options(
            SocketAddr::new(other.ip(), primary_port),
            self.tids[3],
            opts(Change::Nothing),
            now,
        );
        self.phase = Phase::MappingAddr {
            m1,
            other,
            filtering: f,
            probe,
        };
    }
}

fn opts(change: Change) -> Options {
    Options {
        timers: Timers::DISCOVERY,
        change,
        credentials: None,
    }
}

#[cfg(test)]
mod tests;

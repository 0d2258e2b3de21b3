//! Discovery against a modelled RFC 5780 server behind each modelled NAT type. The real
//! agreement test against coturn behind kernel NATs is netsim's `nat_discovery_agrees`.

use super::*;
use std::time::Duration;
use stun_rs::attributes::discovery::{ChangeRequest, ChangeRequestFlags, OtherAddress};
use stun_rs::attributes::stun::{Fingerprint, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessageBuilder};

const A1: &str = "198.18.0.2:3478";
const A2: &str = "198.18.0.3:3479";

#[derive(Clone, Copy)]
struct Nat {
    mapping: Mapping,
    filtering: Filtering,
}

/// The server: answers from the address the request asks for, with OTHER-ADDRESS.
fn serve(to: SocketAddr, request: &[u8], mapped: SocketAddr) -> (SocketAddr, Vec<u8>) {
    let (msg, _) = MessageDecoderBuilder::default()
        .build()
        .decode(request)
        .unwrap();
    let (a1, a2): (SocketAddr, SocketAddr) = (A1.parse().unwrap(), A2.parse().unwrap());
    let flags = msg
        .get::<ChangeRequest>()
        .map(|c| c.as_change_request().unwrap().flags());
    let ip = if flags.is_some_and(|f| f.contains(ChangeRequestFlags::ChangeIp)) {
        if to.ip() == a1.ip() {
            a2.ip()
        } else {
            a1.ip()
        }
    } else {
        to.ip()
    };
    let port = if flags.is_some_and(|f| f.contains(ChangeRequestFlags::ChangePort)) {
        if to.port() == a1.port() {
            a2.port()
        } else {
            a1.port()
        }
    } else {
        to.port()
    };
    let answer = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
        .with_transaction_id(*msg.transaction_id())
        .with_attribute(XorMappedAddress::from(mapped))
        .with_attribute(OtherAddress::from(a2))
        .with_attribute(Fingerprint::default())
        .build();
    let mut buf = vec![0u8; 256];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, &answer)
        .unwrap();
    buf.truncate(n);
    (SocketAddr::new(ip, port), buf)
}

/// Runs discovery from 10.0.0.2:5000 behind `nat` (public address 203.0.113.9) against the
/// modelled server.
fn run(nat: Option<Nat>) -> NatClass {
    run_against(nat, &mut |to, req, mapped| Some(serve(to, req, mapped)))
}

/// A server: from the address a request went to, the request and the address it came from,
/// the answer and the address it leaves from, if any.
type Server<'a> = dyn FnMut(SocketAddr, &[u8], SocketAddr) -> Option<(SocketAddr, Vec<u8>)> + 'a;

/// [`run`] against `server`.
fn run_against(nat: Option<Nat>, server: &mut Server<'_>) -> NatClass {
    let start = crate::nat::tests::t0();
    let local: SocketAddr = "10.0.0.2:5000".parse().unwrap();
    let mut d = Discovery::new(
        A1.parse().unwrap(),
        vec![local.ip()],
        local.port(),
        [[1; 12], [2; 12], [3; 12], [4; 12], [5; 12]],
        start,
    );
    let mut contacted: Vec<SocketAddr> = Vec::new();
    let mut now = start;
    while d.result().is_none() {
        while let Some((to, req)) = d.poll_transmit(now) {
            if !contacted.contains(&to) {
                contacted.push(to);
            }
            let mapped = match nat {
                None => local,
                Some(n) => {
                    let port = match n.mapping {
                        Mapping::EndpointIndependent => 5000,
                        Mapping::AddressDependent => {
                            6000 + u16::from(to.ip() != A1.parse::<SocketAddr>().unwrap().ip())
                        }
                        Mapping::AddressAndPortDependent => {
                            7000 + to.port() % 7
                                + u16::from(to.ip() != A1.parse::<SocketAddr>().unwrap().ip()) * 10
                        }
                    };
                    SocketAddr::new("203.0.113.9".parse().unwrap(), port)
                }
            };
            let Some((from, answer)) = server(to, &req, mapped) else {
                continue;
            };
            let passes = match nat.map(|n| n.filtering) {
                None | Some(Filtering::EndpointIndependent) => true,
                Some(Filtering::AddressDependent) => contacted.iter().any(|c| c.ip() == from.ip()),
                Some(Filtering::AddressAndPortDependent) => contacted.contains(&from),
            };
            if passes {
                d.handle_response(from, &answer, now);
            }
        }
        d.handle_timeout(now);
        now = d.poll_timeout().unwrap_or(now + Duration::from_millis(1));
    }
    assert!(
        now - start < Duration::from_secs(10),
        "discovery took {:?}",
        now - start
    );
    d.result().unwrap().clone().unwrap()
}

#[test]
fn no_nat_is_public() {
    let c = run(None);
    assert!(c.no_nat && c.reachable() && c.port_preserved);
    assert_eq!(c.name(), "public");
}

#[test]
fn every_modelled_nat_type_is_classified() {
    use Filtering as F;
    use Mapping as M;
    for (mapping, filtering, name) in [
        (M::EndpointIndependent, F::EndpointIndependent, "full-cone"),
        (
            M::EndpointIndependent,
            F::AddressDependent,
            "address-restricted",
        ),
        (
            M::EndpointIndependent,
            F::AddressAndPortDependent,
            "port-restricted",
        ),
        (M::AddressDependent, F::AddressAndPortDependent, "symmetric"),
        (
            M::AddressAndPortDependent,
            F::AddressAndPortDependent,
            "symmetric",
        ),
    ] {
        let c = run(Some(Nat { mapping, filtering }));
        assert_eq!(
            (c.mapping, c.filtering, c.name()),
            (mapping, filtering, name)
        );
        assert!(!c.no_nat);
        assert_eq!(c.reachable(), name == "full-cone");
    }
}

#[test]
fn a_server_without_rfc5780_is_reported() {
    let start = crate::nat::tests::t0();
    let server: SocketAddr = A1.parse().unwrap();
    let mut d = Discovery::new(server, vec![], 5000, [[7; 12]; 5], start);
    let (to, req) = d.poll_transmit(start).unwrap();
    let answer = crate::nat::stun::respond("203.0.113.9:5000".parse().unwrap(), &req).unwrap();
    assert!(d.handle_response(to, &answer, start));
    assert_eq!(d.result(), Some(&Err(DiscoveryError::NoOtherAddress)));
}

/// The same model NATs against our own RFC 5780 server, the sans-IO responder of `dna
/// bootstrap --other-address` (spec/05 §2.1), with its default limits: every type is
/// classified, and the byte rule never refuses our client's requests.
#[test]
fn every_modelled_nat_type_is_classified_by_our_own_rfc5780_server() {
    use crate::nat::responder::{ResponderConfig, StunResponder};
    use crate::nat::stun::{ServerAddresses, ServerSocket};
    use Filtering as F;
    use Mapping as M;
    let (a1, a2): (SocketAddr, SocketAddr) = (A1.parse().unwrap(), A2.parse().unwrap());
    let addrs = ServerAddresses::new(a1, a2.ip(), a2.port()).unwrap();
    let now = crate::nat::tests::t0();
    let mut nats = vec![None];
    for (mapping, filtering) in [
        (M::EndpointIndependent, F::EndpointIndependent),
        (M::EndpointIndependent, F::AddressDependent),
        (M::EndpointIndependent, F::AddressAndPortDependent),
        (M::AddressDependent, F::AddressAndPortDependent),
        (M::AddressAndPortDependent, F::AddressAndPortDependent),
    ] {
        nats.push(Some(Nat { mapping, filtering }));
    }
    for nat in nats {
        let mut r = StunResponder::rfc5780(ResponderConfig::default(), addrs);
        let class = run_against(nat, &mut |to, req, mapped| {
            let on = ServerSocket {
                ip: to.ip() == a2.ip(),
                port: to.port() == a2.port(),
            };
            assert_eq!(addrs.addr(on), to, "a request to one of the four sockets");
            let reply = r.handle_on(now, on, mapped, req).expect("answered");
            assert!(
                reply.bytes.len() <= req.len(),
                "our request pays for its answer"
            );
            Some((addrs.addr(reply.via), reply.bytes))
        });
        let want = match nat {
            None => (M::EndpointIndependent, F::EndpointIndependent),
            Some(n) => (n.mapping, n.filtering),
        };
        assert_eq!((class.mapping, class.filtering), want);
        let s = r.stats();
        println!(
            "{:18}: {} answers ({} from another socket), {} bytes, over budget {}",
            class.name(),
            s.answered,
            s.changed,
            s.answered_bytes,
            s.over_budget
        );
        assert_eq!(s.over_budget, 0);
        assert!(
            s.changed >= 1,
            "a filtering test was answered from elsewhere"
        );
    }
}

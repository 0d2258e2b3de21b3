//! The node's own addresses (spec/05-nat.md §3), sans-IO: which host candidates it
//! publishes, what a new discovery keeps of the candidates it replaces, and whether the
//! network changed under the node. The driver (`daemon::reach`) reads the interfaces, asks
//! the OS which source address routes toward a server, and sends the STUN Binding; the
//! choices are made here, from what it found.

use std::net::{IpAddr, SocketAddr};

use crate::nat::candidate::{Candidate, CandidateKind};

/// Most host candidates published.
pub const MAX_HOST_CANDIDATES: usize = 8;

/// Whether `ip` is link-local (IPv4 169.254/16, IPv6 fe80::/10): never published.
fn link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// Host candidates (spec/05 §3): the addresses the node's socket at `local` receives on —
/// for a wildcard socket every address of `interfaces` that is not loopback or link-local,
/// of the socket's family (both families for a dual-stack `[::]` socket); else the one
/// address it is bound to — with its port. `preferred` (the source address of the route
/// toward the STUN server) comes first, with the highest priority; at most
/// [`MAX_HOST_CANDIDATES`].
pub fn host_candidates(
    local: SocketAddr,
    preferred: Option<IpAddr>,
    interfaces: &[IpAddr],
) -> Vec<Candidate> {
    let mut ips: Vec<IpAddr> = Vec::new();
    if local.ip().is_unspecified() {
        let dual = local.is_ipv6();
        let mut all: Vec<IpAddr> = interfaces
            .iter()
            .filter(|ip| !ip.is_loopback() && !link_local(ip))
            .filter(|ip| dual || ip.is_ipv4())
            .copied()
            .collect();
        all.sort_by_key(|ip| (Some(*ip) != preferred, ip.is_ipv4()));
        ips.extend(all);
    } else {
        ips.push(local.ip());
    }
    if let Some(p) = preferred {
        if !ips.contains(&p) && (local.ip().is_unspecified() || local.ip() == p) {
            ips.insert(0, p);
        }
    }
    ips.dedup();
    ips.iter()
        .take(MAX_HOST_CANDIDATES)
        .enumerate()
        .map(|(i, ip)| {
            Candidate::new(
                CandidateKind::Host,
                SocketAddr::new(*ip, local.port()),
                65535 - i as u16,
            )
        })
        .collect()
}

/// A discovery's candidates replace the published ones, except the TURN task's `relay`
/// candidate, which discovery does not find: it is kept.
pub fn with_relayed(mut new: Vec<Candidate>, old: &[Candidate]) -> Vec<Candidate> {
    new.extend(
        old.iter()
            .filter(|c| c.kind == CandidateKind::Relayed)
            .copied(),
    );
    new
}

fn hosts(cands: &[Candidate]) -> Vec<SocketAddr> {
    cands
        .iter()
        .filter(|c| c.kind == CandidateKind::Host)
        .map(|c| c.addr)
        .collect()
}

/// Whether the host addresses the node would publish now (`host_now`) differ from the
/// published ones: the network changed, no STUN needed to tell.
pub fn hosts_changed(published: &[Candidate], host_now: &[Candidate]) -> bool {
    hosts(published) != hosts(host_now)
}

/// With the same host addresses, whether a STUN server's view of the node's socket
/// (`mapped`; `None`: no answer, which says nothing) means the published addresses went
/// stale: it sees another address than the published server-reflexive one (a new uplink,
/// a NAT reboot, a DHCP lease), or it sees a host address where a server-reflexive one was
/// published (the NAT went away).
pub fn mapping_changed(
    published: &[Candidate],
    host_now: &[Candidate],
    mapped: Option<SocketAddr>,
) -> bool {
    let srflx = published
        .iter()
        .find(|c| c.kind == CandidateKind::ServerReflexive)
        .map(|c| c.addr);
    match mapped {
        Some(a) if hosts(host_now).contains(&a) => srflx.is_some(),
        Some(a) => srflx != Some(a),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn host_candidates_of_a_bound_and_of_a_wildcard_socket() {
        let ifs: Vec<IpAddr> = [
            "127.0.0.1",
            "169.254.3.4",
            "10.0.0.5",
            "192.0.2.7",
            "fe80::1",
            "2001:db8::5",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let bound = host_candidates(sa("127.0.0.1:5000"), None, &ifs);
        assert_eq!(bound.len(), 1);
        assert_eq!(bound[0].addr, sa("127.0.0.1:5000"));

        let preferred: IpAddr = "192.0.2.7".parse().unwrap();
        let any = host_candidates(sa("0.0.0.0:5000"), Some(preferred), &ifs);
        let addrs: Vec<SocketAddr> = any.iter().map(|c| c.addr).collect();
        assert_eq!(
            addrs,
            vec![sa("192.0.2.7:5000"), sa("10.0.0.5:5000")],
            "route source first; no loopback, link-local or IPv6 on an IPv4 socket"
        );
        assert!(any.windows(2).all(|w| w[0].priority > w[1].priority));
        let dual = host_candidates(sa("[::]:5000"), None, &ifs);
        assert_eq!(
            dual.len(),
            3,
            "both families on a dual-stack socket: {dual:?}"
        );
        assert_eq!(dual[0].addr, sa("[2001:db8::5]:5000"), "IPv6 first");
        let many: Vec<IpAddr> = (1..=20).map(|i| IpAddr::from([10, 0, 0, i])).collect();
        assert_eq!(
            host_candidates(sa("0.0.0.0:1"), None, &many).len(),
            MAX_HOST_CANDIDATES
        );
    }

    #[test]
    fn a_new_discovery_keeps_the_relayed_candidate() {
        let old = [
            Candidate::new(CandidateKind::Host, sa("10.0.0.5:1"), 9),
            Candidate::new(CandidateKind::Relayed, sa("203.0.113.1:3478"), 0),
        ];
        let new = vec![Candidate::new(CandidateKind::Host, sa("10.0.0.6:1"), 9)];
        let kinds: Vec<CandidateKind> = with_relayed(new, &old).iter().map(|c| c.kind).collect();
        assert_eq!(kinds, vec![CandidateKind::Host, CandidateKind::Relayed]);
    }

    #[test]
    fn the_network_changed_when_hosts_or_the_mapping_moved_and_not_on_silence() {
        let host = Candidate::new(CandidateKind::Host, sa("10.0.0.5:4000"), 9);
        let srflx = Candidate::new(CandidateKind::ServerReflexive, sa("198.51.100.1:4000"), 8);
        let published = [host, srflx];
        assert!(!hosts_changed(&published, &[host]));
        let moved = Candidate::new(CandidateKind::Host, sa("10.0.9.5:4000"), 9);
        assert!(hosts_changed(&published, &[moved]), "a new uplink");
        assert!(!mapping_changed(
            &published,
            &[host],
            Some(sa("198.51.100.1:4000"))
        ));
        assert!(
            mapping_changed(&published, &[host], Some(sa("198.51.100.9:4000"))),
            "NAT rebooted"
        );
        assert!(
            !mapping_changed(&published, &[host], None),
            "no answer says nothing"
        );
        assert!(
            mapping_changed(&published, &[host], Some(sa("10.0.0.5:4000"))),
            "NAT gone"
        );
        assert!(
            !mapping_changed(&[host], &[host], Some(sa("10.0.0.5:4000"))),
            "still public"
        );
    }
}

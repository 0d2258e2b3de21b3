//! The NAT test bed (spec/05-nat.md §7): real kernel NATs in network namespaces, real `dna`
//! processes, a real coturn.
//!
//! [`TestBed::build`] creates, under names unique to this process, a "public" namespace
//! holding a bridge (198.18.0.0/24, the RFC 2544 benchmarking range, and 2001:db8::/64),
//! coturn on two addresses (198.18.0.2 and .3, port 3478, UDP and TCP: RFC 5780 discovery,
//! and TURN with the long-term credentials [`TURN_USER`] / [`TURN_PASSWORD`], realm
//! [`TURN_REALM`], relay ports [`TURN_RELAY_PORTS`]) and two `dna bootstrap` nodes — the
//! first on [`SERVER_A`] port 4000 and an RFC 5780 discovery server with `--other-address`
//! [`SERVER_B`] (ports 4000 and 4001 of both addresses), the second on [`SERVER_B`] port
//! 4002; then, for each router type ([`NatType::ALL`], the six of the
//! matrix, and [`NatType::EXTRA`]) and each of two sides, a host: on the bridge itself for
//! `public`, else behind a router namespace whose nftables rules
//! (`netsim/netns/nat-router.sh`) make it that type (the same-LAN types put both sides
//! behind one router). [`UdpProbe`] and [`EchoServer`] send and answer single datagrams
//! inside the namespaces. Nothing leaves the namespaces. Dropping the [`TestBed`] kills its
//! processes and deletes its namespaces, also when a test fails.

#![allow(clippy::disallowed_methods)] // a driver: it reads the clock

mod probe;
mod process;
mod repeat;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use probe::{probe_binary, EchoServer, Received, UdpProbe};
pub use process::{DnaProcess, Event};
pub use repeat::RepeatSummary;

/// The router types of the test bed: the six of the matrix ([`NatType::ALL`]) and the
/// extra ones addressable by name ([`NatType::EXTRA`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NatType {
    /// No NAT: a host on the public network.
    Public,
    /// Endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    AddressRestricted,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestricted,
    /// Address-and-port-dependent mapping (random ports) and filtering.
    Symmetric,
    /// No UDP leaves at all; TCP only to the TURN server's port (the router still NATs
    /// it: plain masquerade, port-preserving, replies only).
    UdpBlocked,
    /// Address-and-port-dependent mapping with sequential ports (each new UDP flow takes
    /// the next port from 20000), address-and-port-dependent filtering. Extra.
    SymmetricSeq,
    /// IPv4 as port-restricted; IPv6 routed without NAT through a stateful firewall that
    /// lets in only flows the inside opened (most home routers). Extra.
    Ipv6Firewall,
    /// Sides a and b behind ONE port-restricted router that does not hairpin (as Linux
    /// does by default). Extra.
    SameLan,
    /// Sides a and b behind one port-restricted router that hairpins. Extra.
    SameLanHairpin,
}

impl NatType {
    /// The six types of the matrix, in matrix order (21 pairs).
    pub const ALL: [NatType; 6] = [
        NatType::Public,
        NatType::FullCone,
        NatType::AddressRestricted,
        NatType::PortRestricted,
        NatType::Symmetric,
        NatType::UdpBlocked,
    ];

    /// The extra types: built by every test bed, run by `nat-matrix --only A:B`, not part
    /// of the default matrix.
    pub const EXTRA: [NatType; 4] = [
        NatType::SymmetricSeq,
        NatType::Ipv6Firewall,
        NatType::SameLan,
        NatType::SameLanHairpin,
    ];

    /// [`ALL`](NatType::ALL) then [`EXTRA`](NatType::EXTRA).
    pub fn every() -> impl Iterator<Item = NatType> {
        NatType::ALL.into_iter().chain(NatType::EXTRA)
    }

    /// The name used in output, by `--only` and by `nat-router.sh`.
    pub fn name(self) -> &'static str {
        match self {
            NatType::Public => "public",
            NatType::FullCone => "full-cone",
            NatType::AddressRestricted => "address-restricted",
            NatType::PortRestricted => "port-restricted",
            NatType::Symmetric => "symmetric",
            NatType::UdpBlocked => "udp-blocked",
            NatType::SymmetricSeq => "symmetric-seq",
            NatType::Ipv6Firewall => "ipv6-firewall",
            NatType::SameLan => "same-lan",
            NatType::SameLanHairpin => "same-lan-hairpin",
        }
    }

    /// The type named `name`.
    pub fn from_name(name: &str) -> Option<NatType> {
        NatType::every().find(|t| t.name() == name)
    }

    /// The matrix type whose IPv4 behaviour this one has (itself for the six).
    pub fn ipv4_like(self) -> NatType {
        match self {
            NatType::SymmetricSeq => NatType::Symmetric,
            NatType::Ipv6Firewall | NatType::SameLan | NatType::SameLanHairpin => {
                NatType::PortRestricted
            }
            t => t,
        }
    }

    /// RFC 4787 mapping and filtering as our discovery names them, over IPv4; `None` where
    /// discovery cannot work (`udp-blocked`: no STUN server is reachable).
    pub fn expected(self) -> Option<(&'static str, &'static str)> {
        Some(match self.ipv4_like() {
            NatType::Public | NatType::FullCone => ("EndpointIndependent", "EndpointIndependent"),
            NatType::AddressRestricted => ("EndpointIndependent", "AddressDependent"),
            NatType::PortRestricted => ("EndpointIndependent", "AddressAndPortDependent"),
            NatType::Symmetric => ("AddressAndPortDependent", "AddressAndPortDependent"),
            _ => return None,
        })
    }

    /// Whether two sides of these types are expected to connect directly (spec/05 §7):
    /// all but symmetric ↔ symmetric and every pair with a `udp-blocked` side (no UDP at
    /// all: QUIC cannot leave); port-restricted ↔ symmetric by port prediction (§5.5). The
    /// extra types count as their IPv4 behaviour.
    pub fn direct_expected(a: NatType, b: NatType) -> bool {
        NatType::direct_without_prediction(a, b) || NatType::needs_prediction(a, b)
    }

    /// Whether the pair's direct path comes from port prediction (spec/05 §5.5): a
    /// symmetric side facing a port-restricted cone. Its first message may go through a
    /// relay while the probes run; the session moves to the direct path they find.
    pub fn needs_prediction(a: NatType, b: NatType) -> bool {
        use NatType::*;
        matches!(
            (a.ipv4_like(), b.ipv4_like()),
            (PortRestricted, Symmetric) | (Symmetric, PortRestricted)
        )
    }

    /// Whether plain punching connects the pair directly.
    fn direct_without_prediction(a: NatType, b: NatType) -> bool {
        use NatType::*;
        !NatType::needs_prediction(a, b)
            && !matches!(
                (a.ipv4_like(), b.ipv4_like()),
                (Symmetric, Symmetric) | (UdpBlocked, _) | (_, UdpBlocked)
            )
    }
}

/// A host of the test bed.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its namespace.
    pub ns: String,
    /// Its NAT type.
    pub nat: NatType,
    /// Its router's namespace (none for `public`; sides a and b share one for the
    /// same-LAN types).
    pub router: Option<String>,
    /// Its address on the public network: its own, or its router's.
    pub public_ip: Ipv4Addr,
    /// Its own IPv4 address (the public one for `public`, else on its LAN).
    pub ip: Ipv4Addr,
    /// Its own global IPv6 address (`public` and `ipv6-firewall` hosts only).
    pub ip6: Option<Ipv6Addr>,
}

/// What is missing for the test bed to run here.
pub fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    let uid = Command::new("id").arg("-u").output().ok();
    if uid.is_none_or(|o| String::from_utf8_lossy(&o.stdout).trim() != "0") {
        missing.push("root (network namespaces and nftables need it)".to_string());
    }
    for tool in [
        "ip",
        "nft",
        "turnserver",
        "turnutils_natdiscovery",
        "turnutils_stunclient",
        "turnutils_uclient",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            missing.push(format!("`{tool}` (apt: iproute2, nftables, coturn)"));
        }
    }
    missing
}

/// The address coturn and the first bootstrap node listen on.
pub const SERVER_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The second address (RFC 5780's other address).
pub const SERVER_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// coturn's port.
pub const STUN_PORT: u16 = 3478;
/// The first bootstrap node's port on [`SERVER_A`] (P1 of its RFC 5780 server, which also
/// answers on [`SERVER_B`] at this port).
pub const BOOTSTRAP_PORT: u16 = 4000;
/// P2 of the first bootstrap node's RFC 5780 server, on both addresses.
pub const BOOTSTRAP_OTHER_PORT: u16 = 4001;
/// The second bootstrap node's port, on [`SERVER_B`].
pub const BOOTSTRAP_B_PORT: u16 = 4002;

/// The first bootstrap node's address: [`SERVER_A`], [`BOOTSTRAP_PORT`]; an RFC 5780
/// server (spec/05-nat.md §2.1).
pub fn rfc5780_bootstrap() -> SocketAddr {
    SocketAddr::from((SERVER_A, BOOTSTRAP_PORT))
}
/// How long the bed waits for a daemon's `ready` behind a `udp-blocked` router. With TURN
/// (the matrix gives it the bed's coturn) it goes over to TCP after 2 s and is ready a few
/// seconds later; without, it prints `ready` only after every UDP exchange of its start
/// timed out (103 s measured on the bed: `nat: null`, `rendezvous: 0`).
pub const UDP_BLOCKED_READY: Duration = Duration::from_secs(180);
/// The public IPv6 network's "core router" address (the public namespace routes between
/// the IPv6 LANs); the bridge is 2001:db8::/64 (documentation prefix, inside the bed only).
pub const CORE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// coturn's first address over IPv6.
pub const SERVER_A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// coturn's second address over IPv6.
pub const SERVER_B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 3);
/// The TURN long-term-credential user of the bed's coturn (RFC 8489 §9.2).
pub const TURN_USER: &str = "dna";
/// Its password.
pub const TURN_PASSWORD: &str = "dna-test-turn-password";
/// coturn's realm.
pub const TURN_REALM: &str = "dna.test";
/// coturn's relay ports (both ends included): 49 relayed addresses at most.
pub const TURN_RELAY_PORTS: (u16, u16) = (49152, 49200);

/// The TURN server's addresses: coturn on UDP and TCP, [`STUN_PORT`] on [`SERVER_A`] and
/// [`SERVER_B`] (the `udp-blocked` routers let TCP through to exactly these).
pub fn turn_servers() -> [SocketAddr; 2] {
    [
        SocketAddr::from((SERVER_A, STUN_PORT)),
        SocketAddr::from((SERVER_B, STUN_PORT)),
    ]
}

/// The built test bed. Dropping it tears everything down.
pub struct TestBed {
    prefix: String,
    namespaces: Vec<String>,
    hosts: Vec<(NatType, char, Host)>,
    dir: PathBuf,
    dna: PathBuf,
    coturn: Option<std::process::Child>,
    bootstraps: Vec<DnaProcess>,
    /// `ADDR@FP` of each bootstrap node.
    pub bootstrap_args: Vec<String>,
    /// Extra `dna daemon` arguments for both daemons of every pair (e.g.
    /// [`TestBed::turn_args`]); empty by default.
    pub pair_args: Vec<String>,
    /// Extra arguments for side a's daemon only, then side b's (after `pair_args`).
    pub side_args: [Vec<String>; 2],
    next_id: AtomicU32,
}

/// Setting up the test bed failed.
#[derive(Debug, thiserror::Error)]
pub enum TestBedError {
    /// A command failed.
    #[error("`{cmd}` failed: {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A process did not become ready.
    #[error("{0}")]
    NotReady(String),
    /// I/O around the processes.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn run(cmd: &str, args: &[&str]) -> Result<String, TestBedError> {
    let out = Command::new(cmd).args(args).output()?;
    if !out.status.success() {
        return Err(TestBedError::Command {
            cmd: format!("{cmd} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn router_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("netns/nat-router.sh")
}

fn ip(args: &[&str]) -> Result<String, TestBedError> {
    run("ip", args)
}

fn sysctl(ns: &str, setting: &str) -> Result<String, TestBedError> {
    run("ip", &["netns", "exec", ns, "sysctl", "-qw", setting])
}

/// The public IPv4 address of host or router `i`.
fn wan_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + i)
}

/// The public IPv6 address of host or router `i` (on the bridge's 2001:db8::/64).
fn wan_ip6(i: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100 + u16::from(i))
}

/// Address `last` in router `n`'s IPv6 LAN prefix 2001:db8:0:n::/64.
fn lan_ip6(n: u8, last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, u16::from(n), 0, 0, 0, last)
}

impl TestBed {
    /// Builds the test bed and starts coturn and the bootstrap nodes. `dna`: the `dna`
    /// binary to run.
    pub fn build(dna: &Path) -> Result<TestBed, TestBedError> {
        TestBed::build_with(dna, &[])
    }

    /// [`build`](TestBed::build), with extra arguments for the bootstrap nodes.
    pub fn build_with(dna: &Path, bootstrap_extra: &[String]) -> Result<TestBed, TestBedError> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "dnatb{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir)?;
        let mut tb = TestBed {
            prefix: prefix.clone(),
            namespaces: Vec::new(),
            hosts: Vec::new(),
            dir,
            dna: dna.to_path_buf(),
            coturn: None,
            bootstraps: Vec::new(),
            bootstrap_args: Vec::new(),
            pair_args: Vec::new(),
            side_args: Default::default(),
            next_id: AtomicU32::new(0),
        };
        tb.build_networks()?;
        tb.start_servers(bootstrap_extra)?;
        Ok(tb)
    }

    fn add_ns(&mut self, name: &str) -> Result<String, TestBedError> {
        let ns = format!("{}{}", self.prefix, name);
        run("ip", &["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn build_networks(&mut self) -> Result<(), TestBedError> {
        let public = self.add_ns("pub")?;
        ip(&["-n", &public, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &public, "link", "set", "br0", "up"])?;
        for a in [SERVER_A, SERVER_B] {
            ip(&[
                "-n",
                &public,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                "br0",
            ])?;
        }
        for a in [CORE6, SERVER_A6, SERVER_B6] {
            let a = format!("{a}/64");
            ip(&["-n", &public, "addr", "add", &a, "dev", "br0", "nodad"])?;
        }
        // The public namespace routes IPv6 between the firewalled LANs (the "Internet").
        sysctl(&public, "net.ipv6.conf.all.forwarding=1")?;
        let mut i = 0u8;
        for nat in NatType::every() {
            // The same-LAN types put both sides behind the router made for side a.
            let mut shared: Option<(String, Ipv4Addr, u8)> = None;
            for side in ['a', 'b'] {
                i += 1;
                let host = self.add_ns(&format!("h{i}"))?;
                if nat == NatType::Public {
                    let wan_ip = wan_ip(i);
                    self.wan_link(&public, i, &host, "eth0", wan_ip)?;
                    let ip6 = wan_ip6(i);
                    let cidr6 = format!("{ip6}/64");
                    ip(&["-n", &host, "addr", "add", &cidr6, "dev", "eth0", "nodad"])?;
                    self.hosts.push((
                        nat,
                        side,
                        Host {
                            ns: host,
                            nat,
                            router: None,
                            public_ip: wan_ip,
                            ip: wan_ip,
                            ip6: Some(ip6),
                        },
                    ));
                    continue;
                }
                let same_lan = matches!(nat, NatType::SameLan | NatType::SameLanHairpin);
                let (router, public_ip, n) = match shared.clone() {
                    Some(r) if same_lan => r,
                    _ => {
                        let r = self.add_router(&public, i, nat)?;
                        shared = Some(r.clone());
                        r
                    }
                };
                let octet = if same_lan && side == 'b' { 3 } else { 2 };
                let host_ip = Ipv4Addr::new(10, n, 0, octet);
                let router_if = if same_lan {
                    format!("p{side}")
                } else {
                    "lan".to_string()
                };
                ip(&[
                    "link", "add", &router_if, "netns", &router, "type", "veth", "peer", "name",
                    "eth0", "netns", &host,
                ])?;
                if same_lan {
                    ip(&["-n", &router, "link", "set", &router_if, "master", "lan"])?;
                } else {
                    let gw = format!("10.{n}.0.1/24");
                    ip(&["-n", &router, "addr", "add", &gw, "dev", "lan"])?;
                }
                ip(&["-n", &router, "link", "set", &router_if, "up"])?;
                ip(&["-n", &host, "link", "set", "eth0", "up"])?;
                let cidr = format!("{host_ip}/24");
                ip(&["-n", &host, "addr", "add", &cidr, "dev", "eth0"])?;
                let gw = format!("10.{n}.0.1");
                ip(&["-n", &host, "route", "add", "default", "via", &gw])?;
                let ip6 = if nat == NatType::Ipv6Firewall {
                    let ip6 = lan_ip6(n, 2);
                    if side == 'a' || !same_lan {
                        let gw6 = format!("{}/64", lan_ip6(n, 1));
                        ip(&["-n", &router, "addr", "add", &gw6, "dev", "lan", "nodad"])?;
                    }
                    let cidr6 = format!("{ip6}/64");
                    ip(&["-n", &host, "addr", "add", &cidr6, "dev", "eth0", "nodad"])?;
                    let gw6 = lan_ip6(n, 1).to_string();
                    ip(&["-n", &host, "-6", "route", "add", "default", "via", &gw6])?;
                    Some(ip6)
                } else {
                    None
                };
                self.hosts.push((
                    nat,
                    side,
                    Host {
                        ns: host,
                        nat,
                        router: Some(router),
                        public_ip,
                        ip: host_ip,
                        ip6,
                    },
                ));
            }
        }
        Ok(())
    }

    /// A veth from the public bridge (port `v{i}`) to `far_if` in namespace `far`, with
    /// the public address `wan_ip`.
    fn wan_link(
        &self,
        public: &str,
        i: u8,
        far: &str,
        far_if: &str,
        wan_ip: Ipv4Addr,
    ) -> Result<(), TestBedError> {
        let port = format!("v{i}");
        ip(&[
            "link", "add", &port, "netns", public, "type", "veth", "peer", "name", far_if, "netns",
            far,
        ])?;
        ip(&["-n", public, "link", "set", &port, "master", "br0", "up"])?;
        ip(&["-n", far, "link", "set", far_if, "up"])?;
        let cidr = format!("{wan_ip}/24");
        ip(&["-n", far, "addr", "add", &cidr, "dev", far_if])?;
        Ok(())
    }

    /// Router `r{i}` of type `nat`: its WAN on the public bridge at 198.18.0.(10+i), LAN
    /// 10.i.0.0/24 (a bridge `lan` for the same-LAN types, else the host's veth `lan`,
    /// made by the caller), its nftables ruleset. Returns (namespace, WAN address, i).
    fn add_router(
        &mut self,
        public: &str,
        i: u8,
        nat: NatType,
    ) -> Result<(String, Ipv4Addr, u8), TestBedError> {
        let router = self.add_ns(&format!("r{i}"))?;
        let wan = wan_ip(i);
        self.wan_link(public, i, &router, "wan", wan)?;
        sysctl(&router, "net.ipv4.ip_forward=1")?;
        if matches!(nat, NatType::SameLan | NatType::SameLanHairpin) {
            ip(&["-n", &router, "link", "add", "lan", "type", "bridge"])?;
            ip(&["-n", &router, "link", "set", "lan", "up"])?;
            let gw = format!("10.{i}.0.1/24");
            ip(&["-n", &router, "addr", "add", &gw, "dev", "lan"])?;
        }
        if nat == NatType::Ipv6Firewall {
            let wan6 = wan_ip6(i);
            let cidr6 = format!("{wan6}/64");
            ip(&["-n", &router, "addr", "add", &cidr6, "dev", "wan", "nodad"])?;
            sysctl(&router, "net.ipv6.conf.all.forwarding=1")?;
            let core = CORE6.to_string();
            ip(&["-n", &router, "-6", "route", "add", "default", "via", &core])?;
            let prefix = format!("{}/64", lan_ip6(i, 0));
            let via = wan6.to_string();
            ip(&["-n", public, "-6", "route", "add", &prefix, "via", &via])?;
        }
        let script = router_script();
        let (wan_s, lan_net) = (wan.to_string(), format!("10.{i}.0.0/24"));
        let turn: Vec<String> = turn_servers().iter().map(ToString::to_string).collect();
        let mut args = vec![
            script.to_string_lossy().into_owned(),
            nat.name().to_string(),
            router.clone(),
            "wan".into(),
            wan_s,
            lan_net,
        ];
        args.extend(turn);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("sh", &args)?;
        Ok((router, wan, i))
    }

    /// The public namespace (the bridge, coturn, the bootstrap nodes).
    pub fn public_ns(&self) -> &str {
        &self.namespaces[0]
    }

    /// Side `side` (`'a'` or `'b'`) of the same-LAN router that hairpins (`hairpin`) or
    /// does not: both sides of one variant share one router and LAN (10.i.0.2 and .3).
    pub fn lan_host(&self, hairpin: bool, side: char) -> &Host {
        let nat = if hairpin {
            NatType::SameLanHairpin
        } else {
            NatType::SameLan
        };
        self.host(nat, side)
    }

    /// The `dna daemon` arguments for the bed's TURN server (for when the daemon takes
    /// them): `--turn A:3478 --turn B:3478 --turn-user U --turn-password P`.
    pub fn turn_args(&self) -> Vec<String> {
        self.turn_args_for(turn_servers().len())
    }

    /// [`turn_args`](TestBed::turn_args) with the first `servers` TURN servers only (the
    /// daemon takes one `--turn` today).
    pub fn turn_args_for(&self, servers: usize) -> Vec<String> {
        let mut v = Vec::new();
        for s in turn_servers().into_iter().take(servers) {
            v.push("--turn".to_string());
            v.push(s.to_string());
        }
        v.extend(["--turn-user".into(), TURN_USER.into()]);
        v.extend(["--turn-password".into(), TURN_PASSWORD.into()]);
        v
    }

    /// The packets counted so far by the named nftables counter `name` of `table` (e.g.
    /// `ip dnanat`, `inet dnafw6`) in namespace `ns` (see `nat-router.sh`).
    pub fn nft_counter(&self, ns: &str, table: &str, name: &str) -> Result<u64, TestBedError> {
        let mut args = vec!["netns", "exec", ns, "nft", "list", "counter"];
        args.extend(table.split_whitespace());
        args.push(name);
        let out = run("ip", &args)?;
        out.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| TestBedError::NotReady(format!("counter {table} {name}: {out}")))
    }

    /// Drops, in `host`'s router, every packet between the host's LAN and `other` (both
    /// ways), counted: a table `dnatest_block` of its own, so [`Self::unblock`] lifts it
    /// without touching the router's NAT rules.
    pub fn block(&self, host: &Host, other: Ipv4Addr) -> Result<(), TestBedError> {
        let ns = host
            .router
            .as_deref()
            .ok_or_else(|| TestBedError::NotReady("a public host has no router".into()))?;
        let o = other.to_string();
        let nft = |args: &[&str]| {
            let mut a = vec!["netns", "exec", ns, "nft"];
            a.extend_from_slice(args);
            run("ip", &a)
        };
        nft(&["add", "table", "inet", "dnatest_block"])?;
        nft(&["add", "counter", "inet", "dnatest_block", "blocked"])?;
        nft(&[
            "add",
            "chain",
            "inet",
            "dnatest_block",
            "blocking",
            "{",
            "type",
            "filter",
            "hook",
            "forward",
            "priority",
            "-10",
            ";",
            "}",
        ])?;
        for dir in ["daddr", "saddr"] {
            nft(&[
                "add",
                "rule",
                "inet",
                "dnatest_block",
                "blocking",
                "ip",
                dir,
                &o,
                "counter",
                "name",
                "blocked",
                "drop",
            ])?;
        }
        Ok(())
    }

    /// Lifts [`Self::block`]; returns how many packets it dropped.
    pub fn unblock(&self, host: &Host) -> Result<u64, TestBedError> {
        let ns = host
            .router
            .as_deref()
            .ok_or_else(|| TestBedError::NotReady("a public host has no router".into()))?;
        let dropped = self.nft_counter(ns, "inet dnatest_block", "blocked")?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "nft",
                "delete",
                "table",
                "inet",
                "dnatest_block",
            ],
        )?;
        Ok(dropped)
    }

    /// A [`UdpProbe`] in namespace `ns`, its socket bound to `bind`.
    pub fn udp_probe(&self, ns: &str, bind: SocketAddr) -> Result<UdpProbe, TestBedError> {
        UdpProbe::start(ns, bind)
    }

    /// An [`EchoServer`] in the public namespace on each of `addrs`.
    pub fn public_echo(&self, addrs: &[SocketAddr]) -> Result<EchoServer, TestBedError> {
        EchoServer::start(self.public_ns(), addrs)
    }

    fn start_servers(&mut self, bootstrap_extra: &[String]) -> Result<(), TestBedError> {
        let public = self.public_ns().to_string();
        let log = std::fs::File::create(self.dir.join("coturn.log"))?;
        let (min_port, max_port) = (
            TURN_RELAY_PORTS.0.to_string(),
            TURN_RELAY_PORTS.1.to_string(),
        );
        // Long-term credentials for Allocate; Binding (RFC 5780 discovery) stays
        // unauthenticated. UDP and TCP (coturn's default) on every listening address.
        let coturn = Command::new("ip")
            .args([
                "netns",
                "exec",
                &public,
                "turnserver",
                "-n",
                "--no-tls",
                "--no-dtls",
            ])
            .args(["--no-cli", "--lt-cred-mech", "--realm", TURN_REALM])
            .args(["--user", &format!("{TURN_USER}:{TURN_PASSWORD}")])
            .args(["--listening-ip", &SERVER_A.to_string()])
            .args(["--listening-ip", &SERVER_B.to_string()])
            .args(["--listening-ip", &SERVER_A6.to_string()])
            .args(["--listening-ip", &SERVER_B6.to_string()])
            .args(["--listening-port", &STUN_PORT.to_string()])
            .args(["--min-port", &min_port, "--max-port", &max_port])
            .args(["--pidfile", &self.dir.join("coturn.pid").to_string_lossy()])
            .args(["--log-file", "stdout", "--simple-log"])
            // With `DNA_TEST_TAIL` (debugging a failed pair) coturn says why sessions end.
            .args(std::env::var_os("DNA_TEST_TAIL").map(|_| "--verbose"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.coturn = Some(coturn);
        // coturn is ready when both IPv4 addresses' ports are bound, UDP and TCP (listen).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let want = format!(":{:04X}", STUN_PORT);
            let udp = run("ip", &["netns", "exec", &public, "cat", "/proc/net/udp"])?;
            let tcp = run("ip", &["netns", "exec", &public, "cat", "/proc/net/tcp"])?;
            let tcp_listening = tcp
                .lines()
                .filter(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|a| a.ends_with(&want))
                })
                .filter(|l| l.split_whitespace().nth(3) == Some("0A"))
                .count();
            if udp.lines().filter(|l| l.contains(&want)).count() >= 2 && tcp_listening >= 2 {
                break;
            }
            if Instant::now() > deadline {
                return Err(TestBedError::NotReady("coturn did not bind".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // One bootstrap node with both addresses is what a deployment would run: the first
        // is also the RFC 5780 server, on SERVER_A and SERVER_B, ports 4000 and 4001.
        let nodes = [
            (SERVER_A, BOOTSTRAP_PORT, true),
            (SERVER_B, BOOTSTRAP_B_PORT, false),
        ];
        for (i, (ip, port, rfc5780)) in nodes.into_iter().enumerate() {
            let listen = format!("{ip}:{port}");
            let mut args = vec!["--listen".to_string(), listen.clone()];
            if rfc5780 {
                args.extend(["--other-address".to_string(), SERVER_B.to_string()]);
                args.extend(["--other-port".to_string(), BOOTSTRAP_OTHER_PORT.to_string()]);
            }
            for b in &self.bootstrap_args {
                args.push("--bootstrap".into());
                args.push(b.clone());
            }
            args.extend_from_slice(bootstrap_extra);
            let p = self.spawn(&public, &format!("boot{i}"), "bootstrap", &args)?;
            let ready = p
                .wait_event("ready", Duration::from_secs(30))
                .ok_or_else(|| {
                    TestBedError::NotReady(format!("bootstrap {listen}: no ready event"))
                })?;
            let fp = ready.get("fp").and_then(|v| v.as_str()).unwrap_or_default();
            self.bootstrap_args.push(format!("{listen}@{fp}"));
            self.bootstraps.push(p);
        }
        Ok(())
    }

    fn spawn(
        &self,
        ns: &str,
        name: &str,
        role: &str,
        extra: &[String],
    ) -> Result<DnaProcess, TestBedError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let data = self.dir.join(format!("{name}-{id}"));
        DnaProcess::spawn(&self.dna, Some(ns), role, &data, extra).map_err(TestBedError::Io)
    }

    /// Writes `text` to a file in the test bed's scratch directory; returns its path.
    pub fn write_file(&self, name: &str, text: &str) -> std::io::Result<PathBuf> {
        let p = self.dir.join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    }

    /// Kills the bootstrap node listening at `addr` (`IP:PORT`, as in
    /// [`bootstrap_args`](TestBed::bootstrap_args)) at once, as a crash would; `false` if
    /// none listens there.
    pub fn kill_bootstrap(&mut self, addr: &str) -> bool {
        let Some(i) = self
            .bootstrap_args
            .iter()
            .position(|b| b.split('@').next() == Some(addr))
        else {
            return false;
        };
        match self.bootstraps.get_mut(i) {
            Some(p) => {
                p.kill();
                true
            }
            None => false,
        }
    }

    /// The host of type `nat` on side `side` (`'a'` or `'b'`).
    pub fn host(&self, nat: NatType, side: char) -> &Host {
        &self
            .hosts
            .iter()
            .find(|(n, s, _)| *n == nat && *s == side)
            .expect("every type has sides a and b")
            .2
    }

    /// Starts `dna daemon` on `host`, joined to the bootstrap nodes, discovering its NAT
    /// with coturn; returns once it printed `ready`.
    pub fn daemon(&self, host: &Host) -> Result<DnaProcess, TestBedError> {
        self.daemon_with(host, &[])
    }

    /// [`daemon`](TestBed::daemon) with extra command-line arguments.
    pub fn daemon_with(&self, host: &Host, extra: &[String]) -> Result<DnaProcess, TestBedError> {
        let p = self.start_daemon(host, extra)?;
        self.wait_ready(&p, host)?;
        Ok(p)
    }

    /// Starts `dna daemon` on `host` like [`daemon_with`](TestBed::daemon_with) but returns
    /// at once; [`wait_ready`](TestBed::wait_ready) waits for it.
    pub fn start_daemon(&self, host: &Host, extra: &[String]) -> Result<DnaProcess, TestBedError> {
        self.start_daemon_discovering_with(host, SocketAddr::from((SERVER_A, STUN_PORT)), extra)
    }

    /// [`start_daemon`](TestBed::start_daemon) with `stun` as its only discovery server
    /// (coturn, or [`rfc5780_bootstrap`]).
    pub fn start_daemon_discovering_with(
        &self,
        host: &Host,
        stun: SocketAddr,
        extra: &[String],
    ) -> Result<DnaProcess, TestBedError> {
        let mut args = vec!["--stun".to_string(), stun.to_string()];
        // The bed's user allows relays for every pair (a daemon's default is `ask`: seed
        // 003's consent), unless the test sets its own policy.
        if !extra.iter().any(|a| a == "--relay") {
            args.extend(["--relay".to_string(), "auto".to_string()]);
        }
        for b in &self.bootstrap_args {
            args.push("--bootstrap".into());
            args.push(b.clone());
        }
        args.extend_from_slice(extra);
        self.spawn(&host.ns, host.nat.name(), "daemon", &args)
    }

    /// Waits for the `ready` event of a daemon started on `host`: up to 60 s, or
    /// [`UDP_BLOCKED_READY`] behind a `udp-blocked` router.
    pub fn wait_ready(&self, p: &DnaProcess, host: &Host) -> Result<(), TestBedError> {
        let within = if host.nat == NatType::UdpBlocked {
            UDP_BLOCKED_READY
        } else {
            Duration::from_secs(60)
        };
        if p.wait_event("ready", within).is_none() {
            return Err(TestBedError::NotReady(format!(
                "daemon on {} ({}): no ready event in {within:?}; stderr: {}",
                host.ns,
                host.nat.name(),
                p.stderr_tail()
            )));
        }
        Ok(())
    }

    /// Gives `host`'s router a new public address (an ISP renumbering the uplink): the old
    /// address is removed, which also drops the router's masquerade mappings, and the new
    /// one added. Only for routers whose rules do not name their address (port-restricted,
    /// symmetric, udp-blocked, same-lan, ipv6-firewall's IPv4).
    pub fn renumber_router(&self, host: &Host, new_ip: Ipv4Addr) -> Result<(), TestBedError> {
        let router = host
            .router
            .as_deref()
            .ok_or_else(|| TestBedError::NotReady("a public host has no router".into()))?;
        let new = format!("{new_ip}/24");
        let old = format!("{}/24", host.public_ip);
        // Old first: deleting a primary address also deletes the secondaries of its subnet.
        run("ip", &["-n", router, "addr", "del", &old, "dev", "wan"])?;
        run("ip", &["-n", router, "addr", "add", &new, "dev", "wan"])?;
        Ok(())
    }

    /// Runs `turnutils_natdiscovery -m -f` against coturn from `host`; returns its mapping
    /// and filtering verdicts in our names.
    pub fn turnutils_discovery(&self, host: &Host) -> Result<(String, String), TestBedError> {
        self.turnutils_discovery_at(host, SocketAddr::from((SERVER_A, STUN_PORT)))
    }

    /// [`turnutils_discovery`](TestBed::turnutils_discovery) against `server` (coturn, or
    /// [`rfc5780_bootstrap`]).
    pub fn turnutils_discovery_at(
        &self,
        host: &Host,
        server: SocketAddr,
    ) -> Result<(String, String), TestBedError> {
        let out = run(
            "ip",
            &[
                "netns",
                "exec",
                &host.ns,
                "turnutils_natdiscovery",
                "-m",
                "-f",
                "-p",
                &server.port().to_string(),
                &server.ip().to_string(),
            ],
        )?;
        let verdict = |what: &str| {
            out.lines()
                .find(|l| l.contains(what) && l.contains("NAT with"))
                .map(|l| {
                    if l.contains("Endpoint Independent") {
                        "EndpointIndependent"
                    } else if l.contains("Address and Port Dependent") {
                        "AddressAndPortDependent"
                    } else if l.contains("Address Dependent") {
                        "AddressDependent"
                    } else {
                        "unknown"
                    }
                })
                .or_else(|| out.contains("No NAT").then_some("EndpointIndependent"))
                .unwrap_or("unknown")
                .to_string()
        };
        Ok((verdict("Mapping"), verdict("Filtering")))
    }
}

impl TestBed {
    /// coturn's `turnutils_stunclient` (a plain RFC 8489 Binding request) from `host`
    /// against `server` (a bootstrap node): the reflexive address it prints, or `None` if it
    /// got no answer within 10 s.
    pub fn turnutils_stunclient(
        &self,
        host: &Host,
        server: std::net::SocketAddr,
    ) -> Result<Option<std::net::SocketAddr>, TestBedError> {
        let port = server.port().to_string();
        let ip = server.ip().to_string();
        let out = Command::new("timeout")
            .args([
                "10",
                "ip",
                "netns",
                "exec",
                &host.ns,
                "turnutils_stunclient",
            ])
            .args(["-p", &port, &ip])
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(stdout
            .lines()
            .find_map(|l| l.split("reflexive addr:").nth(1))
            .and_then(|a| a.trim().parse().ok()))
    }
}

/// What coturn's `turnutils_uclient` reported (see [`TestBed::turnutils_uclient`]).
#[derive(Debug, Clone, Default)]
pub struct UclientReport {
    /// The relayed addresses coturn allocated.
    pub relays: Vec<SocketAddr>,
    /// Messages sent and received through the relays.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// It said "Cannot complete Allocation".
    pub allocation_failed: bool,
}

impl TestBed {
    /// coturn's `turnutils_uclient` from `host` against [`SERVER_A`]: two clients allocate
    /// with [`TURN_USER`] and `password` (over TCP if `tcp`) and send each other 5 messages
    /// through their relayed addresses (`-y`). Bounded by 30 s.
    pub fn turnutils_uclient(
        &self,
        host: &Host,
        tcp: bool,
        password: &str,
    ) -> Result<UclientReport, TestBedError> {
        let mut cmd = Command::new("timeout");
        cmd.args(["30", "ip", "netns", "exec", &host.ns, "turnutils_uclient"]);
        if tcp {
            cmd.arg("-t");
        }
        let out = cmd
            .args([
                "-v", "-y", "-c", "-n", "5", "-m", "1", "-u", TURN_USER, "-w", password,
            ])
            .arg(SERVER_A.to_string())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let mut r = UclientReport::default();
        let count = |l: &str, key: &str| {
            l.split(key)
                .nth(1)
                .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        for l in text.lines() {
            if let Some(a) = l.split("Received relay addr: ").nth(1) {
                r.relays.extend(a.trim().parse::<SocketAddr>().ok());
            }
            if l.contains("start_mclient: tot_send_msgs=") {
                r.sent = count(l, "tot_send_msgs=").unwrap_or(0);
                r.received = count(l, "tot_recv_msgs=").unwrap_or(0);
            }
            r.allocation_failed |= l.contains("Cannot complete Allocation");
        }
        Ok(r)
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        self.bootstraps.clear();
        if let Some(mut c) = self.coturn.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            // Anything still running in it (coturn's children, a stray daemon).
            if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
                for pid in pids.split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = run("ip", &["netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One pair's outcome, in the stable form of `netsim nat-matrix --json`.
#[derive(Debug, Clone, PartialEq)]
pub struct PairResult {
    /// Side a's type.
    pub a: NatType,
    /// Side b's type.
    pub b: NatType,
    /// `direct`, `turn` (through the peer's TURN allocation), `relay`, `relay-needed` or
    /// `failed`.
    pub path: String,
    /// The candidate type the direct path uses (`srflx`, `prflx`, `host`), if direct.
    pub via: String,
    /// The path a's session to b is on once the message arrived (`dna status`): where the
    /// first message went may not be where the session stays.
    pub ended: String,
    /// Time from `send` to a contact never seen before until the message arrived, ms.
    pub ms: Option<f64>,
    /// What went wrong, for `failed`.
    pub detail: String,
    /// Port-prediction probes both daemons sent (`dna status` → `prediction.probes`).
    pub probes: u64,
    /// Time from `send` until a's session was on a direct path, ms: `ms` when the first
    /// message went direct; when it went through a relay while port prediction was still
    /// probing, when `dna status` first showed the session moved (polled every 50 ms for
    /// up to 5 s).
    pub direct_ms: Option<f64>,
}

impl PairResult {
    /// The stable JSON line: `{"a","b","path","ms"}` (plus `via`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "a": self.a.name(), "b": self.b.name(), "path": self.path,
            "ms": self.ms.map(|m| (m * 10.0).round() / 10.0), "via": self.via,
            "ended": self.ended,
        })
    }
}

/// Every unordered pair of the matrix types ([`NatType::ALL`]), `a` ≤ `b` (21).
pub fn pairs() -> Vec<(NatType, NatType)> {
    let mut v = Vec::new();
    for (i, a) in NatType::ALL.iter().enumerate() {
        for b in &NatType::ALL[i..] {
            v.push((*a, *b));
        }
    }
    v
}

impl TestBed {
    /// Runs `pairs` with [`run_pair`](TestBed::run_pair): those with a `udp-blocked` side
    /// each in a thread of their own, started first (their daemons take
    /// [`UDP_BLOCKED_READY`]-bounded minutes to start and are idle meanwhile), the others
    /// one after another. `each` sees every result as it comes; the results return in the
    /// order of `pairs`.
    pub fn run_pairs(
        &self,
        pairs: &[(NatType, NatType)],
        each: impl Fn(&PairResult) + Sync,
    ) -> Vec<PairResult> {
        let slow =
            |(a, b): (NatType, NatType)| a == NatType::UdpBlocked || b == NatType::UdpBlocked;
        let mut out: Vec<Option<PairResult>> = vec![None; pairs.len()];
        std::thread::scope(|scope| {
            let each = &each;
            let threads: Vec<_> = pairs
                .iter()
                .enumerate()
                .filter(|(_, p)| slow(**p))
                .map(|(i, &(a, b))| {
                    let t = scope.spawn(move || {
                        let r = self.run_pair(a, b);
                        each(&r);
                        r
                    });
                    (i, t)
                })
                .collect();
            for (i, &(a, b)) in pairs.iter().enumerate().filter(|(_, p)| !slow(**p)) {
                let r = self.run_pair(a, b);
                each(&r);
                out[i] = Some(r);
            }
            for (i, t) in threads {
                out[i] = t.join().ok();
            }
        });
        out.into_iter()
            .zip(pairs)
            .map(|(r, &(a, b))| {
                r.unwrap_or_else(|| PairResult {
                    a,
                    b,
                    path: "failed".into(),
                    via: String::new(),
                    ended: String::new(),
                    ms: None,
                    detail: "the pair's thread panicked".into(),
                    probes: 0,
                    direct_ms: None,
                })
            })
            .collect()
    }

    /// With `DNA_TEST_TAIL` set (debugging a failed pair): the bootstrap nodes' stderr
    /// tails too.
    fn bootstrap_tails(&self) -> String {
        if std::env::var_os("DNA_TEST_TAIL").is_none() {
            return String::new();
        }
        let coturn = std::fs::read_to_string(self.dir.join("coturn.log")).unwrap_or_default();
        let lines: Vec<&str> = coturn.lines().collect();
        let coturn = lines[lines.len().saturating_sub(40)..].join(" | ");
        self.bootstraps
            .iter()
            .map(|b| format!("; bootstrap: {}", b.stderr_tail()))
            .chain([format!("; coturn: {coturn}")])
            .collect()
    }

    /// A pair's daemon arguments on `host`: [`TestBed::pair_args`], and behind
    /// `udp-blocked` the first TURN server (the only way out: TURN over TCP) unless they
    /// name one already.
    fn args_for(&self, host: &Host, side: usize) -> Vec<String> {
        let mut v = self.pair_args.clone();
        v.extend(self.side_args[side].iter().cloned());
        if host.nat == NatType::UdpBlocked && !v.iter().any(|a| a == "--turn") {
            v.extend(self.turn_args_for(1));
        }
        // A host with IPv6 runs a dual-stack socket: its IPv6 address is a candidate.
        if host.nat == NatType::Ipv6Firewall && !v.iter().any(|a| a == "--listen") {
            v.extend(["--listen".to_string(), "[::]:0".to_string()]);
        }
        v
    }

    /// Port-prediction probes `p` sent (`dna status` → `prediction.probes`).
    fn probes(p: &DnaProcess) -> u64 {
        p.control(&serde_json::json!({"cmd": "status"}))
            .ok()
            .and_then(|st| st["prediction"]["probes"].as_u64())
            .unwrap_or(0)
    }

    /// The path of `p`'s session to `fp` as `dna status` shows it (empty if none).
    fn path_now(p: &DnaProcess, fp: &str) -> String {
        let Ok(st) = p.control(&serde_json::json!({"cmd": "status"})) else {
            return String::new();
        };
        st["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["fingerprint"].as_str() == Some(fp))
            .and_then(|x| x["path"].as_str())
            .unwrap_or_default()
            .to_string()
    }

    /// Runs one pair: fresh daemons on side a (type `a`) and side b (type `b`), then a sends
    /// a message to b, which a has never seen: DHT lookup, direct dial or CONNECT and hole
    /// punching, QUIC, end-to-end key exchange, delivery.
    pub fn run_pair(&self, a: NatType, b: NatType) -> PairResult {
        let mut procs = Vec::with_capacity(2);
        let r = self.run_pair_with(a, b, &mut procs);
        // Both stop together (SIGTERM: they tell their DHT peers they are gone); dropping
        // waits for each.
        for p in &mut procs {
            p.terminate();
        }
        r
    }

    fn run_pair_with(&self, a: NatType, b: NatType, procs: &mut Vec<DnaProcess>) -> PairResult {
        let mut r = PairResult {
            a,
            b,
            path: "failed".into(),
            via: String::new(),
            ended: String::new(),
            ms: None,
            detail: String::new(),
            probes: 0,
            direct_ms: None,
        };
        // Both start at once; a sends once both are ready (b has published its presence).
        let (ha, hb) = (self.host(a, 'a'), self.host(b, 'b'));
        let (xa, xb) = (self.args_for(ha, 0), self.args_for(hb, 1));
        match (self.start_daemon(ha, &xa), self.start_daemon(hb, &xb)) {
            (Ok(x), Ok(y)) => procs.extend([x, y]),
            (Err(e), _) | (_, Err(e)) => {
                r.detail = e.to_string();
                return r;
            }
        };
        let (pa, pb) = (&procs[0], &procs[1]);
        if let Err(e) = self
            .wait_ready(pa, ha)
            .and_then(|()| self.wait_ready(pb, hb))
        {
            r.detail = e.to_string();
            return r;
        }
        let fp_b = pb.fingerprint().unwrap_or_default();
        let text = format!("hello from {} to {}", a.name(), b.name());
        let start = Instant::now();
        let reply = match pa.control(&serde_json::json!({"cmd": "send", "to": fp_b, "text": text}))
        {
            Ok(v) => v,
            Err(e) => {
                r.detail = format!("control: {e}");
                return r;
            }
        };
        r.path = reply
            .get("path")
            .and_then(|v| v.as_str())
            .unwrap_or("failed")
            .to_string();
        r.via = reply
            .get("via")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        if !matches!(r.path.as_str(), "direct" | "turn" | "relay") {
            r.detail = format!(
                "{reply}; b ready: {}; b: {}{}",
                pb.wait_event("ready", Duration::ZERO).unwrap_or_default(),
                pb.stderr_tail(),
                self.bootstrap_tails()
            );
            return r;
        }
        let deadline = Duration::from_secs(30);
        match pb.wait_for(deadline, |e| {
            e.get("event").and_then(|v| v.as_str()) == Some("message")
                && e.get("text").and_then(|v| v.as_str()) == Some(text.as_str())
        }) {
            Some(ev) => {
                r.ms = Some((ev.at - start).as_secs_f64() * 1e3);
                r.ended = Self::path_now(pa, &fp_b);
                r.probes = Self::probes(pa) + Self::probes(pb);
                if r.path == "direct" {
                    r.direct_ms = r.ms;
                } else if r.probes > 0 {
                    // The relay carries the session while prediction still probes: the
                    // session moves when it finds the path (spec/05 §5.5).
                    let until = Instant::now() + Duration::from_secs(5);
                    while r.ended != "direct" && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(50));
                        r.ended = Self::path_now(pa, &fp_b);
                    }
                    if r.ended == "direct" {
                        r.direct_ms = Some((Instant::now() - start).as_secs_f64() * 1e3);
                    }
                    r.probes = Self::probes(pa) + Self::probes(pb);
                }
                if std::env::var_os("DNA_TEST_TAIL").is_some() {
                    // Debugging: what both sides logged, also for a pair that delivered.
                    std::thread::sleep(Duration::from_millis(300));
                    r.detail = format!("a: {}; b: {}", pa.stderr_tail(), pb.stderr_tail());
                }
            }
            None => {
                r.path = "failed".into();
                r.detail = format!(
                    "no delivery in {deadline:?}; a: {}; b: {}{}",
                    pa.stderr_tail(),
                    pb.stderr_tail(),
                    self.bootstrap_tails()
                );
            }
        }
        r
    }
}

//! The NAT test bed (spec/05-nat.md §7): real kernel NATs in network namespaces, real `dna`
//! processes, a real coturn.
//!
//! [`TestBed::build`] creates, under names unique to this process, a "public" namespace
//! holding a bridge (198.18.0.0/24, the RFC 2544 benchmarking range), coturn on two
//! addresses (198.18.0.2 and .3, port 3478: RFC 5780 discovery) and two `dna bootstrap`
//! nodes (port 4000 on each address); then, for each NAT type and each of two sides, a
//! host: on the bridge itself for `public`, else behind its own router namespace whose
//! nftables rules (`netsim/netns/nat-router.sh`) make it that NAT type. Nothing leaves the
//! namespaces. Dropping the [`TestBed`] kills its processes and deletes its namespaces,
//! also when a test fails.

#![allow(clippy::disallowed_methods)] // a driver: it reads the clock

mod process;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use process::{DnaProcess, Event};

/// The NAT types of the test bed.
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
    /// Address-and-port-dependent mapping and filtering.
    Symmetric,
}

impl NatType {
    /// All five, in matrix order.
    pub const ALL: [NatType; 5] = [
        NatType::Public,
        NatType::FullCone,
        NatType::AddressRestricted,
        NatType::PortRestricted,
        NatType::Symmetric,
    ];

    /// The name used in output and by `nat-router.sh`.
    pub fn name(self) -> &'static str {
        match self {
            NatType::Public => "public",
            NatType::FullCone => "full-cone",
            NatType::AddressRestricted => "address-restricted",
            NatType::PortRestricted => "port-restricted",
            NatType::Symmetric => "symmetric",
        }
    }

    /// RFC 4787 mapping and filtering as our discovery names them (`None`: no NAT, nothing
    /// to compare beyond endpoint independence).
    pub fn expected(self) -> (&'static str, &'static str) {
        match self {
            NatType::Public | NatType::FullCone => ("EndpointIndependent", "EndpointIndependent"),
            NatType::AddressRestricted => ("EndpointIndependent", "AddressDependent"),
            NatType::PortRestricted => ("EndpointIndependent", "AddressAndPortDependent"),
            NatType::Symmetric => ("AddressAndPortDependent", "AddressAndPortDependent"),
        }
    }

    /// Whether two sides of these types are expected to punch through directly
    /// (spec/05 §7): all but port-restricted ↔ symmetric and symmetric ↔ symmetric.
    pub fn direct_expected(a: NatType, b: NatType) -> bool {
        use NatType::*;
        !matches!(
            (a, b),
            (PortRestricted, Symmetric) | (Symmetric, PortRestricted) | (Symmetric, Symmetric)
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
    /// Its router's namespace (none for `public`).
    pub router: Option<String>,
    /// Its address on the public network: its own, or its router's.
    pub public_ip: Ipv4Addr,
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
/// The bootstrap nodes' port.
pub const BOOTSTRAP_PORT: u16 = 4000;

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
        run(
            "ip",
            &["-n", &public, "link", "add", "br0", "type", "bridge"],
        )?;
        run("ip", &["-n", &public, "link", "set", "br0", "up"])?;
        for a in [SERVER_A, SERVER_B] {
            let a = format!("{a}/24");
            run("ip", &["-n", &public, "addr", "add", &a, "dev", "br0"])?;
        }
        let mut i = 0u8;
        for nat in NatType::ALL {
            for side in ['a', 'b'] {
                i += 1;
                let wan_ip = format!("198.18.0.{}", 10 + i);
                let host = self.add_ns(&format!("h{i}"))?;
                let port = format!("v{i}");
                // The far end of the public link: the host itself, or its router.
                let (far, far_if) = if nat == NatType::Public {
                    (host.clone(), "eth0")
                } else {
                    (self.add_ns(&format!("r{i}"))?, "wan")
                };
                run(
                    "ip",
                    &[
                        "link", "add", &port, "netns", &public, "type", "veth", "peer", "name",
                        far_if, "netns", &far,
                    ],
                )?;
                run(
                    "ip",
                    &["-n", &public, "link", "set", &port, "master", "br0", "up"],
                )?;
                run("ip", &["-n", &far, "link", "set", far_if, "up"])?;
                let wan_cidr = format!("{wan_ip}/24");
                run("ip", &["-n", &far, "addr", "add", &wan_cidr, "dev", far_if])?;
                if nat != NatType::Public {
                    let lan = format!("10.{i}.0");
                    run(
                        "ip",
                        &[
                            "link", "add", "lan", "netns", &far, "type", "veth", "peer", "name",
                            "eth0", "netns", &host,
                        ],
                    )?;
                    run("ip", &["-n", &far, "link", "set", "lan", "up"])?;
                    run(
                        "ip",
                        &[
                            "-n",
                            &far,
                            "addr",
                            "add",
                            &format!("{lan}.1/24"),
                            "dev",
                            "lan",
                        ],
                    )?;
                    run("ip", &["-n", &host, "link", "set", "eth0", "up"])?;
                    run(
                        "ip",
                        &[
                            "-n",
                            &host,
                            "addr",
                            "add",
                            &format!("{lan}.2/24"),
                            "dev",
                            "eth0",
                        ],
                    )?;
                    run(
                        "ip",
                        &[
                            "-n",
                            &host,
                            "route",
                            "add",
                            "default",
                            "via",
                            &format!("{lan}.1"),
                        ],
                    )?;
                    run(
                        "ip",
                        &[
                            "netns",
                            "exec",
                            &far,
                            "sysctl",
                            "-qw",
                            "net.ipv4.ip_forward=1",
                        ],
                    )?;
                    let script = router_script();
                    run(
                        "sh",
                        &[&script.to_string_lossy(), nat.name(), &far, "wan", &wan_ip],
                    )?;
                }
                let router = (nat != NatType::Public).then(|| far.clone());
                let public_ip = wan_ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
                self.hosts.push((
                    nat,
                    side,
                    Host {
                        ns: host,
                        nat,
                        router,
                        public_ip,
                    },
                ));
            }
        }
        Ok(())
    }

    fn public_ns(&self) -> &str {
        &self.namespaces[0]
    }

    fn start_servers(&mut self, bootstrap_extra: &[String]) -> Result<(), TestBedError> {
        let public = self.public_ns().to_string();
        let log = std::fs::File::create(self.dir.join("coturn.log"))?;
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
            .args([
                "--no-cli",
                "--lt-cred-mech",
                "--user",
                "dna:dna",
                "--realm",
                "dna",
            ])
            .args(["--listening-ip", &SERVER_A.to_string()])
            .args(["--listening-ip", &SERVER_B.to_string()])
            .args(["--listening-port", &STUN_PORT.to_string()])
            .args(["--min-port", "49152", "--max-port", "49352"])
            .args(["--pidfile", &self.dir.join("coturn.pid").to_string_lossy()])
            .args(["--log-file", "stdout", "--simple-log"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.coturn = Some(coturn);
        // coturn is ready when both addresses' ports are bound.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let udp = run("ip", &["netns", "exec", &public, "cat", "/proc/net/udp"])?;
            let want = format!(":{:04X}", STUN_PORT);
            if udp.lines().filter(|l| l.contains(&want)).count() >= 2 {
                break;
            }
            if Instant::now() > deadline {
                return Err(TestBedError::NotReady("coturn did not bind".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for (i, ip) in [SERVER_A, SERVER_B].into_iter().enumerate() {
            let listen = format!("{ip}:{BOOTSTRAP_PORT}");
            let mut args = vec!["--listen".to_string(), listen.clone()];
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
        let mut args = vec!["--stun".to_string(), format!("{SERVER_A}:{STUN_PORT}")];
        for b in &self.bootstrap_args {
            args.push("--bootstrap".into());
            args.push(b.clone());
        }
        args.extend_from_slice(extra);
        let p = self.spawn(&host.ns, host.nat.name(), "daemon", &args)?;
        if p.wait_event("ready", Duration::from_secs(60)).is_none() {
            return Err(TestBedError::NotReady(format!(
                "daemon on {} ({}): no ready event; stderr: {}",
                host.ns,
                host.nat.name(),
                p.stderr_tail()
            )));
        }
        Ok(p)
    }

    /// Gives `host`'s router a new public address (an ISP renumbering the uplink): the old
    /// address is removed, which also drops the router's masquerade mappings, and the new
    /// one added. Only for routers whose rules do not name their address (port-restricted,
    /// symmetric).
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
        let out = run(
            "ip",
            &[
                "netns",
                "exec",
                &host.ns,
                "turnutils_natdiscovery",
                "-m",
                "-f",
                &SERVER_A.to_string(),
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
    /// `direct`, `relay`, `relay-needed` or `failed`.
    pub path: String,
    /// The candidate type the direct path uses (`srflx`, `prflx`, `host`), if direct.
    pub via: String,
    /// Time from `send` to a contact never seen before until the message arrived, ms.
    pub ms: Option<f64>,
    /// What went wrong, for `failed`.
    pub detail: String,
}

impl PairResult {
    /// The stable JSON line: `{"a","b","path","ms"}` (plus `via`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "a": self.a.name(), "b": self.b.name(), "path": self.path,
            "ms": self.ms.map(|m| (m * 10.0).round() / 10.0), "via": self.via,
        })
    }
}

/// Every unordered pair of types, `a` ≤ `b` (15).
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
    /// Runs one pair: fresh daemons on side a (type `a`) and side b (type `b`), then a sends
    /// a message to b, which a has never seen: DHT lookup, direct dial or CONNECT and hole
    /// punching, QUIC, end-to-end key exchange, delivery.
    pub fn run_pair(&self, a: NatType, b: NatType) -> PairResult {
        let mut r = PairResult {
            a,
            b,
            path: "failed".into(),
            via: String::new(),
            ms: None,
            detail: String::new(),
        };
        let (pa, pb) = match (
            self.daemon(self.host(a, 'a')),
            self.daemon(self.host(b, 'b')),
        ) {
            (Ok(x), Ok(y)) => (x, y),
            (Err(e), _) | (_, Err(e)) => {
                r.detail = e.to_string();
                return r;
            }
        };
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
        if r.path != "direct" {
            r.detail = format!(
                "{reply}; b ready: {}; b: {}",
                pb.wait_event("ready", Duration::ZERO).unwrap_or_default(),
                pb.stderr_tail()
            );
            return r;
        }
        let deadline = Duration::from_secs(30);
        match pb.wait_for(deadline, |e| {
            e.get("event").and_then(|v| v.as_str()) == Some("message")
                && e.get("text").and_then(|v| v.as_str()) == Some(text.as_str())
        }) {
            Some(ev) => r.ms = Some((ev.at - start).as_secs_f64() * 1e3),
            None => {
                r.path = "failed".into();
                r.detail = format!(
                    "no delivery in {deadline:?}; a: {}; b: {}",
                    pa.stderr_tail(),
                    pb.stderr_tail()
                );
            }
        }
        r
    }
}

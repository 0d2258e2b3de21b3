//! Plain UDP (and TCP-connect) probes inside the test bed's namespaces: the `udp_probe`
//! helper (`netsim/src/bin/udp_probe.rs`), built once per process with plain `rustc` —
//! it is std only — because `cargo test` of the root package does not build netsim's
//! binaries.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::TestBedError;

const SOURCE: &str = include_str!("../bin/udp_probe.rs");

/// The `udp_probe` binary: compiled from its source into the temp dir (named by a hash of
/// the source, so a later run reuses it).
pub fn probe_binary() -> Result<PathBuf, TestBedError> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        // FNV-1a: a stable name for this version of the source.
        let hash = SOURCE.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let dir = std::env::temp_dir().join(format!("dna-udp-probe-{hash:016x}"));
        let bin = dir.join("udp_probe");
        if bin.exists() {
            return Ok(bin);
        }
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let src = dir.join("udp_probe.rs");
        std::fs::write(&src, SOURCE).map_err(|e| e.to_string())?;
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        // Into a private name first: two test processes may build it at once.
        let tmp = dir.join(format!("udp_probe.{}", std::process::id()));
        let out = Command::new(rustc)
            .args(["-O", "--edition", "2021", "-o"])
            .arg(&tmp)
            .arg(&src)
            .output()
            .map_err(|e| format!("rustc: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "rustc udp_probe.rs: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::fs::rename(&tmp, &bin).map_err(|e| e.to_string())?;
        Ok(bin)
    })
    .clone()
    .map_err(TestBedError::NotReady)
}

/// One `udp_probe` process in a namespace: one UDP socket, driven line by line. Killed on
/// drop.
pub struct UdpProbe {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The socket's local address.
    pub local: SocketAddr,
}

/// What a [`UdpProbe::recv`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A datagram: its source and text.
    Datagram(SocketAddr, String),
    /// Nothing within the wait.
    Timeout,
    /// An ICMP port unreachable came back (connected sockets only).
    Refused,
}

fn spawn(bin: &Path, ns: &str, args: &[String]) -> Result<Child, TestBedError> {
    Ok(Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?)
}

impl UdpProbe {
    /// Starts a probe in namespace `ns` with its socket bound to `bind`.
    pub fn start(ns: &str, bind: SocketAddr) -> Result<UdpProbe, TestBedError> {
        let mut child = spawn(&probe_binary()?, ns, &[bind.to_string()])?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(TestBedError::NotReady("udp_probe: no pipes".into()));
        };
        let mut p = UdpProbe {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            local: bind,
        };
        let line = p.line()?;
        p.local = line
            .strip_prefix("bound ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| TestBedError::NotReady(format!("udp_probe in {ns}: {line:?}")))?;
        Ok(p)
    }

    fn line(&mut self) -> Result<String, TestBedError> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(TestBedError::NotReady("udp_probe exited".into()));
        }
        Ok(line.trim_end().to_string())
    }

    fn ask(&mut self, cmd: &str) -> Result<String, TestBedError> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        let line = self.line()?;
        match line.strip_prefix("error ") {
            Some(e) => Err(TestBedError::NotReady(format!("udp_probe {cmd:?}: {e}"))),
            None => Ok(line),
        }
    }

    /// Sends `text` to `to`.
    pub fn send_to(&mut self, to: SocketAddr, text: &str) -> Result<(), TestBedError> {
        self.ask(&format!("to {to} {text}")).map(drop)
    }

    /// Connects the socket to `to` (then only `to` is heard, and an ICMP port unreachable
    /// surfaces as [`Received::Refused`]).
    pub fn connect(&mut self, to: SocketAddr) -> Result<(), TestBedError> {
        self.ask(&format!("connect {to}")).map(drop)
    }

    /// Sends `text` on the connected socket.
    pub fn send(&mut self, text: &str) -> Result<(), TestBedError> {
        self.ask(&format!("send {text}")).map(drop)
    }

    /// Waits up to `wait` for one datagram.
    pub fn recv(&mut self, wait: Duration) -> Result<Received, TestBedError> {
        let line = self.ask(&format!("recv {}", wait.as_millis()))?;
        if line == "timeout" {
            return Ok(Received::Timeout);
        }
        if line == "refused" {
            return Ok(Received::Refused);
        }
        let mut w = line.splitn(3, ' ');
        match (w.next(), w.next().and_then(|a| a.parse().ok()), w.next()) {
            (Some("got"), Some(from), text) => Ok(Received::Datagram(
                from,
                text.unwrap_or_default().to_string(),
            )),
            _ => Err(TestBedError::NotReady(format!("udp_probe recv: {line:?}"))),
        }
    }

    /// Sends `text` to an [`EchoServer`] and returns the source address the echo saw: this
    /// socket's mapping on the router toward that server.
    pub fn mapped_by(&mut self, echo: SocketAddr) -> Result<Option<SocketAddr>, TestBedError> {
        self.send_to(echo, "map")?;
        loop {
            match self.recv(Duration::from_secs(2))? {
                Received::Datagram(from, text) if from == echo => {
                    return Ok(text.strip_prefix("from ").and_then(|a| a.parse().ok()));
                }
                Received::Datagram(..) => continue,
                Received::Timeout | Received::Refused => return Ok(None),
            }
        }
    }

    /// A TCP connection attempt to `to` from this namespace: `tcp-connected`,
    /// `tcp-refused` or `tcp-timeout`.
    pub fn tcp_connect(&mut self, to: SocketAddr, wait: Duration) -> Result<String, TestBedError> {
        self.ask(&format!("tcp {to} {}", wait.as_millis()))
    }
}

impl Drop for UdpProbe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `udp_probe --echo` in a namespace: answers each datagram with the source address it
/// saw. Killed on drop.
pub struct EchoServer {
    child: Child,
    /// The addresses it answers on.
    pub addrs: Vec<SocketAddr>,
}

impl EchoServer {
    /// Starts an echo on each of `addrs` in namespace `ns`; returns once all are bound.
    pub fn start(ns: &str, addrs: &[SocketAddr]) -> Result<EchoServer, TestBedError> {
        let args: Vec<String> = std::iter::once("--echo".to_string())
            .chain(addrs.iter().map(ToString::to_string))
            .collect();
        let mut child = spawn(&probe_binary()?, ns, &args)?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| TestBedError::NotReady("udp_probe --echo: no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        for _ in addrs {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("bound ") => {}
                other => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(TestBedError::NotReady(format!(
                        "udp_probe --echo in {ns}: {other:?}"
                    )));
                }
            }
        }
        // Drain its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(EchoServer {
            child,
            addrs: addrs.to_vec(),
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The devnet's processes: `dna bootstrap` and `dna daemon` children started by re-executing
//! our own binary, each with a data directory under one temporary directory, their JSON
//! event lines (stdout) read by a thread each, their control sockets, and the clean-up that
//! kills every child and removes the directory — at the end, on a panic, and on
//! SIGINT/SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One JSON line a process printed, and when it was read.
#[derive(Debug, Clone)]
pub(super) struct Event {
    pub at: Instant,
    pub json: Value,
}

type Events = Arc<(Mutex<Vec<Event>>, Condvar)>;

/// What the clean-up needs: the children still running and the directory to remove.
#[derive(Default)]
struct Registry {
    children: Vec<Arc<Mutex<Child>>>,
    dir: Option<PathBuf>,
    /// Set once clean-up ran: no more children may start.
    closed: bool,
    /// Set when a signal stops the devnet: the steps' errors from then on are not failures.
    signalled: bool,
}

/// The temporary directory and every child started in it.
#[derive(Clone)]
pub(super) struct Net {
    root: PathBuf,
    exe: PathBuf,
    reg: Arc<Mutex<Registry>>,
}

impl Net {
    /// Creates `$TMPDIR/dna-devnet-<pid>-<random>` (mode 0700) and installs the signal
    /// handler.
    pub fn create() -> Result<Net, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let tag = rand_core::RngCore::next_u32(&mut rand_core::OsRng);
        let root =
            std::env::temp_dir().join(format!("dna-devnet-{}-{tag:08x}", std::process::id()));
        // Owner-only (it holds the nodes' keys and control sockets), and new: never a
        // directory someone else made in a shared /tmp.
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&root)
            .map_err(|e| format!("{}: {e}", root.display()))?;
        let net = Net {
            root: root.clone(),
            exe,
            reg: Arc::new(Mutex::new(Registry {
                dir: Some(root),
                ..Registry::default()
            })),
        };
        net.watch_signals()?;
        Ok(net)
    }

    /// This binary (the children's, and what `--keep` tells the user to run).
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// The temporary directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A SIGINT or SIGTERM kills every child, removes the directory and exits 130.
    fn watch_signals(&self) -> Result<(), String> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("signal runtime: {e}"))?;
        let reg = self.reg.clone();
        // Register the handlers before returning, so no signal is missed.
        let (mut int, mut term) = rt
            .block_on(async {
                Ok::<_, std::io::Error>((
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                ))
            })
            .map_err(|e| format!("signal handler: {e}"))?;
        std::thread::spawn(move || {
            let name = rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                }
            });
            reg.lock().unwrap_or_else(|p| p.into_inner()).signalled = true;
            eprintln!("devnet: {name}: stopping the nodes and removing the data directories");
            clean_up(&reg);
            std::process::exit(130);
        });
        Ok(())
    }

    /// Whether a signal is stopping the devnet (the nodes are going away).
    pub fn signalled(&self) -> bool {
        self.reg.lock().unwrap_or_else(|p| p.into_inner()).signalled
    }

    /// Kills every child and removes the directory (idempotent).
    pub fn clean_up(&self) {
        clean_up(&self.reg);
    }

    /// Starts `dna <role> --data-dir <root>/<name> --config <root>/<name>.toml` with
    /// `config` written to that file, and waits up to `within` for its `ready` event.
    pub fn start(
        &self,
        name: &str,
        role: &str,
        config: &str,
        within: Duration,
    ) -> Result<Proc, String> {
        let data = self.root.join(name);
        let cfg = self.root.join(format!("{name}.toml"));
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        std::fs::write(&cfg, config).map_err(|e| format!("{}: {e}", cfg.display()))?;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("stderr.log"))
            .map_err(|e| format!("{name}: stderr.log: {e}"))?;
        let mut reg = self.reg.lock().unwrap_or_else(|p| p.into_inner());
        if reg.closed {
            return Err("devnet is stopping".into());
        }
        let mut cmd = Command::new(&self.exe);
        cmd.arg(role)
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd.spawn().map_err(|e| format!("start {name}: {e}"))?;
        let events: Events = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        if let Some(out) = child.stdout.take() {
            let events = events.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let Ok(json) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    let (list, cv) = &*events;
                    list.lock().unwrap_or_else(|p| p.into_inner()).push(Event {
                        at: Instant::now(),
                        json,
                    });
                    cv.notify_all();
                }
                // The process ended: wake waiters so they notice.
                events.1.notify_all();
            });
        }
        let child = Arc::new(Mutex::new(child));
        reg.children.push(child.clone());
        drop(reg);
        let p = Proc {
            name: name.to_string(),
            data,
            child,
            events,
        };
        match p.wait_event("ready", within) {
            Some(_) => Ok(p),
            None if p.exited() => Err(format!(
                "{name} ({role}) exited before it was ready; stderr: {}",
                p.stderr_tail()
            )),
            None => Err(format!(
                "{name} ({role}) not ready within {} s; stderr: {}",
                within.as_secs(),
                p.stderr_tail()
            )),
        }
    }
}

fn clean_up(reg: &Mutex<Registry>) {
    let mut reg = reg.lock().unwrap_or_else(|p| p.into_inner());
    reg.closed = true;
    for c in reg.children.drain(..) {
        let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
        let _ = c.kill();
        let _ = c.wait();
    }
    if let Some(dir) = reg.dir.take() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A running `dna` child.
pub(super) struct Proc {
    pub name: String,
    pub data: PathBuf,
    child: Arc<Mutex<Child>>,
    events: Events,
}

impl Proc {
    /// The `ready` event's field `key` (`fp`, `addr`).
    pub fn ready(&self, key: &str) -> String {
        self.wait_event("ready", Duration::ZERO)
            .and_then(|v| v.get(key).and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default()
    }

    /// The control socket's path.
    pub fn socket(&self) -> PathBuf {
        self.data.join("control.sock")
    }

    /// How many events were read so far (a mark for [`Proc::wait_after`]).
    pub fn mark(&self) -> usize {
        self.events
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Events from index `from` on.
    pub fn events_since(&self, from: usize) -> Vec<Event> {
        let list = self.events.0.lock().unwrap_or_else(|p| p.into_inner());
        list.get(from..).map(<[Event]>::to_vec).unwrap_or_default()
    }

    /// Waits up to `timeout` until `done` holds for the events from index `from` on.
    pub fn wait_after(
        &self,
        from: usize,
        timeout: Duration,
        done: impl Fn(&[Event]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let (list, cv) = &*self.events;
        let mut guard = list.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if done(guard.get(from..).unwrap_or_default()) {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            if self.exited() {
                // Whatever it printed is read (or about to be): one last look.
                drop(guard);
                std::thread::sleep(Duration::from_millis(100));
                let list = self.events.0.lock().unwrap_or_else(|p| p.into_inner());
                return done(list.get(from..).unwrap_or_default());
            }
            guard = cv
                .wait_timeout(guard, left.min(Duration::from_millis(200)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The first event named `name`, waiting up to `timeout`.
    pub fn wait_event(&self, name: &str, timeout: Duration) -> Option<Value> {
        self.wait_after(0, timeout, |evs| {
            evs.iter().any(|e| e.json["event"] == name)
        });
        let list = self.events.0.lock().unwrap_or_else(|p| p.into_inner());
        list.iter()
            .find(|e| e.json["event"] == name)
            .map(|e| e.json.clone())
    }

    /// Whether the process has ended.
    pub fn exited(&self) -> bool {
        let mut c = self.child.lock().unwrap_or_else(|p| p.into_inner());
        matches!(c.try_wait(), Ok(Some(_)))
    }

    /// One request on the control socket; its answer.
    pub fn control(&self, req: &Value) -> Result<Value, String> {
        let err = |e: std::io::Error| format!("{}: control socket: {e}", self.name);
        let mut s = std::os::unix::net::UnixStream::connect(self.socket()).map_err(err)?;
        s.set_read_timeout(Some(Duration::from_secs(90)))
            .map_err(err)?;
        writeln!(s, "{req}").map_err(err)?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).map_err(err)?;
        serde_json::from_str(&line).map_err(|e| format!("{}: bad answer: {e}", self.name))
    }

    /// Many requests on one control connection, written by a second thread while the
    /// answers are read (so neither side's buffer can fill up and stall the other).
    pub fn control_pipelined(&self, reqs: Vec<Value>) -> Result<Vec<Value>, String> {
        let err = |e: std::io::Error| format!("{}: control socket: {e}", self.name);
        let s = std::os::unix::net::UnixStream::connect(self.socket()).map_err(err)?;
        s.set_read_timeout(Some(Duration::from_secs(90)))
            .map_err(err)?;
        let mut w = s.try_clone().map_err(err)?;
        let n = reqs.len();
        let writer = std::thread::spawn(move || -> std::io::Result<()> {
            let mut buf = std::io::BufWriter::new(&mut w);
            for r in reqs {
                writeln!(buf, "{r}")?;
            }
            buf.flush()
        });
        let mut answers = Vec::with_capacity(n);
        let mut r = BufReader::new(&s);
        let mut line = String::new();
        for _ in 0..n {
            line.clear();
            r.read_line(&mut line).map_err(err)?;
            answers.push(
                serde_json::from_str(&line)
                    .map_err(|e| format!("{}: bad answer: {e}", self.name))?,
            );
        }
        writer
            .join()
            .map_err(|_| format!("{}: writer panicked", self.name))?
            .map_err(err)?;
        Ok(answers)
    }

    /// Stops the process as Ctrl-C would (SIGINT through `kill`: the node shuts down
    /// cleanly and closes its connections), killing it if it has not ended after `grace`.
    /// Returns whether it ended by itself.
    pub fn stop(&self, grace: Duration) -> bool {
        let pid = self.child.lock().unwrap_or_else(|p| p.into_inner()).id();
        // The shell's `kill` builtin: std has no way to send SIGINT, and `sh` is everywhere.
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -INT {pid}")])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        loop {
            let mut c = self.child.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(c.try_wait(), Ok(Some(_))) {
                return true;
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            drop(c);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of its stderr, for failure messages.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(self.data.join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(6)..].join(" | ");
        if tail.is_empty() {
            "(empty)".into()
        } else {
            tail
        }
    }
}

/// The first UDP port on 127.0.0.1 from `from` on that can be bound now.
fn free_port(from: u16) -> Result<u16, String> {
    (from..=u16::MAX)
        .find(|p| UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], *p))).is_ok())
        .ok_or_else(|| format!("no free UDP port from {from} on"))
}

impl Net {
    /// [`Net::start`] on the first free port from `*cursor` on (`config` makes the config
    /// for a port); a port someone takes between the check and the node's bind (another
    /// devnet starting at the same moment) moves on to the next. Returns the node and its
    /// port; `*cursor` is left after it.
    pub fn start_free(
        &self,
        cursor: &mut u16,
        name: &str,
        role: &str,
        config: &dyn Fn(u16) -> String,
        within: Duration,
    ) -> Result<(Proc, u16), String> {
        let mut last = String::new();
        for _ in 0..MAX_PORT_TRIES {
            let port = free_port(*cursor)?;
            *cursor = port.saturating_add(1);
            match self.start(name, role, &config(port), within) {
                Ok(p) => return Ok((p, port)),
                Err(e) if e.contains("in use") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}

/// How many taken ports [`Net::start_free`] steps over before it gives up.
const MAX_PORT_TRIES: usize = 20;

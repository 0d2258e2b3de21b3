//! A `dna daemon` or `dna bootstrap` process in a namespace: its JSON event lines, with the
//! time each arrived, and its control socket.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One JSON line a process printed, and when the harness read it.
#[derive(Debug, Clone)]
pub struct Event {
    /// When it was read.
    pub at: Instant,
    /// The object.
    pub json: Value,
}

type Events = Arc<(Mutex<Vec<Event>>, Condvar)>;

/// A running `dna` process; killed on drop.
pub struct DnaProcess {
    child: Child,
    data: PathBuf,
    events: Events,
    /// SIGTERM sent.
    terminated: bool,
}

impl DnaProcess {
    /// Starts `dna <role> --data-dir <data> <extra…>`, inside namespace `ns` if given.
    pub fn spawn(
        dna: &Path,
        ns: Option<&str>,
        role: &str,
        data: &Path,
        extra: &[String],
    ) -> std::io::Result<DnaProcess> {
        std::fs::create_dir_all(data)?;
        let stderr = std::fs::File::create(data.join("stderr.log"))?;
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(dna);
                c
            }
            None => Command::new(dna),
        };
        let mut child = cmd
            .arg(role)
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            // `DNA_TEST_LOG` overrides the filter when a failure needs more.
            .env(
                "RUST_LOG",
                std::env::var("DNA_TEST_LOG").unwrap_or_else(|_| {
                    "dna=info,dna_p2p=info,dna_p2p::daemon::reach=debug".into()
                }),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()?;
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
            });
        }
        Ok(DnaProcess {
            child,
            data: data.to_path_buf(),
            events,
            terminated: false,
        })
    }

    /// Starts `dna <role>` on the host (no namespace) and waits up to `within` for its
    /// `ready` event; the error carries the tail of its stderr.
    pub fn start_ready(
        dna: &Path,
        role: &str,
        data: &Path,
        extra: &[String],
        within: Duration,
    ) -> Result<DnaProcess, String> {
        let p = DnaProcess::spawn(dna, None, role, data, extra)
            .map_err(|e| format!("spawn dna {role}: {e}"))?;
        match p.wait_event("ready", within) {
            Some(_) => Ok(p),
            None => Err(format!("{role} not ready; stderr: {}", p.stderr_tail())),
        }
    }

    /// A `dna bootstrap` on loopback (`127.0.0.1:0`, data in `data`), ready; and the
    /// arguments a `dna daemon` needs to join through it: `--listen 127.0.0.1:0
    /// --bootstrap ADDR@FP`.
    pub fn loopback_bootstrap(
        dna: &Path,
        data: &Path,
    ) -> Result<(DnaProcess, Vec<String>), String> {
        let boot = DnaProcess::start_ready(
            dna,
            "bootstrap",
            data,
            &["--listen".into(), "127.0.0.1:0".into()],
            Duration::from_secs(60),
        )?;
        let ready = boot.wait_event("ready", Duration::ZERO).unwrap_or_default();
        // The line `dna bootstrap` prints for others to join with.
        let Some(seed) = ready["join"].as_str().map(str::to_owned) else {
            return Err(format!(
                "bootstrap ready event without a join line: {ready}"
            ));
        };
        let args = vec![
            "--listen".to_string(),
            "127.0.0.1:0".into(),
            "--bootstrap".into(),
            seed,
        ];
        Ok((boot, args))
    }

    /// Every event read so far, in order.
    pub fn events(&self) -> Vec<Value> {
        let (list, _) = &*self.events;
        let list = list.lock().unwrap_or_else(|p| p.into_inner());
        list.iter().map(|e| e.json.clone()).collect()
    }

    /// The process ID (to read its memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first event matching `pred`, waiting up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        let (list, cv) = &*self.events;
        let mut guard = list.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(e) = guard.iter().find(|e| pred(&e.json)) {
                return Some(e.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            guard = cv
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The first event named `name`.
    pub fn wait_event(&self, name: &str, timeout: Duration) -> Option<Value> {
        self.wait_for(timeout, |v| {
            v.get("event").and_then(|e| e.as_str()) == Some(name)
        })
        .map(|e| e.json)
    }

    /// The fingerprint from the `ready` event.
    pub fn fingerprint(&self) -> Option<String> {
        self.wait_event("ready", Duration::ZERO)?
            .get("fp")?
            .as_str()
            .map(str::to_owned)
    }

    /// One request on the control socket; its answer.
    pub fn control(&self, req: &Value) -> std::io::Result<Value> {
        let mut s = std::os::unix::net::UnixStream::connect(self.data.join("control.sock"))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        writeln!(s, "{req}")?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line)?;
        serde_json::from_str(&line).map_err(std::io::Error::other)
    }

    /// Kills it now (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines of its stderr, for failure messages.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(self.data.join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let n = std::env::var("DNA_TEST_TAIL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8);
        lines[lines.len().saturating_sub(n)..].join(" | ")
    }
}

impl DnaProcess {
    /// Asks it to stop (SIGTERM, as systemd does): it closes its connections, telling its
    /// DHT peers it is gone (spec/04-dht.md §3). Does not wait; dropping waits.
    pub fn terminate(&mut self) {
        if !self.terminated {
            self.terminated = true;
            // `ip netns exec` execs the program: the child is dna itself.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
    }
}

/// How long a terminated daemon may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

impl Drop for DnaProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.terminate();
            let until = Instant::now() + STOP_GRACE;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

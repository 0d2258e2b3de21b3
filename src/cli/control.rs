//! The control socket's client side (spec/06-node.md §6, spec/10-control.md): `dna send`,
//! `dna status`, `dna inbox`, `dna names`/`contacts`, `dna ping` ask a running daemon over
//! `<data dir>/control.sock`, one JSON request per line, one answer per line. The server
//! is `control` (a sibling of `cli`, part of `dna daemon`).

use std::path::Path;

use crate::control::path;
use std::process::ExitCode;

use serde_json::{json, Value};

/// Sends one request to a running daemon; `None` if no daemon listens. A request that
/// takes longer than a second (reaching a peer: DHT lookup, CONNECT, punching; a name
/// claim; a mailbox fetch) says so on stderr every two seconds until the answer comes;
/// `send` and `ping` also print each step of reaching the peer as the daemon reports it
/// (`reaching` events, spec/10-control.md §2).
pub(super) fn ask(dir: &Path, req: &Value) -> Option<Result<Value, String>> {
    let what = req["cmd"].as_str().unwrap_or("request").to_owned();
    let steps = if matches!(what.as_str(), "send" | "ping") {
        steps(dir, what.clone())
    } else {
        None
    };
    let answer = ask_ticking(dir, req, what);
    if let Some((stream, reader)) = steps {
        let _ = stream.shutdown(std::net::Shutdown::Both);
        let _ = reader.join();
    }
    answer
}

/// A subscription made before the request, so that it sees every step: a thread prints
/// the `reaching` events on stderr until the stream is shut down.
fn steps(
    dir: &Path,
    what: String,
) -> Option<(std::os::unix::net::UnixStream, std::thread::JoinHandle<()>)> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path(dir)).ok()?;
    writeln!(s, "{}", json!({"cmd": "subscribe"})).ok()?;
    let mut r = std::io::BufReader::new(s.try_clone().ok()?);
    let mut ack = String::new();
    r.read_line(&mut ack).ok()?;
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if let Some(text) = step_text(&v) {
                    eprintln!("… {what}: {text}");
                }
            }
            line.clear();
        }
    });
    Some((s, reader))
}

/// A `reaching` event in words.
fn step_text(v: &Value) -> Option<String> {
    if v["event"] != "reaching" {
        return None;
    }
    let peer: String = v["peer"].as_str().unwrap_or("?").chars().take(8).collect();
    let via = v["via"].as_str().unwrap_or("?");
    Some(match v["stage"].as_str()? {
        "lookup" => format!("looking {peer}… up in the DHT"),
        "dial" => format!("dialing {peer}…'s addresses"),
        "connect" => format!("CONNECT to {peer}… through {via}"),
        "punch" if v["prediction"] == true => "hole punching, with port prediction".into(),
        "punch" => "hole punching".into(),
        "relay" => format!("asking {via} to relay"),
        other => other.to_owned(),
    })
}

/// [`ask`] with the elapsed-time lines.
fn ask_ticking(dir: &Path, req: &Value, what: String) -> Option<Result<Value, String>> {
    let (done, waiting) = std::sync::mpsc::channel::<()>();
    let progress = std::thread::spawn(move || {
        // Seconds waited so far, counted by the waits themselves (1 s, then 2 s each).
        let mut waited = 1;
        let mut wait = std::time::Duration::from_secs(1);
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = waiting.recv_timeout(wait) {
            eprintln!("… {what}: still working ({waited} s)");
            wait = std::time::Duration::from_secs(2);
            waited += 2;
        }
    });
    let answer = ask_quietly(dir, req);
    drop(done);
    let _ = progress.join();
    answer
}

fn ask_quietly(dir: &Path, req: &Value) -> Option<Result<Value, String>> {
    use std::io::{BufRead, Write};
    let p = path(dir);
    let mut s = match std::os::unix::net::UnixStream::connect(&p) {
        Ok(s) => s,
        // The socket is its owner's only (mode 0600, spec/10-control.md §1).
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Some(Err(format!(
                "{}: permission denied (the control socket is its owner's only)",
                p.display()
            )))
        }
        Err(_) => return None,
    };
    if writeln!(s, "{req}").is_err() {
        return Some(Err("cannot write to the control socket".into()));
    }
    let mut line = String::new();
    if std::io::BufReader::new(&s).read_line(&mut line).is_err() {
        return Some(Err("no answer on the control socket".into()));
    }
    Some(serde_json::from_str::<Value>(&line).map_err(|e| format!("bad answer: {e}")))
}

/// One request to the running daemon: its answer when `ok`, else the error to print (the
/// daemon's, the socket's, or that no daemon listens).
pub(super) fn ask_ok(dir: &Path, req: &Value) -> Result<Value, String> {
    match ask(dir, req) {
        Some(Ok(v)) if v["ok"] == true => Ok(v),
        Some(Ok(v)) => Err(v["error"].to_string()),
        Some(Err(e)) => Err(e),
        None => Err(format!("no daemon at {}", path(dir).display())),
    }
}

/// `dna send` / `dna status`: one request to the running daemon, its answer on stdout.
pub(super) fn client(dir: &Path, req: Value) -> ExitCode {
    match ask(dir, &req) {
        None => {
            eprintln!("error: no daemon at {}", path(dir).display());
            ExitCode::FAILURE
        }
        Some(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Some(Ok(v)) => {
            println!("{v}");
            if v.get("ok").and_then(Value::as_bool) == Some(true) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

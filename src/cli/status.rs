//! The status panel (spec/10-control.md §3), the client's side: `dna status [--json]
//! [--watch]` asks the daemon (`control::status`) and shows identity and claimed names, NAT class and
//! public addresses, DHT table and stored records, and one row per peer (name or short
//! fingerprint, path, RTT, bytes in/out, last seen).

// The client's `--watch` loop and "last seen" read the clock: this is the driver.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// How often `dna status --watch` redraws.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// `dna status`: the panel once, as a table or (`json`) the whole object; `watch` redraws
/// it every second until Ctrl-C.
pub(super) fn run(dir: &Path, json: bool, watch: bool) -> ExitCode {
    loop {
        let v = match super::control::ask_ok(dir, &json!({"cmd": "status"})) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let text = if json {
            format!("{v}\n")
        } else {
            render(&v, unix_ms())
        };
        if watch {
            // Clear the screen, cursor home, then the panel.
            print!("\x1b[2J\x1b[H{text}");
        } else {
            print!("{text}");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        if !watch {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(WATCH_EVERY);
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// Bytes as the panel shows them.
pub(super) fn bytes(v: &Value) -> String {
    let Some(b) = v.as_u64() else {
        return "-".into();
    };
    match b {
        b if b < 1 << 10 => format!("{b} B"),
        b if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        b if b < 1 << 30 => format!("{:.1} MiB", b as f64 / 1048576.0),
        b => format!("{:.1} GiB", b as f64 / 1073741824.0),
    }
}

fn ago(v: &Value, now_ms: u64) -> String {
    match v.as_u64() {
        None => "-".into(),
        Some(t) => {
            let s = now_ms.saturating_sub(t) / 1000;
            match s {
                s if s < 120 => format!("{s}s ago"),
                s if s < 7200 => format!("{}m ago", s / 60),
                s => format!("{}h ago", s / 3600),
            }
        }
    }
}

/// The panel as text.
pub(super) fn render(v: &Value, now_ms: u64) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let id = &v["identity"];
    let names: Vec<String> = id["names"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    let _ = writeln!(o, "node      {}", s(&id["fingerprint"]));
    let _ = writeln!(
        o,
        "names     {}",
        if names.is_empty() {
            "-".into()
        } else {
            names.join(", ")
        }
    );
    let public: Vec<String> = v["public"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    let _ = writeln!(
        o,
        "nat       {}  reachable: {}  public: {}",
        s(&v["nat"]),
        if v["reachable"] == true { "yes" } else { "no" },
        if public.is_empty() {
            "-".into()
        } else {
            public.join(" ")
        }
    );
    let _ = writeln!(
        o,
        "listen    {}  rendezvous: {}  relay policy: {}",
        s(&v["addr"]),
        v["rendezvous"].as_array().map_or(0, Vec::len),
        s(&v["relay"]["policy"])
    );
    let _ = writeln!(
        o,
        "dht       table {}  records {}",
        s(&v["dht"]["table"]),
        s(&v["dht"]["records"])
    );
    let _ = writeln!(
        o,
        "outbox    {} waiting  connections {}",
        s(&v["limits"]["outbox"]["messages"]),
        s(&v["connections"])
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<18} {:<7} {:>9} {:>10} {:>10}  LAST SEEN",
        "PEER", "PATH", "RTT", "IN", "OUT"
    );
    for p in v["peers"].as_array().into_iter().flatten() {
        let who = p["name"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| s(&p["short"]));
        let rtt = p["rtt_ms"]
            .as_f64()
            .map_or("-".into(), |r| format!("{r:.1} ms"));
        let path = if p["connected"] == true {
            s(&p["path"])
        } else {
            "down".into()
        };
        let _ = writeln!(
            o,
            "{:<18} {:<7} {:>9} {:>10} {:>10}  {}",
            who,
            path,
            rtt,
            bytes(&p["bytes_in"]),
            bytes(&p["bytes_out"]),
            ago(&p["last_seen_ms"], now_ms)
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_contacts_and_shows_path_rtt_bytes() {
        let v = json!({
            "identity": {"fingerprint": "ab".repeat(32), "names": ["alice"]},
            "nat": "full-cone", "reachable": true, "public": ["192.0.2.1:4000"],
            "addr": "127.0.0.1:1", "rendezvous": [], "relay": {"policy": "auto"},
            "dht": {"table": 3, "records": 7}, "limits": {"outbox": {"messages": 0}},
            "connections": 2,
            "peers": [
                {"name": "bob", "short": "cd", "connected": true, "path": "relay",
                 "rtt_ms": 1.5, "bytes_in": 2048, "bytes_out": 10, "last_seen_ms": 9_000},
                {"name": null, "short": "ef01", "connected": false, "rtt_ms": null,
                 "last_seen_ms": 1_000},
            ],
        });
        let t = render(&v, 10_000);
        println!("{t}");
        assert!(t.contains("names     alice"));
        assert!(t.contains("table 3  records 7"));
        let bob = t.lines().find(|l| l.starts_with("bob")).unwrap();
        assert!(bob.contains("relay") && bob.contains("1.5 ms"));
        assert!(bob.contains("2.0 KiB") && bob.contains("10 B") && bob.contains("1s ago"));
        let down = t.lines().find(|l| l.starts_with("ef01")).unwrap();
        assert!(down.contains("down") && down.contains("9s ago"));
    }
}

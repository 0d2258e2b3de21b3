//! `udp_probe`: the test bed's packet probe (spec/05-nat.md §7), std only, so the bed can
//! build it with plain `rustc` (`netsim::testbed::probe`).
//!
//! `udp_probe --echo ADDR…` answers every datagram on each address with `from SRC` (the
//! source as the echo saw it) and prints `echoed LOCAL SRC` per datagram.
//!
//! `udp_probe ADDR` binds one UDP socket, prints `bound LOCAL`, then runs one command per
//! stdin line and prints one answer line:
//!
//! - `to ADDR TEXT` — send TEXT to ADDR → `sent`
//! - `connect ADDR` — connect the socket (ICMP errors then surface) → `connected`
//! - `send TEXT` — send on the connected socket → `sent`
//! - `recv MS` — wait up to MS ms → `got FROM TEXT`, `timeout` or `refused`
//! - `tcp ADDR MS` — a TCP connection attempt (own socket) → `tcp-connected`,
//!   `tcp-refused` or `tcp-timeout`
//!
//! Any failure prints `error …`.

use std::io::{BufRead, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

fn echo(addrs: &[String]) -> Result<(), String> {
    let mut threads = Vec::new();
    for a in addrs {
        let s = UdpSocket::bind(a.as_str()).map_err(|e| format!("bind {a}: {e}"))?;
        println!("bound {}", s.local_addr().map_err(|e| e.to_string())?);
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((_, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                let _ = s.send_to(format!("from {from}").as_bytes(), from);
                let local = s.local_addr().map(|l| l.to_string()).unwrap_or_default();
                println!("echoed {local} {from}");
                let _ = std::io::stdout().flush();
            }
        }));
    }
    let _ = std::io::stdout().flush();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn command(s: &UdpSocket, line: &str) -> String {
    let mut words = line.splitn(3, ' ');
    let (cmd, a, b) = (
        words.next().unwrap_or(""),
        words.next().unwrap_or(""),
        words.next().unwrap_or(""),
    );
    let addr = |t: &str| t.parse::<SocketAddr>().map_err(|e| format!("{t}: {e}"));
    let ms = |t: &str| t.parse::<u64>().map(Duration::from_millis);
    let r = match cmd {
        "to" => addr(a).and_then(|to| s.send_to(b.as_bytes(), to).map_err(|e| e.to_string())),
        "connect" => addr(a).and_then(|to| s.connect(to).map(|()| 0).map_err(|e| e.to_string())),
        "send" => {
            let text = line.split_once(' ').map_or("", |x| x.1);
            s.send(text.as_bytes()).map_err(|e| e.to_string())
        }
        "recv" => {
            let Ok(wait) = ms(a) else {
                return format!("error bad timeout {a:?}");
            };
            let _ = s.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
            let mut buf = [0u8; 1500];
            return match s.recv_from(&mut buf) {
                Ok((n, from)) => format!("got {from} {}", String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused".into(),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    "timeout".into()
                }
                Err(e) => format!("error {e}"),
            };
        }
        "tcp" => {
            let (Ok(to), Ok(wait)) = (addr(a), ms(b)) else {
                return format!("error bad tcp arguments {a:?} {b:?}");
            };
            return match TcpStream::connect_timeout(&to, wait) {
                Ok(_) => "tcp-connected".into(),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "tcp-refused".into(),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    "tcp-timeout".into()
                }
                Err(e) => format!("error {e}"),
            };
        }
        other => return format!("error unknown command {other:?}"),
    };
    match (cmd, r) {
        ("connect", Ok(_)) => "connected".into(),
        (_, Ok(_)) => "sent".into(),
        (_, Err(e)) => format!("error {e}"),
    }
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--echo") {
        return echo(&args[1..]);
    }
    let bind = args
        .first()
        .ok_or("usage: udp_probe ADDR | udp_probe --echo ADDR…")?;
    let s = UdpSocket::bind(bind.as_str()).map_err(|e| format!("bind {bind}: {e}"))?;
    let mut out = std::io::stdout();
    let local = s.local_addr().map_err(|e| e.to_string())?;
    writeln!(out, "bound {local}").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        writeln!(out, "{}", command(&s, line.trim())).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

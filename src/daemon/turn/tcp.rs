//! The TURN task's TCP phase (spec/07-relay.md §2.11): UDP to the TURN server got no
//! answer, so the node's network lets no UDP out. The task connects to the same server
//! over TCP, allocates there (the relayed transport stays UDP, RFC 8656 §3.1), and makes
//! the socket send everything through the allocation ([`DnaSocket::use_turn_tcp`]): QUIC
//! to the bootstrap nodes and peers, STUN probes, all as Send indications on the stream;
//! Data indications read from it go back to the socket for quinn.
//!
//! The connection is the allocation's lifetime: when it breaks (the server restarted, the
//! network changed) the task connects again with a back-off (1 s doubling to 30 s), makes a
//! new allocation and asks again for every permission it held. Each peer IP the socket
//! sends to is asked for a permission once (at most `max_permissions`, oldest dropped);
//! until the server has installed it, the socket's indications to that IP wait here
//! ([`Held`]: at most [`HELD_PER_PEER`] per IP and [`TCP_FRAME_QUEUE`] in all; more are
//! dropped and counted) and are written in order once it is.
//!
//! [`DnaSocket::use_turn_tcp`]: crate::transport::DnaSocket::use_turn_tcp

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::super::shared::{Shared, TurnCmd};
use super::allocation::{on_event, publish, set_relay_candidate, Next, Permits};
use crate::nat::turn::tcp::{frame_for_tcp, TcpDecoder, DEFAULT_MAX_FRAME};
use crate::nat::turn::{Client, Credentials, Transport, TurnConfig, TurnError, TurnEvent};
use crate::transport::TCP_FRAME_QUEUE;

/// How long a TCP connect to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait before connecting again; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long the task waits for the Refresh 0's answer at shutdown.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Bytes read from the stream at once.
const READ_CHUNK: usize = 16 * 1024;
/// Indications held for one peer IP while its permission is made.
pub(crate) const HELD_PER_PEER: usize = 64;

/// Indications waiting for their peer's permission (see the module docs).
#[derive(Default)]
struct Held {
    by_ip: HashMap<IpAddr, Vec<Bytes>>,
    total: usize,
    dropped: u64,
}

impl Held {
    fn hold(&mut self, ip: IpAddr, frame: Bytes) {
        let q = self.by_ip.entry(ip).or_default();
        if q.len() >= HELD_PER_PEER || self.total >= TCP_FRAME_QUEUE {
            self.dropped += 1;
            return;
        }
        q.push(frame);
        self.total += 1;
    }

    fn take(&mut self, ip: IpAddr) -> Vec<Bytes> {
        let q = self.by_ip.remove(&ip).unwrap_or_default();
        self.total -= q.len();
        q
    }
}

/// How one connection ended.
enum End {
    /// The node stopped or the client failed for good: the task ends.
    Done,
    /// The connection broke: connect again.
    Broken(String),
}

/// How [`run`] ended.
pub(crate) enum TcpEnd {
    /// The node stopped.
    Stopped,
    /// The server had allocated, then went away (the next server, with rotation).
    Allocated,
    /// The server never allocated, or refused us.
    Failed,
}

/// The socket's channels to the TCP phase, made once (the socket keeps their senders)
/// and kept across servers.
pub(crate) struct Link {
    from_socket: mpsc::Receiver<IpAddr>,
    held: mpsc::Receiver<(IpAddr, Bytes)>,
}

impl Link {
    /// Puts the socket in TURN-over-TCP mode: from now on it sends everything through
    /// the allocation.
    pub(crate) fn new(shared: &Shared) -> Link {
        let (ptx, from_socket) = mpsc::channel(shared.cfg.turn_permit_queue.max(1));
        let (htx, held) = mpsc::channel(TCP_FRAME_QUEUE);
        shared.socket.use_turn_tcp(ptx, htx);
        Link { from_socket, held }
    }
}

/// Connection attempts in a row without an allocation before [`run`] gives a server up
/// (when there is another to try).
const TRIES_PER_SERVER: u32 = 2;

/// Allocates over TCP at `server`, again and again, until the node stops, the server
/// refuses us, or — with `rotate` (another server to try) — [`TRIES_PER_SERVER`]
/// attempts in a row made no allocation.
pub(crate) async fn run(
    shared: &Arc<Shared>,
    server: SocketAddr,
    credentials: Credentials,
    cmds: &mut mpsc::Receiver<TurnCmd>,
    permits: &mut Permits,
    link: &mut Link,
    rotate: bool,
) -> TcpEnd {
    let mut backoff = FIRST_BACKOFF;
    let mut ever_allocated = false;
    let mut misses = 0u32;
    while !shared.stopped.load(Ordering::Relaxed) {
        if rotate && misses >= TRIES_PER_SERVER {
            tracing::warn!(%server, "TURN over TCP: giving this server up for the next");
            return if ever_allocated {
                TcpEnd::Allocated
            } else {
                TcpEnd::Failed
            };
        }
        shared.nat.turn.send_modify(|st| {
            st.server = Some(server);
            st.transport = "tcp";
            st.state = "connecting";
            st.relayed = None;
        });
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(server)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                note_error(shared, format!("TCP connect to {server}: {e}"));
                misses += 1;
                pause(shared, &mut backoff).await;
                continue;
            }
            Err(_) => {
                note_error(shared, format!("TCP connect to {server}: timed out"));
                misses += 1;
                pause(shared, &mut backoff).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let (ftx, frx) = mpsc::channel(TCP_FRAME_QUEUE);
        let writer = tokio::spawn(write_loop(wr, frx));
        shared.socket.turn_permits_reset();
        shared.socket.set_turn_tcp_writer(Some(ftx.clone()));
        let now = Instant::now();
        let config = TurnConfig {
            transport: Transport::Tcp,
            ..TurnConfig::default()
        };
        let mut client = super::allocation::new_client(server, credentials.clone(), config, now);
        permits.replay(&mut client, now);
        publish(shared, &client, |st| st.state = "allocating");
        let conn = Conn {
            shared,
            server,
            rd,
            frames: ftx,
        };
        let chans = Chans {
            cmds: &mut *cmds,
            from_socket: &mut link.from_socket,
            held: &mut link.held,
        };
        let end = conn.drive(&mut client, chans, permits).await;
        shared.socket.set_turn_tcp_writer(None);
        writer.abort();
        set_relay_candidate(shared, None);
        let allocated = client.stats().allocations > 0;
        ever_allocated |= allocated;
        match end {
            End::Done if shared.stopped.load(Ordering::Relaxed) => return TcpEnd::Stopped,
            End::Done => return TcpEnd::Failed,
            End::Broken(why) => {
                tracing::warn!(%server, %why, "TURN over TCP: connection lost, connecting again");
                if allocated {
                    backoff = FIRST_BACKOFF;
                    misses = 0;
                }
                misses += 1;
                note_error(shared, why);
                pause(shared, &mut backoff).await;
            }
        }
    }
    TcpEnd::Stopped
}

fn note_error(shared: &Shared, why: String) {
    shared.nat.turn.send_modify(|st| {
        st.state = "connecting";
        st.relayed = None;
        st.error = Some(why);
    });
}

/// Waits `backoff` (watching for shutdown) and doubles it.
async fn pause(shared: &Shared, backoff: &mut Duration) {
    let end = tokio::time::Instant::now() + *backoff;
    while tokio::time::Instant::now() < end && !shared.stopped.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}

async fn write_loop(mut wr: OwnedWriteHalf, mut frames: mpsc::Receiver<Bytes>) {
    while let Some(f) = frames.recv().await {
        if wr.write_all(&f).await.is_err() {
            return;
        }
    }
}

/// What the task receives besides the stream.
struct Chans<'a> {
    cmds: &'a mut mpsc::Receiver<TurnCmd>,
    from_socket: &'a mut mpsc::Receiver<IpAddr>,
    held: &'a mut mpsc::Receiver<(IpAddr, Bytes)>,
}

/// One TCP connection to the server.
struct Conn<'a> {
    shared: &'a Arc<Shared>,
    server: SocketAddr,
    rd: OwnedReadHalf,
    frames: mpsc::Sender<Bytes>,
}

impl Conn<'_> {
    async fn drive(mut self, client: &mut Client, chans: Chans<'_>, permits: &mut Permits) -> End {
        let shared = self.shared;
        let mut held = Held::default();
        let mut decoder = TcpDecoder::new(DEFAULT_MAX_FRAME);
        let mut buf = vec![0u8; READ_CHUNK];
        let mut closing: Option<Instant> = None;
        loop {
            let now = Instant::now();
            while let Some((_, bytes)) = client.poll_transmit(now) {
                let frame = Bytes::from(frame_for_tcp(bytes));
                if self.frames.send(frame).await.is_err() {
                    return End::Broken("the stream's writer stopped".into());
                }
            }
            while let Some(ev) = client.poll_event() {
                match &ev {
                    TurnEvent::PermissionCreated(ip) => {
                        shared.socket.turn_permit_installed(*ip);
                        let waiting = held.take(*ip);
                        tracing::debug!(%ip, held = waiting.len(), "TURN permission installed");
                        for f in waiting {
                            // A full queue is a loss QUIC repairs.
                            let _ = self.frames.try_send(f);
                        }
                    }
                    TurnEvent::PermissionFailed(ip, _) => {
                        held.take(*ip);
                        permits.forget(*ip);
                        shared.socket.forget_turn_permit(*ip);
                    }
                    TurnEvent::Lost(_) => shared.socket.turn_permits_reset(),
                    _ => {}
                }
                match on_event(shared, client, ev) {
                    Next::Continue => {}
                    Next::Closed => return End::Done,
                    // A server that stops answering on a live stream: connect again.
                    Next::Failed(e @ TurnError::Timeout(_)) => return End::Broken(e.to_string()),
                    Next::Failed(e) => {
                        tracing::warn!(error = %e, "TURN: giving up on this server");
                        return End::Done;
                    }
                }
            }
            if closing.is_none() && shared.stopped.load(Ordering::Relaxed) {
                client.close(now);
                closing = Some(now + CLOSE_WAIT);
                continue;
            }
            let mut wake = client
                .poll_timeout()
                .unwrap_or(now + Duration::from_secs(1))
                .min(now + Duration::from_secs(1));
            if let Some(end) = closing {
                if now >= end {
                    publish(shared, client, |st| st.state = "closed");
                    return End::Done;
                }
                wake = wake.min(end);
            }
            tokio::select! {
                r = self.rd.read(&mut buf) => {
                    let n = match r {
                        Ok(0) => return End::Broken("the server closed the stream".into()),
                        Ok(n) => n,
                        Err(e) => return End::Broken(e.to_string()),
                    };
                    let now = Instant::now();
                    let mut input = &buf[..n];
                    while !input.is_empty() {
                        match decoder.decode(&mut input) {
                            Ok(Some(frame)) => {
                                if !shared.socket.turn_tcp_input(&frame) {
                                    client.handle_input(now, self.server, &frame);
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return End::Broken(e.to_string()),
                        }
                    }
                }
                Some(TurnCmd::Permit(ip)) = chans.cmds.recv() => {
                    permits.ask(shared, client, Instant::now(), ip);
                }
                Some(ip) = chans.from_socket.recv() => {
                    permits.ask(shared, client, Instant::now(), ip);
                }
                Some((ip, frame)) = chans.held.recv() => {
                    if client.has_permission(ip) {
                        let _ = self.frames.try_send(frame);
                    } else {
                        held.hold(ip, frame);
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => client.handle_timeout(Instant::now()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Indications waiting for a permission: at most 64 per IP and 1,024 in all; taking an
    /// IP's gives them back in order.
    #[test]
    fn held_indications_are_bounded() {
        let mut h = Held::default();
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0xC612_0000 + i));
        for n in 0..70u8 {
            h.hold(ip(0), Bytes::from(vec![n]));
        }
        assert_eq!((h.total, h.dropped), (HELD_PER_PEER, 6));
        for i in 1..40 {
            for n in 0..40u8 {
                h.hold(ip(i), Bytes::from(vec![n]));
            }
        }
        assert_eq!(h.total, TCP_FRAME_QUEUE);
        println!(
            "held {} of {} offered, {} dropped",
            h.total,
            70 + 39 * 40,
            h.dropped
        );
        let first = h.take(ip(0));
        assert_eq!(first.len(), HELD_PER_PEER);
        assert!(first.iter().enumerate().all(|(i, b)| b[0] as usize == i));
        assert_eq!(h.total, TCP_FRAME_QUEUE - HELD_PER_PEER);
    }
}

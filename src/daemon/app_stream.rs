//! Application streams on a session's QUIC connection (spec/03-session.md §10,
//! spec/06-node.md §1.5): an application protocol opens its own QUIC stream to a connected
//! peer — a file's bytes on it never queue a chat message behind them — sealed end to end
//! with keys from the session's key exchange (`session::stream`, `crypto::stream`).
//!
//! The opener writes STREAM_OPEN naming its kind; the accepting node reads it (within
//! [`OPEN_WAIT`]), and hands the stream to the protocol registered for that kind
//! ([`App::accept_stream`](super::App::accept_stream)). A stream of a kind nobody
//! registered, one whose protocol's queue is full, or one that does not open in time is
//! refused (reset); `max_extra_streams` refusals end the connection (STREAM_LIMIT). At most
//! `max_streams_per_connection` streams are open at once (QUIC's stream credit).

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, watch};

use crate::crypto::stream::StreamSecret;
use crate::crypto::{Fingerprint, MessageKind};
use crate::session::stream::{Opener, Read, Sealer, StreamError};

/// How long an accepted stream may take to name its kind, and an opener to wait for the
/// session's keys.
pub const OPEN_WAIT: Duration = Duration::from_secs(10);
/// Streams waiting for their protocol to take them (per registered kind).
pub const APP_STREAM_QUEUE: usize = 8;

/// The session's stream secret once it is up, with the peer it is with.
pub(crate) type StreamKeys = watch::Receiver<Option<(Fingerprint, StreamSecret)>>;

/// Why a stream could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum AppStreamError {
    /// No live session with the peer (reach it first: a message, or `NodeHandle::reach`).
    #[error("no live session with the peer")]
    NotConnected,
    /// The session's end-to-end keys did not come up in time.
    #[error("the session is not established")]
    NotEstablished,
    /// QUIC refused to open, or the stream was reset or stopped (e.g. the peer refused it).
    #[error("stream: {0}")]
    Quic(String),
    /// The bytes on the stream are not a valid sealed stream.
    #[error(transparent)]
    Protocol(#[from] StreamError),
}

/// One application stream, both directions. Write with [`AppStream::write`], end ours with
/// [`AppStream::finish`]; read with [`AppStream::read`] until `None` (the peer's sealed end).
#[derive(Debug)]
pub struct AppStream {
    peer: Fingerprint,
    kind: MessageKind,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    sealer: Sealer,
    opener: Opener,
    input: Bytes,
    out: BytesMut,
}

fn quic(e: impl std::fmt::Display) -> AppStreamError {
    AppStreamError::Quic(e.to_string())
}

impl AppStream {
    /// The peer at the other end (authenticated by the session).
    pub fn peer(&self) -> Fingerprint {
        self.peer
    }

    /// The application protocol the stream belongs to.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    async fn flush(&mut self) -> Result<(), AppStreamError> {
        let out = self.out.split().freeze();
        self.send.write_all(&out).await.map_err(quic)
    }

    /// Sends `data` (sealed in chunks of at most 64 KiB), waiting for QUIC's flow control.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), AppStreamError> {
        self.sealer.data(data, &mut self.out)?;
        self.flush().await
    }

    /// Ends our direction with its sealed end; the peer's reads end with `None`.
    pub async fn finish(&mut self) -> Result<(), AppStreamError> {
        self.sealer.finish(&mut self.out)?;
        self.flush().await?;
        self.send.finish().map_err(quic)
    }

    /// The next chunk from the peer; `None` after its sealed end. A stream cut short or
    /// tampered with is an error.
    pub async fn read(&mut self) -> Result<Option<Bytes>, AppStreamError> {
        loop {
            match self.opener.read(&mut self.input)? {
                Some(Read::Data(b)) => return Ok(Some(b)),
                Some(Read::End) => return Ok(None),
                Some(Read::Open(_)) => return Err(StreamError::Ended.into()),
                None => {}
            }
            match self.recv.read_chunk(64 * 1024, true).await.map_err(quic)? {
                Some(c) => self.input = c.bytes,
                None => {
                    self.opener.finish()?;
                    return Ok(None);
                }
            }
        }
    }
}

/// Waits (at most [`OPEN_WAIT`]) for the session's stream secret.
async fn secret(keys: &mut StreamKeys) -> Result<(Fingerprint, StreamSecret), AppStreamError> {
    let wait = keys.wait_for(Option::is_some);
    match tokio::time::timeout(OPEN_WAIT, wait).await {
        Ok(Ok(v)) => v.clone().ok_or(AppStreamError::NotEstablished),
        _ => Err(AppStreamError::NotEstablished),
    }
}

/// Opens a stream of `kind` on `conn`, the live session whose keys `keys` gives.
pub(crate) async fn open(
    conn: &quinn::Connection,
    mut keys: StreamKeys,
    kind: MessageKind,
) -> Result<AppStream, AppStreamError> {
    let (peer, secret) = secret(&mut keys).await?;
    let (send, recv) = conn.open_bi().await.map_err(quic)?;
    let (tx, rx) = secret
        .keys(u64::from(send.id()), true)
        .map_err(|_| AppStreamError::NotEstablished)?;
    let mut s = AppStream {
        peer,
        kind,
        send,
        recv,
        sealer: Sealer::new(tx),
        opener: Opener::new(rx, false),
        input: Bytes::new(),
        out: BytesMut::new(),
    };
    s.sealer.open(kind, &mut s.out)?;
    s.flush().await?;
    Ok(s)
}

/// Reads an accepted stream's STREAM_OPEN (within [`OPEN_WAIT`] once the session is up).
/// A stream that comes before our end of the key exchange finished waits for it: the
/// opener may be established a moment before us. One whose session never comes up waits
/// until the handshake timeout closes the connection (at most QUIC's stream credit of them).
async fn accept_one(
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    keys: &mut StreamKeys,
) -> Result<AppStream, AppStreamError> {
    let (peer, secret) = match keys.wait_for(Option::is_some).await {
        Ok(v) => v.clone().ok_or(AppStreamError::NotEstablished)?,
        Err(_) => return Err(AppStreamError::NotEstablished),
    };
    let (tx, rx) = secret
        .keys(u64::from(send.id()), false)
        .map_err(|_| AppStreamError::NotEstablished)?;
    let mut s = AppStream {
        peer,
        kind: MessageKind(0),
        send,
        recv,
        sealer: Sealer::new(tx),
        opener: Opener::new(rx, true),
        input: Bytes::new(),
        out: BytesMut::new(),
    };
    let kind = tokio::time::timeout(OPEN_WAIT, async {
        loop {
            if let Some(r) = s.opener.read(&mut s.input)? {
                return match r {
                    Read::Open(kind) => Ok(kind),
                    _ => Err(AppStreamError::Protocol(StreamError::Truncated)),
                };
            }
            match s.recv.read_chunk(1024, true).await.map_err(quic)? {
                Some(c) => s.input = c.bytes,
                None => return Err(StreamError::Truncated.into()),
            }
        }
    })
    .await
    .map_err(|_| AppStreamError::NotEstablished)??;
    s.kind = kind;
    Ok(s)
}

/// Accepts the streams a peer opens beyond the session stream and hands each to the
/// protocol registered for its kind; refuses the rest, and after `max_refused` refusals
/// says so on `flood` (the connection ends with STREAM_LIMIT).
pub(crate) async fn accept_loop(
    conn: quinn::Connection,
    mut keys: StreamKeys,
    apps: HashMap<MessageKind, mpsc::Sender<AppStream>>,
    max_refused: u32,
    flood: oneshot::Sender<()>,
) {
    let mut refused = 0u32;
    while let Ok((send, recv)) = conn.accept_bi().await {
        let why = match accept_one(send, recv, &mut keys).await {
            Ok(s) => match apps.get(&s.kind) {
                Some(q) => match q.try_send(s) {
                    Ok(()) => continue,
                    Err(e) => {
                        refuse(e.into_inner());
                        "its protocol's queue is full"
                    }
                },
                None => {
                    let kind = s.kind;
                    refuse(s);
                    tracing::debug!(kind = kind.0, "stream of a kind nobody registered: refused");
                    "no protocol for its kind"
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "a stream that did not open: refused");
                "it did not open"
            }
        };
        tracing::debug!(why, "application stream refused");
        refused += 1;
        if refused > max_refused {
            let _ = flood.send(());
            return;
        }
    }
}

fn refuse(mut s: AppStream) {
    let _ = s.recv.stop(0u32.into());
    let _ = s.send.reset(0u32.into());
}

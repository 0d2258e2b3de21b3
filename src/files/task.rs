//! The file protocol on a running node (spec/11-files.md §1, §4): the driver part of the
//! application — it reads and writes files and moves them on application streams; the
//! decisions it takes are the sans-IO core's (`tree`, `msg`, `have`, `name`).
//!
//! One task per node, started with [`start`] on the node's [`App`] of kind FILE. The
//! sender keeps each offer's leaf hashes in memory and answers a recipient's FILE_RANGE on
//! the stream the recipient opens; the recipient, once the user accepts, asks for the
//! missing leaves, checks each against the root before writing it, keeps the bitmap of
//! held leaves beside the partial file (`<state dir>/<id>.have`, written after the leaves
//! it lists), and after an interruption — a stream cut, a reconnect, a restart of either
//! side — asks again for what is missing.

// The driver of the file application: it reads files' times and waits between attempts.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::have::Have;
use super::msg::{FileId, FileMsg, Reason, MAX_RANGES};
use super::name::{numbered, sanitize};
use super::tree::{self, leaf_count, Hash, Tree, LEAF_SIZE};
use crate::crypto::{Fingerprint, MessageKind};
use crate::daemon::{App, AppMessage, AppStream, NodeHandle};

/// How long the recipient waits before asking again after a stream failed.
const RETRY: Duration = Duration::from_millis(500);
/// Offers of one peer waiting for the user at most; more are dropped (counted).
pub const MAX_PENDING_PER_PEER: usize = 16;
/// Offers waiting for the user at most, over all peers.
pub const MAX_PENDING: usize = 256;
/// Leaves the sender reads (and hashes, and encodes) per trip to a blocking thread: 1 MiB.
const READ_BATCH: u64 = 64;
/// Longest wait for reaching the sender before the next round tries again.
const REACH_WAIT: Duration = Duration::from_secs(5);
/// Held-leaf bitmap written after this many new leaves (512 KiB; and at every stream's
/// end): what a crash of the recipient makes it ask for again, beside what was in flight.
const HAVE_EVERY: u64 = 32;

/// Settings of the file application.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    /// Where the partial files and their bitmaps live.
    pub state_dir: PathBuf,
    /// Where finished files go.
    pub download_dir: PathBuf,
}

/// What the application tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileEvent {
    /// A peer offers a file: accept or reject it.
    Offer {
        /// The transfer.
        id: FileId,
        /// Who offers.
        from: Fingerprint,
        /// Its name, sanitized.
        name: String,
        /// Bytes.
        size: u64,
    },
    /// Our offer was accepted or refused.
    Answered {
        /// The transfer.
        id: FileId,
        /// Accepted.
        accepted: bool,
    },
    /// A file arrived whole and checked.
    Done {
        /// The transfer.
        id: FileId,
        /// Where it is.
        path: PathBuf,
        /// Leaves received more than once (resent after an interruption).
        leaves_twice: u64,
    },
    /// The recipient has every leaf of our file.
    Delivered {
        /// The transfer.
        id: FileId,
        /// Leaves we sent for it, over every stream (the file has `ceil(size / 16 KiB)`:
        /// the rest were sent again after an interruption).
        leaves_sent: u64,
    },
    /// A transfer ended without the file.
    Failed {
        /// The transfer.
        id: FileId,
        /// Why.
        reason: String,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// Reading or writing a file.
    #[error("file: {0}")]
    Io(#[from] std::io::Error),
    /// The node refused to send.
    #[error("send: {0}")]
    Send(String),
    /// No such transfer.
    #[error("no such transfer")]
    Unknown,
    /// The application has stopped.
    #[error("the file application stopped")]
    Stopped,
}

/// One transfer as [`Files::list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The transfer.
    pub id: FileId,
    /// We send it.
    pub outgoing: bool,
    /// The other side.
    pub peer: Fingerprint,
    /// The file's name (ours, or the sanitized offered one).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// `offered` (waiting for an answer or for the user), `receiving`, `sending`.
    pub state: &'static str,
    /// Leaves held by the recipient, when we receive it.
    pub leaves_held: Option<u64>,
    /// Leaves in the file.
    pub leaves: u64,
}

/// The application's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilesStats {
    /// Offers dropped: beyond [`MAX_PENDING_PER_PEER`] or [`MAX_PENDING`], or a known ID.
    pub offers_dropped: u64,
}

enum Cmd {
    Stats(oneshot::Sender<Result<FilesStats, FilesError>>),
    List(oneshot::Sender<Result<Vec<Transfer>, FilesError>>),
    Send(
        Fingerprint,
        PathBuf,
        oneshot::Sender<Result<FileId, FilesError>>,
    ),
    Accept(FileId, oneshot::Sender<Result<(), FilesError>>),
    Reject(FileId, oneshot::Sender<Result<(), FilesError>>),
}

/// Commands to the running file application.
#[derive(Clone)]
pub struct Files {
    tx: mpsc::Sender<Cmd>,
}

impl Files {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, FilesError>>) -> Cmd,
    ) -> Result<T, FilesError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| FilesError::Stopped)?;
        rx.await.map_err(|_| FilesError::Stopped)?
    }

    /// Offers the file at `path` to `peer` (its tree is computed first).
    pub async fn send_file(&self, peer: Fingerprint, path: &Path) -> Result<FileId, FilesError> {
        let path = path.to_path_buf();
        self.ask(|tx| Cmd::Send(peer, path, tx)).await
    }

    /// Accepts an offer: the transfer starts (and resumes by itself after interruptions).
    pub async fn accept(&self, id: FileId) -> Result<(), FilesError> {
        self.ask(|tx| Cmd::Accept(id, tx)).await
    }

    /// Refuses an offer.
    pub async fn reject(&self, id: FileId) -> Result<(), FilesError> {
        self.ask(|tx| Cmd::Reject(id, tx)).await
    }

    /// The application's counters.
    pub async fn stats(&self) -> Result<FilesStats, FilesError> {
        self.ask(Cmd::Stats).await
    }

    /// The transfers under way: offers waiting, files being received or sent.
    pub async fn list(&self) -> Result<Vec<Transfer>, FilesError> {
        self.ask(Cmd::List).await
    }
}

/// Our offer: the file and its leaf hashes.
struct Outgoing {
    peer: Fingerprint,
    path: PathBuf,
    size: u64,
    modified: Option<std::time::SystemTime>,
    tree: std::sync::Arc<Tree>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// What a stream answering a range needs of an offer.
type ServedOffer = (
    PathBuf,
    u64,
    Option<std::time::SystemTime>,
    std::sync::Arc<Tree>,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
);

/// An offer to us.
#[derive(Clone)]
struct Incoming {
    from: Fingerprint,
    size: u64,
    root: Hash,
    name: String,
    /// Leaves held, once accepted (the fetch task counts them).
    held: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// The sender cancelled: the fetch task stops.
    cancelled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The file application's state (the task owns it).
struct State {
    node: NodeHandle,
    cfg: FilesConfig,
    events: mpsc::Sender<FileEvent>,
    outgoing: HashMap<FileId, Outgoing>,
    incoming: HashMap<FileId, Incoming>,
    stats: FilesStats,
}

/// Starts the file application on `app` (kind FILE); its commands and its events.
pub fn start(app: App, cfg: FilesConfig) -> (Files, mpsc::Receiver<FileEvent>) {
    let (tx, rx) = mpsc::channel(64);
    let (ev_tx, ev_rx) = mpsc::channel(1024);
    tokio::spawn(run(app, cfg, rx, ev_tx));
    (Files { tx }, ev_rx)
}

async fn run(
    mut app: App,
    cfg: FilesConfig,
    mut cmds: mpsc::Receiver<Cmd>,
    events: mpsc::Sender<FileEvent>,
) {
    let _ = tokio::fs::create_dir_all(&cfg.state_dir).await;
    let _ = tokio::fs::create_dir_all(&cfg.download_dir).await;
    let Some(mut streams) = app.take_streams() else {
        return;
    };
    let outgoing = offers_kept(app.node(), &cfg).await;
    let mut incoming = HashMap::new();
    for (id, inc) in unfinished(&cfg).await {
        tracing::info!(id = %hex::encode(id), from = %inc.from, "resuming a file transfer");
        incoming.insert(id, inc.clone());
        tokio::spawn(fetch(
            app.node().clone(),
            cfg.clone(),
            events.clone(),
            id,
            inc,
        ));
    }
    let mut st = State {
        node: app.node().clone(),
        cfg,
        events,
        outgoing,
        incoming,
        stats: FilesStats::default(),
    };
    // The node's end is noticed within a second: the task then lets go of the node.
    let mut alive = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = alive.tick() => if !st.node.is_running() {
                return;
            },
            cmd = cmds.recv() => match cmd {
                Some(c) => on_cmd(&mut st, &app, c).await,
                None => return,
            },
            m = app.recv() => match m {
                Some(m) => on_message(&mut st, m).await,
                None => return,
            },
            s = streams.accept() => match s {
                Some(s) => serve_range(&st, s),
                None => return,
            },
        }
    }
}

async fn on_cmd(st: &mut State, app: &App, cmd: Cmd) {
    match cmd {
        Cmd::Send(peer, path, reply) => {
            let _ = reply.send(offer(st, app, peer, path).await);
        }
        Cmd::Stats(reply) => {
            let _ = reply.send(Ok(st.stats));
        }
        Cmd::List(reply) => {
            let _ = reply.send(Ok(list(st)));
        }
        Cmd::Accept(id, reply) => {
            let Some(inc) = st.incoming.get_mut(&id) else {
                let _ = reply.send(Err(FilesError::Unknown));
                return;
            };
            if inc.held.is_some() {
                let _ = reply.send(Ok(()));
                return;
            }
            inc.held = Some(Default::default());
            let inc = inc.clone();
            if let Err(e) = tokio::fs::write(meta_path(&st.cfg, &id), encode_meta(&inc)).await {
                let _ = reply.send(Err(e.into()));
                return;
            }
            let accept = FileMsg::Accept { id }.encode();
            let r = app.send(inc.from, accept.into()).await;
            let _ = reply.send(r.map(|_| ()).map_err(|e| FilesError::Send(e.to_string())));
            tokio::spawn(fetch(
                st.node.clone(),
                st.cfg.clone(),
                st.events.clone(),
                id,
                inc,
            ));
        }
        Cmd::Reject(id, reply) => {
            let Some(inc) = st.incoming.remove(&id) else {
                let _ = reply.send(Err(FilesError::Unknown));
                return;
            };
            let msg = FileMsg::Reject {
                id,
                reason: Reason::User,
            };
            let r = app.send(inc.from, msg.encode().into()).await;
            let _ = reply.send(r.map(|_| ()).map_err(|e| FilesError::Send(e.to_string())));
        }
    }
}

fn list(st: &State) -> Vec<Transfer> {
    use std::sync::atomic::Ordering;
    let mut out: Vec<Transfer> = st
        .incoming
        .iter()
        .map(|(id, i)| Transfer {
            id: *id,
            outgoing: false,
            peer: i.from,
            name: i.name.clone(),
            size: i.size,
            state: match i.held.as_ref().map(|h| h.load(Ordering::Relaxed)) {
                None => "offered",
                Some(h) if h == leaf_count(i.size) => "received",
                Some(_) => "receiving",
            },
            leaves_held: i.held.as_ref().map(|h| h.load(Ordering::Relaxed)),
            leaves: leaf_count(i.size),
        })
        .collect();
    out.extend(st.outgoing.iter().map(|(id, o)| {
        Transfer {
            id: *id,
            outgoing: true,
            peer: o.peer,
            name: o
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size: o.size,
            state: if o.sent.load(Ordering::Relaxed) > 0 {
                "sending"
            } else {
                "offered"
            },
            leaves_held: None,
            leaves: o.tree.len(),
        }
    }));
    out
}

/// Hashes the file's leaves (off the async workers) and sends FILE_META.
async fn offer(
    st: &mut State,
    app: &App,
    peer: Fingerprint,
    path: PathBuf,
) -> Result<FileId, FilesError> {
    let meta = tokio::fs::metadata(&path).await?;
    let tree = tree_of(&path).await?;
    let mut id: FileId = [0; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let msg = FileMsg::Meta {
        id,
        size: meta.len(),
        root: tree.root(),
        name,
    };
    app.send(peer, msg.encode().into())
        .await
        .map_err(|e| FilesError::Send(e.to_string()))?;
    let o = Outgoing {
        peer,
        path,
        size: meta.len(),
        modified: meta.modified().ok(),
        tree: std::sync::Arc::new(tree),
        sent: Default::default(),
    };
    tokio::fs::write(offer_path(&st.cfg, &id), encode_offer(&o)).await?;
    st.outgoing.insert(id, o);
    Ok(id)
}

async fn on_message(st: &mut State, m: AppMessage) {
    let Ok(msg) = FileMsg::decode(&m.body) else {
        tracing::debug!(from = %m.from, "a file message that does not parse: dropped");
        return;
    };
    let ev = match msg {
        FileMsg::Meta {
            id,
            size,
            root,
            name,
        } => {
            // Finished transfers leave the table when the next offer comes.
            st.incoming.retain(|_, i| {
                i.held.as_ref().is_none_or(|h| {
                    h.load(std::sync::atomic::Ordering::Relaxed) < leaf_count(i.size)
                })
            });
            let pending = |from: Option<Fingerprint>| {
                st.incoming
                    .values()
                    .filter(|i| i.held.is_none() && from.is_none_or(|f| i.from == f))
                    .count()
            };
            if st.incoming.contains_key(&id)
                || pending(Some(m.from)) >= MAX_PENDING_PER_PEER
                || pending(None) >= MAX_PENDING
            {
                st.stats.offers_dropped += 1;
                return;
            }
            let name = sanitize(&name);
            let inc = Incoming {
                from: m.from,
                size,
                root,
                name: name.clone(),
                held: None,
                cancelled: Default::default(),
            };
            st.incoming.insert(id, inc);
            FileEvent::Offer {
                id,
                from: m.from,
                name,
                size,
            }
        }
        FileMsg::Accept { id } | FileMsg::Reject { id, .. }
            if st.outgoing.get(&id).is_some_and(|o| o.peer == m.from) =>
        {
            let accepted = matches!(msg, FileMsg::Accept { .. });
            if !accepted {
                st.outgoing.remove(&id);
                remove_offer(&st.cfg, &id).await;
            }
            FileEvent::Answered { id, accepted }
        }
        FileMsg::Done { id } if st.outgoing.get(&id).is_some_and(|o| o.peer == m.from) => {
            let sent = st
                .outgoing
                .remove(&id)
                .map_or(0, |o| o.sent.load(std::sync::atomic::Ordering::Relaxed));
            remove_offer(&st.cfg, &id).await;
            FileEvent::Delivered {
                id,
                leaves_sent: sent,
            }
        }
        FileMsg::Cancel { id, reason } => {
            if st.outgoing.get(&id).is_some_and(|o| o.peer == m.from) {
                st.outgoing.remove(&id);
                remove_offer(&st.cfg, &id).await;
            } else if let Some(i) = st.incoming.get(&id).filter(|i| i.from == m.from) {
                i.cancelled
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                st.incoming.remove(&id);
            } else {
                return;
            }
            FileEvent::Failed {
                id,
                reason: reason.as_str().to_owned(),
            }
        }
        _ => return,
    };
    let _ = st.events.send(ev).await;
}

/// Answers one FILE_RANGE on its own task: the leaves asked, each with its audit path,
/// read from the file and checked against the offer's tree.
fn serve_range(st: &State, s: AppStream) {
    let offers: HashMap<FileId, ServedOffer> = st
        .outgoing
        .iter()
        .filter(|(_, o)| o.peer == s.peer())
        .map(|(id, o)| {
            let served = (
                o.path.clone(),
                o.size,
                o.modified,
                o.tree.clone(),
                o.sent.clone(),
            );
            (*id, served)
        })
        .collect();
    let (node, events) = (st.node.clone(), st.events.clone());
    tokio::spawn(async move {
        let peer = s.peer();
        match answer(s, offers).await {
            Ok(()) => {}
            Err(Served::Changed(id)) => {
                // The recipient stops asking; the offer stays refused from now on.
                cancel_changed(&node, peer, id).await;
                let reason = Reason::Changed.as_str().to_owned();
                let _ = events.send(FileEvent::Failed { id, reason }).await;
            }
            Err(Served::Other(e)) => tracing::debug!(error = %e, "file range not served"),
        }
    });
}

/// Why a range was not served.
enum Served {
    /// The offered file changed under us.
    Changed(FileId),
    /// Anything else (the stream, the disk, a bad request).
    Other(String),
}

impl From<String> for Served {
    fn from(e: String) -> Served {
        Served::Other(e)
    }
}

impl From<&str> for Served {
    fn from(e: &str) -> Served {
        Served::Other(e.to_owned())
    }
}

async fn answer(mut s: AppStream, offers: HashMap<FileId, ServedOffer>) -> Result<(), Served> {
    let first = s
        .read()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("empty stream")?;
    let FileMsg::Range { id, ranges } = FileMsg::decode(&first).map_err(|e| e.to_string())? else {
        return Err("the stream does not begin with FILE_RANGE".into());
    };
    let (path, size, modified, tree, sent) = offers.get(&id).ok_or("no such offer to this peer")?;
    let f = std::sync::Arc::new(std::fs::File::open(path).map_err(|e| e.to_string())?);
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if meta.len() != *size || meta.modified().ok() != *modified {
        return Err(Served::Changed(id));
    }
    let n = tree.len();
    for (first, end) in ranges {
        let mut leaf = first;
        while leaf < end.min(n) {
            let upto = (leaf + READ_BATCH).min(end.min(n));
            let (f, tree, size) = (f.clone(), tree.clone(), *size);
            let chunks =
                tokio::task::spawn_blocking(move || read_chunks(&f, &tree, size, leaf..upto))
                    .await
                    .map_err(|e| e.to_string())?;
            let Some(chunks) = chunks.map_err(|e| e.to_string())? else {
                return Err(Served::Changed(id));
            };
            for c in chunks {
                s.write(&c).await.map_err(|e| e.to_string())?;
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            leaf = upto;
        }
    }
    Ok(s.finish().await.map_err(|e| e.to_string())?)
}

/// Leaves `leaves` of the offered file as encoded FILE_CHUNKs, read in one go (off the async
/// workers); `None` if one no longer hashes to the offer's tree (the file changed).
fn read_chunks(
    f: &std::fs::File,
    tree: &Tree,
    size: u64,
    leaves: std::ops::Range<u64>,
) -> std::io::Result<Option<Vec<Vec<u8>>>> {
    use std::os::unix::fs::FileExt;
    let at = leaves.start * LEAF_SIZE as u64;
    let end = (leaves.end * LEAF_SIZE as u64).min(size);
    let mut buf = vec![0u8; (end - at) as usize];
    f.read_exact_at(&mut buf, at)?;
    let mut out = Vec::with_capacity(buf.len().div_ceil(LEAF_SIZE));
    for (i, data) in buf.chunks(LEAF_SIZE).enumerate() {
        let leaf = leaves.start + i as u64;
        if tree.leaf(leaf) != Some(tree::leaf_hash(data)) {
            return Ok(None);
        }
        let chunk = FileMsg::Chunk {
            leaf,
            path: tree.path(leaf),
            data: Bytes::copy_from_slice(data),
        };
        out.push(chunk.encode());
    }
    Ok(Some(out))
}

fn offer_path(cfg: &FilesConfig, id: &FileId) -> PathBuf {
    cfg.state_dir.join(format!("{}.offer", hex::encode(id)))
}

/// Our offer as kept on disk until it is delivered, refused or cancelled: the recipient,
/// the file's size and modification time (ns since the epoch) and its path, one per line.
fn encode_offer(o: &Outgoing) -> String {
    let ns = o
        .modified
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{}\n{}\n{}\n{}\n", o.peer, o.size, ns, o.path.display())
}

/// Tells `peer` that our offer `id` is off: the file changed (FILE_CANCEL, reason 2).
async fn cancel_changed(node: &NodeHandle, peer: Fingerprint, id: FileId) {
    let cancel = FileMsg::Cancel {
        id,
        reason: Reason::Changed,
    };
    let _ = node
        .send_kind(peer, MessageKind::FILE, [cancel.encode().into()])
        .await;
}

async fn remove_offer(cfg: &FilesConfig, id: &FileId) {
    let _ = tokio::fs::remove_file(offer_path(cfg, id)).await;
}

/// The tree of the file at `path`, hashed off the async workers.
async fn tree_of(path: &Path) -> std::io::Result<Tree> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<Tree> {
        use std::io::Read;
        let mut f = std::fs::File::open(p)?;
        let mut leaves = Vec::new();
        let mut buf = vec![0u8; LEAF_SIZE];
        loop {
            let mut filled = 0;
            while filled < LEAF_SIZE {
                match f.read(&mut buf[filled..])? {
                    0 => break,
                    n => filled += n,
                }
            }
            if filled == 0 {
                break;
            }
            leaves.push(tree::leaf_hash(&buf[..filled]));
            if filled < LEAF_SIZE {
                break;
            }
        }
        Ok(Tree::new(leaves))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Our offers a previous run left undelivered, their trees hashed again; an offer whose
/// file changed since is dropped (the recipient is told: FILE_CANCEL, reason 2).
async fn offers_kept(node: &NodeHandle, cfg: &FilesConfig) -> HashMap<FileId, Outgoing> {
    let mut out = HashMap::new();
    let Ok(mut dir) = tokio::fs::read_dir(&cfg.state_dir).await else {
        return out;
    };
    while let Ok(Some(e)) = dir.next_entry().await {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_suffix(".offer")
            .and_then(|h| hex::decode(h).ok())
            .and_then(|v| <FileId>::try_from(v).ok())
        else {
            continue;
        };
        let text = tokio::fs::read_to_string(e.path())
            .await
            .unwrap_or_default();
        let mut l = text.lines();
        let (Some(Ok(peer)), Some(Ok(size)), Some(Ok(ns)), Some(path)) = (
            l.next().map(str::parse::<Fingerprint>),
            l.next().map(str::parse::<u64>),
            l.next().map(str::parse::<u128>),
            l.next().map(PathBuf::from),
        ) else {
            continue;
        };
        let now = tokio::fs::metadata(&path).await.ok();
        let same = now.as_ref().is_some_and(|m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            m.len() == size && t.map(|d| d.as_nanos()) == Some(ns)
        });
        let tree = if same {
            tree_of(&path).await.ok()
        } else {
            None
        };
        let Some(tree) = tree else {
            cancel_changed(node, peer, id).await;
            remove_offer(cfg, &id).await;
            continue;
        };
        out.insert(
            id,
            Outgoing {
                peer,
                path,
                size,
                modified: now.and_then(|m| m.modified().ok()),
                tree: std::sync::Arc::new(tree),
                sent: Default::default(),
            },
        );
    }
    out
}

fn meta_path(cfg: &FilesConfig, id: &FileId) -> PathBuf {
    cfg.state_dir.join(format!("{}.meta", hex::encode(id)))
}

/// An accepted transfer, as kept on disk until it is done: `FILE_META`'s fields and the
/// sender, one per line (the sender's fingerprint, size, root, name).
fn encode_meta(inc: &Incoming) -> String {
    format!(
        "{}\n{}\n{}\n{}\n",
        inc.from,
        inc.size,
        hex::encode(inc.root),
        inc.name
    )
}

fn decode_meta(s: &str) -> Option<Incoming> {
    let mut l = s.lines();
    let from = l.next()?.parse().ok()?;
    let size = l.next()?.parse().ok()?;
    let root = hex::decode(l.next()?).ok()?.try_into().ok()?;
    let name = sanitize(l.next()?);
    Some(Incoming {
        from,
        size,
        root,
        name,
        held: Some(Default::default()),
        cancelled: Default::default(),
    })
}

/// The accepted transfers a previous run left unfinished: each resumes.
async fn unfinished(cfg: &FilesConfig) -> Vec<(FileId, Incoming)> {
    let mut out = Vec::new();
    let Ok(mut dir) = tokio::fs::read_dir(&cfg.state_dir).await else {
        return out;
    };
    while let Ok(Some(e)) = dir.next_entry().await {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(hex_id) = name.strip_suffix(".meta") else {
            continue;
        };
        let id: Option<FileId> = hex::decode(hex_id).ok().and_then(|v| v.try_into().ok());
        let text = tokio::fs::read_to_string(e.path())
            .await
            .unwrap_or_default();
        if let (Some(id), Some(inc)) = (id, decode_meta(&text)) {
            out.push((id, inc));
        }
    }
    out
}

fn part_path(cfg: &FilesConfig, id: &FileId) -> PathBuf {
    cfg.state_dir.join(format!("{}.part", hex::encode(id)))
}

fn have_path(cfg: &FilesConfig, id: &FileId) -> PathBuf {
    cfg.state_dir.join(format!("{}.have", hex::encode(id)))
}

/// The recipient's side: asks for the missing leaves until it holds all, then moves the
/// file into the download directory and says FILE_DONE.
async fn fetch(
    node: NodeHandle,
    cfg: FilesConfig,
    events: mpsc::Sender<FileEvent>,
    id: FileId,
    inc: Incoming,
) {
    let n = leaf_count(inc.size);
    let mut have = match tokio::fs::read(have_path(&cfg, &id)).await {
        Ok(b) => Have::decode(&b, n).unwrap_or_else(|_| Have::new(n)),
        Err(_) => Have::new(n),
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(part_path(&cfg, &id));
    let file = match file {
        Ok(f) => std::sync::Arc::new(f),
        Err(e) => {
            let _ = events
                .send(FileEvent::Failed {
                    id,
                    reason: e.to_string(),
                })
                .await;
            return;
        }
    };
    let mut twice = 0u64;
    let held = inc.held.clone().unwrap_or_default();
    held.store(have.count(), std::sync::atomic::Ordering::Relaxed);
    while !have.complete() {
        if inc.cancelled.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = tokio::fs::remove_file(part_path(&cfg, &id)).await;
            let _ = tokio::fs::remove_file(have_path(&cfg, &id)).await;
            let _ = tokio::fs::remove_file(meta_path(&cfg, &id)).await;
            return;
        }
        if !node.is_running() {
            // The node went away: the next start resumes from the bitmap on disk.
            return;
        }
        let mut rx = Receiving {
            have: &mut have,
            file: &file,
            twice: &mut twice,
            held: &held,
        };
        let round = fetch_round(&node, &cfg, &id, &inc, &mut rx).await;
        held.store(have.count(), std::sync::atomic::Ordering::Relaxed);
        match round {
            Ok(()) => {}
            Err(e) => {
                tracing::debug!(error = %e, "file stream ended early: asking again");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
    let f = file.clone();
    let _ = tokio::task::spawn_blocking(move || f.sync_all()).await;
    drop(file);
    let mut name = inc.name.clone();
    let mut k = 2;
    while tokio::fs::try_exists(cfg.download_dir.join(&name))
        .await
        .unwrap_or(false)
    {
        name = numbered(&inc.name, k);
        k += 1;
    }
    let dest = cfg.download_dir.join(&name);
    let ev = match tokio::fs::rename(part_path(&cfg, &id), &dest).await {
        Ok(()) => {
            let _ = tokio::fs::remove_file(have_path(&cfg, &id)).await;
            let _ = tokio::fs::remove_file(meta_path(&cfg, &id)).await;
            let done = FileMsg::Done { id }.encode();
            let _ = node
                .send_kind(inc.from, MessageKind::FILE, [done.into()])
                .await;
            FileEvent::Done {
                id,
                path: dest,
                leaves_twice: twice,
            }
        }
        Err(e) => FileEvent::Failed {
            id,
            reason: e.to_string(),
        },
    };
    let _ = events.send(ev).await;
}

/// What a round of the recipient writes to: the held leaves, the partial file and the
/// counters.
struct Receiving<'a> {
    have: &'a mut Have,
    file: &'a std::sync::Arc<std::fs::File>,
    twice: &'a mut u64,
    held: &'a std::sync::atomic::AtomicU64,
}

/// One stream: FILE_RANGE with the first missing runs, then the chunks, each checked.
async fn fetch_round(
    node: &NodeHandle,
    cfg: &FilesConfig,
    id: &FileId,
    inc: &Incoming,
    rx: &mut Receiving<'_>,
) -> Result<(), String> {
    let Receiving {
        have,
        file,
        twice,
        held,
    } = rx;
    let n = have.len();
    let ranges = have.missing(MAX_RANGES);
    let mut s = match node.open_stream(inc.from, MessageKind::FILE).await {
        Ok(s) => s,
        Err(crate::daemon::AppStreamError::NotConnected) => {
            // Reach the sender (bounded: the next round asks again), then open.
            let _ = tokio::time::timeout(REACH_WAIT, node.reach(inc.from)).await;
            node.open_stream(inc.from, MessageKind::FILE)
                .await
                .map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    let asked = FileMsg::Range {
        id: *id,
        ranges: ranges.clone(),
    };
    s.write(&asked.encode()).await.map_err(|e| e.to_string())?;
    s.finish().await.map_err(|e| e.to_string())?;
    // Checked leaves wait here and go to the disk together, with the bitmap after them.
    let mut batch: Vec<(u64, Bytes)> = Vec::new();
    while let Some(b) = s.read().await.map_err(|e| e.to_string())? {
        let Ok(FileMsg::Chunk { leaf, path, data }) = FileMsg::decode(&b) else {
            return Err("not a FILE_CHUNK".into());
        };
        let asked = ranges.iter().any(|(a, e)| (*a..*e).contains(&leaf));
        let want_len = (inc.size - (leaf * LEAF_SIZE as u64).min(inc.size)).min(LEAF_SIZE as u64);
        if !asked || data.len() as u64 != want_len {
            return Err(format!("leaf {leaf} not asked or of the wrong size"));
        }
        if !tree::verify(&inc.root, n, leaf, &tree::leaf_hash(&data), &path) {
            return Err(format!("leaf {leaf} fails its proof"));
        }
        if have.has(leaf) || batch.iter().any(|(l, _)| *l == leaf) {
            **twice += 1;
            continue;
        }
        batch.push((leaf, data));
        if batch.len() as u64 >= HAVE_EVERY {
            write_batch(
                file,
                have,
                held,
                std::mem::take(&mut batch),
                have_path(cfg, id),
            )
            .await?;
        }
    }
    write_batch(file, have, held, batch, have_path(cfg, id)).await
}

/// Writes checked leaves at their offsets, syncs them, then marks them held and replaces
/// the bitmap on disk (atomically): the bitmap never lists a leaf the disk does not hold.
async fn write_batch(
    file: &std::sync::Arc<std::fs::File>,
    have: &mut Have,
    held: &std::sync::atomic::AtomicU64,
    batch: Vec<(u64, Bytes)>,
    have_file: PathBuf,
) -> Result<(), String> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut next = have.clone();
    for (leaf, _) in &batch {
        next.set(*leaf);
    }
    let bitmap = next.encode();
    let f = file.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        for (leaf, data) in &batch {
            f.write_all_at(data, leaf * LEAF_SIZE as u64)?;
        }
        f.sync_data()?;
        let tmp = have_file.with_extension("have.tmp");
        std::fs::write(&tmp, &bitmap)?;
        std::fs::rename(&tmp, &have_file)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    *have = next;
    held.store(have.count(), std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

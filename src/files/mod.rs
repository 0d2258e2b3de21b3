//! File transfer, the protocol's sans-IO core (spec/11-files.md): the file's SHA-256 Merkle
//! tree over 16 KiB leaves and the audit paths that let each leaf be checked on arrival
//! ([`tree`]), the messages and their parser ([`msg`]), which leaves a recipient holds and
//! which it still asks for ([`have`]), and the name a received file gets ([`name`]).
//!
//! It is an application protocol on the node's extension point (spec/06-node.md §1.5):
//! control messages are node messages of kind FILE, data rides application streams of kind
//! FILE (spec/03-session.md §10). The core reads no clock, disk or socket; the one driver
//! part, `task` ([`start`]), runs the protocol on a node: it reads and writes the files and
//! moves them on the node's streams.

pub mod have;
pub mod msg;
pub mod name;
mod task;
pub mod tree;

pub use task::{
    start, FileEvent, Files, FilesConfig, FilesError, FilesStats, Transfer, MAX_PENDING,
    MAX_PENDING_PER_PEER,
};

//! The file protocol's messages (spec/11-files.md §3): their bytes and their parser. Control
//! messages are bodies of node messages of kind FILE (durable, end to end, through the
//! mailbox when the peer is offline); FILE_RANGE and FILE_CHUNK travel on an application
//! stream of kind FILE, one message per stream chunk. Every message begins with its type
//! (u16, from the wire registry's file range, spec/01 §3); the parser returns an error for
//! anything else and never allocates more than the input holds.

use bytes::{BufMut, Bytes};

use super::tree::{Hash, LEAF_SIZE, MAX_PATH};

/// A transfer's ID (chosen by the sender, random).
pub type FileId = [u8; 16];

/// Longest file name in an offer, bytes of UTF-8.
pub const MAX_NAME: usize = 255;
/// Most ranges in one FILE_RANGE.
pub const MAX_RANGES: usize = 64;

/// Why a transfer was refused or ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// The user said no, or cancelled.
    User = 0,
    /// Beyond the recipient's quota or free disk.
    TooLarge = 1,
    /// The sender's file changed under it (size, time or content).
    Changed = 2,
    /// Data that failed its proof too often.
    BadData = 3,
    /// Anything else.
    Other = 4,
}

impl Reason {
    fn from_u8(b: u8) -> Reason {
        match b {
            0 => Reason::User,
            1 => Reason::TooLarge,
            2 => Reason::Changed,
            3 => Reason::BadData,
            _ => Reason::Other,
        }
    }

    /// In words.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::User => "refused or cancelled by the user",
            Reason::TooLarge => "larger than the recipient's quota or free disk",
            Reason::Changed => "the file changed at the sender",
            Reason::BadData => "data failed verification",
            Reason::Other => "other",
        }
    }
}

/// A message of the file protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileMsg {
    /// The offer: a file's name, size and Merkle root (seed 000's FILE_META).
    Meta {
        /// The transfer.
        id: FileId,
        /// Bytes.
        size: u64,
        /// The root of its tree (spec/11 §2).
        root: Hash,
        /// Its name as the sender gave it (the recipient sanitizes it).
        name: String,
    },
    /// The recipient takes it; it will ask for ranges on a stream.
    Accept {
        /// The transfer.
        id: FileId,
    },
    /// The recipient refuses it.
    Reject {
        /// The transfer.
        id: FileId,
        /// Why.
        reason: Reason,
    },
    /// Either side ends it.
    Cancel {
        /// The transfer.
        id: FileId,
        /// Why.
        reason: Reason,
    },
    /// On a stream, the recipient's first chunk: which leaves it still needs,
    /// `[first, end)` each.
    Range {
        /// The transfer.
        id: FileId,
        /// Leaf ranges, in order, not overlapping.
        ranges: Vec<(u64, u64)>,
    },
    /// On a stream, the sender's answer: one leaf and its audit path (seed 000's
    /// FILE_CHUNK).
    Chunk {
        /// The leaf's index.
        leaf: u64,
        /// Its audit path (spec/11 §2).
        path: Vec<Hash>,
        /// Its bytes (16 KiB, the last leaf fewer).
        data: Bytes,
    },
    /// The recipient verified the whole file.
    Done {
        /// The transfer.
        id: FileId,
    },
}

/// Type numbers (the wire registry's file range, spec/01 §3).
pub mod types {
    /// FILE_META.
    pub const META: u16 = 0x0400;
    /// FILE_ACCEPT.
    pub const ACCEPT: u16 = 0x0401;
    /// FILE_REJECT.
    pub const REJECT: u16 = 0x0402;
    /// FILE_CANCEL.
    pub const CANCEL: u16 = 0x0403;
    /// FILE_RANGE.
    pub const RANGE: u16 = 0x0404;
    /// FILE_CHUNK.
    pub const CHUNK: u16 = 0x0405;
    /// FILE_DONE.
    pub const DONE: u16 = 0x0406;
}

/// What is wrong with a file message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileMsgError {
    /// Shorter than its fields.
    #[error("file message truncated")]
    Truncated,
    /// Bytes after its last field.
    #[error("{0} bytes after the file message")]
    Trailing(usize),
    /// A type this protocol does not have.
    #[error("unknown file message type 0x{0:04x}")]
    UnknownType(u16),
    /// A name that is empty, too long or not UTF-8.
    #[error("bad file name")]
    BadName,
    /// More ranges than allowed, or ranges out of order, empty or overlapping.
    #[error("bad range list")]
    BadRanges,
    /// An audit path longer than any tree's, or a leaf larger than 16 KiB.
    #[error("bad chunk")]
    BadChunk,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FileMsgError> {
        if self.0.len() < n {
            return Err(FileMsgError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, FileMsgError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FileMsgError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Result<u64, FileMsgError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], FileMsgError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn end(&self) -> Result<(), FileMsgError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(FileMsgError::Trailing(n)),
        }
    }
}

impl FileMsg {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            FileMsg::Meta {
                id,
                size,
                root,
                name,
            } => {
                v.put_u16(types::META);
                v.put_slice(id);
                v.put_u64(*size);
                v.put_slice(root);
                let name = &name.as_bytes()[..name.len().min(MAX_NAME)];
                v.put_u8(name.len() as u8);
                v.put_slice(name);
            }
            FileMsg::Accept { id } => {
                v.put_u16(types::ACCEPT);
                v.put_slice(id);
            }
            FileMsg::Reject { id, reason } => {
                v.put_u16(types::REJECT);
                v.put_slice(id);
                v.put_u8(*reason as u8);
            }
            FileMsg::Cancel { id, reason } => {
                v.put_u16(types::CANCEL);
                v.put_slice(id);
                v.put_u8(*reason as u8);
            }
            FileMsg::Range { id, ranges } => {
                v.put_u16(types::RANGE);
                v.put_slice(id);
                let ranges = &ranges[..ranges.len().min(MAX_RANGES)];
                v.put_u8(ranges.len() as u8);
                for (a, b) in ranges {
                    v.put_u64(*a);
                    v.put_u64(*b);
                }
            }
            FileMsg::Chunk { leaf, path, data } => {
                v.reserve(11 + 32 * path.len() + data.len());
                v.put_u16(types::CHUNK);
                v.put_u64(*leaf);
                let path = &path[..path.len().min(MAX_PATH)];
                v.put_u8(path.len() as u8);
                for h in path {
                    v.put_slice(h);
                }
                v.put_slice(data);
            }
            FileMsg::Done { id } => {
                v.put_u16(types::DONE);
                v.put_slice(id);
            }
        }
        v
    }

    /// Parses one message (the whole input).
    pub fn decode(b: &[u8]) -> Result<FileMsg, FileMsgError> {
        let mut r = Reader(b);
        let msg = match r.u16()? {
            types::META => {
                let id = r.arr()?;
                let size = r.u64()?;
                let root = r.arr()?;
                let n = usize::from(r.u8()?);
                let name = std::str::from_utf8(r.take(n)?).map_err(|_| FileMsgError::BadName)?;
                if name.is_empty() {
                    return Err(FileMsgError::BadName);
                }
                FileMsg::Meta {
                    id,
                    size,
                    root,
                    name: name.to_owned(),
                }
            }
            types::ACCEPT => FileMsg::Accept { id: r.arr()? },
            types::REJECT => FileMsg::Reject {
                id: r.arr()?,
                reason: Reason::from_u8(r.u8()?),
            },
            types::CANCEL => FileMsg::Cancel {
                id: r.arr()?,
                reason: Reason::from_u8(r.u8()?),
            },
            types::RANGE => {
                let id = r.arr()?;
                let n = usize::from(r.u8()?);
                if n == 0 || n > MAX_RANGES {
                    return Err(FileMsgError::BadRanges);
                }
                let mut ranges = Vec::with_capacity(n);
                let mut prev_end = 0;
                for _ in 0..n {
                    let (a, e) = (r.u64()?, r.u64()?);
                    if a >= e || a < prev_end {
                        return Err(FileMsgError::BadRanges);
                    }
                    prev_end = e;
                    ranges.push((a, e));
                }
                FileMsg::Range { id, ranges }
            }
            types::CHUNK => {
                let leaf = r.u64()?;
                let n = usize::from(r.u8()?);
                if n > MAX_PATH {
                    return Err(FileMsgError::BadChunk);
                }
                let mut path = Vec::with_capacity(n);
                for _ in 0..n {
                    path.push(r.arr()?);
                }
                let data = r.take(r.0.len())?;
                if data.len() > LEAF_SIZE {
                    return Err(FileMsgError::BadChunk);
                }
                FileMsg::Chunk {
                    leaf,
                    path,
                    data: Bytes::copy_from_slice(data),
                }
            }
            types::DONE => FileMsg::Done { id: r.arr()? },
            t => return Err(FileMsgError::UnknownType(t)),
        };
        r.end()?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_msg() -> impl Strategy<Value = FileMsg> {
        let id = any::<[u8; 16]>();
        prop_oneof![
            (id, any::<u64>(), any::<[u8; 32]>(), "[a-zA-Z0-9 ._-]{1,60}").prop_map(
                |(id, size, root, name)| FileMsg::Meta {
                    id,
                    size,
                    root,
                    name
                }
            ),
            id.prop_map(|id| FileMsg::Accept { id }),
            (id, 0u8..5).prop_map(|(id, r)| FileMsg::Reject {
                id,
                reason: Reason::from_u8(r)
            }),
            (id, 0u8..5).prop_map(|(id, r)| FileMsg::Cancel {
                id,
                reason: Reason::from_u8(r)
            }),
            (
                id,
                proptest::collection::vec((0u64..1000, 1u64..1000), 1..MAX_RANGES)
            )
                .prop_map(|(id, v)| {
                    let mut at = 0;
                    let ranges = v
                        .into_iter()
                        .map(|(gap, len)| {
                            let a = at + gap;
                            at = a + len;
                            (a, a + len)
                        })
                        .collect();
                    FileMsg::Range { id, ranges }
                }),
            (
                any::<u64>(),
                proptest::collection::vec(any::<[u8; 32]>(), 0..20),
                proptest::collection::vec(any::<u8>(), 0..LEAF_SIZE)
            )
                .prop_map(|(leaf, path, data)| FileMsg::Chunk {
                    leaf,
                    path,
                    data: data.into()
                }),
            id.prop_map(|id| FileMsg::Done { id }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(m in arb_msg()) {
            prop_assert_eq!(FileMsg::decode(&m.encode()), Ok(m));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = FileMsg::decode(&b);
        }

        #[test]
        fn a_cut_message_is_an_error(m in arb_msg(), cut in 1usize..40) {
            let b = m.encode();
            let cut = cut.min(b.len());
            // A chunk's data runs to the end: cut into it, it is a shorter chunk.
            if !matches!(m, FileMsg::Chunk { .. }) {
                prop_assert!(FileMsg::decode(&b[..b.len() - cut]).is_err());
            }
        }
    }

    #[test]
    fn bad_ranges_names_and_chunks_are_refused() {
        let id = [1; 16];
        let overlapping = FileMsg::Range {
            id,
            ranges: vec![(0, 5), (4, 9)],
        }
        .encode();
        assert_eq!(FileMsg::decode(&overlapping), Err(FileMsgError::BadRanges));
        let empty = FileMsg::Range {
            id,
            ranges: vec![(3, 3)],
        }
        .encode();
        assert_eq!(FileMsg::decode(&empty), Err(FileMsgError::BadRanges));
        let mut meta = FileMsg::Meta {
            id,
            size: 1,
            root: [0; 32],
            name: "a".into(),
        }
        .encode();
        let n = meta.len();
        meta[n - 1] = 0xFF;
        assert_eq!(FileMsg::decode(&meta), Err(FileMsgError::BadName));
        let mut big = FileMsg::Chunk {
            leaf: 0,
            path: vec![],
            data: vec![0; LEAF_SIZE].into(),
        }
        .encode();
        big.push(0);
        assert_eq!(FileMsg::decode(&big), Err(FileMsgError::BadChunk));
        assert_eq!(
            FileMsg::decode(&[0x04, 0x07]),
            Err(FileMsgError::UnknownType(0x0407))
        );
        let mut accept = FileMsg::Accept { id }.encode();
        accept.push(9);
        assert_eq!(FileMsg::decode(&accept), Err(FileMsgError::Trailing(1)));
    }
}

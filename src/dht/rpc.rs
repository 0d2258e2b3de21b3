//! DHT RPC messages: payloads of DNA frames in the DHT range (spec/04-dht.md §5).
//!
//! Every message starts with `request id u64 | flags u8` (bit 0: the sender is a DHT
//! server, i.e. reachable and willing to be in routing tables). A contact is
//! `id [20] | family u8 (4 or 6) | address [4 or 16] | port u16`. Decoding checks every
//! count and length against its limit before reading; it never panics.

use thiserror::Error;

use super::contact::Contact;
use crate::crypto::record::{RecordKind, RECORD_HEADER_LEN};
use crate::crypto::{Fingerprint, NodeId, SIGNATURE_LEN};
use crate::wire::addr::{get_socket_addr, put_socket_addr, AddrError};
use crate::wire::MessageType;

/// Most contacts in one answer.
pub const MAX_CONTACTS: usize = 20;
/// Most records in one VALUE answer.
pub const MAX_RECORDS: usize = 8;
/// Largest encoded record (a mailbox item at its limit: the largest body sealed).
pub const MAX_RECORD_LEN: usize = RECORD_HEADER_LEN
    + SIGNATURE_LEN
    + crate::crypto::record::MAX_MAILBOX_BODY
    + crate::crypto::sealed::SEALED_OVERHEAD
    + crate::crypto::drop::WRAP_OVERHEAD;

/// Flag bit: the sender is a DHT server.
pub const FLAG_SERVER: u8 = 0x01;

/// What a STORE achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StoreStatus {
    /// Stored (new or newer).
    Stored = 0,
    /// The identical record was held.
    Unchanged = 1,
    /// A newer sequence is held.
    Stale = 2,
    /// Same sequence, other content.
    Conflict = 3,
    /// The record did not verify.
    Invalid = 4,
    /// A quota (publisher, source, capacity) refused it.
    Refused = 5,
    /// A mailbox item: the key holds its cap and the sender's network holds as many of its
    /// items as any other (spec/09-mailbox.md §3.1).
    MailboxFull = 6,
    /// A mailbox item: the sender, or the sender's network, holds its share of the key.
    MailboxQuota = 7,
    /// A mailbox item: this node stores no mailbox items of others.
    NoMailbox = 8,
    /// A mailbox item its recipient's receipt lists: delivered already.
    Receipted = 9,
}

impl StoreStatus {
    /// What a refusal means, in a few words (`dna outbox`, events).
    pub fn reason(self) -> &'static str {
        match self {
            StoreStatus::Stored | StoreStatus::Unchanged => "stored",
            StoreStatus::Stale => "a newer record is held",
            StoreStatus::Conflict => "another record with this sequence is held",
            StoreStatus::Invalid => "invalid",
            StoreStatus::Refused => "quota or store full",
            StoreStatus::MailboxFull => "mailbox full",
            StoreStatus::MailboxQuota => "mailbox quota (sender or network)",
            StoreStatus::NoMailbox => "node stores no mailboxes",
            StoreStatus::Receipted => "already delivered",
        }
    }
}

impl StoreStatus {
    fn from_u8(b: u8) -> Option<StoreStatus> {
        Some(match b {
            0 => StoreStatus::Stored,
            1 => StoreStatus::Unchanged,
            2 => StoreStatus::Stale,
            3 => StoreStatus::Conflict,
            4 => StoreStatus::Invalid,
            5 => StoreStatus::Refused,
            6 => StoreStatus::MailboxFull,
            7 => StoreStatus::MailboxQuota,
            8 => StoreStatus::NoMailbox,
            9 => StoreStatus::Receipted,
            _ => return None,
        })
    }
}

/// The body of a DHT message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Which nodes do you know closest to `target`?
    FindNode {
        /// The target ID.
        target: NodeId,
    },
    /// Answer to FIND_NODE (and the node part of VALUE).
    Nodes {
        /// Closest contacts known, nearest first.
        nodes: Vec<Contact>,
    },
    /// Which records do you hold under `key`? (Else: closest nodes.)
    FindValue {
        /// The DHT key.
        key: NodeId,
    },
    /// The next page of a mailbox (spec/09-mailbox.md §6): the mailbox items under `key`
    /// after item `after` (publisher, item number). Sent as FIND_VALUE with the cursor
    /// after the key; answered by VALUE (items only, at most [`MAX_RECORDS`]).
    FindPage {
        /// The mailbox key.
        key: NodeId,
        /// The last item of the previous page.
        after: (Fingerprint, u64),
    },
    /// Answer to FIND_VALUE.
    Value {
        /// Encoded records held under the key.
        records: Vec<Vec<u8>>,
        /// Closest contacts known.
        nodes: Vec<Contact>,
    },
    /// Keep this record.
    Store {
        /// The encoded record.
        record: Vec<u8>,
    },
    /// Answer to STORE.
    Stored {
        /// What happened.
        status: StoreStatus,
    },
    /// Are you alive?
    Ping,
    /// Yes.
    Pong,
}

/// A DHT message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtMessage {
    /// Request ID chosen by the requester; answers echo it.
    pub id: u64,
    /// Flags ([`FLAG_SERVER`]).
    pub flags: u8,
    /// The body.
    pub body: Body,
}

/// A DHT payload failed to decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DhtWireError {
    /// The frame type is not a DHT message.
    #[error("{0} is not a DHT message type")]
    NotDht(MessageType),
    /// The payload ended early.
    #[error("truncated DHT payload: need {needed} more bytes")]
    Truncated {
        /// Bytes missing.
        needed: usize,
    },
    /// Bytes after the message.
    #[error("{0} bytes after the DHT message")]
    TrailingBytes(usize),
    /// A count is over its limit.
    #[error("{what}: {found} exceeds the limit of {max}")]
    TooMany {
        /// Which count.
        what: &'static str,
        /// The count.
        found: usize,
        /// The limit.
        max: usize,
    },
    /// An address family other than 4 or 6.
    #[error("unknown address family {0}")]
    BadFamily(u8),
    /// Unknown STORE status.
    #[error("unknown store status {0}")]
    BadStatus(u8),
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DhtWireError> {
        if self.b.len() < n {
            return Err(DhtWireError::Truncated {
                needed: n - self.b.len(),
            });
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, DhtWireError> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DhtWireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn id(&mut self) -> Result<NodeId, DhtWireError> {
        Ok(NodeId(self.array()?))
    }
    fn contacts(&mut self) -> Result<Vec<Contact>, DhtWireError> {
        let n = usize::from(self.u8()?);
        if n > MAX_CONTACTS {
            return Err(DhtWireError::TooMany {
                what: "contacts",
                found: n,
                max: MAX_CONTACTS,
            });
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let id = self.id()?;
            let (addr, used) = get_socket_addr(self.b).map_err(|e| match e {
                AddrError::Truncated { needed } => DhtWireError::Truncated { needed },
                AddrError::BadFamily(f) => DhtWireError::BadFamily(f),
            })?;
            self.b = &self.b[used..];
            v.push(Contact { id, addr });
        }
        Ok(v)
    }
    fn end(&self) -> Result<(), DhtWireError> {
        match self.b.len() {
            0 => Ok(()),
            n => Err(DhtWireError::TrailingBytes(n)),
        }
    }
}

fn put_contacts(out: &mut Vec<u8>, nodes: &[Contact]) {
    let n = nodes.len().min(MAX_CONTACTS);
    out.push(n as u8);
    for c in &nodes[..n] {
        out.extend_from_slice(&c.id.0);
        put_socket_addr(out, &c.addr);
    }
}

impl DhtMessage {
    /// The frame type that carries this message.
    pub fn msg_type(&self) -> MessageType {
        match self.body {
            Body::FindNode { .. } => MessageType::FindNode,
            Body::Nodes { .. } => MessageType::Nodes,
            Body::FindValue { .. } | Body::FindPage { .. } => MessageType::FindValue,
            Body::Value { .. } => MessageType::Value,
            Body::Store { .. } => MessageType::Store,
            Body::Stored { .. } => MessageType::Stored,
            Body::Ping => MessageType::DhtPing,
            Body::Pong => MessageType::DhtPong,
        }
    }

    /// Whether this is a request (as opposed to an answer).
    pub fn is_request(&self) -> bool {
        matches!(
            self.body,
            Body::FindNode { .. }
                | Body::FindValue { .. }
                | Body::FindPage { .. }
                | Body::Store { .. }
                | Body::Ping
        )
    }

    /// The payload bytes. Lists longer than their limits are cut to the limit.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.push(self.flags);
        match &self.body {
            Body::FindNode { target } => out.extend_from_slice(&target.0),
            Body::Nodes { nodes } => put_contacts(&mut out, nodes),
            Body::FindValue { key } => out.extend_from_slice(&key.0),
            Body::FindPage { key, after } => {
                out.extend_from_slice(&key.0);
                out.extend_from_slice(&after.0 .0);
                out.extend_from_slice(&after.1.to_be_bytes());
            }
            Body::Value { records, nodes } => {
                let records: Vec<&Vec<u8>> = records
                    .iter()
                    .filter(|r| r.len() <= MAX_RECORD_LEN)
                    .take(MAX_RECORDS)
                    .collect();
                out.push(records.len() as u8);
                for r in records {
                    out.extend_from_slice(&(r.len() as u32).to_be_bytes());
                    out.extend_from_slice(r);
                }
                put_contacts(&mut out, nodes);
            }
            Body::Store { record } => out.extend_from_slice(record),
            Body::Stored { status } => out.push(*status as u8),
            Body::Ping | Body::Pong => {}
        }
        out
    }

    /// Parses the payload of a frame of type `t`.
    pub fn decode(t: MessageType, payload: &[u8]) -> Result<DhtMessage, DhtWireError> {
        let mut r = Reader { b: payload };
        let id = u64::from_be_bytes(r.array()?);
        let flags = r.u8()?;
        let body = match t {
            MessageType::FindNode => Body::FindNode { target: r.id()? },
            MessageType::Nodes => Body::Nodes {
                nodes: r.contacts()?,
            },
            MessageType::FindValue => {
                let key = r.id()?;
                if r.b.is_empty() {
                    Body::FindValue { key }
                } else {
                    let fp = Fingerprint(r.array()?);
                    let item = u64::from_be_bytes(r.array()?);
                    Body::FindPage {
                        key,
                        after: (fp, item),
                    }
                }
            }
            MessageType::Value => {
                let n = usize::from(r.u8()?);
                if n > MAX_RECORDS {
                    return Err(DhtWireError::TooMany {
                        what: "records",
                        found: n,
                        max: MAX_RECORDS,
                    });
                }
                let mut records = Vec::with_capacity(n);
                for _ in 0..n {
                    let len = u32::from_be_bytes(r.array()?) as usize;
                    if len > MAX_RECORD_LEN {
                        return Err(DhtWireError::TooMany {
                            what: "record bytes",
                            found: len,
                            max: MAX_RECORD_LEN,
                        });
                    }
                    records.push(r.take(len)?.to_vec());
                }
                Body::Value {
                    records,
                    nodes: r.contacts()?,
                }
            }
            MessageType::Store => {
                let record = r.take(r.b.len())?;
                if record.len() > MAX_RECORD_LEN {
                    return Err(DhtWireError::TooMany {
                        what: "record bytes",
                        found: record.len(),
                        max: MAX_RECORD_LEN,
                    });
                }
                Body::Store {
                    record: record.to_vec(),
                }
            }
            MessageType::Stored => {
                let b = r.u8()?;
                Body::Stored {
                    status: StoreStatus::from_u8(b).ok_or(DhtWireError::BadStatus(b))?,
                }
            }
            MessageType::DhtPing => Body::Ping,
            MessageType::DhtPong => Body::Pong,
            other => return Err(DhtWireError::NotDht(other)),
        };
        r.end()?;
        Ok(DhtMessage { id, flags, body })
    }
}

/// Kinds whose records a VALUE may carry: all of them (listed so the limits stay in view).
pub const RECORD_KINDS: [RecordKind; 7] = [
    RecordKind::Presence,
    RecordKind::NameClaim,
    RecordKind::MailboxItem,
    RecordKind::KemKey,
    RecordKind::MailboxReceipt,
    RecordKind::MailboxDrop,
    RecordKind::DropReceipt,
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    fn contact(n: u8, v6: bool) -> Contact {
        let addr = if v6 {
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n.into())),
                4000 + u16::from(n),
            )
        } else {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)), 4000 + u16::from(n))
        };
        Contact {
            id: NodeId([n; 20]),
            addr,
        }
    }

    fn body() -> impl Strategy<Value = Body> {
        let contacts = prop::collection::vec(
            (any::<u8>(), any::<bool>()).prop_map(|(n, v6)| contact(n, v6)),
            0..=MAX_CONTACTS,
        );
        prop_oneof![
            any::<[u8; 20]>().prop_map(|t| Body::FindNode { target: NodeId(t) }),
            contacts.clone().prop_map(|nodes| Body::Nodes { nodes }),
            any::<[u8; 20]>().prop_map(|k| Body::FindValue { key: NodeId(k) }),
            (any::<[u8; 20]>(), any::<[u8; 32]>(), any::<u64>()).prop_map(|(k, f, i)| {
                Body::FindPage {
                    key: NodeId(k),
                    after: (Fingerprint(f), i),
                }
            }),
            (
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..=MAX_RECORDS),
                contacts
            )
                .prop_map(|(records, nodes)| Body::Value { records, nodes }),
            prop::collection::vec(any::<u8>(), 0..300).prop_map(|record| Body::Store { record }),
            (0u8..6).prop_map(|s| Body::Stored {
                status: StoreStatus::from_u8(s).unwrap()
            }),
            Just(Body::Ping),
            Just(Body::Pong),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(id in any::<u64>(), flags in any::<u8>(), body in body()) {
            let m = DhtMessage { id, flags, body };
            let bytes = m.encode();
            prop_assert_eq!(DhtMessage::decode(m.msg_type(), &bytes).unwrap(), m);
        }

        #[test]
        fn garbage_never_panics(t in 0x0100u16..0x0108, bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let t = MessageType::from_u16(t).unwrap();
            let _ = DhtMessage::decode(t, &bytes);
        }
    }

    #[test]
    fn limits_are_checked_before_reading() {
        let mut p = vec![0u8; 9];
        p.push(21);
        assert_eq!(
            DhtMessage::decode(MessageType::Nodes, &p),
            Err(DhtWireError::TooMany {
                what: "contacts",
                found: 21,
                max: MAX_CONTACTS
            })
        );
        let mut p = vec![0u8; 9];
        p.push(1);
        p.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            DhtMessage::decode(MessageType::Value, &p),
            Err(DhtWireError::TooMany {
                what: "record bytes",
                ..
            })
        ));
        assert!(matches!(
            DhtMessage::decode(MessageType::Data, &[0; 9]),
            Err(DhtWireError::NotDht(_))
        ));
        let mut p = DhtMessage {
            id: 1,
            flags: 0,
            body: Body::Ping,
        }
        .encode();
        p.push(0);
        assert_eq!(
            DhtMessage::decode(MessageType::DhtPing, &p),
            Err(DhtWireError::TrailingBytes(1))
        );
    }
}

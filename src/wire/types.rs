//! The message type registry (spec/01-wire.md §3).
//!
//! A type number is assigned once and never reused. Ranges are reserved per subsystem so that
//! later issues (DHT RPCs, signalling, mailbox, file transfer) add numbers without collisions.
//! The frame decoder accepts only numbers listed in [`MessageType`]; anything else is
//! [`FrameError::UnknownType`](super::FrameError::UnknownType).

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// Session types from the seed (0x0001–0x00FF).
pub const SESSION_RANGE: RangeInclusive<u16> = 0x0001..=0x00FF;
/// Reserved for DHT RPCs (spec/04-dht.md).
pub const DHT_RANGE: RangeInclusive<u16> = 0x0100..=0x01FF;
/// Reserved for rendezvous signalling and hole punching (spec/05-nat.md).
pub const SIGNALLING_RANGE: RangeInclusive<u16> = 0x0200..=0x02FF;
/// Reserved for the offline mailbox.
pub const MAILBOX_RANGE: RangeInclusive<u16> = 0x0300..=0x03FF;
/// Reserved for file transfer.
pub const FILE_RANGE: RangeInclusive<u16> = 0x0400..=0x04FF;

/// A registered DNA frame type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
#[repr(u16)]
pub enum MessageType {
    /// An end-to-end encrypted message (session form, spec/02-crypto.md).
    Data = 0x0001,
    /// Acknowledges one or more DATA frames.
    Ack = 0x0002,
    /// Keepalive request; the peer answers with PONG.
    Ping = 0x0003,
    /// Keepalive answer.
    Pong = 0x0004,
    /// Online / away / offline announcement.
    Presence = 0x0005,
    /// Connection authentication: Dilithium signature over the TLS exporter (spec/03 §2).
    Hello = 0x0006,
    /// End-to-end key exchange, first message (spec/02 §5.1).
    KexInit = 0x0007,
    /// End-to-end key exchange, second message.
    KexAccept = 0x0008,
    /// End-to-end key exchange, third message.
    KexFinish = 0x0009,
    /// An application stream's first frame: its kind, sealed (spec/03-session.md §10).
    StreamOpen = 0x000A,
    /// An application stream's chunk, sealed; an empty one ends the direction.
    StreamData = 0x000B,
    /// DHT: which nodes are closest to a target? (spec/04-dht.md §5)
    FindNode = 0x0100,
    /// DHT: closest nodes (answer).
    Nodes = 0x0101,
    /// DHT: which records are held under a key?
    FindValue = 0x0102,
    /// DHT: records and closest nodes (answer).
    Value = 0x0103,
    /// DHT: keep this record.
    Store = 0x0104,
    /// DHT: store result (answer).
    Stored = 0x0105,
    /// DHT: liveness check.
    DhtPing = 0x0106,
    /// DHT: liveness answer.
    DhtPong = 0x0107,
    /// Signalling: a signed hole-punching offer, caller → rendezvous → callee (spec/05 §4).
    Connect = 0x0200,
    /// Signalling: the callee's signed answer to CONNECT.
    ConnectAnswer = 0x0201,
    /// Signalling: the rendezvous node could not forward a CONNECT.
    ConnectError = 0x0202,
    /// Signalling: please forward CONNECT requests for me over this connection.
    RdvRegister = 0x0203,
    /// Signalling: registration accepted (answer).
    RdvRegistered = 0x0204,
    /// Signalling: relay me to this peer through you (spec/07-relay.md §1.2).
    RelayRequest = 0x0205,
    /// Signalling: the relayed pair is up; the tokens (answer).
    RelayGranted = 0x0206,
}

impl MessageType {
    /// Every registered type, in number order.
    pub const ALL: [MessageType; 26] = [
        MessageType::Data,
        MessageType::Ack,
        MessageType::Ping,
        MessageType::Pong,
        MessageType::Presence,
        MessageType::Hello,
        MessageType::KexInit,
        MessageType::KexAccept,
        MessageType::KexFinish,
        MessageType::StreamOpen,
        MessageType::StreamData,
        MessageType::FindNode,
        MessageType::Nodes,
        MessageType::FindValue,
        MessageType::Value,
        MessageType::Store,
        MessageType::Stored,
        MessageType::DhtPing,
        MessageType::DhtPong,
        MessageType::Connect,
        MessageType::ConnectAnswer,
        MessageType::ConnectError,
        MessageType::RdvRegister,
        MessageType::RdvRegistered,
        MessageType::RelayRequest,
        MessageType::RelayGranted,
    ];

    /// The number on the wire.
    pub const fn to_u16(self) -> u16 {
        self as u16
    }

    /// The type registered under `value`, if any.
    pub const fn from_u16(value: u16) -> Option<MessageType> {
        match value {
            0x0001 => Some(MessageType::Data),
            0x0002 => Some(MessageType::Ack),
            0x0003 => Some(MessageType::Ping),
            0x0004 => Some(MessageType::Pong),
            0x0005 => Some(MessageType::Presence),
            0x0006 => Some(MessageType::Hello),
            0x0007 => Some(MessageType::KexInit),
            0x0008 => Some(MessageType::KexAccept),
            0x0009 => Some(MessageType::KexFinish),
            0x000A => Some(MessageType::StreamOpen),
            0x000B => Some(MessageType::StreamData),
            0x0100 => Some(MessageType::FindNode),
            0x0101 => Some(MessageType::Nodes),
            0x0102 => Some(MessageType::FindValue),
            0x0103 => Some(MessageType::Value),
            0x0104 => Some(MessageType::Store),
            0x0105 => Some(MessageType::Stored),
            0x0106 => Some(MessageType::DhtPing),
            0x0107 => Some(MessageType::DhtPong),
            0x0200 => Some(MessageType::Connect),
            0x0201 => Some(MessageType::ConnectAnswer),
            0x0202 => Some(MessageType::ConnectError),
            0x0203 => Some(MessageType::RdvRegister),
            0x0204 => Some(MessageType::RdvRegistered),
            0x0205 => Some(MessageType::RelayRequest),
            0x0206 => Some(MessageType::RelayGranted),
            _ => None,
        }
    }

    /// The registry name, as used by the CLI and the spec (`DATA`, `ACK`, …).
    pub const fn name(self) -> &'static str {
        match self {
            MessageType::Data => "DATA",
            MessageType::Ack => "ACK",
            MessageType::Ping => "PING",
            MessageType::Pong => "PONG",
            MessageType::Presence => "PRESENCE",
            MessageType::Hello => "HELLO",
            MessageType::KexInit => "KEX_INIT",
            MessageType::KexAccept => "KEX_ACCEPT",
            MessageType::KexFinish => "KEX_FINISH",
            MessageType::StreamOpen => "STREAM_OPEN",
            MessageType::StreamData => "STREAM_DATA",
            MessageType::FindNode => "FIND_NODE",
            MessageType::Nodes => "NODES",
            MessageType::FindValue => "FIND_VALUE",
            MessageType::Value => "VALUE",
            MessageType::Store => "STORE",
            MessageType::Stored => "STORED",
            MessageType::DhtPing => "DHT_PING",
            MessageType::DhtPong => "DHT_PONG",
            MessageType::Connect => "CONNECT",
            MessageType::ConnectAnswer => "CONNECT_ANSWER",
            MessageType::ConnectError => "CONNECT_ERROR",
            MessageType::RdvRegister => "RDV_REGISTER",
            MessageType::RdvRegistered => "RDV_REGISTERED",
            MessageType::RelayRequest => "RELAY_REQUEST",
            MessageType::RelayGranted => "RELAY_GRANTED",
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is neither a registered name nor a registered number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown message type {0:?} (expected a registry name such as DATA or PING, or a registered number)"
)]
pub struct UnknownTypeName(pub String);

impl FromStr for MessageType {
    type Err = UnknownTypeName;

    /// Accepts a registry name (any case) or a number (decimal or `0x` hex).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let by_name = MessageType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s));
        let by_number = || {
            let n = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) => u16::from_str_radix(hex, 16).ok(),
                None => s.parse::<u16>().ok(),
            };
            n.and_then(MessageType::from_u16)
        };
        by_name
            .or_else(by_number)
            .ok_or_else(|| UnknownTypeName(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_sit_in_the_session_range() {
        for t in MessageType::ALL {
            assert_eq!(MessageType::from_u16(t.to_u16()), Some(t));
            assert!(
                SESSION_RANGE.contains(&t.to_u16())
                    || DHT_RANGE.contains(&t.to_u16())
                    || SIGNALLING_RANGE.contains(&t.to_u16())
            );
            assert_eq!(t.name().parse::<MessageType>(), Ok(t));
        }
        assert_eq!(MessageType::from_u16(0), None);
        assert_eq!(MessageType::from_u16(0x0108), None);
        assert_eq!(MessageType::from_u16(0x000C), None);
    }

    #[test]
    fn reserved_ranges_do_not_overlap() {
        let ranges = [
            SESSION_RANGE,
            DHT_RANGE,
            SIGNALLING_RANGE,
            MAILBOX_RANGE,
            FILE_RANGE,
        ];
        for w in ranges.windows(2) {
            assert!(w[0].end() < w[1].start());
        }
    }

    #[test]
    fn parses_numbers_and_names() {
        assert_eq!("data".parse::<MessageType>(), Ok(MessageType::Data));
        assert_eq!("0x0003".parse::<MessageType>(), Ok(MessageType::Ping));
        assert_eq!("5".parse::<MessageType>(), Ok(MessageType::Presence));
        assert!("12".parse::<MessageType>().is_err());
        assert!("GREETING".parse::<MessageType>().is_err());
    }
}

//! A store flood at one DHT server node (issue 9, Build 3; spec/04-dht.md §4.1): thousands
//! of throwaway identities from a few networks each send one STORE of a mailbox-sized record
//! to one real [`Dht`]; then a good publisher from another network stores its own record.
//! Every message goes through the real codec, as on the wire.
//!
//! The attackers' records are valid: signed by their (free) identities, under a mailbox key,
//! with a value that looks like a sealed envelope from the publisher (a storing node cannot
//! open one, so it checks only its header). IPv4 attackers use every address of their /24;
//! IPv6 attackers use a fresh /64 of their /48 per identity.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use dna_p2p::crypto::record::RecordKind;
use dna_p2p::crypto::{Fingerprint, Identity, Record, FORM_SEALED};
use dna_p2p::dht::{Body, Contact, Dht, DhtConfig, DhtMessage, StoreStats, StoreStatus};
use rand::Rng;

use crate::rng;

/// Unix time of the run (records are signed and checked against it).
const UNIX: u64 = 1_800_000_000;

/// Parameters of a flood.
#[derive(Debug, Clone)]
pub struct FloodConfig {
    /// Throwaway identities, one STORE each.
    pub identities: usize,
    /// IPv4 /24 networks the attackers send from.
    pub v4_networks: u8,
    /// IPv6 /48 networks the attackers send from.
    pub v6_networks: u8,
    /// Parameters of the server node.
    pub dht: DhtConfig,
    /// Seed of the values and addresses.
    pub seed: u64,
}

impl Default for FloodConfig {
    fn default() -> Self {
        FloodConfig {
            identities: 2000,
            v4_networks: 2,
            v6_networks: 2,
            dht: DhtConfig::default(),
            seed: 21,
        }
    }
}

/// What the server answered and holds.
#[derive(Debug, Clone, Default)]
pub struct FloodReport {
    /// STOREs answered STORED.
    pub stored: usize,
    /// Encoded bytes of the records answered STORED.
    pub stored_bytes: usize,
    /// STOREs answered REFUSED (quota or full).
    pub refused: usize,
    /// Any other answer (or none).
    pub other: usize,
    /// The server's store at the end: records, their cost in bytes (encoded + overhead),
    /// refusals and evictions.
    pub store: StoreStats,
    /// The good publisher's record was stored.
    pub good_stored: bool,
}

fn attacker_addr(i: usize, cfg: &FloodConfig) -> SocketAddr {
    let nets = usize::from(cfg.v4_networks) + usize::from(cfg.v6_networks);
    let net = i % nets.max(1);
    let n = i / nets.max(1);
    let ip: IpAddr = if net < usize::from(cfg.v4_networks) {
        Ipv4Addr::new(198, 18, net as u8, (n % 254 + 1) as u8).into()
    } else {
        let v6 = (net - usize::from(cfg.v4_networks)) as u16;
        // 2001:db8:<net>::/48, a fresh /64 per identity.
        Ipv6Addr::new(0x2001, 0xdb8, v6, n as u16, 0, 0, 0, 1).into()
    };
    SocketAddr::new(ip, 4567)
}

/// A mailbox item of `id` for `recipient`, signed at `now` (Unix seconds) to live an hour: a
/// value of `len` bytes whose header names `id` as the sender, signed into a record.
pub(crate) fn mailbox_record(
    id: &Identity,
    recipient: &Fingerprint,
    len: usize,
    now: u64,
    rng: &mut impl Rng,
) -> Vec<u8> {
    let mut value = vec![0u8; len];
    rng.fill(&mut value[..]);
    value[0] = 1;
    value[1] = FORM_SEALED;
    let pk = id.public_key().as_bytes();
    value[2..2 + pk.len()].copy_from_slice(pk);
    let fp = recipient.0;
    value[2 + pk.len()..2 + pk.len() + fp.len()].copy_from_slice(&fp);
    Record::sign(id, RecordKind::MailboxItem, 1, now + 3600, value, now)
        .expect("a valid mailbox item")
        .encode()
}

/// Sends one STORE from `from` to the server; its answer.
fn store(
    server: &mut Dht,
    now: Instant,
    from: Contact,
    record: Vec<u8>,
    id: u64,
) -> Option<StoreStatus> {
    let msg = DhtMessage {
        id,
        flags: 0,
        body: Body::Store { record },
    };
    let msg = DhtMessage::decode(msg.msg_type(), &msg.encode()).ok()?;
    server.handle_message(now, from, msg);
    let mut status = None;
    while let Some(t) = server.poll_transmit() {
        if let (true, Body::Stored { status: s }) = (t.to.id == from.id, t.msg.body) {
            status = Some(s);
        }
    }
    status
}

/// Runs one flood.
pub fn run(cfg: &FloodConfig, epoch: Instant) -> FloodReport {
    let mut rng = rng(cfg.seed);
    let server_id = Identity::generate(&mut rng);
    let mut server = Dht::new(
        server_id.fingerprint().node_id(),
        cfg.dht,
        (epoch, UNIX),
        rng.gen(),
    );
    let recipient = Identity::generate(&mut rng);
    let max_len = RecordKind::MailboxItem.max_value_len();
    let mut report = FloodReport::default();
    for i in 0..cfg.identities {
        let id = Identity::generate(&mut rng);
        let len = rng.gen_range(64 * 1024..=max_len);
        let record = mailbox_record(&id, &recipient.fingerprint(), len, UNIX, &mut rng);
        let size = record.len();
        let from = Contact {
            id: id.fingerprint().node_id(),
            addr: attacker_addr(i, cfg),
        };
        match store(&mut server, epoch, from, record, i as u64) {
            Some(StoreStatus::Stored) => {
                report.stored += 1;
                report.stored_bytes += size;
            }
            // A quota refused it: the store's bytes, or the mailbox key's share of one
            // network (spec/09-mailbox.md §3.1) — every item here is for one recipient.
            Some(StoreStatus::Refused | StoreStatus::MailboxQuota | StoreStatus::MailboxFull) => {
                report.refused += 1
            }
            _ => report.other += 1,
        }
    }
    // A good publisher from another network.
    let good = Identity::generate(&mut rng);
    let record = mailbox_record(&good, &recipient.fingerprint(), max_len, UNIX, &mut rng);
    let from = Contact {
        id: good.fingerprint().node_id(),
        addr: SocketAddr::new(Ipv4Addr::new(203, 0, 113, 7).into(), 4567),
    };
    report.good_stored =
        store(&mut server, epoch, from, record, u64::MAX) == Some(StoreStatus::Stored);
    report.store = server.store().stats();
    report
}

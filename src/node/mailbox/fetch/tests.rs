//! [`Fetch`] driven by hand: the order of its queries, paging, copies from two nodes kept
//! once, forged items refused, and the byte budget.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::OsRng;

use super::*;
use crate::crypto::{KemPublicKey, MessageId, MessageKind, Record};
use crate::dht::LookupStats;
use crate::node::mailbox::item::{item_record, ItemTo};
use crate::session::Outgoing;

const NOW: u64 = 1_800_000_000;

fn node(i: u8) -> Contact {
    Contact {
        id: NodeId([i; 20]),
        addr: SocketAddr::from(([10, 0, 0, i], 4567)),
    }
}

fn found(key: NodeId, closest: Vec<Contact>) -> Option<DhtEvent> {
    Some(DhtEvent::FoundNodes {
        query: 0,
        target: key,
        closest,
        stats: LookupStats {
            rounds: 1,
            requests: 1,
            elapsed: Duration::ZERO,
        },
    })
}

fn page(key: NodeId, records: &[VerifiedRecord]) -> Option<DhtEvent> {
    Some(DhtEvent::Page {
        query: 0,
        key,
        records: records.iter().map(|r| r.bytes().to_vec()).collect(),
        answered: true,
    })
}

fn msg(n: u8, len: usize) -> Outgoing {
    Outgoing {
        id: MessageId([n; 16]),
        timestamp_ms: 1,
        kind: MessageKind::TEXT,
        body: Bytes::from(vec![n; len]),
    }
}

fn items(
    from: &Identity,
    to: &Identity,
    kem: &KemPublicKey,
    drop: Option<&ContactDrop>,
    ns: std::ops::Range<u8>,
    len: usize,
) -> Vec<VerifiedRecord> {
    ns.map(|n| {
        let to = ItemTo {
            peer: to.fingerprint(),
            kem,
            drop,
        };
        item_record(from, to, &msg(n, len), NOW, 3600, &mut OsRng).unwrap()
    })
    .collect()
}

/// Drops first, then requests; a full page asks the next one after its last item; the
/// copies a second node holds are read and kept once; an item under the drop that does not
/// unwrap with its secret is refused.
#[test]
fn a_fetch_reads_the_drop_then_the_requests_page_by_page() {
    let (carol, alice) = (
        Identity::generate(&mut OsRng),
        Identity::generate(&mut OsRng),
    );
    let kem = carol.kem_public();
    let drop = Arc::new(ContactDrop::generate(&mut OsRng));
    let in_drop = items(&alice, &carol, kem, Some(&drop), 0..10, 8);
    let requests = items(&alice, &carol, kem, None, 10..12, 8);
    // An old contact who kept the drop writes an item wrapped for another drop.
    let forged = {
        let other = ContactDrop::generate(&mut OsRng);
        let sealed = requests[0].value().to_vec();
        let value = other.wrap(99, &sealed, &mut OsRng).unwrap();
        let rec = Record::sign(
            drop.identity(),
            RecordKind::MailboxDrop,
            99,
            NOW + 60,
            value,
            NOW,
        )
        .unwrap();
        VerifiedRecord::from_record(&rec)
    };
    let mut f = Fetch::new(carol.fingerprint(), vec![drop.clone()], MAX_FETCH_BYTES);
    let dk = drop.key();
    assert_eq!(f.poll_query(), Some(FetchQuery::FindNode(dk)));
    assert_eq!(f.poll_query(), None, "one query at a time");
    f.answer(found(dk, vec![node(1), node(2)]), NOW);
    let want = |to, after| FetchQuery::Page { to, key: dk, after };
    assert_eq!(f.poll_query(), Some(want(node(1), None)));
    f.answer(page(dk, &in_drop[..8]), NOW);
    let last = (in_drop[7].publisher(), in_drop[7].item());
    assert_eq!(f.poll_query(), Some(want(node(1), Some(last))));
    let mut rest = in_drop[8..].to_vec();
    rest.push(forged);
    f.answer(page(dk, &rest), NOW);
    assert_eq!(f.poll_query(), Some(want(node(2), None)));
    f.answer(page(dk, &in_drop[..3]), NOW);
    let rk = mailbox_key(&carol.fingerprint());
    assert_eq!(f.poll_query(), Some(FetchQuery::FindNode(rk)));
    f.answer(found(rk, vec![node(3)]), NOW);
    assert!(matches!(f.poll_query(), Some(FetchQuery::Page { key, .. }) if key == rk));
    f.answer(page(rk, &requests), NOW);
    assert_eq!(f.poll_query(), None);
    assert!(f.is_done());
    let out = f.finish(&carol).unwrap();
    assert_eq!(out.by_sender[&alice.fingerprint()].len(), 12);
    assert_eq!(out.invalid, 1, "the forged item");
    assert_eq!(out.listed.len(), 12);
    let cost = out.cost;
    assert_eq!((cost.lookups, cost.pages, cost.copies), (2, 4, 16));
}

/// The byte budget: once the next item does not fit, nothing more is asked — not the next
/// node, not the next key; what was taken opens.
#[test]
fn a_fetch_stops_at_its_byte_budget() {
    let (carol, alice) = (
        Identity::generate(&mut OsRng),
        Identity::generate(&mut OsRng),
    );
    let kem = carol.kem_public();
    let drop = Arc::new(ContactDrop::generate(&mut OsRng));
    let big = items(&alice, &carol, kem, Some(&drop), 0..8, 4000);
    let budget = 3 * big[0].value().len() + 10;
    let mut f = Fetch::new(carol.fingerprint(), vec![drop.clone()], budget);
    let dk = drop.key();
    assert_eq!(f.poll_query(), Some(FetchQuery::FindNode(dk)));
    f.answer(found(dk, vec![node(1), node(2)]), NOW);
    assert!(f.poll_query().is_some());
    f.answer(page(dk, &big), NOW);
    assert_eq!(
        f.poll_query(),
        None,
        "budget spent: no next page, node or key"
    );
    assert!(f.is_done());
    let out = f.finish(&carol).unwrap();
    assert_eq!(out.cost.copies, 3);
    assert_eq!(out.by_sender[&alice.fingerprint()].len(), 3);
}

/// A lookup that fails ends the fetch and it reports nothing.
#[test]
fn a_failed_lookup_reports_nothing() {
    let carol = Identity::generate(&mut OsRng);
    let mut f = Fetch::new(carol.fingerprint(), Vec::new(), MAX_FETCH_BYTES);
    assert!(matches!(f.poll_query(), Some(FetchQuery::FindNode(_))));
    f.answer(None, NOW);
    assert_eq!(f.poll_query(), None);
    assert!(f.finish(&carol).is_none());
}

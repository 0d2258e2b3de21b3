//! The offline mailbox under a sybil flood, end to end in simulation (issue 20, spec/09-mailbox.md
//! §1.1, §3.1): N real [`Dht`] server nodes on a simulated clock; a recipient, carol, with
//! contacts; 1,000 throwaway identities from a few networks fill her requests mailbox at the
//! k nodes that store it. Her contacts put one message each while the flood goes on — those
//! that hold her contact drop under its key, the others in the requests mailbox — through
//! their own DHT client nodes; then carol fetches with the daemon's own fetch machine
//! ([`Fetch`]) and opens what it read. Every message goes through the real codec.
//!
//! Items are made with the daemon's own [`item_record`]. The attacker is as strong as it can
//! be: it knows the k nodes closest to carol's mailbox key and sends its STOREs straight to
//! them. Carol's KEM key is handed to her contacts directly (the lookup of a KEM key record
//! is the DHT's ordinary get, proven elsewhere).

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dna_p2p::crypto::drop::ContactDrop;
use dna_p2p::crypto::record::mailbox_key;
use dna_p2p::crypto::{Identity, MessageId, MessageKind, NodeId};
use dna_p2p::dht::{
    Body, Contact, Dht, DhtConfig, DhtEvent, DhtMessage, Distance, QueryId, StoreStatus,
};
use dna_p2p::node::mailbox::fetch::{Fetch, FetchCost, FetchQuery, MAX_FETCH_BYTES};
use dna_p2p::node::mailbox::item::{held, item_record, ItemTo};
use dna_p2p::session::Outgoing;
use rand::Rng;

use crate::{rng, LinkModel, Scheduler, SimRng};

/// Unix time at the start of the run (records are signed and checked against it).
const UNIX: u64 = 1_800_000_000;

/// Parameters of a run.
#[derive(Debug, Clone)]
pub struct MailboxSimConfig {
    /// DHT server nodes (the storing nodes).
    pub servers: usize,
    /// Throwaway identities of the attacker.
    pub sybils: usize,
    /// IPv4 /24 networks they send from.
    pub sybil_networks: u8,
    /// Items each of them puts in carol's requests mailbox.
    pub items_per_sybil: usize,
    /// Bytes of each sybil item's body.
    pub sybil_body: usize,
    /// Carol's contacts, each on a network of its own; one message each.
    pub contacts: usize,
    /// How many of them do not hold carol's drop yet (they write to her requests mailbox).
    pub contacts_without_drop: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// DHT parameters.
    pub dht: DhtConfig,
}

impl Default for MailboxSimConfig {
    fn default() -> Self {
        MailboxSimConfig {
            servers: 60,
            sybils: 1000,
            sybil_networks: 16,
            items_per_sybil: 2,
            sybil_body: 1024,
            contacts: 10,
            contacts_without_drop: 2,
            seed: 20,
            dht: DhtConfig::default(),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct MailboxSimReport {
    /// Sybil STOREs answered STORED, refused (any quota), or otherwise.
    pub sybil_stored: usize,
    /// … refused.
    pub sybil_refused: usize,
    /// … other answers.
    pub sybil_other: usize,
    /// Items under carol's requests key at each of its k storing nodes, and how many of
    /// them are strangers'.
    pub held: Vec<(usize, usize)>,
    /// Items evicted for lighter networks over those nodes.
    pub evicted: u64,
    /// Per contact: how many other nodes hold its item after its put (and why, if none).
    pub contact_puts: Vec<(usize, &'static str)>,
    /// Contacts whose message carol opened, exactly once, with the body they sent.
    pub delivered: usize,
    /// Messages carol opened in all (strangers' included).
    pub opened: usize,
    /// Items that did not open.
    pub invalid: u64,
    /// What carol's fetch cost.
    pub fetch: FetchCost,
    /// Simulated time of the fetch.
    pub fetch_time: Duration,
    /// DHT messages sent in the whole run.
    pub messages: u64,
}

enum Event {
    Deliver {
        to: usize,
        from: Contact,
        msg: DhtMessage,
    },
    Timer {
        node: usize,
        at: Duration,
    },
}

/// A network of [`Dht`] nodes; answers to addresses of no node (the sybils) are tallied.
struct Net {
    sched: Scheduler<Event>,
    nodes: Vec<Dht>,
    contacts: Vec<Contact>,
    by_addr: HashMap<SocketAddr, usize>,
    timers: Vec<Option<Duration>>,
    events: Vec<VecDeque<DhtEvent>>,
    rng: SimRng,
    link: LinkModel,
    epoch: Instant,
    /// STORED statuses sent to addresses of no node.
    to_strangers: Vec<StoreStatus>,
    messages: u64,
}

impl Net {
    fn now(&self) -> Instant {
        self.epoch + self.sched.now()
    }

    fn add(&mut self, id: NodeId, addr: SocketAddr, cfg: DhtConfig, server: bool) -> usize {
        let mut dht = Dht::new(id, cfg, (self.epoch, UNIX), self.rng.gen());
        dht.set_server(server);
        let i = self.nodes.len();
        self.nodes.push(dht);
        self.contacts.push(Contact { id, addr });
        self.by_addr.insert(addr, i);
        self.timers.push(None);
        self.events.push(VecDeque::new());
        i
    }

    fn send(&mut self, from: Contact, to: Contact, msg: DhtMessage) {
        self.messages += 1;
        // Through the real codec, as on the wire.
        let Ok(msg) = DhtMessage::decode(msg.msg_type(), &msg.encode()) else {
            return;
        };
        let Some(&j) = self.by_addr.get(&to.addr) else {
            if let Body::Stored { status } = msg.body {
                self.to_strangers.push(status);
            }
            return;
        };
        if let Some(delay) = self.link.sample(&mut self.rng) {
            self.sched
                .schedule_in(delay, Event::Deliver { to: j, from, msg });
        }
    }

    fn flush(&mut self, i: usize) {
        let from = self.contacts[i];
        while let Some(t) = self.nodes[i].poll_transmit() {
            self.send(from, t.to, t.msg);
        }
        while let Some(ev) = self.nodes[i].poll_event() {
            self.events[i].push_back(ev);
        }
        let at = self.nodes[i]
            .poll_timeout()
            .saturating_duration_since(self.epoch);
        if self.timers[i].is_none_or(|s| at < s) {
            self.timers[i] = Some(at);
            self.sched.schedule_at(at, Event::Timer { node: i, at });
        }
    }

    fn step(&mut self) -> bool {
        let Some((_, ev)) = self.sched.pop() else {
            return false;
        };
        match ev {
            Event::Deliver { to, from, msg } => {
                let now = self.now();
                self.nodes[to].handle_message(now, from, msg);
                self.flush(to);
            }
            Event::Timer { node, at } => {
                if self.timers[node] == Some(at) {
                    self.timers[node] = None;
                    let now = self.now();
                    self.nodes[node].handle_timeout(now);
                    self.flush(node);
                }
            }
        }
        true
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.sched.now() + d;
        while self.sched.peek_time().is_some_and(|t| t <= until) {
            self.step();
        }
    }

    /// Starts a query at node `i` and runs until its event comes (None if it never does).
    fn query(
        &mut self,
        i: usize,
        start: impl FnOnce(&mut Dht, Instant) -> QueryId,
    ) -> Option<DhtEvent> {
        let now = self.now();
        let q = start(&mut self.nodes[i], now);
        self.flush(i);
        loop {
            if let Some(k) = self.events[i].iter().position(|e| query_of(e) == q) {
                return self.events[i].remove(k);
            }
            if !self.step() {
                return None;
            }
        }
    }
}

fn query_of(e: &DhtEvent) -> QueryId {
    match e {
        DhtEvent::FoundNodes { query, .. }
        | DhtEvent::FoundValue { query, .. }
        | DhtEvent::Put { query, .. }
        | DhtEvent::Page { query, .. }
        | DhtEvent::Bootstrapped { query, .. } => *query,
    }
}

fn message(n: u32, body: Vec<u8>) -> Outgoing {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    Outgoing {
        id: MessageId(id),
        timestamp_ms: UNIX * 1000,
        kind: MessageKind::TEXT,
        body: body.into(),
    }
}

fn addr(a: u8, b: u8, c: u8) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(10, a, b, c).into(), 4567)
}

/// Runs one scenario.
pub fn run(cfg: &MailboxSimConfig, epoch: Instant) -> MailboxSimReport {
    let mut net = Net {
        sched: Scheduler::new(),
        nodes: Vec::new(),
        contacts: Vec::new(),
        by_addr: HashMap::new(),
        timers: Vec::new(),
        events: Vec::new(),
        rng: rng(cfg.seed),
        link: LinkModel::default(),
        epoch,
        to_strangers: Vec::new(),
        messages: 0,
    };
    // The storing nodes join through the first two, a second apart.
    for i in 0..cfg.servers.max(3) {
        let id = NodeId(net.rng.gen());
        net.add(
            id,
            addr(200, (i / 250) as u8, (i % 250) as u8 + 1),
            cfg.dht,
            true,
        );
    }
    let seeds = vec![net.contacts[0], net.contacts[1]];
    for i in 1..net.nodes.len() {
        let s = if i == 1 {
            vec![seeds[0]]
        } else {
            seeds.clone()
        };
        net.query(i, |d, now| d.bootstrap(s, now));
        net.run_for(Duration::from_millis(200));
    }
    net.run_for(Duration::from_secs(30));

    let mut rng = net.rng.clone();
    let carol = Identity::generate(&mut rng);
    let kem = carol.kem_public();
    let drop = Arc::new(ContactDrop::generate(&mut rng));
    let join = |net: &mut Net, a: SocketAddr, fp: NodeId| {
        let i = net.add(fp, a, cfg.dht, false);
        net.query(i, |d, now| d.bootstrap(seeds.clone(), now));
        i
    };
    let carol_node = join(&mut net, addr(100, 0, 1), carol.fingerprint().node_id());

    // The attacker's targets: the k storing nodes closest to carol's requests key.
    let key = mailbox_key(&carol.fingerprint());
    let mut closest: Vec<usize> = (0..cfg.servers.max(3)).collect();
    closest.sort_by_key(|&i| Distance::between(&net.contacts[i].id, &key));
    closest.truncate(cfg.dht.routing.k);

    let sybil_round = |net: &mut Net, rng: &mut SimRng, range: std::ops::Range<usize>| {
        for s in range {
            let id = Identity::generate(rng);
            let net_no = (s % usize::from(cfg.sybil_networks.max(1))) as u8;
            let host = (s / usize::from(cfg.sybil_networks.max(1)) % 250) as u8 + 1;
            let from = Contact {
                id: id.fingerprint().node_id(),
                addr: addr(1, net_no, host),
            };
            for q in 0..cfg.items_per_sybil {
                let mut body = vec![0u8; cfg.sybil_body];
                rng.fill(&mut body[..]);
                let m = message((s * cfg.items_per_sybil + q) as u32, body);
                let to = ItemTo {
                    peer: carol.fingerprint(),
                    kem,
                    drop: None,
                };
                let Ok(r) = item_record(&id, to, &m, UNIX, 3600, rng) else {
                    continue;
                };
                for (n, &j) in closest.iter().enumerate() {
                    let msg = DhtMessage {
                        id: (s * 64 + q * 32 + n) as u64,
                        flags: 0,
                        body: Body::Store {
                            record: r.bytes().to_vec(),
                        },
                    };
                    net.send(from, net.contacts[j], msg);
                }
            }
            // Let the storing nodes take this sybil's STOREs.
            net.run_for(Duration::from_millis(5));
        }
        net.run_for(Duration::from_secs(1));
    };

    // Half the flood, then the contacts, then the rest of the flood.
    sybil_round(&mut net, &mut rng, 0..cfg.sybils / 2);
    let mut report = MailboxSimReport::default();
    let mut sent = Vec::new();
    for c in 0..cfg.contacts {
        let id = Identity::generate(&mut rng);
        let node = join(
            &mut net,
            addr(50 + c as u8, 0, 1),
            id.fingerprint().node_id(),
        );
        let body = format!("from contact {c}").into_bytes();
        let m = message(1_000_000 + c as u32, body.clone());
        let to = ItemTo {
            peer: carol.fingerprint(),
            kem,
            drop: (c >= cfg.contacts_without_drop).then_some(&*drop),
        };
        let r = item_record(&id, to, &m, UNIX, 3600, &mut rng).expect("a contact's item");
        let ev = net.query(node, |d, now| d.put_once(r, now));
        report.contact_puts.push(match ev {
            Some(DhtEvent::Put {
                stored_at,
                asked,
                refused,
                ..
            }) => held(stored_at, asked, &refused),
            _ => (0, "no answer"),
        });
        sent.push((id.fingerprint(), m.id, body));
    }
    sybil_round(&mut net, &mut rng, cfg.sybils / 2..cfg.sybils);
    for s in &net.to_strangers {
        match s {
            StoreStatus::Stored => report.sybil_stored += 1,
            StoreStatus::Refused | StoreStatus::MailboxQuota | StoreStatus::MailboxFull => {
                report.sybil_refused += 1
            }
            _ => report.sybil_other += 1,
        }
    }
    let strangers: std::collections::HashSet<_> = sent.iter().map(|s| s.0).collect();
    for &j in &closest {
        let items = net.nodes[j].store().get(&key, UNIX);
        let theirs = items
            .iter()
            .filter(|b| {
                dna_p2p::dht::VerifiedRecord::verify(b, UNIX)
                    .is_ok_and(|r| !strangers.contains(&r.publisher()))
            })
            .count();
        report.held.push((items.len(), theirs));
        report.evicted += net.nodes[j].store().stats().mailbox_evicted;
    }

    // Carol comes back and fetches with the daemon's fetch.
    let started = net.sched.now();
    let mut f = Fetch::new(carol.fingerprint(), vec![drop], MAX_FETCH_BYTES);
    while let Some(q) = f.poll_query() {
        let ev = match q {
            FetchQuery::FindNode(k) => net.query(carol_node, |d, now| d.find_node(k, now)),
            FetchQuery::Page { to, key, after } => {
                net.query(carol_node, |d, now| d.fetch_page(to, key, after, now))
            }
        };
        f.answer(ev, UNIX + net.sched.now().as_secs());
    }
    report.fetch_time = net.sched.now() - started;
    if let Some(opened) = f.finish(&carol) {
        report.fetch = opened.cost;
        report.invalid = opened.invalid;
        report.opened = opened.by_sender.values().map(Vec::len).sum();
        report.delivered = sent
            .iter()
            .filter(|(from, id, body)| {
                opened.by_sender.get(from).is_some_and(|msgs| {
                    msgs.len() == 1 && msgs[0].id == *id && msgs[0].body[..] == body[..]
                })
            })
            .count();
    }
    report.messages = net.messages;
    report
}

impl MailboxSimReport {
    /// A few lines for people.
    pub fn summary(&self, cfg: &MailboxSimConfig) -> String {
        let held: Vec<String> = self
            .held
            .iter()
            .map(|(all, s)| format!("{s}/{all}"))
            .collect();
        let puts: Vec<String> = self
            .contact_puts
            .iter()
            .map(|(n, why)| {
                if *n > 0 {
                    n.to_string()
                } else {
                    why.to_string()
                }
            })
            .collect();
        format!(
            "mailbox flood: {} sybils from {} /24s × {} items of {} B at the {} nodes storing carol's requests; {} contacts ({} without her drop)\n\
             \x20 sybil STOREs: {} stored, {} refused, {} other; {} evicted for lighter networks\n\
             \x20 strangers' items held per storing node (strangers/all): {}\n\
             \x20 contacts' puts held by: [{}]\n\
             \x20 carol's fetch: {} lookups, {} pages, {} copies read, {:.1} s simulated; {} messages opened, {} invalid\n\
             \x20 RESULT: {} of {} contacts' messages delivered through the mailbox\n",
            cfg.sybils,
            cfg.sybil_networks,
            cfg.items_per_sybil,
            cfg.sybil_body,
            self.held.len(),
            cfg.contacts,
            cfg.contacts_without_drop,
            self.sybil_stored,
            self.sybil_refused,
            self.sybil_other,
            self.evicted,
            held.join(" "),
            puts.join(", "),
            self.fetch.lookups,
            self.fetch.pages,
            self.fetch.copies,
            self.fetch_time.as_secs_f64(),
            self.opened,
            self.invalid,
            self.delivered,
            cfg.contacts,
        )
    }
}

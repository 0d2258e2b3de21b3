//! The DHT in simulation: N real [`Dht`] state machines in one process on a simulated clock
//! (issue: "netsim proves the DHT at 10,000 nodes").
//!
//! Each run: N nodes with random IDs and addresses join one after another through two
//! bootstrap nodes; after a settling time a fraction crash without notice (churn), a
//! fraction may misbehave (drop requests, or answer with wrong nodes); then `lookups` times a
//! random live node looks up a random live node's ID. A lookup succeeds when the target is
//! among the nodes it returns. Every message goes through the real codec (encode → decode)
//! and a seeded link model. Same seed, same run.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use dna_p2p::crypto::NodeId;
use dna_p2p::dht::{Body, Contact, Dht, DhtConfig, DhtEvent, DhtMessage, LookupStats, QueryId};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::{rng, LinkModel, Scheduler, SimRng};

/// How misbehaving nodes misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evil {
    /// Never answer.
    Drop,
    /// Answer FIND_NODE / FIND_VALUE with random far nodes.
    WrongNodes,
    /// Flood random nodes with STORE requests carrying forged records (and otherwise behave).
    FloodStores,
}

/// Parameters of a run.
#[derive(Debug, Clone)]
pub struct DhtSimConfig {
    /// Nodes.
    pub nodes: usize,
    /// Lookups measured.
    pub lookups: usize,
    /// Fraction of nodes that crash (silently) before the lookups.
    pub churn: f64,
    /// Fraction of nodes that misbehave, and how.
    pub evil: (f64, Evil),
    /// Seed of everything random.
    pub seed: u64,
    /// Link latency and loss.
    pub link: LinkModel,
    /// Time between two joins.
    pub join_interval: Duration,
    /// Partition the network into two halves for this long before the lookups, then heal and
    /// wait `heal_wait`; lookups then go from one former half to the other.
    pub partition: Option<(Duration, Duration)>,
    /// DHT parameters.
    pub dht: DhtConfig,
}

impl Default for DhtSimConfig {
    fn default() -> Self {
        DhtSimConfig {
            nodes: 1000,
            lookups: 200,
            churn: 0.0,
            evil: (0.0, Evil::Drop),
            seed: 7,
            link: LinkModel::default(),
            join_interval: Duration::from_millis(5),
            partition: None,
            dht: DhtConfig::default(),
        }
    }
}

/// One lookup's outcome.
#[derive(Debug, Clone, Copy)]
pub struct LookupResult {
    /// Whether the target was found.
    pub found: bool,
    /// Its figures.
    pub stats: LookupStats,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct DhtReport {
    /// Lookups that finished (all of them, unless the run hit its time limit).
    pub results: Vec<LookupResult>,
    /// Lookups started.
    pub lookups: usize,
    /// Messages delivered or dropped during the whole run.
    pub messages: u64,
    /// Simulated time of the run.
    pub sim_time: Duration,
    /// Mean routing table size of live nodes at the end.
    pub mean_table: f64,
    /// Records held by honest nodes at the end (forged ones would show here).
    pub honest_records: usize,
}

impl DhtReport {
    /// Fraction of lookups that found their target.
    pub fn success_rate(&self) -> f64 {
        if self.lookups == 0 {
            return 1.0;
        }
        self.results.iter().filter(|r| r.found).count() as f64 / self.lookups as f64
    }

    /// The `p`-th percentile (0–100) of a figure over finished lookups.
    pub fn percentile(&self, p: f64, f: impl Fn(&LookupStats) -> f64) -> f64 {
        let mut v: Vec<f64> = self.results.iter().map(|r| f(&r.stats)).collect();
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)]
    }
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
    Join(usize),
    Lookup(usize),
}

struct SimNode {
    dht: Dht,
    contact: Contact,
    alive: bool,
    evil: Option<Evil>,
    half: u8,
}

struct Sim {
    sched: Scheduler<Event>,
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    rng: SimRng,
    epoch: Instant,
    link: LinkModel,
    partitioned: bool,
    timers: Vec<Option<Duration>>,
    queries: HashMap<(usize, QueryId), usize>,
    plan: Vec<(usize, NodeId)>,
    results: Vec<Option<LookupResult>>,
    done: usize,
    messages: u64,
}

impl Sim {
    fn now(&self) -> Instant {
        self.epoch + self.sched.now()
    }

    fn flush(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].dht.poll_transmit() {
            let mut msg = t.msg;
            if self.nodes[i].evil == Some(Evil::WrongNodes) {
                self.corrupt(&mut msg);
            }
            self.send(i, t.to, msg);
        }
        while let Some(ev) = self.nodes[i].dht.poll_event() {
            if let DhtEvent::FoundNodes {
                query,
                target,
                closest,
                stats,
            } = ev
            {
                if let Some(k) = self.queries.remove(&(i, query)) {
                    let found = closest.iter().any(|c| c.id == target);
                    self.results[k] = Some(LookupResult { found, stats });
                    self.done += 1;
                }
            }
        }
        let at = self.nodes[i]
            .dht
            .poll_timeout()
            .saturating_duration_since(self.epoch);
        if self.timers[i].is_none_or(|s| at < s) {
            self.timers[i] = Some(at);
            self.sched.schedule_at(at, Event::Timer { node: i, at });
        }
    }

    /// Misbehaviour: answers point at random nodes.
    fn corrupt(&mut self, msg: &mut DhtMessage) {
        let n = self.nodes.len();
        let random: Vec<Contact> = (0..20)
            .map(|_| self.nodes[self.rng.gen_range(0..n)].contact)
            .collect();
        match &mut msg.body {
            Body::Nodes { nodes } | Body::Value { nodes, .. } => *nodes = random,
            _ => {}
        }
    }

    fn send(&mut self, from: usize, to: Contact, msg: DhtMessage) {
        self.messages += 1;
        let Some(&j) = self.by_addr.get(&to.addr) else {
            return;
        };
        if !self.nodes[j].alive || (self.partitioned && self.nodes[from].half != self.nodes[j].half)
        {
            return;
        }
        let Some(delay) = self.link.sample(&mut self.rng) else {
            return;
        };
        // Through the real codec, as on the wire.
        let t = msg.msg_type();
        let Ok(msg) = DhtMessage::decode(t, &msg.encode()) else {
            return;
        };
        let from = self.nodes[from].contact;
        self.sched
            .schedule_in(delay, Event::Deliver { to: j, from, msg });
    }

    fn step(&mut self, ev: Event) {
        match ev {
            Event::Deliver { to, from, msg } => {
                let n = &mut self.nodes[to];
                if !n.alive || (n.evil == Some(Evil::Drop) && msg.is_request()) {
                    return;
                }
                let now = self.epoch + self.sched.now();
                n.dht.handle_message(now, from, msg);
                self.flush(to);
            }
            Event::Timer { node, at } => {
                if self.timers[node] != Some(at) {
                    return;
                }
                self.timers[node] = None;
                if self.nodes[node].alive {
                    let now = self.now();
                    self.nodes[node].dht.handle_timeout(now);
                }
                self.flush(node);
            }
            Event::Join(i) => {
                let seeds = vec![self.nodes[0].contact, self.nodes[1].contact];
                let now = self.now();
                self.nodes[i].dht.bootstrap(seeds, now);
                self.flush(i);
            }
            Event::Lookup(k) => {
                let (src, target) = self.plan[k];
                let now = self.now();
                let q = self.nodes[src].dht.find_node(target, now);
                self.queries.insert((src, q), k);
                self.flush(src);
            }
        }
    }

    fn run_until(&mut self, t: Duration) {
        while self.sched.peek_time().is_some_and(|at| at <= t) {
            if let Some((_, ev)) = self.sched.pop() {
                self.step(ev);
            }
        }
    }
}

/// Runs one simulation.
pub fn run(cfg: &DhtSimConfig, epoch: Instant) -> DhtReport {
    let mut rng = rng(cfg.seed);
    let n = cfg.nodes.max(3);
    let mut nodes = Vec::with_capacity(n);
    let mut by_addr = HashMap::new();
    for i in 0..n {
        let mut id = [0u8; 20];
        rng.fill(&mut id[..]);
        let addr = loop {
            let a = SocketAddr::new(
                Ipv4Addr::new(10, rng.gen(), rng.gen(), rng.gen_range(1..255)).into(),
                4567,
            );
            if !by_addr.contains_key(&a) {
                break a;
            }
        };
        by_addr.insert(addr, i);
        let contact = Contact {
            id: NodeId(id),
            addr,
        };
        let dht = Dht::new(NodeId(id), cfg.dht, (epoch, 1_800_000_000), rng.gen());
        // Bootstrap nodes sit in different halves, so a healed partition can rejoin.
        let half = if i < 2 { i as u8 } else { rng.gen_range(0..2) };
        nodes.push(SimNode {
            dht,
            contact,
            alive: true,
            evil: None,
            half,
        });
    }
    let mut sim = Sim {
        sched: Scheduler::new(),
        nodes,
        by_addr,
        rng,
        epoch,
        link: cfg.link,
        partitioned: false,
        timers: vec![None; n],
        queries: HashMap::new(),
        plan: Vec::new(),
        results: Vec::new(),
        done: 0,
        messages: 0,
    };
    // Joins: node 1 through node 0, then everyone through both.
    for i in 1..n {
        sim.sched
            .schedule_at(cfg.join_interval * i as u32, Event::Join(i));
    }
    let joined = cfg.join_interval * n as u32 + Duration::from_secs(30);
    sim.run_until(joined);

    // Misbehaviour and churn (bootstrap nodes excepted).
    let mut others: Vec<usize> = (2..n).collect();
    others.shuffle(&mut sim.rng);
    let evil = (cfg.evil.0 * n as f64) as usize;
    let crashed = (cfg.churn * n as f64) as usize;
    for &i in others.iter().take(evil) {
        sim.nodes[i].evil = Some(cfg.evil.1);
    }
    for &i in others.iter().skip(evil).take(crashed) {
        sim.nodes[i].alive = false;
    }
    // Store floods: each flooding node sends 50 STOREs of forged records to random nodes.
    let flooders: Vec<usize> = (0..n)
        .filter(|&i| sim.nodes[i].evil == Some(Evil::FloodStores))
        .collect();
    for i in flooders {
        for _ in 0..50 {
            let to = sim.nodes[sim.rng.gen_range(0..n)].contact;
            let mut record = vec![1u8; 6000];
            sim.rng.fill(&mut record[..]);
            record[0] = 1;
            record[1] = 1;
            let msg = DhtMessage {
                id: sim.rng.gen(),
                flags: 1,
                body: Body::Store { record },
            };
            sim.send(i, to, msg);
        }
    }
    let mut t = joined;
    if let Some((cut, wait)) = cfg.partition {
        sim.partitioned = true;
        sim.run_until(t + cut);
        sim.partitioned = false;
        t += cut + wait;
        sim.run_until(t);
    }

    // Lookups between honest live nodes (across the former cut, if there was one).
    let honest: Vec<usize> = (0..n)
        .filter(|&i| sim.nodes[i].alive && sim.nodes[i].evil.is_none())
        .collect();
    for _ in 0..cfg.lookups {
        let src = honest[sim.rng.gen_range(0..honest.len())];
        let dst = loop {
            let d = honest[sim.rng.gen_range(0..honest.len())];
            let across = cfg.partition.is_none() || sim.nodes[d].half != sim.nodes[src].half;
            if d != src && across {
                break d;
            }
        };
        sim.plan.push((src, sim.nodes[dst].contact.id));
    }
    sim.results = vec![None; cfg.lookups];
    for k in 0..cfg.lookups {
        sim.sched
            .schedule_at(t + Duration::from_millis(20) * k as u32, Event::Lookup(k));
    }
    let limit = t + Duration::from_millis(20) * cfg.lookups as u32 + Duration::from_secs(120);
    while sim.done < cfg.lookups {
        match sim.sched.pop() {
            Some((at, ev)) if at <= limit => sim.step(ev),
            _ => break,
        }
    }
    if std::env::var_os("NETSIM_DEBUG").is_some() {
        for (k, r) in sim.results.iter().enumerate() {
            if let Some(r) = r {
                if !r.found {
                    let target = sim.plan[k].1;
                    let knowers = sim
                        .nodes
                        .iter()
                        .filter(|n| n.dht.table().contains(&target))
                        .count();
                    let mut near: Vec<&SimNode> = sim
                        .nodes
                        .iter()
                        .filter(|n| n.contact.id != target)
                        .collect();
                    near.sort_by_key(|n| dna_p2p::dht::Distance::between(&target, &n.contact.id));
                    let near_know = near
                        .iter()
                        .take(20)
                        .filter(|n| n.dht.table().contains(&target))
                        .count();
                    let t_idx = sim
                        .by_addr
                        .values()
                        .copied()
                        .find(|&i| sim.nodes[i].contact.id == target)
                        .unwrap_or(0);
                    eprintln!("miss {k}: target idx {t_idx} known by {knowers} nodes, {near_know} of its 20 nearest; target table {}; rounds {} reqs {}", sim.nodes[t_idx].dht.table().len(), r.stats.rounds, r.stats.requests);
                }
            }
        }
    }
    let live: Vec<&SimNode> = sim.nodes.iter().filter(|n| n.alive).collect();
    let mean_table =
        live.iter().map(|n| n.dht.table().len() as f64).sum::<f64>() / live.len().max(1) as f64;
    let honest_records = sim
        .nodes
        .iter()
        .filter(|n| n.evil.is_none())
        .map(|n| n.dht.store().len())
        .sum();
    DhtReport {
        honest_records,
        results: sim.results.into_iter().flatten().collect(),
        lookups: cfg.lookups,
        messages: sim.messages,
        sim_time: sim.sched.now(),
        mean_table,
    }
}

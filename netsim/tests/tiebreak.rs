//! The duplicate-connection tie-break (spec/03-session.md §4) driven through whole node
//! cores (`dna_p2p::node::core::Core`) in simulated time: two nodes dial each other at once;
//! each connection authenticates at each end after its own random delay, the core closes
//! losers and the close reaches the other end later. Whatever the order, both ends must end
//! with the same one live connection — and the messages queued before the race must all be
//! handed to it, none lost, none handed twice to a live connection. Seeded: the same seed
//! gives the same runs.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dna_p2p::crypto::{Fingerprint, MessageId};
use dna_p2p::node::core::{Answer, Core, CoreConfig, Ended, Input, Output, Query, Reply};
use dna_p2p::node::rendezvous::RendezvousLimits;
use dna_p2p::session::Outgoing;
use netsim::Scheduler;
use rand::{Rng, RngCore};

/// Messages each side queues for the other before the race.
const QUEUED: u32 = 50;

#[derive(Debug, Clone, Copy)]
enum Ev {
    /// Connection `conn` (dialed by side `dialer`) authenticates at side `at`.
    Register { at: usize, conn: u64, dialer: usize },
    /// Connection `conn` is closed at side `at`.
    Ended { at: usize, conn: u64 },
}

struct Side {
    fp: Fingerprint,
    core: Core<u64, ()>,
    /// Connections closed at this end (a late HELLO on them is ignored).
    closed: HashSet<u64>,
    /// Connections whose end this end's core was told.
    ended: HashSet<u64>,
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1))
}

fn core(fp: Fingerprint) -> Core<u64, ()> {
    Core::new(
        fp,
        CoreConfig {
            max_peers: 8,
            inbox_capacity: 16,
            hash_key: [1, 2],
            max_scored_sources: 16,
            window: 1024,
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            rendezvous_server: false,
            rendezvous: RendezvousLimits::default(),
            retry: None,
            mailbox: None,
        },
    )
}

fn msgs() -> Vec<Outgoing> {
    (0..QUEUED)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            Outgoing {
                id: MessageId(id),
                timestamp_ms: 0,
                kind: dna_p2p::crypto::MessageKind::TEXT,
                body: Default::default(),
            }
        })
        .collect()
}

/// The outcome of one pair: the connection live at each end, and at each end how many
/// messages the core handed to that live connection and still holds.
struct Outcome {
    live: [Option<u64>; 2],
    handed_to_live: [usize; 2],
    held: [usize; 2],
    events: u64,
}

/// Runs one pair from `seed`.
fn run_pair(seed: u64, reconnect: bool) -> Outcome {
    let mut rng = netsim::rng(seed);
    let mut fp = || {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        Fingerprint(b)
    };
    let mut sides = [fp(), fp()].map(|fp| Side {
        fp,
        core: core(fp),
        closed: HashSet::new(),
        ended: HashSet::new(),
    });
    // The simulated clock's zero: the cores only compare instants they are given.
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    let mut rng = netsim::rng(seed ^ 0x5eed);
    let mut sched: Scheduler<Ev> = Scheduler::new();
    let delay = |rng: &mut netsim::SimRng| Duration::from_micros(rng.gen_range(100..50_000));
    // Batches each side's core handed to each connection.
    let mut handed: [Vec<(u64, usize)>; 2] = [Vec::new(), Vec::new()];
    for at in 0..2 {
        let peer = sides[1 - at].fp;
        let msgs = msgs();
        sides[at].core.handle(t0, Input::Send { peer, msgs });
    }
    if reconnect {
        // Side 0 dialed connection 1 earlier; both ends have it live. It dies at side 0
        // (side 1 has not noticed yet) and side 0 dials connection 2.
        for at in 0..2 {
            let peer = sides[1 - at].fp;
            sides[at].core.handle(t0, authenticated(1, peer, at == 0));
        }
        sched.schedule_in(Duration::ZERO, Ev::Ended { at: 0, conn: 1 });
        sched.schedule_in(delay(&mut rng) * 4, Ev::Ended { at: 1, conn: 1 });
        for at in 0..2 {
            sched.schedule_in(
                delay(&mut rng),
                Ev::Register {
                    at,
                    conn: 2,
                    dialer: 0,
                },
            );
        }
    } else {
        // Simultaneous dials: connection 1 by side 0, connection 2 by side 1.
        for (conn, dialer) in [(1u64, 0usize), (2, 1)] {
            for at in 0..2 {
                sched.schedule_in(delay(&mut rng), Ev::Register { at, conn, dialer });
            }
        }
    }
    let mut events = 0;
    while let Some((now, ev)) = sched.pop() {
        events += 1;
        let now = t0 + now;
        let at = match ev {
            Ev::Register { at, conn, dialer } => {
                if sides[at].closed.contains(&conn) {
                    continue;
                }
                let peer = sides[1 - at].fp;
                let r = sides[at]
                    .core
                    .handle(now, authenticated(conn, peer, dialer == at));
                if r != Reply::Session(Ok(())) {
                    // Refused here: it ends here now, and at the other end when the
                    // close arrives.
                    sides[at].closed.insert(conn);
                    sched.schedule_in(Duration::ZERO, Ev::Ended { at, conn });
                    sched.schedule_in(delay(&mut rng), Ev::Ended { at: 1 - at, conn });
                }
                at
            }
            Ev::Ended { at, conn } => {
                sides[at].closed.insert(conn);
                if !sides[at].ended.insert(conn) {
                    continue;
                }
                let peer = sides[1 - at].fp;
                sides[at].core.handle(
                    now,
                    Input::Ended(Ended {
                        conn_id: conn,
                        peer: Some(peer),
                        dialed: None,
                        registered: true,
                        established: true,
                        remote: addr(),
                        penalty: 0,
                        failed: false,
                        wrong_identity: false,
                    }),
                );
                at
            }
        };
        while let Some(out) = sides[at].core.poll_output() {
            match out {
                Output::Close { handle, .. } => {
                    sides[at].closed.insert(handle);
                    sched.schedule_in(Duration::ZERO, Ev::Ended { at, conn: handle });
                    sched.schedule_in(
                        delay(&mut rng),
                        Ev::Ended {
                            at: 1 - at,
                            conn: handle,
                        },
                    );
                }
                Output::Batch { handle, msgs } => handed[at].push((handle, msgs.len())),
                _ => {}
            }
        }
    }
    let mut out = Outcome {
        live: [None, None],
        handed_to_live: [0, 0],
        held: [0, 0],
        events,
    };
    for at in 0..2 {
        let peer = sides[1 - at].fp;
        let Answer::Conn(live) = sides[at].core.query(t0, Query::LiveConnection(peer)) else {
            unreachable!("a LiveConnection query answers Conn")
        };
        out.live[at] = live;
        out.handed_to_live[at] = handed[at]
            .iter()
            .filter(|(c, _)| Some(*c) == live)
            .map(|(_, n)| n)
            .sum();
        let Answer::Peer(Some(p)) = sides[at].core.query(t0, Query::Peer(peer)) else {
            panic!("seed {seed}: no peer entry")
        };
        out.held[at] = p.queued + p.inflight;
    }
    out
}

/// Connection `conn`'s peer authenticated (the driver's handle is the number).
fn authenticated(conn: u64, peer: Fingerprint, we_dialed: bool) -> Input<u64, ()> {
    Input::Authenticated {
        conn_id: conn,
        peer,
        we_dialed,
        remote: addr(),
        handle: conn,
    }
}

fn check(seed: u64, o: &Outcome) {
    assert!(o.live[0].is_some(), "seed {seed}: a connection survives");
    assert_eq!(o.live[0], o.live[1], "seed {seed}: both ends agree");
    for at in 0..2 {
        assert_eq!(o.held[at], QUEUED as usize, "seed {seed}: nothing lost");
        assert_eq!(
            o.handed_to_live[at], QUEUED as usize,
            "seed {seed}: every message handed to the surviving connection once"
        );
    }
}

#[test]
fn simultaneous_dials_leave_both_ends_on_the_same_connection() {
    const PAIRS: u64 = 10_000;
    let mut events = 0;
    for seed in 0..PAIRS {
        let o = run_pair(seed, false);
        events += o.events;
        check(seed, &o);
    }
    println!(
        "{PAIRS} simultaneous-dial pairs through node cores, {events} events: all agree on one \
         connection, {QUEUED} messages each way handed to it, none lost"
    );
}

#[test]
fn a_reconnect_while_the_old_connection_lingers_keeps_the_new_one() {
    const PAIRS: u64 = 10_000;
    for seed in 0..PAIRS {
        let o = run_pair(seed, true);
        check(seed, &o);
        assert_eq!(o.live, [Some(2), Some(2)], "seed {seed}");
    }
    println!(
        "{PAIRS} reconnects with a lingering old connection: both ends on the new one, \
         {QUEUED} messages each way handed to it"
    );
}

//! The duplicate-connection tie-break (spec/03-session.md §4) driven through the sans-IO
//! peer table (`dna_p2p::node::peers`) in simulated time: two nodes dial each other at
//! once; each connection authenticates at each end after its own random delay, losers are
//! closed and the close reaches the other end later. Whatever the order, both ends must end
//! with the same one live connection. Seeded: the same seed gives the same runs.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use dna_p2p::crypto::Fingerprint;
use dna_p2p::node::peers::{PeerTable, Registration};
use netsim::Scheduler;
use rand::{Rng, RngCore};

#[derive(Debug, Clone, Copy)]
enum Ev {
    /// Connection `conn` (dialed by side `dialer`) authenticates at side `at`.
    Register { at: usize, conn: u64, dialer: usize },
    /// Connection `conn` is closed at side `at`.
    Ended { at: usize, conn: u64 },
}

struct Side {
    fp: Fingerprint,
    table: PeerTable<u64>,
    closed: HashSet<u64>,
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1))
}

/// Runs one pair from `seed`; returns the connection live at both ends (they must agree).
fn run_pair(seed: u64, reconnect: bool) -> (Option<u64>, Option<u64>, u64) {
    let mut rng = netsim::rng(seed);
    let mut fp = || {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        Fingerprint(b)
    };
    let mut sides = [fp(), fp()].map(|fp| Side {
        fp,
        table: PeerTable::new(8, 16, [1, 2]),
        closed: HashSet::new(),
    });
    let mut rng = netsim::rng(seed ^ 0x5eed);
    let mut sched: Scheduler<Ev> = Scheduler::new();
    let delay = |rng: &mut netsim::SimRng| Duration::from_micros(rng.gen_range(100..50_000));
    if reconnect {
        // Side 0 dialed connection 1 earlier; both ends have it live. It dies at side 0
        // (side 1 has not noticed yet) and side 0 dials connection 2.
        for (at, peer) in [(0usize, 1usize), (1, 0)] {
            let me = sides[at].fp;
            let p = sides[peer].fp;
            sides[at].table.register(me, p, 1, at == 0, addr(), 1);
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
    while let Some((_, ev)) = sched.pop() {
        events += 1;
        match ev {
            Ev::Register { at, conn, dialer } => {
                if sides[at].closed.contains(&conn) {
                    continue;
                }
                let (me, peer) = (sides[at].fp, sides[1 - at].fp);
                match sides[at]
                    .table
                    .register(me, peer, conn, dialer == at, addr(), conn)
                {
                    Registration::Duplicate => {
                        sides[at].closed.insert(conn);
                        sched.schedule_in(delay(&mut rng), Ev::Ended { at: 1 - at, conn });
                    }
                    Registration::Live {
                        replaced: Some(old),
                    } => {
                        sides[at].closed.insert(old);
                        sides[at].table.connection_ended(peer, old);
                        sched.schedule_in(
                            delay(&mut rng),
                            Ev::Ended {
                                at: 1 - at,
                                conn: old,
                            },
                        );
                    }
                    Registration::Live { replaced: None } => {}
                }
            }
            Ev::Ended { at, conn } => {
                sides[at].closed.insert(conn);
                let peer = sides[1 - at].fp;
                sides[at].table.connection_ended(peer, conn);
            }
        }
    }
    let live = |s: &Side, other: &Fingerprint| {
        s.table
            .get(other)
            .and_then(|p| p.active.as_ref())
            .map(|l| l.handle)
    };
    (
        live(&sides[0], &sides[1].fp),
        live(&sides[1], &sides[0].fp),
        events,
    )
}

#[test]
fn simultaneous_dials_leave_both_ends_on_the_same_connection() {
    const PAIRS: u64 = 10_000;
    let mut events = 0;
    for seed in 0..PAIRS {
        let (a, b, n) = run_pair(seed, false);
        events += n;
        assert!(a.is_some(), "seed {seed}: a connection survives");
        assert_eq!(a, b, "seed {seed}: both ends agree");
    }
    println!("{PAIRS} simultaneous-dial pairs, {events} events: all agree on one connection");
}

#[test]
fn a_reconnect_while_the_old_connection_lingers_keeps_the_new_one() {
    const PAIRS: u64 = 10_000;
    for seed in 0..PAIRS {
        let (a, b, _) = run_pair(seed, true);
        assert_eq!((a, b), (Some(2), Some(2)), "seed {seed}");
    }
    println!("{PAIRS} reconnects with a lingering old connection: both ends on the new one");
}

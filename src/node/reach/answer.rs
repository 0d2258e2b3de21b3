//! The callee's side of reaching (spec/05-nat.md §4–§5, spec/07-relay.md §1.2): what a node
//! does with a CONNECT offer addressed to it, decided without I/O. The driver verified the
//! offer's signature; [`answer`] checks it is for us and fresh, refuses when busy, and says
//! what to answer, whether to punch toward the caller, and when to ask the rendezvous node
//! that forwarded the offer for the bundled relay. The caller's side is [`super::Reach`];
//! both use [`relay_wait`], so the two ends ask the relay at the same moment.
//!
//! Randomness (our ufrag and password) and both clocks come from the caller.

use std::time::Duration;

use crate::crypto::{Fingerprint, PublicKey};
use crate::nat::candidate::{Candidate, CandidateKind};
use crate::nat::predict::{relay_first, Behaviour};
use crate::nat::punch::PunchCreds;
use crate::nat::signal::{ConnectErrorCode, Signal, SignalError, SignalKind};

use super::RelayPolicy;

/// How long punching toward a peer runs alone before the bundled relay is asked too:
/// `relay_after`, or nothing when the pair's NAT behaviours rule out a direct path or leave
/// only port prediction ([`relay_first`]: the first message then goes through the relay at
/// once while punching and prediction go on). Both ends know both behaviours from the
/// verified signals, so both decide alike.
pub fn relay_wait(ours: Behaviour, theirs: Behaviour, relay_after: Duration) -> Duration {
    if relay_first(ours, theirs) {
        Duration::ZERO
    } else {
        relay_after
    }
}

/// What the callee knows of itself when an offer comes.
#[derive(Debug, Clone)]
pub struct Callee<'a> {
    /// Our public key (the answer's `from`).
    pub key: &'a PublicKey,
    /// The wall clock, ms since the Unix epoch (the offer's freshness, the answer's time).
    pub now_ms: u64,
    /// Punching attempts running now, and the most we run at once.
    pub punching: (usize, usize),
    /// The relay policy toward this caller (`ask` resolved by the user's consent).
    pub policy: RelayPolicy,
    /// Our candidates (what discovery found, and our TURN relayed candidate if any).
    pub candidates: &'a [Candidate],
    /// Our NAT behaviour as our signals state it.
    pub nat: Behaviour,
    /// How long punching runs alone before the relay is asked (config `relay_after`).
    pub relay_after: Duration,
    /// Whether we can ask a bundled relay at all (we talk to DHT nodes).
    pub can_relay: bool,
    /// Our fresh ufrag and password for this exchange.
    pub creds: (String, String),
}

/// Why an offer is refused, and the CONNECT_ERROR code the rendezvous node passes back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Not an offer for us, or stale (spec/05 §4.2).
    #[error("offer refused: {0}")]
    Invalid(#[from] SignalError),
    /// Too many punching attempts run already.
    #[error("busy: {0} punching attempts run")]
    Busy(usize),
}

impl Refusal {
    /// The CONNECT_ERROR code for the caller.
    pub fn code(&self) -> ConnectErrorCode {
        match self {
            Refusal::Invalid(_) => ConnectErrorCode::Refused,
            Refusal::Busy(_) => ConnectErrorCode::Busy,
        }
    }
}

/// When the callee asks the forwarding rendezvous node for the bundled relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskRelay {
    /// Not at all (`never`, or no DHT to talk to).
    Never,
    /// At once: relay only, or a caller that sent no candidates (a relay-only caller that
    /// asks at once and waits there 8 s; punching toward nothing first would miss it).
    Now,
    /// Unless punching found a pair within this long (zero: at once, beside punching).
    UnlessPunchedWithin(Duration),
}

/// Punching toward the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PunchPlan {
    /// Ours and the caller's ufrag and password.
    pub creds: PunchCreds,
    /// The caller's candidates.
    pub candidates: Vec<Candidate>,
    /// The caller's NAT behaviour (port prediction, spec/05 §5.5).
    pub nat: Behaviour,
    /// How long punching runs alone before the relay is asked (see [`relay_wait`]).
    pub relay_wait: Duration,
    /// The caller's IPs (non-relayed candidates): what our TURN allocation must permit,
    /// since the caller may dial our relayed candidate (spec/07-relay.md §3.2).
    pub permit: Vec<std::net::IpAddr>,
}

/// What to do with an offer: the answer to sign and send back, and the work behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answering {
    /// The answer, unsigned (the driver signs it with our identity).
    pub answer: Signal,
    /// Punching toward the caller, unless the relay alone serves.
    pub punch: Option<PunchPlan>,
    /// When to ask the bundled relay.
    pub relay: AskRelay,
}

/// Decides what the callee does with `offer` (signature verified by the driver): refuses
/// a stale offer or one for someone else, refuses when `punching` is at its cap, and
/// otherwise answers with our candidates (none under `only`: the caller learns no
/// address of ours) and plans punching and the relay by the policy.
pub fn answer(offer: &Signal, me: &Fingerprint, ctx: Callee<'_>) -> Result<Answering, Refusal> {
    offer.check_offer(me, ctx.now_ms)?;
    if ctx.punching.0 >= ctx.punching.1 {
        return Err(Refusal::Busy(ctx.punching.0));
    }
    let (ufrag, pwd) = ctx.creds;
    let relay_only = ctx.policy == RelayPolicy::Only;
    let answer = Signal {
        kind: SignalKind::Answer,
        from: ctx.key.clone(),
        to: offer.from.fingerprint(),
        session: offer.session,
        time_ms: ctx.now_ms,
        ufrag: ufrag.clone(),
        pwd: pwd.clone(),
        candidates: if relay_only {
            Vec::new()
        } else {
            ctx.candidates.to_vec()
        },
        nat: ctx.nat,
    };
    let nothing_to_punch = offer.candidates.is_empty() && ctx.policy == RelayPolicy::Auto;
    if relay_only || nothing_to_punch {
        return Ok(Answering {
            answer,
            punch: None,
            relay: if ctx.can_relay {
                AskRelay::Now
            } else {
                AskRelay::Never
            },
        });
    }
    let wait = relay_wait(ctx.nat, offer.nat, ctx.relay_after);
    Ok(Answering {
        answer,
        punch: Some(PunchPlan {
            creds: PunchCreds {
                local_ufrag: ufrag,
                local_pwd: pwd,
                remote_ufrag: offer.ufrag.clone(),
                remote_pwd: offer.pwd.clone(),
            },
            candidates: offer.candidates.clone(),
            nat: offer.nat,
            relay_wait: wait,
            permit: peer_ips(&offer.candidates),
        }),
        relay: if ctx.policy == RelayPolicy::Auto && ctx.can_relay {
            AskRelay::UnlessPunchedWithin(wait)
        } else {
            AskRelay::Never
        },
    })
}

/// The IPs a peer's datagrams may come from (its non-relayed candidates), sorted and
/// without repeats.
pub fn peer_ips(cands: &[Candidate]) -> Vec<std::net::IpAddr> {
    let mut ips: Vec<std::net::IpAddr> = cands
        .iter()
        .filter(|c| c.kind != CandidateKind::Relayed)
        .map(|c| c.addr.ip())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use crate::nat::predict::Behaviour;
    use rand_core::OsRng;
    use std::net::SocketAddr;

    fn cand(kind: CandidateKind, a: &str) -> Candidate {
        Candidate::new(kind, a.parse::<SocketAddr>().unwrap(), 100)
    }

    fn offer(from: &Identity, to: Fingerprint, now_ms: u64, cands: Vec<Candidate>) -> Signal {
        Signal {
            kind: SignalKind::Offer,
            from: from.public_key().clone(),
            to,
            session: [7; 8],
            time_ms: now_ms,
            ufrag: "cal1".into(),
            pwd: "callerpassword00".into(),
            candidates: cands,
            nat: Behaviour::UNKNOWN,
        }
    }

    /// A caller and a callee, and the callee's fingerprint.
    fn pair() -> (Identity, Identity, Fingerprint) {
        let callee = Identity::generate(&mut OsRng);
        let me = callee.fingerprint();
        (Identity::generate(&mut OsRng), callee, me)
    }

    fn ctx<'a>(key: &'a PublicKey, ours: &'a [Candidate], policy: RelayPolicy) -> Callee<'a> {
        Callee {
            key,
            now_ms: 1_000_000,
            punching: (0, 32),
            policy,
            candidates: ours,
            nat: Behaviour::UNKNOWN,
            relay_after: Duration::from_secs(1),
            can_relay: true,
            creds: ("cee1".into(), "calleepassword00".into()),
        }
    }

    #[test]
    fn an_offer_is_answered_with_our_candidates_punched_and_the_relay_after_a_wait() {
        let (caller, callee, me) = pair();
        let ours = [cand(CandidateKind::ServerReflexive, "198.51.100.2:4000")];
        let theirs = vec![
            cand(CandidateKind::ServerReflexive, "203.0.113.9:5000"),
            cand(CandidateKind::Host, "203.0.113.9:5001"),
            cand(CandidateKind::Relayed, "192.0.2.1:6000"),
        ];
        let o = offer(&caller, me, 1_000_000, theirs.clone());
        let a = answer(&o, &me, ctx(callee.public_key(), &ours, RelayPolicy::Auto)).unwrap();
        assert_eq!(a.answer.kind, SignalKind::Answer);
        assert_eq!(a.answer.to, caller.fingerprint());
        assert_eq!(a.answer.session, [7; 8]);
        assert_eq!(a.answer.candidates, ours.to_vec());
        let p = a.punch.unwrap();
        assert_eq!(p.candidates, theirs);
        assert_eq!(p.creds.remote_ufrag, "cal1");
        assert_eq!(p.creds.local_ufrag, "cee1");
        assert_eq!(
            p.permit,
            vec!["203.0.113.9".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(
            a.relay,
            AskRelay::UnlessPunchedWithin(Duration::from_secs(1))
        );
    }

    #[test]
    fn relay_only_answers_without_addresses_and_asks_the_relay_at_once() {
        let (caller, callee, me) = pair();
        let ours = [cand(CandidateKind::ServerReflexive, "198.51.100.2:4000")];
        let o = offer(
            &caller,
            me,
            1_000_000,
            vec![cand(CandidateKind::Host, "203.0.113.9:1")],
        );
        let a = answer(&o, &me, ctx(callee.public_key(), &ours, RelayPolicy::Only)).unwrap();
        assert!(
            a.answer.candidates.is_empty(),
            "the caller learns no address of ours"
        );
        assert_eq!((a.punch, a.relay), (None, AskRelay::Now));
        // A caller that sent no candidates is relay-only: the relay at once under `auto`.
        let o = offer(&caller, me, 1_000_000, Vec::new());
        let a = answer(&o, &me, ctx(callee.public_key(), &ours, RelayPolicy::Auto)).unwrap();
        assert_eq!(a.answer.candidates, ours.to_vec());
        assert_eq!((a.punch, a.relay), (None, AskRelay::Now));
    }

    #[test]
    fn never_punches_but_asks_no_relay() {
        let (caller, callee, me) = pair();
        let o = offer(
            &caller,
            me,
            1_000_000,
            vec![cand(CandidateKind::Host, "203.0.113.9:1")],
        );
        let a = answer(&o, &me, ctx(callee.public_key(), &[], RelayPolicy::Never)).unwrap();
        assert!(a.punch.is_some());
        assert_eq!(a.relay, AskRelay::Never);
    }

    #[test]
    fn stale_foreign_and_busy_offers_are_refused_with_their_codes() {
        let (caller, callee, me) = pair();
        let key = callee.public_key();
        let stale = offer(&caller, me, 1, Vec::new());
        let e = answer(&stale, &me, ctx(key, &[], RelayPolicy::Auto)).unwrap_err();
        assert_eq!(e.code(), ConnectErrorCode::Refused);
        let foreign = offer(&caller, caller.fingerprint(), 1_000_000, Vec::new());
        let e = answer(&foreign, &me, ctx(key, &[], RelayPolicy::Auto)).unwrap_err();
        assert_eq!(e.code(), ConnectErrorCode::Refused);
        let fine = offer(&caller, me, 1_000_000, Vec::new());
        let mut busy = ctx(key, &[], RelayPolicy::Auto);
        busy.punching = (32, 32);
        assert_eq!(answer(&fine, &me, busy).unwrap_err(), Refusal::Busy(32));
    }

    #[test]
    fn both_ends_ask_the_relay_at_once_where_no_plain_punch_can_work() {
        let sym = Behaviour::decode(0x8A);
        let port_restricted = Behaviour::decode(0x88);
        let cone = Behaviour::decode(0x80);
        let after = Duration::from_secs(1);
        assert_eq!(
            relay_wait(Behaviour::UNKNOWN, Behaviour::UNKNOWN, after),
            after
        );
        assert_eq!(relay_wait(cone, sym, after), after);
        assert_eq!(relay_wait(sym, sym, after), Duration::ZERO, "hopeless");
        assert_eq!(
            relay_wait(port_restricted, sym, after),
            Duration::ZERO,
            "prediction"
        );
        // Whatever the pair, both ends compute the same wait.
        let all = [sym, port_restricted, cone, Behaviour::UNKNOWN];
        for a in all {
            for b in all {
                assert_eq!(relay_wait(a, b, after), relay_wait(b, a, after));
            }
        }
    }
}

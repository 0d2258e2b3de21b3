//! Claiming a name (spec/08-names.md §4), sans-IO: whether another publisher holds the name
//! against our claim. The driver (`daemon::names`) looks the name up, puts our claim and
//! looks again; the decisions are made here, from the claims it found:
//!
//! - **before the put**: a new claim yields to any claim another publisher holds already,
//!   whatever its claim time (a tie within one second would otherwise go to the smaller
//!   fingerprint, and a late claimant could win it); a name we hold is contested by the
//!   race rule ([`winner`]) with our claim among the others;
//! - **after the put**: the race rule with ours among them decides between claims made at
//!   about the same time; losing, we withdraw.

use crate::crypto::name::{winner, NameClaim};
use crate::crypto::Fingerprint;

/// Who holds a name against us: the winning claim's publisher and its claim time (Unix s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// The publisher.
    pub fingerprint: Fingerprint,
    /// Its claim time.
    pub claimed_at: u64,
}

/// Whether `found` (valid claims for the name, each with its publisher) beats us (`me`),
/// with our own claim `ours` among them or not.
fn taken(
    me: Fingerprint,
    found: &[(NameClaim, Fingerprint)],
    ours: Option<&NameClaim>,
) -> Option<Holder> {
    let mut all: Vec<(&NameClaim, Fingerprint, u64)> =
        found.iter().map(|(c, fp)| (c, *fp, c.claimed_at)).collect();
    if let Some(c) = ours {
        all.push((c, me, c.claimed_at));
    }
    match winner(all) {
        Some((fp, at)) if fp != me => Some(Holder {
            fingerprint: fp,
            claimed_at: at,
        }),
        _ => None,
    }
}

/// Before our claim `ours` is put: who holds the name against it (`held`: we hold the name
/// already and republish it with its original claim time).
pub fn before_put(
    me: Fingerprint,
    found: &[(NameClaim, Fingerprint)],
    ours: &NameClaim,
    held: bool,
) -> Option<Holder> {
    taken(me, found, held.then_some(ours))
}

/// After our claim `ours` was put and the name looked up again: who won the race, if not us.
pub fn after_put(
    me: Fingerprint,
    found: &[(NameClaim, Fingerprint)],
    ours: &NameClaim,
) -> Option<Holder> {
    taken(me, found, Some(ours))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(at: u64) -> NameClaim {
        NameClaim {
            claimed_at: at,
            name: "alice".into(),
        }
    }

    #[test]
    fn a_new_claim_yields_to_any_other_even_a_later_one() {
        let (me, other) = (Fingerprint([1; 32]), Fingerprint([2; 32]));
        let ours = claim(100);
        let found = [(claim(105), other)];
        assert_eq!(
            before_put(me, &found, &ours, false),
            Some(Holder {
                fingerprint: other,
                claimed_at: 105
            }),
            "first come"
        );
        // A name we hold: the race rule, and ours is earlier.
        assert_eq!(before_put(me, &found, &ours, true), None);
        assert_eq!(before_put(me, &[], &ours, false), None, "free");
    }

    #[test]
    fn after_the_put_the_race_rule_decides_ties_by_fingerprint() {
        let (me, smaller, larger) = (
            Fingerprint([5; 32]),
            Fingerprint([1; 32]),
            Fingerprint([9; 32]),
        );
        let ours = claim(100);
        // Our own copy among the found ones changes nothing.
        assert_eq!(after_put(me, &[(claim(100), me)], &ours), None);
        assert_eq!(after_put(me, &[(claim(100), larger)], &ours), None);
        assert_eq!(
            after_put(me, &[(claim(100), smaller)], &ours).map(|h| h.fingerprint),
            Some(smaller)
        );
        assert_eq!(
            after_put(me, &[(claim(99), larger)], &ours).map(|h| h.fingerprint),
            Some(larger),
            "earlier wins"
        );
    }
}

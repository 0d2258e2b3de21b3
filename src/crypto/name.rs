//! Human names (spec/08-names.md): what a name may be, the value of a name claim record
//! (kind `NameClaim`, spec/02-crypto.md §8.1), and the race rule that picks one claim among
//! several found for a name.
//!
//! A name is 3–32 characters of `a-z`, `0-9` and `-`, starting and ending with a letter or a
//! digit. Input is normalised by lowering ASCII capitals (`Alice` → `alice`); anything else
//! (spaces, dots, non-ASCII letters) is refused rather than mapped, so two names that look
//! alike are the same bytes or are not both valid. A claim's value is
//! `claimed_at u64 (Unix seconds, big-endian) ‖ name`; the claim time is signed with it.

use thiserror::Error;

use super::Fingerprint;

/// Shortest name.
pub const MIN_NAME_LEN: usize = 3;
/// Longest name.
pub const MAX_NAME_LEN: usize = 32;
/// Bytes of a claim value before the name.
pub const CLAIM_HEADER_LEN: usize = 8;
/// Largest claim value.
pub const MAX_CLAIM_LEN: usize = CLAIM_HEADER_LEN + MAX_NAME_LEN;
/// How long one signed claim lives (7 days); the owner signs a new one every third of it.
pub const CLAIM_TTL_SECS: u64 = 7 * 24 * 3600;
/// How often the owner republishes a fresh claim: a third of [`CLAIM_TTL_SECS`], so two
/// republishes may fail before the name lapses.
pub const CLAIM_REPUBLISH_SECS: u64 = CLAIM_TTL_SECS / 3;

/// Why a string is not a name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NameError {
    /// Too short or too long.
    #[error("a name is {MIN_NAME_LEN}-{MAX_NAME_LEN} characters, not {0}")]
    Length(usize),
    /// A character outside `a-z 0-9 -` (after lowering ASCII capitals).
    #[error("a name may hold only a-z, 0-9 and '-', not {0:?}")]
    Character(char),
    /// Starts or ends with `-`.
    #[error("a name starts and ends with a letter or a digit")]
    Hyphen,
}

/// Lowers ASCII capitals and checks the rules; the name as it is claimed and looked up.
pub fn normalize(input: &str) -> Result<String, NameError> {
    let n = input.chars().count();
    if !(MIN_NAME_LEN..=MAX_NAME_LEN).contains(&n) {
        return Err(NameError::Length(n));
    }
    let name = input.to_ascii_lowercase();
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(NameError::Character(c));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(NameError::Hyphen);
    }
    Ok(name)
}

/// Whether `bytes` is a name exactly as claimed (already normalised).
pub fn is_valid(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|s| normalize(s).is_ok_and(|n| n == s))
}

/// The value of a name claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameClaim {
    /// When the name was first claimed by this publisher (Unix seconds); kept by every
    /// republish, so it orders claims on a race.
    pub claimed_at: u64,
    /// The name, normalised.
    pub name: String,
}

impl NameClaim {
    /// The record value.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(CLAIM_HEADER_LEN + self.name.len());
        v.extend_from_slice(&self.claimed_at.to_be_bytes());
        v.extend_from_slice(self.name.as_bytes());
        v
    }

    /// Parses a record value; `None` unless it holds a claim time and a valid name.
    pub fn decode(value: &[u8]) -> Option<NameClaim> {
        if value.len() > MAX_CLAIM_LEN || value.len() < CLAIM_HEADER_LEN {
            return None;
        }
        let (at, name) = value.split_at(CLAIM_HEADER_LEN);
        if !is_valid(name) {
            return None;
        }
        let mut a = [0u8; 8];
        a.copy_from_slice(at);
        Some(NameClaim {
            claimed_at: u64::from_be_bytes(a),
            name: String::from_utf8(name.to_vec()).ok()?,
        })
    }
}

/// The race rule: among claims for one name (each with its publisher), the earliest
/// `claimed_at` wins; equal times go to the smaller fingerprint.
pub fn winner<'a, T>(
    claims: impl IntoIterator<Item = (&'a NameClaim, Fingerprint, T)>,
) -> Option<(Fingerprint, T)> {
    claims
        .into_iter()
        .min_by(|a, b| (a.0.claimed_at, a.1 .0).cmp(&(b.0.claimed_at, b.1 .0)))
        .map(|(_, fp, t)| (fp, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowered_and_checked() {
        assert_eq!(normalize("Alice").unwrap(), "alice");
        assert_eq!(normalize("bob-2").unwrap(), "bob-2");
        assert_eq!(normalize("007").unwrap(), "007");
        assert_eq!(normalize("ab"), Err(NameError::Length(2)));
        assert_eq!(normalize(&"a".repeat(33)), Err(NameError::Length(33)));
        assert!(normalize(&"a".repeat(32)).is_ok());
        assert_eq!(normalize("a.b"), Err(NameError::Character('.')));
        assert_eq!(normalize("a b"), Err(NameError::Character(' ')));
        assert_eq!(normalize("a_b"), Err(NameError::Character('_')));
        // Look-alikes are refused, not mapped: Cyrillic а, Turkish dotless ı, fullwidth.
        assert_eq!(normalize("аlice"), Err(NameError::Character('а')));
        assert_eq!(normalize("alıce"), Err(NameError::Character('ı')));
        assert!(normalize("ａlice").is_err());
        assert_eq!(normalize("-bob"), Err(NameError::Hyphen));
        assert_eq!(normalize("bob-"), Err(NameError::Hyphen));
        assert!(is_valid(b"alice") && !is_valid(b"Alice") && !is_valid(b"al"));
    }

    #[test]
    fn claim_values_round_trip_and_bad_ones_are_refused() {
        let c = NameClaim {
            claimed_at: 1_800_000_000,
            name: "alice".into(),
        };
        let v = c.encode();
        assert_eq!(v.len(), 13);
        assert_eq!(NameClaim::decode(&v), Some(c));
        assert_eq!(NameClaim::decode(b"alice"), None, "no claim time");
        assert_eq!(NameClaim::decode(&[0; 8]), None, "no name");
        let mut upper = 5u64.to_be_bytes().to_vec();
        upper.extend_from_slice(b"Alice");
        assert_eq!(NameClaim::decode(&upper), None, "not normalised");
        let mut long = 5u64.to_be_bytes().to_vec();
        long.extend_from_slice(&[b'a'; 33]);
        assert_eq!(NameClaim::decode(&long), None);
    }

    #[test]
    fn the_earliest_claim_wins_and_ties_go_to_the_smaller_fingerprint() {
        let at = |t| NameClaim {
            claimed_at: t,
            name: "alice".into(),
        };
        let (early, late, tie) = (at(100), at(200), at(100));
        let fp = |b| Fingerprint([b; 32]);
        let w = winner([(&late, fp(1), "late"), (&early, fp(9), "early")]);
        assert_eq!(w, Some((fp(9), "early")));
        let w = winner([(&early, fp(9), "nine"), (&tie, fp(3), "three")]);
        assert_eq!(w, Some((fp(3), "three")));
        assert_eq!(winner::<()>([]), None);
    }
}

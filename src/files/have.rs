//! Which leaves of a file the recipient holds (spec/11-files.md §4): one bit per 16 KiB
//! leaf, kept durably beside the partial file so a restart asks only for what is missing.

/// The leaves held, of `n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Have {
    n: u64,
    bits: Vec<u64>,
    count: u64,
}

/// A bitmap that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("leaf bitmap: {0}")]
pub struct HaveError(&'static str);

impl Have {
    /// None of `n` leaves.
    pub fn new(n: u64) -> Have {
        Have {
            n,
            bits: vec![0; n.div_ceil(64) as usize],
            count: 0,
        }
    }

    /// Leaves in the file.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Whether the file has no leaves.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Leaves held.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether every leaf is held.
    pub fn complete(&self) -> bool {
        self.count == self.n
    }

    /// Whether leaf `m` is held.
    pub fn has(&self, m: u64) -> bool {
        m < self.n && self.bits[(m / 64) as usize] & (1 << (m % 64)) != 0
    }

    /// Marks leaf `m` held; false if it was already, or is out of range.
    pub fn set(&mut self, m: u64) -> bool {
        if m >= self.n || self.has(m) {
            return false;
        }
        self.bits[(m / 64) as usize] |= 1 << (m % 64);
        self.count += 1;
        true
    }

    /// The first `max` runs of missing leaves, `[first, end)`, in order.
    pub fn missing(&self, max: usize) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut m = 0;
        while m < self.n && out.len() < max {
            // Skip whole words that are full.
            if m % 64 == 0 && self.bits[(m / 64) as usize] == u64::MAX {
                m += 64;
                continue;
            }
            if self.has(m) {
                m += 1;
                continue;
            }
            let start = m;
            while m < self.n && !self.has(m) {
                if m % 64 == 0 && self.bits[(m / 64) as usize] == 0 && m + 64 <= self.n {
                    m += 64;
                } else {
                    m += 1;
                }
            }
            out.push((start, m));
        }
        out
    }

    /// The bitmap's bytes: `n` u64 BE, then the words, little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + self.bits.len() * 8);
        v.extend_from_slice(&self.n.to_be_bytes());
        for w in &self.bits {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v
    }

    /// A bitmap from [`Have::encode`]'s bytes, for a file of `n` leaves.
    pub fn decode(b: &[u8], n: u64) -> Result<Have, HaveError> {
        let Some((len, words)) = b.split_first_chunk::<8>() else {
            return Err(HaveError("truncated"));
        };
        if u64::from_be_bytes(*len) != n {
            return Err(HaveError("for another file"));
        }
        if words.len() as u64 != n.div_ceil(64) * 8 {
            return Err(HaveError("wrong length"));
        }
        let mut bits: Vec<u64> = words
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
            .collect();
        // Bits past the last leaf mean nothing: cleared.
        if n % 64 != 0 {
            if let Some(last) = bits.last_mut() {
                *last &= (1 << (n % 64)) - 1;
            }
        }
        let count = bits.iter().map(|w| u64::from(w.count_ones())).sum();
        Ok(Have { n, bits, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn missing_runs_are_exactly_the_unset_leaves(n in 0u64..500, set in proptest::collection::vec(any::<u64>(), 0..300)) {
            let mut h = Have::new(n);
            for m in &set {
                if n > 0 { h.set(m % n); }
            }
            let runs = h.missing(usize::MAX);
            let mut from_runs = vec![false; n as usize];
            let mut prev_end = 0;
            for (a, e) in &runs {
                prop_assert!(a < e && *a >= prev_end);
                prev_end = *e;
                for m in *a..*e { from_runs[m as usize] = true; }
            }
            for m in 0..n {
                prop_assert_eq!(from_runs[m as usize], !h.has(m));
            }
            prop_assert_eq!(h.count(), (0..n).filter(|m| h.has(*m)).count() as u64);
            let back = Have::decode(&h.encode(), n).unwrap();
            prop_assert_eq!(back, h);
        }

        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200), n in 0u64..2000) {
            let _ = Have::decode(&b, n);
        }
    }

    #[test]
    fn a_bitmap_for_another_file_is_refused() {
        let h = Have::new(100);
        assert!(Have::decode(&h.encode(), 101).is_err());
        let mut full = Have::new(130);
        (0..130).for_each(|m| {
            full.set(m);
        });
        assert!(full.complete());
        assert!(full.missing(10).is_empty());
    }
}

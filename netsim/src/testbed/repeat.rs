//! One pair of the NAT matrix, run again and again with fresh daemons (fresh sockets,
//! fresh NAT mappings): how often it connects directly, with how many port-prediction
//! probes, how fast (spec/05-nat.md §5.5; `netsim nat-matrix --pair A:B --repeat N`).

use super::{NatType, PairResult, TestBed};

/// What `--repeat` prints last: `{"pair","attempts","direct","probes_p50","ms_p50"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatSummary {
    /// `A:B`.
    pub pair: String,
    /// Attempts run.
    pub attempts: usize,
    /// Attempts that delivered and whose session reached a direct path (at once, or
    /// within 5 s after a first message through a relay: [`PairResult::direct_ms`]).
    pub direct: usize,
    /// Median of the probes both daemons sent, over the direct attempts.
    pub probes_p50: Option<u64>,
    /// Median time from `send` until the session was direct, over the direct attempts, ms.
    pub ms_p50: Option<f64>,
}

impl RepeatSummary {
    /// The summary line.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "pair": self.pair, "attempts": self.attempts, "direct": self.direct,
            "probes_p50": self.probes_p50,
            "ms_p50": self.ms_p50.map(|m| (m * 10.0).round() / 10.0),
        })
    }

    /// Sums up attempts of one pair.
    pub fn of(a: NatType, b: NatType, results: &[PairResult]) -> RepeatSummary {
        let direct: Vec<&PairResult> = results
            .iter()
            .filter(|r| r.ms.is_some() && r.direct_ms.is_some())
            .collect();
        let mut probes: Vec<u64> = direct.iter().map(|r| r.probes).collect();
        probes.sort_unstable();
        let mut ms: Vec<f64> = direct.iter().filter_map(|r| r.direct_ms).collect();
        ms.sort_by(f64::total_cmp);
        RepeatSummary {
            pair: format!("{}:{}", a.name(), b.name()),
            attempts: results.len(),
            direct: direct.len(),
            probes_p50: probes.get(probes.len() / 2).copied(),
            ms_p50: ms.get(ms.len() / 2).copied(),
        }
    }
}

impl TestBed {
    /// Runs `a ↔ b` `n` times, one after the other, each with fresh daemons; `each` sees
    /// every attempt.
    pub fn repeat_pair(
        &self,
        a: NatType,
        b: NatType,
        n: usize,
        each: impl Fn(usize, &PairResult),
    ) -> RepeatSummary {
        let results: Vec<PairResult> = (0..n)
            .map(|i| {
                let r = self.run_pair(a, b);
                each(i, &r);
                r
            })
            .collect();
        RepeatSummary::of(a, b, &results)
    }
}

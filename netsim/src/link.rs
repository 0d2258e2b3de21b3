//! Per-datagram link behaviour: base latency, uniform jitter, independent loss.

use std::time::Duration;

use rand::Rng;

use crate::SimRng;

/// How a simulated link treats each datagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkModel {
    /// One-way latency before jitter.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter`.
    pub jitter: Duration,
    /// Probability in `0.0..=1.0` that a datagram is lost.
    pub loss: f64,
}

impl Default for LinkModel {
    /// 20 ms ± 10 ms, no loss.
    fn default() -> Self {
        LinkModel {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
            loss: 0.0,
        }
    }
}

impl LinkModel {
    /// The delivery delay of one datagram, or `None` if it is lost.
    pub fn sample(&self, rng: &mut SimRng) -> Option<Duration> {
        if self.loss > 0.0 && rng.gen_bool(self.loss.clamp(0.0, 1.0)) {
            return None;
        }
        let jitter_ns = self.jitter.as_nanos().min(u64::MAX as u128) as u64;
        let extra = if jitter_ns == 0 {
            0
        } else {
            rng.gen_range(0..=jitter_ns)
        };
        Some(self.latency + Duration::from_nanos(extra))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_draws() {
        let link = LinkModel {
            loss: 0.2,
            ..LinkModel::default()
        };
        let draw = |seed| {
            let mut rng = crate::rng(seed);
            (0..1000).map(|_| link.sample(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn delays_stay_in_range_and_loss_is_near_its_rate() {
        let link = LinkModel {
            loss: 0.25,
            ..LinkModel::default()
        };
        let mut rng = crate::rng(1);
        let draws: Vec<_> = (0..20_000).map(|_| link.sample(&mut rng)).collect();
        let lost = draws.iter().filter(|d| d.is_none()).count() as f64 / draws.len() as f64;
        assert!((0.23..0.27).contains(&lost), "loss {lost}");
        for d in draws.into_iter().flatten() {
            assert!(d >= link.latency && d <= link.latency + link.jitter);
        }
        let lossless = LinkModel {
            loss: 0.0,
            jitter: Duration::ZERO,
            ..LinkModel::default()
        };
        assert_eq!(lossless.sample(&mut rng), Some(link.latency));
    }
}

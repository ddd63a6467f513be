//! How often a bug shows, and how many clean seeds prove a fix.
//!
//! A sweep of the buggy variant fails on some fraction `p` of its seeds.
//! [`FailureRate`] reports it with its 95% Wilson score interval (sound
//! for small counts and for rates near 0 or 1, unlike the normal
//! approximation); [`seeds_for_95`] answers how many seeds of the fixed
//! variant must pass before "the fix holds" is 95% sure: if the bug still
//! failed a fraction `p` of seeds, `n` clean seeds in a row would happen
//! with probability `(1 - p)^n`, which is at most 5% from
//! `n = ln(0.05) / ln(1 - p)` (about `3 / p`).

use serde::{Deserialize, Serialize};

/// The z value of a two-sided 95% interval.
const Z_95: f64 = 1.959_963_984_540_054;

/// Failures over runs, with the 95% Wilson interval of the rate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureRate {
    /// Runs that failed.
    pub failed: u64,
    /// Runs in all.
    pub runs: u64,
    /// `failed / runs`.
    pub rate: f64,
    /// The 95% interval's bounds.
    pub low: f64,
    /// See `low`.
    pub high: f64,
}

impl FailureRate {
    /// `failed` of `runs`, with the 95% Wilson interval.
    pub fn new(failed: u64, runs: u64) -> FailureRate {
        assert!(failed <= runs, "{failed} failures in {runs} runs");
        let (low, high) = wilson_95(failed, runs);
        FailureRate {
            failed,
            runs,
            rate: if runs == 0 {
                0.0
            } else {
                failed as f64 / runs as f64
            },
            low,
            high,
        }
    }

    /// Seeds of the fixed variant that give 95% confidence (from the
    /// measured rate); `None` when nothing failed.
    pub fn seeds_for_95(&self) -> Option<u64> {
        seeds_for_95(self.rate)
    }

    /// `41% (34-48%)`.
    pub fn display(&self) -> String {
        let pct = |x: f64| (x * 100.0).round();
        format!(
            "{}% ({}-{}%)",
            pct(self.rate),
            pct(self.low),
            pct(self.high)
        )
    }
}

/// The 95% Wilson score interval of `successes` in `trials` (0..=1 each).
pub fn wilson_95(successes: u64, trials: u64) -> (f64, f64) {
    if trials == 0 {
        return (0.0, 1.0);
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = Z_95 * Z_95;
    let denominator = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denominator;
    let half = Z_95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    // The bounds are exact at the ends (rounding would leave 1e-17).
    let low = if successes == 0 {
        0.0
    } else {
        (center - half).max(0.0)
    };
    let high = if successes == trials {
        1.0
    } else {
        (center + half).min(1.0)
    };
    (low, high)
}

/// Clean seeds needed for 95% confidence that a bug failing a fraction
/// `p` of seeds is gone (see the module docs); `None` for `p == 0`.
pub fn seeds_for_95(p: f64) -> Option<u64> {
    assert!((0.0..=1.0).contains(&p), "a rate within 0..=1, not {p}");
    if p <= 0.0 {
        return None;
    }
    if p >= 1.0 {
        return Some(1);
    }
    Some(((0.05f64).ln() / (1.0 - p).ln()).ceil().max(1.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wilson_interval_matches_known_values() {
        // 10 of 100: 5.5% .. 17.4% (Wilson, 95%).
        let (low, high) = wilson_95(10, 100);
        assert!((low - 0.0552).abs() < 0.0005, "{low}");
        assert!((high - 0.1744).abs() < 0.0005, "{high}");
        // None of 50: the interval still reaches 7.1%.
        let (low, high) = wilson_95(0, 50);
        assert_eq!(low, 0.0);
        assert!((high - 0.0713).abs() < 0.0005, "{high}");
        // All of 20: from 83.9%.
        let (low, high) = wilson_95(20, 20);
        assert!((low - 0.8389).abs() < 0.0005, "{low}");
        assert_eq!(high, 1.0);
    }

    #[test]
    fn seeds_for_95_percent_are_about_three_over_the_rate() {
        assert_eq!(seeds_for_95(0.0), None);
        assert_eq!(seeds_for_95(1.0), Some(1));
        assert_eq!(seeds_for_95(0.5), Some(5));
        // ln(0.05) / ln(0.99) = 298.07
        assert_eq!(seeds_for_95(0.01), Some(299));
        let n = seeds_for_95(0.001).unwrap();
        assert!((2990..=3000).contains(&n), "{n}");
        // n clean seeds at rate p happen at most 5% of the time.
        for p in [0.02, 0.2, 0.7] {
            let n = seeds_for_95(p).unwrap();
            assert!((1.0 - p).powi(n as i32) <= 0.05);
            assert!((1.0 - p).powi(n as i32 - 1) > 0.05);
        }
    }
}

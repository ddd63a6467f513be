//! Oracles: how a run decides it failed.
//!
//! Each oracle has a name that appears in the verdict line
//! (`oracle=NAME: message`). The system under test and the workload report
//! to them through the functions here; the thresholds come from the
//! scenario file (see [`OracleConfig`]). The first failure ends the run.
//!
//! | oracle         | fires when |
//! |----------------|------------|
//! | `liveness`     | an operation registered with [`pending`] is not done by its deadline, or the workload does not finish in the scenario's time |
//! | `busy-loop`    | a handler is woken more than `busy_loop_max_per_ms` times in one simulated millisecond without progress ([`busy_wakeup`], [`busy_progress`]) |
//! | `latency`      | a percentile of a recorded metric ([`record_latency`]) exceeds its threshold |
//! | `throughput`   | a simulated second within the steady-load window completes fewer than the minimum ([`count`]) |
//! | `host-crash`   | a simulated host panics (the runner reports it) |
//! | anything else  | the workload calls [`fail`] with its own name, e.g. `response-validation` or `store-model` |

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::ctx;

/// Oracle thresholds of a scenario (`[oracles]` in its file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OracleConfig {
    /// Deadline of operations registered with [`pending`], in simulated ms.
    #[serde(default = "default_deadline_ms")]
    pub liveness_deadline_ms: u64,
    /// Wake-ups without progress allowed per handler per simulated ms.
    #[serde(default = "default_busy")]
    pub busy_loop_max_per_ms: u32,
    /// `[[oracles.latency]]`: percentile thresholds of latency metrics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<LatencyThreshold>,
    /// `[[oracles.throughput]]`: minimum completions per simulated second.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throughput: Vec<ThroughputThreshold>,
}

impl Default for OracleConfig {
    fn default() -> Self {
        OracleConfig {
            liveness_deadline_ms: default_deadline_ms(),
            busy_loop_max_per_ms: default_busy(),
            latency: Vec::new(),
            throughput: Vec::new(),
        }
    }
}

fn default_deadline_ms() -> u64 {
    30_000
}
fn default_busy() -> u32 {
    100
}

/// One `[[oracles.latency]]` table: at the end of a run the `latency` oracle
/// fires when the metric's percentile exceeds `max_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyThreshold {
    /// The metric name the system under test records.
    pub metric: String,
    /// e.g. 99.9; 100 is the maximum.
    pub percentile: f64,
    /// The largest allowed value of that percentile, in simulated ms.
    pub max_ms: u64,
    /// Fewer samples than this: not judged.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
}

fn default_min_samples() -> u64 {
    1
}

/// One `[[oracles.throughput]]` table: the `throughput` oracle fires when a
/// simulated second of the window completes fewer than `min_per_s`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThroughputThreshold {
    /// The metric name the system under test counts (see [`count`]).
    pub metric: String,
    /// Completions every simulated second must reach.
    pub min_per_s: u64,
    /// The steady-load window, in simulated ms.
    pub from_ms: u64,
    /// End of the window, in simulated ms (after `from_ms`); only whole seconds
    /// within `from_ms..until_ms` are judged.
    pub until_ms: u64,
}

impl OracleConfig {
    /// Checks the values serde's types cannot express; the message names the
    /// key.
    pub fn validate(&self) -> Result<(), String> {
        if self.liveness_deadline_ms == 0 {
            return Err("oracles.liveness_deadline_ms must be positive".into());
        }
        if self.busy_loop_max_per_ms == 0 {
            return Err("oracles.busy_loop_max_per_ms must be positive".into());
        }
        for l in &self.latency {
            if !(0.0..=100.0).contains(&l.percentile) {
                return Err(format!(
                    "oracles.latency `{}`: percentile must be within 0..=100",
                    l.metric
                ));
            }
        }
        for t in &self.throughput {
            if t.from_ms >= t.until_ms {
                return Err(format!(
                    "oracles.throughput `{}`: from_ms must be before until_ms",
                    t.metric
                ));
            }
        }
        Ok(())
    }
}

/// The failure that ended a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The oracle's name, as in the verdict line.
    pub oracle: String,
    /// What the oracle found.
    pub message: String,
    /// When it fired, in simulated time since the run's start.
    pub at: Duration,
}

struct PendingOp {
    name: String,
    deadline: Duration,
}

#[derive(Default)]
struct Busy {
    /// The simulated millisecond being counted.
    ms: u128,
    /// Wake-ups without progress per handler in that millisecond.
    wakeups: BTreeMap<String, u32>,
}

#[derive(Default)]
pub(crate) struct OracleState {
    pub(crate) config: OracleConfig,
    pub(crate) failure: Option<Failure>,
    pending: BTreeMap<u64, PendingOp>,
    next_op: u64,
    latencies: BTreeMap<String, Histogram<u64>>,
    counts: BTreeMap<String, BTreeMap<u64, u64>>,
    /// Seconds already judged by the throughput oracle.
    judged_seconds: u64,
    busy: Busy,
}

impl OracleState {
    pub(crate) fn new(config: OracleConfig) -> OracleState {
        OracleState {
            config,
            ..OracleState::default()
        }
    }

    pub(crate) fn fail(&mut self, oracle: &str, message: String, at: Duration) {
        if self.failure.is_none() {
            tracing::info!(target: "faultline::oracle", oracle, message = message.as_str(), "oracle fired");
            self.failure = Some(Failure {
                oracle: oracle.to_string(),
                message,
                at,
            });
        }
    }

    /// Checks that run as simulated time passes.
    pub(crate) fn check_step(&mut self, now: Duration) {
        let overdue: Vec<&PendingOp> = self
            .pending
            .values()
            .filter(|op| op.deadline <= now)
            .collect();
        if !overdue.is_empty() {
            let names: Vec<&str> = overdue.iter().map(|op| op.name.as_str()).collect();
            let message = format!(
                "{} operation(s) not done by their deadline: {}",
                names.len(),
                names.join(", ")
            );
            self.fail("liveness", message, now);
        }
        let current_second = now.as_secs();
        while self.judged_seconds < current_second {
            let second = self.judged_seconds;
            self.judged_seconds += 1;
            let window_start = Duration::from_secs(second);
            let window_end = Duration::from_secs(second + 1);
            for t in self.config.throughput.clone() {
                if window_start < Duration::from_millis(t.from_ms)
                    || window_end > Duration::from_millis(t.until_ms)
                {
                    continue;
                }
                let got = self
                    .counts
                    .get(&t.metric)
                    .and_then(|c| c.get(&second))
                    .copied()
                    .unwrap_or(0);
                if got < t.min_per_s {
                    let message = format!(
                        "{} completed {} in simulated second {}..{}s, minimum {}",
                        t.metric,
                        got,
                        second,
                        second + 1,
                        t.min_per_s
                    );
                    self.fail("throughput", message, now);
                }
            }
        }
    }

    /// Checks that judge the whole run.
    pub(crate) fn check_end(&mut self, now: Duration) {
        for threshold in self.config.latency.clone() {
            let Some(histogram) = self.latencies.get(&threshold.metric) else {
                continue;
            };
            if histogram.len() < threshold.min_samples {
                continue;
            }
            let value_us = histogram.value_at_quantile(threshold.percentile / 100.0);
            if value_us > threshold.max_ms * 1000 {
                let message = format!(
                    "{} p{} = {:.3} ms > {} ms ({} samples, max {:.3} ms)",
                    threshold.metric,
                    threshold.percentile,
                    value_us as f64 / 1000.0,
                    threshold.max_ms,
                    histogram.len(),
                    histogram.max() as f64 / 1000.0
                );
                self.fail("latency", message, now);
            }
        }
    }

    pub(crate) fn pending_names(&self) -> Vec<String> {
        self.pending.values().map(|op| op.name.clone()).collect()
    }

    /// Percentile summaries of every latency metric, for reports.
    pub(crate) fn latency_summary(&self) -> BTreeMap<String, LatencySummary> {
        self.latencies
            .iter()
            .map(|(name, h)| {
                (
                    name.clone(),
                    LatencySummary {
                        samples: h.len(),
                        p50_us: h.value_at_quantile(0.5),
                        p99_us: h.value_at_quantile(0.99),
                        p999_us: h.value_at_quantile(0.999),
                        max_us: h.max(),
                    },
                )
            })
            .collect()
    }
}

/// Percentiles of one latency metric, in simulated microseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// How many samples were recorded.
    pub samples: u64,
    /// The median.
    pub p50_us: u64,
    /// The 99th percentile.
    pub p99_us: u64,
    /// The 99.9th percentile.
    pub p999_us: u64,
    /// The largest sample (like the percentiles, to 3 significant digits).
    pub max_us: u64,
}

/// Fails the run with the named oracle (the first failure wins).
pub fn fail(oracle: &str, message: impl std::fmt::Display) {
    ctx::with(|ctx| {
        let now = ctx.now();
        ctx.part::<OracleState>()
            .borrow_mut()
            .fail(oracle, message.to_string(), now)
    });
}

/// Whether the run has already failed.
pub fn failed() -> bool {
    ctx::with(|ctx| ctx.part::<OracleState>().borrow().failure.is_some()).unwrap_or(false)
}

/// An operation that must finish (with success or an error) by a deadline.
/// Dropping the guard marks it done.
#[must_use = "the operation is done when the guard drops"]
pub struct Pending {
    id: Option<u64>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            ctx::with(|ctx| ctx.part::<OracleState>().borrow_mut().pending.remove(&id));
        }
    }
}

/// Registers an operation with the scenario's liveness deadline.
pub fn pending(name: impl Into<String>) -> Pending {
    let deadline = ctx::with(|ctx| {
        Duration::from_millis(
            ctx.part::<OracleState>()
                .borrow()
                .config
                .liveness_deadline_ms,
        )
    });
    pending_within(name, deadline.unwrap_or(Duration::MAX))
}

/// Registers an operation that must be done within `within` from now.
pub fn pending_within(name: impl Into<String>, within: Duration) -> Pending {
    let name = name.into();
    let id = ctx::with(|ctx| {
        let deadline = ctx.now().saturating_add(within);
        let mut oracles = ctx.part::<OracleState>().borrow_mut();
        let id = oracles.next_op;
        oracles.next_op += 1;
        oracles.pending.insert(id, PendingOp { name, deadline });
        id
    });
    Pending { id }
}

/// Records one sample of a latency metric (simulated time).
pub fn record_latency(metric: &str, latency: Duration) {
    ctx::with(|ctx| {
        let mut oracles = ctx.part::<OracleState>().borrow_mut();
        let histogram = oracles
            .latencies
            .entry(metric.to_string())
            .or_insert_with(|| {
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
            });
        let micros = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        histogram.record(micros).expect("value within bounds");
    });
}

/// Counts one completion of a metric in the current simulated second.
pub fn count(metric: &str) {
    ctx::with(|ctx| {
        let second = ctx.now().as_secs();
        let mut oracles = ctx.part::<OracleState>().borrow_mut();
        *oracles
            .counts
            .entry(metric.to_string())
            .or_default()
            .entry(second)
            .or_insert(0) += 1;
    });
}

/// A handler (named by `key`) was woken. Counted against the busy-loop
/// limit until [`busy_progress`] says it moved forward.
pub fn busy_wakeup(key: &str) {
    ctx::with(|ctx| {
        let now = ctx.now();
        let mut oracles = ctx.part::<OracleState>().borrow_mut();
        let limit = oracles.config.busy_loop_max_per_ms;
        let ms = now.as_millis();
        if oracles.busy.ms != ms {
            oracles.busy.ms = ms;
            oracles.busy.wakeups.clear();
        }
        let count = oracles.busy.wakeups.entry(key.to_string()).or_insert(0);
        *count += 1;
        if *count > limit {
            let message = format!(
                "{key} woke {count} times within simulated millisecond {ms} without progress"
            );
            oracles.fail("busy-loop", message, now);
        }
    });
}

/// The handler named by `key` made progress: its wake-ups are forgiven.
pub fn busy_progress(key: &str) {
    ctx::with(|ctx| {
        ctx.part::<OracleState>()
            .borrow_mut()
            .busy
            .wakeups
            .remove(key);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_and_liveness_fire_on_their_conditions() {
        let config = OracleConfig {
            throughput: vec![ThroughputThreshold {
                metric: "req".into(),
                min_per_s: 1,
                from_ms: 1000,
                until_ms: 3000,
            }],
            ..OracleConfig::default()
        };
        let mut state = OracleState::new(config);
        state.counts.entry("req".into()).or_default().insert(1, 5);
        state.check_step(Duration::from_millis(2500));
        assert!(state.failure.is_none(), "second 1 had 5 completions");
        state.check_step(Duration::from_millis(3000));
        let failure = state.failure.clone().expect("second 2 had none");
        assert_eq!(failure.oracle, "throughput");

        let mut state = OracleState::new(OracleConfig::default());
        state.pending.insert(
            0,
            PendingOp {
                name: "setup vb=3".into(),
                deadline: Duration::from_secs(5),
            },
        );
        state.check_step(Duration::from_secs(4));
        assert!(state.failure.is_none());
        state.check_step(Duration::from_secs(5));
        let failure = state.failure.expect("overdue");
        assert_eq!(failure.oracle, "liveness");
        assert!(
            failure.message.contains("setup vb=3"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn latency_percentiles_are_judged_against_thresholds() {
        let config = OracleConfig {
            latency: vec![LatencyThreshold {
                metric: "w".into(),
                percentile: 99.9,
                max_ms: 100,
                min_samples: 1,
            }],
            ..OracleConfig::default()
        };
        let mut state = OracleState::new(config.clone());
        let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for _ in 0..10_000 {
            h.record(500).unwrap();
        }
        state.latencies.insert("w".into(), h.clone());
        state.check_end(Duration::ZERO);
        assert!(state.failure.is_none());
        h.record_n(2_000_000, 20).unwrap();
        let mut state = OracleState::new(config);
        state.latencies.insert("w".into(), h);
        state.check_end(Duration::ZERO);
        assert_eq!(state.failure.expect("2 s tail").oracle, "latency");
    }
}

//! `race`: where tasks give way at preemption points, and for how long
//! (`[[race]]` in a plan, `[[faults.race]]`, one rule per table, in a
//! scenario): the strategies `random`, `pct`, `targeted` and one
//! `schedule` of bounded exploration. `schedule` applies it.
//!
//! Everything about the kind is here (plan entry, space, checks, how a seed
//! draws it, how it is summarised, the two runs of a `pct` plan);
//! [`super::KINDS`] says when it is drawn.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::common::{
    Range2, check_probability, check_range, default_probability, each, has_probability,
    probability_in, swarm_each,
};
use super::kind::Kind;
use crate::coverage;

/// A schedule for the preemption points whose name matches `point` (a
/// glob over `primitive.operation`; `*` is every point): where tasks give
/// way, and for how long (see `schedule`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "lowercase", deny_unknown_fields)]
pub enum Race {
    /// At each hit of a matching point, with `probability`, yield 1..=max_yields
    /// times or (half of those times, when `max_sleep_us` > 0) pause
    /// 1..=max_sleep_us of simulated time. A released lock goes to a waiter
    /// drawn at random.
    Random {
        /// Preemption points the rule acts on (glob over `primitive.operation`;
        /// `*` is every point).
        point: String,
        /// Chance, within 0..=1, that one hit of a matching point makes the
        /// task give way.
        probability: f64,
        /// Most yields when the task gives way; the count is drawn in 1..=this
        /// (default 4).
        #[serde(default = "default_max_yields")]
        max_yields: u32,
        /// Longest pause, in simulated µs; the pause is drawn in 1..=this. 0
        /// (the default): the task only yields.
        #[serde(default)]
        max_sleep_us: u64,
        /// Chance, within 0..=1, that a wait on a condition variable whose
        /// `NAME.wait` point the rule acts on ends with no notification
        /// (default 0).
        #[serde(default)]
        spurious_wakeup: f64,
    },
    /// PCT (Burckhardt et al.): a seeded priority per thread, `depth - 1`
    /// priority change points drawn among the run's `steps` steps; a thread
    /// goes on at a point only when no thread of its host with a higher
    /// priority is ready (see `schedule::pct`).
    Pct {
        /// Preemption points the rule acts on (glob over `primitive.operation`;
        /// `*` is every point).
        point: String,
        /// The bug depth `d` PCT aims at: `d - 1` priority change points (0 is
        /// taken as 1: no change points).
        depth: u32,
        /// The run's number of steps `k`, among which the change points are
        /// drawn. 0 (the default): the runner learns it from a first run of
        /// the seed without change points, and the plan it reports says it.
        #[serde(default)]
        steps: u64,
        /// As for `random` (default 0).
        #[serde(default)]
        spurious_wakeup: f64,
    },
    /// At the n-th hit (1-based) of each matching point, yield `yields`
    /// times, then pause `sleep_us`.
    Targeted {
        /// Preemption points the rule acts on (glob over `primitive.operation`;
        /// `*` is every point).
        point: String,
        /// Which hit of each matching point to act at (1-based; 0 is rejected).
        nth: u32,
        /// Yields at that hit (default 0).
        #[serde(default)]
        yields: u32,
        /// Pause after the yields, in simulated µs (default 0). With neither
        /// yields nor a pause the rule does nothing.
        #[serde(default)]
        sleep_us: u64,
    },
    /// One schedule of bounded exploration: the thread taking each of
    /// `steps` (1-based, counted as PCT counts them) gives way there once
    /// (see `schedule::bounded`). `faultline explore` prints them.
    Schedule {
        /// Preemption points the rule acts on (glob over `primitive.operation`;
        /// `*` is every point).
        point: String,
        /// The steps where a thread gives way, ascending.
        steps: Vec<u64>,
    },
}

fn default_max_yields() -> u32 {
    4
}

impl Race {
    /// The glob of the points the rule acts on, whatever its strategy.
    pub fn point(&self) -> &str {
        match self {
            Race::Random { point, .. }
            | Race::Pct { point, .. }
            | Race::Targeted { point, .. }
            | Race::Schedule { point, .. } => point,
        }
    }

    /// The chance that a wait on a condition variable the rule acts on
    /// ends with no notification.
    pub fn spurious_wakeup(&self) -> f64 {
        match self {
            Race::Random {
                spurious_wakeup, ..
            }
            | Race::Pct {
                spurious_wakeup, ..
            } => *spurious_wakeup,
            Race::Targeted { .. } | Race::Schedule { .. } => 0.0,
        }
    }
}

/// The race rules of the first of a `pct` plan's two runs (see
/// [`crate::run`]): every `pct` rule that does not say its steps, without
/// change points. `None` when there is none.
pub(super) fn pct_probe(rules: &[Race]) -> Option<Vec<Race>> {
    let learns = |r: &Race| matches!(r, Race::Pct { steps: 0, depth, .. } if *depth > 1);
    if !rules.iter().any(learns) {
        return None;
    }
    let mut probe = rules.to_vec();
    for rule in &mut probe {
        if let Race::Pct {
            depth, steps: 0, ..
        } = rule
        {
            *depth = 1;
        }
    }
    Some(probe)
}

/// Gives every `pct` rule that does not say its steps the steps the first
/// run counted (`race-steps:GLOB` in `coverage`).
pub(super) fn set_pct_steps(rules: &mut [Race], coverage: &BTreeMap<String, u64>) {
    for rule in rules {
        if let Race::Pct { point, steps, .. } = rule {
            if *steps == 0 {
                *steps = coverage
                    .get(&coverage::race_steps(point))
                    .copied()
                    .unwrap_or(0)
                    .max(1);
            }
        }
    }
}

/// One `[[faults.race]]` rule: a drawn plan gets one [`Race`] on one of
/// `points`, with one of `strategies` and its parameters drawn from the ranges
/// below.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaceSpace {
    /// Preemption point names (globs over `primitive.operation`; `*`: all).
    pub points: Vec<String>,
    /// Which strategies may be drawn: `random`, `pct`, `targeted` (default
    /// `random` and `pct`).
    #[serde(default = "default_strategies")]
    pub strategies: Vec<String>,
    /// For `random`: the probability of yielding at a hit (default
    /// `[0.01, 0.1]`: at 0.05-0.5 a loaded proxy slowed so much that its
    /// fixed variant missed the workload's deadline).
    #[serde(default = "default_race_probability")]
    pub yield_probability: [f64; 2],
    /// Range of yields (default `[1, 4]`): `random`'s `max_yields`,
    /// `targeted`'s `yields`.
    #[serde(default = "default_yields")]
    pub yields: Range2,
    /// Range of pauses, in simulated µs (default `[0, 1000]`): `random`'s
    /// `max_sleep_us`, `targeted`'s `sleep_us`.
    #[serde(default = "default_sleep_us")]
    pub sleep_us: Range2,
    /// For `targeted`: which hit.
    #[serde(default = "default_nth")]
    pub nth: Range2,
    /// For `pct`: range of the bug depth (default `[1, 3]`).
    #[serde(default = "default_depth")]
    pub depth: Range2,
    /// For `random` and `pct`: range of the chance that a wait on a
    /// condition variable ends with no notification (default
    /// `[0.01, 0.1]`: on, as POSIX and Rust's std allow it).
    #[serde(default = "default_spurious_wakeup")]
    pub spurious_wakeup: [f64; 2],
    /// Chance, within 0..=1, that a run's plan has this rule (default 1).
    #[serde(default = "default_probability")]
    pub probability: f64,
}

/// The strategies a `[[faults.race]]` rule may draw.
pub const RACE_STRATEGIES: [&str; 3] = ["random", "pct", "targeted"];

/// The strategies a rule draws when it names none: `random` and `pct`.
/// `targeted` acts at the n-th hit of every point its glob matches, which
/// with `*` finds almost nothing (measured on the catalog's race bugs: 0,
/// 0 and 6 failing seeds of 60), so a rule names it when it wants it.
fn default_strategies() -> Vec<String> {
    vec!["random".into(), "pct".into()]
}
fn default_race_probability() -> [f64; 2] {
    [0.01, 0.1]
}
fn default_yields() -> Range2 {
    [1, 4]
}
fn default_sleep_us() -> Range2 {
    [0, 1000]
}
fn default_nth() -> Range2 {
    [1, 50]
}
fn default_depth() -> Range2 {
    [1, 3]
}
fn default_spurious_wakeup() -> [f64; 2] {
    [0.01, 0.1]
}

has_probability!(RaceSpace);

/// Makes every rule draw only `strategy` (`random`, `pct` or `targeted`),
/// its other ranges unchanged.
pub(super) fn restrict_strategy(rules: &mut [RaceSpace], strategy: &str) -> Result<(), String> {
    if !RACE_STRATEGIES.contains(&strategy) {
        return Err(format!(
            "unknown race strategy `{strategy}` ({})",
            RACE_STRATEGIES.join(", ")
        ));
    }
    if rules.is_empty() {
        return Err("the scenario has no [[faults.race]] rule".into());
    }
    for race in rules {
        race.strategies = vec![strategy.to_string()];
    }
    Ok(())
}

/// The coverage keys of the space's rules, for
/// [`super::FaultSpace::applied_keys`]: a point glob is checked only by the points
/// a run passes.
pub(super) fn applied_keys(rules: &[RaceSpace], out: &mut Vec<(String, String)>) {
    for s in rules {
        for point in &s.points {
            out.push((
                format!("[[faults.race]] points `{point}`: no preemption point matched"),
                coverage::race_applied(point),
            ));
        }
    }
}

pub(super) const KIND: Kind<Race, Vec<RaceSpace>> = Kind {
    name: "race",
    check: |entries| {
        for f in entries {
            if let Race::Random { probability, .. } = f {
                if !(0.0..=1.0).contains(probability) {
                    return Err("race.probability must be within 0..=1".into());
                }
            }
            if !(0.0..=1.0).contains(&f.spurious_wakeup()) {
                return Err("race.spurious_wakeup must be within 0..=1".into());
            }
            if let Race::Targeted { nth: 0, .. } = f {
                return Err("race.nth is 1-based".into());
            }
            if let Race::Schedule { steps, .. } = f {
                if steps.contains(&0) || !steps.is_sorted_by(|a, b| a < b) {
                    return Err("race.steps are 1-based and ascending".into());
                }
            }
        }
        Ok(())
    },
    // A point glob names no host.
    host_globs: |_, _| {},
    summary: |entries, out| {
        for f in entries {
            out.push(format!("race {}", f.point()));
        }
    },
    allowed: |space| !space.is_empty(),
    check_space: |space| {
        for s in space {
            if s.points.is_empty() {
                return Err("faults.race.points is empty".into());
            }
            if s.strategies.is_empty() {
                return Err("faults.race.strategies is empty".into());
            }
            for name in &s.strategies {
                if !RACE_STRATEGIES.contains(&name.as_str()) {
                    return Err(format!(
                        "faults.race.strategies: unknown strategy `{name}` (random, pct or targeted)"
                    ));
                }
            }
            let [lo, hi] = s.yield_probability;
            if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
                return Err("faults.race.yield_probability must be [lo, hi] within 0..=1".into());
            }
            check_range("faults.race.yields", &s.yields)?;
            check_range("faults.race.sleep_us", &s.sleep_us)?;
            check_range("faults.race.nth", &s.nth)?;
            check_range("faults.race.depth", &s.depth)?;
            let [lo, hi] = s.spurious_wakeup;
            if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
                return Err("faults.race.spurious_wakeup must be [lo, hi] within 0..=1".into());
            }
            if s.nth[0] == 0 {
                return Err("faults.race.nth is 1-based".into());
            }
            check_probability("faults.race", s.probability)?;
        }
        Ok(())
    },
    // A point glob names no host.
    space_host_globs: |_, _| {},
    draw,
    swarm: |space, keep| swarm_each(space, keep),
};

#[allow(
    clippy::ptr_arg,
    reason = "the type of `Kind::draw` for every kind of several rules: its part of a space is a `Vec`"
)]
fn draw(space: &Vec<RaceSpace>) -> BoxedStrategy<Vec<Race>> {
    each(space, race_strategy)
}

fn race_strategy(s: &RaceSpace) -> BoxedStrategy<Race> {
    let points = s.points.clone();
    let mut choices: Vec<BoxedStrategy<Race>> = Vec::new();
    for name in &s.strategies {
        let point = prop::sample::select(points.clone());
        let strategy = match name.as_str() {
            "random" => (
                point,
                probability_in(s.yield_probability),
                s.yields[0]..=s.yields[1],
                s.sleep_us[0]..=s.sleep_us[1],
                probability_in(s.spurious_wakeup),
            )
                .prop_map(
                    |(point, probability, max_yields, max_sleep_us, spurious_wakeup)| {
                        Race::Random {
                            point,
                            probability,
                            max_yields: max_yields as u32,
                            max_sleep_us,
                            spurious_wakeup,
                        }
                    },
                )
                .boxed(),
            "pct" => (
                point,
                s.depth[0]..=s.depth[1],
                probability_in(s.spurious_wakeup),
            )
                .prop_map(|(point, depth, spurious_wakeup)| Race::Pct {
                    point,
                    depth: depth as u32,
                    steps: 0,
                    spurious_wakeup,
                })
                .boxed(),
            _ => (
                point,
                s.nth[0]..=s.nth[1],
                s.yields[0]..=s.yields[1],
                s.sleep_us[0]..=s.sleep_us[1],
            )
                .prop_map(|(point, nth, yields, sleep_us)| Race::Targeted {
                    point,
                    nth: nth as u32,
                    yields: yields as u32,
                    sleep_us,
                })
                .boxed(),
        };
        choices.push(strategy);
    }
    prop::strategy::Union::new(choices).boxed()
}

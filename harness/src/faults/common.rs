//! What the fault kinds share: ranges and their checks, probabilities, host
//! globs, and the proptest pieces every kind's strategy is built from.
//!
//! Kept apart so that a kind's file holds only what is particular to it,
//! and so that every kind draws "maybe one entry" and "each rule, maybe"
//! the same way (the way recorded seeds were drawn).

use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use super::kind::Keep;

/// An inclusive range written `[min, max]` in scenario files.
pub type Range2 = [u64; 2];

/// Glob match for host names and labels (`*` and `?`). A malformed pattern
/// matches only itself, literally.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    if pattern == "*" || pattern == name {
        return true;
    }
    match glob::Pattern::new(pattern) {
        Ok(p) => p.matches(name),
        Err(_) => false,
    }
}

pub(super) fn check_range(name: &str, r: &Range2) -> Result<(), String> {
    if r[0] > r[1] {
        return Err(format!(
            "{name}: the range [{}, {}] ends before it starts",
            r[0], r[1]
        ));
    }
    Ok(())
}

pub(super) fn check_probability(name: &str, p: f64) -> Result<(), String> {
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("{name}.probability must be within 0..=1, not {p}"));
    }
    Ok(())
}

pub(super) fn check_hosts(name: &str, hosts: &[String]) -> Result<(), String> {
    if hosts.is_empty() {
        return Err(format!("{name}: the host list is empty"));
    }
    Ok(())
}

pub(super) fn default_probability() -> f64 {
    1.0
}

pub(super) fn any_host() -> String {
    "*".to_string()
}

/// A space of a fault kind (or one rule of it) that a plan includes with a
/// probability, which a swarm redraws.
pub(super) trait HasProbability {
    fn probability(&self) -> f64;
    fn probability_mut(&mut self) -> &mut f64;
}

macro_rules! has_probability {
    ($($t:ty),*) => { $(
        impl $crate::faults::common::HasProbability for $t {
            fn probability(&self) -> f64 {
                self.probability
            }
            fn probability_mut(&mut self) -> &mut f64 {
                &mut self.probability
            }
        }
    )* };
}
pub(super) use has_probability;

/// At most one entry drawn from a kind that has one table (`[faults.KIND]`),
/// when the space has it.
pub(super) fn maybe<S, T: std::fmt::Debug + Clone + 'static>(
    space: Option<&S>,
    make: impl Fn(&S) -> BoxedStrategy<T>,
) -> BoxedStrategy<Vec<T>>
where
    S: HasProbability,
{
    match space {
        None => Just(Vec::new()).boxed(),
        Some(s) => optional(s.probability(), make(s)),
    }
}

/// At most one entry drawn from each rule of a kind written as several
/// tables (`[[faults.KIND]]`), in the rules' order.
pub(super) fn each<S: HasProbability, T: std::fmt::Debug + Clone + 'static>(
    spaces: &[S],
    make: impl Fn(&S) -> BoxedStrategy<T>,
) -> BoxedStrategy<Vec<T>> {
    let parts: Vec<BoxedStrategy<Vec<T>>> = spaces
        .iter()
        .map(|s| optional(s.probability(), make(s)))
        .collect();
    parts
        .prop_map(|vs: Vec<Vec<T>>| vs.into_iter().flatten().collect::<Vec<T>>())
        .boxed()
}

fn optional<T: std::fmt::Debug + Clone + 'static>(
    probability: f64,
    s: BoxedStrategy<T>,
) -> BoxedStrategy<Vec<T>> {
    if probability >= 1.0 {
        // Still shrinkable to nothing: a plan without the fault is simpler.
        prop::option::weighted(1.0 - f64::EPSILON, s)
            .prop_map(|o| o.into_iter().collect())
            .boxed()
    } else if probability <= 0.0 {
        Just(Vec::new()).boxed()
    } else {
        prop::option::weighted(probability, s)
            .prop_map(|o| o.into_iter().collect())
            .boxed()
    }
}

/// A swarm's choice for a kind that has one table: it stays (with a new
/// probability) or goes.
pub(super) fn swarm_one<S: HasProbability>(space: &mut Option<S>, keep: &mut Keep<'_>) {
    if let Some(s) = space {
        if !keep(s.probability_mut()) {
            *space = None;
        }
    }
}

/// A swarm's choice for each rule of a kind written as several tables.
pub(super) fn swarm_each<S: HasProbability>(rules: &mut Vec<S>, keep: &mut Keep<'_>) {
    rules.retain_mut(|s| keep(s.probability_mut()));
}

/// Rounds a drawn probability to 1/1000: plans are read by people, and a
/// value must survive a round trip through a TOML file unchanged.
pub(super) fn quantize(p: f64) -> f64 {
    (p * 1000.0).round() / 1000.0
}

/// A probability drawn in `[lo, hi]` (quantized), or `lo` when the range
/// is one value.
pub(super) fn probability_in([lo, hi]: [f64; 2]) -> BoxedStrategy<f64> {
    if lo == hi {
        Just(lo).boxed()
    } else {
        (lo..=hi).prop_map(quantize).boxed()
    }
}

/// `nth` drawn from a range, or none (every one) when there is no range.
pub(super) fn nth_in(range: Option<Range2>) -> BoxedStrategy<Option<u32>> {
    match range {
        Some([lo, hi]) => (lo..=hi).prop_map(|n| Some(n as u32)).boxed(),
        None => Just(None).boxed(),
    }
}

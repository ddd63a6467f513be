//! Bounded exhaustive exploration: every schedule of a run with at most
//! `c` preemptions, in a deterministic order (CHESS's iterative context
//! bounding; shuttle's DFS scheduler).
//!
//! The seed fixes every choice but the threads' interleaving: the fault
//! plan drawn for it, with its `race` rules replaced by one
//! [`Race::Schedule`] rule over every point. A schedule is the list of
//! *steps* (hits of a point while another thread of the host could run,
//! counted from 1 in the order the run takes them) at which the running
//! thread gives way, once: it goes behind every ready thread of its host.
//! Each schedule's run is the same as its parent's (the list without its
//! last step) up to that step, so the steps of a run name the places a
//! child may add one more: the search is a depth-first walk of that tree,
//! smaller steps first, each schedule run once. It stops at the first
//! failure, whose schedule string (`3,17`) replays it exactly.
//!
//! With two threads this is every interleaving with at most `c`
//! preemptions at the points. With more, the threads that run after a
//! switch do so in tokio's order (the order they became ready): the search
//! covers where switches happen, not which of several ready threads runs
//! next. Code between two points is one step; memory is sequentially
//! consistent.

use crate::coverage;
use crate::faults::{FaultPlan, Race};
use crate::runner::{self, Faults, Outcome, RunOptions};
use crate::scenario::Scenario;

/// How an exploration ended.
pub enum Explored {
    /// Every schedule with at most the bound's preemptions passed.
    Exhausted {
        /// Schedules run.
        schedules: u64,
    },
    /// `max_schedules` ran and every one passed; more remain.
    Stopped {
        /// Schedules run.
        schedules: u64,
    },
    /// A schedule failed.
    Failing {
        /// Schedules run, the failing one included.
        schedules: u64,
        /// Its steps.
        schedule: Vec<u64>,
        /// Its run.
        outcome: Box<Outcome>,
    },
}

impl Explored {
    /// The closing line: `explore: N schedules, exhausted`, `explore:
    /// failing schedule S after N schedules (oracle)`, or `explore: N
    /// schedules, stopped at the limit (not exhausted)`.
    pub fn summary_line(&self) -> String {
        match self {
            Explored::Exhausted { schedules } => {
                format!("explore: {schedules} schedules, exhausted")
            }
            Explored::Stopped { schedules } => {
                format!("explore: {schedules} schedules, stopped at the limit (not exhausted)")
            }
            Explored::Failing {
                schedules,
                schedule,
                outcome,
            } => format!(
                "explore: failing schedule {} after {schedules} schedules ({})",
                format_schedule(schedule),
                outcome.verdict.oracle().unwrap_or("?")
            ),
        }
    }
}

/// A schedule as a string: its steps joined by commas (`-` for none).
pub fn format_schedule(steps: &[u64]) -> String {
    if steps.is_empty() {
        return "-".to_string();
    }
    steps
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses what [`format_schedule`] writes: ascending steps from 1.
pub fn parse_schedule(text: &str) -> Result<Vec<u64>, String> {
    let text = text.trim();
    if text == "-" || text.is_empty() {
        return Ok(Vec::new());
    }
    let steps = text
        .split(',')
        .map(|part| {
            part.trim()
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("schedule `{text}`: `{part}` is not a step (1, 2, …)"))
        })
        .collect::<Result<Vec<u64>, String>>()?;
    if !steps.is_sorted_by(|a, b| a < b) {
        return Err(format!("schedule `{text}`: steps must ascend"));
    }
    Ok(steps)
}

/// The plan of one schedule: the seed's drawn plan with its `race` rules
/// replaced by the schedule.
pub fn schedule_plan(scenario: &Scenario, seed: u64, steps: &[u64]) -> FaultPlan {
    let mut plan = scenario.spec.faults.draw(seed).current();
    plan.race = vec![Race::Schedule {
        point: "*".to_string(),
        steps: steps.to_vec(),
    }];
    plan
}

/// Runs one schedule (`options` give the variant, bug and trace).
pub fn run_schedule(
    scenario: &Scenario,
    seed: u64,
    steps: &[u64],
    options: &RunOptions,
) -> Outcome {
    let options = RunOptions {
        faults: Faults::Plan {
            plan: Box::new(schedule_plan(scenario, seed, steps)),
            source: None,
        },
        ..options.clone()
    };
    runner::run(scenario, seed, &options)
}

/// The steps a run took (`race-steps:*` of the schedule rule).
fn steps_of(outcome: &Outcome) -> u64 {
    outcome
        .coverage
        .get(&coverage::race_steps("*"))
        .copied()
        .unwrap_or(0)
}

/// Every schedule of `seed` with at most `preemptions` steps, depth first
/// (see the module docs), at most `max_schedules` of them; `progress` is
/// told the count after each.
pub fn explore(
    scenario: &Scenario,
    seed: u64,
    preemptions: usize,
    max_schedules: Option<u64>,
    options: &RunOptions,
    mut progress: impl FnMut(u64),
) -> Explored {
    let mut stack: Vec<Vec<u64>> = vec![Vec::new()];
    let mut schedules = 0u64;
    while let Some(schedule) = stack.pop() {
        if max_schedules.is_some_and(|max| schedules >= max) {
            return Explored::Stopped { schedules };
        }
        let outcome = run_schedule(scenario, seed, &schedule, options);
        schedules += 1;
        progress(schedules);
        if !outcome.verdict.is_pass() {
            return Explored::Failing {
                schedules,
                schedule,
                outcome: Box::new(outcome),
            };
        }
        if schedule.len() < preemptions {
            let last = schedule.last().copied().unwrap_or(0);
            for step in (last + 1..=steps_of(&outcome)).rev() {
                let mut child = schedule.clone();
                child.push(step);
                stack.push(child);
            }
        }
    }
    Explored::Exhausted { schedules }
}

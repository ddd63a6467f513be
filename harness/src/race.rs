//! Race points: seeded yields where a racing wake-up matters.
//!
//! The system under test marks a window with `race_point("name").await`.
//! Inside a simulation whose plan has a [`Race`](crate::faults::Race)
//! strategy for that name, the harness decides from the seed whether the
//! current task yields there (k times, letting the host's other tasks run)
//! or sleeps a tiny simulated time (letting other hosts run too). Outside a
//! simulation, or with no strategy, the point costs a thread-local read.
//!
//! Strategies:
//! * `random`: at each hit, with a probability, yield or sleep a random
//!   amount;
//! * `pct`: in the spirit of PCT (Burckhardt et al., as in shuttle's
//!   `PctScheduler`): `depth` priority-change points are drawn among the
//!   first `horizon` hits; at a change point the running task loses its
//!   priority: it sleeps, letting every other task run first;
//! * `targeted`: at the n-th hit of the point, yield and/or sleep.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::Rng;

use crate::ctx;
use crate::faults::{FaultPlan, Race, glob_match};

/// What a task does at one hit of a race point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Action {
    yields: u32,
    sleep: Duration,
}

pub(crate) struct RaceState {
    rules: Vec<Race>,
    /// Hits per point name.
    hits: BTreeMap<String, u64>,
    /// Hits per rule (of points it matches).
    rule_hits: Vec<u64>,
    /// For `pct` rules: the hits (1-based) where priority changes.
    change_points: Vec<BTreeSet<u64>>,
}

impl RaceState {
    pub(crate) fn new(seed: u64, plan: &FaultPlan) -> RaceState {
        let rules = plan.race.clone();
        let change_points = rules
            .iter()
            .enumerate()
            .map(|(index, rule)| match rule {
                Race::Pct { depth, horizon, .. } => {
                    let mut rng = crate::seed::stream(seed, &format!("race/pct/{index}"));
                    (0..*depth)
                        .map(|_| rng.random_range(1..=u64::from((*horizon).max(1))))
                        .collect()
                }
                _ => BTreeSet::new(),
            })
            .collect();
        RaceState {
            rule_hits: vec![0; rules.len()],
            rules,
            hits: BTreeMap::new(),
            change_points,
        }
    }

    fn decide(&mut self, name: &str) -> Option<Action> {
        let hit = {
            let n = self.hits.entry(name.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        let mut chosen = None;
        for (index, rule) in self.rules.iter().enumerate() {
            if !glob_match(rule.point(), name) {
                continue;
            }
            self.rule_hits[index] += 1;
            let rule_hit = self.rule_hits[index];
            if chosen.is_some() {
                continue;
            }
            chosen =
                match rule {
                    Race::Random {
                        probability,
                        max_yields,
                        max_sleep_us,
                        ..
                    } => ctx::with_rng(&format!("race/{name}"), |rng| {
                        if !rng.random_bool(*probability) {
                            return None;
                        }
                        if *max_sleep_us > 0 && rng.random_bool(0.5) {
                            let us = rng.random_range(1..=*max_sleep_us);
                            Some(Action {
                                yields: 0,
                                sleep: Duration::from_micros(us),
                            })
                        } else {
                            let yields = rng.random_range(1..=(*max_yields).max(1));
                            Some(Action {
                                yields,
                                sleep: Duration::ZERO,
                            })
                        }
                    }),
                    Race::Pct { sleep_us, .. } => self.change_points[index]
                        .contains(&rule_hit)
                        .then(|| Action {
                            yields: 1,
                            sleep: Duration::from_micros(*sleep_us),
                        }),
                    Race::Targeted {
                        nth,
                        yields,
                        sleep_us,
                        ..
                    } => (hit == u64::from(*nth)).then(|| Action {
                        yields: *yields,
                        sleep: Duration::from_micros(*sleep_us),
                    }),
                };
        }
        chosen.filter(|a| *a != Action::default())
    }
}

/// A window where a racing task may slip in. See the module docs.
pub async fn race_point(name: &str) {
    let Some(action) = ctx::with(|ctx| {
        ctx.cover(&format!("race:{name}"));
        let action = ctx.race.borrow_mut().decide(name);
        if let Some(a) = action {
            ctx.cover(&format!("race-yield:{name}"));
            tracing::debug!(
                target: "faultline::fault",
                point = name,
                yields = a.yields,
                sleep_us = a.sleep.as_micros() as u64,
                "race point yields"
            );
        }
        action
    })
    .flatten() else {
        return;
    };
    for _ in 0..action.yields {
        tokio::task::yield_now().await;
    }
    if !action.sleep.is_zero() {
        tokio::time::sleep(action.sleep).await;
        // Waking from the pause, the task goes behind whatever else became
        // ready at that moment (network input included): a real thread
        // paused this long would find that work already done.
        for _ in 0..YIELDS_AFTER_SLEEP {
            tokio::task::yield_now().await;
        }
    }
}

/// Yields after a race point's sleep (see [`race_point`]).
const YIELDS_AFTER_SLEEP: u32 = 4;

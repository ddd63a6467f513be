//! `pct`: probabilistic concurrency testing (Burckhardt, Kothari,
//! Musuvathi, Nagarakatte, "A Randomized Scheduler with Probabilistic
//! Guarantees of Finding Bugs", ASPLOS 2010), over a cooperative runtime.
//!
//! As the paper defines it: every task gets a random priority (the values
//! `d..` in a random order); `d - 1` priority change points `k_1..k_{d-1}`
//! are drawn among the first `horizon` hits of the points the rule acts
//! on; the task that makes the `k_i`-th hit drops to priority `i`, below
//! every initial one; and the scheduler always runs the highest-priority
//! task that is ready. A bug of depth `d` (`d` ordering constraints) is then
//! found with probability at least `1 / (n * k^(d-1))` for `n` tasks and `k`
//! steps.
//!
//! A cooperative runtime picks the next task itself, first come first
//! served; the emulation makes the order that of the priorities at
//! preemption points. A task that is not its host's highest-priority task
//! waits there for priority: it yields, round after round, until a round in
//! which no other task did anything (every other task of the host waits:
//! for I/O, a timer, a lock, or for priority too) finds it the
//! highest-priority task waiting. The host's highest-priority task never
//! waits. A demoted task may first pause (`pause_us`), letting time pass.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::Rng;

use super::{Action, Hit, Strategy, TaskKey};
use crate::seed::SimRng;

/// The PCT strategy's state (see the module docs).
pub struct Pct {
    rng: SimRng,
    depth: u64,
    /// Rule hit (1-based) -> the priority the hitting task drops to.
    change_points: BTreeMap<u64, u64>,
    priorities: BTreeMap<TaskKey, u64>,
    /// Tasks waiting for priority now.
    waiting: BTreeSet<TaskKey>,
    pause: Duration,
}

impl Pct {
    /// `depth` d: d - 1 change points among the first `horizon` hits.
    pub fn new(mut rng: SimRng, depth: u32, horizon: u32, pause_us: u64) -> Pct {
        let depth = u64::from(depth.max(1));
        let horizon = u64::from(horizon.max(1));
        let mut change_points = BTreeMap::new();
        // Distinct hits, as far as the horizon allows.
        let wanted = (depth - 1).min(horizon);
        for i in 1..=wanted {
            loop {
                let k = rng.random_range(1..=horizon);
                if let std::collections::btree_map::Entry::Vacant(slot) = change_points.entry(k) {
                    slot.insert(i);
                    break;
                }
            }
        }
        Pct {
            rng,
            depth,
            change_points,
            priorities: BTreeMap::new(),
            waiting: BTreeSet::new(),
            pause: Duration::from_micros(pause_us),
        }
    }

    fn priority(&mut self, task: TaskKey) -> u64 {
        let (depth, rng) = (self.depth, &mut self.rng);
        // Initial priorities are at least `depth`: above every change
        // point's value. A random 32-bit spread orders tasks at random.
        *self
            .priorities
            .entry(task)
            .or_insert_with(|| depth + u64::from(rng.random::<u32>()))
    }

    /// Whether `task` outranks every other known task of its host.
    fn is_highest(&self, task: TaskKey) -> bool {
        let mine = (self.priorities[&task], task);
        self.priorities
            .iter()
            .filter(|(t, _)| t.host == task.host && **t != task)
            .all(|(t, p)| (*p, *t) < mine)
    }
}

impl Strategy for Pct {
    fn decide(&mut self, hit: Hit<'_>) -> Action {
        self.priority(hit.task);
        let demoted = match self.change_points.get(&hit.rule_hits) {
            Some(&i) => {
                self.priorities.insert(hit.task, i);
                tracing::debug!(target: "faultline::fault", point = hit.point, priority = i, "pct change point");
                true
            }
            None => false,
        };
        if !demoted && self.is_highest(hit.task) {
            return Action::Continue;
        }
        self.waiting.insert(hit.task);
        Action::Priority {
            pause: if demoted { self.pause } else { Duration::ZERO },
        }
    }

    fn may_continue(&mut self, task: TaskKey, quiet: bool) -> bool {
        if !quiet {
            return false;
        }
        let mine = (self.priorities[&task], task);
        self.waiting
            .iter()
            .filter(|t| t.host == task.host && **t != task)
            .all(|t| (self.priorities[t], *t) < mine)
    }

    fn continued(&mut self, task: TaskKey) {
        self.waiting.remove(&task);
    }
}

//! `pct`: probabilistic concurrency testing (Burckhardt, Kothari,
//! Musuvathi, Nagarakatte, "A Randomized Scheduler with Probabilistic
//! Guarantees of Finding Bugs", ASPLOS 2010), over a cooperative runtime.
//!
//! As the paper defines it: every thread gets a random priority, above
//! `d`; `d - 1` priority change points `k_1..k_{d-1}` are drawn among the
//! run's `k` steps; the thread that takes step `k_i` drops to priority
//! `i`, below every initial one; and the scheduler always runs the
//! highest-priority thread that is ready. A bug of depth `d` (`d` ordering
//! constraints) among `n` threads is then found with probability at least
//! `1 / (n * k^(d-1))`.
//!
//! Here a *step* is a hit of a point the rule acts on while another thread
//! of the host could run (a hit by a thread alone on its host changes no
//! order); threads are the tasks spawned with [`super::spawn`], and one
//! that ends leaves the priority list. The paper's `k` is the number of
//! steps of the run: the runner learns it from a first run of the same
//! seed without change points (same priorities), then draws the change
//! points in `1..=k` (`steps` in the plan; see [`crate::run`]).
//! A thread at a point that finds a ready thread of its host with a higher
//! priority waits there (it yields until none is ready); a cooperative
//! runtime cannot take the CPU from a thread between two points, so a
//! step is the code from one point to the next.
//!
//! The guarantee assumes what the paper does: the threads' steps are the
//! only choices (the network, timers and other hosts are fixed by the
//! seed) and every thread blocks or ends in bounded time. A wait for
//! priority cut short by [`super::MAX_PRIORITY_ROUNDS`] breaks it and is
//! counted (`race-starved:NAME`).

use std::collections::BTreeMap;

use rand::Rng;

use super::strategy::{Action, Hit, Strategy, TaskKey};
use crate::seed::SimRng;

/// The PCT strategy's state (see the module docs).
pub struct Pct {
    /// Draws the threads' initial priorities.
    rng: SimRng,
    depth: u64,
    /// Step (1-based) -> the priority the thread taking it drops to.
    change_points: BTreeMap<u64, u64>,
    priorities: BTreeMap<TaskKey, u64>,
}

impl Pct {
    /// `depth` d: d - 1 change points among `steps` steps (drawn from
    /// `changes`; `steps` 0: none, the run that learns `k`). Priorities
    /// come from `priorities`, so both runs give the same ones.
    pub fn new(priorities: SimRng, mut changes: SimRng, depth: u32, steps: u64) -> Pct {
        let depth = u64::from(depth.max(1));
        let mut change_points = BTreeMap::new();
        // Distinct steps, as far as there are steps.
        let wanted = (depth - 1).min(steps);
        for i in 1..=wanted {
            loop {
                let k = changes.random_range(1..=steps);
                if let std::collections::btree_map::Entry::Vacant(slot) = change_points.entry(k) {
                    slot.insert(i);
                    break;
                }
            }
        }
        Pct {
            rng: priorities,
            depth,
            change_points,
            priorities: BTreeMap::new(),
        }
    }

    fn priority(&mut self, task: TaskKey) -> u64 {
        let (depth, rng) = (self.depth, &mut self.rng);
        // Initial priorities are at least `depth`: above every change
        // point's value. A random 32-bit spread orders threads at random.
        *self
            .priorities
            .entry(task)
            .or_insert_with(|| depth + u64::from(rng.random::<u32>()))
    }

    /// Whether `other` outranks `task`.
    fn outranks(&mut self, other: TaskKey, task: TaskKey) -> bool {
        (self.priority(other), other) > (self.priority(task), task)
    }
}

impl Strategy for Pct {
    fn decide(&mut self, hit: Hit<'_>) -> Action {
        self.priority(hit.task);
        if let Some(&i) = hit.step.and_then(|step| self.change_points.get(&step)) {
            self.priorities.insert(hit.task, i);
            tracing::debug!(target: "faultline::fault", point = hit.point, priority = i, "pct change point");
        }
        if self.may_continue(hit.task, hit.ready) {
            Action::Continue
        } else {
            Action::Priority
        }
    }

    fn may_continue(&mut self, task: TaskKey, ready: &[TaskKey]) -> bool {
        !ready.iter().any(|&other| self.outranks(other, task))
    }

    fn choose(&mut self, waiters: &[TaskKey], _rng: &mut SimRng) -> usize {
        let mut best = 0;
        for i in 1..waiters.len() {
            if self.outranks(waiters[i], waiters[best]) {
                best = i;
            }
        }
        best
    }

    fn ended(&mut self, task: TaskKey) {
        self.priorities.remove(&task);
    }
}

//! What a strategy sees and decides: the hit of a preemption point, the
//! action a task takes there, and the trait each strategy implements
//! (one small file each: [`super::random`], [`super::pct`],
//! [`super::targeted`], [`super::bounded`]).

use std::time::Duration;

use rand::Rng;

use crate::seed::SimRng;
/// What a task does at one hit of a preemption point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Go on at once.
    Continue,
    /// Yield `yields` times (every other ready task runs first), then let
    /// `pause` of simulated time pass (then yield a few times more).
    Give {
        /// Yields first.
        yields: u32,
        /// Then this much simulated time (zero: none; under
        /// [`super::TIMER_GRAIN`]: until the host is quiet).
        pause: Duration,
    },
    /// Wait until no thread of the host with a higher priority is ready
    /// (PCT).
    Priority,
}

/// A task as the scheduler knows it: its host and the order in which the
/// run first saw it (tokio's task ids differ between runs; this does not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TaskKey {
    /// The host, by the order the run first saw it.
    pub host: usize,
    /// The task, by the order the run first saw it (0: outside a task).
    pub index: u64,
}

/// One hit of a preemption point, as a strategy sees it.
pub struct Hit<'a> {
    /// `primitive.operation`.
    pub point: &'a str,
    /// How many times the point was hit in this run, this hit included.
    pub point_hits: u64,
    /// When another thread of the host could run now (a *step*, as PCT
    /// and bounded exploration count them): how many steps of points this
    /// rule acts on, this one included. `None`: the task is alone.
    pub step: Option<u64>,
    /// The task that hit it.
    pub task: TaskKey,
    /// The other threads of its host that are ready to run.
    pub ready: &'a [TaskKey],
    /// The point's own random stream.
    pub rng: &'a mut SimRng,
}

/// A strategy: decides, hit by hit, where tasks give way.
pub trait Strategy {
    /// What the task does at this hit.
    fn decide(&mut self, hit: Hit<'_>) -> Action;

    /// For [`Action::Priority`]: whether `task` may go on now that `ready`
    /// are the other threads of its host ready to run.
    fn may_continue(&mut self, _task: TaskKey, _ready: &[TaskKey]) -> bool {
        true
    }

    /// Which of `waiters` (in the order they came) a released lock wakes
    /// to take it.
    fn choose(&mut self, _waiters: &[TaskKey], _rng: &mut SimRng) -> usize {
        0
    }

    /// `task` ended: it leaves whatever the strategy keeps of it.
    fn ended(&mut self, _task: TaskKey) {}
}

/// Draws a value in `1..=max` (at least 1).
pub(crate) fn draw_count(rng: &mut SimRng, max: u32) -> u32 {
    rng.random_range(1..=max.max(1))
}

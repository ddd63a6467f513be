//! Preemption points and the strategies that decide where a task gives way.
//!
//! # The model
//!
//! The threads of a simulated host are tasks of one single-threaded tokio
//! runtime. A task runs alone until it awaits: code between two `.await`s
//! is atomic. The primitives of [`crate::sync`] (a lock, a condition
//! variable, atomic values, a spin-wait hint) await a *preemption point*
//! before each operation, named after the primitive and the operation
//! (`executor.auxio.queue.lock`, `proxy.fdtab.update_mask.bts`). There, and
//! only there (plus the awaits the code has anyway: I/O, timers, a lock
//! that is held), the run's plan may make the task give way:
//!
//! * a **yield** puts the task behind every other ready task of its host:
//!   each of them runs until it waits or reaches a preemption point;
//! * a **pause** shorter than the timer's grain (1 ms) lets the other tasks
//!   of the host run as long as they want: the task goes on after a round
//!   in which none of them did anything (they all wait); a longer pause
//!   also lets simulated time pass (other hosts run, the network delivers)
//!   and, waking, the task goes behind whatever became ready meanwhile;
//! * under [`pct`], a task also **waits for priority**: it goes on only once
//!   no task of its host with a higher priority is ready.
//!
//! Which points a rule acts on is a glob over their names (`*` is every
//! point, `executor.*` the executor's). The strategies are small pieces
//! behind one trait: [`random`], [`pct`] and [`targeted`]. Every choice
//! comes from the run's seed. Outside a simulation, or with no rule for a
//! point, a preemption point costs a thread-local read and never yields.
//!
//! A run counts, per point, the hits (`race:NAME` in its coverage) and the
//! times the task gave way there (`race-yield:NAME`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::ctx;
use crate::faults::{FaultPlan, Race, glob_match};
use crate::seed::SimRng;

pub mod pct;
pub mod random;
pub mod targeted;
mod thread;

pub use thread::spawn;
use thread::ThreadWaker;

/// Yields after a pause, so that a task waking from it goes behind the
/// work that became ready in the same tick (a real thread paused this long
/// would find that work already done).
const YIELDS_AFTER_PAUSE: u32 = 4;

/// The most rounds a task waits for priority, or for its host to be quiet,
/// before it goes on anyway: a task that is ready at every round (a loop
/// that never waits) must not stop simulated time.
pub const MAX_PRIORITY_ROUNDS: u32 = 64;

/// The grain of tokio's timer: a pause shorter than this does not let
/// simulated time pass (it would last to the next tick).
pub const TIMER_GRAIN: Duration = Duration::from_millis(1);

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
        /// [`TIMER_GRAIN`]: until the host is quiet).
        pause: Duration,
    },
    /// Pause (possibly zero), then wait until no task of the host with a
    /// higher priority is ready (PCT).
    Priority {
        /// A pause first (a demoted task's), as in [`Action::Give`].
        pause: Duration,
    },
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
    /// How many hits of points this rule acts on, this one included.
    pub rule_hits: u64,
    /// The task that hit it.
    pub task: TaskKey,
    /// The point's own random stream.
    pub rng: &'a mut SimRng,
}

/// A strategy: decides, hit by hit, where tasks give way.
pub trait Strategy {
    /// What the task does at this hit.
    fn decide(&mut self, hit: Hit<'_>) -> Action;

    /// For [`Action::Priority`]: whether `task` may go on now. `quiet`:
    /// no other task of its host did anything since its last round.
    fn may_continue(&mut self, _task: TaskKey, _quiet: bool) -> bool {
        true
    }

    /// `task` went on after waiting for priority.
    fn continued(&mut self, _task: TaskKey) {}
}

/// What the run knows of one point.
struct PointState {
    name: String,
    /// The rules whose glob matches the point, in plan order.
    rules: Vec<usize>,
    hits: u64,
    yields: u64,
    rng: SimRng,
}

/// The scheduler of one run: the plan's rules, the points seen, the tasks.
pub(crate) struct Scheduler {
    seed: u64,
    rules: Vec<Race>,
    strategies: Vec<Box<dyn Strategy>>,
    rule_hits: Vec<u64>,
    points: BTreeMap<(&'static str, &'static str), PointState>,
    hosts: Vec<Arc<str>>,
    tasks: BTreeMap<(usize, tokio::task::Id), u64>,
    next_task: u64,
    /// Tasks in a spin-wait: the re-check after a spin is not activity.
    spinning: BTreeSet<TaskKey>,
    /// Per spinning task: the simulated instant and its spins there.
    spins: BTreeMap<TaskKey, (Duration, u64)>,
    /// Bumped by every preemption point and syscall: a round of yields in
    /// which it did not move had no other task doing anything.
    activity: u64,
    /// The hosts' threads (tasks spawned with [`spawn`]) and whether each
    /// is ready to run.
    threads: BTreeMap<TaskKey, Arc<ThreadWaker>>,
}

impl Scheduler {
    pub(crate) fn new(seed: u64, plan: &FaultPlan) -> Scheduler {
        let strategies = plan
            .race
            .iter()
            .enumerate()
            .map(|(index, rule)| -> Box<dyn Strategy> {
                match rule {
                    Race::Random {
                        probability,
                        max_yields,
                        max_sleep_us,
                        ..
                    } => Box::new(random::Random::new(
                        *probability,
                        *max_yields,
                        *max_sleep_us,
                    )),
                    Race::Pct {
                        depth,
                        horizon,
                        sleep_us,
                        ..
                    } => Box::new(pct::Pct::new(
                        crate::seed::stream(seed, &format!("race/pct/{index}")),
                        *depth,
                        *horizon,
                        *sleep_us,
                    )),
                    Race::Targeted {
                        nth,
                        yields,
                        sleep_us,
                        ..
                    } => Box::new(targeted::Targeted::new(*nth, *yields, *sleep_us)),
                }
            })
            .collect();
        Scheduler {
            seed,
            rule_hits: vec![0; plan.race.len()],
            rules: plan.race.clone(),
            strategies,
            points: BTreeMap::new(),
            hosts: Vec::new(),
            tasks: BTreeMap::new(),
            next_task: 0,
            spinning: BTreeSet::new(),
            spins: BTreeMap::new(),
            activity: 0,
            threads: BTreeMap::new(),
        }
    }

    /// The current task is a thread of `host`, woken through `waker`.
    fn thread_started(
        &mut self,
        host: Option<Arc<str>>,
        waker: Arc<ThreadWaker>,
    ) -> Option<TaskKey> {
        tokio::task::try_id()?;
        let task = self.task_key(host);
        self.threads.insert(task, waker);
        Some(task)
    }

    /// A thread ended (or was dropped with its host).
    fn thread_ended(&mut self, task: TaskKey) {
        self.threads.remove(&task);
        self.spinning.remove(&task);
        self.spins.remove(&task);
    }

    /// The other threads of `task`'s host that are ready to run now (a
    /// thread in a spin-wait is not: it waits for one of them).
    fn others_ready(&self, task: TaskKey) -> Vec<TaskKey> {
        let host = TaskKey { host: task.host, index: 0 };
        let next = TaskKey { host: task.host.wrapping_add(1), index: 0 };
        let range = if task.host == usize::MAX {
            self.threads.range(host..)
        } else {
            self.threads.range(host..next)
        };
        range
            .filter(|(t, w)| **t != task && w.is_ready() && !self.spinning.contains(t))
            .map(|(t, _)| *t)
            .collect()
    }

    pub(crate) fn note_activity(&mut self) {
        self.activity += 1;
    }

    /// A spin of the current task at simulated time `now`: answers its
    /// spins at that instant so far.
    pub(crate) fn spin(&mut self, host: Option<Arc<str>>, now: Duration) -> u64 {
        let task = self.task_key(host);
        self.spinning.insert(task);
        let count = self.spins.entry(task).or_insert((now, 0));
        if count.0 != now {
            *count = (now, 0);
        }
        count.1 += 1;
        count.1
    }

    fn task_key(&mut self, host: Option<Arc<str>>) -> TaskKey {
        let host = match host {
            None => usize::MAX,
            Some(name) => match self.hosts.iter().position(|h| *h == name) {
                Some(i) => i,
                None => {
                    self.hosts.push(name);
                    self.hosts.len() - 1
                }
            },
        };
        let Some(id) = tokio::task::try_id() else {
            return TaskKey { host, index: 0 };
        };
        let next = &mut self.next_task;
        let index = *self.tasks.entry((host, id)).or_insert_with(|| {
            *next += 1;
            *next
        });
        TaskKey { host, index }
    }

    /// A hit of `primitive.op` by the current task: counts it and decides.
    fn hit(
        &mut self,
        primitive: &'static str,
        op: &'static str,
        host: Option<Arc<str>>,
    ) -> Option<(usize, TaskKey, Action)> {
        let task = self.task_key(host);
        if !self.spinning.remove(&task) {
            // (A spin-wait's re-check is the same wait going on.)
            self.activity += 1;
        }
        let seed = self.seed;
        let rules = &self.rules;
        let point = self.points.entry((primitive, op)).or_insert_with(|| {
            let name = format!("{primitive}.{op}");
            PointState {
                rules: (0..rules.len())
                    .filter(|&r| glob_match(rules[r].point(), &name))
                    .collect(),
                rng: crate::seed::stream(seed, &format!("race/{name}")),
                name,
                hits: 0,
                yields: 0,
            }
        });
        point.hits += 1;
        let (first, others) = point.rules.split_first()?;
        for &r in others {
            // Every matching rule counts the hit (PCT's change points are
            // counted among the points it acts on); the first one decides.
            self.rule_hits[r] += 1;
        }
        let rule = *first;
        self.rule_hits[rule] += 1;
        let rule_hits = self.rule_hits[rule];
        let point = self.points.get_mut(&(primitive, op)).expect("inserted");
        let action = self.strategies[rule].decide(Hit {
            point: &point.name,
            point_hits: point.hits,
            rule_hits,
            task,
            rng: &mut point.rng,
        });
        if action == Action::Continue {
            return None;
        }
        if !matches!(action, Action::Priority { .. }) {
            point.yields += 1;
            tracing::debug!(target: "faultline::fault", point = point.name.as_str(), action = ?action, "preempted");
        }
        Some((rule, task, action))
    }

    fn gave_way(&mut self, primitive: &'static str, op: &'static str) {
        if let Some(point) = self.points.get_mut(&(primitive, op)) {
            point.yields += 1;
            tracing::debug!(target: "faultline::fault", point = point.name.as_str(), "waited for priority");
        }
    }

    /// Per point: `race:NAME` hits and `race-yield:NAME` times a task gave
    /// way there; per rule that matched a point, `applied:race:GLOB`.
    pub(crate) fn coverage(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (rule, hits) in self.rules.iter().zip(&self.rule_hits) {
            if *hits > 0 {
                out.push((format!("applied:race:{}", rule.point()), *hits));
            }
        }
        for point in self.points.values() {
            out.push((format!("race:{}", point.name), point.hits));
            if point.yields > 0 {
                out.push((format!("race-yield:{}", point.name), point.yields));
            }
        }
        out
    }
}

/// A preemption point: the current task may give way here, as the run's
/// plan decides (see the module docs). The primitives of [`crate::sync`]
/// call it before each operation; code under test does not.
pub(crate) async fn preempt(primitive: &'static str, op: &'static str) {
    let Some((rule, task, action)) = ctx::with(|ctx| {
        let host = ctx.host();
        ctx.schedule.borrow_mut().hit(primitive, op, host)
    })
    .flatten() else {
        return;
    };
    match action {
        Action::Continue => {}
        Action::Give { yields, pause } => {
            for _ in 0..yields {
                yield_once().await;
            }
            if pause >= TIMER_GRAIN {
                paused(pause).await;
            } else if !pause.is_zero() {
                until_quiet().await;
            }
        }
        Action::Priority { pause } => {
            if pause >= TIMER_GRAIN {
                paused(pause).await;
            }
            wait_for_priority(primitive, op, rule, task).await;
        }
    }
}

/// Rounds of yields until one in which no other task of the host did
/// anything (or [`MAX_PRIORITY_ROUNDS`]).
async fn until_quiet() {
    let activity = || ctx::with(|ctx| ctx.schedule.borrow().activity).unwrap_or(0);
    for _ in 0..MAX_PRIORITY_ROUNDS {
        let before = activity();
        yield_once().await;
        if activity() == before {
            return;
        }
    }
}

async fn paused(pause: Duration) {
    tokio::time::sleep(pause).await;
    for _ in 0..YIELDS_AFTER_PAUSE {
        yield_once().await;
    }
}

/// Rounds of yields until the strategy lets `task` go on: after a round in
/// which nobody else did anything (every other task of the host waits) and
/// no waiting task has a higher priority, or after
/// [`MAX_PRIORITY_ROUNDS`].
async fn wait_for_priority(primitive: &'static str, op: &'static str, rule: usize, task: TaskKey) {
    let activity = || ctx::with(|ctx| ctx.schedule.borrow().activity).unwrap_or(0);
    // Tells the strategy the task stopped waiting, also when the task is
    // dropped while it waits (its host crashed).
    let mut waiting = Waiting {
        primitive,
        op,
        rule,
        task,
        gave_way: false,
    };
    for round in 1..=MAX_PRIORITY_ROUNDS {
        let before = activity();
        yield_once().await;
        let quiet = activity() == before;
        waiting.gave_way |= !quiet;
        let go = round == MAX_PRIORITY_ROUNDS
            || ctx::with(|ctx| {
                ctx.schedule.borrow_mut().strategies[rule].may_continue(task, quiet)
            })
            .unwrap_or(true);
        if go {
            break;
        }
    }
}

struct Waiting {
    primitive: &'static str,
    op: &'static str,
    rule: usize,
    task: TaskKey,
    gave_way: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        ctx::with(|ctx| {
            let Ok(mut schedule) = ctx.schedule.try_borrow_mut() else {
                return;
            };
            schedule.strategies[self.rule].continued(self.task);
            if self.gave_way {
                schedule.gave_way(self.primitive, self.op);
            }
        });
    }
}

/// Puts the current task behind every task of its host that is ready now:
/// it wakes itself at once, so it goes to the end of the host's run queue.
/// (tokio's `yield_now` defers the wake-up instead, and deferred tasks
/// resume last-in first-out: a task that yielded first would run last.)
pub(crate) async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

/// A thread gives way: a seeded preemption point (`task.yield`), then
/// the task goes behind every task of its host that is ready now. Use it
/// in simulated code where a thread would call `sched_yield` (or where
/// `tokio::task::yield_now` stood: tokio resumes such yields in an order
/// of its own, which the seed does not decide).
pub async fn yield_now() {
    preempt("task", "yield").await;
    yield_once().await;
}

/// Draws a value in `1..=max` (at least 1).
pub(crate) fn draw_count(rng: &mut SimRng, max: u32) -> u32 {
    rng.random_range(1..=max.max(1))
}

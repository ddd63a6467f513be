//! Preemption points and the strategies that decide where a thread gives
//! way.
//!
//! # The model
//!
//! The threads of a simulated host are tasks of one single-threaded tokio
//! runtime, spawned with [`spawn`] so that the scheduler knows which of
//! them are ready to run. A task runs alone until it awaits: code between
//! two `.await`s is atomic. The primitives of [`crate::sync`] and the
//! syscalls of [`crate::sys::Syscalls`] await a *preemption point* before
//! each operation, named after the primitive and the operation
//! (`executor.auxio.queue.lock`, `proxy.fdtab.update_mask.bts`,
//! `sys.close`); a lock's release is a point too, whose switch the task
//! takes at its next point (a destructor cannot await). There, and only
//! there (plus the awaits the code has anyway: I/O, timers, a lock that is
//! held), the run's plan may make the task give way:
//!
//! * a **yield** puts the task behind every other ready task of its host:
//!   each of them runs until it awaits something not ready (or gives way
//!   in turn);
//! * a **pause** shorter than the timer's grain (1 ms) lets the other tasks
//!   of the host run as long as they want: the task goes on after a round
//!   in which none of them did anything (they all wait); a longer pause
//!   also lets simulated time pass (other hosts run, the network delivers)
//!   and, waking, the task goes behind whatever became ready meanwhile;
//! * under [`pct`], a thread **waits for priority**: it goes on only once
//!   no ready thread of its host has a higher priority.
//!
//! A hit is a *step* when another thread of the host is ready: PCT counts
//! its change points in steps, and [`bounded`] names a schedule by them.
//! Which points a rule acts on is a glob over their names (`*` is every
//! point, `executor.*` the executor's). The strategies are small pieces
//! behind one trait: [`random`], [`pct`], [`targeted`] and [`bounded`].
//! Every choice comes from the run's seed. Outside a simulation, or with
//! no rule for a point, a preemption point costs a thread-local read and
//! never yields.
//!
//! A run counts, per point, the hits (`race:NAME` in its coverage), the
//! times the task gave way there (`race-yield:NAME`) and the waits for
//! priority cut short (`race-starved:NAME`), and per rule its steps
//! (`race-steps:GLOB`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::ctx;
use crate::faults::{FaultPlan, Race, glob_match};
use crate::seed::SimRng;

pub mod bounded;
pub mod pct;
pub mod random;
pub mod targeted;
mod thread;

use thread::ThreadWaker;
pub use thread::spawn;

/// Yields after a pause, so that a task waking from it goes behind the
/// work that became ready in the same tick (a real thread paused this long
/// would find that work already done).
const YIELDS_AFTER_PAUSE: u32 = 4;

/// The most rounds a task waits for priority, or for its host to be quiet,
/// before it goes on anyway. Under PCT a thread waits while a thread of a
/// higher priority is ready, and a ready thread always gets to run, so the
/// wait ends once the higher ones block; the bound only keeps a task
/// spawned outside [`spawn`] (whose readiness the scheduler cannot see)
/// from stopping simulated time. A run counts the waits it cut short
/// (`race-starved:NAME`): where there are none, PCT's schedule is the
/// paper's.
pub const MAX_PRIORITY_ROUNDS: u32 = 10_000;

/// The most rounds a pause shorter than the timer's grain waits for its
/// host to be quiet.
pub const MAX_QUIET_ROUNDS: u32 = 64;

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

/// What the run knows of one point.
struct PointState {
    name: String,
    /// The rules whose glob matches the point, in plan order.
    rules: Vec<usize>,
    hits: u64,
    yields: u64,
    starved: u64,
    rng: SimRng,
}

/// A decision taken at a point: the rule that took it, for whom, what.
struct Decision {
    rule: usize,
    /// The point, by its index in [`Scheduler::points`].
    point: usize,
    task: TaskKey,
    action: Action,
}

/// Where a point's name is in memory: a call site's two strings.
type NameAt = (usize, usize, usize, usize);

/// The scheduler of one run: the plan's rules, the points seen, the tasks.
pub(crate) struct Scheduler {
    seed: u64,
    rules: Vec<Race>,
    strategies: Vec<Box<dyn Strategy>>,
    rule_hits: Vec<u64>,
    rule_steps: Vec<u64>,
    points: Vec<PointState>,
    /// Points by the addresses of their name's parts: the hot path
    /// compares no strings.
    point_at: BTreeMap<NameAt, usize>,
    /// Points by name (call sites that spell one name share its point).
    point_named: BTreeMap<String, usize>,
    hosts: Vec<Arc<str>>,
    tasks: BTreeMap<(usize, tokio::task::Id), u64>,
    next_task: u64,
    /// Tasks in a spin-wait: the re-check after a spin is not activity.
    spinning: BTreeSet<TaskKey>,
    /// Tasks in `yield_now`, until their next point: they step aside, so
    /// they do not count as ready for another thread's priority (as CHESS
    /// and PCT treat a yield: a busy thread that yields lets the threads
    /// it waits for run).
    yielding: BTreeSet<TaskKey>,
    /// Per spinning task: the simulated instant and its spins there.
    spins: BTreeMap<TaskKey, (Duration, u64)>,
    /// Bumped by every preemption point and syscall: a round of yields in
    /// which it did not move had no other task doing anything.
    activity: u64,
    /// The hosts' threads (tasks spawned with [`spawn`]) and whether each
    /// is ready to run.
    threads: BTreeMap<TaskKey, Arc<ThreadWaker>>,
    /// A switch decided where the task could not await (a lock's release,
    /// in a destructor): taken at the task's next point.
    deferred: BTreeMap<TaskKey, Decision>,
    /// Reused by [`Scheduler::others_ready`].
    ready_buf: Vec<TaskKey>,
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
                    Race::Pct { depth, steps, .. } => Box::new(pct::Pct::new(
                        crate::seed::stream(seed, &format!("race/pct/{index}")),
                        crate::seed::stream(seed, &format!("race/pct/{index}/changes")),
                        *depth,
                        *steps,
                    )),
                    Race::Targeted {
                        nth,
                        yields,
                        sleep_us,
                        ..
                    } => Box::new(targeted::Targeted::new(*nth, *yields, *sleep_us)),
                    Race::Schedule { steps, .. } => Box::new(bounded::Bounded::new(steps)),
                }
            })
            .collect();
        Scheduler {
            seed,
            rule_hits: vec![0; plan.race.len()],
            rule_steps: vec![0; plan.race.len()],
            rules: plan.race.clone(),
            strategies,
            points: Vec::new(),
            point_at: BTreeMap::new(),
            point_named: BTreeMap::new(),
            hosts: Vec::new(),
            tasks: BTreeMap::new(),
            next_task: 0,
            spinning: BTreeSet::new(),
            yielding: BTreeSet::new(),
            spins: BTreeMap::new(),
            activity: 0,
            threads: BTreeMap::new(),
            deferred: BTreeMap::new(),
            ready_buf: Vec::new(),
        }
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

    fn host_index(&mut self, host: Option<Arc<str>>) -> usize {
        match host {
            None => usize::MAX,
            Some(name) => match self
                .hosts
                .iter()
                .position(|h| Arc::ptr_eq(h, &name))
                .or_else(|| self.hosts.iter().position(|h| *h == name))
            {
                Some(i) => i,
                None => {
                    self.hosts.push(name);
                    self.hosts.len() - 1
                }
            },
        }
    }

    fn key_of(&mut self, host: usize, id: tokio::task::Id) -> TaskKey {
        let next = &mut self.next_task;
        let index = *self.tasks.entry((host, id)).or_insert_with(|| {
            *next += 1;
            *next
        });
        TaskKey { host, index }
    }

    fn task_key(&mut self, host: Option<Arc<str>>) -> TaskKey {
        let host = self.host_index(host);
        match tokio::task::try_id() {
            Some(id) => self.key_of(host, id),
            None => TaskKey { host, index: 0 },
        }
    }

    /// The task `id`, just spawned on `host`, is a thread woken through
    /// `waker`.
    fn thread_spawned(
        &mut self,
        host: Option<Arc<str>>,
        id: tokio::task::Id,
        waker: Arc<ThreadWaker>,
    ) -> TaskKey {
        let host = self.host_index(host);
        let task = self.key_of(host, id);
        self.threads.insert(task, waker);
        task
    }

    /// A thread ended (or was dropped with its host).
    fn thread_ended(&mut self, task: TaskKey) {
        self.threads.remove(&task);
        self.spinning.remove(&task);
        self.yielding.remove(&task);
        self.spins.remove(&task);
        self.deferred.remove(&task);
        for strategy in &mut self.strategies {
            strategy.ended(task);
        }
    }

    /// The other threads of `task`'s host that are ready to run now (a
    /// thread in a spin-wait or a yield is not: it waits for one of them).
    /// (Written into the scheduler's buffer, taken out: no allocation per
    /// hit.)
    fn others_ready(&mut self, task: TaskKey) -> Vec<TaskKey> {
        let mut ready = std::mem::take(&mut self.ready_buf);
        ready.clear();
        let first = TaskKey {
            host: task.host,
            index: 0,
        };
        ready.extend(
            self.threads
                .range(first..)
                .take_while(|(t, _)| t.host == task.host)
                .filter(|(t, w)| {
                    **t != task
                        && w.is_ready()
                        && !self.spinning.contains(t)
                        && !self.yielding.contains(t)
                })
                .map(|(t, _)| *t),
        );
        ready
    }

    /// A hit of `primitive.op` by the current task: counts it and decides.
    fn hit(
        &mut self,
        primitive: &'static str,
        op: &'static str,
        host: Option<Arc<str>>,
    ) -> Option<Decision> {
        if self.rules.is_empty() {
            // No rule can act: only the activity counts.
            self.activity += 1;
            return None;
        }
        let task = self.task_key(host);
        self.yielding.remove(&task);
        if !self.spinning.remove(&task) {
            // (A spin-wait's re-check is the same wait going on.)
            self.activity += 1;
        }
        let index = self.point_index(primitive, op);
        let point = &mut self.points[index];
        point.hits += 1;
        if point.rules.is_empty() {
            return None;
        }
        let ready = self.others_ready(task);
        let point = &mut self.points[index];
        let rule = point.rules[0];
        for &r in &point.rules {
            // Every matching rule counts the hit and the step; the first
            // one decides.
            self.rule_hits[r] += 1;
            if !ready.is_empty() {
                self.rule_steps[r] += 1;
            }
        }
        let action = self.strategies[rule].decide(Hit {
            point: &point.name,
            point_hits: point.hits,
            step: (!ready.is_empty()).then_some(self.rule_steps[rule]),
            task,
            ready: &ready,
            rng: &mut point.rng,
        });
        self.ready_buf = ready;
        if action == Action::Continue {
            return None;
        }
        if action != Action::Priority {
            point.yields += 1;
            tracing::debug!(target: "faultline::fault", point = point.name.as_str(), action = ?action, "preempted");
        }
        Some(Decision {
            rule,
            point: index,
            task,
            action,
        })
    }

    /// The index of point `primitive.op`, made at its first hit.
    fn point_index(&mut self, primitive: &'static str, op: &'static str) -> usize {
        let at = (
            primitive.as_ptr() as usize,
            primitive.len(),
            op.as_ptr() as usize,
            op.len(),
        );
        if let Some(&index) = self.point_at.get(&at) {
            return index;
        }
        let name = format!("{primitive}.{op}");
        let index = match self.point_named.get(&name) {
            Some(&index) => index,
            None => {
                let rules = (0..self.rules.len())
                    .filter(|&r| glob_match(self.rules[r].point(), &name))
                    .collect();
                self.points.push(PointState {
                    rules,
                    rng: crate::seed::stream(self.seed, &format!("race/{name}")),
                    name: name.clone(),
                    hits: 0,
                    yields: 0,
                    starved: 0,
                });
                self.point_named.insert(name, self.points.len() - 1);
                self.points.len() - 1
            }
        };
        self.point_at.insert(at, index);
        index
    }

    fn may_continue(&mut self, rule: usize, task: TaskKey) -> bool {
        let ready = self.others_ready(task);
        let go = self.strategies[rule].may_continue(task, &ready);
        self.ready_buf = ready;
        go
    }

    fn gave_way(&mut self, point: usize, starved: bool) {
        if let Some(state) = self.points.get_mut(point) {
            if starved {
                state.starved += 1;
            } else {
                state.yields += 1;
                tracing::debug!(target: "faultline::fault", point = state.name.as_str(), "waited for priority");
            }
        }
    }

    /// Per point: `race:NAME` hits, `race-yield:NAME` times a task gave
    /// way there, `race-starved:NAME` waits for priority cut short; per
    /// rule that matched a point, `applied:race:GLOB` hits and
    /// `race-steps:GLOB` steps.
    pub(crate) fn coverage(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for ((rule, hits), steps) in self.rules.iter().zip(&self.rule_hits).zip(&self.rule_steps) {
            if *hits > 0 {
                out.push((format!("applied:race:{}", rule.point()), *hits));
                out.push((format!("race-steps:{}", rule.point()), *steps));
            }
        }
        for point in &self.points {
            out.push((format!("race:{}", point.name), point.hits));
            if point.yields > 0 {
                out.push((format!("race-yield:{}", point.name), point.yields));
            }
            if point.starved > 0 {
                out.push((format!("race-starved:{}", point.name), point.starved));
            }
        }
        out
    }
}

/// A preemption point: the current task may give way here, as the run's
/// plan decides (see the module docs). The primitives of [`crate::sync`]
/// and the syscalls of [`crate::sys`] call it before each operation; code
/// under test does not.
pub(crate) async fn preempt(primitive: &'static str, op: &'static str) {
    // One borrow on the common path: no switch deferred for this task.
    let Some(first) = ctx::with(|ctx| {
        let host = ctx.host();
        let mut schedule = ctx.part::<Scheduler>().borrow_mut();
        if !schedule.deferred.is_empty() {
            let task = schedule.task_key(host.clone());
            if let Some(deferred) = schedule.deferred.remove(&task) {
                return Err(deferred);
            }
        }
        Ok(schedule.hit(primitive, op, host))
    }) else {
        // Outside a simulation.
        return;
    };
    let decision = match first {
        Ok(decision) => decision,
        Err(deferred) => {
            // The switch a release decided comes first; this point is
            // decided after it, on what the others did meanwhile.
            act(deferred).await;
            ctx::with(|ctx| {
                let host = ctx.host();
                ctx.part::<Scheduler>()
                    .borrow_mut()
                    .hit(primitive, op, host)
            })
            .flatten()
        }
    };
    if let Some(decision) = decision {
        act(decision).await;
    }
}

/// A preemption point where the task cannot await (a destructor: a lock's
/// release): the hit is counted and decided now, and a switch it decides
/// is taken at the task's next point. The code in between runs in one
/// step with the release.
/// A spin of the running task (a `spin_loop` hint): its spins at this
/// simulated instant so far; `None` outside a simulation.
pub(crate) fn spin() -> Option<u64> {
    ctx::with(|ctx| {
        ctx.part::<Scheduler>()
            .borrow_mut()
            .spin(ctx.host(), ctx.now())
    })
}

/// Tells the scheduler that the running task did something a spinning
/// loop would not (a syscall): the syscall view calls it on every call.
pub(crate) fn note_activity() {
    ctx::with(|ctx| ctx.part::<Scheduler>().borrow_mut().note_activity());
}

pub(crate) fn preempt_later(primitive: &'static str, op: &'static str) {
    ctx::with(|ctx| {
        let host = ctx.host();
        let Ok(mut schedule) = ctx.part::<Scheduler>().try_borrow_mut() else {
            return;
        };
        if let Some(decision) = schedule.hit(primitive, op, host) {
            schedule.deferred.insert(decision.task, decision);
        }
    });
}

/// Which of `waiters` (tasks, in the order they came) a released
/// `primitive` wakes to take it, or `None` when no rule acts on
/// `primitive.unlock`: then the first waiter gets it handed over, as
/// tokio's locks do. With a rule the lock is left free: the chosen waiter
/// races for it with every other task (the releasing one included: a
/// futex lock lets a thread take it back ahead of its waiters).
pub(crate) fn choose_waiter(primitive: &'static str, waiters: &[TaskKey]) -> Option<usize> {
    ctx::with(|ctx| {
        let mut schedule = ctx.part::<Scheduler>().try_borrow_mut().ok()?;
        let schedule = &mut *schedule;
        if schedule.rules.is_empty() {
            return None;
        }
        let index = schedule.point_index(primitive, "unlock");
        let point = &mut schedule.points[index];
        let rule = *point.rules.first()?;
        let choice = schedule.strategies[rule].choose(waiters, &mut point.rng);
        assert!(choice < waiters.len(), "a strategy chose no waiter");
        Some(choice)
    })
    .flatten()
}

/// Whether a wait on `primitive` that starts now ends by itself, with no
/// notification (a spurious wake-up, which POSIX and Rust's std allow):
/// with the probability of the first rule acting on `primitive.wait`.
pub(crate) fn spurious_wakeup(primitive: &'static str) -> bool {
    ctx::with(|ctx| {
        let mut schedule = ctx.part::<Scheduler>().borrow_mut();
        let schedule = &mut *schedule;
        if schedule.rules.is_empty() {
            return None;
        }
        let index = schedule.point_index(primitive, "wait");
        let point = &mut schedule.points[index];
        let rate = schedule.rules[*point.rules.first()?].spurious_wakeup();
        (rate > 0.0 && point.rng.random_bool(rate)).then_some(())
    })
    .flatten()
    .is_some()
}

/// The current task as the scheduler knows it (`None` outside a
/// simulation).
pub(crate) fn current_task() -> Option<TaskKey> {
    ctx::with(|ctx| {
        let host = ctx.host();
        ctx.part::<Scheduler>().borrow_mut().task_key(host)
    })
}

async fn act(decision: Decision) {
    match decision.action {
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
        Action::Priority => wait_for_priority(decision).await,
    }
}

/// Rounds of yields until one in which no other task of the host did
/// anything (or [`MAX_QUIET_ROUNDS`]).
async fn until_quiet() {
    let activity = || ctx::with(|ctx| ctx.part::<Scheduler>().borrow().activity).unwrap_or(0);
    for _ in 0..MAX_QUIET_ROUNDS {
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

/// Yields until the strategy lets the task go on: no ready thread of its
/// host has a higher priority (or [`MAX_PRIORITY_ROUNDS`], counted).
async fn wait_for_priority(decision: Decision) {
    let may_continue = || {
        ctx::with(|ctx| {
            ctx.part::<Scheduler>()
                .borrow_mut()
                .may_continue(decision.rule, decision.task)
        })
        .unwrap_or(true)
    };
    let mut rounds = 0;
    while !may_continue() {
        if rounds == MAX_PRIORITY_ROUNDS {
            ctx::with(|ctx| {
                ctx.part::<Scheduler>()
                    .borrow_mut()
                    .gave_way(decision.point, true)
            });
            return;
        }
        yield_once().await;
        rounds += 1;
    }
    if rounds > 0 {
        ctx::with(|ctx| {
            ctx.part::<Scheduler>()
                .borrow_mut()
                .gave_way(decision.point, false)
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
/// the task goes behind every task of its host that is ready now, and
/// until its next point it does not count as ready for the others'
/// priorities (PCT lets a lower thread run past a yielding one). Use it
/// in simulated code where a thread would call `sched_yield` (or where
/// `tokio::task::yield_now` stood: tokio resumes such yields in an order
/// of its own, which the seed does not decide).
pub async fn yield_now() {
    preempt("task", "yield").await;
    ctx::with(|ctx| {
        let host = ctx.host();
        let mut schedule = ctx.part::<Scheduler>().borrow_mut();
        if !schedule.rules.is_empty() {
            let task = schedule.task_key(host);
            schedule.yielding.insert(task);
        }
    });
    yield_once().await;
}

/// Draws a value in `1..=max` (at least 1).
pub(crate) fn draw_count(rng: &mut SimRng, max: u32) -> u32 {
    rng.random_range(1..=max.max(1))
}

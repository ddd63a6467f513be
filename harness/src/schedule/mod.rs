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

use std::time::Duration;

use rand::Rng;

use crate::ctx;

pub mod bounded;
pub mod pct;
pub mod random;
mod ready;
mod scheduler;
mod strategy;
pub mod targeted;
mod thread;

use scheduler::Decision;
pub(crate) use scheduler::Scheduler;
use strategy::Action;
pub(crate) use strategy::TaskKey;
pub use thread::spawn;
pub(crate) use thread::spawn_send;

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

/// A preemption point where the task cannot await (a destructor: a lock's
/// release): the hit is counted and decided now, and a switch it decides
/// is taken at the task's next point. The code in between runs in one
/// step with the release.
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

/// Whether a switch decided at a release (a lock's, in a destructor) waits
/// for the current task's next point: what the task does before that
/// point happens, on a real thread, after the switch.
pub(crate) fn switch_pending() -> bool {
    ctx::with(|ctx| {
        let host = ctx.host();
        let Ok(mut schedule) = ctx.part::<Scheduler>().try_borrow_mut() else {
            return false;
        };
        if schedule.deferred.is_empty() {
            return false;
        }
        let task = schedule.task_key(host);
        schedule.deferred.contains_key(&task)
    })
    .unwrap_or(false)
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

//! Synchronization for code whose threads are tasks of one simulated host,
//! where every operation is a preemption point.
//!
//! Real threads interleave anywhere; the tasks of a simulated host
//! interleave only where they await. These primitives put an await, a
//! preemption point (`schedule`), before each of their operations, so
//! that the run's plan (the `race` fault) can switch tasks exactly where
//! real code synchronizes: taking a lock, an atomic read-modify-write, a
//! wait, a wake-up. The code under test says only which primitive it uses;
//! the seed chooses the schedule.
//!
//! * [`Mutex`]: the section between `lock().await` and the guard's drop is
//!   atomic with respect to other tasks taking the same lock. Points:
//!   `NAME.lock`, `NAME.try_lock`, and `NAME.unlock` at the release (a
//!   destructor cannot wait: a switch decided there is taken at the task's
//!   next point). Who gets a released lock: with no rule acting on
//!   `NAME.unlock`, the first waiter, handed over (tokio's order); with
//!   one, the lock is left free and a waiter of the strategy's choice is
//!   woken to race for it, so the releasing task may take it back first
//!   (a futex lock allows that "barging").
//! * [`RwLock`]: shared or exclusive, granted in the order asked (as
//!   tokio's). Points: `NAME.read`, `NAME.write`, `NAME.unlock`.
//! * [`Condvar`]: `wait` releases the lock and waits for a notification
//!   (with a timeout, for `wait_timeout`), then takes the lock again. A
//!   notification wakes only tasks already waiting: one that finds nobody
//!   is lost, as a condition variable's is. A wait may also end with no
//!   notification (a spurious wake-up, at the rate the rule acting on
//!   `NAME.wait` draws): check the condition in a `while` loop. Points:
//!   `NAME.wait`, `NAME.notify_one`, `NAME.notify_all`.
//! * [`Notify`]: tokio's `Notify`: `notify_one` leaves a permit when
//!   nobody waits, `notify_waiters` wakes only those waiting. Points:
//!   `NAME.notified`, `NAME.notify_one`, `NAME.notify_waiters`.
//! * [`Atomic`]: a shared value whose loads, stores, swaps,
//!   compare-exchanges and arithmetic/bit operations are each indivisible.
//!   Points: `NAME.load`, `NAME.store`, `NAME.swap`, `NAME.cas`,
//!   `NAME.update`, `NAME.add`, `NAME.sub`, `NAME.or`, `NAME.and`,
//!   `NAME.bts`, `NAME.btr`.
//! * [`spin_loop`]: the hint inside a spin-wait: always yields (a task
//!   spinning on a cooperative runtime would otherwise never let the task
//!   it waits for run), and lets simulated time pass when it spins long.
//!
//! Outside a simulation the points cost a thread-local read and never
//! yield. The primitives are for the tasks of one thread (`!Send`), which
//! is what a simulated host is.
//!
//! For code written against `tokio::sync` (`Send + Sync` types, tokio's
//! API), [`tokio`] has the same points around tokio's own primitives.

mod atomic;
mod condvar;
mod mutex;
mod notify;
mod rwlock;
mod waitlist;

pub mod tokio;

pub use atomic::Atomic;
pub use condvar::{Condvar, WaitTimeoutResult};
pub use mutex::{Mutex, MutexGuard};
pub use notify::Notify;
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use std::time::Duration;

/// Spins one task may make at one simulated instant before each further
/// spin lets [`SPIN_CPU_TIME`] pass: the task it waits for may be paused.
pub const SPINS_PER_INSTANT: u64 = 256;

/// The simulated CPU time of one spin beyond [`SPINS_PER_INSTANT`].
pub const SPIN_CPU_TIME: Duration = Duration::from_micros(1);

/// The hint inside a spin-wait loop (`while flag.load().await { spin_loop().await }`).
/// See the module docs.
pub async fn spin_loop() {
    let spins = crate::schedule::spin();
    match spins {
        None => crate::schedule::yield_once().await,
        Some(spins) if spins > SPINS_PER_INSTANT => ::tokio::time::sleep(SPIN_CPU_TIME).await,
        Some(_) => crate::schedule::yield_once().await,
    }
}

//! `tokio::sync` as it is, with preemption points: switch one import and
//! the races of an existing tokio service become explorable.
//!
//! ```ignore
//! // use tokio::sync::{Mutex, Notify, RwLock, mpsc};
//! use faultline_harness::sync::tokio::{Mutex, Notify, RwLock, mpsc};
//! ```
//!
//! The types have the API of tokio's (the common part of it: see each
//! type) and are `Send + Sync` like tokio's, so they live in `Arc`s,
//! statics and tasks spawned with `tokio::spawn`. Each one wraps tokio's
//! own primitive:
//!
//! * **Outside a simulation** an operation is tokio's, plus one
//!   thread-local read (am I in a simulation?).
//! * **Inside a simulation** every await (`lock`, `read`, `write`,
//!   `notified`, `acquire`, `send`, `recv`, `changed`) is first a
//!   preemption point, and every release (a guard's or a permit's drop,
//!   `notify_one`, `notify_waiters`, a channel's non-async `send`) is a
//!   point whose switch the task takes at its next point, as the
//!   primitives of [`crate::sync`] do. Every strategy acts there: `random`,
//!   `pct`, `targeted` and bounded exhaustive exploration (`explore`).
//!
//! A point is named `NAME.OP`: `NAME` is given at construction
//! ([`Mutex::named`], [`mpsc::named_channel`], ...) or is the file and
//! line where the primitive was made (`src/cache.rs:42.write`); two
//! primitives made on one line share their points. Which waiter gets a
//! released lock or permit is tokio's order (first come), not the seed's.
//!
//! PCT and bounded exploration need to know which tasks could run (a
//! real thread is runnable or blocked; a tokio task does not say): spawn
//! the racing tasks with [`spawn`] (tokio's `spawn` outside a
//! simulation). Tasks spawned with `tokio::spawn` still run and still give
//! way at the points under `random`; PCT sees them as one.
//!
//! What cannot be intercepted this way: `std::sync` locks and atomics,
//! `parking_lot` and anything else that never awaits. Code between two
//! awaits runs as one step on a simulated host (its tasks share one
//! thread), so a race between two `std` atomic operations with no await in
//! between cannot happen there, and one with an await in between is
//! explored only at that await. Where such a race matters, make the
//! operation a point: [`crate::sync::Atomic`] (whose operations are
//! `async`), or an `Arc<Mutex<T>>` of this module around the value.

mod mutex;
mod notify;
mod point;
mod rwlock;
mod semaphore;

pub mod mpsc;
pub mod oneshot;
pub mod watch;

pub use mutex::{Mutex, MutexGuard};
pub use notify::{Notified, Notify};
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};
pub use semaphore::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

/// tokio's error types, which these primitives return unchanged.
pub use ::tokio::sync::{AcquireError, TryAcquireError, TryLockError};

use std::future::Future;

/// Spawns a task that the scheduler follows as a thread of the current
/// host (see the module docs); `tokio::spawn` outside a simulation.
pub fn spawn<F>(future: F) -> ::tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    crate::schedule::spawn_send(future)
}

//! A condition variable: notifications reach only tasks already waiting,
//! and a wait may end with none (a spurious wake-up).

use std::time::Duration;

use super::mutex::MutexGuard;
use super::waitlist::WaitList;
use crate::schedule::{preempt, spurious_wakeup, yield_once};

/// A condition variable (see the module docs).
pub struct Condvar {
    name: &'static str,
    waiters: WaitList,
}

/// Whether a timed wait ended by its timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// Whether the wait ended by its timeout (no notification came).
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl Condvar {
    /// A condition variable known to the schedule as `name`.
    pub fn new(name: &'static str) -> Condvar {
        Condvar {
            name,
            waiters: WaitList::default(),
        }
    }

    /// Tasks waiting now (for assertions and traces).
    pub fn waiters(&self) -> usize {
        self.waiters.len()
    }

    /// Releases the lock, waits for a notification (or wakes spuriously:
    /// check the condition in a loop), takes the lock again.
    pub async fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait_for(guard, None).await.0
    }

    /// As [`Condvar::wait`], for at most `timeout` of simulated time.
    pub async fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        self.wait_for(guard, Some(timeout)).await
    }

    async fn wait_for<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Option<Duration>,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        preempt(self.name, "wait").await;
        let spurious = spurious_wakeup(self.name);
        let registration = self.waiters.register();
        // Registered before the lock is let go, with no await in between:
        // a notification sent once the lock is free reaches this task.
        let mutex = guard.mutex();
        drop(guard);
        let timed_out = if spurious {
            // The wait ends by itself, once the others had their turn.
            tracing::debug!(target: "faultline::fault", point = self.name, "spurious wake-up");
            yield_once().await;
            false
        } else {
            match timeout {
                None => {
                    registration.wait().await;
                    false
                }
                Some(timeout) => {
                    tokio::select! {
                        biased;
                        () = registration.wait() => false,
                        () = tokio::time::sleep(timeout) => !registration.notified(),
                    }
                }
            }
        };
        drop(registration);
        (mutex.lock().await, WaitTimeoutResult(timed_out))
    }

    /// Wakes the task that has waited longest, if any.
    pub async fn notify_one(&self) {
        preempt(self.name, "notify_one").await;
        self.waiters.notify_one();
    }

    /// Wakes every task waiting now.
    pub async fn notify_all(&self) {
        preempt(self.name, "notify_all").await;
        self.waiters.notify_all();
    }
}

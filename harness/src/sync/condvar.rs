//! A condition variable: notifications reach only tasks already waiting.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use super::MutexGuard;
use crate::schedule::preempt;

/// A condition variable (see the module docs).
pub struct Condvar {
    name: &'static str,
    waiters: RefCell<VecDeque<Rc<Waiter>>>,
}

#[derive(Default)]
struct Waiter {
    notified: Cell<bool>,
    waker: RefCell<Option<Waker>>,
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

/// Takes a waiter out of the list when its wait ends without a
/// notification (a timeout, or the waiting task was dropped).
struct Registration<'a> {
    condvar: &'a Condvar,
    waiter: Rc<Waiter>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if !self.waiter.notified.get() {
            self.condvar
                .waiters
                .borrow_mut()
                .retain(|w| !Rc::ptr_eq(w, &self.waiter));
        }
    }
}

impl Condvar {
    /// A condition variable known to the schedule as `name`.
    pub fn new(name: &'static str) -> Condvar {
        Condvar {
            name,
            waiters: RefCell::default(),
        }
    }

    /// Tasks waiting now (for assertions and traces).
    pub fn waiters(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// Releases the lock, waits for a notification, takes the lock again.
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
        let waiter = Rc::new(Waiter::default());
        self.waiters.borrow_mut().push_back(waiter.clone());
        let registration = Registration {
            condvar: self,
            waiter,
        };
        // Registered before the lock is let go, with no await in between:
        // a notification sent once the lock is free reaches this task.
        let mutex = guard.mutex();
        drop(guard);
        let notified = poll_fn(|cx| {
            if registration.waiter.notified.get() {
                Poll::Ready(())
            } else {
                *registration.waiter.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let timed_out = match timeout {
            None => {
                notified.await;
                false
            }
            Some(timeout) => {
                tokio::select! {
                    biased;
                    () = notified => false,
                    () = tokio::time::sleep(timeout) => !registration.waiter.notified.get(),
                }
            }
        };
        drop(registration);
        (mutex.lock().await, WaitTimeoutResult(timed_out))
    }

    /// Wakes the task that has waited longest, if any.
    pub async fn notify_one(&self) {
        preempt(self.name, "notify_one").await;
        let first = self.waiters.borrow_mut().pop_front();
        if let Some(waiter) = first {
            wake(&waiter);
        }
    }

    /// Wakes every task waiting now.
    pub async fn notify_all(&self) {
        preempt(self.name, "notify_all").await;
        let all: Vec<Rc<Waiter>> = self.waiters.borrow_mut().drain(..).collect();
        for waiter in all {
            wake(&waiter);
        }
    }
}

fn wake(waiter: &Waiter) {
    waiter.notified.set(true);
    if let Some(waker) = waiter.waker.borrow_mut().take() {
        waker.wake();
    }
}

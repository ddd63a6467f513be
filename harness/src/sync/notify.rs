//! A notification with tokio's `Notify` semantics: `notify_one` wakes one
//! waiting task or, with nobody waiting, leaves a permit that the next
//! `notified` takes; `notify_waiters` wakes every task waiting now and
//! leaves nothing.

use std::cell::Cell;

use super::waitlist::WaitList;
use crate::schedule::preempt;

/// A notification between tasks of one host (see the module docs).
pub struct Notify {
    name: &'static str,
    permit: Cell<bool>,
    waiters: WaitList,
}

impl Notify {
    /// A notification known to the schedule as `name`.
    pub fn new(name: &'static str) -> Notify {
        Notify {
            name,
            permit: Cell::new(false),
            waiters: WaitList::default(),
        }
    }

    /// Waits for a notification (a point, `NAME.notified`, first): takes
    /// the permit if one was left, else waits for `notify_one` or
    /// `notify_waiters`. Unlike tokio's, the wait starts when the future is
    /// first polled, not when it is made.
    pub async fn notified(&self) {
        preempt(self.name, "notified").await;
        if self.permit.replace(false) {
            return;
        }
        self.waiters.register().wait().await;
    }

    /// Wakes the task that has waited longest or, with nobody waiting,
    /// leaves the permit (a point, `NAME.notify_one`, first).
    pub async fn notify_one(&self) {
        preempt(self.name, "notify_one").await;
        if !self.waiters.notify_one() {
            self.permit.set(true);
        }
    }

    /// Wakes every task waiting now; leaves no permit (a point,
    /// `NAME.notify_waiters`, first).
    pub async fn notify_waiters(&self) {
        preempt(self.name, "notify_waiters").await;
        self.waiters.notify_all();
    }

    /// Tasks waiting now (for assertions and traces).
    pub fn waiters(&self) -> usize {
        self.waiters.len()
    }
}

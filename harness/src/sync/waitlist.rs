//! Tasks waiting for a notification, in the order they came: what a
//! condition variable and a `Notify` share.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// The waiting tasks.
#[derive(Default)]
pub(super) struct WaitList {
    waiters: RefCell<VecDeque<Rc<Waiter>>>,
}

#[derive(Default)]
struct Waiter {
    notified: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Waiter {
    fn wake(&self) {
        self.notified.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// One task's place in a [`WaitList`]; dropping it before a notification
/// (a timeout, the task dropped) takes the place back.
pub(super) struct Registration<'a> {
    list: &'a WaitList,
    waiter: Rc<Waiter>,
}

impl WaitList {
    /// Registers the current task, last.
    pub(super) fn register(&self) -> Registration<'_> {
        let waiter = Rc::new(Waiter::default());
        self.waiters.borrow_mut().push_back(waiter.clone());
        Registration { list: self, waiter }
    }

    /// Wakes the task that has waited longest; whether there was one.
    pub(super) fn notify_one(&self) -> bool {
        let first = self.waiters.borrow_mut().pop_front();
        first.map(|waiter| waiter.wake()).is_some()
    }

    /// Wakes every task waiting now.
    pub(super) fn notify_all(&self) {
        let all: Vec<Rc<Waiter>> = self.waiters.borrow_mut().drain(..).collect();
        for waiter in all {
            waiter.wake();
        }
    }

    /// Tasks waiting now.
    pub(super) fn len(&self) -> usize {
        self.waiters.borrow().len()
    }
}

impl Registration<'_> {
    /// Whether a notification reached this place.
    pub(super) fn notified(&self) -> bool {
        self.waiter.notified.get()
    }

    /// Waits for the notification.
    pub(super) async fn wait(&self) {
        poll_fn(|cx| {
            if self.waiter.notified.get() {
                Poll::Ready(())
            } else {
                *self.waiter.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if !self.waiter.notified.get() {
            self.list
                .waiters
                .borrow_mut()
                .retain(|w| !Rc::ptr_eq(w, &self.waiter));
        }
    }
}

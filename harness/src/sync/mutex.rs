//! A lock whose acquisition and release are preemption points, and whose
//! hand-off the seed decides.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::schedule::{self, TaskKey, preempt, preempt_later};

/// A lock between the tasks of one host (see the module docs). Taking it
/// again from the task that holds it is a bug: it panics instead of
/// deadlocking.
pub struct Mutex<T> {
    name: &'static str,
    locked: Cell<bool>,
    /// The holder (tokio's task id; `None` when free or outside a task).
    holder: Cell<Option<tokio::task::Id>>,
    waiters: RefCell<VecDeque<Rc<LockWaiter>>>,
    value: UnsafeCell<T>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// In the queue.
    Queued,
    /// The lock was handed over: the waiter holds it.
    Granted,
    /// Woken to race for a free lock.
    Woken,
}

struct LockWaiter {
    task: TaskKey,
    state: Cell<Wait>,
    waker: RefCell<Option<Waker>>,
}

impl LockWaiter {
    fn wake(&self, state: Wait) {
        self.state.set(state);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// Takes a waiter out of the queue when its wait ends early (its task was
/// dropped), and passes on a lock handed to it that it will never use.
struct Registration<'a, T> {
    mutex: &'a Mutex<T>,
    waiter: Rc<LockWaiter>,
    done: bool,
}

impl<T> Drop for Registration<'_, T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match self.waiter.state.get() {
            Wait::Queued => self
                .mutex
                .waiters
                .borrow_mut()
                .retain(|w| !Rc::ptr_eq(w, &self.waiter)),
            Wait::Granted => self.mutex.pass_on(),
            Wait::Woken => {
                if !self.mutex.locked.get() {
                    self.mutex.wake_one();
                }
            }
        }
    }
}

impl<T> Mutex<T> {
    /// A lock known to the schedule as `name`.
    pub fn new(name: &'static str, value: T) -> Mutex<T> {
        Mutex {
            name,
            locked: Cell::new(false),
            holder: Cell::new(None),
            waiters: RefCell::default(),
            value: UnsafeCell::new(value),
        }
    }

    /// The name its preemption points carry.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Takes the lock: a preemption point (`NAME.lock`), then a wait
    /// while another task holds it.
    pub async fn lock(&self) -> MutexGuard<'_, T> {
        preempt(self.name, "lock").await;
        let me = tokio::task::try_id();
        assert!(
            me.is_none() || self.holder.get() != me,
            "{}: taken again by the task that holds it",
            self.name
        );
        if !self.locked.get() {
            return self.take(me);
        }
        let waiter = Rc::new(LockWaiter {
            task: schedule::current_task().unwrap_or(TaskKey { host: 0, index: 0 }),
            state: Cell::new(Wait::Queued),
            waker: RefCell::new(None),
        });
        self.waiters.borrow_mut().push_back(waiter.clone());
        let mut registration = Registration {
            mutex: self,
            waiter,
            done: false,
        };
        loop {
            let waiter = &registration.waiter;
            poll_fn(|cx| {
                if waiter.state.get() == Wait::Queued {
                    *waiter.waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
            match waiter.state.get() {
                Wait::Granted => {
                    registration.done = true;
                    self.holder.set(me);
                    return MutexGuard { mutex: self };
                }
                Wait::Woken if !self.locked.get() => {
                    registration.done = true;
                    return self.take(me);
                }
                // Another task took it first: back to the head of the
                // queue (it was the one woken).
                _ => {
                    waiter.state.set(Wait::Queued);
                    self.waiters.borrow_mut().push_front(waiter.clone());
                }
            }
        }
    }

    /// Takes the lock if it is free: a preemption point
    /// (`NAME.try_lock`), then no wait.
    pub async fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        preempt(self.name, "try_lock").await;
        (!self.locked.get()).then(|| self.take(tokio::task::try_id()))
    }

    fn take(&self, me: Option<tokio::task::Id>) -> MutexGuard<'_, T> {
        assert!(!self.locked.get(), "{}: taken while held", self.name);
        self.locked.set(true);
        self.holder.set(me);
        MutexGuard { mutex: self }
    }

    /// Releases the lock: a preemption point (`NAME.unlock`) whose switch
    /// comes at the task's next point (a destructor cannot wait), and the
    /// hand-off to a waiter.
    fn release(&self) {
        self.holder.set(None);
        preempt_later(self.name, "unlock");
        self.pass_on();
    }

    /// The lock is let go: handed to the first waiter (no rule acts on
    /// `NAME.unlock`), or left free with a waiter of the seed's choice
    /// woken to race for it.
    fn pass_on(&self) {
        let tasks: Vec<TaskKey> = self.waiters.borrow().iter().map(|w| w.task).collect();
        if tasks.is_empty() {
            self.locked.set(false);
            return;
        }
        match schedule::choose_waiter(self.name, &tasks) {
            None => {
                let first = self.waiters.borrow_mut().pop_front().expect("a waiter");
                first.wake(Wait::Granted);
            }
            Some(i) => {
                self.locked.set(false);
                let chosen = self.waiters.borrow_mut().remove(i).expect("a waiter");
                chosen.wake(Wait::Woken);
            }
        }
    }

    /// Wakes the first waiter to race for the free lock.
    fn wake_one(&self) {
        let first = self.waiters.borrow_mut().pop_front();
        if let Some(waiter) = first {
            waiter.wake(Wait::Woken);
        }
    }

    /// The value, for the owner of the only reference.
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    /// The value, the lock consumed.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }

    /// Whether a task holds the lock now (for assertions).
    pub fn is_locked(&self) -> bool {
        self.locked.get()
    }

    /// Tasks waiting for the lock now (for assertions and traces).
    pub fn waiters(&self) -> usize {
        self.waiters.borrow().len()
    }
}

/// The lock, held; dropping it releases the lock.
pub struct MutexGuard<'a, T> {
    pub(super) mutex: &'a Mutex<T>,
}

impl<'a, T> MutexGuard<'a, T> {
    /// The lock this guard holds.
    pub fn mutex(&self) -> &'a Mutex<T> {
        self.mutex
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while `locked` is set for it, and
        // the mutex is `!Sync` (one thread): no other reference is live.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this one unique.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.release();
    }
}

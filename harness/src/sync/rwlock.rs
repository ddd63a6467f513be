//! A readers-writer lock whose acquisitions and releases are preemption
//! points. Fair as tokio's: tasks get it in the order they asked, a run
//! of readers at once.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::schedule::{preempt, preempt_later};

/// A readers-writer lock between the tasks of one host (see the module
/// docs).
pub struct RwLock<T> {
    name: &'static str,
    readers: Cell<usize>,
    writer: Cell<bool>,
    queue: RefCell<VecDeque<Rc<RwWaiter>>>,
    value: UnsafeCell<T>,
}

struct RwWaiter {
    write: bool,
    granted: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// Takes a waiter out of the queue when its task is dropped while it
/// waits, and lets go of what was granted to it unused.
struct Registration<'a, T> {
    lock: &'a RwLock<T>,
    waiter: Rc<RwWaiter>,
    done: bool,
}

impl<T> Drop for Registration<'_, T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.waiter.granted.get() {
            self.lock.let_go(self.waiter.write);
        } else {
            self.lock
                .queue
                .borrow_mut()
                .retain(|w| !Rc::ptr_eq(w, &self.waiter));
            // A writer that leaves may unblock readers behind it.
            self.lock.grant();
        }
    }
}

impl<T> RwLock<T> {
    /// A lock known to the schedule as `name`.
    pub fn new(name: &'static str, value: T) -> RwLock<T> {
        RwLock {
            name,
            readers: Cell::new(0),
            writer: Cell::new(false),
            queue: RefCell::default(),
            value: UnsafeCell::new(value),
        }
    }

    /// Shared access: a point (`NAME.read`), then a wait while a writer
    /// holds it or waits before this task.
    pub async fn read(&self) -> RwLockReadGuard<'_, T> {
        preempt(self.name, "read").await;
        self.acquire(false).await;
        RwLockReadGuard { lock: self }
    }

    /// Exclusive access: a point (`NAME.write`), then a wait while anyone
    /// holds it or waits before this task.
    pub async fn write(&self) -> RwLockWriteGuard<'_, T> {
        preempt(self.name, "write").await;
        self.acquire(true).await;
        RwLockWriteGuard { lock: self }
    }

    async fn acquire(&self, write: bool) {
        let free = if write {
            !self.writer.get() && self.readers.get() == 0
        } else {
            !self.writer.get()
        };
        if free && self.queue.borrow().is_empty() {
            self.take(write);
            return;
        }
        let waiter = Rc::new(RwWaiter {
            write,
            granted: Cell::new(false),
            waker: RefCell::new(None),
        });
        self.queue.borrow_mut().push_back(waiter.clone());
        let mut registration = Registration {
            lock: self,
            waiter,
            done: false,
        };
        poll_fn(|cx| {
            if registration.waiter.granted.get() {
                Poll::Ready(())
            } else {
                *registration.waiter.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        registration.done = true;
    }

    fn take(&self, write: bool) {
        if write {
            assert!(
                !self.writer.get() && self.readers.get() == 0,
                "{}: taken while held",
                self.name
            );
            self.writer.set(true);
        } else {
            assert!(!self.writer.get(), "{}: read while written", self.name);
            self.readers.set(self.readers.get() + 1);
        }
    }

    /// Releases one hold (a point, `NAME.unlock`, taken at the task's next
    /// point) and grants the lock to whoever comes next.
    fn release(&self, write: bool) {
        preempt_later(self.name, "unlock");
        self.let_go(write);
    }

    fn let_go(&self, write: bool) {
        if write {
            self.writer.set(false);
        } else {
            self.readers.set(self.readers.get() - 1);
        }
        self.grant();
    }

    /// Grants the lock to the head of the queue: one writer, or every
    /// reader up to the next writer.
    fn grant(&self) {
        loop {
            let next = self.queue.borrow().front().cloned();
            let Some(next) = next else { return };
            let free = if next.write {
                !self.writer.get() && self.readers.get() == 0
            } else {
                !self.writer.get()
            };
            if !free {
                return;
            }
            self.queue.borrow_mut().pop_front();
            self.take(next.write);
            next.granted.set(true);
            if let Some(waker) = next.waker.borrow_mut().take() {
                waker.wake();
            }
            if next.write {
                return;
            }
        }
    }

    /// The value, for the owner of the only reference.
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

/// Shared access, held; dropping it releases it.
pub struct RwLockReadGuard<'a, T> {
    lock: &'a RwLock<T>,
}

/// Exclusive access, held; dropping it releases it.
pub struct RwLockWriteGuard<'a, T> {
    lock: &'a RwLock<T>,
}

impl<T> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: readers hold the lock only while no writer does, and the
        // lock is `!Sync` (one thread).
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the writer holds the lock alone.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the writer holds the lock alone, and `&mut self` makes
        // this reference unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.release(false);
    }
}

impl<T> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.release(true);
    }
}

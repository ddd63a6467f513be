//! A lock whose acquisition is a preemption point.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};

use crate::schedule::preempt;

/// A lock between the tasks of one host (see the module docs). Taking it
/// again from the task that holds it is a bug: it panics instead of
/// deadlocking.
pub struct Mutex<T> {
    name: &'static str,
    /// The holder (tokio's task id; `None` when free or outside a task).
    holder: Cell<Option<tokio::task::Id>>,
    inner: tokio::sync::Mutex<T>,
}

impl<T> Mutex<T> {
    /// A lock known to the schedule as `name`.
    pub fn new(name: &'static str, value: T) -> Mutex<T> {
        Mutex {
            name,
            holder: Cell::new(None),
            inner: tokio::sync::Mutex::new(value),
        }
    }

    /// The name its preemption points carry.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Takes the lock: a preemption point, then a wait while another task
    /// holds it (in order of arrival).
    pub async fn lock(&self) -> MutexGuard<'_, T> {
        preempt(self.name, "lock").await;
        let me = tokio::task::try_id();
        assert!(
            me.is_none() || self.holder.get() != me,
            "{}: taken again by the task that holds it",
            self.name
        );
        let guard = self.inner.lock().await;
        self.holder.set(me);
        MutexGuard {
            mutex: self,
            guard: Some(guard),
        }
    }

    /// The value, for the owner of the only reference.
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }

    /// The value, the lock consumed.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }

    /// Whether a task holds the lock now (for assertions).
    pub fn is_locked(&self) -> bool {
        self.inner.try_lock().is_err()
    }
}

/// The lock, held; dropping it releases the lock.
pub struct MutexGuard<'a, T> {
    pub(super) mutex: &'a Mutex<T>,
    guard: Option<tokio::sync::MutexGuard<'a, T>>,
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
        self.guard.as_ref().expect("held until dropped")
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("held until dropped")
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.holder.set(None);
        drop(self.guard.take());
    }
}

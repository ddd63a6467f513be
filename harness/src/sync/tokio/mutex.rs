//! tokio's `Mutex`, with points at `lock` and at the guard's release.

use std::fmt;
use std::ops::{Deref, DerefMut};

use super::point::PointName;

/// tokio's `Mutex` (see the module docs). Points: `NAME.lock`,
/// `NAME.try_lock`, `NAME.unlock`.
pub struct Mutex<T: ?Sized> {
    name: PointName,
    inner: ::tokio::sync::Mutex<T>,
}

/// tokio's `MutexGuard`; its drop is the `unlock` point.
pub struct MutexGuard<'a, T: ?Sized> {
    name: PointName,
    inner: ::tokio::sync::MutexGuard<'a, T>,
}

impl<T> Mutex<T> {
    /// A lock whose points are named after this line.
    #[track_caller]
    pub fn new(value: T) -> Mutex<T> {
        Mutex::with_name(PointName::here(), value)
    }

    /// A lock whose points are `name.lock`, `name.unlock`, ...
    pub fn named(name: &'static str, value: T) -> Mutex<T> {
        Mutex::with_name(PointName::Given(name), value)
    }

    fn with_name(name: PointName, value: T) -> Mutex<T> {
        Mutex {
            name,
            inner: ::tokio::sync::Mutex::new(value),
        }
    }

    /// tokio's `into_inner`.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// A point (`NAME.lock`), then tokio's `lock`.
    pub async fn lock(&self) -> MutexGuard<'_, T> {
        self.name.point("lock").await;
        MutexGuard {
            name: self.name,
            inner: self.inner.lock().await,
        }
    }

    /// tokio's `try_lock`; a point (`NAME.try_lock`) whose switch comes at
    /// the task's next point.
    pub fn try_lock(&self) -> Result<MutexGuard<'_, T>, ::tokio::sync::TryLockError> {
        self.name.release("try_lock");
        self.inner.try_lock().map(|inner| MutexGuard {
            name: self.name,
            inner,
        })
    }

    /// tokio's `get_mut`.
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }
}

impl<T: Default> Default for Mutex<T> {
    #[track_caller]
    fn default() -> Mutex<T> {
        Mutex::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.name.release("unlock");
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

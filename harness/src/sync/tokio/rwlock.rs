//! tokio's `RwLock`, with points at `read`, `write` and each release.

use std::fmt;
use std::ops::{Deref, DerefMut};

use super::point::PointName;

/// tokio's `RwLock` (see the module docs). Points: `NAME.read`,
/// `NAME.write`, `NAME.try_read`, `NAME.try_write`, `NAME.unlock`.
pub struct RwLock<T: ?Sized> {
    name: PointName,
    inner: ::tokio::sync::RwLock<T>,
}

/// tokio's `RwLockReadGuard`; its drop is the `unlock` point.
pub struct RwLockReadGuard<'a, T: ?Sized> {
    name: PointName,
    inner: ::tokio::sync::RwLockReadGuard<'a, T>,
}

/// tokio's `RwLockWriteGuard`; its drop is the `unlock` point.
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    name: PointName,
    inner: ::tokio::sync::RwLockWriteGuard<'a, T>,
}

impl<T> RwLock<T> {
    /// A lock whose points are named after this line.
    #[track_caller]
    pub fn new(value: T) -> RwLock<T> {
        RwLock::with_name(PointName::here(), value)
    }

    /// A lock whose points are `name.read`, `name.write`, ...
    pub fn named(name: &'static str, value: T) -> RwLock<T> {
        RwLock::with_name(PointName::Given(name), value)
    }

    fn with_name(name: PointName, value: T) -> RwLock<T> {
        RwLock {
            name,
            inner: ::tokio::sync::RwLock::new(value),
        }
    }

    /// tokio's `into_inner`.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// A point (`NAME.read`), then tokio's `read`.
    pub async fn read(&self) -> RwLockReadGuard<'_, T> {
        self.name.point("read").await;
        RwLockReadGuard {
            name: self.name,
            inner: self.inner.read().await,
        }
    }

    /// A point (`NAME.write`), then tokio's `write`.
    pub async fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.name.point("write").await;
        RwLockWriteGuard {
            name: self.name,
            inner: self.inner.write().await,
        }
    }

    /// tokio's `try_read`; its point's switch comes at the next point.
    pub fn try_read(&self) -> Result<RwLockReadGuard<'_, T>, ::tokio::sync::TryLockError> {
        self.name.release("try_read");
        self.inner.try_read().map(|inner| RwLockReadGuard {
            name: self.name,
            inner,
        })
    }

    /// tokio's `try_write`; its point's switch comes at the next point.
    pub fn try_write(&self) -> Result<RwLockWriteGuard<'_, T>, ::tokio::sync::TryLockError> {
        self.name.release("try_write");
        self.inner.try_write().map(|inner| RwLockWriteGuard {
            name: self.name,
            inner,
        })
    }

    /// tokio's `get_mut`.
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }
}

impl<T: Default> Default for RwLock<T> {
    #[track_caller]
    fn default() -> RwLock<T> {
        RwLock::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        self.name.release("unlock");
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        self.name.release("unlock");
    }
}

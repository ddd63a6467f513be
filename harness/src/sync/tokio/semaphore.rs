//! tokio's `Semaphore`, with points at each acquisition and release.

use std::fmt;
use std::sync::Arc;

use super::point::PointName;
use ::tokio::sync::{AcquireError, TryAcquireError};

/// tokio's `Semaphore` (see the module docs). Points: `NAME.acquire`,
/// `NAME.try_acquire`, `NAME.release` (a permit's drop, `add_permits`).
pub struct Semaphore {
    name: PointName,
    inner: Arc<::tokio::sync::Semaphore>,
}

/// tokio's `SemaphorePermit`; its drop is the `release` point.
pub struct SemaphorePermit<'a> {
    name: PointName,
    inner: ::tokio::sync::SemaphorePermit<'a>,
}

/// tokio's `OwnedSemaphorePermit`; its drop is the `release` point.
pub struct OwnedSemaphorePermit {
    name: PointName,
    inner: ::tokio::sync::OwnedSemaphorePermit,
}

impl Semaphore {
    /// tokio's bound on permits.
    pub const MAX_PERMITS: usize = ::tokio::sync::Semaphore::MAX_PERMITS;

    /// A semaphore whose points are named after this line.
    #[track_caller]
    pub fn new(permits: usize) -> Semaphore {
        Semaphore::with_name(PointName::here(), permits)
    }

    /// A semaphore whose points are `name.acquire`, ...
    pub fn named(name: &'static str, permits: usize) -> Semaphore {
        Semaphore::with_name(PointName::Given(name), permits)
    }

    fn with_name(name: PointName, permits: usize) -> Semaphore {
        Semaphore {
            name,
            inner: Arc::new(::tokio::sync::Semaphore::new(permits)),
        }
    }

    /// tokio's `available_permits`.
    pub fn available_permits(&self) -> usize {
        self.inner.available_permits()
    }

    /// tokio's `add_permits` (a `release` point).
    pub fn add_permits(&self, n: usize) {
        self.name.release("release");
        self.inner.add_permits(n);
    }

    /// A point (`NAME.acquire`), then tokio's `acquire`.
    pub async fn acquire(&self) -> Result<SemaphorePermit<'_>, AcquireError> {
        self.acquire_many(1).await
    }

    /// A point (`NAME.acquire`), then tokio's `acquire_many`.
    pub async fn acquire_many(&self, n: u32) -> Result<SemaphorePermit<'_>, AcquireError> {
        self.name.point("acquire").await;
        let inner = self.inner.acquire_many(n).await?;
        Ok(SemaphorePermit {
            name: self.name,
            inner,
        })
    }

    /// tokio's `try_acquire`; its point's switch comes at the next point.
    pub fn try_acquire(&self) -> Result<SemaphorePermit<'_>, TryAcquireError> {
        self.try_acquire_many(1)
    }

    /// tokio's `try_acquire_many`; its point's switch comes at the next
    /// point.
    pub fn try_acquire_many(&self, n: u32) -> Result<SemaphorePermit<'_>, TryAcquireError> {
        self.name.release("try_acquire");
        let inner = self.inner.try_acquire_many(n)?;
        Ok(SemaphorePermit {
            name: self.name,
            inner,
        })
    }

    /// A point (`NAME.acquire`), then tokio's `acquire_owned`.
    pub async fn acquire_owned(self: Arc<Self>) -> Result<OwnedSemaphorePermit, AcquireError> {
        self.acquire_many_owned(1).await
    }

    /// A point (`NAME.acquire`), then tokio's `acquire_many_owned`.
    pub async fn acquire_many_owned(
        self: Arc<Self>,
        n: u32,
    ) -> Result<OwnedSemaphorePermit, AcquireError> {
        self.name.point("acquire").await;
        let inner = self.inner.clone().acquire_many_owned(n).await?;
        Ok(OwnedSemaphorePermit {
            name: self.name,
            inner,
        })
    }

    /// tokio's `try_acquire_owned`; its point's switch comes at the next
    /// point.
    pub fn try_acquire_owned(self: Arc<Self>) -> Result<OwnedSemaphorePermit, TryAcquireError> {
        self.name.release("try_acquire");
        let inner = self.inner.clone().try_acquire_owned()?;
        Ok(OwnedSemaphorePermit {
            name: self.name,
            inner,
        })
    }

    /// tokio's `close`.
    pub fn close(&self) {
        self.inner.close();
    }

    /// tokio's `is_closed`.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl SemaphorePermit<'_> {
    /// tokio's `num_permits`.
    pub fn num_permits(&self) -> usize {
        self.inner.num_permits()
    }

    /// tokio's `forget`: the permits are not given back (no point). The
    /// wrapper and the tokio permit in it are forgotten together: neither
    /// drop runs, which is what tokio's own `forget` achieves.
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        self.name.release("release");
    }
}

impl OwnedSemaphorePermit {
    /// tokio's `num_permits`.
    pub fn num_permits(&self) -> usize {
        self.inner.num_permits()
    }
}

impl Drop for OwnedSemaphorePermit {
    fn drop(&mut self) {
        self.name.release("release");
    }
}

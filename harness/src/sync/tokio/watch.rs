//! tokio's `watch` channel, with points at each send and each wait for a
//! change.
//!
//! Points: `NAME.send` (a point whose switch comes at the task's next
//! point: sending does not await), `NAME.changed`.

pub use ::tokio::sync::watch::{Ref, error};

use super::point::PointName;
use error::{RecvError, SendError};

/// tokio's watch `Sender`.
#[derive(Debug)]
pub struct Sender<T> {
    name: PointName,
    inner: ::tokio::sync::watch::Sender<T>,
}

/// tokio's watch `Receiver`.
#[derive(Debug)]
pub struct Receiver<T> {
    name: PointName,
    inner: ::tokio::sync::watch::Receiver<T>,
}

/// tokio's `channel`, its points named after this line.
#[track_caller]
pub fn channel<T>(init: T) -> (Sender<T>, Receiver<T>) {
    make(PointName::here(), init)
}

/// tokio's `channel`, its points named `name.send`, `name.changed`.
pub fn named_channel<T>(name: &'static str, init: T) -> (Sender<T>, Receiver<T>) {
    make(PointName::Given(name), init)
}

fn make<T>(name: PointName, init: T) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = ::tokio::sync::watch::channel(init);
    (Sender { name, inner: tx }, Receiver { name, inner: rx })
}

impl<T> Sender<T> {
    /// tokio's `send` (a `send` point).
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.name.release("send");
        self.inner.send(value)
    }

    /// tokio's `send_replace` (a `send` point).
    pub fn send_replace(&self, value: T) -> T {
        self.name.release("send");
        self.inner.send_replace(value)
    }

    /// tokio's `send_modify` (a `send` point).
    pub fn send_modify<F: FnOnce(&mut T)>(&self, modify: F) {
        self.name.release("send");
        self.inner.send_modify(modify);
    }

    /// tokio's `send_if_modified` (a `send` point).
    pub fn send_if_modified<F: FnOnce(&mut T) -> bool>(&self, modify: F) -> bool {
        self.name.release("send");
        self.inner.send_if_modified(modify)
    }

    /// tokio's `borrow`.
    pub fn borrow(&self) -> Ref<'_, T> {
        self.inner.borrow()
    }

    /// tokio's `subscribe`.
    pub fn subscribe(&self) -> Receiver<T> {
        Receiver {
            name: self.name,
            inner: self.inner.subscribe(),
        }
    }

    /// tokio's `receiver_count`.
    pub fn receiver_count(&self) -> usize {
        self.inner.receiver_count()
    }

    /// tokio's `is_closed`.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// tokio's `closed`.
    pub async fn closed(&self) {
        self.inner.closed().await;
    }
}

impl<T> Receiver<T> {
    /// A point (`NAME.changed`), then tokio's `changed`.
    pub async fn changed(&mut self) -> Result<(), RecvError> {
        self.name.point("changed").await;
        self.inner.changed().await
    }

    /// tokio's `borrow`.
    pub fn borrow(&self) -> Ref<'_, T> {
        self.inner.borrow()
    }

    /// tokio's `borrow_and_update`.
    pub fn borrow_and_update(&mut self) -> Ref<'_, T> {
        self.inner.borrow_and_update()
    }

    /// tokio's `has_changed`.
    pub fn has_changed(&self) -> Result<bool, RecvError> {
        self.inner.has_changed()
    }

    /// tokio's `mark_changed`.
    pub fn mark_changed(&mut self) {
        self.inner.mark_changed();
    }

    /// tokio's `mark_unchanged`.
    pub fn mark_unchanged(&mut self) {
        self.inner.mark_unchanged();
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver {
            name: self.name,
            inner: self.inner.clone(),
        }
    }
}

//! tokio's `mpsc` channels, with points at each send and receive.
//!
//! Points: `NAME.send` (before an async send; a non-async send is a point
//! whose switch comes at the task's next point), `NAME.recv`.

pub use ::tokio::sync::mpsc::error;

use super::point::PointName;
use error::{SendError, TryRecvError, TrySendError};

/// tokio's bounded `Sender`.
#[derive(Debug)]
pub struct Sender<T> {
    name: PointName,
    inner: ::tokio::sync::mpsc::Sender<T>,
}

/// tokio's bounded `Receiver`.
#[derive(Debug)]
pub struct Receiver<T> {
    name: PointName,
    inner: ::tokio::sync::mpsc::Receiver<T>,
}

/// tokio's `UnboundedSender`.
#[derive(Debug)]
pub struct UnboundedSender<T> {
    name: PointName,
    inner: ::tokio::sync::mpsc::UnboundedSender<T>,
}

/// tokio's `UnboundedReceiver`.
#[derive(Debug)]
pub struct UnboundedReceiver<T> {
    name: PointName,
    inner: ::tokio::sync::mpsc::UnboundedReceiver<T>,
}

/// tokio's `channel`, its points named after this line.
#[track_caller]
pub fn channel<T>(buffer: usize) -> (Sender<T>, Receiver<T>) {
    bounded(PointName::here(), buffer)
}

/// tokio's `channel`, its points named `name.send`, `name.recv`.
pub fn named_channel<T>(name: &'static str, buffer: usize) -> (Sender<T>, Receiver<T>) {
    bounded(PointName::Given(name), buffer)
}

fn bounded<T>(name: PointName, buffer: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = ::tokio::sync::mpsc::channel(buffer);
    (Sender { name, inner: tx }, Receiver { name, inner: rx })
}

/// tokio's `unbounded_channel`, its points named after this line.
#[track_caller]
pub fn unbounded_channel<T>() -> (UnboundedSender<T>, UnboundedReceiver<T>) {
    unbounded(PointName::here())
}

/// tokio's `unbounded_channel`, its points named `name.send`, `name.recv`.
pub fn named_unbounded_channel<T>(
    name: &'static str,
) -> (UnboundedSender<T>, UnboundedReceiver<T>) {
    unbounded(PointName::Given(name))
}

fn unbounded<T>(name: PointName) -> (UnboundedSender<T>, UnboundedReceiver<T>) {
    let (tx, rx) = ::tokio::sync::mpsc::unbounded_channel();
    (
        UnboundedSender { name, inner: tx },
        UnboundedReceiver { name, inner: rx },
    )
}

impl<T> Sender<T> {
    /// A point (`NAME.send`), then tokio's `send`.
    pub async fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.name.point("send").await;
        self.inner.send(value).await
    }

    /// tokio's `try_send` (a `send` point).
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.name.release("send");
        self.inner.try_send(value)
    }

    /// tokio's `closed`.
    pub async fn closed(&self) {
        self.inner.closed().await;
    }

    /// tokio's `is_closed`.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// tokio's `capacity`.
    pub fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    /// tokio's `max_capacity`.
    pub fn max_capacity(&self) -> usize {
        self.inner.max_capacity()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            name: self.name,
            inner: self.inner.clone(),
        }
    }
}

/// The methods both receivers have, the same over tokio's two types.
macro_rules! receiver_methods {
    ($receiver:ident) => {
        impl<T> $receiver<T> {
            /// A point (`NAME.recv`), then tokio's `recv`.
            pub async fn recv(&mut self) -> Option<T> {
                self.name.point("recv").await;
                self.inner.recv().await
            }

            /// tokio's `try_recv` (a `recv` point).
            pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
                self.name.release("recv");
                self.inner.try_recv()
            }

            /// tokio's `close`.
            pub fn close(&mut self) {
                self.inner.close();
            }

            /// tokio's `len`.
            pub fn len(&self) -> usize {
                self.inner.len()
            }

            /// tokio's `is_empty`.
            pub fn is_empty(&self) -> bool {
                self.inner.is_empty()
            }
        }
    };
}

receiver_methods!(Receiver);
receiver_methods!(UnboundedReceiver);

impl<T> UnboundedSender<T> {
    /// tokio's `send` (a `send` point).
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.name.release("send");
        self.inner.send(value)
    }

    /// tokio's `closed`.
    pub async fn closed(&self) {
        self.inner.closed().await;
    }

    /// tokio's `is_closed`.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

impl<T> Clone for UnboundedSender<T> {
    fn clone(&self) -> Self {
        UnboundedSender {
            name: self.name,
            inner: self.inner.clone(),
        }
    }
}

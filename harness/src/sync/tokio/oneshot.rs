//! tokio's `oneshot` channel, with points at the send and the receive.
//!
//! Points: `NAME.send` (a point whose switch comes at the task's next
//! point: `send` does not await), `NAME.recv` (when the receiver is first
//! polled).

pub use ::tokio::sync::oneshot::error;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::point::{FirstPoll, PointName};
use error::{RecvError, TryRecvError};

/// tokio's oneshot `Sender`.
#[derive(Debug)]
pub struct Sender<T> {
    name: PointName,
    inner: ::tokio::sync::oneshot::Sender<T>,
}

/// tokio's oneshot `Receiver`: a future of the value.
pub struct Receiver<T> {
    name: PointName,
    point: FirstPoll,
    inner: ::tokio::sync::oneshot::Receiver<T>,
}

/// tokio's `channel`, its points named after this line.
#[track_caller]
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    make(PointName::here())
}

/// tokio's `channel`, its points named `name.send`, `name.recv`.
pub fn named_channel<T>(name: &'static str) -> (Sender<T>, Receiver<T>) {
    make(PointName::Given(name))
}

fn make<T>(name: PointName) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = ::tokio::sync::oneshot::channel();
    (
        Sender { name, inner: tx },
        Receiver {
            name,
            point: FirstPoll::NotYet,
            inner: rx,
        },
    )
}

impl<T> Sender<T> {
    /// tokio's `send` (a `send` point).
    pub fn send(self, value: T) -> Result<(), T> {
        self.name.release("send");
        self.inner.send(value)
    }

    /// tokio's `is_closed`.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// tokio's `closed`.
    pub async fn closed(&mut self) {
        self.inner.closed().await;
    }
}

impl<T> Receiver<T> {
    /// tokio's `try_recv` (a `recv` point).
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.name.release("recv");
        self.inner.try_recv()
    }

    /// tokio's `close`.
    pub fn close(&mut self) {
        self.inner.close();
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin`.
        let this = self.get_mut();
        if this.point.poll(this.name, "recv", cx).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll(cx)
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

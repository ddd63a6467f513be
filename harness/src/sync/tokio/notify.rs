//! tokio's `Notify`, with a point before each wait starts and at each
//! notification.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::point::{FirstPoll, PointName};

/// tokio's `Notify` (see the module docs). Points: `NAME.notified` (when
/// the `Notified` future is first polled, before it starts waiting),
/// `NAME.notify_one`, `NAME.notify_waiters`.
pub struct Notify {
    name: PointName,
    inner: ::tokio::sync::Notify,
}

pin_project_lite::pin_project! {
    /// tokio's `Notified`: `notify_waiters` reaches it from its making on,
    /// as tokio's (see [`Notify::notified`] for the one exception), and it
    /// waits from its first poll (or [`Notified::enable`]), after the
    /// point.
    pub struct Notified<'a> {
        notify: &'a ::tokio::sync::Notify,
        name: PointName,
        point: FirstPoll,
        #[pin]
        inner: Option<::tokio::sync::futures::Notified<'a>>,
    }
}

impl Notify {
    /// A notification whose points are named after this line.
    #[track_caller]
    pub fn new() -> Notify {
        Notify::with_name(PointName::here())
    }

    /// A notification whose points are `name.notified`, ...
    pub fn named(name: &'static str) -> Notify {
        Notify::with_name(PointName::Given(name))
    }

    fn with_name(name: PointName) -> Notify {
        Notify {
            name,
            inner: ::tokio::sync::Notify::new(),
        }
    }

    /// tokio's `notified`. One difference, inside a simulation: when a
    /// switch decided at a release (a guard's drop just before, say) is
    /// still to be taken, the `Notified` is made after it, at its first
    /// poll. A real thread preempted at that release makes its `Notified`
    /// only once it runs again, after whatever ran meanwhile (a
    /// `notify_waiters` that found nobody waiting, for one).
    pub fn notified(&self) -> Notified<'_> {
        let after_switch = crate::schedule::switch_pending();
        Notified {
            notify: &self.inner,
            name: self.name,
            point: FirstPoll::NotYet,
            inner: (!after_switch).then(|| self.inner.notified()),
        }
    }

    /// tokio's `notify_one` (a point whose switch comes at the task's next
    /// point).
    pub fn notify_one(&self) {
        self.name.release("notify_one");
        self.inner.notify_one();
    }

    /// tokio's `notify_waiters` (a point whose switch comes at the task's
    /// next point).
    pub fn notify_waiters(&self) {
        self.name.release("notify_waiters");
        self.inner.notify_waiters();
    }
}

impl Default for Notify {
    #[track_caller]
    fn default() -> Notify {
        Notify::new()
    }
}

impl fmt::Debug for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl Notified<'_> {
    /// tokio's `enable`: the wait starts now (a `notify_waiters` from here
    /// on reaches it), with no point before it.
    pub fn enable(self: Pin<&mut Self>) -> bool {
        let mut this = self.project();
        this.point.skip();
        if this.inner.is_none() {
            this.inner.set(Some(this.notify.notified()));
        }
        this.inner.as_pin_mut().expect("made just above").enable()
    }
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if this.point.poll(*this.name, "notified", cx).is_pending() {
            return Poll::Pending;
        }
        if this.inner.is_none() {
            this.inner.set(Some(this.notify.notified()));
        }
        this.inner.as_pin_mut().expect("made just above").poll(cx)
    }
}

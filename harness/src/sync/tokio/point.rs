//! A primitive's points: their name (given, or where the primitive was
//! made) and the calls that make them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::schedule::{preempt, preempt_later};

/// What a primitive's points are called: a given name, or where it was
/// made.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PointName {
    Given(&'static str),
    Site(&'static Location<'static>),
}

thread_local! {
    /// Construction sites' names, made once per site and thread.
    static SITES: RefCell<BTreeMap<usize, &'static str>> = const { RefCell::new(BTreeMap::new()) };
}

impl PointName {
    /// The caller's caller: where the primitive is made.
    #[track_caller]
    pub(crate) fn here() -> PointName {
        PointName::Site(Location::caller())
    }

    /// The name, inside a simulation only (outside, `None`: no point).
    pub(crate) fn in_sim(self) -> Option<&'static str> {
        if !crate::ctx::in_sim() {
            return None;
        }
        Some(match self {
            PointName::Given(name) => name,
            PointName::Site(site) => SITES.with(|sites| {
                *sites
                    .borrow_mut()
                    .entry(site as *const Location<'static> as usize)
                    .or_insert_with(|| {
                        // One string per site and thread, for the run's
                        // point table (which keys points by `&'static str`).
                        Box::leak(format!("{}:{}", site.file(), site.line()).into_boxed_str())
                    })
            }),
        })
    }

    /// A preemption point before `op` (nothing outside a simulation).
    pub(crate) async fn point(self, op: &'static str) {
        if let Some(name) = self.in_sim() {
            preempt(name, op).await;
        }
    }

    /// A release: a point whose switch the task takes at its next point.
    pub(crate) fn release(self, op: &'static str) {
        if let Some(name) = self.in_sim() {
            preempt_later(name, op);
        }
    }
}

/// The point a hand-polled future passes at its first poll, before it
/// starts waiting.
pub(crate) enum FirstPoll {
    NotYet,
    Passing(Pin<Box<dyn Future<Output = ()> + Send + Sync>>),
    Passed,
}

impl FirstPoll {
    /// Passes `name.op` (nothing outside a simulation); `Ready` once it is
    /// passed, and from then on.
    pub(crate) fn poll(
        &mut self,
        name: PointName,
        op: &'static str,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        if let FirstPoll::NotYet = self {
            *self = match name.in_sim() {
                Some(name) => FirstPoll::Passing(Box::pin(preempt(name, op))),
                None => FirstPoll::Passed,
            };
        }
        if let FirstPoll::Passing(point) = self {
            if point.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            *self = FirstPoll::Passed;
        }
        Poll::Ready(())
    }

    /// The wait started without the point (`Notified::enable`); a point
    /// already being passed is passed to its end.
    pub(crate) fn skip(&mut self) {
        if let FirstPoll::NotYet = self {
            *self = FirstPoll::Passed;
        }
    }
}

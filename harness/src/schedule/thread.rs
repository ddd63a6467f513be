//! The threads of a simulated host: tasks spawned with [`spawn`], whose
//! state the scheduler follows.
//!
//! A real thread is running, runnable or blocked, and a scheduler that
//! models one must know which: PCT counts a step only where at least two
//! threads could run and runs the highest-priority runnable one; bounded
//! exploration preempts only where another thread could take the CPU.
//! tokio does not say which of its tasks are ready, so a thread's future
//! is wrapped: each poll marks it running, and the waker it is given marks
//! it ready again when anything wakes it. A task that ends (or is dropped:
//! its host crashed) leaves the scheduler's lists.
//!
//! Tasks spawned any other way (a host's main future, a client) still run,
//! between the steps of the threads; the scheduler does not count them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use super::ready::ThreadWaker;
use super::scheduler::Scheduler;
use crate::ctx;

/// Spawns `future` as a thread of the current host: a task of its
/// runtime (`spawn_local`) that the scheduler follows (see the module
/// docs). The system under test spawns its threads with this; outside a
/// simulation it is `tokio::task::spawn_local` and a pointer's worth of
/// bookkeeping per poll.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let (thread, waker) = Thread::new(future);
    let handle = tokio::task::spawn_local(thread);
    follow(handle.id(), waker);
    handle
}

/// [`spawn`] for a `Send` future, with `tokio::spawn` (the tokio-compatible
/// primitives' `spawn`); outside a simulation, `tokio::spawn` itself.
pub(crate) fn spawn_send<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if !ctx::in_sim() {
        return tokio::spawn(future);
    }
    let (thread, waker) = Thread::new(future);
    let handle = tokio::spawn(thread);
    follow(handle.id(), waker);
    handle
}

/// The scheduler follows the task `id`, woken through `waker`, as a thread
/// of the current host.
fn follow(id: tokio::task::Id, waker: Arc<ThreadWaker>) {
    ctx::with(|ctx| {
        let host = ctx.host();
        let key = ctx
            .part::<Scheduler>()
            .borrow_mut()
            .thread_spawned(host, id, waker.clone());
        waker.key.set(key).expect("a thread is spawned once");
    });
}

/// A thread's future (boxed: the wrapper stays `Unpin`).
struct Thread<F> {
    future: Pin<Box<F>>,
    waker: Arc<ThreadWaker>,
}

impl<F> Thread<F> {
    fn new(future: F) -> (Thread<F>, Arc<ThreadWaker>) {
        let waker = Arc::new(ThreadWaker {
            // Spawned: ready to run.
            ready: AtomicBool::new(true),
            inner: Mutex::new(None),
            key: OnceLock::new(),
        });
        let thread = Thread {
            future: Box::pin(future),
            waker: waker.clone(),
        };
        (thread, waker)
    }

    fn ended(&self) {
        if let Some(&key) = self.waker.key.get() {
            ctx::with(|ctx| {
                if let Ok(mut schedule) = ctx.part::<Scheduler>().try_borrow_mut() {
                    schedule.thread_ended(key);
                }
            });
        }
    }
}

impl<F> Drop for Thread<F> {
    fn drop(&mut self) {
        self.ended();
    }
}

impl<F: Future> Future for Thread<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        {
            let mut inner = this.waker.inner.lock().expect("never poisoned");
            if !inner.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *inner = Some(cx.waker().clone());
            }
        }
        // Running now; whatever wakes it from here on makes it ready again.
        this.waker.ready.store(false, Ordering::Relaxed);
        let waker = Waker::from(this.waker.clone());
        let output = this.future.as_mut().poll(&mut Context::from_waker(&waker));
        if output.is_ready() {
            this.waker.ready.store(false, Ordering::Relaxed);
            this.ended();
        }
        output
    }
}

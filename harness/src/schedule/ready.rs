//! Whether a thread is ready to run: the waker a thread's polls are given
//! (see [`super::thread`]), which the scheduler reads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Wake, Waker};

use super::strategy::TaskKey;

/// Whether a thread is ready to run, and the waker that says so.
pub(crate) struct ThreadWaker {
    pub(super) ready: AtomicBool,
    /// The waker tokio gave the last poll.
    pub(super) inner: Mutex<Option<Waker>>,
    /// The thread, once the scheduler knows it (inside a simulation).
    pub(super) key: OnceLock<TaskKey>,
}

impl ThreadWaker {
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Ordering::Relaxed);
        let inner = self.inner.lock().expect("never poisoned: no panics inside");
        if let Some(waker) = inner.as_ref() {
            waker.wake_by_ref();
        }
    }
}

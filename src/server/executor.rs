//! Background tasks, scheduled like the engine's executor pool.
//!
//! A node runs its background work (preparing outgoing replication
//! messages, expiry, durability timeouts) as [`Task`]s. Each task has a
//! type ([`TaskType`]); each type has a queue and its own worker threads.
//! Here a worker "thread" is a local task of the node's host, not an OS
//! thread, so a simulation stays deterministic; where real threads would
//! interleave, a race point lets the harness interleave them.
//!
//! A queue keeps its tasks in a *future queue* ordered by wake time (a task
//! that is idle waits "forever", until something wakes it). A worker loops:
//!
//! 1. **fetch**: move the tasks whose wake time has come to the ready
//!    queue, take one, and while at it lower the thread's own recorded wake
//!    time to the future queue's earliest;
//! 2. **run** it, then **reschedule** it at the wake time it asks for, and
//!    record the queue's earliest wake time as the thread's;
//! 3. when nothing was ready: **sleep** until the next wake time, at most
//!    [`FALLBACK_SLEEP_MS`], or until [`Executor::wake`] notifies the
//!    sleepers; after the sleep the recorded wake time is "forever" again.
//!
//! Between (1) finding nothing and (3) sleeping, the thread holds no lock:
//! another thread may wake a task right there. MB-35649: the old sleep
//! used the thread's recorded wake time, which is stale when that happens:
//! the notification found no sleeper, and the thread slept the 2 s
//! fallback with a task due now. The fix computes the sleep from the queue
//! itself, under the queue's lock, right before sleeping.
//!
//! The "lock" of a queue is the fact that code between two `.await`s runs
//! alone on the host: every queue operation below is synchronous.
//!
//! Every run records how late the task started (its scheduler wait time)
//! in the `scheduler-wait.<type>` latency metric, for the latency oracle.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use faultline_harness::{oracle, race_point};
use tokio::sync::Notify;

use crate::bugs::{Bugs, MB_35649};

/// The longest a worker sleeps without looking at its queue again, in ms
/// (the engine's `MIN_SLEEP_TIME`): a lost wake-up costs at most this.
pub const FALLBACK_SLEEP_MS: u64 = 2000;

/// Most tasks one executor holds.
pub const MAX_TASKS: usize = 4096;

/// Worker threads of one type, at most.
pub const MAX_THREADS_PER_TYPE: usize = 16;

/// A wake time on the executor's clock; [`FOREVER`] for an idle task.
pub type WakeTime = Duration;

/// The wake time of a task that waits until it is woken.
pub const FOREVER: WakeTime = Duration::MAX;

/// The kinds of background work, each with its own queue and threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaskType {
    Reader,
    Writer,
    /// Auxiliary I/O: among others, the task that prepares outgoing DCP
    /// messages (the task MB-35649 delays).
    AuxIo,
    NonIo,
}

impl TaskType {
    pub const ALL: [TaskType; 4] = [
        TaskType::Reader,
        TaskType::Writer,
        TaskType::AuxIo,
        TaskType::NonIo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TaskType::Reader => "reader",
            TaskType::Writer => "writer",
            TaskType::AuxIo => "auxio",
            TaskType::NonIo => "nonio",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// When a task wants to run again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// After this long (zero: as soon as a thread is free).
    After(Duration),
    /// Only when woken ([`Executor::wake`]).
    Forever,
    /// Never: the task is done and leaves the executor.
    Done,
}

/// Background work. `run` does one round of work and returns; it must not
/// block (a worker thread runs it to completion).
pub trait Task {
    fn name(&self) -> &str;
    fn run(&self) -> Next;
}

/// A scheduled task's handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TaskId(u64);

/// Worker threads per task type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecutorConfig {
    pub reader_threads: usize,
    pub writer_threads: usize,
    pub auxio_threads: usize,
    pub nonio_threads: usize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            reader_threads: 1,
            writer_threads: 1,
            auxio_threads: 1,
            nonio_threads: 1,
        }
    }
}

impl ExecutorConfig {
    fn threads(&self, task_type: TaskType) -> usize {
        match task_type {
            TaskType::Reader => self.reader_threads,
            TaskType::Writer => self.writer_threads,
            TaskType::AuxIo => self.auxio_threads,
            TaskType::NonIo => self.nonio_threads,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        for task_type in TaskType::ALL {
            let n = self.threads(task_type);
            if n == 0 || n > MAX_THREADS_PER_TYPE {
                return Err(format!(
                    "{} threads must be within 1..={MAX_THREADS_PER_TYPE}, not {n}",
                    task_type.name()
                ));
            }
        }
        Ok(())
    }
}

/// Where a task is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// In its queue's future queue, due at `waketime`.
    Future,
    /// In its queue's ready queue.
    Ready,
    /// A thread is running it.
    Running,
}

struct Entry {
    task: Rc<dyn Task>,
    task_type: TaskType,
    waketime: WakeTime,
    place: Place,
    /// Woken while running: reschedule it now whatever it asked for.
    woken_while_running: bool,
    cancelled: bool,
}

/// One task type's queues.
struct TaskQueue {
    /// Waiting tasks by (wake time, id): the earliest first.
    future: BTreeSet<(WakeTime, TaskId)>,
    /// Due tasks, in the order they became due.
    ready: BTreeSet<(WakeTime, TaskId)>,
    /// Threads sleeping on `sleep` right now.
    sleepers: usize,
    /// The condition variable sleeping threads wait on.
    sleep: Rc<Notify>,
}

impl TaskQueue {
    fn new() -> TaskQueue {
        TaskQueue {
            future: BTreeSet::new(),
            ready: BTreeSet::new(),
            sleepers: 0,
            sleep: Rc::new(Notify::new()),
        }
    }

    /// The earliest wake time of the future queue (`FOREVER` when empty).
    fn earliest_waketime(&self) -> WakeTime {
        self.future
            .first()
            .map(|(waketime, _)| *waketime)
            .unwrap_or(FOREVER)
    }

    /// Wakes the sleeping threads (a condition variable's broadcast: a
    /// thread that is not sleeping yet does not hear it).
    fn notify_sleepers(&self) {
        if self.sleepers > 0 {
            self.sleep.notify_waiters();
        }
    }
}

/// A worker thread's own state.
struct ThreadState {
    task_type: TaskType,
    /// When the thread believes its queue next has work (the engine's
    /// `ExecutorThread::waketime`).
    waketime: WakeTime,
}

struct State {
    tasks: BTreeMap<TaskId, Entry>,
    queues: Vec<TaskQueue>,
    next_id: u64,
}

/// A node's executor pool. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    state: Rc<RefCell<State>>,
    started: tokio::time::Instant,
    bugs: Bugs,
}

impl Executor {
    /// Starts the worker threads (local tasks of the current host).
    pub fn start(config: ExecutorConfig, bugs: Bugs) -> Executor {
        config.validate().expect("a valid executor configuration");
        let executor = Executor {
            state: Rc::new(RefCell::new(State {
                tasks: BTreeMap::new(),
                queues: TaskType::ALL.iter().map(|_| TaskQueue::new()).collect(),
                next_id: 1,
            })),
            // The executor's clock: simulated time inside a simulation.
            started: tokio::time::Instant::now(),
            bugs,
        };
        for task_type in TaskType::ALL {
            for thread in 0..config.threads(task_type) {
                let worker = executor.clone();
                tokio::task::spawn_local(
                    async move { worker.thread_loop(task_type, thread).await },
                );
            }
        }
        executor
    }

    fn now(&self) -> WakeTime {
        self.started.elapsed()
    }

    /// Schedules a task to run as soon as a thread of its type is free.
    pub fn schedule(&self, task: Rc<dyn Task>, task_type: TaskType) -> TaskId {
        let now = self.now();
        let mut state = self.state.borrow_mut();
        assert!(state.tasks.len() < MAX_TASKS, "at most {MAX_TASKS} tasks");
        let id = TaskId(state.next_id);
        state.next_id += 1;
        tracing::debug!(target: "faultline::executor", task = task.name(), id = id.0, "schedule");
        state.tasks.insert(
            id,
            Entry {
                task,
                task_type,
                waketime: now,
                place: Place::Future,
                woken_while_running: false,
                cancelled: false,
            },
        );
        let queue = &mut state.queues[task_type.index()];
        queue.future.insert((now, id));
        queue.notify_sleepers();
        id
    }

    /// Makes a task due now and wakes the sleeping threads of its type.
    pub fn wake(&self, id: TaskId) {
        self.set_waketime(id, self.now());
    }

    /// Makes a task due after `delay`.
    pub fn snooze(&self, id: TaskId, delay: Duration) {
        self.set_waketime(id, self.now().saturating_add(delay));
    }

    fn set_waketime(&self, id: TaskId, waketime: WakeTime) {
        let mut state = self.state.borrow_mut();
        let State { tasks, queues, .. } = &mut *state;
        let Some(entry) = tasks.get_mut(&id) else {
            return; // Done or cancelled: nothing to wake.
        };
        let queue = &mut queues[entry.task_type.index()];
        match entry.place {
            Place::Future => {
                let removed = queue.future.remove(&(entry.waketime, id));
                assert!(removed, "a future task is in its future queue");
                entry.waketime = waketime;
                queue.future.insert((waketime, id));
            }
            // Already due: it runs as soon as a thread is free.
            Place::Ready => {}
            Place::Running => entry.woken_while_running = true,
        }
        queue.notify_sleepers();
    }

    /// Removes a task; a run in progress finishes.
    pub fn cancel(&self, id: TaskId) {
        let mut state = self.state.borrow_mut();
        let State { tasks, queues, .. } = &mut *state;
        let Some(entry) = tasks.get_mut(&id) else {
            return;
        };
        let queue = &mut queues[entry.task_type.index()];
        match entry.place {
            Place::Future => {
                queue.future.remove(&(entry.waketime, id));
                tasks.remove(&id);
            }
            Place::Ready => {
                queue.ready.remove(&(entry.waketime, id));
                tasks.remove(&id);
            }
            Place::Running => entry.cancelled = true,
        }
    }

    /// How many tasks the executor holds.
    pub fn tasks(&self) -> usize {
        self.state.borrow().tasks.len()
    }

    /// One worker thread.
    async fn thread_loop(self, task_type: TaskType, index: usize) {
        let mut thread = ThreadState {
            task_type,
            waketime: FOREVER,
        };
        tracing::debug!(target: "faultline::executor", kind = task_type.name(), thread = index, "thread started");
        loop {
            if let Some(id) = self.fetch(&mut thread) {
                self.run_task(&mut thread, id);
                continue;
            }
            // Nothing ready. The thread lets go of the queue here, and
            // takes it again to sleep: another thread may wake a task in
            // between.
            race_point("executor.before-sleep").await;
            self.sleep(&mut thread).await;
        }
    }

    /// Moves due tasks to the ready queue and takes one.
    fn fetch(&self, thread: &mut ThreadState) -> Option<TaskId> {
        let now = self.now();
        let mut state = self.state.borrow_mut();
        let State { tasks, queues, .. } = &mut *state;
        let queue = &mut queues[thread.task_type.index()];
        while let Some(&(waketime, id)) = queue.future.first() {
            if waketime > now {
                break;
            }
            queue.future.pop_first();
            queue.ready.insert((waketime, id));
            tasks.get_mut(&id).expect("queued tasks exist").place = Place::Ready;
        }
        // Record the earliest wake time still in the future.
        thread.waketime = thread.waketime.min(queue.earliest_waketime());
        let (_, id) = queue.ready.pop_first()?;
        tasks.get_mut(&id).expect("queued tasks exist").place = Place::Running;
        Some(id)
    }

    /// Runs a task, then puts it back at the wake time it asks for.
    fn run_task(&self, thread: &mut ThreadState, id: TaskId) {
        let (task, due) = {
            let state = self.state.borrow();
            let entry = &state.tasks[&id];
            (entry.task.clone(), entry.waketime)
        };
        let started = self.now();
        // How late the task started: the scheduler's wait time.
        let wait = started.saturating_sub(due);
        oracle::record_latency(&format!("scheduler-wait.{}", thread.task_type.name()), wait);
        tracing::trace!(target: "faultline::executor", task = task.name(), wait_us = wait.as_micros() as u64, "run");
        // No borrow is held while the task runs: it may schedule and wake.
        let next = task.run();
        let now = self.now();
        let mut state = self.state.borrow_mut();
        let State { tasks, queues, .. } = &mut *state;
        let entry = tasks.get_mut(&id).expect("a running task stays");
        assert_eq!(entry.place, Place::Running);
        let waketime = match next {
            _ if entry.cancelled => None,
            Next::Done => None,
            _ if entry.woken_while_running => Some(now),
            Next::After(delay) => Some(now.saturating_add(delay)),
            Next::Forever => Some(FOREVER),
        };
        let queue = &mut queues[thread.task_type.index()];
        match waketime {
            None => {
                tasks.remove(&id);
            }
            Some(waketime) => {
                entry.waketime = waketime;
                entry.place = Place::Future;
                entry.woken_while_running = false;
                queue.future.insert((waketime, id));
            }
        }
        // The thread records when its queue next has work.
        thread.waketime = thread.waketime.min(queue.earliest_waketime());
    }

    /// Sleeps until the queue's next wake time (at most the fallback) or a
    /// notification, then forgets the recorded wake time.
    async fn sleep(&self, thread: &mut ThreadState) {
        let now = self.now();
        let (notify, snooze) = {
            let mut state = self.state.borrow_mut();
            let queue = &mut state.queues[thread.task_type.index()];
            let wake_at = if self.bugs.is_buggy(MB_35649) {
                // MB-35649: the old lines trust the wake time the thread
                // recorded before it let go of the queue.
                thread.waketime
            } else {
                // The fix: the queue's own earliest wake time, read while
                // holding the queue.
                queue.earliest_waketime()
            };
            if now >= wake_at {
                (None, Duration::ZERO)
            } else {
                queue.sleepers += 1;
                let snooze = (wake_at - now).min(Duration::from_millis(FALLBACK_SLEEP_MS));
                (Some(queue.sleep.clone()), snooze)
            }
        };
        if let Some(notify) = notify {
            // The notification is registered before the queue is let go,
            // as a condition variable's wait does.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            tokio::select! {
                biased;
                _ = &mut notified => {}
                _ = tokio::time::sleep(snooze) => {}
            }
            let mut state = self.state.borrow_mut();
            let queue = &mut state.queues[thread.task_type.index()];
            assert!(queue.sleepers > 0, "a sleeper counted itself");
            queue.sleepers -= 1;
        }
        thread.waketime = FOREVER;
    }
}

//! Background tasks, scheduled like the engine's executor pool.
//!
//! A node runs its background work (preparing outgoing replication
//! messages, expiry, durability timeouts) as [`Task`]s. Each task has a
//! type ([`TaskType`]); each type has a queue and its own worker threads.
//! Here a worker "thread" is a local task of the node's host, not an OS
//! thread, so a simulation stays deterministic. The threads synchronize as
//! the engine's do (kv_engine's `ExecutorPool`, `TaskQueue` and
//! `ExecutorThread`), with the harness's primitives, so every lock, atomic
//! counter, wait and notification is a place where the seed may switch
//! threads:
//!
//! * `executor.tasks` (the pool's `tMutex`): which queue holds a task;
//! * `executor.<type>.queue` (a queue's mutex and condition variable): its
//!   future queue (by wake time), ready queue and sleeping threads;
//! * `executor.<type>.ready_tasks` and `executor.sleepers` (the pool's
//!   `numReadyTasks` and `numSleepers` atomics);
//! * `executor.thread.state` (a thread's running/sleeping state).
//!
//! A worker loops (`ExecutorThread::run` and `ExecutorPool::_nextTask`):
//!
//! 1. **fetch** (`_fetchNextTask`, under the queue's lock): move the tasks
//!    whose wake time has come to the ready queue, record the future
//!    queue's earliest wake time as the thread's own, and take a ready task;
//! 2. **run** it (no lock held), then **reschedule** it (under the lock) at
//!    the wake time it asks for and lower the thread's recorded wake time
//!    to the queue's earliest;
//! 3. when (1) found nothing: **sleep, then fetch** (`_sleepThenFetchNextTask`,
//!    taking the lock again): sleep until the next wake time, at most the
//!    fallback sleep, or until a notification (`_doWake`), then fetch.
//!
//! Between (1) and (3) the thread holds no lock: another thread may wake a
//! task right there. MB-35649: the old `_doSleep` used the thread's
//! recorded wake time, stale when that happens: the notification found no
//! sleeper, and the thread slept the 2 s fallback with a task due now. The
//! fix (kv_engine commit 32c0ae9f1) computes the wake time from the future
//! queue itself, under the queue's lock, right before sleeping. Without
//! the fallback (`fallback_sleep_ms = None`) the same lost wake-up is a
//! thread that never wakes.
//!
//! Every run records how late the task started (its scheduler wait time)
//! in the `scheduler-wait.<type>` latency metric, for the latency oracle.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use faultline_harness::oracle;
use faultline_harness::sync::{Atomic, Condvar, Mutex, MutexGuard};

use crate::bugs::{Bugs, MB_35649};

/// The engine's `MIN_SLEEP_TIME`: the longest a worker sleeps without
/// looking at its queue again, in ms, unless configured otherwise. A lost
/// wake-up costs at most this.
pub const DEFAULT_FALLBACK_SLEEP_MS: u64 = 2000;

/// The longest fallback sleep a configuration may set, in ms.
pub const MAX_FALLBACK_SLEEP_MS: u64 = 600_000;

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

    /// The name of its queue's lock and condition variable.
    fn queue_name(self) -> &'static str {
        match self {
            TaskType::Reader => "executor.reader.queue",
            TaskType::Writer => "executor.writer.queue",
            TaskType::AuxIo => "executor.auxio.queue",
            TaskType::NonIo => "executor.nonio.queue",
        }
    }

    /// The name of the pool's count of its ready tasks.
    fn ready_tasks_name(self) -> &'static str {
        match self {
            TaskType::Reader => "executor.reader.ready_tasks",
            TaskType::Writer => "executor.writer.ready_tasks",
            TaskType::AuxIo => "executor.auxio.ready_tasks",
            TaskType::NonIo => "executor.nonio.ready_tasks",
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

/// One round of a task's work, as a future (it may take locks).
pub type TaskFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Next> + 'a>>;

/// Background work. `run` does one round of work and returns; it must not
/// wait for I/O (a worker thread runs it to completion).
pub trait Task {
    fn name(&self) -> &str;
    fn run(&self) -> TaskFuture<'_>;
}

/// A scheduled task's handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TaskId(u64);

/// Worker threads per task type, and the fallback sleep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecutorConfig {
    pub reader_threads: usize,
    pub writer_threads: usize,
    pub auxio_threads: usize,
    pub nonio_threads: usize,
    /// The longest a sleeping worker waits before it looks at its queue
    /// again, in ms; `None`: until woken or its next task is due.
    pub fallback_sleep_ms: Option<u64>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            reader_threads: 1,
            writer_threads: 1,
            auxio_threads: 1,
            nonio_threads: 1,
            fallback_sleep_ms: Some(DEFAULT_FALLBACK_SLEEP_MS),
        }
    }
}

impl ExecutorConfig {
    pub fn threads(&self, task_type: TaskType) -> usize {
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
        if let Some(ms) = self.fallback_sleep_ms {
            if ms == 0 || ms > MAX_FALLBACK_SLEEP_MS {
                return Err(format!(
                    "the fallback sleep must be within 1..={MAX_FALLBACK_SLEEP_MS} ms, not {ms}"
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
    waketime: WakeTime,
    place: Place,
    /// Woken while running: reschedule it now whatever it asked for.
    woken_while_running: bool,
    cancelled: bool,
}

/// What a queue's lock guards.
#[derive(Default)]
struct Queues {
    entries: BTreeMap<TaskId, Entry>,
    /// Waiting tasks by (wake time, id): the earliest first.
    future: BTreeSet<(WakeTime, TaskId)>,
    /// Due tasks, in the order they became due.
    ready: BTreeSet<(WakeTime, TaskId)>,
    /// Threads waiting on the condition variable now.
    sleepers: usize,
}

impl Queues {
    /// The earliest wake time of the future queue (`FOREVER` when empty).
    fn earliest_waketime(&self) -> WakeTime {
        self.future
            .first()
            .map(|(waketime, _)| *waketime)
            .unwrap_or(FOREVER)
    }
}

/// One task type's queue: its lock and condition variable (the engine's
/// `SyncObject`).
struct TaskQueue {
    task_type: TaskType,
    mutex: Mutex<Queues>,
    cond: Condvar,
}

/// A task a thread took from its queue.
struct Fetched {
    id: TaskId,
    task: Rc<dyn Task>,
    /// When it was due.
    due: WakeTime,
}

/// A thread's state as the engine's `ExecutorThread::state`.
const THREAD_RUNNING: u8 = 0;
const THREAD_SLEEPING: u8 = 1;

/// A worker thread's own state.
struct ThreadState {
    task_type: TaskType,
    /// When the thread believes its queue next has work (the engine's
    /// `ExecutorThread::waketime`).
    waketime: WakeTime,
    state: Atomic<u8>,
}

struct Shared {
    config: ExecutorConfig,
    bugs: Bugs,
    /// The executor's clock: simulated time inside a simulation.
    started: tokio::time::Instant,
    /// Which queue each task is in (the pool's `taskLocator`).
    tasks: Mutex<BTreeMap<TaskId, TaskType>>,
    queues: Vec<TaskQueue>,
    /// Per task type: tasks moved to a ready queue and not taken yet.
    ready_tasks: Vec<Atomic<usize>>,
    /// Threads asleep, of every type.
    sleepers: Atomic<usize>,
    next_id: Cell<u64>,
}

/// A node's executor pool. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    shared: Rc<Shared>,
}

impl Executor {
    /// Starts the worker threads (local tasks of the current host).
    pub fn start(config: ExecutorConfig, bugs: Bugs) -> Executor {
        config.validate().expect("a valid executor configuration");
        let executor = Executor {
            shared: Rc::new(Shared {
                config,
                bugs,
                started: tokio::time::Instant::now(),
                tasks: Mutex::new("executor.tasks", BTreeMap::new()),
                queues: TaskType::ALL
                    .iter()
                    .map(|&task_type| TaskQueue {
                        task_type,
                        mutex: Mutex::new(task_type.queue_name(), Queues::default()),
                        cond: Condvar::new(task_type.queue_name()),
                    })
                    .collect(),
                ready_tasks: TaskType::ALL
                    .iter()
                    .map(|t| Atomic::new(t.ready_tasks_name(), 0))
                    .collect(),
                sleepers: Atomic::new("executor.sleepers", 0),
                next_id: Cell::new(1),
            }),
        };
        for task_type in TaskType::ALL {
            for thread in 0..config.threads(task_type) {
                let worker = executor.clone();
                faultline_harness::spawn(
                    async move { worker.thread_loop(task_type, thread).await },
                );
            }
        }
        executor
    }

    pub fn config(&self) -> &ExecutorConfig {
        &self.shared.config
    }

    fn now(&self) -> WakeTime {
        self.shared.started.elapsed()
    }

    fn queue(&self, task_type: TaskType) -> &TaskQueue {
        &self.shared.queues[task_type.index()]
    }

    /// Schedules a task to run as soon as a thread of its type is free.
    pub async fn schedule(&self, task: Rc<dyn Task>, task_type: TaskType) -> TaskId {
        let mut tasks = self.shared.tasks.lock().await;
        assert!(tasks.len() < MAX_TASKS, "at most {MAX_TASKS} tasks");
        let id = TaskId(self.shared.next_id.get());
        self.shared.next_id.set(id.0 + 1);
        tasks.insert(id, task_type);
        tracing::debug!(target: "faultline::executor", task = task.name(), id = id.0, "schedule");
        // TaskQueue::_schedule, under the pool's lock as the engine does.
        let queue = self.queue(task_type);
        let mut q = queue.mutex.lock().await;
        let now = self.now();
        q.entries.insert(
            id,
            Entry {
                task,
                waketime: now,
                place: Place::Future,
                woken_while_running: false,
                cancelled: false,
            },
        );
        q.future.insert((now, id));
        self.do_wake(queue, &q, 1).await;
        drop(q);
        drop(tasks);
        id
    }

    /// Makes a task due now and wakes the sleeping threads of its type
    /// (`ExecutorPool::_wake`, then `TaskQueue::_wake` under both locks).
    pub async fn wake(&self, id: TaskId) {
        let tasks = self.shared.tasks.lock().await;
        let Some(&task_type) = tasks.get(&id) else {
            return; // Done or cancelled: nothing to wake.
        };
        let queue = self.queue(task_type);
        let mut q = queue.mutex.lock().await;
        let now = self.now();
        let Queues {
            entries, future, ..
        } = &mut *q;
        let Some(entry) = entries.get_mut(&id) else {
            return; // It ran its last round just now.
        };
        match entry.place {
            Place::Future => {
                let removed = future.remove(&(entry.waketime, id));
                assert!(removed, "a future task is in its future queue");
                entry.waketime = now;
                future.insert((now, id));
            }
            // Already due: it runs as soon as a thread is free.
            Place::Ready => {}
            Place::Running => entry.woken_while_running = true,
        }
        self.do_wake(queue, &q, 1).await;
        drop(q);
        drop(tasks);
    }

    /// Removes a task; a run in progress finishes.
    pub async fn cancel(&self, id: TaskId) {
        let mut tasks = self.shared.tasks.lock().await;
        let Some(task_type) = tasks.remove(&id) else {
            return;
        };
        let queue = self.queue(task_type);
        let mut q = queue.mutex.lock().await;
        let Queues {
            entries,
            future,
            ready,
            ..
        } = &mut *q;
        let Some(entry) = entries.get_mut(&id) else {
            return; // It ran its last round just now.
        };
        let removed = match entry.place {
            Place::Future => future.remove(&(entry.waketime, id)),
            Place::Ready => ready.remove(&(entry.waketime, id)),
            Place::Running => {
                entry.cancelled = true;
                false
            }
        };
        if removed {
            if entry.place == Place::Ready {
                // It will not be taken: the pool's count of ready tasks.
                self.shared.ready_tasks[task_type.index()]
                    .fetch_sub(1)
                    .await;
            }
            entries.remove(&id);
        }
        drop(q);
        drop(tasks);
    }

    /// How many tasks the executor holds.
    pub async fn tasks(&self) -> usize {
        self.shared.tasks.lock().await.len()
    }

    /// `TaskQueue::_doWake_UNLOCKED`: wakes `to_wake` sleeping threads of
    /// the queue (all of them when there are not more sleepers than that).
    /// A notification reaches only threads already asleep.
    async fn do_wake(&self, queue: &TaskQueue, q: &MutexGuard<'_, Queues>, to_wake: usize) {
        if q.sleepers == 0 || to_wake == 0 {
            return;
        }
        if to_wake < q.sleepers {
            for _ in 0..to_wake {
                queue.cond.notify_one().await;
            }
        } else {
            queue.cond.notify_all().await;
        }
    }

    /// One worker thread.
    async fn thread_loop(self, task_type: TaskType, index: usize) {
        let mut thread = ThreadState {
            task_type,
            waketime: FOREVER,
            state: Atomic::new("executor.thread.state", THREAD_RUNNING),
        };
        tracing::debug!(target: "faultline::executor", kind = task_type.name(), thread = index, "thread started");
        loop {
            // ExecutorPool::_nextTask: the queue, else sleep on it and look
            // again. The lock is let go in between.
            let id = match self.fetch_next_task(&mut thread).await {
                Some(id) => Some(id),
                None => self.sleep_then_fetch_next_task(&mut thread).await,
            };
            if let Some(fetched) = id {
                self.run_task(&mut thread, fetched).await;
            }
        }
    }

    /// `TaskQueue::_fetchNextTask`.
    async fn fetch_next_task(&self, thread: &mut ThreadState) -> Option<Fetched> {
        let queue = self.queue(thread.task_type);
        let q = queue.mutex.lock().await;
        self.fetch_inner(queue, q, thread).await
    }

    /// `TaskQueue::_sleepThenFetchNextTask`.
    async fn sleep_then_fetch_next_task(&self, thread: &mut ThreadState) -> Option<Fetched> {
        let queue = self.queue(thread.task_type);
        let q = queue.mutex.lock().await;
        let q = self.do_sleep(queue, q, thread).await;
        self.fetch_inner(queue, q, thread).await
    }

    /// `TaskQueue::_fetchNextTaskInner`, under the queue's lock: moves due
    /// tasks to the ready queue, records the earliest wake time still in
    /// the future as the thread's, takes a ready task.
    async fn fetch_inner(
        &self,
        queue: &TaskQueue,
        mut q: MutexGuard<'_, Queues>,
        thread: &mut ThreadState,
    ) -> Option<Fetched> {
        let ready_tasks = &self.shared.ready_tasks[queue.task_type.index()];
        // _moveReadyTasks (only when the ready queue is empty).
        let mut moved = 0;
        if q.ready.is_empty() {
            let now = self.now();
            let Queues {
                entries,
                future,
                ready,
                ..
            } = &mut *q;
            while let Some(&(waketime, id)) = future.first() {
                if waketime > now {
                    break;
                }
                future.pop_first();
                ready.insert((waketime, id));
                entries.get_mut(&id).expect("queued tasks exist").place = Place::Ready;
                moved += 1;
            }
            if moved > 0 {
                ready_tasks.fetch_add(moved).await;
            }
        }
        // This thread takes one: wake one fewer.
        let mut to_wake = moved.saturating_sub(1);
        // Record the earliest wake time.
        thread.waketime = thread.waketime.min(q.earliest_waketime());
        let taken = match q.ready.pop_first() {
            Some((due, id)) => {
                ready_tasks.fetch_sub(1).await;
                let entry = q.entries.get_mut(&id).expect("queued tasks exist");
                entry.place = Place::Running;
                Some(Fetched {
                    id,
                    task: entry.task.clone(),
                    due,
                })
            }
            None => {
                to_wake = to_wake.saturating_sub(1);
                None
            }
        };
        self.do_wake(queue, &q, to_wake).await;
        taken
    }

    /// `TaskQueue::_doSleep`, under the queue's lock: sleeps until the
    /// next wake time (at most the fallback sleep) or a notification, then
    /// forgets the recorded wake time.
    async fn do_sleep<'q>(
        &self,
        queue: &'q TaskQueue,
        mut q: MutexGuard<'q, Queues>,
        thread: &mut ThreadState,
    ) -> MutexGuard<'q, Queues> {
        let now = self.now();
        let wake_at = if self.shared.bugs.is_buggy(MB_35649) {
            // MB-35649: the old lines trust the wake time the thread
            // recorded before it let go of the queue.
            thread.waketime
        } else {
            // The fix: the future queue's own earliest wake time, read
            // while holding the queue's lock.
            q.earliest_waketime()
        };
        if now < wake_at && self.try_sleep(queue.task_type).await {
            // Running -> sleeping, if the thread was running.
            if thread
                .state
                .compare_exchange(THREAD_RUNNING, THREAD_SLEEPING)
                .await
                .is_err()
            {
                return q;
            }
            q.sleepers += 1;
            let snooze = wake_at - now;
            let limit = self
                .shared
                .config
                .fallback_sleep_ms
                .map(Duration::from_millis);
            q = match limit {
                Some(limit) if snooze > limit => queue.cond.wait_timeout(q, limit).await.0,
                // No fallback and nothing due: only a notification wakes it.
                None if wake_at == FOREVER => queue.cond.wait(q).await,
                _ => queue.cond.wait_timeout(q, snooze).await.0,
            };
            assert!(q.sleepers > 0, "a sleeper counted itself");
            q.sleepers -= 1;
            self.shared.sleepers.fetch_sub(1).await;
            // Sleeping -> running, if the thread was sleeping.
            if thread
                .state
                .compare_exchange(THREAD_SLEEPING, THREAD_RUNNING)
                .await
                .is_err()
            {
                return q;
            }
        }
        thread.waketime = FOREVER;
        q
    }

    /// `ExecutorPool::trySleep`: a thread may sleep when no task of its type
    /// is ready; it then counts as a sleeper.
    async fn try_sleep(&self, task_type: TaskType) -> bool {
        if self.shared.ready_tasks[task_type.index()].load().await != 0 {
            return false;
        }
        self.shared.sleepers.fetch_add(1).await;
        true
    }

    /// Runs a task (no lock held), then puts it back at the wake time it
    /// asks for.
    async fn run_task(&self, thread: &mut ThreadState, fetched: Fetched) {
        let Fetched { id, task, due } = fetched;
        let queue = self.queue(thread.task_type);
        let started = self.now();
        // How late the task started: the scheduler's wait time.
        let wait = started.saturating_sub(due);
        oracle::record_latency(&format!("scheduler-wait.{}", thread.task_type.name()), wait);
        tracing::trace!(target: "faultline::executor", task = task.name(), wait_us = wait.as_micros() as u64, "run");
        let next = task.run().await;
        // TaskQueue::reschedule, under the queue's lock.
        let mut q = queue.mutex.lock().await;
        let now = self.now();
        let entry = q.entries.get_mut(&id).expect("a running task stays");
        assert_eq!(entry.place, Place::Running);
        let waketime = match next {
            _ if entry.cancelled => None,
            Next::Done => None,
            _ if entry.woken_while_running => Some(now),
            Next::After(delay) => Some(now.saturating_add(delay)),
            Next::Forever => Some(FOREVER),
        };
        let done = match waketime {
            None => {
                q.entries.remove(&id);
                true
            }
            Some(waketime) => {
                entry.waketime = waketime;
                entry.place = Place::Future;
                entry.woken_while_running = false;
                q.future.insert((waketime, id));
                false
            }
        };
        // Record the queue's earliest wake time as the thread's.
        thread.waketime = thread.waketime.min(q.earliest_waketime());
        drop(q);
        if done {
            // ExecutorPool::cancel: the pool forgets it.
            self.shared.tasks.lock().await.remove(&id);
        }
    }
}

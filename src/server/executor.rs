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
//! * `executor.thread.state` and `executor.thread.waketime` (a thread's
//!   running/sleeping state and the wake time it recorded: atomics, as
//!   the engine's `ExecutorThread`, read and written by the thread);
//! * `executor.task.waketime` and `executor.task.state` (the engine's
//!   `GlobalTask::waketime` and `state`: atomics, with no lock of their
//!   own). The task writes them itself inside `run` ([`GlobalTask::snooze`],
//!   [`GlobalTask::wake_up`]) with no executor lock held; a waker
//!   ([`Executor::wake`], [`Executor::cancel`]) writes them under the
//!   task's queue lock, re-sorting the future queue when the task is
//!   there; the thread that ran the task raises the wake time to now
//!   (`updateWaketimeIfLessThan`) and reads it, under the queue lock, to
//!   put the task back. A wake-up while the task runs is therefore kept
//!   when it comes after the task's own snooze and overwritten when it
//!   comes before it, as in the engine (whose tasks snooze first);
//!   `executor.task_id_counter` numbers the tasks.
//!
//! A worker loops (`ExecutorThread::run` and `ExecutorPool::_nextTask`):
//!
//! 1. **fetch** (`_fetchNextTask`, under the queue's lock): move the tasks
//!    whose wake time has come to the ready queue, record the future
//!    queue's earliest wake time as the thread's own, and take a ready task;
//! 2. **run** it (no lock held; the task snoozes itself), then
//!    **reschedule** it (under the lock) at the wake time it has then and
//!    lower the thread's recorded wake time to the queue's earliest; a
//!    cancelled (dead) task is not run but erased by the thread that
//!    takes it;
//! 3. when (1) found nothing: **sleep, then fetch** (`_sleepThenFetchNextTask`,
//!    taking the lock again): sleep until the next wake time, at most the
//!    fallback sleep, or until a notification (`_doWake`), then fetch.
//!
//! Between (1) and (3) the thread holds no lock: another thread may wake a
//! task right there. MB-35649: the old `_doSleep` used the thread's
//! recorded wake time, stale when that happens: the notification found no
//! sleeper, and the thread slept the 2 s fallback with a task due now. The
//! fix (kv_engine commit 32c0ae9f1) computes the wake time from the future
//! queue itself, under the queue's lock, right before sleeping. The probe
//! `executor:sleep-past-due-task` counts a thread going to sleep with a
//! task of its queue already due (only the old lines do). Without
//! the fallback (`fallback_sleep_ms = None`) the same lost wake-up is a
//! thread that never wakes.
//!
//! Every run records how late the task started (its scheduler wait time)
//! in the `scheduler-wait.<type>` latency metric, for the latency oracle.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use faultline_harness::oracle;
use faultline_harness::sync::{Atomic, Condvar, Mutex, MutexGuard};

use crate::bugs::{Bugs, MB_35649};

/// The engine's `MIN_SLEEP_TIME` (2.0 s, `engines/ep/src/executorthread.h`
/// at kv_engine commit 32c0ae9f1): the longest a worker sleeps without
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

/// The engine's `task_state_t`: a task's `state` (`engines/ep/src/globaltask.h`
/// at kv_engine commit 32c0ae9f1).
const TASK_RUNNING: u8 = 0;
const TASK_SNOOZED: u8 = 1;
const TASK_DEAD: u8 = 2;

/// One round of a task's work, as a future (it may take locks). It answers
/// whether the task runs again (the engine's `GlobalTask::run`): when, it
/// said itself with [`GlobalTask::snooze`] during the round; a task that
/// did not snooze runs again as soon as a thread is free.
pub type TaskFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + 'a>>;

/// Background work. `run` does one round of work and returns; it must not
/// wait for I/O (a worker thread runs it to completion).
pub trait Task {
    fn name(&self) -> &str;
    /// One round; `me` is the task's scheduling record, for its `snooze`.
    fn run<'a>(&'a self, me: &'a GlobalTask) -> TaskFuture<'a>;
}

/// A scheduled task's handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TaskId(u64);

/// A scheduled task: its work and what the engine's `GlobalTask` shares
/// between threads without a lock of its own, its wake time and state
/// (atomics). The task writes them from its own `run` (`snooze`,
/// `wake_up`, with no executor lock held); a waker writes them under the
/// task's queue lock (`TaskQueue::_wake`); the running thread reads the
/// wake time when it puts the task back.
pub struct GlobalTask {
    id: TaskId,
    work: Rc<dyn Task>,
    /// The executor's clock.
    started: tokio::time::Instant,
    /// When it wants to run (`GlobalTask::waketime`).
    waketime: Atomic<WakeTime>,
    /// `TASK_RUNNING`, `TASK_SNOOZED` or `TASK_DEAD` (`GlobalTask::state`).
    state: Atomic<u8>,
}

impl GlobalTask {
    pub fn id(&self) -> TaskId {
        self.id
    }

    fn now(&self) -> WakeTime {
        self.started.elapsed()
    }

    /// `GlobalTask::snooze`: run again after `delay` (zero: as soon as a
    /// thread is free); `FOREVER`: only when woken. Writes the wake time
    /// with no lock held, as the engine does from inside `run`.
    pub async fn snooze(&self, delay: Duration) {
        if delay == FOREVER {
            self.state
                .compare_exchange(TASK_RUNNING, TASK_SNOOZED)
                .await
                .ok();
            self.waketime.store(FOREVER).await;
            return;
        }
        let now = self.now();
        if delay.is_zero() {
            self.waketime.store(now).await;
        } else {
            self.state
                .compare_exchange(TASK_RUNNING, TASK_SNOOZED)
                .await
                .ok();
            self.waketime.store(now.saturating_add(delay)).await;
        }
    }

    /// `GlobalTask::wakeUp`: due now, written by the task itself (no lock,
    /// no notification: it is running, its thread will put it back).
    pub async fn wake_up(&self) {
        self.waketime.store(self.now()).await;
    }

    /// `GlobalTask::isdead`.
    pub async fn is_dead(&self) -> bool {
        self.state.load().await == TASK_DEAD
    }
}

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

/// Where a queued task is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// In its queue's future queue, sorted by the wake time it had when
    /// it was put there (`key`).
    Future,
    /// In its queue's ready queue.
    Ready,
}

/// A task in one of its queue's queues. A running task is in none: its
/// thread holds it.
struct Queued {
    task: Rc<GlobalTask>,
    place: Place,
    /// Its position: the wake time it was sorted by (the engine's heap
    /// orders by the task's wake time, changed under the queue lock only
    /// while the task is in the heap).
    key: WakeTime,
}

/// What a queue's lock guards.
#[derive(Default)]
struct Queues {
    entries: BTreeMap<TaskId, Queued>,
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

    /// Puts `task` in the future queue at wake time `key` (the engine's
    /// `futureQueue.push`).
    fn push_future(&mut self, task: Rc<GlobalTask>, key: WakeTime) {
        let id = task.id;
        self.entries.insert(
            id,
            Queued {
                task,
                place: Place::Future,
                key,
            },
        );
        self.future.insert((key, id));
    }
}

/// One task type's queue: its lock and condition variable (the engine's
/// `SyncObject`).
struct TaskQueue {
    task_type: TaskType,
    mutex: Mutex<Queues>,
    cond: Condvar,
}

/// A thread's state as the engine's `ExecutorThread::state`
/// (`executor_state_t`, `engines/ep/src/executorthread.h` at kv_engine
/// commit 32c0ae9f1: RUNNING 0, WAITING 1, SLEEPING 2; WAITING is not
/// modelled).
const THREAD_RUNNING: u8 = 0;
const THREAD_SLEEPING: u8 = 2;

/// A worker thread's own state (atomics, as the engine's).
struct ThreadState {
    task_type: TaskType,
    /// When the thread believes its queue next has work (the engine's
    /// `ExecutorThread::waketime`).
    waketime: Atomic<WakeTime>,
    state: Atomic<u8>,
}

impl ThreadState {
    /// Lowers the recorded wake time to `waketime` (`setWaketime` after a
    /// comparison, as the engine's callers do).
    async fn record_waketime(&self, waketime: WakeTime) {
        if waketime < self.waketime.load().await {
            self.waketime.store(waketime).await;
        }
    }
}

struct Shared {
    config: ExecutorConfig,
    bugs: Bugs,
    /// The executor's clock: simulated time inside a simulation.
    started: tokio::time::Instant,
    /// Each task and the queue it is in (the pool's `taskLocator`).
    tasks: Mutex<BTreeMap<TaskId, (Rc<GlobalTask>, TaskType)>>,
    queues: Vec<TaskQueue>,
    /// Per task type: tasks moved to a ready queue and not taken yet.
    ready_tasks: Vec<Atomic<usize>>,
    /// Threads asleep, of every type.
    sleepers: Atomic<usize>,
    /// The next task id (`GlobalTask::task_id_counter`).
    next_id: Atomic<u64>,
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
                next_id: Atomic::new("executor.task_id_counter", 1),
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
    pub async fn schedule(&self, work: Rc<dyn Task>, task_type: TaskType) -> TaskId {
        // The engine's GlobalTask constructor: a new id, due now.
        let id = TaskId(self.shared.next_id.fetch_add(1).await);
        let task = Rc::new(GlobalTask {
            id,
            work,
            started: self.shared.started,
            waketime: Atomic::new("executor.task.waketime", self.now()),
            state: Atomic::new("executor.task.state", TASK_RUNNING),
        });
        let mut tasks = self.shared.tasks.lock().await;
        assert!(tasks.len() < MAX_TASKS, "at most {MAX_TASKS} tasks");
        tasks.insert(id, (task.clone(), task_type));
        tracing::debug!(target: "faultline::executor", task = task.work.name(), id = id.0, "schedule");
        // TaskQueue::_schedule, under the pool's lock as the engine does.
        let queue = self.queue(task_type);
        let mut q = queue.mutex.lock().await;
        // A task scheduled again after a cancel runs again.
        task.state
            .compare_exchange(TASK_DEAD, TASK_RUNNING)
            .await
            .ok();
        let key = task.waketime.load().await;
        q.push_future(task, key);
        self.do_wake(queue, &q, 1).await;
        drop(q);
        drop(tasks);
        id
    }

    /// Makes a task due now and wakes the sleeping threads of its type
    /// (`ExecutorPool::_wake`, then `TaskQueue::_wake` under both locks).
    pub async fn wake(&self, id: TaskId) {
        let tasks = self.shared.tasks.lock().await;
        let Some((task, task_type)) = tasks.get(&id) else {
            return; // Done or cancelled: nothing to wake.
        };
        self.queue_wake(*task_type, task).await;
        drop(tasks);
    }

    /// `TaskQueue::_wake`, under the queue's lock: the task's wake time
    /// becomes now (re-sorting the future queue when it is there; a
    /// running task keeps it for its thread to read when it puts the task
    /// back), a snoozed task counts as running, and a sleeping thread is
    /// notified.
    async fn queue_wake(&self, task_type: TaskType, task: &Rc<GlobalTask>) {
        let queue = self.queue(task_type);
        let mut q = queue.mutex.lock().await;
        let now = self.now();
        let id = task.id;
        // futureQueue.updateWaketime(task, now).
        let in_future = q.entries.get(&id).is_some_and(|e| e.place == Place::Future);
        if in_future {
            let Queues {
                entries, future, ..
            } = &mut *q;
            let entry = entries.get_mut(&id).expect("found above");
            let removed = future.remove(&(entry.key, id));
            assert!(removed, "a future task is in its future queue");
            task.waketime.store(now).await;
            entry.key = now;
            future.insert((now, id));
        } else {
            task.waketime.store(now).await;
        }
        task.state
            .compare_exchange(TASK_SNOOZED, TASK_RUNNING)
            .await
            .ok();
        self.do_wake(queue, &q, 1).await;
        drop(q);
    }

    /// Cancels a task (`ExecutorPool::_cancel` without erasing): it is
    /// marked dead and woken, so that a thread of its type takes it and
    /// erases it; a run in progress finishes.
    pub async fn cancel(&self, id: TaskId) {
        let tasks = self.shared.tasks.lock().await;
        let Some((task, task_type)) = tasks.get(&id) else {
            return;
        };
        task.state.store(TASK_DEAD).await;
        self.queue_wake(*task_type, task).await;
        drop(tasks);
    }

    /// `ExecutorPool::_cancel(id, eraseTask = true)`: a thread forgets a
    /// task that is done or dead.
    async fn erase(&self, task: &GlobalTask) {
        let mut tasks = self.shared.tasks.lock().await;
        task.state.store(TASK_DEAD).await;
        tasks.remove(&task.id);
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

    /// One worker thread (`ExecutorThread::run`).
    async fn thread_loop(self, task_type: TaskType, index: usize) {
        let thread = ThreadState {
            task_type,
            waketime: Atomic::new("executor.thread.waketime", FOREVER),
            state: Atomic::new("executor.thread.state", THREAD_RUNNING),
        };
        tracing::debug!(target: "faultline::executor", kind = task_type.name(), thread = index, "thread started");
        loop {
            if thread.state.load().await != THREAD_RUNNING {
                break;
            }
            // ExecutorPool::_nextTask: the queue, else sleep on it and look
            // again. The lock is let go in between.
            let task = match self.fetch_next_task(&thread).await {
                Some(task) => Some(task),
                None => self.sleep_then_fetch_next_task(&thread).await,
            };
            if let Some(task) = task {
                self.run_task(&thread, task).await;
            }
        }
    }

    /// `TaskQueue::_fetchNextTask`.
    async fn fetch_next_task(&self, thread: &ThreadState) -> Option<Rc<GlobalTask>> {
        let queue = self.queue(thread.task_type);
        let q = queue.mutex.lock().await;
        self.fetch_inner(queue, q, thread).await
    }

    /// `TaskQueue::_sleepThenFetchNextTask`.
    async fn sleep_then_fetch_next_task(&self, thread: &ThreadState) -> Option<Rc<GlobalTask>> {
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
        thread: &ThreadState,
    ) -> Option<Rc<GlobalTask>> {
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
        if !q.future.is_empty() {
            thread.record_waketime(q.earliest_waketime()).await;
        }
        let taken = match q.ready.pop_first() {
            Some((_, id)) => {
                ready_tasks.fetch_sub(1).await;
                let entry = q.entries.remove(&id).expect("queued tasks exist");
                Some(entry.task)
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
        thread: &ThreadState,
    ) -> MutexGuard<'q, Queues> {
        let now = self.now();
        // MB-35649 (kv_engine 32c0ae9f1 changed exactly these lines): the
        // old `_doSleep` trusts the wake time the thread recorded before it
        // let go of the queue, stale when a task was woken in between; the
        // fix reads the future queue's earliest wake time, under the lock.
        let buggy = self.shared.bugs.is_buggy(MB_35649);
        let wake_at = if buggy {
            thread.waketime.load().await
        } else {
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
            let wake_at = if buggy {
                // The old lines read the recorded wake time again here.
                thread.waketime.load().await
            } else {
                wake_at
            };
            if q.earliest_waketime() <= now && wake_at > now {
                // The lost wake-up itself: a task in this queue is due,
                // and the thread goes to sleep past it.
                faultline_harness::probe("executor:sleep-past-due-task");
            }
            let snooze = wake_at.saturating_sub(now);
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
            // ExecutorPool::woke.
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
        thread.waketime.store(FOREVER).await;
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
    /// has then (`ExecutorThread::run`).
    async fn run_task(&self, thread: &ThreadState, task: Rc<GlobalTask>) {
        let queue = self.queue(thread.task_type);
        if task.is_dead().await {
            // Cancelled: this thread erases it.
            self.erase(&task).await;
            return;
        }
        let started = self.now();
        // How late the task started: the scheduler's wait time, from the
        // wake time it has now.
        let wait = started.saturating_sub(task.waketime.load().await);
        oracle::record_latency(&format!("scheduler-wait.{}", thread.task_type.name()), wait);
        tracing::trace!(target: "faultline::executor", task = task.work.name(), wait_us = wait.as_micros() as u64, "run");
        task.state
            .compare_exchange(TASK_SNOOZED, TASK_RUNNING)
            .await
            .ok();
        let again = task.work.run(&task).await;
        if !again || task.is_dead().await {
            self.erase(&task).await;
            return;
        }
        // A task that did not snooze runs again now; a wake-up that came
        // during the run left its wake time at that moment, unless the
        // task's own snooze came after it.
        let now = self.now();
        task.waketime.update(|waketime| waketime.max(now)).await;
        // TaskQueue::reschedule, under the queue's lock.
        let mut q = queue.mutex.lock().await;
        let key = task.waketime.load().await;
        q.push_future(task, key);
        let earliest = q.earliest_waketime();
        drop(q);
        // Record the queue's earliest wake time as the thread's.
        thread.record_waketime(earliest).await;
    }
}

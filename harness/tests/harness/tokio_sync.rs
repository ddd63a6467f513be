//! The tokio-compatible primitives (`faultline_harness::sync::tokio`):
//! `Send + Sync` like tokio's and behaving as tokio's on a multi-thread
//! runtime; inside a simulation, a lost wake-up written with `Notify` and a
//! check-then-act written with `RwLock`, as a tokio user writes them, are
//! found by `random` and by `pct`, and their fixes pass 500 seeds of each.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use faultline_harness::Faults;
use faultline_harness::explore::{self, Explored};
use faultline_harness::sync::tokio::{
    Mutex, Notify, RwLock, Semaphore, mpsc, oneshot, spawn, watch,
};
use faultline_harness::{RunOptions, Scenario, Variant, oracle, scenario_from_fn};

use crate::common::{PCT, RANDOM, failing, plan};

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>(_: &T) {}

#[test]
fn the_primitives_and_their_futures_are_send_and_sync_like_tokios() {
    send_sync::<Mutex<Vec<u8>>>();
    send_sync::<RwLock<Vec<u8>>>();
    send_sync::<Notify>();
    send_sync::<Semaphore>();
    send_sync::<mpsc::Sender<u8>>();
    send_sync::<mpsc::Receiver<u8>>();
    send_sync::<mpsc::UnboundedSender<u8>>();
    send_sync::<mpsc::UnboundedReceiver<u8>>();
    send_sync::<oneshot::Sender<u8>>();
    send_sync::<oneshot::Receiver<u8>>();
    send_sync::<watch::Sender<u8>>();
    send_sync::<watch::Receiver<u8>>();
    let (lock, rw, notify) = (Mutex::new(1), RwLock::new(1), Notify::new());
    send(&lock.lock());
    send(&rw.read());
    send(&rw.write());
    send(&notify.notified());
    let (tx, mut rx) = mpsc::channel::<u8>(1);
    send(&tx.send(1));
    send(&rx.recv());
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .expect("a runtime")
}

#[test]
fn outside_a_simulation_they_behave_as_tokios_on_a_multi_thread_runtime() {
    multi_thread().block_on(async {
        // Mutex: increments from many threads are never lost.
        let counter = Arc::new(Mutex::new(0u64));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let counter = counter.clone();
                tokio::spawn(async move {
                    for _ in 0..500 {
                        *counter.lock().await += 1;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*counter.lock().await, 4000);
        assert!(counter.try_lock().is_ok());

        // RwLock: readers share, a writer excludes.
        let table = RwLock::new(vec![1, 2, 3]);
        let (a, b) = (table.read().await, table.try_read().expect("readers share"));
        assert_eq!(a.len() + b.len(), 6);
        assert!(table.try_write().is_err(), "a writer waits for readers");
        drop((a, b));
        table.write().await.push(4);
        assert_eq!(table.read().await.len(), 4);

        // Notify: notify_one leaves a permit; notify_waiters reaches only
        // the tasks waiting.
        let notify = Arc::new(Notify::new());
        notify.notify_one();
        notify.notified().await;
        let woke = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (notify, woke) = (notify.clone(), woke.clone());
                tokio::spawn(async move {
                    let notified = notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    woke.fetch_add(1, Ordering::SeqCst);
                    notified.await;
                })
            })
            .collect();
        while woke.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        notify.notify_waiters();
        for w in waiters {
            w.await.unwrap();
        }

        // Semaphore: never more holders than permits.
        let permits = Arc::new(Semaphore::new(3));
        let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (permits, inside, most) = (permits.clone(), inside.clone(), most.clone());
                tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await.unwrap();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=3).contains(&most), "{most} holders at once");
        assert_eq!(permits.available_permits(), 3);

        // mpsc: per-sender order, and the end when every sender is gone.
        let (tx, mut rx) = mpsc::channel(4);
        let producers: Vec<_> = (0..4u64)
            .map(|p| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    for i in 0..100u64 {
                        tx.send((p, i)).await.unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let mut next: BTreeMap<u64, u64> = BTreeMap::new();
        while let Some((p, i)) = rx.recv().await {
            let expected = next.entry(p).or_insert(0);
            assert_eq!(i, *expected, "producer {p}'s messages in order");
            *expected += 1;
        }
        assert!(next.values().all(|n| *n == 100));
        for p in producers {
            p.await.unwrap();
        }
        let (utx, mut urx) = mpsc::unbounded_channel();
        utx.send(7).unwrap();
        assert_eq!(urx.recv().await, Some(7));

        // oneshot: the value, or an error when the sender is dropped.
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move { tx.send(42).unwrap() });
        assert_eq!(rx.await, Ok(42));
        let (tx, rx) = oneshot::channel::<u8>();
        drop(tx);
        assert!(rx.await.is_err());

        // watch: a receiver sees the latest value after `changed`.
        let (tx, mut rx) = watch::channel(0u64);
        let writer = tokio::spawn(async move {
            for v in 1..=50 {
                tx.send(v).unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut last = 0;
        while rx.changed().await.is_ok() {
            let v = *rx.borrow_and_update();
            assert!(v > last, "values only move forward");
            last = v;
        }
        assert_eq!(last, 50);
        writer.await.unwrap();
    });
}

/// Rounds per run of the two races below.
const ROUNDS: u32 = 10;

/// A lost wake-up with tokio's `Notify`: a task waits for a flag (behind
/// a `Mutex`) that another sets before `notify_waiters`. The buggy waiter
/// looks at the flag, lets go of the lock and then makes its `Notified`;
/// the fixed one makes and enables its `Notified` before it looks (tokio's
/// documented pattern). Oracle `stuck`: a waiter still waiting 100 ms
/// after the flag was set.
fn lost_wakeup() -> Scenario {
    scenario_from_fn("tokio-lost-wakeup", "summary = \"t\"\n", |sim, run| {
        let buggy = run.variant == Variant::Buggy;
        sim.client("host", async move {
            for round in 0..ROUNDS {
                let ready = Arc::new(Mutex::named("job.ready", false));
                let notify = Arc::new(Notify::named("job.done"));
                let waiter = {
                    let (ready, notify) = (ready.clone(), notify.clone());
                    spawn(async move {
                        loop {
                            if buggy {
                                if *ready.lock().await {
                                    return;
                                }
                                notify.notified().await;
                            } else {
                                let notified = notify.notified();
                                tokio::pin!(notified);
                                notified.as_mut().enable();
                                if *ready.lock().await {
                                    return;
                                }
                                notified.await;
                            }
                        }
                    })
                };
                let setter = spawn(async move {
                    *ready.lock().await = true;
                    notify.notify_waiters();
                });
                setter.await?;
                if tokio::time::timeout(Duration::from_millis(100), waiter)
                    .await
                    .is_err()
                {
                    oracle::fail("stuck", format!("round {round}: the waiter never woke"));
                    return Ok(());
                }
            }
            Ok(())
        });
        Ok(())
    })
}

/// A check-then-act with tokio's `RwLock`: two tasks fetch the same key
/// through a cache. The buggy fetch looks under the read lock and, on a
/// miss, loads and inserts under the write lock; the fixed one looks again
/// under the write lock. Oracle `loads`: the backend serves each key once.
fn check_then_act() -> Scenario {
    scenario_from_fn("tokio-check-then-act", "summary = \"t\"\n", |sim, run| {
        let buggy = run.variant == Variant::Buggy;
        sim.client("host", async move {
            let cache: Arc<RwLock<BTreeMap<u32, u32>>> =
                Arc::new(RwLock::named("cache", BTreeMap::new()));
            let loads = Arc::new(AtomicUsize::new(0));
            for key in 0..ROUNDS {
                let tasks: Vec<_> = (0..2)
                    .map(|_| {
                        let (cache, loads) = (cache.clone(), loads.clone());
                        spawn(async move {
                            if let Some(v) = cache.read().await.get(&key) {
                                return *v;
                            }
                            let mut table = cache.write().await;
                            if !buggy && let Some(v) = table.get(&key) {
                                return *v;
                            }
                            loads.fetch_add(1, Ordering::SeqCst);
                            table.insert(key, key * 10);
                            key * 10
                        })
                    })
                    .collect();
                for t in tasks {
                    assert_eq!(t.await?, key * 10);
                }
                let served = loads.load(Ordering::SeqCst);
                if served != key as usize + 1 {
                    oracle::fail(
                        "loads",
                        format!("key {key}: {served} loads for {} keys", key + 1),
                    );
                    return Ok(());
                }
            }
            Ok(())
        });
        Ok(())
    })
}

/// Seeds of the fixed variants, per strategy.
const FIXED_SEEDS: u64 = 500;

/// The buggy variant of `scenario` fails `oracle` on some of 40 seeds under
/// `random` and under `pct`, never with faults off; the fixed one passes
/// [`FIXED_SEEDS`] seeds of each strategy.
fn found_by_random_and_pct_and_the_fix_passes(scenario: &Scenario, oracle: &str) {
    for faults in [plan(RANDOM), plan(PCT)] {
        let found = failing(scenario, Variant::Buggy, &faults, 40, oracle);
        assert!(!found.is_empty(), "no seed failed `{oracle}`: {faults:?}");
        println!("{}, buggy: {} of 40 seeds fail", scenario.name, found.len());
        let fixed = failing(scenario, Variant::Fixed, &faults, FIXED_SEEDS, oracle);
        assert!(fixed.is_empty(), "the fix failed on seeds {fixed:?}");
    }
    assert!(failing(scenario, Variant::Buggy, &Faults::Off, 20, oracle).is_empty());
}

#[test]
fn a_lost_wake_up_with_notify_is_found_by_random_and_pct_and_the_fix_passes_500_seeds() {
    found_by_random_and_pct_and_the_fix_passes(&lost_wakeup(), "stuck");
}

#[test]
fn a_check_then_act_with_rwlock_is_found_by_random_and_pct_and_the_fix_passes_500_seeds() {
    found_by_random_and_pct_and_the_fix_passes(&check_then_act(), "loads");
}

/// Bounded exhaustive exploration over the same primitives: one
/// preemption finds each bug; every schedule with at most two preemptions
/// of the fixed versions passes.
#[test]
fn bounded_exploration_finds_both_with_one_preemption_and_the_fixes_pass_every_schedule_with_two() {
    for (scenario, oracle, schedules_of_fix) in [
        (lost_wakeup(), "stuck", 231),
        (check_then_act(), "loads", 881),
    ] {
        let buggy = RunOptions::new(Variant::Buggy);
        let found = explore::explore(&scenario, 0, 1, None, &buggy, |_| {});
        let Explored::Failing {
            schedule, outcome, ..
        } = found
        else {
            panic!("{}: {}", scenario.name, found.summary_line());
        };
        assert_eq!(outcome.verdict.oracle(), Some(oracle));
        assert_eq!(schedule.len(), 1, "{}: one preemption", scenario.name);
        let replayed = explore::run_schedule(&scenario, 0, &schedule, &buggy);
        assert_eq!(replayed.trace.hash, outcome.trace.hash);
        // (A bound above the count, so that a change that multiplies the
        // schedules fails here instead of running on.)
        let fixed = explore::explore(
            &scenario,
            0,
            2,
            Some(10 * schedules_of_fix),
            &RunOptions::new(Variant::Fixed),
            |_| {},
        );
        let Explored::Exhausted { schedules } = fixed else {
            panic!("{} fixed: {}", scenario.name, fixed.summary_line());
        };
        // Two steps per round in each run; the count is deterministic.
        assert_eq!(schedules, schedules_of_fix, "{}", scenario.name);
    }
}

#[test]
fn simulated_sockets_are_send_like_tokios_so_tokio_spawn_takes_them() {
    send_sync::<faultline_harness::SimStream>();
    send_sync::<faultline_harness::SimListener>();
}

//! The synchronization primitives and the schedules that preempt at them:
//! races written with the primitives, found by `random` and by `pct`; a
//! bug of depth 2 that PCT finds with fewer seeds than `random`, at least
//! as often as its bound says; barging, a seeded hand-off and spurious
//! wake-ups; bounded exhaustive exploration; and no preemption at all
//! outside a simulation.

use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use faultline_harness::explore::{self, Explored};
use faultline_harness::sync::{Atomic, Condvar, Mutex, Notify, RwLock};
use faultline_harness::{Faults, RunOptions, SweepOptions};
use faultline_harness::{Scenario, Variant, oracle, probe, scenario_from_fn, spawn};

use crate::common::{PCT, RANDOM, failing, plan};

/// A lost wake-up: a worker that looks for work and, finding none, lets go
/// of the lock before it waits (buggy) instead of waiting in the section
/// that looked (fixed). A producer thread hands it work, at once or after
/// a pause, and waits for it to be done (as a durable write waits for its
/// replica). Oracle: `latency` (how long a piece waits).
fn lost_wakeup() -> Scenario {
    let text = "summary = \"lost wake-up\"\n[[oracles.latency]]\nmetric = \"work.wait\"\npercentile = 100.0\nmax_ms = 100\n";
    scenario_from_fn("lost-wakeup", text, |sim, run| {
        let buggy = run.variant == Variant::Buggy;
        sim.client("host", async move {
            let queue = Rc::new((
                Mutex::new("work.queue", Vec::new()),
                Condvar::new("work.queue"),
            ));
            let done = Rc::new((Mutex::new("work.done", 0u32), Condvar::new("work.done")));
            let worker = {
                let (queue, done) = (queue.clone(), done.clone());
                spawn(async move {
                    let mut q = queue.0.lock().await;
                    loop {
                        while let Some(since) = q.pop() {
                            oracle::record_latency("work.wait", faultline_harness::now() - since);
                            *done.0.lock().await += 1;
                            done.1.notify_all().await;
                        }
                        if buggy {
                            drop(q);
                            q = queue.0.lock().await;
                        }
                        q = queue.1.wait_timeout(q, Duration::from_secs(1)).await.0;
                    }
                })
            };
            let producer = spawn(async move {
                for round in 1..=40 {
                    let pause_us = faultline_harness::with_rng("producer", |rng| {
                        rand::Rng::random_range(rng, 0..3000)
                    });
                    if pause_us >= 1000 {
                        tokio::time::sleep(Duration::from_micros(pause_us)).await;
                    }
                    queue.0.lock().await.push(faultline_harness::now());
                    queue.1.notify_one().await;
                    let mut d = done.0.lock().await;
                    while *d < round {
                        d = done.1.wait(d).await;
                    }
                }
            });
            producer.await?;
            worker.abort();
            Ok(())
        });
        Ok(())
    })
}

/// A check-then-act race: two tasks withdraw 60 from a balance of 100;
/// the buggy one checks with a load and acts with a store, the fixed one
/// with a compare-exchange. Oracle `ledger`: no more is withdrawn than
/// there was.
fn check_then_act() -> Scenario {
    scenario_from_fn(
        "check-then-act",
        "summary = \"check then act\"\n",
        |sim, run| {
            let buggy = run.variant == Variant::Buggy;
            sim.client("bank", async move {
                for round in 0..20 {
                    let balance = Rc::new(Atomic::new("account.balance", 100u64));
                    let withdrawn = Rc::new(Atomic::new("account.withdrawn", 0u64));
                    let tasks: Vec<_> = (0..2)
                        .map(|_| {
                            let (balance, withdrawn) = (balance.clone(), withdrawn.clone());
                            spawn(async move {
                                if buggy {
                                    let b = balance.load().await;
                                    if b >= 60 {
                                        balance.store(b - 60).await;
                                        withdrawn.fetch_add(60).await;
                                    }
                                } else {
                                    let mut b = balance.load().await;
                                    while b >= 60 {
                                        match balance.compare_exchange(b, b - 60).await {
                                            Ok(_) => {
                                                withdrawn.fetch_add(60).await;
                                                break;
                                            }
                                            Err(now) => b = now,
                                        }
                                    }
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await?;
                    }
                    let (b, w) = (balance.unsync_load(), withdrawn.unsync_load());
                    if b + w != 100 {
                        oracle::fail(
                            "ledger",
                            format!("round {round}: balance {b} + withdrawn {w} != 100"),
                        );
                    }
                }
                Ok(())
            });
            Ok(())
        },
    )
}

/// Increments of the burst in [`depth_two`].
const BURST: u64 = 50;

/// An order violation of depth 2: the observer reads a counter twice and
/// must never see a whole burst of the other task's increments between
/// its reads. Two orderings must both hold (the burst starts after the
/// first read, ends before the second), and nothing may interrupt the
/// burst: a random schedule that preempts the burst lets the observer go
/// on too early. Oracle `observer`.
fn depth_two() -> Scenario {
    scenario_from_fn("depth-two", "summary = \"depth two\"\n", |sim, _| {
        sim.client("host", async move {
            let counter = Rc::new(Atomic::new("burst.counter", 0u64));
            let observer = {
                let counter = counter.clone();
                spawn(async move {
                    let first = counter.load().await;
                    let second = counter.load().await;
                    if second - first == BURST {
                        oracle::fail("observer", "the whole burst between two reads");
                    }
                })
            };
            let burst = {
                let counter = counter.clone();
                spawn(async move {
                    for _ in 0..BURST {
                        counter.fetch_add(1).await;
                    }
                })
            };
            observer.await?;
            burst.await?;
            Ok(())
        });
        Ok(())
    })
}

#[test]
fn a_lost_wake_up_is_found_by_random_and_by_pct_priorities_alone_and_never_in_the_fix() {
    let scenario = lost_wakeup();
    // PCT never pauses: only the threads' priorities order them.
    for faults in [plan(RANDOM), plan(PCT)] {
        let found = failing(&scenario, Variant::Buggy, &faults, 40, "latency");
        assert!(!found.is_empty(), "no seed lost a wake-up: {faults:?}");
        assert!(failing(&scenario, Variant::Fixed, &faults, 40, "latency").is_empty());
    }
    assert!(failing(&scenario, Variant::Buggy, &Faults::Off, 20, "latency").is_empty());
}

#[test]
fn a_check_then_act_race_is_found_by_random_and_by_pct_and_never_in_the_fix() {
    let scenario = check_then_act();
    for faults in [plan(RANDOM), plan(PCT)] {
        let found = failing(&scenario, Variant::Buggy, &faults, 40, "ledger");
        assert!(!found.is_empty(), "no seed withdrew twice: {faults:?}");
        assert!(failing(&scenario, Variant::Fixed, &faults, 40, "ledger").is_empty());
    }
    assert!(failing(&scenario, Variant::Buggy, &Faults::Off, 20, "ledger").is_empty());
}

/// Seeds to draw for the depth-2 comparison.
const DEPTH_TWO_SEEDS: u64 = 2000;

/// PCT's guarantee, measured: the depth-2 bug among n = 2 threads, over
/// runs of at most k steps, shows in at least 1 / (n * k^(d-1)) of the
/// seeds (the 95% interval of the measured rate reaches above the bound);
/// and PCT finds it at least twice as often as `random` at any
/// probability, from one tuned to the burst (1/51) to those scenarios draw.
#[test]
fn pct_finds_a_bug_of_depth_two_as_often_as_its_bound_says_and_more_often_than_random() {
    let scenario = depth_two();
    let pct = plan("[[race]]\nstrategy = \"pct\"\npoint = \"burst.*\"\ndepth = 2\n");
    let seeds: Vec<u64> = (0..DEPTH_TWO_SEEDS).collect();
    let mut options = SweepOptions::new(RunOptions::new(Variant::Fixed).faults(pct.clone()));
    options.keep_going = true;
    let report = faultline_harness::sweep(&scenario, &seeds, &options);
    let found = report.failures.len() as u64;
    // k: the most steps a run took (each run's plan says its own).
    let k = (0..50)
        .map(|seed| {
            let outcome = faultline_harness::run(
                &scenario,
                seed,
                &RunOptions::new(Variant::Fixed).faults(pct.clone()),
            );
            outcome
                .coverage
                .get("race-steps:burst.*")
                .copied()
                .unwrap_or(0)
        })
        .max()
        .unwrap();
    let (n, d) = (2u64, 2u32);
    let bound = 1.0 / (n as f64 * (k as f64).powi(d as i32 - 1));
    let (low, high) = faultline_harness::wilson_95(found, DEPTH_TWO_SEEDS);
    println!(
        "pct, depth 2, n = {n}, k = {k}: {found} of {DEPTH_TWO_SEEDS} seeds, rate {:.4} (95%: {low:.4}-{high:.4}), bound {bound:.4}",
        found as f64 / DEPTH_TWO_SEEDS as f64
    );
    assert!(k >= 2, "the runs took {k} steps");
    assert!(high >= bound, "below PCT's bound");

    let random = |p: f64| {
        plan(&format!(
            "[[race]]\nstrategy = \"random\"\npoint = \"burst.*\"\nprobability = {p}\nmax_yields = 1\n"
        ))
    };
    for p in [0.02, 0.05, 0.1, 0.3] {
        let by_random = failing(
            &scenario,
            Variant::Fixed,
            &random(p),
            DEPTH_TWO_SEEDS,
            "observer",
        );
        println!(
            "random p = {p}: {} of {DEPTH_TWO_SEEDS} seeds",
            by_random.len()
        );
        assert!(
            by_random.len() as u64 * 2 <= found,
            "random p={p} found {}, pct {found}",
            by_random.len()
        );
    }
    assert!(failing(&scenario, Variant::Fixed, &Faults::Off, 10, "observer").is_empty());
}

/// Polls a future once, outside any runtime and simulation.
fn poll_once<F: Future>(f: F) -> Poll<F::Output> {
    let mut f = pin!(f);
    f.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn outside_a_simulation_the_primitives_never_yield() {
    let value = Atomic::new("outside.value", 1u32);
    assert_eq!(poll_once(value.fetch_add(2)), Poll::Ready(1));
    assert_eq!(poll_once(value.compare_exchange(3, 7)), Poll::Ready(Ok(3)));
    assert_eq!(poll_once(value.bit_test_and_set(3)), Poll::Ready(false));
    assert_eq!(value.unsync_load(), 15);
    let cond = Condvar::new("outside.cond");
    assert!(
        poll_once(cond.notify_all()).is_ready(),
        "nobody waits: nothing to wake"
    );
    let lock = Mutex::new("outside.lock", 5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut guard = lock.lock().await;
        *guard += 1;
        assert!(lock.is_locked());
        drop(guard);
        assert_eq!(*lock.lock().await, 6);
    });
}

/// Coverage of a sweep of `seeds` seeds (runs reaching each point),
/// every run passing.
fn coverage_of(
    scenario: &Scenario,
    faults: &Faults,
    seeds: u64,
) -> std::collections::BTreeMap<String, u64> {
    let mut options = SweepOptions::new(RunOptions::new(Variant::Fixed).faults(faults.clone()));
    options.keep_going = true;
    let seeds: Vec<u64> = (0..seeds).collect();
    let report = faultline_harness::sweep(scenario, &seeds, &options);
    assert!(
        report.failures.is_empty(),
        "{}",
        report.failures[0].report()
    );
    report.coverage
}

#[test]
fn a_lock_is_exclusive_however_the_holders_are_preempted() {
    let scenario = scenario_from_fn("exclusive", "summary = \"exclusive\"\n", |sim, _| {
        sim.client("host", async move {
            let lock = Rc::new(Mutex::new("shared.lock", 0u32));
            let inside = Rc::new(Atomic::new("shared.inside", 0u32));
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    let (lock, inside) = (lock.clone(), inside.clone());
                    spawn(async move {
                        for _ in 0..25 {
                            let mut held = lock.lock().await;
                            if inside.fetch_add(1).await != 0 {
                                oracle::fail("exclusion", "two holders at once");
                            }
                            if lock.waiters() > 0 {
                                // Another thread ran while this one held
                                // the lock, and found it held.
                                probe("preempted-inside");
                            }
                            *held += 1;
                            inside.fetch_sub(1).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await?;
            }
            if *lock.lock().await != 100 {
                oracle::fail("exclusion", "an increment was lost");
            }
            Ok(())
        });
        Ok(())
    });
    for faults in [plan(RANDOM), plan(PCT)] {
        let coverage = coverage_of(&scenario, &faults, 30);
        assert!(
            coverage.get("probe:preempted-inside").copied().unwrap_or(0) > 0,
            "no holder was preempted inside the section: {faults:?}"
        );
    }
}

/// A lock released with waiters: the releasing thread takes it again at
/// once. Thread A holds it while B, then C, queue for it; A lets go and
/// asks again. Probes: `barging` (A took it back ahead of its waiters),
/// `out-of-order` (C got it before B).
fn hand_off() -> Scenario {
    scenario_from_fn("hand-off", "summary = \"hand-off\"\n", |sim, _| {
        sim.client("host", async move {
            let lock = Rc::new(Mutex::new("handoff.lock", Vec::new()));
            let a = {
                let lock = lock.clone();
                spawn(async move {
                    let mut held = lock.lock().await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    held.push('A');
                    drop(held);
                    lock.lock().await.push('a');
                })
            };
            let waiter = |name: char, after_ms: u64| {
                let lock = lock.clone();
                spawn(async move {
                    tokio::time::sleep(Duration::from_millis(after_ms)).await;
                    lock.lock().await.push(name);
                })
            };
            let (b, c) = (waiter('B', 1), waiter('C', 2));
            a.await?;
            b.await?;
            c.await?;
            let order: String = lock.lock().await.iter().collect();
            if order.starts_with("Aa") {
                probe("barging");
            }
            if order.find('C') < order.find('B') {
                probe("out-of-order");
            }
            Ok(())
        });
        Ok(())
    })
}

#[test]
fn a_released_lock_may_be_taken_back_by_its_releaser_or_go_to_any_waiter() {
    let scenario = hand_off();
    // No rule: handed to the first waiter, as tokio's lock does.
    let outcome = faultline_harness::run(
        &scenario,
        0,
        &RunOptions::new(Variant::Fixed).faults(Faults::Off),
    );
    assert!(outcome.verdict.is_pass());
    assert!(!outcome.coverage.contains_key("probe:barging"));
    assert!(!outcome.coverage.contains_key("probe:out-of-order"));
    // A rule on the release: the seed decides.
    let coverage = coverage_of(&scenario, &plan(RANDOM), 40);
    for probe in ["probe:barging", "probe:out-of-order"] {
        assert!(
            coverage.get(probe).copied().unwrap_or(0) > 0,
            "never {probe}: {coverage:?}"
        );
    }
}

/// A consumer that waits with `if` where `while` belongs (buggy) takes an
/// item that is not there when its wait ends with no notification. The
/// producer notifies while it holds the lock, so only a spurious wake-up
/// finds the queue empty. Oracle `queue`.
fn spurious() -> Scenario {
    scenario_from_fn("spurious", "summary = \"spurious\"\n", |sim, run| {
        let buggy = run.variant == Variant::Buggy;
        sim.client("host", async move {
            let queue = Rc::new((Mutex::new("sq.lock", Vec::new()), Condvar::new("sq.cond")));
            let consumer = {
                let queue = queue.clone();
                spawn(async move {
                    for _ in 0..20 {
                        let mut q = queue.0.lock().await;
                        if buggy {
                            if q.is_empty() {
                                q = queue.1.wait(q).await;
                            }
                        } else {
                            while q.is_empty() {
                                q = queue.1.wait(q).await;
                            }
                        }
                        if q.pop().is_none() {
                            oracle::fail("queue", "woke to an empty queue and took nothing");
                            return;
                        }
                    }
                })
            };
            for i in 0..20u32 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                // Notified under the lock: a notification never outlives
                // the item it announces (no wake-up is stale).
                let mut q = queue.0.lock().await;
                q.push(i);
                queue.1.notify_one().await;
                drop(q);
            }
            consumer.await?;
            Ok(())
        });
        Ok(())
    })
}

#[test]
fn a_wait_written_with_if_is_caught_by_spurious_wake_ups_and_the_while_loop_is_not() {
    let scenario = spurious();
    let with_spurious = |rule: &str| plan(&format!("{rule}spurious_wakeup = 0.2\n"));
    for faults in [with_spurious(RANDOM), with_spurious(PCT)] {
        let found = failing(&scenario, Variant::Buggy, &faults, 30, "queue");
        assert!(
            !found.is_empty(),
            "no spurious wake-up caught the `if`: {faults:?}"
        );
        assert!(failing(&scenario, Variant::Fixed, &faults, 30, "queue").is_empty());
    }
    // Without spurious wake-ups the `if` holds here (one consumer).
    assert!(failing(&scenario, Variant::Buggy, &plan(RANDOM), 30, "queue").is_empty());
}

#[test]
fn notify_keeps_one_permit_and_a_rwlock_lets_readers_share_and_writers_wait() {
    let scenario = scenario_from_fn(
        "notify-rwlock",
        "summary = \"notify and rwlock\"\n",
        |sim, _| {
            sim.client("host", async move {
                let notify = Rc::new(Notify::new("n.notify"));
                // Nobody waits: one permit is kept (two notifications, one permit).
                notify.notify_one().await;
                notify.notify_one().await;
                notify.notified().await;
                let second = {
                    let notify = notify.clone();
                    spawn(async move { notify.notified().await })
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
                if second.is_finished() {
                    oracle::fail("notify", "a second permit was kept");
                }
                // notify_waiters wakes those waiting and keeps nothing.
                notify.notify_waiters().await;
                second.await?;
                notify.notify_waiters().await;
                let third = {
                    let notify = notify.clone();
                    spawn(async move { notify.notified().await })
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
                if third.is_finished() {
                    oracle::fail("notify", "notify_waiters left a permit");
                }
                notify.notify_one().await;
                third.await?;

                let lock = Rc::new(RwLock::new("rw.lock", 0u32));
                let r1 = lock.read().await;
                let r2 = lock.read().await;
                let writer = {
                    let lock = lock.clone();
                    spawn(async move { *lock.write().await += 1 })
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
                if writer.is_finished() || *r1 + *r2 != 0 {
                    oracle::fail("rwlock", "a writer went in beside readers");
                }
                drop((r1, r2));
                writer.await?;
                if *lock.read().await != 1 {
                    oracle::fail("rwlock", "the write was lost");
                }
                Ok(())
            });
            Ok(())
        },
    );
    for faults in [Faults::Off, plan(RANDOM), plan(PCT)] {
        assert!(failing(&scenario, Variant::Fixed, &faults, 10, "none").is_empty());
    }
}

/// Two threads, two points each (the tiny test of bounded exploration).
fn two_by_two() -> Scenario {
    scenario_from_fn("two-by-two", "summary = \"two by two\"\n", |sim, _| {
        sim.client("host", async move {
            let x = Rc::new(Atomic::new("tiny.x", 0u32));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let x = x.clone();
                    spawn(async move {
                        x.fetch_add(1).await;
                        x.fetch_add(1).await;
                    })
                })
                .collect();
            for t in threads {
                t.await?;
            }
            Ok(())
        });
        Ok(())
    })
}

/// Counted by hand. T1 runs first and T2 is ready until T1 ends, so a run
/// without preemption takes 2 steps (T1's two points; T2's come after T1
/// ended, alone). One preemption: at step 1 (T1 gives way before its first
/// operation; T2's two points are steps 2 and 3) or at step 2 (T2's are 3
/// and 4). So 1 + 2 = 3 schedules with at most one preemption; a second
/// one goes after the first, at steps 2 or 3 of schedule `1` and at 3 or 4
/// of schedule `2`: 3 + 4 = 7 with at most two.
#[test]
fn exploration_runs_every_schedule_of_a_tiny_test_once() {
    let scenario = two_by_two();
    let options = RunOptions::new(Variant::Fixed);
    for (preemptions, expected) in [(0, 1), (1, 3), (2, 7)] {
        let mut seen = 0;
        let explored = explore::explore(&scenario, 0, preemptions, None, &options, |n| seen = n);
        assert_eq!(
            explored.summary_line(),
            format!("explore: {expected} schedules, exhausted")
        );
        assert_eq!(seen, expected);
    }
    let stopped = explore::explore(&scenario, 0, 2, Some(4), &options, |_| {});
    assert!(matches!(stopped, Explored::Stopped { schedules: 4 }));
}

#[test]
fn exploration_finds_a_depth_two_bug_and_its_schedule_replays_it() {
    let scenario = depth_two();
    let options = RunOptions::new(Variant::Fixed);
    let explored = explore::explore(&scenario, 0, 1, None, &options, |_| {});
    let Explored::Failing {
        schedule, outcome, ..
    } = explored
    else {
        panic!("not found: {}", explored.summary_line());
    };
    assert_eq!(outcome.verdict.oracle(), Some("observer"));
    // The observer gives way between its two reads: its second point.
    assert_eq!(explore::format_schedule(&schedule), "2");
    let text = explore::format_schedule(&schedule);
    let replayed = explore::run_schedule(
        &scenario,
        0,
        &explore::parse_schedule(&text).unwrap(),
        &options,
    );
    assert_eq!(replayed.verdict, outcome.verdict);
    assert_eq!(replayed.trace.hash, outcome.trace.hash);
}

#[test]
fn a_notification_reaches_only_tasks_already_waiting() {
    let scenario = scenario_from_fn("notify", "summary = \"notify\"\n", |sim, _| {
        sim.client("host", async move {
            let pair = Rc::new((Mutex::new("n.lock", ()), Condvar::new("n.cond")));
            let wait = |pair: Rc<(Mutex<()>, Condvar)>| {
                spawn(async move {
                    let held = pair.0.lock().await;
                    let (_held, result) =
                        pair.1.wait_timeout(held, Duration::from_millis(50)).await;
                    result.timed_out()
                })
            };
            // Nobody waits: the notification is lost, not kept for later.
            pair.1.notify_one().await;
            if !wait(pair.clone()).await? {
                oracle::fail("notify", "a notification sent before the wait was kept");
            }
            // A waiting task is woken.
            let waiter = wait(pair.clone());
            tokio::time::sleep(Duration::from_millis(10)).await;
            if pair.1.waiters() != 1 {
                oracle::fail("notify", "the waiter is not registered");
            }
            pair.1.notify_one().await;
            if waiter.await? {
                oracle::fail("notify", "a waiting task missed its notification");
            }
            Ok(())
        });
        Ok(())
    });
    let outcome = faultline_harness::run(&scenario, 0, &RunOptions::new(Variant::Fixed));
    assert!(outcome.verdict.is_pass(), "{}", outcome.report());
}

//! The kv node's executor pool: tasks run when due, woken tasks run at
//! once, and MB-35649's lost wake-up shows only when the seed preempts the
//! executor's threads at their locks and atomics.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use faultline::bugs::Bugs;
use faultline::server::executor::{
    Executor, ExecutorConfig, FOREVER, GlobalTask, Task, TaskFuture, TaskType,
};
use faultline_harness::{Faults, RunOptions, SweepOptions};
use faultline_harness::{Scenario, Variant, Verdict, faults::FaultPlan, oracle, scenario_from_fn};
use rand::Rng;
use tokio::sync::Notify;

/// Counts its runs and tells whoever waits; idle until woken (like the
/// task that prepares outgoing replication messages).
struct Idle {
    runs: Rc<Cell<u32>>,
    done: Rc<Notify>,
}

impl Task for Idle {
    fn name(&self) -> &str {
        "idle"
    }
    fn run<'a>(&'a self, me: &'a GlobalTask) -> TaskFuture<'a> {
        Box::pin(async move {
            me.snooze(FOREVER).await;
            self.runs.set(self.runs.get() + 1);
            self.done.notify_one();
            true
        })
    }
}

/// Runs every 100 ms, five times.
struct Periodic {
    runs: Rc<Cell<u32>>,
}

impl Task for Periodic {
    fn name(&self) -> &str {
        "periodic"
    }
    fn run<'a>(&'a self, me: &'a GlobalTask) -> TaskFuture<'a> {
        Box::pin(async move {
            self.runs.set(self.runs.get() + 1);
            if self.runs.get() == 5 {
                return false;
            }
            me.snooze(Duration::from_millis(100)).await;
            true
        })
    }
}

/// A node whose front end wakes an idle aux-io task and waits for it to
/// run (as a durable write waits for its prepare to go out), then pauses a
/// random moment; the scenario's latency oracle bounds the scheduler wait.
fn toy() -> Scenario {
    let text = "summary = \"executor toy\"\nbug = \"MB-35649\"\n\
                [sim]\nduration_ms = 60000\n\
                [[oracles.latency]]\nmetric = \"scheduler-wait.auxio\"\npercentile = 100.0\nmax_ms = 500\n";
    scenario_from_fn("executor", text, |sim, run| {
        let bugs = Bugs::from_run(run);
        sim.client("node", async move {
            let executor = Executor::start(ExecutorConfig::default(), bugs);
            let runs = Rc::new(Cell::new(0));
            let done = Rc::new(Notify::new());
            let idle = executor
                .schedule(
                    Rc::new(Idle {
                        runs: runs.clone(),
                        done: done.clone(),
                    }),
                    TaskType::AuxIo,
                )
                .await;
            done.notified().await;
            let periodic = Rc::new(Cell::new(0));
            executor
                .schedule(
                    Rc::new(Periodic {
                        runs: periodic.clone(),
                    }),
                    TaskType::NonIo,
                )
                .await;
            let mut wakes = 0;
            for _ in 0..300 {
                let pause_us =
                    faultline_harness::with_rng("toy/front-end", |rng| rng.random_range(10..3000));
                tokio::time::sleep(Duration::from_micros(pause_us)).await;
                executor.wake(idle).await;
                wakes += 1;
                done.notified().await;
            }
            if runs.get() != wakes + 1 {
                oracle::fail(
                    "executor",
                    format!("{} runs for {wakes} wake-ups", runs.get()),
                );
            }
            let tasks = executor.tasks().await;
            if periodic.get() != 5 || tasks != 1 {
                oracle::fail(
                    "executor",
                    format!(
                        "periodic ran {} times; {} tasks left",
                        periodic.get(),
                        tasks
                    ),
                );
            }
            Ok(())
        });
        Ok(())
    })
}

fn race_plan() -> Faults {
    let plan: FaultPlan = toml::from_str(
        "[[race]]\nstrategy = \"random\"\npoint = \"executor.*\"\nprobability = 0.3\nmax_yields = 2\nmax_sleep_us = 2000\n",
    )
    .expect("a valid plan");
    Faults::Plan {
        plan: Box::new(plan),
        source: None,
    }
}

fn failing_seeds(variant: Variant, faults: Faults, seeds: u64) -> Vec<(u64, String)> {
    let mut options = SweepOptions::new(RunOptions::new(variant).faults(faults));
    options.keep_going = true;
    options.jobs = 1;
    let seeds: Vec<u64> = (0..seeds).collect();
    let report = faultline_harness::sweep(&toy(), &seeds, &options);
    report
        .failures
        .iter()
        .map(|o| (o.seed, o.verdict.oracle().unwrap_or("").to_string()))
        .collect()
}

#[test]
fn the_fix_never_sleeps_through_a_wake_up() {
    assert_eq!(failing_seeds(Variant::Fixed, race_plan(), 20), []);
    assert_eq!(failing_seeds(Variant::Fixed, Faults::Off, 5), []);
}

#[test]
fn without_the_racing_wake_up_the_old_lines_pass() {
    assert_eq!(failing_seeds(Variant::Buggy, Faults::Off, 20), []);
}

#[test]
fn a_wake_up_in_the_window_is_lost_for_the_fallback_sleep() {
    let failures = failing_seeds(Variant::Buggy, race_plan(), 10);
    assert!(!failures.is_empty(), "no seed lost a wake-up");
    for (_, oracle) in &failures {
        // Enough lost wake-ups (2 s each) and the 300 rounds do not fit
        // in the run: liveness.
        assert!(oracle == "latency" || oracle == "liveness", "{failures:?}");
    }
    let seed = failures
        .iter()
        .find(|(_, oracle)| oracle == "latency")
        .expect("a seed that fails on its latency")
        .0;
    let outcome = faultline_harness::run(
        &toy(),
        seed,
        &RunOptions::new(Variant::Buggy).faults(race_plan()),
    );
    let Verdict::Fail { message, .. } = &outcome.verdict else {
        panic!("seed {seed} passed on replay");
    };
    assert!(message.contains("scheduler-wait.auxio p100"), "{message}");
    // The task waited out the whole fallback sleep, in simulated time.
    let max_us = outcome.latencies["scheduler-wait.auxio"].max_us;
    assert!((1_900_000..=2_100_000).contains(&max_us), "{max_us} us");
    // The probe names the mechanism: a thread went to sleep past a due task.
    assert!(
        outcome
            .coverage
            .get("probe:executor:sleep-past-due-task")
            .is_some_and(|&n| n > 0),
        "{:?}",
        outcome.coverage
    );
}

#[test]
fn the_fix_never_sleeps_past_a_due_task() {
    for seed in 0..5 {
        let outcome = faultline_harness::run(
            &toy(),
            seed,
            &RunOptions::new(Variant::Fixed).faults(race_plan()),
        );
        assert!(
            !outcome
                .coverage
                .contains_key("probe:executor:sleep-past-due-task"),
            "seed {seed}"
        );
    }
}

//! Oracles as the system under test reports to them.

use std::time::Duration;

use faultline_harness::RunOptions;
use faultline_harness::{Variant, Verdict, oracle, scenario_from_fn};

#[test]
fn the_busy_loop_detector_fires_on_wakeups_without_progress_only() {
    let scenario = scenario_from_fn(
        "busy",
        "summary = \"t\"\n[oracles]\nbusy_loop_max_per_ms = 50\n",
        |sim, run| {
            let progress = run.variant == Variant::Fixed;
            sim.client("proxy", async move {
                for round in 0..100 {
                    // 60 wake-ups per simulated millisecond.
                    for _ in 0..60 {
                        oracle::busy_wakeup("handler fd=7");
                        if progress {
                            oracle::busy_progress("handler fd=7");
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let _ = round;
                }
                Ok(())
            });
            Ok(())
        },
    );
    let spinning = faultline_harness::run(&scenario, 0, &RunOptions::new(Variant::Buggy));
    let Verdict::Fail { oracle, message } = &spinning.verdict else {
        panic!("must fire")
    };
    assert_eq!(oracle, "busy-loop");
    assert!(message.contains("handler fd=7 woke 51 times"), "{message}");
    assert!(
        faultline_harness::run(&scenario, 0, &RunOptions::new(Variant::Fixed))
            .verdict
            .is_pass()
    );
}

#[test]
fn liveness_names_the_operations_still_pending_at_their_deadline() {
    let scenario = scenario_from_fn(
        "live",
        "summary = \"t\"\n[oracles]\nliveness_deadline_ms = 500\n",
        |sim, run| {
            let hang = run.variant == Variant::Buggy;
            sim.client("caller", async move {
                let _done = oracle::pending("setup_streams vb=3");
                let _other = oracle::pending("setup_streams vb=5");
                if hang {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(())
            });
            Ok(())
        },
    );
    let hung = faultline_harness::run(&scenario, 0, &RunOptions::new(Variant::Buggy));
    let Verdict::Fail { oracle, message } = &hung.verdict else {
        panic!("must fire")
    };
    assert_eq!(oracle, "liveness");
    assert!(
        message.contains("setup_streams vb=3, setup_streams vb=5"),
        "{message}"
    );
    assert_eq!(hung.sim_time.as_millis(), 500);
    assert!(
        faultline_harness::run(&scenario, 0, &RunOptions::new(Variant::Fixed))
            .verdict
            .is_pass()
    );
}

#[test]
fn a_workload_that_never_finishes_fails_liveness_at_the_scenario_limit() {
    let scenario = scenario_from_fn(
        "stuck",
        "summary = \"t\"\n[sim]\nduration_ms = 300\n",
        |sim, _| {
            sim.client("caller", async {
                std::future::pending::<()>().await;
                Ok(())
            });
            Ok(())
        },
    );
    let outcome = faultline_harness::run(&scenario, 0, &RunOptions::new(Variant::Fixed));
    assert_eq!(outcome.verdict.oracle(), Some("liveness"));
    assert_eq!(outcome.sim_time.as_millis(), 300);
}

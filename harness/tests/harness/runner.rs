//! The runner: host panics become failures, sweeps survive them, traces hash
//! the same in every process, and tokio's own random choices follow the seed.

use std::process::Command;
use std::time::Duration;

use faultline_harness::{Faults, RunOptions, SweepOptions};
use faultline_harness::{Scenario, Variant, Verdict, scenario_from_fn};

/// A host that panics at 5 ms on even seeds.
fn panicking() -> Scenario {
    scenario_from_fn("panics", "summary = \"t\"\n", |sim, run| {
        let seed = run.seed;
        sim.host("fragile", move || async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if seed % 2 == 0 {
                let table = [1u8, 2, 3];
                let index = 3 + (seed as usize % 2);
                // An out-of-bounds index, as a C buffer overrun would be.
                let _ = table[index];
            }
            std::future::pending::<()>().await;
            Ok(())
        });
        sim.client("driver", async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(())
        });
        Ok(())
    })
}

#[test]
fn a_host_panic_is_a_failure_naming_the_host_and_the_panic() {
    let outcome = faultline_harness::run(&panicking(), 0, &RunOptions::new(Variant::Fixed));
    let Verdict::Fail { oracle, message } = &outcome.verdict else {
        panic!("a panicking host must fail the run");
    };
    assert_eq!(oracle, "host-crash");
    assert!(message.contains("host `fragile`"), "{message}");
    assert!(message.contains("index out of bounds"), "{message}");
    assert!(outcome.verdict_line().contains("oracle=host-crash"));
    assert_eq!(
        faultline_harness::run(&panicking(), 1, &RunOptions::new(Variant::Fixed)).verdict,
        Verdict::Pass
    );
}

#[test]
fn a_sweep_reports_panicking_seeds_and_goes_on() {
    let seeds: Vec<u64> = (0..10).collect();
    let mut options = SweepOptions::new(RunOptions::new(Variant::Fixed));
    options.keep_going = true;
    options.jobs = 2;
    let report = faultline_harness::sweep(&panicking(), &seeds, &options);
    assert_eq!(report.passed, 5);
    let failed: Vec<u64> = report.failures.iter().map(|o| o.seed).collect();
    assert_eq!(failed, vec![0, 2, 4, 6, 8]);
    assert!(
        report.failures[0]
            .replay_command()
            .ends_with("run panics --seed 0 --variant fixed")
    );
}

/// A scenario whose trace depends on turmoil's latencies, tokio's
/// `select!` order and a named stream.
fn noisy() -> Scenario {
    scenario_from_fn(
        "noisy",
        "summary = \"t\"\n[sim]\nmax_latency_ms = 20\n",
        |sim, _| {
            sim.host("echo", || async {
                let listener = faultline_harness::SimListener::bind(("0.0.0.0", 1)).await?;
                loop {
                    let (mut stream, _) = listener.accept().await?;
                    tokio::task::spawn_local(async move {
                        let (mut r, mut w) = tokio::io::split(&mut stream);
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    });
                }
            });
            for c in 0..3 {
                sim.client(&format!("client-{c}"), async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut stream = faultline_harness::SimStream::connect(("echo", 1)).await?;
                    for i in 0..10u8 {
                        let n = faultline_harness::with_rng("sizes", |rng| {
                            rand::Rng::random_range(rng, 1..50usize)
                        });
                        stream.write_all(&vec![i; n]).await?;
                        let mut back = vec![0; n];
                        stream.read_exact(&mut back).await?;
                        let (a, b) = (std::future::ready(1), std::future::ready(2));
                        let picked = tokio::select! { x = a => x, y = b => y };
                        tracing::debug!(client = c, i, n, picked, "round");
                    }
                    Ok(())
                });
            }
            Ok(())
        },
    )
}

#[test]
fn the_build_has_tokio_unstable_so_select_order_follows_the_seed() {
    // The constant is the build's flags: that is exactly what is checked.
    let built_with_tokio_unstable = std::hint::black_box(faultline_harness::TOKIO_UNSTABLE);
    assert!(
        built_with_tokio_unstable,
        "built without --cfg tokio_unstable: tokio::select! order would differ in every process \
         (is RUSTFLAGS overriding .cargo/config.toml?)"
    );
    // With tokio_unstable, select! picks branches from tokio's seeded RNG:
    // the same seed gives the same picks, and the picks vary with the seed.
    let picks = |seed| {
        let outcome = faultline_harness::run(
            &noisy(),
            seed,
            &RunOptions::new(Variant::Fixed).trace(faultline_harness::TraceMode::Full),
        );
        assert!(outcome.verdict.is_pass(), "{}", outcome.report());
        outcome
            .trace
            .lines
            .unwrap()
            .iter()
            .filter_map(|l| l.split("picked=").nth(1).map(str::to_string))
            .collect::<Vec<_>>()
    };
    assert_eq!(picks(3), picks(3));
    let distinct: std::collections::BTreeSet<Vec<String>> = (0..6).map(picks).collect();
    assert!(
        distinct.len() > 1,
        "select! order never varied with the seed"
    );
}

#[test]
fn the_same_seed_gives_the_same_trace_twice_in_one_process() {
    let report = faultline_harness::check_determinism(
        &noisy(),
        &[0, 1, 2, 3],
        &RunOptions::new(Variant::Fixed),
        2,
        None,
    );
    assert_eq!(report.seeds, 4);
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    let a = faultline_harness::run(&noisy(), 0, &RunOptions::new(Variant::Fixed));
    let b = faultline_harness::run(&noisy(), 1, &RunOptions::new(Variant::Fixed));
    assert_ne!(
        a.trace.hash, b.trace.hash,
        "different seeds should give different traces"
    );
}

/// Prints the trace hash of a few seeds when run as the child process of
/// the test below (the variable is read here, in the test process).
#[test]
fn child_prints_trace_hashes() {
    if std::env::var("FAULTLINE_HASH_CHILD").is_err() {
        return;
    }
    for seed in 0..3 {
        let outcome = faultline_harness::run(
            &noisy(),
            seed,
            &RunOptions::new(Variant::Fixed).faults(Faults::Off),
        );
        println!("HASH {seed} {}", outcome.trace.hash_hex());
    }
}

#[test]
fn the_trace_hash_is_the_same_in_two_processes() {
    let exe = std::env::current_exe().expect("the test binary");
    let child = || {
        let output = Command::new(&exe)
            .args([
                "--exact",
                "runner::child_prints_trace_hashes",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("FAULTLINE_HASH_CHILD", "1")
            .output()
            .expect("the test binary runs");
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        // libtest may print its own "test ... " prefix on the first line.
        let hashes: Vec<String> = text
            .lines()
            .filter_map(|l| l.find("HASH ").map(|i| l[i..].to_string()))
            .collect();
        assert_eq!(hashes.len(), 3, "child output: {text}");
        hashes
    };
    let first = child();
    let second = child();
    assert_eq!(first, second);
    let here: Vec<String> = (0..3)
        .map(|seed| {
            let outcome = faultline_harness::run(
                &noisy(),
                seed,
                &RunOptions::new(Variant::Fixed).faults(Faults::Off),
            );
            format!("HASH {seed} {}", outcome.trace.hash_hex())
        })
        .collect();
    assert_eq!(first, here);
}

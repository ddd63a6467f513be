//! HAP-FDRACE does not hang on one timing: with the scenario's 1-3 ms links
//! and seeded client pauses, the buggy variant fails within 200 seeds for
//! every kv idle timeout in 3..8 ms and with 3 or 4 proxy threads (the
//! report's trigger was a request rate near 1/keep-alive, with at least 3
//! threads). At 2 ms most connections die before their reuse and the
//! window is rare (measured under the default race space: 3 failing seeds
//! of 300 with 4 threads), so that timing is left to the sweeps.
//! Preemption comes from the synchronization points only, with the
//! harness's default race space: the scenario names no point of the bug's
//! window.

use faultline_harness::Variant;
use faultline_harness::{RunOptions, SweepOptions};

const SCENARIO: &str = "HAP-FDRACE-late-update-vs-close";

/// Seeds within which the buggy variant must fail, per configuration.
const SEEDS: u64 = 200;

/// The scenario file with `key = value` lines of `[params]` replaced.
fn variant(text: &str, idle_ms: u64, threads: usize) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with("kv_idle_timeout_ms = ") {
                format!("kv_idle_timeout_ms = {idle_ms}")
            } else if line.starts_with("threads = ") {
                format!("threads = {threads}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_buggy_variant_fails_for_every_idle_timeout_and_thread_count() {
    let path = faultline::default_scenarios_dir().join(format!("{SCENARIO}.toml"));
    let text = std::fs::read_to_string(&path).expect("the scenario file");
    assert!(
        !text.contains("fd-late-update") && !text.contains("fd-delete"),
        "the scenario names no point of the bug's window"
    );
    let registry = faultline::registry();
    let seeds: Vec<u64> = (0..SEEDS).collect();
    let configurations: Vec<(u64, usize)> = (3..=8)
        .flat_map(|idle_ms| [(idle_ms, 3), (idle_ms, 4)])
        .collect();
    // One configuration per worker, each swept one seed at a time up to its
    // first failure: a sweep of several jobs would finish the passing seeds
    // already started beside a failure, a whole run each.
    let results = faultline_harness::parallel(
        &configurations,
        faultline_harness::default_jobs(),
        &std::sync::atomic::AtomicBool::new(false),
        |&(idle_ms, threads)| first_failure(&registry, &text, idle_ms, threads, &seeds),
        |_| {},
    );
    assert_eq!(results.len(), configurations.len());
    let found: Vec<String> = results
        .into_iter()
        .map(|result| result.unwrap_or_else(|problem| panic!("{problem}")))
        .collect();
    println!("first failing seeds: {}", found.join(", "));
}

/// The first failing seed of the buggy variant with these parameters, as
/// `IDLEms/THREADSt: seed N`, or what went wrong.
fn first_failure(
    registry: &faultline_harness::Registry,
    text: &str,
    idle_ms: u64,
    threads: usize,
    seeds: &[u64],
) -> Result<String, String> {
    let changed = variant(text, idle_ms, threads);
    assert!(
        changed.contains(&format!("\nkv_idle_timeout_ms = {idle_ms}\n"))
            && changed.contains(&format!("\nthreads = {threads}\n")),
        "the parameters were replaced"
    );
    let scenario = registry
        .load_str(SCENARIO, None, &changed)
        .expect("a valid variation");
    let mut options = SweepOptions::new(RunOptions::new(Variant::Buggy));
    options.jobs = 1;
    let report = faultline_harness::sweep(&scenario, seeds, &options);
    let Some(first) = report.failures.first() else {
        return Err(format!(
            "idle {idle_ms} ms, {threads} threads: no failure in {SEEDS} seeds"
        ));
    };
    let oracle = first.verdict.oracle().unwrap_or_default();
    if !["throughput", "liveness"].contains(&oracle) {
        return Err(format!(
            "idle {idle_ms} ms, {threads} threads: {}",
            first.report()
        ));
    }
    Ok(format!("{idle_ms}ms/{threads}t: seed {}", first.seed))
}

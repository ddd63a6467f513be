//! The command-line contract: output lines and exit codes that users and CI
//! rely on, checked against the real binary.

use std::process::{Command, Output};

fn faultline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .output()
        .expect("the faultline binary runs")
}

fn last_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

fn trace_of(line: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("trace="))
        .expect("a trace= field")
        .to_string()
}

#[test]
fn list_prints_name_bug_and_summary() {
    let out = faultline(&["list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("echo-partial-write"))
        .expect("the echo scenario is listed");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[1], "-", "the echo scenario has no bug id: {line}");
}

#[test]
fn a_failing_run_exits_1_with_the_verdict_line_and_the_same_trace_in_every_process() {
    let first = faultline(&[
        "run",
        "echo-partial-write",
        "--variant",
        "buggy",
        "--seed",
        "0",
    ]);
    assert_eq!(first.status.code(), Some(1));
    let line = last_line(&first);
    assert!(
        line.starts_with("verdict: fail seed=0 variant=buggy trace="),
        "{line}"
    );
    assert!(
        line.contains(" sim_ms=") && line.contains(" oracle=echo-check: "),
        "{line}"
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains(
        "replay: cargo run --release -- run echo-partial-write --seed 0 --variant buggy"
    ));
    assert!(
        stdout.contains("[[send_buffer]]"),
        "the plan is printed with the failure"
    );
    let second = faultline(&[
        "run",
        "echo-partial-write",
        "--variant",
        "buggy",
        "--seed",
        "0",
    ]);
    assert_eq!(trace_of(&line), trace_of(&last_line(&second)));
}

#[test]
fn without_faults_or_with_the_fix_the_run_passes() {
    let off = faultline(&[
        "run",
        "echo-partial-write",
        "--variant",
        "buggy",
        "--seed",
        "0",
        "--faults",
        "off",
    ]);
    assert_eq!(off.status.code(), Some(0));
    assert!(last_line(&off).starts_with("verdict: pass seed=0 variant=buggy trace="));
    let fixed = faultline(&["run", "echo-partial-write", "--seed", "0"]);
    assert_eq!(fixed.status.code(), Some(0));
    let line = last_line(&fixed);
    assert!(
        line.starts_with("verdict: pass seed=0 variant=fixed trace="),
        "{line}"
    );
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.len(), 6, "{line}");
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(
        faultline(&["run", "echo-partial-write", "--variant", "sideways"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        faultline(&["run", "no-such-scenario"]).status.code(),
        Some(2)
    );
    assert_eq!(
        faultline(&["sweep", "echo-partial-write", "--seeds", "9..3"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn sweep_and_determinism_summaries() {
    let sweep = faultline(&[
        "sweep",
        "echo-partial-write",
        "--seeds",
        "0..40",
        "--jobs",
        "2",
    ]);
    assert_eq!(sweep.status.code(), Some(0));
    assert_eq!(last_line(&sweep), "sweep: 40 passed, 0 failed");

    let failing = faultline(&[
        "sweep",
        "echo-partial-write",
        "--seeds",
        "0..10",
        "--variant",
        "buggy",
        "--jobs",
        "1",
    ]);
    assert_eq!(failing.status.code(), Some(1));
    let text = String::from_utf8_lossy(&failing.stdout);
    assert!(text.contains("first failing seed: 0"), "{text}");
    assert!(text.contains(
        "replay: cargo run --release -- run echo-partial-write --seed 0 --variant buggy"
    ));
    assert_eq!(last_line(&failing), "sweep: 0 passed, 1 failed");

    let determinism = faultline(&[
        "check-determinism",
        "echo-partial-write",
        "--seeds",
        "0..20",
        "--variant",
        "buggy",
    ]);
    assert_eq!(determinism.status.code(), Some(0));
    assert_eq!(
        last_line(&determinism),
        "determinism: 20 seeds, 0 mismatches"
    );
}

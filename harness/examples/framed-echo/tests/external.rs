//! A user's tests of their own server, and what a failing one hands them:
//! a replay line that runs it again and fails the same way; and the
//! crate's own binary (`faultline_harness::cli`) running, sweeping and
//! shrinking its scenario.

use std::process::{Command, Output};

use faultline_harness::Faults;
use faultline_harness::testing::Check;
use faultline_harness::{Scenario, Variant};

fn scenario() -> Scenario {
    framed_echo::registry()
        .load_file(&framed_echo::scenarios_dir().join("framed-echo.toml"))
        .expect("the scenario file loads")
}

#[test]
fn the_fix_survives_segmentation_and_the_bug_needs_it() {
    Check::new(&scenario())
        .variant(Variant::Fixed)
        .seeds(0..100)
        .expect_pass();
    Check::new(&scenario())
        .variant(Variant::Buggy)
        .faults(Faults::Off)
        .seeds(0..50)
        .expect_pass();
    Check::new(&scenario())
        .variant(Variant::Buggy)
        .expect_fail(0, "echo-check");
}

/// What a user would write, and see fail: the buggy server under the
/// scenario's faults. Ignored: the test below runs it on purpose.
#[test]
#[ignore = "fails on purpose: run by the_replay_line_of_a_failing_check_fails_the_same_way"]
fn a_users_check() {
    Check::new(&scenario())
        .variant(Variant::Buggy)
        .seeds(0..10)
        .expect_pass();
}

/// This test binary, run with `args` and `env` (as `cargo test` would run
/// it for a `--test external` line).
fn this_test_binary(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args(args)
        .env_remove("FAULTLINE_SEED")
        .env_remove("FAULTLINE_SEEDS");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the test binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `trace:` hash of a failure report.
fn trace_hash(report: &str) -> String {
    report
        .lines()
        .find_map(|l| l.strip_prefix("trace:"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no trace line in {report}"))
        .to_string()
}

#[test]
fn the_replay_line_of_a_failing_check_fails_the_same_way() {
    let first = this_test_binary(&["a_users_check", "--exact", "--include-ignored"], &[]);
    assert!(
        !first.status.success(),
        "the check fails:\n{}",
        text(&first)
    );
    let report = text(&first);
    let replay = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("replay: "))
        .unwrap_or_else(|| panic!("no replay line in {report}"));
    let seed = report
        .lines()
        .find_map(|l| l.strip_prefix("seed:"))
        .map(|s| s.trim().to_string())
        .expect("the failing seed");
    assert_eq!(
        replay,
        format!(
            "FAULTLINE_SEED={seed} cargo test -p framed-echo --test external a_users_check -- --exact --include-ignored"
        ),
        "a cargo test command for this very test"
    );
    // The line, as cargo runs it: this binary, the filter after the
    // target, the flags after `--`, the seed in the environment.
    let (env, cargo) = replay
        .split_once(' ')
        .expect("an environment assignment first");
    let (key, value) = env.split_once('=').expect("KEY=VALUE");
    let after = cargo
        .strip_prefix("cargo test -p framed-echo --test external ")
        .expect("the package and target");
    let (filter, flags) = after.split_once(" -- ").expect("test flags after --");
    let mut args = vec![filter];
    args.extend(flags.split_whitespace());
    let again = this_test_binary(&args, &[(key, value)]);
    assert!(
        !again.status.success(),
        "the replay fails too:\n{}",
        text(&again)
    );
    let replayed = text(&again);
    assert!(
        replayed.contains(&format!("on seed {seed} (1 of 1 seeds failed)")),
        "only the seed of the line ran:\n{replayed}"
    );
    assert_eq!(trace_hash(&replayed), trace_hash(&report), "the same run");
}

fn binary(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_framed-echo"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("FAULTLINE_SCENARIOS")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("the binary runs")
}

#[test]
fn the_crates_own_binary_runs_sweeps_and_shrinks_its_scenario() {
    let run = binary(&["run", "framed-echo", "--seed", "0", "--variant", "buggy"]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    let out = String::from_utf8_lossy(&run.stdout).to_string();
    let verdict = out.lines().last().unwrap().to_string();
    assert!(
        verdict.starts_with("verdict: fail seed=0 variant=buggy")
            && verdict.contains("oracle=echo-check"),
        "{verdict}"
    );
    // Its replay line is this binary's own command.
    let replay = out
        .lines()
        .find_map(|l| l.strip_prefix("replay: "))
        .expect("a replay line");
    let words: Vec<&str> = replay.split_whitespace().collect();
    assert_eq!(words[0], env!("CARGO_BIN_EXE_framed-echo"), "{replay}");
    let again = binary(&words[1..]);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).lines().last(),
        Some(verdict.as_str()),
        "the replay line fails the same way"
    );
    let sweep = binary(&["sweep", "framed-echo", "--seeds", "0..40"]);
    assert_eq!(sweep.status.code(), Some(0), "{}", text(&sweep));
    assert!(text(&sweep).contains("sweep: 40 passed, 0 failed"));
    let shrink = binary(&["shrink", "framed-echo", "--seed", "0", "--variant", "buggy"]);
    assert_eq!(shrink.status.code(), Some(0), "{}", text(&shrink));
    assert!(
        text(&shrink).contains("shrink: 1 faults -> 1 faults"),
        "{}",
        text(&shrink)
    );
    let list = binary(&["list"]);
    assert!(
        text(&list).starts_with("framed-echo  -  an echo server"),
        "{}",
        text(&list)
    );
    let unknown = binary(&["run", "no-such-scenario"]);
    assert_eq!(unknown.status.code(), Some(2));
}

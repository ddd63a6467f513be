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

/// A fresh directory for one test's files, removed by the test at its end.
fn scratch_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
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
    assert!(
        text.lines().last().unwrap().ends_with("docs/bugs.md"),
        "list points at the catalog: {text}"
    );
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

#[test]
fn shrink_reduces_a_failing_plan_to_the_send_buffer_and_the_plan_replays() {
    let dir = scratch_dir("shrink");
    let plan = dir.join("plan.toml");
    let plan_arg = plan.to_str().unwrap();
    // Seed 2 draws three faults; only the send buffer matters.
    let out = faultline(&[
        "shrink",
        "echo-partial-write",
        "--seed",
        "2",
        "--variant",
        "buggy",
        "--out",
        plan_arg,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(last_line(&out), "shrink: 3 faults -> 1 faults");
    let written = std::fs::read_to_string(&plan).unwrap();
    assert!(
        written.contains("[[send_buffer]]") && !written.contains("segmentation"),
        "{written}"
    );
    let again = faultline(&[
        "run",
        "echo-partial-write",
        "--seed",
        "2",
        "--variant",
        "buggy",
        "--plan",
        plan_arg,
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(last_line(&again).contains("oracle=echo-check"));
    let not_failing = faultline(&[
        "shrink",
        "echo-partial-write",
        "--seed",
        "2",
        "--variant",
        "fixed",
    ]);
    assert_eq!(not_failing.status.code(), Some(1));
    let bad_plan = dir.join("bad.toml");
    std::fs::write(&bad_plan, "[[send_buffer]]\nhost = \"server\"\nbytez = 3\n").unwrap();
    let rejected = faultline(&[
        "run",
        "echo-partial-write",
        "--plan",
        bad_plan.to_str().unwrap(),
    ]);
    assert_eq!(rejected.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&rejected.stderr);
    assert!(
        stderr.contains("bad.toml:3:1") && stderr.contains("bytez"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_failing_run_writes_a_diagram_that_tells_the_story_of_the_failure() {
    let dir = scratch_dir("diagram");
    let diagram = dir.join("mb-53445.md");
    // MB-53445's recorded hang: the set-up messages happen in the first
    // 100 ms, the oracle fires 4 s later after hundreds of routine messages.
    let out = faultline(&[
        "run",
        "MB-53445-stream-end-during-setup",
        "--seed",
        "3",
        "--variant",
        "buggy",
        "--diagram",
        diagram.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("diagram written to {}", diagram.display())),
        "{stdout}"
    );
    let d = std::fs::read_to_string(&diagram).unwrap();
    assert!(d.contains("```mermaid\nsequenceDiagram\n"), "{d}");
    // The story: four streams asked for, one ended by the producer (the
    // switch that ends it), three answers, and the oracle.
    assert_eq!(d.matches("ns->>kv_2: req DCP_ADD_STREAM").count(), 4, "{d}");
    assert!(
        d.contains("Note over kv_1: fault switch kv.end_stream_after_accept"),
        "{d}"
    );
    assert!(d.contains("kv_1->>ns: req DCP_STREAM_END"), "{d}");
    assert_eq!(d.matches("kv_2->>ns: res DCP_ADD_STREAM").count(), 3, "{d}");
    assert!(
        d.contains("Note over harness: oracle liveness fired @4071.000 ms"),
        "{d}"
    );
    // Routine traffic is summed up, not drawn.
    assert!(d.contains(" steps left out ("), "{d}");
    let drawn = d
        .lines()
        .filter(|l| l.contains("->>") || l.contains("-)"))
        .count();
    assert!(drawn <= 80, "{drawn} arrows:\n{d}");
    std::fs::remove_dir_all(&dir).ok();
}

fn json_line(output: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().last().expect("a JSON line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn two_shards_of_a_sweep_run_exactly_the_seeds_of_the_range_and_merge_into_one_summary() {
    // Every seed of the buggy echo scenario fails, and with --keep-going
    // each shard lists every seed it ran among its failing seeds.
    let dir = scratch_dir("shards");
    let mut files = Vec::new();
    let mut seen: Vec<u64> = Vec::new();
    for shard in ["1/2", "2/2"] {
        let out = faultline(&[
            "sweep",
            "echo-partial-write",
            "--seeds",
            "10..31",
            "--variant",
            "buggy",
            "--keep-going",
            "--shard",
            shard,
            "--json",
            "--jobs",
            "1",
        ]);
        assert_eq!(out.status.code(), Some(1));
        let summary = json_line(&out);
        let ran = summary["seeds_run"].as_u64().unwrap();
        let failing: Vec<u64> = summary["failing_seeds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .collect();
        assert_eq!(failing.len() as u64, ran, "every seed of this sweep fails");
        seen.extend(failing);
        let file = dir.join(format!("shard-{}.json", &shard[..1]));
        std::fs::write(&file, &out.stdout).unwrap();
        files.push(file);
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (10..31).collect::<Vec<u64>>(),
        "disjoint, and together the whole range"
    );
    let mut args = vec!["merge"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let merged = faultline(&args);
    assert_eq!(merged.status.code(), Some(1), "the merged sweep failed");
    assert!(
        last_line(&merged).starts_with("merge: 0 passed, 21 failed (2 of 2 shards, 21 seeds of"),
        "{}",
        last_line(&merged)
    );
    // One shard alone is reported as incomplete.
    let alone = faultline(&["merge", files[0].to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&alone.stdout).contains("missing shards: 2/2"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_history_exits_0_linearizable_1_not_2_malformed() {
    let dir = scratch_dir("check-history");
    let ok = [
        r#"{"process": 1, "key": "k", "op": "set", "args": {"value": "a"}, "result": {"cas": 3}, "invoke": 0, "complete": 10}"#,
        r#"{"process": 2, "key": "k", "op": "get", "result": {"value": "a", "flags": 0, "cas": 3}, "invoke": 20, "complete": 30}"#,
        r#"{"process": 3, "key": "k", "op": "cas", "args": {"value": "b", "cas": 3}, "result": {"cas": 4}, "invoke": 40, "complete": 50}"#,
        r#"{"process": 4, "key": "k", "op": "cas", "args": {"value": "c", "cas": 3}, "result": "exists", "invoke": 41, "complete": 51}"#,
        r#"{"process": 5, "key": "n", "op": "incr", "args": {"delta": 1, "initial": 0}, "invoke": 41, "complete": null}"#,
    ]
    .join("\n");
    // The second CAS from the same read succeeds too: impossible.
    let double_cas = ok.replace(r#""result": "exists""#, r#""result": {"cas": 5}"#);
    let malformed = ok.replace(r#""invoke": 40"#, r#""invoke": "x""#);
    let run = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        faultline(&["check-history", path.to_str().unwrap()])
    };
    let out = run("ok.jsonl", &ok);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(last_line(&out).starts_with("linearizable: 5 operations"));
    let out = run("double-cas.jsonl", &double_cas);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("partition `k`"), "{stdout}");
    assert!(
        stdout.contains("cas k \"c\" if 3 -> stored (cas 5)"),
        "{stdout}"
    );
    let out = run("malformed.jsonl", &malformed);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("malformed.jsonl:3: field `invoke`"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn explore_ends_with_its_count_and_rejects_a_bad_schedule() {
    let out = faultline(&[
        "explore",
        "echo-partial-write",
        "--seed",
        "0",
        "--preemptions",
        "1",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(last_line(&out), "explore: 1 schedules, exhausted");
    let bad = faultline(&["explore", "echo-partial-write", "--schedule", "3,2"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("steps must ascend"),
        "{bad:?}"
    );
}

#[test]
fn every_catalog_failure_ends_with_its_one_line_verdict() {
    // What a CI script reads: `faultline run ... | tail -n 1` is the
    // verdict, whatever the oracle (a linearizability failure's timeline
    // and every other explanation stand above it).
    let (scenarios, errors) = faultline::registry().load_dir(&faultline::default_scenarios_dir());
    assert!(errors.is_empty(), "{errors:?}");
    let dir = scratch_dir("verdicts");
    let mut oracles = std::collections::BTreeSet::new();
    for scenario in scenarios.iter().filter(|s| s.bug().is_some()) {
        let Some(recorded) = scenario.spec.expect.fails.first() else {
            continue;
        };
        let seed = recorded.seed.to_string();
        let trace = dir.join(format!("{}.trace", scenario.name));
        let diagram = dir.join(format!("{}.md", scenario.name));
        let out = faultline(&[
            "run",
            &scenario.name,
            "--seed",
            &seed,
            "--variant",
            "buggy",
            "--trace",
            trace.to_str().unwrap(),
            "--diagram",
            diagram.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{}: {stdout}", scenario.name);
        let line = last_line(&out);
        let head = format!("verdict: fail seed={seed} variant=buggy trace=");
        assert!(line.starts_with(&head), "{}: {line}", scenario.name);
        assert!(
            line.contains(&format!(" oracle={}: ", recorded.oracle)),
            "{}: {line}",
            scenario.name
        );
        let verdicts = stdout.lines().filter(|l| l.starts_with("verdict:")).count();
        assert_eq!(verdicts, 1, "{}: one verdict line: {stdout}", scenario.name);
        oracles.insert(recorded.oracle.clone());
    }
    assert!(
        oracles.contains("linearizability"),
        "the multi-line message is among them: {oracles:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Malformed scenario files: each gets one line of error naming the file,
//! the line and the problem; none panics. And scenario files are found at
//! run time: a copy under a new name is a new scenario, without a rebuild.

use std::path::PathBuf;
use std::process::Command;

const GOOD: &str = r#"summary = "echo"
workload = "echo"

[params]
clients = 1
messages = 3

[faults.send_buffer]
hosts = ["server"]
bytes = [1, 8]

[expect]
fails = [{ seed = 0, oracle = "echo-check" }]
"#;

/// A workload with nested parameter tables.
const KV: &str = r#"summary = "kv"
workload = "kv-clients"

[params.node]
workers = 1

[params.traffic]
clients = 2
ops = 5
"#;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// (file name, text, expected "LINE:" prefix of the position, words the message must contain)
fn cases() -> Vec<(&'static str, String, &'static str, &'static [&'static str])> {
    vec![
        (
            "syntax.toml",
            GOOD.replace("bytes = [1, 8]", "bytes = [1, 8"),
            "12:",
            &["expected"],
        ),
        (
            "unknown-top-key.toml",
            format!("sumary = \"typo\"\n{GOOD}"),
            "1:",
            &["unknown field", "sumary"],
        ),
        (
            "missing-summary.toml",
            GOOD.replace("summary = \"echo\"\n", ""),
            "1:",
            &["missing field", "summary"],
        ),
        (
            "unknown-workload.toml",
            GOOD.replace("workload = \"echo\"", "workload = \"ech0\""),
            "2:",
            &["unknown workload", "ech0"],
        ),
        (
            "unknown-fault-key.toml",
            GOOD.replace("bytes = [1, 8]", "bytes = [1, 8]\nbytez = 3"),
            "11:",
            &["unknown field", "bytez"],
        ),
        (
            "wrong-type.toml",
            GOOD.replace("bytes = [1, 8]", "bytes = \"eight\""),
            "10:",
            &["invalid type"],
        ),
        (
            "reversed-range.toml",
            GOOD.replace("bytes = [1, 8]", "bytes = [8, 1]"),
            "10:",
            &["faults.send_buffer.bytes", "ends before it starts"],
        ),
        (
            "bad-probability.toml",
            GOOD.replace("bytes = [1, 8]", "bytes = [1, 8]\nprobability = 1.5"),
            "11:",
            &["probability", "within 0..=1"],
        ),
        (
            "unknown-fault-kind.toml",
            format!("{GOOD}\n[faults.teleport]\nhosts = [\"x\"]\n"),
            "",
            &["unknown field", "teleport"],
        ),
        (
            "unknown-param.toml",
            GOOD.replace("messages = 3", "messages = 3\nclientz = 2"),
            "7:",
            &["unknown field", "clientz"],
        ),
        (
            "param-out-of-range.toml",
            GOOD.replace("clients = 1", "clients = 0"),
            "5:",
            &["params.clients", "1..="],
        ),
        (
            "param-wrong-type.toml",
            GOOD.replace("clients = 1", "clients = \"two\""),
            "5:",
            &["params", "invalid type"],
        ),
        (
            "nested-unknown-param.toml",
            KV.replace("ops = 5", "ops = 5\nclientz = 2"),
            "10:",
            &["params.traffic", "unknown field", "clientz"],
        ),
        (
            "nested-param-out-of-range.toml",
            KV.replace("ops = 5", "ops = 0"),
            "9:",
            &["params.traffic.ops", "1..="],
        ),
        (
            "nested-param-wrong-type.toml",
            KV.replace("workers = 1", "workers = \"x\""),
            "5:",
            &["params.node.workers", "invalid type"],
        ),
        (
            "missing-param-table.toml",
            KV.replace("[params.traffic]\nclients = 2\nops = 5\n", ""),
            "",
            &["missing field", "traffic"],
        ),
        (
            "zero-tick.toml",
            format!("{GOOD}\n[sim]\ntick_ms = 0\n"),
            "16:",
            &["sim.tick_ms", "at least 1"],
        ),
        (
            "bad-race-strategy.toml",
            format!("{GOOD}\n[[faults.race]]\npoints = [\"x\"]\nstrategies = [\"chaos\"]\n"),
            "17:",
            &["unknown strategy", "chaos"],
        ),
        (
            "expect-without-oracle.toml",
            GOOD.replace(
                "fails = [{ seed = 0, oracle = \"echo-check\" }]",
                "fails = [{ seed = 0 }]",
            ),
            "",
            &["missing field", "oracle"],
        ),
        (
            "bad-percentile.toml",
            format!(
                "{GOOD}\n[[oracles.latency]]\nmetric = \"w\"\npercentile = 150.0\nmax_ms = 1\n"
            ),
            "15:",
            &["percentile", "0..=100"],
        ),
    ]
}

#[test]
fn malformed_scenario_files_get_one_line_naming_file_line_and_problem() {
    let registry = faultline::registry();
    let dir = temp_dir("malformed");
    let cases = cases();
    assert!(cases.len() >= 10);
    let mut problems = Vec::new();
    for (name, text, position, words) in &cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| registry.load_file(&path)));
        let error = match result {
            Err(_) => {
                problems.push(format!("{name}: loading panicked"));
                continue;
            }
            Ok(Ok(_)) => {
                problems.push(format!("{name}: a malformed file was accepted"));
                continue;
            }
            Ok(Err(e)) => e,
        };
        let prefix = format!("{}:", path.display());
        let rest = error.strip_prefix(&prefix).unwrap_or("");
        let line_ok = rest
            .split_once(':')
            .is_some_and(|(line, _)| line.parse::<u32>().is_ok());
        if error.lines().count() != 1 || rest.is_empty() || !line_ok || !rest.starts_with(position)
        {
            problems.push(format!(
                "{name}: expected one line `FILE:{position}...`, got: {error}"
            ));
        }
        for word in *words {
            if !error.contains(word) {
                problems.push(format!("{name}: expected `{word}` in: {error}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_good_file_loads() {
    let registry = faultline::registry();
    let dir = temp_dir("good");
    let path = dir.join("fine.toml");
    std::fs::write(&path, GOOD).unwrap();
    let scenario = registry.load_file(&path).expect("the good file loads");
    assert_eq!(scenario.name, "fine");
    std::fs::remove_dir_all(&dir).ok();
}

fn faultline(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["--scenarios", dir.to_str().unwrap()])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

#[test]
fn copying_a_scenario_under_a_new_name_adds_it_and_deleting_removes_it_without_a_rebuild() {
    let dir = temp_dir("discovery");
    let original = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/echo-partial-write.toml"
    ))
    .unwrap();
    std::fs::write(dir.join("echo-partial-write.toml"), &original).unwrap();
    // A copy with other fault ranges: a bigger send buffer, still short.
    let copy = original.replace("bytes = [1, 8]", "bytes = [16, 32]");
    std::fs::write(dir.join("echo-bigger-buffer.toml"), &copy).unwrap();
    let listed = String::from_utf8(faultline(&dir, &["list"]).stdout).unwrap();
    assert!(
        listed.lines().any(|l| l.starts_with("echo-bigger-buffer ")),
        "{listed}"
    );
    let run = faultline(
        &dir,
        &[
            "run",
            "echo-bigger-buffer",
            "--variant",
            "buggy",
            "--seed",
            "0",
        ],
    );
    assert_eq!(run.status.code(), Some(1));
    let out = String::from_utf8(run.stdout).unwrap();
    assert!(out.contains("send_buffer server="), "{out}");
    assert!(out.lines().last().unwrap().contains("oracle=echo-check"));
    std::fs::remove_file(dir.join("echo-bigger-buffer.toml")).unwrap();
    let listed = String::from_utf8(faultline(&dir, &["list"]).stdout).unwrap();
    assert!(!listed.contains("echo-bigger-buffer"), "{listed}");
    let gone = faultline(&dir, &["run", "echo-bigger-buffer"]);
    assert_eq!(gone.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bad_file_in_the_directory_is_reported_by_list_with_exit_2() {
    let dir = temp_dir("bad-list");
    std::fs::write(dir.join("ok.toml"), GOOD).unwrap();
    std::fs::write(dir.join("broken.toml"), "summary = \"x\"\nworkload = 3\n").unwrap();
    let out = faultline(&dir, &["list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stdout).unwrap().contains("ok "));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("broken.toml:2:"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_host_glob_that_matches_no_host_is_an_error_naming_the_file_line_column_and_the_hosts() {
    let dir = temp_dir("typo-host");
    let original = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/MB-24634-write-buffer-reuse.toml"
    ))
    .unwrap();
    // A typo for `kv`: the fault would silently never apply.
    let typo = original.replace("hosts = [\"kv\"]", "hosts = [\"kvv\"]");
    assert_ne!(typo, original);
    let file = dir.join("typo.toml");
    std::fs::write(&file, &typo).unwrap();
    let line = typo
        .lines()
        .position(|l| l.contains("\"kvv\""))
        .expect("the typo's line")
        + 1;
    for args in [
        &["run", "typo", "--seed", "0"][..],
        &["sweep", "typo", "--seeds", "0..3"][..],
    ] {
        let out = faultline(&dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains(&format!(
                "typo.toml:{line}:11: faults.send_buffer.hosts: `kvv` matches no host"
            )),
            "{err}"
        );
        assert!(err.contains("(hosts: kv, client-0"), "{err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_sweep_that_never_reaches_a_required_point_fails_with_a_clear_line() {
    let dir = temp_dir("reaches");
    let unreachable = GOOD.replace(
        "[expect]\n",
        "[expect]\nreaches = [\"send_buffer:short_write\", \"probe:never-reached\"]\n",
    );
    std::fs::write(dir.join("unreachable.toml"), &unreachable).unwrap();
    let out = faultline(&dir, &["sweep", "unreachable", "--seeds", "0..3"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("reaches: no run of unreachable reached `probe:never-reached`"),
        "{text}"
    );
    assert!(
        !text.contains("`send_buffer:short_write`"),
        "that one was reached: {text}"
    );
    assert!(
        text.ends_with("sweep: 3 passed, 0 failed, 1 required point(s) never reached\n"),
        "{text}"
    );
    // Without faults nothing is required.
    let off = faultline(
        &dir,
        &["sweep", "unreachable", "--seeds", "0..3", "--faults", "off"],
    );
    assert_eq!(off.status.code(), Some(0));
    // Nor with a plan given by hand: it is not the scenario's fault space.
    // (It is a plan `shrink` could leave: the send buffer fault alone.)
    let plan = dir.join("plan.toml");
    std::fs::write(&plan, "[[send_buffer]]\nhost = \"server\"\nbytes = 1\n").unwrap();
    let planned = faultline(
        &dir,
        &[
            "sweep",
            "unreachable",
            "--seeds",
            "0..3",
            "--plan",
            plan.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8(planned.stdout).unwrap();
    assert_eq!(planned.status.code(), Some(0), "{text}");
    assert!(
        text.contains("send_buffer:short_write"),
        "the plan ran: {text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

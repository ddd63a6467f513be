//! Seeds draw the plans they always drew.
//!
//! A seed recorded in a bug report, a README table or a scenario's
//! `[expect]` stands for the plan it draws: the draw of a plan from a
//! `FaultSpace` (and the swarm drawn from it, and the path a shrink takes
//! through it) is part of every recorded seed. This test pins them: for each
//! space below and seeds 0..50 it hashes (xxh3) what the seed draws, and
//! compares with `fault_draws.golden`. A change that moves a seed's plan
//! fails here.
//!
//! The spaces are the synthetic ones written below (every fault kind, every
//! option), and the `[faults]` tables of the `*.toml` files under the
//! workspace's `scenarios/`, if there is one: those are keyed by the hash of
//! the space, not by the file, so the harness names nothing of them, and a
//! scenario whose space changed (or is new) is only reported as unchecked.
//!
//! `FAULT_DRAWS_BLESS=1 cargo test -p faultline-harness --test harness fault_draws::`
//! rewrites the golden file: only when a change of the draws is meant (it
//! changes what every recorded seed means).

use faultline_harness::faults::{FaultPlan, FaultSpace, PlanTree};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::xxh3_64;

const SEEDS: u64 = 50;

/// Synthetic spaces: together they switch on every kind and every option a
/// space has, at probabilities 0, between and 1.
const SPACES: &[(&str, &str)] = &[
    (
        "every-kind",
        r#"
        [send_buffer]
        hosts = ["server", "client-*"]
        bytes = [1, 9000]
        [segmentation]
        from = ["*", "server"]
        to = ["client-*", "proxy"]
        max_segment_bytes = [1, 4096]
        [[frame_delay]]
        from = "server"
        to = "client-*"
        frame = "res:*"
        nth = [1, 5]
        delay_ms = [0, 300]
        [[frame_delay]]
        from = "*"
        to = "proxy"
        frame = "req:GET"
        hold_until = "frame:a->b:res:SET"
        max_hold_ms = 500
        probability = 0.5
        [errno]
        hosts = ["proxy", "server"]
        personalities = ["linux", "illumos", "openbsd", "linux-2.6.35"]
        [pipe]
        hosts = ["proxy", "*"]
        capacity_bytes = [4096, 1048576]
        [[race]]
        points = ["*", "mutex.lock", "cond.*"]
        [[race]]
        points = ["atomic.*"]
        strategies = ["targeted"]
        nth = [1, 9]
        yields = [0, 3]
        sleep_us = [0, 50]
        probability = 0.7
        [partition]
        pairs = [["a", "b"], ["client-*", "server"]]
        at_ms = [0, 5000]
        duration_ms = [10, 2000]
        [latency]
        pairs = [["a", "b"], ["*", "server"]]
        at_ms = [100, 4000]
        max_ms = [1, 200]
        [crash]
        hosts = ["server", "kv-*"]
        at_ms = [0, 3000]
        down_ms = [1, 900]
        [[switch]]
        name = "one.thing"
        [[switch]]
        name = "other.thing"
        host = "client-*"
        rate = [0.1, 0.9]
        nth = [1, 20]
        probability = 0.4
        "#,
    ),
    (
        "halves",
        r#"
        [send_buffer]
        hosts = ["*"]
        bytes = [1024, 8192]
        probability = 0.5
        [segmentation]
        from = ["kv-*"]
        to = ["proxy"]
        max_segment_bytes = [256, 4096]
        probability = 0.5
        [[frame_delay]]
        from = "a"
        to = "b"
        frame = "x"
        delay_ms = [5, 5]
        probability = 0.5
        [errno]
        hosts = ["proxy"]
        personalities = ["openbsd"]
        probability = 0.5
        [pipe]
        hosts = ["proxy"]
        capacity_bytes = [4096, 65536]
        probability = 0.5
        [[race]]
        points = ["*"]
        strategies = ["random", "pct", "targeted"]
        yield_probability = [0.2, 0.2]
        spurious_wakeup = [0.0, 0.5]
        depth = [2, 6]
        probability = 0.5
        [partition]
        pairs = [["a", "b"]]
        at_ms = [0, 100]
        duration_ms = [0, 100]
        mode = "hold"
        probability = 0.5
        [latency]
        pairs = [["a", "b"]]
        at_ms = [0, 0]
        max_ms = [7, 7]
        probability = 0.5
        [crash]
        hosts = ["server"]
        at_ms = [10, 20]
        mode = "process"
        probability = 0.5
        [[switch]]
        name = "s"
        rate = [0.3, 0.3]
        nth = [2, 2]
        probability = 0.5
        "#,
    ),
    (
        "never",
        r#"
        [send_buffer]
        hosts = ["*"]
        bytes = [1, 2]
        probability = 0.0
        [[race]]
        points = ["*"]
        strategies = ["pct"]
        probability = 0.0
        [crash]
        hosts = ["server"]
        at_ms = [10, 20]
        down_ms = [5, 5]
        probability = 0.0
        [[switch]]
        name = "s"
        probability = 0.0
        "#,
    ),
    (
        "pipe-alone",
        r#"
        [pipe]
        hosts = ["proxy"]
        capacity_bytes = [4096, 8192]
        "#,
    ),
    (
        "races",
        r#"
        [[race]]
        points = ["sched.*"]
        strategies = ["pct"]
        [[race]]
        points = ["mutex.*", "rwlock.*"]
        strategies = ["random"]
        sleep_us = [0, 0]
        probability = 0.9
        [[race]]
        points = ["*"]
        strategies = ["targeted", "random"]
        probability = 0.3
        "#,
    ),
    ("empty", ""),
];

/// Everything a seed draws from `space`, as text: the plan and what is
/// printed of it, the swarm and its plan, and a shrink's path.
fn draws(space: &FaultSpace, seed: u64) -> String {
    let mut out = String::new();
    let plan = space.draw(seed).current();
    describe(&mut out, &plan);
    let swarm = space.swarm(seed);
    describe_space(&mut out, &swarm);
    describe(&mut out, &swarm.draw(seed).current());
    shrink_walk(&mut out, space.draw(seed));
    shrink_walk(&mut out, swarm.draw(seed));
    out
}

fn describe(out: &mut String, plan: &FaultPlan) {
    let json = serde_json::to_string(plan).unwrap();
    let valid = plan.validate();
    let globs = plan.host_globs();
    let _ = writeln!(
        out,
        "plan {json}\n{}\n{} {valid:?} {globs:?}",
        plan.summary(),
        plan.len()
    );
}

fn describe_space(out: &mut String, space: &FaultSpace) {
    let json = serde_json::to_string(space).unwrap();
    let _ = writeln!(
        out,
        "space {json}\n{:?} {:?} {:?} {:?}",
        space.kinds(),
        space.validate(),
        space.host_globs(),
        space.applied_keys()
    );
}

/// A shrink as `runner::shrink` drives one, with an oracle that answers by
/// the plan's hash, and a few moves past the end.
fn shrink_walk(out: &mut String, mut tree: PlanTree) {
    let mut passed = false;
    for _ in 0..100 {
        let moved = if passed {
            tree.complicate()
        } else {
            tree.simplify()
        };
        let json = serde_json::to_string(&tree.current()).unwrap();
        let _ = writeln!(out, "{moved} {json}");
        if !moved && !passed {
            break;
        }
        passed = moved && xxh3_64(json.as_bytes()) % 3 == 0;
    }
    for complicate in [true, false, true, false] {
        let moved = if complicate {
            tree.complicate()
        } else {
            tree.simplify()
        };
        let _ = writeln!(
            out,
            "{moved} {}",
            serde_json::to_string(&tree.current()).unwrap()
        );
    }
}

fn space_key(space: &FaultSpace) -> String {
    format!(
        "space-{:016x}",
        xxh3_64(serde_json::to_string(space).unwrap().as_bytes())
    )
}

/// The `[faults]` table of every scenario file of the workspace, if the
/// harness is in one that has them.
fn catalog_spaces() -> Vec<(PathBuf, FaultSpace)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        let Some(faults) = table.get("faults") else {
            continue;
        };
        let space: FaultSpace = faults.clone().try_into().unwrap();
        out.push((path, space));
    }
    out
}

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/harness/fault_draws.golden")
}

#[test]
fn seeds_draw_the_plans_they_always_drew() {
    let mut spaces: Vec<(String, FaultSpace)> = SPACES
        .iter()
        .map(|(name, text)| (name.to_string(), toml::from_str(text).unwrap()))
        .collect();
    let synthetic = spaces.len();
    let mut drawn = std::collections::BTreeSet::new();
    for (key, space) in &spaces {
        space.validate().unwrap_or_else(|e| panic!("{key}: {e}"));
        for seed in 0..SEEDS {
            let plan = serde_json::to_value(space.draw(seed).current()).unwrap();
            drawn.extend(plan.as_object().unwrap().keys().cloned());
        }
    }
    assert_eq!(
        drawn.len(),
        10,
        "the synthetic spaces draw every kind: {drawn:?}"
    );
    for (_, space) in catalog_spaces() {
        let key = space_key(&space);
        if !spaces.iter().any(|(k, _)| *k == key) {
            spaces.push((key, space));
        }
    }
    let mut now: BTreeMap<(String, u64), String> = BTreeMap::new();
    for (key, space) in &spaces {
        for seed in 0..SEEDS {
            let hash = xxh3_64(draws(space, seed).as_bytes());
            now.insert((key.clone(), seed), format!("{hash:016x}"));
        }
    }
    let path = golden_path();
    if std::env::var_os("FAULT_DRAWS_BLESS").is_some() {
        let mut text =
            String::from("# space seed xxh3-of-what-the-seed-draws (see fault_draws.rs)\n");
        for ((key, seed), hash) in &now {
            let _ = writeln!(text, "{key} {seed} {hash}");
        }
        std::fs::write(&path, text).unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path).expect("tests/harness/fault_draws.golden");
    let mut golden: BTreeMap<(String, u64), String> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut words = line.split_whitespace();
        let (Some(key), Some(seed), Some(hash)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        golden.insert((key.to_string(), seed.parse().unwrap()), hash.to_string());
    }
    let mut changed = Vec::new();
    let mut unchecked = Vec::new();
    for (i, (key, space)) in spaces.iter().enumerate() {
        for seed in 0..SEEDS {
            let hash = &now[&(key.clone(), seed)];
            match golden.get(&(key.clone(), seed)) {
                Some(old) if old == hash => {}
                Some(_) => changed.push(format!(
                    "{key} seed {seed} now draws:\n{}",
                    space.draw(seed).current().to_toml()
                )),
                None if i < synthetic => {
                    changed.push(format!("{key} seed {seed}: not in the golden file"))
                }
                None => {
                    unchecked.push(key.clone());
                    break;
                }
            }
        }
    }
    if !unchecked.is_empty() {
        eprintln!(
            "scenario spaces not in the golden file (new or changed; unchecked): {unchecked:?}"
        );
    }
    assert!(
        changed.is_empty(),
        "{} seeds draw other plans than before:\n{}",
        changed.len(),
        changed.join("\n")
    );
}

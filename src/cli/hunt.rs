//! `faultline hunt`: find the catalog's bugs blind.
//!
//! The scenarios without a bug (by default all of them, `whole-system`
//! first: clients, the proxy, kv nodes, the DCP consumer and a rebalance at
//! once) run with one bug's old lines switched on at a time, and every seed
//! draws its faults swarm-style: a random subset of the scenario's fault
//! kinds, at random rates. Nothing comes from the bug's own scenario file.
//! The scenarios take turns over chunks of seeds that double in size, so a
//! bug that only one scenario's environment reaches is found after a few
//! times the seeds it needs there, not after the whole range elsewhere.
//! For each bug the hunt reports the scenario and first seed that failed,
//! how many runs and how much wall time that took, and the oracle that
//! caught it. A finding is confirmed by running the same seed and plan with
//! every fix in: if that fails too, it was not the bug (a false alarm,
//! reported) and the hunt goes on.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use faultline::bugs;
use faultline_harness::SeedRange;
use faultline_harness::{Faults, RunOptions, SweepOptions};
use faultline_harness::{Scenario, Variant, Verdict};
use serde::Serialize;

use super::{Result, parse_seeds};

#[derive(Debug, Clone, clap::Args)]
pub struct HuntArgs {
    /// Half-open seed range to search, e.g. 0..20000.
    #[arg(long, value_parser = parse_seeds)]
    seeds: SeedRange,
    /// Hunt in this scenario only (default: every scenario without a bug).
    #[arg(long)]
    scenario: Option<String>,
    /// Only these bugs (default: the whole catalog).
    #[arg(long = "bug", value_name = "ID", value_parser = super::parse_bug)]
    bugs: Vec<String>,
    /// Worker threads (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// One JSON object per bug instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Finding {
    bug: String,
    found: bool,
    scenario: Option<String>,
    seed: Option<u64>,
    /// Simulations run, over every scenario, until the finding.
    runs: u64,
    oracle: Option<String>,
    message: Option<String>,
    replay: Option<String>,
    /// `scenario seed` of each failure the fixed variant shared.
    false_alarms: Vec<String>,
    wall_ms: u128,
}

pub fn hunt(
    app: &faultline_harness::cli::App,
    dir: Option<&std::path::Path>,
    args: HuntArgs,
) -> Result<ExitCode> {
    let scenarios = match &args.scenario {
        Some(name) => vec![app.load_one(dir, name)?],
        None => hunting_grounds(app.load_all(dir)?),
    };
    let jobs = args
        .jobs
        .unwrap_or_else(faultline_harness::default_jobs)
        .max(1);
    let ids: Vec<String> = if args.bugs.is_empty() {
        bugs::ALL.iter().map(|id| id.to_string()).collect()
    } else {
        args.bugs.clone()
    };
    let names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
    eprintln!("hunt: in {}", names.join(", "));
    let mut findings = Vec::new();
    for id in &ids {
        let finding = hunt_one(&scenarios, id, args.seeds, jobs);
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&finding).expect("findings serialise")
            );
        }
        findings.push(finding);
    }
    if !args.json {
        print_table(&findings, args.seeds);
    }
    let found = findings.iter().filter(|f| f.found).count();
    println!("hunt: found {found}/{} bugs", findings.len());
    Ok(if found == findings.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The scenario hunted in first: it runs every component at once.
const FIRST_SCENARIO: &str = "whole-system";

/// Seeds each scenario runs in the first turn; every turn doubles it.
const FIRST_CHUNK_SEEDS: u64 = 50;

/// The scenarios a blind hunt may use: those without a bug of their own
/// (a bug's scenario would be a hint), `whole-system` first, then by name.
fn hunting_grounds(mut scenarios: Vec<Scenario>) -> Vec<Scenario> {
    scenarios.retain(|s| s.bug().is_none());
    scenarios.sort_by(|a, b| {
        (a.name != FIRST_SCENARIO, &a.name).cmp(&(b.name != FIRST_SCENARIO, &b.name))
    });
    scenarios
}

/// Searches the range for the first confirmed failure of one bug, the
/// scenarios taking turns over chunks of seeds that double each turn.
fn hunt_one(scenarios: &[Scenario], id: &str, range: SeedRange, jobs: usize) -> Finding {
    assert!(!scenarios.is_empty(), "a hunt needs a scenario");
    // Wall time of the search, for the report (outside any simulation).
    let start = Instant::now();
    let mut options = SweepOptions::new(RunOptions {
        bug: Some(id.to_string()),
        ..RunOptions::new(Variant::Buggy).faults(Faults::Swarm)
    });
    options.jobs = jobs;
    options.progress = Some(std::sync::Arc::new(faultline_harness::cli::Bar::default()));
    let mut finding = Finding {
        bug: id.to_string(),
        found: false,
        scenario: None,
        seed: None,
        runs: 0,
        oracle: None,
        message: None,
        replay: None,
        false_alarms: Vec::new(),
        wall_ms: 0,
    };
    let mut chunk_start = range.start;
    let mut chunk_seeds = FIRST_CHUNK_SEEDS;
    'turns: while chunk_start < range.end {
        let chunk_end = chunk_start.saturating_add(chunk_seeds).min(range.end);
        for scenario in scenarios {
            if search_chunk(scenario, id, chunk_start..chunk_end, &options, &mut finding) {
                break 'turns;
            }
        }
        chunk_start = chunk_end;
        chunk_seeds = chunk_seeds.saturating_mul(2);
    }
    finding.wall_ms = start.elapsed().as_millis();
    finding
}

/// Sweeps one chunk of one scenario; true once a confirmed failure is
/// recorded in `finding`. Failures that the fixed variant shares are false
/// alarms: recorded, and the chunk goes on after them.
fn search_chunk(
    scenario: &Scenario,
    id: &str,
    chunk: std::ops::Range<u64>,
    options: &SweepOptions,
    finding: &mut Finding,
) -> bool {
    let mut next = chunk.start;
    while next < chunk.end {
        let seeds: Vec<u64> = (next..chunk.end).collect();
        let report = faultline_harness::sweep(scenario, &seeds, options);
        let Some(failure) = report.failures.first() else {
            finding.runs += chunk.end - next;
            return false;
        };
        // The lowest failing seed: every seed below it ran (workers take
        // seeds in order), so the answer does not depend on the jobs.
        let seed = failure.seed;
        finding.runs += seed - next + 1;
        let confirm = faultline_harness::run(
            scenario,
            seed,
            &RunOptions::new(Variant::Fixed).faults(Faults::Swarm),
        );
        if !confirm.verdict.is_pass() {
            eprintln!(
                "hunt {id}: {} seed {seed} also fails with every fix in ({}); not the bug",
                scenario.name,
                confirm.verdict_line()
            );
            finding
                .false_alarms
                .push(format!("{} {seed}", scenario.name));
            next = seed + 1;
            continue;
        }
        finding.found = true;
        finding.scenario = Some(scenario.name.clone());
        finding.seed = Some(seed);
        if let Verdict::Fail { oracle, message } = &failure.verdict {
            finding.oracle = Some(oracle.clone());
            finding.message = Some(message.clone());
        }
        finding.replay = Some(failure.replay_command());
        return true;
    }
    false
}

fn print_table(findings: &[Finding], range: SeedRange) {
    println!(
        "{:<18} {:<6} {:<20} {:>8} {:>12} {:>9}  oracle",
        "bug", "found", "scenario", "seed", "runs", "wall s"
    );
    for f in findings {
        println!(
            "{:<18} {:<6} {:<20} {:>8} {:>12} {:>9.1}  {}",
            f.bug,
            if f.found { "yes" } else { "no" },
            f.scenario.as_deref().unwrap_or("-"),
            f.seed.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            f.runs,
            Duration::from_millis(f.wall_ms as u64).as_secs_f64(),
            f.oracle.as_deref().unwrap_or("-"),
        );
    }
    for f in findings {
        if let (Some(replay), Some(message)) = (&f.replay, &f.message) {
            println!("{}: {message}", f.bug);
            println!("    replay: {replay}");
        } else if !f.found {
            println!("{}: not found in seeds {range}", f.bug);
        }
        if !f.false_alarms.is_empty() {
            println!(
                "    false alarms (failed with every fix in too): {}",
                f.false_alarms.join(", ")
            );
        }
    }
}

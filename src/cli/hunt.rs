//! `faultline hunt`: find the catalog's bugs blind.
//!
//! One scenario (by default `whole-system`: clients, the proxy, kv nodes,
//! the DCP consumer and a rebalance at once) runs with one bug's old lines
//! switched on at a time, and every seed draws its faults swarm-style: a
//! random subset of the scenario's fault kinds, at random rates. Nothing
//! comes from the bug's own scenario file. For each bug the hunt reports
//! the first seed that failed, how many seeds and how much wall time that
//! took, and the oracle that caught it. A finding is confirmed by running
//! the same seed and plan with every fix in: if that fails too, it was not
//! the bug (a false alarm, reported) and the hunt goes on.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use faultline::bugs;
use faultline_harness::runner::{self, Faults, RunOptions, SweepOptions};
use faultline_harness::seed::SeedRange;
use faultline_harness::{Scenario, Variant, Verdict};
use serde::Serialize;

use super::{Result, parse_seeds};

#[derive(Debug, Clone, clap::Args)]
pub struct HuntArgs {
    /// Half-open seed range to search, e.g. 0..20000.
    #[arg(long, value_parser = parse_seeds)]
    seeds: SeedRange,
    /// The scenario to hunt in.
    #[arg(long, default_value = "whole-system")]
    scenario: String,
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
    seed: Option<u64>,
    seeds_tried: u64,
    oracle: Option<String>,
    message: Option<String>,
    replay: Option<String>,
    false_alarms: Vec<u64>,
    wall_ms: u128,
}

pub fn hunt(
    app: &faultline_harness::cli::App,
    dir: Option<&std::path::Path>,
    args: HuntArgs,
) -> Result<ExitCode> {
    let scenario = app.load_one(dir, &args.scenario)?;
    let jobs = args.jobs.unwrap_or_else(runner::default_jobs).max(1);
    let ids: Vec<String> = if args.bugs.is_empty() {
        let mut ids = Vec::new();
        for id in bugs::ALL {
            match NOT_IN_WHOLE_SYSTEM.iter().find(|(skip, _)| *skip == id) {
                Some((_, why)) if args.scenario == "whole-system" => {
                    eprintln!(
                        "hunt {id}: not hunted in whole-system ({why}); `--bug {id}` tries anyway"
                    );
                }
                _ => ids.push(id.to_string()),
            }
        }
        ids
    } else {
        args.bugs.clone()
    };
    let mut findings = Vec::new();
    for id in &ids {
        let finding = hunt_one(&scenario, id, args.seeds, jobs);
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

/// Bugs whose trigger is outside `whole-system`'s fault space, with why:
/// hunting them there would only spend the whole seed range.
const NOT_IN_WHOLE_SYSTEM: &[(&str, &str)] = &[(
    bugs::HAP_CONNERR,
    "its trigger, a kv process dying while connect checks run, is not in that scenario: its kv nodes stay up and its checks ask STAT",
)];

/// Searches the range for the first confirmed failure of one bug.
fn hunt_one(scenario: &Scenario, id: &str, range: SeedRange, jobs: usize) -> Finding {
    // Wall time of the search, for the report (outside any simulation).
    let start = Instant::now();
    let mut options = SweepOptions::new(RunOptions {
        bug: Some(id.to_string()),
        ..RunOptions::new(Variant::Buggy).faults(Faults::Swarm)
    });
    options.jobs = jobs;
    options.progress = true;
    let mut finding = Finding {
        bug: id.to_string(),
        found: false,
        seed: None,
        seeds_tried: 0,
        oracle: None,
        message: None,
        replay: None,
        false_alarms: Vec::new(),
        wall_ms: 0,
    };
    let mut next = range.start;
    while next < range.end {
        let seeds: Vec<u64> = (next..range.end).collect();
        let report = runner::sweep(scenario, &seeds, &options);
        let Some(failure) = report.failures.first() else {
            finding.seeds_tried = range.len();
            break;
        };
        // The lowest failing seed: every seed below it ran (workers take
        // seeds in order), so the answer does not depend on the jobs.
        let seed = failure.seed;
        let confirm = runner::run(
            scenario,
            seed,
            &RunOptions::new(Variant::Fixed).faults(Faults::Swarm),
        );
        if !confirm.verdict.is_pass() {
            eprintln!(
                "hunt {id}: seed {seed} also fails with every fix in ({}); not the bug",
                confirm.verdict_line()
            );
            finding.false_alarms.push(seed);
            next = seed + 1;
            continue;
        }
        finding.found = true;
        finding.seed = Some(seed);
        finding.seeds_tried = seed - range.start + 1;
        if let Verdict::Fail { oracle, message } = &failure.verdict {
            finding.oracle = Some(oracle.clone());
            finding.message = Some(message.clone());
        }
        finding.replay = Some(failure.replay_command());
        break;
    }
    finding.wall_ms = start.elapsed().as_millis();
    finding
}

fn print_table(findings: &[Finding], range: SeedRange) {
    println!(
        "{:<14} {:<6} {:>8} {:>12} {:>9}  oracle",
        "bug", "found", "seed", "seeds tried", "wall s"
    );
    for f in findings {
        println!(
            "{:<14} {:<6} {:>8} {:>12} {:>9.1}  {}",
            f.bug,
            if f.found { "yes" } else { "no" },
            f.seed.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            f.seeds_tried,
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
            let seeds: Vec<String> = f.false_alarms.iter().map(u64::to_string).collect();
            println!(
                "    false alarms (failed with every fix in too): {}",
                seeds.join(" ")
            );
        }
    }
}

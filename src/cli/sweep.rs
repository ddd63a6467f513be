//! `faultline sweep`, `check-determinism` and `shrink`.

use std::path::PathBuf;
use std::process::ExitCode;

use faultline_harness::Variant;
use faultline_harness::runner::{self, SweepOptions};
use faultline_harness::seed::SeedRange;

use super::{Result, VariantArgs, load_one, parse_seeds};

#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    scenario: String,
    /// Half-open seed range, e.g. 0..1000.
    #[arg(long, value_parser = parse_seeds)]
    seeds: SeedRange,
    #[command(flatten)]
    variant: VariantArgs,
    /// Worker threads (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Go on after the first failure.
    #[arg(long)]
    keep_going: bool,
}

pub fn sweep(dir: &Option<PathBuf>, args: SweepArgs) -> Result<ExitCode> {
    let scenario = load_one(dir, &args.scenario)?;
    let run_options = args.variant.options()?;
    let seeds: Vec<u64> = args.seeds.iter().collect();
    let mut options = SweepOptions::new(run_options);
    options.jobs = args.jobs.unwrap_or_else(runner::default_jobs).max(1);
    options.keep_going = args.keep_going;
    options.progress = true;
    let report = runner::sweep(&scenario, &seeds, &options);
    print_coverage(&report.coverage, report.seeds_run);
    if let Some(first) = report.failures.first() {
        print!("{}", first.report());
        if report.failures.len() > 1 {
            let seeds: Vec<String> = report.failures.iter().map(|o| o.seed.to_string()).collect();
            println!("failing seeds: {}", seeds.join(" "));
        }
        println!("first failing seed: {}", first.seed);
        println!("replay: {}", first.replay_command());
    }
    println!(
        "seeds/s: {:.1} (wall {:.2} s, {} jobs)",
        report.seeds_run as f64 / report.wall_time.as_secs_f64().max(1e-9),
        report.wall_time.as_secs_f64(),
        options.jobs
    );
    println!("{}", report.summary_line());
    Ok(if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Per fault point, race point and probe: how many runs reached it.
fn print_coverage(coverage: &std::collections::BTreeMap<String, u64>, runs: u64) {
    if coverage.is_empty() {
        println!("coverage: no fault point, race point or probe was reached");
        return;
    }
    println!("coverage (runs that reached each point, of {runs}):");
    for (point, count) in coverage {
        println!("    {count:>7}  {point}");
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct DeterminismArgs {
    scenario: String,
    #[arg(long, value_parser = parse_seeds)]
    seeds: SeedRange,
    #[command(flatten)]
    variant: VariantArgs,
    #[arg(long)]
    jobs: Option<usize>,
}

pub fn check_determinism(dir: &Option<PathBuf>, args: DeterminismArgs) -> Result<ExitCode> {
    let scenario = load_one(dir, &args.scenario)?;
    let options = args.variant.options()?;
    let seeds: Vec<u64> = args.seeds.iter().collect();
    let jobs = args.jobs.unwrap_or_else(runner::default_jobs).max(1);
    let report = runner::check_determinism(&scenario, &seeds, &options, jobs, true);
    for m in &report.mismatches {
        println!("seed {}: trace {} vs {}", m.seed, m.hashes.0, m.hashes.1);
        if let Some((line, a, b)) = &m.first_difference {
            println!("    first difference at line {line}:");
            println!("    run 1: {a}");
            println!("    run 2: {b}");
        }
    }
    println!("{}", report.summary_line());
    Ok(if report.mismatches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(Debug, Clone, clap::Args)]
pub struct ShrinkArgs {
    scenario: String,
    #[arg(long)]
    seed: u64,
    #[arg(long, default_value = "buggy", value_parser = super::parse_variant)]
    variant: Variant,
    /// Write the minimal plan here (TOML).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Runs the search may spend.
    #[arg(long, default_value_t = 200)]
    max_runs: u32,
}

pub fn shrink(dir: &Option<PathBuf>, args: ShrinkArgs) -> Result<ExitCode> {
    let scenario = load_one(dir, &args.scenario)?;
    match runner::shrink(&scenario, args.seed, args.variant, args.max_runs) {
        Err(outcome) => {
            println!("seed {} does not fail: nothing to shrink", args.seed);
            println!("{}", outcome.verdict_line());
            Ok(ExitCode::from(1))
        }
        Ok(report) => {
            println!("oracle: {} ({} runs)", report.oracle, report.runs);
            println!("before: {}", report.before.summary());
            println!("after:  {}", report.after.summary());
            let toml = report.after.to_toml();
            print!("{toml}");
            if let Some(path) = &args.out {
                std::fs::write(path, &toml).map_err(|e| format!("{}: {e}", path.display()))?;
                println!("plan written to {}", path.display());
                println!(
                    "replay: {} run {} --seed {} --variant {} --plan {}",
                    runner::REPLAY_PREFIX,
                    scenario.name,
                    args.seed,
                    args.variant,
                    path.display()
                );
            }
            println!("{}", report.summary_line());
            Ok(ExitCode::SUCCESS)
        }
    }
}

//! `sweep`, `check-determinism` and `shrink`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use super::app::App;
use super::args::{Result, VariantArgs, parse_seeds};
use crate::coverage;
use crate::runner::{self, Faults, RunOptions, SweepOptions};
use crate::seed::SeedRange;
use crate::stats::FailureRate;
use crate::variant::Variant;

/// `sweep`: a range of seeds.
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
    /// Run only the K-th of N disjoint parts of the range (1-based, e.g.
    /// 2/4); the N parts together are the whole range.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    shard: Option<Shard>,
    /// Print the result as one JSON line on stdout (the report goes to
    /// stderr); `faultline merge` combines the files of several shards.
    #[arg(long)]
    json: bool,
}

/// Part K (1-based) of N of a seed range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// K, 1-based.
    pub index: u64,
    /// N.
    pub count: u64,
}

fn parse_shard(text: &str) -> std::result::Result<Shard, String> {
    let bad = || format!("shard `{text}` must look like K/N with 1 <= K <= N");
    let (k, n) = text.split_once('/').ok_or_else(bad)?;
    let index: u64 = k.trim().parse().map_err(|_| bad())?;
    let count: u64 = n.trim().parse().map_err(|_| bad())?;
    if index == 0 || index > count {
        return Err(bad());
    }
    Ok(Shard { index, count })
}

/// What `sweep --json` prints: enough for `merge` to combine shards and to
/// tell whether together they covered the range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepSummary {
    /// The scenario's name.
    pub scenario: String,
    /// The variant swept.
    pub variant: Variant,
    /// `on`, `off`, or the plan file.
    pub faults: String,
    /// The whole range, `A..B`.
    pub seeds: String,
    /// Which part of the range this sweep ran.
    pub shard: Shard,
    /// Seeds this shard was given, and how many it ran (fewer when it
    /// stopped at a failure).
    pub shard_seeds: u64,
    /// Seeds run (see `shard_seeds`).
    pub seeds_run: u64,
    /// Seeds that passed.
    pub passed: u64,
    /// Seeds that failed, in order.
    pub failing_seeds: Vec<u64>,
    /// The first failure: its oracle, message and replay command.
    pub first_failure: Option<FailureSummary>,
    /// Per fault point, preemption point and probe: runs that reached it.
    pub coverage: BTreeMap<String, u64>,
    /// Per point: hits summed over the runs (`race-yield:NAME`: the times
    /// a task gave way there).
    #[serde(default)]
    pub hits: BTreeMap<String, u64>,
    /// With `--keep-going`: the failures over the seeds run, with the 95%
    /// interval of the rate.
    #[serde(default)]
    pub failure_rate: Option<FailureRate>,
    /// Clean seeds of a fixed variant that would give 95% confidence the
    /// bug behind these failures is gone.
    #[serde(default)]
    pub seeds_for_95: Option<u64>,
    /// Simulated time of all runs, in ms.
    pub sim_ms: u128,
    /// Wall time of the sweep, in ms.
    pub wall_ms: u128,
}

/// A failure as `sweep --json` reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureSummary {
    /// The failing seed.
    pub seed: u64,
    /// The oracle that fired.
    pub oracle: String,
    /// What it said.
    pub message: String,
    /// The command that replays it.
    pub replay: String,
}

pub(super) fn sweep(app: &App, dir: Option<&Path>, args: SweepArgs) -> Result<ExitCode> {
    let scenario = app.load_one(dir, &args.scenario)?;
    let run_options = app.options(&args.variant)?;
    let shard = args.shard.unwrap_or(Shard { index: 1, count: 1 });
    let seeds = args.seeds.shard(shard.index - 1, shard.count);
    let mut options = SweepOptions::new(run_options);
    options.jobs = args.jobs.unwrap_or_else(runner::default_jobs).max(1);
    options.keep_going = args.keep_going;
    options.progress = Some(std::sync::Arc::new(super::progress::Bar::default()));
    let report = runner::sweep(&scenario, &seeds, &options);
    if let Some(message) = report.failures.iter().find_map(|o| o.setup_error()) {
        return Err(super::args::Error::Usage(message.to_string()));
    }
    // With --json the human report goes to stderr, the JSON line to stdout.
    let mut human: Box<dyn Write> = if args.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let out = &mut human;
    let _ = print_coverage(out, &report.coverage, &report.hits, report.seeds_run);
    if let Some(first) = report.failures.first() {
        let _ = write!(out, "{}", first.report());
        if report.failures.len() > 1 {
            let seeds: Vec<String> = report.failures.iter().map(|o| o.seed.to_string()).collect();
            let _ = writeln!(out, "failing seeds: {}", seeds.join(" "));
        }
        let _ = writeln!(out, "first failing seed: {}", first.seed);
        let _ = writeln!(out, "replay: {}", first.replay_command());
    }
    let rate = args
        .keep_going
        .then(|| FailureRate::new(report.failed(), report.seeds_run));
    if let Some(rate) = rate.filter(|r| r.failed > 0) {
        let _ = writeln!(
            out,
            "failure rate: {} of {} seeds; {} clean seeds of a fix give 95% confidence",
            rate.display(),
            rate.runs,
            rate.seeds_for_95().unwrap_or(0)
        );
    }
    let _ = writeln!(
        out,
        "seeds/s: {:.1} (wall {:.2} s, {} jobs)",
        report.seeds_run as f64 / report.wall_time.as_secs_f64().max(1e-9),
        report.wall_time.as_secs_f64(),
        options.jobs
    );
    for what in &report.unapplied {
        let _ = writeln!(out, "fault never applied in this sweep: {what}");
    }
    for line in report.unreached_lines() {
        let _ = writeln!(out, "{line}");
    }
    if !report.without_mechanism.is_empty() {
        let _ = writeln!(
            out,
            "symptom without mechanism ({}): seeds {:?}",
            scenario.spec.expect.mechanism_names(),
            report.without_mechanism
        );
    }
    let _ = writeln!(out, "{}", report.summary_line());
    if args.json {
        let summary = SweepSummary {
            scenario: scenario.name.clone(),
            variant: args.variant.variant,
            faults: args.variant.faults_label(),
            seeds: args.seeds.to_string(),
            shard,
            shard_seeds: seeds.len() as u64,
            seeds_run: report.seeds_run,
            passed: report.passed,
            failing_seeds: report.failures.iter().map(|o| o.seed).collect(),
            first_failure: report.failures.first().map(|o| FailureSummary {
                seed: o.seed,
                oracle: o.verdict.oracle().unwrap_or_default().to_string(),
                message: match &o.verdict {
                    crate::runner::Verdict::Fail { message, .. } => message.clone(),
                    crate::runner::Verdict::Setup(error) => error.message.clone(),
                    crate::runner::Verdict::Pass => String::new(),
                },
                replay: o.replay_command(),
            }),
            coverage: report.coverage.clone(),
            hits: report.hits.clone(),
            failure_rate: rate,
            seeds_for_95: rate.and_then(|r| r.seeds_for_95()),
            sim_ms: report.sim_time.as_millis(),
            wall_ms: report.wall_time.as_millis(),
        };
        println!(
            "{}",
            serde_json::to_string(&summary).expect("a summary serialises")
        );
    }
    Ok(if report.is_pass() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Per fault point, preemption point and probe: how many runs reached it. A
/// preemption point's line (`race:NAME`) also says how often it was hit
/// and how often a task gave way there, over all runs, and in how many
/// runs it did.
pub fn print_coverage(
    out: &mut dyn Write,
    coverage: &BTreeMap<String, u64>,
    hits: &BTreeMap<String, u64>,
    runs: u64,
) -> std::io::Result<()> {
    if coverage.is_empty() {
        return writeln!(
            out,
            "coverage: no fault point, preemption point or probe was reached"
        );
    }
    writeln!(out, "coverage (runs that reached each point, of {runs}):")?;
    let mut points = 0;
    for (point, count) in coverage {
        if point.starts_with(coverage::RACE_YIELDS) {
            continue; // On its point's line.
        }
        match point.strip_prefix(coverage::RACE_HITS) {
            Some(name) => {
                points += 1;
                let yield_key = coverage::race_yields(name);
                writeln!(
                    out,
                    "    {count:>7}  {point}  ({} hits; gave way {} times, in {} runs)",
                    hits.get(point).copied().unwrap_or(0),
                    hits.get(&yield_key).copied().unwrap_or(0),
                    coverage.get(&yield_key).copied().unwrap_or(0),
                )?;
            }
            None => writeln!(out, "    {count:>7}  {point}")?,
        }
    }
    if points > 0 {
        writeln!(out, "preemption points reached: {points}")?;
    }
    Ok(())
}

/// `check-determinism`: each seed twice.
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

pub(super) fn check_determinism(
    app: &App,
    dir: Option<&Path>,
    args: DeterminismArgs,
) -> Result<ExitCode> {
    let scenario = app.load_one(dir, &args.scenario)?;
    let options = app.options(&args.variant)?;
    let seeds: Vec<u64> = args.seeds.iter().collect();
    let jobs = args.jobs.unwrap_or_else(runner::default_jobs).max(1);
    let first = runner::run(&scenario, seeds.first().copied().unwrap_or(0), &options);
    if let Some(message) = first.setup_error() {
        return Err(super::args::Error::Usage(message.to_string()));
    }
    let report = runner::check_determinism(
        &scenario,
        &seeds,
        &options,
        jobs,
        Some(&super::progress::Bar::default()),
    );
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

/// `shrink`: a failing run's smallest plan.
#[derive(Debug, Clone, clap::Args)]
pub struct ShrinkArgs {
    scenario: String,
    #[arg(long)]
    seed: u64,
    #[arg(long, default_value = "buggy", value_parser = super::args::parse_variant)]
    variant: Variant,
    /// Write the minimal plan here (TOML).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Runs the search may spend.
    #[arg(long, default_value_t = 200)]
    max_runs: u32,
    /// Where the failing run's plan came from: `on` (the scenario's space)
    /// or `swarm` (a `hunt` finding).
    #[arg(long, default_value = "on", value_parser = ["on", "swarm"])]
    faults: String,
    /// Run this bug's old lines instead of the scenario's own bug's.
    #[arg(long, value_name = "ID")]
    bug: Option<String>,
}

pub(super) fn shrink(app: &App, dir: Option<&Path>, args: ShrinkArgs) -> Result<ExitCode> {
    let scenario = app.load_one(dir, &args.scenario)?;
    let mut options = RunOptions::new(args.variant);
    options.bug = args.bug.as_deref().map(|b| app.bug(b)).transpose()?;
    options.replay = app.replay();
    if args.faults == "swarm" {
        options.faults = Faults::Swarm;
    }
    match runner::shrink(&scenario, args.seed, &options, args.max_runs) {
        Err(outcome) if outcome.setup_error().is_some() => Err(super::args::Error::Usage(
            outcome.setup_error().unwrap_or_default().to_string(),
        )),
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
                let bug = options
                    .bug
                    .map(|b| format!(" --bug {b}"))
                    .unwrap_or_default();
                println!(
                    "replay: {} run {} --seed {} --variant {}{bug} --plan {}",
                    app.replay_prefix,
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

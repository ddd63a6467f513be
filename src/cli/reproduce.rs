//! `faultline reproduce`: the 2×2 table of every bug, checked.
//!
//! For each bug scenario: replay its recorded seeds with the buggy variant
//! (each must fail with its recorded oracle), sweep the buggy variant with
//! faults on (how often it fails: the rate with its 95% interval, and the
//! clean seeds of the fixed variant that would prove the fix with 95%
//! confidence), sweep the buggy variant with faults off (must pass: the
//! bug stays latent), sweep the fixed variant with faults on (must pass;
//! at least the seeds that proof needs). For a race bug, sweep the buggy
//! variant once more under each of `random` and `pct` alone (200 seeds
//! each), for each strategy's own rate. Every failing seed of the buggy
//! sweeps must reach the scenario's `expect.mechanism`, else it is a
//! symptom without mechanism. Then one table row per scenario.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use faultline_harness::FailureRate;
use faultline_harness::{Faults, RunOptions, SweepOptions};
use faultline_harness::{Scenario, Variant, Verdict};
use serde::Serialize;

use super::{Error, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct ReproduceArgs {
    /// Bug ids or scenario names; all bugs when none is given.
    ids: Vec<String>,
    /// One JSON object per line (per bug) instead of the table.
    #[arg(long)]
    json: bool,
    /// Worker threads (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Seeds for the fixed variant's sweep (default: each scenario's
    /// `expect.fixed_seeds`, or more when the bug's failure rate needs more
    /// for 95% confidence).
    #[arg(long)]
    fixed_seeds: Option<u64>,
}

/// One row of the table.
#[derive(Debug, Serialize)]
struct Row {
    bug: String,
    scenario: String,
    component: String,
    trigger: String,
    reproduced: bool,
    oracle: String,
    seed: Option<u64>,
    sim_ms_to_failure: Option<u128>,
    trace: Option<String>,
    /// The buggy variant with faults on, over the latent sweep's seeds.
    failure_rate: Option<FailureRate>,
    /// A race bug's buggy variant with every race rule drawing only
    /// `random`, then only `pct` ([`STRATEGY_SEEDS`] seeds each).
    random_rate: Option<FailureRate>,
    pct_rate: Option<FailureRate>,
    /// Clean fixed seeds for 95% confidence that the fix holds.
    seeds_for_95: Option<u64>,
    latent_seeds_passed: u64,
    latent_seeds: u64,
    fixed_seeds_passed: u64,
    fixed_seeds: u64,
    /// The fixed sweep ran fewer seeds than `seeds_for_95`.
    fixed_fewer_than_needed: bool,
    wall_ms: u128,
    problems: Vec<String>,
}

pub fn reproduce(
    app: &faultline_harness::cli::App,
    dir: Option<&std::path::Path>,
    args: ReproduceArgs,
) -> Result<ExitCode> {
    let scenarios = app.load_all(dir)?;
    let targets: Vec<&Scenario> = if args.ids.is_empty() {
        let bugs: Vec<&Scenario> = scenarios.iter().filter(|s| s.bug().is_some()).collect();
        if bugs.is_empty() {
            scenarios
                .iter()
                .filter(|s| !s.spec.expect.fails.is_empty())
                .collect()
        } else {
            bugs
        }
    } else {
        let mut chosen = Vec::new();
        for id in &args.ids {
            let found: Vec<&Scenario> = scenarios
                .iter()
                .filter(|s| {
                    s.name.eq_ignore_ascii_case(id)
                        || s.bug().is_some_and(|b| b.eq_ignore_ascii_case(id))
                })
                .collect();
            if found.is_empty() {
                return Err(Error::Usage(format!("no scenario or bug `{id}`")));
            }
            chosen.extend(found);
        }
        chosen
    };
    if targets.is_empty() {
        return Err(Error::Usage(
            "no scenario has a recorded failing seed to reproduce".into(),
        ));
    }
    let jobs = args
        .jobs
        .unwrap_or_else(faultline_harness::default_jobs)
        .max(1);
    let bar = indicatif::ProgressBar::new(targets.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("reproducing [{bar:20}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut rows = Vec::new();
    for scenario in &targets {
        bar.set_message(scenario.name.clone());
        let row = reproduce_one(scenario, jobs, args.fixed_seeds);
        bar.inc(1);
        if args.json {
            println!("{}", serde_json::to_string(&row).expect("rows serialise"));
        }
        rows.push(row);
    }
    bar.finish_and_clear();
    if !args.json {
        print_table(&rows);
    }
    // A bug is reproduced when every scenario of it is (MB-35649 has two).
    let mut bugs: std::collections::BTreeMap<&str, bool> = std::collections::BTreeMap::new();
    for row in &rows {
        let key = if row.bug == "-" {
            &row.scenario
        } else {
            &row.bug
        };
        *bugs.entry(key).or_insert(true) &= row.reproduced;
    }
    let reproduced = bugs.values().filter(|ok| **ok).count();
    println!("reproduce: {}/{} bugs reproduced", reproduced, bugs.len());
    Ok(if reproduced == bugs.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Seeds per strategy in a race bug's per-strategy sweeps.
const STRATEGY_SEEDS: u64 = 200;

fn reproduce_one(scenario: &Scenario, jobs: usize, fixed_override: Option<u64>) -> Row {
    // Wall time of the row, for the table (outside any simulation).
    let start = Instant::now();
    let expect = &scenario.spec.expect;
    let mut problems = Vec::new();
    let mut row = Row {
        bug: scenario.bug().unwrap_or("-").to_string(),
        scenario: scenario.name.clone(),
        component: scenario
            .spec
            .component
            .clone()
            .unwrap_or_else(|| "-".into()),
        trigger: scenario
            .spec
            .trigger
            .clone()
            .unwrap_or_else(|| scenario.spec.faults.kinds().join("+")),
        reproduced: false,
        oracle: "-".into(),
        seed: None,
        sim_ms_to_failure: None,
        trace: None,
        failure_rate: None,
        random_rate: None,
        pct_rate: None,
        seeds_for_95: None,
        latent_seeds_passed: 0,
        latent_seeds: expect.latent_seeds,
        fixed_seeds_passed: 0,
        fixed_seeds: fixed_override.unwrap_or(expect.fixed_seeds),
        fixed_fewer_than_needed: false,
        wall_ms: 0,
        problems: Vec::new(),
    };
    if expect.fails.is_empty() {
        problems.push("no recorded failing seed".to_string());
    }
    let buggy = RunOptions::new(Variant::Buggy);
    for (index, recorded) in expect.fails.iter().enumerate() {
        let outcome = faultline_harness::run(scenario, recorded.seed, &buggy);
        match &outcome.verdict {
            Verdict::Fail { oracle, .. } if *oracle == recorded.oracle => {
                if !outcome.reached_mechanism(scenario) {
                    problems.push(format!(
                        "seed {}: symptom without mechanism (never reached `{}`); replay: {}",
                        recorded.seed,
                        expect.mechanism_names(),
                        outcome.replay_command()
                    ));
                }
                if index == 0 {
                    row.oracle = oracle.clone();
                    row.seed = Some(outcome.seed);
                    row.sim_ms_to_failure = Some(outcome.sim_time.as_millis());
                    row.trace = Some(outcome.trace.hash_hex());
                }
            }
            Verdict::Fail { oracle, message } => problems.push(format!(
                "seed {} failed with `{oracle}` ({message}), expected `{}`; replay: {}",
                recorded.seed,
                recorded.oracle,
                outcome.replay_command()
            )),
            Verdict::Setup(error) => {
                problems.push(format!("seed {} could not start: {error}", recorded.seed))
            }
            Verdict::Pass => problems.push(format!(
                "seed {} passed, expected `{}` to fire; replay: {}",
                recorded.seed,
                recorded.oracle,
                outcome.replay_command()
            )),
        }
    }
    let found = sweep(
        scenario,
        Variant::Buggy,
        Faults::Drawn,
        row.latent_seeds,
        jobs,
    );
    let mut without_mechanism = found.without_mechanism.clone();
    if !scenario.spec.faults.race.is_empty() {
        for strategy in ["random", "pct"] {
            let alone = sweep(
                scenario,
                Variant::Buggy,
                Faults::RaceStrategy(strategy.into()),
                STRATEGY_SEEDS,
                jobs,
            );
            without_mechanism.extend(&alone.without_mechanism);
            let rate = Some(FailureRate::new(alone.failed(), alone.seeds_run));
            match strategy {
                "random" => row.random_rate = rate,
                _ => row.pct_rate = rate,
            }
        }
    }
    without_mechanism.sort_unstable();
    without_mechanism.dedup();
    if !without_mechanism.is_empty() {
        problems.push(format!(
            "symptom without mechanism (never reached `{}`) on buggy seeds {:?}",
            expect.mechanism_names(),
            without_mechanism
        ));
    }
    let rate = FailureRate::new(found.failed(), found.seeds_run);
    row.seeds_for_95 = rate.seeds_for_95();
    row.failure_rate = Some(rate);
    if let Some(needed) = row.seeds_for_95 {
        match fixed_override {
            Some(given) => row.fixed_fewer_than_needed = given < needed,
            None => row.fixed_seeds = row.fixed_seeds.max(needed),
        }
    }
    let latent = sweep(
        scenario,
        Variant::Buggy,
        Faults::Off,
        row.latent_seeds,
        jobs,
    );
    row.latent_seeds_passed = latent.passed;
    if let Some(f) = latent.failures.first() {
        problems.push(format!(
            "buggy with faults off failed on seed {}: {}",
            f.seed,
            f.replay_command()
        ));
    }
    let fixed = sweep(
        scenario,
        Variant::Fixed,
        Faults::Drawn,
        row.fixed_seeds,
        jobs,
    );
    row.fixed_seeds_passed = fixed.passed;
    problems.extend(found.unreached_lines());
    problems.extend(fixed.unreached_lines());
    if let Some(f) = fixed.failures.first() {
        problems.push(format!(
            "fixed failed on seed {}: {}",
            f.seed,
            f.replay_command()
        ));
    }
    row.reproduced = problems.is_empty();
    row.problems = problems;
    row.wall_ms = start.elapsed().as_millis();
    row
}

fn sweep(
    scenario: &Scenario,
    variant: Variant,
    faults: Faults,
    seeds: u64,
    jobs: usize,
) -> faultline_harness::SweepReport {
    let seeds: Vec<u64> = (0..seeds).collect();
    let mut options = SweepOptions::new(RunOptions::new(variant).faults(faults));
    options.jobs = jobs;
    options.keep_going = true;
    faultline_harness::sweep(scenario, &seeds, &options)
}

fn print_table(rows: &[Row]) {
    let header = [
        "bug",
        "scenario",
        "oracle",
        "seed",
        "sim ms",
        "buggy fails (95% CI)",
        "random alone",
        "pct alone",
        "latent",
        "fixed",
        "for 95%",
        "wall s",
    ];
    let rate = |f: &Option<FailureRate>| {
        f.map(|f| format!("{}/{} {}", f.failed, f.runs, f.display()))
            .unwrap_or_else(|| "-".into())
    };
    let cells: Vec<[String; 12]> = rows
        .iter()
        .map(|r| {
            [
                r.bug.clone(),
                r.scenario.clone(),
                r.oracle.clone(),
                r.seed.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                r.sim_ms_to_failure
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                rate(&r.failure_rate),
                rate(&r.random_rate),
                rate(&r.pct_rate),
                format!("{}/{}", r.latent_seeds_passed, r.latent_seeds),
                format!("{}/{}", r.fixed_seeds_passed, r.fixed_seeds),
                match (r.seeds_for_95, r.fixed_fewer_than_needed) {
                    (Some(n), true) => format!("{n} (ran fewer)"),
                    (Some(n), false) => n.to_string(),
                    (None, _) => "-".into(),
                },
                format!(
                    "{:.1}",
                    Duration::from_millis(r.wall_ms as u64).as_secs_f64()
                ),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(&header.map(str::to_string));
    for row in &cells {
        line(row);
    }
    for r in rows {
        for p in &r.problems {
            println!("{}: {p}", r.bug);
        }
    }
}

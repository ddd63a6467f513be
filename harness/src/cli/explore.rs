//! `explore`: every schedule of one seed with at most `c` preemptions.

use std::path::Path;
use std::process::ExitCode;

use super::app::App;
use super::args::Result;
use crate::explore::{self, Explored, format_schedule, parse_schedule};
use crate::runner::RunOptions;
use crate::variant::Variant;

/// `explore SCENARIO --seed N --preemptions C`: bounded exhaustive
/// exploration of the threads' interleavings (the seed fixes every other
/// choice); `--schedule S` runs one schedule it printed.
#[derive(Debug, Clone, clap::Args)]
pub struct ExploreArgs {
    /// The scenario's name (or the path of a scenario file).
    scenario: String,
    /// The seed: it fixes the fault plan (but its race rules), the network
    /// and every other random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The most preemptions a schedule has (CHESS's context bound).
    #[arg(long, default_value_t = 1)]
    preemptions: usize,
    /// Stop after this many schedules (the last line then says not exhausted).
    #[arg(long, value_name = "M")]
    max_schedules: Option<u64>,
    /// Run only this schedule (steps such as `3,17`, as a failure prints them).
    #[arg(long, value_name = "STEPS", value_parser = parse_schedule)]
    schedule: Option<Vec<u64>>,
    /// Which lines of the bug's fix run.
    #[arg(long, default_value = "fixed", value_parser = super::args::parse_variant)]
    variant: Variant,
    /// Run this bug's old lines instead of the scenario's own bug's.
    #[arg(long, value_name = "ID")]
    bug: Option<String>,
}

/// Schedules between two progress lines on stderr.
const PROGRESS_EVERY: u64 = 100;

pub(super) fn explore(app: &App, dir: Option<&Path>, args: ExploreArgs) -> Result<ExitCode> {
    let scenario = app.load_one(dir, &args.scenario)?;
    let options = RunOptions {
        bug: args.bug.as_deref().map(|b| app.bug(b)).transpose()?,
        replay: app.replay(),
        ..RunOptions::new(args.variant)
    };
    let replay = |schedule: &[u64]| {
        let mut line = format!(
            "{} explore {} --seed {} --variant {} --schedule {}",
            app.replay_prefix,
            scenario.name,
            args.seed,
            args.variant,
            format_schedule(schedule)
        );
        if let Some(bug) = &options.bug {
            line.push_str(&format!(" --bug {bug}"));
        }
        line
    };
    if let Some(schedule) = &args.schedule {
        let outcome = explore::run_schedule(&scenario, args.seed, schedule, &options);
        if let Some(message) = outcome.setup_error() {
            return Err(super::args::Error::Usage(message.to_string()));
        }
        if !outcome.verdict.is_pass() {
            print!("{}", outcome.report());
        }
        println!("replay: {}", replay(schedule));
        println!("{}", outcome.verdict_line());
        return Ok(exit_code(outcome.verdict.is_pass()));
    }
    let explored = explore::explore(
        &scenario,
        args.seed,
        args.preemptions,
        args.max_schedules,
        &options,
        |n| {
            if n % PROGRESS_EVERY == 0 {
                eprintln!("explore: {n} schedules so far");
            }
        },
    );
    if let Explored::Failing {
        schedule, outcome, ..
    } = &explored
    {
        if let Some(message) = outcome.setup_error() {
            return Err(super::args::Error::Usage(message.to_string()));
        }
        print!("{}", outcome.report());
        println!("replay: {}", replay(schedule));
    }
    println!("{}", explored.summary_line());
    Ok(exit_code(!matches!(explored, Explored::Failing { .. })))
}

fn exit_code(pass: bool) -> ExitCode {
    if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

//! A command line for any crate's scenarios.
//!
//! [`main`] gives a crate a binary with the generic commands over its own
//! [`Registry`] and scenario directory:
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! fn main() -> ExitCode {
//!     let mut registry = faultline_harness::Registry::new();
//!     // registry.register(Arc::new(MyWorkload));
//!     faultline_harness::cli::main(registry)
//! }
//! ```
//!
//! * `list`: one line per scenario file (name, bug id or `-`, summary);
//! * `run SCENARIO --seed N`: one simulation; the last line is the verdict
//!   (`verdict: pass …` or `verdict: fail … oracle=NAME: message`); a failure
//!   prints its report and writes its whole trace and a sequence diagram to
//!   `faultline-out/`; `replay` does the same and shows the trace as it goes;
//! * `sweep SCENARIO --seeds A..B`: many seeds on worker threads, with
//!   coverage, `--keep-going`, `--shard K/N`, `--json`;
//! * `check-determinism SCENARIO --seeds A..B`: each seed twice;
//! * `shrink SCENARIO --seed N`: the failing plan's smallest part that fails;
//! * `explore SCENARIO --seed N --preemptions C`: every schedule of the
//!   seed's threads with at most `C` preemptions ([`crate::explore`]); the
//!   last line is `explore: N schedules, exhausted` or `explore: failing
//!   schedule S …` (with a replay line, `--schedule S`);
//! * `merge FILES…`: the `sweep --json` results of several shards.
//!
//! Exit codes: 0 when everything passed, 1 when a run failed, 2 for bad
//! usage or a bad scenario file. A crate with more commands of its own
//! flattens [`Command`] into its own `clap` enum and hands the generic ones
//! to [`App::run`] (faultline's binary does).

mod app;
mod args;
mod explore;
mod merge;
mod progress;
mod run;
mod sweep;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::scenario::Registry;
pub use app::App;
pub use args::{Error, Result, VariantArgs, parse_seeds, parse_variant};
pub use progress::Bar;

pub use explore::ExploreArgs;
pub use merge::MergeArgs;
pub use run::{OUT_DIR, RunArgs, artefact_path};
pub use sweep::{
    DeterminismArgs, FailureSummary, Shard, ShrinkArgs, SweepArgs, SweepSummary, print_coverage,
};

/// The generic command line: `--scenarios DIR` and one [`Command`].
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Deterministic network simulation: run, sweep and shrink scenarios on seeds",
    max_term_width = 100
)]
pub struct Cli {
    /// Directory of scenario files (default: $FAULTLINE_SCENARIOS, or ./scenarios).
    #[arg(long, global = true, value_name = "DIR")]
    pub scenarios: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The generic commands (see the module docs).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One line per scenario: name, bug id (or -), summary.
    List,
    /// Run one simulation; the last line is the verdict.
    Run(RunArgs),
    /// Like `run`, and shows the whole trace as it goes.
    Replay(RunArgs),
    /// Run a range of seeds on worker threads.
    Sweep(SweepArgs),
    /// Run each seed twice and compare the traces.
    CheckDeterminism(DeterminismArgs),
    /// Shrink a failing run's fault plan to the faults that matter.
    Shrink(ShrinkArgs),
    /// Run every schedule of one seed with at most C preemptions at the
    /// synchronization points, until one fails (bounded exhaustive
    /// exploration); `--schedule S` replays one.
    Explore(ExploreArgs),
    /// Combine the `sweep --json` results of several shards into one summary.
    Merge(MergeArgs),
}

impl App {
    /// Parses the process's arguments as [`Cli`], runs the command, and
    /// turns a usage error into its message and exit code 2.
    pub fn main(self) -> ExitCode {
        let cli = Cli::parse();
        exit(self.run(cli.scenarios.as_deref(), cli.command))
    }

    /// Runs one generic command.
    pub fn run(&self, scenarios: Option<&Path>, command: Command) -> Result<ExitCode> {
        crate::runner::require_tokio_unstable().map_err(Error::Usage)?;
        match command {
            Command::List => self.list(scenarios),
            Command::Run(args) => run::run(self, scenarios, args, false),
            Command::Replay(args) => run::run(self, scenarios, args, true),
            Command::Sweep(args) => sweep::sweep(self, scenarios, args),
            Command::CheckDeterminism(args) => sweep::check_determinism(self, scenarios, args),
            Command::Shrink(args) => sweep::shrink(self, scenarios, args),
            Command::Explore(args) => explore::explore(self, scenarios, args),
            Command::Merge(args) => merge::merge(args),
        }
    }
}

/// A binary with the generic commands over `registry` (see the module docs).
pub fn main(registry: Registry) -> ExitCode {
    App::new(registry).main()
}

/// The exit code of a command's result; a usage error is printed.
pub fn exit(result: Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(Error::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

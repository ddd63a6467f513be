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

mod explore;
mod merge;
mod progress;
mod run;
mod sweep;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::faults::FaultPlan;
use crate::runner::{Faults, Replay, RunOptions};
use crate::scenario::{Registry, Scenario};
use crate::seed::SeedRange;
use crate::trace::TraceMode;
use crate::variant::Variant;
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

/// What ends a command with exit code 2.
#[derive(Debug)]
pub enum Error {
    /// Bad usage, or a bad scenario or plan file: the message says which.
    Usage(String),
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Usage(message)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Usage(message) => f.write_str(message),
        }
    }
}

/// A command's result: an exit code, or a usage error (exit 2).
pub type Result<T> = std::result::Result<T, Error>;

/// Options shared by the commands that run simulations.
#[derive(Debug, Clone, clap::Args)]
pub struct VariantArgs {
    /// Which lines of the bug's fix run.
    #[arg(long, default_value = "fixed", value_parser = parse_variant)]
    pub variant: Variant,
    /// `off` runs with no injected faults (the bug stays latent); `swarm`
    /// draws from a random subset of the scenario's fault kinds; `random`,
    /// `pct` or `targeted` draw as `on` with every race rule restricted to
    /// that strategy.
    #[arg(long, default_value = "on", value_parser = ["on", "off", "swarm", "random", "pct", "targeted"])]
    pub faults: String,
    /// Run this bug's old lines instead of the scenario's own bug's (with
    /// `--variant buggy`), e.g. to replay a `hunt` finding.
    #[arg(long, value_name = "ID")]
    pub bug: Option<String>,
    /// Run with this fault plan (TOML or JSON) instead of the one drawn from the seed.
    #[arg(long, value_name = "FILE", conflicts_with = "faults")]
    pub plan: Option<PathBuf>,
}

impl VariantArgs {
    /// How the faults were chosen, for summaries: `on`, `off` or the plan file.
    pub fn faults_label(&self) -> String {
        match &self.plan {
            Some(path) => format!("plan {}", path.display()),
            None => self.faults.clone(),
        }
    }
}

/// Parses `fixed` or `buggy`.
pub fn parse_variant(text: &str) -> std::result::Result<Variant, String> {
    text.parse()
}

/// Parses a half-open seed range `A..B`.
pub fn parse_seeds(text: &str) -> std::result::Result<SeedRange, String> {
    text.parse()
}

/// A crate's command line: its registry, where its scenario files are,
/// its bug ids, and how its replay commands start.
pub struct App {
    registry: Registry,
    scenarios: PathBuf,
    bugs: Vec<String>,
    replay_prefix: String,
    list_footer: Option<String>,
}

impl App {
    /// An app over `registry`. Scenario files are in `$FAULTLINE_SCENARIOS`
    /// or `./scenarios`; replay commands start with the path this binary
    /// was run as (so they work where the failure was seen).
    pub fn new(registry: Registry) -> App {
        let scenarios = std::env::var_os("FAULTLINE_SCENARIOS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("scenarios"));
        let replay_prefix = std::env::args()
            .next()
            .unwrap_or_else(|| "faultline".to_string());
        App {
            registry,
            scenarios,
            bugs: Vec::new(),
            replay_prefix,
            list_footer: None,
        }
    }

    /// Where scenario files are when `--scenarios` is not given.
    pub fn scenarios_dir(mut self, dir: PathBuf) -> App {
        self.scenarios = dir;
        self
    }

    /// The bug ids `--bug` accepts (any id when none are given).
    pub fn bugs(mut self, ids: &[&str]) -> App {
        self.bugs = ids.iter().map(|s| s.to_string()).collect();
        self
    }

    /// How replay commands start, e.g. `cargo run --release --`.
    pub fn replay_prefix(mut self, prefix: &str) -> App {
        self.replay_prefix = prefix.to_string();
        self
    }

    /// A line `list` prints after the scenarios.
    pub fn list_footer(mut self, line: &str) -> App {
        self.list_footer = Some(line.to_string());
        self
    }

    /// The registry of workloads.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// How replay commands start.
    pub fn replay(&self) -> Replay {
        Replay::Cli {
            prefix: self.replay_prefix.clone(),
        }
    }

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

    fn dir(&self, scenarios: Option<&Path>) -> PathBuf {
        scenarios
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.scenarios.clone())
    }

    /// Loads every scenario of the directory; a bad file is an error.
    pub fn load_all(&self, scenarios: Option<&Path>) -> Result<Vec<Scenario>> {
        let (loaded, errors) = self.registry.load_dir(&self.dir(scenarios));
        if !errors.is_empty() {
            return Err(Error::Usage(errors.join("\n")));
        }
        Ok(loaded)
    }

    /// Loads the named scenario: a name from the directory, or a path.
    pub fn load_one(&self, scenarios: Option<&Path>, name: &str) -> Result<Scenario> {
        if name.ends_with(".toml") {
            return Ok(self.registry.load_file(Path::new(name))?);
        }
        let dir = self.dir(scenarios);
        let path = dir.join(format!("{name}.toml"));
        if !path.exists() {
            let (loaded, _) = self.registry.load_dir(&dir);
            let known: Vec<&str> = loaded.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::Usage(format!(
                "unknown scenario `{name}` in {} (known: {})",
                dir.display(),
                known.join(", ")
            )));
        }
        Ok(self.registry.load_file(&path)?)
    }

    /// A bug id as `--bug` names it, in its canonical spelling.
    pub fn bug(&self, text: &str) -> Result<String> {
        if self.bugs.is_empty() {
            return Ok(text.to_string());
        }
        self.bugs
            .iter()
            .find(|id| id.eq_ignore_ascii_case(text))
            .cloned()
            .ok_or_else(|| {
                Error::Usage(format!(
                    "unknown bug `{text}` (known: {})",
                    self.bugs.join(", ")
                ))
            })
    }

    /// The run options the flags ask for.
    pub fn options(&self, args: &VariantArgs) -> Result<RunOptions> {
        let faults = match (&args.plan, args.faults.as_str()) {
            (Some(path), _) => {
                let plan = FaultPlan::load(path)?;
                plan.validate()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Faults::Plan {
                    plan: Box::new(plan),
                    source: Some(path.clone()),
                }
            }
            (None, "off") => Faults::Off,
            (None, "swarm") => Faults::Swarm,
            (None, strategy @ ("random" | "pct" | "targeted")) => {
                Faults::RaceStrategy(strategy.to_string())
            }
            (None, _) => Faults::Drawn,
        };
        let bug = args.bug.as_deref().map(|b| self.bug(b)).transpose()?;
        Ok(RunOptions {
            variant: args.variant,
            faults,
            trace: TraceMode::Tails,
            echo: echo_filter()?,
            bug,
            replay: self.replay(),
        })
    }

    fn list(&self, scenarios: Option<&Path>) -> Result<ExitCode> {
        let (loaded, errors) = self.registry.load_dir(&self.dir(scenarios));
        let width = loaded.iter().map(|s| s.name.len()).max().unwrap_or(0);
        let bug_width = loaded
            .iter()
            .map(|s| s.bug().unwrap_or("-").len())
            .max()
            .unwrap_or(1);
        for s in &loaded {
            println!(
                "{:width$}  {:bug_width$}  {}",
                s.name,
                s.bug().unwrap_or("-"),
                s.spec.summary
            );
        }
        if let Some(footer) = &self.list_footer {
            println!("{footer}");
        }
        for e in &errors {
            eprintln!("error: {e}");
        }
        Ok(if errors.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        })
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

/// The terminal echo filter from `RUST_LOG` (read here, outside simulations).
fn echo_filter() -> Result<Option<tracing_subscriber::filter::Targets>> {
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => Ok(Some(parse_echo_filter(&spec)?)),
        _ => Ok(None),
    }
}

/// Parses a `RUST_LOG`-style filter for the terminal echo.
fn parse_echo_filter(
    spec: &str,
) -> std::result::Result<tracing_subscriber::filter::Targets, String> {
    spec.parse::<tracing_subscriber::filter::Targets>()
        .map_err(|e| format!("bad log filter `{spec}`: {e}"))
}

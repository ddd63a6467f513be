//! Command definitions and dispatch. Each command lives in its own file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use faultline_harness::runner::{Faults, RunOptions};
use faultline_harness::seed::SeedRange;
use faultline_harness::{FaultPlan, Registry, Scenario, TraceMode, Variant};

mod bench;
mod hunt;
mod merge;
mod proxy;
mod reproduce;
mod run;
mod serve;
mod sweep;

/// Deterministic network simulation: reproduce real networking bugs on a seed.
#[derive(Debug, Parser)]
#[command(name = "faultline", version, about, max_term_width = 100)]
pub struct Cli {
    /// Directory of scenario files (default: $FAULTLINE_SCENARIOS, ./scenarios, or the checkout's).
    #[arg(long, global = true, value_name = "DIR")]
    scenarios: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One line per scenario: name, bug id (or -), summary.
    List,
    /// Run one simulation; the last line is the verdict.
    Run(run::RunArgs),
    /// Like `run`, and shows the whole trace as it goes.
    Replay(run::RunArgs),
    /// Run a range of seeds on worker threads.
    Sweep(sweep::SweepArgs),
    /// Run each seed twice and compare the traces.
    CheckDeterminism(sweep::DeterminismArgs),
    /// Shrink a failing run's fault plan to the faults that matter.
    Shrink(sweep::ShrinkArgs),
    /// Reproduce the catalog's bugs (all when no id is given) and print the table.
    Reproduce(reproduce::ReproduceArgs),
    /// Find the catalog's bugs blind: one bug on at a time, swarm faults per seed.
    Hunt(hunt::HuntArgs),
    /// Measure simulation speed, sweep throughput, harness overhead and memory.
    Bench(bench::BenchArgs),
    /// Combine the `sweep --json` results of several shards into one summary.
    Merge(merge::MergeArgs),
    /// Run a kv node on real sockets (memcached binary protocol).
    Serve(serve::ServeArgs),
    /// Run the proxy on real sockets in front of kv nodes.
    Proxy(proxy::ProxyArgs),
}

/// Errors that end a command with exit code 2.
#[derive(Debug)]
pub enum Error {
    Usage(String),
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Usage(message)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Options shared by the commands that run simulations.
#[derive(Debug, Clone, clap::Args)]
pub struct VariantArgs {
    /// Which lines of the bug's fix run.
    #[arg(long, default_value = "fixed", value_parser = parse_variant)]
    variant: Variant,
    /// `off` runs with no injected faults (the bug stays latent); `swarm`
    /// draws from a random subset of the scenario's fault kinds.
    #[arg(long, default_value = "on", value_parser = ["on", "off", "swarm"])]
    faults: String,
    /// Run this bug's old lines instead of the scenario's own bug's (with
    /// `--variant buggy`), e.g. to replay a `hunt` finding.
    #[arg(long, value_name = "ID", value_parser = parse_bug)]
    bug: Option<String>,
    /// Run with this fault plan (TOML or JSON) instead of the one drawn from the seed.
    #[arg(long, value_name = "FILE", conflicts_with = "faults")]
    plan: Option<PathBuf>,
}

impl VariantArgs {
    /// How the faults were chosen, for summaries: `on`, `off` or the plan file.
    fn faults_label(&self) -> String {
        match &self.plan {
            Some(path) => format!("plan {}", path.display()),
            None => self.faults.clone(),
        }
    }
}

/// A bug id of the catalog, in its canonical spelling.
fn parse_bug(text: &str) -> std::result::Result<String, String> {
    faultline::bugs::ALL
        .iter()
        .find(|id| id.eq_ignore_ascii_case(text))
        .map(|id| id.to_string())
        .ok_or_else(|| {
            format!(
                "unknown bug `{text}` (known: {})",
                faultline::bugs::ALL.join(", ")
            )
        })
}

fn parse_variant(text: &str) -> std::result::Result<Variant, String> {
    text.parse()
}

impl VariantArgs {
    fn options(&self) -> Result<RunOptions> {
        let faults = match (&self.plan, self.faults.as_str()) {
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
            (None, _) => Faults::Drawn,
        };

        Ok(RunOptions {
            variant: self.variant,
            faults,
            trace: TraceMode::Tails,
            echo: echo_filter()?,
            bug: self.bug.clone(),
        })
    }
}

/// The terminal echo filter from `RUST_LOG` (read here, outside simulations).
fn echo_filter() -> Result<Option<tracing_subscriber::filter::Targets>> {
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            Ok(Some(faultline_harness::trace::parse_echo_filter(&spec)?))
        }
        _ => Ok(None),
    }
}

/// Loads every scenario; bad files are errors.
fn load_all(dir: &Option<PathBuf>) -> Result<(Registry, Vec<Scenario>)> {
    let registry = faultline::registry();
    let dir = dir.clone().unwrap_or_else(faultline::default_scenarios_dir);
    let (scenarios, errors) = registry.load_dir(&dir);
    if !errors.is_empty() {
        return Err(Error::Usage(errors.join("\n")));
    }
    Ok((registry, scenarios))
}

/// Loads the named scenario: a name from the scenario directory or a path.
fn load_one(dir: &Option<PathBuf>, name: &str) -> Result<Scenario> {
    let registry = faultline::registry();
    if name.ends_with(".toml") {
        return Ok(registry.load_file(std::path::Path::new(name))?);
    }
    let dir = dir.clone().unwrap_or_else(faultline::default_scenarios_dir);
    let path = dir.join(format!("{name}.toml"));
    if !path.exists() {
        let (scenarios, _) = registry.load_dir(&dir);
        let known: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
        return Err(Error::Usage(format!(
            "unknown scenario `{name}` in {} (known: {})",
            dir.display(),
            known.join(", ")
        )));
    }
    Ok(registry.load_file(&path)?)
}

fn parse_seeds(text: &str) -> std::result::Result<SeedRange, String> {
    text.parse()
}

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::List => list(&cli.scenarios),
        Command::Run(args) => run::run(&cli.scenarios, args, false),
        Command::Replay(args) => run::run(&cli.scenarios, args, true),
        Command::Sweep(args) => sweep::sweep(&cli.scenarios, args),
        Command::CheckDeterminism(args) => sweep::check_determinism(&cli.scenarios, args),
        Command::Shrink(args) => sweep::shrink(&cli.scenarios, args),
        Command::Reproduce(args) => reproduce::reproduce(&cli.scenarios, args),
        Command::Bench(args) => bench::bench(&cli.scenarios, args),
        Command::Hunt(args) => hunt::hunt(&cli.scenarios, args),
        Command::Merge(args) => merge::merge(args),
        Command::Serve(args) => serve::serve(args),
        Command::Proxy(args) => proxy::proxy(args),
    }
}

fn list(dir: &Option<PathBuf>) -> Result<ExitCode> {
    let registry = faultline::registry();
    let dir = dir.clone().unwrap_or_else(faultline::default_scenarios_dir);
    let (scenarios, errors) = registry.load_dir(&dir);
    let width = scenarios.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let bug_width = scenarios
        .iter()
        .map(|s| s.bug().unwrap_or("-").len())
        .max()
        .unwrap_or(1);
    for s in &scenarios {
        println!(
            "{:width$}  {:bug_width$}  {}",
            s.name,
            s.bug().unwrap_or("-"),
            s.spec.summary
        );
    }
    if scenarios.iter().any(|s| s.bug().is_some()) {
        println!("the bug catalog (origins, old and new lines, figures): docs/bugs.md");
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

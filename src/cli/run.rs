//! `faultline run` and `faultline replay`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use faultline_harness::runner::{self, Outcome};
use faultline_harness::{TraceMode, Verdict};

use super::{Result, VariantArgs, load_one};

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The scenario's name (or the path of a scenario file).
    scenario: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    variant: VariantArgs,
    /// Write the whole trace to FILE.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
}

/// Where failure artefacts go when no path is given.
pub const OUT_DIR: &str = "faultline-out";

pub fn run(dir: &Option<PathBuf>, args: RunArgs, show_trace: bool) -> Result<ExitCode> {
    let scenario = load_one(dir, &args.scenario)?;
    let mut options = args.variant.options()?;
    if show_trace {
        options.echo = Some(faultline_harness::trace::record_filter());
    }
    if args.trace.is_some() {
        options.trace = TraceMode::Full;
    }
    let outcome = runner::run(&scenario, args.seed, &options);
    if let Verdict::Fail { oracle, .. } = &outcome.verdict {
        if oracle == "setup" {
            println!("{}", outcome.verdict_line());
            return Ok(ExitCode::from(2));
        }
    }
    if let Some(path) = &args.trace {
        write_trace(path, &outcome)?;
        println!("trace written to {}", path.display());
    }
    match &outcome.verdict {
        Verdict::Pass => {
            println!("faults: {}", outcome.plan.summary());
        }
        Verdict::Fail { .. } => {
            print!("{}", outcome.report());
            if args.trace.is_none() {
                // A passing run keeps only the hash; replay the seed for the
                // whole trace (the same seed gives the same run).
                let full = runner::run(
                    &scenario,
                    args.seed,
                    &options.clone().trace(TraceMode::Full),
                );
                let path = artefact_path(&outcome, "trace");
                write_trace(&path, &full)?;
                println!("trace written to {}", path.display());
                if full.trace.hash != outcome.trace.hash {
                    println!(
                        "warning: the replay's trace hash {} differs from {}: the run is not deterministic",
                        full.trace.hash_hex(),
                        outcome.trace.hash_hex()
                    );
                }
            }
        }
    }
    println!("{}", outcome.verdict_line());
    Ok(if outcome.verdict.is_pass() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `faultline-out/<scenario>-<seed>-<variant>.<ext>`.
pub fn artefact_path(outcome: &Outcome, ext: &str) -> PathBuf {
    Path::new(OUT_DIR).join(format!(
        "{}-{}-{}.{ext}",
        outcome.scenario, outcome.seed, outcome.variant
    ))
}

fn write_trace(path: &Path, outcome: &Outcome) -> Result<()> {
    let lines = outcome.trace.lines.as_deref().unwrap_or_default();
    let mut text = lines.join("\n");
    text.push('\n');
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

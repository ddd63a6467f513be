//! `run` and `replay`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::app::App;
use super::args::{Result, VariantArgs};
use crate::runner::Verdict;
use crate::runner::{self, Outcome};
use crate::trace::TraceMode;

/// `run` and `replay`: one seed of one scenario.
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
    /// Write a sequence diagram of the messages between hosts (Mermaid, in Markdown) to FILE.
    #[arg(long, value_name = "FILE")]
    diagram: Option<PathBuf>,
}

/// Steps a diagram shows (the last ones before the end of the run).
const DIAGRAM_STEPS: usize = 80;

/// Where failure artefacts go when no path is given.
pub const OUT_DIR: &str = "faultline-out";

pub(super) fn run(
    app: &App,
    dir: Option<&Path>,
    args: RunArgs,
    show_trace: bool,
) -> Result<ExitCode> {
    let scenario = app.load_one(dir, &args.scenario)?;
    let mut options = app.options(&args.variant)?;
    if show_trace {
        options.echo = Some(crate::trace::record_filter());
    }
    if args.trace.is_some() || args.diagram.is_some() {
        options.trace = TraceMode::Full;
    }
    let outcome = runner::run(&scenario, args.seed, &options);
    if let Some(message) = outcome.setup_error() {
        return Err(super::args::Error::Usage(message.to_string()));
    }
    if let Some(path) = &args.trace {
        write_trace(path, &outcome)?;
        println!("trace written to {}", path.display());
    }
    if let Some(path) = &args.diagram {
        write_diagram(path, &outcome)?;
        println!("diagram written to {}", path.display());
    }
    // What the latency oracle judged, in simulated time.
    for (metric, l) in &outcome.latencies {
        println!(
            "latency {metric}: {} samples, p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            l.samples,
            l.p50_us as f64 / 1000.0,
            l.p99_us as f64 / 1000.0,
            l.p999_us as f64 / 1000.0,
            l.max_us as f64 / 1000.0
        );
    }
    match &outcome.verdict {
        Verdict::Pass | Verdict::Setup(_) => println!("faults: {}", outcome.plan.summary()),
        Verdict::Fail { .. } => {
            print!("{}", outcome.report());
            // A run keeps only the hash unless asked for more; replay the
            // seed for the whole trace (the same seed gives the same run).
            let full = match outcome.trace.lines {
                Some(_) => outcome.clone(),
                None => runner::run(
                    &scenario,
                    args.seed,
                    &options.clone().trace(TraceMode::Full),
                ),
            };
            if full.trace.hash != outcome.trace.hash {
                println!(
                    "warning: the replay's trace hash {} differs from {}: the run is not deterministic",
                    full.trace.hash_hex(),
                    outcome.trace.hash_hex()
                );
            }
            if args.trace.is_none() {
                let path = artefact_path(&outcome, "trace");
                write_trace(&path, &full)?;
                println!("trace written to {}", path.display());
            }
            if args.diagram.is_none() {
                let path = artefact_path(&outcome, "md");
                write_diagram(&path, &full)?;
                println!("diagram written to {}", path.display());
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

fn write_diagram(path: &Path, outcome: &Outcome) -> Result<()> {
    let lines = outcome.trace.lines.as_deref().unwrap_or_default();
    let title = format!(
        "{} seed {} ({})",
        outcome.scenario, outcome.seed, outcome.variant
    );
    let text = crate::report::mermaid(lines, &title, DIAGRAM_STEPS);
    write_file(path, &text)
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

fn write_trace(path: &Path, outcome: &Outcome) -> Result<()> {
    let lines = outcome.trace.lines.as_deref().unwrap_or_default();
    let mut text = lines.join("\n");
    text.push('\n');
    write_file(path, &text)
}

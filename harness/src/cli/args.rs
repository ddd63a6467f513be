//! What the commands share: their error type, the options of every command
//! that runs simulations, and the parsers of their values.

use std::path::PathBuf;

use crate::seed::SeedRange;
use crate::variant::Variant;

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

/// The terminal echo filter from `RUST_LOG` (read here, outside simulations).
pub(super) fn echo_filter() -> Result<Option<tracing_subscriber::filter::Targets>> {
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

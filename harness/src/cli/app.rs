//! [`App`]: a crate's registry, scenario directory, bug ids and replay
//! prefix, and what every command asks of them (loading scenarios, run
//! options). The commands' dispatch is in the module's root.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::args::{Error, Result, VariantArgs, echo_filter};
use crate::runner::{Faults, Replay, RunOptions};
use crate::scenario::{Registry, Scenario};
use crate::trace::TraceMode;

/// A crate's command line: its registry, where its scenario files are,
/// its bug ids, and how its replay commands start.
pub struct App {
    registry: Registry,
    scenarios: PathBuf,
    bugs: Vec<String>,
    pub(super) replay_prefix: String,
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
            (Some(path), _) => Faults::plan_file(path)?,
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

    pub(super) fn list(&self, scenarios: Option<&Path>) -> Result<ExitCode> {
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

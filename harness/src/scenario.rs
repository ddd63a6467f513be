//! Scenario files.
//!
//! A scenario is a TOML file; its stem is its name. It combines a
//! [`Workload`] (Rust code of the system under test, registered by the
//! application) with parameters, the faults it allows, oracle thresholds,
//! and what it expects. Files are discovered at run time: a new scenario
//! that reuses existing workloads, faults and oracles needs no rebuild.
//!
//! Every problem in a file is reported as `FILE:LINE:COLUMN: message`, and
//! an unknown key is an error, never ignored.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ctx::Framer;
use crate::diag::{
    first_key, line_col, locate, locate_in, locate_value, params_range, toml_error_named,
};
use crate::faults::FaultSpace;
use crate::oracle::OracleConfig;
use crate::variant::Variant;

/// Simulation settings of a scenario (`[sim]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// turmoil's tick: how much simulated time one step advances.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// The workload must finish within this simulated time.
    #[serde(default = "default_duration_ms")]
    pub duration_ms: u64,
    /// Smallest network latency of a message, in simulated ms (default 0).
    #[serde(default)]
    pub min_latency_ms: u64,
    /// Largest network latency of a message, in simulated ms (default 2; at
    /// least `min_latency_ms`).
    #[serde(default = "default_max_latency_ms")]
    pub max_latency_ms: u64,
    /// turmoil's per-connection segment queue and accept backlog.
    #[serde(default = "default_tcp_capacity")]
    pub tcp_capacity: usize,
    /// Run hosts in a seeded random order each step (turmoil's option).
    #[serde(default)]
    pub random_node_order: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            tick_ms: default_tick_ms(),
            duration_ms: default_duration_ms(),
            min_latency_ms: 0,
            max_latency_ms: default_max_latency_ms(),
            tcp_capacity: default_tcp_capacity(),
            random_node_order: false,
        }
    }
}

fn default_tick_ms() -> u64 {
    1
}
fn default_duration_ms() -> u64 {
    30_000
}
fn default_max_latency_ms() -> u64 {
    2
}
fn default_tcp_capacity() -> usize {
    4096
}

impl SimConfig {
    /// Checks the values serde's types cannot express (a zero tick, duration or
    /// capacity, latencies out of order); the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.tick_ms == 0 {
            return Err("sim.tick_ms must be at least 1".into());
        }
        if self.duration_ms == 0 {
            return Err("sim.duration_ms must be positive".into());
        }
        if self.min_latency_ms > self.max_latency_ms {
            return Err("sim.min_latency_ms is larger than sim.max_latency_ms".into());
        }
        if self.tcp_capacity == 0 {
            return Err("sim.tcp_capacity must be positive".into());
        }
        Ok(())
    }
}

/// A recorded failing seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedFailure {
    /// The seed that fails (buggy variant, faults on).
    pub seed: u64,
    /// The oracle that must fire on it.
    pub oracle: String,
    /// What this seed shows, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a scenario expects (`[expect]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Seeds on which the buggy variant must fail with faults on; the first
    /// is the one `reproduce` replays.
    #[serde(default)]
    pub fails: Vec<RecordedFailure>,
    /// Seeds the fixed variant must pass in `reproduce`.
    #[serde(default = "default_fixed_seeds")]
    pub fixed_seeds: u64,
    /// Seeds the buggy variant must pass with faults off in `reproduce`.
    #[serde(default = "default_latent_seeds")]
    pub latent_seeds: u64,
    /// Seeds per check in `cargo test` (FAULTLINE_SEEDS widens it).
    #[serde(default = "default_test_seeds")]
    pub test_seeds: u64,
    /// Coverage points (globs: `probe:proxy:late-report`,
    /// `race-yield:executor.*`) that some run of every sweep with faults
    /// drawn from the scenario's space must reach, as FoundationDB's code
    /// probes: a sweep in which none did fails, since it never tested the
    /// place that matters. (A sweep with `--plan` or `--faults off` runs
    /// other faults than the space's and is not held to them.)
    #[serde(default)]
    pub reaches: Vec<String>,
    /// The coverage points (globs, e.g. `probe:proxy:fd-closed-while-running`)
    /// that name the bug's mechanism, one per way the bug acts: every
    /// failing run of the buggy variant must reach at least one, else it
    /// failed for another reason and `reproduce` reports a symptom without
    /// mechanism. Empty: not checked.
    #[serde(default)]
    pub mechanism: Vec<String>,
}

impl Expect {
    /// The mechanism's points as one would read them: `a or b`.
    pub fn mechanism_names(&self) -> String {
        self.mechanism.join(" or ")
    }
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            fails: Vec::new(),
            fixed_seeds: default_fixed_seeds(),
            latent_seeds: default_latent_seeds(),
            test_seeds: default_test_seeds(),
            reaches: Vec::new(),
            mechanism: Vec::new(),
        }
    }
}

fn default_fixed_seeds() -> u64 {
    200
}
fn default_latent_seeds() -> u64 {
    20
}
fn default_test_seeds() -> u64 {
    10
}

/// The contents of a scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    /// One line for `list`.
    pub summary: String,
    /// The bug this scenario reproduces (an id of the catalog), if any.
    #[serde(default)]
    pub bug: Option<String>,
    /// The component the bug lives in, for the reproduce table.
    #[serde(default)]
    pub component: Option<String>,
    /// What exposes the bug, for the reproduce table.
    #[serde(default)]
    pub trigger: Option<String>,
    /// The registered workload that builds the simulation.
    pub workload: String,
    /// `[sim]`: simulation settings (defaults when absent).
    #[serde(default)]
    pub sim: SimConfig,
    /// Parameters of the workload (checked by the workload).
    #[serde(default)]
    pub params: Option<toml::Spanned<toml::Table>>,
    /// `[faults.*]`: the faults a run may draw (none when absent).
    #[serde(default)]
    pub faults: FaultSpace,
    /// `[oracles]`: oracle thresholds (defaults when absent).
    #[serde(default)]
    pub oracles: OracleConfig,
    /// `[expect]`: what `reproduce` and `cargo test` check (defaults when
    /// absent).
    #[serde(default)]
    pub expect: Expect,
}

/// A loaded scenario: its file and the workload it runs.
#[derive(Clone)]
pub struct Scenario {
    /// Its name (the file's stem).
    pub name: String,
    /// The workload's parameters (`[params]`, empty when absent).
    pub params: toml::Table,
    /// The file it came from, if any.
    pub path: Option<PathBuf>,
    /// What the file says.
    pub spec: ScenarioSpec,
    /// The workload that builds its simulations.
    pub workload: Arc<dyn Workload>,
    /// The file's text, to point at a field in later errors.
    text: String,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish()
    }
}

impl Scenario {
    /// Every host glob of the fault space must match a host of the run
    /// (`hosts`): a typo would make its fault a silent no-op. The error
    /// names the file, line and column of the glob, and the hosts.
    pub fn check_hosts(&self, hosts: &[String]) -> Result<(), String> {
        let shown = self
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("{}.toml", self.name));
        for (table, nth, key, glob) in self.spec.faults.host_globs() {
            if hosts.iter().any(|h| crate::faults::glob_match(glob, h)) {
                continue;
            }
            let at = locate_value(&self.text, &format!("faults.{table}"), nth, key, glob);
            return Err(format!(
                "{shown}:{at}: faults.{table}.{key}: `{glob}` matches no host of this run (hosts: {})",
                hosts.join(", ")
            ));
        }
        Ok(())
    }

    /// The scenario's bug id, if it has one.
    pub fn bug(&self) -> Option<&str> {
        self.spec.bug.as_deref()
    }

    /// The workload's parameters (`[params]`, empty when absent).
    pub fn params(&self) -> &toml::Table {
        &self.params
    }
}

/// A problem with a workload parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamError {
    /// The key, when the problem is one key's.
    pub key: Option<String>,
    /// What is wrong, as printed after the file's `LINE:COLUMN`.
    pub message: String,
}

impl ParamError {
    /// A problem with `key` (dotted for a nested table: `traffic.clients`),
    /// which the error locates in the file.
    pub fn new(key: &str, message: impl Into<String>) -> ParamError {
        ParamError {
            key: Some(key.to_string()),
            message: message.into(),
        }
    }
}

/// Deserializes a workload's parameter table into its own type (use
/// `#[serde(deny_unknown_fields)]` on it), naming the key on errors.
pub fn parse_params<T: serde::de::DeserializeOwned>(table: &toml::Table) -> Result<T, ParamError> {
    T::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
        let mut message = e.to_string().trim().replace('\n', " ");
        // A nested table's error ends with "in `traffic`": name it up front.
        let mut table_path = String::new();
        if let Some(start) = message.rfind(" in `") {
            if message.ends_with('`') {
                table_path = message[start + 5..message.len() - 1].to_string();
                message.truncate(start);
            }
        }
        let nested = |table: &toml::Table| -> Option<toml::Table> {
            let mut t = table.clone();
            for part in table_path.split('.').filter(|p| !p.is_empty()) {
                t = t.get(part)?.as_table()?.clone();
            }
            Some(t)
        };
        let Some(inner) = nested(table) else {
            // The path ends at a value, not a table: it is the key itself
            // (type errors: "invalid type … in `node.workers`").
            return ParamError {
                message: format!("params.{table_path}: {message}"),
                key: Some(table_path),
            };
        };
        // serde names the key between backticks: "unknown field `x`",
        // "missing field `y`"; type errors carry no key.
        let key = message
            .split('`')
            .nth(1)
            .map(str::to_string)
            .filter(|k| {
                inner.contains_key(k)
                    || message.contains("unknown field")
                    || message.contains("missing field")
            })
            .map(|k| {
                if table_path.is_empty() {
                    k
                } else {
                    format!("{table_path}.{k}")
                }
            });
        let prefix = if table_path.is_empty() {
            "params".to_string()
        } else {
            format!("params.{table_path}")
        };
        ParamError {
            key,
            message: format!("{prefix}: {message}"),
        }
    })
}

/// What a workload's `build` gets for one run.
pub struct RunSpec<'a> {
    /// The scenario's name.
    pub scenario: &'a str,
    /// The workload's parameters (`[params]`), already accepted by
    /// [`Workload::check`].
    pub params: &'a toml::Table,
    /// Which lines of the bug's fix run (see [`RunSpec::is_buggy`]). A
    /// workload whose bug has no id runs its old lines only when `bug` is
    /// none too: a hunt switches another bug on with `Variant::Buggy`.
    pub variant: Variant,
    /// The bug whose variant is chosen (the scenario's, or the one `hunt` switches on).
    pub bug: Option<&'a str>,
    /// The run's seed.
    pub seed: u64,
}

impl RunSpec<'_> {
    /// Whether `bug`'s buggy lines run in this run.
    pub fn is_buggy(&self, bug: &str) -> bool {
        self.variant == Variant::Buggy && self.bug == Some(bug)
    }
}

/// Code of the system under test that sets up a simulation: hosts,
/// clients and the framer. Registered by the application under a name
/// that scenario files refer to.
pub trait Workload: Send + Sync {
    /// The name scenario files use (`workload = "..."`).
    fn name(&self) -> &'static str;
    /// Checks the parameters when a scenario file is loaded.
    fn check(&self, params: &toml::Table) -> Result<(), ParamError>;
    /// Builds one run's simulation.
    fn build(&self, setup: &mut SimSetup<'_>, run: &RunSpec<'_>) -> Result<(), String>;
}

/// The simulation a workload builds.
pub struct SimSetup<'s> {
    pub(crate) sim: &'s mut turmoil::Sim<'static>,
    pub(crate) hosts: Vec<String>,
    pub(crate) clients: Vec<String>,
}

impl SimSetup<'_> {
    /// A host: software that turmoil may crash and restart (the factory
    /// builds it again on restart).
    pub fn host<F, Fut>(&mut self, name: &str, software: F)
    where
        F: Fn() -> Fut + 'static,
        Fut: Future<Output = turmoil::Result> + 'static,
    {
        self.hosts.push(name.to_string());
        let host = name.to_string();
        self.sim.host(name, move || {
            // A process crash holds the software down while the machine
            // stays up (`CrashMode::Process`).
            let run = (!crate::ctx::process_down(&host)).then(&software);
            async move {
                match run {
                    Some(software) => software.await,
                    None => std::future::pending().await,
                }
            }
        });
    }

    /// A client: the run ends when every client has finished.
    pub fn client<Fut>(&mut self, name: &str, software: Fut)
    where
        Fut: Future<Output = turmoil::Result> + 'static,
    {
        self.clients.push(name.to_string());
        self.sim.client(name, software);
    }

    /// The framer frame faults use for this run.
    pub fn set_framer(&mut self, framer: Rc<dyn Framer>) {
        crate::ctx::set_framer(framer);
    }

    /// turmoil's simulation, for what this type does not wrap.
    pub fn sim(&mut self) -> &mut turmoil::Sim<'static> {
        self.sim
    }
}

/// The workloads an application registers, by name.
#[derive(Clone, Default)]
pub struct Registry {
    workloads: BTreeMap<&'static str, Arc<dyn Workload>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a workload under its [`Workload::name`]; panics when that name is
    /// taken.
    pub fn register(&mut self, workload: Arc<dyn Workload>) {
        let name = workload.name();
        assert!(
            self.workloads.insert(name, workload).is_none(),
            "workload `{name}` registered twice"
        );
    }

    /// The workload registered under `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Workload>> {
        self.workloads.get(name)
    }

    /// The registered names, in alphabetical order.
    pub fn names(&self) -> Vec<&'static str> {
        self.workloads.keys().copied().collect()
    }

    /// Loads one scenario file.
    pub fn load_file(&self, path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("{}: the file name is not UTF-8", path.display()))?
            .to_string();
        self.load_str(&name, Some(path), &text)
    }

    /// Loads a scenario from text (`path` only names it in errors).
    pub fn load_str(
        &self,
        name: &str,
        path: Option<&Path>,
        text: &str,
    ) -> Result<Scenario, String> {
        let shown = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("{name}.toml"));
        let spec: ScenarioSpec =
            toml::from_str(text).map_err(|e| toml_error_named(&shown, text, &e))?;
        let at = |key: &str, message: String| format!("{shown}:{}: {message}", locate(text, key));
        if spec.summary.trim().is_empty() {
            return Err(at("summary", "summary is empty".into()));
        }
        let workload = self.get(&spec.workload).cloned().ok_or_else(|| {
            at(
                "workload",
                format!(
                    "unknown workload `{}` (known: {})",
                    spec.workload,
                    self.names().join(", ")
                ),
            )
        })?;
        spec.sim.validate().map_err(|m| {
            let key = first_key(&m).to_string();
            at(&key, m)
        })?;
        spec.faults.validate().map_err(|m| {
            let key = first_key(&m).to_string();
            at(&key, m)
        })?;
        spec.oracles.validate().map_err(|m| {
            let key = first_key(&m).to_string();
            at(&key, m)
        })?;
        for failure in &spec.expect.fails {
            if failure.oracle.trim().is_empty() {
                return Err(at("oracle", "expect.fails: the oracle is empty".into()));
            }
        }
        let params = spec
            .params
            .as_ref()
            .map(|p| p.get_ref().clone())
            .unwrap_or_default();
        // The whole `[params]` block, nested tables included (toml's span
        // of a table is its header).
        let span = params_range(text)
            .or_else(|| spec.params.as_ref().map(|p| p.span()))
            .unwrap_or(0..0);
        workload.check(&params).map_err(|e| {
            let line = match &e.key {
                // A key of a nested table (`traffic.clients`).
                Some(key) if key.contains('.') => locate(text, &format!("params.{key}")),
                Some(key) => locate_in(text, key, span.clone()),
                None => line_col(text, span.start),
            };
            format!("{shown}:{line}: {}", e.message)
        })?;
        Ok(Scenario {
            name: name.to_string(),
            params,
            path: path.map(Path::to_path_buf),
            spec,
            workload,
            text: text.to_string(),
        })
    }

    /// Loads every `*.toml` of a directory, in name order. Bad files are
    /// returned as errors beside the good scenarios.
    pub fn load_dir(&self, dir: &Path) -> (Vec<Scenario>, Vec<String>) {
        let mut scenarios = Vec::new();
        let mut errors = Vec::new();
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
                .collect(),
            Err(e) => {
                errors.push(format!(
                    "{}: cannot read the scenario directory: {e}",
                    dir.display()
                ));
                Vec::new()
            }
        };
        paths.sort();
        for path in paths {
            match self.load_file(&path) {
                Ok(s) => scenarios.push(s),
                Err(e) => errors.push(e),
            }
        }
        (scenarios, errors)
    }
}

/// A workload made of a closure: handy for tests and one-off scenarios.
/// It accepts any parameters.
pub struct FnWorkload<F> {
    name: &'static str,
    build: F,
}

impl<F> FnWorkload<F>
where
    F: Fn(&mut SimSetup<'_>, &RunSpec<'_>) -> Result<(), String> + Send + Sync,
{
    /// A workload named `name` whose `build` is the closure.
    pub fn new(name: &'static str, build: F) -> FnWorkload<F> {
        FnWorkload { name, build }
    }
}

impl<F> Workload for FnWorkload<F>
where
    F: Fn(&mut SimSetup<'_>, &RunSpec<'_>) -> Result<(), String> + Send + Sync,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn check(&self, _params: &toml::Table) -> Result<(), ParamError> {
        Ok(())
    }

    fn build(&self, setup: &mut SimSetup<'_>, run: &RunSpec<'_>) -> Result<(), String> {
        (self.build)(setup, run)
    }
}

/// A scenario from TOML text (without `workload =`, which is added) and a
/// closure that builds the simulation.
pub fn scenario_from_fn<F>(name: &'static str, toml_text: &str, build: F) -> Scenario
where
    F: Fn(&mut SimSetup<'_>, &RunSpec<'_>) -> Result<(), String> + Send + Sync + 'static,
{
    let mut registry = Registry::new();
    registry.register(Arc::new(FnWorkload::new(name, build)));
    let text = format!("workload = \"{name}\"\n{toml_text}");
    registry
        .load_str(name, None, &text)
        .unwrap_or_else(|e| panic!("bad test scenario: {e}"))
}

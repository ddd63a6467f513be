//! Running scenarios: one seed, a sweep over seeds, the determinism check
//! and shrinking.
//!
//! [`run`] builds a turmoil simulation seeded from the run's seed, installs
//! the run context and the trace layer, lets the workload add its hosts and
//! clients, then steps the simulation itself, so that it can apply faults
//! at their simulated times and consult the oracles after every step. A
//! panic in any simulated host is caught and becomes a `host-crash`
//! failure with its seed; it never aborts a sweep.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, UNIX_EPOCH};

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;

use crate::ctx::{self, RunCtx};
use crate::faults::{CrashMode, FaultPlan, PartitionMode, glob_match};
use crate::net::NetState;
use crate::oracle::{Failure, LatencySummary, OracleState};
use crate::scenario::{RunSpec, Scenario, SimSetup};
use crate::schedule::Scheduler;
use crate::trace::{HarnessLayer, TraceMode, TraceRecord, TraceSink};
use crate::variant::Variant;

/// Where a run's faults come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Faults {
    /// Drawn from the seed within the scenario's fault space (`--faults on`).
    Drawn,
    /// None at all (`--faults off`).
    Off,
    /// Drawn from a swarm of the scenario's fault space: a random subset of
    /// its kinds, at random rates, chosen by the seed (`--faults swarm`).
    Swarm,
    /// Drawn from the scenario's fault space with every race rule drawing
    /// only this strategy (`--faults random`, `--faults pct`, `--faults
    /// targeted`): one strategy's rate over the same race space.
    RaceStrategy(String),
    /// This plan (`--plan FILE`).
    Plan {
        /// The plan to run.
        plan: Box<FaultPlan>,
        /// The file it was read from, named in the replay command; `None` for a
        /// plan made in code (the replay then says `--plan PLAN.toml`).
        source: Option<PathBuf>,
    },
}

impl Faults {
    /// The plan in `path` (TOML, or JSON by its extension), validated, and
    /// named in replay commands as `--plan PATH`: what `--plan` runs, for
    /// a test that keeps a plan `shrink` left as a regression.
    pub fn plan_file(path: impl Into<PathBuf>) -> Result<Faults, String> {
        let path = path.into();
        let plan = FaultPlan::load(&path)?;
        plan.validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Faults::Plan {
            plan: Box::new(plan),
            source: Some(path),
        })
    }
}

/// How a failure's replay command reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replay {
    /// A command line built with [`crate::cli`]: `PREFIX run SCENARIO
    /// --seed N --variant V …`.
    Cli {
        /// How the command starts: the binary, or `cargo run --release --`.
        prefix: String,
    },
    /// A `cargo test` command that runs the failing test again.
    Test {
        /// `cargo test … NAME -- --exact …`.
        command: String,
        /// Prefix it with `FAULTLINE_SEED=N` (a sweep's failing seed; a
        /// recorded seed is the test's own).
        seed_env: bool,
    },
}

/// How to run one seed.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Which lines of the bug's fix run.
    pub variant: Variant,
    /// Where the run's faults come from.
    pub faults: Faults,
    /// How much of the trace to keep.
    pub trace: TraceMode,
    /// What to echo to stderr as the run goes (`RUST_LOG`-style).
    pub echo: Option<Targets>,
    /// The bug whose variant is chosen; the scenario's own when `None`.
    pub bug: Option<String>,
    /// How a failure's replay command reads.
    pub replay: Replay,
}

impl RunOptions {
    /// Options for `variant`: faults drawn from the seed, trace tails kept.
    pub fn new(variant: Variant) -> RunOptions {
        RunOptions {
            variant,
            faults: Faults::Drawn,
            trace: TraceMode::Tails,
            echo: None,
            bug: None,
            replay: Replay::default(),
        }
    }

    /// Sets where the run's faults come from.
    pub fn faults(mut self, faults: Faults) -> RunOptions {
        self.faults = faults;
        self
    }

    /// Sets how much of the trace to keep.
    pub fn trace(mut self, trace: TraceMode) -> RunOptions {
        self.trace = trace;
        self
    }
}

/// Pass, or the oracle that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No oracle fired.
    Pass,
    /// An oracle fired: the run's first failure.
    Fail {
        /// The oracle's name, e.g. `liveness`, `host-crash` or one of the
        /// workload's own.
        oracle: String,
        /// What the oracle found.
        message: String,
    },
    /// The run could not start (a bad scenario parameter, a plan the
    /// scenario cannot run, a build without `tokio_unstable`): no oracle
    /// judged anything. The CLI answers it as a usage error (exit 2).
    Setup(SetupError),
}

/// Why a run could not start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupError {
    /// What is wrong, naming the file, line and field where there is one.
    pub message: String,
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SetupError {}

impl Verdict {
    /// Whether the run passed.
    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass)
    }

    /// The name of the oracle that failed; `None` for a pass.
    pub fn oracle(&self) -> Option<&str> {
        match self {
            Verdict::Pass | Verdict::Setup(_) => None,
            Verdict::Fail { oracle, .. } => Some(oracle),
        }
    }
}

/// Everything one run produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The scenario's name.
    pub scenario: String,
    /// The run's seed.
    pub seed: u64,
    /// Which lines of the bug's fix ran.
    pub variant: Variant,
    /// Where the run's faults came from (as the options said).
    pub faults: Faults,
    /// The bug whose lines the variant chose, when not the scenario's own.
    pub bug: Option<String>,
    /// Pass, or the oracle that failed.
    pub verdict: Verdict,
    /// The trace's hash and line count, each host's last lines and, when kept,
    /// every line.
    pub trace: TraceRecord,
    /// The simulated time the run reached.
    pub sim_time: Duration,
    /// The real time the run took.
    pub wall_time: Duration,
    /// Host-ticks the run stepped: per simulation step, its hosts and
    /// clients (a client that finished early still counts). Wall time per
    /// host-tick is what a simulated millisecond costs per host.
    pub host_ticks: u64,
    /// The faults that were active.
    pub plan: FaultPlan,
    /// Fault points, preemption points (`race:NAME`, and `race-yield:NAME`
    /// for the times a task gave way there) and probes reached, with hit
    /// counts.
    pub coverage: BTreeMap<String, u64>,
    /// Per latency metric: what the run recorded.
    pub latencies: BTreeMap<String, LatencySummary>,
    /// How the replay command reads.
    pub replay: Replay,
}

impl Outcome {
    /// Whether the run reached the scenario's `expect.mechanism` (true when
    /// it names none).
    pub fn reached_mechanism(&self, scenario: &Scenario) -> bool {
        let wants = &scenario.spec.expect.mechanism;
        wants.is_empty()
            || wants
                .iter()
                .any(|want| self.coverage.keys().any(|got| glob_match(want, got)))
    }

    /// The message of a run that could not start (a bad scenario, a build
    /// without `tokio_unstable`): a usage error rather than a failure.
    pub fn setup_error(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Setup(error) => Some(&error.message),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Panics in simulated hosts.
// ---------------------------------------------------------------------------

thread_local! {
    /// `Some` while a run is active on this thread: the first panic's text.
    static PANIC: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = PANIC.with(|slot| {
                let Ok(mut slot) = slot.try_borrow_mut() else {
                    return false;
                };
                let Some(first) = slot.as_mut() else {
                    return false;
                };
                if first.is_none() {
                    let message = info
                        .payload()
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| info.payload().downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "(non-text panic)".to_string());
                    let location = info
                        .location()
                        .map(|l| format!("{}:{}", l.file(), l.line()))
                        .unwrap_or_default();
                    let host = ctx::current_host().unwrap_or_else(|| "-".into());
                    *first = Some(format!("host `{host}` panicked at {location}: {message}"));
                }
                true
            });
            if !captured {
                previous(info);
            }
        }));
    });
}

// ---------------------------------------------------------------------------
// One run.
// ---------------------------------------------------------------------------

/// A fault applied at a simulated time.
enum TimedFault {
    Partition {
        a: String,
        b: String,
        mode: PartitionMode,
    },
    Repair {
        a: String,
        b: String,
        mode: PartitionMode,
    },
    MaxLatency {
        a: String,
        b: String,
        max: Duration,
    },
    Crash {
        host: String,
        mode: CrashMode,
    },
    Restart {
        host: String,
    },
}

fn scheduled_actions(
    plan: &FaultPlan,
    hosts: &[String],
    everyone: &[String],
) -> Vec<(Duration, TimedFault)> {
    let expand = |pattern: &str, names: &[String]| -> Vec<String> {
        names
            .iter()
            .filter(|n| glob_match(pattern, n))
            .cloned()
            .collect()
    };
    let pairs = |a: &str, b: &str| -> Vec<(String, String)> {
        let mut out = Vec::new();
        for x in expand(a, everyone) {
            for y in expand(b, everyone) {
                if x != y {
                    out.push((x.clone(), y));
                }
            }
        }
        out
    };
    let mut actions = Vec::new();
    for p in &plan.partition {
        for (a, b) in pairs(&p.a, &p.b) {
            actions.push((
                Duration::from_millis(p.at_ms),
                TimedFault::Partition {
                    a: a.clone(),
                    b: b.clone(),
                    mode: p.mode,
                },
            ));
            if let Some(heal) = p.heal_ms {
                actions.push((
                    Duration::from_millis(heal),
                    TimedFault::Repair { a, b, mode: p.mode },
                ));
            }
        }
    }
    for l in &plan.latency {
        for (a, b) in pairs(&l.a, &l.b) {
            actions.push((
                Duration::from_millis(l.at_ms),
                TimedFault::MaxLatency {
                    a,
                    b,
                    max: Duration::from_millis(l.max_ms),
                },
            ));
        }
    }
    for c in &plan.crash {
        for host in expand(&c.host, hosts) {
            actions.push((
                Duration::from_millis(c.at_ms),
                TimedFault::Crash {
                    host: host.clone(),
                    mode: c.mode,
                },
            ));
            if let Some(restart) = c.restart_ms {
                actions.push((
                    Duration::from_millis(restart.max(c.at_ms)),
                    TimedFault::Restart { host },
                ));
            }
        }
    }
    // Stable order: by time, then as listed.
    actions.sort_by_key(|(at, _)| *at);
    actions
}

fn apply(sim: &mut turmoil::Sim<'static>, action: &TimedFault, ctx: &RunCtx) {
    let note = match action {
        TimedFault::Partition {
            a,
            b,
            mode: PartitionMode::Drop,
        } => {
            sim.partition(a.as_str(), b.as_str());
            format!("partition {a} {b}")
        }
        TimedFault::Partition {
            a,
            b,
            mode: PartitionMode::Hold,
        } => {
            sim.hold(a.as_str(), b.as_str());
            format!("partition {a} {b} (held)")
        }
        TimedFault::Repair {
            a,
            b,
            mode: PartitionMode::Drop,
        } => {
            sim.repair(a.as_str(), b.as_str());
            format!("repair {a} {b}")
        }
        TimedFault::Repair {
            a,
            b,
            mode: PartitionMode::Hold,
        } => {
            sim.release(a.as_str(), b.as_str());
            format!("repair {a} {b} (held messages delivered)")
        }
        TimedFault::MaxLatency { a, b, max } => {
            sim.set_link_max_message_latency(a.as_str(), b.as_str(), *max);
            format!("latency {a} {b} max_ms={}", max.as_millis())
        }
        TimedFault::Crash {
            host,
            mode: CrashMode::Machine,
        } => {
            sim.crash(host.as_str());
            format!("crash {host}")
        }
        TimedFault::Crash {
            host,
            mode: CrashMode::Process,
        } => {
            // A restart (turmoil's bounce drops every task of the host)
            // into software held down (see `SimSetup::host`): the machine
            // stays up, nothing listens, connects are refused.
            ctx.set_process_down(host, true);
            sim.bounce(host.as_str());
            format!("crash {host} (process: connects refused)")
        }
        TimedFault::Restart { host } => {
            ctx.set_process_down(host, false);
            sim.bounce(host.as_str());
            format!("restart {host}")
        }
    };
    ctx.cover(&format!(
        "scheduled:{}",
        note.split(' ').next().unwrap_or("")
    ));
    tracing::info!(target: "faultline::fault", "{note}");
}

/// Runs one seed of a scenario.
///
/// A plan whose `pct` rule does not say the run's number of steps (`steps
/// = 0`, as drawn plans are) runs twice: first without change points, which
/// counts the steps `k` (same priorities, same seed), then with the change
/// points drawn in `1..=k`; the outcome is the second run's, and its plan
/// says `steps = k`. A failure of the first run is the outcome.
pub fn run(scenario: &Scenario, seed: u64, options: &RunOptions) -> Outcome {
    let plan = match &options.faults {
        Faults::Drawn => scenario.spec.faults.draw(seed).current(),
        Faults::Off => FaultPlan::default(),
        Faults::Swarm => scenario.spec.faults.swarm(seed).draw(seed).current(),
        Faults::RaceStrategy(strategy) => match scenario.spec.faults.with_race_strategy(strategy) {
            Ok(space) => space.draw(seed).current(),
            Err(e) => {
                // A setup error, reported as every other one is.
                let mut outcome = run_plan(scenario, seed, options, FaultPlan::default());
                outcome.verdict = Verdict::Setup(SetupError {
                    message: format!("--faults {strategy}: {e}"),
                });
                return outcome;
            }
        },
        Faults::Plan { plan, .. } => (**plan).clone(),
    };
    let Some(probe_plan) = plan.pct_probe() else {
        return run_plan(scenario, seed, options, plan);
    };
    // Its trace goes unread unless it fails: then it runs again, traced.
    let quiet = RunOptions {
        echo: None,
        trace: TraceMode::Off,
        ..options.clone()
    };
    let probe = run_plan(scenario, seed, &quiet, probe_plan.clone());
    if !probe.verdict.is_pass() {
        return run_plan(scenario, seed, options, probe_plan);
    }
    let plan = plan.with_pct_steps(&probe.coverage);
    let mut outcome = run_plan(scenario, seed, options, plan);
    // The seed's cost is both runs'.
    outcome.wall_time += probe.wall_time;
    outcome
}

/// Runs one seed of a scenario with `plan`, as it is.
fn run_plan(scenario: &Scenario, seed: u64, options: &RunOptions, plan: FaultPlan) -> Outcome {
    install_panic_hook();
    // Wall time of the run, for reports: measured outside the simulation.
    let wall_start = std::time::Instant::now();
    let sink = TraceSink::new(options.trace, options.echo.clone());
    let run_ctx = Rc::new(
        RunCtx::new(seed, plan.clone())
            .with_part(Scheduler::new(seed, &plan))
            .with_part(NetState::default())
            .with_part(OracleState::new(scenario.spec.oracles.clone()))
            .with_part(sink),
    );

    let guard = ctx::enter(run_ctx.clone());
    let subscriber = tracing_subscriber::registry().with(HarnessLayer::new(options.echo.clone()));
    let dispatch = tracing::subscriber::set_default(subscriber);
    PANIC.with(|p| *p.borrow_mut() = Some(None));

    let host_ticks = std::cell::Cell::new(0);
    let result = catch_unwind(AssertUnwindSafe(|| {
        simulate(scenario, seed, options, &plan, &run_ctx, &host_ticks)
    }));
    let panic_text = PANIC.with(|p| p.borrow_mut().take()).flatten();
    let (sim_time, setup_error) = match result {
        Ok(r) => r,
        Err(_) => (run_ctx.step_elapsed(), None),
    };
    if let Some(text) = panic_text {
        let mut oracles = run_ctx.part::<OracleState>().borrow_mut();
        // The step loop recorded the crash without its text; the hook has it.
        if oracles
            .failure
            .as_ref()
            .is_none_or(|f| f.oracle == "host-crash")
        {
            oracles.failure = None;
            oracles.fail("host-crash", text, sim_time);
        }
    }
    let failure: Option<Failure> = run_ctx.part::<OracleState>().borrow().failure.clone();
    let verdict = match (setup_error, failure) {
        // A run that could not start says so, whatever fired before.
        (Some(message), _) => Verdict::Setup(SetupError { message }),
        (None, None) => Verdict::Pass,
        (None, Some(f)) => Verdict::Fail {
            oracle: f.oracle,
            message: f.message,
        },
    };
    let note = match &verdict {
        Verdict::Pass => None,
        Verdict::Fail { oracle, message } => {
            Some(format!("verdict fail oracle={oracle}: {message}"))
        }
        Verdict::Setup(error) => Some(format!("verdict setup error: {error}")),
    };
    if let Some(note) = note {
        run_ctx.part::<TraceSink>().borrow_mut().note("-", note);
    }
    let latencies = run_ctx.part::<OracleState>().borrow().latency_summary();
    let mut coverage = run_ctx.coverage();
    coverage.extend(run_ctx.part::<Scheduler>().borrow().coverage());
    drop(dispatch);
    drop(guard);
    let run_ctx = Rc::try_unwrap(run_ctx)
        .unwrap_or_else(|_| panic!("the run context outlived its simulation"));
    let trace = run_ctx.into_part::<TraceSink>().finish();
    Outcome {
        scenario: scenario.name.clone(),
        seed,
        variant: options.variant,
        faults: options.faults.clone(),
        bug: options
            .bug
            .clone()
            .filter(|b| Some(b.as_str()) != scenario.bug()),
        verdict,
        trace,
        sim_time,
        wall_time: wall_start.elapsed(),
        host_ticks: host_ticks.get(),
        plan,
        coverage,
        latencies,
        replay: options.replay.clone(),
    }
}

/// Builds and steps the simulation. Returns the simulated time reached and
/// a set-up error, if the workload could not build; counts each step's
/// hosts and clients in `host_ticks`.
fn simulate(
    scenario: &Scenario,
    seed: u64,
    options: &RunOptions,
    plan: &FaultPlan,
    run_ctx: &RunCtx,
    host_ticks: &std::cell::Cell<u64>,
) -> (Duration, Option<String>) {
    if let Err(message) = require_tokio_unstable() {
        return (Duration::ZERO, Some(message));
    }
    let config = &scenario.spec.sim;
    let tick = Duration::from_millis(config.tick_ms);
    let limit = Duration::from_millis(config.duration_ms);
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .tick_duration(tick)
        // The runner enforces the limit itself, with the liveness oracle.
        .simulation_duration(limit + Duration::from_secs(3600))
        .min_message_latency(Duration::from_millis(config.min_latency_ms))
        .max_message_latency(Duration::from_millis(config.max_latency_ms))
        .tcp_capacity(config.tcp_capacity);
    if config.random_node_order {
        builder.enable_random_order();
    }
    let mut sim = builder.build();
    let bug = options.bug.as_deref().or(scenario.bug());
    let spec = RunSpec {
        scenario: &scenario.name,
        params: scenario.params(),
        variant: options.variant,
        bug,
        seed,
    };
    let mut setup = SimSetup {
        sim: &mut sim,
        hosts: Vec::new(),
        clients: Vec::new(),
    };
    if let Err(error) = scenario.workload.build(&mut setup, &spec) {
        return (
            Duration::ZERO,
            Some(format!(
                "the workload could not build the simulation: {error}"
            )),
        );
    }
    let hosts = setup.hosts.clone();
    let everyone: Vec<String> = setup
        .hosts
        .iter()
        .chain(setup.clients.iter())
        .cloned()
        .collect();
    // A fault whose host glob matches nobody would be a silent no-op.
    if let Err(error) = scenario.check_hosts(&everyone) {
        return (Duration::ZERO, Some(error));
    }
    if let Err(error) = check_plan_hosts(plan, &everyone, &options.faults) {
        return (Duration::ZERO, Some(error));
    }
    let mut actions = scheduled_actions(plan, &hosts, &everyone)
        .into_iter()
        .peekable();
    tracing::info!(
        target: "faultline::run",
        scenario = scenario.name.as_str(),
        seed,
        variant = options.variant.name(),
        faults = plan.summary().as_str(),
        "run"
    );

    let mut now = sim.elapsed();
    loop {
        run_ctx.set_step_elapsed(now);
        while let Some((_, action)) = actions.next_if(|(at, _)| *at <= now) {
            apply(&mut sim, &action, run_ctx);
        }
        let step = catch_unwind(AssertUnwindSafe(|| sim.step()));
        host_ticks.set(host_ticks.get() + everyone.len() as u64);
        now = sim.elapsed();
        run_ctx.set_step_elapsed(now);
        let finished = match step {
            Ok(Ok(finished)) => finished,
            // A host panicked: the hook kept its text; `run` reports it.
            Err(_) => {
                run_ctx.part::<OracleState>().borrow_mut().fail(
                    "host-crash",
                    "a host panicked".into(),
                    now,
                );
                break;
            }
            Ok(Err(error)) => {
                let message = error.to_string();
                run_ctx
                    .part::<OracleState>()
                    .borrow_mut()
                    .fail("host-error", message, now);
                break;
            }
        };
        let mut oracles = run_ctx.part::<OracleState>().borrow_mut();
        oracles.check_step(now);
        if oracles.failure.is_some() || finished {
            break;
        }
        if now >= limit {
            let pending = oracles.pending_names();
            let message = if pending.is_empty() {
                format!(
                    "the workload did not finish within {} ms",
                    limit.as_millis()
                )
            } else {
                format!(
                    "the workload did not finish within {} ms; pending: {}",
                    limit.as_millis(),
                    pending.join(", ")
                )
            };
            oracles.fail("liveness", message, now);
            break;
        }
    }
    if run_ctx.part::<OracleState>().borrow().failure.is_none() {
        run_ctx.part::<OracleState>().borrow_mut().check_end(now);
    }
    // Hosts' drops may touch the run context: drop the simulation while it
    // is still installed, and never let a panicking drop escape.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(sim)));
    (now, None)
}

/// A given plan's host globs must match hosts of the run too.
fn check_plan_hosts(plan: &FaultPlan, hosts: &[String], faults: &Faults) -> Result<(), String> {
    let Faults::Plan { source, .. } = faults else {
        return Ok(()); // Drawn plans come from the space, checked above.
    };
    let shown = source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the plan".to_string());
    for (kind, glob) in plan.host_globs() {
        if !hosts.iter().any(|h| glob_match(glob, h)) {
            return Err(format!(
                "{shown}: [[{kind}]] `{glob}` matches no host of this run (hosts: {})",
                hosts.join(", ")
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Sweeps.
// ---------------------------------------------------------------------------

/// Told as a sweep's seeds finish, from its worker threads: the CLI draws
/// a progress bar with it; the runner knows no terminal.
pub trait Progress: Send + Sync {
    /// A sweep of `seeds` seeds of `scenario` starts.
    fn start(&self, scenario: &str, seeds: u64);
    /// One more seed is done.
    fn advance(&self);
    /// The sweep is over.
    fn finish(&self);
}

/// How to sweep.
#[derive(Clone)]
pub struct SweepOptions {
    /// How to run each seed.
    pub run: RunOptions,
    /// Worker threads, one simulation each at a time.
    pub jobs: usize,
    /// Go on after a failure.
    pub keep_going: bool,
    /// Told as seeds finish (`None`: nobody).
    pub progress: Option<Arc<dyn Progress>>,
}

impl std::fmt::Debug for SweepOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SweepOptions")
            .field("run", &self.run)
            .field("jobs", &self.jobs)
            .field("keep_going", &self.keep_going)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl SweepOptions {
    /// Options for a sweep of `run`: one worker per core, stopping at the first
    /// failure, no progress bar.
    pub fn new(run: RunOptions) -> SweepOptions {
        SweepOptions {
            run,
            jobs: default_jobs(),
            keep_going: false,
            progress: None,
        }
    }
}

/// The number of cores.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// What a sweep found.
#[derive(Clone, Debug, Default)]
pub struct SweepReport {
    /// The scenario's name.
    pub scenario: String,
    /// Seeds that ran (fewer than asked when the sweep stopped at a failure).
    pub seeds_run: u64,
    /// Runs that passed.
    pub passed: u64,
    /// Failing runs, by seed.
    pub failures: Vec<Outcome>,
    /// Per fault point, preemption point and probe: how many runs reached it.
    pub coverage: BTreeMap<String, u64>,
    /// Per point: hits summed over the runs (for `race-yield:NAME`, the
    /// times a task gave way there).
    pub hits: BTreeMap<String, u64>,
    /// Sum of simulated time over the runs.
    pub sim_time: Duration,
    /// Wall time of the whole sweep.
    pub wall_time: Duration,
    /// The scenario's `expect.reaches` points no run reached (judged only
    /// when the faults were drawn from the scenario's space: not with
    /// `Faults::Off` or a plan).
    pub unreached: Vec<String>,
    /// The faults of the scenario's space that no run applied (a point
    /// glob, a frame label or a switch name nothing matched), described.
    pub unapplied: Vec<String>,
    /// Failing seeds whose run did not reach the scenario's
    /// `expect.mechanism`: a symptom without the bug's mechanism.
    pub without_mechanism: Vec<u64>,
}

impl SweepReport {
    /// How many runs failed.
    pub fn failed(&self) -> u64 {
        self.failures.len() as u64
    }

    /// Whether every run passed and every required point was reached.
    pub fn is_pass(&self) -> bool {
        self.failures.is_empty() && self.unreached.is_empty()
    }

    /// The last line of `faultline sweep`.
    pub fn summary_line(&self) -> String {
        let mut line = format!("sweep: {} passed, {} failed", self.passed, self.failed());
        if !self.unreached.is_empty() {
            line.push_str(&format!(
                ", {} required point(s) never reached",
                self.unreached.len()
            ));
        }
        line
    }

    /// One line per `expect.reaches` point no run reached.
    pub fn unreached_lines(&self) -> Vec<String> {
        self.unreached
            .iter()
            .map(|point| {
                format!(
                    "reaches: no run of {} reached `{point}` (expect.reaches): the sweep never tested that place",
                    self.scenario
                )
            })
            .collect()
    }
}

/// Bytes of stack for a worker thread: simulated hosts nest deep futures.
pub const WORKER_STACK_BYTES: usize = 32 * 1024 * 1024;

/// Runs `work` over `items` on `jobs` worker threads (of
/// [`WORKER_STACK_BYTES`]), each taking the next item, until `stop` is set;
/// `done` sees each result as it comes. Returns the results in item order
/// (fewer when stopped). [`sweep`] runs its seeds with it; a test that
/// sweeps several scenarios can run them side by side the same way.
pub fn parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    stop: &AtomicBool,
    work: impl Fn(&T) -> R + Sync,
    done: impl Fn(&R) + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for worker in 0..jobs.max(1).min(items.len().max(1)) {
            std::thread::Builder::new()
                .name(format!("faultline-worker-{worker}"))
                .stack_size(WORKER_STACK_BYTES)
                .spawn_scoped(scope, || {
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(index) else { break };
                        let result = work(item);
                        done(&result);
                        results
                            .lock()
                            .expect("no worker panics while holding the lock")
                            .push((index, result));
                    }
                })
                .expect("spawning a worker thread");
        }
    });
    let mut results = results.into_inner().expect("workers finished");
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Runs every seed; stops at the first failure unless `keep_going`.
pub fn sweep(scenario: &Scenario, seeds: &[u64], options: &SweepOptions) -> SweepReport {
    let wall_start = std::time::Instant::now();
    let stop = AtomicBool::new(false);
    let bar = options.progress.as_deref();
    if let Some(bar) = bar {
        bar.start(&scenario.name, seeds.len() as u64);
    }
    let outcomes = parallel(
        seeds,
        options.jobs,
        &stop,
        |seed| run(scenario, *seed, &options.run),
        |outcome| {
            if !outcome.verdict.is_pass() && !options.keep_going {
                stop.store(true, Ordering::Relaxed);
            }
            if let Some(bar) = bar {
                bar.advance();
            }
        },
    );
    if let Some(bar) = bar {
        bar.finish();
    }
    let mut report = SweepReport {
        scenario: scenario.name.clone(),
        ..SweepReport::default()
    };
    for outcome in outcomes {
        report.seeds_run += 1;
        report.sim_time += outcome.sim_time;
        for (point, hits) in &outcome.coverage {
            *report.coverage.entry(point.clone()).or_insert(0) += 1;
            *report.hits.entry(point.clone()).or_insert(0) += hits;
        }
        if outcome.verdict.is_pass() {
            report.passed += 1;
        } else {
            report.failures.push(outcome);
        }
    }
    report.failures.sort_by_key(|o| o.seed);
    report.wall_time = wall_start.elapsed();
    // `expect.reaches` names places the scenario's fault space must get to;
    // a plan given by hand (`--plan`) or no faults at all is not that space.
    let space_drawn = !matches!(options.run.faults, Faults::Off | Faults::Plan { .. });
    // A sweep that stopped early judged fewer runs; a setup error reached
    // nothing at all.
    let complete = report.seeds_run == seeds.len() as u64;
    let setup = report.failures.iter().any(|o| o.setup_error().is_some());
    let drawn = matches!(options.run.faults, Faults::Drawn | Faults::Swarm);
    // (One strategy alone need not reach every point the space names.)
    if drawn && complete && !setup {
        report.unapplied = scenario
            .spec
            .faults
            .applied_keys()
            .into_iter()
            .filter(|(_, key)| !report.coverage.contains_key(key))
            .map(|(what, _)| what)
            .collect();
    }
    report.without_mechanism = report
        .failures
        .iter()
        .filter(|o| o.setup_error().is_none() && !o.reached_mechanism(scenario))
        .map(|o| o.seed)
        .collect();
    if space_drawn && complete && !setup {
        report.unreached = scenario
            .spec
            .expect
            .reaches
            .iter()
            .filter(|want| !report.coverage.keys().any(|got| glob_match(want, got)))
            .cloned()
            .collect();
    }
    report
}

// ---------------------------------------------------------------------------
// The determinism check.
// ---------------------------------------------------------------------------

/// A seed whose two runs differed.
#[derive(Clone, Debug)]
pub struct Mismatch {
    /// The seed.
    pub seed: u64,
    /// The two runs' trace hashes, in hex.
    pub hashes: (String, String),
    /// (line number, first run's line, second run's line).
    pub first_difference: Option<(usize, String, String)>,
}

/// What the determinism check found.
#[derive(Clone, Debug, Default)]
pub struct DeterminismReport {
    /// Seeds checked, each run twice.
    pub seeds: u64,
    /// The seeds whose two runs left different traces.
    pub mismatches: Vec<Mismatch>,
}

impl DeterminismReport {
    /// The last line of `faultline check-determinism`.
    pub fn summary_line(&self) -> String {
        format!(
            "determinism: {} seeds, {} mismatches",
            self.seeds,
            self.mismatches.len()
        )
    }
}

/// Runs every seed twice and compares the traces.
pub fn check_determinism(
    scenario: &Scenario,
    seeds: &[u64],
    run: &RunOptions,
    jobs: usize,
    progress: Option<&dyn Progress>,
) -> DeterminismReport {
    let options = run.clone().trace(TraceMode::Full);
    let stop = AtomicBool::new(false);
    let bar = progress;
    if let Some(bar) = bar {
        bar.start(&scenario.name, seeds.len() as u64);
    }
    let results = parallel(
        seeds,
        jobs,
        &stop,
        |seed| {
            let first = self::run(scenario, *seed, &options);
            let second = self::run(scenario, *seed, &options);
            if first.trace.hash == second.trace.hash {
                return None;
            }
            let a = first.trace.lines.clone().unwrap_or_default();
            let b = second.trace.lines.clone().unwrap_or_default();
            Some(Mismatch {
                seed: *seed,
                hashes: (first.trace.hash_hex(), second.trace.hash_hex()),
                first_difference: crate::trace::first_difference(&a, &b),
            })
        },
        |_| {
            if let Some(bar) = bar {
                bar.advance();
            }
        },
    );
    if let Some(bar) = bar {
        bar.finish();
    }
    DeterminismReport {
        seeds: seeds.len() as u64,
        mismatches: results.into_iter().flatten().collect(),
    }
}

// ---------------------------------------------------------------------------
// Shrinking.
// ---------------------------------------------------------------------------

/// The result of shrinking a failing run's plan.
#[derive(Clone, Debug)]
pub struct ShrinkReport {
    /// The oracle the seed failed with; a smaller plan counts only when it
    /// fails with the same one.
    pub oracle: String,
    /// The plan drawn for the seed.
    pub before: FaultPlan,
    /// The smallest plan found that still fails with `oracle`.
    pub after: FaultPlan,
    /// Runs spent.
    pub runs: u32,
    /// The failing run with the smallest plan.
    pub outcome: Outcome,
}

impl ShrinkReport {
    /// The last line of `faultline shrink`: the fault counts before and after.
    pub fn summary_line(&self) -> String {
        format!(
            "shrink: {} faults -> {} faults",
            self.before.len(),
            self.after.len()
        )
    }
}

/// Shrinks the plan drawn for `seed` to a smallest plan that still fails
/// with the same oracle (proptest's simplify/complicate search). `Err` when
/// the seed does not fail.
///
/// `options` gives the variant and bug; its faults say where the plan came
/// from (a swarm's draw with `Faults::Swarm`, the scenario's space's
/// otherwise).
pub fn shrink(
    scenario: &Scenario,
    seed: u64,
    options: &RunOptions,
    max_runs: u32,
) -> Result<ShrinkReport, Box<Outcome>> {
    let mut tree = match &options.faults {
        Faults::Swarm => scenario.spec.faults.swarm(seed).draw(seed),
        Faults::RaceStrategy(strategy) => match scenario.spec.faults.with_race_strategy(strategy) {
            Ok(space) => space.draw(seed),
            Err(_) => return Err(Box::new(run(scenario, seed, options))),
        },
        _ => scenario.spec.faults.draw(seed),
    };
    let before = tree.current();
    let attempt = |plan: &FaultPlan| {
        let mut options = options.clone();
        options.faults = Faults::Plan {
            plan: Box::new(plan.clone()),
            source: None,
        };
        run(scenario, seed, &options)
    };
    let first = attempt(&before);
    let Some(oracle) = first.verdict.oracle().map(str::to_string) else {
        return Err(Box::new(first));
    };
    let mut best = first;
    let mut runs = 1;
    let mut passed = false;
    while runs < max_runs {
        let moved = if passed {
            tree.complicate()
        } else {
            tree.simplify()
        };
        if !moved {
            break;
        }
        let candidate = tree.current();
        let outcome = attempt(&candidate);
        runs += 1;
        if outcome.verdict.oracle() == Some(oracle.as_str()) {
            if candidate.len() <= best.plan.len() {
                best = outcome;
            }
            passed = false;
        } else {
            passed = true;
        }
    }
    Ok(ShrinkReport {
        oracle,
        before,
        after: best.plan.clone(),
        runs,
        outcome: best,
    })
}

/// Whether this build has `--cfg tokio_unstable`, without which turmoil
/// cannot seed tokio's own random choices (`select!` branch order).
pub const TOKIO_UNSTABLE: bool = cfg!(tokio_unstable);

/// What a build without `--cfg tokio_unstable` is told at its first run.
pub const TOKIO_UNSTABLE_MISSING: &str = "this build lacks `--cfg tokio_unstable`: without it turmoil cannot seed tokio's own random choices (the branch order of `select!`), and a seed would not replay. Add to `.cargo/config.toml` at your workspace's root:\n\n    [build]\n    rustflags = [\"--cfg\", \"tokio_unstable\"]\n\n(and do not override it with a RUSTFLAGS variable)";

/// Fails with [`TOKIO_UNSTABLE_MISSING`] when the build lacks the flag.
pub fn require_tokio_unstable() -> Result<(), String> {
    check_tokio_unstable(TOKIO_UNSTABLE)
}

fn check_tokio_unstable(present: bool) -> Result<(), String> {
    if present {
        Ok(())
    } else {
        Err(TOKIO_UNSTABLE_MISSING.to_string())
    }
}

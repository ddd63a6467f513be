//! faultline-harness: deterministic network simulation testing over turmoil.
//!
//! The harness owns seeds, faults, traces, oracles and running; it knows
//! nothing about the system under test. A run is `(scenario, seed,
//! variant)`: one `u64` seeds turmoil and every named random stream, the
//! run's [`faults::FaultPlan`] is drawn from the scenario's
//! [`faults::FaultSpace`] by the seed (or given), and the run's verdict
//! comes from the oracles.
//!
//! # The public surface
//!
//! The crate root holds what a workload and a test runner need:
//!
//! * for code under test: the simulated network ([`SimStream`],
//!   [`SimListener`], [`SimSocket`]), simulated threads ([`spawn`],
//!   [`yield_now`]), and the probes a system under test calls
//!   ([`switch`], [`probe`], [`event`], [`with_rng`], [`now`],
//!   [`current_host`], [`in_sim`], [`set_framer`] with its [`Framer`]);
//! * for running: [`Scenario`] files, the [`Workload`] trait and its
//!   [`Registry`], [`run`], [`sweep`], [`check_determinism`], [`shrink`],
//!   their options and [`Outcome`]; failure rates ([`FailureRate`]) and
//!   the failure summary of a report ([`failure_summary`]).
//!
//! Beside it, one module per face:
//!
//! * [`faults`]: fault plans (what a run injects) and fault spaces (what a
//!   scenario allows);
//! * [`sync`]: locks, condition variables and atomics whose every
//!   operation is a preemption point;
//! * [`sys`]: a non-blocking syscall view with errno personalities, pipes,
//!   `splice` and an epoll-like poller;
//! * [`oracle`]: the checks a workload reports to (liveness, busy loops,
//!   latency, explicit failures);
//! * [`linearizability`]: whether a concurrent history could come from a
//!   sequential model;
//! * [`explore`]: every schedule of a seed with at most `c` preemptions;
//! * [`testing`]: scenario expectations in `cargo test`;
//! * `cli` (feature `cli`, on by default): the generic command line.
//!
//! # Layers
//!
//! Inside, each module imports only from the layers before it, and no
//! file imports a file that imports it (the workspace's
//! `tests/integration/architecture.rs` keeps it so): data (seeds, variants, fault plans and
//! spaces, TOML diagnostics, statistics, histories) -> the world (the run
//! context) -> what code under test calls (trace, oracles, the schedule,
//! `sync`, the network, `sys`) -> what drives runs (scenarios, the runner,
//! exploration, reports, `testing`, the CLI). See ARCHITECTURE.md.

#![warn(missing_docs)]

// Data.
mod coverage;
mod diag;
pub mod faults;
pub mod linearizability;
mod seed;
mod stats;
mod variant;
// The world.
mod ctx;
// What code under test calls.
mod net;
pub mod oracle;
mod schedule;
pub mod sync;
pub mod sys;
mod trace;
// What drives runs.
#[cfg(feature = "cli")]
pub mod cli;
pub mod explore;
mod report;
mod runner;
mod scenario;
pub mod testing;

pub use ctx::{
    FrameInfo, Framer, current_host, event, in_sim, now, probe, set_framer, switch, with_rng,
};
pub use net::{SimListener, SimSocket, SimStream, connect_socket};
pub use report::{REPLAY_PREFIX, failure_summary, mermaid};
pub use runner::{
    DeterminismReport, Faults, Mismatch, Outcome, Progress, Replay, RunOptions, SetupError,
    ShrinkReport, SweepOptions, SweepReport, TOKIO_UNSTABLE, TOKIO_UNSTABLE_MISSING, Verdict,
    WORKER_STACK_BYTES, check_determinism, default_jobs, parallel, require_tokio_unstable, run,
    shrink, sweep,
};
pub use scenario::{
    Expect, FnWorkload, ParamError, RecordedFailure, Registry, RunSpec, Scenario, ScenarioSpec,
    SimConfig, SimSetup, Workload, parse_params, scenario_from_fn,
};
pub use schedule::{spawn, yield_now};
pub use seed::{SeedRange, SimRng};
pub use stats::{FailureRate, seeds_for_95, wilson_95};
pub use trace::{TraceMode, TraceRecord};
pub use variant::Variant;

/// The crate's README, whose example runs as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

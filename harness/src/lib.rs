//! faultline-harness: deterministic network simulation testing over turmoil.
//!
//! The harness owns seeds, faults, traces, oracles and running; it knows
//! nothing about the system under test. A run is `(scenario, seed,
//! variant)`:
//!
//! * [`seed`]: one `u64` seeds turmoil and every named random stream;
//! * [`faults`]: the run's [`FaultPlan`], drawn from the scenario's
//!   [`FaultSpace`] by the seed, or given;
//! * [`net`]: simulated TCP with tiny send buffers, segmentation and frame
//!   delays; [`sys`]: a non-blocking syscall view with errno personalities
//!   and an epoll-like poller;
//! * [`sync`]: locks, condition variables and atomics whose every
//!   operation is a preemption point; [`schedule`]: where the seed makes
//!   threads ([`spawn`]) give way there (random, PCT, targeted, one
//!   schedule of bounded exploration);
//! * [`oracle`]: how a run decides it failed;
//! * [`linearizability`]: whether a concurrent history could come from a
//!   sequential model (Wing & Gong with Lowe's memo, per partition), and
//!   a few operations that explain a failure;
//! * [`trace`]: the canonical trace and its hash;
//! * [`runner`]: run, sweep, determinism check, shrink; [`explore`]:
//!   every schedule with at most `c` preemptions;
//! * [`scenario`]: scenario files and the [`Workload`] trait;
//! * [`stats`]: failure rates with their 95% interval, seeds that prove a fix;
//! * [`testing`]: `cargo test` helpers.

#![warn(missing_docs)]

pub mod cli;
pub mod ctx;
pub mod explore;
pub mod faults;
pub mod linearizability;
pub mod net;
pub mod oracle;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod schedule;
pub mod seed;
pub mod stats;
pub mod sync;
pub mod sys;
pub mod testing;
pub mod trace;

pub use ctx::{
    FrameInfo, Framer, current_host, event, in_sim, now, probe, set_framer, switch, with_rng,
};
pub use faults::{FaultPlan, FaultSpace, Personality};
pub use net::{SimListener, SimSocket, SimStream};
pub use runner::{Faults, Outcome, RunOptions, Variant, Verdict};
pub use scenario::{
    FnWorkload, ParamError, Registry, RunSpec, Scenario, SimSetup, Workload, parse_params,
    scenario_from_fn,
};
pub use schedule::{spawn, yield_now};
pub use sys::{Errno, Events, Fd, Sys, Syscalls};
pub use trace::TraceMode;

/// The crate's README, whose example runs as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

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

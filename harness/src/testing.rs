//! `cargo test` integration.
//!
//! ```
//! use faultline_harness::{Variant, scenario_from_fn, testing::Check};
//!
//! // A scenario whose client fails its own oracle on odd seeds.
//! let scenario = scenario_from_fn("doc", "summary = \"example\"\n", |sim, run| {
//!     let odd = run.seed % 2 == 1;
//!     sim.client("client", async move {
//!         if odd {
//!             faultline_harness::oracle::fail("parity", "odd seed");
//!         }
//!         Ok(())
//!     });
//!     Ok(())
//! });
//! Check::new(&scenario).variant(Variant::Fixed).seeds(0..1).expect_pass();
//! Check::new(&scenario).variant(Variant::Fixed).expect_fail(3, "parity");
//! ```
//!
//! Environment (read here, in the test process, never inside a simulation):
//! * `FAULTLINE_SEED=N` makes every sweep (`expect_pass`) replay only seed N
//!   (recorded failing seeds stay what they are);
//! * `FAULTLINE_SEEDS=K` widens every sweep to K seeds;
//! * `FAULTLINE_JOBS=J` runs sweeps on J threads (default 1: cargo already
//!   runs tests in parallel).
//!
//! A failing check panics with the failure report, whose last line is the
//! command that replays it.

use std::ops::Range;

use crate::runner::{self, Faults, RunOptions, SweepOptions, Variant, Verdict};
use crate::scenario::Scenario;

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={text} is not a whole number"),
    }
}

/// A check of one scenario over seeds.
pub struct Check<'a> {
    scenario: &'a Scenario,
    options: RunOptions,
    seeds: Range<u64>,
}

impl<'a> Check<'a> {
    pub fn new(scenario: &'a Scenario) -> Check<'a> {
        Check {
            scenario,
            options: RunOptions::new(Variant::Fixed),
            seeds: 0..scenario.spec.expect.test_seeds,
        }
    }

    pub fn variant(mut self, variant: Variant) -> Self {
        self.options.variant = variant;
        self
    }

    pub fn faults(mut self, faults: Faults) -> Self {
        self.options.faults = faults;
        self
    }

    /// The bug whose variant is chosen (the scenario's own by default).
    pub fn bug(mut self, bug: &str) -> Self {
        self.options.bug = Some(bug.to_string());
        self
    }

    /// The seeds to sweep; `FAULTLINE_SEEDS=K` makes it `start..start+K`,
    /// `FAULTLINE_SEED=N` makes it `N..N+1`.
    pub fn seeds(mut self, seeds: Range<u64>) -> Self {
        self.seeds = seeds;
        self
    }

    fn effective_seeds(&self) -> Vec<u64> {
        if let Some(seed) = env_u64("FAULTLINE_SEED") {
            return vec![seed];
        }
        match env_u64("FAULTLINE_SEEDS") {
            Some(count) => (self.seeds.start..self.seeds.start + count).collect(),
            None => self.seeds.clone().collect(),
        }
    }

    /// Every seed must pass. Returns the number of seeds run.
    pub fn expect_pass(self) -> u64 {
        let seeds = self.effective_seeds();
        let mut options = SweepOptions::new(self.options.clone());
        options.jobs = env_u64("FAULTLINE_JOBS").map(|j| j as usize).unwrap_or(1);
        let report = runner::sweep(self.scenario, &seeds, &options);
        if let Some(failure) = report.failures.first() {
            panic!(
                "{} {} failed on seed {} ({} of {} seeds failed)\n{}",
                self.scenario.name,
                self.options.variant,
                failure.seed,
                report.failed(),
                report.seeds_run,
                failure.report()
            );
        }
        report.seeds_run
    }

    /// The recorded `seed` must fail with `oracle`. (`FAULTLINE_SEED` does
    /// not apply: a recorded seed is a fact about that seed.)
    pub fn expect_fail(self, seed: u64, oracle: &str) -> runner::Outcome {
        let outcome = runner::run(self.scenario, seed, &self.options);
        match &outcome.verdict {
            Verdict::Fail { oracle: got, .. } if got == oracle => outcome,
            Verdict::Fail {
                oracle: got,
                message,
            } => panic!(
                "{} {} seed {seed}: expected oracle `{oracle}` to fire, but `{got}` fired: {message}\n{}",
                self.scenario.name,
                self.options.variant,
                outcome.report()
            ),
            Verdict::Pass => panic!(
                "{} {} seed {seed}: expected oracle `{oracle}` to fire, but the run passed\nreplay: {}",
                self.scenario.name,
                self.options.variant,
                outcome.replay_command()
            ),
        }
    }
}

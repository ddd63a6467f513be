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
//! command that replays it in `cargo test`, e.g.
//! `FAULTLINE_SEED=3 cargo test -p my-crate --test external a_users_test --
//! --exact --include-ignored`: the package, test target and test name as
//! cargo names them (read from the test process), the variant and plan as
//! the test sets them.

use std::ops::Range;

use crate::runner::{self, Faults, Replay, RunOptions, SweepOptions, Verdict};
use crate::scenario::Scenario;
use crate::variant::Variant;

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={text} is not a whole number"),
    }
}

/// A check of one scenario over seeds (see the module docs).
pub struct Check<'a> {
    scenario: &'a Scenario,
    options: RunOptions,
    seeds: Range<u64>,
    /// The test's name for the replay line, when the thread's is not it.
    test_name: Option<String>,
}

/// The `cargo test` command that runs the current test again: the package
/// (`CARGO_PKG_NAME`, set by cargo for the test process), the target (an
/// integration test, an example, the library or the doctests, from the
/// test binary's name) and the test (libtest names the thread after it).
pub fn cargo_test_command() -> String {
    let thread = std::thread::current();
    cargo_test_command_for(thread.name().filter(|n| *n != "main"))
}

/// [`cargo_test_command`] for the test named `test` (none: the whole
/// target).
pub fn cargo_test_command_for(test: Option<&str>) -> String {
    let mut command = "cargo test".to_string();
    if let Ok(package) = std::env::var("CARGO_PKG_NAME") {
        command.push_str(&format!(" -p {package}"));
    }
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_ref()
        .and_then(|p| p.file_stem())
        .and_then(|s| s.to_str())
        .map(strip_hash);
    let in_examples = exe
        .as_ref()
        .and_then(|p| p.parent())
        .and_then(|p| p.file_name())
        .is_some_and(|d| d == "examples");
    let library = std::env::var("CARGO_PKG_NAME")
        .ok()
        .map(|p| p.replace('-', "_"));
    // rustdoc names a doctest's executable `rust_out`, or
    // `doctest_bundle_*` when it merges an edition-2024 crate's doctests.
    let doctest = stem.is_some_and(|s| s == "rust_out" || s.starts_with("doctest"));
    match stem {
        Some(_) if doctest => command.push_str(" --doc"),
        Some(stem) if in_examples => command.push_str(&format!(" --example {stem}")),
        Some(stem) if Some(stem) == library.as_deref() => command.push_str(" --lib"),
        Some(stem) => command.push_str(&format!(" --test {stem}")),
        None => {}
    }
    if let Some(test) = test {
        command.push_str(&format!(" {test}"));
    }
    command.push_str(" -- --exact --include-ignored");
    command
}

/// `name-0123456789abcdef` (cargo's hash suffix) -> `name`.
fn strip_hash(stem: &str) -> &str {
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name
        }
        _ => stem,
    }
}

impl<'a> Check<'a> {
    /// A check of `scenario`: the fixed variant, faults drawn, the
    /// scenario's `expect.test_seeds` seeds.
    pub fn new(scenario: &'a Scenario) -> Check<'a> {
        Check {
            scenario,
            options: RunOptions::new(Variant::Fixed),
            seeds: 0..scenario.spec.expect.test_seeds,
            test_name: None,
        }
    }

    /// The test's name as `cargo test` filters it, for harnesses that do
    /// not name the test's thread after it (libtest-mimic's trials).
    pub fn test_name(mut self, name: &str) -> Self {
        self.test_name = Some(name.to_string());
        self
    }

    fn replay_command(&self) -> String {
        match &self.test_name {
            Some(name) => cargo_test_command_for(Some(name)),
            None => cargo_test_command(),
        }
    }

    /// Which lines of the bug's fix run.
    pub fn variant(mut self, variant: Variant) -> Self {
        self.options.variant = variant;
        self
    }

    /// Where the faults come from (drawn, off, swarm, a plan).
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

    /// Every seed must pass, and every `expect.reaches` point be reached
    /// by some run. Returns the number of seeds run.
    pub fn expect_pass(mut self) -> u64 {
        let seeds = self.effective_seeds();
        self.options.replay = Replay::Test {
            command: self.replay_command(),
            seed_env: true,
        };
        let mut options = SweepOptions::new(self.options.clone());
        options.jobs = env_u64("FAULTLINE_JOBS").map(|j| j as usize).unwrap_or(1);
        let report = runner::sweep(self.scenario, &seeds, &options);
        if let Some(message) = report.failures.iter().find_map(|o| o.setup_error()) {
            panic!("{}: cannot run: {message}", self.scenario.name);
        }
        if !report.unreached.is_empty() && env_u64("FAULTLINE_SEED").is_none() {
            panic!(
                "{}\nreplay: {}",
                report.unreached_lines().join("\n"),
                self.replay_command()
            );
        }
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
    pub fn expect_fail(mut self, seed: u64, oracle: &str) -> runner::Outcome {
        self.options.replay = Replay::Test {
            command: self.replay_command(),
            seed_env: false,
        };
        let outcome = runner::run(self.scenario, seed, &self.options);
        match &outcome.verdict {
            Verdict::Setup(error) => panic!("{}: cannot run: {error}", self.scenario.name),
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

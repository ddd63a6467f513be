//! What several of these modules share.

use faultline_harness::faults::FaultPlan;
use faultline_harness::{Faults, RunOptions, Scenario, SweepOptions, Variant};

/// One fixed fault plan, from its TOML text.
pub fn plan(text: &str) -> Faults {
    Faults::Plan {
        plan: Box::new(toml::from_str::<FaultPlan>(text).expect("a valid plan")),
        source: None,
    }
}

/// `random` at every point: a yield at 30% of the hits, up to 2 yields and
/// a pause of up to 3 ms.
pub const RANDOM: &str = "[[race]]\nstrategy = \"random\"\npoint = \"*\"\nprobability = 0.3\nmax_yields = 2\nmax_sleep_us = 3000\n";
/// PCT aiming at depth 2, its steps learned from a first run of each seed.
pub const PCT: &str = "[[race]]\nstrategy = \"pct\"\npoint = \"*\"\ndepth = 2\n";

/// Seeds of `0..seeds` that fail, with the oracle every failure must name.
pub fn failing(
    scenario: &Scenario,
    variant: Variant,
    faults: &Faults,
    seeds: u64,
    oracle: &str,
) -> Vec<u64> {
    let mut options = SweepOptions::new(RunOptions::new(variant).faults(faults.clone()));
    options.keep_going = true;
    options.jobs = 2;
    let seeds: Vec<u64> = (0..seeds).collect();
    let report = faultline_harness::sweep(scenario, &seeds, &options);
    for f in &report.failures {
        assert_eq!(f.verdict.oracle(), Some(oracle), "{}", f.report());
    }
    report.failures.iter().map(|o| o.seed).collect()
}

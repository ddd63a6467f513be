//! The gallery's ticket service under faultline: the fix survives every
//! drawn fault and race schedule, the bug is latent without faults, and
//! the default race space finds it on the recorded seed.

use faultline_harness::Faults;
use faultline_harness::testing::Check;
use faultline_harness::{Scenario, Variant};

fn scenario() -> Scenario {
    tokio_util_tickets::registry()
        .load_file(&tokio_util_tickets::scenarios_dir().join("tickets.toml"))
        .expect("the scenario file loads")
}

#[test]
fn the_fix_survives_tiny_buffers_segmentation_latency_partitions_crashes_and_races() {
    Check::new(&scenario())
        .variant(Variant::Fixed)
        .seeds(0..200)
        .expect_pass();
}

#[test]
fn the_two_acquisition_ticket_needs_a_race_to_repeat() {
    Check::new(&scenario())
        .variant(Variant::Buggy)
        .faults(Faults::Off)
        .seeds(0..50)
        .expect_pass();
}

#[test]
fn the_default_race_space_finds_the_repeated_ticket() {
    let scenario = scenario();
    let recorded = scenario
        .spec
        .expect
        .fails
        .first()
        .expect("the scenario records a failing seed");
    Check::new(&scenario)
        .variant(Variant::Buggy)
        .expect_fail(recorded.seed, "unique-tickets");
}

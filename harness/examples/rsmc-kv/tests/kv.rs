//! rsmc's memcached binary-protocol client against faultline's kv server:
//! reading as rsmc-tokio 0.4.0 does, a response split by TCP is misread
//! (the recorded seed, and every seed of the smallest plan `shrink` found);
//! filling each buffer survives every drawn fault and race schedule.

use faultline_harness::testing::Check;
use faultline_harness::{Faults, RunOptions, Scenario, SweepOptions, Variant, Verdict};

fn scenario() -> Scenario {
    rsmc_kv::registry()
        .load_file(&rsmc_kv::scenarios_dir().join("kv.toml"))
        .expect("the scenario file loads")
}

/// The plan `shrink` left of the recorded failure: the kv node's responses
/// split into segments of at most 6 bytes, and nothing else.
fn split_responses() -> Faults {
    Faults::plan_file(rsmc_kv::plans_dir().join("split-responses.toml")).expect("the plan loads")
}

#[test]
fn filling_reads_survive_tiny_buffers_segmentation_latency_partitions_crashes_and_races() {
    Check::new(&scenario())
        .variant(Variant::Fixed)
        .seeds(0..200)
        .expect_pass();
}

#[test]
fn one_read_per_header_is_fine_while_responses_arrive_whole() {
    Check::new(&scenario())
        .variant(Variant::Buggy)
        .faults(Faults::Off)
        .seeds(0..50)
        .expect_pass();
}

#[test]
fn one_read_per_header_misreads_a_response_split_by_tcp() {
    let scenario = scenario();
    let recorded = scenario
        .spec
        .expect
        .fails
        .first()
        .expect("the scenario records a failing seed");
    Check::new(&scenario)
        .variant(Variant::Buggy)
        .expect_fail(recorded.seed, &recorded.oracle);
}

#[test]
fn segmentation_alone_is_enough() {
    let scenario = scenario();
    let mut options = RunOptions::new(Variant::Buggy);
    options.faults = split_responses();
    let mut sweep = SweepOptions::new(options);
    sweep.keep_going = true;
    let seeds: Vec<u64> = (0..20).collect();
    let buggy = faultline_harness::sweep(&scenario, &seeds, &sweep);
    assert_eq!(buggy.failed(), 20, "every seed of the plan fails");
    for failure in &buggy.failures {
        // A value cut short, or rsmc-core's parser panicking on a header
        // whose extras are longer than its (still zero) body length.
        match &failure.verdict {
            Verdict::Fail { oracle, .. } if oracle == "read-your-writes" => {}
            Verdict::Fail { oracle, message }
                if oracle == "host-crash"
                    && message.contains("rsmc-core")
                    && message.contains("mid > len") => {}
            other => panic!("seed {}: {other:?}", failure.seed),
        }
    }
    Check::new(&scenario)
        .variant(Variant::Fixed)
        .faults(split_responses())
        .seeds(0..100)
        .expect_pass();
}

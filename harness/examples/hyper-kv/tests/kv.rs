//! hyper's HTTP/1.1 client and server under faultline: every client reads
//! its own writes through tiny send buffers, segmentation, latency,
//! partitions, server crashes and race schedules.

use faultline_harness::Variant;
use faultline_harness::testing::Check;

#[test]
fn hyper_survives_tiny_buffers_segmentation_latency_partitions_crashes_and_races() {
    let scenario = hyper_kv::registry()
        .load_file(&hyper_kv::scenarios_dir().join("kv.toml"))
        .expect("the scenario file loads");
    Check::new(&scenario)
        .variant(Variant::Fixed)
        .seeds(0..100)
        .expect_pass();
}

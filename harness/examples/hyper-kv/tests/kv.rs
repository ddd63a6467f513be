//! hyper's HTTP/1.1 and HTTP/2 client and server under faultline: every
//! client reads its own writes through tiny send buffers, segmentation,
//! latency, partitions, server crashes and race schedules.

use faultline_harness::Variant;
use faultline_harness::testing::Check;

fn check(file: &str) {
    let scenario = hyper_kv::registry()
        .load_file(&hyper_kv::scenarios_dir().join(file))
        .expect("the scenario file loads");
    Check::new(&scenario)
        .variant(Variant::Fixed)
        .seeds(0..100)
        .expect_pass();
}

#[test]
fn http1_survives_tiny_buffers_segmentation_latency_partitions_crashes_and_races() {
    check("kv.toml");
}

#[test]
fn http2_survives_tiny_buffers_segmentation_latency_partitions_crashes_and_races() {
    check("kv-h2.toml");
}

//! `cargo bench`: one simulation of each kind, timed by divan.
//!
//! * `echo_bare_turmoil` vs `echo_harness`: the same echo traffic on bare
//!   turmoil and through the harness (streams, trace, oracles): their ratio
//!   is the harness's overhead (`faultline bench` prints it directly);
//! * one seed of every scenario file, fixed variant, faults drawn.

use faultline::bench::{EchoLoad, bare_echo};
use faultline_harness::{Faults, RunOptions};
use faultline_harness::{Scenario, Variant};

const LOAD: EchoLoad = EchoLoad {
    clients: 4,
    messages: 300,
    max_message_bytes: 512,
};

fn main() {
    divan::main();
}

#[divan::bench]
fn echo_bare_turmoil() {
    bare_echo(divan::black_box(1), LOAD).expect("the echo load passes");
}

#[divan::bench]
fn echo_harness(bencher: divan::Bencher) {
    let scenario = faultline::registry()
        .load_str("echo-bench", None, &LOAD.scenario_toml())
        .expect("a valid scenario");
    let options = RunOptions::new(Variant::Fixed).faults(Faults::Off);
    bencher.bench(|| {
        let outcome = faultline_harness::run(&scenario, divan::black_box(1), &options);
        assert!(outcome.verdict.is_pass());
    });
}

fn scenarios() -> Vec<Scenario> {
    let (scenarios, errors) = faultline::registry().load_dir(&faultline::default_scenarios_dir());
    assert!(errors.is_empty(), "{errors:?}");
    scenarios
}

fn names() -> Vec<String> {
    scenarios().into_iter().map(|s| s.name).collect()
}

#[divan::bench(args = names())]
fn scenario_seed(bencher: divan::Bencher, name: &str) {
    let scenario = scenarios()
        .into_iter()
        .find(|s| s.name == name)
        .expect("listed above");
    let options = RunOptions::new(Variant::Fixed);
    bencher.bench(|| faultline_harness::run(&scenario, divan::black_box(0), &options));
}

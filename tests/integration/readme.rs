//! The README's worked example prints exactly what the program prints: the
//! verdict line it quotes (trace hash included) is checked here.

use faultline_harness::RunOptions;
use faultline_harness::Variant;

#[test]
fn the_readme_quotes_the_worked_examples_real_verdict_line() {
    let readme = include_str!("../../README.md");
    let quoted = readme
        .lines()
        .find(|l| l.starts_with("verdict: fail seed=0 variant=buggy trace="))
        .expect("the README quotes the failing verdict of echo-partial-write");
    let scenario = faultline::registry()
        .load_file(&faultline::default_scenarios_dir().join("echo-partial-write.toml"))
        .expect("the worked example loads");
    let outcome = faultline_harness::run(&scenario, 0, &RunOptions::new(Variant::Buggy));
    assert_eq!(quoted, outcome.verdict_line());
}

//! insta snapshots of each bug's failing run (`snapshots/`): the verdict,
//! the fault plan and the trace lines leading to the failure. A change in
//! how a bug fails shows up in review as a snapshot diff
//! (`cargo insta review`, or `INSTA_UPDATE=always cargo test --test integration snapshots::`).

use faultline_harness::RunOptions;
use faultline_harness::failure_summary;
use faultline_harness::{TraceMode, Variant};

/// Trace lines kept before the verdict.
const SUMMARY_LINES: usize = 60;

#[test]
fn each_bug_fails_its_recorded_seed_the_same_way() {
    let (scenarios, errors) = faultline::registry().load_dir(&faultline::default_scenarios_dir());
    assert!(errors.is_empty(), "{errors:?}");
    let mut checked = 0;
    for scenario in scenarios.iter().filter(|s| s.bug().is_some()) {
        for recorded in &scenario.spec.expect.fails {
            let options = RunOptions::new(Variant::Buggy).trace(TraceMode::Full);
            let outcome = faultline_harness::run(scenario, recorded.seed, &options);
            assert_eq!(
                outcome.verdict.oracle(),
                Some(recorded.oracle.as_str()),
                "{}",
                outcome.report()
            );
            insta::with_settings!({
                snapshot_path => "../../snapshots",
                prepend_module_to_snapshot => false,
                omit_expression => true,
            }, {
                insta::assert_snapshot!(
                    format!("{}-seed-{}", scenario.name, recorded.seed),
                    failure_summary(&outcome, SUMMARY_LINES)
                );
            });
            checked += 1;
        }
    }
    assert!(checked > 0, "no bug scenario has a recorded seed");
}

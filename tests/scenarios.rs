//! Every scenario file's expectations, as tests generated at run time:
//! deleting a file removes its tests, copying one adds tests, no rebuild.
//!
//! Per scenario:
//! * `NAME::recorded-seed-S`: the buggy variant fails on each recorded seed
//!   with its recorded oracle;
//! * `NAME::latent`: the buggy variant passes with faults off;
//! * `NAME::fixed`: the fixed variant passes with faults on.
//!
//! Each sweep runs `expect.test_seeds` seeds; `FAULTLINE_SEEDS=K` widens
//! it, `FAULTLINE_SEED=N` replays one seed. A failure's message ends with
//! the command that replays it.

use std::sync::Arc;

use faultline_harness::Faults;
use faultline_harness::Variant;
use faultline_harness::testing::Check;
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let dir = faultline::default_scenarios_dir();
    let (scenarios, errors) = faultline::registry().load_dir(&dir);
    let mut trials = Vec::new();
    trials.push(Trial::test("scenario-files-load", move || {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Failed::from(errors.join("\n")))
        }
    }));
    for scenario in scenarios {
        let scenario = Arc::new(scenario);
        for recorded in scenario.spec.expect.fails.clone() {
            let s = scenario.clone();
            let name = format!("{}::recorded-seed-{}", s.name, recorded.seed);
            trials.push(Trial::test(name.clone(), move || {
                catch(|| {
                    Check::new(&s)
                        .test_name(&name)
                        .variant(Variant::Buggy)
                        .expect_fail(recorded.seed, &recorded.oracle);
                })
            }));
        }
        let s = scenario.clone();
        let name = format!("{}::latent", s.name);
        trials.push(Trial::test(name.clone(), move || {
            catch(|| {
                Check::new(&s)
                    .test_name(&name)
                    .variant(Variant::Buggy)
                    .faults(Faults::Off)
                    .expect_pass();
            })
        }));
        let s = scenario.clone();
        let name = format!("{}::fixed", s.name);
        trials.push(Trial::test(name.clone(), move || {
            catch(|| {
                Check::new(&s)
                    .test_name(&name)
                    .variant(Variant::Fixed)
                    .expect_pass();
            })
        }));
    }
    libtest_mimic::run(&args, trials).exit();
}

/// Turns a failed check's panic into the trial's failure message.
fn catch(check: impl FnOnce()) -> Result<(), Failed> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the check panicked".to_string());
        Failed::from(message)
    })
}

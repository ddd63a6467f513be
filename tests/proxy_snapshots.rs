//! Snapshots (`snapshots/`) of each proxy bug's recorded failing run: the
//! oracle, its message and the fault plan. A change in how a bug shows
//! itself is a reviewed change of its snapshot.

use faultline_harness::runner::{self, RunOptions};
use faultline_harness::{Variant, Verdict};

fn failing_run(name: &str) -> String {
    let path = format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let scenario = faultline::registry()
        .load_file(path.as_ref())
        .expect("the scenario loads");
    let recorded = scenario.spec.expect.fails[0].clone();
    let outcome = runner::run(&scenario, recorded.seed, &RunOptions::new(Variant::Buggy));
    let Verdict::Fail { oracle, message } = &outcome.verdict else {
        panic!(
            "{name} seed {} passed:\n{}",
            recorded.seed,
            outcome.report()
        );
    };
    assert_eq!(oracle, &recorded.oracle, "{}", outcome.report());
    // A panic's source line moves with every edit: keep its file only.
    let message = match message.split_once(" panicked at ") {
        Some((head, tail)) => {
            let file = tail.split(':').next().unwrap_or("");
            let rest = tail.splitn(3, ':').nth(2).unwrap_or("");
            format!("{head} panicked at {file}:{rest}")
        }
        None => message.clone(),
    };
    format!(
        "scenario: {name}\nbug: {}\nseed: {}\nvariant: buggy\noracle: {oracle}\nmessage: {message}\nfault plan:\n{}",
        scenario.bug().unwrap_or("-"),
        recorded.seed,
        outcome.plan.to_toml()
    )
}

fn snapshot(name: &str) {
    let text = failing_run(name);
    insta::with_settings!({ snapshot_path => "../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn hap_enotconn_failing_run() {
    snapshot("HAP-ENOTCONN-connect-in-progress");
}

#[test]
fn hap_rcvbuf_failing_run() {
    snapshot("HAP-RCVBUF-check-buffer-overflow");
}

#[test]
fn hap_errhup_failing_run() {
    snapshot("HAP-ERRHUP-reset-ignored");
}

#[test]
fn hap_fdrace_failing_run() {
    snapshot("HAP-FDRACE-late-update-vs-close");
}

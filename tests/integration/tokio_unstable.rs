//! A build without `--cfg tokio_unstable` would silently stop replaying
//! (turmoil seeds tokio's `select!` order only with it). Built that way, a
//! user's crate (the framed-echo example) refuses its first run and says
//! what to add.
//!
//! (Here rather than in the example's own tests: `cargo test` runs its test
//! binaries one after another, and this one is mostly a cargo build that
//! keeps both cores busy for half a minute; in this binary it runs beside
//! the other integration tests instead of after them.)

use std::process::Command;

#[test]
fn a_build_without_tokio_unstable_fails_its_first_run_with_what_to_add() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("without-tokio-unstable");
    // RUSTFLAGS replaces the workspace's build.rustflags (the mistake a
    // user makes when their CI sets it).
    let build = Command::new(cargo)
        .args(["build", "--quiet", "-p", "framed-echo", "--target-dir"])
        .arg(&target)
        // Unoptimised: the binary only has to refuse its first run, and the
        // whole tree is built again for this flag (35 s instead of 110 s on
        // 2 cores with the workspace's optimised dependencies).
        .args(["--config", "profile.dev.opt-level=0"])
        .args(["--config", r#"profile.dev.package."*".opt-level=0"#])
        .env("RUSTFLAGS", "-Cdebuginfo=0")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let run = Command::new(target.join("debug").join("framed-echo"))
        .args(["run", "framed-echo", "--seed", "0"])
        .output()
        .expect("the binary runs");
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("this build lacks `--cfg tokio_unstable`"),
        "{err}"
    );
    assert!(
        err.contains("rustflags = [\"--cfg\", \"tokio_unstable\"]"),
        "it says what to add: {err}"
    );
}

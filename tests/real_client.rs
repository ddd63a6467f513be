//! `faultline serve` on loopback, used by a real memcached binary-protocol
//! client: python-binary-memcached (see `common/mod.rs` for how it is
//! installed).

mod common;

use std::process::Command;

use common::{client_python, client_script, start_kv_node};

#[test]
fn a_real_memcached_client_sets_gets_deletes_counts_and_moves_500_kib() {
    let python = client_python();
    let (_server, port) = start_kv_node(&["--workers", "2"]);
    let output = Command::new(python)
        .arg(client_script())
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .expect("the client script runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "client checks failed:\n{stdout}\n{stderr}"
    );
    for check in [
        "ok set:",
        "ok get:",
        "ok delete:",
        "ok incr:",
        "ok decr:",
        "ok get 500 KiB:",
    ] {
        assert!(stdout.contains(check), "missing `{check}` in:\n{stdout}");
    }
    assert!(stdout.trim_end().ends_with("all checks passed"), "{stdout}");
}

//! `faultline serve` on loopback, used by a real memcached binary-protocol
//! client: python-binary-memcached (see `common.rs` for how it is
//! installed).

use std::path::Path;
use std::process::Command;

use crate::common::{client_python, client_python_in, client_script, start_kv_node};

/// The set-up itself: eight threads ask for the client at once in an empty
/// directory that holds only what an interrupted install left (a staging
/// directory without a client); every one of them gets the same working
/// python, and nothing of the staging directory is left.
#[test]
fn many_threads_asking_for_the_client_at_once_all_get_it() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("client-set-up-test");
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}"),
    }
    let interrupted = dir.join("bmemcached-venv.partial");
    std::fs::create_dir_all(interrupted.join("bin")).unwrap();
    std::fs::write(interrupted.join("bin").join("python"), "not a python").unwrap();

    let threads = 8;
    let start = std::sync::Barrier::new(threads);
    let pythons: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    client_python_in(&dir)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(pythons.iter().all(|p| *p == pythons[0]), "{pythons:?}");
    assert_eq!(pythons[0], dir.join("bmemcached-venv/bin/python"));
    let imported = Command::new(&pythons[0])
        .args(["-c", "import bmemcached"])
        .status()
        .unwrap();
    assert!(imported.success());
    assert!(!interrupted.exists(), "the interrupted install was left");
}

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

/// Four python-binary-memcached clients, each on its own connection, share
/// three keys and a counter against `faultline serve`; the script records
/// what each asked and was answered, with a monotonic clock, and
/// `faultline check-history` finds the history linearizable. The same
/// history with one read changed to a value nobody wrote is not (the check
/// judges what the real clients saw, it does not pass everything).
#[test]
fn a_history_recorded_by_real_clients_is_linearizable_and_a_tampered_one_is_not() {
    let python = client_python();
    let (_server, port) = start_kv_node(&["--workers", "2"]);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bmemcached-history");
    std::fs::create_dir_all(&dir).unwrap();
    let recorded = dir.join("recorded.jsonl");
    let script = client_script().with_file_name("bmemcached_history.py");
    let output = Command::new(python)
        .arg(script)
        .arg(format!("127.0.0.1:{port}"))
        .arg(&recorded)
        .args(["4", "150"])
        .output()
        .expect("the history script runs");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&recorded).unwrap();
    // 3 set-up writes and 4 x 150 operations.
    assert_eq!(text.lines().count(), 603, "{text}");
    let check = |path: &Path| {
        Command::new(env!("CARGO_BIN_EXE_faultline"))
            .arg("check-history")
            .arg(path)
            .output()
            .expect("faultline runs")
    };
    let out = check(&recorded);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("linearizable: 603 operations"), "{stdout}");

    // The last read that found a value now returns one never written.
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let read = lines
        .iter()
        .rposition(|l| l["op"] == "get" && l["result"]["value"].is_string())
        .expect("the clients read some value");
    lines[read]["result"]["value"] = "never-written".into();
    let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let tampered = dir.join("tampered.jsonl");
    std::fs::write(&tampered, lines.join("\n")).unwrap();
    let out = check(&tampered);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("never-written"), "{stdout}");
}

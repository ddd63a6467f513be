//! `faultline serve` on loopback, used by a real memcached binary-protocol
//! client: python-binary-memcached, installed by this test into a
//! virtualenv under cargo's test scratch directory on first use (PyPI must
//! be reachable then; `.ci/run` installs it the same way).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The client library, pinned.
const CLIENT_PACKAGE: &str = "python-binary-memcached==0.33.0";

/// A virtualenv with the client installed; its python.
fn client_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bmemcached-venv");
    let python = venv.join("bin").join("python");
    let has_client = |python: &Path| {
        Command::new(python)
            .args(["-c", "import bmemcached"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_client(&python) {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs (the test installs its client with it)");
        assert!(made.success(), "python3 -m venv {} failed", venv.display());
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", CLIENT_PACKAGE])
            .status()
            .expect("pip runs");
        assert!(
            installed.success(),
            "pip install {CLIENT_PACKAGE} failed (is PyPI reachable?)"
        );
    }
    assert!(has_client(&python), "{CLIENT_PACKAGE} is importable");
    python
}

/// The server, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `faultline serve --port 0`; returns it and the address it prints.
fn start_server() -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["serve", "--port", "0", "--workers", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("faultline serve starts");
    let stdout = child.stdout.take().expect("piped");
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server prints its address");
    let address = line
        .trim()
        .strip_prefix("serve: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    (server, address)
}

#[test]
fn a_real_memcached_client_sets_gets_deletes_counts_and_moves_500_kib() {
    let python = client_python();
    let (_server, address) = start_server();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/real_client/bmemcached_check.py");
    let output = Command::new(python)
        .arg(script)
        .arg(&address)
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

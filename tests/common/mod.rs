//! What the real-socket tests share: running `faultline` subcommands as
//! processes, and a real memcached client (python-binary-memcached),
//! installed into a virtualenv under cargo's test scratch directory on
//! first use (PyPI must be reachable then; `.ci/run` installs it the same
//! way).

#![allow(dead_code)] // Each test binary uses its own part.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// The client library, pinned.
pub const CLIENT_PACKAGE: &str = "python-binary-memcached==0.33.0";

/// The client's checks (`set`, `get`, … a 500 KiB value), one line each.
pub fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/real_client/bmemcached_check.py")
}

/// A virtualenv with the client installed; its python.
pub fn client_python() -> PathBuf {
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

/// A `faultline` process, killed when the test ends, passed or not.
pub struct Running(Child);

impl Running {
    /// How the process ended, or `None` while it still runs (never waits).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().expect("the process can be polled")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `faultline ARGS`; returns it with the first line it prints.
pub fn start(args: &[&str]) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the faultline binary runs");
    let stdout = child.stdout.take().expect("piped");
    let running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("it prints a line");
    (running, line.trim().to_string())
}

/// `faultline serve` on a free loopback port: the process and its port.
pub fn start_kv_node(extra: &[&str]) -> (Running, u16) {
    let mut args = vec!["serve", "--port", "0"];
    args.extend_from_slice(extra);
    let (running, line) = start(&args);
    let port = line
        .strip_prefix("serve: listening on 127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    (running, port)
}

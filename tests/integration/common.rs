//! What the real-socket tests share: running `faultline` subcommands as
//! processes, and a real memcached client (python-binary-memcached),
//! installed into a virtualenv under cargo's test scratch directory on
//! first use (PyPI must be reachable then). Tests of several threads and
//! several processes ask for it at once: one of them makes it, the
//! others wait for it (see [`client_python_in`]).

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// The client library, pinned.
pub const CLIENT_PACKAGE: &str = "python-binary-memcached==0.33.0";

/// The virtualenv's name under its directory; the lock beside it and the
/// staging directory where it is made take the same name with a suffix.
const VENV_NAME: &str = "bmemcached-venv";

/// The client's checks (`set`, `get`, … a 500 KiB value), one line each.
pub fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/real_client/bmemcached_check.py")
}

/// The client's python, in cargo's test scratch directory.
pub fn client_python() -> PathBuf {
    client_python_in(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

/// A virtualenv under `dir` with the client installed; its python.
///
/// Safe when many threads and processes ask at once: the first takes an
/// exclusive lock on a file beside the virtualenv (`flock`, released when
/// the holder exits, even by a crash) and the others wait for it. The
/// virtualenv is made in a staging directory and renamed into place only
/// once the client imports, so its final path never holds a half-made one;
/// a staging directory left by an interrupted install is thrown away and
/// the install redone.
pub fn client_python_in(dir: &Path) -> PathBuf {
    let venv = dir.join(VENV_NAME);
    let python = venv.join("bin").join("python");
    if has_client(&python) {
        return python;
    }
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let lock_path = dir.join(format!("{VENV_NAME}.lock"));
    let lock = File::create(&lock_path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", lock_path.display()));
    // flock(2) (std's `File::lock` is newer than this crate's MSRV).
    // SAFETY: the fd is open for as long as `lock` lives.
    let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(
        locked,
        0,
        "locking {}: {}",
        lock_path.display(),
        std::io::Error::last_os_error()
    );
    // Whoever held the lock before may have made it meanwhile.
    if !has_client(&python) {
        // A virtualenv that no longer imports the client (its python was
        // replaced, say) is made again.
        remove_if_present(&venv);
        let staging = dir.join(format!("{VENV_NAME}.partial"));
        remove_if_present(&staging);
        run(Command::new("python3").args(["-m", "venv"]).arg(&staging));
        let staged_python = staging.join("bin").join("python");
        run(Command::new(&staged_python).args(["-m", "pip", "install", "--quiet", CLIENT_PACKAGE]));
        assert!(
            has_client(&staged_python),
            "{CLIENT_PACKAGE} installed but does not import"
        );
        fs::rename(&staging, &venv).unwrap_or_else(|e| {
            panic!("renaming {} to {}: {e}", staging.display(), venv.display())
        });
    }
    drop(lock);
    assert!(has_client(&python), "{CLIENT_PACKAGE} is importable");
    python
}

fn has_client(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import bmemcached"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn remove_if_present(path: &Path) {
    match fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("removing {}: {e}", path.display()),
    }
}

/// Runs a set-up step; panics with the command line if it fails (PyPI
/// must be reachable for `pip install`).
fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{command:?} does not start: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
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

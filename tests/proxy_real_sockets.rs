//! `faultline proxy` on real loopback sockets, in front of `faultline
//! serve`: the same proxy code as in simulations, over the real kernel.
//! Used by this crate's binary-protocol client and by a real memcached
//! client (python-binary-memcached, as `tests/real_client.rs` installs it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use faultline::protocol::client::{Client, ClientError, Store};
use faultline::protocol::{Opcode, Status};

/// Kills a child process when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `faultline ARGS` and returns it with the first line it prints.
fn start(args: &[&str]) -> (Running, String) {
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
fn start_kv_node() -> (Running, u16) {
    let (running, line) = start(&["serve", "--port", "0"]);
    let port = line
        .strip_prefix("serve: listening on 127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    (running, port)
}

/// `faultline proxy` on a free port in front of the kv node.
fn start_proxy(kv_port: u16) -> (Running, u16) {
    let backend = format!("127.0.0.1:{kv_port}");
    let (running, line) = start(&[
        "proxy",
        "--listen",
        "0",
        "--backend",
        &backend,
        "--threads",
        "3",
    ]);
    let port = line
        .strip_prefix("proxy: listening on port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    (running, port)
}

#[test]
fn a_binary_protocol_client_works_through_faultline_proxy_in_front_of_faultline_serve() {
    let (_kv, kv_port) = start_kv_node();
    let (_proxy, port) = start_proxy(kv_port);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("the proxy accepts");
        let mut c = Client::new(stream);
        assert_eq!(c.version().await.unwrap(), "faultline-proxy-1.0");
        c.noop().await.unwrap();
        // Keys of every vbucket: the proxy routes them to the node.
        for i in 0..40u32 {
            let key = format!("key-{i}");
            c.set(key.as_bytes(), format!("value-{i}").as_bytes(), 0)
                .await
                .unwrap();
        }
        for i in 0..40u32 {
            let key = format!("key-{i}");
            let item = c.get(key.as_bytes(), 0).await.unwrap().expect("stored");
            assert_eq!(&item.value[..], format!("value-{i}").as_bytes());
        }
        c.delete(b"key-3", 0).await.unwrap();
        assert_eq!(c.get(b"key-3", 0).await.unwrap(), None);
        assert!(matches!(
            c.delete(b"key-3", 0).await,
            Err(ClientError::Status(Status::KEY_ENOENT))
        ));
        assert!(matches!(
            c.store(&Store::new(Opcode::ADD, b"key-4", b"x")).await,
            Err(ClientError::Status(Status::KEY_EEXISTS))
        ));
        assert_eq!(
            c.arith(Opcode::INCREMENT, b"n", 5, 10, 0).await.unwrap(),
            10
        );
        assert_eq!(
            c.arith(Opcode::INCREMENT, b"n", 5, 10, 0).await.unwrap(),
            15
        );
        // Another connection sees the same store, whichever thread serves it.
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("the proxy accepts");
        let mut other = Client::new(stream);
        let item = other.get(b"key-7", 0).await.unwrap().expect("stored");
        assert_eq!(&item.value[..], b"value-7");
    });
}

/// The client library `tests/real_client.rs` uses, pinned the same way.
const CLIENT_PACKAGE: &str = "python-binary-memcached==0.33.0";

/// A virtualenv with the client installed (shared with
/// `tests/real_client.rs`); its python.
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
    python
}

#[test]
fn a_real_memcached_client_works_through_faultline_proxy() {
    let python = client_python();
    let (_kv, kv_port) = start_kv_node();
    let (_proxy, port) = start_proxy(kv_port);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/real_client/bmemcached_check.py");
    let output = Command::new(python)
        .arg(script)
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .expect("the client script runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "client checks failed:\n{stdout}\n{stderr}"
    );
    // Quiet commands (set_multi, get_multi), a 500 KiB value and STAT
    // (answered by the proxy) included.
    for check in [
        "ok set:",
        "ok get:",
        "ok incr:",
        "ok get 500 KiB:",
        "ok set_multi failures:",
        "ok get_multi:",
        "ok stats has version:",
    ] {
        assert!(stdout.contains(check), "missing `{check}` in:\n{stdout}");
    }
    assert!(stdout.trim_end().ends_with("all checks passed"), "{stdout}");
}

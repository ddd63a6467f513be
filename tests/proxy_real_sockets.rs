//! `faultline proxy` on real loopback sockets, in front of a kv node, with
//! the binary-protocol client: the same proxy code as in simulations, over
//! the real kernel.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use faultline::protocol::client::{Client, ClientError, Store};
use faultline::protocol::{Opcode, Status};
use faultline::server::{KvConfig, Node, serve};

/// Kills the proxy process when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a kv node on a loopback port of its own thread; returns the port.
fn start_kv_node() -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a loopback port");
            tx.send(listener.local_addr().expect("bound").port())
                .expect("the test waits");
            let _ = serve(listener, Node::new(KvConfig::default())).await;
        });
    });
    rx.recv().expect("the kv node started")
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a loopback port")
        .local_addr()
        .expect("bound")
        .port()
}

/// Starts `faultline proxy` and waits for its "listening" line.
fn start_proxy(port: u16, kv_port: u16) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args([
            "proxy",
            "--listen",
            &port.to_string(),
            "--backend",
            &format!("127.0.0.1:{kv_port}"),
            "--threads",
            "3",
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the faultline binary runs");
    let stdout = child.stdout.take().expect("piped");
    let running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the proxy prints a line");
    assert_eq!(line.trim(), format!("proxy: listening on port {port}"));
    running
}

#[test]
fn a_binary_protocol_client_works_through_faultline_proxy_in_front_of_a_kv_node() {
    let kv_port = start_kv_node();
    let port = free_port();
    let _proxy = start_proxy(port, kv_port);
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

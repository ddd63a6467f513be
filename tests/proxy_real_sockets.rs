//! `faultline proxy` on real loopback sockets, in front of `faultline
//! serve`: the same proxy code as in simulations, over the real kernel.
//! Used by this crate's binary-protocol client and by a real memcached
//! client (python-binary-memcached, as `tests/real_client.rs` installs it).

mod common;

use std::process::Command;

use common::{Running, client_python, client_script, start, start_kv_node};

use faultline::protocol::client::{Client, ClientError, Store};
use faultline::protocol::{Opcode, Packet, Status, vbucket_of};

/// `faultline proxy` on a free port in front of the kv nodes.
fn start_proxy(kv_ports: &[u16]) -> (Running, u16) {
    let backends: Vec<String> = kv_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args = vec!["proxy", "--listen", "0", "--threads", "3"];
    for b in &backends {
        args.extend(["--backend", b.as_str()]);
    }
    let (running, line) = start(&args);
    let port = line
        .strip_prefix("proxy: listening on port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    (running, port)
}

#[test]
fn a_binary_protocol_client_works_through_faultline_proxy_in_front_of_faultline_serve() {
    let (_kv, kv_port) = start_kv_node(&[]);
    let (_proxy, port) = start_proxy(&[kv_port]);
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

#[test]
fn a_real_memcached_client_works_through_faultline_proxy() {
    let python = client_python();
    let (_kv, kv_port) = start_kv_node(&[]);
    let (_proxy, port) = start_proxy(&[kv_port]);
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

/// A client connected to a loopback port.
async fn connect(port: u16) -> Client<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the port accepts");
    Client::new(stream)
}

#[test]
fn flush_through_faultline_proxy_empties_every_backend() {
    let (_kv_a, port_a) = start_kv_node(&[]);
    let (_kv_b, port_b) = start_kv_node(&[]);
    let (_proxy, port) = start_proxy(&[port_a, port_b]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let mut c = connect(port).await;
        let keys: Vec<String> = (0..40).map(|i| format!("flush-key-{i}")).collect();
        for key in &keys {
            c.set(key.as_bytes(), b"v", 0).await.unwrap();
        }
        // The keys landed on both nodes (each node holds those of its
        // vbuckets; asked directly, in the key's vbucket as the proxy
        // forwards it).
        let vb = |key: &str| vbucket_of(key.as_bytes(), 16);
        let mut held = [0usize; 2];
        for (node, kv_port) in [port_a, port_b].into_iter().enumerate() {
            let mut direct = connect(kv_port).await;
            for key in &keys {
                if direct.get(key.as_bytes(), vb(key)).await.unwrap().is_some() {
                    held[node] += 1;
                }
            }
        }
        assert_eq!(held[0] + held[1], keys.len(), "every key is on a node");
        assert!(held[0] > 0 && held[1] > 0, "both nodes hold keys: {held:?}");
        let answer = c.call(Packet::request(Opcode::FLUSH)).await.unwrap();
        assert_eq!(answer.status_code(), Status::SUCCESS, "FLUSH answered");
        for kv_port in [port_a, port_b] {
            let mut direct = connect(kv_port).await;
            for key in &keys {
                assert_eq!(
                    direct.get(key.as_bytes(), vb(key)).await.unwrap(),
                    None,
                    "{key} is gone from the node on port {kv_port}"
                );
            }
        }
        // And through the proxy.
        assert_eq!(c.get(keys[0].as_bytes(), 0).await.unwrap(), None);
    });
}

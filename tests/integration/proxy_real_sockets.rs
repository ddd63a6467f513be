//! `faultline proxy` on real loopback sockets, in front of `faultline
//! serve`: the same proxy code as in simulations, over the real kernel.
//! Used by this crate's binary-protocol client and by a real memcached
//! client (python-binary-memcached, as `real_client.rs` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{Running, client_python, client_script, start, start_kv_node};

use faultline::protocol::client::{Client, ClientError, Store};
use faultline::protocol::{Limits, Opcode, Packet, Status, vbucket_of};

/// Runs `future` to its end on a runtime of the test's own thread.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// `faultline proxy` on a free port in front of the kv nodes.
fn start_proxy(kv_ports: &[u16]) -> (Running, u16) {
    start_proxy_with(kv_ports, &[])
}

/// `faultline proxy` on a free port in front of the kv nodes, with
/// `extra` options (e.g. `--no-splice`).
fn start_proxy_with(kv_ports: &[u16], extra: &[&str]) -> (Running, u16) {
    let backends: Vec<String> = kv_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args = vec!["proxy", "--listen", "0", "--threads", "3"];
    for b in &backends {
        args.extend(["--backend", b.as_str()]);
    }
    args.extend_from_slice(extra);
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
    block_on(async move {
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
    block_on(async move {
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

/// `tests/real_client/bmemcached_large.py`: 900 KiB and 1000 KiB values
/// through the proxy, checked against the proxy's STAT `spliced_bytes`.
fn large_value_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/real_client/bmemcached_large.py")
}

/// Runs the large-value client against a proxy (in front of one kv node)
/// started with `proxy_options`, in `mode`; asserts it passed and
/// answers its output.
fn large_values_through_the_proxy(proxy_options: &[&str], mode: &str) -> String {
    let python = client_python();
    let (_kv, kv_port) = start_kv_node(&[]);
    let (_proxy, port) = start_proxy_with(&[kv_port], proxy_options);
    let output = Command::new(python)
        .arg(large_value_script())
        .arg(format!("127.0.0.1:{port}"))
        .arg(mode)
        .output()
        .expect("the client script runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "client checks failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for check in [
        "ok stats has spliced_bytes:",
        "ok get 900 KiB:",
        "ok spliced_bytes after get 900 KiB",
        "ok get 1000 KiB:",
        "ok get 900 KiB again:",
        "ok spliced_bytes after both gets",
        "ok get small:",
    ] {
        assert!(stdout.contains(check), "missing `{check}` in:\n{stdout}");
    }
    assert!(
        stdout.trim_end().ends_with("all checks passed"),
        "{stdout}\n{stderr}"
    );
    stdout
}

/// splice() is on by default in `faultline proxy`. Every large response is
/// spliced: the first on a backend connection, which arrives in pieces
/// (the kernel's receive window starts small), and the later ones, which
/// are in the socket whole before the proxy reads (it reads at most its
/// response buffer while waiting for a header).
#[test]
fn a_900_kib_value_reaches_a_real_client_through_splice() {
    large_values_through_the_proxy(&[], "--expect-splice");
}

#[test]
fn a_900_kib_value_reaches_a_real_client_without_splice() {
    let stdout = large_values_through_the_proxy(&["--no-splice"], "--expect-no-splice");
    assert!(
        stdout.contains("ok spliced_bytes over the whole run:"),
        "{stdout}"
    );
}

/// How a raw connection to the proxy ended.
#[derive(Debug, PartialEq, Eq)]
enum RawEnd {
    /// The proxy closed it (end of stream).
    Closed,
    /// The proxy reset it.
    Reset,
    /// Nothing came for the read timeout: the proxy neither answered nor
    /// closed.
    Silent,
    /// The proxy sent more than any answer to these inputs could be.
    Flood,
    Error(String),
}

/// What the proxy sent back on a raw connection, and how it ended.
#[derive(Debug)]
struct RawOutcome {
    answer: Vec<u8>,
    end: RawEnd,
}

/// Sends `bytes` on a fresh connection to `port` (then, if `close_write`,
/// ends the sending side), and reads whatever comes back until the proxy
/// closes, or nothing comes for 5 s (a bound, not a wait: a healthy
/// proxy answers or closes within milliseconds).
fn raw_exchange(port: u16, bytes: &[u8], close_write: bool) -> RawOutcome {
    use std::io::{ErrorKind, Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the proxy accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    stream.write_all(bytes).expect("the proxy takes the bytes");
    if close_write {
        stream
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown(SHUT_WR)");
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        match stream.read(&mut buf) {
            Ok(0) => break RawEnd::Closed,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.len() > 64 * 1024 {
                    break RawEnd::Flood;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break RawEnd::Silent;
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break RawEnd::Reset,
            Err(e) => break RawEnd::Error(e.to_string()),
        }
    };
    RawOutcome { answer, end }
}

/// A 24-byte header with the given fields (the rest zero).
fn raw_header(magic: u8, opcode: Opcode, key_len: u16, extras_len: u8, body_len: u32) -> Vec<u8> {
    let mut h = vec![0u8; 24];
    h[0] = magic;
    h[1] = opcode.0;
    h[2..4].copy_from_slice(&key_len.to_be_bytes());
    h[4] = extras_len;
    h[8..12].copy_from_slice(&body_len.to_be_bytes());
    h[12..16].copy_from_slice(&0xfeed_f00d_u32.to_be_bytes());
    h
}

/// Bytes that look random (xorshift), starting with a byte that is no magic.
fn garbage(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    let mut bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect();
    bytes[0] = 0xff;
    bytes
}

/// The packets of `answer`, which must be whole packets.
fn packets(answer: &[u8]) -> Vec<Packet> {
    let mut rest = answer;
    let mut out = Vec::new();
    while !rest.is_empty() {
        match Packet::try_parse(rest, &Limits::default()) {
            Ok(Some((packet, used))) => {
                out.push(packet);
                rest = &rest[used..];
            }
            other => panic!("not whole packets ({other:?}): {answer:02x?}"),
        }
    }
    out
}

#[test]
fn malformed_input_leaves_the_proxy_serving() {
    let (mut kv, kv_port) = start_kv_node(&[]);
    let (mut proxy, port) = start_proxy(&[kv_port]);
    const REQUEST: u8 = 0x80;
    const RESPONSE: u8 = 0x81;
    let get_absent = Packet::request(Opcode::GET)
        .key(&b"absent-key"[..])
        .opaque(7)
        .encode();

    // (what, bytes, close the sending side, the answer's (opcode, status,
    // opaque) packets: empty for none). Whatever the input, the proxy
    // ends the connection; it answers when it can tell the request's
    // header.
    type Answer = Vec<(Opcode, Status, u32)>;
    let cases: Vec<(&str, Vec<u8>, bool, Answer)> = vec![
        ("64 bytes of garbage", garbage(64), false, vec![]),
        (
            "a truncated header (10 bytes), then end of stream",
            raw_header(REQUEST, Opcode::GET, 3, 0, 3)[..10].to_vec(),
            true,
            vec![],
        ),
        (
            "a header with the bad magic 0x42",
            [raw_header(0x42, Opcode::GET, 3, 0, 3), b"abc".to_vec()].concat(),
            false,
            vec![],
        ),
        (
            "a header claiming a 0xffff_fff0-byte body, and a few bytes",
            [
                raw_header(REQUEST, Opcode::SET, 3, 8, 0xffff_fff0),
                vec![0x5a; 40],
            ]
            .concat(),
            false,
            vec![(Opcode::SET, Status::E2BIG, 0xfeed_f00d)],
        ),
        (
            "a header claiming a 0xffff_fff0-byte body, then end of stream",
            raw_header(REQUEST, Opcode::GET, 0, 0, 0xffff_fff0),
            true,
            vec![(Opcode::GET, Status::E2BIG, 0xfeed_f00d)],
        ),
        (
            "a key longer than the body",
            [raw_header(REQUEST, Opcode::GET, 200, 0, 10), vec![b'k'; 10]].concat(),
            false,
            vec![],
        ),
        (
            "a 65535-byte key (longer than any key may be)",
            raw_header(REQUEST, Opcode::GET, 0xffff, 0, 0xffff),
            false,
            vec![(Opcode::GET, Status::EINVAL, 0xfeed_f00d)],
        ),
        (
            "a truncated body, then end of stream",
            [raw_header(REQUEST, Opcode::SET, 3, 8, 1000), vec![0; 20]].concat(),
            true,
            vec![],
        ),
        (
            "a response sent as a request",
            [raw_header(RESPONSE, Opcode::GET, 3, 0, 3), b"abc".to_vec()].concat(),
            false,
            vec![],
        ),
        (
            "a good GET, then garbage",
            [get_absent.clone(), garbage(32)].concat(),
            false,
            vec![(Opcode::GET, Status::KEY_ENOENT, 7)],
        ),
    ];
    let mut report = Vec::new();
    let mut wrong = Vec::new();
    for (what, bytes, close_write, want) in &cases {
        let outcome = raw_exchange(port, bytes, *close_write);
        let got: Answer = packets(&outcome.answer)
            .iter()
            .map(|p| (p.opcode(), p.status_code(), p.header.opaque))
            .collect();
        let line = format!("{what}: {:?}, answered {got:?}", outcome.end);
        if outcome.end != RawEnd::Closed || &got != want {
            wrong.push(format!("{line} (want Closed, answered {want:?})"));
        }
        report.push(line);
        assert!(
            proxy.exited().is_none(),
            "the proxy died after {what}: {:?}\n{}",
            proxy.exited(),
            report.join("\n")
        );
    }
    assert!(
        wrong.is_empty(),
        "unexpected outcomes:\n{}\nall:\n{}",
        wrong.join("\n"),
        report.join("\n")
    );

    // A normal client is served as before.
    block_on(async move {
        let mut c = connect(port).await;
        c.set(b"after-garbage", b"still serving", 0).await.unwrap();
        let item = c.get(b"after-garbage", 0).await.unwrap().expect("stored");
        assert_eq!(&item.value[..], b"still serving");
        assert_eq!(c.get(b"absent-key", 0).await.unwrap(), None);
        // Every malformed connection is gone: this one is the only client.
        let stats = c.stats(b"").await.unwrap();
        let clients = stats
            .iter()
            .find(|(k, _)| k == "curr_connections")
            .map(|(_, v)| v.as_str());
        assert_eq!(clients, Some("1"), "{stats:?}");
        let up = stats.iter().find(|(k, _)| k == "backends_up");
        assert_eq!(up.map(|(_, v)| v.as_str()), Some("1"), "{stats:?}");
    });
    assert!(proxy.exited().is_none(), "the proxy still runs");
    assert!(kv.exited().is_none(), "the kv node still runs");
}

/// A backend on a free port that answers every request, but each answer
/// carries the wrong opaque (a broken server, or a stream out of step).
/// Its threads end with the test process.
fn wrong_opaque_backend() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("bound").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    pending.extend_from_slice(&buf[..n]);
                    while let Ok(Some((request, used))) =
                        Packet::try_parse(&pending, &Limits::default())
                    {
                        pending.drain(..used);
                        let mut answer = Packet::response(&request.header, Status::SUCCESS);
                        answer.header.opaque = request.header.opaque.wrapping_add(1);
                        if stream.write_all(&answer.encode()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

/// An answer that does not belong to the request fails that request and
/// its backend connection; the next request gets a connection of its own
/// (before, the failed one went back to the idle pool, and the next
/// request that took it crashed the proxy).
#[test]
fn a_backend_answering_out_of_step_fails_the_request_and_not_the_proxy() {
    let backend_port = wrong_opaque_backend();
    let (mut proxy, port) = start_proxy_with(&[backend_port], &["--no-checks"]);
    block_on(async move {
        let mut c = connect(port).await;
        for round in 0..4 {
            match c.get(b"some-key", 0).await {
                Err(ClientError::Status(Status::EINTERNAL)) => {}
                other => panic!("round {round}: want EINTERNAL, got {other:?}"),
            }
        }
        // A client of its own sees the same, on a connection of its own.
        let mut other = connect(port).await;
        match other.get(b"other-key", 0).await {
            Err(ClientError::Status(Status::EINTERNAL)) => {}
            got => panic!("want EINTERNAL, got {got:?}"),
        }
    });
    assert!(proxy.exited().is_none(), "the proxy still runs");
}

/// The kv node's `cmd_get` counter.
async fn gets_served(kv: &mut Client<tokio::net::TcpStream>) -> u64 {
    let stats = kv.stats(b"").await.expect("kv STAT");
    stats
        .iter()
        .find(|(k, _)| k == "cmd_get")
        .and_then(|(_, v)| v.parse().ok())
        .expect("cmd_get in the kv node's STAT")
}

/// A client that pipelines GETs of a large value and does not read: the
/// proxy goes at most a buffer of answers (plus what the kernel's socket
/// buffers hold) ahead of it, rather than fetching every answer into
/// memory. Before, it went on forwarding while the answers piled up in
/// user space (a client could make it hold its whole pipeline). Then the
/// client reads, and every answer comes, in order.
#[test]
fn a_client_that_does_not_read_does_not_make_the_proxy_buffer_every_answer() {
    use std::io::{Read, Write};
    const PIPELINED_GETS: u64 = 60;
    // 60 x 900 KiB is far more than the kernel's buffers on both sides
    // hold (a few MiB each): more GETs served than this while the client
    // reads nothing means the proxy buffered their answers.
    const MAX_SERVED_UNREAD: u64 = 30;
    // How long the proxy is given to run ahead (a bound: the old code
    // served all 60 within a few milliseconds).
    const RUN_AHEAD_MS: u64 = 1000;
    let (mut kv, kv_port) = start_kv_node(&[]);
    let (mut proxy, port) = start_proxy_with(&[kv_port], &["--no-splice"]);
    let value: Vec<u8> = (0..900 * 1024).map(|i| (i % 251) as u8).collect();
    block_on(async {
        let mut c = connect(port).await;
        c.set(b"big", &value, 0).await.unwrap();
        let mut kv_client = connect(kv_port).await;
        let before = gets_served(&mut kv_client).await;
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", port)).expect("the proxy accepts");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a read timeout");
        let mut requests = Vec::new();
        for opaque in 0..PIPELINED_GETS {
            Packet::request(Opcode::GET)
                .key(&b"big"[..])
                .opaque(opaque as u32)
                .encode_into(&mut requests);
        }
        stream
            .write_all(&requests)
            .expect("the proxy takes the requests");
        let deadline = tokio::time::Instant::now() + Duration::from_millis(RUN_AHEAD_MS);
        let mut served = 0;
        while served <= MAX_SERVED_UNREAD && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            served = gets_served(&mut kv_client).await - before;
        }
        assert!(
            served <= MAX_SERVED_UNREAD,
            "the kv node served {served} GETs whose answers the client has not read"
        );
        let mut pending = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        for opaque in 0..PIPELINED_GETS {
            let answer = loop {
                if let Some((packet, used)) =
                    Packet::try_parse(&pending, &Limits::default()).expect("whole packets")
                {
                    pending.drain(..used);
                    break packet;
                }
                let n = stream.read(&mut buf).expect("the answers come");
                assert!(n > 0, "the proxy closed after {opaque} answers");
                pending.extend_from_slice(&buf[..n]);
            };
            assert_eq!(answer.header.opaque, opaque as u32);
            assert!(answer.value == value, "answer {opaque} is the value");
        }
    });
    assert!(proxy.exited().is_none(), "the proxy still runs");
    assert!(kv.exited().is_none(), "the kv node still runs");
}

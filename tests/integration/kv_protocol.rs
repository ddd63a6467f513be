//! The kv server's protocol, command by command, in a simulation: every
//! command, the statuses it answers, quiet variants, and malformed input.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline::protocol::client::{Client, ClientError, Store};
use faultline::protocol::{HEADER_LEN, Opcode, Packet, Status, read_packet};
use faultline::server::{KvConfig, run_node};
use faultline_harness::RunOptions;
use faultline_harness::{SimStream, Variant, scenario_from_fn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Log = Arc<Mutex<Vec<String>>>;

/// Runs `client` against one kv node; returns what it logged.
fn with_node<F, Fut>(config: KvConfig, client: F) -> Vec<String>
where
    F: Fn(Log) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>> + 'static,
{
    let log: Log = Arc::default();
    let out = log.clone();
    let client = Arc::new(client);
    let scenario = scenario_from_fn(
        "kv",
        "summary = \"t\"\n[sim]\nduration_ms = 120000\n",
        move |sim, _| {
            let config = config.clone();
            sim.host("kv", move || {
                let config = config.clone();
                async move { Ok(run_node(config).await?) }
            });
            let log = out.clone();
            let client = client.clone();
            sim.client("client", async move { client(log).await });
            Ok(())
        },
    );
    let outcome = faultline_harness::run(&scenario, 0, &RunOptions::new(Variant::Fixed));
    assert!(outcome.verdict.is_pass(), "{}", outcome.report());
    log.lock().unwrap().clone()
}

fn note(log: &Log, s: impl Into<String>) {
    log.lock().unwrap().push(s.into());
}

async fn connect() -> Result<Client<SimStream>, Box<dyn std::error::Error>> {
    Ok(Client::new(SimStream::connect(("kv", 11210)).await?))
}

fn status(r: Result<impl std::fmt::Debug, ClientError>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(ClientError::Status(s)) => format!("{s}"),
        Err(e) => format!("error {e}"),
    }
}

#[test]
fn every_command_and_its_statuses() {
    let log = with_node(KvConfig::default(), |log| async move {
        let mut c = connect().await?;
        note(&log, status(c.get(b"k", 0).await.map(|v| v.is_some())));
        let cas = c.set(b"k", b"v1", 0).await?;
        note(
            &log,
            format!(
                "get {:?}",
                c.get(b"k", 0).await?.map(|i| (i.value, i.cas == cas))
            ),
        );
        note(
            &log,
            status(
                c.store(&Store::new(Opcode::ADD, b"k", b"x"))
                    .await
                    .map(|_| ()),
            ),
        );
        note(
            &log,
            status(
                c.store(&Store::new(Opcode::ADD, b"new", b"x").flags(7))
                    .await
                    .map(|_| ()),
            ),
        );
        note(
            &log,
            format!("flags {:?}", c.get(b"new", 0).await?.map(|i| i.flags)),
        );
        note(
            &log,
            status(
                c.store(&Store::new(Opcode::REPLACE, b"absent", b"x"))
                    .await
                    .map(|_| ()),
            ),
        );
        note(
            &log,
            status(
                c.store(&Store::new(Opcode::REPLACE, b"k", b"v2"))
                    .await
                    .map(|_| ()),
            ),
        );
        note(
            &log,
            status(
                c.store(&Store::new(Opcode::SET, b"k", b"v3").cas(cas))
                    .await
                    .map(|_| ()),
            ),
        );
        let cas2 = c.get(b"k", 0).await?.unwrap().cas;
        note(
            &log,
            status(
                c.store(&Store::new(Opcode::SET, b"k", b"v3").cas(cas2))
                    .await
                    .map(|_| ()),
            ),
        );
        note(
            &log,
            status(
                c.store(&Store::new(Opcode::APPEND, b"k", b"+a"))
                    .await
                    .map(|_| ()),
            ),
        );
        note(
            &log,
            status(
                c.store(&Store::new(Opcode::PREPEND, b"k", b"p+"))
                    .await
                    .map(|_| ()),
            ),
        );
        note(
            &log,
            format!("get {:?}", c.get(b"k", 0).await?.map(|i| i.value)),
        );
        note(
            &log,
            status(
                c.store(&Store::new(Opcode::APPEND, b"absent", b"x"))
                    .await
                    .map(|_| ()),
            ),
        );
        note(
            &log,
            status(c.arith(Opcode::INCREMENT, b"n", 5, 10, 0).await),
        );
        note(
            &log,
            status(c.arith(Opcode::INCREMENT, b"n", 5, 10, 0).await),
        );
        note(
            &log,
            status(c.arith(Opcode::DECREMENT, b"n", 100, 0, 0).await),
        );
        note(
            &log,
            status(c.arith(Opcode::INCREMENT, b"k", 1, 0, 0).await),
        );
        note(&log, status(c.delete(b"k", 0).await));
        note(&log, status(c.delete(b"k", 0).await));
        note(&log, status(c.get(b"k", 99).await.map(|v| v.is_some())));
        note(&log, format!("version {}", c.version().await?));
        note(&log, status(c.noop().await));
        let unknown = c.call(Packet::request(Opcode(0xee))).await?;
        note(&log, format!("unknown {}", unknown.status_code()));
        let bad = c.call(Packet::request(Opcode::GET)).await?;
        note(&log, format!("get without key {}", bad.status_code()));
        let too_big = c
            .store(&Store::new(
                Opcode::SET,
                b"big",
                &vec![0u8; 1024 * 1024 + 1],
            ))
            .await;
        note(&log, status(too_big.map(|_| ())));
        // Expiry on the node's clock: gone after 2 s of simulated time.
        c.store(&Store::new(Opcode::SET, b"short", b"lived").exptime_s(2))
            .await?;
        note(
            &log,
            format!("before expiry {}", c.get(b"short", 0).await?.is_some()),
        );
        tokio::time::sleep(Duration::from_millis(2100)).await;
        note(
            &log,
            format!("after expiry {}", c.get(b"short", 0).await?.is_some()),
        );
        let flush = c.call(Packet::request(Opcode::FLUSH)).await?;
        note(
            &log,
            format!(
                "flush {} then {:?}",
                flush.status_code(),
                c.get(b"new", 0).await?
            ),
        );
        // STAT: many packets, the last one empty.
        c.stream()
            .write_all(&Packet::request(Opcode::STAT).opaque(77).encode())
            .await?;
        let mut stats = 0;
        loop {
            let p = read_packet(c.stream(), &Default::default())
                .await?
                .expect("a packet");
            assert_eq!(p.header.opaque, 77);
            if p.key.is_empty() {
                break;
            }
            stats += 1;
        }
        note(&log, format!("stats > 20: {}", stats > 20));
        let quit = c.call(Packet::request(Opcode::QUIT)).await?;
        note(&log, format!("quit {}", quit.status_code()));
        let mut rest = Vec::new();
        c.stream().read_to_end(&mut rest).await?;
        note(&log, format!("closed after quit with {} bytes", rest.len()));
        Ok(())
    });
    let expected = [
        "ok false",
        "get Some((b\"v1\", true))",
        "KEY_EEXISTS",
        "ok ()",
        "flags Some(7)",
        "KEY_ENOENT",
        "ok ()",
        "KEY_EEXISTS",
        "ok ()",
        "ok ()",
        "ok ()",
        "get Some(b\"p+v3+a\")",
        "NOT_STORED",
        "ok 10",
        "ok 15",
        "ok 0",
        "DELTA_BADVAL",
        "ok ()",
        "KEY_ENOENT",
        "NOT_MY_VBUCKET",
        "version 1.6.0-faultline",
        "ok ()",
        "unknown UNKNOWN_COMMAND",
        "get without key EINVAL",
        "E2BIG",
        "before expiry true",
        "after expiry false",
        "flush SUCCESS then None",
        "stats > 20: true",
        "quit SUCCESS",
        "closed after quit with 0 bytes",
    ];
    assert_eq!(log, expected);
}

#[test]
fn quiet_commands_answer_only_what_matters() {
    let log = with_node(KvConfig::default(), |log| async move {
        let mut stream = SimStream::connect(("kv", 11210)).await?;
        let mut batch = Vec::new();
        let set_extras = vec![0u8; 8];
        Packet::request(Opcode::SETQ)
            .key(&b"a"[..])
            .extras(set_extras.clone())
            .value(&b"1"[..])
            .opaque(1)
            .encode_into(&mut batch);
        Packet::request(Opcode::GETKQ)
            .key(&b"a"[..])
            .opaque(2)
            .encode_into(&mut batch);
        Packet::request(Opcode::GETKQ)
            .key(&b"missing"[..])
            .opaque(3)
            .encode_into(&mut batch);
        Packet::request(Opcode::ADDQ)
            .key(&b"a"[..])
            .extras(set_extras)
            .value(&b"2"[..])
            .opaque(4)
            .encode_into(&mut batch);
        Packet::request(Opcode::DELETEQ)
            .key(&b"a"[..])
            .opaque(5)
            .encode_into(&mut batch);
        Packet::request(Opcode::NOOP)
            .opaque(6)
            .encode_into(&mut batch);
        stream.write_all(&batch).await?;
        loop {
            let p = read_packet(&mut stream, &Default::default())
                .await?
                .expect("a response");
            note(
                &log,
                format!(
                    "{} {} {}",
                    p.header.opaque,
                    p.header.opcode,
                    p.status_code()
                ),
            );
            if p.header.opcode == Opcode::NOOP {
                break;
            }
        }
        Ok(())
    });
    assert_eq!(
        log,
        ["2 GETKQ SUCCESS", "4 ADDQ KEY_EEXISTS", "6 NOOP SUCCESS"]
    );
}

#[test]
fn malformed_input_is_answered_or_closed_never_a_panic() {
    let log = with_node(KvConfig::default(), |log| async move {
        // Wrong magic: the connection closes.
        let mut s = SimStream::connect(("kv", 11210)).await?;
        let mut bad = Packet::request(Opcode::NOOP).encode();
        bad[0] = 0x42;
        s.write_all(&bad).await?;
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await?;
        note(&log, format!("bad magic: closed, {} bytes", rest.len()));
        // A body length past the limit: E2BIG, then closed, nothing allocated.
        let mut s = SimStream::connect(("kv", 11210)).await?;
        let mut huge = Packet::request(Opcode::SET)
            .key(&b"k"[..])
            .extras(vec![0; 8])
            .opaque(9)
            .encode();
        huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        s.write_all(&huge[..HEADER_LEN]).await?;
        let p = read_packet(&mut s, &Default::default())
            .await?
            .expect("an answer");
        note(
            &log,
            format!("huge body: {} opaque {}", p.status_code(), p.header.opaque),
        );
        // A key longer than 250 bytes: EINVAL, then closed.
        let mut s = SimStream::connect(("kv", 11210)).await?;
        s.write_all(&Packet::request(Opcode::GET).key(vec![b'k'; 300]).encode())
            .await?;
        let p = read_packet(&mut s, &Default::default())
            .await?
            .expect("an answer");
        note(&log, format!("long key: {}", p.status_code()));
        // A truncated header, then the peer closes: the server just closes.
        let mut s = SimStream::connect(("kv", 11210)).await?;
        s.write_all(&Packet::request(Opcode::NOOP).encode()[..10])
            .await?;
        s.shutdown().await?;
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        note(&log, format!("truncated: {} bytes back", rest.len()));
        // A response sent as a request: EINVAL and closed.
        let mut s = SimStream::connect(("kv", 11210)).await?;
        let header = Packet::request(Opcode::GET).finished_header();
        s.write_all(&Packet::response(&header, Status::SUCCESS).encode())
            .await?;
        let p = read_packet(&mut s, &Default::default())
            .await?
            .expect("an answer");
        note(&log, format!("response as request: {}", p.status_code()));
        // The node still serves.
        let mut c = connect().await?;
        c.set(b"still", b"alive", 0).await?;
        note(
            &log,
            format!(
                "after all that: {:?}",
                c.get(b"still", 0).await?.map(|i| i.value)
            ),
        );
        Ok(())
    });
    assert_eq!(
        log,
        [
            "bad magic: closed, 0 bytes",
            "huge body: E2BIG opaque 9",
            "long key: EINVAL",
            "truncated: 0 bytes back",
            "response as request: EINVAL",
            "after all that: Some(b\"alive\")",
        ]
    );
}

#[test]
fn a_500_kib_value_round_trips_through_a_small_read_buffer() {
    let log = with_node(KvConfig::default(), |log| async move {
        let mut c = connect().await?;
        let value: Vec<u8> = (0..500 * 1024u32).map(|i| (i % 253) as u8).collect();
        c.set(b"big", &value, 0).await?;
        let back = c.get(b"big", 0).await?.expect("stored");
        note(
            &log,
            format!(
                "{} bytes, equal: {}",
                back.value.len(),
                back.value[..] == value[..]
            ),
        );
        Ok(())
    });
    assert_eq!(log, ["512000 bytes, equal: true"]);
}

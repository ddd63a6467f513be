//! The kv node's DCP side, driven by a hand-written relay in the test (the
//! cluster manager's role): streams fill a replica that then equals the
//! active vbuckets, durable writes wait for the replica, takeover hands a
//! vbucket over, the kv misbehaviours do what their switches say, and
//! malformed DCP input is answered, never a panic.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use faultline::protocol::client::{Client, ClientError};
use faultline::protocol::dcp;
use faultline::protocol::{Limits, Opcode, Packet, Status, read_packet};
use faultline::server::store::VbState;
use faultline::server::{KV_PORT, KvConfig, Node, VbRange, serve};
use faultline_harness::{Faults, RunOptions};
use faultline_harness::{SimListener, SimStream, Variant, faults::FaultPlan, scenario_from_fn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const VBUCKETS: u16 = 4;

type Slot = Rc<RefCell<Option<Rc<Node>>>>;
type Log = Rc<RefCell<Vec<String>>>;

fn config(active: bool) -> KvConfig {
    KvConfig {
        vbuckets: VBUCKETS,
        active: if active {
            VbRange::all(VBUCKETS)
        } else {
            VbRange { start: 0, end: 0 }
        },
        durability_timeout_ms: 2_000,
        ..KvConfig::default()
    }
}

/// A kv node whose `Node` the test can inspect.
async fn node(config: KvConfig, slot: Slot) -> turmoil::Result {
    let listener = SimListener::bind(("0.0.0.0", KV_PORT)).await?;
    let node = Node::new(config);
    *slot.borrow_mut() = Some(node.clone());
    serve(listener, node).await?;
    Ok(())
}

async fn send(stream: &mut SimStream, packet: Packet) {
    stream.write_all(&packet.encode()).await.expect("send");
}

async fn recv(stream: &mut SimStream) -> Option<Packet> {
    let limits = Limits::default();
    read_packet(stream, &limits).await.expect("a valid packet")
}

/// Opens a DCP connection.
async fn open(host: &str, producer: bool) -> SimStream {
    let mut stream = SimStream::connect((host, KV_PORT)).await.expect("connect");
    send(
        &mut stream,
        dcp::open("replication:test", producer).opaque(1),
    )
    .await;
    let response = recv(&mut stream).await.expect("an answer");
    assert_eq!(response.header.status(), Status::SUCCESS);
    stream
}

fn label(p: &Packet) -> String {
    let kind = if p.header.is_request() { "req" } else { "res" };
    let detail = if p.header.is_request() {
        format!("vb{}", p.header.vbucket())
    } else {
        p.header.status().name()
    };
    format!("{kind}:{} {detail}", p.header.opcode.name())
}

/// The cluster manager's part, by hand: relays every packet between the
/// consumer node (kv-2) and the producer node (kv-1), logs them, and
/// reports ADD_STREAM responses (not relayed) on `added`.
fn relay(
    mut consumer: SimStream,
    mut producer: SimStream,
    log: Log,
    added: mpsc::UnboundedSender<(u32, Status)>,
) {
    tokio::task::spawn_local(async move {
        let limits = Limits::default();
        let mut from_consumer = Vec::new();
        let mut from_producer = Vec::new();
        let mut cbuf = [0u8; 16 * 1024];
        let mut pbuf = [0u8; 16 * 1024];
        loop {
            tokio::select! {
                n = consumer.read(&mut cbuf) => {
                    let Ok(n @ 1..) = n else { return };
                    from_consumer.extend_from_slice(&cbuf[..n]);
                }
                n = producer.read(&mut pbuf) => {
                    let Ok(n @ 1..) = n else { return };
                    from_producer.extend_from_slice(&pbuf[..n]);
                }
            }
            let mut to_producer = Vec::new();
            while let Some((p, used)) = Packet::try_parse(&from_consumer, &limits).unwrap() {
                from_consumer.drain(..used);
                log.borrow_mut().push(format!("kv-2 {}", label(&p)));
                if !p.header.is_request() && p.header.opcode == Opcode::DCP_ADD_STREAM {
                    let _ = added.send((p.header.opaque, p.header.status()));
                } else {
                    p.encode_into(&mut to_producer);
                }
            }
            let mut to_consumer = Vec::new();
            while let Some((p, used)) = Packet::try_parse(&from_producer, &limits).unwrap() {
                from_producer.drain(..used);
                log.borrow_mut().push(format!("kv-1 {}", label(&p)));
                p.encode_into(&mut to_consumer);
            }
            if !to_producer.is_empty() {
                producer.write_all(&to_producer).await.expect("relay");
            }
            if !to_consumer.is_empty() {
                consumer.write_all(&to_consumer).await.expect("relay");
            }
        }
    });
}

/// Sets up streams for `vbs` (flags: 0 or takeover); returns the
/// ADD_STREAM answers as they come.
async fn streams(vbs: &[u16], flags: u32, log: &Log) -> mpsc::UnboundedReceiver<(u32, Status)> {
    let mut consumer = open("kv-2", false).await;
    let producer = open("kv-1", true).await;
    for &vb in vbs {
        send(
            &mut consumer,
            dcp::add_stream(vb, flags).opaque(u32::from(vb)),
        )
        .await;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    relay(consumer, producer, log.clone(), tx);
    rx
}

/// Every vbucket of the replica equals the active one: same high seqno,
/// same items (value, flags, CAS).
async fn assert_replica_equals_active(active: &Node, replica: &Node) {
    let (a, r) = (&active.store, &replica.store);
    for vb in 0..VBUCKETS {
        let (av, rv) = (a.vbucket(vb).unwrap(), r.vbucket(vb).unwrap());
        assert_eq!(
            av.high_seqno().await,
            rv.high_seqno().await,
            "vb {vb} seqno"
        );
        let items = |items: Vec<(bytes::Bytes, faultline::server::store::Item)>| {
            items
                .into_iter()
                .map(|(k, i)| (k, i.value, i.flags, i.cas))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            items(av.items().await),
            items(rv.items().await),
            "vb {vb} items"
        );
    }
}

/// Whether every vbucket of the replica has the active one's high seqno.
async fn caught_up(a: &Node, r: &Node) -> bool {
    for vb in 0..VBUCKETS {
        let active = a.store.vbucket(vb).unwrap().high_seqno().await;
        if active != r.store.vbucket(vb).unwrap().high_seqno().await {
            return false;
        }
    }
    true
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..5_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("not within 5 simulated seconds");
}

/// Runs a two-node simulation; `test` is the cluster manager and client.
fn two_nodes<F, Fut>(plan: FaultPlan, test: F)
where
    F: Fn(Slot, Slot) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let test = std::sync::Arc::new(test);
    let scenario = scenario_from_fn(
        "dcp-kv",
        "summary = \"t\"\n[sim]\nduration_ms = 60000\n",
        move |sim, _| {
            let (s1, s2): (Slot, Slot) = (Rc::default(), Rc::default());
            let (n1, n2) = (s1.clone(), s2.clone());
            sim.host("kv-1", move || node(config(true), n1.clone()));
            sim.host("kv-2", move || node(config(false), n2.clone()));
            let test = test.clone();
            sim.client("ns", async move {
                test(s1, s2).await;
                Ok(())
            });
            Ok(())
        },
    );
    let options = RunOptions::new(Variant::Fixed).faults(Faults::Plan {
        plan: Box::new(plan),
        source: None,
    });
    let outcome = faultline_harness::run(&scenario, 0, &options);
    assert!(outcome.verdict.is_pass(), "{}", outcome.report());
}

fn plan(text: &str) -> FaultPlan {
    toml::from_str(text).expect("a valid plan")
}

#[test]
fn a_replica_stream_keeps_the_replica_equal_to_the_active() {
    two_nodes(FaultPlan::default(), |kv1, kv2| async move {
        let log = Log::default();
        let mut client = Client::new(SimStream::connect(("kv-1", KV_PORT)).await.unwrap());
        // Some history before the streams exist: the backfill sends it.
        for i in 0..20u16 {
            let key = format!("before-{i}");
            client
                .set(key.as_bytes(), b"x", i % VBUCKETS)
                .await
                .unwrap();
        }
        client.delete(b"before-3", 3).await.unwrap();
        let mut added = streams(&[0, 1, 2, 3], 0, &log).await;
        for _ in 0..VBUCKETS {
            let (_, status) = added.recv().await.unwrap();
            assert_eq!(status, Status::SUCCESS);
        }
        // Writes while the streams run, plain and durable.
        for i in 0..40u16 {
            let vb = i % VBUCKETS;
            let key = format!("k{i}");
            if i % 3 == 0 {
                let cas = client
                    .durable_set(key.as_bytes(), b"durable", vb)
                    .await
                    .unwrap();
                let item = client.get(key.as_bytes(), vb).await.unwrap().unwrap();
                assert_eq!((item.value.as_ref(), item.cas), (&b"durable"[..], cas));
            } else {
                client.set(key.as_bytes(), b"plain", vb).await.unwrap();
            }
            if i % 7 == 0 {
                client.delete(key.as_bytes(), vb).await.unwrap();
            }
        }
        let (a, r) = (kv1.borrow().clone().unwrap(), kv2.borrow().clone().unwrap());
        for _ in 0..5_000 {
            if caught_up(&a, &r).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(caught_up(&a, &r).await, "not within 5 simulated seconds");
        assert_replica_equals_active(&a, &r).await;
        // The replica refuses clients.
        let mut c2 = Client::new(SimStream::connect(("kv-2", KV_PORT)).await.unwrap());
        assert!(matches!(
            c2.get(b"k1", 1).await,
            Err(ClientError::Status(Status::NOT_MY_VBUCKET))
        ));
        let log = log.borrow();
        assert!(
            log.iter().any(|l| l == "kv-1 req:DCP_PREPARE vb0"),
            "{log:?}"
        );
        assert!(
            log.iter()
                .any(|l| l == "kv-2 req:DCP_SEQNO_ACKNOWLEDGED vb0")
        );
        assert!(log.iter().any(|l| l == "kv-1 req:DCP_COMMIT vb0"));
    });
}

#[test]
fn durable_writes_need_a_replica_that_answers() {
    two_nodes(FaultPlan::default(), |_, kv2| async move {
        let mut client = Client::new(SimStream::connect(("kv-1", KV_PORT)).await.unwrap());
        // No replica stream: impossible at once.
        assert!(matches!(
            client.durable_set(b"a", b"1", 0).await,
            Err(ClientError::Status(Status::DURABILITY_IMPOSSIBLE))
        ));
        let log = Log::default();
        let mut added = streams(&[0], 0, &log).await;
        assert_eq!(added.recv().await.unwrap().1, Status::SUCCESS);
        client.durable_set(b"a", b"1", 0).await.unwrap();
        // The replica vbucket goes away (made active elsewhere): its
        // consumer stops applying, nothing acknowledges the next prepare.
        let replica = kv2.borrow().clone().unwrap();
        replica.set_vbucket_state(0, VbState::Dead).await;
        let started = tokio::time::Instant::now();
        assert!(matches!(
            client.durable_set(b"b", b"2", 0).await,
            Err(ClientError::Status(Status::SYNC_WRITE_AMBIGUOUS))
        ));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(2_000) && waited < Duration::from_millis(2_100),
            "{waited:?}"
        );
        // The timed-out write was aborted: the key takes writes again, and
        // its value never shows.
        assert_eq!(client.get(b"b", 0).await.unwrap(), None);
        client.set(b"b", b"3", 0).await.unwrap();
        assert_eq!(&client.get(b"b", 0).await.unwrap().unwrap().value[..], b"3");
    });
}

#[test]
fn a_takeover_hands_the_vbucket_over() {
    two_nodes(FaultPlan::default(), |kv1, kv2| async move {
        let mut client = Client::new(SimStream::connect(("kv-1", KV_PORT)).await.unwrap());
        for i in 0..10u16 {
            client
                .set(format!("t{i}").as_bytes(), b"v", 2)
                .await
                .unwrap();
        }
        let log = Log::default();
        let mut added = streams(&[2], dcp::ADD_STREAM_TAKEOVER, &log).await;
        assert_eq!(added.recv().await.unwrap(), (2, Status::SUCCESS));
        let (a, r) = (kv1.borrow().clone().unwrap(), kv2.borrow().clone().unwrap());
        for _ in 0..5_000 {
            if r.store.vbucket(2).unwrap().state().await == VbState::Active {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(r.store.vbucket(2).unwrap().state().await, VbState::Active);
        assert_eq!(a.store.vbucket(2).unwrap().state().await, VbState::Dead);
        wait_for(|| {
            log.borrow()
                .iter()
                .any(|l| l == "kv-1 req:DCP_STREAM_END vb2")
        })
        .await;
        // The new active serves the data; the old one refuses.
        let mut c2 = Client::new(SimStream::connect(("kv-2", KV_PORT)).await.unwrap());
        assert_eq!(
            c2.get(b"t7", 2).await.unwrap().unwrap().value.as_ref(),
            b"v"
        );
        assert!(matches!(
            client.set(b"t7", b"w", 2).await,
            Err(ClientError::Status(Status::NOT_MY_VBUCKET))
        ));
        let log = log.borrow();
        let svs = log
            .iter()
            .position(|l| l == "kv-1 req:DCP_SET_VBUCKET_STATE vb2")
            .expect("state sent");
        let ack = log
            .iter()
            .position(|l| l == "kv-2 res:DCP_SET_VBUCKET_STATE SUCCESS")
            .expect("state acknowledged");
        let end = log
            .iter()
            .position(|l| l == "kv-1 req:DCP_STREAM_END vb2")
            .unwrap();
        assert!(svs < ack && ack < end, "{log:?}");
    });
}

#[test]
fn the_producer_switch_ends_the_nth_accepted_stream() {
    let plan =
        plan("[[switch]]\nname = \"kv.end_stream_after_accept\"\nhost = \"kv-1\"\nnth = 2\n");
    two_nodes(plan, |_, _| async move {
        let log = Log::default();
        let mut added = streams(&[0, 1, 2], 0, &log).await;
        // The consumer node still answers every ADD_STREAM (it sends the
        // answer before it lets the stream end).
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(added.recv().await.unwrap());
        }
        answers.sort();
        assert_eq!(
            answers,
            [
                (0, Status::SUCCESS),
                (1, Status::SUCCESS),
                (2, Status::SUCCESS)
            ]
        );
        let log = log.borrow();
        let ends: Vec<&String> = log.iter().filter(|l| l.contains("STREAM_END")).collect();
        assert_eq!(ends, ["kv-1 req:DCP_STREAM_END vb1"], "{log:?}");
    });
}

#[test]
fn the_consumer_switch_drops_the_answer_of_a_stream_that_ended() {
    let plan = plan(
        "[[switch]]\nname = \"kv.end_stream_after_accept\"\nhost = \"kv-1\"\nnth = 2\n\
         [[switch]]\nname = \"kv.skip_add_stream_response\"\nhost = \"kv-2\"\n",
    );
    two_nodes(plan, |_, _| async move {
        let log = Log::default();
        let mut added = streams(&[0, 1, 2], 0, &log).await;
        let mut answers = vec![added.recv().await.unwrap(), added.recv().await.unwrap()];
        answers.sort();
        assert_eq!(answers, [(0, Status::SUCCESS), (2, Status::SUCCESS)]);
        // vb 1's answer never comes.
        let late = tokio::time::timeout(Duration::from_secs(5), added.recv()).await;
        assert!(late.is_err(), "{late:?}");
    });
}

#[test]
fn malformed_dcp_messages_are_refused_without_a_panic() {
    two_nodes(FaultPlan::default(), |_, _| async move {
        for producer in [true, false] {
            let host = if producer { "kv-1" } else { "kv-2" };
            let mut stream = open(host, producer).await;
            let bad = [
                Packet::request(Opcode::DCP_STREAM_REQ)
                    .vbucket(0)
                    .extras(vec![1, 2, 3]),
                Packet::request(Opcode::DCP_ADD_STREAM).vbucket(0),
                Packet::request(Opcode::DCP_MUTATION)
                    .vbucket(0)
                    .extras(vec![0; 5]),
                Packet::request(Opcode::DCP_DELETION).vbucket(0),
                Packet::request(Opcode::DCP_COMMIT)
                    .vbucket(0)
                    .extras(vec![0; 3]),
                Packet::request(Opcode::DCP_SNAPSHOT_MARKER).vbucket(0),
                Packet::request(Opcode::DCP_STREAM_END).vbucket(0),
                Packet::request(Opcode::DCP_SET_VBUCKET_STATE).vbucket(0),
                Packet::request(Opcode::DCP_SEQNO_ACKNOWLEDGED).vbucket(0),
                Packet::request(Opcode::DCP_STREAM_REQ)
                    .vbucket(999)
                    .extras(vec![0; 48]),
                Packet::request(Opcode::GET).key(b"k".to_vec()),
            ];
            for (i, p) in bad.into_iter().enumerate() {
                send(&mut stream, p.opaque(100 + i as u32)).await;
            }
            send(&mut stream, Packet::request(Opcode::DCP_NOOP).opaque(999)).await;
            // Every malformed request is answered (EINVAL or a refusal),
            // then the connection still answers a NOOP.
            let mut answered = Vec::new();
            loop {
                let p = recv(&mut stream).await.expect("still open");
                if p.header.opaque == 999 {
                    assert_eq!(p.header.status(), Status::SUCCESS);
                    break;
                }
                assert!(!p.header.status().is_success(), "{p:?}");
                answered.push(p.header.opaque);
            }
            assert!(answered.len() >= 9, "{host}: {answered:?}");
            // A header with a body past the limit closes the connection.
            let mut huge = Packet::request(Opcode::DCP_MUTATION).finished_header();
            huge.body_len = u32::MAX;
            stream.write_all(&huge.encode()).await.unwrap();
            let answer = recv(&mut stream).await.expect("answered before closing");
            assert_eq!(answer.header.status(), Status::E2BIG);
            assert!(recv(&mut stream).await.is_none());
        }
    });
}

#[test]
fn the_idle_timeout_closes_quiet_client_connections_but_not_replication_streams() {
    let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let seen = log.clone();
    let scenario = scenario_from_fn("dcp-idle", "summary = \"t\"\n", move |sim, _| {
        sim.host("kv-1", || async {
            let config = KvConfig {
                idle_timeout_ms: Some(5),
                ..config(true)
            };
            node(config, Slot::default()).await
        });
        let log = seen.clone();
        sim.client("ns", async move {
            let mut dcp_conn = open("kv-1", true).await;
            let mut plain = SimStream::connect(("kv-1", KV_PORT)).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            // The plain connection was closed for idleness...
            let mut byte = [0u8; 1];
            let n = plain.read(&mut byte).await.unwrap_or(0);
            log.lock()
                .unwrap()
                .push(format!("plain connection read {n}"));
            // ...the quiet DCP connection still answers.
            send(&mut dcp_conn, Packet::request(Opcode::NOOP).opaque(9)).await;
            let answer = recv(&mut dcp_conn).await;
            log.lock().unwrap().push(format!(
                "dcp connection answers: {}",
                answer.is_some_and(|p| p.header.opaque == 9)
            ));
            Ok(())
        });
        Ok(())
    });
    let outcome = faultline_harness::run(&scenario, 0, &RunOptions::new(Variant::Fixed));
    assert!(outcome.verdict.is_pass(), "{}", outcome.report());
    assert_eq!(
        *log.lock().unwrap(),
        ["plain connection read 0", "dcp connection answers: true"]
    );
}

#[test]
fn producer_connections_are_bounded_and_refused_beyond_the_limit() {
    use faultline::server::dcp::MAX_PRODUCERS;
    let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let seen = log.clone();
    let scenario = scenario_from_fn("dcp-many", "summary = \"t\"\n", move |sim, _| {
        sim.host("kv-1", || async {
            node(config(true), Slot::default()).await
        });
        let log = seen.clone();
        sim.client("ns", async move {
            let mut open_ones = Vec::new();
            for _ in 0..MAX_PRODUCERS {
                open_ones.push(open("kv-1", true).await);
            }
            let status = |mut s: SimStream| async move {
                send(&mut s, dcp::open("one too many", true).opaque(2)).await;
                let answer = recv(&mut s).await.expect("an answer");
                (s, answer.header.status())
            };
            let extra = SimStream::connect(("kv-1", KV_PORT)).await?;
            let (extra, refused) = status(extra).await;
            log.lock()
                .unwrap()
                .push(format!("one past the limit: {refused}"));
            drop(open_ones.pop());
            tokio::time::sleep(Duration::from_millis(10)).await;
            let (_extra, accepted) = status(extra).await;
            log.lock()
                .unwrap()
                .push(format!("after one closed: {accepted}"));
            Ok(())
        });
        Ok(())
    });
    let outcome = faultline_harness::run(&scenario, 0, &RunOptions::new(Variant::Fixed));
    assert!(outcome.verdict.is_pass(), "{}", outcome.report());
    assert_eq!(
        *log.lock().unwrap(),
        ["one past the limit: ENOMEM", "after one closed: SUCCESS"]
    );
}

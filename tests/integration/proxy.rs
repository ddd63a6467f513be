//! The proxy in simulations: the whole proxy against a store model, and
//! its pieces (raw socket transport, check buffer, fd migration) on the
//! simulated syscall view.

use std::cell::RefCell;
use std::net::SocketAddr;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline::bugs::{Bugs, HAP_ENOTCONN, HAP_ERRHUP, HAP_RCVBUF};
use faultline::proxy::buffer::Buffer;
use faultline::proxy::conn::{CO_FL_ERROR, CO_FL_SOCK_RD_SH, CO_FL_WAIT_L4_CONN, Connection};
use faultline::proxy::fd::{self, FdTable, bit};
use faultline::proxy::raw_sock::{Lend, rcv_buf, snd_buf};
use faultline_harness::sys::EpollOp;
use faultline_harness::{Faults, RunOptions};
use faultline_harness::{
    Scenario, SimListener, Variant, Verdict, faults::FaultPlan, scenario_from_fn, sys::Events,
    sys::Sys,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn scenario(name: &str) -> Scenario {
    let path = format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    faultline::registry()
        .load_file(path.as_ref())
        .expect("the scenario loads")
}

fn mixed(params: &str) -> Scenario {
    let text = format!(
        "summary = \"mixed workload through the proxy\"\nworkload = \"proxy\"\n[sim]\nduration_ms = 60000\n[params]\n{params}"
    );
    faultline::registry()
        .load_str("proxy-mixed", None, &text)
        .expect("a valid scenario")
}

#[test]
fn many_clients_through_the_proxy_see_what_a_model_of_the_store_predicts() {
    let scenario = mixed("nodes = 3\nthreads = 3\nclients = 16\nrequests = 120\nkeys = 6\n");
    for seed in 0..3 {
        let outcome = faultline_harness::run(
            &scenario,
            seed,
            &RunOptions::new(Variant::Fixed).faults(Faults::Off),
        );
        assert_eq!(outcome.verdict, Verdict::Pass, "{}", outcome.report());
        // Every request and every final read went through and was checked.
        let samples = outcome.latencies["proxy.request"].samples;
        assert_eq!(samples, 16 * (120 + 6), "seed {seed}");
        for kind in ["SET", "GET", "DELETE", "ADD", "APPEND", "INCREMENT"] {
            for node in 0..3 {
                let frame = format!("event:frame:proxy->kv-{node}:req:{kind}");
                assert!(outcome.coverage.contains_key(&frame), "no {frame}");
            }
        }
    }
}

#[test]
fn a_stale_vbucket_map_is_learned_from_not_my_vbucket_answers() {
    // Every vbucket is on another node than the proxy believes: each first
    // request per vbucket is refused, retried on the next node, and the
    // map remembers; the clients never see NOT_MY_VBUCKET.
    let scenario = mixed(
        "nodes = 3
threads = 2
clients = 6
requests = 80
keys = 6
stale_map = true
",
    );
    let outcome = faultline_harness::run(
        &scenario,
        0,
        &RunOptions::new(Variant::Fixed).faults(Faults::Off),
    );
    assert_eq!(outcome.verdict, Verdict::Pass, "{}", outcome.report());
    let learned = outcome.coverage["probe:proxy:not-my-vbucket"];
    // Two wrong guesses per vbucket (3 nodes), a few more while requests
    // for the same vbucket are in flight together, then none: far fewer
    // than the 516 requests.
    assert!((16..=64).contains(&learned), "{learned} refusals");
}

#[test]
fn idle_backend_connections_migrate_between_threads_and_old_pollers_forget_them() {
    let scenario = scenario("HAP-FDRACE-late-update-vs-close");
    let outcome = faultline_harness::run(
        &scenario,
        0,
        &RunOptions::new(Variant::Fixed).faults(Faults::Off),
    );
    assert_eq!(outcome.verdict, Verdict::Pass, "{}", outcome.report());
    for probe in ["probe:proxy:takeover", "probe:proxy:late-report"] {
        assert!(
            outcome.coverage.get(probe).copied().unwrap_or(0) > 10,
            "{probe}: {:?}",
            outcome.coverage.get(probe)
        );
    }
}

// ---------------------------------------------------------------------------
// The raw socket transport on the syscall view.
// ---------------------------------------------------------------------------

type Log = Arc<Mutex<Vec<String>>>;

fn note(log: &Log, line: String) {
    log.lock().unwrap().push(line);
}

fn server_addr() -> SocketAddr {
    SocketAddr::new(turmoil::lookup("server"), 80)
}

/// The harness's connection and what a transport function moves bytes
/// to, lent to it between its syscalls.
struct Lent<'a, T>(&'a RefCell<Connection>, &'a mut T);

impl<T> Lend<T> for Lent<'_, T> {
    fn with<R>(&mut self, f: impl FnOnce(&mut Connection, &mut T) -> R) -> R {
        f(&mut self.0.borrow_mut(), self.1)
    }
}

/// One connection of the proxy's layers over a simulated socket.
struct Harness {
    sys: Sys,
    table: FdTable,
    conn: RefCell<Connection>,
    ep: i32,
    bugs: Bugs,
}

impl Harness {
    async fn connect(bugs: Bugs) -> Harness {
        let sys = Sys::new();
        let table = FdTable::new(1, bugs.clone());
        let ep = sys.epoll_create().unwrap();
        let fd = sys.socket().unwrap();
        let mut conn = Connection::new(1, 0);
        let started = sys.connect(fd, server_addr());
        assert_eq!(started, Err(faultline_harness::sys::Errno::EINPROGRESS));
        conn.ctrl_init(&table, fd, bit(0)).await;
        conn.xprt_init();
        conn.flags |= CO_FL_WAIT_L4_CONN;
        Harness {
            sys,
            table,
            conn: RefCell::new(conn),
            ep,
            bugs,
        }
    }

    fn fd(&self) -> i32 {
        self.conn.borrow().fd
    }

    /// Registers the fd for `events` and waits for a report, as the
    /// poller would.
    async fn wait(&self, events: Events) -> Events {
        let fd = self.fd();
        let generation = self.conn.borrow().generation;
        let _ = self
            .sys
            .epoll_ctl(self.ep, EpollOp::Del, fd, Events::NONE, 0, false);
        self.sys
            .epoll_ctl(self.ep, EpollOp::Add, fd, events, generation, false)
            .unwrap();
        let got = self.sys.epoll_wait(self.ep, 8, None).await.unwrap();
        let report = self
            .table
            .update_events(fd, 0, got[0].events, generation, &|_| Box::pin(async {}))
            .await;
        assert_eq!(report, fd::Report::Handle);
        self.table.done_events(fd, 0, &|_| Box::pin(async {})).await;
        got[0].events
    }

    async fn recv(&self, buf: &mut Buffer, count: usize) -> usize {
        let mut lent = Lent(&self.conn, buf);
        rcv_buf(&self.sys, &self.table, &mut lent, count, &self.bugs).await
    }

    async fn send(&self, data: &[u8]) -> usize {
        let mut lent = Lent(&self.conn, &mut ());
        snd_buf(&self.sys, &self.table, &mut lent, data, &self.bugs).await
    }

    fn flags(&self) -> String {
        let c = self.conn.borrow();
        let mut out = Vec::new();
        for (flag, name) in [
            (CO_FL_WAIT_L4_CONN, "WAIT_L4_CONN"),
            (CO_FL_ERROR, "ERROR"),
            (CO_FL_SOCK_RD_SH, "RD_SH"),
        ] {
            if c.has(flag) {
                out.push(name);
            }
        }
        if out.is_empty() {
            "-".into()
        } else {
            out.join("|")
        }
    }
}

/// Runs `client` on host `proxy` against a server on host `server` that
/// answers the first request as `server` says.
fn transport_run<F, Fut>(plan: &str, server: Answer, client: F) -> Vec<String>
where
    F: Fn(Log) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let log: Log = Arc::default();
    let out = log.clone();
    let client = Arc::new(client);
    let scenario = scenario_from_fn(
        "transport",
        "summary = \"t\"\n[sim]\nmin_latency_ms = 2\nmax_latency_ms = 2\n",
        move |sim, _| {
            sim.host("server", move || async move {
                let listener = SimListener::bind(("0.0.0.0", 80)).await?;
                let (mut stream, _) = listener.accept().await?;
                let mut request = [0u8; 7];
                match server {
                    Answer::ThenReset => {
                        // Answer once the request has arrived, and close
                        // without reading it: the answer, then a reset.
                        // (Reading any of it would pull it all from the
                        // network, and the close would not reset.)
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        stream.write_all(b"answer").await?;
                        drop(stream);
                    }
                    Answer::ThenClose => {
                        stream.read_exact(&mut request).await?;
                        stream.write_all(b"answer").await?;
                        stream.shutdown().await?;
                        drop(stream);
                    }
                    Answer::Large => {
                        stream.read_exact(&mut request).await?;
                        for _ in 0..10 {
                            stream.write_all(&[b'x'; 300]).await?;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                std::future::pending::<()>().await;
                Ok(())
            });
            let log = out.clone();
            let client = client.clone();
            sim.client("proxy", async move {
                client(log).await;
                Ok(())
            });
            Ok(())
        },
    );
    let plan: FaultPlan = toml::from_str(plan).expect("a valid plan");
    let outcome = faultline_harness::run(
        &scenario,
        0,
        &RunOptions::new(Variant::Fixed).faults(Faults::Plan {
            plan: Box::new(plan),
            source: None,
        }),
    );
    assert!(
        outcome.verdict.is_pass() || outcome.verdict.oracle() == Some("host-crash"),
        "{}",
        outcome.report()
    );
    let mut lines = log.lock().unwrap().clone();
    if let Verdict::Fail { oracle, .. } = &outcome.verdict {
        lines.push(format!("verdict {oracle}"));
    }
    lines
}

#[derive(Clone, Copy)]
enum Answer {
    ThenReset,
    ThenClose,
    Large,
}

async fn speculative_io_during_connect(bugs: Bugs, log: Log) {
    let h = Harness::connect(bugs).await;
    let mut buf = Buffer::new(64);
    // Right after connect(): both directions are tried at once.
    let sent = h.send(b"request").await;
    let received = h.recv(&mut buf, 64).await;
    note(
        &log,
        format!("early: sent {sent} received {received} {}", h.flags()),
    );
    if h.conn.borrow().has(CO_FL_ERROR) {
        return;
    }
    let ready = h.wait(Events::OUT).await;
    assert!(ready.contains(Events::OUT));
    assert_eq!(h.sys.take_error(h.fd()).unwrap(), None);
    h.conn.borrow_mut().flags &= !CO_FL_WAIT_L4_CONN;
    note(
        &log,
        format!("connected: sent {}", h.send(b"request").await),
    );
}

#[test]
fn enotconn_during_a_connect_waits_for_readiness_and_was_fatal_before_the_fix() {
    for personality in ["illumos", "openbsd"] {
        let plan = format!("[[errno]]\nhost = \"proxy\"\npersonality = \"{personality}\"\n");
        let fixed = transport_run(&plan, Answer::ThenClose, |log| {
            speculative_io_during_connect(Bugs::fixed(), log)
        });
        assert_eq!(
            fixed,
            vec![
                "early: sent 0 received 0 WAIT_L4_CONN".to_string(),
                "connected: sent 7".to_string()
            ],
            "{personality}"
        );
        let buggy = transport_run(&plan, Answer::ThenClose, |log| {
            speculative_io_during_connect(Bugs::with(HAP_ENOTCONN), log)
        });
        assert_eq!(buggy.len(), 1, "{buggy:?}");
        assert!(buggy[0].contains("ERROR"), "{personality}: {buggy:?}");
    }
    // Linux answers EAGAIN: both variants wait.
    let linux = transport_run("", Answer::ThenClose, |log| {
        speculative_io_during_connect(Bugs::with(HAP_ENOTCONN), log)
    });
    assert_eq!(linux[1], "connected: sent 7");
}

/// Connects, sends the 7-byte request, then waits and reads until the
/// stream ended or failed (at most 3 reads).
async fn read_answer(bugs: Bugs, wait_ms: u64, log: Log) {
    let h = Harness::connect(bugs).await;
    h.wait(Events::OUT).await;
    h.conn.borrow_mut().flags &= !CO_FL_WAIT_L4_CONN;
    assert_eq!(h.send(b"request").await, 7);
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    let mut buf = Buffer::new(64);
    for _ in 0..3 {
        let ready = h.wait(Events::IN | Events::RDHUP).await;
        let room = buf.room();
        let n = h.recv(&mut buf, room).await;
        let ready_after = h.table.state(h.fd()).await & fd::READY_R != 0;
        note(
            &log,
            format!(
                "{ready:?}: {n} bytes, {}, recv ready after: {ready_after}",
                h.flags()
            ),
        );
        if h.conn.borrow().any(CO_FL_ERROR | CO_FL_SOCK_RD_SH) || buf.is_full() {
            return;
        }
    }
}

#[test]
fn a_short_read_takes_a_reset_from_err_with_hup() {
    let coalescing =
        "[[segmentation]]\nfrom = \"server\"\nto = \"proxy\"\nmax_segment_bytes = 1000\n";
    // A clean close behind the answer: the poll reports RDHUP once the FIN
    // is queued, the answer still unread (as Linux does), and the poller
    // takes RDHUP for HUP (as HAProxy's epoll poller does): the short read
    // takes the bytes and the end of the stream at once.
    let clean = transport_run(coalescing, Answer::ThenClose, |log| {
        read_answer(Bugs::fixed(), 50, log)
    });
    assert_eq!(
        clean,
        vec!["IN|RDHUP: 6 bytes, RD_SH, recv ready after: true"]
    );
    // A reset behind the answer: ERR|HUP come with the bytes. The short
    // read with HUP is the end of the stream in both variants; at read0
    // the fix (debdc4b65) sees ERR too and marks the connection failed.
    let reset = transport_run(coalescing, Answer::ThenReset, |log| {
        read_answer(Bugs::fixed(), 50, log)
    });
    assert_eq!(
        reset,
        vec!["IN|ERR|HUP|RDHUP: 6 bytes, ERROR|RD_SH, recv ready after: true"]
    );
    let buggy = transport_run(coalescing, Answer::ThenReset, |log| {
        read_answer(Bugs::with(HAP_ERRHUP), 50, log)
    });
    assert_eq!(
        buggy,
        vec!["IN|ERR|HUP|RDHUP: 6 bytes, RD_SH, recv ready after: true"],
        "the old lines miss the error"
    );
}

#[test]
fn a_full_read_stays_ready_and_a_short_one_waits_for_the_poller() {
    let lines = transport_run("", Answer::Large, |log| read_answer(Bugs::fixed(), 0, log));
    // 300 bytes arrived, 64 asked: a full read, still ready.
    assert_eq!(lines, vec!["IN: 64 bytes, -, recv ready after: true"]);
    let lines = transport_run("", Answer::ThenClose, |log| {
        read_answer(Bugs::fixed(), 0, log)
    });
    // The answer came without its close: short, so "done" until reported.
    assert_eq!(lines[0], "IN: 6 bytes, -, recv ready after: false");
}

/// Reads a 3000-byte answer that arrives in segments into a 1024-byte
/// buffer, asking for the buffer's whole size each time (as the checks do).
async fn fill_check_buffer(bugs: Bugs, log: Log) {
    let h = Harness::connect(bugs).await;
    h.wait(Events::OUT).await;
    h.conn.borrow_mut().flags &= !CO_FL_WAIT_L4_CONN;
    assert_eq!(h.send(b"request").await, 7);
    let mut buf = Buffer::new(1024);
    let mut reads = Vec::new();
    while !buf.is_full() {
        h.wait(Events::IN | Events::RDHUP).await;
        let size = buf.size();
        reads.push(h.recv(&mut buf, size).await);
    }
    note(&log, format!("full after {} reads", reads.len()));
    assert_eq!(h.recv(&mut buf, 1024).await, 0, "no room: nothing received");
}

#[test]
fn a_receive_is_bounded_by_the_free_space_and_overflowed_it_before_the_fix() {
    let small_segments =
        "[[segmentation]]\nfrom = \"server\"\nto = \"proxy\"\nmax_segment_bytes = 200\n";
    let fixed = transport_run(small_segments, Answer::Large, |log| {
        fill_check_buffer(Bugs::fixed(), log)
    });
    assert_eq!(fixed.len(), 1, "{fixed:?}");
    assert!(fixed[0].starts_with("full after "), "{fixed:?}");
    let buggy = transport_run(small_segments, Answer::Large, |log| {
        fill_check_buffer(Bugs::with(HAP_RCVBUF), log)
    });
    assert_eq!(buggy, vec!["verdict host-crash"]);
}

#[test]
fn a_proxy_thread_forgets_an_fd_that_migrated_once_it_reports_late() {
    // Thread 0 registered the fd; thread 1 takes it over; a report on
    // thread 0 programs an update that removes it from thread 0's poller.
    let table = FdTable::new(2, Bugs::fixed());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let generation = table.insert(11, fd::Owner::Conn(3), bit(0)).await;
        table.want_recv(11, 0).await;
        assert_eq!(table.take_updates(0), vec![11]);
        let e = table.entry(11);
        e.update_mask.fetch_and(!bit(0)).await;
        assert_eq!(
            table.interest(&e, 0).await,
            Some(Events::IN | Events::RDHUP)
        );
        e.set_registered(0, Some(Events::IN | Events::RDHUP)).await;
        assert!(table.takeover(11, 1, fd::Owner::Conn(3)).await);
        let report = table
            .update_events(11, 0, Events::IN, generation, &|_| Box::pin(async {}))
            .await;
        assert_eq!(report, fd::Report::Migrated);
        assert_eq!(table.take_updates(0), vec![11]);
        assert!(table.grab_tgid(&e).await);
        e.update_mask.fetch_and(!bit(0)).await;
        assert_eq!(table.interest(&e, 0).await, None, "deregister on thread 0");
        table.drop_tgid(&e).await;
        assert_eq!(e.masks(), (bit(1), 0, bit(1)));
        // A report for an earlier use of the number is dropped.
        let stale = table
            .update_events(11, 1, Events::IN, generation + 100, &|_| Box::pin(async {}))
            .await;
        assert_eq!(stale, fd::Report::Closed);
    });
}

#[test]
fn a_client_that_half_closes_after_its_requests_still_gets_every_answer() {
    use faultline::protocol::{Limits, Opcode, Packet, Status, read_packet};
    use faultline::proxy::{BackendAddr, ProxyConfig, run_proxy};
    use faultline::server::{KV_PORT, KvConfig, run_node};
    use faultline_harness::SimStream;

    let log: Log = Arc::default();
    let out = log.clone();
    let scenario = scenario_from_fn("half-close", "summary = \"t\"\n", move |sim, _| {
        sim.host("kv-0", || async {
            Ok(run_node(KvConfig::default()).await?)
        });
        sim.host("proxy", || async {
            let config = ProxyConfig {
                backends: vec![BackendAddr {
                    host: "kv-0".into(),
                    port: KV_PORT,
                }],
                ..ProxyConfig::default()
            };
            Ok(run_proxy(Sys::new(), config).await?)
        });
        let log = out.clone();
        sim.client("client", async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let mut stream = SimStream::connect(("proxy", 11211)).await?;
            let mut bytes = Vec::new();
            Packet::request(Opcode::SET)
                .key(&b"k"[..])
                .extras(vec![0u8; 8])
                .value(&b"v"[..])
                .opaque(1)
                .encode_into(&mut bytes);
            Packet::request(Opcode::GET)
                .key(&b"k"[..])
                .opaque(2)
                .encode_into(&mut bytes);
            stream.write_all(&bytes).await?;
            // No more requests: the write side is shut, reading goes on.
            stream.shutdown().await?;
            while let Some(p) = read_packet(&mut stream, &Limits::default()).await? {
                let ok = p.status_code() == Status::SUCCESS;
                note(
                    &log,
                    format!("{} {} ok={ok} {:?}", p.opcode(), p.header.opaque, p.value),
                );
            }
            note(&log, "closed by the proxy".into());
            Ok(())
        });
        Ok(())
    });
    let outcome = faultline_harness::run(&scenario, 0, &RunOptions::new(Variant::Fixed));
    assert_eq!(outcome.verdict, Verdict::Pass, "{}", outcome.report());
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            "SET 1 ok=true b\"\"",
            "GET 2 ok=true b\"v\"",
            "closed by the proxy"
        ]
    );
}

/// The proxy's threads share only `sync` primitives (ARCHITECTURE.md, the
/// proxy's table): every `RefCell` in `src/proxy/` is one of these, each
/// touched by one thread at a time for the reason given, and no tokio
/// synchronization primitive is used there at all. A new `RefCell` or a
/// tokio primitive in the proxy makes this fail until it is a `sync`
/// primitive or joins the list with its reason.
#[test]
fn proxy_threads_share_only_sync_primitives() {
    let allowed: &[(&str, &str, &str)] = &[
        // A thread's own state, lent by `Proxy::state` to that thread's
        // task only (asserted there).
        ("process.rs", "state: RefCell<State>,", "one thread's"),
        (
            "process.rs",
            "pub state: &'a RefCell<State>,",
            "a lend of it",
        ),
        (
            "process.rs",
            "pub fn state_cell(&self) -> &RefCell<State> {",
            "its accessor",
        ),
        // HAProxy's `fdtab[]` is an array sized at start-up; the map is
        // its storage (slots made on first use), entries hold atomics.
        (
            "fd.rs",
            "entries: RefCell<BTreeMap<Fd, Rc<FdEntry>>>,",
            "array storage",
        ),
        // `fd_updt[]`: each thread's own list.
        ("fd.rs", "updates: Vec<RefCell<Vec<Fd>>>,", "per thread"),
        // The real kernel's epoll bookkeeping (`faultline proxy`), not simulated.
        (
            "os.rs",
            "pollers: Rc<RefCell<BTreeMap<Fd, Rc<AsyncFd<Watched>>>>>,",
            "real OS",
        ),
        (
            "os.rs",
            "data: Rc<RefCell<BTreeMap<(Fd, Fd), u64>>>,",
            "real OS",
        ),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/proxy");
    let mut found = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("src/proxy")
        .map(|e| e.expect("an entry").path())
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).expect("a source file");
        for (i, line) in text.lines().enumerate() {
            let code = line.trim();
            if code.starts_with("//") {
                continue;
            }
            assert!(
                !code.contains("tokio::sync"),
                "src/proxy/{name}:{}: a tokio primitive in the proxy: {code}",
                i + 1
            );
            if code.contains("RefCell<") {
                found.push((name.clone(), code.to_string(), i + 1));
            }
        }
    }
    for (name, code, line) in &found {
        assert!(
            allowed.iter().any(|(f, c, _)| f == name && c == code),
            "src/proxy/{name}:{line}: a RefCell not known to be one thread's: {code}"
        );
    }
    assert_eq!(
        found.len(),
        allowed.len(),
        "an allowed RefCell is gone: {found:?}"
    );
}

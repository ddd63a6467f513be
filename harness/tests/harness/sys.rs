//! The syscall view: fd numbers, connect in progress under each errno
//! personality, resets as ERR|HUP, level- and edge-triggered polling.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_harness::sys::{EpollOp, Events, Shutdown, Sys};
use faultline_harness::{Faults, RunOptions};
use faultline_harness::{
    Scenario, SimListener, Variant, Verdict, faults::FaultPlan, faults::Personality,
    scenario_from_fn,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Log = Arc<Mutex<Vec<String>>>;

fn note(log: &Log, line: String) {
    log.lock().unwrap().push(line);
}

fn run(scenario: &Scenario, plan: &str) -> faultline_harness::Outcome {
    let plan: FaultPlan = toml::from_str(plan).expect("a valid plan");
    let outcome = faultline_harness::run(
        scenario,
        0,
        &RunOptions::new(Variant::Fixed).faults(Faults::Plan {
            plan: Box::new(plan),
            source: None,
        }),
    );
    assert_eq!(outcome.verdict, Verdict::Pass, "{}", outcome.report());
    outcome
}

fn server_addr() -> SocketAddr {
    SocketAddr::new(turmoil::lookup("server"), 80)
}

#[test]
fn fd_numbers_are_reused_lowest_first() {
    let log: Log = Arc::default();
    let out = log.clone();
    let scenario = scenario_from_fn("fds", "summary = \"t\"\n", move |sim, _| {
        let log = out.clone();
        sim.client("proxy", async move {
            let sys = Sys::new();
            let a = sys.socket().unwrap();
            let b = sys.socket().unwrap();
            let c = sys.socket().unwrap();
            note(&log, format!("{a} {b} {c}"));
            sys.close(b).unwrap();
            let d = sys.socket().unwrap();
            sys.close(a).unwrap();
            sys.close(c).unwrap();
            let e = sys.socket().unwrap();
            let f = sys.socket().unwrap();
            note(&log, format!("{d} {e} {f}"));
            note(&log, format!("{:?}", sys.close(42)));
            Ok(())
        });
        Ok(())
    });
    run(&scenario, "");
    assert_eq!(*log.lock().unwrap(), vec!["3 4 5", "4 3 5", "Err(EBADF)"]);
}

/// A server that accepts slowly (so connects stay in progress for a while)
/// and a client that probes recv/send during its connect.
fn connect_probe(log: Log) -> Scenario {
    scenario_from_fn(
        "connect",
        "summary = \"t\"\n[sim]\nmin_latency_ms = 5\nmax_latency_ms = 5\n",
        move |sim, _| {
            sim.host("server", || async {
                let listener = SimListener::bind(("0.0.0.0", 80)).await?;
                loop {
                    let (mut stream, _) = listener.accept().await?;
                    tokio::task::spawn_local(async move {
                        let mut buf = [0u8; 16];
                        while let Ok(n) = stream.read(&mut buf).await {
                            if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
            let log = log.clone();
            sim.client("proxy", async move {
                let sys = Sys::new();
                let fd = sys.socket().unwrap();
                note(
                    &log,
                    format!("connect {:?}", sys.connect(fd, server_addr())),
                );
                let mut buf = [0u8; 8];
                note(&log, format!("recv {:?}", sys.recv(fd, &mut buf)));
                note(&log, format!("send {:?}", sys.send(fd, b"ping")));
                let ep = sys.epoll_create().unwrap();
                sys.epoll_ctl(ep, EpollOp::Add, fd, Events::OUT, 7, false)
                    .unwrap();
                let events = sys
                    .epoll_wait(ep, 8, Some(Duration::from_secs(1)))
                    .await
                    .unwrap();
                note(
                    &log,
                    format!(
                        "ready {:?} so_error {:?}",
                        events[0].events,
                        sys.take_error(fd)
                    ),
                );
                note(&log, format!("send {:?}", sys.send(fd, b"ping")));
                sys.epoll_ctl(ep, EpollOp::Mod, fd, Events::IN, 7, false)
                    .unwrap();
                sys.epoll_wait(ep, 8, None).await.unwrap();
                note(
                    &log,
                    format!("recv {:?} {:?}", sys.recv(fd, &mut buf), &buf[..4]),
                );
                Ok(())
            });
            Ok(())
        },
    )
}

#[test]
fn recv_and_send_during_a_connect_answer_each_personalitys_errno() {
    let expect = |personality: &str, recv: &str, send: &str| {
        let log: Log = Arc::default();
        let plan = if personality == "linux" {
            String::new()
        } else {
            format!("[[errno]]\nhost = \"proxy\"\npersonality = \"{personality}\"\n")
        };
        run(&connect_probe(log.clone()), &plan);
        assert_eq!(
            *log.lock().unwrap(),
            vec![
                "connect Err(EINPROGRESS)".to_string(),
                format!("recv Err({recv})"),
                format!("send Err({send})"),
                "ready OUT so_error Ok(None)".to_string(),
                "send Ok(4)".to_string(),
                "recv Ok(4) [112, 105, 110, 103]".to_string(),
            ],
            "personality {personality}"
        );
    };
    expect("linux", "EAGAIN", "EAGAIN");
    expect("illumos", "ENOTCONN", "EAGAIN");
    expect("openbsd", "EAGAIN", "ENOTCONN");
    // Only its splice differs from Linux.
    expect("linux-2.6.35", "EAGAIN", "EAGAIN");
    assert_eq!(Personality::ALL.len(), 4);
}

#[test]
fn a_refused_connect_reports_what_linux_reports_filtered_by_the_interest() {
    // Linux closes a refused socket both ways (tcp_done): tcp_poll reports
    // IN|OUT|ERR|HUP|RDHUP; epoll keeps the directions asked for, and ERR
    // and HUP always. Polled for OUT only (HAProxy while connecting), it is
    // OUT|ERR|HUP. Once the error is read, recv meets the shutdown first
    // (end of stream: tcp_recvmsg) and send a closed socket (EPIPE:
    // sk_stream_wait_connect); a socket that never connected answers
    // ENOTCONN to recv and EPIPE to send.
    let log: Log = Arc::default();
    let out = log.clone();
    let scenario = scenario_from_fn("refused", "summary = \"t\"\n", move |sim, _| {
        sim.host("server", || async {
            std::future::pending::<()>().await;
            Ok(())
        });
        let log = out.clone();
        sim.client("proxy", async move {
            let sys = Sys::new();
            for interest in [Events::OUT, Events::IN | Events::OUT | Events::RDHUP] {
                let fd = sys.socket().unwrap();
                let _ = sys.connect(fd, server_addr());
                let ep = sys.epoll_create().unwrap();
                sys.epoll_ctl(ep, EpollOp::Add, fd, interest, 0, false)
                    .unwrap();
                let events = sys
                    .epoll_wait(ep, 8, Some(Duration::from_secs(1)))
                    .await
                    .unwrap();
                note(
                    &log,
                    format!(
                        "{:?}: {:?} {:?} {:?}",
                        interest,
                        events[0].events,
                        sys.take_error(fd),
                        sys.take_error(fd)
                    ),
                );
                let after = sys.epoll_wait(ep, 8, Some(Duration::ZERO)).await.unwrap();
                note(&log, format!("after: {:?}", after[0].events));
                let mut buf = [0u8; 4];
                note(&log, format!("recv {:?}", sys.recv(fd, &mut buf)));
                note(&log, format!("send {:?}", sys.send(fd, b"x")));
            }
            let fresh = sys.socket().unwrap();
            let mut buf = [0u8; 4];
            note(
                &log,
                format!(
                    "never connected: recv {:?} send {:?}",
                    sys.recv(fresh, &mut buf),
                    sys.send(fresh, b"x")
                ),
            );
            Ok(())
        });
        Ok(())
    });
    run(&scenario, "");
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            "OUT: OUT|ERR|HUP Ok(Some(ECONNREFUSED)) Ok(None)",
            "after: OUT|HUP",
            "recv Ok(0)",
            "send Err(EPIPE)",
            "IN|OUT|RDHUP: IN|OUT|ERR|HUP|RDHUP Ok(Some(ECONNREFUSED)) Ok(None)",
            "after: IN|OUT|HUP|RDHUP",
            "recv Ok(0)",
            "send Err(EPIPE)",
            "never connected: recv Err(ENOTCONN) send Err(EPIPE)",
        ]
    );
}

#[test]
fn a_peer_reset_while_data_is_pending_arrives_as_err_and_hup_together() {
    let log: Log = Arc::default();
    let out = log.clone();
    let scenario = scenario_from_fn("reset", "summary = \"t\"\n", move |sim, _| {
        sim.host("server", || async {
            let listener = SimListener::bind(("0.0.0.0", 80)).await?;
            let (stream, _) = listener.accept().await?;
            // Close after the request arrived, without reading it: a reset.
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(stream);
            std::future::pending::<()>().await;
            Ok(())
        });
        let log = out.clone();
        sim.client("proxy", async move {
            let sys = Sys::new();
            let fd = sys.socket().unwrap();
            let _ = sys.connect(fd, server_addr());
            let ep = sys.epoll_create().unwrap();
            sys.epoll_ctl(ep, EpollOp::Add, fd, Events::OUT, 0, false)
                .unwrap();
            sys.epoll_wait(ep, 8, None).await.unwrap();
            note(&log, format!("send {:?}", sys.send(fd, b"request")));
            // Nothing more to send: poll for input only.
            sys.epoll_ctl(ep, EpollOp::Mod, fd, Events::IN | Events::RDHUP, 0, false)
                .unwrap();
            let events = sys.epoll_wait(ep, 8, None).await.unwrap();
            note(&log, format!("ready {:?}", events[0].events));
            let mut buf = [0u8; 8];
            note(&log, format!("recv {:?}", sys.recv(fd, &mut buf)));
            note(&log, format!("recv {:?}", sys.recv(fd, &mut buf)));
            let again = sys.epoll_wait(ep, 8, Some(Duration::ZERO)).await.unwrap();
            note(&log, format!("after ready {:?}", again[0].events));
            note(&log, format!("send {:?}", sys.send(fd, b"x")));
            Ok(())
        });
        Ok(())
    });
    let outcome = run(&scenario, "");
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            "send Ok(7)",
            "ready IN|ERR|HUP|RDHUP",
            "recv Err(ECONNRESET)",
            "recv Ok(0)",
            "after ready IN|HUP|RDHUP",
            "send Err(EPIPE)",
        ]
    );
    assert!(outcome.coverage.contains_key("sys:reset"));
}

#[test]
fn level_triggered_polls_repeat_edge_triggered_polls_report_once() {
    let log: Log = Arc::default();
    let out = log.clone();
    let scenario = scenario_from_fn("triggers", "summary = \"t\"\n", move |sim, _| {
        sim.host("server", || async {
            let listener = SimListener::bind(("0.0.0.0", 80)).await?;
            let (mut stream, _) = listener.accept().await?;
            stream.write_all(b"hello").await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            stream.write_all(b"again").await?;
            std::future::pending::<()>().await;
            Ok(())
        });
        let log = out.clone();
        sim.client("proxy", async move {
            let sys = Sys::new();
            let fd = sys.socket().unwrap();
            let _ = sys.connect(fd, server_addr());
            let level = sys.epoll_create().unwrap();
            let edge = sys.epoll_create().unwrap();
            sys.epoll_ctl(level, EpollOp::Add, fd, Events::IN, 1, false)
                .unwrap();
            sys.epoll_ctl(edge, EpollOp::Add, fd, Events::IN, 2, true)
                .unwrap();
            sys.epoll_wait(level, 8, None).await.unwrap();
            let zero = Some(Duration::ZERO);
            for _ in 0..2 {
                let l = sys.epoll_wait(level, 8, zero).await.unwrap().len();
                let e = sys.epoll_wait(edge, 8, zero).await.unwrap().len();
                note(&log, format!("unread data: level {l} edge {e}"));
            }
            let mut buf = [0u8; 16];
            note(
                &log,
                format!(
                    "drain {:?} {:?}",
                    sys.recv(fd, &mut buf),
                    sys.recv(fd, &mut buf)
                ),
            );
            let l = sys.epoll_wait(level, 8, zero).await.unwrap().len();
            let e = sys.epoll_wait(edge, 8, zero).await.unwrap().len();
            note(&log, format!("drained: level {l} edge {e}"));
            let e = sys
                .epoll_wait(edge, 8, Some(Duration::from_secs(1)))
                .await
                .unwrap()
                .len();
            note(&log, format!("new data: edge {e}"));
            sys.shutdown(fd, Shutdown::Both).unwrap();
            Ok(())
        });
        Ok(())
    });
    run(&scenario, "");
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            "unread data: level 1 edge 1",
            "unread data: level 1 edge 0",
            "drain Ok(5) Err(EAGAIN)",
            "drained: level 0 edge 0",
            "new data: edge 1",
        ]
    );
}

#[test]
fn a_tiny_send_buffer_gives_short_sends_then_eagain() {
    let log: Log = Arc::default();
    let out = log.clone();
    let scenario = scenario_from_fn("short-send", "summary = \"t\"\n", move |sim, _| {
        sim.host("server", || async {
            let listener = SimListener::bind(("0.0.0.0", 80)).await?;
            let (_stream, _) = listener.accept().await?;
            std::future::pending::<()>().await;
            Ok(())
        });
        let log = out.clone();
        sim.client("proxy", async move {
            let sys = Sys::new();
            let fd = sys.socket().unwrap();
            let _ = sys.connect(fd, server_addr());
            let ep = sys.epoll_create().unwrap();
            sys.epoll_ctl(ep, EpollOp::Add, fd, Events::OUT, 0, false)
                .unwrap();
            sys.epoll_wait(ep, 8, None).await.unwrap();
            note(
                &log,
                format!(
                    "{:?} {:?}",
                    sys.send(fd, b"0123456789"),
                    sys.send(fd, b"abc")
                ),
            );
            let idle = sys
                .epoll_wait(ep, 8, Some(Duration::from_millis(10)))
                .await
                .unwrap();
            note(&log, format!("writable while full: {}", !idle.is_empty()));
            Ok(())
        });
        Ok(())
    });
    run(&scenario, "[[send_buffer]]\nhost = \"proxy\"\nbytes = 4\n");
    assert_eq!(
        *log.lock().unwrap(),
        vec!["Ok(4) Err(EAGAIN)", "writable while full: false"]
    );
}

#[test]
fn a_task_that_never_waits_is_a_busy_loop_not_a_hung_run() {
    let scenario = scenario_from_fn("spin", "summary = \"t\"\n", |sim, _| {
        sim.host("server", || async {
            let listener = SimListener::bind(("0.0.0.0", 80)).await?;
            let (_stream, _) = listener.accept().await?;
            std::future::pending::<()>().await;
            Ok(())
        });
        sim.client("proxy", async {
            let sys = Sys::new();
            let fd = sys.socket().unwrap();
            let _ = sys.connect(fd, server_addr());
            tokio::time::sleep(Duration::from_millis(10)).await;
            let mut buf = [0u8; 8];
            // Retries recv without ever waiting for readiness.
            while let Err(faultline_harness::sys::Errno::EAGAIN) = sys.recv(fd, &mut buf) {}
            Ok(())
        });
        Ok(())
    });
    let outcome = faultline_harness::run(&scenario, 0, &RunOptions::new(Variant::Fixed));
    let Verdict::Fail { oracle, message } = &outcome.verdict else {
        panic!("the spin must fail the run")
    };
    assert_eq!(oracle, "busy-loop");
    assert!(
        message.contains("host `proxy`") && message.contains("last: recv"),
        "{message}"
    );
}

#[test]
fn bytes_before_a_reset_are_reported_with_err_hup_and_read_before_the_error() {
    let log: Log = Arc::default();
    let out = log.clone();
    let scenario = scenario_from_fn("reset-behind-data", "summary = \"t\"\n", move |sim, _| {
        sim.host("server", || async {
            let listener = SimListener::bind(("0.0.0.0", 80)).await?;
            let (mut stream, _) = listener.accept().await?;
            // The request has arrived; answer, then close without reading
            // it: the answer and the reset leave together.
            tokio::time::sleep(Duration::from_millis(20)).await;
            stream.write_all(b"answer").await?;
            drop(stream);
            std::future::pending::<()>().await;
            Ok(())
        });
        let log = out.clone();
        sim.client("proxy", async move {
            let sys = Sys::new();
            let fd = sys.socket().unwrap();
            let _ = sys.connect(fd, server_addr());
            let ep = sys.epoll_create().unwrap();
            sys.epoll_ctl(ep, EpollOp::Add, fd, Events::OUT, 0, false)
                .unwrap();
            sys.epoll_wait(ep, 8, None).await.unwrap();
            sys.send(fd, b"request").unwrap();
            sys.epoll_ctl(ep, EpollOp::Mod, fd, Events::IN | Events::RDHUP, 0, false)
                .unwrap();
            // Both the answer and the reset have arrived by then.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let events = sys.epoll_wait(ep, 8, None).await.unwrap();
            note(&log, format!("ready {:?}", events[0].events));
            let mut buf = [0u8; 64];
            note(&log, format!("recv {:?}", sys.recv(fd, &mut buf)));
            note(&log, format!("recv {:?}", sys.recv(fd, &mut buf)));
            note(&log, format!("recv {:?}", sys.recv(fd, &mut buf)));
            Ok(())
        });
        Ok(())
    });
    // Segmentation makes the reader take every segment that has arrived.
    let outcome = run(
        &scenario,
        "[[segmentation]]\nfrom = \"server\"\nto = \"proxy\"\nmax_segment_bytes = 1000\n",
    );
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            "ready IN|ERR|HUP|RDHUP",
            "recv Ok(6)",
            "recv Err(ECONNRESET)",
            "recv Ok(0)",
        ]
    );
    assert!(outcome.coverage.contains_key("sys:reset-behind-data"));
}

#[test]
fn a_poll_loop_woken_again_and_again_is_a_busy_loop() {
    let scenario = scenario_from_fn("poll-spin", "summary = \"t\"\n", |sim, _| {
        sim.host("server", || async {
            let listener = SimListener::bind(("0.0.0.0", 80)).await?;
            let (stream, _) = listener.accept().await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(stream); // unread request: a reset
            std::future::pending::<()>().await;
            Ok(())
        });
        sim.client("proxy", async {
            let sys = Sys::new();
            let fd = sys.socket().unwrap();
            let _ = sys.connect(fd, server_addr());
            let ep = sys.epoll_create().unwrap();
            sys.epoll_ctl(ep, EpollOp::Add, fd, Events::OUT, 0, false)
                .unwrap();
            sys.epoll_wait(ep, 8, None).await.unwrap();
            sys.send(fd, b"request").unwrap();
            // Interested in nothing, but ERR|HUP are always reported: a loop
            // that never looks at them never waits.
            sys.epoll_ctl(ep, EpollOp::Mod, fd, Events::NONE, 0, false)
                .unwrap();
            loop {
                sys.epoll_wait(ep, 8, None).await.unwrap();
            }
        });
        Ok(())
    });
    let outcome = faultline_harness::run(&scenario, 0, &RunOptions::new(Variant::Fixed));
    let Verdict::Fail { oracle, message } = &outcome.verdict else {
        panic!("the spin must fail the run")
    };
    assert_eq!(oracle, "busy-loop");
    assert!(message.contains("last: epoll_wait"), "{message}");
}

#[test]
fn a_poll_loop_that_always_finds_work_still_lets_the_clock_move() {
    // Thread A polls a socket that stays readable (nobody reads it yet)
    // and yields after each pass, as an event loop does; thread B sleeps
    // 50 µs, then reads. Simulated time moves only when every task waits:
    // without CPU time for A's polls, B would never wake.
    let log: Log = Arc::default();
    let out = log.clone();
    let scenario = scenario_from_fn("spin", "summary = \"t\"\n", move |sim, _| {
        sim.host("server", || async {
            let listener = SimListener::bind(("0.0.0.0", 80)).await?;
            let (mut stream, _) = listener.accept().await?;
            stream.write_all(b"hello").await?;
            std::future::pending::<()>().await;
            Ok(())
        });
        let log = out.clone();
        sim.client("proxy", async move {
            let sys = Sys::new();
            let fd = sys.socket().unwrap();
            let _ = sys.connect(fd, server_addr());
            let epfd = sys.epoll_create().unwrap();
            sys.epoll_ctl(epfd, EpollOp::Add, fd, Events::IN, 0, false)
                .unwrap();
            sys.epoll_wait(epfd, 4, None).await.unwrap();
            let done = std::rc::Rc::new(std::cell::Cell::new(false));
            let reader = {
                let (sys, done) = (sys.clone(), done.clone());
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(Duration::from_micros(50)).await;
                    let mut buf = [0u8; 16];
                    let n = sys.recv(fd, &mut buf).unwrap();
                    done.set(true);
                    n
                })
            };
            let mut polls = 0u64;
            while !done.get() {
                let ready = sys.epoll_wait(epfd, 4, Some(Duration::from_secs(1))).await;
                assert!(ready.is_ok());
                polls += 1;
                tokio::task::yield_now().await;
            }
            let n = reader.await.unwrap();
            note(
                &log,
                format!("read {n} bytes after more than 200 polls: {}", polls > 200),
            );
            Ok(())
        });
        Ok(())
    });
    run(&scenario, "");
    assert_eq!(
        *log.lock().unwrap(),
        ["read 5 bytes after more than 200 polls: true"]
    );
}

// ---------------------------------------------------------------------
// Pipes and splice.
// ---------------------------------------------------------------------

/// A `source` host that sends `0123456789` to whoever connects and closes
/// 40 ms later (a FIN: nothing it received is left unread), and a `sink`
/// that reads everything after `sink_delay_ms` and notes what it got once
/// the stream ends.
fn source_and_sink(sim: &mut faultline_harness::SimSetup<'_>, log: &Log, sink_delay_ms: u64) {
    sim.host("source", || async {
        let listener = SimListener::bind(("0.0.0.0", 80)).await?;
        loop {
            let (mut stream, _) = listener.accept().await?;
            tokio::task::spawn_local(async move {
                let _ = stream.write_all(b"0123456789").await;
                tokio::time::sleep(Duration::from_millis(40)).await;
                drop(stream);
            });
        }
    });
    let log = log.clone();
    sim.host("sink", move || {
        let log = log.clone();
        async move {
            let listener = SimListener::bind(("0.0.0.0", 81)).await?;
            let (mut stream, _) = listener.accept().await?;
            tokio::time::sleep(Duration::from_millis(sink_delay_ms)).await;
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await?;
            note(&log, format!("sink got {}", String::from_utf8_lossy(&got)));
            std::future::pending::<()>().await;
            Ok(())
        }
    });
}

/// A connected socket of the syscall view (waits for the connect).
async fn connected(sys: &Sys, host: &str, port: u16) -> i32 {
    let fd = sys.socket().unwrap();
    let _ = sys.connect(fd, SocketAddr::new(turmoil::lookup(host), port));
    let ep = sys.epoll_create().unwrap();
    sys.epoll_ctl(ep, EpollOp::Add, fd, Events::OUT, 0, false)
        .unwrap();
    sys.epoll_wait(ep, 1, None).await.unwrap();
    sys.close(ep).unwrap();
    assert!(sys.is_connected(fd));
    fd
}

/// Waits until `fd` is ready for `events`.
async fn wait_for(sys: &Sys, fd: i32, events: Events) -> Events {
    let ep = sys.epoll_create().unwrap();
    sys.epoll_ctl(ep, EpollOp::Add, fd, events, 0, false)
        .unwrap();
    let ready = sys.epoll_wait(ep, 1, Some(Duration::from_secs(1))).await;
    sys.close(ep).unwrap();
    ready.unwrap().first().map(|e| e.events).unwrap_or_default()
}

#[test]
fn splice_moves_the_least_of_max_readable_and_free_buffers_and_pollers_see_the_pipe() {
    let log: Log = Arc::default();
    let out = log.clone();
    let scenario = scenario_from_fn("splice", "summary = \"t\"\n", move |sim, _| {
        source_and_sink(sim, &out, 0);
        let log = out.clone();
        sim.client("proxy", async move {
            let sys = Sys::new();
            let (r, w) = sys.pipe().unwrap();
            note(
                &log,
                format!("pipe {r} {w} holds {}", sys.pipe_capacity_bytes()),
            );
            let src = connected(&sys, "source", 80).await;
            let dst = connected(&sys, "sink", 81).await;
            let level = sys.epoll_create().unwrap();
            let edge = sys.epoll_create().unwrap();
            sys.epoll_ctl(level, EpollOp::Add, r, Events::IN, 1, false)
                .unwrap();
            sys.epoll_ctl(edge, EpollOp::Add, r, Events::IN, 2, true)
                .unwrap();
            let zero = Some(Duration::ZERO);
            let polled = |ep| {
                let sys = sys.clone();
                async move {
                    let events = sys.epoll_wait(ep, 4, zero).await.unwrap();
                    format!("{:?}", events.iter().map(|e| e.events).collect::<Vec<_>>())
                }
            };
            wait_for(&sys, src, Events::IN).await;
            note(&log, format!("empty: {}", polled(level).await));
            // Not between a socket and a pipe, or an end the wrong way
            // round, or not open.
            note(
                &log,
                format!(
                    "checks {:?} {:?} {:?} {:?} {:?} {:?}",
                    sys.splice(src, dst, 10),
                    sys.splice(w, dst, 10),
                    sys.splice(src, r, 10),
                    sys.splice(42, w, 10),
                    sys.splice(r, level, 10),
                    sys.splice(src, w, 0),
                ),
            );
            // 10 bytes readable in one segment, one buffer (see the plan):
            // max, then the pipe is full although it holds 4 bytes.
            note(&log, format!("max {:?}", sys.splice(src, w, 4)));
            note(
                &log,
                format!(
                    "held {:?} level {} edge {} edge again {}",
                    sys.pipe_bytes(r),
                    polled(level).await,
                    polled(edge).await,
                    polled(edge).await
                ),
            );
            note(
                &log,
                format!(
                    "full {:?} write end {:?} held {:?}",
                    sys.splice(src, w, 100),
                    sys.ready_now(w),
                    sys.pipe_bytes(w)
                ),
            );
            // Out of the pipe: what it holds, then nothing while its
            // writer is open.
            note(
                &log,
                format!(
                    "drain {:?} {:?} level {} edge {}",
                    sys.splice(r, dst, 100),
                    sys.splice(r, dst, 100),
                    polled(level).await,
                    polled(edge).await
                ),
            );
            // What is left on the socket: readable limits.
            note(&log, format!("readable {:?}", sys.splice(src, w, 100)));
            note(&log, format!("edge after refill {}", polled(edge).await));
            // The source closes: the socket's end of stream.
            wait_for(&sys, src, Events::RDHUP).await;
            // A full pipe answers before the socket does.
            note(
                &log,
                format!("source eof, pipe full {:?}", sys.splice(src, w, 100)),
            );
            note(&log, format!("part {:?}", sys.splice(r, dst, 3)));
            sys.close(w).unwrap();
            note(
                &log,
                format!(
                    "writer closed: read end {:?} level {}",
                    sys.ready_now(r),
                    polled(level).await
                ),
            );
            note(
                &log,
                format!(
                    "rest {:?} then {:?} read end {:?}",
                    sys.splice(r, dst, 100),
                    sys.splice(r, dst, 100),
                    sys.ready_now(r)
                ),
            );
            // A pipe whose reader is gone: ERR on the write end, EPIPE.
            let (r2, w2) = sys.pipe().unwrap();
            sys.close(r2).unwrap();
            note(
                &log,
                format!(
                    "no reader {:?} {:?}",
                    sys.ready_now(w2),
                    sys.splice(src, w2, 1)
                ),
            );
            let (_, w3) = sys.pipe().unwrap();
            note(&log, format!("source eof {:?}", sys.splice(src, w3, 100)));
            sys.shutdown(dst, Shutdown::Write).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(())
        });
        Ok(())
    });
    let outcome = run(
        &scenario,
        "[[pipe]]\nhost = \"proxy\"\ncapacity_bytes = 4096\n",
    );
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            "pipe 3 4 holds 4096",
            "empty: []",
            "checks Err(EINVAL) Err(EBADF) Err(EBADF) Err(EBADF) Err(EINVAL) Ok(0)",
            "max Ok(4)",
            "held Some(4) level [IN] edge [IN] edge again []",
            "full Err(EAGAIN) write end Ok(-) held Some(4)",
            "drain Ok(4) Err(EAGAIN) level [] edge []",
            "readable Ok(6)",
            "edge after refill [IN]",
            "source eof, pipe full Err(EAGAIN)",
            "part Ok(3)",
            "writer closed: read end Ok(IN|HUP) level [IN|HUP]",
            "rest Ok(3) then Ok(0) read end Ok(HUP)",
            "no reader Ok(OUT|ERR) Err(EPIPE)",
            "source eof Ok(0)",
            "sink got 0123456789",
        ]
    );
    assert!(outcome.coverage.contains_key("pipe:full"));
}

#[test]
fn splice_into_a_socket_with_a_small_send_buffer_leaves_the_rest_in_the_pipe() {
    let log: Log = Arc::default();
    let out = log.clone();
    let scenario = scenario_from_fn("splice-short", "summary = \"t\"\n", move |sim, _| {
        // The sink reads only after 30 ms: until then the send buffer is full.
        source_and_sink(sim, &out, 30);
        let log = out.clone();
        sim.client("proxy", async move {
            let sys = Sys::new();
            let (r, w) = sys.pipe().unwrap();
            let src = connected(&sys, "source", 80).await;
            let dst = connected(&sys, "sink", 81).await;
            wait_for(&sys, src, Events::IN).await;
            note(&log, format!("in {:?}", sys.splice(src, w, 100)));
            note(
                &log,
                format!(
                    "short {:?} held {:?} full {:?} held {:?}",
                    sys.splice(r, dst, 100),
                    sys.pipe_bytes(r),
                    sys.splice(r, dst, 100),
                    sys.pipe_bytes(r)
                ),
            );
            let mut moved = Vec::new();
            while sys.pipe_bytes(r) != Some(0) {
                wait_for(&sys, dst, Events::OUT).await;
                moved.push(sys.splice(r, dst, 100).unwrap());
            }
            note(&log, format!("then {moved:?}"));
            sys.shutdown(dst, Shutdown::Write).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(())
        });
        Ok(())
    });
    run(&scenario, "[[send_buffer]]\nhost = \"proxy\"\nbytes = 4\n");
    let log = log.lock().unwrap();
    assert_eq!(
        log[..2],
        [
            "in Ok(10)",
            "short Ok(4) held Some(6) full Err(EAGAIN) held Some(6)"
        ]
    );
    // The sink frees the buffer as it reads: each splice takes at most 4.
    let then = &log[2];
    let moved: Vec<usize> = then
        .trim_start_matches("then [")
        .trim_end_matches(']')
        .split(", ")
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(moved.iter().sum::<usize>(), 6, "{then}");
    assert!(moved.iter().all(|n| (1..=4).contains(n)), "{then}");
    assert_eq!(log[3], "sink got 0123456789");
}

#[test]
fn a_pipe_fills_one_buffer_per_segment_spliced_from_a_socket() {
    // A source that sends 17 segments of 100 bytes, then 9000 bytes in one:
    // a new pipe (16 buffers) takes 16 of the small ones (1600 bytes) and
    // is full; each buffer emptied takes one more segment; a segment longer
    // than a page takes a buffer per page.
    let log: Log = Arc::default();
    let out = log.clone();
    let scenario = scenario_from_fn("splice-segments", "summary = \"t\"\n", move |sim, _| {
        sim.host("source", || async {
            let listener = SimListener::bind(("0.0.0.0", 80)).await?;
            let (mut stream, _) = listener.accept().await?;
            for _ in 0..17 {
                stream.write_all(&[b's'; 100]).await?;
            }
            stream.write_all(&[b'l'; 9000]).await?;
            std::future::pending::<()>().await;
            Ok(())
        });
        sim.host("sink", || async {
            let listener = SimListener::bind(("0.0.0.0", 81)).await?;
            let (mut stream, _) = listener.accept().await?;
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await?;
            Ok(())
        });
        let log = out.clone();
        sim.client("proxy", async move {
            let sys = Sys::new();
            let (r, w) = sys.pipe().unwrap();
            let src = connected(&sys, "source", 80).await;
            let dst = connected(&sys, "sink", 81).await;
            // Everything has arrived by then (links of at most 100 ms).
            tokio::time::sleep(Duration::from_millis(500)).await;
            note(
                &log,
                format!(
                    "in {:?} held {:?} write end {:?} then {:?}",
                    sys.splice(src, w, 1 << 20),
                    sys.pipe_bytes(r),
                    sys.ready_now(w),
                    sys.splice(src, w, 1 << 20)
                ),
            );
            note(
                &log,
                format!(
                    "out {:?} write end {:?} in {:?} then {:?}",
                    sys.splice(r, dst, 150),
                    sys.ready_now(w),
                    sys.splice(src, w, 1 << 20),
                    sys.splice(src, w, 1 << 20)
                ),
            );
            // Emptied: 16 buffers, the large segment takes 3 of them.
            note(&log, format!("out {:?}", sys.splice(r, dst, 1 << 20)));
            note(
                &log,
                format!(
                    "in {:?} held {:?} again {:?}",
                    sys.splice(src, w, 1 << 20),
                    sys.pipe_bytes(r),
                    sys.splice(src, w, 1 << 20)
                ),
            );
            Ok(())
        });
        Ok(())
    });
    run(&scenario, "");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "in Ok(1600) held Some(1600) write end Ok(-) then Err(EAGAIN)",
            "out Ok(150) write end Ok(OUT) in Ok(100) then Err(EAGAIN)",
            "out Ok(1550)",
            "in Ok(9000) held Some(9000) again Err(EAGAIN)",
        ]
    );
}

#[test]
fn the_linux_2_6_35_personality_fails_every_splice_with_ebadf_and_moves_nothing() {
    let log: Log = Arc::default();
    let out = log.clone();
    let scenario = scenario_from_fn("splice-ebadf", "summary = \"t\"\n", move |sim, _| {
        source_and_sink(sim, &out, 0);
        let log = out.clone();
        sim.client("proxy", async move {
            let sys = Sys::new();
            let (r, w) = sys.pipe().unwrap();
            let src = connected(&sys, "source", 80).await;
            let dst = connected(&sys, "sink", 81).await;
            wait_for(&sys, src, Events::IN).await;
            let mut buf = [0u8; 16];
            note(
                &log,
                format!(
                    "{} {:?} {:?} {:?} held {:?} recv {:?}",
                    sys.personality().name(),
                    sys.splice(src, w, 100),
                    sys.splice(r, dst, 100),
                    // The fds are still checked first.
                    sys.splice(src, dst, 100),
                    sys.pipe_bytes(r),
                    sys.recv(src, &mut buf),
                ),
            );
            sys.shutdown(dst, Shutdown::Write).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(())
        });
        Ok(())
    });
    let outcome = run(
        &scenario,
        "[[errno]]\nhost = \"proxy\"\npersonality = \"linux-2.6.35\"\n",
    );
    assert_eq!(
        *log.lock().unwrap(),
        [
            "linux-2.6.35 Err(EBADF) Err(EBADF) Err(EINVAL) held Some(0) recv Ok(10)",
            "sink got ",
        ]
    );
    assert!(outcome.coverage.contains_key("errno:EBADF:splice"));
    assert!(Personality::ALL.contains(&Personality::Linux2635));
}

#[test]
fn pipes_need_two_free_fds_and_are_numbered_lowest_first() {
    let log: Log = Arc::default();
    let out = log.clone();
    let scenario = scenario_from_fn("pipe-fds", "summary = \"t\"\n", move |sim, _| {
        let log = out.clone();
        sim.client("proxy", async move {
            let sys = Sys::new();
            let a = sys.socket().unwrap();
            let (r, w) = sys.pipe().unwrap();
            sys.close(a).unwrap();
            let (r2, w2) = sys.pipe().unwrap();
            note(&log, format!("{r} {w} {r2} {w2}"));
            while sys.open_files() < faultline_harness::sys::DEFAULT_MAX_FDS - 1 {
                sys.socket().unwrap();
            }
            note(&log, format!("{:?} {}", sys.pipe(), sys.socket().is_ok()));
            Ok(())
        });
        Ok(())
    });
    run(&scenario, "");
    assert_eq!(*log.lock().unwrap(), ["4 5 3 6", "Err(EMFILE) true"]);
}

#[test]
fn the_pipe_fault_sets_capacity_per_host_and_the_first_matching_entry_wins() {
    let log: Log = Arc::default();
    let out = log.clone();
    let scenario = scenario_from_fn("pipe-capacity", "summary = \"t\"\n", move |sim, _| {
        for host in ["proxy", "other"] {
            let log = out.clone();
            sim.client(host, async move {
                let sys = Sys::new();
                note(&log, format!("{host} {}", sys.pipe_capacity_bytes()));
                Ok(())
            });
        }
        Ok(())
    });
    let capacities = |plan: &str| {
        log.lock().unwrap().clear();
        run(&scenario, plan);
        let mut got = log.lock().unwrap().clone();
        got.sort();
        got
    };
    assert_eq!(capacities(""), ["other 65536", "proxy 65536"]);
    // As F_SETPIPE_SZ: whole pages, a power of two of them.
    assert_eq!(
        capacities(
            "[[pipe]]\nhost = \"prox*\"\ncapacity_bytes = 9000\n[[pipe]]\nhost = \"*\"\ncapacity_bytes = 1048576\n"
        ),
        ["other 1048576", "proxy 16384"]
    );
    let plan: FaultPlan =
        toml::from_str("[[pipe]]\nhost = \"proxy\"\ncapacity_bytes = 4096\n").unwrap();
    assert_eq!(plan.summary(), "pipe proxy=4096B");
    assert_eq!(plan.len(), 1);
    assert_eq!(toml::from_str::<FaultPlan>(&plan.to_toml()).unwrap(), plan);
    // A glob that matches no host of the run is a mistake, not a no-op.
    let typo = faultline_harness::run(
        &scenario,
        0,
        &RunOptions::new(Variant::Fixed).faults(Faults::Plan {
            plan: Box::new(
                toml::from_str("[[pipe]]\nhost = \"proxx\"\ncapacity_bytes = 4096\n").unwrap(),
            ),
            source: None,
        }),
    );
    let message = typo.setup_error().expect("a setup error");
    assert!(
        message.contains("[[pipe]] `proxx` matches no host of this run"),
        "{message}"
    );
}

#[test]
fn bad_pipe_faults_name_the_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("faultline-pipe-plans-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let load = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        FaultPlan::load(&path).map(|_| ()).unwrap_err()
    };
    let head =
        "[[errno]]\nhost = \"proxy\"\npersonality = \"linux\"\n\n[[pipe]]\nhost = \"proxy\"\n";
    for (name, value, words) in [
        (
            "zero.toml",
            "0",
            &["capacity_bytes", "4096..=1048576", "not 0"][..],
        ),
        (
            "below-a-page.toml",
            "4095",
            &["capacity_bytes", "one page", "F_SETPIPE_SZ", "not 4095"][..],
        ),
        (
            "huge.toml",
            "1048577",
            &["capacity_bytes", "1 MiB", "not 1048577"],
        ),
        ("negative.toml", "-1", &["-1"]),
        ("text.toml", "\"big\"", &["invalid type"]),
    ] {
        let message = load(name, &format!("{head}capacity_bytes = {value}\n"));
        let prefix = format!("{}:7:", dir.join(name).display());
        assert!(message.starts_with(&prefix), "{message}");
        for word in words {
            assert!(message.contains(word), "{name}: {message}");
        }
    }
    let unknown = load("unknown.toml", &format!("{head}capacity = 5\n"));
    assert!(
        unknown.contains("unknown field") && unknown.contains("capacity"),
        "{unknown}"
    );
    let missing = load("missing.toml", head);
    assert!(missing.contains("capacity_bytes"), "{missing}");
    let personality = load(
        "personality.toml",
        "[[errno]]\nhost = \"proxy\"\npersonality = \"linux-2.6.36\"\n",
    );
    assert!(
        personality.contains(":3:") && personality.contains("`linux-2.6.35`"),
        "the known names are listed: {personality}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // A plan built in code is checked by `validate`.
    let plan = FaultPlan {
        pipe: vec![faultline_harness::faults::PipeCapacity {
            host: "proxy".into(),
            capacity_bytes: 0,
        }],
        ..FaultPlan::default()
    };
    let message = plan.validate().unwrap_err();
    assert!(
        message.starts_with("pipe.capacity_bytes must be within 4096..="),
        "{message}"
    );
}

#[test]
fn a_pipe_space_draws_capacities_in_its_range_and_bad_ranges_name_their_line() {
    let scenario = |faults: &str| {
        let mut registry = faultline_harness::Registry::new();
        registry.register(Arc::new(faultline_harness::FnWorkload::new(
            "w",
            |_: &mut faultline_harness::SimSetup<'_>, _: &faultline_harness::RunSpec<'_>| Ok(()),
        )));
        registry.load_str(
            "pipes",
            None,
            &format!("summary = \"t\"\nworkload = \"w\"\n\n{faults}"),
        )
    };
    let good =
        scenario("[faults.pipe]\nhosts = [\"proxy\"]\ncapacity_bytes = [4096, 65536]\n").unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..100 {
        let plan = good.spec.faults.draw(seed).current();
        assert_eq!(plan.len(), plan.pipe.len(), "only pipes: {plan:?}");
        for p in &plan.pipe {
            assert_eq!(p.host, "proxy");
            assert!((4096..=65536).contains(&p.capacity_bytes), "{p:?}");
            seen.insert(p.capacity_bytes);
        }
    }
    assert!(seen.len() > 10, "capacities vary with the seed: {seen:?}");
    assert_eq!(good.spec.faults.kinds(), ["pipe"]);
    for (range, words) in [
        (
            "[0, 8192]",
            &["faults.pipe.capacity_bytes", "4096..=1048576", "not 0"][..],
        ),
        // Below a page: F_SETPIPE_SZ cannot make such a pipe.
        (
            "[1024, 16384]",
            &["faults.pipe.capacity_bytes", "one page", "not 1024"][..],
        ),
        (
            "[4096, 2000000]",
            &["faults.pipe.capacity_bytes", "not 2000000"],
        ),
        (
            "[8192, 4096]",
            &["faults.pipe.capacity_bytes", "ends before it starts"],
        ),
    ] {
        let message = scenario(&format!(
            "[faults.pipe]\nhosts = [\"proxy\"]\ncapacity_bytes = {range}\n"
        ))
        .unwrap_err();
        assert!(message.starts_with("pipes.toml:6:1: "), "{message}");
        for word in words {
            assert!(message.contains(word), "{message}");
        }
    }
    let unknown =
        scenario("[faults.pipe]\nhosts = [\"proxy\"]\ncapacity_bytes = [4096, 8192]\nsize = 3\n")
            .unwrap_err();
    assert!(
        unknown.contains("unknown field") && unknown.contains("size"),
        "{unknown}"
    );
}

#[test]
fn adding_a_pipe_space_leaves_the_other_kinds_draws_and_swarms_unchanged() {
    let without: faultline_harness::faults::FaultSpace = toml::from_str(
        r#"
        [send_buffer]
        hosts = ["a", "b"]
        bytes = [1, 64]
        [errno]
        hosts = ["a"]
        personalities = ["linux", "illumos", "linux-2.6.35"]
        probability = 0.5
        [[race]]
        points = ["x.*"]
        "#,
    )
    .unwrap();
    let mut with = without.clone();
    with.pipe = Some(
        toml::from_str("hosts = [\"a\"]\ncapacity_bytes = [4096, 8192]\nprobability = 0.5\n")
            .unwrap(),
    );
    with.validate().unwrap();
    let mut pipes = 0;
    for seed in 0..100 {
        let mut plan = with.draw(seed).current();
        pipes += plan.pipe.len();
        plan.pipe.clear();
        assert_eq!(plan, without.draw(seed).current(), "seed {seed}");
        let mut swarm = with.swarm(seed);
        swarm.pipe = None;
        assert_eq!(swarm, without.swarm(seed), "seed {seed}");
    }
    assert!(
        (20..=80).contains(&pipes),
        "{pipes} of 100 plans have a pipe"
    );
}

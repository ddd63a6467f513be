//! The syscall view: fd numbers, connect in progress under each errno
//! personality, resets as ERR|HUP, level- and edge-triggered polling.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_harness::runner::{self, Faults, RunOptions};
use faultline_harness::sys::{EpollOp, Events, Shutdown, Sys};
use faultline_harness::{
    FaultPlan, Personality, Scenario, SimListener, Variant, Verdict, scenario_from_fn,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Log = Arc<Mutex<Vec<String>>>;

fn note(log: &Log, line: String) {
    log.lock().unwrap().push(line);
}

fn run(scenario: &Scenario, plan: &str) -> faultline_harness::Outcome {
    let plan: FaultPlan = toml::from_str(plan).expect("a valid plan");
    let outcome = runner::run(
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
    assert_eq!(Personality::ALL.len(), 3);
}

#[test]
fn a_refused_connect_reports_out_err_hup_and_so_error() {
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
            let fd = sys.socket().unwrap();
            let _ = sys.connect(fd, server_addr());
            let ep = sys.epoll_create().unwrap();
            sys.epoll_ctl(ep, EpollOp::Add, fd, Events::OUT, 0, false)
                .unwrap();
            let events = sys
                .epoll_wait(ep, 8, Some(Duration::from_secs(1)))
                .await
                .unwrap();
            note(
                &log,
                format!(
                    "{:?} {:?} {:?}",
                    events[0].events,
                    sys.take_error(fd),
                    sys.take_error(fd)
                ),
            );
            Ok(())
        });
        Ok(())
    });
    run(&scenario, "");
    assert_eq!(
        *log.lock().unwrap(),
        vec!["OUT|ERR|HUP Ok(Some(ECONNREFUSED)) Ok(None)"]
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
            while let Err(faultline_harness::Errno::EAGAIN) = sys.recv(fd, &mut buf) {}
            Ok(())
        });
        Ok(())
    });
    let outcome = runner::run(&scenario, 0, &RunOptions::new(Variant::Fixed));
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
    let outcome = runner::run(&scenario, 0, &RunOptions::new(Variant::Fixed));
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

//! Preemption at synchronization points, switches, scheduled faults,
//! shrinking, and determinism with every fault kind active.

use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_harness::sync::{Atomic, Condvar, Mutex as SimMutex};
use faultline_harness::sys::{EpollOp, Events, Sys};
use faultline_harness::{Faults, RunOptions, SweepOptions};
use faultline_harness::{
    FrameInfo, Framer, Scenario, SimListener, SimStream, Variant, Verdict, faults::FaultPlan,
    oracle, scenario_from_fn,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn with_plan(plan: &str) -> Faults {
    Faults::Plan {
        plan: Box::new(toml::from_str::<FaultPlan>(plan).expect("a valid plan")),
        source: None,
    }
}

/// The lost-wakeup toy. A worker looks for work under a lock, then waits on
/// a condition variable; a producer adds work every 3 ms under the lock
/// and notifies whoever waits. The buggy worker lets go of the lock after
/// finding nothing and takes it again to wait, without looking again: a
/// wake-up that lands in between finds no waiter and is lost until the
/// 2 s fallback. The fixed worker waits in the same section that looked.
/// Oracle: how late work is handled (`latency`).
fn lost_wakeup_toy(extra_toml: &str) -> Scenario {
    let toml = format!(
        "summary = \"lost wakeup toy\"\n{extra_toml}\n[[oracles.latency]]\nmetric = \"toy.wakeup\"\npercentile = 100.0\nmax_ms = 100\n"
    );
    scenario_from_fn("toy", &toml, |sim, run| {
        let buggy = run.variant == Variant::Buggy;
        sim.client("toy", async move {
            let work: Rc<(SimMutex<Option<Duration>>, Condvar)> =
                Rc::new((SimMutex::new("toy.work", None), Condvar::new("toy.work")));
            let shared = work.clone();
            let worker = tokio::task::spawn_local(async move {
                let (pending, cond) = &*shared;
                let fallback = Duration::from_secs(2);
                let mut queue = pending.lock().await;
                loop {
                    if let Some(since) = queue.take() {
                        oracle::record_latency("toy.wakeup", faultline_harness::now() - since);
                        continue;
                    }
                    if buggy {
                        // Decided to sleep; lets go and takes the lock again.
                        drop(queue);
                        queue = pending.lock().await;
                    }
                    queue = cond.wait_timeout(queue, fallback).await.0;
                }
            });
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(3)).await;
                {
                    let mut queue = work.0.lock().await;
                    if queue.is_none() {
                        *queue = Some(faultline_harness::now());
                    }
                }
                work.1.notify_all().await;
            }
            // Let the last wake-up be handled (or lost).
            tokio::time::sleep(Duration::from_millis(2500)).await;
            worker.abort();
            Ok(())
        });
        Ok(())
    })
}

fn failing_seeds(scenario: &Scenario, variant: Variant, faults: Faults, seeds: u64) -> Vec<u64> {
    let mut options = SweepOptions::new(RunOptions::new(variant).faults(faults));
    options.keep_going = true;
    options.jobs = 2;
    let seeds: Vec<u64> = (0..seeds).collect();
    let report = faultline_harness::sweep(scenario, &seeds, &options);
    for f in &report.failures {
        assert_eq!(f.verdict.oracle(), Some("latency"), "{}", f.report());
    }
    report.failures.iter().map(|o| o.seed).collect()
}

const RANDOM_RACE: &str = "[[race]]\nstrategy = \"random\"\npoint = \"toy.*\"\nprobability = 0.3\nmax_yields = 2\nmax_sleep_us = 3000\n";

#[test]
fn preemption_exposes_the_lost_wakeup_on_some_seeds_and_never_without_it() {
    let toy = lost_wakeup_toy("");
    let exposed = failing_seeds(&toy, Variant::Buggy, with_plan(RANDOM_RACE), 30);
    assert!(!exposed.is_empty(), "no seed exposed the lost wake-up");
    assert!(
        exposed.len() < 30,
        "every seed failed: the window should need the right interleaving"
    );
    assert!(
        failing_seeds(&toy, Variant::Buggy, Faults::Off, 30).is_empty(),
        "without preemption no wake-up is lost"
    );
    assert!(
        failing_seeds(&toy, Variant::Fixed, with_plan(RANDOM_RACE), 30).is_empty(),
        "the fix never loses one"
    );
    // The failure is a 2 s wait, in simulated time, and replays identically.
    let seed = exposed[0];
    let options = RunOptions::new(Variant::Buggy).faults(with_plan(RANDOM_RACE));
    let a = faultline_harness::run(&toy, seed, &options);
    let b = faultline_harness::run(&toy, seed, &options);
    assert_eq!(a.trace.hash, b.trace.hash);
    let Verdict::Fail { message, .. } = &a.verdict else {
        unreachable!()
    };
    assert!(message.contains("toy.wakeup p100"), "{message}");
    assert!(
        a.latencies["toy.wakeup"].max_us >= 1_900_000,
        "{:?}",
        a.latencies
    );
}

#[test]
fn strategies_decide_where_tasks_yield() {
    let toy = lost_wakeup_toy("");
    let yields = |plan: &str| {
        let outcome = faultline_harness::run(
            &toy,
            1,
            &RunOptions::new(Variant::Fixed).faults(with_plan(plan)),
        );
        assert!(outcome.verdict.is_pass(), "{}", outcome.report());
        let count = |key: &str| outcome.coverage.get(key).copied().unwrap_or(0);
        (
            count("race:toy.work.lock"),
            count("race-yield:toy.work.lock")
                + count("race-yield:toy.work.wait")
                + count("race-yield:toy.work.notify_all"),
        )
    };
    let (hits, none) =
        yields("[[race]]\nstrategy = \"random\"\npoint = \"toy.*\"\nprobability = 0.0\n");
    assert!(hits >= 100, "the lock is taken at every wake-up ({hits})");
    assert_eq!(none, 0);
    let (_, targeted) = yields(
        "[[race]]\nstrategy = \"targeted\"\npoint = \"toy.work.lock\"\nnth = 5\nyields = 3\n",
    );
    assert_eq!(targeted, 1, "the 5th hit of the point, once");
    let (_, random) =
        yields("[[race]]\nstrategy = \"random\"\npoint = \"toy.*\"\nprobability = 0.5\n");
    assert!(random > 50, "about half of the hits ({random})");
    let (_, other) =
        yields("[[race]]\nstrategy = \"targeted\"\npoint = \"other.*\"\nnth = 1\nyields = 1\n");
    assert_eq!(other, 0, "a strategy acts only on the points it names");
}

#[test]
fn a_shrink_reduces_a_plan_of_many_faults_to_the_one_that_matters() {
    // Many fault kinds allowed, most of them irrelevant to the toy.
    let space = r#"
[faults.send_buffer]
hosts = ["toy"]
bytes = [1, 64]
[faults.segmentation]
from = ["*"]
to = ["*"]
max_segment_bytes = [1, 10]
[faults.latency]
pairs = [["toy", "toy"]]
at_ms = [0, 100]
max_ms = [1, 5]
[[faults.switch]]
name = "irrelevant"
[faults.errno]
hosts = ["toy"]
personalities = ["illumos", "openbsd"]
[[faults.race]]
points = ["toy.*"]
strategies = ["random"]
yield_probability = [0.3, 0.3]
yields = [1, 2]
sleep_us = [3000, 3000]
"#;
    let toy = lost_wakeup_toy(space);
    let seed = (0..60)
        .find(|seed| {
            let outcome = faultline_harness::run(&toy, *seed, &RunOptions::new(Variant::Buggy));
            outcome.plan.len() >= 4 && !outcome.verdict.is_pass()
        })
        .expect("some seed draws many faults and fails");
    let report = faultline_harness::shrink(&toy, seed, &RunOptions::new(Variant::Buggy), 200)
        .expect("the seed fails");
    assert!(report.before.len() >= 4, "{}", report.before.summary());
    assert_eq!(report.after.len(), 1, "{}", report.after.summary());
    assert_eq!(
        report.after.race.len(),
        1,
        "the race fault is the one that matters"
    );
    assert_eq!(
        report.summary_line(),
        format!("shrink: {} faults -> 1 faults", report.before.len())
    );
    // The shrunk plan, run alone, fails the same way.
    let again = faultline_harness::run(
        &toy,
        seed,
        &RunOptions::new(Variant::Buggy).faults(Faults::Plan {
            plan: Box::new(report.after.clone()),
            source: None,
        }),
    );
    assert_eq!(again.verdict.oracle(), Some("latency"));
}

#[test]
fn switches_answer_by_name_host_rate_and_nth() {
    let answers: Arc<Mutex<Vec<bool>>> = Arc::default();
    let out = answers.clone();
    let scenario = scenario_from_fn("switches", "summary = \"t\"\n", move |sim, _| {
        let out = out.clone();
        sim.client("kv-1", async move {
            for _ in 0..6 {
                out.lock()
                    .unwrap()
                    .push(faultline_harness::switch("kv.skip_response"));
            }
            out.lock()
                .unwrap()
                .push(faultline_harness::switch("kv.other"));
            Ok(())
        });
        sim.client("proxy", async { Ok(()) });
        Ok(())
    });
    let asked = |plan: &str| {
        answers.lock().unwrap().clear();
        faultline_harness::run(
            &scenario,
            0,
            &RunOptions::new(Variant::Fixed).faults(with_plan(plan)),
        );
        answers.lock().unwrap().clone()
    };
    assert_eq!(asked(""), vec![false; 7]);
    assert_eq!(
        asked("[[switch]]\nname = \"kv.skip_response\"\nhost = \"kv-*\"\nnth = 3\n"),
        vec![false, false, true, false, false, false, false]
    );
    assert_eq!(
        asked("[[switch]]\nname = \"kv.skip_response\"\nhost = \"proxy\"\n"),
        vec![false; 7],
        "a switch answers only on its hosts"
    );
    // A host that is not in the run is a mistake, not a silent no-op.
    let typo = faultline_harness::run(
        &scenario,
        0,
        &RunOptions::new(Variant::Fixed).faults(with_plan(
            "[[switch]]\nname = \"kv.skip_response\"\nhost = \"kv-9\"\n",
        )),
    );
    let message = typo.setup_error().expect("a setup error");
    assert!(
        message.contains("[[switch]] `kv-9` matches no host of this run (hosts: kv-1, proxy)"),
        "{message}"
    );
    let all = asked("[[switch]]\nname = \"kv.skip_response\"\n");
    assert_eq!(all, vec![true, true, true, true, true, true, false]);
}

#[test]
fn crashes_restarts_partitions_and_latency_changes_happen_at_their_times() {
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let out = log.clone();
    let scenario = scenario_from_fn(
        "scheduled",
        "summary = \"t\"\n[sim]\nmax_latency_ms = 1\n",
        move |sim, _| {
            let starts = out.clone();
            sim.host("server", move || {
                let starts = starts.clone();
                async move {
                    starts.lock().unwrap().push(format!(
                        "server starts at {} ms",
                        faultline_harness::now().as_millis()
                    ));
                    let listener = SimListener::bind(("0.0.0.0", 80)).await?;
                    loop {
                        let (mut stream, _) = listener.accept().await?;
                        tokio::task::spawn_local(async move {
                            let mut b = [0u8; 1];
                            while stream.read_exact(&mut b).await.is_ok()
                                && stream.write_all(&b).await.is_ok()
                            {}
                        });
                    }
                }
            });
            let log = out.clone();
            sim.client("client", async move {
                for _ in 0..12 {
                    let started = faultline_harness::now();
                    let result = tokio::time::timeout(Duration::from_millis(40), async {
                        let mut s = SimStream::connect(("server", 80)).await?;
                        s.write_all(b"x").await?;
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b).await?;
                        Ok::<_, std::io::Error>(())
                    })
                    .await;
                    let what = match result {
                        Ok(Ok(())) => "ok",
                        Ok(Err(_)) => "error",
                        Err(_) => "timeout",
                    };
                    log.lock()
                        .unwrap()
                        .push(format!("{} ms: {what}", started.as_millis() / 50 * 50));
                    tokio::time::sleep_until(
                        tokio::time::Instant::now() + Duration::from_millis(50)
                            - (faultline_harness::now() - started),
                    )
                    .await;
                }
                Ok(())
            });
            Ok(())
        },
    );
    let plan = "[[crash]]\nhost = \"server\"\nat_ms = 120\nrestart_ms = 220\n\
                [[partition]]\na = \"client\"\nb = \"server\"\nat_ms = 320\nheal_ms = 420\n\
                [[latency]]\na = \"client\"\nb = \"server\"\nat_ms = 470\nmax_ms = 30\n";
    let outcome = faultline_harness::run(
        &scenario,
        0,
        &RunOptions::new(Variant::Fixed).faults(with_plan(plan)),
    );
    assert!(outcome.verdict.is_pass(), "{}", outcome.report());
    let log = log.lock().unwrap().clone();
    assert_eq!(log[0], "server starts at 0 ms");
    assert!(
        log.contains(&"server starts at 220 ms".to_string()),
        "{log:?}"
    );
    let at = |ms: u32| {
        log.iter()
            .find(|l| l.starts_with(&format!("{ms} ms:")))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(at(100), "100 ms: ok");
    // A crashed host is a dead machine: nothing answers, not even a reset.
    assert_eq!(
        at(150),
        "150 ms: timeout",
        "the crashed server does not answer"
    );
    assert_eq!(at(250), "250 ms: ok", "the restarted server answers");
    // turmoil drops the SYN of a partitioned link, which fails the connect
    // at once (its SYN-ACK channel closes).
    assert_eq!(at(350), "350 ms: error", "the partition drops messages");
    assert_eq!(at(450), "450 ms: ok", "the partition healed");
    for key in [
        "scheduled:crash",
        "scheduled:restart",
        "scheduled:partition",
        "scheduled:repair",
        "scheduled:latency",
    ] {
        assert!(
            outcome.coverage.contains_key(key),
            "{key} not covered: {:?}",
            outcome.coverage
        );
    }
}

/// A framer for the every-fault scenario: a 1-byte kind and a 1-byte length.
struct TinyFrames;
impl Framer for TinyFrames {
    fn header_len(&self) -> usize {
        2
    }
    fn parse(&self, header: &[u8]) -> Option<FrameInfo> {
        let label = match header[0] {
            b'Q' => "req",
            b'R' => "res",
            _ => return None,
        };
        Some(FrameInfo {
            total_len: 2 + header[1] as usize,
            label: label.into(),
        })
    }
}

/// Every fault kind has something to act on: framed request/response
/// traffic over SimStream, an event loop over the syscall view (receiving
/// with recv() or splice() into small pipes), locks and
/// atomics to preempt at, a switch, and hosts to crash, partition and slow
/// down.
fn every_fault() -> Scenario {
    let space = r#"
summary = "every fault kind at once"
[sim]
max_latency_ms = 3
duration_ms = 5000
[faults.send_buffer]
hosts = ["server", "client-*", "looper"]
bytes = [1, 32]
[faults.segmentation]
from = ["*"]
to = ["*"]
max_segment_bytes = [1, 8]
[[faults.frame_delay]]
from = "server"
to = "client-*"
frame = "res"
delay_ms = [1, 20]
[[faults.frame_delay]]
from = "client-*"
to = "server"
frame = "req"
nth = [1, 5]
hold_until = "frame:server->client-*:res"
max_hold_ms = 30
[faults.errno]
hosts = ["looper"]
personalities = ["linux", "illumos", "openbsd"]
[[faults.race]]
points = ["*"]
[faults.partition]
pairs = [["client-1", "server"]]
at_ms = [50, 200]
duration_ms = [10, 50]
[faults.latency]
pairs = [["client-0", "server"]]
at_ms = [0, 300]
max_ms = [1, 10]
[faults.crash]
hosts = ["bystander"]
at_ms = [10, 300]
down_ms = [10, 100]
[[faults.switch]]
name = "server.slow"
rate = [0.1, 0.5]
[faults.pipe]
hosts = ["looper"]
capacity_bytes = [4096, 8192]
"#;
    scenario_from_fn("every-fault", space, |sim, _| {
        sim.set_framer(Rc::new(TinyFrames));
        sim.host("server", || async {
            let listener = SimListener::bind(("0.0.0.0", 80)).await?;
            let replies = Rc::new(SimMutex::new("server.replies", 0u64));
            loop {
                let (mut stream, _) = listener.accept().await?;
                let replies = replies.clone();
                tokio::task::spawn_local(async move {
                    let mut head = [0u8; 2];
                    while stream.read_exact(&mut head).await.is_ok() {
                        let mut body = vec![0u8; head[1] as usize];
                        if stream.read_exact(&mut body).await.is_err() {
                            break;
                        }
                        *replies.lock().await += 1;
                        if faultline_harness::switch("server.slow") {
                            tokio::time::sleep(Duration::from_millis(3)).await;
                        }
                        let mut reply = vec![b'R', head[1]];
                        reply.extend(body.iter().rev());
                        if stream.write_all(&reply).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        sim.host("bystander", || async {
            loop {
                tokio::time::sleep(Duration::from_millis(7)).await;
                tracing::debug!("bystander tick");
            }
        });
        sim.host("looper", || async {
            // An event loop over the syscall view: connect, send, poll, receive.
            let sys = Sys::new();
            let received = Atomic::new("looper.received", 0usize);
            let ep = sys.epoll_create().map_err(|e| e.to_string())?;
            for round in 0..20u8 {
                let fd = sys.socket().map_err(|e| e.to_string())?;
                let addr = std::net::SocketAddr::new(turmoil::lookup("server"), 80);
                let _ = sys.connect(fd, addr);
                let mut buf = [0u8; 8];
                let early = sys.recv(fd, &mut buf);
                tracing::debug!(round, ?early, "early recv");
                sys.epoll_ctl(
                    ep,
                    EpollOp::Add,
                    fd,
                    Events::OUT | Events::IN,
                    round as u64,
                    false,
                )
                .map_err(|e| e.to_string())?;
                let mut sent = false;
                let mut got_bytes = 0;
                let mut pipe = if round % 2 == 1 {
                    Some(sys.pipe().map_err(|e| e.to_string())?)
                } else {
                    None
                };
                while got_bytes < 5 {
                    let events = sys
                        .epoll_wait(ep, 4, Some(Duration::from_millis(200)))
                        .await
                        .map_err(|e| e.to_string())?;
                    if events.is_empty() {
                        break;
                    }
                    if !sent && events[0].events.contains(Events::OUT) {
                        sent = sys.send(fd, b"Q\x03abc").is_ok();
                        if sent {
                            // Nothing more to send: stop asking for OUT.
                            sys.epoll_ctl(ep, EpollOp::Mod, fd, Events::IN, round as u64, false)
                                .map_err(|e| e.to_string())?;
                        }
                    }
                    // Odd rounds take the reply with splice() into a small
                    // pipe, a new one each time it is full.
                    let taken = match pipe {
                        Some((_, write)) => sys.splice(fd, write, 8),
                        None => sys.recv(fd, &mut buf),
                    };
                    match taken {
                        Ok(0) => break,
                        Ok(n) => {
                            got_bytes += n;
                            received.fetch_add(n).await;
                        }
                        Err(_) => {
                            if let Some((read, write)) = pipe {
                                // Full: no free buffer, the write end not writable.
                                let full =
                                    sys.ready_now(write).is_ok_and(|e| !e.contains(Events::OUT));
                                if full {
                                    sys.close(read).map_err(|e| e.to_string())?;
                                    sys.close(write).map_err(|e| e.to_string())?;
                                    pipe = Some(sys.pipe().map_err(|e| e.to_string())?);
                                }
                            }
                        }
                    }
                }
                tracing::debug!(round, got = got_bytes, "round done");
                if let Some((read, write)) = pipe {
                    sys.close(read).map_err(|e| e.to_string())?;
                    sys.close(write).map_err(|e| e.to_string())?;
                }
                sys.close(fd).map_err(|e| e.to_string())?;
            }
            std::future::pending::<()>().await;
            Ok(())
        });
        for c in 0..2 {
            sim.client(&format!("client-{c}"), async move {
                let rounds = Atomic::new("client.rounds", 0u8);
                for round in 0..15u8 {
                    let outcome = tokio::time::timeout(Duration::from_millis(300), async {
                        let mut s = SimStream::connect(("server", 80)).await?;
                        for i in 0..3u8 {
                            s.write_all(&[b'Q', 4, round, i, c, 9]).await?;
                            let mut reply = [0u8; 6];
                            s.read_exact(&mut reply).await?;
                            if reply[2..] != [9, c, i, round] {
                                oracle::fail("reply-check", format!("client-{c} got {reply:?}"));
                            }
                        }
                        Ok::<_, std::io::Error>(())
                    })
                    .await;
                    tracing::debug!(
                        client = c,
                        round,
                        ok = matches!(outcome, Ok(Ok(()))),
                        "round"
                    );
                    rounds.fetch_add(1).await;
                }
                Ok(())
            });
        }
        Ok(())
    })
}

#[test]
fn determinism_holds_with_every_fault_kind_active() {
    let scenario = every_fault();
    let seeds: Vec<u64> = (0..100).collect();
    let report = faultline_harness::check_determinism(
        &scenario,
        &seeds,
        &RunOptions::new(Variant::Fixed),
        2,
        None,
    );
    assert!(
        report.mismatches.is_empty(),
        "{:?}",
        report.mismatches.first()
    );
    // And the faults really were active across those seeds.
    let mut options = SweepOptions::new(RunOptions::new(Variant::Fixed));
    options.keep_going = true;
    let sweep = faultline_harness::sweep(&scenario, &seeds, &options);
    for f in &sweep.failures {
        assert_ne!(f.verdict.oracle(), Some("host-crash"), "{}", f.report());
        assert_ne!(f.verdict.oracle(), Some("reply-check"), "{}", f.report());
    }
    for point in [
        "send_buffer:short_write",
        "segmentation:split",
        "frame_delay:delayed",
        "frame_delay:held",
        "sys:recv-during-connect",
        "scheduled:crash",
        "scheduled:restart",
        "scheduled:partition",
        "scheduled:latency",
        "switch:server.slow",
        "pipe:full",
        "race-yield:server.replies.lock",
        "race-yield:looper.received.add",
    ] {
        assert!(
            sweep.coverage.get(point).copied().unwrap_or(0) > 0,
            "{point} never reached: {:?}",
            sweep.coverage
        );
    }
    let kinds: std::collections::BTreeSet<String> = seeds
        .iter()
        .flat_map(|s| {
            scenario
                .spec
                .faults
                .draw(*s)
                .current()
                .to_toml()
                .lines()
                .filter(|l| l.starts_with("[["))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        kinds.len(),
        10,
        "every fault kind is drawn by some seed: {kinds:?}"
    );
}

#[test]
fn swarm_spaces_switch_random_subsets_of_kinds_on_deterministically() {
    let space: faultline_harness::faults::FaultSpace = toml::from_str(
        r#"
        [send_buffer]
        hosts = ["a"]
        bytes = [1, 8]
        [segmentation]
        from = ["a"]
        to = ["b"]
        max_segment_bytes = [1, 4]
        [errno]
        hosts = ["a"]
        personalities = ["illumos"]
        [[race]]
        points = ["x.*"]
        [[switch]]
        name = "s"
        "#,
    )
    .expect("a valid space");
    let kinds = |seed: u64| space.swarm(seed).kinds();
    assert_eq!(kinds(7), kinds(7), "a seed always draws the same swarm");
    let mut counts = std::collections::BTreeMap::new();
    let mut subsets = std::collections::BTreeSet::new();
    for seed in 0..400 {
        let swarm = space.swarm(seed);
        swarm.validate().expect("a swarm is a valid space");
        for kind in swarm.kinds() {
            *counts.entry(kind).or_insert(0) += 1;
        }
        subsets.insert(swarm.kinds());
    }
    for kind in space.kinds() {
        let n = counts.get(kind).copied().unwrap_or(0);
        assert!((120..=280).contains(&n), "{kind} kept in {n} of 400 swarms");
    }
    assert!(
        subsets.len() >= 24,
        "only {} different subsets of 5 kinds",
        subsets.len()
    );
    assert!(
        faultline_harness::faults::FaultSpace::default()
            .swarm(1)
            .is_empty()
    );
}

#[test]
fn a_holding_partition_delays_a_connection_and_a_dropping_one_loses_it() {
    // One connection, a byte every 20 ms; the partition lasts 100..200 ms.
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let out = log.clone();
    let scenario = scenario_from_fn(
        "partition-modes",
        "summary = \"t\"\n[sim]\nmax_latency_ms = 1\n",
        move |sim, _| {
            let got = out.clone();
            sim.host("server", move || {
                let got = got.clone();
                async move {
                    let listener = SimListener::bind(("0.0.0.0", 80)).await?;
                    let (mut stream, _) = listener.accept().await?;
                    let mut b = [0u8; 1];
                    while stream.read_exact(&mut b).await.is_ok() {
                        got.lock().unwrap().push(format!(
                            "byte {} at {} ms",
                            b[0],
                            faultline_harness::now().as_millis()
                        ));
                    }
                    Ok(())
                }
            });
            sim.client("client", async {
                let mut s = SimStream::connect(("server", 80)).await?;
                for i in 0..15u8 {
                    s.write_all(&[i]).await?;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(())
            });
            Ok(())
        },
    );
    let run = |mode: &str| {
        log.lock().unwrap().clear();
        let plan = format!(
            "[[partition]]\na = \"client\"\nb = \"server\"\nat_ms = 100\nheal_ms = 200\nmode = \"{mode}\"\n"
        );
        let outcome = faultline_harness::run(
            &scenario,
            0,
            &RunOptions::new(Variant::Fixed).faults(with_plan(&plan)),
        );
        assert!(outcome.verdict.is_pass(), "{}", outcome.report());
        log.lock().unwrap().clone()
    };
    let held = run("hold");
    assert_eq!(held.len(), 15, "nothing is lost: {held:?}");
    // The bytes sent during the partition arrive when it heals, in order.
    assert!(held.contains(&"byte 5 at 200 ms".to_string()), "{held:?}");
    let dropped = run("drop");
    assert!(
        dropped.len() < 15,
        "bytes sent into the partition are lost: {dropped:?}"
    );
}

#[test]
fn a_task_waking_from_a_pause_goes_behind_what_became_ready_meanwhile() {
    // A pauses 1.5 ms at its first lock; B sleeps 2 ms. Both wake in the
    // same simulated tick, A's deadline first; A still finds B's work done.
    let order: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let out = order.clone();
    let scenario = scenario_from_fn("race-pause", "summary = \"t\"\n", move |sim, _| {
        let order = out.clone();
        sim.client("host", async move {
            let lock = Rc::new(SimMutex::new("toy.pause", ()));
            let a = {
                let (order, lock) = (order.clone(), lock.clone());
                tokio::task::spawn_local(async move {
                    let _held = lock.lock().await;
                    order.lock().unwrap().push("A");
                })
            };
            let b = {
                let order = order.clone();
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    order.lock().unwrap().push("B");
                })
            };
            a.await?;
            b.await?;
            Ok(())
        });
        Ok(())
    });
    let plan =
        "[[race]]\nstrategy = \"targeted\"\npoint = \"toy.pause.lock\"\nnth = 1\nsleep_us = 1500\n";
    let outcome = faultline_harness::run(
        &scenario,
        0,
        &RunOptions::new(Variant::Fixed).faults(with_plan(plan)),
    );
    assert!(outcome.verdict.is_pass(), "{}", outcome.report());
    assert_eq!(*order.lock().unwrap(), ["B", "A"]);
}

/// A server on `srv` and a client that connects once, 10 ms after the
/// server's crash at 5 ms; the client's oracle `connect` says how the
/// connect ended.
fn crash_then_connect() -> Scenario {
    scenario_from_fn("crash-connect", "summary = \"t\"\n", |sim, _| {
        sim.host("srv", || async {
            let listener = SimListener::bind(("0.0.0.0", 7)).await?;
            loop {
                let _ = listener.accept().await?;
            }
        });
        sim.client("cli", async {
            tokio::time::sleep(Duration::from_millis(15)).await;
            let attempt =
                tokio::time::timeout(Duration::from_millis(500), SimStream::connect(("srv", 7)))
                    .await;
            match attempt {
                Ok(Ok(_)) => oracle::fail("connect", "accepted"),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    oracle::fail("connect", "refused")
                }
                Ok(Err(e)) => oracle::fail("connect", format!("error {e}")),
                Err(_) => oracle::fail("connect", "timed out"),
            }
            Ok(())
        });
        Ok(())
    })
}

fn connect_result(plan: &str) -> String {
    let options = RunOptions::new(Variant::Fixed).faults(with_plan(plan));
    match faultline_harness::run(&crash_then_connect(), 0, &options).verdict {
        Verdict::Fail { message, .. } => message,
        Verdict::Setup(error) => panic!("cannot run: {error}"),
        Verdict::Pass => "no verdict".into(),
    }
}

#[test]
fn a_machine_crash_loses_connects_and_a_process_crash_refuses_them() {
    assert_eq!(
        connect_result("[[crash]]\nhost = \"srv\"\nat_ms = 5\n"),
        "timed out"
    );
    assert_eq!(
        connect_result("[[crash]]\nhost = \"srv\"\nat_ms = 5\nmode = \"process\"\n"),
        "refused"
    );
    // A process restarted before the connect listens again.
    assert_eq!(
        connect_result(
            "[[crash]]\nhost = \"srv\"\nat_ms = 5\nrestart_ms = 8\nmode = \"process\"\n"
        ),
        "accepted"
    );
}

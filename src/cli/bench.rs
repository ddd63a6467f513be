//! `faultline bench`: how fast simulations run and what the harness costs,
//! measured side by side in one run (never as a timed test).
//!
//! * overhead: the echo traffic on bare turmoil and through the harness
//!   (its streams, trace and oracles), seeds interleaved, as a ratio;
//! * jobs speed-up: seeds per second of a sweep with 2 jobs over 1 job;
//! * simulation speed: simulated seconds per wall second of each scenario
//!   (the headline figure is `whole-system`'s, or the slowest scenario's
//!   when there is none), and the wall time per host-tick (the steps of
//!   its runs times their hosts and clients: what a host costs per
//!   simulated tick);
//! * memory: peak resident memory of one simulation and of a sweep, in
//!   child processes of this binary.
//!
//! The last line is `bench: overhead=R.RRx jobs_speedup=R.RRx sim_speed=R.Rx`.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use faultline::bench::{EchoLoad, bare_echo};
use faultline_harness::{Faults, RunOptions, SweepOptions};
use faultline_harness::{Registry, Scenario, Variant};

use super::{Error, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Fewer seeds: under a minute on 2 cores.
    #[arg(long)]
    quick: bool,
}

/// How many seeds each measurement uses.
struct Budget {
    overhead_seeds: u64,
    jobs_seeds: u64,
    speed_seeds: u64,
}

pub fn bench(
    app: &faultline_harness::cli::App,
    dir: Option<&std::path::Path>,
    args: BenchArgs,
) -> Result<ExitCode> {
    let scenarios = app.load_all(dir)?;
    let registry = app.registry();
    let budget = if args.quick {
        Budget {
            overhead_seeds: 12,
            jobs_seeds: 120,
            speed_seeds: 4,
        }
    } else {
        Budget {
            overhead_seeds: 60,
            jobs_seeds: 600,
            speed_seeds: 20,
        }
    };
    println!(
        "machine: {} cores; build: {}",
        faultline_harness::default_jobs(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let overhead = measure_overhead(registry, budget.overhead_seeds)?;
    let jobs_speedup = measure_jobs(&scenarios, budget.jobs_seeds)?;
    let sim_speed = measure_speed(&scenarios, budget.speed_seeds);
    measure_memory(&scenarios);
    measure_linearizability();
    println!(
        "bench: overhead={overhead:.2}x jobs_speedup={jobs_speedup:.2}x sim_speed={sim_speed:.1}x"
    );
    Ok(ExitCode::SUCCESS)
}

/// The linearizability checker on a 10,000-operation memcached history of
/// 8 clients on 100 keys (linearizable: the whole search runs).
fn measure_linearizability() {
    const OPS: u64 = 10_000;
    const CLIENTS: u64 = 8;
    const KEYS: u64 = 100;
    let history = faultline::protocol::model::sequential_history(1, CLIENTS, KEYS, OPS);
    let start = Instant::now();
    let outcome = faultline_harness::linearizability::check(
        &faultline::protocol::model::Memcached,
        &history,
        &faultline_harness::linearizability::CheckOptions::default(),
    );
    let elapsed = start.elapsed();
    assert!(outcome.is_linearizable(), "{}", outcome.summary());
    println!(
        "linearizability: {OPS} ops, {} keys, {:.1} ms ({CLIENTS} clients, {} search steps)",
        outcome.stats.partitions,
        elapsed.as_secs_f64() * 1e3,
        outcome.stats.steps
    );
}

/// Harness wall time over bare turmoil wall time for the same echo load.
fn measure_overhead(registry: &Registry, seeds: u64) -> Result<f64> {
    let load = EchoLoad {
        clients: 4,
        messages: 300,
        max_message_bytes: 512,
    };
    let scenario = registry.load_str("echo-bench", None, &load.scenario_toml())?;
    let options = RunOptions::new(Variant::Fixed).faults(Faults::Off);
    let (mut bare, mut harness) = (Duration::ZERO, Duration::ZERO);
    let (mut bare_sim, mut harness_sim) = (Duration::ZERO, Duration::ZERO);
    // Interleaved, so that both sides see the same machine.
    for seed in 0..seeds {
        let start = Instant::now();
        bare_sim += bare_echo(seed, load).map_err(Error::Usage)?;
        bare += start.elapsed();
        let outcome = faultline_harness::run(&scenario, seed, &options);
        if !outcome.verdict.is_pass() {
            return Err(Error::Usage(format!(
                "the echo benchmark failed: {}",
                outcome.verdict_line()
            )));
        }
        harness += outcome.wall_time;
        harness_sim += outcome.sim_time;
    }
    let ratio = harness.as_secs_f64() / bare.as_secs_f64().max(1e-9);
    println!(
        "overhead: echo, {} clients x {} messages, {seeds} seeds",
        load.clients, load.messages
    );
    println!(
        "    bare turmoil {:>8.1} ms/seed  ({:.0} ms simulated)",
        bare.as_secs_f64() * 1e3 / seeds as f64,
        bare_sim.as_secs_f64() * 1e3 / seeds as f64
    );
    println!(
        "    harness      {:>8.1} ms/seed  ({:.0} ms simulated)",
        harness.as_secs_f64() * 1e3 / seeds as f64,
        harness_sim.as_secs_f64() * 1e3 / seeds as f64
    );
    println!("    ratio        {ratio:>8.2}x");
    Ok(ratio)
}

/// Seeds per second with 2 jobs over 1 job, same seeds, in interleaved
/// rounds (so that both see the same machine), on a scenario whose seeds
/// all cost about the same (MB-24634's: runs of tens of ms; tiny runs would
/// measure thread start-up, very uneven ones the last straggler).
fn measure_jobs(scenarios: &[Scenario], seeds: u64) -> Result<f64> {
    let scenario = scenarios
        .iter()
        .find(|s| s.name == "MB-24634-write-buffer-reuse")
        .or_else(|| scenarios.iter().find(|s| s.name == "echo-partial-write"))
        .or_else(|| scenarios.first())
        .ok_or_else(|| Error::Usage("no scenario to sweep".into()))?;
    const ROUNDS: u64 = 3;
    let per_round = (seeds / ROUNDS).max(1);
    let (mut one, mut two) = (Duration::ZERO, Duration::ZERO);
    let sweep = |jobs: usize, seeds: &[u64]| {
        let mut options = SweepOptions::new(RunOptions::new(Variant::Fixed));
        options.jobs = jobs;
        options.keep_going = true;
        faultline_harness::sweep(scenario, seeds, &options).wall_time
    };
    for round in 0..ROUNDS {
        let seeds: Vec<u64> = (round * per_round..(round + 1) * per_round).collect();
        one += sweep(1, &seeds);
        two += sweep(2, &seeds);
    }
    let total = (per_round * ROUNDS) as f64;
    let (rate1, rate2) = (
        total / one.as_secs_f64().max(1e-9),
        total / two.as_secs_f64().max(1e-9),
    );
    println!(
        "sweep throughput: {} fixed, {} seeds in {ROUNDS} interleaved rounds",
        scenario.name, total
    );
    println!("    --jobs 1  {rate1:>8.1} seeds/s");
    println!("    --jobs 2  {rate2:>8.1} seeds/s");
    println!("    speed-up  {:>8.2}x", rate2 / rate1);
    Ok(rate2 / rate1)
}

/// Simulated over wall time per scenario (fixed variant, faults drawn).
fn measure_speed(scenarios: &[Scenario], seeds: u64) -> f64 {
    println!("simulation speed (fixed variant, faults on, {seeds} seeds each):");
    let width = scenarios
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0)
        .max("scenario".len());
    println!(
        "    {:<width$} {:>10} {:>10} {:>10} {:>14}",
        "scenario", "sim s", "wall s", "sim/wall", "µs/host-tick"
    );
    let mut headline: Option<(bool, f64)> = None;
    for scenario in scenarios {
        let (mut sim, mut wall, mut host_ticks) = (Duration::ZERO, Duration::ZERO, 0);
        for seed in 0..seeds {
            let outcome = faultline_harness::run(scenario, seed, &RunOptions::new(Variant::Fixed));
            sim += outcome.sim_time;
            wall += outcome.wall_time;
            host_ticks += outcome.host_ticks;
        }
        let speed = sim.as_secs_f64() / wall.as_secs_f64().max(1e-9);
        let us_per_host_tick = wall.as_secs_f64() * 1e6 / (host_ticks.max(1) as f64);
        println!(
            "    {:<width$} {:>10.2} {:>10.3} {:>9.1}x {:>14.2}",
            scenario.name,
            sim.as_secs_f64(),
            wall.as_secs_f64(),
            speed,
            us_per_host_tick
        );
        let whole = scenario.name == "whole-system";
        headline = match headline {
            Some((true, _)) => headline,
            _ if whole => Some((true, speed)),
            Some((false, slowest)) if slowest <= speed => headline,
            _ => Some((false, speed)),
        };
    }
    headline.map(|(_, s)| s).unwrap_or(0.0)
}

/// Peak resident memory of a child process of this binary, in MiB.
fn child_peak_mib(args: &[&str]) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let before = children_maxrss_kib();
    let status = Command::new(exe)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    let _ = status;
    let after = children_maxrss_kib();
    // The children's maximum only grows: a smaller child shows as no change.
    (after > before).then(|| after as f64 / 1024.0)
}

/// `getrusage(RUSAGE_CHILDREN).ru_maxrss`: the largest child so far, in KiB.
fn children_maxrss_kib() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: initialised by the successful call above.
    unsafe { usage.assume_init() }.ru_maxrss
}

fn measure_memory(scenarios: &[Scenario]) {
    let Some(scenario) = scenarios
        .iter()
        .find(|s| s.name == "whole-system")
        .or_else(|| scenarios.iter().find(|s| s.bug().is_some()))
        .or_else(|| scenarios.first())
    else {
        return;
    };
    println!("memory: peak resident, {}", scenario.name);
    // The single run first: the children's maximum only grows.
    match child_peak_mib(&["run", &scenario.name, "--seed", "0"]) {
        Some(mib) => println!("    one simulation        {mib:>8.1} MiB"),
        None => println!("    one simulation        (not measured)"),
    }
    match child_peak_mib(&[
        "sweep",
        &scenario.name,
        "--seeds",
        "0..100",
        "--jobs",
        "2",
        "--keep-going",
    ]) {
        Some(mib) => println!("    sweep of 100, 2 jobs  {mib:>8.1} MiB"),
        None => println!("    sweep of 100, 2 jobs  no more than one simulation"),
    }
}

//! Fault plans as data.
//!
//! A [`FaultPlan`] lists every fault one run injects. It is plain data
//! (serde: TOML and JSON), printed with every failure, accepted back with
//! `--plan FILE`, and shrunk by proptest to the smallest plan that still
//! fails. A scenario does not write plans by hand: it declares a
//! [`FaultSpace`] (which fault kinds are allowed, on which hosts, within
//! which ranges) and the plan of a run is drawn from the run's seed.
//!
//! Host names in plans are glob patterns (`kv-*`) matched against turmoil's
//! host names. Nothing here knows what the hosts are.

use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, ValueTree};
use proptest::test_runner::{Config as PropConfig, RngAlgorithm, TestRng, TestRunner};
use rand::Rng;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every fault of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    /// Tiny socket send buffers: writes become short, then block.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub send_buffer: Vec<SendBuffer>,
    /// Byte streams delivered in segments of seeded sizes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segmentation: Vec<Segmentation>,
    /// Frames delayed, or held until an event, on their way to the reader.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frame_delay: Vec<FrameDelay>,
    /// Which platform's errno a host's syscall view answers with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errno: Vec<Errno>,
    /// How many bytes the pipes a host's syscall view creates hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipe: Vec<Pipe>,
    /// Where tasks give way at preemption points (see [`crate::schedule`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub race: Vec<Race>,
    /// Network partitions between two sets of hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition: Vec<Partition>,
    /// Changes of link latency at a simulated time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<Latency>,
    /// Host crashes, with an optional restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crash: Vec<Crash>,
    /// Named misbehaviours of the system under test that the plan switches
    /// on (the harness does not know what they do).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub switch: Vec<Switch>,
}

/// A small send buffer on some hosts' sockets (`[[send_buffer]]` in a plan): a
/// write accepts at most the free space, then waits until the peer's
/// application has read. When several entries match a connection, the smallest
/// buffer applies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBuffer {
    /// Hosts whose sockets get the small buffer (glob).
    pub host: String,
    /// Only for connections to these peers (glob); all peers when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Capacity of the send buffer, in bytes (at least 1).
    pub bytes: u32,
}

/// Splits what writers on some hosts send to readers on others into segments of
/// seeded sizes (`[[segmentation]]`); the reader receives whatever has arrived,
/// coalesced, and the byte stream is unchanged. When several entries match, the
/// smallest `max_segment_bytes` applies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segmentation {
    /// Writers on these hosts (glob).
    pub from: String,
    /// To readers on these hosts (glob).
    pub to: String,
    /// Largest segment, in bytes; each segment's size is drawn in 1..=this.
    pub max_segment_bytes: u32,
}

/// Delays a frame on its way to the reader, or holds it until an event
/// (`[[frame_delay]]`): a rule with `hold_until` holds, one without delays by
/// `delay_ms`. As TCP keeps order, what follows the frame on its connection
/// waits with it. Frames are found by the scenario's [`Framer`](crate::Framer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameDelay {
    /// Frames sent by these hosts (glob).
    pub from: String,
    /// To these hosts (glob).
    pub to: String,
    /// Frame label (glob) as the scenario's framer names it, e.g. `res:ADD_STREAM`.
    pub frame: String,
    /// Only the n-th matching frame (1-based); every matching frame when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nth: Option<u32>,
    /// Delay, in simulated milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Hold the frame until this event has happened (see [`crate::event`]);
    /// frame deliveries are events too: `frame:FROM->TO:LABEL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_until: Option<String>,
    /// Upper bound of a hold, in simulated milliseconds.
    #[serde(default = "default_max_hold_ms")]
    pub max_hold_ms: u64,
}

fn default_max_hold_ms() -> u64 {
    10_000
}

/// Which platform's answers a host's syscall view gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Personality {
    /// recv/send on a socket whose connect is in progress: EAGAIN.
    Linux,
    /// recv on a socket whose connect is in progress: ENOTCONN.
    Illumos,
    /// send on a socket whose connect is in progress: ENOTCONN.
    Openbsd,
    /// A heavily patched Linux 2.6.35 whose splice() fails with EBADF
    /// although every fd is valid (seen on 2.6.35.9); everything else
    /// answers as `linux`.
    #[serde(rename = "linux-2.6.35")]
    Linux2635,
}

impl Personality {
    /// Every personality, in the order `linux`, `illumos`, `openbsd`,
    /// `linux-2.6.35`.
    pub const ALL: [Personality; 4] = [
        Personality::Linux,
        Personality::Illumos,
        Personality::Openbsd,
        Personality::Linux2635,
    ];

    /// The personality's name as scenario files and plans write it.
    pub fn name(self) -> &'static str {
        match self {
            Personality::Linux => "linux",
            Personality::Illumos => "illumos",
            Personality::Openbsd => "openbsd",
            Personality::Linux2635 => "linux-2.6.35",
        }
    }
}

/// The errno personality of some hosts (`[[errno]]` in a plan). The first entry
/// whose glob matches a host wins; a host no entry matches answers as `linux`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Errno {
    /// Hosts whose syscall view ([`crate::sys::Sys`]) takes the personality
    /// (glob).
    pub host: String,
    /// The platform whose answers they give.
    pub personality: Personality,
}

/// Linux's pipe capacity: 16 buffers of a 4 KiB page (`PIPE_DEF_BUFFERS`,
/// `include/linux/pipe_fs_i.h`). A host no `[[pipe]]` entry matches gets
/// pipes of this size.
pub const DEFAULT_PIPE_CAPACITY_BYTES: u32 = 65_536;

/// The smallest pipe capacity a plan may ask for: one page, the least
/// `F_SETPIPE_SZ` sets (`round_pipe_size`, `fs/pipe.c`, rounds every
/// request up to whole pages).
pub const MIN_PIPE_CAPACITY_BYTES: u32 = 4096;

/// The largest pipe capacity a plan may ask for: Linux's default
/// `/proc/sys/fs/pipe-max-size` (1 MiB, `pipe_max_size` in `fs/pipe.c`),
/// what an unprivileged `F_SETPIPE_SZ` may set.
pub const MAX_PIPE_CAPACITY_BYTES: u32 = 1_048_576;

/// The capacity of the pipes some hosts create (`[[pipe]]` in a plan), set
/// as `F_SETPIPE_SZ` sets it (whole pages, their number rounded up to a
/// power of two; one buffer each): a `splice` into a pipe fills its free
/// buffers at most, and one into a pipe with none free answers `EAGAIN`. The first entry whose glob matches a host wins; a host no
/// entry matches gets [`DEFAULT_PIPE_CAPACITY_BYTES`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipe {
    /// Hosts whose syscall view ([`crate::sys::Sys`]) creates such pipes
    /// (glob).
    pub host: String,
    /// Capacity of each pipe, in bytes, within
    /// [`MIN_PIPE_CAPACITY_BYTES`]..=[`MAX_PIPE_CAPACITY_BYTES`]. Checked
    /// while the plan is read, so a bad value is reported at its line.
    #[serde(deserialize_with = "pipe_capacity_bytes")]
    pub capacity_bytes: u32,
}

fn pipe_capacity_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u64::deserialize(d)?;
    check_pipe_capacity("capacity_bytes", n).map_err(serde::de::Error::custom)?;
    Ok(n as u32)
}

fn check_pipe_capacity(name: &str, n: u64) -> Result<(), String> {
    if n < u64::from(MIN_PIPE_CAPACITY_BYTES) || n > u64::from(MAX_PIPE_CAPACITY_BYTES) {
        return Err(format!(
            "{name} must be within {MIN_PIPE_CAPACITY_BYTES}..={MAX_PIPE_CAPACITY_BYTES} bytes (one page to 1 MiB, what F_SETPIPE_SZ sets), not {n}"
        ));
    }
    Ok(())
}

/// A schedule for the preemption points whose name matches `point` (a
/// glob over `primitive.operation`; `*` is every point): where tasks give
/// way, and for how long (see [`crate::schedule`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "lowercase", deny_unknown_fields)]
pub enum Race {
    /// At each hit of a matching point, with `probability`, yield 1..=max_yields
    /// times or (half of those times, when `max_sleep_us` > 0) pause
    /// 1..=max_sleep_us of simulated time. A released lock goes to a waiter
    /// drawn at random.
    Random {
        /// Preemption points the rule acts on (glob over `primitive.operation`;
        /// `*` is every point).
        point: String,
        /// Chance, within 0..=1, that one hit of a matching point makes the
        /// task give way.
        probability: f64,
        /// Most yields when the task gives way; the count is drawn in 1..=this
        /// (default 4).
        #[serde(default = "default_max_yields")]
        max_yields: u32,
        /// Longest pause, in simulated µs; the pause is drawn in 1..=this. 0
        /// (the default): the task only yields.
        #[serde(default)]
        max_sleep_us: u64,
        /// Chance, within 0..=1, that a wait on a condition variable whose
        /// `NAME.wait` point the rule acts on ends with no notification
        /// (default 0).
        #[serde(default)]
        spurious_wakeup: f64,
    },
    /// PCT (Burckhardt et al.): a seeded priority per thread, `depth - 1`
    /// priority change points drawn among the run's `steps` steps; a thread
    /// goes on at a point only when no thread of its host with a higher
    /// priority is ready (see [`crate::schedule::pct`]).
    Pct {
        /// Preemption points the rule acts on (glob over `primitive.operation`;
        /// `*` is every point).
        point: String,
        /// The bug depth `d` PCT aims at: `d - 1` priority change points (0 is
        /// taken as 1: no change points).
        depth: u32,
        /// The run's number of steps `k`, among which the change points are
        /// drawn. 0 (the default): the runner learns it from a first run of
        /// the seed without change points, and the plan it reports says it.
        #[serde(default)]
        steps: u64,
        /// As for `random` (default 0).
        #[serde(default)]
        spurious_wakeup: f64,
    },
    /// At the n-th hit (1-based) of each matching point, yield `yields`
    /// times, then pause `sleep_us`.
    Targeted {
        /// Preemption points the rule acts on (glob over `primitive.operation`;
        /// `*` is every point).
        point: String,
        /// Which hit of each matching point to act at (1-based; 0 is rejected).
        nth: u32,
        /// Yields at that hit (default 0).
        #[serde(default)]
        yields: u32,
        /// Pause after the yields, in simulated µs (default 0). With neither
        /// yields nor a pause the rule does nothing.
        #[serde(default)]
        sleep_us: u64,
    },
    /// One schedule of bounded exploration: the thread taking each of
    /// `steps` (1-based, counted as PCT counts them) gives way there once
    /// (see [`crate::schedule::bounded`]). `faultline explore` prints them.
    Schedule {
        /// Preemption points the rule acts on (glob over `primitive.operation`;
        /// `*` is every point).
        point: String,
        /// The steps where a thread gives way, ascending.
        steps: Vec<u64>,
    },
}

fn default_max_yields() -> u32 {
    4
}

impl Race {
    /// The glob of the points the rule acts on, whatever its strategy.
    pub fn point(&self) -> &str {
        match self {
            Race::Random { point, .. }
            | Race::Pct { point, .. }
            | Race::Targeted { point, .. }
            | Race::Schedule { point, .. } => point,
        }
    }

    /// The chance that a wait on a condition variable the rule acts on
    /// ends with no notification.
    pub fn spurious_wakeup(&self) -> f64 {
        match self {
            Race::Random {
                spurious_wakeup, ..
            }
            | Race::Pct {
                spurious_wakeup, ..
            } => *spurious_wakeup,
            Race::Targeted { .. } | Race::Schedule { .. } => 0.0,
        }
    }
}

/// A network partition between every host matching `a` and every host matching
/// `b` (`[[partition]]` in a plan), from `at_ms` until `heal_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// One side (glob over the names of hosts and clients).
    pub a: String,
    /// The other side (glob); a name matching both sides is not cut off from
    /// itself.
    pub b: String,
    /// When the partition starts, in simulated ms since the run's start.
    pub at_ms: u64,
    /// When the partition heals; never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal_ms: Option<u64>,
    /// What happens to the messages between the sides; `drop` (the default) is
    /// left out of serialised plans.
    #[serde(default, skip_serializing_if = "PartitionMode::is_drop")]
    pub mode: PartitionMode,
}

/// What a partition does to the messages between its hosts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionMode {
    /// Lost (turmoil's partition): a new connect fails at once, and a
    /// connection that loses bytes stalls.
    #[default]
    Drop,
    /// Held, and delivered when the partition heals, as TCP's
    /// retransmissions would: connections survive it, late.
    Hold,
}

impl PartitionMode {
    fn is_drop(&self) -> bool {
        *self == PartitionMode::Drop
    }
}

/// A new maximum message latency on the links between every host matching `a`
/// and every host matching `b`, from `at_ms` on (`[[latency]]` in a plan).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// One end of the links (glob over the names of hosts and clients).
    pub a: String,
    /// The other end (glob).
    pub b: String,
    /// When the new latency takes effect, in simulated ms since the run's
    /// start.
    pub at_ms: u64,
    /// New maximum message latency on the links, in milliseconds.
    pub max_ms: u64,
}

/// A crash of the hosts matching `host` (`[[crash]]` in a plan): turmoil stops
/// the host's software; a restart builds it again from its factory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crash {
    /// Hosts to crash (glob over host names; clients never crash).
    pub host: String,
    /// When the host crashes, in simulated ms since the run's start.
    pub at_ms: u64,
    /// Restart (turmoil's bounce) at this time; stays down when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_ms: Option<u64>,
    /// What goes down; `machine` (the default) is left out of serialised
    /// plans.
    #[serde(default, skip_serializing_if = "CrashMode::is_machine")]
    pub mode: CrashMode,
}

/// What a crash takes down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrashMode {
    /// The whole machine (turmoil's crash): messages to it are lost, so a
    /// connect to it hangs until the caller's timeout.
    #[default]
    Machine,
    /// Only the host's software: the machine stays up with nothing
    /// listening, so its kernel refuses every connect at once (RST), as
    /// when a server process dies or closes its port.
    Process,
}

impl CrashMode {
    fn is_machine(&self) -> bool {
        *self == CrashMode::Machine
    }
}

/// A named misbehaviour of the system under test switched on (`[[switch]]` in a
/// plan): [`crate::switch`] answers `true` when asked for `name` on a matching
/// host, at `rate`, or only at the `nth` ask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    /// The name the system under test asks for (see [`crate::switch`]).
    pub name: String,
    /// On these hosts (glob).
    #[serde(default = "any_host")]
    pub host: String,
    /// Chance that one ask answers yes.
    #[serde(default = "one")]
    pub rate: f64,
    /// Only the n-th ask (1-based) answers yes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nth: Option<u32>,
}

fn any_host() -> String {
    "*".to_string()
}

fn one() -> f64 {
    1.0
}

impl FaultPlan {
    /// How many faults the plan holds (each entry counts as one).
    pub fn len(&self) -> usize {
        self.send_buffer.len()
            + self.segmentation.len()
            + self.frame_delay.len()
            + self.errno.len()
            + self.pipe.len()
            + self.race.len()
            + self.partition.len()
            + self.latency.len()
            + self.crash.len()
            + self.switch.len()
    }

    /// Whether the plan injects no fault at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every host glob of the plan: (kind, glob).
    pub fn host_globs(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        for f in &self.send_buffer {
            out.push(("send_buffer", f.host.as_str()));
            if let Some(peer) = &f.peer {
                out.push(("send_buffer", peer.as_str()));
            }
        }
        for f in &self.segmentation {
            out.push(("segmentation", f.from.as_str()));
            out.push(("segmentation", f.to.as_str()));
        }
        for f in &self.frame_delay {
            out.push(("frame_delay", f.from.as_str()));
            out.push(("frame_delay", f.to.as_str()));
        }
        for f in &self.errno {
            out.push(("errno", f.host.as_str()));
        }
        for f in &self.pipe {
            out.push(("pipe", f.host.as_str()));
        }
        for f in &self.partition {
            out.push(("partition", f.a.as_str()));
            out.push(("partition", f.b.as_str()));
        }
        for f in &self.latency {
            out.push(("latency", f.a.as_str()));
            out.push(("latency", f.b.as_str()));
        }
        for f in &self.crash {
            out.push(("crash", f.host.as_str()));
        }
        for f in &self.switch {
            out.push(("switch", f.host.as_str()));
        }
        out
    }

    /// The plan of the first of a `pct` plan's two runs (see
    /// [`crate::runner::run`]): every `pct` rule that does not say its
    /// steps, without change points. `None` when there is none.
    pub fn pct_probe(&self) -> Option<FaultPlan> {
        let learns = |r: &Race| matches!(r, Race::Pct { steps: 0, depth, .. } if *depth > 1);
        if !self.race.iter().any(learns) {
            return None;
        }
        let mut probe = self.clone();
        for rule in &mut probe.race {
            if let Race::Pct {
                depth, steps: 0, ..
            } = rule
            {
                *depth = 1;
            }
        }
        Some(probe)
    }

    /// This plan with every `pct` rule that does not say its steps given
    /// the steps the first run counted (`race-steps:GLOB` in `coverage`).
    pub fn with_pct_steps(&self, coverage: &BTreeMap<String, u64>) -> FaultPlan {
        let mut plan = self.clone();
        for rule in &mut plan.race {
            if let Race::Pct { point, steps, .. } = rule {
                if *steps == 0 {
                    *steps = coverage
                        .get(&format!("race-steps:{point}"))
                        .copied()
                        .unwrap_or(0)
                        .max(1);
                }
            }
        }
        plan
    }

    /// A one-line summary for tables and logs.
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "no faults".to_string();
        }
        let mut parts = Vec::new();
        for f in &self.send_buffer {
            parts.push(format!("send_buffer {}={}B", f.host, f.bytes));
        }
        for f in &self.segmentation {
            parts.push(format!(
                "segmentation {}->{}<={}B",
                f.from, f.to, f.max_segment_bytes
            ));
        }
        for f in &self.frame_delay {
            match &f.hold_until {
                Some(event) => parts.push(format!(
                    "hold {} {}->{} until {}",
                    f.frame, f.from, f.to, event
                )),
                None => parts.push(format!(
                    "delay {} {}->{} {}ms",
                    f.frame, f.from, f.to, f.delay_ms
                )),
            }
        }
        for f in &self.errno {
            parts.push(format!("errno {}={}", f.host, f.personality.name()));
        }
        for f in &self.pipe {
            parts.push(format!("pipe {}={}B", f.host, f.capacity_bytes));
        }
        for f in &self.race {
            parts.push(format!("race {}", f.point()));
        }
        for f in &self.partition {
            parts.push(format!("partition {}|{}@{}ms", f.a, f.b, f.at_ms));
        }
        for f in &self.latency {
            parts.push(format!(
                "latency {}-{}<={}ms@{}ms",
                f.a, f.b, f.max_ms, f.at_ms
            ));
        }
        for f in &self.crash {
            let what = match f.mode {
                CrashMode::Machine => "",
                CrashMode::Process => " (process)",
            };
            parts.push(format!("crash {}@{}ms{what}", f.host, f.at_ms));
        }
        for f in &self.switch {
            parts.push(format!("switch {}@{}", f.name, f.host));
        }
        parts.join(", ")
    }

    /// The plan as TOML, the form `--plan FILE` reads back.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a fault plan always serialises")
    }

    /// Reads a plan from TOML or JSON (by the file's extension; TOML otherwise).
    pub fn load(path: &std::path::Path) -> Result<FaultPlan, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the plan: {e}", path.display()))?;
        if path.extension().is_some_and(|ext| ext == "json") {
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
        } else {
            toml::from_str(&text).map_err(|e| crate::scenario::toml_error(path, &text, &e))
        }
    }

    /// Checks value ranges that serde's types cannot express.
    pub fn validate(&self) -> Result<(), String> {
        for f in &self.send_buffer {
            if f.bytes == 0 {
                return Err("send_buffer.bytes must be at least 1".into());
            }
        }
        for f in &self.segmentation {
            if f.max_segment_bytes == 0 {
                return Err("segmentation.max_segment_bytes must be at least 1".into());
            }
        }
        for f in &self.pipe {
            check_pipe_capacity("pipe.capacity_bytes", u64::from(f.capacity_bytes))?;
        }
        for f in &self.race {
            if let Race::Random { probability, .. } = f {
                if !(0.0..=1.0).contains(probability) {
                    return Err("race.probability must be within 0..=1".into());
                }
            }
            if !(0.0..=1.0).contains(&f.spurious_wakeup()) {
                return Err("race.spurious_wakeup must be within 0..=1".into());
            }
            if let Race::Targeted { nth: 0, .. } = f {
                return Err("race.nth is 1-based".into());
            }
            if let Race::Schedule { steps, .. } = f {
                if steps.contains(&0) || !steps.is_sorted_by(|a, b| a < b) {
                    return Err("race.steps are 1-based and ascending".into());
                }
            }
        }
        for f in &self.switch {
            if !(0.0..=1.0).contains(&f.rate) {
                return Err("switch.rate must be within 0..=1".into());
            }
        }
        for f in &self.frame_delay {
            if f.nth == Some(0) {
                return Err("frame_delay.nth is 1-based".into());
            }
        }
        Ok(())
    }
}

/// The coverage key a frame-delay rule leaves when a frame matches it.
pub(crate) fn applied_frame_delay(rule: &FrameDelay) -> String {
    format!(
        "applied:frame_delay:{}->{}:{}",
        rule.from, rule.to, rule.frame
    )
}

/// Glob match for host names and labels (`*` and `?`). A malformed pattern
/// matches only itself, literally.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    if pattern == "*" || pattern == name {
        return true;
    }
    match glob::Pattern::new(pattern) {
        Ok(p) => p.matches(name),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// The fault space of a scenario, and drawing plans from it.
// ---------------------------------------------------------------------------

/// An inclusive range written `[min, max]` in scenario files.
pub type Range2 = [u64; 2];

fn check_range(name: &str, r: &Range2) -> Result<(), String> {
    if r[0] > r[1] {
        return Err(format!(
            "{name}: the range [{}, {}] ends before it starts",
            r[0], r[1]
        ));
    }
    Ok(())
}

fn check_probability(name: &str, p: f64) -> Result<(), String> {
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("{name}.probability must be within 0..=1, not {p}"));
    }
    Ok(())
}

fn check_hosts(name: &str, hosts: &[String]) -> Result<(), String> {
    if hosts.is_empty() {
        return Err(format!("{name}: the host list is empty"));
    }
    Ok(())
}

fn default_probability() -> f64 {
    1.0
}

/// Which faults a scenario allows, and their ranges. Each kind is included in
/// a drawn plan with its `probability`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpace {
    /// `[faults.send_buffer]`: tiny send buffers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_buffer: Option<SendBufferSpace>,
    /// `[faults.segmentation]`: byte streams split into small segments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segmentation: Option<SegmentationSpace>,
    /// `[[faults.frame_delay]]`: frame delays and holds, one rule per table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frame_delay: Vec<FrameDelaySpace>,
    /// `[faults.errno]`: errno personalities of the syscall view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<ErrnoSpace>,
    /// `[faults.pipe]`: the capacity of the syscall view's pipes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipe: Option<PipeSpace>,
    /// `[[faults.race]]`: schedules for preemption points, one rule per table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub race: Vec<RaceSpace>,
    /// `[faults.partition]`: network partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<PairSpace>,
    /// `[faults.latency]`: changes of link latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySpace>,
    /// `[faults.crash]`: host crashes and restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash: Option<CrashSpace>,
    /// `[[faults.switch]]`: named misbehaviours, one per table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub switch: Vec<SwitchSpace>,
}

/// `[faults.send_buffer]`: a drawn plan gets one [`SendBuffer`], on one of
/// `hosts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBufferSpace {
    /// Hosts to draw from (globs; one is drawn; must not be empty).
    pub hosts: Vec<String>,
    /// Range of the buffer's capacity, in bytes; `lo` is at least 1.
    pub bytes: Range2,
    /// Chance, within 0..=1, that a run's plan has this fault (default 1).
    #[serde(default = "default_probability")]
    pub probability: f64,
}

/// `[faults.segmentation]`: a drawn plan gets one [`Segmentation`], from one of
/// `from` to one of `to`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentationSpace {
    /// Writing hosts to draw from (globs; one is drawn; must not be empty).
    pub from: Vec<String>,
    /// Reading hosts to draw from (globs; one is drawn; must not be empty).
    pub to: Vec<String>,
    /// Range of the largest segment, in bytes; `lo` is at least 1.
    pub max_segment_bytes: Range2,
    /// Chance, within 0..=1, that a run's plan has this fault (default 1).
    #[serde(default = "default_probability")]
    pub probability: f64,
}

/// One `[[faults.frame_delay]]` rule: a drawn plan gets one [`FrameDelay`] with
/// these hosts, label, event and bound, and a drawn `nth` and `delay_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameDelaySpace {
    /// Frames sent by these hosts (glob).
    pub from: String,
    /// To these hosts (glob).
    pub to: String,
    /// Frame label (glob) as the scenario's framer names it, e.g.
    /// `res:DCP_ADD_STREAM`.
    pub frame: String,
    /// Draw `nth` from this range; every matching frame when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nth: Option<Range2>,
    /// Range of the delay, in simulated ms (default `[0, 0]`); unused when
    /// `hold_until` is set.
    #[serde(default = "zero_range")]
    pub delay_ms: Range2,
    /// Hold the frame until this event instead of delaying it (see
    /// [`FrameDelay::hold_until`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_until: Option<String>,
    /// Upper bound of a hold, in simulated ms (default 10000).
    #[serde(default = "default_max_hold_ms")]
    pub max_hold_ms: u64,
    /// Chance, within 0..=1, that a run's plan has this rule (default 1).
    #[serde(default = "default_probability")]
    pub probability: f64,
}

fn zero_range() -> Range2 {
    [0, 0]
}

/// `[faults.errno]`: a drawn plan gives one of `hosts` one of `personalities`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrnoSpace {
    /// Hosts to draw from (globs; one is drawn; must not be empty).
    pub hosts: Vec<String>,
    /// Personalities to draw from (`linux`, `illumos`, `openbsd`,
    /// `linux-2.6.35`; must not be empty).
    pub personalities: Vec<Personality>,
    /// Chance, within 0..=1, that a run's plan has this fault (default 1).
    #[serde(default = "default_probability")]
    pub probability: f64,
}

/// `[faults.pipe]`: a drawn plan gives the pipes of one of `hosts` a capacity
/// drawn from `capacity_bytes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipeSpace {
    /// Hosts to draw from (globs; one is drawn; must not be empty).
    pub hosts: Vec<String>,
    /// Range of the pipes' capacity, in bytes, within
    /// [`MIN_PIPE_CAPACITY_BYTES`]..=[`MAX_PIPE_CAPACITY_BYTES`].
    pub capacity_bytes: Range2,
    /// Chance, within 0..=1, that a run's plan has this fault (default 1).
    #[serde(default = "default_probability")]
    pub probability: f64,
}

/// One `[[faults.race]]` rule: a drawn plan gets one [`Race`] on one of
/// `points`, with one of `strategies` and its parameters drawn from the ranges
/// below.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaceSpace {
    /// Preemption point names (globs over `primitive.operation`; `*`: all).
    pub points: Vec<String>,
    /// Which strategies may be drawn: `random`, `pct`, `targeted` (default
    /// `random` and `pct`).
    #[serde(default = "default_strategies")]
    pub strategies: Vec<String>,
    /// For `random`: the probability of yielding at a hit (default
    /// `[0.01, 0.1]`: at 0.05-0.5 a loaded proxy slowed so much that its
    /// fixed variant missed the workload's deadline).
    #[serde(default = "default_race_probability")]
    pub yield_probability: [f64; 2],
    /// Range of yields (default `[1, 4]`): `random`'s `max_yields`,
    /// `targeted`'s `yields`.
    #[serde(default = "default_yields")]
    pub yields: Range2,
    /// Range of pauses, in simulated µs (default `[0, 1000]`): `random`'s
    /// `max_sleep_us`, `targeted`'s `sleep_us`.
    #[serde(default = "default_sleep_us")]
    pub sleep_us: Range2,
    /// For `targeted`: which hit.
    #[serde(default = "default_nth")]
    pub nth: Range2,
    /// For `pct`: range of the bug depth (default `[1, 3]`).
    #[serde(default = "default_depth")]
    pub depth: Range2,
    /// For `random` and `pct`: range of the chance that a wait on a
    /// condition variable ends with no notification (default
    /// `[0.01, 0.1]`: on, as POSIX and Rust's std allow it).
    #[serde(default = "default_spurious_wakeup")]
    pub spurious_wakeup: [f64; 2],
    /// Chance, within 0..=1, that a run's plan has this rule (default 1).
    #[serde(default = "default_probability")]
    pub probability: f64,
}

/// The strategies a `[[faults.race]]` rule may draw.
pub const RACE_STRATEGIES: [&str; 3] = ["random", "pct", "targeted"];

/// The strategies a rule draws when it names none: `random` and `pct`.
/// `targeted` acts at the n-th hit of every point its glob matches, which
/// with `*` finds almost nothing (measured on the catalog's race bugs: 0,
/// 0 and 6 failing seeds of 60), so a rule names it when it wants it.
fn default_strategies() -> Vec<String> {
    vec!["random".into(), "pct".into()]
}
fn default_race_probability() -> [f64; 2] {
    [0.01, 0.1]
}
fn default_yields() -> Range2 {
    [1, 4]
}
fn default_sleep_us() -> Range2 {
    [0, 1000]
}
fn default_nth() -> Range2 {
    [1, 50]
}
fn default_depth() -> Range2 {
    [1, 3]
}
fn default_spurious_wakeup() -> [f64; 2] {
    [0.01, 0.1]
}

/// `[faults.partition]`: a drawn plan gets one [`Partition`] between one of
/// `pairs`, which heals after a drawn duration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairSpace {
    /// Pairs of hosts to draw from, `[a, b]` (globs; one pair is drawn; must
    /// not be empty).
    pub pairs: Vec<[String; 2]>,
    /// Range of the partition's start, in simulated ms since the run's start.
    pub at_ms: Range2,
    /// Range of how long the partition lasts, in simulated ms; a drawn
    /// partition always heals.
    pub duration_ms: Range2,
    /// `drop` (default) or `hold`.
    #[serde(default, skip_serializing_if = "PartitionMode::is_drop")]
    pub mode: PartitionMode,
    /// Chance, within 0..=1, that a run's plan has this fault (default 1).
    #[serde(default = "default_probability")]
    pub probability: f64,
}

/// `[faults.latency]`: a drawn plan gets one [`Latency`] change, on one of
/// `pairs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySpace {
    /// Pairs of hosts to draw from, `[a, b]` (globs; one pair is drawn; must
    /// not be empty).
    pub pairs: Vec<[String; 2]>,
    /// Range of when the change takes effect, in simulated ms since the run's
    /// start.
    pub at_ms: Range2,
    /// Range of the new maximum message latency, in ms.
    pub max_ms: Range2,
    /// Chance, within 0..=1, that a run's plan has this fault (default 1).
    #[serde(default = "default_probability")]
    pub probability: f64,
}

/// `[faults.crash]`: a drawn plan crashes one of `hosts`, and restarts it after
/// a drawn down time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashSpace {
    /// Hosts to draw from (globs; one is drawn; must not be empty).
    pub hosts: Vec<String>,
    /// Range of the crash time, in simulated ms since the run's start.
    pub at_ms: Range2,
    /// Down time before the restart; absent: no restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_ms: Option<Range2>,
    /// What goes down: `machine` (default) or `process`.
    #[serde(default)]
    pub mode: CrashMode,
    /// Chance, within 0..=1, that a run's plan has this fault (default 1).
    #[serde(default = "default_probability")]
    pub probability: f64,
}

/// One `[[faults.switch]]` table: a drawn plan gets one [`Switch`] named
/// `name`, with a drawn `rate` and `nth`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchSpace {
    /// The name the system under test asks for (see [`crate::switch`]).
    pub name: String,
    /// On these hosts (glob; default `*`, every host).
    #[serde(default = "any_host")]
    pub host: String,
    /// Range of the chance that one ask answers yes, within 0..=1 (default
    /// `[1.0, 1.0]`).
    #[serde(default = "unit_rate")]
    pub rate: [f64; 2],
    /// Draw `nth` from this range: only that ask (1-based) answers yes,
    /// whatever the rate; every ask may when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nth: Option<Range2>,
    /// Chance, within 0..=1, that a run's plan has this switch (default 1).
    #[serde(default = "default_probability")]
    pub probability: f64,
}

fn unit_rate() -> [f64; 2] {
    [1.0, 1.0]
}

impl FaultSpace {
    /// Whether the space allows no fault at all.
    pub fn is_empty(&self) -> bool {
        *self == FaultSpace::default()
    }

    /// The kinds of fault this space may draw, by their plan names.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if self.send_buffer.is_some() {
            kinds.push("send_buffer");
        }
        if self.segmentation.is_some() {
            kinds.push("segmentation");
        }
        if !self.frame_delay.is_empty() {
            kinds.push("frame_delay");
        }
        if self.errno.is_some() {
            kinds.push("errno");
        }
        if self.pipe.is_some() {
            kinds.push("pipe");
        }
        if !self.race.is_empty() {
            kinds.push("race");
        }
        if self.partition.is_some() {
            kinds.push("partition");
        }
        if self.latency.is_some() {
            kinds.push("latency");
        }
        if self.crash.is_some() {
            kinds.push("crash");
        }
        if !self.switch.is_empty() {
            kinds.push("switch");
        }
        kinds
    }

    /// Checks ranges and probabilities; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(s) = &self.send_buffer {
            check_hosts("faults.send_buffer.hosts", &s.hosts)?;
            check_range("faults.send_buffer.bytes", &s.bytes)?;
            if s.bytes[0] == 0 {
                return Err("faults.send_buffer.bytes must start at 1 or more".into());
            }
            check_probability("faults.send_buffer", s.probability)?;
        }
        if let Some(s) = &self.segmentation {
            check_hosts("faults.segmentation.from", &s.from)?;
            check_hosts("faults.segmentation.to", &s.to)?;
            check_range(
                "faults.segmentation.max_segment_bytes",
                &s.max_segment_bytes,
            )?;
            if s.max_segment_bytes[0] == 0 {
                return Err("faults.segmentation.max_segment_bytes must start at 1 or more".into());
            }
            check_probability("faults.segmentation", s.probability)?;
        }
        for s in &self.frame_delay {
            check_range("faults.frame_delay.delay_ms", &s.delay_ms)?;
            if let Some(nth) = &s.nth {
                check_range("faults.frame_delay.nth", nth)?;
                if nth[0] == 0 {
                    return Err("faults.frame_delay.nth is 1-based".into());
                }
            }
            check_probability("faults.frame_delay", s.probability)?;
        }
        if let Some(s) = &self.errno {
            check_hosts("faults.errno.hosts", &s.hosts)?;
            if s.personalities.is_empty() {
                return Err("faults.errno.personalities is empty".into());
            }
            check_probability("faults.errno", s.probability)?;
        }
        if let Some(s) = &self.pipe {
            check_hosts("faults.pipe.hosts", &s.hosts)?;
            check_range("faults.pipe.capacity_bytes", &s.capacity_bytes)?;
            check_pipe_capacity("faults.pipe.capacity_bytes", s.capacity_bytes[0])?;
            check_pipe_capacity("faults.pipe.capacity_bytes", s.capacity_bytes[1])?;
            check_probability("faults.pipe", s.probability)?;
        }
        for s in &self.race {
            if s.points.is_empty() {
                return Err("faults.race.points is empty".into());
            }
            if s.strategies.is_empty() {
                return Err("faults.race.strategies is empty".into());
            }
            for name in &s.strategies {
                if !RACE_STRATEGIES.contains(&name.as_str()) {
                    return Err(format!(
                        "faults.race.strategies: unknown strategy `{name}` (random, pct or targeted)"
                    ));
                }
            }
            let [lo, hi] = s.yield_probability;
            if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
                return Err("faults.race.yield_probability must be [lo, hi] within 0..=1".into());
            }
            check_range("faults.race.yields", &s.yields)?;
            check_range("faults.race.sleep_us", &s.sleep_us)?;
            check_range("faults.race.nth", &s.nth)?;
            check_range("faults.race.depth", &s.depth)?;
            let [lo, hi] = s.spurious_wakeup;
            if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
                return Err("faults.race.spurious_wakeup must be [lo, hi] within 0..=1".into());
            }
            if s.nth[0] == 0 {
                return Err("faults.race.nth is 1-based".into());
            }
            check_probability("faults.race", s.probability)?;
        }
        if let Some(s) = &self.partition {
            if s.pairs.is_empty() {
                return Err("faults.partition.pairs is empty".into());
            }
            check_range("faults.partition.at_ms", &s.at_ms)?;
            check_range("faults.partition.duration_ms", &s.duration_ms)?;
            check_probability("faults.partition", s.probability)?;
        }
        if let Some(s) = &self.latency {
            if s.pairs.is_empty() {
                return Err("faults.latency.pairs is empty".into());
            }
            check_range("faults.latency.at_ms", &s.at_ms)?;
            check_range("faults.latency.max_ms", &s.max_ms)?;
            check_probability("faults.latency", s.probability)?;
        }
        if let Some(s) = &self.crash {
            check_hosts("faults.crash.hosts", &s.hosts)?;
            check_range("faults.crash.at_ms", &s.at_ms)?;
            if let Some(d) = &s.down_ms {
                check_range("faults.crash.down_ms", d)?;
            }
            check_probability("faults.crash", s.probability)?;
        }
        for s in &self.switch {
            let [lo, hi] = s.rate;
            if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
                return Err(format!(
                    "faults.switch `{}`: rate must be [lo, hi] within 0..=1",
                    s.name
                ));
            }
            if let Some(nth) = &s.nth {
                check_range("faults.switch.nth", nth)?;
            }
            check_probability("faults.switch", s.probability)?;
        }
        Ok(())
    }

    /// The faults of the space whose application shows only at run time
    /// (a preemption point glob, a frame label, a switch name), each with
    /// the coverage key a run leaves when it applies: (what, key). A sweep
    /// lists those no run applied.
    pub fn applied_keys(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for s in &self.race {
            for point in &s.points {
                out.push((
                    format!("[[faults.race]] points `{point}`: no preemption point matched"),
                    format!("applied:race:{point}"),
                ));
            }
        }
        for s in &self.frame_delay {
            let rule = FrameDelay {
                from: s.from.clone(),
                to: s.to.clone(),
                frame: s.frame.clone(),
                nth: None,
                delay_ms: 0,
                hold_until: None,
                max_hold_ms: 0,
            };
            out.push((
                format!(
                    "[[faults.frame_delay]] `{}` {} -> {}: no such frame passed",
                    s.frame, s.from, s.to
                ),
                applied_frame_delay(&rule),
            ));
        }
        for s in &self.switch {
            out.push((
                format!(
                    "[[faults.switch]] `{}`: the code under test never asked for it",
                    s.name
                ),
                format!("applied:switch:{}", s.name),
            ));
        }
        out
    }

    /// Every host glob of the space: (table, index of the table among its
    /// kind's, key, glob). Pairs give both hosts under `pairs`.
    pub fn host_globs(&self) -> Vec<(&'static str, usize, &'static str, &str)> {
        let mut out = Vec::new();
        if let Some(s) = &self.send_buffer {
            out.extend(
                s.hosts
                    .iter()
                    .map(|h| ("send_buffer", 0, "hosts", h.as_str())),
            );
        }
        if let Some(s) = &self.segmentation {
            out.extend(
                s.from
                    .iter()
                    .map(|h| ("segmentation", 0, "from", h.as_str())),
            );
            out.extend(s.to.iter().map(|h| ("segmentation", 0, "to", h.as_str())));
        }
        for (i, s) in self.frame_delay.iter().enumerate() {
            out.push(("frame_delay", i, "from", s.from.as_str()));
            out.push(("frame_delay", i, "to", s.to.as_str()));
        }
        if let Some(s) = &self.errno {
            out.extend(s.hosts.iter().map(|h| ("errno", 0, "hosts", h.as_str())));
        }
        if let Some(s) = &self.pipe {
            out.extend(s.hosts.iter().map(|h| ("pipe", 0, "hosts", h.as_str())));
        }
        if let Some(s) = &self.partition {
            for [a, b] in &s.pairs {
                out.push(("partition", 0, "pairs", a.as_str()));
                out.push(("partition", 0, "pairs", b.as_str()));
            }
        }
        if let Some(s) = &self.latency {
            for [a, b] in &s.pairs {
                out.push(("latency", 0, "pairs", a.as_str()));
                out.push(("latency", 0, "pairs", b.as_str()));
            }
        }
        if let Some(s) = &self.crash {
            out.extend(s.hosts.iter().map(|h| ("crash", 0, "hosts", h.as_str())));
        }
        for (i, s) in self.switch.iter().enumerate() {
            out.push(("switch", i, "host", s.host.as_str()));
        }
        out
    }

    /// The proptest strategy that draws plans from this space.
    pub fn strategy(&self) -> BoxedStrategy<FaultPlan> {
        let send_buffer = maybe(self.send_buffer.as_ref(), |s| {
            (
                prop::sample::select(s.hosts.clone()),
                s.bytes[0]..=s.bytes[1],
            )
                .prop_map(|(host, bytes)| SendBuffer {
                    host,
                    peer: None,
                    bytes: bytes as u32,
                })
                .boxed()
        });
        let segmentation = maybe(self.segmentation.as_ref(), |s| {
            (
                prop::sample::select(s.from.clone()),
                prop::sample::select(s.to.clone()),
                s.max_segment_bytes[0]..=s.max_segment_bytes[1],
            )
                .prop_map(|(from, to, max)| Segmentation {
                    from,
                    to,
                    max_segment_bytes: max as u32,
                })
                .boxed()
        });
        let frame_delay = each(&self.frame_delay, |s| {
            let template = s.clone();
            let nth: BoxedStrategy<Option<u32>> = match s.nth {
                Some([lo, hi]) => (lo..=hi).prop_map(|n| Some(n as u32)).boxed(),
                None => Just(None).boxed(),
            };
            (nth, s.delay_ms[0]..=s.delay_ms[1])
                .prop_map(move |(nth, delay_ms)| FrameDelay {
                    from: template.from.clone(),
                    to: template.to.clone(),
                    frame: template.frame.clone(),
                    nth,
                    delay_ms,
                    hold_until: template.hold_until.clone(),
                    max_hold_ms: template.max_hold_ms,
                })
                .boxed()
        });
        let errno = maybe(self.errno.as_ref(), |s| {
            (
                prop::sample::select(s.hosts.clone()),
                prop::sample::select(s.personalities.clone()),
            )
                .prop_map(|(host, personality)| Errno { host, personality })
                .boxed()
        });
        let pipe = maybe(self.pipe.as_ref(), |s| {
            (
                prop::sample::select(s.hosts.clone()),
                s.capacity_bytes[0]..=s.capacity_bytes[1],
            )
                .prop_map(|(host, capacity)| Pipe {
                    host,
                    capacity_bytes: capacity as u32,
                })
                .boxed()
        });
        let race = each(&self.race, race_strategy);
        let partition = maybe(self.partition.as_ref(), |s| {
            let mode = s.mode;
            (
                prop::sample::select(s.pairs.clone()),
                s.at_ms[0]..=s.at_ms[1],
                s.duration_ms[0]..=s.duration_ms[1],
            )
                .prop_map(move |([a, b], at_ms, duration)| Partition {
                    a,
                    b,
                    at_ms,
                    heal_ms: Some(at_ms + duration),
                    mode,
                })
                .boxed()
        });
        let latency = maybe(self.latency.as_ref(), |s| {
            (
                prop::sample::select(s.pairs.clone()),
                s.at_ms[0]..=s.at_ms[1],
                s.max_ms[0]..=s.max_ms[1],
            )
                .prop_map(|([a, b], at_ms, max_ms)| Latency {
                    a,
                    b,
                    at_ms,
                    max_ms,
                })
                .boxed()
        });
        let crash = maybe(self.crash.as_ref(), |s| {
            let mode = s.mode;
            let down: BoxedStrategy<Option<u64>> = match s.down_ms {
                Some([lo, hi]) => (lo..=hi).prop_map(Some).boxed(),
                None => Just(None).boxed(),
            };
            (
                prop::sample::select(s.hosts.clone()),
                s.at_ms[0]..=s.at_ms[1],
                down,
            )
                .prop_map(move |(host, at_ms, down)| Crash {
                    host,
                    at_ms,
                    restart_ms: down.map(|d| at_ms + d),
                    mode,
                })
                .boxed()
        });
        let switch = each(&self.switch, |s| {
            let template = s.clone();
            let nth: BoxedStrategy<Option<u32>> = match s.nth {
                Some([lo, hi]) => (lo..=hi).prop_map(|n| Some(n as u32)).boxed(),
                None => Just(None).boxed(),
            };
            let [lo, hi] = s.rate;
            let rate: BoxedStrategy<f64> = if lo == hi {
                Just(lo).boxed()
            } else {
                (lo..=hi).prop_map(quantize).boxed()
            };
            (rate, nth)
                .prop_map(move |(rate, nth)| Switch {
                    name: template.name.clone(),
                    host: template.host.clone(),
                    rate,
                    nth,
                })
                .boxed()
        });
        // The pipe comes last: a strategy draws its parts in order, so the
        // kinds that were there before it draw what they always drew from a
        // seed (a space without `pipe` draws nothing for it).
        (
            (send_buffer, segmentation, frame_delay),
            (errno, race, partition),
            (latency, crash, switch),
            pipe,
        )
            .prop_map(
                |(
                    (send_buffer, segmentation, frame_delay),
                    (errno, race, partition),
                    (latency, crash, switch),
                    pipe,
                )| FaultPlan {
                    send_buffer,
                    segmentation,
                    frame_delay,
                    errno,
                    pipe,
                    race,
                    partition,
                    latency,
                    crash,
                    switch,
                },
            )
            .boxed()
    }

    /// This space with every race rule drawing only `strategy` (`random`,
    /// `pct` or `targeted`), its other ranges unchanged: how `reproduce`
    /// measures each strategy's rate over the same race space.
    pub fn with_race_strategy(&self, strategy: &str) -> Result<FaultSpace, String> {
        if !RACE_STRATEGIES.contains(&strategy) {
            return Err(format!(
                "unknown race strategy `{strategy}` ({})",
                RACE_STRATEGIES.join(", ")
            ));
        }
        if self.race.is_empty() {
            return Err("the scenario has no [[faults.race]] rule".into());
        }
        let mut space = self.clone();
        for race in &mut space.race {
            race.strategies = vec![strategy.to_string()];
        }
        Ok(space)
    }

    /// Swarm testing (Groce et al.): a space with a random subset of this
    /// space's fault kinds switched on, each at a random rate, drawn from
    /// `seed`. Different seeds stress different combinations, so a fault
    /// that masks another (a partition hiding a race) is sometimes absent.
    /// Each kind (and each frame-delay, race and switch rule) stays with
    /// probability 1/2; a kept kind's own probability is drawn in 0.25..=1.
    pub fn swarm(&self, seed: u64) -> FaultSpace {
        let mut rng = crate::seed::stream(seed, "swarm");
        let mut keep = |p: &mut f64| -> bool {
            let kept = rng.random_bool(0.5);
            *p = quantize(rng.random_range(0.25..=1.0));
            kept
        };
        let mut out = self.clone();
        macro_rules! one {
            ($field:ident) => {
                if let Some(space) = &mut out.$field {
                    if !keep(&mut space.probability) {
                        out.$field = None;
                    }
                }
            };
        }
        one!(send_buffer);
        one!(segmentation);
        one!(errno);
        one!(partition);
        one!(latency);
        one!(crash);
        out.frame_delay.retain_mut(|s| keep(&mut s.probability));
        out.race.retain_mut(|s| keep(&mut s.probability));
        out.switch.retain_mut(|s| keep(&mut s.probability));
        // Last, so that spaces without it draw the swarms they always drew.
        one!(pipe);
        out
    }

    /// The plan drawn from `seed`, together with the tree that shrinks it.
    pub fn draw(&self, seed: u64) -> PlanTree {
        let mut runner = plan_runner(seed);
        let tree = self
            .strategy()
            .new_tree(&mut runner)
            .expect("fault strategies never reject");
        PlanTree { tree }
    }
}

/// A drawn plan that proptest can simplify.
pub struct PlanTree {
    tree: Box<dyn ValueTree<Value = FaultPlan>>,
}

impl PlanTree {
    /// The plan as it stands: the drawn one, or a simpler one after
    /// [`PlanTree::simplify`].
    pub fn current(&self) -> FaultPlan {
        self.tree.current()
    }
    /// Moves to a simpler plan (fewer faults, smaller values); `false` when the
    /// plan did not change.
    pub fn simplify(&mut self) -> bool {
        self.tree.simplify()
    }
    /// Partly undoes the last simplification, after the simpler plan stopped
    /// failing; `false` when the plan did not change.
    pub fn complicate(&mut self) -> bool {
        self.tree.complicate()
    }
}

fn plan_runner(seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&crate::seed::derive(seed, "fault-plan").to_le_bytes());
    bytes[8..16].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    TestRunner::new_with_rng(
        PropConfig {
            failure_persistence: None,
            ..PropConfig::default()
        },
        rng,
    )
}

fn maybe<S, T: std::fmt::Debug + Clone + 'static>(
    space: Option<&S>,
    make: impl Fn(&S) -> BoxedStrategy<T>,
) -> BoxedStrategy<Vec<T>>
where
    S: HasProbability,
{
    match space {
        None => Just(Vec::new()).boxed(),
        Some(s) => optional(s.probability(), make(s)),
    }
}

fn each<S: HasProbability, T: std::fmt::Debug + Clone + 'static>(
    spaces: &[S],
    make: impl Fn(&S) -> BoxedStrategy<T>,
) -> BoxedStrategy<Vec<T>> {
    let parts: Vec<BoxedStrategy<Vec<T>>> = spaces
        .iter()
        .map(|s| optional(s.probability(), make(s)))
        .collect();
    parts
        .prop_map(|vs: Vec<Vec<T>>| vs.into_iter().flatten().collect::<Vec<T>>())
        .boxed()
}

fn optional<T: std::fmt::Debug + Clone + 'static>(
    probability: f64,
    s: BoxedStrategy<T>,
) -> BoxedStrategy<Vec<T>> {
    if probability >= 1.0 {
        // Still shrinkable to nothing: a plan without the fault is simpler.
        prop::option::weighted(1.0 - f64::EPSILON, s)
            .prop_map(|o| o.into_iter().collect())
            .boxed()
    } else if probability <= 0.0 {
        Just(Vec::new()).boxed()
    } else {
        prop::option::weighted(probability, s)
            .prop_map(|o| o.into_iter().collect())
            .boxed()
    }
}

trait HasProbability {
    fn probability(&self) -> f64;
}

macro_rules! has_probability {
    ($($t:ty),*) => { $(impl HasProbability for $t { fn probability(&self) -> f64 { self.probability } })* };
}
has_probability!(
    SendBufferSpace,
    SegmentationSpace,
    FrameDelaySpace,
    ErrnoSpace,
    PipeSpace,
    RaceSpace,
    PairSpace,
    LatencySpace,
    CrashSpace,
    SwitchSpace
);

/// Rounds a drawn probability to 1/1000: plans are read by people, and a
/// value must survive a round trip through a TOML file unchanged.
fn quantize(p: f64) -> f64 {
    (p * 1000.0).round() / 1000.0
}

/// A probability drawn in `[lo, hi]` (quantized), or `lo` when the range
/// is one value.
fn probability_in([lo, hi]: [f64; 2]) -> BoxedStrategy<f64> {
    if lo == hi {
        Just(lo).boxed()
    } else {
        (lo..=hi).prop_map(quantize).boxed()
    }
}

fn race_strategy(s: &RaceSpace) -> BoxedStrategy<Race> {
    let points = s.points.clone();
    let mut choices: Vec<BoxedStrategy<Race>> = Vec::new();
    for name in &s.strategies {
        let point = prop::sample::select(points.clone());
        let strategy = match name.as_str() {
            "random" => (
                point,
                probability_in(s.yield_probability),
                s.yields[0]..=s.yields[1],
                s.sleep_us[0]..=s.sleep_us[1],
                probability_in(s.spurious_wakeup),
            )
                .prop_map(
                    |(point, probability, max_yields, max_sleep_us, spurious_wakeup)| {
                        Race::Random {
                            point,
                            probability,
                            max_yields: max_yields as u32,
                            max_sleep_us,
                            spurious_wakeup,
                        }
                    },
                )
                .boxed(),
            "pct" => (
                point,
                s.depth[0]..=s.depth[1],
                probability_in(s.spurious_wakeup),
            )
                .prop_map(|(point, depth, spurious_wakeup)| Race::Pct {
                    point,
                    depth: depth as u32,
                    steps: 0,
                    spurious_wakeup,
                })
                .boxed(),
            _ => (
                point,
                s.nth[0]..=s.nth[1],
                s.yields[0]..=s.yields[1],
                s.sleep_us[0]..=s.sleep_us[1],
            )
                .prop_map(|(point, nth, yields, sleep_us)| Race::Targeted {
                    point,
                    nth: nth as u32,
                    yields: yields as u32,
                    sleep_us,
                })
                .boxed(),
        };
        choices.push(strategy);
    }
    prop::strategy::Union::new(choices).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> FaultSpace {
        toml::from_str(
            r#"
            [send_buffer]
            hosts = ["server"]
            bytes = [1, 16]
            [segmentation]
            from = ["*"]
            to = ["client-*"]
            max_segment_bytes = [1, 64]
            [[race]]
            points = ["sched.*"]
            [errno]
            hosts = ["proxy"]
            personalities = ["illumos", "openbsd"]
            probability = 0.5
            "#,
        )
        .unwrap()
    }

    #[test]
    fn a_seed_draws_the_same_plan_every_time() {
        let s = space();
        for seed in 0..50 {
            assert_eq!(s.draw(seed).current(), s.draw(seed).current());
        }
        let distinct: std::collections::BTreeSet<String> = (0..50)
            .map(|seed| s.draw(seed).current().to_toml())
            .collect();
        assert!(distinct.len() > 10, "plans should vary with the seed");
    }

    #[test]
    fn plans_round_trip_through_toml_and_json() {
        let s = space();
        for seed in 0..20 {
            let plan = s.draw(seed).current();
            let back: FaultPlan = toml::from_str(&plan.to_toml()).unwrap();
            assert_eq!(plan, back);
            let json = serde_json::to_string(&plan).unwrap();
            assert_eq!(plan, serde_json::from_str::<FaultPlan>(&json).unwrap());
        }
    }

    #[test]
    fn simplifying_reaches_the_empty_plan() {
        let mut tree = space().draw(3);
        let before = tree.current().len();
        assert!(before > 0);
        while tree.simplify() {}
        assert!(tree.current().len() < before);
    }

    #[test]
    fn unknown_plan_keys_are_errors() {
        let err =
            toml::from_str::<FaultPlan>("[[send_buffer]]\nhost = \"a\"\nbytez = 3\n").unwrap_err();
        assert!(err.to_string().contains("bytez"), "{err}");
    }

    #[test]
    fn globs_match_host_names() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("kv-*", "kv-2"));
        assert!(!glob_match("kv-*", "proxy"));
        assert!(glob_match("proxy", "proxy"));
    }
}

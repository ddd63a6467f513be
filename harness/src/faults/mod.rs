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
//!
//! # One file per fault kind
//!
//! Each kind of fault has a file of its own (`send_buffer.rs`, `race.rs`,
//! ...) holding everything about it: its plan entry (`[[KIND]]` in a plan),
//! its space (`[faults.KIND]` or `[[faults.KIND]]` in a scenario), their
//! checks, the part of the strategy that draws it from a seed, its part of
//! a plan's one-line summary and host globs, and what a swarm does with it.
//! The file ends in a `Kind` (`kind.rs`) that hands those to this module
//! as functions over the kind's own entries and its own part of a space: a
//! kind's file knows nothing of [`FaultPlan`] or [`FaultSpace`], and none
//! imports this module. `KINDS` lists the kinds in the order a plan draws
//! them, each put to work on its fields by `listed!`. This module keeps
//! what all kinds make together: [`FaultPlan`], [`FaultSpace`], the
//! strategy, swarms and shrinking ([`PlanTree`]); `common.rs` the helpers
//! the kinds share.
//!
//! # Adding a kind
//!
//! 1. A new file `faults/KIND.rs` with the plan entry, the space and a
//!    `pub(super) const KIND: Kind<Entry, Space>` (copy the closest kind:
//!    `pipe.rs` has one table, `switch.rs` one rule per table).
//! 2. Its module and re-export below, and its field, named as its module,
//!    in [`FaultPlan`] and in [`FaultSpace`] (where it stands there is
//!    where TOML, summaries and checks show it).
//! 3. One line appended, LAST, to `KINDS`: `listed!(KIND, shown: …,
//!    swarmed: …)` with its field's place and the next `swarmed` rank.
//!
//! The order of `KINDS` is part of every recorded seed: a strategy draws
//! its parts one after the other from one random stream, so a kind put
//! anywhere but last would make every seed of every space after it draw
//! another plan (and another swarm, for the `swarmed` rank), and every
//! seed in a README, a bug report or an `[expect]` table would stop
//! reproducing. Appended last, it draws nothing in spaces without it, and
//! the others draw what they always drew. `tests/harness/fault_draws.rs` checks
//! that seeds 0..50 still draw the same plans.
//!
//! A kind whose application shows only at run time (a point, a frame
//! label, a name) also adds its coverage keys to
//! [`FaultSpace::applied_keys`].

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, ValueTree};
use proptest::test_runner::{Config as PropConfig, RngAlgorithm, TestRng, TestRunner};
use rand::Rng;

use serde::{Deserialize, Serialize};

mod common;
mod crash;
mod errno;
mod frame_delay;
mod kind;
mod latency;
mod partition;
mod pipe;
mod race;
mod segmentation;
mod send_buffer;
mod switch;

use common::quantize;
pub use common::{Range2, glob_match};
pub use crash::{Crash, CrashMode, CrashSpace};
pub use errno::{ErrnoPersonality, ErrnoSpace, Personality};
pub use frame_delay::{FrameDelay, FrameDelaySpace};
use kind::{Keep, SpaceHostGlob};
pub use latency::{Latency, LatencySpace};
pub use partition::{PairSpace, Partition, PartitionMode};
pub use pipe::{
    DEFAULT_PIPE_CAPACITY_BYTES, MAX_PIPE_CAPACITY_BYTES, MIN_PIPE_CAPACITY_BYTES, PipeCapacity,
    PipeSpace,
};
pub use race::{RACE_STRATEGIES, Race, RaceSpace};
pub use segmentation::{Segmentation, SegmentationSpace};
pub use send_buffer::{SendBuffer, SendBufferSpace};
pub use switch::{Switch, SwitchSpace};

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
    pub errno: Vec<ErrnoPersonality>,
    /// How many bytes the pipes a host's syscall view creates hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipe: Vec<PipeCapacity>,
    /// Where tasks give way at preemption points (see `schedule`).
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

/// A kind of [`KINDS`] at work on its fields of [`FaultPlan`] and
/// [`FaultSpace`] (see `listed!`), with its places in the other orders.
pub(crate) struct Listed {
    /// The kind's name in plans and spaces.
    pub name: &'static str,
    /// How many entries of the kind a plan holds.
    count: fn(&FaultPlan) -> usize,
    check: fn(&FaultPlan) -> Result<(), String>,
    host_globs: for<'a> fn(&'a FaultPlan, &mut Vec<(&'static str, &'a str)>),
    summary: fn(&FaultPlan, &mut Vec<String>),
    allowed: fn(&FaultSpace) -> bool,
    check_space: fn(&FaultSpace) -> Result<(), String>,
    space_host_globs: for<'a> fn(&'a FaultSpace, &mut Vec<SpaceHostGlob<'a>>),
    /// The strategy that draws what `before` draws, then the kind's entries.
    draw: fn(BoxedStrategy<FaultPlan>, &FaultSpace) -> BoxedStrategy<FaultPlan>,
    swarm: fn(&mut FaultSpace, &mut Keep<'_>),
    /// Its place among the fields of [`FaultPlan`] and [`FaultSpace`]: the
    /// order of TOML, summaries, host globs, kind lists and checks.
    shown: usize,
    /// Its place in a swarm's draw ([`FaultSpace::swarm`]), which gives
    /// each kind its random numbers in this order.
    swarmed: usize,
}

/// The kind of the module `$kind` (whose fields of [`FaultPlan`] and
/// [`FaultSpace`] bear its name) as a [`Listed`].
macro_rules! listed {
    ($kind:ident, shown: $shown:expr, swarmed: $swarmed:expr) => {
        Listed {
            name: $kind::KIND.name,
            count: |plan| plan.$kind.len(),
            check: |plan| ($kind::KIND.check)(&plan.$kind),
            host_globs: |plan, out| ($kind::KIND.host_globs)(&plan.$kind, out),
            summary: |plan, out| ($kind::KIND.summary)(&plan.$kind, out),
            allowed: |space| ($kind::KIND.allowed)(&space.$kind),
            check_space: |space| ($kind::KIND.check_space)(&space.$kind),
            space_host_globs: |space, out| ($kind::KIND.space_host_globs)(&space.$kind, out),
            draw: |before, space| {
                then(before, ($kind::KIND.draw)(&space.$kind), |plan, entries| {
                    plan.$kind = entries
                })
            },
            swarm: |space, keep| ($kind::KIND.swarm)(&mut space.$kind, keep),
            shown: $shown,
            swarmed: $swarmed,
        }
    };
}

/// Every fault kind, in the order a plan draws them from a seed.
///
/// THIS ORDER IS PART OF EVERY RECORDED SEED, and so is `swarmed`: a new
/// kind goes LAST, with the next `swarmed` rank, or old seeds draw other
/// plans (see the module's doc). (`pipe` came last; `swarmed` differs from
/// the draw order because swarms always took the one-table kinds before
/// the kinds of several rules.)
#[rustfmt::skip]
pub(crate) const KINDS: [Listed; 10] = [
    listed!(send_buffer,  shown: 0, swarmed: 0),
    listed!(segmentation, shown: 1, swarmed: 1),
    listed!(frame_delay,  shown: 2, swarmed: 6),
    listed!(errno,        shown: 3, swarmed: 2),
    listed!(race,         shown: 5, swarmed: 7),
    listed!(partition,    shown: 6, swarmed: 3),
    listed!(latency,      shown: 7, swarmed: 4),
    listed!(crash,        shown: 8, swarmed: 5),
    listed!(switch,       shown: 9, swarmed: 8),
    listed!(pipe,         shown: 4, swarmed: 9),
];

/// The kinds in the order of their fields (TOML, summaries, checks).
const SHOWN: [&Listed; KINDS.len()] = ordered(true);

/// The kinds in the order a swarm draws them.
const SWARMED: [&Listed; KINDS.len()] = ordered(false);

/// [`KINDS`] ordered by `shown` or by `swarmed`; a rank missing or given
/// twice does not compile.
const fn ordered(shown: bool) -> [&'static Listed; KINDS.len()] {
    let mut out = [&KINDS[0]; KINDS.len()];
    let mut taken = [false; KINDS.len()];
    let mut i = 0;
    while i < KINDS.len() {
        let rank = if shown {
            KINDS[i].shown
        } else {
            KINDS[i].swarmed
        };
        assert!(!taken[rank], "two fault kinds share a rank");
        taken[rank] = true;
        out[rank] = &KINDS[i];
        i += 1;
    }
    out
}

impl FaultPlan {
    /// How many faults the plan holds (each entry counts as one).
    pub fn len(&self) -> usize {
        SHOWN.iter().map(|k| (k.count)(self)).sum()
    }

    /// Whether the plan injects no fault at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every host glob of the plan: (kind, glob).
    pub fn host_globs(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        for kind in SHOWN {
            (kind.host_globs)(self, &mut out);
        }
        out
    }

    /// A one-line summary for tables and logs.
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "no faults".to_string();
        }
        let mut parts = Vec::new();
        for kind in SHOWN {
            (kind.summary)(self, &mut parts);
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
            toml::from_str(&text).map_err(|e| crate::diag::toml_error(path, &text, &e))
        }
    }

    /// Checks value ranges that serde's types cannot express.
    pub fn validate(&self) -> Result<(), String> {
        SHOWN.iter().try_for_each(|k| (k.check)(self))
    }

    /// The plan of the first of a `pct` plan's two runs (see
    /// [`crate::run`]): every `pct` rule that does not say its
    /// steps, without change points. `None` when there is none.
    pub fn pct_probe(&self) -> Option<FaultPlan> {
        let race = race::pct_probe(&self.race)?;
        Some(FaultPlan {
            race,
            ..self.clone()
        })
    }

    /// This plan with every `pct` rule that does not say its steps given
    /// the steps the first run counted (`race-steps:GLOB` in `coverage`).
    pub fn with_pct_steps(&self, coverage: &BTreeMap<String, u64>) -> FaultPlan {
        let mut plan = self.clone();
        race::set_pct_steps(&mut plan.race, coverage);
        plan
    }
}

impl FaultSpace {
    /// Whether the space allows no fault at all.
    pub fn is_empty(&self) -> bool {
        *self == FaultSpace::default()
    }

    /// The kinds of fault this space may draw, by their plan names.
    pub fn kinds(&self) -> Vec<&'static str> {
        SHOWN
            .iter()
            .filter(|k| (k.allowed)(self))
            .map(|k| k.name)
            .collect()
    }

    /// Checks ranges and probabilities; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        SHOWN.iter().try_for_each(|k| (k.check_space)(self))
    }

    /// This space with every race rule drawing only `strategy` (`random`,
    /// `pct` or `targeted`), its other ranges unchanged: how `reproduce`
    /// measures each strategy's rate over the same race space.
    pub fn with_race_strategy(&self, strategy: &str) -> Result<FaultSpace, String> {
        let mut space = self.clone();
        race::restrict_strategy(&mut space.race, strategy)?;
        Ok(space)
    }

    /// The faults of the space whose application shows only at run time
    /// (a preemption point glob, a frame label, a switch name), each with
    /// the coverage key a run leaves when it applies: (what, key). A sweep
    /// lists those no run applied.
    pub fn applied_keys(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        race::applied_keys(&self.race, &mut out);
        frame_delay::applied_keys(&self.frame_delay, &mut out);
        switch::applied_keys(&self.switch, &mut out);
        out
    }

    /// Every host glob of the space: (table, index of the table among its
    /// kind's, key, glob). Pairs give both hosts under `pairs`.
    pub fn host_globs(&self) -> Vec<(&'static str, usize, &'static str, &str)> {
        let mut out = Vec::new();
        for kind in SHOWN {
            (kind.space_host_globs)(self, &mut out);
        }
        out
    }

    /// The proptest strategy that draws plans from this space: each kind's
    /// part, in the order of `KINDS`.
    pub fn strategy(&self) -> BoxedStrategy<FaultPlan> {
        KINDS
            .iter()
            .fold(Just(FaultPlan::default()).boxed(), |before, k| {
                (k.draw)(before, self)
            })
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
        for kind in SWARMED {
            (kind.swarm)(&mut out, &mut keep);
        }
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

/// The plan `before` draws, then this kind's `entries`, put into the plan
/// by `put`: how each kind's strategy follows the kinds drawn before it.
/// (A pair of strategies draws, and shrinks, its first part first.)
fn then<T: std::fmt::Debug + Clone + 'static>(
    before: BoxedStrategy<FaultPlan>,
    entries: BoxedStrategy<Vec<T>>,
    put: fn(&mut FaultPlan, Vec<T>),
) -> BoxedStrategy<FaultPlan> {
    (before, entries)
        .prop_map(move |(mut plan, entries)| {
            put(&mut plan, entries);
            plan
        })
        .boxed()
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

    /// A space with every kind, and a plan drawn from it with every kind.
    fn every_kind() -> (FaultSpace, FaultPlan) {
        let space: FaultSpace = toml::from_str(
            r#"
            send_buffer = { hosts = ["a"], bytes = [1, 2] }
            segmentation = { from = ["a"], to = ["b"], max_segment_bytes = [1, 2] }
            frame_delay = [{ from = "a", to = "b", frame = "f" }]
            errno = { hosts = ["a"], personalities = ["illumos"] }
            pipe = { hosts = ["a"], capacity_bytes = [4096, 4096] }
            race = [{ points = ["*"] }]
            partition = { pairs = [["a", "b"]], at_ms = [1, 2], duration_ms = [1, 2] }
            latency = { pairs = [["a", "b"]], at_ms = [1, 2], max_ms = [1, 2] }
            crash = { hosts = ["a"], at_ms = [1, 2] }
            switch = [{ name = "s" }]
            "#,
        )
        .unwrap();
        let plan = (0..100)
            .map(|seed| space.draw(seed).current())
            .find(|plan| plan.len() == KINDS.len())
            .expect("some seed draws every kind");
        (space, plan)
    }

    /// The kinds whose key the JSON of `value` has, in the order it has them.
    fn key_order(value: &impl Serialize) -> Vec<&'static str> {
        let json = serde_json::to_string(value).unwrap();
        let mut at: Vec<(usize, &'static str)> = KINDS
            .iter()
            .filter_map(|k| Some((json.find(&format!("\"{}\":", k.name))?, k.name)))
            .collect();
        at.sort();
        at.into_iter().map(|(_, name)| name).collect()
    }

    #[test]
    fn kinds_are_shown_in_the_order_of_the_fields() {
        let (space, plan) = every_kind();
        let shown: Vec<&str> = SHOWN.iter().map(|k| k.name).collect();
        assert_eq!(key_order(&plan), shown);
        assert_eq!(key_order(&space), shown);
        assert_eq!(space.kinds(), shown);
        assert_eq!(plan.summary().split(", ").count(), KINDS.len());
    }

    #[test]
    fn each_kind_fills_its_own_field() {
        let (space, plan) = every_kind();
        for listed in &KINDS {
            let kind = listed;
            assert_eq!((kind.count)(&plan), 1, "{}", kind.name);
            assert!((kind.allowed)(&space), "{}", kind.name);
            let alone = (kind.draw)(Just(FaultPlan::default()).boxed(), &space);
            let alone = (0..100)
                .map(|seed| alone.new_tree(&mut plan_runner(seed)).unwrap().current())
                .find(|plan| !plan.is_empty())
                .unwrap();
            assert_eq!(key_order(&alone), vec![kind.name]);
        }
    }

    #[test]
    fn globs_match_host_names() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("kv-*", "kv-2"));
        assert!(!glob_match("kv-*", "proxy"));
        assert!(glob_match("proxy", "proxy"));
    }
}

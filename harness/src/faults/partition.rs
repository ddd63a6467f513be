//! `partition`: network partitions between two sets of hosts, which drop
//! or hold the messages between them (`[[partition]]` in a plan,
//! `[faults.partition]` in a scenario). The runner applies it through
//! turmoil.
//!
//! Everything about the kind is here (plan entry, space, checks, how a seed
//! draws it, how it is summarised); [`super::KINDS`] says when it is drawn.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::common::{
    Range2, check_probability, check_range, default_probability, has_probability, maybe, swarm_one,
};
use super::kind::Kind;

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

has_probability!(PairSpace);

pub(super) const KIND: Kind<Partition, Option<PairSpace>> = Kind {
    name: "partition",
    check: |_| Ok(()),
    host_globs: |entries, out| {
        for f in entries {
            out.push(("partition", f.a.as_str()));
            out.push(("partition", f.b.as_str()));
        }
    },
    summary: |entries, out| {
        for f in entries {
            out.push(format!("partition {}|{}@{}ms", f.a, f.b, f.at_ms));
        }
    },
    allowed: |space| space.is_some(),
    check_space: |space| {
        if let Some(s) = space {
            if s.pairs.is_empty() {
                return Err("faults.partition.pairs is empty".into());
            }
            check_range("faults.partition.at_ms", &s.at_ms)?;
            check_range("faults.partition.duration_ms", &s.duration_ms)?;
            check_probability("faults.partition", s.probability)?;
        }
        Ok(())
    },
    space_host_globs: |space, out| {
        if let Some(s) = space {
            for [a, b] in &s.pairs {
                out.push(("partition", 0, "pairs", a.as_str()));
                out.push(("partition", 0, "pairs", b.as_str()));
            }
        }
    },
    draw,
    swarm: |space, keep| swarm_one(space, keep),
};

fn draw(space: &Option<PairSpace>) -> BoxedStrategy<Vec<Partition>> {
    maybe(space.as_ref(), |s| {
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
    })
}

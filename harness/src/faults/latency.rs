//! `latency`: changes of link latency at a simulated time (`[[latency]]`
//! in a plan, `[faults.latency]` in a scenario). The runner applies it
//! through turmoil.
//!
//! Everything about the kind is here (plan entry, space, checks, how a seed
//! draws it, how it is summarised); [`super::KINDS`] says when it is drawn.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::common::{
    Range2, check_probability, check_range, default_probability, has_probability, maybe, swarm_one,
};
use super::kind::Kind;

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

has_probability!(LatencySpace);

pub(super) const KIND: Kind<Latency, Option<LatencySpace>> = Kind {
    name: "latency",
    check: |_| Ok(()),
    host_globs: |entries, out| {
        for f in entries {
            out.push(("latency", f.a.as_str()));
            out.push(("latency", f.b.as_str()));
        }
    },
    summary: |entries, out| {
        for f in entries {
            out.push(format!(
                "latency {}-{}<={}ms@{}ms",
                f.a, f.b, f.max_ms, f.at_ms
            ));
        }
    },
    allowed: |space| space.is_some(),
    check_space: |space| {
        if let Some(s) = space {
            if s.pairs.is_empty() {
                return Err("faults.latency.pairs is empty".into());
            }
            check_range("faults.latency.at_ms", &s.at_ms)?;
            check_range("faults.latency.max_ms", &s.max_ms)?;
            check_probability("faults.latency", s.probability)?;
        }
        Ok(())
    },
    space_host_globs: |space, out| {
        if let Some(s) = space {
            for [a, b] in &s.pairs {
                out.push(("latency", 0, "pairs", a.as_str()));
                out.push(("latency", 0, "pairs", b.as_str()));
            }
        }
    },
    draw,
    swarm: |space, keep| swarm_one(space, keep),
};

fn draw(space: &Option<LatencySpace>) -> BoxedStrategy<Vec<Latency>> {
    maybe(space.as_ref(), |s| {
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
    })
}

//! `segmentation`: byte streams delivered in segments of seeded sizes, so
//! that a reader sees a message in pieces (`[[segmentation]]` in a plan,
//! `[faults.segmentation]` in a scenario). The simulated TCP in
//! `net` applies it.
//!
//! Everything about the kind is here (plan entry, space, checks, how a seed
//! draws it, how it is summarised); [`super::KINDS`] says when it is drawn.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::common::{
    Range2, check_hosts, check_probability, check_range, default_probability, has_probability,
    maybe, swarm_one,
};
use super::kind::Kind;

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

has_probability!(SegmentationSpace);

pub(super) const KIND: Kind<Segmentation, Option<SegmentationSpace>> = Kind {
    name: "segmentation",
    check: |entries| {
        for f in entries {
            if f.max_segment_bytes == 0 {
                return Err("segmentation.max_segment_bytes must be at least 1".into());
            }
        }
        Ok(())
    },
    host_globs: |entries, out| {
        for f in entries {
            out.push(("segmentation", f.from.as_str()));
            out.push(("segmentation", f.to.as_str()));
        }
    },
    summary: |entries, out| {
        for f in entries {
            out.push(format!(
                "segmentation {}->{}<={}B",
                f.from, f.to, f.max_segment_bytes
            ));
        }
    },
    allowed: |space| space.is_some(),
    check_space: |space| {
        if let Some(s) = space {
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
        Ok(())
    },
    space_host_globs: |space, out| {
        if let Some(s) = space {
            out.extend(
                s.from
                    .iter()
                    .map(|h| ("segmentation", 0, "from", h.as_str())),
            );
            out.extend(s.to.iter().map(|h| ("segmentation", 0, "to", h.as_str())));
        }
    },
    draw,
    swarm: |space, keep| swarm_one(space, keep),
};

fn draw(space: &Option<SegmentationSpace>) -> BoxedStrategy<Vec<Segmentation>> {
    maybe(space.as_ref(), |s| {
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
    })
}

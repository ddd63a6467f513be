//! `frame_delay`: frames delayed, or held until an event, on their way to
//! the reader (`[[frame_delay]]` in a plan, `[[faults.frame_delay]]`, one
//! rule per table, in a scenario). The simulated TCP in `net`
//! applies it, finding frames with the scenario's [`Framer`](crate::Framer).
//!
//! Everything about the kind is here (plan entry, space, checks, how a seed
//! draws it, how it is summarised); [`super::KINDS`] says when it is drawn.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::common::{
    Range2, check_probability, check_range, default_probability, each, has_probability, nth_in,
    swarm_each,
};
use super::kind::Kind;
use crate::coverage;

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

has_probability!(FrameDelaySpace);

/// The coverage keys of the space's rules, for
/// [`super::FaultSpace::applied_keys`]: a frame label is checked only by the
/// frames that pass.
pub(super) fn applied_keys(rules: &[FrameDelaySpace], out: &mut Vec<(String, String)>) {
    for s in rules {
        out.push((
            format!(
                "[[faults.frame_delay]] `{}` {} -> {}: no such frame passed",
                s.frame, s.from, s.to
            ),
            coverage::frame_delay_applied(&s.from, &s.to, &s.frame),
        ));
    }
}

pub(super) const KIND: Kind<FrameDelay, Vec<FrameDelaySpace>> = Kind {
    name: "frame_delay",
    check: |entries| {
        for f in entries {
            if f.nth == Some(0) {
                return Err("frame_delay.nth is 1-based".into());
            }
        }
        Ok(())
    },
    host_globs: |entries, out| {
        for f in entries {
            out.push(("frame_delay", f.from.as_str()));
            out.push(("frame_delay", f.to.as_str()));
        }
    },
    summary: |entries, out| {
        for f in entries {
            match &f.hold_until {
                Some(event) => out.push(format!(
                    "hold {} {}->{} until {}",
                    f.frame, f.from, f.to, event
                )),
                None => out.push(format!(
                    "delay {} {}->{} {}ms",
                    f.frame, f.from, f.to, f.delay_ms
                )),
            }
        }
    },
    allowed: |space| !space.is_empty(),
    check_space: |space| {
        for s in space {
            check_range("faults.frame_delay.delay_ms", &s.delay_ms)?;
            if let Some(nth) = &s.nth {
                check_range("faults.frame_delay.nth", nth)?;
                if nth[0] == 0 {
                    return Err("faults.frame_delay.nth is 1-based".into());
                }
            }
            check_probability("faults.frame_delay", s.probability)?;
        }
        Ok(())
    },
    space_host_globs: |space, out| {
        for (i, s) in space.iter().enumerate() {
            out.push(("frame_delay", i, "from", s.from.as_str()));
            out.push(("frame_delay", i, "to", s.to.as_str()));
        }
    },
    draw,
    swarm: |space, keep| swarm_each(space, keep),
};

#[allow(
    clippy::ptr_arg,
    reason = "the type of `Kind::draw` for every kind of several rules: its part of a space is a `Vec`"
)]
fn draw(space: &Vec<FrameDelaySpace>) -> BoxedStrategy<Vec<FrameDelay>> {
    each(space, |s| {
        let template = s.clone();
        (nth_in(s.nth), s.delay_ms[0]..=s.delay_ms[1])
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
    })
}

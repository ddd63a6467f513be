//! `switch`: named misbehaviours of the system under test that a plan
//! switches on (`[[switch]]` in a plan, `[[faults.switch]]`, one per table,
//! in a scenario). The harness does not know what they do: the code under
//! test asks [`crate::switch`].
//!
//! Everything about the kind is here (plan entry, space, checks, how a seed
//! draws it, how it is summarised); [`super::KINDS`] says when it is drawn.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::common::{
    Range2, any_host, check_probability, check_range, default_probability, each, has_probability,
    nth_in, probability_in, swarm_each,
};
use super::kind::Kind;
use crate::coverage;

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

fn one() -> f64 {
    1.0
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

has_probability!(SwitchSpace);

/// The coverage keys of the space's switches, for
/// [`super::FaultSpace::applied_keys`]: a name is checked only by the code under
/// test asking for it.
pub(super) fn applied_keys(rules: &[SwitchSpace], out: &mut Vec<(String, String)>) {
    for s in rules {
        out.push((
            format!(
                "[[faults.switch]] `{}`: the code under test never asked for it",
                s.name
            ),
            coverage::switch_applied(&s.name),
        ));
    }
}

pub(super) const KIND: Kind<Switch, Vec<SwitchSpace>> = Kind {
    name: "switch",
    check: |entries| {
        for f in entries {
            if !(0.0..=1.0).contains(&f.rate) {
                return Err("switch.rate must be within 0..=1".into());
            }
        }
        Ok(())
    },
    host_globs: |entries, out| {
        for f in entries {
            out.push(("switch", f.host.as_str()));
        }
    },
    summary: |entries, out| {
        for f in entries {
            out.push(format!("switch {}@{}", f.name, f.host));
        }
    },
    allowed: |space| !space.is_empty(),
    check_space: |space| {
        for s in space {
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
    },
    space_host_globs: |space, out| {
        for (i, s) in space.iter().enumerate() {
            out.push(("switch", i, "host", s.host.as_str()));
        }
    },
    draw,
    swarm: |space, keep| swarm_each(space, keep),
};

#[allow(
    clippy::ptr_arg,
    reason = "the type of `Kind::draw` for every kind of several rules: its part of a space is a `Vec`"
)]
fn draw(space: &Vec<SwitchSpace>) -> BoxedStrategy<Vec<Switch>> {
    each(space, |s| {
        let template = s.clone();
        (probability_in(s.rate), nth_in(s.nth))
            .prop_map(move |(rate, nth)| Switch {
                name: template.name.clone(),
                host: template.host.clone(),
                rate,
                nth,
            })
            .boxed()
    })
}

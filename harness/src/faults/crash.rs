//! `crash`: host crashes, of the machine or of its software only, with an
//! optional restart (`[[crash]]` in a plan, `[faults.crash]` in a
//! scenario). The runner applies it through turmoil.
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

has_probability!(CrashSpace);

pub(super) const KIND: Kind<Crash, Option<CrashSpace>> = Kind {
    name: "crash",
    check: |_| Ok(()),
    host_globs: |entries, out| {
        for f in entries {
            out.push(("crash", f.host.as_str()));
        }
    },
    summary: |entries, out| {
        for f in entries {
            let what = match f.mode {
                CrashMode::Machine => "",
                CrashMode::Process => " (process)",
            };
            out.push(format!("crash {}@{}ms{what}", f.host, f.at_ms));
        }
    },
    allowed: |space| space.is_some(),
    check_space: |space| {
        if let Some(s) = space {
            check_hosts("faults.crash.hosts", &s.hosts)?;
            check_range("faults.crash.at_ms", &s.at_ms)?;
            if let Some(d) = &s.down_ms {
                check_range("faults.crash.down_ms", d)?;
            }
            check_probability("faults.crash", s.probability)?;
        }
        Ok(())
    },
    space_host_globs: |space, out| {
        if let Some(s) = space {
            out.extend(s.hosts.iter().map(|h| ("crash", 0, "hosts", h.as_str())));
        }
    },
    draw,
    swarm: |space, keep| swarm_one(space, keep),
};

fn draw(space: &Option<CrashSpace>) -> BoxedStrategy<Vec<Crash>> {
    maybe(space.as_ref(), |s| {
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
    })
}

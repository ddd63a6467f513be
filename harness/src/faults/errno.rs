//! `errno`: which platform's errno a host's syscall view answers with
//! (`[[errno]]` in a plan, `[faults.errno]` in a scenario). The syscall
//! view in [`crate::sys`] applies it.
//!
//! Everything about the kind is here (plan entry, space, checks, how a seed
//! draws it, how it is summarised); [`super::KINDS`] says when it is drawn.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::common::{
    check_hosts, check_probability, default_probability, has_probability, maybe, swarm_one,
};
use super::kind::Kind;

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
pub struct ErrnoPersonality {
    /// Hosts whose syscall view ([`crate::sys::Sys`]) takes the personality
    /// (glob).
    pub host: String,
    /// The platform whose answers they give.
    pub personality: Personality,
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

has_probability!(ErrnoSpace);

pub(super) const KIND: Kind<ErrnoPersonality, Option<ErrnoSpace>> = Kind {
    name: "errno",
    check: |_| Ok(()),
    host_globs: |entries, out| {
        for f in entries {
            out.push(("errno", f.host.as_str()));
        }
    },
    summary: |entries, out| {
        for f in entries {
            out.push(format!("errno {}={}", f.host, f.personality.name()));
        }
    },
    allowed: |space| space.is_some(),
    check_space: |space| {
        if let Some(s) = space {
            check_hosts("faults.errno.hosts", &s.hosts)?;
            if s.personalities.is_empty() {
                return Err("faults.errno.personalities is empty".into());
            }
            check_probability("faults.errno", s.probability)?;
        }
        Ok(())
    },
    space_host_globs: |space, out| {
        if let Some(s) = space {
            out.extend(s.hosts.iter().map(|h| ("errno", 0, "hosts", h.as_str())));
        }
    },
    draw,
    swarm: |space, keep| swarm_one(space, keep),
};

fn draw(space: &Option<ErrnoSpace>) -> BoxedStrategy<Vec<ErrnoPersonality>> {
    maybe(space.as_ref(), |s| {
        (
            prop::sample::select(s.hosts.clone()),
            prop::sample::select(s.personalities.clone()),
        )
            .prop_map(|(host, personality)| ErrnoPersonality { host, personality })
            .boxed()
    })
}

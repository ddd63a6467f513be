//! `pipe`: how many bytes the pipes a host's syscall view creates hold
//! (`[[pipe]]` in a plan, `[faults.pipe]` in a scenario). The syscall view
//! in [`crate::sys`] applies it; `splice` into a full pipe stops short.
//!
//! Everything about the kind is here (plan entry, space, checks, how a seed
//! draws it, how it is summarised); [`super::KINDS`] says when it is drawn
//! (last: it came after the others, and seeds recorded before it still draw
//! what they drew).

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::common::{
    Range2, check_hosts, check_probability, check_range, default_probability, has_probability,
    maybe, swarm_one,
};
use super::kind::Kind;

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
pub struct PipeCapacity {
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

has_probability!(PipeSpace);

pub(super) const KIND: Kind<PipeCapacity, Option<PipeSpace>> = Kind {
    name: "pipe",
    check: |entries| {
        for f in entries {
            check_pipe_capacity("pipe.capacity_bytes", u64::from(f.capacity_bytes))?;
        }
        Ok(())
    },
    host_globs: |entries, out| {
        for f in entries {
            out.push(("pipe", f.host.as_str()));
        }
    },
    summary: |entries, out| {
        for f in entries {
            out.push(format!("pipe {}={}B", f.host, f.capacity_bytes));
        }
    },
    allowed: |space| space.is_some(),
    check_space: |space| {
        if let Some(s) = space {
            check_hosts("faults.pipe.hosts", &s.hosts)?;
            check_range("faults.pipe.capacity_bytes", &s.capacity_bytes)?;
            check_pipe_capacity("faults.pipe.capacity_bytes", s.capacity_bytes[0])?;
            check_pipe_capacity("faults.pipe.capacity_bytes", s.capacity_bytes[1])?;
            check_probability("faults.pipe", s.probability)?;
        }
        Ok(())
    },
    space_host_globs: |space, out| {
        if let Some(s) = space {
            out.extend(s.hosts.iter().map(|h| ("pipe", 0, "hosts", h.as_str())));
        }
    },
    draw,
    swarm: |space, keep| swarm_one(space, keep),
};

fn draw(space: &Option<PipeSpace>) -> BoxedStrategy<Vec<PipeCapacity>> {
    maybe(space.as_ref(), |s| {
        (
            prop::sample::select(s.hosts.clone()),
            s.capacity_bytes[0]..=s.capacity_bytes[1],
        )
            .prop_map(|(host, capacity)| PipeCapacity {
                host,
                capacity_bytes: capacity as u32,
            })
            .boxed()
    })
}

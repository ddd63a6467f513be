//! `send_buffer`: tiny socket send buffers, so that writes become short,
//! then block (`[[send_buffer]]` in a plan, `[faults.send_buffer]` in a
//! scenario). The simulated TCP in `net` applies it.
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

has_probability!(SendBufferSpace);

pub(super) const KIND: Kind<SendBuffer, Option<SendBufferSpace>> = Kind {
    name: "send_buffer",
    check: |entries| {
        for f in entries {
            if f.bytes == 0 {
                return Err("send_buffer.bytes must be at least 1".into());
            }
        }
        Ok(())
    },
    host_globs: |entries, out| {
        for f in entries {
            out.push(("send_buffer", f.host.as_str()));
            if let Some(peer) = &f.peer {
                out.push(("send_buffer", peer.as_str()));
            }
        }
    },
    summary: |entries, out| {
        for f in entries {
            out.push(format!("send_buffer {}={}B", f.host, f.bytes));
        }
    },
    allowed: |space| space.is_some(),
    check_space: |space| {
        if let Some(s) = space {
            check_hosts("faults.send_buffer.hosts", &s.hosts)?;
            check_range("faults.send_buffer.bytes", &s.bytes)?;
            if s.bytes[0] == 0 {
                return Err("faults.send_buffer.bytes must start at 1 or more".into());
            }
            check_probability("faults.send_buffer", s.probability)?;
        }
        Ok(())
    },
    space_host_globs: |space, out| {
        if let Some(s) = space {
            out.extend(
                s.hosts
                    .iter()
                    .map(|h| ("send_buffer", 0, "hosts", h.as_str())),
            );
        }
    },
    draw,
    swarm: |space, keep| swarm_one(space, keep),
};

fn draw(space: &Option<SendBufferSpace>) -> BoxedStrategy<Vec<SendBuffer>> {
    maybe(space.as_ref(), |s| {
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
    })
}

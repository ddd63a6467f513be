//! A small rebalance: move vbuckets from one node to another.
//!
//! For the vbuckets still active on the old node: make them replicas on
//! the new node, replicate them (the replicator's set-up call), wait until
//! the new node has caught up with what the old node held when the wait
//! began (the backfill), then take each over (its stream closed, a takeover
//! stream opened; the old node's copy goes dead, the new one active). The
//! caller hears ok, or the first error. Each stream's set-up is an
//! operation the liveness oracle watches (`setup vb N`); the caller watches
//! the rebalance as a whole.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::admin::{Admin, VbInfo};
use super::consumer::SetupError;
use super::replicator::Replicator;
use crate::protocol::client::ClientError;
use crate::protocol::dcp::vbucket_state;

/// Limits of one rebalance.
#[derive(Clone, Copy, Debug)]
pub struct RebalanceConfig {
    /// Longest wait for the new node to catch up, in simulated ms.
    pub backfill_timeout_ms: u64,
    /// How often the backfill's progress is read, in simulated ms.
    pub poll_interval_ms: u64,
}

impl Default for RebalanceConfig {
    fn default() -> Self {
        RebalanceConfig {
            backfill_timeout_ms: 5_000,
            poll_interval_ms: 5,
        }
    }
}

#[derive(Debug)]
pub enum RebalanceError {
    /// Setting up, closing or taking over a stream failed.
    Streams(SetupError),
    /// A node did not answer as it should.
    Node {
        host: String,
        error: ClientError,
    },
    /// The stream of a vbucket ended before its backfill completed.
    StreamLost(u16),
    BackfillTimeout {
        vb: u16,
        have: u64,
        want: u64,
    },
    /// After its takeover the vbucket is not where it should be.
    NotMoved {
        vb: u16,
        old: String,
        new: String,
    },
}

impl std::fmt::Display for RebalanceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RebalanceError::Streams(e) => write!(f, "{e}"),
            RebalanceError::Node { host, error } => write!(f, "{host}: {error}"),
            RebalanceError::StreamLost(vb) => {
                write!(f, "the stream of vb {vb} ended during its backfill")
            }
            RebalanceError::BackfillTimeout { vb, have, want } => {
                write!(f, "vb {vb} backfilled to seqno {have} of {want} in time")
            }
            RebalanceError::NotMoved { vb, old, new } => {
                write!(f, "vb {vb} is {old} on the old node and {new} on the new")
            }
        }
    }
}

impl std::error::Error for RebalanceError {}

impl From<SetupError> for RebalanceError {
    fn from(e: SetupError) -> Self {
        RebalanceError::Streams(e)
    }
}

async fn vbuckets(admin: &mut Admin) -> Result<BTreeMap<u16, VbInfo>, RebalanceError> {
    admin
        .vbuckets()
        .await
        .map_err(|error| RebalanceError::Node {
            host: admin.host.clone(),
            error,
        })
}

/// Moves `vbs` from `old` (the replicator's producer) to `new` (its
/// consumer). Returns the vbuckets moved by this call.
pub async fn rebalance(
    replicator: &Replicator,
    old: &mut Admin,
    new: &mut Admin,
    vbs: &BTreeSet<u16>,
    config: RebalanceConfig,
) -> Result<BTreeSet<u16>, RebalanceError> {
    let before = vbuckets(old).await?;
    let moving: BTreeSet<u16> = vbs
        .iter()
        .copied()
        .filter(|vb| before.get(vb).is_some_and(|v| v.state == "active"))
        .collect();
    tracing::info!(target: "faultline::ns", from = old.host.as_str(), to = new.host.as_str(), vbs = ?moving, "rebalance starts");
    for &vb in &moving {
        new.set_vbucket_state(vb, vbucket_state::REPLICA)
            .await
            .map_err(|error| RebalanceError::Node {
                host: new.host.clone(),
                error,
            })?;
    }
    let mut streams = replicator.partitions().await?;
    streams.extend(moving.iter().copied());
    replicator.setup_replication(&streams).await?;
    wait_for_backfill(replicator, old, new, &moving, config).await?;
    for &vb in &moving {
        replicator.takeover(vb).await?;
    }
    let (after_old, after_new) = (vbuckets(old).await?, vbuckets(new).await?);
    for &vb in &moving {
        let state =
            |m: &BTreeMap<u16, VbInfo>| m.get(&vb).map(|v| v.state.clone()).unwrap_or_default();
        let (o, n) = (state(&after_old), state(&after_new));
        if o == "active" || n != "active" {
            return Err(RebalanceError::NotMoved { vb, old: o, new: n });
        }
    }
    tracing::info!(target: "faultline::ns", from = old.host.as_str(), to = new.host.as_str(), vbs = ?moving, "rebalance done");
    Ok(moving)
}

/// Waits until `new` holds, for every vbucket, at least what `old` held
/// when the wait began, while its stream stays open.
async fn wait_for_backfill(
    replicator: &Replicator,
    old: &mut Admin,
    new: &mut Admin,
    vbs: &BTreeSet<u16>,
    config: RebalanceConfig,
) -> Result<(), RebalanceError> {
    let want = vbuckets(old).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(config.backfill_timeout_ms);
    loop {
        let open = replicator.partitions().await?;
        if let Some(&vb) = vbs.iter().find(|vb| !open.contains(vb)) {
            return Err(RebalanceError::StreamLost(vb));
        }
        let have = vbuckets(new).await?;
        let behind = vbs.iter().find_map(|vb| {
            let want = want.get(vb).map(|v| v.high_seqno).unwrap_or(0);
            let have = have.get(vb).map(|v| v.high_seqno).unwrap_or(0);
            (have < want).then_some((*vb, have, want))
        });
        let Some((vb, have, want)) = behind else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(RebalanceError::BackfillTimeout { vb, have, want });
        }
        tokio::time::sleep(Duration::from_millis(config.poll_interval_ms)).await;
    }
}

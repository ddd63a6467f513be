//! The node's DCP connection map (kv_engine's `DcpConnMap`). It is part of
//! the node (`Node::dcp`), so it takes no node: what needs one
//! (`notify_vbucket` in `notify.rs`, `DcpConn` in `mod.rs`) is above it.

use std::collections::BTreeMap;
use std::rc::{Rc, Weak};

use faultline_harness::sync::Mutex;

use super::durability_monitor::DurabilityMonitor;
use super::producer::Producer;

/// A node's DCP state: its producers (to wake them when a vbucket changes)
/// and the durability monitor of its synchronous writes.
///
/// Shared under harness locks, as kv_engine's: the conn map
/// (`dcp.conn_map.conns`, the `DcpConnMap`'s connection lock) and the
/// durability monitor's state (`kv.vbucket.durability_monitor.state`;
/// kv_engine has one monitor per vbucket, here one for the node's
/// vbuckets). Each producer's streams are under `dcp.producer.streams`.
/// Lock order, with the store's: vbucket state -> conn map -> producer
/// streams -> hash table -> checkpoint queue -> durability monitor.
pub struct Dcp {
    /// Opened and closed by `DcpConn` (`mod.rs`).
    pub(super) producers: Mutex<BTreeMap<u64, Weak<Producer>>>,
    pub durability: Mutex<DurabilityMonitor>,
}

impl Default for Dcp {
    fn default() -> Dcp {
        Dcp {
            producers: Mutex::new("dcp.conn_map.conns", BTreeMap::new()),
            durability: Mutex::new(
                "kv.vbucket.durability_monitor.state",
                DurabilityMonitor::default(),
            ),
        }
    }
}

impl Dcp {
    /// How many producer connections are open.
    pub async fn producer_count(&self) -> usize {
        self.producers.lock().await.len()
    }

    pub(super) async fn producers(&self) -> Vec<Rc<Producer>> {
        self.producers
            .lock()
            .await
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Whether a replica follows this vbucket (a stream that is not a
    /// takeover): synchronous writes need one.
    pub async fn has_replica_stream(&self, vb: u16) -> bool {
        for producer in self.producers().await {
            if producer.has_replica_stream(vb).await {
                return true;
            }
        }
        false
    }

    /// The vbucket is no longer active here: its streams end (state
    /// changed) and its synchronous writes become ambiguous.
    pub(crate) async fn vbucket_left_active(&self, vb: u16) {
        for producer in self.producers().await {
            producer.vbucket_left_active(vb).await;
        }
        self.durability.lock().await.abandon(vb);
    }
}

//! The node's DCP connection map (kv_engine's `DcpConnMap`). It is part of
//! the node (`Node::dcp`), so it takes no node: what needs one
//! (`notify_vbucket` in `notify.rs`, `DcpConn` in `mod.rs`) is above it.
//!
//! Nor does it name the producer: it holds its producers as
//! [`ProducerConn`]s, the few calls it makes on them, because the producer
//! serves its peer with the whole node (store, executor, durability
//! monitor) and the node holds this map: naming the producer here would
//! make the node depend on itself.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};

use faultline_harness::sync::Mutex;

use super::durability_monitor::DurabilityMonitor;
use crate::server::executor::Executor;

/// What a [`ProducerConn`] call returns: a trait object cannot have
/// `async fn`s, so the calls box their futures, as the executor's tasks do.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A producer connection as the conn map reaches it (kv_engine's conn map
/// calls the same on its `ConnHandler`s): when a vbucket's log grows, when
/// a synchronous write asks for a replica, when a vbucket stops being
/// active. Implemented by `producer::Producer`; none of the calls takes
/// the node.
pub trait ProducerConn {
    /// The vbucket's log reached `high_seqno`: a stream behind it is put on
    /// the checkpoint processor's work queue, and `executor` wakes the
    /// processor.
    fn notify<'a>(&'a self, executor: &'a Executor, vb: u16, high_seqno: u64) -> Pending<'a, ()>;

    /// Whether a replica follows the vbucket (a stream that is not a
    /// takeover).
    fn has_replica_stream(&self, vb: u16) -> Pending<'_, bool>;

    /// The vbucket left the active state: its streams end, except a
    /// takeover that is handing it over.
    fn vbucket_left_active(&self, vb: u16) -> Pending<'_, ()>;
}

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
    pub(super) producers: Mutex<BTreeMap<u64, Weak<dyn ProducerConn>>>,
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

    pub(super) async fn producers(&self) -> Vec<Rc<dyn ProducerConn>> {
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

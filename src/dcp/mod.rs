//! The cluster manager's side of replication (modelled on ns_server's
//! `dcp_proxy`, `dcp_consumer_conn`, `dcp_producer_conn` and
//! `dcp_replicator`). It runs on its own host (`ns`) and talks to kv nodes
//! only over the network.
//!
//! ```text
//!   replicator ──calls──► proxy task ──DCP──► consumer kv node (ADD_STREAM, CLOSE_STREAM)
//!        ▲                   │  ▲                    │
//!        └──answers──────────┘  └──relays both ways──┘◄──► producer kv node
//! ```
//!
//! * [`proxy`]: two DCP connections, every packet relayed between them and
//!   seen on the way (by the consumer connection's state machine and by
//!   the [`watch`]);
//! * [`consumer`]: the set-up state machine (idle, setting up streams,
//!   takeover, shut) and MB-53445's lines;
//! * [`producer`]: which producer packets the state machine must see;
//! * [`replicator`]: owns a proxy, rebuilds it after a failure, and checks
//!   every "ok" it passes on (oracle `stream-safety`);
//! * [`rebalance`]: moves vbuckets between two nodes with a replicator;
//!   [`admin`]: the plain connection for vbucket states and seqnos.
//!
//! What it may not know: a kv node's internals (only packets and STAT
//! answers), or which faults a run injects.

pub mod admin;
pub mod consumer;
pub mod producer;
pub mod proxy;
pub mod rebalance;
pub mod replicator;
pub mod watch;

pub use consumer::{ConsumerConn, SetupError};
pub use proxy::ProxyConfig;
pub use rebalance::{RebalanceConfig, RebalanceError, rebalance};
pub use replicator::Replicator;

/// The name of the replication from `producer` to `consumer`.
pub fn replication_name(producer: &str, consumer: &str) -> String {
    format!("replication:{producer}->{consumer}:default")
}

//! Workloads: the code that builds a scenario's simulation (hosts, clients,
//! framer) from its parameters. Scenario files name them.

use std::sync::Arc;

use faultline_harness::Registry;

pub mod durable;
pub mod echo;
pub mod health;
pub mod kv;
pub mod proxy;
pub mod rebalance;
pub mod store_model;
pub mod traffic;
pub mod whole;

/// Every workload this build knows.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(Arc::new(echo::EchoWorkload));
    registry.register(Arc::new(kv::KvClients));
    registry.register(Arc::new(rebalance::DcpRebalance));
    registry.register(Arc::new(durable::DurableWrites));
    registry.register(Arc::new(proxy::ProxyWorkload));
    registry.register(Arc::new(whole::WholeSystem));
    registry
}

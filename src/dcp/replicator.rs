//! The replicator (the cluster manager's `dcp_replicator`): replication of
//! a set of vbuckets from one producer node to one consumer node, over a
//! proxy it owns. When the proxy fails, the call in progress returns the
//! error and the next call builds a new proxy ("dropped and rebuilt").
//!
//! The replicator is also where the caller hears "ok", so it checks every
//! "ok" against what the proxy saw pass (oracle `stream-safety`): a caller
//! must never be told a stream is up whose end passed before its
//! `DCP_ADD_STREAM` was answered.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

use faultline_harness::oracle;

use super::consumer::{CallResult, SetupError};
use super::proxy::{self, Call, ProxyConfig, ProxyHandle};

pub struct Replicator {
    config: ProxyConfig,
    proxy: RefCell<Option<ProxyHandle>>,
    /// Proxies built so far.
    builds: Cell<u32>,
}

impl Replicator {
    /// A replicator; it connects on its first call.
    pub fn new(config: ProxyConfig) -> Replicator {
        Replicator {
            config,
            proxy: RefCell::new(None),
            builds: Cell::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// How many proxies were built (1 + rebuilds after failures).
    pub fn builds(&self) -> u32 {
        self.builds.get()
    }

    /// The running proxy, or a new one.
    async fn proxy(&self) -> Result<ProxyHandle, SetupError> {
        if let Some(handle) = self.proxy.borrow().as_ref().filter(|h| h.is_alive()) {
            return Ok(handle.clone());
        }
        if let Some(old) = self.proxy.borrow_mut().take() {
            tracing::info!(target: "faultline::ns", conn = self.name(), failure = old.failure().as_deref().unwrap_or("-"), "rebuilding the replication connection");
        }
        let handle = proxy::start(self.config.clone())
            .await
            .map_err(|e| SetupError::ConnectionFailed(format!("connecting: {e}")))?;
        self.builds.set(self.builds.get() + 1);
        *self.proxy.borrow_mut() = Some(handle.clone());
        Ok(handle)
    }

    /// Replicates exactly `vbs`: opens the missing streams, closes the
    /// others. Returns once every stream answered.
    pub async fn setup_replication(&self, vbs: &BTreeSet<u16>) -> CallResult {
        let proxy = self.proxy().await?;
        let result = proxy
            .call(|owner| Call::SetupStreams(vbs.clone(), owner))
            .await;
        if result.is_ok() {
            self.check_up(&proxy, vbs);
        }
        result
    }

    /// Takes `vb` over: closes its replication stream, then opens a
    /// takeover stream; returns when the vbucket is active on the consumer.
    pub async fn takeover(&self, vb: u16) -> CallResult {
        let proxy = self.proxy().await?;
        proxy
            .call(|owner| Call::MaybeCloseStream(vb, owner))
            .await?;
        proxy.call(|owner| Call::Takeover(vb, owner)).await
    }

    /// The vbuckets with an open stream (empty when not connected).
    pub async fn partitions(&self) -> Result<BTreeSet<u16>, SetupError> {
        let proxy = self.proxy.borrow().clone();
        match proxy {
            Some(proxy) if proxy.is_alive() => proxy.partitions().await,
            _ => Ok(BTreeSet::new()),
        }
    }

    /// Closes every stream and lets the connections go.
    pub async fn shut(&self) -> CallResult {
        let proxy = self.proxy.borrow_mut().take();
        match proxy {
            Some(proxy) if proxy.is_alive() => proxy.call(Call::Shut).await,
            _ => Ok(()),
        }
    }

    /// "ok" was told for `vbs`: each stream must be up.
    fn check_up(&self, proxy: &ProxyHandle, vbs: &BTreeSet<u16>) {
        let watch = proxy.watch.borrow();
        for &vb in vbs {
            if let Some(why) = watch.not_up(vb) {
                oracle::fail(
                    "stream-safety",
                    format!("{}: set-up answered ok, but {why}", self.name()),
                );
            }
        }
    }
}

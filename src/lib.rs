//! faultline: the system under test (kv server, proxy, DCP consumer, and a
//! small echo service as the worked example) and the workloads that put it
//! into scenarios. The generic harness is the `faultline-harness` crate.

pub mod bench;
pub mod bugs;
pub mod dcp;
pub mod echo;
pub mod protocol;
pub mod proxy;
pub mod server;
pub mod workloads;

use std::path::PathBuf;

pub use workloads::registry;

/// Where scenario files are found: `$FAULTLINE_SCENARIOS`, else
/// `./scenarios` when it exists, else the checkout's `scenarios/`.
pub fn default_scenarios_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FAULTLINE_SCENARIOS") {
        return PathBuf::from(dir);
    }
    let local = PathBuf::from("scenarios");
    if local.is_dir() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

//! The root package's integration tests, one module per area, in one test
//! binary: each binary links the whole project again, so one binary instead
//! of fourteen saves most of `cargo test`'s link time. A test's name starts
//! with its module (`kv_protocol::every_command_and_its_statuses`), so
//! `cargo test --test integration kv_protocol::` runs one area.
//!
//! The scenario files' tests (`tests/scenarios.rs`, generated at run time
//! with libtest-mimic) are a binary of their own.

mod common;

mod architecture;
mod catalog;
mod cli;
mod dcp_kv;
mod dcp_rebalance;
mod executor;
mod fdrace_timings;
mod kv_model;
mod kv_protocol;
mod proxy;
mod proxy_real_sockets;
mod readme;
mod real_client;
mod scenario_files;
mod snapshots;
mod tokio_unstable;

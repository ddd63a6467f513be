//! The harness's integration tests, one module per area, in one test
//! binary: each binary links the whole crate again, so one binary instead
//! of eight saves most of the link time. A test's name starts with its
//! module (`net::closing_with_unread_bytes_resets_the_peer_instead_of_a_clean_end`),
//! so `cargo test -p faultline-harness --test harness net::` runs one area.
//!
//! `layers.rs` (the check of the crate's module layers) is still a binary
//! of its own.

mod common;

mod fault_draws;
mod faults;
mod linearizability;
mod net;
mod oracles;
mod runner;
mod sync;
mod sys;
mod tokio_sync;

//! A memcached-aware proxy built like HAProxy.
//!
//! Clients speak the binary protocol to the proxy; the proxy routes each
//! keyed request to the kv node active for the key's vbucket, over a pool
//! of backend connections, and checks the nodes' health. It is written
//! against a syscall API ([`Syscalls`]): the simulated kernel
//! ([`faultline_harness::sys::Sys`]) in simulations, the real one ([`os::OsSys`])
//! for `faultline proxy`.
//!
//! Layers, bottom up:
//!
//! * [`buffer`], [`pipe`], [`os`]: buffers, pipes, the real kernel;
//! * [`fd`]: the fd table (thread, running and update masks per fd) and
//!   the per-thread update lists;
//! * [`conn`]: a connection's control layer (fd) and transport layer
//!   (raw socket), with their ready flags; the one outgoing connect
//!   (`Connection::open`) and the polling a connection asks for;
//! * [`raw_sock`]: `rcv_buf` / `snd_buf`, `rcv_pipe` / `snd_pipe`;
//! * [`config`], [`backend`]: the settings; where a key goes, a server's
//!   health record;
//! * [`role`]: what a connection is for (client, backend, check) and the
//!   state of each role; [`state`]: one thread's own state;
//! * [`process`]: the proxy, its threads and what they share;
//! * the handlers, each using only those before it: [`route`] (what a
//!   request is answered with or where it goes), [`idle`] (the idle pools
//!   and takeover), [`connect`] (a request's backend connection,
//!   retries), [`drain`] (the NOOP behind a quiet request), [`splice`]
//!   (streamed bodies), [`server`] (a backend connection's handler and
//!   its responses), [`client`] (a client connection's I/O and
//!   requests), [`check`] (health checks into a fixed-size buffer),
//!   [`timeout`];
//! * [`listener`] and [`poller`]: accepting, and one task per proxy
//!   *thread* with its own epoll fd: apply updates, wait, report events,
//!   run handlers.
//!
//! A file uses only files listed before it: no file imports, through any
//! path, a file that imports it (`tests/integration/architecture.rs` checks), and the
//! lower layers know nothing of the handlers. This file only declares the
//! modules and re-exports, for the crate's callers, the settings,
//! [`Proxy`] and [`run_proxy`].
//!
//! Threads are tasks of one host: they interleave only where the code
//! awaits. Everything they share that HAProxy updates atomically or under
//! a lock (the fd table's masks and tgid, the update lists, the idle
//! connection pools) is a harness synchronization primitive, so every such
//! operation is a point where the seed may switch threads, as real threads
//! would interleave anywhere.

pub mod backend;
pub mod buffer;
pub mod check;
pub mod client;
pub mod config;
pub mod conn;
pub mod connect;
pub mod drain;
pub mod fd;
pub mod idle;
pub mod listener;
pub mod os;
pub mod pipe;
pub mod poller;
pub mod process;
pub mod raw_sock;
pub mod role;
pub mod route;
pub mod server;
pub mod splice;
pub mod state;
pub mod timeout;

pub use config::{BackendAddr, CheckConfig, CheckKind, ProxyConfig};
pub use poller::run_proxy;
pub use process::Proxy;

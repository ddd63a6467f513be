//! faultline's command line: the harness's generic commands over this
//! crate's registry and scenarios (`faultline_harness::cli`), and the
//! commands of its own, one file each.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use faultline_harness::cli::{self as generic, App};

pub use generic::{Error, Result, parse_seeds};

mod bench;
mod check_history;
mod hunt;
mod proxy;
mod reproduce;
mod serve;

/// Deterministic network simulation: reproduce real networking bugs on a seed.
#[derive(Debug, Parser)]
#[command(name = "faultline", version, about, max_term_width = 100)]
pub struct Cli {
    /// Directory of scenario files (default: $FAULTLINE_SCENARIOS, ./scenarios, or the checkout's).
    #[arg(long, global = true, value_name = "DIR")]
    scenarios: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Generic(generic::Command),
    /// Reproduce the catalog's bugs (all when no id is given) and print the table.
    Reproduce(reproduce::ReproduceArgs),
    /// Check a recorded memcached history (JSON lines) for linearizability.
    CheckHistory(check_history::CheckHistoryArgs),
    /// Find the catalog's bugs blind: one bug on at a time, swarm faults per seed.
    Hunt(hunt::HuntArgs),
    /// Measure simulation speed, sweep throughput, harness overhead and memory.
    Bench(bench::BenchArgs),
    /// Run a kv node on real sockets (memcached binary protocol).
    Serve(serve::ServeArgs),
    /// Run the proxy on real sockets in front of kv nodes.
    Proxy(proxy::ProxyArgs),
}

/// faultline's app: its registry, scenario directory, bug ids, and replay
/// commands that work anywhere in the checkout.
pub fn app() -> App {
    App::new(faultline::registry())
        .scenarios_dir(faultline::default_scenarios_dir())
        .bugs(&faultline::bugs::ALL)
        .replay_prefix(faultline_harness::REPLAY_PREFIX)
        .list_footer("the bug catalog (origins, old and new lines, figures): docs/bugs.md")
}

/// A bug id of the catalog, in its canonical spelling.
fn parse_bug(text: &str) -> std::result::Result<String, String> {
    app().bug(text).map_err(|e| e.to_string())
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let app = app();
    let dir = cli.scenarios.as_deref();
    generic::exit(match cli.command {
        Command::Generic(command) => app.run(dir, command),
        Command::Reproduce(args) => reproduce::reproduce(&app, dir, args),
        Command::Bench(args) => bench::bench(&app, dir, args),
        Command::Hunt(args) => hunt::hunt(&app, dir, args),
        Command::CheckHistory(args) => check_history::check_history(args),
        Command::Serve(args) => serve::serve(args),
        Command::Proxy(args) => proxy::proxy(args),
    })
}

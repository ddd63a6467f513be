//! The `faultline` command line. See `faultline --help` and the README.
//!
//! Exit codes: 0 when everything passed, 1 when a run failed, 2 for bad
//! usage or a bad scenario file.

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    cli::main()
}

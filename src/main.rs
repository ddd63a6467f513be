//! The `faultline` command line. See `faultline --help` and the README.
//!
//! Exit codes: 0 when everything passed, 1 when a run failed, 2 for bad
//! usage or a bad scenario file.

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    let args = <cli::Cli as clap::Parser>::parse();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(cli::Error::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

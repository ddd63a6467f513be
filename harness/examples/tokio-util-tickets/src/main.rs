//! The gallery crate's command line: the harness's `run`, `replay`,
//! `sweep`, `shrink`, ... over its scenario.

use std::process::ExitCode;

fn main() -> ExitCode {
    faultline_harness::cli::App::new(tokio_util_tickets::registry())
        .scenarios_dir(tokio_util_tickets::scenarios_dir())
        .main()
}

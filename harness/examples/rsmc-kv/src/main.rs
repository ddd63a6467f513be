//! The gallery crate's command line: the harness's `run`, `replay`,
//! `sweep`, `shrink`, ... over its scenario.

use std::process::ExitCode;

fn main() -> ExitCode {
    faultline_harness::cli::App::new(rsmc_kv::registry())
        .scenarios_dir(rsmc_kv::scenarios_dir())
        .main()
}

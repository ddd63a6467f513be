//! The crate's own command line: the harness's `run`, `replay`, `sweep`,
//! `check-determinism`, `shrink`, `merge` and `list` over its workloads
//! and scenario files. With the scenarios in `./scenarios`, this is just
//! `faultline_harness::cli::main(framed_echo::registry())`.

use std::process::ExitCode;

fn main() -> ExitCode {
    faultline_harness::cli::App::new(framed_echo::registry())
        .scenarios_dir(framed_echo::scenarios_dir())
        .main()
}

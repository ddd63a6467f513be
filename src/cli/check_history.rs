//! `faultline check-history FILE`: is a recorded memcached history
//! linearizable? One operation a JSON line (`process`, `key`, `op`,
//! `args`, `result`, `invoke`, `complete`; `complete` null for an
//! operation whose outcome is unknown), checked against memcached's
//! semantics one key at a time. Exit 0: linearizable; 1: not (the key, the
//! operations that cannot be ordered, their timeline) or undecided within
//! the budget; 2: a malformed file (line and field named).

use std::path::PathBuf;
use std::process::ExitCode;

use faultline::protocol::model::{self, Memcached};
use faultline_harness::linearizability::{
    self, CheckOptions, History, Linearizability, Operation, parse_history_lines,
};

use super::{Error, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct CheckHistoryArgs {
    /// The history: JSON lines, one operation each.
    file: PathBuf,
    /// Search steps allowed per key before the answer is "unknown".
    #[arg(long, default_value_t = CheckOptions::default().max_steps)]
    max_steps: u64,
}

pub fn check_history(args: CheckHistoryArgs) -> Result<ExitCode> {
    let name = args.file.display().to_string();
    let text =
        std::fs::read_to_string(&args.file).map_err(|e| Error::Usage(format!("{name}: {e}")))?;
    let history = read_history(&text, &name).map_err(Error::Usage)?;
    let options = CheckOptions {
        max_steps: args.max_steps,
        ..CheckOptions::default()
    };
    let outcome = linearizability::check(&Memcached, &history, &options);
    println!("{}", outcome.summary());
    if let Linearizability::NotLinearizable(v) = &outcome.verdict {
        println!("{}", v.timeline());
    }
    Ok(if outcome.is_linearizable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The history of a file's lines; errors name the file, line and field.
pub fn read_history(
    text: &str,
    name: &str,
) -> std::result::Result<History<model::Input, model::Output>, String> {
    let mut history = History::new();
    for line in parse_history_lines(text, name)? {
        let (input, output) = model::from_line(&line, name)?;
        let op = match (output, line.complete) {
            (Some(output), Some(complete)) => {
                Operation::completed(line.process, input, line.invoke, output, complete)
            }
            _ => Operation::ambiguous(line.process, input, line.invoke),
        };
        history
            .push(op)
            .map_err(|e| line.error(name, "complete", &e))?;
    }
    Ok(history)
}

//! `merge`: one summary from the `sweep --json` results of
//! several shards, e.g. the jobs of a CI matrix or of a Kubernetes Indexed
//! Job. It checks that the shards belong to one sweep and says whether,
//! together, they covered its whole seed range.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use super::args::{Error, Result};
use super::sweep::{SweepSummary, print_coverage};

/// `merge`: shards' results.
#[derive(Debug, Clone, clap::Args)]
pub struct MergeArgs {
    /// Files written by `faultline sweep … --shard K/N --json > FILE`.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Reads the last JSON line of a file (the report may precede it when
/// stdout and stderr were captured together).
fn read_summary(path: &PathBuf) -> Result<SweepSummary> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("{}: cannot read: {e}", path.display())))?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| {
            Error::Usage(format!(
                "{}: no JSON line (from `sweep --json`)",
                path.display()
            ))
        })?;
    serde_json::from_str(line)
        .map_err(|e| Error::Usage(format!("{}: not a sweep summary: {e}", path.display())))
}

pub(super) fn merge(args: MergeArgs) -> Result<ExitCode> {
    let summaries: Vec<(PathBuf, SweepSummary)> = args
        .files
        .iter()
        .map(|p| read_summary(p).map(|s| (p.clone(), s)))
        .collect::<Result<_>>()?;
    let (first_path, first) = &summaries[0];
    let mut shards = BTreeSet::new();
    for (path, s) in &summaries {
        let same = s.scenario == first.scenario
            && s.variant == first.variant
            && s.faults == first.faults
            && s.seeds == first.seeds
            && s.shard.count == first.shard.count;
        if !same {
            return Err(Error::Usage(format!(
                "{} is from another sweep than {} ({} {} faults={} seeds={} shards={} vs {} {} faults={} seeds={} shards={})",
                path.display(),
                first_path.display(),
                s.scenario,
                s.variant,
                s.faults,
                s.seeds,
                s.shard.count,
                first.scenario,
                first.variant,
                first.faults,
                first.seeds,
                first.shard.count
            )));
        }
        if !shards.insert(s.shard.index) {
            return Err(Error::Usage(format!(
                "{}: shard {}/{} is given twice",
                path.display(),
                s.shard.index,
                s.shard.count
            )));
        }
    }
    let seeds_run: u64 = summaries.iter().map(|(_, s)| s.seeds_run).sum();
    let passed: u64 = summaries.iter().map(|(_, s)| s.passed).sum();
    let mut failing: Vec<u64> = summaries
        .iter()
        .flat_map(|(_, s)| s.failing_seeds.iter().copied())
        .collect();
    failing.sort_unstable();
    let mut coverage: BTreeMap<String, u64> = BTreeMap::new();
    let mut hits: BTreeMap<String, u64> = BTreeMap::new();
    for (_, s) in &summaries {
        for (point, n) in &s.coverage {
            *coverage.entry(point.clone()).or_insert(0) += n;
        }
        for (point, n) in &s.hits {
            *hits.entry(point.clone()).or_insert(0) += n;
        }
    }
    let missing: Vec<u64> = (1..=first.shard.count)
        .filter(|k| !shards.contains(k))
        .collect();
    let stopped_early = summaries
        .iter()
        .filter(|(_, s)| s.seeds_run < s.shard_seeds)
        .count();
    let mut stdout = std::io::stdout();
    let _ = print_coverage(&mut stdout, &coverage, &hits, seeds_run);
    if let Some(f) = summaries
        .iter()
        .filter_map(|(_, s)| s.first_failure.as_ref())
        .min_by_key(|f| f.seed)
    {
        println!(
            "first failing seed: {} oracle={}: {}",
            f.seed, f.oracle, f.message
        );
        println!("replay: {}", f.replay);
    }
    if failing.len() > 1 {
        let seeds: Vec<String> = failing.iter().map(u64::to_string).collect();
        println!("failing seeds: {}", seeds.join(" "));
    }
    if !missing.is_empty() {
        let missing: Vec<String> = missing
            .iter()
            .map(|k| format!("{k}/{}", first.shard.count))
            .collect();
        println!("missing shards: {}", missing.join(" "));
    }
    if stopped_early > 0 {
        println!(
            "{stopped_early} shard(s) stopped at their first failure (sweep without --keep-going)"
        );
    }
    println!(
        "merge: {passed} passed, {} failed ({} of {} shards, {seeds_run} seeds of {} {} {})",
        failing.len(),
        shards.len(),
        first.shard.count,
        first.scenario,
        first.seeds,
        first.variant
    );
    Ok(if failing.is_empty() && missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

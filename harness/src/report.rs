//! What a person reads about a run: its verdict line, the command that
//! replays it, a failure report, a stable failure summary for snapshots,
//! and sequence diagrams drawn from its trace. The runner only produces
//! [`Outcome`]s; how they read (and how the command line is spelled) is
//! this module's.
//!
//! The harness traces every message frame it delivers (`faultline::net`
//! `frame` events), every connection it accepts, every fault it applies and
//! the oracle that fired. [`mermaid`] turns the rare ones of those lines
//! and the last ones before the failure into a Mermaid sequence diagram (in
//! a Markdown file, which code hosts and editors render): a person would
//! rather follow arrows between hosts than read the log.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::runner::{Faults, Outcome, Replay, Verdict};

/// One parsed trace line.
struct Line<'a> {
    time_ms: &'a str,
    host: &'a str,
    target: &'a str,
    message: String,
    fields: BTreeMap<&'a str, &'a str>,
}

/// Parses `[    12.345] host LEVEL target: message k=v k=v`.
fn parse(line: &str) -> Option<Line<'_>> {
    let rest = line.strip_prefix('[')?;
    let (time, rest) = rest.split_once(']')?;
    let mut words = rest.split_whitespace();
    let host = words.next()?;
    let _level = words.next()?;
    let target = words.next()?.strip_suffix(':')?;
    let mut message = Vec::new();
    let mut fields = BTreeMap::new();
    for word in words {
        match word.split_once('=') {
            Some((k, v))
                if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                fields.insert(k, v);
            }
            _ if fields.is_empty() => message.push(word),
            _ => {}
        }
    }
    Some(Line {
        time_ms: time.trim(),
        host,
        target,
        message: message.join(" "),
        fields,
    })
}

/// Mermaid needs participant names without punctuation it parses.
fn participant(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn text(s: &str) -> String {
    s.replace([';', '#', ':'], " ").replace('"', "'")
}

/// One thing a diagram can show: an arrow or a note.
struct Step {
    /// The Mermaid line.
    text: String,
    /// What kind of step it is, for counting: a frame's label, "connect",
    /// "short write", a fault's kind. Rare kinds are the story of a run.
    kind: String,
    /// Part of the story however often it happens: the oracle that fired,
    /// scheduled faults.
    always: bool,
}

/// A Mermaid sequence diagram of a trace, at most `max_steps` steps, with
/// the verdict at the end.
///
/// A failing run's last messages are often routine traffic (a hang shows
/// nothing at all), while the messages that tell its story happened once
/// or twice, long before. So the diagram keeps every step of a rare kind
/// (one seen at most `rare_max` times in the whole run), every scheduled
/// fault and the oracle, in up to half the budget, and fills the rest with
/// the last steps before the end. A note in each gap says how many steps
/// were left out there, and of which kinds.
pub fn mermaid(lines: &[String], title: &str, max_steps: usize) -> String {
    let mut steps: Vec<Step> = Vec::new();
    let mut participants: Vec<String> = Vec::new();
    let note_participant = |name: &str, participants: &mut Vec<String>| {
        // The harness's own lines (scheduled faults, oracles) have host "-".
        let p = if name == "-" {
            "harness".to_string()
        } else {
            participant(name)
        };
        if !participants.contains(&p) {
            participants.push(p.clone());
        }
        p
    };
    let mut verdict = None;
    for raw in lines {
        if let Some(v) = raw.strip_prefix("verdict ") {
            verdict = Some(v.to_string());
            continue;
        }
        let Some(line) = parse(raw) else { continue };
        let f = |k: &str| line.fields.get(k).copied().unwrap_or("?");
        let plain = |text: String, kind: String| Step {
            text,
            kind,
            always: false,
        };
        let step = match (line.target, line.message.as_str()) {
            ("faultline::net", "frame") => {
                let from = note_participant(f("from"), &mut participants);
                let to = note_participant(f("to"), &mut participants);
                let label = text(f("label"));
                Some(plain(
                    format!(
                        "{from}->>{to}: {label} ({} B) @{} ms",
                        f("len"),
                        line.time_ms
                    ),
                    label,
                ))
            }
            ("faultline::net", "accept") => {
                let from = note_participant(f("from"), &mut participants);
                let to = note_participant(f("to"), &mut participants);
                Some(plain(
                    format!(
                        "{from}-){to}: connect (conn {}) @{} ms",
                        f("conn"),
                        line.time_ms
                    ),
                    "connect".to_string(),
                ))
            }
            ("faultline::net", "short write") => {
                let host = note_participant(line.host, &mut participants);
                Some(plain(
                    format!(
                        "Note over {host}: short write {} of {} B (conn {}) @{} ms",
                        f("sent"),
                        f("wanted"),
                        f("conn"),
                        line.time_ms
                    ),
                    "short write".to_string(),
                ))
            }
            ("faultline::fault", "frame held") => {
                let to = note_participant(f("to"), &mut participants);
                Some(plain(
                    format!(
                        "Note over {to}: fault holds {} until {} @{} ms",
                        text(f("label")),
                        text(f("until")),
                        line.time_ms
                    ),
                    format!("fault hold {}", text(f("label"))),
                ))
            }
            ("faultline::fault", "frame delayed") => {
                let to = note_participant(f("to"), &mut participants);
                Some(plain(
                    format!(
                        "Note over {to}: fault delays {} by {} ms @{} ms",
                        text(f("label")),
                        f("delay_ms"),
                        line.time_ms
                    ),
                    format!("fault delay {}", text(f("label"))),
                ))
            }
            ("faultline::fault", "switch on") => {
                let host = note_participant(f("host"), &mut participants);
                Some(plain(
                    format!(
                        "Note over {host}: fault switch {} @{} ms",
                        text(f("switch")),
                        line.time_ms
                    ),
                    format!("fault switch {}", text(f("switch"))),
                ))
            }
            ("faultline::fault", message) if line.host == "-" => {
                // Scheduled faults: "partition a b", "latency a b", "crash h", "restart h".
                let hosts: Vec<String> = message
                    .split_whitespace()
                    .skip(1)
                    .map(|h| note_participant(h, &mut participants))
                    .collect();
                let over = if hosts.is_empty() {
                    note_participant("-", &mut participants)
                } else {
                    hosts.join(",")
                };
                Some(Step {
                    text: format!(
                        "Note over {over}: fault {} @{} ms",
                        text(message),
                        line.time_ms
                    ),
                    kind: "fault".to_string(),
                    always: true,
                })
            }
            ("faultline::oracle", "oracle fired") => {
                let host = note_participant(line.host, &mut participants);
                Some(Step {
                    text: format!(
                        "Note over {host}: oracle {} fired @{} ms",
                        text(f("oracle")),
                        line.time_ms
                    ),
                    kind: "oracle".to_string(),
                    always: true,
                })
            }
            _ => None,
        };
        steps.extend(step);
    }
    let shown = select(&steps, max_steps);
    let mut out = String::new();
    let _ = writeln!(out, "# {title}\n");
    if let Some(v) = &verdict {
        let _ = writeln!(out, "Verdict: `{v}`\n");
    }
    if shown.len() < steps.len() {
        let _ = writeln!(
            out,
            "{} of {} steps are shown: every step of a kind seen at most {} times in the run, \
             and the last ones before the end. A note in each gap says what was left out there.\n",
            shown.len(),
            steps.len(),
            rare_max(max_steps)
        );
    }
    let _ = writeln!(out, "```mermaid\nsequenceDiagram");
    for p in &participants {
        let _ = writeln!(out, "    participant {p}");
    }
    let gap_over = match (participants.first(), participants.last()) {
        (Some(first), Some(last)) if first != last => format!("{first},{last}"),
        (Some(only), _) => only.clone(),
        _ => "harness".to_string(),
    };
    let mut next = 0;
    for &i in &shown {
        if i > next {
            let _ = writeln!(
                out,
                "    Note over {gap_over}: {}",
                gap_note(&steps[next..i])
            );
        }
        let _ = writeln!(out, "    {}", steps[i].text);
        next = i + 1;
    }
    if next < steps.len() {
        let _ = writeln!(
            out,
            "    Note over {gap_over}: {}",
            gap_note(&steps[next..])
        );
    }
    if steps.is_empty() {
        let _ = writeln!(
            out,
            "    Note over {}: no messages were traced",
            participants.first().map(String::as_str).unwrap_or("run")
        );
    }
    let _ = writeln!(out, "```");
    out
}

/// A kind seen at most this many times in a run is part of its story.
fn rare_max(max_steps: usize) -> usize {
    (max_steps / 8).max(2)
}

/// The indices of the steps a diagram shows, in order: the rare and the
/// always-shown ones (the latest of them, in up to half the budget), then
/// the last steps until the budget is spent.
fn select(steps: &[Step], max_steps: usize) -> Vec<usize> {
    let counts = count_kinds(steps);
    let rare = rare_max(max_steps);
    let salient: Vec<usize> = (0..steps.len())
        .filter(|&i| steps[i].always || counts[steps[i].kind.as_str()] <= rare)
        .collect();
    let mut shown: BTreeSet<usize> = salient[salient.len().saturating_sub(max_steps / 2)..]
        .iter()
        .copied()
        .collect();
    for i in (0..steps.len()).rev() {
        if shown.len() >= max_steps {
            break;
        }
        shown.insert(i);
    }
    assert!(
        shown.len() <= max_steps,
        "a diagram stays within its budget"
    );
    shown.into_iter().collect()
}

/// How many steps of each kind.
fn count_kinds(steps: &[Step]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for step in steps {
        *counts.entry(step.kind.as_str()).or_default() += 1;
    }
    counts
}

/// "412 steps left out (230 res SET, 150 req GET, 32 more)"
fn gap_note(left_out: &[Step]) -> String {
    let mut kinds: Vec<(&str, usize)> = count_kinds(left_out).into_iter().collect();
    // The most frequent first; equal counts in name order (deterministic).
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let named: Vec<String> = kinds
        .iter()
        .take(3)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let rest: usize = kinds.iter().skip(3).map(|(_, n)| n).sum();
    let mut note = format!(
        "{} step{} left out ({}",
        left_out.len(),
        if left_out.len() == 1 { "" } else { "s" },
        named.join(", ")
    );
    if rest > 0 {
        let _ = write!(note, ", {rest} more");
    }
    note.push(')');
    note
}

/// How a replay command starts by default: a CLI run with cargo.
pub const REPLAY_PREFIX: &str = "cargo run --release --";

impl Default for Replay {
    fn default() -> Self {
        Replay::Cli {
            prefix: REPLAY_PREFIX.to_string(),
        }
    }
}

/// The flag of a replay command that gives the run its faults again.
fn faults_flag(faults: &Faults) -> String {
    match faults {
        Faults::Drawn => String::new(),
        Faults::Off => " --faults off".to_string(),
        Faults::Swarm => " --faults swarm".to_string(),
        Faults::RaceStrategy(strategy) => format!(" --faults {strategy}"),
        Faults::Plan {
            source: Some(path), ..
        } => format!(" --plan {}", path.display()),
        Faults::Plan { source: None, .. } => " --plan PLAN.toml".to_string(),
    }
}

impl Outcome {
    /// The last line of `faultline run`: always one line. A message of
    /// several lines (a linearizability timeline) gives its first; the
    /// rest stands above it, in [`Outcome::report`].
    pub fn verdict_line(&self) -> String {
        let head = format!(
            "seed={} variant={} trace={} sim_ms={}",
            self.seed,
            self.variant,
            self.trace.hash_hex(),
            self.sim_time.as_millis()
        );
        match &self.verdict {
            Verdict::Pass => format!("verdict: pass {head}"),
            Verdict::Setup(error) => format!("verdict: setup error {head}: {error}"),
            Verdict::Fail { oracle, message } => {
                let mut lines = message.lines();
                let first = lines.next().unwrap_or_default().trim_end();
                let more = if lines.next().is_some() {
                    " (more above)"
                } else {
                    ""
                };
                format!("verdict: fail {head} oracle={oracle}: {first}{more}")
            }
        }
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        match &self.replay {
            Replay::Cli { prefix } => {
                let bug = self
                    .bug
                    .as_ref()
                    .map(|b| format!(" --bug {b}"))
                    .unwrap_or_default();
                format!(
                    "{prefix} run {} --seed {} --variant {}{bug}{}",
                    self.scenario,
                    self.seed,
                    self.variant,
                    faults_flag(&self.faults)
                )
            }
            Replay::Test { command, seed_env } if *seed_env => {
                format!("FAULTLINE_SEED={} {command}", self.seed)
            }
            Replay::Test { command, .. } => command.clone(),
        }
    }

    /// A failure report people can read: seed, variant, plan, the oracle's
    /// message, the last trace lines of each host and the replay command.
    pub fn report(&self) -> String {
        let mut out = String::new();
        use std::fmt::Write as _;
        let _ = writeln!(out, "scenario: {}", self.scenario);
        let _ = writeln!(out, "seed:     {}", self.seed);
        let _ = writeln!(out, "variant:  {}", self.variant);
        let _ = writeln!(out, "sim time: {} ms", self.sim_time.as_millis());
        let _ = writeln!(
            out,
            "trace:    {} ({} lines)",
            self.trace.hash_hex(),
            self.trace.line_count
        );
        match &self.verdict {
            Verdict::Pass => {}
            Verdict::Fail { oracle, message } => {
                let _ = writeln!(out, "oracle:   {oracle}");
                let _ = writeln!(out, "message:  {message}");
            }
            Verdict::Setup(error) => {
                let _ = writeln!(out, "setup error: {error}");
            }
        }
        let _ = writeln!(
            out,
            "fault plan ({} faults): {}",
            self.plan.len(),
            self.plan.summary()
        );
        if !self.plan.is_empty() {
            for line in self.plan.to_toml().lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
        for (host, lines) in &self.trace.tails {
            let _ = writeln!(out, "last trace lines of {host}:");
            for line in lines
                .iter()
                .rev()
                .take(12)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                let _ = writeln!(out, "    {line}");
            }
        }
        let _ = writeln!(out, "replay: {}", self.replay_command());
        out
    }
}

/// A stable, readable summary of a failing run for snapshot tests: the
/// verdict, the fault plan and the last `max_lines` trace lines before the
/// verdict (turmoil's own host announcements left out). The trace hash is
/// not in it, so the summary only changes when the story of the failure
/// does. Needs a run with the whole trace (`TraceMode::Full`).
pub fn failure_summary(outcome: &Outcome, max_lines: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scenario {} seed {} variant {}",
        outcome.scenario, outcome.seed, outcome.variant
    );
    match &outcome.verdict {
        Verdict::Pass => {
            let _ = writeln!(out, "verdict: pass");
        }
        Verdict::Setup(error) => {
            let _ = writeln!(out, "verdict: setup error");
            let _ = writeln!(out, "message: {error}");
        }
        Verdict::Fail { oracle, message } => {
            let _ = writeln!(out, "verdict: fail oracle={oracle}");
            let _ = writeln!(out, "message: {message}");
        }
    }
    let _ = writeln!(out, "faults: {}", outcome.plan.summary());
    let lines = outcome
        .trace
        .lines
        .as_deref()
        .expect("a failure summary needs the whole trace (TraceMode::Full)");
    let story: Vec<&String> = lines
        .iter()
        .filter(|l| !l.contains(" turmoil: New nodename="))
        .filter(|l| !l.contains("verdict fail oracle="))
        .collect();
    let start = story.len().saturating_sub(max_lines);
    let _ = writeln!(
        out,
        "last {} of {} trace lines:",
        story.len() - start,
        lines.len()
    );
    for line in &story[start..] {
        let _ = writeln!(out, "  {line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_become_arrows_and_faults_notes() {
        let lines: Vec<String> = [
            "[     1.000] kv-1 DEBUG faultline::net: accept conn=1 from=ns to=kv-1 send_buffer=0",
            "[     2.000] ns DEBUG faultline::fault: frame held conn=1 from=kv-1 to=ns label=res:DCP_ADD_STREAM until=frame:kv-2->ns:req:DCP_STREAM_END",
            "[     3.500] ns DEBUG faultline::net: frame conn=2 from=kv-2 to=ns label=req:DCP_STREAM_END len=28",
            "[  5000.000] ns INFO faultline::oracle: oracle fired oracle=liveness 1 operation(s) not done",
            "verdict fail oracle=liveness: pending",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let d = mermaid(&lines, "mb-53445 seed 3", 50);
        assert!(d.contains("sequenceDiagram"));
        assert!(d.contains("ns-)kv_1: connect (conn 1) @1.000 ms"), "{d}");
        assert!(d.contains("Note over ns: fault holds res DCP_ADD_STREAM until frame kv-2->ns req DCP_STREAM_END"), "{d}");
        assert!(
            d.contains("kv_2->>ns: req DCP_STREAM_END (28 B) @3.500 ms"),
            "{d}"
        );
        assert!(
            d.contains("Note over ns: oracle liveness fired @5000.000 ms"),
            "{d}"
        );
        assert!(d.contains("Verdict: `fail oracle=liveness: pending`"));
    }

    #[test]
    fn long_traces_keep_the_last_steps() {
        let lines: Vec<String> = (0..100)
            .map(|i| format!("[ {i}.000] a DEBUG faultline::net: frame conn=1 from=a to=b label=req:GET len=24"))
            .collect();
        let d = mermaid(&lines, "t", 10);
        assert_eq!(d.matches("a->>b").count(), 10);
        assert!(d.contains("10 of 100 steps are shown"), "{d}");
        assert!(
            d.contains("Note over a,b: 90 steps left out (90 req GET)"),
            "{d}"
        );
        assert!(d.contains("a->>b: req GET (24 B) @99.000 ms"), "{d}");
        assert!(!d.contains("@89.000 ms"), "{d}");
    }

    #[test]
    fn rare_steps_long_before_the_end_are_kept_and_gaps_say_what_is_left_out() {
        let mut lines = vec![
            "[     1.000] ns DEBUG faultline::net: frame conn=1 from=ns to=kv-2 label=req:DCP_ADD_STREAM len=28".to_string(),
            "[     2.000] - DEBUG faultline::fault: partition ns kv-1".to_string(),
        ];
        for i in 0..200 {
            let label = if i % 2 == 0 { "req:SET" } else { "res:SET" };
            lines.push(format!(
                "[ {}.000] kv-1 DEBUG faultline::net: frame conn=2 from=loader to=kv-1 label={label} len=40",
                3 + i
            ));
        }
        lines.push("[   300.000] kv-1 DEBUG faultline::net: frame conn=3 from=kv-1 to=ns label=req:DCP_STREAM_END len=24".to_string());
        for i in 0..50 {
            lines.push(format!(
                "[ {}.000] kv-1 DEBUG faultline::net: frame conn=2 from=loader to=kv-1 label=req:GET len=40",
                301 + i
            ));
        }
        lines.push(
            "[  4000.000] ns INFO faultline::oracle: oracle fired oracle=liveness setup vb 2"
                .to_string(),
        );
        let d = mermaid(&lines, "hang", 20);
        // The story: set-up, the fault, the stream end, the oracle.
        assert!(
            d.contains("ns->>kv_2: req DCP_ADD_STREAM (28 B) @1.000 ms"),
            "{d}"
        );
        assert!(
            d.contains("Note over ns,kv_1: fault partition ns kv-1 @2.000 ms"),
            "{d}"
        );
        assert!(
            d.contains("kv_1->>ns: req DCP_STREAM_END (24 B) @300.000 ms"),
            "{d}"
        );
        assert!(
            d.contains("Note over ns: oracle liveness fired @4000.000 ms"),
            "{d}"
        );
        // Routine traffic is summed up where it was left out.
        assert!(
            d.contains("200 steps left out (100 req SET, 100 res SET)"),
            "{d}"
        );
        let arrows_and_notes = d
            .lines()
            .filter(|l| {
                l.starts_with("    ") && !l.contains("participant") && !l.contains("left out")
            })
            .count();
        assert_eq!(arrows_and_notes, 20, "{d}");
        // In order of time: the stream end comes before the last GETs.
        let end = d.find("DCP_STREAM_END").unwrap();
        let last_get = d.find("@350.000 ms").unwrap();
        assert!(end < last_get, "{d}");
    }
}

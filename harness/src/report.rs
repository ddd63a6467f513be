//! Sequence diagrams of a run, drawn from its trace.
//!
//! The harness traces every message frame it delivers (`faultline::net`
//! `frame` events), every connection it accepts, every fault it applies and
//! the oracle that fired. [`mermaid`] turns the last of those lines before
//! the failure into a Mermaid sequence diagram (in a Markdown file, which
//! code hosts and editors render): a person would rather follow arrows
//! between hosts than read the log.

use std::collections::BTreeMap;
use std::fmt::Write as _;

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

/// A Mermaid sequence diagram of the last `max_steps` messages and events
/// of a trace, with the verdict at the end.
pub fn mermaid(lines: &[String], title: &str, max_steps: usize) -> String {
    let mut steps: Vec<String> = Vec::new();
    let mut participants: Vec<String> = Vec::new();
    let note_participant = |name: &str, participants: &mut Vec<String>| {
        let p = participant(name);
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
        let step = match (line.target, line.message.as_str()) {
            ("faultline::net", "frame") => {
                let from = note_participant(f("from"), &mut participants);
                let to = note_participant(f("to"), &mut participants);
                Some(format!(
                    "{from}->>{to}: {} ({} B) @{} ms",
                    text(f("label")),
                    f("len"),
                    line.time_ms
                ))
            }
            ("faultline::net", "accept") => {
                let from = note_participant(f("from"), &mut participants);
                let to = note_participant(f("to"), &mut participants);
                Some(format!(
                    "{from}-){to}: connect (conn {}) @{} ms",
                    f("conn"),
                    line.time_ms
                ))
            }
            ("faultline::net", "short write") => {
                let host = note_participant(line.host, &mut participants);
                Some(format!(
                    "Note over {host}: short write {} of {} B (conn {})",
                    f("sent"),
                    f("wanted"),
                    f("conn")
                ))
            }
            ("faultline::fault", "frame held") => {
                let to = note_participant(f("to"), &mut participants);
                Some(format!(
                    "Note over {to}: fault holds {} until {}",
                    text(f("label")),
                    text(f("until"))
                ))
            }
            ("faultline::fault", "frame delayed") => {
                let to = note_participant(f("to"), &mut participants);
                Some(format!(
                    "Note over {to}: fault delays {} by {} ms",
                    text(f("label")),
                    f("delay_ms")
                ))
            }
            ("faultline::fault", "switch on") => {
                let host = note_participant(f("host"), &mut participants);
                Some(format!(
                    "Note over {host}: fault switch {}",
                    text(f("switch"))
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
                    "network".to_string()
                } else {
                    hosts.join(",")
                };
                Some(format!(
                    "Note over {over}: fault {} @{} ms",
                    text(message),
                    line.time_ms
                ))
            }
            ("faultline::oracle", "oracle fired") => {
                let host = note_participant(line.host, &mut participants);
                Some(format!(
                    "Note over {host}: oracle {} fired @{} ms",
                    text(f("oracle")),
                    line.time_ms
                ))
            }
            _ => None,
        };
        if let Some(step) = step {
            steps.push(step);
        }
    }
    let skipped = steps.len().saturating_sub(max_steps);
    let mut out = String::new();
    let _ = writeln!(out, "# {title}\n");
    if let Some(v) = &verdict {
        let _ = writeln!(out, "Verdict: `{v}`\n");
    }
    if skipped > 0 {
        let _ = writeln!(
            out,
            "The first {skipped} steps are left out; the last {max_steps} lead to the failure.\n"
        );
    }
    let _ = writeln!(out, "```mermaid\nsequenceDiagram");
    for p in &participants {
        let _ = writeln!(out, "    participant {p}");
    }
    for step in steps.iter().skip(skipped) {
        let _ = writeln!(out, "    {step}");
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

/// A stable, readable summary of a failing run for snapshot tests: the
/// verdict, the fault plan and the last `max_lines` trace lines before the
/// verdict (turmoil's own host announcements left out). The trace hash is
/// not in it, so the summary only changes when the story of the failure
/// does. Needs a run with the whole trace (`TraceMode::Full`).
pub fn failure_summary(outcome: &crate::Outcome, max_lines: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scenario {} seed {} variant {}",
        outcome.scenario, outcome.seed, outcome.variant
    );
    match &outcome.verdict {
        crate::Verdict::Pass => {
            let _ = writeln!(out, "verdict: pass");
        }
        crate::Verdict::Fail { oracle, message } => {
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
        assert!(d.contains("The first 90 steps are left out"));
    }
}

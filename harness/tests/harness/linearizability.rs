//! The linearizability checker against a small key-value model: read,
//! write, compare-and-set and increment on integer registers.

use std::collections::BTreeMap;
use std::time::Instant;

use faultline_harness::linearizability::{
    self, CheckOptions, CheckOutcome, History, HistoryLine, Linearizability, Model, OpId,
    Operation, Violation, parse_history_lines,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, RngSeed};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Read(String),
    Write(String, i64),
    /// Compare-and-set: `(key, expected, new)`.
    Cas(String, i64, i64),
    Incr(String),
}

impl Op {
    fn key(&self) -> &str {
        match self {
            Op::Read(k) | Op::Write(k, _) | Op::Cas(k, _, _) | Op::Incr(k) => k,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Out {
    Value(i64),
    Ok,
    Swapped(bool),
}

/// Registers that start at 0; partitioned by key unless told otherwise.
struct Kv {
    partitioned: bool,
}

const KV: Kv = Kv { partitioned: true };

impl Model for Kv {
    type State = BTreeMap<String, i64>;
    type Input = Op;
    type Output = Out;

    fn init(&self) -> Self::State {
        BTreeMap::new()
    }

    fn step(&self, state: &Self::State, input: &Op, output: Option<&Out>) -> Option<Self::State> {
        let (next, answer) = apply(state, input);
        match output {
            None => Some(next),
            Some(out) if *out == answer => Some(next),
            Some(_) => None,
        }
    }

    fn partition(&self, input: &Op) -> String {
        if self.partitioned {
            input.key().to_string()
        } else {
            String::new()
        }
    }

    fn describe(&self, input: &Op, output: Option<&Out>) -> String {
        let call = match input {
            Op::Read(k) => format!("read({k})"),
            Op::Write(k, v) => format!("write({k}, {v})"),
            Op::Cas(k, e, n) => format!("cas({k}, {e}, {n})"),
            Op::Incr(k) => format!("incr({k})"),
        };
        match output {
            None => format!("{call} -> ?"),
            Some(Out::Value(v)) => format!("{call} -> {v}"),
            Some(Out::Ok) => format!("{call} -> ok"),
            Some(Out::Swapped(b)) => format!("{call} -> {b}"),
        }
    }
}

/// The sequential object: the new state and its answer.
fn apply(state: &BTreeMap<String, i64>, input: &Op) -> (BTreeMap<String, i64>, Out) {
    let mut next = state.clone();
    let current = state.get(input.key()).copied().unwrap_or(0);
    let answer = match input {
        Op::Read(_) => Out::Value(current),
        Op::Write(k, v) => {
            next.insert(k.clone(), *v);
            Out::Ok
        }
        Op::Cas(k, expected, new) => {
            let swapped = current == *expected;
            if swapped {
                next.insert(k.clone(), *new);
            }
            Out::Swapped(swapped)
        }
        Op::Incr(k) => {
            next.insert(k.clone(), current + 1);
            Out::Ok
        }
    };
    (next, answer)
}

fn k(key: &str) -> String {
    key.to_string()
}

/// Records a completed operation.
fn done(
    h: &mut History<Op, Out>,
    process: u64,
    op: Op,
    invoke: u64,
    out: Out,
    complete: u64,
) -> OpId {
    h.push(Operation::completed(process, op, invoke, out, complete))
        .expect("valid")
}

fn check(h: &History<Op, Out>) -> CheckOutcome<Op, Out> {
    linearizability::check(&KV, h, &CheckOptions::default())
}

/// The violation, or a panic with the summary.
fn violation(outcome: &CheckOutcome<Op, Out>) -> &Violation<Op, Out> {
    match &outcome.verdict {
        Linearizability::NotLinearizable(v) => v,
        _ => panic!("expected a violation: {}", outcome.summary()),
    }
}

fn ids(v: &Violation<Op, Out>) -> Vec<OpId> {
    v.ops.iter().map(|op| op.id).collect()
}

// ---------------------------------------------------------------------
// Rejections, with the operations that cannot be ordered.

#[test]
fn a_stale_read_is_rejected_with_both_writes_and_the_read() {
    let mut h = History::new();
    let w1 = done(&mut h, 1, Op::Write(k("k"), 1), 0, Out::Ok, 10);
    let w2 = done(&mut h, 2, Op::Write(k("k"), 2), 20, Out::Ok, 30);
    let r = done(&mut h, 3, Op::Read(k("k")), 40, Out::Value(1), 50);
    let outcome = check(&h);
    let v = violation(&outcome);
    assert_eq!(v.partition, "k");
    // Write 1 is kept: free to take effect later, it would explain the read.
    assert_eq!(ids(v), [w1, w2, r]);
    assert_eq!(v.ops[2].description, "read(k) -> 1");
    assert_eq!(outcome.stats.failed_partitions, ["k"]);
    let timeline = v.timeline();
    println!("{timeline}");
    println!("{}", v.mermaid());
}

#[test]
fn a_lost_update_is_rejected() {
    let mut h = History::new();
    let a = done(&mut h, 1, Op::Incr(k("n")), 0, Out::Ok, 10);
    let b = done(&mut h, 2, Op::Incr(k("n")), 5, Out::Ok, 15);
    let r = done(&mut h, 3, Op::Read(k("n")), 20, Out::Value(1), 30);
    let outcome = check(&h);
    let v = violation(&outcome);
    assert_eq!(v.partition, "n");
    assert_eq!(ids(v), [a, b, r]);
    // The same increments and a read of 2 are fine.
    let mut fine = History::new();
    done(&mut fine, 1, Op::Incr(k("n")), 0, Out::Ok, 10);
    done(&mut fine, 2, Op::Incr(k("n")), 5, Out::Ok, 15);
    done(&mut fine, 3, Op::Read(k("n")), 20, Out::Value(2), 30);
    assert!(check(&fine).is_linearizable());
}

#[test]
fn two_cas_from_the_same_value_cannot_both_succeed() {
    let mut h = History::new();
    done(&mut h, 0, Op::Write(k("c"), 0), 0, Out::Ok, 5);
    let a = done(&mut h, 1, Op::Cas(k("c"), 0, 1), 10, Out::Swapped(true), 20);
    let b = done(&mut h, 2, Op::Cas(k("c"), 0, 2), 12, Out::Swapped(true), 22);
    let outcome = check(&h);
    let v = violation(&outcome);
    // The two CAS, and the write of 0 too: were its completion unknown, it
    // could have taken effect between them and explained both.
    assert_eq!(ids(v)[1..], [a, b]);
    assert_eq!(ids(v).len(), 3);
    assert_eq!(v.ops[1].description, "cas(c, 0, 1) -> true");
    // One success and one failure is what a register does.
    let mut fine = History::new();
    done(
        &mut fine,
        1,
        Op::Cas(k("c"), 0, 1),
        10,
        Out::Swapped(true),
        20,
    );
    done(
        &mut fine,
        2,
        Op::Cas(k("c"), 0, 2),
        12,
        Out::Swapped(false),
        22,
    );
    assert!(check(&fine).is_linearizable());
}

#[test]
fn a_read_of_a_value_never_written_is_rejected_alone() {
    let mut h = History::new();
    done(&mut h, 1, Op::Write(k("k"), 1), 0, Out::Ok, 10);
    let r = done(&mut h, 2, Op::Read(k("k")), 20, Out::Value(7), 30);
    done(&mut h, 1, Op::Write(k("k"), 2), 40, Out::Ok, 50);
    let outcome = check(&h);
    let v = violation(&outcome);
    assert_eq!(ids(v), [r]);
    assert_eq!(v.cut_at, Some(20), "the write at 40 is not needed");
}

#[test]
fn a_stale_read_in_a_long_history_keeps_the_write_it_saw_and_the_last_one() {
    let mut h = History::new();
    let mut writes = Vec::new();
    for v in 1..=10 {
        writes.push(done(
            &mut h,
            1,
            Op::Write(k("k"), v),
            10 * v as u64,
            Out::Ok,
            10 * v as u64 + 5,
        ));
    }
    let r = done(&mut h, 2, Op::Read(k("k")), 200, Out::Value(3), 210);
    for v in 11..=20 {
        done(
            &mut h,
            1,
            Op::Write(k("k"), v),
            300 + 10 * v as u64,
            Out::Ok,
            305 + 10 * v as u64,
        );
    }
    let outcome = check(&h);
    let v = violation(&outcome);
    assert_eq!(ids(v), [writes[2], writes[9], r]);
    assert_eq!(v.cut_at, Some(200));
    assert_eq!(v.partition_operations, 21);
    let summary = outcome.summary();
    assert_eq!(
        summary,
        "not linearizable: partition `k`: 3 of 21 operations cannot be ordered (#2, #9, #10)"
    );
}

#[test]
fn operations_touching_at_one_instant_are_concurrent() {
    // Intervals are closed: a read invoked when the write completes may
    // precede it.
    let mut h = History::new();
    done(&mut h, 1, Op::Write(k("k"), 1), 0, Out::Ok, 10);
    done(&mut h, 2, Op::Read(k("k")), 10, Out::Value(0), 20);
    assert!(check(&h).is_linearizable());
    let mut h = History::new();
    done(&mut h, 1, Op::Write(k("k"), 1), 0, Out::Ok, 10);
    done(&mut h, 2, Op::Read(k("k")), 11, Out::Value(0), 20);
    assert!(!check(&h).is_linearizable());
}

// ---------------------------------------------------------------------
// Ambiguous operations.

#[test]
fn an_ambiguous_write_may_or_may_not_have_taken_effect() {
    let with_read = |value: i64| {
        let mut h = History::new();
        done(&mut h, 1, Op::Write(k("k"), 1), 0, Out::Ok, 10);
        h.push(Operation::ambiguous(2, Op::Write(k("k"), 2), 20))
            .expect("valid");
        let r = done(&mut h, 3, Op::Read(k("k")), 30, Out::Value(value), 40);
        (h, r)
    };
    assert!(check(&with_read(1).0).is_linearizable(), "never applied");
    assert!(check(&with_read(2).0).is_linearizable(), "applied");
    let (h, r) = with_read(3);
    let outcome = check(&h);
    assert_eq!(outcome.stats.ambiguous_operations, 1);
    let v = violation(&outcome);
    assert_eq!(ids(v), [r], "{}", v.timeline());

    // Applied late: read 1, then read 2 is fine; but once seen, it stays.
    let mut h = with_read(1).0;
    done(&mut h, 3, Op::Read(k("k")), 50, Out::Value(2), 60);
    assert!(check(&h).is_linearizable());
    let mut h = with_read(2).0;
    let back = done(&mut h, 3, Op::Read(k("k")), 50, Out::Value(1), 60);
    let outcome = check(&h);
    assert!(ids(violation(&outcome)).contains(&back));
}

#[test]
fn an_ambiguous_operation_that_could_explain_a_read_is_never_blamed_away() {
    // The stale read at 40 needs a write of 1 after write 2; the timed-out
    // write of 1 could be it, so only the later read of 2 (after 1 was
    // seen) is a contradiction, and the explanation keeps what makes it so.
    let mut h = History::new();
    done(&mut h, 1, Op::Write(k("k"), 1), 0, Out::Ok, 10);
    done(&mut h, 1, Op::Write(k("k"), 2), 20, Out::Ok, 30);
    h.push(Operation::ambiguous(2, Op::Write(k("k"), 1), 25))
        .expect("valid");
    let r1 = done(&mut h, 3, Op::Read(k("k")), 40, Out::Value(1), 50);
    assert!(check(&h).is_linearizable());
    let r2 = done(&mut h, 3, Op::Read(k("k")), 60, Out::Value(2), 70);
    let outcome = check(&h);
    let v = violation(&outcome);
    // "read 1 of a value never written" would be a lie: the ambiguous
    // write may have written it. The set is the two reads (and the write
    // of 2 that makes reading 2 possible only before the read of 1).
    assert!(
        ids(v).contains(&r1) && ids(v).contains(&r2),
        "{}",
        v.timeline()
    );
}

// ---------------------------------------------------------------------
// The budget and partitions.

/// `n` concurrent increments and a read of `read` during all of them.
fn concurrent_increments(n: u64, read: i64) -> History<Op, Out> {
    let mut h = History::new();
    for p in 0..n {
        done(&mut h, p, Op::Incr(k("hot")), p, Out::Ok, 1000 + p);
    }
    done(&mut h, n, Op::Read(k("hot")), 0, Out::Value(read), 2000);
    h
}

#[test]
fn running_out_of_steps_is_unknown_never_a_pass() {
    let tiny = CheckOptions {
        max_steps: 50,
        ..CheckOptions::default()
    };
    for read in [0, -1] {
        let outcome = linearizability::check(&KV, &concurrent_increments(14, read), &tiny);
        assert!(!outcome.is_linearizable());
        assert_eq!(
            outcome.verdict,
            Linearizability::Unknown {
                partition: k("hot"),
                steps: 50
            },
            "read {read}"
        );
        assert_eq!(outcome.stats.unknown_partitions, ["hot"]);
        assert!(outcome.summary().starts_with("unknown: partition `hot`"));
    }
    // With its budget the same search decides.
    assert!(check(&concurrent_increments(14, 14)).is_linearizable());
    // A read of more than every increment together is blamed alone:
    // increments free to count or not cannot reach it.
    let outcome = check(&concurrent_increments(6, 7));
    assert_eq!(ids(violation(&outcome)), [OpId(6)]);
}

#[test]
fn a_violation_on_one_key_names_that_key() {
    let mut h = History::new();
    for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
        let t = i as u64;
        done(&mut h, 1, Op::Write(k(key), 1), t, Out::Ok, 10 + t);
        done(&mut h, 2, Op::Write(k(key), 2), 20 + t, Out::Ok, 30 + t);
        let seen = if key == "b" { 1 } else { 2 };
        done(
            &mut h,
            3,
            Op::Read(k(key)),
            40 + t,
            Out::Value(seen),
            50 + t,
        );
    }
    let outcome = check(&h);
    let v = violation(&outcome);
    assert_eq!(v.partition, "b");
    assert!(v.ops.iter().all(|op| op.operation.input.key() == "b"));
    assert_eq!(outcome.stats.partitions, 3);
    assert_eq!(outcome.stats.failed_partitions, ["b"]);
    assert_eq!(outcome.stats.largest_partition, "a");
    assert_eq!(outcome.stats.largest_partition_operations, 3);

    // Unpartitioned, the same history fails as a whole.
    let outcome = linearizability::check(&Kv { partitioned: false }, &h, &CheckOptions::default());
    let v = violation(&outcome);
    assert_eq!(v.partition, "");
    assert!(
        v.ops.iter().all(|op| op.operation.input.key() == "b"),
        "{}",
        v.timeline()
    );

    // A failure outranks an unknown partition, and the first failing key
    // in order is reported.
    let mut h2 = concurrent_increments(14, -1);
    for op in h.operations() {
        h2.push(op.clone()).expect("valid");
    }
    let mut c = History::new();
    done(&mut c, 9, Op::Read(k("c")), 100, Out::Value(5), 110);
    for op in c.operations() {
        h2.push(op.clone()).expect("valid");
    }
    let tight = CheckOptions {
        max_steps: 500,
        ..CheckOptions::default()
    };
    let outcome = linearizability::check(&KV, &h2, &tight);
    assert_eq!(violation(&outcome).partition, "b");
    assert_eq!(outcome.stats.failed_partitions, ["b", "c"]);
    assert_eq!(outcome.stats.unknown_partitions, ["hot"]);
    assert!(
        outcome.summary().ends_with("; 1 more partitions fail"),
        "{}",
        outcome.summary()
    );
}

#[test]
fn renderings_are_deterministic_and_to_scale() {
    let mut h = History::new();
    done(&mut h, 1, Op::Write(k("k"), 1), 100, Out::Ok, 100);
    done(&mut h, 2, Op::Write(k("k"), 2), 150, Out::Ok, 160);
    done(&mut h, 1, Op::Read(k("k")), 200, Out::Value(1), 220);
    let a = check(&h);
    let b = check(&h);
    assert_eq!(a, b);
    let v = violation(&a);
    let timeline = v.timeline();
    let bars: Vec<&str> = timeline
        .lines()
        .skip(2)
        .map(|line| line.split_once('|').expect("bar").1)
        .collect();
    assert_eq!(bars.len(), 3);
    for bar in &bars {
        assert_eq!(
            bar.chars().count(),
            61,
            "60 columns and the closing bar: {bar:?}"
        );
    }
    assert!(
        bars[0].starts_with('*'),
        "a zero-length operation: {timeline}"
    );
    assert!(bars[2].trim_end_matches('|').ends_with(']'));
    let mermaid = v.mermaid();
    assert_eq!(
        mermaid,
        "gantt\n    title partition `k`  3 of 3 operations cannot be ordered\n    dateFormat x\n    axisFormat %Q\n    \
         %% times from 100 to 220, in the history's unit\n    section p1\n    \
         op0 write(k, 1) -> ok :op0, 100, 101\n    op2 read(k) -> 1 :op2, 200, 220\n    section p2\n    \
         op1 write(k, 2) -> ok :op1, 150, 160\n"
    );
}

// ---------------------------------------------------------------------
// Histories from real sequential executions are always accepted.

/// One drawn operation: process, key, kind, two values, the gap before it,
/// the time to its effect and to its answer, and whether it timed out
/// (0: timed out after taking effect, 1: timed out without, else: answered).
type Draw = (u64, usize, u8, i64, i64, u64, u64, u64, u8);

/// The history of a sequential execution: each operation takes effect at
/// one instant inside its interval, in the order of those instants; an
/// operation that timed out has no completion, and took effect or not.
fn execute(draws: &[Draw], keys: usize) -> History<Op, Out> {
    let processes = draws.iter().map(|d| d.0).max().map_or(0, |p| p + 1) as usize;
    let mut cursor = vec![0u64; processes];
    struct Planned {
        process: u64,
        op: Op,
        invoke: u64,
        effect: u64,
        complete: u64,
        timeout: Option<bool>,
    }
    let mut planned = Vec::new();
    for &(process, key, kind, a, b, gap, to_effect, to_answer, timeout) in draws {
        let key = format!("k{}", key % keys);
        let op = match kind % 4 {
            0 => Op::Read(key),
            1 => Op::Write(key, a),
            2 => Op::Cas(key, a, b),
            _ => Op::Incr(key),
        };
        let invoke = cursor[process as usize] + gap;
        let effect = invoke + to_effect;
        let complete = effect + to_answer;
        cursor[process as usize] = complete + 1;
        let timeout = match timeout {
            0 => Some(true),
            1 => Some(false),
            _ => None,
        };
        planned.push(Planned {
            process,
            op,
            invoke,
            effect,
            complete,
            timeout,
        });
    }
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by_key(|&i| (planned[i].effect, i));
    let mut state = BTreeMap::new();
    let mut outputs = vec![None; planned.len()];
    for i in order {
        if planned[i].timeout == Some(false) {
            continue;
        }
        let (next, answer) = apply(&state, &planned[i].op);
        state = next;
        outputs[i] = Some(answer);
    }
    let mut h = History::new();
    for (p, out) in planned.into_iter().zip(outputs) {
        let op = match (p.timeout, out) {
            (None, Some(out)) => Operation::completed(p.process, p.op, p.invoke, out, p.complete),
            _ => Operation::ambiguous(p.process, p.op, p.invoke),
        };
        h.push(op).expect("valid");
    }
    h
}

/// `timeout_one_in`: about one operation in that many times out (0: none).
fn draw(processes: u64, keys: usize, timeout_one_in: u8) -> impl Strategy<Value = Draw> {
    let timeout = if timeout_one_in == 0 {
        2..8u8
    } else {
        0..2 * timeout_one_in
    };
    (
        0..processes,
        0..keys,
        0..4u8,
        0..3i64,
        0..3i64,
        0..10u64,
        0..20u64,
        0..20u64,
        timeout,
    )
}

fn prop_config() -> PropConfig {
    PropConfig {
        cases: 200,
        failure_persistence: None,
        // The same cases in every run: a test's time and verdict do not
        // depend on the day.
        rng_seed: RngSeed::Fixed(0x11ea_2ab1),
        ..PropConfig::default()
    }
}

proptest! {
    #![proptest_config(prop_config())]

    #[test]
    fn sequential_executions_are_accepted(draws in prop::collection::vec(draw(4, 3, 0), 1..80)) {
        let h = execute(&draws, 3);
        for model in [Kv { partitioned: true }, Kv { partitioned: false }] {
            let outcome = linearizability::check(&model, &h, &CheckOptions::default());
            prop_assert!(outcome.is_linearizable(), "{}", outcome.summary());
        }
    }

    #[test]
    fn sequential_executions_with_timeouts_are_accepted(draws in prop::collection::vec(draw(4, 3, 4), 1..60)) {
        let h = execute(&draws, 3);
        let outcome = check(&h);
        prop_assert!(outcome.is_linearizable(), "{}", outcome.summary());
        let outcome = linearizability::check(&Kv { partitioned: false }, &h, &CheckOptions::default());
        prop_assert!(outcome.is_linearizable(), "{}", outcome.summary());
    }

    #[test]
    fn a_read_of_a_value_nobody_wrote_is_always_named(
        // Few timeouts: a failing search must try every subset of the
        // ambiguous operations (the cost doubles with each), and real
        // histories have few.
        draws in prop::collection::vec(draw(4, 2, 16), 1..60),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut ops = execute(&draws, 2).operations().to_vec();
        // A completed read answers 1000, which no write or increment here
        // can produce.
        let candidates: Vec<usize> = (0..ops.len())
            .filter(|&i| matches!(ops[i].input, Op::Read(_)) && !ops[i].is_ambiguous())
            .collect();
        prop_assume!(!candidates.is_empty());
        let bad = candidates[pick.index(candidates.len())];
        ops[bad].completion.as_mut().expect("completed").output = Out::Value(1000);
        let h = History::from_operations(ops).expect("valid");
        let outcome = check(&h);
        let v = violation(&outcome);
        prop_assert_eq!(ids(v), vec![OpId(bad)], "{}", v.timeline());
    }
}

// ---------------------------------------------------------------------
// History files.

#[test]
fn history_lines_parse_and_round_trip() {
    let text = r#"{"process": 1, "key": "k1", "op": "set", "args": {"value": 5}, "result": "ok", "invoke": 10, "complete": 25}

{"process": 2, "op": "flush", "invoke": 30, "complete": null}
{"process": 3, "key": "k1", "op": "cas", "args": [1, 2], "result": true, "invoke": 40, "complete": 40}
"#;
    let lines = parse_history_lines(text, "h.jsonl").expect("valid");
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].line, 1);
    assert_eq!(lines[0].key.as_deref(), Some("k1"));
    assert_eq!(lines[0].args, serde_json::json!({"value": 5}));
    assert_eq!(lines[1].line, 3);
    assert_eq!(lines[1].key, None);
    assert_eq!(lines[1].complete, None);
    assert_eq!(lines[1].result, serde_json::Value::Null);
    assert_eq!(lines[2].complete, Some(40));
    assert_eq!(
        lines[2].error("h.jsonl", "args", "expected two numbers"),
        "h.jsonl:4: field `args`: expected two numbers"
    );
    // Written back with serde, read again: the same lines.
    let written: String = lines
        .iter()
        .map(|l| serde_json::to_string(l).expect("json") + "\n")
        .collect();
    let again = parse_history_lines(&written, "w.jsonl").expect("valid");
    let strip = |ls: &[HistoryLine]| -> Vec<HistoryLine> {
        ls.iter()
            .cloned()
            .map(|l| HistoryLine { line: 0, ..l })
            .collect()
    };
    assert_eq!(strip(&again), strip(&lines));
}

#[test]
fn history_line_errors_name_the_file_the_line_and_the_field() {
    let ok = r#"{"process": 1, "op": "get", "invoke": 1, "complete": 2}"#;
    let cases = [
        (
            r#"{"process": 1, "op": "set", "invoke": "10", "complete": 25}"#,
            "h.jsonl:3: field `invoke`: expected a whole number, found \"10\"",
        ),
        (
            r#"{"process": -1, "op": "set", "invoke": 10, "complete": 25}"#,
            "h.jsonl:3: field `process`: expected a whole number, found -1",
        ),
        (
            r#"{"process": 1, "op": "set", "invoke": 10.5, "complete": 25}"#,
            "h.jsonl:3: field `invoke`: expected a whole number, found 10.5",
        ),
        (
            r#"{"process": 1, "op": "set", "invoke": 10, "complete": 25, "extra": 1}"#,
            "h.jsonl:3: field `extra`: unknown field (the fields are process, key, op, args, result, invoke, complete)",
        ),
        (
            r#"{"process": 1, "op": "set", "invoke": 10, "complete": 5}"#,
            "h.jsonl:3: field `complete`: 5 is before `invoke` 10",
        ),
        (
            r#"{"process": 1, "op": "set", "invoke": 10}"#,
            "h.jsonl:3: field `complete`: missing (a whole number, or null when the operation never returned)",
        ),
        (
            r#"{"op": "set", "invoke": 10, "complete": 25}"#,
            "h.jsonl:3: field `process`: missing (a whole number is required)",
        ),
        (
            r#"{"process": 1, "op": "", "invoke": 10, "complete": 25}"#,
            "h.jsonl:3: field `op`: missing (a non-empty string is required)",
        ),
        (
            r#"{"process": 1, "key": 7, "op": "set", "invoke": 10, "complete": 25}"#,
            "h.jsonl:3: field `key`: expected a string, found 7",
        ),
        (
            r#"{"process": 1, "op": "set", "result": 5, "invoke": 10, "complete": null}"#,
            "h.jsonl:3: field `result`: an operation that never returned (`complete` null) has no result, found 5",
        ),
        (
            r#"[1, 2]"#,
            "h.jsonl:3: expected a JSON object, found [1,2]",
        ),
        (
            r#"{"process": 1,"#,
            "h.jsonl:3: invalid JSON at column 14: EOF while parsing a value",
        ),
    ];
    for (bad, expected) in cases {
        let text = format!("{ok}\n{ok}\n{bad}\n{ok}\n");
        assert_eq!(
            parse_history_lines(&text, "h.jsonl").expect_err(bad),
            expected
        );
    }
}

#[test]
fn histories_refuse_completions_before_invocations() {
    let mut h: History<Op, Out> = History::new();
    let err = h
        .push(Operation::completed(
            4,
            Op::Read(k("k")),
            10,
            Out::Value(0),
            9,
        ))
        .expect_err("invalid");
    assert_eq!(
        err,
        "operation #0: process 4: completed at 9, before its invocation at 10"
    );
    assert!(h.is_empty());
    let err = History::from_operations(vec![
        Operation::completed(1, Op::Read(k("k")), 0, Out::Value(0), 1),
        Operation::completed(2, Op::Read(k("k")), 5, Out::Value(0), 1),
    ])
    .expect_err("invalid");
    assert!(err.starts_with("operation #1: process 2"), "{err}");
}

#[test]
#[should_panic(expected = "operation #0 (process 1) completed twice")]
fn completing_an_operation_twice_is_a_recording_bug() {
    let mut h: History<Op, Out> = History::new();
    let id = h.invoke(1, Op::Read(k("k")), 0);
    h.complete(id, Out::Value(0), 1);
    h.complete(id, Out::Value(0), 2);
}

#[test]
#[should_panic(expected = "completed at 3, before its invocation at 5")]
fn completing_before_the_invocation_is_a_recording_bug() {
    let mut h: History<Op, Out> = History::new();
    let id = h.invoke(1, Op::Read(k("k")), 5);
    h.complete(id, Out::Value(0), 3);
}

#[test]
fn an_empty_history_is_linearizable() {
    let outcome = check(&History::new());
    assert!(outcome.is_linearizable());
    assert_eq!(outcome.stats.partitions, 0);
}

// ---------------------------------------------------------------------
// Performance smoke: prints the time, asserts only the verdict.

/// SplitMix64, for a fixed big history.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn ten_thousand_operations_of_8_processes_on_100_keys_are_accepted() {
    let mut rng = Rng(7);
    let draws: Vec<Draw> = (0..10_000)
        .map(|_| {
            (
                rng.below(8),
                rng.below(100) as usize,
                rng.below(4) as u8,
                rng.below(3) as i64,
                rng.below(3) as i64,
                rng.below(20),
                rng.below(100),
                rng.below(100),
                // 1 in 100 times out (half of those after taking effect).
                if rng.below(100) == 0 {
                    rng.below(2) as u8
                } else {
                    2
                },
            )
        })
        .collect();
    let h = execute(&draws, 100);
    let started = Instant::now();
    let outcome = check(&h);
    let elapsed = started.elapsed();
    eprintln!(
        "linearizability: {} operations ({} ambiguous), {} partitions (largest {} ops), {} steps: {:?}",
        outcome.stats.operations,
        outcome.stats.ambiguous_operations,
        outcome.stats.partitions,
        outcome.stats.largest_partition_operations,
        outcome.stats.steps,
        elapsed
    );
    assert!(outcome.is_linearizable(), "{}", outcome.summary());
    assert_eq!(outcome.stats.operations, 10_000);
    assert_eq!(outcome.stats.partitions, 100);
}

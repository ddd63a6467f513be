//! Linearizability: could a concurrent history have come from a
//! sequential object?
//!
//! A [`History`] records operations as clients saw them: who asked
//! (`process`), what ([`Model::Input`]), when the call was made, and when
//! and with which answer ([`Model::Output`]) it returned. The history is
//! *linearizable* when every operation can be given one instant between
//! its invocation and its completion such that, taken in the order of
//! those instants, the answers are the ones the sequential object (the
//! [`Model`]) would give. [`check`] decides it; the application only
//! supplies the model.
//!
//! # Times
//!
//! Times are `u64`s in whatever unit the history uses (the application's
//! histories use simulated microseconds); the checker only compares them.
//! Intervals are closed: an operation completing at `t` and one invoked at
//! the same `t` are concurrent, never ordered. That accepts a little more
//! than a strict reading would, never less, so equal timestamps cannot
//! produce a false alarm.
//!
//! # Ambiguous operations
//!
//! An operation without a completion (a timeout, a lost connection, an
//! answer that could not be read) is *possibly applied*: it may take effect
//! at any instant after its invocation, with whatever answer the model
//! gives, or never. The search places it where it helps, or nowhere.
//! Models must honour this: whenever `step(state, input, Some(output))`
//! accepts, `step(state, input, None)` must accept with the same new state
//! (`None` means "any answer"). A model is deterministic: one input in one
//! state has one successor.
//!
//! # The search
//!
//! Wing & Gong's algorithm with Lowe's memoization, as Porcupine runs it:
//!
//! 1. Every operation becomes two entries, its call and its return (at
//!    infinity for an ambiguous one), sorted by time (calls before returns
//!    at equal times), in a doubly linked list.
//! 2. Walking the list from the front, each call met before the first
//!    return is a candidate to take effect now. A candidate the model
//!    accepts is *lifted*: its call and its return leave the list, the
//!    state and the candidate go on a stack, and the walk restarts at the
//!    front.
//! 3. Reaching a return means its operation was never placed, and every
//!    later operation must follow it: the last choice is undone (*unlift*:
//!    both entries go back where they were) and the walk goes on with the
//!    next candidate after it. An empty stack there: not linearizable.
//! 4. Every placement is memoized as (the set of placed operations as a
//!    bitset, the model's state). Reaching the same pair again by another
//!    order cannot end differently, so it is skipped. This turns the
//!    factorial search into one bounded by the distinct pairs.
//! 5. The list is empty, or the first return left is an ambiguous one (all
//!    completed operations are placed): linearizable.
//!
//! Operations on different [`Model::partition`]s commute
//! (P-compositionality): each partition is searched alone, in the order of
//! its key, which makes big histories of many keys cheap.
//!
//! # The budget
//!
//! [`CheckOptions::max_steps`] bounds the search of each partition: one
//! step is one entry visited. A partition that runs out is
//! [`Linearizability::Unknown`], never a pass. Memory grows with the steps
//! too: at most one (bitset, state) pair per step.
//!
//! # Explaining a failure
//!
//! A failing partition may have thousands of operations; the
//! [`Violation`] names a handful that cannot be ordered, found in two
//! stages (every search here also within `max_steps`, all of them within
//! [`CheckOptions::max_explain_steps`]):
//!
//! 1. **The cut.** The shortest time prefix that still fails: the
//!    operations invoked at or before some invocation time `T`, those
//!    completing after the next invocation time treated as possibly
//!    applied (their answers came later than the cut). A linearization of
//!    the whole partition restricts to one of any such prefix, so a prefix
//!    that fails proves the whole fails; prefixes fail monotonically, so
//!    the shortest is found by bisection.
//! 2. **The greedy pass.** Front to back by invocation, each completed
//!    operation of the cut is tried as *possibly applied anywhere after its
//!    invocation, or never*. If the rest still fails, the operation is left
//!    out of the explanation; it stays in the search as *optional*: free to
//!    take effect anywhere within its own interval, with any answer, or not
//!    at all. Otherwise it is needed and stays, exactly as recorded.
//!
//! The operations shown are therefore all completed, and shown as the
//! clients saw them; what the result guarantees: **even if every other
//! operation of the cut had been free to take effect anywhere in its
//! interval with any answer, or not at all (and the ambiguous ones anywhere
//! after their invocation), the shown operations cannot be ordered; and
//! each shown operation, were its answer and completion unknown, could
//! be.**
//!
//! Why not simply delete operations while the rest fails: deleting the
//! write of `1` from "write 1, write 2, read 1" leaves "write 2, read 1",
//! which also fails, and would blame a read "of a value never written". Here
//! that write is kept, because a write of `1` free to take effect later
//! would explain the read. Caveats: the set is one explanation, not the
//! smallest nor the only one (another order of trials may find another);
//! only the first contradiction in time is explained, and partitions other
//! than the first failing one are only named ([`CheckStats`]); an
//! operation that could not have helped is left out even when related (a
//! write of the value read, invoked only after the read returned); when the
//! explanation's budget runs out the remaining operations stay in, so the
//! set is sound but may be larger.
//!
//! [`Violation::timeline`] draws the set as text, [`Violation::mermaid`] as
//! a Mermaid `gantt` chart.
//!
//! # History files
//!
//! [`parse_history_lines`] reads JSON lines ([`HistoryLine`]) with errors
//! that name the file, the line and the field; the application maps each
//! line's `op`, `args` and `result` to its model's input and output.
//!
//! # Example
//!
//! A register: writes return nothing worth checking, reads return the
//! value.
//!
//! ```
//! use faultline_harness::linearizability::{self, CheckOptions, History, Linearizability, Model};
//!
//! #[derive(Clone, Debug)]
//! enum Op {
//!     Write(i64),
//!     Read,
//! }
//!
//! struct Register;
//!
//! impl Model for Register {
//!     type State = i64;
//!     type Input = Op;
//!     /// A read's value; a write answers the value written.
//!     type Output = i64;
//!
//!     fn init(&self) -> i64 {
//!         0
//!     }
//!
//!     fn step(&self, state: &i64, input: &Op, output: Option<&i64>) -> Option<i64> {
//!         match input {
//!             Op::Write(v) => Some(*v),
//!             Op::Read => (output.is_none() || output == Some(state)).then_some(*state),
//!         }
//!     }
//! }
//!
//! // Process 1 writes 1 during [0, 10]; process 2 reads during [5, 15]: the
//! // read may come before or after the write.
//! let mut history = History::new();
//! let write = history.invoke(1, Op::Write(1), 0);
//! let read = history.invoke(2, Op::Read, 5);
//! history.complete(write, 1, 10);
//! history.complete(read, 0, 15);
//! let outcome = linearizability::check(&Register, &history, &CheckOptions::default());
//! assert!(outcome.is_linearizable(), "{}", outcome.summary());
//!
//! // A read that begins after the write finished must see it.
//! let late = history.invoke(2, Op::Read, 20);
//! history.complete(late, 0, 30);
//! let outcome = linearizability::check(&Register, &history, &CheckOptions::default());
//! let Linearizability::NotLinearizable(violation) = &outcome.verdict else {
//!     panic!("{}", outcome.summary())
//! };
//! let ids: Vec<_> = violation.ops.iter().map(|op| op.id).collect();
//! assert_eq!(ids, [write, late]);
//! println!("{}", violation.timeline());
//!
//! // A write that timed out may or may not have happened: both reads are fine.
//! let mut history = History::new();
//! history.invoke(1, Op::Write(7), 0);
//! let read = history.invoke(2, Op::Read, 10);
//! history.complete(read, 7, 20);
//! let read = history.invoke(2, Op::Read, 30);
//! history.complete(read, 7, 40);
//! assert!(linearizability::check(&Register, &history, &CheckOptions::default()).is_linearizable());
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Debug, Write as _};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The sequential object a history is checked against.
///
/// Four items, no more: the checker needs a start state, a step that both
/// applies and checks (one call instead of an `apply` and an `accepts`
/// that would have to agree), a partition for P-compositionality, and text
/// for reports. The checker never compares outputs itself (`step` does),
/// so outputs need no `PartialEq`.
pub trait Model {
    /// The object's state. Hashed and compared for the search's memo.
    type State: Clone + Eq + Hash + Debug;
    /// What a client asks.
    type Input: Clone + Debug;
    /// What the object answers.
    type Output: Clone + Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `input` to `state`: the new state, or `None` when `output`
    /// is not what the sequential object would answer there. `output` is
    /// `None` for an operation whose answer is unknown: any answer is
    /// accepted then, and the step must succeed (with the same state)
    /// wherever it would succeed with some answer.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// The partition `input` belongs to: operations of different
    /// partitions commute (e.g. one key of a key-value store), so each is
    /// checked alone, from [`Model::init`]. Every operation must belong to
    /// exactly one; an operation that touches several (a flush of all
    /// keys) means the model cannot partition. Partitions are visited in
    /// the order of their keys. Default: `""`, one partition.
    fn partition(&self, input: &Self::Input) -> String {
        let _ = input;
        String::new()
    }

    /// One operation for reports, e.g. `cas(k1, 1, 2) -> true`; `output` is
    /// `None` when it never completed. Default: the `Debug` forms.
    fn describe(&self, input: &Self::Input, output: Option<&Self::Output>) -> String {
        match output {
            Some(output) => format!("{input:?} -> {output:?}"),
            None => format!("{input:?} -> ?"),
        }
    }
}

/// An operation's place in its [`History`] (its index), shown as `#3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId(pub usize);

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// How an operation returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion<O> {
    /// The answer the client received.
    pub output: O,
    /// When it was received, in the history's time unit; not before the
    /// invocation.
    pub completed_at: u64,
}

/// One operation as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client (or connection) that made it; for reports only: the
    /// checker does not require a process's operations to be sequential
    /// (a client may pipeline).
    pub process: u64,
    /// What was asked.
    pub input: I,
    /// When it was asked, in the history's time unit.
    pub invoked_at: u64,
    /// How it returned; `None`: it did not (timeout, connection lost,
    /// unreadable answer) and is possibly applied.
    pub completion: Option<Completion<O>>,
}

impl<I, O> Operation<I, O> {
    /// An operation that returned `output` at `completed_at`.
    pub fn completed(
        process: u64,
        input: I,
        invoked_at: u64,
        output: O,
        completed_at: u64,
    ) -> Operation<I, O> {
        Operation {
            process,
            input,
            invoked_at,
            completion: Some(Completion {
                output,
                completed_at,
            }),
        }
    }

    /// An operation that never returned: possibly applied.
    pub fn ambiguous(process: u64, input: I, invoked_at: u64) -> Operation<I, O> {
        Operation {
            process,
            input,
            invoked_at,
            completion: None,
        }
    }

    /// When it returned, if it did.
    pub fn completed_at(&self) -> Option<u64> {
        self.completion.as_ref().map(|c| c.completed_at)
    }

    /// Its answer, if it returned.
    pub fn output(&self) -> Option<&O> {
        self.completion.as_ref().map(|c| &c.output)
    }

    /// Whether it never returned.
    pub fn is_ambiguous(&self) -> bool {
        self.completion.is_none()
    }

    /// `Err` when it completed before it was invoked.
    fn validate(&self) -> Result<(), String> {
        match self.completed_at() {
            Some(done) if done < self.invoked_at => Err(format!(
                "process {}: completed at {done}, before its invocation at {}",
                self.process, self.invoked_at
            )),
            _ => Ok(()),
        }
    }
}

/// Operations in the order they were recorded (any order is fine: the
/// checker sorts by time), each valid: never completed before invoked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History<I, O> {
    operations: Vec<Operation<I, O>>,
}

impl<I, O> Default for History<I, O> {
    fn default() -> History<I, O> {
        History {
            operations: Vec::new(),
        }
    }
}

impl<I, O> History<I, O> {
    /// An empty history.
    pub fn new() -> History<I, O> {
        History::default()
    }

    /// A history of `operations`; `Err` names the first invalid one.
    pub fn from_operations(operations: Vec<Operation<I, O>>) -> Result<History<I, O>, String> {
        let mut history = History::new();
        for op in operations {
            history.push(op)?;
        }
        Ok(history)
    }

    /// Appends a recorded operation; `Err` when it completed before it was
    /// invoked.
    pub fn push(&mut self, op: Operation<I, O>) -> Result<OpId, String> {
        let id = OpId(self.operations.len());
        op.validate().map_err(|e| format!("operation {id}: {e}"))?;
        self.operations.push(op);
        Ok(id)
    }

    /// Records a call made at `invoked_at`; it stays ambiguous until
    /// [`History::complete`].
    pub fn invoke(&mut self, process: u64, input: I, invoked_at: u64) -> OpId {
        let id = OpId(self.operations.len());
        self.operations
            .push(Operation::ambiguous(process, input, invoked_at));
        id
    }

    /// Records the answer to call `id`, received at `completed_at`.
    ///
    /// # Panics
    ///
    /// When `id` is not an operation of this history, already completed,
    /// or invoked after `completed_at`: a bug in the recording code.
    pub fn complete(&mut self, id: OpId, output: O, completed_at: u64) {
        let count = self.operations.len();
        let op = self
            .operations
            .get_mut(id.0)
            .unwrap_or_else(|| panic!("operation {id} completed, but the history has {count}"));
        assert!(
            op.completion.is_none(),
            "operation {id} (process {}) completed twice",
            op.process
        );
        assert!(
            completed_at >= op.invoked_at,
            "operation {id} (process {}) completed at {completed_at}, before its invocation at {}",
            op.process,
            op.invoked_at
        );
        op.completion = Some(Completion {
            output,
            completed_at,
        });
    }

    /// The operations, indexed by [`OpId`].
    pub fn operations(&self) -> &[Operation<I, O>] {
        &self.operations
    }

    /// How many operations.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }
}

/// Limits of [`check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckOptions {
    /// Search steps (entries visited) allowed per partition, and per search
    /// while explaining a failure; a partition that runs out is
    /// [`Linearizability::Unknown`]. Default 1,000,000.
    pub max_steps: u64,
    /// Search steps allowed in all while explaining the failing partition
    /// (cut and greedy pass); when they run out, the operations not yet
    /// tried stay in the explanation. Default 10,000,000.
    pub max_explain_steps: u64,
}

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions {
            max_steps: 1_000_000,
            max_explain_steps: 10_000_000,
        }
    }
}

/// What [`check`] found, and what it cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOutcome<I, O> {
    /// The answer for the whole history.
    pub verdict: Linearizability<I, O>,
    /// Sizes and costs.
    pub stats: CheckStats,
}

impl<I, O> CheckOutcome<I, O> {
    /// Whether the verdict is [`Linearizable`](Linearizability::Linearizable).
    pub fn is_linearizable(&self) -> bool {
        matches!(self.verdict, Linearizability::Linearizable)
    }

    /// One line for a verdict, e.g. `not linearizable: partition \`k1\`: 3
    /// of 57 operations cannot be ordered (#3, #7, #9)`.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        match &self.verdict {
            Linearizability::Linearizable => format!(
                "linearizable: {} operations ({} possibly applied) in {} partitions, {} search steps",
                s.operations, s.ambiguous_operations, s.partitions, s.steps
            ),
            Linearizability::NotLinearizable(v) => {
                let ids: Vec<String> = v.ops.iter().map(|op| op.id.to_string()).collect();
                let more = match s.failed_partitions.len() {
                    0 | 1 => String::new(),
                    n => format!("; {} more partitions fail", n - 1),
                };
                format!(
                    "not linearizable: partition `{}`: {} of {} operations cannot be ordered ({}){more}",
                    v.partition,
                    v.ops.len(),
                    v.partition_operations,
                    ids.join(", ")
                )
            }
            Linearizability::Unknown { partition, steps } => format!(
                "unknown: partition `{partition}`: no answer within max_steps = {steps} search steps ({} partitions unknown)",
                s.unknown_partitions.len()
            ),
        }
    }
}

/// The answer for a whole history. A definite failure outranks an
/// unknown partition; the first in key order is reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Linearizability<I, O> {
    /// Every partition has a linearization.
    Linearizable,
    /// A partition has none: its key and a few operations that cannot be
    /// ordered.
    NotLinearizable(Violation<I, O>),
    /// No partition fails, but this one's search ran out of
    /// [`CheckOptions::max_steps`]: not a pass.
    Unknown {
        /// The partition's key.
        partition: String,
        /// The steps spent (the budget).
        steps: u64,
    },
}

/// A partition that is not linearizable, explained (see the module doc
/// for what the set guarantees).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation<I, O> {
    /// The partition's key (`""` when the model does not partition).
    pub partition: String,
    /// Operations that cannot be ordered, by invocation time, all
    /// completed, as recorded.
    pub ops: Vec<ViolationOp<I, O>>,
    /// Operations of the partition in all.
    pub partition_operations: usize,
    /// The cut: operations invoked after this time were not needed
    /// (`None`: the whole partition was).
    pub cut_at: Option<u64>,
    /// Search steps that found the partition not linearizable.
    pub steps: u64,
}

/// One operation of a [`Violation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViolationOp<I, O> {
    /// Its place in the history.
    pub id: OpId,
    /// The operation as recorded.
    pub operation: Operation<I, O>,
    /// [`Model::describe`] of it.
    pub description: String,
}

/// Sizes and costs of a check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStats {
    /// Operations in the history.
    pub operations: usize,
    /// Those without a completion.
    pub ambiguous_operations: usize,
    /// Partitions searched.
    pub partitions: usize,
    /// Search steps over all partitions (not counting the explanation).
    pub steps: u64,
    /// Search steps spent explaining the failure.
    pub explain_steps: u64,
    /// The partition with the most operations (the first in key order on a
    /// tie; `""` for an empty history).
    pub largest_partition: String,
    /// How many operations it has.
    pub largest_partition_operations: usize,
    /// Every partition that is not linearizable, in key order.
    pub failed_partitions: Vec<String>,
    /// Every partition whose search ran out of steps, in key order.
    pub unknown_partitions: Vec<String>,
}

/// Checks `history` against `model`, partition by partition in key order
/// (see the module doc).
pub fn check<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    options: &CheckOptions,
) -> CheckOutcome<M::Input, M::Output> {
    let all = history.operations();
    let mut partitions: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (index, op) in all.iter().enumerate() {
        assert!(
            op.validate().is_ok(),
            "history invariant: operation #{index}"
        );
        partitions
            .entry(model.partition(&op.input))
            .or_default()
            .push(index);
    }
    let mut stats = CheckStats {
        operations: all.len(),
        ambiguous_operations: all.iter().filter(|op| op.is_ambiguous()).count(),
        partitions: partitions.len(),
        ..CheckStats::default()
    };
    let mut first_failure: Option<(&String, u64)> = None;
    let mut first_unknown: Option<(&String, u64)> = None;
    for (key, members) in &partitions {
        if members.len() > stats.largest_partition_operations {
            stats.largest_partition = key.clone();
            stats.largest_partition_operations = members.len();
        }
        let ops = search_ops(all, members);
        let (found, steps) = search(model, &ops, options.max_steps);
        stats.steps += steps;
        match found {
            Found::Linearizable => {}
            Found::NotLinearizable => {
                stats.failed_partitions.push(key.clone());
                first_failure = first_failure.or(Some((key, steps)));
            }
            Found::Unknown => {
                stats.unknown_partitions.push(key.clone());
                first_unknown = first_unknown.or(Some((key, steps)));
            }
        }
    }
    let verdict = if let Some((key, steps)) = first_failure {
        let members = &partitions[key];
        let ops = search_ops(all, members);
        let explanation = explain(model, &ops, options);
        stats.explain_steps = explanation.steps;
        let ops = explanation
            .shown
            .iter()
            .map(|&local| {
                let id = OpId(members[local]);
                let operation = all[id.0].clone();
                let description = model.describe(&operation.input, operation.output());
                ViolationOp {
                    id,
                    operation,
                    description,
                }
            })
            .collect();
        Linearizability::NotLinearizable(Violation {
            partition: key.clone(),
            ops,
            partition_operations: members.len(),
            cut_at: explanation.cut_at,
            steps,
        })
    } else if let Some((key, steps)) = first_unknown {
        Linearizability::Unknown {
            partition: key.clone(),
            steps,
        }
    } else {
        Linearizability::Linearizable
    };
    CheckOutcome { verdict, stats }
}

// ---------------------------------------------------------------------
// The search.

/// How an operation may be placed.
enum Kind<'a, O> {
    /// As recorded: takes effect within `[invoked_at, completed_at]`,
    /// answering `output`.
    Observed { output: &'a O, completed_at: u64 },
    /// Left out of an explanation: takes effect within its interval with
    /// any answer, or not at all.
    Optional { completed_at: u64 },
    /// Never completed (or completed after a cut): takes effect at any time
    /// after its invocation with any answer, or never.
    Open,
}

impl<O> Clone for Kind<'_, O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<O> Copy for Kind<'_, O> {}

impl<'a, O> Kind<'a, O> {
    fn output(&self) -> Option<&'a O> {
        match *self {
            Kind::Observed { output, .. } => Some(output),
            Kind::Optional { .. } | Kind::Open => None,
        }
    }

    fn completed_at(&self) -> Option<u64> {
        match *self {
            Kind::Observed { completed_at, .. } | Kind::Optional { completed_at } => {
                Some(completed_at)
            }
            Kind::Open => None,
        }
    }
}

/// One operation as a search sees it.
struct SearchOp<'a, I, O> {
    input: &'a I,
    invoked_at: u64,
    kind: Kind<'a, O>,
}

impl<I, O> Clone for SearchOp<'_, I, O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I, O> Copy for SearchOp<'_, I, O> {}

fn search_ops<'a, I, O>(all: &'a [Operation<I, O>], members: &[usize]) -> Vec<SearchOp<'a, I, O>> {
    members
        .iter()
        .map(|&index| {
            let op = &all[index];
            SearchOp {
                input: &op.input,
                invoked_at: op.invoked_at,
                kind: match &op.completion {
                    Some(c) => Kind::Observed {
                        output: &c.output,
                        completed_at: c.completed_at,
                    },
                    None => Kind::Open,
                },
            }
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    Linearizable,
    NotLinearizable,
    Unknown,
}

/// No entry.
const NIL: usize = usize::MAX;

/// The doubly linked list of call and return entries. Entry `2 * i` is
/// operation `i`'s call, `2 * i + 1` its return; `2 * n` is the head.
struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
}

impl Entries {
    fn new<I, O>(ops: &[SearchOp<'_, I, O>]) -> Entries {
        let head = 2 * ops.len();
        // (finite, time, call before return, entry): unique per entry, so
        // the order is total and deterministic.
        let key = |entry: usize| {
            let op = &ops[entry / 2];
            if entry % 2 == 0 {
                (0u8, op.invoked_at, 0u8, entry)
            } else {
                match op.kind.completed_at() {
                    Some(t) => (0, t, 1, entry),
                    None => (1, 0, 1, entry),
                }
            }
        };
        let mut order: Vec<usize> = (0..head).collect();
        order.sort_unstable_by_key(|&entry| key(entry));
        let mut next = vec![NIL; head + 1];
        let mut prev = vec![NIL; head + 1];
        let mut last = head;
        for entry in order {
            next[last] = entry;
            prev[entry] = last;
            last = entry;
        }
        Entries { next, prev, head }
    }

    fn first(&self) -> usize {
        self.next[self.head]
    }

    fn remove(&mut self, entry: usize) {
        let (p, n) = (self.prev[entry], self.next[entry]);
        assert_eq!(self.next[p], entry, "entry {entry} is not in the list");
        self.next[p] = n;
        if n != NIL {
            assert_eq!(self.prev[n], entry);
            self.prev[n] = p;
        }
    }

    /// Puts back the entry removed last (dancing links: removals are
    /// undone in reverse order, so its neighbours still point at each
    /// other).
    fn restore(&mut self, entry: usize) {
        let (p, n) = (self.prev[entry], self.next[entry]);
        assert_eq!(self.next[p], n, "entry {entry} restored out of order");
        self.next[p] = entry;
        if n != NIL {
            assert_eq!(self.prev[n], p, "entry {entry} restored out of order");
            self.prev[n] = entry;
        }
    }

    /// Takes a placed operation's call and return out of the list.
    fn lift(&mut self, call: usize) {
        assert_eq!(call % 2, 0, "lift of a return entry");
        self.remove(call);
        self.remove(call + 1);
    }

    /// Undoes [`Entries::lift`].
    fn unlift(&mut self, call: usize) {
        assert_eq!(call % 2, 0, "unlift of a return entry");
        self.restore(call + 1);
        self.restore(call);
    }
}

/// The set of placed operations.
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Bits {
        Bits(vec![0; len.div_ceil(64)])
    }

    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize) {
        assert!(!self.get(i), "operation {i} placed twice");
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        assert!(self.get(i), "operation {i} unplaced but not placed");
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    fn snapshot(&self) -> Box<[u64]> {
        self.0.clone().into_boxed_slice()
    }
}

/// A multiply-rotate hasher with a final mix: the memo is only ever
/// probed, never iterated, so its order cannot leak into results.
#[derive(Default)]
struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        // murmur3's fmix64: the multiply leaves the low bits weak, and the
        // table indexes by them.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

/// A stack frame: the call placed (or skipped) and the state before it.
struct Frame<S> {
    call: usize,
    before: S,
    /// An optional operation skipped at its return: the last choice of
    /// its point, so undoing it undoes the choice before it too.
    skipped: bool,
}

/// The placements seen: (the placed operations as a bitset, the state).
type Memo<S> = HashSet<(Box<[u64]>, S), BuildHasherDefault<FastHasher>>;

/// A cut of a partition: the indices of its members and their search form.
type Cut<'a, I, O> = (Vec<usize>, Vec<SearchOp<'a, I, O>>);

/// Wing & Gong with Lowe's memo over `ops` (one partition), within
/// `max_steps` visited entries: what it found and the steps it took.
fn search<M: Model>(
    model: &M,
    ops: &[SearchOp<'_, M::Input, M::Output>],
    max_steps: u64,
) -> (Found, u64) {
    let mut list = Entries::new(ops);
    let mut placed = Bits::new(ops.len());
    let mut state = model.init();
    let mut stack: Vec<Frame<M::State>> = Vec::new();
    let mut memo: Memo<M::State> = HashSet::default();
    let mut steps = 0u64;
    let mut entry = list.first();
    loop {
        if entry == NIL {
            // Every call has its return after it, so a walk ends only on
            // an empty list.
            assert_eq!(list.first(), NIL, "the walk ran past a call's return");
            break;
        }
        if steps == max_steps {
            return (Found::Unknown, steps);
        }
        steps += 1;
        let index = entry / 2;
        let op = &ops[index];
        if entry % 2 == 0 {
            // A call: may the operation take effect now?
            if let Some(after) = model.step(&state, op.input, op.kind.output()) {
                placed.set(index);
                if memo.insert((placed.snapshot(), after.clone())) {
                    let before = std::mem::replace(&mut state, after);
                    stack.push(Frame {
                        call: entry,
                        before,
                        skipped: false,
                    });
                    list.lift(entry);
                    entry = list.first();
                    continue;
                }
                placed.clear(index);
            }
            entry = list.next[entry];
            continue;
        }
        // A return: its operation was not placed, and nothing after it may
        // come first.
        match op.kind {
            // The first return left is at infinity: every operation that
            // completed is placed; the ambiguous ones left never happened.
            Kind::Open => break,
            // Its window closed: it did not take effect.
            Kind::Optional { .. } => {
                placed.set(index);
                if memo.insert((placed.snapshot(), state.clone())) {
                    stack.push(Frame {
                        call: entry - 1,
                        before: state.clone(),
                        skipped: true,
                    });
                    list.lift(entry - 1);
                    entry = list.first();
                    continue;
                }
                placed.clear(index);
            }
            Kind::Observed { .. } => {}
        }
        // Backtrack: undo the last choice and try the next candidate after
        // it (a skip was its point's last choice: undo the one before too).
        loop {
            let Some(frame) = stack.pop() else {
                return (Found::NotLinearizable, steps);
            };
            state = frame.before;
            placed.clear(frame.call / 2);
            list.unlift(frame.call);
            if !frame.skipped {
                entry = list.next[frame.call];
                break;
            }
        }
    }
    assert_eq!(
        stack.len(),
        placed.count(),
        "one frame per placed operation"
    );
    for (i, op) in ops.iter().enumerate() {
        assert!(
            matches!(op.kind, Kind::Open) || placed.get(i),
            "search invariant: operation {i} completed but was not placed"
        );
    }
    (Found::Linearizable, steps)
}

// ---------------------------------------------------------------------
// Explaining a failure.

struct Explanation {
    /// Indices into the partition's operations, by invocation time.
    shown: Vec<usize>,
    cut_at: Option<u64>,
    steps: u64,
}

/// Searches within the explanation's budget.
struct Explainer<'m, M> {
    model: &'m M,
    max_steps: u64,
    budget: u64,
    steps: u64,
}

impl<M: Model> Explainer<'_, M> {
    /// Whether `ops` is known not to be linearizable (unknown: no).
    fn fails(&mut self, ops: &[SearchOp<'_, M::Input, M::Output>]) -> bool {
        let (found, steps) = search(self.model, ops, self.max_steps.min(self.budget));
        self.budget -= steps;
        self.steps += steps;
        found == Found::NotLinearizable
    }
}

/// The cut and the greedy pass of the module doc over a failing
/// partition's operations.
fn explain<M: Model>(
    model: &M,
    ops: &[SearchOp<'_, M::Input, M::Output>],
    options: &CheckOptions,
) -> Explanation {
    let mut explainer = Explainer {
        model,
        max_steps: options.max_steps,
        budget: options.max_explain_steps,
        steps: 0,
    };
    let mut times: Vec<u64> = ops.iter().map(|op| op.invoked_at).collect();
    times.sort_unstable();
    times.dedup();
    assert!(!times.is_empty(), "an empty partition cannot fail");
    // Cut `k`: the operations invoked at or before `times[k]`; those
    // completing at or after `times[k + 1]` are possibly applied. The last
    // cut is the whole partition, which is known to fail.
    let cut = |k: usize| -> Cut<'_, M::Input, M::Output> {
        let horizon = times.get(k + 1).map(|&t| t - 1);
        let members: Vec<usize> = (0..ops.len())
            .filter(|&i| ops[i].invoked_at <= times[k])
            .collect();
        let cut_ops = members
            .iter()
            .map(|&i| {
                let mut op = ops[i];
                if let (Some(h), Some(done)) = (horizon, op.kind.completed_at()) {
                    if done > h {
                        op.kind = Kind::Open;
                    }
                }
                op
            })
            .collect();
        (members, cut_ops)
    };
    let (mut lo, mut hi) = (0, times.len() - 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if explainer.fails(&cut(mid).1) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let cut_at = (hi + 1 < times.len()).then(|| times[hi]);
    let (members, mut work) = cut(hi);

    let mut trials: Vec<usize> = (0..work.len())
        .filter(|&i| matches!(work[i].kind, Kind::Observed { .. }))
        .collect();
    trials.sort_by_key(|&i| (work[i].invoked_at, members[i]));
    for i in trials {
        if explainer.budget == 0 {
            break;
        }
        let recorded = work[i].kind;
        let Kind::Observed { completed_at, .. } = recorded else {
            unreachable!("only completed operations are tried")
        };
        work[i].kind = Kind::Open;
        work[i].kind = if explainer.fails(&work) {
            Kind::Optional { completed_at }
        } else {
            recorded
        };
    }
    let (found, steps) = search(model, &work, options.max_steps);
    explainer.steps += steps;
    assert!(
        found != Found::Linearizable,
        "explanation invariant: the operations kept must still fail"
    );
    let mut shown: Vec<usize> = (0..work.len())
        .filter(|&i| matches!(work[i].kind, Kind::Observed { .. }))
        .collect();
    assert!(
        !shown.is_empty(),
        "explanation invariant: a set of only optional operations is linearizable"
    );
    shown.sort_by_key(|&i| (work[i].invoked_at, members[i]));
    Explanation {
        shown: shown.into_iter().map(|i| members[i]).collect(),
        cut_at,
        steps: explainer.steps,
    }
}

// ---------------------------------------------------------------------
// Rendering.

/// Columns of a timeline's bars.
const TIMELINE_COLUMNS: usize = 60;

impl<I, O> Violation<I, O> {
    fn span(&self) -> (u64, u64) {
        let lo = self
            .ops
            .iter()
            .map(|op| op.operation.invoked_at)
            .min()
            .unwrap_or(0);
        let hi = self
            .ops
            .iter()
            .map(|op| {
                op.operation
                    .completed_at()
                    .unwrap_or(op.operation.invoked_at)
            })
            .max()
            .unwrap_or(lo);
        (lo, hi)
    }

    fn headline(&self) -> String {
        let cut = match self.cut_at {
            Some(t) => format!(" (operations invoked after {t} not needed)"),
            None => String::new(),
        };
        format!(
            "partition `{}`: {} of {} operations cannot be ordered{cut}",
            self.partition,
            self.ops.len(),
            self.partition_operations
        )
    }

    /// The operations as text: a headline, then one line per operation
    /// (id, process, `[invoke, complete]`, description) with a bar drawn to
    /// scale over 60 columns between the earliest invocation and the latest
    /// completion (`*` when it fits one column, `[...>` when it never
    /// completed).
    pub fn timeline(&self) -> String {
        let (lo, hi) = self.span();
        let column = |t: u64| -> usize {
            if hi == lo {
                0
            } else {
                let scaled =
                    u128::from(t - lo) * (TIMELINE_COLUMNS as u128 - 1) / u128::from(hi - lo);
                scaled as usize
            }
        };
        let rows: Vec<[String; 4]> = self
            .ops
            .iter()
            .map(|op| {
                let o = &op.operation;
                let done = o
                    .completed_at()
                    .map_or_else(|| "?".to_string(), |t| t.to_string());
                [
                    op.id.to_string(),
                    format!("p{}", o.process),
                    format!("[{}, {done}]", o.invoked_at),
                    op.description.clone(),
                ]
            })
            .collect();
        let header = [
            "op".to_string(),
            "process".to_string(),
            "[invoke, complete]".to_string(),
            "operation".to_string(),
        ];
        let mut widths = [0usize; 4];
        for row in std::iter::once(&header).chain(&rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let cells = |row: &[String; 4]| -> String {
            let mut line = String::new();
            for (cell, w) in row.iter().zip(widths) {
                let _ = write!(line, "{cell:<w$}  ");
            }
            line
        };
        let mut out = self.headline();
        out.push('\n');
        let (left, right) = (lo.to_string(), hi.to_string());
        let gap = TIMELINE_COLUMNS
            .saturating_sub(left.len() + right.len())
            .max(1);
        let _ = writeln!(out, "{}|{left}{}{right}|", cells(&header), " ".repeat(gap));
        for (op, row) in self.ops.iter().zip(&rows) {
            let mut bar = vec![' '; TIMELINE_COLUMNS];
            let start = column(op.operation.invoked_at);
            match op.operation.completed_at() {
                Some(t) => {
                    let end = column(t);
                    if start == end {
                        bar[start] = '*';
                    } else {
                        bar[start] = '[';
                        bar[start + 1..end].fill('=');
                        bar[end] = ']';
                    }
                }
                None => {
                    bar[start] = '[';
                    bar[start + 1..].fill('.');
                    bar[TIMELINE_COLUMNS - 1] = '>';
                }
            }
            let bar: String = bar.into_iter().collect();
            let _ = writeln!(out, "{}|{bar}|", cells(row));
        }
        out
    }

    /// The operations as a Mermaid `gantt` chart (without a Markdown
    /// fence): one section per process, one task per operation from its
    /// invocation to its completion, in the history's time unit (Mermaid
    /// draws them as milliseconds); a zero-length operation is drawn one
    /// unit long, one that never completed reaches the chart's end.
    pub fn mermaid(&self) -> String {
        let (lo, hi) = self.span();
        let mut out = String::new();
        let _ = writeln!(out, "gantt");
        let _ = writeln!(out, "    title {}", mermaid_text(&self.headline()));
        let _ = writeln!(out, "    dateFormat x");
        let _ = writeln!(out, "    axisFormat %Q");
        let _ = writeln!(out, "    %% times from {lo} to {hi}, in the history's unit");
        let mut processes: BTreeMap<u64, Vec<&ViolationOp<I, O>>> = BTreeMap::new();
        for op in &self.ops {
            processes.entry(op.operation.process).or_default().push(op);
        }
        for (process, ops) in processes {
            let _ = writeln!(out, "    section p{process}");
            for op in ops {
                let o = &op.operation;
                let (end, tag) = match o.completed_at() {
                    Some(t) => (t.max(o.invoked_at + 1), ""),
                    None => (hi.max(o.invoked_at + 1), "active, "),
                };
                let _ = writeln!(
                    out,
                    "    op{} {} :{tag}op{}, {}, {end}",
                    op.id.0,
                    mermaid_text(&op.description),
                    op.id.0,
                    o.invoked_at
                );
            }
        }
        out
    }
}

/// Text safe in a Mermaid gantt line: no `:`, `;`, `#` or `%`, one line.
fn mermaid_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ':' | ';' | '#' | '%' | '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
}

// ---------------------------------------------------------------------
// History files.

/// One line of a history file (JSON lines), as the application writes it:
///
/// ```json
/// {"process": 1, "key": "k1", "op": "cas", "args": [1, 2], "result": true, "invoke": 10, "complete": 25}
/// ```
///
/// `process`, `op`, `invoke` and `complete` are required (`complete` may be
/// `null`: the operation never returned and is possibly applied); `key`,
/// `args` and `result` may be left out (`null`). Times are in the file's
/// unit (the application writes simulated microseconds). Read files with
/// [`parse_history_lines`], which checks what serde alone does not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryLine {
    /// The line's number in its file, from 1 (0 when not read from one).
    #[serde(skip)]
    pub line: usize,
    /// The client (or connection).
    pub process: u64,
    /// The key the operation is on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The operation's name, e.g. `set`.
    pub op: String,
    /// Its arguments, in the application's shape.
    #[serde(default)]
    pub args: Value,
    /// Its answer (`null` when it never returned).
    #[serde(default)]
    pub result: Value,
    /// When it was invoked.
    pub invoke: u64,
    /// When it returned, not before `invoke`; `null`: never.
    pub complete: Option<u64>,
}

impl HistoryLine {
    /// An error about this line in the parser's style:
    /// `FILE:LINE: field \`FIELD\`: MESSAGE`, for the application's own
    /// checks of `op`, `args` and `result`.
    pub fn error(&self, file_name: &str, field: &str, message: &str) -> String {
        format!("{file_name}:{}: field `{field}`: {message}", self.line)
    }
}

/// The fields of a [`HistoryLine`], in the order errors check them.
const LINE_FIELDS: [&str; 7] = [
    "process", "key", "op", "args", "result", "invoke", "complete",
];

/// Reads a history file's JSON lines (blank lines are skipped). Errors
/// name the file, the line and the field: `h.jsonl:3: field \`invoke\`:
/// expected a whole number, found "10"`; unknown fields, missing required
/// ones, `complete` before `invoke` and a `result` without `complete` are
/// errors.
pub fn parse_history_lines(text: &str, file_name: &str) -> Result<Vec<HistoryLine>, String> {
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        lines.push(parse_line(raw, file_name, index + 1)?);
    }
    Ok(lines)
}

fn parse_line(raw: &str, file_name: &str, line: usize) -> Result<HistoryLine, String> {
    let at = |message: String| format!("{file_name}:{line}: {message}");
    let field =
        |name: &str, message: String| format!("{file_name}:{line}: field `{name}`: {message}");
    let value: Value = serde_json::from_str(raw).map_err(|e| {
        let message = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = message.strip_suffix(&suffix).unwrap_or(&message);
        at(format!("invalid JSON at column {}: {message}", e.column()))
    })?;
    let Value::Object(map) = value else {
        return Err(at(format!(
            "expected a JSON object, found {}",
            found(&value)
        )));
    };
    if let Some(unknown) = map.keys().find(|k| !LINE_FIELDS.contains(&k.as_str())) {
        return Err(field(
            unknown,
            format!("unknown field (the fields are {})", LINE_FIELDS.join(", ")),
        ));
    }
    let whole = |name: &str| -> Result<Option<u64>, String> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| field(name, format!("expected a whole number, found {}", found(v)))),
        }
    };
    let text = |name: &str| -> Result<Option<String>, String> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(field(
                name,
                format!("expected a string, found {}", found(v)),
            )),
        }
    };
    let required = |name: &str, v: Option<u64>| {
        v.ok_or_else(|| field(name, "missing (a whole number is required)".to_string()))
    };
    let process = required("process", whole("process")?)?;
    let key = text("key")?;
    let op = text("op")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| field("op", "missing (a non-empty string is required)".to_string()))?;
    let args = map.get("args").cloned().unwrap_or(Value::Null);
    let result = map.get("result").cloned().unwrap_or(Value::Null);
    let invoke = required("invoke", whole("invoke")?)?;
    if !map.contains_key("complete") {
        return Err(field(
            "complete",
            "missing (a whole number, or null when the operation never returned)".to_string(),
        ));
    }
    let complete = whole("complete")?;
    if let Some(done) = complete.filter(|&done| done < invoke) {
        return Err(field(
            "complete",
            format!("{done} is before `invoke` {invoke}"),
        ));
    }
    if complete.is_none() && !result.is_null() {
        return Err(field(
            "result",
            format!(
                "an operation that never returned (`complete` null) has no result, found {}",
                found(&result)
            ),
        ));
    }
    Ok(HistoryLine {
        line,
        process,
        key,
        op,
        args,
        result,
        invoke,
        complete,
    })
}

/// A JSON value for an error message, cut at 40 characters.
fn found(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        let cut: String = text.chars().take(40).collect();
        format!("{cut}…")
    } else {
        text
    }
}

//! What a fault kind's file hands to the module: one function per thing
//! that plans and spaces do kind by kind, over the kind's own entries and
//! its own part of a space. A kind knows nothing of [`super::FaultPlan`] or
//! [`super::FaultSpace`]; the module's `KINDS` puts each kind's functions to
//! work on its fields.

use proptest::strategy::BoxedStrategy;

/// A fault kind: `E` is its plan entry (a plan holds a `Vec<E>`), `S` its
/// part of a space (`Option<Space>` for a kind of one table, `Vec<Space>`
/// for a kind of one rule per table).
pub(super) struct Kind<E: 'static, S: 'static> {
    /// The kind's name in plans and spaces (`[[NAME]]`, `[faults.NAME]`).
    pub name: &'static str,
    /// Checks the kind's entries of a plan (what serde's types cannot).
    pub check: fn(&[E]) -> Result<(), String>,
    /// Adds the host globs of the entries: (kind, glob).
    pub host_globs: for<'a> fn(&'a [E], &mut Vec<(&'static str, &'a str)>),
    /// Adds one part per entry to a plan's one-line summary.
    pub summary: fn(&[E], &mut Vec<String>),
    /// Whether the space allows the kind.
    pub allowed: fn(&S) -> bool,
    /// Checks the kind's part of a space; the message names the key.
    pub check_space: fn(&S) -> Result<(), String>,
    /// Adds the host globs of the kind's part of a space: (table, index of
    /// the table among its kind's, key, glob).
    pub space_host_globs: for<'a> fn(&'a S, &mut Vec<SpaceHostGlob<'a>>),
    /// The strategy that draws the kind's entries of a plan.
    pub draw: fn(&S) -> BoxedStrategy<Vec<E>>,
    /// A swarm's choice: `keep` says, for the kind (or each of its rules),
    /// whether it stays, and gives it a new probability.
    pub swarm: fn(&mut S, &mut Keep<'_>),
}

/// A host glob of a space, as [`super::FaultSpace::host_globs`] gives it.
pub(super) type SpaceHostGlob<'a> = (&'static str, usize, &'static str, &'a str);

/// A swarm's choice for one kind or rule: whether it stays; it sets the
/// probability of one that stays.
pub(super) type Keep<'a> = dyn FnMut(&mut f64) -> bool + 'a;

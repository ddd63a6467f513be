//! The bug catalog's ids, and which bugs' old lines run.
//!
//! Every buggy line in `src/` is marked with its id in a comment, so
//! `grep -rn MB-24634 src/` finds the lines of that fix. A run turns on the
//! old lines of at most one bug (the scenario's, or the one `hunt` picks),
//! with those of the later fixes its old code predates ([`PREDATES`]).

use std::collections::BTreeSet;

use faultline_harness::RunSpec;

pub const MB_24634: &str = "MB-24634";
pub const MB_53445: &str = "MB-53445";
pub const MB_35649: &str = "MB-35649";
pub const HAP_ENOTCONN: &str = "HAP-ENOTCONN";
pub const HAP_RCVBUF: &str = "HAP-RCVBUF";
pub const HAP_ERRHUP: &str = "HAP-ERRHUP";
pub const HAP_FDRACE: &str = "HAP-FDRACE";
pub const HAP_RUNMASK: &str = "HAP-RUNMASK";
pub const HAP_CONNERR: &str = "HAP-CONNERR";
pub const HAP_SPLICE_OVERRUN: &str = "HAP-SPLICE-OVERRUN";
pub const HAP_SPLICE_RDHUP: &str = "HAP-SPLICE-RDHUP";
pub const HAP_SPLICE_SPIN: &str = "HAP-SPLICE-SPIN";
pub const HAP_SPLICE_EBADF: &str = "HAP-SPLICE-EBADF";

/// Every id of the catalog.
pub const ALL: [&str; 13] = [
    MB_24634,
    MB_53445,
    MB_35649,
    HAP_ENOTCONN,
    HAP_RCVBUF,
    HAP_ERRHUP,
    HAP_FDRACE,
    HAP_RUNMASK,
    HAP_CONNERR,
    HAP_SPLICE_OVERRUN,
    HAP_SPLICE_RDHUP,
    HAP_SPLICE_SPIN,
    HAP_SPLICE_EBADF,
];

/// Bugs whose old code predates another catalog fix: a buggy variant is
/// the code as it was before its fix, so the later fixes are not in it
/// either.
///
/// HAP-CONNERR's old code is HAProxy before commit c0e98868f (October
/// 2012), two months before commit debdc4b65 (HAP-ERRHUP's fix) added the
/// error check at `raw_sock_to_buf`'s `read0`: with that check, a failed
/// connect taken for a hangup would still be caught there.
pub const PREDATES: [(&str, &[&str]); 1] = [(HAP_CONNERR, &[HAP_ERRHUP])];

/// The bugs whose old (pre-fix) lines run; empty means every fix is in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    buggy: BTreeSet<&'static str>,
}

impl Bugs {
    /// Every fix in.
    pub fn fixed() -> Bugs {
        Bugs::default()
    }

    /// The old lines of `id` run, and those of every later fix its old
    /// code predates (see [`PREDATES`]).
    pub fn with(id: &str) -> Bugs {
        let id = ALL
            .iter()
            .find(|known| **known == id)
            .unwrap_or_else(|| panic!("unknown bug id {id}"));
        let mut buggy = BTreeSet::from([*id]);
        for (old, later) in PREDATES {
            if old == *id {
                buggy.extend(later.iter().copied());
            }
        }
        Bugs { buggy }
    }

    /// The bugs a run's spec turns on.
    pub fn from_run(run: &RunSpec<'_>) -> Bugs {
        match run.bug {
            Some(id) if run.is_buggy(id) && ALL.contains(&id) => Bugs::with(id),
            _ => Bugs::fixed(),
        }
    }

    /// Whether `id`'s old lines run.
    pub fn is_buggy(&self, id: &str) -> bool {
        self.buggy.contains(id)
    }
}

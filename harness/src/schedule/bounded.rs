//! `schedule`: one schedule of bounded exploration (CHESS's iterative
//! context bounding, shuttle's DFS scheduler): the task that takes one of
//! the listed steps gives way there, once (it goes behind every ready
//! thread of its host, which run until they block, end or give way in
//! turn). A step is a hit of a point the rule acts on while another
//! thread of the host could run; steps are counted from 1 in the order
//! the run takes them, so a schedule replays exactly: the run is the same
//! up to each listed step. [`crate::explore::explore`] enumerates every
//! schedule of at most `c` steps.

use std::collections::BTreeSet;

use super::strategy::{Action, Hit, Strategy};

/// The `schedule` strategy (see the module docs).
pub struct Bounded {
    steps: BTreeSet<u64>,
}

impl Bounded {
    /// Gives way at each of `steps` (1-based).
    pub fn new(steps: &[u64]) -> Bounded {
        Bounded {
            steps: steps.iter().copied().collect(),
        }
    }
}

impl Strategy for Bounded {
    fn decide(&mut self, hit: Hit<'_>) -> Action {
        match hit.step {
            Some(step) if self.steps.contains(&step) => Action::Give {
                yields: 1,
                pause: std::time::Duration::ZERO,
            },
            _ => Action::Continue,
        }
    }
}

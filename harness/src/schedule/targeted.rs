//! `targeted`: at the n-th hit of each point it acts on, the task yields
//! `yields` times, then pauses `pause_us`. For replaying one known
//! interleaving; the other strategies search.

use std::time::Duration;

use super::strategy::{Action, Hit, Strategy};

/// The `targeted` strategy (see the module docs).
pub struct Targeted {
    nth: u64,
    yields: u32,
    pause: Duration,
}

impl Targeted {
    /// At the `nth` (1-based) hit of each point: `yields`, then `pause_us` µs.
    pub fn new(nth: u32, yields: u32, pause_us: u64) -> Targeted {
        assert!(nth >= 1, "nth is 1-based");
        Targeted {
            nth: u64::from(nth),
            yields,
            pause: Duration::from_micros(pause_us),
        }
    }
}

impl Strategy for Targeted {
    fn decide(&mut self, hit: Hit<'_>) -> Action {
        if hit.point_hits != self.nth || (self.yields == 0 && self.pause.is_zero()) {
            return Action::Continue;
        }
        Action::Give {
            yields: self.yields,
            pause: self.pause,
        }
    }
}

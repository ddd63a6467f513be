//! `random`: at every hit, with a probability, the task gives way: it
//! yields a drawn number of times or (half of those times, when pauses are
//! allowed) pauses a drawn simulated time. A released lock goes to a
//! waiter drawn at random.

use std::time::Duration;

use rand::Rng;

use super::strategy::draw_count;
use super::strategy::{Action, Hit, Strategy, TaskKey};
use crate::seed::SimRng;

/// The `random` strategy (see the module docs).
pub struct Random {
    probability: f64,
    max_yields: u32,
    max_pause_us: u64,
}

impl Random {
    /// Gives way at a hit with `probability`, yielding 1..=`max_yields`
    /// times or pausing 1..=`max_pause_us` µs (0: no pauses).
    pub fn new(probability: f64, max_yields: u32, max_pause_us: u64) -> Random {
        assert!(
            (0.0..=1.0).contains(&probability),
            "a probability within 0..=1"
        );
        Random {
            probability,
            max_yields,
            max_pause_us,
        }
    }
}

impl Strategy for Random {
    fn decide(&mut self, hit: Hit<'_>) -> Action {
        if !hit.rng.random_bool(self.probability) {
            return Action::Continue;
        }
        if self.max_pause_us > 0 && hit.rng.random_bool(0.5) {
            let us = hit.rng.random_range(1..=self.max_pause_us);
            Action::Give {
                yields: 0,
                pause: Duration::from_micros(us),
            }
        } else {
            Action::Give {
                yields: draw_count(hit.rng, self.max_yields),
                pause: Duration::ZERO,
            }
        }
    }

    fn choose(&mut self, waiters: &[TaskKey], rng: &mut SimRng) -> usize {
        rng.random_range(0..waiters.len())
    }
}

//! The progress bar of long sweeps: the CLI's [`Progress`], drawn only on
//! a terminal (indicatif hides it otherwise).

use std::sync::Mutex;

use crate::runner::Progress;

/// A progress bar per sweep, `name [=====>   ] 120/500 seeds 40/s eta 9s`.
#[derive(Default)]
pub struct Bar {
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl Progress for Bar {
    fn start(&self, scenario: &str, seeds: u64) {
        let bar = indicatif::ProgressBar::new(seeds);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} seeds {per_sec} eta {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(scenario.to_string());
        *self.bar.lock().expect("not poisoned") = Some(bar);
    }

    fn advance(&self) {
        if let Some(bar) = &*self.bar.lock().expect("not poisoned") {
            bar.inc(1);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().expect("not poisoned").take() {
            bar.finish_and_clear();
        }
    }
}

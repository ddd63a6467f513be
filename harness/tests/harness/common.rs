//! What several of these modules share.

use faultline_harness::Faults;
use faultline_harness::faults::FaultPlan;

/// One fixed fault plan, from its TOML text.
pub fn plan(text: &str) -> Faults {
    Faults::Plan {
        plan: Box::new(toml::from_str::<FaultPlan>(text).expect("a valid plan")),
        source: None,
    }
}

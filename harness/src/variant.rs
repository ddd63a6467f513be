//! Which lines of a bug's fix run: data every layer may name.

use serde::{Deserialize, Serialize};

/// Which lines of a bug's fix run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The lines before the fix.
    Buggy,
    /// The lines of the fix.
    Fixed,
}

impl Variant {
    /// The variant's name, as `--variant` takes it (`buggy`, `fixed`).
    pub fn name(self) -> &'static str {
        match self {
            Variant::Buggy => "buggy",
            Variant::Fixed => "fixed",
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Variant {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "buggy" => Ok(Variant::Buggy),
            "fixed" => Ok(Variant::Fixed),
            other => Err(format!("unknown variant `{other}` (buggy or fixed)")),
        }
    }
}

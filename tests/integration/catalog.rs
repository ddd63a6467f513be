//! The bug catalog lives in the project (`docs/bugs.md`): every id the code
//! knows has its section and a row naming its scenarios; the README and
//! the docs point at nothing outside the repository.

use std::path::Path;

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative))
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
}

#[test]
fn every_reproduced_bug_has_its_section_and_its_scenarios_in_the_catalog() {
    let catalog = read("docs/bugs.md");
    for id in faultline::bugs::ALL {
        assert!(
            catalog.lines().any(|l| l.starts_with(&format!("## {id}:"))),
            "docs/bugs.md has no section for {id}"
        );
    }
    let (scenarios, errors) = faultline::registry().load_dir(&faultline::default_scenarios_dir());
    assert!(errors.is_empty(), "{errors:?}");
    for scenario in scenarios.iter().filter(|s| s.bug().is_some()) {
        let row = format!("| {} |", scenario.bug().unwrap());
        assert!(
            catalog
                .lines()
                .any(|l| l.starts_with(&row) && l.contains(&format!("`{}`", scenario.name))),
            "docs/bugs.md's summary has no row for {}",
            scenario.name
        );
        for recorded in &scenario.spec.expect.fails {
            assert!(
                catalog.contains(&format!("{} (`", recorded.seed)),
                "{}: recorded seed {} is not in the catalog",
                scenario.name,
                recorded.seed
            );
        }
    }
}

#[test]
fn nothing_points_outside_the_repository() {
    for file in [
        "README.md",
        "ARCHITECTURE.md",
        "docs/bugs.md",
        "docs/scenarios.md",
    ] {
        let text = read(file);
        assert!(!text.contains("../shared"), "{file} points at ../shared");
    }
}

//! The harness's layers: each module imports only from the layers before
//! it, and no two modules import each other through any path. The test
//! reads the `crate::` paths of every file under `src/` (comments and
//! `#[cfg(test)]` modules left out), so a new import that breaks a layer
//! fails here with the file and the path that broke it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules, layer by layer (see ARCHITECTURE.md).
const LAYERS: [(&str, &[&str]); 4] = [
    (
        "data",
        &[
            "seed",
            "variant",
            "diag",
            "faults",
            "stats",
            "linearizability",
        ],
    ),
    ("world", &["ctx"]),
    (
        "what code under test calls",
        &["trace", "oracle", "schedule", "sync", "net", "sys"],
    ),
    (
        "what drives runs",
        &["scenario", "runner", "explore", "report", "testing", "cli"],
    ),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// Every `.rs` file under `dir`, as (path relative to `src`, text).
fn files(dir: &Path, src: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("a readable directory")
        .map(|e| e.expect("an entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(&path, src, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(src).expect("under src");
            let text = std::fs::read_to_string(&path).expect("a readable file");
            out.push((rel.to_string_lossy().replace('\\', "/"), text));
        }
    }
}

/// The code of a file: comment lines and a trailing `#[cfg(test)] mod
/// tests` left out.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file's code names: `crate::x...` paths, the
/// names inside `use crate::{x, y::z}`, and `super::` from a submodule
/// (its own top-level module, so not an edge).
fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // `use crate::{a, b::{c, d}, e};`: the top-level names.
            let mut depth = 0;
            let mut item = String::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        push_name(&item, &mut found);
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(ch);
                }
            }
            push_name(&item, &mut found);
        } else {
            push_name(after, &mut found);
        }
        rest = after;
    }
    found
}

fn push_name(path: &str, found: &mut BTreeSet<String>) {
    let name: String = path
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if !name.is_empty() {
        found.insert(name);
    }
}

fn top_module(rel: &str) -> &str {
    rel.split('/')
        .next()
        .expect("a path")
        .trim_end_matches(".rs")
}

#[test]
fn each_module_imports_only_from_earlier_layers_and_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &src, &mut all);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (rel, text) in &all {
        if rel == "lib.rs" {
            continue;
        }
        let me = top_module(rel);
        let Some(my_layer) = layer_of(me) else {
            problems.push(format!(
                "{rel}: module `{me}` is in no layer (add it to LAYERS and ARCHITECTURE.md)"
            ));
            continue;
        };
        for name in imports(&code(text)) {
            if name == me {
                continue;
            }
            let Some(layer) = layer_of(&name) else {
                // A root re-export (`crate::Outcome`): name its module instead.
                problems.push(format!(
                    "{rel}: `crate::{name}` goes through the crate root; import it from its module"
                ));
                continue;
            };
            if layer > my_layer {
                problems.push(format!(
                    "{rel}: `{me}` ({}) imports `{name}` ({}), a later layer",
                    LAYERS[my_layer].0, LAYERS[layer].0
                ));
            }
            edges.entry(me.to_string()).or_default().insert(name);
        }
    }
    // Circles among modules, layer order aside (within a layer too).
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    problems.push(format!("import circle: {} -> {start}", path.join(" -> ")));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_reader_finds_imports_in_groups_and_paths() {
    let found = imports("use crate::{faults::{A, B}, seed};\nlet x = crate::ctx::with(f);");
    let names: Vec<&str> = found.iter().map(String::as_str).collect();
    assert_eq!(names, ["ctx", "faults", "seed"]);
    assert_eq!(code("a\n// crate::x\nb"), "a\nb");
}

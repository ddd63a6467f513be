//! The shape ARCHITECTURE.md promises, checked on the source files.
//!
//! - The harness's layers: each top-level module of `harness/src` imports
//!   only from its own layer or the layers before it, never through the
//!   crate root's re-exports.
//! - No import circle among the files of `harness/src`, `src/server` or
//!   `src/proxy`: a reader can take the files one by one, each needing only
//!   files read before it.
//!
//! The test reads every file's paths to other modules of its crate
//! (`crate::`, `super::`, `self::` and child modules, in `use` trees and in
//! code; comments, strings and a trailing `#[cfg(test)] mod tests` left
//! out) and resolves each to the file of the longest module it names. A new
//! import that breaks a rule fails here, naming the file and the import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The harness's top-level modules, layer by layer (see ARCHITECTURE.md).
const HARNESS_LAYERS: [(&str, &[&str]); 4] = [
    (
        "data",
        &[
            "seed",
            "variant",
            "diag",
            "coverage",
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

/// A module's path from its crate's root (`["faults", "race"]`).
type ModPath = Vec<String>;

/// One crate's source files.
struct Crate {
    /// Module path -> file (relative to the crate's `src`).
    files: BTreeMap<ModPath, String>,
    /// File -> its code, cleaned (see [`clean`]).
    code: BTreeMap<String, String>,
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut all = Vec::new();
        walk(src, src, &mut all);
        let mut files = BTreeMap::new();
        let mut code = BTreeMap::new();
        for (rel, text) in all {
            files.insert(module_of(&rel), rel.clone());
            code.insert(rel, clean(&text));
        }
        Crate { files, code }
    }

    /// Every import of a file: (the path as written, the file it resolves to).
    fn imports(&self, rel: &str) -> Vec<(String, String)> {
        let me = module_of(rel);
        let mut out = Vec::new();
        for path in paths(&self.code[rel]) {
            let Some(absolute) = self.absolute(&me, &path) else {
                continue;
            };
            // The longest prefix that is a module with a file of its own.
            let target = (0..=absolute.len())
                .rev()
                .find_map(|n| self.files.get(&absolute[..n]))
                .expect("the crate root always resolves");
            if *target != rel {
                out.push((path.join("::"), target.clone()));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// A path from the crate's root, or `None` for a path outside the crate
    /// (a dependency, std, a type's associated item).
    fn absolute(&self, me: &ModPath, path: &[String]) -> Option<ModPath> {
        let (mut base, rest): (ModPath, &[String]) = match path.first()?.as_str() {
            "crate" => (Vec::new(), &path[1..]),
            "self" => (me.clone(), &path[1..]),
            "super" => {
                let mut base = me.clone();
                let mut rest = path;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
                (base, rest)
            }
            child => {
                let mut base = me.clone();
                base.push(child.to_string());
                if !self.files.contains_key(&base) {
                    return None;
                }
                (me.clone(), path)
            }
        };
        base.extend(rest.iter().cloned());
        Some(base)
    }
}

/// Every `.rs` file under `dir`, as (path relative to `src`, text).
fn walk(dir: &Path, src: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, src, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(src).expect("under src");
            let text = std::fs::read_to_string(&path).expect("a readable file");
            out.push((rel.to_string_lossy().replace('\\', "/"), text));
        }
    }
}

/// `faults/race.rs` -> `[faults, race]`; `faults/mod.rs` -> `[faults]`;
/// `lib.rs` and `main.rs` -> the root.
fn module_of(rel: &str) -> ModPath {
    let mut parts: ModPath = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// A file's code without its unit tests, comments, and the contents of
/// string and character literals.
fn clean(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        match (chars[i], chars.get(i + 1).copied()) {
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                i += 2;
                while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                    i += 1;
                }
                i += 2;
            }
            ('r', Some('#' | '"')) if !ident_char(out.chars().last()) => {
                // A raw string: r"..." or r#"..."#.
                let mut j = i + 1;
                let mut hashes = 0;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) != Some(&'"') {
                    out.push(chars[i]);
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= chars.len() {
                        break;
                    }
                    if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            }
            ('"', _) => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            ('\'', Some(c)) if c == '\\' || chars.get(i + 2) == Some(&'\'') => {
                // A character literal ('x', '\n'); a lifetime has no closing quote.
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("' '");
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn ident_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The code's tokens: identifiers, `::`, and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_alphanumeric() || c == '_' {
            let mut word = c.to_string();
            while let Some(&n) = chars
                .peek()
                .filter(|n| n.is_ascii_alphanumeric() || **n == '_')
            {
                word.push(n);
                chars.next();
            }
            out.push(word);
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.push("::".into());
        } else if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    out
}

/// Every path of the code: each leaf of a `use` tree, and each `a::b::c`
/// elsewhere, as its segments.
fn paths(code: &str) -> Vec<Vec<String>> {
    let tokens = tokens(code);
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "use" {
            i = use_tree(&tokens, i + 1, Vec::new(), &mut out);
        } else if ident(&tokens[i]) && tokens.get(i + 1).is_some_and(|t| t == "::") {
            let mut path = vec![tokens[i].clone()];
            i += 1;
            while tokens.get(i).is_some_and(|t| t == "::")
                && tokens.get(i + 1).is_some_and(|t| ident(t))
            {
                path.push(tokens[i + 1].clone());
                i += 2;
            }
            out.push(path);
        } else {
            i += 1;
        }
    }
    out
}

fn ident(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
}

/// Reads one `use` tree from `i`, adds its leaves (after `prefix`) to `out`,
/// and returns the index after it.
fn use_tree(
    tokens: &[String],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    while i < tokens.len() {
        match tokens[i].as_str() {
            "{" => {
                i += 1;
                while i < tokens.len() && tokens[i] != "}" {
                    i = use_tree(tokens, i, prefix.clone(), out);
                    if tokens.get(i).is_some_and(|t| t == ",") {
                        i += 1;
                    }
                }
                return i + 1;
            }
            "::" => i += 1,
            "*" => {
                out.push(prefix);
                return i + 1;
            }
            "as" => i += 2,
            "," | "}" | ";" => {
                if !prefix.is_empty() {
                    out.push(prefix);
                }
                return if tokens[i] == ";" { i + 1 } else { i };
            }
            word => {
                prefix.push(word.to_string());
                i += 1;
            }
        }
    }
    i
}

/// Import circles among the files whose path starts with `under`: each as
/// "a.rs -> b.rs -> a.rs", once per circle (its smallest file first).
fn circles(krate: &Crate, under: &str) -> Vec<String> {
    let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for rel in krate.code.keys().filter(|r| r.starts_with(under)) {
        let targets = krate
            .imports(rel)
            .into_iter()
            .map(|(_, t)| t)
            .filter(|t| t.starts_with(under));
        edges.entry(rel).or_default().extend(targets);
    }
    let mut found = BTreeSet::new();
    for &start in edges.keys() {
        // The shortest path back to `start`, breadth first.
        let mut from: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.to_string()]);
        'search: while let Some(at) = queue.pop_front() {
            for next in edges.get(at.as_str()).into_iter().flatten() {
                if next == start {
                    let mut circle = vec![at.clone()];
                    while let Some(prev) = from.get(circle.last().expect("non-empty")) {
                        circle.push(prev.clone());
                    }
                    circle.reverse();
                    // One spelling per circle: start at its smallest file.
                    let least = (0..circle.len())
                        .min_by_key(|&k| &circle[k])
                        .expect("non-empty");
                    circle.rotate_left(least);
                    circle.push(circle[0].clone());
                    found.insert(circle.join(" -> "));
                    break 'search;
                }
                if !from.contains_key(next) && next != start {
                    from.insert(next.clone(), at.clone());
                    queue.push_back(next.clone());
                }
            }
        }
    }
    found.into_iter().collect()
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn layer_of(module: &str) -> Option<usize> {
    HARNESS_LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

#[test]
fn each_harness_module_imports_only_from_its_layer_or_earlier_ones() {
    let krate = Crate::read(&root().join("harness/src"));
    let mut problems = Vec::new();
    for rel in krate.code.keys().filter(|r| *r != "lib.rs") {
        let me = &module_of(rel)[0];
        let Some(my_layer) = layer_of(me) else {
            problems.push(format!(
                "{rel}: module `{me}` is in no layer (add it to HARNESS_LAYERS and ARCHITECTURE.md)"
            ));
            continue;
        };
        for (path, target) in krate.imports(rel) {
            if target == "lib.rs" {
                problems.push(format!(
                    "{rel}: `{path}` goes through the crate root; import it from its module"
                ));
                continue;
            }
            let theirs = &module_of(&target)[0];
            let layer = layer_of(theirs).expect("every module has a layer (checked above)");
            if layer > my_layer {
                problems.push(format!(
                    "{rel}: `{path}` imports `{theirs}` ({}), a later layer than `{me}` ({})",
                    HARNESS_LAYERS[layer].0, HARNESS_LAYERS[my_layer].0
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_import_circle_among_the_files_of_the_harness_the_kv_server_or_the_proxy() {
    let harness = Crate::read(&root().join("harness/src"));
    let app = Crate::read(&root().join("src"));
    let mut problems = circles(&harness, "");
    problems.extend(circles(&app, "server/"));
    problems.extend(circles(&app, "proxy/"));
    assert!(
        problems.is_empty(),
        "import circles (the files of each import the next):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_reader_resolves_use_trees_and_paths_to_files() {
    let code = clean(
        "use crate::{faults::{A, race::B}, seed};\n// crate::ctx::gone\nuse super::x as y;\n\
         let s = \"crate::net::no\"; let c = '\"'; fn f<'a>() { crate::sys::call(); }\nuse child::Z;",
    );
    let found: Vec<String> = paths(&code).iter().map(|p| p.join("::")).collect();
    assert_eq!(
        found,
        [
            "crate::faults::A",
            "crate::faults::race::B",
            "crate::seed",
            "super::x",
            "crate::sys::call",
            "child::Z"
        ]
    );
    let krate = Crate {
        files: [
            (vec![], "lib.rs"),
            (vec!["faults"], "faults/mod.rs"),
            (vec!["faults", "race"], "faults/race.rs"),
            (vec!["seed"], "seed.rs"),
        ]
        .into_iter()
        .map(|(m, f)| (m.into_iter().map(str::to_string).collect(), f.to_string()))
        .collect(),
        code: [
            ("faults/mod.rs", "use race::Race; pub use crate::seed::S;"),
            (
                "faults/race.rs",
                "use super::{Plan, common::X}; fn f() { Vec::new(); }",
            ),
        ]
        .into_iter()
        .map(|(f, c)| (f.to_string(), clean(c)))
        .collect(),
    };
    let targets = |rel: &str| -> BTreeSet<String> {
        krate.imports(rel).into_iter().map(|(_, t)| t).collect()
    };
    assert_eq!(
        targets("faults/mod.rs"),
        BTreeSet::from(["faults/race.rs".to_string(), "seed.rs".to_string()])
    );
    assert_eq!(
        targets("faults/race.rs"),
        BTreeSet::from(["faults/mod.rs".to_string()])
    );
    assert_eq!(
        circles(&krate, "faults/"),
        ["faults/mod.rs -> faults/race.rs -> faults/mod.rs"]
    );
}

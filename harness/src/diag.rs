//! Diagnostics for TOML files: where in a file a key or value is, as
//! `LINE:COLUMN`, so that every error about a scenario file or a plan file
//! names the file, the line and the field. Data only: knows no scenario.

use std::path::Path;

/// The dotted key a validation message starts with (`faults.race.nth ...`).
pub(crate) fn first_key(message: &str) -> &str {
    message.split([' ', ':']).next().unwrap_or("")
}

/// `LINE:COLUMN` of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    format!("{line}:{column}")
}

/// `LINE:COLUMN` of a dotted key (`faults.send_buffer.bytes`): the key's
/// line inside its table when the file has that table, else the first line
/// that sets the last part of the key or starts a table named so.
pub(crate) fn locate(text: &str, path: &str) -> String {
    let (table, key) = match path.rsplit_once('.') {
        Some((table, key)) => (table, key),
        None => ("", path),
    };
    if !table.is_empty() {
        if let Some(range) = table_range(text, table) {
            if let Some(found) = find_key(text, key, range.clone()) {
                return found;
            }
            return line_col(text, range.start);
        }
        // The key may itself be a table (`[faults.teleport]`).
        if let Some(range) = table_range(text, path) {
            return line_col(text, range.start);
        }
    }
    find_key(text, key, 0..text.len()).unwrap_or_else(|| "1:1".to_string())
}

/// `LINE:COLUMN` of the string `value` of `key` in the `nth` (0-based)
/// table named `table` (`[table]` or `[[table]]`); of the key, or of the
/// table, when the value is not found as written.
pub(crate) fn locate_value(text: &str, table: &str, nth: usize, key: &str, value: &str) -> String {
    let Some(range) = nth_table_range(text, table, nth) else {
        return locate(text, &format!("{table}.{key}"));
    };
    let quoted = format!("\"{value}\"");
    let mut offset = 0;
    let mut in_key = false;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        if start < range.start || start >= range.end {
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            in_key = true;
        } else if in_key && trimmed.contains('=') {
            in_key = false;
        }
        if in_key {
            if let Some(at) = line.find(&quoted) {
                return line_col(text, start + at + 1);
            }
        }
    }
    find_key(text, key, range.clone()).unwrap_or_else(|| line_col(text, range.start))
}

/// The byte range of the `nth` (0-based) table named `name`.
pub(crate) fn nth_table_range(
    text: &str,
    name: &str,
    nth: usize,
) -> Option<std::ops::Range<usize>> {
    let mut offset = 0;
    let mut seen = 0;
    let mut start = None;
    for line in text.split_inclusive('\n') {
        let here = offset;
        offset += line.len();
        let trimmed = line.trim();
        if !trimmed.starts_with('[') {
            continue;
        }
        if start.is_some() {
            return start.map(|s| s..here);
        }
        let header = trimmed
            .split('#')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .trim();
        if header == name {
            if seen == nth {
                start = Some(here);
            }
            seen += 1;
        }
    }
    start.map(|s| s..text.len())
}

pub(crate) fn locate_in(text: &str, key: &str, range: std::ops::Range<usize>) -> String {
    find_key(text, key, range.clone()).unwrap_or_else(|| line_col(text, range.start))
}

/// Byte range of a table (`[name]` or `[[name]]`, first occurrence) up to
/// the next table header.
pub(crate) fn table_range(text: &str, name: &str) -> Option<std::ops::Range<usize>> {
    nth_table_range(text, name, 0)
}

/// Byte range of the `[params]` block: from the first `[params` header to
/// the next header of another table.
pub(crate) fn params_range(text: &str) -> Option<std::ops::Range<usize>> {
    let mut offset = 0;
    let mut start = None;
    for line in text.split_inclusive('\n') {
        let here = offset;
        offset += line.len();
        let trimmed = line.trim();
        if !trimmed.starts_with('[') {
            continue;
        }
        let is_params = trimmed == "[params]" || trimmed.starts_with("[params.");
        match (start, is_params) {
            (None, true) => start = Some(here),
            (Some(s), false) => return Some(s..here),
            _ => {}
        }
    }
    start.map(|s| s..text.len())
}

/// `LINE:COLUMN` of the first line in `range` that sets `key` or starts a
/// table whose last name part is `key`.
pub(crate) fn find_key(text: &str, key: &str, range: std::ops::Range<usize>) -> Option<String> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        if start < range.start || start >= range.end {
            continue;
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let key_here = trimmed
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        let table_here = trimmed.starts_with('[')
            && trimmed
                .trim_matches(|c| c == '[' || c == ']' || c == '\n' || c == ' ')
                .rsplit('.')
                .next()
                == Some(key);
        if key_here || table_here {
            return Some(line_col(text, start + indent));
        }
    }
    None
}

/// A TOML error as `FILE:LINE:COLUMN: message`.
pub(crate) fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    toml_error_named(&path.display().to_string(), text, e)
}

pub(crate) fn toml_error_named(shown: &str, text: &str, e: &toml::de::Error) -> String {
    let position = e
        .span()
        .map(|s| line_col(text, s.start))
        .unwrap_or_else(|| "1:1".into());
    let message = e.message().trim().replace('\n', " ");
    format!("{shown}:{position}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let text = "a = 1\n  b = 2\n";
        assert_eq!(line_col(text, 0), "1:1");
        assert_eq!(line_col(text, 8), "2:3");
        assert_eq!(locate(text, "b"), "2:3");
    }
}

//! House rules checked over the sources: no function outside tests runs
//! over 80 lines unless a comment says why a split would hurt.

use std::fs;
use std::path::{Path, PathBuf};

/// The longest a function outside tests may be.
const MAX_LINES: usize = 80;

/// A comment in the lines just above a function (its doc) that keeps it
/// whole: `// Long on purpose: <why a split would hurt>`.
const EXEMPT: &str = "Long on purpose:";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.map(Result::unwrap) {
        let path = e.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The source directories of the workspace's crates (their `src/`).
fn source_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![
        root().join("core/src"),
        root().join("app/src"),
        root().join("cli/src"),
    ];
    for group in ["sources", "backends", "examples"] {
        for e in fs::read_dir(root().join(group)).unwrap().map(Result::unwrap) {
            dirs.push(e.path().join("src"));
        }
    }
    dirs
}

/// Whether `lines[i]` starts a function with a body of several lines
/// (not a trait method's declaration, not a one-line body).
fn starts_fn(lines: &[&str], i: usize) -> bool {
    let t = lines[i].trim_start();
    let t = [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ]
    .iter()
    .fold(t, |t, p| t.strip_prefix(p).unwrap_or(t));
    if !t.starts_with("fn ") {
        return false;
    }
    // The signature ends at the first line ending in `{` (a body), `;` (a
    // declaration) or `}` (a body on one line).
    let end = lines[i..]
        .iter()
        .map(|l| l.trim_end())
        .find(|l| l.ends_with('{') || l.ends_with(';') || l.ends_with('}'));
    end.is_some_and(|l| l.ends_with('{'))
}

/// `(line, name, length)` of every function of `text` over
/// [`MAX_LINES`] lines, outside `#[cfg(test)]` modules and without an
/// [`EXEMPT`] comment.
fn long_functions(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = &line[..line.len() - line.trim_start().len()];
        let closing = format!("{indent}}}");
        let test_module = line.trim_start().starts_with("mod ")
            && i > 0
            && lines[i - 1].trim() == "#[cfg(test)]"
            && line.trim_end().ends_with('{');
        if test_module || starts_fn(&lines, i) {
            let end = (i + 1..lines.len()).find(|&j| lines[j] == closing).unwrap_or(i);
            let length = end - i + 1;
            let above = lines[i.saturating_sub(12)..i].iter().rev().take_while(|l| {
                let t = l.trim_start();
                t.starts_with("//") || t.starts_with("#[")
            });
            let exempt = above.clone().any(|l| l.contains(EXEMPT));
            if !test_module && length > MAX_LINES && !exempt {
                let name = line.trim_start().split("fn ").nth(1).unwrap_or("");
                let name = name.split(['(', '<']).next().unwrap_or("").to_string();
                found.push((i + 1, name, length));
            }
            if test_module {
                i = end;
            }
        }
        i += 1;
    }
    found
}

#[test]
fn no_function_outside_tests_is_over_80_lines() {
    let mut files = Vec::new();
    for dir in source_dirs() {
        rust_files(&dir, &mut files);
    }
    assert!(files.len() > 100, "the sources were found: {}", files.len());
    let mut long = Vec::new();
    for file in files
        .iter()
        .filter(|f| !f.to_string_lossy().ends_with("tests.rs"))
    {
        let text = fs::read_to_string(file).unwrap();
        for (line, name, length) in long_functions(&text) {
            let shown = file.strip_prefix(root()).unwrap_or(file).display().to_string();
            long.push(format!("{shown}:{line} `{name}`: {length} lines"));
        }
    }
    assert!(
        long.is_empty(),
        "split these into named steps, or say why a split would hurt in a `// {EXEMPT} …` comment above them:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_scan_finds_a_long_function_and_honours_the_exemption() {
    let body = "    let x = 1;\n".repeat(MAX_LINES);
    let long = format!("/// Doc.\npub async fn big(a: u8) -> u8 {{\n{body}    x\n}}\n");
    assert_eq!(long_functions(&long), vec![(2, "big".to_string(), MAX_LINES + 3)]);
    let kept = format!("// {EXEMPT} one table, read top to bottom.\n{long}");
    assert!(long_functions(&kept).is_empty());
    let in_tests = format!("#[cfg(test)]\nmod tests {{\n    fn t() {{\n{body}    }}\n}}\n");
    assert!(long_functions(&in_tests).is_empty());
    let short = "fn f() -> u8 {\n    1\n}\nfn g() {}\ntrait T {\n    fn h(&self);\n}\n";
    assert!(long_functions(short).is_empty());
}

//! The manual's layout: a short README that a newcomer reads first, and
//! the reference in `docs/` as an mdBook whose summary lists every page.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The relative Markdown links `](target)` of `text` (no URLs, no anchors).
fn links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(t, _)| t.to_string()))
        .filter(|t| !t.contains("://") && !t.starts_with('#') && !t.starts_with("mailto:"))
        .map(|t| t.split('#').next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn the_readme_is_short_and_the_summary_lists_every_page() {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "the README has {lines} lines (the manual is in docs/)"
    );
    assert!(
        readme.contains("<!-- quickstart:begin -->"),
        "the quick start stays in the README"
    );
    let book = fs::read_to_string(root().join("docs/book.toml")).unwrap();
    assert!(book.contains("src = \".\""), "{book}");
    let summary = fs::read_to_string(root().join("docs/SUMMARY.md")).unwrap();
    let listed: BTreeSet<String> = links(&summary).into_iter().collect();
    let pages: BTreeSet<String> = fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md") && n != "SUMMARY.md")
        .collect();
    assert_eq!(listed, pages, "docs/SUMMARY.md lists exactly the pages of docs/");
    for page in &pages {
        let text = fs::read_to_string(root().join("docs").join(page)).unwrap();
        assert!(text.starts_with("# "), "{page} starts with its title");
        for target in links(&text) {
            assert!(
                root().join("docs").join(&target).exists(),
                "{page} links to {target}, which does not exist"
            );
        }
        assert!(
            readme.contains(&format!("](docs/{page})")),
            "the README's map of the manual links docs/{page}"
        );
    }
    for target in links(&readme) {
        assert!(
            root().join(&target).exists(),
            "the README links to {target}, which does not exist"
        );
    }
}

//! `docs/architecture.md` stays true: every repository path it names (in
//! backticks, outside code blocks) exists, and its map has one row for each
//! section of the contract, §1 to §11, each naming at least one path. No
//! host is started.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use e2e_tests::workspace_root;

/// The map of the codebase, relative to the workspace root.
const MAP: &str = "docs/architecture.md";

/// The sections of the contract the map must cover.
const SECTIONS: std::ops::RangeInclusive<u32> = 1..=11;

/// File endings that make a code span a file path.
const FILE_ENDINGS: [&str; 5] = [".rs", ".md", ".json", ".toml", ".sh"];

/// The inline code spans of a Markdown text, skipping fenced code blocks.
fn code_spans(markdown: &str) -> Vec<&str> {
    let mut spans = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            spans.extend(line.split('`').skip(1).step_by(2));
        }
    }
    spans
}

/// Whether a code span names a file or folder of this repository: a
/// relative path with a `/` that ends in one of [`FILE_ENDINGS`] or in `/`
/// (a folder). Routes (`/api/secrets`), home paths, commands and patterns
/// are not.
fn is_repository_path(span: &str) -> bool {
    span.contains('/')
        && !span.starts_with(['/', '~'])
        && !span.starts_with("..")
        && !span.contains("://")
        && !span
            .chars()
            .any(|c| c.is_whitespace() || "*?{}<>$'\"(),;=|:".contains(c))
        && (span.ends_with('/') || FILE_ENDINGS.iter().any(|e| span.ends_with(e)))
}

/// The repository paths a Markdown text names, in order, without repeats.
fn repository_paths(markdown: &str) -> Vec<&str> {
    let mut paths: Vec<&str> = Vec::new();
    for span in code_spans(markdown) {
        if is_repository_path(span) && !paths.contains(&span) {
            paths.push(span);
        }
    }
    paths
}

/// The paths of `markdown` that do not exist under `root` (a folder path
/// must be a folder, any other a file).
fn missing_paths<'a>(root: &Path, markdown: &'a str) -> Vec<&'a str> {
    repository_paths(markdown)
        .into_iter()
        .filter(|path| {
            let full: PathBuf = root.join(path);
            let exists = if path.ends_with('/') {
                full.is_dir()
            } else {
                full.is_file()
            };
            !exists
        })
        .collect()
}

/// The table rows whose first cell starts with `§N`, by section number.
fn section_rows(markdown: &str) -> BTreeMap<u32, &str> {
    let mut rows = BTreeMap::new();
    for line in markdown.lines() {
        let Some(cells) = line.trim().strip_prefix('|') else {
            continue;
        };
        let first = cells.split('|').next().unwrap_or_default().trim();
        let Some(rest) = first.strip_prefix('§') else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(section) = digits.parse() {
            rows.insert(section, line);
        }
    }
    rows
}

fn read_map() -> Result<String> {
    let path = workspace_root().join(MAP);
    std::fs::read_to_string(&path).with_context(|| format!("reading {MAP}"))
}

#[test]
fn every_path_the_architecture_map_names_exists() -> Result<()> {
    let map = read_map()?;
    let named = repository_paths(&map);
    assert!(
        named.len() >= 20,
        "{MAP} names only {} paths; is the extraction broken?",
        named.len()
    );
    let missing = missing_paths(&workspace_root(), &map);
    assert!(
        missing.is_empty(),
        "{MAP} names paths that do not exist: {missing:?}"
    );
    Ok(())
}

#[test]
fn the_architecture_map_has_a_row_for_every_section() -> Result<()> {
    let map = read_map()?;
    let rows = section_rows(&map);
    for section in SECTIONS {
        let row = rows
            .get(&section)
            .with_context(|| format!("{MAP} has no table row for §{section}"))?;
        assert!(
            !repository_paths(row).is_empty(),
            "the row for §{section} in {MAP} names no module or test: {row}"
        );
    }
    Ok(())
}

#[test]
fn the_checks_catch_a_missing_path_and_a_missing_section() {
    let text = "\
| section | modules |
|---|---|
| §1 What exists | `demo-host/src/lib.rs`, `docs/`, `demo-host/src/nowhere.rs` |
| §10 The page | `tests/e2e/no-such-folder/` |

Not paths: `/api/secrets`, `~/.milady/milady.toml`, `cargo test -p e2e-tests`,
`host_api::legacy`, `tests/e2e/*.rs`.

```sh
cat not/checked/inside/a/fence.rs
```
";
    let root = workspace_root();
    assert_eq!(
        repository_paths(text),
        [
            "demo-host/src/lib.rs",
            "docs/",
            "demo-host/src/nowhere.rs",
            "tests/e2e/no-such-folder/"
        ]
    );
    assert_eq!(
        missing_paths(&root, text),
        ["demo-host/src/nowhere.rs", "tests/e2e/no-such-folder/"]
    );
    let rows = section_rows(text);
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), [1, 10]);
    assert!(!rows.contains_key(&11));
}

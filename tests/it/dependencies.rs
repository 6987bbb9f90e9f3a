//! Every dependency is used, where it is declared: the check that makes CI
//! fail on a dependency nothing uses (run offline, as part of `cargo test`).
//!
//! For every `Cargo.toml` of the repository (the workspace members, and the
//! fuzz crate and benchmark peer, which are workspaces of their own):
//! - a `[dependencies]` entry must be referenced by the package's own code
//!   (not only by its tests: a dependency that only `tests/`, `benches/` or
//!   `examples/` use belongs in `[dev-dependencies]`, so the product does
//!   not build it);
//! - a `[dev-dependencies]` entry must be referenced by some code of the
//!   package, a `[build-dependencies]` entry by `build.rs`;
//! - a `[workspace.dependencies]` entry must be inherited by some member.
//!
//! "Referenced" is read off the source text, as cargo-machete does it:
//! `name::`, `use name` or `extern crate name`, outside `//` comment lines.
//! Why a test rather than cargo-machete: nothing to install (CI machines are
//! fresh; the tool is a 3-minute compile that needs the registry), the
//! manifests are parsed as TOML rather than searched, and it also catches
//! what cargo-machete does not look at (dependencies only tests use,
//! workspace entries no member inherits). Like cargo-machete it cannot see
//! inside macro expansions: a dependency used only through one would need an
//! allowance here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Directories never searched for manifests or code.
const SKIPPED_DIRS: [&str; 5] = ["target", "node_modules", ".git", "artifacts", "results"];

#[test]
fn every_dependency_is_used_where_it_is_declared() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifests = manifests_under(root);
    assert!(
        manifests.len() >= 3,
        "expected the workspace's manifests under {}, found {manifests:?}",
        root.display()
    );
    let package_dirs: BTreeSet<PathBuf> = manifests
        .iter()
        .map(|m| m.parent().expect("a manifest has a directory").to_owned())
        .collect();
    let mut problems = Vec::new();
    let mut inherited = BTreeSet::new();
    let mut workspace_entries = Vec::new();
    for manifest_path in &manifests {
        let text = std::fs::read_to_string(manifest_path).expect("read a manifest");
        let manifest: toml::Table =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", manifest_path.display()));
        let dir = manifest_path.parent().expect("a manifest has a directory");
        let shown = manifest_path
            .strip_prefix(root)
            .unwrap_or(manifest_path)
            .display()
            .to_string();
        if let Some(deps) = manifest
            .get("workspace")
            .and_then(|w| w.get("dependencies"))
            .and_then(|d| d.as_table())
        {
            workspace_entries.extend(deps.keys().map(|k| (shown.clone(), k.clone())));
        }
        if !manifest.contains_key("package") {
            continue;
        }
        let code = Code::read(dir, &package_dirs);
        for (kind, deps) in dependency_tables(&manifest) {
            for (name, spec) in deps {
                if spec.get("workspace").and_then(|w| w.as_bool()) == Some(true) {
                    inherited.insert(name.clone());
                }
                let ident = name.replace('-', "_");
                let problem = match kind {
                    Kind::Normal if code.product.iter().any(|t| references(t, &ident)) => None,
                    Kind::Normal if code.tests.iter().any(|t| references(t, &ident)) => {
                        Some("only tests use it: move it to [dev-dependencies]")
                    }
                    Kind::Dev if code.all().any(|t| references(t, &ident)) => None,
                    Kind::Build if code.build.iter().any(|t| references(t, &ident)) => None,
                    _ => Some("nothing uses it: remove it"),
                };
                if let Some(problem) = problem {
                    problems.push(format!("{shown}: {} `{name}`: {problem}", kind.table()));
                }
            }
        }
    }
    for (shown, name) in workspace_entries {
        if !inherited.contains(&name) {
            problems.push(format!(
                "{shown}: [workspace.dependencies] `{name}`: no member inherits it: remove it"
            ));
        }
    }
    assert!(problems.is_empty(), "dependencies:\n  {}", problems.join("\n  "));
}

#[test]
fn references_are_read_off_code_not_comments() {
    assert!(references("use foo::bar;", "foo"));
    assert!(references("let x = foo::bar();", "foo"));
    assert!(references("#[foo::main]\nasync fn main() {}", "foo"));
    assert!(references("use foo;", "foo"));
    assert!(references("pub(crate) use foo as f;", "foo"));
    assert!(references("extern crate foo;", "foo"));
    assert!(!references("use foobar::x;", "foo"), "another crate's prefix");
    assert!(!references("use crate::foo::x;", "foo"), "a module of the crate");
    assert!(!references("let foo = 1;", "foo"), "a variable");
    let comments = without_comment_lines("    /// see foo::bar\n    // foo::x\nfn f() {}\n");
    assert!(!references(&comments, "foo"), "comments");
}

#[derive(Clone, Copy)]
enum Kind {
    Normal,
    Dev,
    Build,
}

impl Kind {
    fn table(self) -> &'static str {
        match self {
            Self::Normal => "[dependencies]",
            Self::Dev => "[dev-dependencies]",
            Self::Build => "[build-dependencies]",
        }
    }
}

/// The dependency tables of a package manifest, target-specific ones
/// included.
fn dependency_tables(manifest: &toml::Table) -> Vec<(Kind, &toml::Table)> {
    let mut all = tables_of(manifest);
    if let Some(targets) = manifest.get("target").and_then(|t| t.as_table()) {
        for target in targets.values().filter_map(|t| t.as_table()) {
            all.extend(tables_of(target));
        }
    }
    all
}

fn tables_of(table: &toml::Table) -> Vec<(Kind, &toml::Table)> {
    [
        ("dependencies", Kind::Normal),
        ("dev-dependencies", Kind::Dev),
        ("build-dependencies", Kind::Build),
    ]
    .into_iter()
    .filter_map(|(key, kind)| Some((kind, table.get(key)?.as_table()?)))
    .collect()
}

/// A package's Rust source, split by who compiles it.
#[derive(Default)]
struct Code {
    /// The library and binaries (what `[dependencies]` are for).
    product: Vec<String>,
    /// Integration tests, benches, examples, and unit-test files
    /// (`tests.rs`, anything under a `tests/` directory).
    tests: Vec<String>,
    build: Vec<String>,
}

impl Code {
    /// Reads the package in `dir`, leaving out nested packages.
    fn read(dir: &Path, package_dirs: &BTreeSet<PathBuf>) -> Self {
        let mut code = Self::default();
        let mut pending = vec![dir.to_owned()];
        while let Some(current) = pending.pop() {
            for entry in std::fs::read_dir(&current).expect("read a source directory") {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    if !skipped(&path) && !package_dirs.contains(&path) {
                        pending.push(path);
                    }
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text =
                    without_comment_lines(&std::fs::read_to_string(&path).expect("read a source file"));
                let relative = path.strip_prefix(dir).expect("under the package");
                let test_code = relative.components().any(|c| {
                    matches!(
                        c.as_os_str().to_str(),
                        Some("tests" | "benches" | "examples" | "tests.rs")
                    )
                });
                if relative == Path::new("build.rs") {
                    code.build.push(text);
                } else if test_code {
                    code.tests.push(text);
                } else {
                    code.product.push(text);
                }
            }
        }
        code
    }

    fn all(&self) -> impl Iterator<Item = &String> {
        self.product.iter().chain(&self.tests).chain(&self.build)
    }
}

fn skipped(dir: &Path) -> bool {
    dir.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| SKIPPED_DIRS.contains(&n))
}

/// Every `Cargo.toml` under `root`, outside skipped directories.
fn manifests_under(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).expect("read a directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                if !skipped(&path) {
                    pending.push(path);
                }
            } else if path.file_name().is_some_and(|n| n == "Cargo.toml") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn without_comment_lines(text: &str) -> String {
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `text` names crate `ident`: `ident::`, `use ident` or
/// `extern crate ident`, with `ident` a whole word that is not a path
/// segment of something else (`crate::ident::`).
fn references(text: &str, ident: &str) -> bool {
    text.match_indices(ident).any(|(at, _)| {
        let before = &text[..at];
        if before
            .chars()
            .next_back()
            .is_some_and(|c| is_ident(c) || c == ':')
        {
            return false;
        }
        let after = &text[at + ident.len()..];
        if after.starts_with("::") {
            return true;
        }
        if after.chars().next().is_some_and(is_ident) {
            return false;
        }
        let words: Vec<&str> = before.split_whitespace().rev().take(2).collect();
        matches!(words.as_slice(), ["use", ..] | ["crate", "extern", ..])
    })
}

//! The house rules, checked on every crate of the workspace.

mod errors;
mod graph;
mod settings;
mod shape;

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn crates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty());
    dirs
}

/// Every `.rs` file under `dir` (build output, `target`, aside).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Crates that are libraries (the binaries may use anyhow).
fn is_library(dir: &Path) -> bool {
    dir.join("src/lib.rs").exists()
}

#[test]
fn every_crate_uses_the_workspace_lints_and_package_fields() {
    for dir in crates() {
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        for needle in [
            "[lints]\nworkspace = true",
            "license.workspace = true",
            "edition.workspace = true",
            "version.workspace = true",
        ] {
            assert!(
                manifest.contains(needle),
                "{}: lacks {needle:?}",
                dir.display()
            );
        }
        // Versions live in [workspace.dependencies] only (a crate's own
        // rust-version may differ: `cargo xtask audit` checks it against its
        // dependencies').
        for line in manifest.lines() {
            let line = line.trim();
            assert!(
                !line.contains("version = \"")
                    || line.starts_with("version")
                    || line.starts_with("rust-version"),
                "{}: pins a version itself ({line}); use [workspace.dependencies]",
                dir.display()
            );
        }
    }
}

#[test]
fn every_crate_forbids_unsafe_code() {
    for dir in crates() {
        let entry = ["src/lib.rs", "src/main.rs"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.exists())
            .unwrap();
        let text = fs::read_to_string(&entry).unwrap();
        assert!(
            text.contains("#![forbid(unsafe_code)]"),
            "{}: lacks #![forbid(unsafe_code)]",
            entry.display()
        );
        if is_library(&dir) {
            assert!(
                text.contains("#![warn(missing_docs)]"),
                "{}: lacks #![warn(missing_docs)]",
                entry.display()
            );
        }
    }
}

#[test]
fn libraries_do_not_use_anyhow() {
    for dir in crates().into_iter().filter(|d| is_library(d)) {
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .map(|rest| rest.split("\n[").next().unwrap_or(""))
            .unwrap_or("");
        assert!(
            !deps.contains("anyhow"),
            "{}: a library crate must not depend on anyhow",
            dir.display()
        );
    }
}

#[test]
fn every_library_has_a_crate_level_example() {
    for dir in crates().into_iter().filter(|d| is_library(d)) {
        let text = fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(
            text.contains("//! ```"),
            "{}: lib.rs has no example in its crate docs",
            dir.display()
        );
    }
}

//! docs/architecture.md's crate graph is the workspace's, as `cargo metadata` says.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use super::root;

/// Crates left out of the graph: the test crate and the task runner.
const NOT_IN_GRAPH: [&str; 2] = ["kpl-tests", "xtask"];

/// Each workspace crate and the workspace crates it depends on (normal
/// dependencies), from `cargo metadata`.
fn metadata_graph() -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = m["packages"].as_array().unwrap();
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    packages
        .iter()
        .filter(|p| !NOT_IN_GRAPH.contains(&p["name"].as_str().unwrap()))
        .map(|p| {
            let mut deps: Vec<String> = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .filter(|d| names.contains(&d.as_str()))
                .collect();
            deps.sort();
            deps.dedup();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

/// The graph written in docs/architecture.md between its crate-graph markers.
fn documented_graph() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let marker = "<!-- crate-graph -->";
    let start = text.find(marker).expect("start marker") + marker.len();
    let end = text.find("<!-- /crate-graph -->").expect("end marker");
    text[start..end]
        .lines()
        .filter_map(|line| line.split_once("->"))
        .map(|(name, deps)| {
            let mut deps: Vec<String> = deps
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect();
            deps.sort();
            (name.trim().to_owned(), deps)
        })
        .collect()
}

#[test]
fn the_crate_graph_is_cargo_metadatas() {
    let actual = metadata_graph();
    let documented = documented_graph();
    let expected: String = actual
        .iter()
        .map(|(name, deps)| format!("{name:<13} -> {}\n", deps.join(", ")))
        .collect();
    assert_eq!(
        documented, actual,
        "docs/architecture.md's crate graph differs from cargo metadata; it should be:\n{expected}"
    );
}

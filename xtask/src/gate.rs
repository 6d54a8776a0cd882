//! Gate steps about the build itself: every crate with each feature alone, the
//! declared minimum Rust versions, the dependencies' licenses, and a build of the
//! facade with no tokio runtime in it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::util::{cargo, step};

/// Licenses a dependency may be under (an SPDX expression is accepted when one of
/// its alternatives, or every part of a conjunction, is here).
const ALLOWED_LICENSES: &[&str] = &[
    "Apache-2.0",
    "Apache-2.0 WITH LLVM-exception",
    "MIT",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "Zlib",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "CC0-1.0",
    "0BSD",
    "BSL-1.0",
    "MPL-2.0",
    "Unlicense",
    "CDLA-Permissive-2.0",
    "OpenSSL",
];

fn metadata(all_features: bool) -> Result<Value> {
    let mut cmd = cargo();
    cmd.args(["metadata", "--format-version", "1", "--locked"]);
    if all_features {
        cmd.arg("--all-features");
    }
    let out = cmd.output().context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `cargo check` of every library crate with no features and with each feature
/// alone (the facade's `aws` with each runtime, as it is meant to be used).
pub(crate) fn features() -> Result<()> {
    let meta = metadata(false)?;
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .context("workspace_members")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for package in meta["packages"].as_array().context("packages")? {
        let id = package["id"].as_str().unwrap_or_default();
        if !members.contains(id) {
            continue;
        }
        let name = package["name"].as_str().unwrap_or_default();
        let features: Vec<&str> = package["features"]
            .as_object()
            .map(|f| {
                f.keys()
                    .map(String::as_str)
                    .filter(|f| *f != "default")
                    .collect()
            })
            .unwrap_or_default();
        if matches!(name, "xtask" | "kpl-tests") {
            continue;
        }
        let mut sets: Vec<Vec<&str>> = vec![vec![]];
        sets.extend(features.iter().map(|f| vec![*f]));
        if name == "kpl" {
            sets.push(vec!["smol", "aws"]);
            sets.push(vec!["tokio", "aws"]);
        }
        for set in sets {
            let list = set.join(",");
            step(&format!(
                "cargo check -p {name} --no-default-features{}",
                if list.is_empty() {
                    String::new()
                } else {
                    format!(" --features {list}")
                }
            ));
            let mut cmd = cargo();
            cmd.args([
                "check",
                "--locked",
                "-q",
                "-p",
                name,
                "--no-default-features",
            ]);
            if !list.is_empty() {
                cmd.args(["--features", &list]);
            }
            // Warnings of our own code fail the step (as in the clippy step), without
            // RUSTFLAGS, which would rebuild every dependency.
            let out = cmd.output().context("running cargo check")?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            eprint!("{stderr}");
            if !out.status.success() {
                bail!("cargo check -p {name} --features {list:?} failed");
            }
            if stderr.lines().any(|l| l.starts_with("warning")) {
                bail!("cargo check -p {name} --features {list:?}: warnings (see above)");
            }
        }
    }
    Ok(())
}

fn version(text: &str) -> Vec<u64> {
    text.split('.').filter_map(|p| p.parse().ok()).collect()
}

/// Each crate's declared `rust-version` is at least that of everything it depends
/// on (normal dependencies, all features on): the declared MSRV is true of its
/// dependencies. Clippy's `incompatible_msrv` (in the clippy step) holds our own
/// code to it.
pub(crate) fn msrv() -> Result<()> {
    let meta = metadata(true)?;
    let packages: HashMap<&str, &Value> = meta["packages"]
        .as_array()
        .context("packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: HashMap<&str, Vec<&str>> = meta["resolve"]["nodes"]
        .as_array()
        .context("resolve")?
        .iter()
        .filter_map(|n| {
            let deps = n["deps"]
                .as_array()?
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()))
                })
                .filter_map(|d| d["pkg"].as_str())
                .collect();
            Some((n["id"].as_str()?, deps))
        })
        .collect();
    let mut wrong = Vec::new();
    for member in meta["workspace_members"]
        .as_array()
        .context("workspace_members")?
        .iter()
        .filter_map(Value::as_str)
    {
        let package = packages[member];
        let name = package["name"].as_str().unwrap_or_default();
        let Some(declared) = package["rust_version"].as_str() else {
            continue;
        };
        let mut seen = BTreeSet::new();
        let mut todo = vec![member];
        let mut highest: Option<(Vec<u64>, String)> = None;
        while let Some(id) = todo.pop() {
            if !seen.insert(id) {
                continue;
            }
            if let Some(deps) = nodes.get(id) {
                todo.extend(deps.iter().copied());
            }
            if id == member {
                continue;
            }
            if let Some(v) = packages.get(id).and_then(|p| p["rust_version"].as_str()) {
                let parsed = version(v);
                if highest.as_ref().is_none_or(|(h, _)| parsed > *h) {
                    let who = packages[id]["name"].as_str().unwrap_or_default();
                    highest = Some((parsed, format!("{who} needs {v}")));
                }
            }
        }
        if let Some((_, why)) = highest.filter(|(needed, _)| *needed > version(declared)) {
            wrong.push(format!(
                "{name} declares rust-version {declared}, but {why}"
            ));
        }
    }
    if !wrong.is_empty() {
        bail!(
            "declared minimum Rust versions below what dependencies need:\n  {}",
            wrong.join("\n  ")
        );
    }
    Ok(())
}

/// Every dependency's license is one of [`ALLOWED_LICENSES`] (or an expression
/// that allows one); our own crates are Apache-2.0.
pub(crate) fn licenses() -> Result<()> {
    let meta = metadata(true)?;
    let mut refused: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for p in meta["packages"].as_array().context("packages")? {
        let name = p["name"].as_str().unwrap_or_default();
        let version = p["version"].as_str().unwrap_or_default();
        let license = p["license"].as_str().unwrap_or("").trim();
        if license.is_empty() {
            refused
                .entry("(none declared)".into())
                .or_default()
                .push(format!("{name} {version}"));
            continue;
        }
        *counts.entry(license.to_owned()).or_default() += 1;
        if !allowed(license) {
            refused
                .entry(license.to_owned())
                .or_default()
                .push(format!("{name} {version}"));
        }
    }
    if !refused.is_empty() {
        let list: Vec<String> = refused
            .iter()
            .map(|(l, who)| format!("{l}: {}", who.join(", ")))
            .collect();
        bail!(
            "dependencies under licenses not allowed:\n  {}",
            list.join("\n  ")
        );
    }
    println!(
        "{} packages, {} license expressions, all allowed",
        counts.values().sum::<usize>(),
        counts.len()
    );
    Ok(())
}

/// No locked crates.io version is yanked. The RustSec advisory database lives on
/// GitHub, which CI cannot reach; crates.io's index can be, and a yank is often the
/// first sign of a broken or vulnerable release. Reads the sparse index with curl.
pub(crate) fn yanked() -> Result<()> {
    let lock = std::fs::read_to_string(crate::util::project_root().join("Cargo.lock"))
        .context("reading Cargo.lock")?;
    let mut packages: Vec<(String, String)> = Vec::new();
    for block in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                l.strip_prefix(&format!("{key} = \""))
                    .and_then(|v| v.strip_suffix('"'))
                    .map(str::to_owned)
            })
        };
        let from_crates_io = field("source").is_some_and(|s| s.contains("crates.io-index"));
        if let (Some(name), Some(version), true) = (field("name"), field("version"), from_crates_io)
        {
            packages.push((name, version));
        }
    }
    let mut yanked = Vec::new();
    let mut unreachable = 0usize;
    for (name, version) in &packages {
        let lower = name.to_ascii_lowercase();
        let path = match lower.len() {
            1 => format!("1/{lower}"),
            2 => format!("2/{lower}"),
            3 => format!("3/{}/{lower}", &lower[..1]),
            _ => format!("{}/{}/{lower}", &lower[..2], &lower[2..4]),
        };
        let out = std::process::Command::new("curl")
            .args(["-sf", "--max-time", "20"])
            .arg(format!("https://index.crates.io/{path}"))
            .output()
            .context("running curl (install it: apt-get install curl)")?;
        if !out.status.success() {
            unreachable += 1;
            continue;
        }
        let index = String::from_utf8_lossy(&out.stdout);
        let entry = index.lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["vers"].as_str() == Some(version.as_str())).then_some(v)
        });
        match entry {
            Some(v) if v["yanked"].as_bool() == Some(true) => {
                yanked.push(format!("{name} {version}"));
            }
            Some(_) => {}
            None => unreachable += 1,
        }
    }
    if !yanked.is_empty() {
        bail!(
            "locked versions yanked from crates.io (update them): {}",
            yanked.join(", ")
        );
    }
    if unreachable * 10 > packages.len() {
        bail!(
            "crates.io's index did not answer for {unreachable} of {} packages",
            packages.len()
        );
    }
    println!(
        "{} crates.io packages locked, none yanked ({unreachable} not found in the index)",
        packages.len()
    );
    Ok(())
}

/// Whether an SPDX expression (with `OR`, `AND`, `/` and parentheses) is allowed.
fn allowed(expression: &str) -> bool {
    // OR binds loosest: any allowed alternative will do; within one, every part of
    // an AND must be allowed.
    let cleaned = expression.replace(['(', ')'], " ");
    cleaned.split(" OR ").flat_map(|a| a.split('/')).any(|alt| {
        alt.split(" AND ").all(|part| {
            let part = part.trim();
            ALLOWED_LICENSES.contains(&part)
        })
    })
}

/// The facade on smol with AWS has no tokio runtime in its build: tokio, if
/// present at all, without its `rt`, `net` and `time` features.
pub(crate) fn no_tokio_runtime_on_smol() -> Result<()> {
    let out = cargo()
        .args([
            "tree",
            "--locked",
            "-p",
            "kpl",
            "--no-default-features",
            "--features",
            "smol,aws",
            "-e",
            "normal,features",
            "-i",
            "tokio",
        ])
        .output()
        .context("running cargo tree")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let features: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split("tokio feature \"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    let runtime: Vec<&&str> = features
        .iter()
        .filter(|f| matches!(**f, "rt" | "rt-multi-thread" | "net" | "time"))
        .collect();
    if !runtime.is_empty() {
        bail!("kpl with smol,aws builds tokio with {runtime:?}:\n{text}");
    }
    println!("tokio features in kpl's smol,aws build: {features:?}");
    Ok(())
}

/// Runs the facade's examples: tokio, smol (no tokio runtime), async-std and
/// blocking against the peer, each checked by what it prints; and the codec-only
/// Lambda consumer on its own example event.
pub(crate) fn examples(mock: &crate::peer::KinesisMock) -> Result<()> {
    mock.create_stream("examples", 2)?;
    let runs: [(&str, &[&str], &str); 5] = [
        ("tokio", &[], "100 of 100 records stored in examples"),
        (
            "smol",
            &["--no-default-features", "--features", "smol,aws"],
            "stored: true",
        ),
        (
            "async_std",
            &["--no-default-features", "--features", "smol,aws"],
            "stored: true",
        ),
        ("blocking", &[], "10 of 10 records stored"),
        (
            "lambda_deaggregate",
            &["--no-default-features"],
            "user-2\tsecond",
        ),
    ];
    for (example, features, expected) in runs {
        let out = cargo()
            .args(["run", "--locked", "-q", "-p", "kpl"])
            .args(features)
            .args(["--example", example])
            .env("KPL_ENDPOINT", &mock.endpoint)
            .env("KPL_STREAM", "examples")
            .env("AWS_REGION", "us-east-1")
            .envs(crate::peer::MOCK_CREDENTIALS)
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("running the {example} example"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains(expected) {
            bail!(
                "the {example} example: expected {expected:?}, got\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        println!(
            "example {example}: {}",
            stdout.lines().last().unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn spdx_expressions() {
        assert!(allowed("MIT OR Apache-2.0"));
        assert!(allowed("Apache-2.0 OR ISC OR MIT"));
        assert!(allowed("MIT/Apache-2.0"));
        assert!(allowed("(MIT OR Apache-2.0) AND Unicode-3.0"));
        assert!(!allowed("GPL-3.0"));
        assert!(!allowed("MIT AND GPL-3.0"));
        assert!(allowed("GPL-3.0 OR MIT"));
    }
}

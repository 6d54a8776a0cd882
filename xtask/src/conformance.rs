//! kpl-codec against the Python `aws-kinesis-agg` package, both ways.
//!
//! 1. Python generates random cases (Unicode keys, empty data, explicit hash keys at
//!    0 and 2^128−1, records of 0 B to 100 KB, no tags: it cannot write them) and
//!    aggregates each with its `AggRecord`.
//! 2. Here, for every case: our `AggregateBuilder` must produce the same bytes, with
//!    `size()` exact at every add; our decoder must read the Python aggregate back
//!    into the same user records.
//! 3. Python's de-aggregator reads our aggregates back.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kpl_codec::{AggregateBuilder, HashKey, UserRecord, decode_aggregated};
use serde_json::Value;

use crate::util::{project_root, run, step, target_dir};

/// Cases checked by the gate.
pub(crate) const DEFAULT_CASES: u64 = 1_000;
/// The gate's seed, fixed so a failure reproduces.
pub(crate) const DEFAULT_SEED: u64 = 20_261_125;

pub(crate) fn verify(cases: u64, seed: u64) -> Result<()> {
    let dir = target_dir().join("conformance");
    std::fs::create_dir_all(&dir)?;
    let python = venv(&dir)?;
    let script = project_root().join("xtask/conformance/aws_kinesis_agg_check.py");
    let cases_path = dir.join("cases.jsonl");
    let ours_path = dir.join("ours.jsonl");

    step(&format!(
        "python aws-kinesis-agg: {cases} random cases, seed {seed}"
    ));
    run(Command::new(&python)
        .arg(&script)
        .args(["generate", "--seed", &seed.to_string()])
        .args(["--cases", &cases.to_string()])
        .arg("--out")
        .arg(&cases_path))?;

    let summary = check(&cases_path, &ours_path)?;
    ensure!(
        summary.cases == cases,
        "expected {cases} cases, read {}",
        summary.cases
    );
    println!(
        "kpl-codec: {} cases, {} user records ({} with explicit hash keys, {} empty, largest {} B): identical bytes, exact sizes, decoded back",
        summary.cases, summary.records, summary.with_hash_key, summary.empty, summary.largest
    );

    run(Command::new(&python)
        .arg(&script)
        .arg("read")
        .arg("--cases")
        .arg(&cases_path)
        .arg("--ours")
        .arg(&ours_path))?;
    // The case files are large; they are rebuilt from the seed on every run.
    std::fs::remove_file(&cases_path).ok();
    std::fs::remove_file(&ours_path).ok();
    Ok(())
}

/// A venv under `target/` with the pinned reference packages; returns its python.
fn venv(dir: &Path) -> Result<std::path::PathBuf> {
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    let requirements = project_root().join("xtask/conformance/requirements.txt");
    let stamp = venv.join("requirements.installed");
    let wanted = std::fs::read_to_string(&requirements)?;
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    step("installing the Python reference (venv under target/conformance)");
    let system_python = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .context("no python3 on PATH: install Python 3 (with venv) to run the conformance check")?;
    if run(Command::new(system_python)
        .args(["-m", "venv", "--clear"])
        .arg(&venv))
    .is_err()
    {
        // Debian's python3 keeps venv in a package of its own.
        step("python3 -m venv failed: installing python3-venv with apt-get");
        run(Command::new("apt-get").arg("update"))?;
        run(Command::new("apt-get").args(["install", "-y", "python3-venv", "python3-pip"]))?;
        run(Command::new(system_python)
            .args(["-m", "venv", "--clear"])
            .arg(&venv))?;
    }
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements))?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}

#[derive(Default)]
struct Summary {
    cases: u64,
    records: u64,
    with_hash_key: u64,
    empty: u64,
    largest: usize,
}

fn check(cases_path: &Path, ours_path: &Path) -> Result<Summary> {
    let mut summary = Summary::default();
    let mut ours = BufWriter::new(File::create(ours_path)?);
    for line in BufReader::new(File::open(cases_path)?).lines() {
        let case: Value = serde_json::from_str(&line?)?;
        let id = case["case"].as_u64().context("case id")?;
        let expected = STANDARD.decode(case["aggregate"].as_str().context("aggregate")?)?;
        let mut records = Vec::new();
        for r in case["records"].as_array().context("records")? {
            let pk = r["partition_key"].as_str().context("partition key")?;
            let data = STANDARD.decode(r["data"].as_str().context("data")?)?;
            let mut record = UserRecord::new(pk, data);
            if let Some(ehk) = r["explicit_hash_key"].as_str() {
                record = record.with_explicit_hash_key(HashKey::from_decimal(ehk)?);
                summary.with_hash_key += 1;
            }
            summary.empty += u64::from(record.data.is_empty());
            summary.largest = summary.largest.max(record.data.len());
            records.push(record);
        }

        // Our encoding: identical bytes, and a size known exactly at every step.
        let mut builder = AggregateBuilder::new();
        for record in records.iter().cloned() {
            let predicted = builder.size_with(&record);
            ensure!(
                builder.add(record) == predicted,
                "case {id}: size_with disagrees with add"
            );
        }
        let mut encoded = Vec::new();
        builder.encode_aggregate_into(&mut encoded);
        ensure!(
            builder.size() == encoded.len(),
            "case {id}: size() {} but {} bytes encoded",
            builder.size(),
            encoded.len()
        );
        if encoded != expected {
            let at = encoded
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(encoded.len().min(expected.len()));
            bail!(
                "case {id}: our aggregate differs from aws-kinesis-agg's at byte {at} ({} vs {} bytes)",
                encoded.len(),
                expected.len()
            );
        }

        // Our decoder on their bytes.
        let decoded = decode_aggregated(&expected).map_err(|e| {
            anyhow::anyhow!("case {id}: cannot decode aws-kinesis-agg's aggregate: {e}")
        })?;
        ensure!(
            decoded.len() == records.len(),
            "case {id}: decoded {} records, expected {}",
            decoded.len(),
            records.len()
        );
        for (i, (got, want)) in decoded.iter().zip(&records).enumerate() {
            ensure!(
                got.partition_key == want.partition_key
                    && got.data == want.data.as_slice()
                    && got.explicit_hash_key.map(str::to_owned)
                        == want.explicit_hash_key.map(|k| k.to_string())
                    && got.sub_sequence_number == Some(i as u64),
                "case {id} record {i}: decoded record differs"
            );
        }

        serde_json::to_writer(
            &mut ours,
            &serde_json::json!({"case": id, "aggregate": STANDARD.encode(&encoded)}),
        )?;
        ours.write_all(b"\n")?;
        summary.cases += 1;
        summary.records += records.len() as u64;
    }
    ours.flush()?;
    Ok(summary)
}

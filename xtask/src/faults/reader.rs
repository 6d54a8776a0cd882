//! What a scenario's run left: the stream as a consumer reads it, the failed file
//! and `kpl put`'s summary (`--summary-json`).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};
use kpl_tests::kinesis::Kinesis;
use kpl_tests::kpl::Summary;
use serde_json::Value;

/// What a run left behind.
pub(crate) struct Outcome {
    /// Line number → copies read from the stream.
    pub(crate) seen: HashMap<u64, u32>,
    /// Copies outside their shard's range (dropped, as the KCL drops them).
    pub(crate) outside: u64,
    /// Lines read (first copies, as a KCL consumer reads) after a later line of
    /// their partition key.
    pub(crate) out_of_order: u64,
    /// Line numbers in the failed file.
    pub(crate) failed_lines: HashSet<u64>,
    /// What `kpl put` said of its run (an error if it said nothing whole).
    pub(crate) summary: Result<Summary, String>,
}

/// Reads `stream` on `endpoint`, the failed file and the summary file.
pub(crate) fn read(endpoint: &str, stream: &str, failed: &Path, summary: &Path) -> Result<Outcome> {
    let (seen, outside, out_of_order) = read_back(endpoint, stream)?;
    Ok(Outcome {
        seen,
        outside,
        out_of_order,
        failed_lines: failed_lines(failed),
        summary: Summary::read(summary).map_err(|e| format!("{e:#}")),
    })
}

/// Every line of the stream as a KCL consumer reads it: line number → copies read;
/// how many copies lay outside their shard's range; how many lines were read
/// (first copies) after a later line of their key ([`out_of_order`]).
fn read_back(endpoint: &str, stream: &str) -> Result<(HashMap<u64, u32>, u64, u64)> {
    let back = Kinesis::new(endpoint).read_back(stream)?;
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut read = Vec::with_capacity(back.records.len());
    for (data, key) in back.records.iter().zip(&back.partition_keys) {
        let line = line_number(data)?;
        *seen.entry(line).or_default() += 1;
        read.push((key.as_str(), line));
    }
    Ok((seen, back.outside, out_of_order(&read)))
}

/// Of `(key, line)` in the order read, the first copies read after a later line of
/// their key (lines are put in order).
fn out_of_order(read: &[(&str, u64)]) -> u64 {
    let mut first: HashSet<u64> = HashSet::new();
    let mut last: HashMap<&str, u64> = HashMap::new();
    let mut n = 0;
    for &(key, line) in read {
        if !first.insert(line) {
            continue;
        }
        let latest = last.entry(key).or_insert(line);
        if *latest > line {
            n += 1;
        } else {
            *latest = line;
        }
    }
    n
}

/// The number of a line `NAME-NNNNNNNN ....` the runner wrote.
fn line_number(data: &[u8]) -> Result<u64> {
    let text = String::from_utf8_lossy(data);
    text.split_whitespace()
        .next()
        .and_then(|w| w.rsplit('-').next())
        .and_then(|n| n.parse::<u64>().ok())
        .with_context(|| format!("a record not of this run: {text:?}"))
}

/// The line numbers in the failed file (none if it is not there).
fn failed_lines(path: &Path) -> HashSet<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["Line"].as_u64())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_read_after_a_later_one_of_its_key_is_out_of_order_once() {
        let read = [
            ("a", 1),
            ("b", 2),
            ("a", 4),
            ("a", 3),
            ("b", 5),
            ("a", 1),
            ("a", 3),
        ];
        // 3 after 4 (a): one; the second copies of 1 and 3 are not counted.
        assert_eq!(out_of_order(&read), 1);
        assert_eq!(out_of_order(&[("a", 1), ("a", 2), ("b", 1)]), 0);
    }

    #[test]
    fn a_line_is_known_by_its_number() {
        assert_eq!(line_number(b"baseline-00000042 ....").unwrap(), 42);
        assert_eq!(line_number(b"reshard-storm-dense-00000007 ..").unwrap(), 7);
        assert!(line_number(b"hello").is_err());
    }
}

//! One table of settings: no KPL setting's key, doc, byte size or timeout is
//! written outside the settings table of kpl-producer's config.rs (and Kinesis
//! limits outside kpl-codec's limits.rs), in non-test code.

use std::fs;
use std::path::{Path, PathBuf};

use kpl_producer::Config;

use crate::root;

/// The table's home.
const TABLE: &str = "crates/kpl-producer/src/config.rs";
/// The home of Kinesis limits, which the table names.
const LIMITS: &str = "crates/kpl-codec/src/limits.rs";

/// Places outside the table that still spell one of its timeouts, each tied to
/// the table by a test or left to the file's owner: (file, spelling, why).
const TIED: &[(&str, &str, &str)] = &[
    (
        "crates/kpl-transport/src/lib.rs",
        "from_secs(6)",
        "DEFAULT_TIMEOUT: kpl-transport cannot depend on kpl-producer; \
         config::tests::the_lower_crates_defaults_are_the_tables ties it",
    ),
    (
        "crates/kpl-transport/src/aws.rs",
        "from_secs(300)",
        "the builder's own ConnectTimeout bound; config::tests::the_transport_bounds_are_the_tables",
    ),
    (
        "crates/kpl-transport/src/aws.rs",
        "from_secs(600)",
        "the builder's own RequestTimeout bound; config::tests::the_transport_bounds_are_the_tables",
    ),
    (
        "crates/kpl-limiter/src/window.rs",
        "from_secs(6)",
        "WindowConfig's default base timeout; config::tests::the_lower_crates_defaults_are_the_tables",
    ),
    (
        "crates/kpl-limiter/src/window.rs",
        "from_secs(600)",
        "WindowConfig's default longest timeout; config::tests::the_lower_crates_defaults_are_the_tables",
    ),
    (
        "crates/kpl-producer/src/pipeline/flights.rs",
        "from_secs(600)",
        "the pipeline's cap on a request's timeout (RequestTimeout's bound): the pipeline's to name",
    ),
    (
        "crates/kpl-cli/src/put.rs",
        "from_secs(6)",
        "IN_FLIGHT_WAIT, a request's timeout at the end of the input: kpl put's to name",
    ),
];

/// Strings of the table found elsewhere that are not the setting: (file, text, why).
const COINCIDENCES: &[(&str, &str, &str)] = &[
    (
        "crates/kpl-transport/src/error.rs",
        "\"RequestTimeout\"",
        "an AWS error code (HTTP 408), not the setting",
    ),
    (
        "crates/kpl-transport/src/aws.rs",
        "Whether the endpoint's certificate is ch",
        "the transport builder's own setter, documented in its crate (which cannot \
         depend on kpl-producer)",
    ),
    (
        "xtask/src/faults/runner.rs",
        "from_secs(600)",
        "a fault scenario's deadline, not a request's timeout",
    ),
];

/// Whether `text` in `path` is listed in `COINCIDENCES`.
fn coincidence(path: &str, text: &str) -> bool {
    COINCIDENCES.iter().any(|&(p, t, _)| p == path && t == text)
}

/// Every `.rs` file under `dir`, but test files and directories.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "tests" | "benches" | "examples" | "target") {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            out.push(path);
        }
    }
}

/// The non-test code of the workspace, by path relative to the root: each
/// file up to its `#[cfg(test)] mod`, with or without comment lines.
fn non_test_code(with_comments: bool) -> Vec<(String, String)> {
    let root = root();
    let mut files = Vec::new();
    for top in ["crates", "xtask"] {
        sources(&root.join(top), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap();
            let mut code = String::new();
            let mut lines = text.lines().peekable();
            while let Some(line) = lines.next() {
                if line.trim() == "#[cfg(test)]"
                    && lines
                        .peek()
                        .is_some_and(|next| next.trim_start().starts_with("mod "))
                {
                    break;
                }
                if with_comments || !line.trim_start().starts_with("//") {
                    code += line;
                    code += "\n";
                }
            }
            let relative = path.strip_prefix(&root).unwrap();
            (relative.to_string_lossy().replace('\\', "/"), code)
        })
        .collect()
}

/// Where `needle` occurs: (file, count).
fn occurrences<'a>(code: &'a [(String, String)], needle: &str) -> Vec<(&'a str, usize)> {
    code.iter()
        .map(|(path, text)| (path.as_str(), text.matches(needle).count()))
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// `n` as Rust may spell it: plain, with `_` every three digits, and as a
/// product of 1024s.
fn spellings(n: u64) -> Vec<String> {
    let plain = n.to_string();
    let mut grouped = String::new();
    for (i, c) in plain.chars().enumerate() {
        if i > 0 && (plain.len() - i).is_multiple_of(3) {
            grouped.push('_');
        }
        grouped.push(c);
    }
    let mut out = vec![plain, grouped];
    if n.is_multiple_of(1 << 20) {
        out.push(format!("{} * 1024 * 1024", n >> 20));
    } else if n.is_multiple_of(1024) {
        out.push(format!("{} * 1024", n >> 10));
    }
    out.dedup();
    out
}

/// The numbers in a text (`64 to 10485760` gives 64 and 10485760).
fn numbers(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

#[test]
fn every_settings_key_is_written_once() {
    let code = non_test_code(false);
    let mut wrong = Vec::new();
    for s in Config::settings() {
        for key in std::iter::once(&s.key()).chain(s.aliases()) {
            let quoted = format!("\"{key}\"");
            let mut found = occurrences(&code, &quoted);
            found.retain(|&(path, _)| !coincidence(path, &quoted));
            if found != [(TABLE, 1)] {
                wrong.push(format!("{key}: {found:?}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "a key outside the settings table of {TABLE} (use Config::settings()):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_settings_doc_is_written_once() {
    let code = non_test_code(true);
    let mut wrong = Vec::new();
    for s in Config::settings() {
        // The first line of the doc as the table's source spells it.
        let start: String = s.doc().chars().take(40).collect();
        let mut found = occurrences(&code, &start);
        found.retain(|&(path, _)| !coincidence(path, &start));
        if found != [(TABLE, 1)] {
            wrong.push(format!("{}: {start:?} in {found:?}", s.key()));
        }
    }
    assert!(
        wrong.is_empty(),
        "a setting's doc written twice (let it come from the table):\n{}",
        wrong.join("\n")
    );
}

/// Byte sizes of the table (defaults and bounds) are written once: Kinesis limits
/// in kpl-codec's limits.rs (the table names its constants), the others in the
/// table.
#[test]
fn byte_sizes_of_settings_live_in_the_table_or_kpl_codec() {
    let code = non_test_code(false);
    let limits = [
        kpl_codec::DEFAULT_MAX_RECORD_SIZE,
        kpl_codec::MAX_RECORD_SIZE_CEILING,
        kpl_codec::DEFAULT_MAX_REQUEST_SIZE,
    ]
    .map(|n| n as u64);
    let mut wrong = Vec::new();
    for s in Config::settings().iter().filter(|s| s.unit() == "bytes") {
        let mut values = numbers(&s.default_value());
        values.extend(numbers(s.allowed()));
        for n in values.into_iter().filter(|&n| n >= 1024) {
            let home = if limits.contains(&n) { LIMITS } else { TABLE };
            for spelling in spellings(n) {
                for (path, count) in occurrences(&code, &spelling) {
                    if path != home {
                        wrong.push(format!("{}: {spelling} in {path} ({count})", s.key()));
                    }
                }
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "a byte size of a setting written outside its home ({LIMITS} for Kinesis \
         limits, else {TABLE}):\n{}",
        wrong.join("\n")
    );
}

/// The timeouts of the table (RequestTimeout, ConnectTimeout: defaults and
/// bounds) are written in the table, or in the places listed in `TIED`.
#[test]
fn timeouts_of_settings_live_in_the_table() {
    let code = non_test_code(false);
    let mut wrong = Vec::new();
    for s in Config::settings()
        .iter()
        .filter(|s| s.unit() == "ms" && s.key().ends_with("Timeout"))
    {
        let mut values = numbers(&s.default_value());
        values.extend(numbers(s.allowed()));
        for ms in values.into_iter().filter(|&ms| ms >= 1000) {
            let mut forms = vec![format!("from_millis({ms})")];
            if ms.is_multiple_of(1000) {
                forms.push(format!("from_secs({})", ms / 1000));
            }
            for form in forms {
                for (path, count) in occurrences(&code, &form) {
                    let tied = TIED.iter().any(|&(p, f, _)| p == path && f == form);
                    if path != TABLE && !tied && !coincidence(path, &form) {
                        wrong.push(format!("{}: {form} in {path} ({count})", s.key()));
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "a timeout of a setting outside {TABLE} (use the table, or tie it by a test and \
         list it in TIED):\n{}",
        wrong.join("\n")
    );
}

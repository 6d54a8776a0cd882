//! The pipeline as owned parts (issue 22, item 2), checked on the source: no struct
//! of kpl-producer with more than 15 fields (the settings struct made from the
//! table may stay flat, as quinn's `TransportConfig` is); no lifecycle bools in the
//! pipeline; each named part with unit tests of its own; no
//! `clippy::type_complexity` allowed anywhere.

use std::fs;

use super::{crates, root, rust_files};

/// Fields a struct may have at most.
const MOST_FIELDS: usize = 15;

/// Structs allowed more, with why.
const FLAT: &[(&str, &str)] = &[(
    "Config",
    "made from the settings table, one field a setting (config.rs)",
)];

/// The pipeline's parts (issue 22, item 2): each a type in its own file, with
/// unit tests there.
const PARTS: &[(&str, &str)] = &[
    ("pipeline/shards.rs", "ShardTracker"),
    ("pipeline/aggregate.rs", "Aggregation"),
    ("pipeline/assemble.rs", "Assembler"),
    ("pipeline/flights.rs", "Flights"),
    ("pipeline/retry.rs", "RetryQueue"),
    ("pipeline/drain.rs", "DrainMeter"),
    ("pipeline/report.rs", "Report"),
    ("pipeline/lifecycle.rs", "Lifecycle"),
    ("completers.rs", "Completers"),
];

/// The body of each `struct Name { ... }` in `text` (named fields only), with the
/// name.
fn structs(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("struct ") {
        let after = &rest[at + "struct ".len()..];
        rest = after;
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        // The next `{` or `;` or `(` decides: only `{` opens named fields.
        let Some(open) = after.find(['{', ';', '(']) else {
            continue;
        };
        if after.as_bytes()[open] != b'{' {
            continue;
        }
        let mut depth = 0usize;
        let mut end = None;
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(open + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        if let Some(end) = end {
            out.push((name, after[open + 1..end].to_string()));
        }
    }
    out
}

/// Named fields at the top level of a struct's body: `name: Type,` lines, doc
/// comments and attributes aside.
fn field_count(body: &str) -> usize {
    let mut depth = 0i32;
    let mut count = 0;
    for line in body.lines() {
        let line = line.trim();
        if depth == 0
            && !line.starts_with("//")
            && !line.starts_with('#')
            && line.split(':').next().is_some_and(|head| {
                let head = head
                    .trim_start_matches("pub(crate) ")
                    .trim_start_matches("pub(super) ")
                    .trim_start_matches("pub ")
                    .trim();
                !head.is_empty() && head.chars().all(|c| c.is_alphanumeric() || c == '_')
            })
            && line.contains(':')
        {
            count += 1;
        }
        depth += line.matches(['(', '[', '{', '<']).count() as i32;
        depth -= line.matches([')', ']', '}', '>']).count() as i32;
        depth = depth.max(0);
    }
    count
}

/// The structs of `text` with more than [`MOST_FIELDS`] fields (those in [`FLAT`]
/// aside), with their counts; and how many structs it read.
fn too_big(text: &str) -> (Vec<(String, usize)>, usize) {
    let all = structs(text);
    let read = all.len();
    let big = all
        .into_iter()
        .map(|(name, body)| {
            let n = field_count(&body);
            (name, n)
        })
        .filter(|(name, n)| *n > MOST_FIELDS && !FLAT.iter().any(|(flat, _)| flat == name))
        .collect();
    (big, read)
}

#[test]
fn no_struct_of_the_producer_has_more_than_15_fields() {
    let mut files = Vec::new();
    rust_files(&root().join("crates/kpl-producer/src"), &mut files);
    let mut seen = 0;
    for file in files {
        let (big, read) = too_big(&fs::read_to_string(&file).unwrap());
        seen += read;
        assert!(
            big.is_empty(),
            "{}: {big:?} have more than {MOST_FIELDS} fields: split them into parts that own their rules",
            file.display()
        );
    }
    assert!(seen > 20, "the reading found only {seen} structs");
}

#[test]
fn a_struct_of_16_fields_is_refused_unless_it_is_the_settings() {
    let fields: String = (0..16).map(|i| format!("    f{i}: u8,\n")).collect();
    let text = format!("pub(crate) struct Wide {{\n{fields}}}\npub struct Config {{\n{fields}}}\n");
    assert_eq!(too_big(&text), (vec![("Wide".to_string(), 16)], 2));
}

#[test]
fn the_field_count_reads_named_fields_only() {
    let body = "
        /// A doc.
        #[allow(dead_code)]
        pub(super) a: u32,
        b: Vec<(u8, u16)>,
        c: Option<Box<dyn Fn(u8) -> u8>>,
        d: Foo<\n            u8,\n        >,
    ";
    assert_eq!(field_count(body), 4);
    let text = "struct A { x: u8, }\nstruct B(u8);\nstruct C;\npub(crate) struct D {\n    y: u8,\n    z: u8,\n}\n";
    let got: Vec<String> = structs(text).into_iter().map(|(n, _)| n).collect();
    assert_eq!(got, ["A", "D"]);
}

#[test]
fn the_pipeline_has_no_lifecycle_bools() {
    let text = fs::read_to_string(root().join("crates/kpl-producer/src/pipeline/mod.rs")).unwrap();
    let (_, body) = structs(&text)
        .into_iter()
        .find(|(n, _)| n == "StreamPipeline")
        .expect("StreamPipeline is defined in pipeline/mod.rs");
    for flag in [
        "refreshing",
        "want_history",
        "dirty",
        "flushing",
        "stopping",
    ] {
        assert!(
            !body.contains(&format!("{flag}: bool")),
            "StreamPipeline keeps `{flag}` as a bool: it belongs to the Lifecycle enum or the part that owns it"
        );
    }
    assert!(
        body.contains("Lifecycle"),
        "the pipeline's lifecycle is an enum"
    );
}

#[test]
fn each_part_of_the_pipeline_has_unit_tests_of_its_own() {
    let src = root().join("crates/kpl-producer/src");
    for (file, part) in PARTS {
        let text = fs::read_to_string(src.join(file)).unwrap();
        assert!(
            text.contains(&format!("struct {part}")) || text.contains(&format!("enum {part}")),
            "{file} defines {part}"
        );
        let tests = text.matches("#[test]").count();
        assert!(
            text.contains("#[cfg(test)]") && tests > 0,
            "{file}: {part} has no unit tests of its own"
        );
    }
}

#[test]
fn no_type_complexity_is_allowed() {
    let mut files = Vec::new();
    for dir in crates() {
        rust_files(&dir, &mut files);
    }
    rust_files(&root().join("xtask"), &mut files);
    rust_files(&root().join("tests/src"), &mut files);
    let needle = ["clippy::", "type_complexity"].concat();
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains(&needle),
            "{}: allows {needle}: name the type instead",
            file.display()
        );
    }
}

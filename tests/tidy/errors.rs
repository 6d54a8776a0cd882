//! One error model (issue 22, item 4), checked on the source of every library
//! crate: a public error type keeps its cause as an error value, not as its
//! text; it returns the cause from `source()`; its Display says only its own
//! level, never the cause's text (a `{:#}` chain would print it twice).
//!
//! Each is opaque, hyper's way: a struct with a private representation, asked
//! through `kind()` and `is_*()` and accessors for its values, so that variants
//! and fields can change without breaking callers; the few that stay enums, or
//! keep public fields, are listed with why.
//!
//! This is a reading of the source, not of the types: each crate's unit tests
//! build its errors with a cause and check `source()` and `to_string()`.

use std::fs;
use std::path::PathBuf;

use super::{crates, is_library, rust_files};

/// `String` fields (or variants that are only a `String`) of public error
/// types that hold text no error value exists for (the service's own words, a
/// name, or our description of a value given), with why.
const TEXT_THAT_IS_NOT_A_CAUSE: &[(&str, &str, &str)] = &[
    (
        "TransportError",
        "message",
        "the service's message, or ours: a response has no error value",
    ),
    (
        "PutMetricDataError",
        "message",
        "what CloudWatch said, as text in its response",
    ),
    (
        "AttemptError",
        "message",
        "the service's message for the record (PutRecords answers each record with text), or the request's",
    ),
    (
        "BuildError",
        "reason",
        "what is wrong with the endpoint URL, in our words: no parser error is behind it",
    ),
    ("SimError", "StreamNotFound", "the stream's name"),
    ("SimError", "StreamExists", "the stream's name"),
    ("SimError", "ShardNotFound", "the shard's id"),
    (
        "SimError",
        "InvalidReshard",
        "what is wrong with the arguments, in our words: no error value is behind it",
    ),
];

/// Public error types that stay enums (or structs with public fields), with why.
const NOT_OPAQUE: &[(&str, &str)] = &[
    (
        "LookupError",
        "a sans-IO answer of the shard map inside the pipeline (not ready, or no shard \
         for a key), Copy, matched on where it is asked; no cause, and never given to a \
         caller of the producer",
    ),
    (
        "AttemptError",
        "a record of what one attempt got (code, the service's message, may have been \
         stored): a value kept in each record's history and read by its fields, not \
         an error raised to a caller; #[non_exhaustive]",
    ),
];

/// Names of the fields and tuple payloads that hold a cause's text.
const CAUSE_NAMES: &[&str] = &["reason", "message", "cause", "why", "error", "source"];

/// The text between the `{` (or `(`) after `from` and its match.
fn block(text: &str, from: usize) -> Option<&str> {
    let start = from + text[from..].find(['{', ';'])?;
    if text.as_bytes()[start] == b';' {
        return Some("");
    }
    let mut depth = 0usize;
    for (i, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start + 1..start + i]);
                }
            }
            _ => {}
        }
    }
    None
}

struct ErrorType {
    name: String,
    file: PathBuf,
    /// Whether it is a `pub enum`.
    enum_: bool,
    /// The public definition, without docs and comments.
    public_body: String,
    /// The definition with its private representation's.
    body: String,
    /// The body of `impl ... Error for NAME`.
    error_impl: Option<String>,
    /// The body of `impl ... Display for NAME`.
    display_impl: Option<String>,
}

fn without_comments(body: &str) -> String {
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| w.chars().next().is_some_and(char::is_uppercase))
}

/// The body of a private `enum NAME` or `struct NAME` in `text`.
fn private_type_body(text: &str, name: &str) -> Option<String> {
    for keyword in ["enum ", "struct "] {
        let needle = format!("{keyword}{name}");
        let mut at = 0;
        while let Some(i) = text[at..].find(&needle) {
            let i = at + i;
            at = i + needle.len();
            let next = text[at..].chars().next();
            let line_start = text[..i].rfind('\n').map_or(0, |n| n + 1);
            let before = text[line_start..i].trim();
            if next.is_some_and(|c| c.is_alphanumeric() || c == '_') || !before.is_empty() {
                continue;
            }
            return block(text, at).map(str::to_owned);
        }
    }
    None
}

fn impl_body(text: &str, trait_suffix: &str, name: &str) -> Option<String> {
    let mut at = 0;
    while let Some(i) = text[at..].find("impl ") {
        let i = at + i;
        let header_end = i + text[i..].find('{')?;
        let header = &text[i..header_end];
        let for_name = format!(" for {name}");
        if header.trim_end().ends_with(&for_name)
            && header
                .trim_end()
                .trim_end_matches(&for_name)
                .ends_with(trait_suffix)
        {
            return block(text, i).map(str::to_owned);
        }
        at = i + 5;
    }
    None
}

fn public_error_types() -> Vec<ErrorType> {
    let mut found = Vec::new();
    for dir in crates().into_iter().filter(|d| is_library(d)) {
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        files.sort();
        for file in files {
            let text = fs::read_to_string(&file).unwrap();
            for keyword in ["pub enum ", "pub struct "] {
                let mut at = 0;
                while let Some(i) = text[at..].find(keyword) {
                    let i = at + i;
                    at = i + keyword.len();
                    let name: String = text[at..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.ends_with("Error") || name == "Error" {
                        continue;
                    }
                    let Some(body) = block(&text, at) else {
                        continue;
                    };
                    // The definition without its docs and comments.
                    let body = without_comments(body);
                    // An opaque type's representation: the private types its
                    // fields name, in the same file.
                    let repr: String = words(&body)
                        .filter_map(|w| private_type_body(&text, w))
                        .map(|b| without_comments(&b))
                        .collect::<Vec<_>>()
                        .join("\n");
                    found.push(ErrorType {
                        public_body: body.clone(),
                        body: format!("{body}\n{repr}"),
                        enum_: keyword == "pub enum ",
                        error_impl: impl_body(&text, "Error", &name),
                        display_impl: impl_body(&text, "Display", &name),
                        name,
                        file: file.clone(),
                    });
                }
            }
        }
    }
    assert!(
        found.iter().any(|e| e.name == "TransportError"),
        "the scan found no TransportError: it reads nothing"
    );
    found
}

/// Whether the type's definition holds a value of an error type (other than
/// a kind).
fn holds_a_cause(e: &ErrorType) -> bool {
    e.body.contains("dyn std::error::Error")
        || e.body.contains("dyn Error")
        || e.body
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .any(|word| {
                let last = word.rsplit("::").next().unwrap_or(word);
                last.ends_with("Error") && last != e.name && !word.is_empty()
            })
}

#[test]
fn no_public_error_type_keeps_its_cause_as_text() {
    let mut faults = Vec::new();
    for e in public_error_types() {
        let body = e.body.replace(char::is_whitespace, "");
        for name in CAUSE_NAMES {
            if (body.contains(&format!("{name}:String"))
                || body.contains(&format!("{name}:Option<String>")))
                && !TEXT_THAT_IS_NOT_A_CAUSE
                    .iter()
                    .any(|(t, f, _)| *t == e.name && f == name)
            {
                faults.push(format!(
                    "{}: {} keeps `{name}` as a String: keep the cause as an error",
                    e.file.display(),
                    e.name
                ));
            }
        }
        for (i, _) in body.match_indices("(String)") {
            let variant: String = body[..i]
                .chars()
                .rev()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if !TEXT_THAT_IS_NOT_A_CAUSE
                .iter()
                .any(|(t, f, _)| *t == e.name && *f == variant)
            {
                faults.push(format!(
                    "{}: {}::{variant} is only a String: keep the cause as an error",
                    e.file.display(),
                    e.name
                ));
            }
        }
    }
    assert!(faults.is_empty(), "\n{}", faults.join("\n"));
}

#[test]
fn every_public_error_with_a_cause_returns_it_from_source() {
    let mut faults = Vec::new();
    for e in public_error_types() {
        let Some(error_impl) = &e.error_impl else {
            faults.push(format!(
                "{}: {} does not implement std::error::Error",
                e.file.display(),
                e.name
            ));
            continue;
        };
        if holds_a_cause(&e) && !error_impl.contains("fn source") {
            faults.push(format!(
                "{}: {} holds a cause but has no `fn source`",
                e.file.display(),
                e.name
            ));
        }
    }
    assert!(faults.is_empty(), "\n{}", faults.join("\n"));
}

#[test]
fn no_public_error_prints_its_cause_in_display() {
    let mut faults = Vec::new();
    for e in public_error_types() {
        let Some(display) = &e.display_impl else {
            continue;
        };
        let has_source = e
            .error_impl
            .as_deref()
            .is_some_and(|i| i.contains("fn source"));
        if !has_source && !holds_a_cause(&e) {
            continue;
        }
        let text = display.replace(char::is_whitespace, "");
        let causes = ["e", "err", "error", "source", "cause", "why", "reason"];
        for bound in causes.into_iter().filter(|b| {
            !TEXT_THAT_IS_NOT_A_CAUSE
                .iter()
                .any(|(t, f, _)| *t == e.name && f == b)
        }) {
            for pattern in [
                format!("{{{bound}}}"),
                format!("{{{bound}:"),
                format!("{bound}.fmt(f)"),
                format!("{bound}.to_string()"),
            ] {
                if text.contains(&pattern) {
                    faults.push(format!(
                        "{}: {}'s Display prints its cause ({pattern}): say only this level",
                        e.file.display(),
                        e.name
                    ));
                }
            }
        }
    }
    assert!(faults.is_empty(), "\n{}", faults.join("\n"));
}

#[test]
fn public_error_types_are_opaque() {
    let mut faults = Vec::new();
    for e in public_error_types() {
        if NOT_OPAQUE.iter().any(|(t, _)| *t == e.name) {
            continue;
        }
        if e.enum_ {
            faults.push(format!(
                "{}: {} is a public enum: make it a struct with a private representation, \
                 kind() and is_*() (or list it in NOT_OPAQUE with why)",
                e.file.display(),
                e.name
            ));
        } else if e
            .public_body
            .lines()
            .any(|l| l.trim_start().starts_with("pub "))
        {
            faults.push(format!(
                "{}: {} has public fields: keep them private behind accessors \
                 (or list it in NOT_OPAQUE with why)",
                e.file.display(),
                e.name
            ));
        }
    }
    assert!(faults.is_empty(), "\n{}", faults.join("\n"));
}

#[test]
fn the_enums_that_stay_are_public_errors_still() {
    let found = public_error_types();
    for (name, why) in NOT_OPAQUE {
        assert!(
            found.iter().any(|e| e.name == *name),
            "NOT_OPAQUE lists {name}, which is no longer a public error type ({why})"
        );
    }
}

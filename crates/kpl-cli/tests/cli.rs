//! The `kpl agg` and `kpl deagg` commands, run as a user runs them.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Output, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::kpl;
use serde_json::{Value, json};

fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn user(pk: &str, data: &[u8]) -> String {
    json!({"PartitionKey": pk, "Data": STANDARD.encode(data)}).to_string()
}

fn b64(v: &Value) -> Vec<u8> {
    STANDARD.decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn agg_matches_the_golden_vector() {
    let input = [user("pk1", b"hello"), user("pk2", b"world")].join("\n");
    let out = kpl(&["agg"], &input);
    assert!(out.status.success());
    let records = lines(&out);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["PartitionKey"], "a");
    assert_eq!(
        records[0]["ExplicitHashKey"],
        "329398341438914906102347661116985167824"
    );
    let hex: String = b64(&records[0]["Data"])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        hex,
        "f3899ac20a03706b310a03706b321a0908001a0568656c6c6f1a0908011a05776f726c6487c22af1ed18e292eb55b018413a3cff"
    );
}

#[test]
fn agg_packs_in_order_within_limits_and_deagg_reads_it_back() {
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for i in 0..200u32 {
        let pk = format!("key-{}", i % 7);
        let data = vec![i as u8; (i as usize * 37) % 900];
        input.push(user(&pk, &data));
        expected.push((pk, data));
    }
    // A record bigger than --max-size goes alone, raw.
    input.push(
        json!({"PartitionKey": "big", "ExplicitHashKey": "7", "Data": STANDARD.encode(vec![1u8; 5000])})
            .to_string(),
    );
    expected.push(("big".into(), vec![1u8; 5000]));
    let out = kpl(
        &["agg", "--max-size", "4096", "--max-count", "9"],
        &input.join("\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = lines(&out);
    assert!(records.len() > 200 / 9);
    let last = records.last().unwrap();
    assert_eq!(last["PartitionKey"], "big");
    assert_eq!(last["ExplicitHashKey"], "7");
    for r in &records[..records.len() - 1] {
        let data = b64(&r["Data"]);
        assert!(data.len() <= 4096, "aggregate of {} bytes", data.len());
        let users = kpl::codec::deaggregate("a", None, &data).unwrap();
        assert!(users.len() <= 9);
        if kpl::codec::is_aggregated(&data) {
            let first = users[0].hash_key().unwrap().to_string();
            assert_eq!(r["ExplicitHashKey"], first.as_str());
        }
    }

    let agg_lines: Vec<String> = records.iter().map(Value::to_string).collect();
    let back = kpl(&["deagg"], &agg_lines.join("\n"));
    assert!(back.status.success());
    let users = lines(&back);
    let got: Vec<(String, Vec<u8>)> = users
        .iter()
        .map(|u| {
            (
                u["PartitionKey"].as_str().unwrap().to_owned(),
                b64(&u["Data"]),
            )
        })
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn deagg_reads_get_records_responses() {
    let agg = kpl(
        &["agg"],
        &[user("k1", b"one"), user("k2", b"two")].join("\n"),
    );
    let aggregate = lines(&agg).remove(0);
    let response = json!({
        "Records": [
            {"Data": aggregate["Data"], "PartitionKey": "a", "ExplicitHashKey": aggregate["ExplicitHashKey"], "SequenceNumber": "495"},
            {"Data": STANDARD.encode(b"plain"), "PartitionKey": "p", "SequenceNumber": "496"}
        ],
        "NextShardIterator": "x",
        "MillisBehindLatest": 0
    });
    let out = kpl(&["deagg"], &response.to_string());
    assert!(out.status.success());
    assert_eq!(
        lines(&out),
        vec![
            json!({"PartitionKey": "k1", "ExplicitHashKey": null, "Data": STANDARD.encode(b"one"), "SequenceNumber": "495", "SubSequenceNumber": 0, "Aggregated": true}),
            json!({"PartitionKey": "k2", "ExplicitHashKey": null, "Data": STANDARD.encode(b"two"), "SequenceNumber": "495", "SubSequenceNumber": 1, "Aggregated": true}),
            json!({"PartitionKey": "p", "ExplicitHashKey": null, "Data": STANDARD.encode(b"plain"), "SequenceNumber": "496", "SubSequenceNumber": null, "Aggregated": false}),
        ]
    );
}

fn damaged_aggregate() -> String {
    let agg = kpl(
        &["agg"],
        &[user("k1", b"one"), user("k2", b"two")].join("\n"),
    );
    let mut data = b64(&lines(&agg)[0]["Data"]);
    let last = data.len() - 1;
    data[last] ^= 0xff;
    json!({"Data": STANDARD.encode(&data), "PartitionKey": "a"}).to_string()
}

/// Kinesis record data in the aggregated format around `body`, with a matching MD5
/// (a body that is no valid `AggregatedRecord` message makes an aggregate the KCL
/// reads as a plain record).
fn framed(body: &[u8]) -> Vec<u8> {
    let digest = kpl::codec::HashKey::from_partition_key(std::str::from_utf8(body).unwrap())
        .get()
        .to_be_bytes();
    [&kpl::codec::MAGIC[..], body, &digest].concat()
}

fn record(pk: &str, data: &[u8]) -> Value {
    json!({"Data": STANDARD.encode(data), "PartitionKey": pk})
}

fn out_record(pk: &str, data: &[u8], seq: Option<u64>, aggregated: bool) -> Value {
    json!({"PartitionKey": pk, "ExplicitHashKey": null, "Data": STANDARD.encode(data), "SequenceNumber": null, "SubSequenceNumber": seq, "Aggregated": aggregated})
}

#[test]
fn deagg_stops_at_a_malformed_line_with_exit_2() {
    let input = [
        user("ok", b"1"),
        json!({"Data": "!!", "PartitionKey": "p"}).to_string(),
        user("after", b"2"),
    ]
    .join("\n");
    let out = kpl(&["deagg"], &input);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("<stdin>:2:") && err.contains("base64"),
        "{err}"
    );
    assert_eq!(
        lines(&out).len(),
        1,
        "the line before the bad one is written"
    );
}

#[test]
fn deagg_skip_invalid_reports_and_goes_on() {
    let input = [
        user("ok", b"1"),
        damaged_aggregate(),
        "{not json".to_owned(),
        json!({"Data": "!!", "PartitionKey": "p"}).to_string(),
        user("after", b"2"),
    ]
    .join("\n");
    let out = kpl(&["deagg", "--skip-invalid"], &input);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    for line in [":3:", ":4:"] {
        assert!(
            err.contains(&format!("skipped <stdin>{line}")),
            "{line} in {err}"
        );
    }
    assert!(
        err.contains("1 record and 1 line skipped as invalid"),
        "{err}"
    );
    let keys: Vec<Value> = lines(&out)
        .iter()
        .map(|u| u["PartitionKey"].clone())
        .collect();
    assert_eq!(keys, vec![json!("ok"), json!("a"), json!("after")]);
}

/// The KCL (`AggregatorUtil.deaggregate`) and aws-kinesis-agg read a record whose
/// digest does not match, or whose body is no `AggregatedRecord` message, as a
/// plain record: so does `kpl deagg`, record by record, with or without
/// --skip-invalid.
#[test]
fn deagg_reads_a_damaged_aggregate_as_a_plain_record_as_the_kcl_does() {
    let agg = kpl(
        &["agg"],
        &[user("k1", b"one"), user("k2", b"two")].join("\n"),
    );
    let good = b64(&lines(&agg)[0]["Data"]);
    let mut bad_digest = good.clone();
    *bad_digest.last_mut().unwrap() ^= 0xff;
    // partition_key_table entry of 5 bytes holding 2: the message is cut.
    let bad_protobuf = framed(b"\x0a\x05ab");
    let page = json!({"Records": [
        record("a", &good),
        record("d1", &bad_digest),
        record("d2", &bad_protobuf),
        record("p", b"plain"),
    ]});
    let expected = vec![
        out_record("k1", b"one", Some(0), true),
        out_record("k2", b"two", Some(1), true),
        out_record("d1", &bad_digest, None, false),
        out_record("d2", &bad_protobuf, None, false),
        out_record("p", b"plain", None, false),
    ];
    for args in [&["deagg"][..], &["deagg", "--skip-invalid"]] {
        let out = kpl(args, &page.to_string());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert_eq!(lines(&out), expected, "{args:?}");
        assert!(
            err.contains("record 1: starts with the aggregation magic bytes"),
            "{err}"
        );
        assert!(
            err.contains("record 2: starts with the aggregation magic bytes"),
            "{err}"
        );
        assert!(err.contains("2 records with the aggregation magic bytes but no valid aggregate written as plain records"), "{err}");
    }
    // Alone on a line too.
    let out = kpl(&["deagg"], &record("d1", &bad_digest).to_string());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        lines(&out),
        vec![out_record("d1", &bad_digest, None, false)]
    );
}

#[test]
fn deagg_skip_invalid_skips_one_record_of_a_page_never_the_page() {
    // A valid message whose key index points past its table: the KCL stops on it
    // too (an error, its user records lost); it is invalid, not plain.
    let bad_index = framed(b"\x1a\x05\x08\x03\x1a\x01x");
    let page = json!({"Records": [
        record("p1", b"one"),
        {"Data": "!!", "PartitionKey": "p"},
        {"NotARecord": 1},
        record("a", &bad_index),
        record("p2", b"two"),
    ]});
    let out = kpl(&["deagg", "--skip-invalid"], &page.to_string());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        lines(&out),
        vec![
            out_record("p1", b"one", None, false),
            out_record("p2", b"two", None, false)
        ]
    );
    for needle in [
        "skipped <stdin>:1: record 1: Data is not valid base64",
        "skipped <stdin>:1: record 2: not a Kinesis record",
        "skipped <stdin>:1: record 3: ",
        "3 records and 0 lines skipped as invalid",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
    // Without it, the run stops at the first bad record of the page, with the
    // records before it written.
    let out = kpl(&["deagg"], &page.to_string());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("<stdin>:1: record 1: Data is not valid base64"),
        "{err}"
    );
    assert_eq!(lines(&out), vec![out_record("p1", b"one", None, false)]);
}

#[test]
fn agg_refuses_bad_input_with_one_clear_line() {
    for (input, needle) in [
        ("{oops".to_owned(), "not a user record"),
        (
            json!({"PartitionKey": "", "Data": ""}).to_string(),
            "partition key is empty",
        ),
        (
            json!({"PartitionKey": "k".repeat(257), "Data": ""}).to_string(),
            "257 characters",
        ),
        (
            json!({"PartitionKey": "k", "ExplicitHashKey": "-5", "Data": ""}).to_string(),
            "explicit hash key",
        ),
        (
            json!({"PartitionKey": "k", "Data": "%%"}).to_string(),
            "base64",
        ),
    ] {
        let out = kpl(&["agg"], &format!("{}\n{input}\n", user("fine", b"x")));
        assert_eq!(out.status.code(), Some(2), "{input}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("<stdin>:2:") && err.contains(needle), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let out = kpl(&["agg", "--max-size", "12"], "");
    assert!(!out.status.success());
}

#[test]
fn agg_refuses_records_over_the_record_limit() {
    let input = json!({"PartitionKey": "kk", "Data": STANDARD.encode(vec![0u8; 100])}).to_string();
    let out = kpl(&["agg", "--max-record-size", "101"], &input);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("102 bytes"));
    assert!(
        kpl(&["agg", "--max-record-size", "102"], &input)
            .status
            .success()
    );
}

#[test]
fn files_are_read_in_order() {
    let dir = kpl_tests::TempDir::new("files-in-order");
    let a = dir.join("a.jsonl");
    let b = dir.join("b.jsonl");
    std::fs::write(&a, user("first", b"1")).unwrap();
    std::fs::write(&b, format!("{}\n\n", user("second", b"2"))).unwrap();
    let out = kpl(&["deagg", a.to_str().unwrap(), b.to_str().unwrap()], "");
    let keys: Vec<Value> = lines(&out)
        .iter()
        .map(|u| u["PartitionKey"].clone())
        .collect();
    assert_eq!(keys, vec![json!("first"), json!("second")]);
    let missing = kpl(&["deagg", dir.join("none").to_str().unwrap()], "");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot open"));
}

#[test]
fn help_describes_both_commands() {
    for cmd in ["agg", "deagg"] {
        let out = kpl(&[cmd, "--help"], "");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("JSON lines"), "{text}");
    }
    let out = kpl(&["agg", "--help"], "");
    assert!(String::from_utf8_lossy(&out.stdout).contains("does not group records by shard"));
}

/// Runs `kpl` with `args` and `stdin`, standard error on `stderr` (standard output
/// piped and returned).
fn kpl_with_stderr(args: &[&str], stdin: &str, stderr: Stdio) -> Output {
    kpl_tests::kpl::run(common::command(args).stderr(stderr), stdin)
}

#[test]
fn agg_and_deagg_survive_standard_error_on_a_full_device() {
    let cases = [
        (
            vec!["deagg", "--skip-invalid"],
            [
                user("ok", b"1"),
                "{not json".to_owned(),
                user("after", b"2"),
            ]
            .join("\n"),
        ),
        (
            vec!["deagg"],
            [
                user("ok", b"1"),
                "{not json".to_owned(),
                user("after", b"2"),
            ]
            .join("\n"),
        ),
        (
            vec!["agg", "--max-count", "1"],
            [user("ok", b"1"), user("ok", b"2"), "{oops".to_owned()].join("\n"),
        ),
    ];
    for (args, input) in cases {
        let full = kpl_with_stderr(
            &args,
            &input,
            Stdio::from(File::create("/dev/full").unwrap()),
        );
        let seen = kpl(&args, &input);
        assert!(!seen.stderr.is_empty(), "{args:?} prints a message");
        assert_ne!(full.status.code(), Some(101), "{args:?} panicked");
        assert!(!full.status.success(), "{args:?}: {:?}", full.status);
        assert_eq!(
            String::from_utf8_lossy(&full.stdout),
            String::from_utf8_lossy(&seen.stdout),
            "{args:?}: standard output is complete"
        );
    }
}

/// Runs `kpl` with `args` on `lines` lines of input, reads one line of its output
/// and closes the pipe: returns the exit status and standard error.
fn kpl_reader_gone(args: &[&str], input: Vec<u8>) -> (std::process::ExitStatus, String) {
    let mut child = common::command(args).stdin(Stdio::piped()).spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    // The child stops early: a failed write here is expected.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with('{'), "{first}");
    drop(reader);
    let status = child.wait().unwrap();
    writer.join().unwrap();
    (status, errors.join().unwrap())
}

#[test]
fn agg_and_deagg_stop_quietly_with_141_when_the_reader_goes_away() {
    let mut input = Vec::new();
    for i in 0..100_000u32 {
        input.extend_from_slice(user(&format!("key-{i}"), &[b'x'; 100]).as_bytes());
        input.push(b'\n');
    }
    for args in [&["deagg"][..], &["agg"], &["agg", "--max-count", "1"]] {
        let (status, stderr) = kpl_reader_gone(args, input.clone());
        assert_eq!(status.code(), Some(141), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
}

/// Kinesis counts data and partition key against the record limit: an aggregate
/// of `--max-size` bytes of data with its key "a" would be one byte over.
#[test]
fn agg_max_size_bounds_data_and_partition_key() {
    let records = [
        ("k1", vec![1u8; 1500]),
        ("k2", vec![2u8; 1500]),
        ("k3", vec![3u8; 700]),
    ];
    let mut builder: kpl::codec::AggregateBuilder = kpl::codec::AggregateBuilder::new();
    for (pk, data) in &records[..2] {
        builder.add(kpl::codec::UserRecord::new(pk.to_string(), data.clone()));
    }
    // The first two records make an aggregate of exactly this much data.
    let data_of_two = builder.size();
    let input: Vec<String> = records.iter().map(|(pk, d)| user(pk, d)).collect();
    for max in [data_of_two, data_of_two + 1] {
        let out = kpl(&["agg", "--max-size", &max.to_string()], &input.join("\n"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let written = lines(&out);
        for r in &written {
            let size = b64(&r["Data"]).len() + r["PartitionKey"].as_str().unwrap().len();
            assert!(size <= max, "a record of {size} B with --max-size {max}");
        }
        let first = b64(&written[0]["Data"]);
        if max == data_of_two {
            assert_eq!(first, records[0].1, "the first record alone");
        } else {
            assert_eq!(first.len(), data_of_two, "the first two aggregated");
        }
    }
}

#[test]
fn agg_max_size_is_bounded_by_the_largest_record_a_stream_takes() {
    let ceiling = kpl::codec::MAX_RECORD_SIZE_CEILING;
    let out = kpl(&["agg", "--max-size", &(ceiling + 1).to_string()], "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&ceiling.to_string()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        kpl(&["agg", "--max-size", &ceiling.to_string()], "")
            .status
            .success()
    );
}

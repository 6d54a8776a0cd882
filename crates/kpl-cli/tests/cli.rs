//! The `kpl agg` and `kpl deagg` commands, run as a user runs them.

mod common;

use std::process::Output;

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

#[test]
fn deagg_stops_at_a_malformed_line_with_exit_2() {
    let input = [user("ok", b"1"), damaged_aggregate(), user("after", b"2")].join("\n");
    let out = kpl(&["deagg"], &input);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("<stdin>:2:") && err.contains("MD5"), "{err}");
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
    for line in [":2:", ":3:", ":4:"] {
        assert!(err.contains(line), "{line} in {err}");
    }
    assert!(err.contains("skipped 3"), "{err}");
    let keys: Vec<Value> = lines(&out)
        .iter()
        .map(|u| u["PartitionKey"].clone())
        .collect();
    assert_eq!(keys, vec![json!("ok"), json!("after")]);
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
    let dir = std::env::temp_dir().join(format!("kpl-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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
    std::fs::remove_dir_all(&dir).unwrap();
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

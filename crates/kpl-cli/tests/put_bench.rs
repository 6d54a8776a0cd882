//! `kpl put` and `kpl bench`, run as a user runs them (no network: the embedded
//! simulator, or a loopback port nothing listens on).

mod common;

use common::kpl;
use serde_json::Value;

#[test]
fn bench_checks_exactly_once_and_reports_json() {
    let out = kpl(
        &["bench", "--records", "20000", "--shards", "3", "--json"],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["exactly_once"], true);
    assert_eq!(report["failures"], 0);
    assert_eq!(report["possibly_stored_twice"], 0);
    assert_eq!(report["records"], 20_000);
    assert!(report["user_records_per_kinesis_record"].as_f64().unwrap() > 10.0);
    for key in [
        "records_per_second",
        "mb_per_second",
        "latency_ms",
        "retries",
        "possibly_stored_twice",
        "failed_possibly_stored",
        "peak_memory_bytes",
    ] {
        assert!(!report[key].is_null(), "{key}");
    }
}

#[test]
fn bench_without_aggregation() {
    let out = kpl(
        &[
            "bench",
            "--records",
            "3000",
            "--no-aggregation",
            "--no-limits",
            "--json",
        ],
        "",
    );
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["exactly_once"], true);
    assert_eq!(report["user_records_per_kinesis_record"], 1.0);
}

#[test]
fn put_loses_nothing_when_the_service_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("kpl-put-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let failed = dir.join("failed.jsonl");
    let endpoint = format!("http://127.0.0.1:{port}");
    let big = "x".repeat(2_000);
    let input = format!("first\nsecond\n{big}\nthird\n");
    let out = kpl(
        &[
            "put",
            "--stream",
            "s",
            "--endpoint",
            &endpoint,
            "--region",
            "us-east-1",
            "--record-ttl",
            "300",
            "--max-user-record-size",
            "1000",
            "--quiet",
            "--failed",
            failed.to_str().unwrap(),
        ],
        &input,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("<stdin>:3:") && err.contains("bytes"), "{err}");
    let lines: Vec<Value> = std::fs::read_to_string(&failed)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "every record is in the failed file");
    let mut numbers: Vec<u64> = lines.iter().map(|l| l["Line"].as_u64().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, vec![1, 2, 3, 4]);
    for l in lines.iter().filter(|l| l["Line"] != 3) {
        assert!(!l["Attempts"].as_array().unwrap().is_empty(), "{l}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn put_needs_a_stream_and_json_fields_need_json() {
    let out = kpl(&["put"], "");
    assert!(!out.status.success());
    let out = kpl(&["put", "--stream", "s", "--pk-field", "id"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format json"));
}

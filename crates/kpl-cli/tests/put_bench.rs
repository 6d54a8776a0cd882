//! `kpl put` and `kpl bench`, run as a user runs them (no network: the embedded
//! simulator, or a loopback port nothing listens on).

mod common;

use common::kpl;
use kpl_tests::TempDir;
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
    // Not aggregated, a Kinesis record is the user record's data alone.
    assert_eq!(report["encoded_bytes_per_record"], 100.0);
}

/// The bench measures this machine's MD5 rate over 16 KiB blocks before its timed
/// part and gives its CPU figure also as a share of that floor: records per CPU
/// second ÷ (MD5 bytes per second ÷ the run's encoded bytes per record).
#[test]
fn bench_gives_its_cpu_figure_as_a_share_of_the_md5_floor() {
    let report = bench_json(&["--records", "50000", "--acknowledge-only"]);
    let floor = &report["md5_floor"];
    assert_eq!(floor["block_bytes"], 16_384, "{report}");
    let md5 = floor["md5_bytes_per_second"].as_f64().unwrap();
    assert!(md5 > 0.0, "{report}");
    assert!(
        floor["measured_seconds"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    // The whole measurement, copies of the blocks included, for a whole-process
    // figure to take off.
    assert!(
        floor["cpu_seconds"].as_f64().unwrap() >= floor["measured_seconds"].as_f64().unwrap(),
        "{report}"
    );
    // 100 B of data, a 16-character key of its own, and the protobuf fields around
    // them: more than the data, less than data, key and 20 B of framing.
    let per_record = report["encoded_bytes_per_record"].as_f64().unwrap();
    assert!(per_record > 100.0 && per_record < 136.0, "{report}");
    let floor_records = floor["records_per_second"].as_f64().unwrap();
    assert!(
        (floor_records - md5 / per_record).abs() <= floor_records * 1e-9,
        "{report}"
    );
    // 50,000 records take well over the 0.1 CPU s a per-record figure needs.
    let per_cpu_second = report["records_per_cpu_second"].as_f64().unwrap();
    let share = report["records_per_cpu_second_of_md5_floor"]
        .as_f64()
        .unwrap();
    assert!(
        (share - per_cpu_second / floor_records).abs() <= share * 1e-9,
        "{report}"
    );

    let out = kpl(&["bench", "--records", "50000", "--acknowledge-only"], "");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" of the MD5 floor"), "{text}");
    assert!(text.contains("md5 floor"), "{text}");
    assert!(text.contains("B per encoded record"), "{text}");
}

#[test]
fn put_loses_nothing_when_the_service_is_unreachable() {
    let dir = TempDir::new("put-unreachable");
    let failed = dir.join("failed.jsonl");
    let endpoint = kpl_tests::peers::dead_endpoint();
    let big = "x".repeat(2_000);
    let input = format!("first\nsecond\n{big}\nthird\n");
    let out = kpl(
        &kpl_tests::kpl::put_args(
            &endpoint,
            &[
                "--record-ttl",
                "300",
                "--max-user-record-size",
                "1000",
                "--quiet",
                "--failed",
                failed.to_str().unwrap(),
            ],
        ),
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
    let lines = kpl_tests::kpl::failed_lines(&failed);
    assert_eq!(lines.len(), 4, "every record is in the failed file");
    assert_eq!(kpl_tests::kpl::line_numbers(&lines), vec![1, 2, 3, 4]);
    for l in lines.iter().filter(|l| l["Line"] != 3) {
        assert!(!l["Attempts"].as_array().unwrap().is_empty(), "{l}");
    }
}

#[test]
fn put_needs_a_stream_and_json_fields_need_json() {
    let out = kpl(&["put"], "");
    assert!(!out.status.success());
    let out = kpl(&["put", "--stream", "s", "--pk-field", "id"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format json"));
}

fn bench_json(args: &[&str]) -> Value {
    let mut all = vec!["bench", "--json"];
    all.extend_from_slice(args);
    let out = kpl(&all, "");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bench_refuses_a_rate_that_is_not_a_positive_finite_number() {
    for rate in ["0", "-1", "-0", "NaN", "inf", "-inf", "fast"] {
        let out = kpl(&["bench", "--records", "3000", "--rate", rate], "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--rate {rate}: {err}");
        assert!(err.contains("--rate"), "--rate {rate}: {err}");
        assert!(!err.contains("panicked"), "--rate {rate}: {err}");
    }
}

/// Record n is offered no earlier than n / rate seconds after the start, whether
/// the records are made before or while putting.
#[test]
fn bench_offers_records_at_the_rate_asked() {
    for extra in [&[][..], &["--generate-while-putting"]] {
        let mut args = vec!["--records", "5", "--rate", "20", "--acknowledge-only"];
        args.extend_from_slice(extra);
        let report = bench_json(&args);
        let seconds = report["seconds"].as_f64().unwrap();
        assert!(
            seconds >= 4.0 / 20.0,
            "{extra:?}: 5 records at 20/s in {seconds} s"
        );
    }
}

#[test]
fn bench_says_exactly_once_only_of_the_acknowledged_records_when_some_failed() {
    // Ten times the shard's limit, failing what is throttled.
    let out = kpl(
        &[
            "bench",
            "--records",
            "3000",
            "--shards",
            "1",
            "--no-aggregation",
            "--rate-limit",
            "1000",
            "--fail-if-throttled",
        ],
        "",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let failures: u64 = text
        .split("failures ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(failures > 0, "{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("every record arrived"), "{text}");
    assert!(
        text.contains(&format!(
            "every acknowledged record arrived exactly once; {failures} failed"
        )),
        "{text}"
    );
}

#[test]
fn bench_gives_no_per_cpu_figure_for_a_run_too_short_to_measure() {
    let report = bench_json(&["--records", "1", "--acknowledge-only"]);
    let cpu = report["cpu_seconds"].as_f64().unwrap();
    if cpu < 0.1 {
        assert!(report["records_per_cpu_second"].is_null(), "{report}");
        assert!(report["cpu_seconds_per_million"].is_null(), "{report}");
        assert!(
            report["records_per_cpu_second_of_md5_floor"].is_null(),
            "{report}"
        );
        let out = kpl(&["bench", "--records", "1", "--acknowledge-only"], "");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("n/a (run too short"), "{text}");
        assert!(!text.contains("records per CPU second"), "{text}");
        assert!(!text.contains("of the MD5 floor"), "{text}");
    }
}

#[test]
fn bench_says_why_a_record_is_refused_once() {
    // A limit given is kept, by a flag or by a .properties file: --size does not
    // raise it.
    let dir = TempDir::new("bench-properties");
    let file = dir.join("kpl.properties");
    std::fs::write(&file, "# records of 1 MiB\nMaxUserRecordSize = 1048576\n").unwrap();
    let file = file.to_str().unwrap();
    for given in [
        ["--max-user-record-size", "1048576"],
        ["--kpl-properties", file],
    ] {
        let mut args = vec!["bench", "--records", "10", "--size", "2000000"];
        args.extend(given);
        let out = kpl(&args, "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{given:?}: {err}");
        assert_eq!(err.matches("record refused").count(), 1, "{err}");
        assert_eq!(err.matches("over the").count(), 1, "{err}");
    }
}

#[test]
fn bench_stops_quietly_with_141_when_standard_output_is_closed() {
    let mut child = common::command(&["bench", "--records", "2000", "--acknowledge-only"])
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert_eq!(err, "");
}

/// `--sim-latency` delays the embedded simulator's every answer: no record is
/// stored sooner; `--ordered` runs the ordered pipeline, exactly once.
#[test]
fn bench_sim_latency_delays_every_answer_and_ordered_runs_exactly_once() {
    let report = bench_json(&[
        "--records",
        "3000",
        "--key-space",
        "50",
        "--sim-latency",
        "300",
        "--ordered",
    ]);
    assert_eq!(report["sim_latency_ms"], 300);
    assert_eq!(report["ordered"], true);
    assert_eq!(report["exactly_once"], true);
    let p50 = report["latency_ms"]["p50"].as_f64().unwrap();
    assert!(p50 >= 300.0, "p50 {p50} ms under the simulator's latency");
}

/// `--size` over 1 MiB raises the embedded stream's record limit to fit, with no
/// other flag: records of 2 MB arrive exactly once, none retried (the limiter
/// paces them by the shard's bytes); over 10 MiB with the key is refused.
#[test]
fn bench_size_over_1_mib_raises_the_simulated_limit() {
    let report = bench_json(&["--records", "3", "--shards", "1", "--size", "2000000"]);
    assert_eq!(report["exactly_once"], true);
    assert_eq!(report["failures"], 0);
    assert_eq!(report["retries"], 0);
    // Counted until the last record is written: never over the limit.
    let bytes = report["capacity_used"]["bytes"].as_f64().unwrap();
    assert!(
        (0.5..=1.0).contains(&bytes),
        "{bytes} of the shards' byte limit"
    );
    let out = kpl(&["bench", "--records", "1", "--size", "10485760"], "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--size 10485760") && err.contains("at most 10485744"),
        "{err}"
    );
}

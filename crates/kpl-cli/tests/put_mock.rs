//! `kpl put` into kinesis-mock, read back with GetRecords.
//!
//! `#[ignore]`d in a plain `cargo test`; `cargo xtask ci` runs it with kinesis-mock up.

mod common;

use kpl_tests::kinesis::Kinesis;
use serde_json::json;

/// Creates `stream` (two shards) in kinesis-mock and runs `kpl put` of `input`
/// into it with `args`; returns the mock and what `kpl` wrote to standard error,
/// after checking that it succeeded.
fn put_into_mock(stream: &str, input: &str, args: &[&str]) -> (Kinesis, String) {
    let endpoint = kpl_tests::peers::kinesis_mock_endpoint();
    let mock = Kinesis::new(&endpoint);
    mock.create_stream(stream, 2).unwrap();
    let out = kpl_tests::kpl::run(
        common::command(&["put", "--stream", stream, "--endpoint", &endpoint])
            .args(["--region", "us-east-1", "--quiet"])
            .args(args),
        input,
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    (mock, err)
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn put_json_lines_into_kinesis_mock() {
    let stream = format!("cli-put-{}", std::process::id());
    let input: String = (0..300)
        .map(|i| {
            format!(
                "{}\n",
                json!({"id": format!("user-{}", i % 17), "msg": format!("hello {i}")})
            )
        })
        .collect();
    let (mock, err) = put_into_mock(
        &stream,
        &input,
        &[
            "--format",
            "json",
            "--pk-field",
            "id",
            "--data-field",
            "msg",
        ],
    );
    assert!(
        err.contains("300 sent, 300 acknowledged, 0 failed"),
        "{err}"
    );

    let seen = mock.stored_lines(&stream).unwrap();
    let mut expected: Vec<String> = (0..300).map(|i| format!("hello {i}")).collect();
    expected.sort();
    assert_eq!(
        seen, expected,
        "every line stored once, its data the --data-field string"
    );
}

/// `kpl put` with metrics on, against kinesis-mock and a loopback CloudWatch
/// stand-in: the KPL's names, units and dimensions arrive under the namespace
/// asked for, and a run shorter than the upload interval is not lost: its metrics
/// go in the last upload at shutdown.
#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn put_uploads_the_kpl_metrics_at_shutdown() {
    let cloudwatch = kpl_tests::cloudwatch::CloudWatchStandIn::start();
    let stream = format!("cli-metrics-{}", std::process::id());
    let input: String = (0..500).map(|i| format!("line {i}\n")).collect();
    let (mock, err) = put_into_mock(
        &stream,
        &input,
        &[
            "--metrics-level",
            "detailed",
            "--metrics-granularity",
            "shard",
            "--metrics-namespace",
            "KplRsCliTest",
            // Longer than the run: only the last upload, at shutdown, sends them.
            "--metrics-upload-delay",
            "600000",
            "--metrics-endpoint",
            cloudwatch.url(),
        ],
    );
    assert!(
        err.contains("500 sent, 500 acknowledged, 0 failed"),
        "{err}"
    );
    assert!(err.contains("uploads: 1 batches uploaded"), "{err}");

    let requests = cloudwatch.requests();
    assert!(!requests.is_empty(), "{err}");
    assert!(
        requests
            .iter()
            .all(|r| r.namespace == "KplRsCliTest" && r.signed)
    );
    let data = cloudwatch.data();
    let names: std::collections::BTreeSet<&str> = data.iter().map(|d| d.name.as_str()).collect();
    for name in [
        "UserRecordsReceived",
        "UserRecordsPending",
        "UserRecordsPut",
        "UserRecordsDataPut",
        "KinesisRecordsPut",
        "KinesisRecordsDataPut",
        // AllErrors and ErrorsByCode only come with errors: none here.
        "RetriesPerRecord",
        "BufferingTime",
        "RequestTime",
        "UserRecordsPerKinesisRecord",
        "KinesisRecordsPerPutRecordsRequest",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    // Units as the KPL's.
    let unit = |name: &str| data.iter().find(|d| d.name == name).unwrap().unit.clone();
    assert_eq!(unit("UserRecordsPut"), "Count");
    assert_eq!(unit("UserRecordsDataPut"), "Bytes");
    assert_eq!(unit("BufferingTime"), "Milliseconds");
    // Dimensions: all streams together, the stream, and each of its shards.
    let shards = mock.shards(&stream).unwrap();
    let shard_ids: Vec<&str> = shards
        .iter()
        .map(|s| s["ShardId"].as_str().unwrap())
        .collect();
    let put: Vec<_> = data.iter().filter(|d| d.name == "UserRecordsPut").collect();
    let global: f64 = put
        .iter()
        .filter(|d| d.dimensions.is_empty())
        .map(|d| d.sum)
        .sum();
    assert_eq!(global, 500.0, "every record counted once");
    let per_stream: f64 = put
        .iter()
        .filter(|d| d.dimensions == [("StreamName".to_owned(), stream.clone())])
        .map(|d| d.sum)
        .sum();
    assert_eq!(per_stream, 500.0);
    let mut per_shard = 0.0;
    for d in put.iter().filter(|d| d.dimension("ShardId").is_some()) {
        assert_eq!(d.dimension("StreamName"), Some(stream.as_str()));
        assert!(
            shard_ids.contains(&d.dimension("ShardId").unwrap()),
            "{d:?}"
        );
        per_shard += d.sum;
    }
    assert_eq!(per_shard, 500.0);
}

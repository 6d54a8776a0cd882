//! `kpl put` into kinesis-mock, read back with GetRecords.
//!
//! `#[ignore]`d in a plain `cargo test`; `cargo xtask ci` runs it with kinesis-mock up.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

/// One awsJson 1.1 call to the mock (signatures are not checked).
fn call(endpoint: &str, target: &str, body: Value) -> Value {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = body.to_string();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: Kinesis_20131202.{target}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=00\r\nX-Amz-Date: 20260101T000000Z\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{target}: {head}\n{body}");
    if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or(Value::Null)
    }
}

/// Creates `stream` (two shards) in kinesis-mock and runs `kpl put` of `input`
/// into it with `args`; returns the mock's endpoint and what `kpl` wrote to
/// standard error, after checking that it succeeded.
fn put_into_mock(stream: &str, input: &str, args: &[&str]) -> (String, String) {
    let endpoint = std::env::var("KPL_KINESIS_MOCK_ENDPOINT")
        .expect("KPL_KINESIS_MOCK_ENDPOINT: run through `cargo xtask ci`");
    call(
        &endpoint,
        "CreateStream",
        json!({"StreamName": stream, "ShardCount": 2}),
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kpl"))
        .args(["put", "--stream", stream, "--endpoint", &endpoint])
        .args(["--region", "us-east-1", "--quiet"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    (endpoint, err)
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
    let (endpoint, err) = put_into_mock(
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

    let mut seen = Vec::new();
    let shards = call(&endpoint, "ListShards", json!({"StreamName": stream}));
    for shard in shards["Shards"].as_array().unwrap() {
        let it = call(
            &endpoint,
            "GetShardIterator",
            json!({"StreamName": stream, "ShardId": shard["ShardId"], "ShardIteratorType": "TRIM_HORIZON"}),
        );
        let records = call(
            &endpoint,
            "GetRecords",
            json!({"ShardIterator": it["ShardIterator"], "Limit": 10000}),
        );
        for r in records["Records"].as_array().unwrap() {
            let data = STANDARD.decode(r["Data"].as_str().unwrap()).unwrap();
            for u in
                kpl::codec::deaggregate(r["PartitionKey"].as_str().unwrap(), None, &data).unwrap()
            {
                seen.push(String::from_utf8(u.data.to_vec()).unwrap());
            }
        }
    }
    seen.sort();
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
    let (endpoint, err) = put_into_mock(
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
    let shards = call(&endpoint, "ListShards", json!({"StreamName": stream}));
    let shard_ids: Vec<&str> = shards["Shards"]
        .as_array()
        .unwrap()
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

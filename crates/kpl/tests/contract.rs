//! The facade's contract, run as a user program would run it, against kinesis-mock:
//! on tokio with the default features, and on smol (built with
//! `--no-default-features --features smol,aws`: no tokio runtime in the build).
//! Each record is read back once.
//!
//! `#[ignore]`d in a plain `cargo test`; `cargo xtask ci` runs it with kinesis-mock
//! up (`KPL_KINESIS_MOCK_ENDPOINT`), once with each set of features.
//!
//! The stream is made and read back over plain HTTP by this file (kinesis-mock does
//! not check signatures), so the test needs no runtime or SDK of its own.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine;
use kpl::{Config, Producer, PutRecord};
use serde_json::{Value, json};

fn endpoint() -> String {
    std::env::var("KPL_KINESIS_MOCK_ENDPOINT").expect(
        "KPL_KINESIS_MOCK_ENDPOINT is not set: run through `cargo xtask ci` or \
         `cargo xtask kinesis-mock -- cargo test -p kpl -- --include-ignored`",
    )
}

/// One Kinesis API call over HTTP/1.1 (Connection: close).
fn call(target: &str, body: Value) -> Value {
    let url = endpoint();
    let authority = url.trim_start_matches("http://").trim_end_matches('/');
    let body = body.to_string();
    let mut s = TcpStream::connect(authority).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: {authority}\r\nX-Amz-Target: Kinesis_20131202.{target}\r\n\
         Content-Type: application/x-amz-json-1.1\r\nX-Amz-Date: 20260101T000000Z\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{target}: {head}\n{rest}");
    let rest = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    if rest.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&rest).unwrap()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
}

fn create_stream(name: &str, shards: u32) {
    call(
        "CreateStream",
        json!({"StreamName": name, "ShardCount": shards}),
    );
    for _ in 0..200 {
        let d = call("DescribeStreamSummary", json!({"StreamName": name}));
        if d["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE" {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{name} never became active");
}

/// Every user record stored in `name` (de-aggregated, kept only on the shard whose
/// range holds its hash key, as a KCL consumer does): data → times seen.
fn read_back(name: &str) -> HashMap<Vec<u8>, usize> {
    let shards = call("ListShards", json!({"StreamName": name}));
    let mut seen = HashMap::new();
    for shard in shards["Shards"].as_array().unwrap() {
        let range = |k: &str| -> kpl::codec::HashKey {
            kpl::codec::HashKey::from_decimal(shard["HashKeyRange"][k].as_str().unwrap()).unwrap()
        };
        let (start, end) = (range("StartingHashKey"), range("EndingHashKey"));
        let it = call(
            "GetShardIterator",
            json!({"StreamName": name, "ShardId": shard["ShardId"], "ShardIteratorType": "TRIM_HORIZON"}),
        );
        let mut iterator = it["ShardIterator"].as_str().map(str::to_owned);
        while let Some(i) = iterator {
            let page = call("GetRecords", json!({"ShardIterator": i, "Limit": 10000}));
            let records = page["Records"].as_array().unwrap();
            for r in records {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(r["Data"].as_str().unwrap())
                    .unwrap();
                let pk = r["PartitionKey"].as_str().unwrap();
                for u in kpl::deaggregate(pk, r["ExplicitHashKey"].as_str(), &data).unwrap() {
                    let k = u.hash_key().unwrap();
                    if start <= k && k <= end {
                        *seen.entry(u.data.to_vec()).or_default() += 1;
                    }
                }
            }
            if records.is_empty() || page["MillisBehindLatest"].as_u64() == Some(0) {
                break;
            }
            iterator = page["NextShardIterator"].as_str().map(str::to_owned);
        }
    }
    seen
}

/// The program of the contract, with more records: put, await each outcome, shut
/// down; then read everything back.
async fn contract(stream: &str) -> Result<(), Box<dyn std::error::Error>> {
    // Credentials come from the AWS chain (kinesis-mock takes any).
    let config = Config::builder()
        .region("us-east-1")
        .kinesis_endpoint(endpoint())
        .build()?;
    let producer = Producer::from_config(config).await?;
    let outcome = producer
        .put_record(stream, PutRecord::new("pk-1", b"data".to_vec()))
        .await?
        .await;
    assert!(outcome.is_success(), "{:?}", outcome.attempts);
    let records = (0..500)
        .map(|i| PutRecord::new(format!("pk-{i}"), format!("record {i}")))
        .collect();
    let pending = producer.put_records(stream, records).await?;
    for p in pending {
        let outcome = p?.await;
        assert!(outcome.is_success(), "{:?}", outcome.attempts);
        assert!(outcome.shard_id.is_some() && outcome.sequence_number.is_some());
    }
    producer.shutdown(Duration::from_secs(30)).await;
    Ok(())
}

fn check(stream: &str) {
    let seen = read_back(stream);
    assert_eq!(seen.get(&b"data"[..]), Some(&1));
    for i in 0..500 {
        assert_eq!(
            seen.get(format!("record {i}").as_bytes()),
            Some(&1),
            "record {i}"
        );
    }
    assert_eq!(seen.values().sum::<usize>(), 501, "nothing else stored");
}

fn credentials() {
    // The AWS chain reads these (kinesis-mock accepts any); set before any thread
    // of the producer exists.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        panic!(
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (any values): `cargo xtask ci` does"
        );
    }
}

#[cfg(feature = "tokio")]
#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn the_contract_on_tokio() {
    credentials();
    let stream = format!("contract-tokio-{}", std::process::id());
    create_stream(&stream, 2);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(contract(&stream))
        .unwrap();
    check(&stream);
}

#[cfg(all(feature = "smol", not(feature = "tokio")))]
#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn the_contract_on_smol_without_tokio() {
    credentials();
    let stream = format!("contract-smol-{}", std::process::id());
    create_stream(&stream, 2);
    smol::block_on(contract(&stream)).unwrap();
    check(&stream);
}

#[cfg(all(feature = "smol", not(feature = "tokio")))]
#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn the_contract_inside_async_std() {
    credentials();
    let stream = format!("contract-async-std-{}", std::process::id());
    create_stream(&stream, 2);
    async_std::task::block_on(contract(&stream)).unwrap();
    check(&stream);
}

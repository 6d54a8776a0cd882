//! The facade's contract, run as a user program would run it, against kinesis-mock:
//! on tokio with the default features, and on smol (built with
//! `--no-default-features --features smol,aws`: no tokio runtime in the build).
//! Each record is read back once.
//!
//! `#[ignore]`d in a plain `cargo test`; `cargo xtask ci` runs it with kinesis-mock
//! up (`KPL_KINESIS_MOCK_ENDPOINT`), once with each set of features.
//!
//! The stream is made and read back over plain HTTP by `kpl_tests::kinesis`
//! (kinesis-mock does not check signatures), so the test needs no runtime or SDK of
//! its own.

use std::collections::HashMap;
use std::time::Duration;

use kpl::{Config, Producer, PutRecord};
use kpl_tests::kinesis::Kinesis;

fn endpoint() -> String {
    kpl_tests::peers::kinesis_mock_endpoint()
}

fn create_stream(name: &str, shards: u32) {
    Kinesis::new(&endpoint())
        .create_stream(name, shards)
        .unwrap();
}

/// Every user record stored in `name` (de-aggregated, kept only on the shard whose
/// range holds its hash key, as a KCL consumer does): data → times seen.
fn read_back(name: &str) -> HashMap<Vec<u8>, usize> {
    let mut seen = HashMap::new();
    for data in Kinesis::new(&endpoint()).read_back(name).unwrap().records {
        *seen.entry(data).or_default() += 1;
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

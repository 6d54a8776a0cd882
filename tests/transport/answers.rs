//! A 200 to PutRecords that is not the service's answer (`{}`, an empty body, too
//! few results): the records may have been stored, and their outcomes say so,
//! through `AwsTransport` against a loopback server and through any transport.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kpl_codec::HashKey;
use kpl_producer::{Config, Producer, PutRecord};
use kpl_runtime::Runtime;
use kpl_transport::{
    AwsTransport, ListShardsPage, ListShardsRequest, PutRecordsRequest, PutRecordsResponse,
    ShardDescription, Transport, TransportError,
};

fn config() -> Config {
    Config::builder()
        .record_ttl(Duration::from_secs(5))
        .record_max_buffered_time(Duration::from_millis(1))
        .build()
        .unwrap()
}

/// Puts three records through `transport`: whether each outcome failed and says it
/// may have been stored.
fn outcomes(transport: Arc<dyn Transport>) -> Vec<(bool, bool, String)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let producer = Producer::builder(config(), transport).build(Runtime::tokio());
        let mut futures = Vec::new();
        for i in 0..3 {
            futures.push(
                producer
                    .put_record("s", PutRecord::new(format!("k{i}"), b"x".to_vec()))
                    .await
                    .unwrap(),
            );
        }
        producer.flush().await;
        let mut out = Vec::new();
        for f in futures {
            let r = f.await;
            out.push((
                !r.is_success(),
                r.may_have_been_stored(),
                format!("{:?}", r.attempts),
            ));
        }
        producer.shutdown(Duration::from_secs(1)).await;
        out
    })
}

/// A loopback Kinesis that lists one shard and answers every PutRecords with 200
/// and `put_answer`.
fn loopback(put_answer: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let (mut length, mut target) = (0usize, String::new());
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap_or(0);
                            } else if k.eq_ignore_ascii_case("x-amz-target") {
                                target = v.trim().to_owned();
                            }
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let answer = if target.ends_with("ListShards") {
                        format!(
                            "{{\"Shards\":[{{\"ShardId\":\"shardId-000000000000\",\"HashKeyRange\":{{\"StartingHashKey\":\"0\",\"EndingHashKey\":\"{}\"}},\"SequenceNumberRange\":{{\"StartingSequenceNumber\":\"1\"}}}}]}}",
                            HashKey::MAX
                        )
                    } else {
                        put_answer.to_owned()
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
                        answer.len()
                    );
                    if writer.write_all(head.as_bytes()).is_err()
                        || writer.write_all(answer.as_bytes()).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_200_without_results_may_have_stored_the_records_through_aws_transport() {
    for answer in ["{}", ""] {
        let port = loopback(answer);
        let transport = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(
                AwsTransport::builder()
                    .endpoint_url(format!("http://127.0.0.1:{port}"))
                    .region("us-east-1")
                    .static_credentials("test", "test")
                    .without_proxy()
                    .build(),
            )
            .unwrap();
        for (failed, maybe_stored, attempts) in outcomes(Arc::new(transport)) {
            assert!(failed, "{answer:?}: {attempts}");
            assert!(maybe_stored, "{answer:?}: {attempts}");
            assert!(attempts.contains("may have been stored"), "{attempts}");
        }
    }
}

/// Lists one shard; answers every PutRecords with no results at all.
struct NoResults;

#[async_trait]
impl Transport for NoResults {
    async fn list_shards(&self, _: ListShardsRequest) -> Result<ListShardsPage, TransportError> {
        Ok(ListShardsPage::new(
            vec![ShardDescription::new(
                "shardId-000000000000",
                HashKey::MIN,
                HashKey::MAX,
            )],
            None,
        ))
    }
    async fn put_records(
        &self,
        _: PutRecordsRequest,
    ) -> Result<PutRecordsResponse, TransportError> {
        Ok(PutRecordsResponse::new(Vec::new()))
    }
}

#[test]
fn a_response_without_a_result_per_record_may_have_stored_them_with_any_transport() {
    for (failed, maybe_stored, attempts) in outcomes(Arc::new(NoResults)) {
        assert!(failed, "{attempts}");
        assert!(maybe_stored, "{attempts}");
    }
}

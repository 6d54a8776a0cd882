//! A 200 to PutRecords that is not the service's answer (`{}`, an empty body, too
//! few results): the records may have been stored, and their outcomes say so,
//! through `AwsTransport` against a loopback server and through any transport.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kpl_codec::HashKey;
use kpl_producer::{Config, Producer, PutRecord};
use kpl_runtime::Runtime;
use kpl_tests::http::{Loopback, Response};
use kpl_tests::kinesis::one_shard_answer;
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
    Loopback::new(move |request| {
        if request.operation() == "ListShards" {
            Response::amz_json(one_shard_answer())
        } else {
            Response::amz_json(put_answer)
        }
    })
    .start()
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

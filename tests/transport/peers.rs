//! The two peers the suite runs against: kpl-sim, and kinesis-mock through the AWS SDK.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use bytes::Bytes;
use kpl_codec::HashKey;
use kpl_runtime::{Timer, TokioTimer};
use kpl_sim::Simulator;
use kpl_transport::{AwsTransport, Transport};

/// A record read back from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReadRecord {
    pub(crate) shard_id: String,
    pub(crate) sequence_number: String,
    pub(crate) partition_key: String,
    pub(crate) data: Bytes,
}

/// What the suite needs of a peer besides the transport: stream administration and
/// reading back.
#[async_trait]
pub(crate) trait Peer: Send + Sync {
    fn name(&self) -> &'static str;
    fn transport(&self) -> Arc<dyn Transport>;
    /// Creates a stream of a fresh name; returns (name, ARN).
    async fn create_stream(&self, prefix: &str, shards: usize) -> (String, String);
    async fn split(&self, stream: &str, shard_id: &str, at: HashKey);
    async fn read_all(&self, stream: &str) -> Vec<ReadRecord>;
    /// UpdateMaxRecordSize of the stream (name, ARN) to `kib`.
    async fn update_max_record_size(&self, stream: &str, arn: &str, kib: usize);
}

/// Runs `f` on a fresh two-thread tokio runtime (the AWS SDK needs tokio).
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn fresh(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) struct SimPeer {
    pub(crate) sim: Simulator,
}

impl SimPeer {
    pub(crate) fn new() -> Self {
        let timer: Arc<dyn Timer> = Arc::new(TokioTimer);
        Self {
            sim: Simulator::new(timer, 42),
        }
    }
}

#[async_trait]
impl Peer for SimPeer {
    fn name(&self) -> &'static str {
        "kpl-sim"
    }
    fn transport(&self) -> Arc<dyn Transport> {
        Arc::new(self.sim.clone())
    }
    async fn create_stream(&self, prefix: &str, shards: usize) -> (String, String) {
        let name = fresh(prefix);
        let arn = self.sim.create_stream(&name, shards).unwrap();
        (name, arn)
    }
    async fn split(&self, stream: &str, shard_id: &str, at: HashKey) {
        self.sim.split_shard(stream, shard_id, at).unwrap();
    }
    async fn update_max_record_size(&self, stream: &str, _arn: &str, kib: usize) {
        self.sim.update_max_record_size(stream, kib).unwrap();
    }
    async fn read_all(&self, stream: &str) -> Vec<ReadRecord> {
        self.sim
            .records(stream)
            .unwrap()
            .into_iter()
            .map(|r| ReadRecord {
                shard_id: r.shard_id,
                sequence_number: r.sequence_number,
                partition_key: r.partition_key,
                data: r.data,
            })
            .collect()
    }
}

pub(crate) struct MockPeer {
    admin: aws_sdk_kinesis::Client,
    transport: Arc<dyn Transport>,
    endpoint: String,
}

impl MockPeer {
    /// The kinesis-mock that `cargo xtask ci` (or `cargo xtask kinesis-mock -- …`)
    /// started.
    pub(crate) async fn connect() -> Self {
        let endpoint = kpl_tests::peers::kinesis_mock_endpoint();
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(&endpoint)
            .http_client(http)
            .build();
        // kinesis-mock is slow, and slower still while the whole test suite runs on two
        // cores: a request that times out may still have been stored, and its retry
        // would then store it twice (as with Kinesis itself). The suites check
        // routing and exactly-once delivery, not timeouts: give requests a minute.
        let transport = AwsTransport::builder()
            .endpoint_url(&endpoint)
            .region("us-east-1")
            .static_credentials("test", "test")
            .request_timeout(Duration::from_secs(60))
            .build()
            .await
            .unwrap();
        Self {
            admin: aws_sdk_kinesis::Client::from_conf(config),
            transport: Arc::new(transport),
            endpoint,
        }
    }

    /// The same peer, its transport on kpl-transport's async-io HTTP client (which
    /// runs under any executor, tokio's included).
    pub(crate) async fn with_async_io_client(mut self) -> Self {
        self.transport = Arc::new(self.async_io_transport().await);
        self
    }

    /// A transport to this peer over kpl-transport's async-io HTTP client, with the
    /// suites' minute-long request timeout.
    pub(crate) async fn async_io_transport(&self) -> AwsTransport {
        AwsTransport::builder()
            .http_runtime(kpl_transport::HttpRuntime::AsyncIo)
            .endpoint_url(&self.endpoint)
            .region("us-east-1")
            .static_credentials("test", "test")
            .request_timeout(Duration::from_secs(60))
            .build()
            .await
            .unwrap()
    }

    /// kinesis-mock's URL.
    #[allow(dead_code)]
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn wait_active(&self, stream: &str) {
        for _ in 0..200 {
            let summary = self
                .admin
                .describe_stream_summary()
                .stream_name(stream)
                .send()
                .await
                .unwrap();
            if summary
                .stream_description_summary()
                .is_some_and(|s| s.stream_status() == &StreamStatus::Active)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("stream {stream} did not become ACTIVE");
    }
}

#[async_trait]
impl Peer for MockPeer {
    fn name(&self) -> &'static str {
        "kinesis-mock"
    }
    fn transport(&self) -> Arc<dyn Transport> {
        self.transport.clone()
    }
    async fn create_stream(&self, prefix: &str, shards: usize) -> (String, String) {
        let name = fresh(prefix);
        self.admin
            .create_stream()
            .stream_name(&name)
            .shard_count(shards as i32)
            .send()
            .await
            .unwrap();
        self.wait_active(&name).await;
        let summary = self
            .admin
            .describe_stream_summary()
            .stream_name(&name)
            .send()
            .await
            .unwrap();
        let arn = summary
            .stream_description_summary()
            .map(|s| s.stream_arn().to_owned())
            .unwrap();
        (name, arn)
    }
    async fn split(&self, stream: &str, shard_id: &str, at: HashKey) {
        self.admin
            .split_shard()
            .stream_name(stream)
            .shard_to_split(shard_id)
            .new_starting_hash_key(at.to_string())
            .send()
            .await
            .unwrap();
        self.wait_active(stream).await;
    }
    async fn update_max_record_size(&self, stream: &str, arn: &str, kib: usize) {
        // The SDK this project locks predates UpdateMaxRecordSize: a raw call.
        let raw = kpl_tests::kinesis::Kinesis::new(&self.endpoint);
        let body = serde_json::json!({"StreamARN": arn, "MaxRecordSizeInKiB": kib});
        tokio::task::spawn_blocking(move || raw.call("UpdateMaxRecordSize", &body))
            .await
            .unwrap()
            .unwrap();
        self.wait_active(stream).await;
    }
    async fn read_all(&self, stream: &str) -> Vec<ReadRecord> {
        let shards = self
            .admin
            .list_shards()
            .stream_name(stream)
            .send()
            .await
            .unwrap();
        let mut out = Vec::new();
        for shard in shards.shards() {
            let mut iterator = self
                .admin
                .get_shard_iterator()
                .stream_name(stream)
                .shard_id(shard.shard_id())
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .unwrap()
                .shard_iterator()
                .map(str::to_owned);
            while let Some(it) = iterator {
                let page = self
                    .admin
                    .get_records()
                    .shard_iterator(it)
                    .limit(10_000)
                    .send()
                    .await
                    .unwrap();
                for r in page.records() {
                    out.push(ReadRecord {
                        shard_id: shard.shard_id().to_owned(),
                        sequence_number: r.sequence_number().to_owned(),
                        partition_key: r.partition_key().to_owned(),
                        data: Bytes::copy_from_slice(r.data().as_ref()),
                    });
                }
                iterator = if page.records().is_empty() {
                    None
                } else {
                    page.next_shard_iterator().map(str::to_owned)
                };
            }
        }
        out
    }
}

//! The producer end to end against kinesis-mock: the real aws-sdk-kinesis client on
//! tokio (the SDK's HTTP client) and on smol (kpl-transport's async-io client), records read back with GetRecords and de-aggregated with kpl-codec.
//!
//! `#[ignore]`d in a plain `cargo test`; `cargo xtask ci` runs them with kinesis-mock up.

#[allow(dead_code)]
#[path = "../transport/peers.rs"]
mod peers;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kpl_codec::{HashKey, deaggregate};
use kpl_producer::{Config, Producer, PutRecord, RecordFuture};
use kpl_runtime::Runtime;
use kpl_transport::{AwsTransport, ListShardsRequest, ShardDescription, StreamId, Transport};

use crate::peers::{MockPeer, Peer};

async fn all_shards(t: &dyn Transport, stream: &str) -> Vec<ShardDescription> {
    let page = t
        .list_shards(ListShardsRequest::First {
            stream: StreamId::parse(stream),
            open_only: false,
            max_results: None,
        })
        .await
        .unwrap();
    assert!(page.next_token.is_none());
    page.shards
}

/// Reads the stream back: data → (shard, count), user records outside their shard's
/// range dropped as a KCL consumer drops them.
async fn consumed(peer: &MockPeer, stream: &str) -> HashMap<Bytes, Vec<String>> {
    let shards = all_shards(&*peer.transport(), stream).await;
    let range: HashMap<_, _> = shards
        .iter()
        .map(|s| (s.shard_id.clone(), (s.starting_hash_key, s.ending_hash_key)))
        .collect();
    let mut out: HashMap<Bytes, Vec<String>> = HashMap::new();
    for r in peer.read_all(stream).await {
        let (start, end) = range[&r.shard_id];
        for u in deaggregate(&r.partition_key, None, &r.data).unwrap() {
            let k = u.hash_key().unwrap();
            if start <= k && k <= end {
                out.entry(Bytes::copy_from_slice(u.data))
                    .or_default()
                    .push(r.shard_id.clone());
            }
        }
    }
    out
}

/// The KPL defaults, with time for a slow kinesis-mock (see `MockPeer::connect`):
/// records live long enough to outlast the one-minute request timeout.
fn config() -> Config {
    Config::builder()
        .request_timeout(Duration::from_secs(60))
        .record_ttl(Duration::from_secs(300))
        .build()
        .unwrap()
}

struct Sent {
    partition_key: String,
    data: Bytes,
    future: RecordFuture,
}

async fn put_range(p: &Producer, stream: &str, from: usize, to: usize, seed: u64) -> Vec<Sent> {
    let mut sent = Vec::new();
    for i in from..to {
        let partition_key = format!(
            "{:x}",
            HashKey::from_partition_key(&format!("{seed}-{i}")).get() as u64
        );
        let data = Bytes::from(format!("record {i:06} of {stream}"));
        let future = p
            .put_record(stream, PutRecord::new(partition_key.clone(), data.clone()))
            .await
            .unwrap();
        sent.push(Sent {
            partition_key,
            data,
            future,
        });
    }
    sent
}

/// The runtime a test's producer runs on. On smol the producer's transport is the
/// AWS SDK over kpl-transport's async-io HTTP client and its pipeline runs on smol's
/// executor, with no tokio runtime in reach; the test's own setup and read-back
/// (the SDK's admin client) run on a tokio runtime of their own threads.
#[derive(Clone, Copy, Debug)]
enum On {
    Tokio,
    Smol,
}

struct Env {
    on: On,
    peer: Arc<MockPeer>,
    admin: tokio::runtime::Handle,
}

impl Env {
    /// Runs `f` where the admin client works (the tokio runtime).
    async fn admin<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> T {
        self.admin.spawn(f).await.expect("admin task")
    }

    async fn producer(&self) -> Producer {
        match self.on {
            On::Tokio => Producer::builder(config(), self.peer.transport()).build(Runtime::tokio()),
            On::Smol => {
                let transport = self.peer.async_io_transport().await;
                Producer::builder(config(), Arc::new(transport)).build(Runtime::smol())
            }
        }
    }

    async fn sleep(&self, d: Duration) {
        match self.on {
            On::Tokio => tokio::time::sleep(d).await,
            On::Smol => {
                async_io::Timer::after(d).await;
            }
        }
    }

    fn spawn<T: Send + 'static>(
        &self,
        f: impl Future<Output = T> + Send + 'static,
    ) -> std::pin::Pin<Box<dyn Future<Output = T> + Send>> {
        match self.on {
            On::Tokio => {
                let h = tokio::spawn(f);
                Box::pin(async move { h.await.expect("task") })
            }
            On::Smol => Box::pin(smol::spawn(f)),
        }
    }
}

/// Runs `test` with its producer on `on`.
fn run<F: Future<Output = ()>>(on: On, test: impl FnOnce(Env) -> F) {
    let admin = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let peer = Arc::new(admin.block_on(MockPeer::connect()));
    let env = Env {
        on,
        peer,
        admin: admin.handle().clone(),
    };
    match on {
        On::Tokio => admin.block_on(test(env)),
        On::Smol => smol::block_on(test(env)),
    }
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn ten_thousand_records_over_four_shards_each_once_on_its_predicted_shard() {
    run(On::Tokio, ten_thousand);
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn ten_thousand_records_on_smol_over_the_async_io_client() {
    run(On::Smol, ten_thousand);
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn a_split_while_records_flow_loses_nothing() {
    run(On::Tokio, split_while_flowing);
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn a_split_while_records_flow_on_smol_loses_nothing() {
    run(On::Smol, split_while_flowing);
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn records_up_to_9_mib_arrive_once_on_a_stream_whose_limit_was_raised() {
    run(On::Tokio, large_records);
}

/// A 9 MiB record, then 100 B records with 5 MiB ones among them, on a stream whose
/// maximum record size was raised to 10 MiB (UpdateMaxRecordSize): each read back
/// exactly once.
async fn large_records(env: Env) {
    const MIB: usize = 1024 * 1024;
    let peer = env.peer.clone();
    let (stream, arn) = env
        .admin(async move { peer.create_stream("producer-large", 2).await })
        .await;
    let raw = kpl_tests::kinesis::Kinesis::new(env.peer.endpoint());
    env.admin(async move {
        tokio::task::spawn_blocking(move || {
            raw.call(
                "UpdateMaxRecordSize",
                &serde_json::json!({"StreamARN": arn, "MaxRecordSizeInKiB": 10_240}),
            )
        })
        .await
    })
    .await
    .expect("a call")
    .expect("UpdateMaxRecordSize");
    let config = Config::builder()
        .request_timeout(Duration::from_secs(60))
        .record_ttl(Duration::from_secs(300))
        .max_user_record_size(kpl_codec::MAX_RECORD_SIZE_CEILING)
        .build()
        .unwrap();
    let producer = Producer::builder(config, env.peer.transport()).build(Runtime::tokio());
    let sizes =
        std::iter::once(9 * MIB).chain((0..120).map(|i| if i % 40 == 20 { 5 * MIB } else { 100 }));
    let mut sent = Vec::new();
    for (i, size) in sizes.enumerate() {
        let mut data = format!("large {i:04} ").into_bytes();
        data.resize(size, b'.');
        let data = Bytes::from(data);
        let future = producer
            .put_record(&stream, PutRecord::new(format!("key-{i}"), data.clone()))
            .await
            .unwrap();
        sent.push((data, future));
    }
    producer.flush().await;
    let (peer, name) = (env.peer.clone(), stream.clone());
    let seen = env.admin(async move { consumed(&peer, &name).await }).await;
    for (data, future) in &sent {
        let r = future.wait(Duration::ZERO).expect("resolved by the flush");
        assert!(r.is_success(), "{} bytes: {:?}", data.len(), r.attempts);
        assert_eq!(
            seen.get(data).map(Vec::len),
            Some(1),
            "{} bytes",
            data.len()
        );
    }
    assert_eq!(seen.values().map(Vec::len).sum::<usize>(), sent.len());
}

async fn ten_thousand(env: Env) {
    let started = Instant::now();
    let peer = env.peer.clone();
    let (stream, _) = env
        .admin(async move { peer.create_stream("producer", 4).await })
        .await;
    let producer = env.producer().await;
    let sent = put_range(&producer, &stream, 0, 10_000, 1).await;
    producer.flush().await;
    let (peer, name) = (env.peer.clone(), stream.clone());
    let shards = env
        .admin(async move { all_shards(&*peer.transport(), &name).await })
        .await;
    let (peer, name) = (env.peer.clone(), stream.clone());
    let seen = env.admin(async move { consumed(&peer, &name).await }).await;
    for s in &sent {
        let r = s
            .future
            .wait(Duration::ZERO)
            .expect("resolved by the flush");
        assert!(r.is_success(), "{:?}", r.attempts);
        let key = HashKey::from_partition_key(&s.partition_key);
        let predicted = shards
            .iter()
            .find(|x| x.starting_hash_key <= key && key <= x.ending_hash_key)
            .unwrap();
        assert_eq!(
            seen.get(&s.data).map(Vec::as_slice),
            Some(&[predicted.shard_id.clone()][..])
        );
        assert_eq!(r.shard_id.as_deref(), Some(predicted.shard_id.as_str()));
    }
    let total: usize = seen.values().map(Vec::len).sum();
    assert_eq!(total, 10_000, "nothing else was stored");
    println!(
        "10,000 records through kinesis-mock on {:?} in {} ms",
        env.on,
        started.elapsed().as_millis()
    );
}

async fn split_while_flowing(env: Env) {
    let peer = env.peer.clone();
    let (stream, _) = env
        .admin(async move { peer.create_stream("producer-split", 2).await })
        .await;
    let producer = env.producer().await;
    let mut sent = put_range(&producer, &stream, 0, 1_500, 2).await;
    env.sleep(Duration::from_millis(200)).await;
    let (peer, name) = (env.peer.clone(), stream.clone());
    let shards = env
        .admin(async move { all_shards(&*peer.transport(), &name).await })
        .await;
    let s0 = shards[0].clone();
    let middle = HashKey::new(s0.starting_hash_key.get() / 2 + s0.ending_hash_key.get() / 2);
    let flowing = {
        let p = producer.clone();
        let stream = stream.clone();
        env.spawn(async move { put_range(&p, &stream, 1_500, 3_000, 2).await })
    };
    let (peer, name) = (env.peer.clone(), stream.clone());
    env.admin(async move { peer.split(&name, &s0.shard_id, middle).await })
        .await;
    sent.extend(flowing.await);
    sent.extend(put_range(&producer, &stream, 3_000, 4_000, 2).await);
    producer.flush().await;
    let (peer, name) = (env.peer.clone(), stream.clone());
    let seen = env.admin(async move { consumed(&peer, &name).await }).await;
    for s in &sent {
        let r = s
            .future
            .wait(Duration::ZERO)
            .expect("resolved by the flush");
        assert!(r.is_success(), "{:?}", r.attempts);
        assert_eq!(
            seen.get(&s.data).map(Vec::len),
            Some(1),
            "{}",
            s.partition_key
        );
    }
    let total: usize = seen.values().map(Vec::len).sum();
    assert_eq!(total, 4_000);
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn a_credential_provider_blip_delays_records_and_loses_none() {
    run(On::Tokio, |env| async move {
        let peer = env.peer.clone();
        let (stream, _) = env
            .admin(async move { peer.create_stream("producer-credentials", 1).await })
            .await;
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    kpl_tests::credentials::FailingCredentials::blip(2),
                ),
            )
            .build();
        let transport = AwsTransport::builder()
            .sdk_config(sdk)
            .endpoint_url(env.peer.endpoint())
            .region("us-east-1")
            .request_timeout(Duration::from_secs(60))
            .build()
            .await
            .unwrap();
        let producer = Producer::builder(config(), Arc::new(transport)).build(Runtime::tokio());
        let sent = put_range(&producer, &stream, 0, 20, 3).await;
        producer.flush().await;
        let (peer, name) = (env.peer.clone(), stream.clone());
        let seen = env.admin(async move { consumed(&peer, &name).await }).await;
        let mut retried = 0;
        for s in &sent {
            let r = s
                .future
                .wait(Duration::ZERO)
                .expect("resolved by the flush");
            assert!(r.is_success(), "{:?}", r.attempts);
            assert!(
                !r.may_be_duplicated(),
                "nothing was sent without credentials"
            );
            retried += usize::from(
                r.attempts
                    .iter()
                    .any(|a| a.error_code().is_some_and(|c| c == "CredentialsError")),
            );
            assert_eq!(seen.get(&s.data).map(Vec::len), Some(1));
        }
        assert!(retried > 0, "the blip was seen and retried");
    });
}

/// `Producer::from_config` with metrics on uploads them to `CloudwatchEndpoint`
/// (here the loopback stand-in) every `MetricsUploadDelay` and at shutdown, while
/// its records go to kinesis-mock; a CloudWatch brownout (500s through the SDK's
/// retries) is retried at the next interval, and nothing is counted twice.
#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn from_config_uploads_metrics_to_the_cloudwatch_endpoint() {
    use kpl_producer::{MetricsGranularity, MetricsLevel};
    use kpl_tests::cloudwatch::CloudWatchStandIn;
    run(On::Tokio, |env| async move {
        let peer = env.peer.clone();
        let (stream, _) = env
            .admin(async move { peer.create_stream("producer-metrics", 2).await })
            .await;
        let cloudwatch = CloudWatchStandIn::start();
        let config = config()
            .to_builder()
            .region("us-east-1")
            .kinesis_endpoint(env.peer.endpoint())
            .metrics_level(MetricsLevel::Summary)
            .metrics_granularity(MetricsGranularity::Stream)
            .metrics_namespace("KplRsProducerTest")
            .metrics_upload_delay(Duration::from_secs(1))
            .cloudwatch_endpoint(cloudwatch.url())
            .build()
            .unwrap();
        let producer = Producer::from_config(config).await.unwrap();
        // The first upload fails on all of the SDK's three attempts.
        for _ in 0..3 {
            cloudwatch.fail_next(500, "InternalServiceFault");
        }
        let mut sent = Vec::new();
        for second in 0..3 {
            sent.extend(put_range(&producer, &stream, second * 100, second * 100 + 100, 9).await);
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        producer.shutdown(Duration::from_secs(60)).await;
        for s in &sent {
            assert!(s.future.wait(Duration::ZERO).unwrap().is_success());
        }
        let stats = producer.metrics_upload_stats();
        assert_eq!(stats.failed_attempts, 1, "{stats:?}");
        assert_eq!(stats.dropped, 0);
        assert!(stats.uploaded >= 2, "periodic and last uploads: {stats:?}");
        let requests = cloudwatch.requests();
        assert!(requests.iter().all(|r| r.namespace == "KplRsProducerTest"));
        let data = cloudwatch.data();
        let put = |dims: usize| -> f64 {
            data.iter()
                .filter(|d| d.name == "UserRecordsPut" && d.dimensions.len() == dims)
                .map(|d| d.sum)
                .sum()
        };
        assert_eq!(put(0), 300.0, "each record counted once");
        assert_eq!(put(1), 300.0);
        assert!(
            data.iter()
                .filter(|d| d.dimensions.len() == 1)
                .all(|d| d.dimension("StreamName") == Some(stream.as_str())),
        );
        // Summary level: no per-shard metrics, no detailed-only names.
        assert!(data.iter().all(|d| d.dimension("ShardId").is_none()));
        assert!(data.iter().any(|d| d.name == "BufferingTime"));
        assert!(!data.iter().any(|d| d.name == "UserRecordsPending"));
    });
}

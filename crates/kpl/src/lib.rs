//! kpl-rs: a Kinesis Producer Library for Rust, as a plain library on any async
//! runtime.
//!
//! Put user records; the producer aggregates them per predicted shard into the KPL's
//! aggregated format, rate-limits per shard, collects PutRecords requests, retries
//! per record within each record's time to live, and resolves every accepted record
//! exactly once with its full attempt history.
//!
//! ```no_run
//! use std::time::Duration;
//! use kpl::{Config, Producer, PutRecord};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::builder()
//!     .region("us-east-1")
//!     .kinesis_endpoint("http://127.0.0.1:4566")
//!     .build()?;
//! let producer = Producer::from_config(config).await?; // AWS transport, runtime from the features
//! let outcome = producer
//!     .put_record("my-stream", PutRecord::new("pk-1", b"data".to_vec()))
//!     .await?
//!     .await;
//! assert!(outcome.is_success());
//! producer.shutdown(Duration::from_secs(30)).await;
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! | feature | default | what it gives |
//! |---|---|---|
//! | `tokio` | yes | the producer on tokio; [`SyncProducer`]; with `aws`, the AWS SDK's HTTP client |
//! | `smol` | | the producer on smol (async-std too); with `aws`, an HTTP client on async-io: no tokio runtime |
//! | `aws` | yes | the AWS transport (aws-sdk-kinesis) and [`Producer::from_config`] |
//! | `sim` | | [`sim`]: an in-process Kinesis with shard limits, resharding and faults, for tests |
//! | `metrics` | | [`MetricsExporter`]: the KPL's metrics through the `metrics` crate |
//! | `cloudwatch` | | [`CloudWatchUploader`]: metrics uploaded to CloudWatch, by [`Producer::from_config`] when `MetricsLevel` is not `none` |
//!
//! On smol: `kpl = { version = "0.1", default-features = false, features = ["smol", "aws"] }`.
//!
//! # Puts
//!
//! One call per need, under the same names on [`Producer`] (async) and
//! [`SyncProducer`] (blocking, feature `tokio`):
//!
//! | need | call | gives |
//! |---|---|---|
//! | one record, waiting for room | [`Producer::put_record`] | its [`RecordFuture`] |
//! | many records, waiting for room | [`Producer::put_records`] | a [`RecordFuture`] (or the record's [`PutError`]) each, in order |
//! | never wait | [`Producer::try_put_records`] | [`Admitted`]: a [`RecordFuture`] per record let in, the rest untouched, and the [`Hold`] that kept it back |
//! | outcomes in bulk | [`Producer::try_put_records_to`] | [`Admitted`] with a [`RecordId`] per record; the outcomes in batches on an [`Outcomes`] queue |
//! | outcomes in bulk, records the caller keeps | [`Producer::try_put_record_refs_to`] | the same, for [`PutRecordRef`]s: keys and data copied once, when admitted, with no allocation per record on the way in |
//!
//! [`Producer::wait_for_room`] waits for what held records back; with it, the `try_`
//! calls are the waiting ones in steps.
//!
//! # Outcomes
//!
//! Every accepted record resolves exactly once: [`RecordResult::is_success`], the
//! shard and sequence number it was stored with, and every attempt
//! ([`Attempt`]: when, how long, the error code and message, and whether a request
//! that got no answer may have stored it all the same). A failed record is data,
//! never an error of the call that put it: a call returns [`PutError`] only for a
//! record refused before it was accepted (invalid, or the producer shutting down).
//!
//! # Cancel safety
//!
//! - [`Producer::put_record`] and [`Producer::put_records`] wait only while records
//!   are held back ([`Hold`]: the outstanding caps, the stream's backlog, its
//!   pipeline's intake). Dropped while waiting, they put nothing more:
//!   records accepted before the drop go on to their outcomes (their futures are
//!   dropped with the call, so nobody hears of them; use
//!   [`Producer::try_put_records_to`] with an [`Outcomes`] queue to keep them in
//!   view), records not yet accepted were never put.
//! - A [`RecordFuture`] may be dropped at any time: the record is still sent; its
//!   outcome is dropped.
//! - [`Producer::flush`], [`Producer::flush_stream`] and [`Producer::shutdown`] may be
//!   dropped: the records go on; a dropped `shutdown` has already stopped new
//!   records being accepted.
//! - [`Producer::from_config`] dropped before it returns leaves nothing running.
//!
//! # Consumers
//!
//! [`codec`] reads the aggregated format without the rest: [`deaggregate`] a Kinesis
//! record as GetRecords or a Lambda event gives it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use kpl_producer::{
    Admitted, Attempt, AttemptError, Attempts, Config, ConfigBuilder, ConfigError, ConfigErrorKind,
    ErrorCode, Event, EventSink, Hold, IgnoredKey, Metric, MetricName, MetricsBatch,
    MetricsGranularity, MetricsLevel, MetricsRecorder, MetricsUploader, OutcomeBatch, Outcomes,
    Producer, ProducerBuilder, ProxySettings, PutError, PutErrorKind, PutRecord, PutRecordRef,
    RecordFuture, RecordId, RecordResult, Summary, UploadError, UploadFuture, UploadStats,
    VerifyStats, codes,
};

#[cfg(feature = "tokio")]
pub use kpl_producer::{SyncProducer, SyncProducerBuilder};

#[cfg(feature = "metrics")]
pub use kpl_producer::MetricsExporter;

#[cfg(all(feature = "tokio", feature = "aws"))]
pub use kpl_producer::{SyncBuildError, SyncBuildErrorKind};

pub use kpl_codec::{DecodeError, DecodeErrorKind, deaggregate};

#[cfg(feature = "aws")]
pub use kpl_transport::{
    AwsTransport, AwsTransportBuilder, BuildError, BuildErrorKind, HttpRuntime, Proxy,
};

#[cfg(feature = "cloudwatch")]
pub use kpl_producer::CloudWatchUploader;
#[cfg(feature = "cloudwatch")]
pub use kpl_transport::{
    CloudWatch, CloudWatchBuilder, MetricDatum, PutMetricDataError, PutMetricDataErrorKind,
};

pub use bytes::Bytes;
pub use kpl_runtime::Runtime;

/// The aggregated-record format, hashing and Kinesis limits (the `kpl-codec`
/// crate): usable alone by consumers.
pub mod codec {
    pub use kpl_codec::*;
}

/// The runtime boundary (the `kpl-runtime` crate): executors, timers, a virtual
/// clock for tests.
pub mod runtime {
    pub use kpl_runtime::*;
}

/// The `Transport` trait the producer sends through, its requests and typed errors
/// (the `kpl-transport` crate).
pub mod transport {
    pub use kpl_producer::transport::*;
}

/// An in-process Kinesis for tests (the `kpl-sim` crate): hash ranges, shard
/// limits, resharding, seeded faults, real or virtual time.
#[cfg(feature = "sim")]
pub mod sim {
    pub use kpl_sim::*;
}

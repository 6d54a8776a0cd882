//! The kpl-rs producer: everything the AWS KPL does, as a plain library on any async
//! runtime.
//!
//! - [`Producer`]: one put per need: `put_record` waits for room and gives a future of
//!   the record's [`RecordResult`] (success, shard, sequence number, every
//!   [`Attempt`]); `put_records` the same for a batch; `try_put_records` never waits
//!   and returns what it let in as [`Admitted`] (each record's future, the rest, and
//!   the [`Hold`] that kept them back); `try_put_records_to` the same with the
//!   outcomes in batches on an [`Outcomes`] queue. Then `flush`, `shutdown`;
//!   backpressure by outstanding records and bytes.
//! - [`SyncProducer`] (feature `tokio`, on by default): the same for code without an
//!   async runtime.
//! - [`Config`]: the KPL's settings, defaults and bounds, or a KPL `.properties` file.
//! - [`EventSink`]: the pipeline's one event hook, for metrics.
//!
//! # The pipeline (one per stream)
//!
//! put → predict the shard (MD5 of the partition key, or the explicit hash key,
//! against the shard map) → aggregate per predicted shard (records of different
//! shards are never aggregated together; records whose shard is unknown go alone) →
//! limit per shard (`rate_limit`% of 1,000 records/s and 1 MiB/s, slowed by throttle
//! reports) → collect into PutRecords requests (500 entries, 5 MiB, 256 KiB per shard,
//! earliest deadline) → send (as many requests and bytes as the stream's congestion
//! window allows, at most `max_connections` requests, each with a timeout that fits
//! its size and the measured delivery rate) → retry or resolve (see
//! `docs/retries.md`). The time to live is enforced at every stage.
//!
//! # Delivery on a slow or failing path
//!
//! `put_record` waits (and `try_put_records` hands the records back, held by
//! [`Hold::Backlog`]) when
//! a stream holds more than it can store in a quarter of the time to live. A request
//! that timed out may have been stored: the outcome says so
//! ([`RecordResult::may_be_duplicated`], [`RecordResult::may_have_been_stored`]), and
//! an answer that comes after the timeout still settles the records not resent yet.
//! See `docs/delivery.md`. The stages
//! are the sans-IO cores of `kpl-reducer`, `kpl-limiter` and `kpl-shardmap`, driven by
//! one task per stream through the `kpl-runtime` traits.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use kpl_producer::{Config, Producer, PutRecord};
//! use kpl_runtime::Simulation;
//! use kpl_sim::Simulator;
//!
//! // An in-process Kinesis on virtual time; in production, use
//! // `kpl_transport::AwsTransport` and `kpl_runtime::Runtime::tokio()`.
//! let sim = Simulation::new();
//! let kinesis = Simulator::new(sim.runtime().timer().clone(), 1);
//! kinesis.create_stream("events", 4).unwrap();
//! let producer = Producer::builder(Config::default(), Arc::new(kinesis.clone())).build(sim.runtime());
//!
//! let results = sim.block_on(async move {
//!     let mut pending = Vec::new();
//!     for i in 0..1000 {
//!         let data = Bytes::from(format!("event {i}"));
//!         pending.push(producer.put_record("events", PutRecord::new(format!("user-{i}"), data)).await.unwrap());
//!     }
//!     producer.flush().await;
//!     futures::future::join_all(pending).await
//! }).unwrap();
//! assert!(results.iter().all(|r| r.is_success()));
//! assert_eq!(kinesis.records("events").unwrap().len() < 1000, true); // aggregated
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod accounting;
mod completers;
mod config;
mod driver;
mod events;
mod fasthash;
mod metrics;
mod pipeline;
mod producer;
mod result;
#[cfg(feature = "tokio")]
mod sync;
mod upload;
mod written;

pub use config::{Config, ConfigBuilder, ConfigError, ConfigErrorKind, IgnoredKey, ProxySettings};
pub use events::{Event, EventSink, Summary};
/// The transport crate the producer sends through (`kpl-transport`): the
/// `Transport` trait, its requests and typed errors.
pub use kpl_transport as transport;
#[cfg(feature = "metrics")]
pub use metrics::MetricsExporter;
pub use metrics::{Metric, MetricName, MetricsGranularity, MetricsLevel, MetricsRecorder};
pub use pipeline::VerifyStats;
pub use producer::{
    Admitted, Hold, Producer, ProducerBuilder, PutError, PutErrorKind, PutRecord, PutRecordRef,
};
pub use result::{
    Attempt, AttemptError, Attempts, ErrorCode, OutcomeBatch, Outcomes, RecordFuture, RecordId,
    RecordResult, codes,
};
#[cfg(all(feature = "tokio", feature = "aws"))]
pub use sync::{SyncBuildError, SyncBuildErrorKind};
#[cfg(feature = "tokio")]
pub use sync::{SyncProducer, SyncProducerBuilder};
#[cfg(feature = "cloudwatch")]
pub use upload::CloudWatchUploader;
pub use upload::{MetricsBatch, MetricsUploader, UploadError, UploadFuture, UploadStats};

//! The blocking facade: `SyncProducer`.

use std::sync::Arc;
use std::time::Duration;

use kpl_runtime::{Runtime, TokioExecutor, TokioTimer};
use kpl_transport::Transport;

use crate::config::Config;
use crate::events::EventSink;
use crate::metrics::{Metric, MetricName};
use crate::pipeline::VerifyStats;
use crate::producer::{Admitted, Producer, ProducerBuilder, PutError, PutRecord, PutRecordRef};
use crate::result::{Outcomes, RecordFuture, RecordId};
use crate::upload::{MetricsUploader, UploadStats};

/// A producer for code without an async runtime: the async [`Producer`] runs on a
/// background thread with a tokio runtime of its own.
///
/// It has [`Producer`]'s methods under the same names, blocking where those are
/// `async`: [`put_record`](Self::put_record), [`put_records`](Self::put_records),
/// [`try_put_records`](Self::try_put_records),
/// [`try_put_records_to`](Self::try_put_records_to), [`wait_for_room`](Self::wait_for_room),
/// [`flush`](Self::flush), [`flush_stream`](Self::flush_stream),
/// [`shutdown`](Self::shutdown), [`metrics`](Self::metrics),
/// [`metrics_upload_stats`](Self::metrics_upload_stats) and the rest; the flushes
/// also come with a timeout ([`flush_timeout`](Self::flush_timeout),
/// [`flush_stream_timeout`](Self::flush_stream_timeout)).
///
/// `put_record` is thread-safe and returns a [`RecordFuture`] whose
/// [`wait`](RecordFuture::wait) blocks up to a timeout. Dropping it (or
/// [`shutdown`](Self::shutdown)) shuts the producer down as [`Producer::shutdown`] does.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use bytes::Bytes;
/// use kpl_producer::{Config, PutRecord, SyncProducer};
/// use kpl_sim::Simulator;
///
/// # let timer: Arc<dyn kpl_runtime::Timer> = Arc::new(kpl_runtime::VirtualClock::new());
/// # let kinesis = Simulator::new(timer, 1);
/// # kinesis.create_stream("events", 1).unwrap();
/// let producer = SyncProducer::new(Config::default(), Arc::new(kinesis.clone()))?;
/// let pending = producer.put_record("events", PutRecord::new("k", Bytes::from_static(b"v")))?;
/// assert!(producer.flush_timeout(Duration::from_secs(5)));
/// let result = pending.wait(Duration::from_secs(5)).expect("resolved by the flush");
/// assert!(result.is_success());
/// producer.shutdown(Duration::from_secs(5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SyncProducer {
    producer: Option<Producer>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for SyncProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncProducer").finish_non_exhaustive()
    }
}

/// Builds a [`SyncProducer`], as [`ProducerBuilder`](crate::ProducerBuilder) builds a
/// [`Producer`].
#[derive(Debug)]
pub struct SyncProducerBuilder {
    /// What it builds inside the background runtime.
    inner: ProducerBuilder,
}

impl SyncProducerBuilder {
    /// Receives the pipeline's events, as
    /// [`ProducerBuilder::event_sink`](crate::ProducerBuilder::event_sink).
    pub fn event_sink(self, sink: Arc<dyn EventSink>) -> Self {
        Self {
            inner: self.inner.event_sink(sink),
        }
    }

    /// Uploads the KPL's metrics to `uploader`, as
    /// [`ProducerBuilder::metrics_uploader`](crate::ProducerBuilder::metrics_uploader).
    pub fn metrics_uploader(self, uploader: Arc<dyn MetricsUploader>) -> Self {
        Self {
            inner: self.inner.metrics_uploader(uploader),
        }
    }

    /// Starts the background runtime and the producer.
    pub fn build(self) -> std::io::Result<SyncProducer> {
        Ok(SyncProducer::start(background_runtime()?, self))
    }
}

impl SyncProducer {
    /// Starts the background runtime and the producer.
    pub fn new(config: Config, transport: Arc<dyn Transport>) -> std::io::Result<Self> {
        Self::builder(config, transport).build()
    }

    /// A builder for a producer with these settings, sending through `transport`
    /// (with an event sink or a metrics uploader).
    pub fn builder(config: Config, transport: Arc<dyn Transport>) -> SyncProducerBuilder {
        SyncProducerBuilder {
            inner: Producer::builder(config, transport),
        }
    }

    fn start(runtime: tokio::runtime::Runtime, b: SyncProducerBuilder) -> Self {
        let rt = Runtime::new(
            Arc::new(TokioExecutor::new(runtime.handle().clone())),
            Arc::new(TokioTimer),
        );
        let producer = {
            let _guard = runtime.enter();
            b.inner.build(rt)
        };
        Self {
            producer: Some(producer),
            runtime: Some(runtime),
        }
    }

    /// Starts the background runtime, and the producer with an AWS transport built
    /// from `config` inside it (as [`Producer::from_config`] does): the caller needs
    /// no runtime.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use kpl_producer::{Config, PutRecord, SyncProducer};
    ///
    /// let config = Config::builder().region("us-east-1").build()?;
    /// let producer = SyncProducer::from_config(config)?;
    /// let pending = producer.put_record("my-stream", PutRecord::new("pk", b"data".to_vec()))?;
    /// let outcome = pending.wait(Duration::from_secs(30));
    /// producer.shutdown(Duration::from_secs(30));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "aws")]
    pub fn from_config(config: Config) -> Result<Self, SyncBuildError> {
        let runtime = background_runtime().map_err(SyncBuildError::runtime)?;
        let transport = config
            .aws_transport_builder()
            .map_err(SyncBuildError::transport)?;
        let (transport, uploader) = runtime
            .block_on(async {
                let transport = transport.build().await?;
                Ok((transport, crate::upload::from_config(&config).await?))
            })
            .map_err(SyncBuildError::transport)?;
        let mut builder = Self::builder(config, Arc::new(transport));
        if let Some(uploader) = uploader {
            builder = builder.metrics_uploader(uploader);
        }
        Ok(Self::start(runtime, builder))
    }

    fn producer(&self) -> &Producer {
        self.producer.as_ref().expect("present until drop")
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("present until drop")
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        self.producer().config()
    }

    /// Puts a record, blocking while it is held back ([`Hold`](crate::Hold)), as
    /// [`Producer::put_record`] waits (when the caps are what is full, what is
    /// buffered is then sent at once).
    pub fn put_record(&self, stream: &str, record: PutRecord) -> Result<RecordFuture, PutError> {
        futures::executor::block_on(self.producer().put_record(stream, record))
    }

    /// Puts many records into one stream (one validation pass, one hand-off while
    /// there is room), blocking while they are held back. Each record gets its own
    /// result, in order, as [`Producer::put_records`] gives them.
    pub fn put_records(
        &self,
        stream: &str,
        records: Vec<PutRecord>,
    ) -> Result<Vec<Result<RecordFuture, PutError>>, PutError> {
        futures::executor::block_on(self.producer().put_records(stream, records))
    }

    /// Puts as many of `records` as there is room for now, never blocking, as
    /// [`Producer::try_put_records`] does: their results, the records from the
    /// first that did not fit on, and what held those back (with
    /// [`wait_for_room`](Self::wait_for_room), a [`put_records`](Self::put_records)
    /// in steps). One record is a `vec![record]`.
    pub fn try_put_records(
        &self,
        stream: &str,
        records: Vec<PutRecord>,
    ) -> Result<Admitted<RecordFuture>, PutError> {
        self.producer().try_put_records(stream, records)
    }

    /// Like [`try_put_records`](Self::try_put_records), with the outcomes going to
    /// `outcomes` (wait for them with [`Outcomes::wait`]), as
    /// [`Producer::try_put_records_to`] does.
    pub fn try_put_records_to(
        &self,
        stream: &str,
        records: Vec<PutRecord>,
        outcomes: &Outcomes,
    ) -> Result<Admitted<RecordId>, PutError> {
        self.producer()
            .try_put_records_to(stream, records, outcomes)
    }

    /// Like [`try_put_records_to`](Self::try_put_records_to), for records the caller
    /// keeps, copied once when admitted, as [`Producer::try_put_record_refs_to`]
    /// does.
    pub fn try_put_record_refs_to<'a>(
        &self,
        stream: &str,
        records: &[PutRecordRef<'a>],
        outcomes: &Outcomes,
    ) -> Result<Admitted<RecordId, PutRecordRef<'a>>, PutError> {
        self.producer()
            .try_put_record_refs_to(stream, records, outcomes)
    }

    /// Blocks until a record of `bytes` (data and partition key) would be let into
    /// `stream`, as [`Producer::wait_for_room`] waits.
    pub fn wait_for_room(&self, stream: &str, bytes: usize) {
        futures::executor::block_on(self.producer().wait_for_room(stream, bytes));
    }

    /// Sends everything buffered now and blocks until every record put before the
    /// call has its outcome, as [`Producer::flush`] does.
    pub fn flush(&self) {
        let producer = self.producer().clone();
        self.runtime()
            .block_on(async move { producer.flush().await });
    }

    /// Like [`flush`](Self::flush), blocking at most `timeout`; returns whether every
    /// record put before the call has its outcome.
    pub fn flush_timeout(&self, timeout: Duration) -> bool {
        let producer = self.producer().clone();
        self.runtime().block_on(async move {
            tokio::time::timeout(timeout, producer.flush())
                .await
                .is_ok()
        })
    }

    /// Like [`flush`](Self::flush), for one stream.
    pub fn flush_stream(&self, stream: &str) {
        let producer = self.producer().clone();
        self.runtime()
            .block_on(async move { producer.flush_stream(stream).await });
    }

    /// Like [`flush_timeout`](Self::flush_timeout), for one stream.
    pub fn flush_stream_timeout(&self, stream: &str, timeout: Duration) -> bool {
        let producer = self.producer().clone();
        self.runtime().block_on(async move {
            tokio::time::timeout(timeout, producer.flush_stream(stream))
                .await
                .is_ok()
        })
    }

    /// How long the oldest unresolved record has waited.
    pub fn oldest_record_age(&self) -> Option<Duration> {
        self.producer().oldest_record_age()
    }

    /// Records accepted and not yet resolved.
    pub fn outstanding_records(&self) -> usize {
        self.producer().outstanding_records()
    }

    /// The KPL's metrics, as [`Producer::metrics`] gives them.
    pub fn metrics(&self, name: Option<MetricName>, window: Duration) -> Vec<Metric> {
        self.producer().metrics(name, window)
    }

    /// What the metrics upload task did, as [`Producer::metrics_upload_stats`] says.
    pub fn metrics_upload_stats(&self) -> UploadStats {
        self.producer().metrics_upload_stats()
    }

    /// What verify before resend has cost and found, as [`Producer::verify_stats`]
    /// says.
    pub fn verify_stats(&self) -> VerifyStats {
        self.producer().verify_stats()
    }

    /// Shuts down as [`Producer::shutdown`] does, then stops the background runtime;
    /// returns how many records were failed as shut down.
    pub fn shutdown(mut self, timeout: Duration) -> usize {
        self.stop(timeout)
    }

    fn stop(&mut self, timeout: Duration) -> usize {
        let (Some(producer), Some(runtime)) = (self.producer.take(), self.runtime.take()) else {
            return 0;
        };
        let failed = runtime.block_on(async move { producer.shutdown(timeout).await });
        runtime.shutdown_timeout(Duration::from_secs(1));
        failed
    }
}

impl Drop for SyncProducer {
    fn drop(&mut self) {
        let timeout = self
            .producer
            .as_ref()
            .map_or(Duration::ZERO, |p| p.config().request_timeout());
        self.stop(timeout);
    }
}

/// The runtime a `SyncProducer` runs on: one worker thread.
fn background_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("kpl-producer")
        .enable_all()
        .build()
}

/// Why [`SyncProducer::from_config`] could not start.
///
/// Ask it with [`kind`](Self::kind) or the `is_*` methods; what went wrong (the
/// system's error, or the transport's [`BuildError`](kpl_transport::BuildError),
/// also [`build_error`](Self::build_error)) is its
/// [`source`](std::error::Error::source), and Display says only which part did
/// not start.
#[cfg(feature = "aws")]
#[derive(Debug)]
pub struct SyncBuildError {
    repr: NotStarted,
}

/// What kind of [`SyncBuildError`] it is.
#[cfg(feature = "aws")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncBuildErrorKind {
    /// The background runtime could not start (the system refused a thread).
    Runtime,
    /// The AWS transport could not be built from the config.
    Transport,
}

#[cfg(feature = "aws")]
#[derive(Debug)]
enum NotStarted {
    Runtime(std::io::Error),
    Transport(kpl_transport::BuildError),
}

#[cfg(feature = "aws")]
impl SyncBuildError {
    fn runtime(e: std::io::Error) -> Self {
        Self {
            repr: NotStarted::Runtime(e),
        }
    }

    fn transport(e: kpl_transport::BuildError) -> Self {
        Self {
            repr: NotStarted::Transport(e),
        }
    }

    /// What kind of error it is.
    pub fn kind(&self) -> SyncBuildErrorKind {
        match self.repr {
            NotStarted::Runtime(_) => SyncBuildErrorKind::Runtime,
            NotStarted::Transport(_) => SyncBuildErrorKind::Transport,
        }
    }

    /// The background runtime could not start.
    pub fn is_runtime(&self) -> bool {
        self.kind() == SyncBuildErrorKind::Runtime
    }

    /// The AWS transport could not be built ([`build_error`](Self::build_error)
    /// says why).
    pub fn is_transport(&self) -> bool {
        self.kind() == SyncBuildErrorKind::Transport
    }

    /// Why the transport could not be built.
    pub fn build_error(&self) -> Option<&kpl_transport::BuildError> {
        match &self.repr {
            NotStarted::Transport(e) => Some(e),
            NotStarted::Runtime(_) => None,
        }
    }
}

#[cfg(feature = "aws")]
impl std::fmt::Display for SyncBuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.repr {
            // What went wrong is the cause (`source()`): a chain prints it once.
            NotStarted::Runtime(_) => {
                f.write_str("the producer's background runtime did not start")
            }
            NotStarted::Transport(_) => f.write_str("the AWS transport could not be built"),
        }
    }
}

#[cfg(feature = "aws")]
impl std::error::Error for SyncBuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.repr {
            NotStarted::Runtime(e) => Some(e),
            NotStarted::Transport(e) => Some(e),
        }
    }
}

#[cfg(all(test, feature = "aws"))]
mod build_error_tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_producer_that_did_not_start_keeps_why_and_says_only_its_level() {
        let e = SyncBuildError::runtime(std::io::Error::other("no more threads"));
        assert_eq!(e.kind(), SyncBuildErrorKind::Runtime);
        assert!(e.is_runtime() && !e.is_transport() && e.build_error().is_none());
        assert_eq!(
            e.to_string(),
            "the producer's background runtime did not start"
        );
        assert_eq!(
            e.source().map(|c| c.to_string()).as_deref(),
            Some("no more threads")
        );

        let config = Config::builder()
            .region("us-east-1")
            .ca_cert_file("/no/such/kpl-ca.pem")
            .build()
            .unwrap();
        let Err(e) = SyncProducer::from_config(config) else {
            panic!("built without its CA file");
        };
        assert!(e.is_transport());
        assert!(e.build_error().is_some_and(|b| b.is_http_client()));
        assert_eq!(e.to_string(), "the AWS transport could not be built");
        let cause = e.source().expect("the BuildError");
        assert!(cause.downcast_ref::<kpl_transport::BuildError>().is_some());
        assert!(!e.to_string().contains(&cause.to_string()));
    }
}

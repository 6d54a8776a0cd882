//! The blocking facade: `SyncProducer`.

use std::sync::Arc;
use std::time::Duration;

use kpl_runtime::{Runtime, TokioExecutor, TokioTimer};
use kpl_transport::Transport;

use crate::config::Config;
use crate::producer::{Producer, PutError, PutRecord};
use crate::result::RecordFuture;

/// A producer for code without an async runtime: the async [`Producer`] runs on a
/// background thread with a tokio runtime of its own.
///
/// `put_record` is thread-safe and returns a [`RecordFuture`] whose
/// [`wait`](RecordFuture::wait) blocks up to a timeout. Dropping it (or
/// [`close`](Self::close)) shuts the producer down as [`Producer::shutdown`] does.
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
/// producer.flush(Duration::from_secs(5));
/// let result = pending.wait(Duration::from_secs(5)).expect("resolved by the flush");
/// assert!(result.success);
/// producer.close(Duration::from_secs(5));
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

impl SyncProducer {
    /// Starts the background runtime and the producer.
    pub fn new(config: Config, transport: Arc<dyn Transport>) -> std::io::Result<Self> {
        Ok(Self::start(background_runtime()?, config, transport, None))
    }

    fn start(
        runtime: tokio::runtime::Runtime,
        config: Config,
        transport: Arc<dyn Transport>,
        uploader: Option<Arc<dyn crate::MetricsUploader>>,
    ) -> Self {
        let rt = Runtime::new(
            Arc::new(TokioExecutor::new(runtime.handle().clone())),
            Arc::new(TokioTimer),
        );
        let producer = {
            let _guard = runtime.enter();
            let mut builder = Producer::builder(config, transport);
            if let Some(uploader) = uploader {
                builder = builder.metrics_uploader(uploader);
            }
            builder.build(rt)
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
    /// producer.close(Duration::from_secs(30));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "aws")]
    pub fn from_config(config: Config) -> Result<Self, SyncBuildError> {
        let runtime = background_runtime().map_err(SyncBuildError::Runtime)?;
        let transport = config
            .aws_transport_builder()
            .map_err(SyncBuildError::Transport)?;
        let (transport, uploader) = runtime
            .block_on(async {
                let transport = transport.build().await?;
                Ok((transport, crate::upload::from_config(&config).await?))
            })
            .map_err(SyncBuildError::Transport)?;
        Ok(Self::start(runtime, config, Arc::new(transport), uploader))
    }

    fn producer(&self) -> &Producer {
        self.producer.as_ref().expect("present until drop")
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("present until drop")
    }

    /// Puts a record; blocks while the outstanding caps are reached (what is
    /// buffered is then sent at once, as [`Producer::wait_for_room`] says).
    pub fn put_record(&self, stream: &str, record: PutRecord) -> Result<RecordFuture, PutError> {
        futures::executor::block_on(self.producer().put_record(stream, record))
    }

    /// Puts a record, or returns [`PutError::Full`] at once.
    pub fn try_put_record(
        &self,
        stream: &str,
        record: PutRecord,
    ) -> Result<RecordFuture, PutError> {
        self.producer().try_put_record(stream, record)
    }

    /// Puts many records into one stream (one validation pass, one hand-off);
    /// blocks while the outstanding caps are reached. Each record gets its own
    /// result, in order, as [`Producer::put_records`] gives them.
    pub fn put_records(
        &self,
        stream: &str,
        records: Vec<PutRecord>,
    ) -> Result<Vec<Result<RecordFuture, PutError>>, PutError> {
        futures::executor::block_on(self.producer().put_records(stream, records))
    }

    /// Sends everything and blocks until every record put before has its outcome, or
    /// `timeout` passes; returns whether everything resolved.
    pub fn flush(&self, timeout: Duration) -> bool {
        let producer = self.producer().clone();
        self.runtime().block_on(async move {
            tokio::time::timeout(timeout, producer.flush())
                .await
                .is_ok()
        })
    }

    /// Like [`flush`](Self::flush), for one stream.
    pub fn flush_stream(&self, stream: &str, timeout: Duration) -> bool {
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

    /// Shuts down as [`Producer::shutdown`] does; returns how many records were
    /// failed as shut down.
    pub fn close(mut self, timeout: Duration) -> usize {
        self.shutdown(timeout)
    }

    fn shutdown(&mut self, timeout: Duration) -> usize {
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
        self.shutdown(timeout);
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
#[cfg(feature = "aws")]
#[derive(Debug)]
#[non_exhaustive]
pub enum SyncBuildError {
    /// The background runtime could not start (the system refused a thread).
    Runtime(std::io::Error),
    /// The AWS transport could not be built from the config.
    Transport(kpl_transport::BuildError),
}

#[cfg(feature = "aws")]
impl std::fmt::Display for SyncBuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Runtime(e) => write!(f, "the producer's background runtime did not start: {e}"),
            Self::Transport(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(feature = "aws")]
impl std::error::Error for SyncBuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Runtime(e) => Some(e),
            Self::Transport(e) => Some(e),
        }
    }
}

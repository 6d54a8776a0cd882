//! The blocking facade: `SyncProducer`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kpl_runtime::{Runtime, TokioExecutor, TokioTimer};
use kpl_transport::Transport;

use crate::config::Config;
use crate::producer::{Producer, PutError};
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
/// use kpl_producer::{Config, SyncProducer};
/// use kpl_sim::Simulator;
///
/// # let timer: Arc<dyn kpl_runtime::Timer> = Arc::new(kpl_runtime::VirtualClock::new());
/// # let kinesis = Simulator::new(timer, 1);
/// # kinesis.create_stream("events", 1).unwrap();
/// let producer = SyncProducer::new(Config::default(), Arc::new(kinesis.clone()))?;
/// let pending = producer.put_record("events", "k", Bytes::from_static(b"v"), None)?;
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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kpl-producer")
            .enable_all()
            .build()?;
        let rt = Runtime::new(
            Arc::new(TokioExecutor::new(runtime.handle().clone())),
            Arc::new(TokioTimer),
        );
        let producer = {
            let _guard = runtime.enter();
            Producer::builder(config, transport).build(rt)
        };
        Ok(Self {
            producer: Some(producer),
            runtime: Some(runtime),
        })
    }

    fn producer(&self) -> &Producer {
        self.producer.as_ref().expect("present until drop")
    }

    /// Puts a record; blocks while the outstanding caps are reached.
    pub fn put_record(
        &self,
        stream: &str,
        partition_key: impl Into<String>,
        data: Bytes,
        explicit_hash_key: Option<&str>,
    ) -> Result<RecordFuture, PutError> {
        futures::executor::block_on(self.producer().put_record(
            stream,
            partition_key,
            data,
            explicit_hash_key,
        ))
    }

    /// Puts a record, or returns [`PutError::Full`] at once.
    pub fn try_put_record(
        &self,
        stream: &str,
        partition_key: impl Into<String>,
        data: Bytes,
        explicit_hash_key: Option<&str>,
    ) -> Result<RecordFuture, PutError> {
        self.producer()
            .try_put_record(stream, partition_key, data, explicit_hash_key)
    }

    /// Sends everything and blocks until every record put before has its outcome, or
    /// `timeout` passes; returns whether everything resolved.
    pub fn flush(&self, timeout: Duration) -> bool {
        let producer = self.producer().clone();
        let runtime = self.runtime.as_ref().expect("present until drop");
        runtime.block_on(async move {
            tokio::time::timeout(timeout, producer.flush())
                .await
                .is_ok()
        })
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

//! Uploading the KPL's metrics every `MetricsUploadDelay` to a [`MetricsUploader`]
//! (CloudWatch, or a destination of the user's): a task of its own, a bounded queue
//! that drops the oldest batch when the destination falls behind, retries with
//! backoff, and a last upload at shutdown so that a short run is not lost.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use kpl_runtime::Runtime;
use tracing::{debug, warn};

use crate::metrics::{Metric, MetricsRecorder};

/// Metrics of one upload interval, for one namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsBatch {
    /// `MetricsNamespace`.
    pub namespace: String,
    /// The metrics of the interval, one per metric and set of dimensions.
    pub metrics: Vec<Metric>,
}

/// Why an upload failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadError {
    /// What the destination said.
    pub message: String,
    /// Whether trying again later may succeed (a throttle, a timeout, a 5xx); a
    /// batch refused otherwise is dropped (and counted).
    pub retryable: bool,
}

impl fmt::Display for UploadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UploadError {}

/// The future of one upload.
pub type UploadFuture = Pin<Box<dyn Future<Output = Result<(), UploadError>> + Send>>;

/// A destination for the producer's metrics: give one to
/// [`ProducerBuilder::metrics_uploader`](crate::ProducerBuilder::metrics_uploader).
pub trait MetricsUploader: Send + Sync + 'static {
    /// Uploads one batch.
    fn upload(&self, batch: MetricsBatch) -> UploadFuture;
}

/// What the upload task did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadStats {
    /// Batches uploaded.
    pub uploaded: u64,
    /// Uploads that failed (each retried while the batch is queued).
    pub failed_attempts: u64,
    /// Batches dropped: the oldest when the queue was full, or refused for good.
    pub dropped: u64,
}

/// Batches kept while the destination fails.
pub(crate) const QUEUE_BATCHES: usize = 8;

#[derive(Default)]
pub(crate) struct Counters {
    uploaded: AtomicU64,
    failed_attempts: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    pub(crate) fn stats(&self) -> UploadStats {
        UploadStats {
            uploaded: self.uploaded.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The handle the producer keeps: asks the task for its last upload.
pub(crate) struct UploadHandle {
    stop: Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
    pub(crate) counters: Arc<Counters>,
}

impl UploadHandle {
    /// Starts the upload task on `runtime`.
    pub(crate) fn start(
        runtime: &Runtime,
        recorder: Arc<MetricsRecorder>,
        uploader: Arc<dyn MetricsUploader>,
        namespace: String,
        delay: Duration,
    ) -> Self {
        let (stop_tx, stop_rx) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        let task = Task {
            runtime: runtime.clone(),
            recorder,
            uploader,
            namespace,
            delay: delay.max(Duration::from_secs(1)),
            queue: VecDeque::new(),
            counters: counters.clone(),
        };
        runtime.spawn(Box::pin(task.run(stop_rx)));
        Self {
            stop: Mutex::new(Some(stop_tx)),
            counters,
        }
    }

    /// Asks for the last upload and waits for it (the caller bounds the wait).
    pub(crate) async fn finish(&self) {
        let stop = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(stop) = stop {
            let (done_tx, done_rx) = oneshot::channel();
            if stop.send(done_tx).is_ok() {
                let _ = done_rx.await;
            }
        }
    }
}

struct Task {
    runtime: Runtime,
    recorder: Arc<MetricsRecorder>,
    uploader: Arc<dyn MetricsUploader>,
    namespace: String,
    delay: Duration,
    queue: VecDeque<MetricsBatch>,
    counters: Arc<Counters>,
}

impl Task {
    async fn run(mut self, stop: oneshot::Receiver<oneshot::Sender<()>>) {
        let mut stop = stop;
        // The first second not uploaded yet.
        let mut next = 0u64;
        loop {
            let wake = self.runtime.sleep(self.delay);
            let done = match futures::future::select(wake, &mut stop).await {
                futures::future::Either::Left(_) => None,
                // Asked for the last upload, or the producer is gone.
                futures::future::Either::Right((asked, _)) => Some(asked.ok()),
            };
            // Complete seconds only, but for the last upload.
            next = self.take(next, done.is_some());
            match done {
                None => self.send_queue(false).await,
                Some(done) => {
                    // The last upload: each queued batch tried once more.
                    self.send_queue(true).await;
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
            }
        }
    }

    /// Queues the metrics of the seconds from `from`; returns where the next take
    /// starts.
    fn take(&mut self, from: u64, include_current: bool) -> u64 {
        let (metrics, next) = self.recorder.metrics_since(from, include_current);
        if metrics.is_empty() {
            return next;
        }
        if self.queue.len() == QUEUE_BATCHES {
            self.queue.pop_front();
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            warn!("metrics uploads are falling behind: the oldest batch was dropped");
        }
        self.queue.push_back(MetricsBatch {
            namespace: self.namespace.clone(),
            metrics,
        });
        next
    }

    /// Sends the queue in order; stops at a retryable failure (the queue is tried
    /// again at the next interval), but for the last upload, which tries each batch
    /// once.
    async fn send_queue(&mut self, last: bool) {
        while let Some(batch) = self.queue.front().cloned() {
            let started: Instant = self.runtime.now();
            match self.uploader.upload(batch).await {
                Ok(()) => {
                    self.queue.pop_front();
                    self.counters.uploaded.fetch_add(1, Ordering::Relaxed);
                    debug!(
                        elapsed_ms = self
                            .runtime
                            .now()
                            .saturating_duration_since(started)
                            .as_millis() as u64,
                        "metrics uploaded"
                    );
                }
                Err(e) => {
                    self.counters
                        .failed_attempts
                        .fetch_add(1, Ordering::Relaxed);
                    if !e.retryable {
                        warn!(error = %e, "metrics batch refused; dropped");
                        self.queue.pop_front();
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    warn!(error = %e, queued = self.queue.len(), "metrics upload failed; retried later");
                    if last {
                        // At shutdown each batch gets one more try, no waiting.
                        self.queue.pop_front();
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    return;
                }
            }
        }
    }
}

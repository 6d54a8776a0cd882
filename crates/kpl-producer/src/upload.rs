//! Uploading the KPL's metrics every `MetricsUploadDelay` to a [`MetricsUploader`]
//! (CloudWatch, or a destination of the user's): a task of its own, a bounded queue
//! that drops the oldest batch when the destination falls behind, a failed upload
//! tried again at the next interval (CloudWatch's client also retries with backoff
//! within one), and a last upload at shutdown so that a short run is not lost. The task
//! also samples `UserRecordsPending` every second.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

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
    /// The end of the interval, by the system clock (the time of its data points).
    pub timestamp: SystemTime,
}

/// Why an upload failed: [`is_retryable`](Self::is_retryable) says whether the
/// batch is tried again, [`uploaded`](Self::uploaded) how much of it was stored,
/// and [`source`](std::error::Error::source) what the destination said.
///
/// ```
/// use kpl_producer::UploadError;
///
/// let e = UploadError::retryable("throttled").with_uploaded(10);
/// assert!(e.is_retryable());
/// assert_eq!(e.uploaded(), 10);
/// assert!(!UploadError::refused("access denied").is_retryable());
/// ```
#[derive(Debug)]
pub struct UploadError {
    retryable: bool,
    uploaded: usize,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl UploadError {
    /// A failure that trying again later may get past (a throttle, a timeout, a
    /// 5xx), for the reason `cause` says; nothing stored.
    pub fn retryable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            retryable: true,
            uploaded: 0,
            source: cause.into(),
        }
    }

    /// A batch the destination refuses and would refuse again, for the reason
    /// `cause` says: it is dropped (and counted); nothing stored.
    pub fn refused(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            retryable: false,
            uploaded: 0,
            source: cause.into(),
        }
    }

    /// The same failure after the batch's first `uploaded` metrics were stored (a
    /// destination that sends a batch in several requests): they are not sent
    /// again.
    #[must_use]
    pub fn with_uploaded(mut self, uploaded: usize) -> Self {
        self.uploaded = uploaded;
        self
    }

    /// Whether trying again later may succeed; a batch refused otherwise is
    /// dropped (and counted).
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// How many of the batch's first metrics were stored before the failure.
    pub fn uploaded(&self) -> usize {
        self.uploaded
    }
}

impl fmt::Display for UploadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // What the destination said is the source: a chain prints it once.
        f.write_str(if self.retryable {
            "the metrics upload failed"
        } else {
            "the metrics batch was refused"
        })
    }
}

impl std::error::Error for UploadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

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
        pending: Box<dyn Fn() -> usize + Send + Sync>,
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
            pending,
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
    /// Records outstanding, sampled every second as `UserRecordsPending`.
    pending: Box<dyn Fn() -> usize + Send + Sync>,
}

impl Task {
    async fn run(mut self, stop: oneshot::Receiver<oneshot::Sender<()>>) {
        let mut stop = stop;
        // The first second not uploaded yet.
        let mut next = 0u64;
        let tick = Duration::from_secs(1);
        let mut wake_at = self.runtime.now();
        let mut upload_at = wake_at + self.delay;
        loop {
            wake_at += tick;
            let wake = self.runtime.sleep_until(wake_at);
            let done = match futures::future::select(wake, &mut stop).await {
                futures::future::Either::Left(_) => None,
                // Asked for the last upload, or the producer is gone.
                futures::future::Either::Right((asked, _)) => Some(asked.ok()),
            };
            self.recorder.sample_pending((self.pending)());
            let now = self.runtime.now();
            if done.is_none() && now < upload_at {
                continue;
            }
            // After a long stall, ticks are not made up for.
            wake_at = wake_at.max(now);
            upload_at = now + self.delay;
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
            timestamp: SystemTime::now(),
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
                    // What was stored is not sent again.
                    if let Some(front) = self.queue.front_mut() {
                        let stored = e.uploaded().min(front.metrics.len());
                        front.metrics.drain(..stored);
                    }
                    if !e.is_retryable() {
                        warn!(
                            error = &e as &dyn std::error::Error,
                            "metrics batch refused; dropped"
                        );
                        self.queue.pop_front();
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    warn!(
                        error = &e as &dyn std::error::Error,
                        queued = self.queue.len(),
                        "metrics upload failed; retried later"
                    );
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

/// Uploads to CloudWatch with PutMetricData (feature `cloudwatch`): each
/// [`Metric`] of a batch as one data point, a statistic set (sample count, sum,
/// minimum, maximum) with the metric's unit and dimensions, timed at the end of its
/// interval. A batch larger than one request allows goes in several; a failure
/// after some of them were stored says so, and only the rest is tried again.
///
/// [`Producer::from_config`](crate::Producer::from_config) installs one when
/// `MetricsLevel` is not `none`; to upload with other credentials, build the client
/// yourself:
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use kpl_producer::{CloudWatchUploader, Config, MetricsLevel, Producer};
/// use kpl_runtime::Runtime;
///
/// let config = Config::builder().region("us-east-1").metrics_level(MetricsLevel::Summary).build()?;
/// let cloudwatch = config
///     .cloudwatch_builder()?
///     .static_credentials("AKIA…", "…") // the metrics account's
///     .build()
///     .await?;
/// let transport = config.aws_transport_builder()?.build().await?;
/// let producer = Producer::builder(config, Arc::new(transport))
///     .metrics_uploader(Arc::new(CloudWatchUploader::new(cloudwatch)))
///     .build(Runtime::tokio());
/// # Ok(()) }
/// ```
#[cfg(feature = "cloudwatch")]
#[derive(Clone, Debug)]
pub struct CloudWatchUploader {
    client: kpl_transport::CloudWatch,
}

#[cfg(feature = "cloudwatch")]
impl CloudWatchUploader {
    /// Uploads through `client`.
    pub fn new(client: kpl_transport::CloudWatch) -> Self {
        Self { client }
    }
}

#[cfg(feature = "cloudwatch")]
impl MetricsUploader for CloudWatchUploader {
    fn upload(&self, batch: MetricsBatch) -> UploadFuture {
        let client = self.client.clone();
        Box::pin(async move {
            let data: Vec<_> = batch
                .metrics
                .iter()
                .map(|m| kpl_transport::MetricDatum {
                    name: m.name.as_str().to_owned(),
                    unit: m.name.unit().to_owned(),
                    dimensions: m
                        .dimensions
                        .iter()
                        .map(|(n, v)| ((*n).to_owned(), v.clone()))
                        .collect(),
                    timestamp: batch.timestamp,
                    sample_count: m.sample_count as f64,
                    sum: m.sum,
                    min: m.min,
                    max: m.max,
                })
                .collect();
            client
                .put_metric_data(&batch.namespace, &data)
                .await
                .map_err(|e| {
                    let sent = e.sent();
                    if e.is_retryable() {
                        UploadError::retryable(e)
                    } else {
                        UploadError::refused(e)
                    }
                    .with_uploaded(sent)
                })
        })
    }
}

/// The uploader [`Producer::from_config`](crate::Producer::from_config) installs:
/// CloudWatch's when metrics are on and the `cloudwatch` feature is; none (with a
/// warning) when metrics are on without it.
#[cfg(all(feature = "aws", any(feature = "tokio", feature = "smol")))]
pub(crate) async fn from_config(
    config: &crate::Config,
) -> Result<Option<Arc<dyn MetricsUploader>>, kpl_transport::BuildError> {
    if config.metrics_level() == crate::MetricsLevel::None {
        return Ok(None);
    }
    #[cfg(feature = "cloudwatch")]
    {
        let client = config.cloudwatch_builder()?.build().await?;
        Ok(Some(Arc::new(CloudWatchUploader::new(client))))
    }
    #[cfg(not(feature = "cloudwatch"))]
    {
        warn!(
            "MetricsLevel is {:?}: metrics are kept in memory (Producer::metrics) but not \
             uploaded, as the `cloudwatch` feature is off",
            config.metrics_level()
        );
        Ok(None)
    }
}

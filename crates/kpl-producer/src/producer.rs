//! The async facade: `Producer`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use kpl_codec::{HashKey, RecordError, RecordLimits};
use kpl_runtime::Runtime;
use kpl_transport::{StreamId, Transport};

use crate::accounting::{Accounting, INGEST_LIMIT, Shared, StreamOutstanding};
use crate::completers::{Issued, Put, Receipt};
use crate::config::Config;
use crate::driver::{Command, Worker};
use crate::events::EventSink;
use crate::metrics::{Metric, MetricName, MetricsLevel, MetricsRecorder, Tee};
use crate::pipeline::{Body, Epoch, Packer, Rec, VerifyStats, drain_limit};
use crate::result::{Outcomes, RecordFuture, RecordId, slot};
use crate::upload::{MetricsUploader, UploadHandle, UploadStats};

/// Why a record was not accepted. Nothing was enqueued.
///
/// Ask it with [`kind`](Self::kind) or the `is_*` methods; why an invalid record is
/// invalid is its [`source`](std::error::Error::source) (also
/// [`record_error`](Self::record_error)). A record that waits for room is not an
/// error: the puts that do not wait hand it back in [`Admitted::rest`], with
/// [`Admitted::held_by`] saying what held it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutError {
    kind: Refusal,
}

/// What kind of [`PutError`] it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PutErrorKind {
    /// The record breaks a Kinesis rule: empty or over-long partition key, explicit
    /// hash key out of range, data plus key over `max_user_record_size`.
    Invalid,
    /// The producer is shutting down and accepts nothing more.
    ShuttingDown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Refusal {
    Invalid(RecordError),
    ShuttingDown,
}

impl PutError {
    pub(crate) fn invalid(e: RecordError) -> Self {
        Self {
            kind: Refusal::Invalid(e),
        }
    }

    pub(crate) fn shutting_down() -> Self {
        Self {
            kind: Refusal::ShuttingDown,
        }
    }

    /// What kind of refusal it is.
    pub fn kind(&self) -> PutErrorKind {
        match self.kind {
            Refusal::Invalid(_) => PutErrorKind::Invalid,
            Refusal::ShuttingDown => PutErrorKind::ShuttingDown,
        }
    }

    /// The record breaks a Kinesis rule ([`record_error`](Self::record_error) says
    /// which).
    pub fn is_invalid(&self) -> bool {
        self.kind() == PutErrorKind::Invalid
    }

    /// The producer is shutting down and accepts nothing more.
    pub fn is_shutting_down(&self) -> bool {
        self.kind() == PutErrorKind::ShuttingDown
    }

    /// Why the record is invalid, for an invalid record.
    pub fn record_error(&self) -> Option<&RecordError> {
        match &self.kind {
            Refusal::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for PutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            // Why is the cause (`source()`): a chain prints it once.
            Refusal::Invalid(_) => f.write_str("record refused"),
            Refusal::ShuttingDown => {
                f.write_str("the producer is shutting down and accepts no more records")
            }
        }
    }
}

impl std::error::Error for PutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.record_error()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// One record for [`Producer::put_records`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutRecord {
    /// The partition key.
    pub partition_key: String,
    /// The data.
    pub data: Bytes,
    /// The explicit hash key (decimal), if any.
    pub explicit_hash_key: Option<String>,
}

impl PutRecord {
    /// A record without an explicit hash key.
    ///
    /// ```
    /// use kpl_producer::PutRecord;
    ///
    /// let record = PutRecord::new("user-1", b"hello".to_vec());
    /// assert_eq!(record.partition_key, "user-1");
    /// let routed = PutRecord::new("user-1", "hello").explicit_hash_key("42");
    /// assert_eq!(routed.explicit_hash_key.as_deref(), Some("42"));
    /// ```
    pub fn new(partition_key: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self {
            partition_key: partition_key.into(),
            data: data.into(),
            explicit_hash_key: None,
        }
    }

    /// Routes the record by this explicit hash key (a decimal number from 0 to
    /// 2^128 − 1) instead of its partition key's MD5. Checked when it is put.
    pub fn explicit_hash_key(mut self, key: impl Into<String>) -> Self {
        self.explicit_hash_key = Some(key.into());
        self
    }

    /// What it counts against the outstanding caps: data and partition key bytes.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// One record for [`Producer::try_put_record_refs_to`]: borrowed from the caller,
/// whose key and data are copied once, when the record is admitted (a
/// [`PutRecord`]'s large data is kept as given instead). For callers whose records
/// already sit in buffers of their own (lines read, a batch from another
/// language): no allocation per record on the way in.
///
/// ```
/// use kpl_producer::PutRecordRef;
///
/// let line = "user-1\thello";
/// let (key, data) = line.split_once('\t').unwrap();
/// let record = PutRecordRef::new(key, data.as_bytes());
/// assert_eq!(record.size(), 11);
/// assert_eq!(record.explicit_hash_key("42").explicit_hash_key, Some("42"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutRecordRef<'a> {
    /// The partition key.
    pub partition_key: &'a str,
    /// The data.
    pub data: &'a [u8],
    /// The explicit hash key (decimal), if any.
    pub explicit_hash_key: Option<&'a str>,
}

impl<'a> PutRecordRef<'a> {
    /// A record without an explicit hash key.
    pub fn new(partition_key: &'a str, data: &'a [u8]) -> Self {
        Self {
            partition_key,
            data,
            explicit_hash_key: None,
        }
    }

    /// Routes the record by this explicit hash key, as
    /// [`PutRecord::explicit_hash_key`] does.
    pub fn explicit_hash_key(mut self, key: &'a str) -> Self {
        self.explicit_hash_key = Some(key);
        self
    }

    /// What it counts against the outstanding caps: data and partition key bytes.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// The record as an owned [`PutRecord`] (its key and data copied).
    pub fn to_record(&self) -> PutRecord {
        PutRecord {
            partition_key: self.partition_key.to_owned(),
            data: Bytes::copy_from_slice(self.data),
            explicit_hash_key: self.explicit_hash_key.map(str::to_owned),
        }
    }
}

/// A record a put takes: owned ([`PutRecord`]) or borrowed ([`PutRecordRef`]).
trait Admissible {
    fn partition_key(&self) -> &str;
    fn explicit_hash_key(&self) -> Option<&str>;
    fn data_len(&self) -> usize;
    /// Its key and data as the pipeline holds them.
    fn pack(self, packer: &mut Packer) -> Body;
}

impl Admissible for PutRecord {
    fn partition_key(&self) -> &str {
        &self.partition_key
    }
    fn explicit_hash_key(&self) -> Option<&str> {
        self.explicit_hash_key.as_deref()
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
    fn pack(self, packer: &mut Packer) -> Body {
        packer.pack(self.partition_key.as_bytes(), self.data)
    }
}

impl Admissible for PutRecordRef<'_> {
    fn partition_key(&self) -> &str {
        self.partition_key
    }
    fn explicit_hash_key(&self) -> Option<&str> {
        self.explicit_hash_key
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
    fn pack(self, packer: &mut Packer) -> Body {
        packer.pack_slice(self.partition_key.as_bytes(), self.data)
    }
}

struct Inner {
    shared: Arc<Shared>,
    metrics: Option<Arc<MetricsRecorder>>,
    upload: Option<UploadHandle>,
    limits: RecordLimits,
    workers: Mutex<HashMap<StreamId, mpsc::UnboundedSender<Command>>>,
    /// The id of the next record admitted: written under the shared lock only (read
    /// without it by a flush, for the records put before it).
    next_id: AtomicU64,
    closed: AtomicBool,
    /// Set (under `workers`) when `shutdown` tells the workers its timeout passed:
    /// a worker made after it, for a put admitted just before the close, is told
    /// too.
    shut_down: AtomicBool,
}

/// What a put that does not wait let in ([`Producer::try_put_records`],
/// [`Producer::try_put_records_to`], and the same on
/// [`SyncProducer`](crate::SyncProducer)).
///
/// `R` is the kind of record put: [`PutRecord`], or [`PutRecordRef`] for
/// [`Producer::try_put_record_refs_to`].
#[derive(Debug)]
pub struct Admitted<T, R = PutRecord> {
    /// One per record taken, in order: its handle (a [`RecordFuture`] or a
    /// [`RecordId`]), or why that record was refused (an invalid record: the
    /// others still go in).
    pub results: Vec<Result<T, PutError>>,
    /// The records from the first that did not fit on, untouched (empty when every
    /// record was taken): put them again once there is room
    /// ([`Producer::wait_for_room`]).
    pub rest: Vec<R>,
    /// What held [`rest`](Self::rest) back: `Some` exactly when it is not empty.
    pub held_by: Option<Hold>,
}

/// What held records back from a put that does not wait ([`Admitted::held_by`]).
/// Each passes: [`Producer::wait_for_room`] waits for it, and the puts that wait
/// ([`Producer::put_record`], [`Producer::put_records`]) wait through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Hold {
    /// The outstanding caps (`max_outstanding_records`, `max_outstanding_bytes`)
    /// are reached: room comes as records settle. Raise the caps to hold more.
    Caps,
    /// The stream has more waiting than it drains, at its measured rate, within a
    /// quarter of the records' time to live (what went in now would expire before
    /// it is sent): room comes as the stream drains. Add shards to drain faster.
    Backlog,
    /// The stream's pipeline has 16,384 records handed to it that it has not taken
    /// in yet: the caller puts faster than the pipeline takes records in, and
    /// waits instead of piling them up.
    Intake,
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Caps => "the outstanding caps are reached",
            Self::Backlog => {
                "the stream has more waiting than it drains in a quarter of the records' time to live"
            }
            Self::Intake => "the stream's pipeline has not taken in the records handed to it",
        })
    }
}

/// What [`Producer::admit`] took in: the stream, what was let in (each record's
/// result, the rest and what held it), and the records admitted (not handed to the
/// pipeline yet).
struct Admission<T, R> {
    stream_id: StreamId,
    admitted: Admitted<T, R>,
    recs: Vec<Rec>,
}

/// The producer: put user records, get each one's outcome.
///
/// Records are aggregated per predicted shard, rate-limited per shard, collected into
/// PutRecords requests and retried as the KPL does (see `docs/retries.md`); each
/// accepted record resolves exactly once, with every attempt. One pipeline runs per
/// stream, on the [`Runtime`] given (tokio, smol, or a simulation).
///
/// Cheap to clone: clones share the pipeline. When the last clone is dropped, the
/// pipeline finishes the records it holds (bounded by their time to live) and stops;
/// use [`shutdown`](Self::shutdown) to bound that time.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use bytes::Bytes;
/// use kpl_producer::{Config, Producer, PutRecord};
/// use kpl_runtime::Simulation;
/// use kpl_sim::Simulator;
///
/// let sim = Simulation::new();
/// let kinesis = Simulator::new(sim.runtime().timer().clone(), 1);
/// kinesis.create_stream("events", 2).unwrap();
/// let producer = Producer::builder(Config::default(), Arc::new(kinesis.clone()))
///     .build(sim.runtime());
/// let result = sim.block_on(async move {
///     let pending = producer
///         .put_record("events", PutRecord::new("user-1", Bytes::from_static(b"hello")))
///         .await
///         .expect("a valid record");
///     pending.await
/// }).unwrap();
/// assert!(result.is_success());
/// assert_eq!(result.attempts.len(), 1);
/// ```
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("outstanding_records", &self.outstanding_records())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Producer`].
pub struct ProducerBuilder {
    config: Config,
    transport: Arc<dyn Transport>,
    events: Option<Arc<dyn EventSink>>,
    uploader: Option<Arc<dyn MetricsUploader>>,
}

impl fmt::Debug for ProducerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ProducerBuilder {
    /// Receives the pipeline's events (metrics).
    pub fn event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.events = Some(sink);
        self
    }

    /// Uploads the KPL's metrics to `uploader` every `MetricsUploadDelay`, and once
    /// more at shutdown (when `MetricsLevel` is not `none`). A destination that
    /// falls behind never holds up the records: up to a few batches wait, then the
    /// oldest is dropped (counted in [`Producer::metrics_upload_stats`]).
    pub fn metrics_uploader(mut self, uploader: Arc<dyn MetricsUploader>) -> Self {
        self.uploader = Some(uploader);
        self
    }

    /// The producer, running its pipelines on `runtime`.
    pub fn build(self, runtime: Runtime) -> Producer {
        let limits = RecordLimits::new(self.config.max_user_record_size).unwrap_or_default();
        let epoch = Epoch::new(runtime.now());
        // The KPL's metrics, kept from the same events as the user's sink hears.
        let metrics = (self.config.metrics_level != MetricsLevel::None).then(|| {
            Arc::new(MetricsRecorder::new(
                self.config.metrics_level,
                self.config.metrics_granularity,
                runtime.timer().clone(),
            ))
        });
        let events: Option<Arc<dyn EventSink>> = match (&metrics, self.events) {
            (Some(m), Some(user)) => Some(Arc::new(Tee(m.clone(), user))),
            (Some(m), None) => Some(m.clone()),
            (None, user) => user,
        };
        let shared = Arc::new(Shared {
            config: self.config,
            epoch,
            runtime,
            transport: self.transport,
            events,
            accounting: Mutex::new(Accounting::default()),
            verify: Mutex::default(),
        });
        let upload = match (&metrics, self.uploader) {
            (Some(recorder), Some(uploader)) => {
                let weak = Arc::downgrade(&shared);
                Some(UploadHandle::start(
                    &shared.runtime,
                    recorder.clone(),
                    uploader,
                    shared.config.metrics_namespace.clone(),
                    shared.config.metrics_upload_delay,
                    Box::new(move || weak.upgrade().map_or(0, |s| s.lock().records)),
                ))
            }
            _ => None,
        };
        Producer {
            inner: Arc::new(Inner {
                metrics,
                upload,
                shared,
                limits,
                workers: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                shut_down: AtomicBool::new(false),
            }),
        }
    }
}

/// The longest a shutdown waits for the metrics' last upload.
const LAST_UPLOAD_WAIT: Duration = Duration::from_secs(5);

/// Whether `records` more records of `bytes` go past the outstanding caps, with
/// `held_records` of `held_bytes` outstanding (one record always fits when none is).
fn over_caps(
    c: &Config,
    held_records: usize,
    held_bytes: usize,
    records: usize,
    bytes: usize,
) -> bool {
    held_records > 0
        && (held_records + records > c.max_outstanding_records
            || held_bytes + bytes > c.max_outstanding_bytes)
}

impl Producer {
    /// A builder for a producer with these settings, sending through `transport`.
    pub fn builder(config: Config, transport: Arc<dyn Transport>) -> ProducerBuilder {
        ProducerBuilder {
            config,
            transport,
            events: None,
            uploader: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.inner.shared.config
    }

    /// Puts one record into `stream` (a name, or an ARN starting with `arn:`),
    /// waiting for room; the returned future resolves with the record's outcome.
    ///
    /// Invalid records are refused at once; nothing is enqueued. While the
    /// outstanding caps, the stream's backlog or its pipeline's intake hold records
    /// back ([`Hold`]), this waits, and when the caps are what is full, what is
    /// buffered is sent at once (see [`wait_for_room`](Self::wait_for_room)). The
    /// returned future never fails, and never stays pending past the record's time
    /// to live (plus one request timeout). Not to wait, put it with
    /// [`try_put_records`](Self::try_put_records).
    pub async fn put_record(
        &self,
        stream: &str,
        record: PutRecord,
    ) -> Result<RecordFuture, PutError> {
        let mut out = self.put_records(stream, vec![record]).await?;
        out.pop().unwrap_or(Err(PutError::shutting_down()))
    }

    /// Puts many records into one stream, waiting for room as
    /// [`put_record`](Self::put_record) does: one validation pass and one hand-off
    /// to the pipeline while there is room. Each record gets its own result, in
    /// order (an invalid record's error does not stop the others).
    ///
    /// It is [`try_put_records`](Self::try_put_records) and
    /// [`wait_for_room`](Self::wait_for_room) in a loop: dropping it while it waits
    /// loses the futures of the records it had admitted (they are still sent); use
    /// the two to keep every future in hand.
    pub async fn put_records(
        &self,
        stream: &str,
        records: Vec<PutRecord>,
    ) -> Result<Vec<Result<RecordFuture, PutError>>, PutError> {
        let mut out = Vec::with_capacity(records.len());
        let mut pending = records;
        loop {
            let Admitted { results, rest, .. } = self.try_put_records(stream, pending)?;
            out.extend(results);
            let Some(first) = rest.first() else {
                return Ok(out);
            };
            self.wait_for_room(stream, first.size()).await;
            pending = rest;
        }
    }

    /// Puts as many of `records` as there is room for now, in order, and never
    /// waits: their results, the records from the first that did not fit on,
    /// untouched (empty when all went in), and what held those back
    /// ([`Hold`]: the outstanding caps, the stream's backlog limit, or at most
    /// 16,384 records handed to the stream's pipeline and not taken in by it yet).
    /// One record is a `vec![record]`.
    ///
    /// With [`wait_for_room`](Self::wait_for_room) this is
    /// [`put_records`](Self::put_records) in steps a caller can stop between, with
    /// every admitted record's future in hand.
    ///
    /// ```
    /// # use kpl_producer::{Admitted, Hold, Producer, PutRecord};
    /// # async fn example(producer: Producer) -> Result<(), kpl_producer::PutError> {
    /// let mut records: Vec<PutRecord> = (0..10_000)
    ///     .map(|i| PutRecord::new(format!("key-{i}"), vec![0u8; 100]))
    ///     .collect();
    /// let mut held_by_the_stream = 0;
    /// while !records.is_empty() {
    ///     let Admitted { results, rest, held_by } = producer.try_put_records("my-stream", records)?;
    ///     for result in results {
    ///         let _future = result?; // keep it to learn the outcome
    ///     }
    ///     if held_by == Some(Hold::Backlog) {
    ///         held_by_the_stream += 1; // more shards would drain it faster
    ///     }
    ///     if let Some(first) = rest.first() {
    ///         producer.wait_for_room("my-stream", first.size()).await;
    ///     }
    ///     records = rest;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_put_records(
        &self,
        stream: &str,
        records: Vec<PutRecord>,
    ) -> Result<Admitted<RecordFuture>, PutError> {
        let mut slots = Vec::with_capacity(records.len());
        let admission = self.admit(stream, records, |_, now| {
            let (slot, future) = slot(now);
            slots.push(slot);
            future
        })?;
        if !admission.recs.is_empty() {
            let to = Issued::Futures(slots);
            self.send(
                &admission.stream_id,
                Command::Put(Put::new(admission.recs, to)),
            );
        }
        Ok(admission.admitted)
    }

    /// Like [`try_put_records`](Self::try_put_records), but the outcomes go to
    /// `outcomes`, in batches, under the [`RecordId`] each admitted record gets here:
    /// no result slot, waker or lock per record, for callers that handle outcomes in
    /// bulk (a loader, a benchmark). Returns the ids (or each record's error), and
    /// the records from the first that did not fit on, untouched.
    ///
    /// See [`Outcomes`] for an example.
    pub fn try_put_records_to(
        &self,
        stream: &str,
        records: Vec<PutRecord>,
        outcomes: &Outcomes,
    ) -> Result<Admitted<RecordId>, PutError> {
        self.put_to(stream, records, outcomes)
    }

    /// Like [`try_put_records_to`](Self::try_put_records_to), for records the caller
    /// keeps ([`PutRecordRef`]): each admitted record's key and data are copied
    /// once, here; none is allocated on the way in. The records held back come back
    /// in [`Admitted::rest`] as they were given.
    ///
    /// ```
    /// # async fn example(producer: kpl_producer::Producer) -> Result<(), kpl_producer::PutError> {
    /// use kpl_producer::{Outcomes, PutRecordRef};
    ///
    /// let lines = "user-1 hello\nuser-2 world\n";
    /// let records: Vec<PutRecordRef<'_>> = lines
    ///     .lines()
    ///     .filter_map(|l| l.split_once(' '))
    ///     .map(|(key, data)| PutRecordRef::new(key, data.as_bytes()))
    ///     .collect();
    /// let outcomes = Outcomes::new();
    /// let admitted = producer.try_put_record_refs_to("my-stream", &records, &outcomes)?;
    /// assert_eq!(admitted.results.len() + admitted.rest.len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_put_record_refs_to<'a>(
        &self,
        stream: &str,
        records: &[PutRecordRef<'a>],
        outcomes: &Outcomes,
    ) -> Result<Admitted<RecordId, PutRecordRef<'a>>, PutError> {
        self.put_to(stream, records.iter().copied(), outcomes)
    }

    fn put_to<R: Admissible>(
        &self,
        stream: &str,
        records: impl IntoIterator<Item = R>,
        outcomes: &Outcomes,
    ) -> Result<Admitted<RecordId, R>, PutError> {
        let admission = self.admit(stream, records, |id, _| RecordId(id))?;
        if !admission.recs.is_empty() {
            // Counted before any of them can settle.
            outcomes.admitted(admission.recs.len());
            let to = Issued::Queue(outcomes.queue().clone());
            self.send(
                &admission.stream_id,
                Command::Put(Put::new(admission.recs, to)),
            );
        }
        Ok(admission.admitted)
    }

    /// Waits until a record of `bytes` (data and partition key) would be let into
    /// `stream`: the outstanding caps and the stream's backlog have room, or the
    /// producer shuts down. Admits nothing, so dropping it loses nothing.
    ///
    /// When the outstanding caps are what is full, the records buffered for their
    /// `RecordMaxBufferedTime` are sent now (as [`flush`](Self::flush) does, without
    /// waiting for them), and so are records put while the caps stay full: a low
    /// cap then costs round trips, not a buffered time per record. When the stream
    /// itself holds records back (its shards' limits, or the congestion window),
    /// nothing is sent early, and the records stay aggregated.
    pub async fn wait_for_room(&self, stream: &str, bytes: usize) {
        let (tx, rx) = oneshot::channel();
        let tell = {
            let mut acc = self.inner.shared.lock();
            let (backlog, ingesting) = acc
                .outstanding
                .get(&StreamId::parse(stream))
                .map_or((false, false), |m| {
                    (m.over(bytes), m.ingesting > INGEST_LIMIT / 2)
                });
            let full = self.is_full(&acc, 1, bytes);
            if acc.records == 0 || (!full && !backlog && !ingesting) {
                return;
            }
            acc.space_waiters.push_back(tx);
            // Once until records are released, however many wait.
            full && !std::mem::replace(&mut acc.room_wanted, true)
        };
        if tell {
            self.send_all(|| Command::RoomWanted);
        }
        let _ = rx.await;
    }

    fn is_full(&self, acc: &Accounting, records: usize, bytes: usize) -> bool {
        over_caps(
            &self.inner.shared.config,
            acc.records,
            acc.bytes,
            records,
            bytes,
        )
    }

    /// Validates and admits records in order while there is room, each with the
    /// handle `issue` makes of its id; returns their results, the rest
    /// from the first that did not fit and what held it, and the admitted records,
    /// not sent yet.
    fn admit<T, R: Admissible>(
        &self,
        stream: &str,
        records: impl IntoIterator<Item = R>,
        mut issue: impl FnMut(u64, Instant) -> T,
    ) -> Result<Admission<T, R>, PutError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(PutError::shutting_down());
        }
        let stream_id = StreamId::parse(stream);
        let shared = &self.inner.shared;
        let now = shared.runtime.now();
        let config = &shared.config;
        // Validation and the keys' MD5 before the lock: the pipeline's driver takes
        // it too, to release space.
        let limits = &self.inner.limits;
        let mut prepared: Vec<_> = records
            .into_iter()
            .map(|record| {
                let keys = limits
                    .validate(
                        record.partition_key(),
                        record.explicit_hash_key(),
                        record.data_len(),
                    )
                    // The hash key of a key without one comes below.
                    .map(|explicit| (explicit, explicit.unwrap_or(HashKey::new(0))));
                (record, keys)
            })
            .collect();
        // The partition keys' MD5, several at a time.
        let needs_hash =
            |keys: &Result<(Option<HashKey>, HashKey), _>| matches!(keys, Ok((None, _)));
        let hashed = HashKey::from_partition_keys(
            prepared
                .iter()
                .filter(|(_, keys)| needs_hash(keys))
                .map(|(record, _)| record.partition_key()),
        );
        for ((_, keys), hash) in prepared
            .iter_mut()
            .filter(|(_, keys)| needs_hash(keys))
            .zip(hashed)
        {
            if let Ok((_, h)) = keys {
                *h = hash;
            }
        }
        let mut results = Vec::with_capacity(prepared.len());
        let mut recs = Vec::with_capacity(prepared.len());
        // Buffers no larger than the put's keys and small data need.
        let mut packer = Packer::for_records(
            prepared
                .iter()
                .map(|(record, _)| (record.partition_key().len(), record.data_len())),
        );
        let mut rest = Vec::new();
        let mut held_by = None;
        {
            let mut guard = shared.lock();
            // Again under the lock `shutdown` sets it under: a put either comes
            // before the shutdown, which then waits for its records, or is refused.
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(PutError::shutting_down());
            }
            let Accounting {
                outstanding,
                records: total_records,
                bytes: total_bytes,
                ..
            } = &mut *guard;
            // The stream's entry, once per call (not a look-up and a key copy per
            // record).
            let m = outstanding
                .entry(stream_id.clone())
                .or_insert_with(|| StreamOutstanding::with_limit(drain_limit(config, 1, None)));
            let mut iter = prepared.into_iter();
            let mut joined = false;
            // Ids are given under the lock, so a plain read and write (not an atomic
            // add per record) keep them unique and in order.
            let mut next_id = self.inner.next_id.load(Ordering::Relaxed);
            while let Some((record, keys)) = iter.next() {
                let (explicit, hash_key) = match keys {
                    Ok(keys) => keys,
                    Err(e) => {
                        results.push(Err(PutError::invalid(e)));
                        continue;
                    }
                };
                let size = record.data_len() + record.partition_key().len();
                // The caller waits while the pipeline catches up, too.
                let hold = if over_caps(config, *total_records, *total_bytes, 1, size) {
                    Some(Hold::Caps)
                } else if m.over(size) {
                    Some(Hold::Backlog)
                } else if m.ingesting + recs.len() >= INGEST_LIMIT {
                    Some(Hold::Intake)
                } else {
                    None
                };
                if hold.is_some() {
                    rest.reserve_exact(iter.len() + 1);
                    rest.push(record);
                    rest.extend(iter.map(|(r, _)| r));
                    held_by = hold;
                    break;
                }
                let id = next_id;
                next_id += 1;
                self.inner.next_id.store(next_id, Ordering::Relaxed);
                *total_records += 1;
                *total_bytes += size;
                m.admit(id, now, joined);
                joined = true;
                m.bytes += size;
                let handle = issue(id, now);
                recs.push(Rec::of_body(
                    record.pack(&mut packer),
                    explicit,
                    hash_key,
                    now,
                    self.inner.shared.epoch,
                    Receipt::new(id),
                ));
                results.push(Ok(handle));
            }
            // Handed to the pipeline by the caller right after this.
            m.ingesting += recs.len();
        }
        Ok(Admission {
            stream_id,
            admitted: Admitted {
                results,
                rest,
                held_by,
            },
            recs,
        })
    }

    fn send(&self, stream: &StreamId, command: Command) {
        let mut workers = self
            .inner
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let sender = workers.entry(stream.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded();
            let worker = Worker::new(stream.clone(), self.inner.shared.clone(), rx);
            self.inner.shared.runtime.spawn(Box::pin(worker.run()));
            if self.inner.shut_down.load(Ordering::Acquire) {
                // Its records were admitted before the close, and the shutdown's
                // timeout has passed: they fail as shut down, as the others did
                // (not counted in what `shutdown` returns).
                let (report, _) = mpsc::unbounded();
                let _ = tx.unbounded_send(Command::Shutdown(report));
            }
            tx
        });
        if let Err(e) = sender.unbounded_send(command) {
            // The worker is gone (its runtime stopped): dropping the command resolves
            // its records as shut down.
            if let Command::Put(put) = e.into_inner() {
                let n = put.len();
                drop(put);
                drop(workers);
                self.inner.shared.ingested(stream, n);
            }
        }
    }

    fn send_all(&self, command: impl Fn() -> Command) {
        let workers = self
            .inner
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for sender in workers.values() {
            let _ = sender.unbounded_send(command());
        }
    }

    /// A producer sending to Kinesis through the AWS SDK, on the runtime of the
    /// crate's features (tokio when `tokio` is on, else smol).
    ///
    /// The transport takes from `config` its `Region`, `KinesisEndpoint` (and
    /// port), `ConnectTimeout`, `RequestTimeout` and `MaxConnections`; credentials
    /// come from the standard AWS chain (environment, profile, web identity,
    /// container or instance role). With tokio, call it inside a tokio runtime.
    ///
    /// When `MetricsLevel` is not `none`, metrics are uploaded to CloudWatch (at
    /// `CloudwatchEndpoint`, or the region's) every `MetricsUploadDelay` and at
    /// shutdown, as the KPL does, if the `cloudwatch` feature is on; without it they
    /// are kept in memory only (a warning says so).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use kpl_producer::{Config, Producer, PutRecord};
    ///
    /// let config = Config::builder()
    ///     .region("us-east-1")
    ///     .kinesis_endpoint("http://127.0.0.1:4567")
    ///     .build()?;
    /// let producer = Producer::from_config(config).await?;
    /// let outcome = producer
    ///     .put_record("my-stream", PutRecord::new("pk-1", b"data".to_vec()))
    ///     .await?
    ///     .await;
    /// assert!(outcome.is_success());
    /// # Ok(()) }
    /// ```
    #[cfg(all(feature = "aws", any(feature = "tokio", feature = "smol")))]
    pub async fn from_config(config: Config) -> Result<Producer, kpl_transport::BuildError> {
        let transport = config.aws_transport_builder()?.build().await?;
        let uploader = crate::upload::from_config(&config).await?;
        #[cfg(feature = "tokio")]
        let runtime = Runtime::tokio();
        #[cfg(not(feature = "tokio"))]
        let runtime = Runtime::smol();
        let mut builder = Producer::builder(config, Arc::new(transport));
        if let Some(uploader) = uploader {
            builder = builder.metrics_uploader(uploader);
        }
        Ok(builder.build(runtime))
    }

    /// What the metrics upload task did (zeros without a
    /// [`metrics_uploader`](ProducerBuilder::metrics_uploader)).
    pub fn metrics_upload_stats(&self) -> UploadStats {
        self.inner
            .upload
            .as_ref()
            .map_or_else(UploadStats::default, |u| u.counters.stats())
    }

    /// What verify before resend (`Config::verify_before_resend`) has cost and
    /// found so far, all streams together: the reads made and their bytes (the read
    /// budget spent), the Kinesis records found stored, those resent as not stored,
    /// and those resent unsettled. Zeros when it is off.
    pub fn verify_stats(&self) -> VerifyStats {
        *self
            .inner
            .shared
            .verify
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The KPL's metrics (as its `getMetrics()`): `name` only if given, over the
    /// last `window` (whole seconds up to a minute; zero for everything since the
    /// producer started), one [`Metric`] per metric and set of dimensions. Empty
    /// when `MetricsLevel` is `none` (the default). Names, units, levels and
    /// dimensions: `docs/metrics.md`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use kpl_producer::{Config, MetricName, MetricsLevel, Producer, PutRecord};
    /// use kpl_runtime::Simulation;
    /// use kpl_sim::Simulator;
    ///
    /// let sim = Simulation::new();
    /// let kinesis = Simulator::new(sim.runtime().timer().clone(), 1);
    /// kinesis.create_stream("events", 2).unwrap();
    /// let config = Config::builder().metrics_level(MetricsLevel::Detailed).build()?;
    /// let producer = Producer::builder(config, Arc::new(kinesis)).build(sim.runtime());
    /// let p = producer.clone();
    /// sim.block_on(async move {
    ///     p.put_record("events", PutRecord::new("k", "v")).await.unwrap();
    ///     p.flush().await;
    /// });
    /// let put = producer.metrics(Some(MetricName::UserRecordsPut), Duration::ZERO);
    /// assert_eq!(put[0].sum, 1.0); // all streams together first
    /// # Ok::<(), kpl_producer::ConfigError>(())
    /// ```
    pub fn metrics(&self, name: Option<MetricName>, window: Duration) -> Vec<Metric> {
        let Some(recorder) = &self.inner.metrics else {
            return Vec::new();
        };
        recorder.sample_pending(self.outstanding_records());
        recorder.metrics(name, window)
    }

    /// Records accepted and not yet resolved.
    pub fn outstanding_records(&self) -> usize {
        self.inner.shared.lock().records
    }

    /// How long the oldest unresolved record has waited.
    pub fn oldest_record_age(&self) -> Option<Duration> {
        let now = self.inner.shared.runtime.now();
        let acc = self.inner.shared.lock();
        acc.outstanding
            .values()
            .filter_map(|m| m.oldest().map(|(_, t)| t))
            .min()
            .map(|t| now.saturating_duration_since(t))
    }

    /// Sends everything buffered now and resolves when every record put before the
    /// call has its outcome.
    pub async fn flush(&self) {
        self.flush_inner(None).await;
    }

    /// Like [`flush`](Self::flush), for one stream.
    pub async fn flush_stream(&self, stream: &str) {
        self.flush_inner(Some(StreamId::parse(stream))).await;
    }

    async fn flush_inner(&self, stream: Option<StreamId>) {
        let target = self.inner.next_id.load(Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut acc = self.inner.shared.lock();
            if acc.flushed(stream.as_ref(), target) {
                return;
            }
            acc.flush_waiters.push((stream.clone(), target, tx));
        }
        match &stream {
            Some(s) => self.send(s, Command::Flush),
            None => self.send_all(|| Command::Flush),
        }
        let _ = rx.await;
    }

    /// Stops accepting records, flushes, and waits up to `timeout` for every record's
    /// outcome; then resolves whatever is still buffered or waiting as failed with a
    /// `Shutdown` attempt. Records in requests already sent keep their true outcome
    /// (their requests end within the request timeout): stored, or, when the request
    /// hands them back to be retried, failed as shut down after that attempt (never
    /// retried until their time to live). A put on another thread meanwhile is
    /// either refused ([`PutError::is_shutting_down`]) or admitted before the
    /// shutdown began, and then waited for. Returns the number of records failed as
    /// shut down when the timeout passed.
    pub async fn shutdown(&self, timeout: Duration) -> usize {
        {
            // Under the lock puts admit records under (see `admit`).
            let _acc = self.inner.shared.lock();
            self.inner.closed.store(true, Ordering::Release);
        }
        let runtime = self.inner.shared.runtime.clone();
        let deadline = runtime.now() + timeout;
        let flush = Box::pin(self.flush());
        let sleep = runtime.sleep_until(deadline);
        futures::future::select(flush, sleep).await;
        let before = self.outstanding_records();
        if before == 0 {
            self.send_all(|| Command::Stop);
            self.last_metrics_upload(deadline).await;
            return 0;
        }
        let (tx, rx) = mpsc::unbounded();
        {
            let workers = self
                .inner
                .workers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.inner.shut_down.store(true, Ordering::Release);
            for sender in workers.values() {
                let _ = sender.unbounded_send(Command::Shutdown(tx.clone()));
            }
        }
        drop(tx);
        let failed: Vec<usize> = futures::StreamExt::collect(rx).await;
        // Whatever was in flight resolves when its request ends.
        self.flush().await;
        self.last_metrics_upload(deadline).await;
        failed.into_iter().sum()
    }

    /// The metrics upload's last batch, waited for until `deadline` but no more
    /// than [`LAST_UPLOAD_WAIT`] (at least a second, so that a zero shutdown
    /// timeout still sends it): an unreachable metrics endpoint never holds up a
    /// shutdown whose records are settled.
    async fn last_metrics_upload(&self, deadline: Instant) {
        let Some(upload) = &self.inner.upload else {
            return;
        };
        let runtime = self.inner.shared.runtime.clone();
        let now = runtime.now();
        let deadline = deadline
            .min(now + LAST_UPLOAD_WAIT)
            .max(now + Duration::from_secs(1));
        let finish = Box::pin(upload.finish());
        futures::future::select(finish, runtime.sleep_until(deadline)).await;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Workers see their command channel close, finish what they hold, and stop.
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

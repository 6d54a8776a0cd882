//! The native producer: a [`kpl::Producer`] on a tokio runtime of its own, its
//! outcomes handed to Python in batches.

use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kpl::codec::RecordLimits;
use kpl::{Config, MetricName, OutcomeBatch, Outcomes, PutError, PutRecordRef, RecordResult};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

/// Worker threads of each producer's tokio runtime: the pipeline is light, and the
/// machine belongs to the Python program. One: a second worker on a 2-core machine
/// cost 6 % more process CPU per `put_record` and 15 % more per `put_records`
/// (docs/python.md), in wakeups and in tasks handed between the two.
const RUNTIME_THREADS: usize = 1;

/// The longest one wait of the outcome thread on the queue (it is woken at once when
/// an outcome comes; this only bounds how long a wait may outlive a record).
const OUTCOME_WAIT: Duration = Duration::from_secs(60);

/// What the outcome thread waits for when no record is outstanding: a put, or the
/// end.
#[derive(Default)]
struct Wake {
    closed: Mutex<bool>,
    cv: Condvar,
    /// Whether the outcome thread sleeps on `cv` (or is about to): only then does a
    /// put wake it (a wake is a system call).
    sleeping: AtomicBool,
}

impl Wake {
    /// After records were admitted (their outcomes now pending).
    fn put(&self) {
        // Pairs with the fence in `drain`: either this sees the thread sleeping, or
        // the thread sees the records pending.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            let _guard = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
            self.cv.notify_one();
        }
    }

    fn close(&self) {
        *self.closed.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.cv.notify_one();
    }
}

/// A metric as Python gets it: name, dimensions, count, sum, min, max.
type MetricRow = (
    &'static str,
    Vec<(&'static str, String)>,
    u64,
    f64,
    f64,
    f64,
);

/// A key of a `.properties` text that changes nothing, and why.
type Ignored = (String, &'static str);

/// Time of the pipeline (`Instant`) as Python's `time.monotonic()` seconds.
#[derive(Clone, Copy)]
struct Clock {
    instant: Instant,
    monotonic: f64,
}

impl Clock {
    fn seconds(&self, t: Instant) -> f64 {
        match t.checked_duration_since(self.instant) {
            Some(after) => self.monotonic + after.as_secs_f64(),
            None => self.monotonic - self.instant.duration_since(t).as_secs_f64(),
        }
    }
}

/// A producer for `kpl_rs.Producer` and `kpl_rs.SyncProducer`.
///
/// `NativeProducer(settings, deliver, make_result, properties=None,
/// credentials=None, cloudwatch=None)`: `credentials` is `(access_key_id,
/// secret_access_key)`, instead of the AWS chain's; `settings` maps KPL keys
/// (`RecordTtl`) to values as a `.properties` file gives them, applied over
/// `properties` (the text of one); `deliver(batch)` is called from a thread of the
/// producer with each batch of outcomes, a list of `(id, result)`, each result
/// made by `make_result(success, shard_id, sequence_number, attempts)` (once for
/// the records whose outcomes are the same, as those of one aggregate; when it
/// raises, `deliver(failed, True)` gets `(id, exception)` for those records), each
/// attempt `(started_at, ended_at, success, shard_id, sequence_number, error_code,
/// error_message, may_have_been_stored)` with times as Python's `time.monotonic()`
/// gives them.
/// `cloudwatch`, a dict of `region`, `endpoint_url`, `verify_ssl`,
/// `access_key_id` and `secret_access_key`, makes the producer upload its metrics
/// there (kpl-rs' CloudWatch upload, every `MetricsUploadDelay` and at close).
#[pyclass(module = "kpl_rs._native", frozen, weakref)]
pub(crate) struct NativeProducer {
    producer: kpl::Producer,
    outcomes: Outcomes,
    limits: RecordLimits,
    wake: Arc<Wake>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    drain: Mutex<Option<JoinHandle<()>>>,
    /// Until `close`: where callbacks go, and the thread that calls them.
    callbacks: Mutex<Option<(Callbacks, JoinHandle<()>)>>,
    closed: AtomicBool,
    pid: u32,
}

fn build_config(settings: &Bound<'_, PyDict>, properties: Option<&str>) -> PyResult<Config> {
    let mut builder = match properties {
        Some(text) => Config::from_kpl_properties(text)
            .map_err(|e| PyValueError::new_err(e.to_string()))?
            .0
            .to_builder(),
        None => Config::builder(),
    };
    for (key, value) in settings.iter() {
        let key: String = key.extract()?;
        let value: String = value.extract()?;
        let setting = Config::settings()
            .iter()
            .find(|s| s.key() == key)
            .ok_or_else(|| PyValueError::new_err(format!("no setting {key}")))?;
        builder = setting
            .apply(builder, &value)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
    }
    builder
        .build()
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// An error and its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn put_error(e: &PutError) -> PyErr {
    if e.is_invalid() {
        PyValueError::new_err(chain(e))
    } else {
        PyRuntimeError::new_err("the producer is closed")
    }
}

/// Python strings of the last shard id and sequence number seen: the user records
/// of one aggregate share them (one `Arc<str>` each), so a batch makes each once.
#[derive(Default)]
struct Strings<'py> {
    shard: Option<(Arc<str>, Bound<'py, PyString>)>,
    sequence: Option<(Arc<str>, Bound<'py, PyString>)>,
}

fn cached<'py>(
    py: Python<'py>,
    slot: &mut Option<(Arc<str>, Bound<'py, PyString>)>,
    text: Option<&Arc<str>>,
) -> Option<Bound<'py, PyString>> {
    let text = text?;
    if let Some((kept, string)) = slot
        && Arc::ptr_eq(kept, text)
    {
        return Some(string.clone());
    }
    let string = PyString::new(py, text);
    *slot = Some((text.clone(), string.clone()));
    Some(string)
}

/// The native side's outcome as `make_result(success, shard_id, sequence_number,
/// attempts)` takes it (Python's `RecordResult` of it).
fn python_result<'py>(
    py: Python<'py>,
    clock: &Clock,
    strings: &mut Strings<'py>,
    result: &RecordResult,
    make_result: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let last = result.attempts.len().saturating_sub(1);
    let sequence = cached(py, &mut strings.sequence, result.sequence_number.as_ref());
    let attempts = result
        .attempts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let started = clock.seconds(a.started);
            let error = a.error();
            // The sequence number is the stored attempt's (the last, when stored).
            let stored = (i == last && result.is_success())
                .then(|| sequence.clone())
                .flatten();
            (
                started,
                started + a.duration.as_secs_f64(),
                a.is_success(),
                cached(py, &mut strings.shard, a.shard_id.as_ref()),
                stored,
                error.map(|e| e.code.as_str()),
                error.map(|e| e.message.as_str()),
                a.may_have_been_stored(),
            )
                .into_pyobject(py)
        })
        .collect::<PyResult<Vec<_>>>()?;
    make_result.call1((
        result.is_success(),
        cached(py, &mut strings.shard, result.shard_id.as_ref()),
        sequence,
        PyTuple::new(py, attempts)?,
    ))
}

/// Whether two outcomes are one and the same to Python: everything Python's
/// `RecordResult` holds is equal. The user records of one aggregate have such
/// outcomes (one request, one shard, one sequence number); only the time each
/// waited before its first attempt, which Python does not see, differs.
fn same_to_python(a: &RecordResult, b: &RecordResult) -> bool {
    a.is_success() == b.is_success()
        && a.shard_id == b.shard_id
        && a.sequence_number == b.sequence_number
        && a.attempts.len() == b.attempts.len()
        && a.attempts.iter().zip(b.attempts.iter()).all(|(x, y)| {
            x.started == y.started
                && x.duration == y.duration
                && x.shard_id == y.shard_id
                && x.outcome == y.outcome
        })
}

/// One batch of outcomes as `deliver` takes it: `(id, RecordResult)` for each
/// record. A `RecordResult` is frozen, so the records whose outcomes are the same
/// to Python (those of one aggregate, delivered together) share one, made once.
/// A record whose result could not be made (`make_result` raised) is in the second
/// list, with the exception: the others are delivered all the same.
fn python_batch<'py>(
    py: Python<'py>,
    clock: &Clock,
    batch: OutcomeBatch,
    make_result: &Bound<'py, PyAny>,
) -> (Vec<Bound<'py, PyTuple>>, Vec<(u64, PyErr)>) {
    let mut strings = Strings::default();
    let mut last: Option<(RecordResult, Bound<'py, PyAny>)> = None;
    let mut items = Vec::with_capacity(batch.len());
    let mut failed = Vec::new();
    for (id, result) in batch {
        let object = match &last {
            Some((kept, object)) if same_to_python(kept, &result) => Ok(object.clone()),
            _ => python_result(py, clock, &mut strings, &result, make_result).inspect(|object| {
                last = Some((result, object.clone()));
            }),
        };
        match object.and_then(|object| (id.0, object).into_pyobject(py)) {
            Ok(item) => items.push(item),
            Err(e) => failed.push((id.0, e)),
        }
    }
    (items, failed)
}

/// Starts a thread named `name` that runs `body` attached to the interpreter for
/// its whole life (detaching only while it waits): one Python thread state, made
/// once. Attaching anew for each piece of work makes and deletes a thread state
/// each time, and the deletion unmaps its frame stack, a system call that waits on
/// the main thread's page faults. Returns once the thread is attached, so that it
/// never first attaches late, when the interpreter may be finalizing. It comes
/// back after each wait: were that during finalization, PyO3 would park it for
/// good (harmless, the process is ending, but an outcome would be lost), so
/// `kpl_rs` closes at exit, before finalization, every producer left open, and
/// their threads end first.
fn start_attached(
    py: Python<'_>,
    name: &str,
    body: impl FnOnce(Python<'_>) + Send + 'static,
) -> PyResult<JoinHandle<()>> {
    let (attached, started) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            Python::attach(|py| {
                let _ = attached.send(());
                body(py);
            });
        })
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start a thread: {e}")))?;
    py.detach(move || started.recv())
        .map_err(|_| PyRuntimeError::new_err(format!("the thread {name} ended at its start")))?;
    Ok(thread)
}

/// The outcome thread: waits for outcomes and hands each batch to `deliver`.
fn drain(
    py: Python<'_>,
    outcomes: Outcomes,
    wake: Arc<Wake>,
    deliver: Py<PyAny>,
    make_result: Py<PyAny>,
    clock: Clock,
) {
    while let Some(batch) = py.detach(|| next_batch(&outcomes, &wake)) {
        let (items, failed) = python_batch(py, &clock, batch, make_result.bind(py));
        let delivered = PyList::new(py, items).and_then(|list| deliver.call1(py, (list,)));
        if let Err(e) = delivered {
            e.print(py);
        }
        if !failed.is_empty() {
            let failed = failed.into_iter().map(|(id, e)| (id, e.into_value(py)));
            let delivered =
                PyList::new(py, failed).and_then(|list| deliver.call1(py, (list, true)));
            if let Err(e) = delivered {
                e.print(py);
            }
        }
    }
}

/// The next batch of outcomes, waiting for it; `None` once the producer is closed
/// and none is pending.
fn next_batch(outcomes: &Outcomes, wake: &Wake) -> Option<OutcomeBatch> {
    loop {
        {
            let mut closed = wake.closed.lock().unwrap_or_else(PoisonError::into_inner);
            wake.sleeping.store(true, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            while outcomes.pending() == 0 {
                if *closed {
                    return None;
                }
                closed = wake.cv.wait(closed).unwrap_or_else(PoisonError::into_inner);
            }
            wake.sleeping.store(false, Ordering::Relaxed);
        }
        let batch = outcomes.wait(OUTCOME_WAIT);
        if !batch.is_empty() {
            return Some(batch);
        }
    }
}

/// Where metrics are uploaded (Python's `CloudWatchSink`).
struct CloudWatchSettings {
    region: String,
    endpoint_url: Option<String>,
    verify_ssl: bool,
    credentials: Option<(String, String)>,
}

impl CloudWatchSettings {
    fn of(d: &Bound<'_, PyDict>) -> PyResult<Self> {
        let get = |key: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
            d.get_item(key)?
                .filter(|v| !v.is_none())
                .map_or(Ok(None), |v| Ok(Some(v)))
        };
        let text =
            |key: &str| -> PyResult<Option<String>> { get(key)?.map(|v| v.extract()).transpose() };
        let credentials = match (text("access_key_id")?, text("secret_access_key")?) {
            (Some(id), Some(secret)) => Some((id, secret)),
            _ => None,
        };
        Ok(Self {
            region: text("region")?
                .ok_or_else(|| PyValueError::new_err("CloudWatch needs a region"))?,
            endpoint_url: text("endpoint_url")?,
            verify_ssl: get("verify_ssl")?
                .map(|v| v.extract())
                .transpose()?
                .unwrap_or(true),
            credentials,
        })
    }

    async fn client(self) -> Result<kpl::CloudWatch, kpl::BuildError> {
        let transport = kpl::AwsTransport::builder()
            .region(self.region)
            .verify_certificate(self.verify_ssl);
        let mut builder = kpl::CloudWatchBuilder::from_transport_settings(transport);
        if let Some(url) = self.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        if let Some((id, secret)) = self.credentials {
            builder = builder.static_credentials(id, secret);
        }
        builder.build().await
    }
}

/// Where the producer's threads send the callbacks Python asked for (room, flush):
/// a thread of their own calls them, attached to the interpreter for its whole
/// life as the outcome thread is (see [`start_attached`]), off the runtime's worker
/// threads.
#[derive(Clone)]
struct Callbacks(tokio::sync::mpsc::UnboundedSender<Py<PyAny>>);

impl Callbacks {
    /// The sender, and the thread that calls what it sends until every sender is
    /// dropped.
    fn start(py: Python<'_>) -> PyResult<(Self, JoinHandle<()>)> {
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Py<PyAny>>();
        let thread = start_attached(py, "kpl_rs-callbacks", move |py| {
            while let Some(callback) = py.detach(|| receiver.blocking_recv()) {
                if let Err(e) = callback.call0(py) {
                    e.print(py);
                }
            }
        })?;
        Ok((Self(sender), thread))
    }

    /// `callback` as a [`Callback`]: called once, when dropped.
    fn callback(&self, callback: Py<PyAny>) -> Callback {
        Callback {
            to: self.clone(),
            callback: Some(callback),
        }
    }
}

/// A callback Python waits for, called (by the callbacks thread) when this is
/// dropped: when its task is done, or when the task is dropped unfinished, as the
/// runtime drops the tasks it has not finished when the producer closes (one woken
/// and not polled yet among them). So no caller waits for a callback that never
/// comes.
struct Callback {
    to: Callbacks,
    callback: Option<Py<PyAny>>,
}

impl Drop for Callback {
    fn drop(&mut self) {
        if let Some(callback) = self.callback.take() {
            // Sent before this sender goes: the thread calls it before it ends.
            let _ = self.to.0.send(callback);
        }
    }
}

/// A record of Python's `(partition_key, data)` or `(partition_key, data,
/// explicit_hash_key)`, data `bytes` or anything `bytes()` takes: its Python
/// objects, which the record borrows from ([`PyRecord::borrowed`]) while they are
/// held here.
struct PyRecord<'py> {
    key: Bound<'py, PyString>,
    data: Bound<'py, PyBytes>,
    explicit: Option<Bound<'py, PyString>>,
}

impl PyRecord<'_> {
    /// The record, borrowed from its Python objects (immutable: read without the
    /// interpreter while they are held) and copied once, when the producer admits
    /// it.
    fn borrowed(&self) -> PyResult<PutRecordRef<'_>> {
        let mut record = PutRecordRef::new(self.key.to_str()?, self.data.as_bytes());
        if let Some(explicit) = &self.explicit {
            record = record.explicit_hash_key(explicit.to_str()?);
        }
        Ok(record)
    }
}

/// The Python objects of a record ([`PyRecord`]).
fn py_record_of<'py>(item: &Bound<'py, PyAny>) -> PyResult<PyRecord<'py>> {
    let py = item.py();
    let fields = item.cast::<PyTuple>().map_err(|_| {
        PyTypeError::new_err("a record is a tuple (partition_key, data[, explicit_hash_key])")
    })?;
    let explicit = match fields.len() {
        2 => None,
        3 => {
            let explicit = fields.get_item(2)?;
            if explicit.is_none() {
                None
            } else {
                Some(explicit.cast_into::<PyString>()?)
            }
        }
        n => {
            return Err(PyTypeError::new_err(format!(
                "a record is (partition_key, data[, explicit_hash_key]), not {n} values"
            )));
        }
    };
    let key = fields.get_item(0)?.cast_into::<PyString>()?;
    let data = fields.get_item(1)?;
    let data = match data.cast_into::<PyBytes>() {
        Ok(bytes) => bytes,
        Err(e) => py
            .get_type::<PyBytes>()
            .call1((e.into_inner(),))?
            .cast_into::<PyBytes>()?,
    };
    Ok(PyRecord {
        key,
        data,
        explicit,
    })
}

#[pymethods]
impl NativeProducer {
    #[new]
    #[pyo3(signature = (settings, deliver, make_result, properties=None, credentials=None, cloudwatch=None))]
    fn new(
        py: Python<'_>,
        settings: &Bound<'_, PyDict>,
        deliver: Py<PyAny>,
        make_result: Py<PyAny>,
        properties: Option<&str>,
        credentials: Option<(String, String)>,
        cloudwatch: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let cloudwatch = cloudwatch.map(CloudWatchSettings::of).transpose()?;
        let clock = Clock {
            instant: Instant::now(),
            monotonic: py.import("time")?.call_method0("monotonic")?.extract()?,
        };
        let config = build_config(settings, properties)?;
        let limits = RecordLimits::new(config.max_user_record_size())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("kpl_rs")
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start a runtime: {e}")))?;
        let producer = py.detach(|| {
            runtime.block_on(async {
                let mut transport = config.aws_transport_builder()?;
                if let Some((id, secret)) = credentials {
                    transport = transport.static_credentials(id, secret);
                }
                let transport = transport.build().await?;
                let mut builder = kpl::Producer::builder(config, Arc::new(transport));
                if let Some(cw) = cloudwatch {
                    let client = cw.client().await?;
                    builder =
                        builder.metrics_uploader(Arc::new(kpl::CloudWatchUploader::new(client)));
                }
                Ok::<_, kpl::BuildError>(builder.build(kpl::Runtime::tokio()))
            })
        });
        // The callbacks' thread first: it ends by itself when its sender goes, as
        // it does if the outcome thread cannot start.
        let started = producer
            .map_err(|e| PyRuntimeError::new_err(chain(&e)))
            .and_then(|producer| {
                let callbacks = Callbacks::start(py)?;
                let outcomes = Outcomes::new();
                let wake = Arc::new(Wake::default());
                let thread = {
                    let (outcomes, wake) = (outcomes.clone(), wake.clone());
                    start_attached(py, "kpl_rs-outcomes", move |py| {
                        drain(py, outcomes, wake, deliver, make_result, clock)
                    })?
                };
                Ok((producer, callbacks, outcomes, wake, thread))
            });
        let (producer, callbacks, outcomes, wake, thread) = match started {
            Ok(started) => started,
            Err(e) => {
                // Its worker threads are joined: not while holding the interpreter.
                py.detach(|| drop(runtime));
                return Err(e);
            }
        };
        Ok(Self {
            producer,
            outcomes,
            limits,
            wake,
            runtime: Mutex::new(Some(runtime)),
            drain: Mutex::new(Some(thread)),
            callbacks: Mutex::new(Some(callbacks)),
            closed: AtomicBool::new(false),
            pid: std::process::id(),
        })
    }

    /// Puts one record without waiting: its id, or `None` when the record is held
    /// back (then wait with `wait_for_room` and put it again). Invalid: `ValueError`.
    #[pyo3(signature = (stream, partition_key, data, explicit_hash_key=None))]
    fn put(
        &self,
        py: Python<'_>,
        stream: &str,
        partition_key: &Bound<'_, PyString>,
        data: &Bound<'_, PyBytes>,
        explicit_hash_key: Option<&Bound<'_, PyString>>,
    ) -> PyResult<Option<u64>> {
        self.check()?;
        let held = PyRecord {
            key: partition_key.clone(),
            data: data.clone(),
            explicit: explicit_hash_key.cloned(),
        };
        let record = held.borrowed()?;
        // Its data is copied once, in Rust, without the interpreter.
        let admitted = py
            .detach(|| {
                self.producer
                    .try_put_record_refs_to(stream, &[record], &self.outcomes)
            })
            .map_err(|e| put_error(&e))?;
        match admitted.results.into_iter().next() {
            Some(Ok(id)) => {
                self.wake.put();
                Ok(Some(id.0))
            }
            Some(Err(e)) => Err(put_error(&e)),
            None => Ok(None),
        }
    }

    /// Checks a record as Kinesis would (the size is data plus partition key):
    /// `ValueError` saying why if it would be refused.
    #[pyo3(signature = (partition_key, data_len, explicit_hash_key=None))]
    fn check_record(
        &self,
        partition_key: &str,
        data_len: usize,
        explicit_hash_key: Option<&str>,
    ) -> PyResult<()> {
        self.limits
            .validate(partition_key, explicit_hash_key, data_len)
            .map(drop)
            .map_err(|e| PyValueError::new_err(chain(&e)))
    }

    /// Puts records `(partition_key, data[, explicit_hash_key])` without waiting:
    /// checks them all first (the first invalid one is a `ValueError` and nothing is
    /// put), then admits them in order while there is room. Returns the ids of those
    /// admitted (the first ones); the others are to be put again after
    /// `wait_for_room`.
    fn put_many(
        &self,
        py: Python<'_>,
        stream: String,
        records: &Bound<'_, PyList>,
    ) -> PyResult<Vec<u64>> {
        self.check()?;
        // The records' Python objects, held while Rust reads them, then each record
        // borrowed from them: copied once, when admitted.
        let at = |i: usize, e: PyErr| PyTypeError::new_err(format!("record {i}: {}", e.value(py)));
        let held = records
            .iter()
            .enumerate()
            .map(|(i, item)| py_record_of(&item).map_err(|e| at(i, e)))
            .collect::<PyResult<Vec<_>>>()?;
        let records = held
            .iter()
            .enumerate()
            .map(|(i, r)| r.borrowed().map_err(|e| at(i, e)))
            .collect::<PyResult<Vec<_>>>()?;
        for (i, r) in records.iter().enumerate() {
            self.limits
                .validate(r.partition_key, r.explicit_hash_key, r.data.len())
                .map_err(|e| PyValueError::new_err(format!("record {i}: {}", chain(&e))))?;
        }
        let admitted = py
            .detach(|| {
                self.producer
                    .try_put_record_refs_to(&stream, &records, &self.outcomes)
            })
            .map_err(|e| put_error(&e))?;
        let ids = admitted
            .results
            .into_iter()
            .map(|r| r.map(|id| id.0).map_err(|e| put_error(&e)))
            .collect::<PyResult<Vec<_>>>()?;
        if !ids.is_empty() {
            self.wake.put();
        }
        Ok(ids)
    }

    /// Calls `callback()` (from a thread of the producer) when a record of `size`
    /// bytes would be let into `stream`, or the producer closes: once, unless this
    /// raises.
    fn wait_for_room(&self, stream: String, size: usize, callback: Py<PyAny>) -> PyResult<()> {
        self.check()?;
        let producer = self.producer.clone();
        self.spawn_calling(callback, async move {
            producer.wait_for_room(&stream, size).await;
        })
    }

    /// Sends everything buffered now; calls `callback()` (from a thread of the
    /// producer) when every record put before has its outcome, or the producer
    /// closes: once, unless this raises.
    fn flush(&self, callback: Py<PyAny>) -> PyResult<()> {
        self.check()?;
        let producer = self.producer.clone();
        self.spawn_calling(callback, async move {
            producer.flush().await;
        })
    }

    /// Flushes, waiting up to `timeout` seconds, then fails what is left as shut
    /// down; the last outcomes are delivered before it returns. Returns how many
    /// records failed as shut down. A second call does nothing.
    fn close(&self, py: Python<'_>, timeout: f64) -> PyResult<usize> {
        self.check_process()?;
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(0);
        }
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let drain = self
            .drain
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let callbacks = self
            .callbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let timeout = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::MAX);
        Ok(py.detach(|| {
            let failed = runtime
                .as_ref()
                .map_or(0, |rt| rt.block_on(self.producer.shutdown(timeout)));
            // The runtime first: a task it drops unfinished answers its records as
            // shut down (onto the queue the outcome thread empties before it ends)
            // and has its callback called.
            if let Some(rt) = runtime {
                rt.shutdown_timeout(Duration::from_secs(1));
            }
            self.wake.close();
            if let Some(thread) = drain {
                let _ = thread.join();
            }
            // The tasks that held a sender are gone with the runtime: the thread
            // ends once it has called what they sent.
            if let Some((sender, thread)) = callbacks {
                drop(sender);
                let _ = thread.join();
            }
            failed
        }))
    }

    /// Records accepted and not yet resolved. `RuntimeError` in a forked child.
    #[getter]
    fn outstanding_records(&self) -> PyResult<usize> {
        self.check_process()?;
        Ok(self.producer.outstanding_records())
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The KPL's metrics over the last `window` seconds (0: since the start): a list
    /// of `(name, dimensions, count, sum, min, max)`, dimensions a tuple of
    /// `(name, value)` (`StreamName`, `ShardId`, `ErrorCode`), empty for all streams
    /// together. `name` limits it to one metric (as the KPL names it).
    #[pyo3(signature = (name=None, window=60.0))]
    fn metrics(&self, py: Python<'_>, name: Option<&str>, window: f64) -> PyResult<Vec<MetricRow>> {
        let name = match name {
            Some(n) => Some(
                MetricName::ALL
                    .into_iter()
                    .find(|m| m.as_str() == n)
                    .ok_or_else(|| PyValueError::new_err(format!("no metric {n}")))?,
            ),
            None => None,
        };
        let window = Duration::try_from_secs_f64(window.max(0.0)).unwrap_or(Duration::ZERO);
        let metrics = py.detach(|| self.producer.metrics(name, window));
        Ok(metrics
            .into_iter()
            .map(|m| {
                (
                    m.name.as_str(),
                    m.dimensions,
                    m.sample_count,
                    m.sum,
                    m.min,
                    m.max,
                )
            })
            .collect())
    }
}

impl NativeProducer {
    fn check_process(&self) -> PyResult<()> {
        if std::process::id() != self.pid {
            return Err(PyRuntimeError::new_err(
                "this kpl_rs producer was made in another process (the parent of a fork): \
                 its threads are not in this one; make a producer in each process",
            ));
        }
        Ok(())
    }

    fn check(&self) -> PyResult<()> {
        self.check_process()?;
        if self.closed.load(Ordering::Acquire) {
            return Err(PyRuntimeError::new_err("the producer is closed"));
        }
        Ok(())
    }

    /// Runs `work` on the runtime, then has `callback()` called; called once in
    /// any case unless this raises (see [`Callback`]).
    fn spawn_calling(
        &self,
        callback: Py<PyAny>,
        work: impl Future<Output = ()> + Send + 'static,
    ) -> PyResult<()> {
        let closed = || PyRuntimeError::new_err("the producer is closed");
        // `close` takes the runtime, then the callbacks: while the runtime is here,
        // so are they.
        let runtime = self.runtime.lock().unwrap_or_else(PoisonError::into_inner);
        let runtime = runtime.as_ref().ok_or_else(closed)?;
        let callback = self
            .callbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .ok_or_else(closed)?
            .0
            .callback(callback);
        runtime.spawn(async move {
            work.await;
            drop(callback);
        });
        Ok(())
    }
}

impl Drop for NativeProducer {
    fn drop(&mut self) {
        let runtime = self
            .runtime
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if std::process::id() != self.pid {
            // A forked child: the runtime's threads are the parent's; waiting for them
            // would never end.
            std::mem::forget(runtime);
            return;
        }
        self.wake.close();
        if let Some(rt) = runtime {
            // Not closed: the records still outstanding are dropped with it.
            rt.shutdown_background();
        }
    }
}

/// The names of every metric kpl-rs records, as the KPL names them.
#[pyfunction]
pub(crate) fn metric_names() -> Vec<&'static str> {
    MetricName::ALL
        .into_iter()
        .map(MetricName::as_str)
        .collect()
}

/// Every setting kpl-rs has: `(key, default, allowed, doc)`, keys as the KPL spells
/// them.
#[pyfunction]
pub(crate) fn settings() -> Vec<(&'static str, String, &'static str, &'static str)> {
    Config::settings()
        .iter()
        .map(|s| (s.key(), s.default_value(), s.allowed(), s.doc()))
        .collect()
}

/// Reads a KPL `.properties` text: the values of the settings aiokpl's `Config`
/// has too (by KPL key), and the keys that change nothing with the reason of each.
/// A bad value is a `ValueError` naming its key and line.
#[pyfunction]
pub(crate) fn parse_kpl_properties<'py>(
    py: Python<'py>,
    text: &str,
) -> PyResult<(Bound<'py, PyDict>, Vec<Ignored>)> {
    let (c, ignored) =
        Config::from_kpl_properties(text).map_err(|e| PyValueError::new_err(e.to_string()))?;
    // By field (the getter's name), written under the setting's key as the table
    // gives it.
    let level = match c.metrics_level() {
        kpl::MetricsLevel::None => "none",
        kpl::MetricsLevel::Summary => "summary",
        _ => "detailed",
    };
    let ms = |d: Duration| d.as_millis().into_pyobject(py).map(Bound::into_any);
    let fields = [
        ("region", c.region().into_pyobject(py)?.into_any()),
        (
            "kinesis_endpoint",
            c.kinesis_endpoint().into_pyobject(py)?.into_any(),
        ),
        (
            "verify_certificate",
            c.verify_certificate()
                .into_pyobject(py)?
                .to_owned()
                .into_any(),
        ),
        (
            "aggregation_enabled",
            c.aggregation_enabled()
                .into_pyobject(py)?
                .to_owned()
                .into_any(),
        ),
        (
            "aggregation_max_count",
            c.aggregation_max_count().into_pyobject(py)?.into_any(),
        ),
        (
            "aggregation_max_size",
            c.aggregation_max_size().into_pyobject(py)?.into_any(),
        ),
        (
            "record_max_buffered_time",
            ms(c.record_max_buffered_time())?,
        ),
        ("record_ttl", ms(c.record_ttl())?),
        (
            "collection_max_count",
            c.collection_max_count().into_pyobject(py)?.into_any(),
        ),
        (
            "collection_max_size",
            c.collection_max_size().into_pyobject(py)?.into_any(),
        ),
        ("rate_limit", c.rate_limit().into_pyobject(py)?.into_any()),
        (
            "fail_if_throttled",
            c.fail_if_throttled()
                .into_pyobject(py)?
                .to_owned()
                .into_any(),
        ),
        (
            "ordered",
            c.ordered().into_pyobject(py)?.to_owned().into_any(),
        ),
        (
            "verify_before_resend",
            c.verify_before_resend()
                .into_pyobject(py)?
                .to_owned()
                .into_any(),
        ),
        ("metrics_upload_delay", ms(c.metrics_upload_delay())?),
        ("metrics_level", level.into_pyobject(py)?.into_any()),
    ];
    let values = PyDict::new(py);
    for (field, value) in fields {
        let key = Config::settings()
            .iter()
            .find(|s| s.field() == Some(field))
            .map(|s| s.key())
            .ok_or_else(|| PyRuntimeError::new_err(format!("no setting of field {field}")))?;
        values.set_item(key, value)?;
    }
    Ok((
        values,
        ignored.into_iter().map(|i| (i.key, i.reason)).collect(),
    ))
}

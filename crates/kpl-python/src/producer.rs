//! The native producer: a [`kpl::Producer`] on a tokio runtime of its own, its
//! outcomes handed to Python in batches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kpl::codec::RecordLimits;
use kpl::{Config, MetricName, Outcomes, PutError, PutRecord, RecordResult};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

/// Worker threads of each producer's tokio runtime: the pipeline is light, and the
/// machine belongs to the Python program.
const RUNTIME_THREADS: usize = 2;

/// The longest one wait of the outcome thread on the queue (it is woken at once when
/// an outcome comes; this only bounds how long a wait may outlive a record).
const OUTCOME_WAIT: Duration = Duration::from_secs(60);

/// What the outcome thread waits for when no record is outstanding: a put, or the
/// end.
#[derive(Default)]
struct Wake {
    closed: Mutex<bool>,
    cv: Condvar,
}

impl Wake {
    fn put(&self) {
        let _guard = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
        self.cv.notify_one();
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
/// `NativeProducer(settings, deliver, monotonic, properties=None,
/// access_key_id=None, secret_access_key=None)`: `settings` maps KPL keys
/// (`RecordTtl`) to values as a `.properties` file gives them, applied over
/// `properties` (the text of one); `deliver(batch)` is called from a thread of the
/// producer with each batch of outcomes, a list of `(id, success, shard_id,
/// sequence_number, attempts)`, each attempt `(started_at, ended_at, success,
/// shard_id, sequence_number, error_code, error_message, may_have_been_stored)`
/// with times on the clock of `monotonic` (Python's `time.monotonic()` now).
#[pyclass(module = "kpl_rs._native", frozen)]
pub(crate) struct NativeProducer {
    producer: kpl::Producer,
    outcomes: Outcomes,
    limits: RecordLimits,
    wake: Arc<Wake>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    drain: Mutex<Option<JoinHandle<()>>>,
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

fn outcome_tuple<'py>(
    py: Python<'py>,
    clock: &Clock,
    id: u64,
    result: &RecordResult,
) -> PyResult<Bound<'py, PyTuple>> {
    let last = result.attempts.len().saturating_sub(1);
    let attempts = result
        .attempts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let started = clock.seconds(a.started);
            let error = a.error();
            // The sequence number is the stored attempt's (the last, when stored).
            let sequence = (i == last && result.is_success())
                .then_some(result.sequence_number.as_deref())
                .flatten();
            (
                started,
                started + a.duration.as_secs_f64(),
                a.is_success(),
                a.shard_id.as_deref(),
                sequence,
                error.map(|e| e.code.as_str()),
                error.map(|e| e.message.as_str()),
                a.may_have_been_stored(),
            )
                .into_pyobject(py)
        })
        .collect::<PyResult<Vec<_>>>()?;
    (
        id,
        result.is_success(),
        result.shard_id.as_deref(),
        result.sequence_number.as_deref(),
        PyTuple::new(py, attempts)?,
    )
        .into_pyobject(py)
}

/// The outcome thread: waits for outcomes and hands each batch to `deliver`.
fn drain(outcomes: Outcomes, wake: Arc<Wake>, deliver: Py<PyAny>, clock: Clock) {
    loop {
        {
            let mut closed = wake.closed.lock().unwrap_or_else(PoisonError::into_inner);
            while outcomes.pending() == 0 {
                if *closed {
                    return;
                }
                closed = wake.cv.wait(closed).unwrap_or_else(PoisonError::into_inner);
            }
        }
        let batch = outcomes.wait(OUTCOME_WAIT);
        if batch.is_empty() {
            continue;
        }
        Python::attach(|py| {
            let delivered = batch
                .map(|(id, result)| outcome_tuple(py, &clock, id.0, &result))
                .collect::<PyResult<Vec<_>>>()
                .and_then(|items| PyList::new(py, items))
                .and_then(|list| deliver.call1(py, (list,)));
            if let Err(e) = delivered {
                e.print(py);
            }
        });
    }
}

/// Calls `callback()` with the GIL, off the runtime's worker threads.
fn call_back(callback: Py<PyAny>) {
    tokio::task::spawn_blocking(move || {
        Python::attach(|py| {
            if let Err(e) = callback.call0(py) {
                e.print(py);
            }
        });
    });
}

/// A record of Python's `(partition_key, data, explicit_hash_key)`, its data copied
/// once.
fn record_of(item: &Bound<'_, PyAny>) -> PyResult<PutRecord> {
    let (key, data, explicit): (String, Bound<'_, PyBytes>, Option<String>) = item.extract()?;
    let mut record = PutRecord::new(key, Bytes::copy_from_slice(data.as_bytes()));
    record.explicit_hash_key = explicit;
    Ok(record)
}

#[pymethods]
impl NativeProducer {
    #[new]
    #[pyo3(signature = (settings, deliver, monotonic, properties=None, access_key_id=None, secret_access_key=None))]
    fn new(
        py: Python<'_>,
        settings: &Bound<'_, PyDict>,
        deliver: Py<PyAny>,
        monotonic: f64,
        properties: Option<&str>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
    ) -> PyResult<Self> {
        let clock = Clock {
            instant: Instant::now(),
            monotonic,
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
                if let (Some(id), Some(secret)) = (access_key_id, secret_access_key) {
                    transport = transport.static_credentials(id, secret);
                }
                let transport = transport.build().await?;
                Ok::<_, kpl::BuildError>(
                    kpl::Producer::builder(config, Arc::new(transport))
                        .build(kpl::Runtime::tokio()),
                )
            })
        });
        let producer = producer.map_err(|e| PyRuntimeError::new_err(chain(&e)))?;
        let outcomes = Outcomes::new();
        let wake = Arc::new(Wake::default());
        let thread = {
            let (outcomes, wake) = (outcomes.clone(), wake.clone());
            std::thread::Builder::new()
                .name("kpl_rs-outcomes".into())
                .spawn(move || drain(outcomes, wake, deliver, clock))
                .map_err(|e| PyRuntimeError::new_err(format!("cannot start a thread: {e}")))?
        };
        Ok(Self {
            producer,
            outcomes,
            limits,
            wake,
            runtime: Mutex::new(Some(runtime)),
            drain: Mutex::new(Some(thread)),
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
        stream: String,
        partition_key: String,
        data: &Bound<'_, PyBytes>,
        explicit_hash_key: Option<String>,
    ) -> PyResult<Option<u64>> {
        self.check()?;
        let mut record = PutRecord::new(partition_key, Bytes::copy_from_slice(data.as_bytes()));
        record.explicit_hash_key = explicit_hash_key;
        let admitted = py
            .detach(|| {
                self.producer
                    .try_put_records_to(&stream, vec![record], &self.outcomes)
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

    /// Puts records `(partition_key, data, explicit_hash_key)` without waiting:
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
        let records = records
            .iter()
            .map(|item| record_of(&item))
            .collect::<PyResult<Vec<_>>>()?;
        for (i, r) in records.iter().enumerate() {
            self.limits
                .validate(
                    &r.partition_key,
                    r.explicit_hash_key.as_deref(),
                    r.data.len(),
                )
                .map_err(|e| PyValueError::new_err(format!("record {i}: {}", chain(&e))))?;
        }
        let admitted = py
            .detach(|| {
                self.producer
                    .try_put_records_to(&stream, records, &self.outcomes)
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
    /// bytes would be let into `stream`, or the producer shuts down.
    fn wait_for_room(&self, stream: String, size: usize, callback: Py<PyAny>) -> PyResult<()> {
        self.check()?;
        let producer = self.producer.clone();
        self.spawn(async move {
            producer.wait_for_room(&stream, size).await;
            call_back(callback);
        })
    }

    /// Sends everything buffered now; calls `callback()` (from a thread of the
    /// producer) when every record put before has its outcome.
    fn flush(&self, callback: Py<PyAny>) -> PyResult<()> {
        self.check()?;
        let producer = self.producer.clone();
        self.spawn(async move {
            producer.flush().await;
            call_back(callback);
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
        let timeout = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::MAX);
        Ok(py.detach(|| {
            let failed = runtime
                .as_ref()
                .map_or(0, |rt| rt.block_on(self.producer.shutdown(timeout)));
            self.wake.close();
            if let Some(thread) = drain {
                let _ = thread.join();
            }
            if let Some(rt) = runtime {
                rt.shutdown_timeout(Duration::from_secs(1));
            }
            failed
        }))
    }

    /// Records accepted and not yet resolved.
    #[getter]
    fn outstanding_records(&self) -> usize {
        self.producer.outstanding_records()
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

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> PyResult<()> {
        let runtime = self.runtime.lock().unwrap_or_else(PoisonError::into_inner);
        let runtime = runtime
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("the producer is closed"))?;
        runtime.spawn(task);
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
    let values = PyDict::new(py);
    values.set_item("Region", c.region())?;
    values.set_item("KinesisEndpoint", c.kinesis_endpoint())?;
    values.set_item("VerifyCertificate", c.verify_certificate())?;
    values.set_item("AggregationEnabled", c.aggregation_enabled())?;
    values.set_item("AggregationMaxCount", c.aggregation_max_count())?;
    values.set_item("AggregationMaxSize", c.aggregation_max_size())?;
    values.set_item(
        "RecordMaxBufferedTime",
        c.record_max_buffered_time().as_millis(),
    )?;
    values.set_item("RecordTtl", c.record_ttl().as_millis())?;
    values.set_item("CollectionMaxCount", c.collection_max_count())?;
    values.set_item("CollectionMaxSize", c.collection_max_size())?;
    values.set_item("RateLimit", c.rate_limit())?;
    values.set_item("FailIfThrottled", c.fail_if_throttled())?;
    values.set_item("MetricsUploadDelay", c.metrics_upload_delay().as_millis())?;
    let level = match c.metrics_level() {
        kpl::MetricsLevel::None => "none",
        kpl::MetricsLevel::Summary => "summary",
        _ => "detailed",
    };
    values.set_item("MetricsLevel", level)?;
    Ok((
        values,
        ignored.into_iter().map(|i| (i.key, i.reason)).collect(),
    ))
}

//! The aggregated-record format for Python consumers and tools (kpl-codec).

use std::sync::OnceLock;

use bytes::Bytes;
use kpl::codec::{AggregateBuilder, HashKey, UserRecord};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

/// One user record read out of a Kinesis record (`kpl_rs.DeaggregatedRecord`):
/// its partition key, explicit hash key, data, and index in its aggregate (`None`
/// for a record that was no aggregate).
///
/// It shares the decoded Kinesis record's buffer (one reference per user record,
/// its fields as places in it); each field is made a Python object when it is
/// first read (and kept), so a consumer pays for what it reads.
#[pyclass(module = "kpl_rs", frozen)]
pub(crate) struct DeaggregatedRecord {
    /// The decoded Kinesis record (or, for a record that was no aggregate, its
    /// data followed by its keys).
    buffer: Bytes,
    key: Span,
    hash_key: Option<Span>,
    data: Span,
    index: Option<u64>,
    key_made: OnceLock<Py<PyString>>,
    data_made: OnceLock<Py<PyBytes>>,
}

/// Where a field is in its record's buffer (a Kinesis record is at most 10 MiB).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Span {
    at: u32,
    len: u32,
}

impl Span {
    /// Where `part` is in `buffer`, if it is in it.
    fn of(buffer: &[u8], part: &[u8]) -> Option<Self> {
        let start = buffer.as_ptr() as usize;
        let at = (part.as_ptr() as usize).checked_sub(start)?;
        (at + part.len() <= buffer.len()).then_some(())?;
        Some(Self {
            at: u32::try_from(at).ok()?,
            len: u32::try_from(part.len()).ok()?,
        })
    }

    fn of_parts(
        buffer: &[u8],
        key: &[u8],
        hash_key: Option<&[u8]>,
        data: &[u8],
    ) -> Option<(Self, Option<Self>, Self)> {
        let hash_key = match hash_key {
            Some(h) => Some(Self::of(buffer, h)?),
            None => None,
        };
        Some((Self::of(buffer, key)?, hash_key, Self::of(buffer, data)?))
    }

    fn get(self, buffer: &[u8]) -> &[u8] {
        let at = self.at as usize;
        &buffer[at..at + self.len as usize]
    }
}

fn text(bytes: &[u8]) -> &str {
    // Checked as UTF-8 by the decoder (or a Python str).
    std::str::from_utf8(bytes).unwrap_or_default()
}

impl DeaggregatedRecord {
    fn key(&self) -> &str {
        text(self.key.get(&self.buffer))
    }

    fn hash_key(&self) -> Option<&str> {
        self.hash_key.map(|h| text(h.get(&self.buffer)))
    }

    fn bytes(&self) -> &[u8] {
        self.data.get(&self.buffer)
    }
}

#[pymethods]
impl DeaggregatedRecord {
    /// The user record's partition key.
    #[getter]
    fn partition_key(&self, py: Python<'_>) -> Py<PyString> {
        self.key_made
            .get_or_init(|| PyString::new(py, self.key()).unbind())
            .clone_ref(py)
    }

    /// Its explicit hash key (decimal), if it has one.
    #[getter]
    fn explicit_hash_key(&self) -> Option<&str> {
        self.hash_key()
    }

    /// Its data.
    #[getter]
    fn data(&self, py: Python<'_>) -> Py<PyBytes> {
        self.data_made
            .get_or_init(|| PyBytes::new(py, self.bytes()).unbind())
            .clone_ref(py)
    }

    /// Its index in the aggregate (`None` for a record that was no aggregate).
    #[getter]
    fn sub_sequence_number(&self) -> Option<u64> {
        self.index
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<Self>().is_ok_and(|o| {
            let o = o.get();
            self.key() == o.key()
                && self.hash_key() == o.hash_key()
                && self.bytes() == o.bytes()
                && self.index == o.index
        })
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "DeaggregatedRecord(partition_key={:?}, explicit_hash_key={:?}, data={}, \
             sub_sequence_number={:?})",
            self.key(),
            self.hash_key(),
            self.data(py).bind(py).repr()?,
            self.index,
        ))
    }
}

fn records<'py>(
    py: Python<'py>,
    buffer: Bytes,
    partition_key: &str,
    explicit_hash_key: Option<&str>,
) -> PyResult<Bound<'py, PyList>> {
    let decoded = kpl::deaggregate(partition_key, explicit_hash_key, &buffer)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let items = objects(py, &buffer, decoded)?;
    PyList::new(py, items)
}

/// The Python objects of the user records `decoded` read out of `buffer`.
fn objects<'py>(
    py: Python<'py>,
    buffer: &Bytes,
    decoded: Vec<kpl::codec::UserRecordRef<'_>>,
) -> PyResult<Vec<Bound<'py, DeaggregatedRecord>>> {
    decoded
        .into_iter()
        .map(|r| {
            let (key, hash_key, data) = (
                r.partition_key.as_bytes(),
                r.explicit_hash_key.map(str::as_bytes),
                r.data,
            );
            let (buffer, (key, hash_key, data)) = match Span::of_parts(buffer, key, hash_key, data)
            {
                Some(spans) => (buffer.clone(), spans),
                None => {
                    // A record that was no aggregate: its keys are not in it.
                    let own = [data, key, hash_key.unwrap_or_default()].concat();
                    let spans = Span::of_parts(
                        &own,
                        &own[data.len()..data.len() + key.len()],
                        hash_key.map(|h| &own[own.len() - h.len()..]),
                        &own[..data.len()],
                    )
                    .ok_or_else(|| PyValueError::new_err("a record over 4 GiB"))?;
                    (Bytes::from(own), spans)
                }
            };
            Bound::new(
                py,
                DeaggregatedRecord {
                    buffer,
                    key,
                    hash_key,
                    data,
                    index: r.sub_sequence_number,
                    key_made: OnceLock::new(),
                    data_made: OnceLock::new(),
                },
            )
        })
        .collect()
}

/// A Lambda Kinesis event's record (or its `"kinesis"` part): its data decoded from
/// base64, its partition key and explicit hash key.
fn event_record(record: &Bound<'_, PyAny>) -> PyResult<(Bytes, String, Option<String>)> {
    let body = match record.get_item("kinesis") {
        Ok(body) => body,
        Err(_) => record.clone(),
    };
    // The base64 text is read where Python keeps it, not copied.
    let data = body.get_item("data")?;
    let data = data.cast::<PyString>()?.to_str()?;
    let partition_key: String = body
        .get_item("partitionKey")
        .ok()
        .map(|k| k.extract())
        .transpose()?
        .unwrap_or_default();
    let explicit_hash_key: Option<String> = match body.get_item("explicitHashKey") {
        Ok(k) => k.extract()?,
        Err(_) => None,
    };
    let buffer = aws_smithy_types::base64::decode(data)
        .map_err(|e| PyValueError::new_err(format!("data is not base64: {e}")))?;
    Ok((Bytes::from(buffer), partition_key, explicit_hash_key))
}

/// The user records of one Kinesis record, as a consumer reads it: a list of
/// [`DeaggregatedRecord`]. A record that is no aggregate is one user record with
/// the Kinesis record's own keys and no sub-sequence number; an aggregate that does
/// not decode is a `ValueError`.
#[pyfunction]
#[pyo3(signature = (data, partition_key="", explicit_hash_key=None))]
pub(crate) fn deaggregate<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyBytes>,
    partition_key: &str,
    explicit_hash_key: Option<&str>,
) -> PyResult<Bound<'py, PyList>> {
    let buffer = Bytes::copy_from_slice(data.as_bytes());
    records(py, buffer, partition_key, explicit_hash_key)
}

/// [`deaggregate`] of a record of a Lambda Kinesis event: the record, or its
/// `"kinesis"` part (`data` in base64, `partitionKey`, `explicitHashKey`).
#[pyfunction]
pub(crate) fn deaggregate_event_record<'py>(
    py: Python<'py>,
    record: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let (buffer, partition_key, explicit_hash_key) = event_record(record)?;
    records(py, buffer, &partition_key, explicit_hash_key.as_deref())
}

/// The user records of many records of a Lambda Kinesis event (its `"Records"`),
/// in order, in one list: each record's as [`deaggregate_event_record`] gives them,
/// the aggregates' checksums computed four at a time. A record that does not
/// decode is a `ValueError` that names its index.
#[pyfunction]
pub(crate) fn deaggregate_event_records<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let read: Vec<(Bytes, String, Option<String>)> = records
        .try_iter()?
        .map(|r| event_record(&r?))
        .collect::<PyResult<_>>()?;
    let inputs: Vec<(&str, Option<&str>, &[u8])> = read
        .iter()
        .map(|(data, key, hash)| (key.as_str(), hash.as_deref(), &data[..]))
        .collect();
    let answers = py.detach(|| kpl::codec::deaggregate_all(&inputs));
    let mut out = Vec::new();
    for (at, ((buffer, _, _), answer)) in read.iter().zip(answers).enumerate() {
        let decoded =
            answer.map_err(|e| PyValueError::new_err(format!("record {at} of the batch: {e}")))?;
        out.extend(objects(py, buffer, decoded)?);
    }
    PyList::new(py, out)
}

/// One aggregated Kinesis record of `records` (`(partition_key, data,
/// explicit_hash_key)` each, in order): `(partition_key, explicit_hash_key, data)`
/// to put as a Kinesis record. The caller keeps it within the record size limit.
#[pyfunction]
pub(crate) fn aggregate<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyList>,
) -> PyResult<(String, Option<String>, Bound<'py, PyBytes>)> {
    let mut builder = AggregateBuilder::new();
    for item in records.iter() {
        let (key, data, explicit): (String, Bound<'_, PyBytes>, Option<String>) = item.extract()?;
        let mut record = UserRecord::new(key, data.as_bytes().to_vec());
        if let Some(k) = explicit {
            let hash =
                HashKey::from_decimal(&k).map_err(|e| PyValueError::new_err(e.to_string()))?;
            record = record.with_explicit_hash_key(hash);
        }
        builder.add(record);
    }
    let record = builder
        .encode()
        .ok_or_else(|| PyValueError::new_err("no records to aggregate"))?;
    Ok((
        record.partition_key,
        record.explicit_hash_key.map(|k| k.to_string()),
        PyBytes::new(py, &record.data),
    ))
}

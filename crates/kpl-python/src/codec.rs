//! The aggregated-record format for Python consumers and tools (kpl-codec).

use kpl::codec::{AggregateBuilder, HashKey, UserRecord};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

/// The user records of one Kinesis record, as a consumer reads it: a list of
/// `(partition_key, explicit_hash_key, data, sub_sequence_number)`. A record that is
/// no aggregate is one user record with the Kinesis record's own keys and no
/// sub-sequence number; an aggregate that does not decode is a `ValueError`.
#[pyfunction]
#[pyo3(signature = (data, partition_key="", explicit_hash_key=None))]
pub(crate) fn deaggregate<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyBytes>,
    partition_key: &str,
    explicit_hash_key: Option<&str>,
) -> PyResult<Bound<'py, PyList>> {
    let bytes = data.as_bytes();
    let records = kpl::deaggregate(partition_key, explicit_hash_key, bytes)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let items = records
        .into_iter()
        .map(|r| {
            PyTuple::new(
                py,
                [
                    r.partition_key.into_pyobject(py)?.into_any(),
                    r.explicit_hash_key.into_pyobject(py)?.into_any(),
                    PyBytes::new(py, r.data).into_any(),
                    r.sub_sequence_number.into_pyobject(py)?.into_any(),
                ],
            )
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
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

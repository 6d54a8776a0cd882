//! `kpl_rs._native`: the native side of the Python package `kpl_rs`.
//!
//! The Python modules (`python/kpl_rs/`) give aiokpl's API; this module gives them a
//! producer (`NativeProducer`) holding a [`kpl::Producer`] on its own
//! tokio runtime, the settings table, the codec, and the bridge from `tracing` to
//! Python's `logging`. Everything here is called from Python; the
//! Python modules are the documented interface.
//!
//! How outcomes reach Python: records are admitted with
//! [`kpl::Producer::try_put_records_to`] into one [`kpl::Outcomes`] queue; a thread
//! of ours blocks on the queue and hands each batch of outcomes to a Python
//! callable given at construction, which schedules it on the caller's event loop
//! with the loop's thread-safe call. Waits for room and flushes are tokio tasks that
//! call a Python callable when they end. Nothing polls.
//!
//! What a Python program writes (aiokpl's API; `docs/python.md`):
//!
//! ```python
//! import asyncio
//! from kpl_rs import Config, Producer
//!
//! async def main() -> None:
//!     async with Producer(Config(region="us-east-1")) as producer:
//!         outcome = await producer.put_record(stream="s", partition_key="k", data=b"x")
//!         result = await outcome.wait()
//!         print(result.success, result.sequence_number, len(result.attempts))
//!
//! asyncio.run(main())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codec;
mod logs;
mod producer;

use pyo3::prelude::*;

/// The module `kpl_rs._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logs::install();
    m.add_class::<producer::NativeProducer>()?;
    m.add_class::<codec::DeaggregatedRecord>()?;
    m.add_function(wrap_pyfunction!(producer::settings, m)?)?;
    m.add_function(wrap_pyfunction!(producer::metric_names, m)?)?;
    m.add_function(wrap_pyfunction!(producer::parse_kpl_properties, m)?)?;
    m.add_function(wrap_pyfunction!(logs::set_log_level, m)?)?;
    m.add_function(wrap_pyfunction!(codec::deaggregate, m)?)?;
    m.add_function(wrap_pyfunction!(codec::deaggregate_event_record, m)?)?;
    m.add_function(wrap_pyfunction!(codec::deaggregate_event_records, m)?)?;
    m.add_function(wrap_pyfunction!(codec::aggregate, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

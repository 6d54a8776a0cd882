//! The pipeline's one event hook.

use std::time::Duration;

/// Something the pipeline did, for metrics and diagnostics. Names follow the KPL's
/// metrics (`UserRecordsReceived`, `ErrorsByCode`, `BufferingTime`, …) so exporters
/// can map them one to one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// User records were accepted (`UserRecordsReceived`).
    Received {
        /// The stream.
        stream: &'a str,
        /// How many.
        records: usize,
    },
    /// A Kinesis record was stored (`KinesisRecordsPut`, `UserRecordsPut`,
    /// `UserRecordsDataPut`, `UserRecordsPerKinesisRecord`).
    Put {
        /// The stream.
        stream: &'a str,
        /// The shard.
        shard_id: &'a str,
        /// User records in it.
        user_records: usize,
        /// Its bytes (data plus partition key).
        bytes: usize,
    },
    /// An attempt failed (`ErrorsByCode`, `AllErrors`).
    Error {
        /// The stream.
        stream: &'a str,
        /// The shard, when known.
        shard_id: Option<&'a str>,
        /// The error code.
        code: &'a str,
        /// User records affected.
        user_records: usize,
    },
    /// User records will be tried again (`RetriesPerRecord`).
    Retry {
        /// The stream.
        stream: &'a str,
        /// How many.
        user_records: usize,
    },
    /// User records expired (`UserRecordExpired`).
    Expired {
        /// The stream.
        stream: &'a str,
        /// How many.
        user_records: usize,
    },
    /// A user record was stored; time from its arrival to the request that stored
    /// it (`BufferingTime`), and its failed attempts before (`RetriesPerRecord`).
    BufferingTime {
        /// The stream.
        stream: &'a str,
        /// The shard it was stored on.
        shard_id: &'a str,
        /// The time.
        time: Duration,
        /// Failed attempts before the one that stored it.
        retries: usize,
    },
    /// A PutRecords request finished (`RequestTime`, `KinesisRecordsPerPutRecordsRequest`,
    /// `UserRecordsPerPutRecordsRequest`).
    Request {
        /// The stream.
        stream: &'a str,
        /// How long it took.
        time: Duration,
        /// Kinesis records in it.
        kinesis_records: usize,
        /// User records in it.
        user_records: usize,
    },
}

/// Receives the pipeline's events. Set one with
/// [`ProducerBuilder::event_sink`](crate::ProducerBuilder::event_sink); without one,
/// no event is even built.
///
/// Called on the pipeline's task: keep it quick (count, enqueue), never block.
pub trait EventSink: Send + Sync + 'static {
    /// One event.
    fn on_event(&self, event: &Event<'_>);
}

//! The pipeline's one event hook.

use std::time::Duration;

/// Something the pipeline did, for metrics and diagnostics. Names follow the KPL's
/// metrics (`UserRecordsReceived`, `ErrorsByCode`, `BufferingTime`, …) so exporters
/// can map them one to one.
#[derive(Clone, Debug, PartialEq)]
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
    /// User records were stored on a shard: for each, the time from its arrival to
    /// the request that stored it (`BufferingTime`), and its failed attempts before
    /// (`RetriesPerRecord`); summarised per Kinesis record (or a few), not sent per
    /// user record.
    BufferingTime {
        /// The stream.
        stream: &'a str,
        /// The shard they were stored on.
        shard_id: &'a str,
        /// Their buffering times, in milliseconds (one value per user record).
        time_ms: Summary,
        /// Their failed attempts before the one that stored them.
        retries: Summary,
        /// How many of them an earlier attempt may have stored too (a request
        /// without an answer): they may be in the stream twice.
        possibly_duplicated: u64,
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
        /// The stream's congestion window after its answer: requests that may be
        /// in flight at once.
        window: usize,
    },
}

/// Several values summarised: how many, their sum, the smallest and the largest.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// How many values.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest (infinity when there is none).
    pub min: f64,
    /// The largest (minus infinity when there is none).
    pub max: f64,
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Summary {
    /// One value more.
    pub fn add(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// The values of `other` too.
    pub fn merge(&mut self, other: &Summary) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
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

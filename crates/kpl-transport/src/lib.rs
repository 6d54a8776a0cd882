//! How kpl-rs talks to Kinesis: the [`Transport`] trait and its implementations.
//!
//! The producer needs ListShards and PutRecords, and optionally DescribeStreamSummary
//! (the stream's record limit) and GetShardIterator with GetRecords (verify before
//! resend); [`Transport`] is exactly those, in types of our own, so the pipeline
//! never sees an SDK type and can run against the in-process simulator (`kpl-sim`)
//! as well as the real service ([`AwsTransport`], feature `aws`, on by default).
//!
//! - Streams are addressed by name or by ARN ([`StreamId`]): cross-account producers
//!   need ARNs, which the KPL cannot use.
//! - A PutRecords answer is per entry: [`EntryResult::Ok`] with shard id and sequence
//!   number, or [`EntryResult::Failed`] with the service's code and message.
//! - A request that fails as a whole is a [`TransportError`] whose [`ErrorKind`] says
//!   what a retrier should do (throttled, transient, not found, access denied,
//!   invalid request, not a Kinesis endpoint, TLS, other), keeping the service's
//!   code and message; [`TransportError::may_have_been_stored`] says whether the
//!   records may have been stored all the same. `AwsTransport`'s messages are the
//!   errors' own words, at most 512 bytes: never a dump of the request or response.
//!
//! # Example: a transport of your own
//!
//! ```
//! use async_trait::async_trait;
//! use kpl_transport::*;
//!
//! /// Accepts nothing: every request fails as not found.
//! struct Nowhere;
//!
//! #[async_trait]
//! impl Transport for Nowhere {
//!     async fn list_shards(&self, _: ListShardsRequest) -> Result<ListShardsPage, TransportError> {
//!         Err(TransportError::new(ErrorKind::NotFound, "Stream nowhere not found")
//!             .with_code("ResourceNotFoundException"))
//!     }
//!     async fn put_records(&self, _: PutRecordsRequest) -> Result<PutRecordsResponse, TransportError> {
//!         Err(TransportError::from_code("ResourceNotFoundException", "Stream nowhere not found", None))
//!     }
//! }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

#[cfg(feature = "async-io")]
mod async_io_http;
#[cfg(feature = "aws")]
mod aws;
#[cfg(feature = "cloudwatch")]
mod cloudwatch;
mod error;
#[cfg(feature = "aws")]
mod proxy;

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use kpl_codec::HashKey;

#[cfg(feature = "aws")]
pub use aws::{AwsTransport, AwsTransportBuilder, BuildError, BuildErrorKind, HttpRuntime};
#[cfg(feature = "cloudwatch")]
pub use cloudwatch::{
    CloudWatch, CloudWatchBuilder, MAX_DATA_PER_REQUEST, MetricDatum, PutMetricDataError,
    PutMetricDataErrorKind,
};
pub use error::{ErrorKind, TIMEOUT_CODE, TransportError};
#[cfg(feature = "aws")]
pub use proxy::Proxy;

/// The KPL's default for request and connect timeouts.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6);
/// The KPL's default for concurrent connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 24;

/// A stream, by name or by ARN.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StreamId {
    /// The stream's name, in the caller's account and region.
    Name(String),
    /// The stream's ARN (`arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`), for any
    /// account the credentials may write to.
    Arn(String),
}

impl StreamId {
    /// An ARN when `text` starts with `arn:`, a name otherwise.
    pub fn parse(text: &str) -> Self {
        if text.starts_with("arn:") {
            Self::Arn(text.to_owned())
        } else {
            Self::Name(text.to_owned())
        }
    }

    /// The stream's name: the name itself, or the part of the ARN after `stream/`.
    pub fn name(&self) -> &str {
        match self {
            Self::Name(name) => name,
            Self::Arn(arn) => arn.rsplit_once("stream/").map_or(arn.as_str(), |(_, n)| n),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Arn(arn) => f.write_str(arn),
        }
    }
}

/// One ListShards call: the first page of a stream, or a following page.
///
/// Deliberately exhaustive: every transport must handle every form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListShardsRequest {
    /// The first page.
    First {
        /// The stream.
        stream: StreamId,
        /// Open shards only (`ShardFilter {Type: AT_LATEST}`), as the producer wants.
        open_only: bool,
        /// At most this many shards (the service's default is 1,000).
        max_results: Option<u32>,
    },
    /// A following page: only the token goes out (the service refuses a stream name
    /// with a token).
    Next {
        /// The previous page's `next_token`.
        token: String,
        /// At most this many shards.
        max_results: Option<u32>,
    },
}

/// One page of shards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListShardsPage {
    /// The shards of this page.
    pub shards: Vec<ShardDescription>,
    /// The token for the next page, if there is one.
    pub next_token: Option<String>,
}

impl ListShardsPage {
    /// A page.
    pub fn new(shards: Vec<ShardDescription>, next_token: Option<String>) -> Self {
        Self { shards, next_token }
    }
}

/// A shard as ListShards describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardDescription {
    /// `shardId-000000000007`.
    pub shard_id: String,
    /// Lowest hash key of its range.
    pub starting_hash_key: HashKey,
    /// Highest hash key of its range (inclusive).
    pub ending_hash_key: HashKey,
    /// The shard it was split from or merged from, if any.
    pub parent_shard_id: Option<String>,
    /// The other shard of a merge, if any.
    pub adjacent_parent_shard_id: Option<String>,
    /// Whether it is closed (has an ending sequence number).
    pub closed: bool,
}

impl ShardDescription {
    /// An open shard with no parents.
    pub fn new(
        shard_id: impl Into<String>,
        starting_hash_key: HashKey,
        ending_hash_key: HashKey,
    ) -> Self {
        Self {
            shard_id: shard_id.into(),
            starting_hash_key,
            ending_hash_key,
            parent_shard_id: None,
            adjacent_parent_shard_id: None,
            closed: false,
        }
    }
}

/// One entry of a PutRecords request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutRecordsEntry {
    /// The partition key.
    pub partition_key: String,
    /// The explicit hash key, which routes the record instead of the key's MD5.
    pub explicit_hash_key: Option<HashKey>,
    /// The data.
    pub data: Bytes,
}

impl PutRecordsEntry {
    /// An entry.
    pub fn new(
        partition_key: impl Into<String>,
        explicit_hash_key: Option<HashKey>,
        data: Bytes,
    ) -> Self {
        Self {
            partition_key: partition_key.into(),
            explicit_hash_key,
            data,
        }
    }

    /// Bytes it counts against the request and shard limits: data plus partition key.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// The hash key Kinesis routes it by.
    pub fn hash_key(&self) -> HashKey {
        self.explicit_hash_key
            .unwrap_or_else(|| HashKey::from_partition_key(&self.partition_key))
    }
}

/// A PutRecords request: up to 500 entries for one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutRecordsRequest {
    /// The stream.
    pub stream: StreamId,
    /// The entries, in order.
    pub entries: Vec<PutRecordsEntry>,
    /// How long this request may take, from the call to the answer; `None` leaves it
    /// to the transport's own setting. A transport must honour it: past it, the call
    /// returns a [`TransportError`] with [`TransportError::is_timeout`] true (the
    /// request may still have been stored). The producer sizes it to the request
    /// and the path (see kpl-limiter's congestion window).
    pub timeout: Option<std::time::Duration>,
}

impl PutRecordsRequest {
    /// A request, with the transport's own timeout.
    pub fn new(stream: StreamId, entries: Vec<PutRecordsEntry>) -> Self {
        Self {
            stream,
            entries,
            timeout: None,
        }
    }

    /// The same request with its own timeout.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Bytes it counts against the request size limit: data plus partition key of
    /// every entry.
    pub fn size(&self) -> usize {
        self.entries.iter().map(PutRecordsEntry::size).sum()
    }
}

/// The outcome of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryResult {
    /// Stored.
    Ok {
        /// The shard it was stored on.
        shard_id: String,
        /// Its sequence number there.
        sequence_number: String,
    },
    /// Not stored.
    Failed {
        /// The service's code (`ProvisionedThroughputExceededException`,
        /// `InternalFailure`, `KMSThrottlingException`, …).
        code: String,
        /// The service's message.
        message: String,
    },
}

/// The answer to a PutRecords request: one result per entry, in request order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutRecordsResponse {
    /// Per-entry outcomes. The producer checks that there is one per entry.
    pub results: Vec<EntryResult>,
}

impl PutRecordsResponse {
    /// A response.
    pub fn new(results: Vec<EntryResult>) -> Self {
        Self { results }
    }

    /// How many entries failed.
    pub fn failed_count(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r, EntryResult::Failed { .. }))
            .count()
    }
}

/// Where a read of a shard starts (GetShardIterator's `ShardIteratorType`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardPosition {
    /// Just after the record of this sequence number (`AFTER_SEQUENCE_NUMBER`).
    AfterSequenceNumber(String),
    /// The first record stored at or after this time (`AT_TIMESTAMP`).
    AtTimestamp(std::time::SystemTime),
    /// The oldest record the stream keeps (`TRIM_HORIZON`).
    TrimHorizon,
}

/// A record read from a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadRecord {
    /// Its sequence number.
    pub sequence_number: String,
    /// Its partition key.
    pub partition_key: String,
    /// Its data, as it was put (an aggregate stays one record).
    pub data: Bytes,
}

impl ReadRecord {
    /// A record read.
    pub fn new(
        sequence_number: impl Into<String>,
        partition_key: impl Into<String>,
        data: Bytes,
    ) -> Self {
        Self {
            sequence_number: sequence_number.into(),
            partition_key: partition_key.into(),
            data,
        }
    }
}

/// One GetRecords answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordsPage {
    /// The records, in sequence order.
    pub records: Vec<ReadRecord>,
    /// Where the next read goes on; `None` when the shard is closed and read to its
    /// end.
    pub next_iterator: Option<String>,
    /// How far behind the shard's newest record this read ends, when the service
    /// says: `Some(0)` is caught up.
    pub millis_behind_latest: Option<u64>,
}

impl RecordsPage {
    /// A page of records.
    pub fn new(
        records: Vec<ReadRecord>,
        next_iterator: Option<String>,
        millis_behind_latest: Option<u64>,
    ) -> Self {
        Self {
            records,
            next_iterator,
            millis_behind_latest,
        }
    }
}

/// The error of a read a transport does not implement.
fn reads_unsupported(call: &str) -> TransportError {
    TransportError::new(
        ErrorKind::Other,
        format!("this transport does not implement {call}: shards cannot be read back"),
    )
}

/// The two calls of Kinesis the producer makes.
///
/// Implementations must be cheap to share (`Arc<dyn Transport>`) and may be called
/// concurrently; the producer bounds the number of calls in flight.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// One page of ListShards.
    async fn list_shards(
        &self,
        request: ListShardsRequest,
    ) -> Result<ListShardsPage, TransportError>;
    /// One PutRecords request.
    async fn put_records(
        &self,
        request: PutRecordsRequest,
    ) -> Result<PutRecordsResponse, TransportError>;
    /// The stream's maximum record size in bytes, data plus partition key
    /// (DescribeStreamSummary's `MaxRecordSizeInKiB`, raised with
    /// UpdateMaxRecordSize); `None` when the service does not say, where the
    /// default, [`kpl_codec::DEFAULT_MAX_RECORD_SIZE`], applies. A transport that
    /// cannot ask answers `None`.
    async fn max_record_size(&self, stream: &StreamId) -> Result<Option<usize>, TransportError> {
        let _ = stream;
        Ok(None)
    }

    /// Where a read of `shard_id` starting at `position` begins
    /// (GetShardIterator): an iterator for [`get_records`](Self::get_records).
    /// Reading back is how the producer finds what a request with no answer stored
    /// (verify before resend); a transport that cannot read answers an error, and
    /// the producer resends instead, as it would without the setting.
    async fn shard_iterator(
        &self,
        stream: &StreamId,
        shard_id: &str,
        position: ShardPosition,
    ) -> Result<String, TransportError> {
        let _ = (stream, shard_id, position);
        Err(reads_unsupported("GetShardIterator"))
    }

    /// The records at `iterator`, at most `limit` of them (GetRecords).
    async fn get_records(
        &self,
        stream: &StreamId,
        iterator: &str,
        limit: Option<u32>,
    ) -> Result<RecordsPage, TransportError> {
        let _ = (stream, iterator, limit);
        Err(reads_unsupported("GetRecords"))
    }
}

#[async_trait]
impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    async fn list_shards(
        &self,
        request: ListShardsRequest,
    ) -> Result<ListShardsPage, TransportError> {
        (**self).list_shards(request).await
    }
    async fn put_records(
        &self,
        request: PutRecordsRequest,
    ) -> Result<PutRecordsResponse, TransportError> {
        (**self).put_records(request).await
    }
    async fn max_record_size(&self, stream: &StreamId) -> Result<Option<usize>, TransportError> {
        (**self).max_record_size(stream).await
    }
    async fn shard_iterator(
        &self,
        stream: &StreamId,
        shard_id: &str,
        position: ShardPosition,
    ) -> Result<String, TransportError> {
        (**self).shard_iterator(stream, shard_id, position).await
    }
    async fn get_records(
        &self,
        stream: &StreamId,
        iterator: &str,
        limit: Option<u32>,
    ) -> Result<RecordsPage, TransportError> {
        (**self).get_records(stream, iterator, limit).await
    }
}

//! The KPL aggregated-record format, partition-key hashing and Kinesis limits.
//!
//! This crate is the bottom layer of kpl-rs and stands alone: no async, no runtime,
//! no I/O. Producers use it to pack user records into aggregated Kinesis records;
//! consumers (a Lambda function, a KCL-less reader, the `kpl deagg` command) use it to
//! unpack them.
//!
//! # The public interface
//!
//! - [`HashKey`]: where a record lands, from a partition key (MD5, big-endian) or an
//!   explicit hash key (strict decimal).
//! - [`AggregateBuilder`]: packs user records into one aggregate and knows its exact
//!   size after every add, in O(1); [`KinesisRecord`] is what it produces. Many
//!   aggregates made at once (the records of one request) can be checksummed
//!   together, four at a time: [`AggregateBuilder::encode_unfinished_aggregate`] and
//!   [`finish_aggregates`].
//! - [`deaggregate`] and [`decode_aggregated`]: zero-copy reading of a Kinesis record
//!   into [`UserRecordRef`]s; every defect is a [`DecodeError`].
//! - [`RecordLimits`], [`validate_partition_key`] and the constants: the service's
//!   limits, checked before anything is sent.
//!
//! # Example
//!
//! ```
//! use kpl_codec::{deaggregate, AggregateBuilder, HashKey, UserRecord};
//!
//! let mut builder = AggregateBuilder::new();
//! for (key, data) in [("user-1", "login"), ("user-1", "click"), ("user-2", "logout")] {
//!     builder.add(UserRecord::new(key, data.as_bytes().to_vec()));
//! }
//! let record = builder.encode().expect("three records");
//! assert_eq!(record.data.len(), builder.size());
//! assert_eq!(record.explicit_hash_key, Some(HashKey::from_partition_key("user-1")));
//!
//! for user in deaggregate(&record.partition_key, None, &record.data)? {
//!     println!("{} #{:?}: {:?}", user.partition_key, user.sub_sequence_number, user.data);
//! }
//! # Ok::<(), kpl_codec::DecodeError>(())
//! ```
//!
//! # Shards
//!
//! A KCL consumer drops every user record of an aggregate whose hash key lies outside
//! the range of the shard the aggregate was read from. [`AggregateBuilder`] does not
//! know shards: put only records predicted for one shard into one aggregate (the
//! producer in `kpl-producer` does so).
//!
//! # Wire format
//!
//! `F3 89 9A C2` ‖ protobuf `AggregatedRecord` ‖ MD5 of the protobuf bytes, with
//! key tables de-duplicated in first-seen order and fields in field-number order; the
//! bytes equal those of the reference aggregators (checked against the Python
//! `aws-kinesis-agg` package by the project's conformance gate). Encoding writes with
//! `quick-protobuf`'s primitives. Decoding uses a small bounded reader of its own,
//! because `quick-protobuf`'s `BytesReader` lets single-byte reads run past a
//! sub-message's end and silently truncates 10-byte varints, and a decoder of
//! untrusted data must report both.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod decode;
mod encode;
mod hash;
mod limits;
mod md5_lanes;
mod record;
mod rng;

pub use decode::{
    Deaggregated, DecodeError, DecodeErrorKind, KeyTable, deaggregate, deaggregate_all,
    decode_aggregated, is_aggregated,
};
pub use encode::{
    AGGREGATE_OVERHEAD, AggregateBuilder, AggregateEncoder, DIGEST_LEN, KinesisRecord, MAGIC,
    RecordParts, UnfinishedAggregate, aggregate_growth_bound, finish_aggregates,
};
pub use hash::{HashKey, ParseHashKeyError, ParseHashKeyErrorKind};
pub use limits::{
    AGGREGATED_PARTITION_KEY, DEFAULT_MAX_RECORD_SIZE, DEFAULT_MAX_REQUEST_SIZE,
    GET_RECORDS_MAX_BYTES, GET_RECORDS_MAX_RECORDS, MAX_PARTITION_KEY_CHARS,
    MAX_RECORD_SIZE_CEILING, MAX_RECORDS_PER_REQUEST, PartitionKeyError, PartitionKeyErrorKind,
    RecordError, RecordErrorKind, RecordLimitError, RecordLimits, SHARD_BYTES_PER_SECOND,
    SHARD_RECORDS_PER_SECOND, shard_write_hold, validate_partition_key,
};
pub use record::{Tag, TagRef, UserRecord, UserRecordRef};
pub use rng::SplitMix64;

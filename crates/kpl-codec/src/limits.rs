//! The service's limits, and validation of user records against them.

use std::fmt;

use crate::hash::{HashKey, ParseHashKeyError};

/// Most Unicode characters a partition key may have.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;
/// The default limit on one record: data plus partition key bytes (1 MiB).
pub const DEFAULT_MAX_RECORD_SIZE: usize = 1024 * 1024;
/// The highest record limit a stream can be given (`UpdateMaxRecordSize`, 10 MiB).
pub const MAX_RECORD_SIZE_CEILING: usize = 10 * 1024 * 1024;
/// Most entries in one `PutRecords` request.
pub const MAX_RECORDS_PER_REQUEST: usize = 500;
/// The default limit on one `PutRecords` request (5 MiB of data plus partition keys).
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 5 * 1024 * 1024;
/// Records per second one shard accepts (an aggregated record counts as one).
pub const SHARD_RECORDS_PER_SECOND: u64 = 1_000;
/// Bytes per second one shard accepts.
pub const SHARD_BYTES_PER_SECOND: u64 = 1024 * 1024;
/// Most records one `GetRecords` call returns (and the most its `Limit` may ask).
pub const GET_RECORDS_MAX_RECORDS: u32 = 10_000;
/// Most bytes of data one `GetRecords` call returns.
pub const GET_RECORDS_MAX_BYTES: usize = 10 * 1024 * 1024;
/// How long a record of `bytes` counts against its shard's write limits: one
/// second, or for a record larger than a second of the shard's bytes (a large
/// record, up to [`MAX_RECORD_SIZE_CEILING`]), as long as the shard takes to write
/// it at [`SHARD_BYTES_PER_SECOND`], so large records average the shard's rate.
///
/// The model kpl-rs keeps of a shard's capacity for large records (AWS documents
/// no exact one, only that they "average" 1 MiB/s): such a record is taken only
/// when nothing else counts against the shard, and nothing else is taken while it
/// counts. The simulator enforces it; the producer's limiter admits by it.
///
/// ```
/// use std::time::Duration;
/// use kpl_codec::shard_write_hold;
///
/// assert_eq!(shard_write_hold(100), Duration::from_secs(1));
/// assert_eq!(shard_write_hold(10 * 1024 * 1024), Duration::from_secs(10));
/// ```
pub fn shard_write_hold(bytes: usize) -> std::time::Duration {
    let second = 1_000_000_000u128;
    let nanos = (bytes as u128 * second / u128::from(SHARD_BYTES_PER_SECOND)).max(second);
    std::time::Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The partition key every aggregated record is sent with; its explicit hash key
/// does the routing.
pub const AGGREGATED_PARTITION_KEY: &str = "a";

/// Checks a partition key: 1 to 256 Unicode characters.
///
/// ```
/// use kpl_codec::{validate_partition_key, PartitionKeyErrorKind};
///
/// assert!(validate_partition_key("user-123").is_ok());
/// let err = validate_partition_key("").unwrap_err();
/// assert_eq!(err.kind(), PartitionKeyErrorKind::Empty);
/// ```
pub fn validate_partition_key(partition_key: &str) -> Result<(), PartitionKeyError> {
    if partition_key.is_empty() {
        return Err(PartitionKeyError {
            repr: BadKey::Empty,
        });
    }
    // Fewer bytes than the limit means fewer characters too: skip the count.
    if partition_key.len() > MAX_PARTITION_KEY_CHARS {
        let chars = partition_key.chars().count();
        if chars > MAX_PARTITION_KEY_CHARS {
            return Err(PartitionKeyError {
                repr: BadKey::TooLong {
                    chars,
                    prefix: partition_key.chars().take(16).collect(),
                },
            });
        }
    }
    Ok(())
}

/// Why a partition key is refused.
///
/// Ask it with [`kind`](Self::kind) or the `is_*` methods; a key too long
/// gives its length in [`chars`](Self::chars) and its start in
/// [`prefix`](Self::prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionKeyError {
    repr: BadKey,
}

/// What kind of [`PartitionKeyError`] it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PartitionKeyErrorKind {
    /// The key is empty; Kinesis needs at least one character.
    Empty,
    /// The key has more than 256 Unicode characters.
    TooLong,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum BadKey {
    Empty,
    TooLong {
        chars: usize,
        /// The key's first 16 characters, to find it by.
        prefix: String,
    },
}

impl PartitionKeyError {
    /// What kind of error it is.
    pub fn kind(&self) -> PartitionKeyErrorKind {
        match self.repr {
            BadKey::Empty => PartitionKeyErrorKind::Empty,
            BadKey::TooLong { .. } => PartitionKeyErrorKind::TooLong,
        }
    }

    /// The key is empty.
    pub fn is_empty(&self) -> bool {
        self.kind() == PartitionKeyErrorKind::Empty
    }

    /// The key has more than 256 Unicode characters.
    pub fn is_too_long(&self) -> bool {
        self.kind() == PartitionKeyErrorKind::TooLong
    }

    /// How many characters a key too long has.
    pub fn chars(&self) -> Option<usize> {
        match self.repr {
            BadKey::TooLong { chars, .. } => Some(chars),
            BadKey::Empty => None,
        }
    }

    /// The first 16 characters of a key too long, to find it by.
    pub fn prefix(&self) -> Option<&str> {
        match &self.repr {
            BadKey::TooLong { prefix, .. } => Some(prefix),
            BadKey::Empty => None,
        }
    }
}

impl fmt::Display for PartitionKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            BadKey::Empty => f.write_str("partition key is empty: give 1 to 256 characters"),
            BadKey::TooLong { chars, prefix } => write!(
                f,
                "partition key starting {prefix:?} has {chars} characters, more than the {MAX_PARTITION_KEY_CHARS} Kinesis allows: shorten it"
            ),
        }
    }
}

impl std::error::Error for PartitionKeyError {}

/// The limit on one record's size (data plus partition key bytes).
///
/// Streams accept 1 MiB by default; a stream's limit can be raised up to 10 MiB,
/// and this type follows it.
///
/// ```
/// use kpl_codec::RecordLimits;
///
/// let limits = RecordLimits::new(2 * 1024 * 1024)?;
/// assert!(limits.validate("pk", None, 1024).is_ok());
/// assert!(RecordLimits::new(11 * 1024 * 1024).is_err());
/// # Ok::<(), kpl_codec::RecordLimitError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLimits {
    max_record_size: usize,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
        }
    }
}

impl RecordLimits {
    /// Limits with the given maximum record size in bytes (1 to 10 MiB).
    pub fn new(max_record_size: usize) -> Result<Self, RecordLimitError> {
        if max_record_size == 0 || max_record_size > MAX_RECORD_SIZE_CEILING {
            return Err(RecordLimitError { max_record_size });
        }
        Ok(Self { max_record_size })
    }

    /// The maximum record size in bytes.
    pub fn max_record_size(&self) -> usize {
        self.max_record_size
    }

    /// Validates a user record as Kinesis would: its partition key, its explicit hash
    /// key if any (returned parsed), and its size (`data_len` plus the key's bytes).
    pub fn validate(
        &self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data_len: usize,
    ) -> Result<Option<HashKey>, RecordError> {
        validate_partition_key(partition_key).map_err(|e| RecordError {
            repr: Refused::PartitionKey(e),
        })?;
        let explicit = explicit_hash_key
            .map(HashKey::from_decimal)
            .transpose()
            .map_err(|e| RecordError {
                repr: Refused::ExplicitHashKey(e),
            })?;
        let size = data_len.saturating_add(partition_key.len());
        if size > self.max_record_size {
            return Err(RecordError::too_large(size, self.max_record_size));
        }
        Ok(explicit)
    }
}

/// A maximum record size outside 1 byte to 10 MiB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordLimitError {
    max_record_size: usize,
}

impl RecordLimitError {
    /// The refused value.
    pub fn max_record_size(&self) -> usize {
        self.max_record_size
    }
}

impl fmt::Display for RecordLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "max record size {} is out of range: Kinesis allows 1 to {MAX_RECORD_SIZE_CEILING} bytes",
            self.max_record_size
        )
    }
}

impl std::error::Error for RecordLimitError {}

/// Why a user record is refused before it is sent.
///
/// Ask it with [`kind`](Self::kind) or the `is_*` methods; what is wrong with
/// the partition key or the explicit hash key is its
/// [`source`](std::error::Error::source) (also
/// [`partition_key_error`](Self::partition_key_error) and
/// [`hash_key_error`](Self::hash_key_error)); a record too large gives its
/// [`size`](Self::size) and the [`max`](Self::max) in force.
///
/// ```
/// use kpl_codec::{RecordErrorKind, RecordLimits};
///
/// let err = RecordLimits::default().validate("", None, 10).unwrap_err();
/// assert_eq!(err.kind(), RecordErrorKind::PartitionKey);
/// assert!(err.partition_key_error().is_some_and(|e| e.is_empty()));
/// assert_eq!(err.to_string(), "invalid partition key");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    repr: Refused,
}

/// What kind of [`RecordError`] it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordErrorKind {
    /// The partition key is empty or too long.
    PartitionKey,
    /// The explicit hash key is not a decimal integer in `[0, 2^128 − 1]`.
    ExplicitHashKey,
    /// Data plus partition key bytes exceed the maximum record size.
    TooLarge,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Refused {
    PartitionKey(PartitionKeyError),
    ExplicitHashKey(ParseHashKeyError),
    TooLarge { size: usize, max: usize },
}

impl RecordError {
    /// A record of `size` bytes (data plus partition key) over the limit `max`.
    fn too_large(size: usize, max: usize) -> Self {
        Self {
            repr: Refused::TooLarge { size, max },
        }
    }

    /// What kind of error it is.
    pub fn kind(&self) -> RecordErrorKind {
        match self.repr {
            Refused::PartitionKey(_) => RecordErrorKind::PartitionKey,
            Refused::ExplicitHashKey(_) => RecordErrorKind::ExplicitHashKey,
            Refused::TooLarge { .. } => RecordErrorKind::TooLarge,
        }
    }

    /// The partition key is empty or too long.
    pub fn is_partition_key(&self) -> bool {
        self.kind() == RecordErrorKind::PartitionKey
    }

    /// The explicit hash key is not one.
    pub fn is_explicit_hash_key(&self) -> bool {
        self.kind() == RecordErrorKind::ExplicitHashKey
    }

    /// The record is over the maximum record size.
    pub fn is_too_large(&self) -> bool {
        self.kind() == RecordErrorKind::TooLarge
    }

    /// What is wrong with the partition key.
    pub fn partition_key_error(&self) -> Option<&PartitionKeyError> {
        match &self.repr {
            Refused::PartitionKey(e) => Some(e),
            _ => None,
        }
    }

    /// What is wrong with the explicit hash key.
    pub fn hash_key_error(&self) -> Option<&ParseHashKeyError> {
        match &self.repr {
            Refused::ExplicitHashKey(e) => Some(e),
            _ => None,
        }
    }

    /// A record too large: its data plus partition key bytes.
    pub fn size(&self) -> Option<usize> {
        match self.repr {
            Refused::TooLarge { size, .. } => Some(size),
            _ => None,
        }
    }

    /// A record too large: the limit in force.
    pub fn max(&self) -> Option<usize> {
        match self.repr {
            Refused::TooLarge { max, .. } => Some(max),
            _ => None,
        }
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            // The cause says what is wrong (`source()`): a chain prints it once.
            Refused::PartitionKey(_) => f.write_str("invalid partition key"),
            Refused::ExplicitHashKey(_) => f.write_str("invalid explicit hash key"),
            Refused::TooLarge { size, max } => write!(
                f,
                "record is {size} bytes (data plus partition key), over the {max}-byte limit: split it, or raise the stream's and the producer's max record size"
            ),
        }
    }
}

impl std::error::Error for RecordError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.repr {
            Refused::PartitionKey(e) => Some(e),
            Refused::ExplicitHashKey(e) => Some(e),
            Refused::TooLarge { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_key_counts_characters_not_bytes() {
        let max_chars: String = "鍵".repeat(256);
        assert!(max_chars.len() > 256);
        assert_eq!(validate_partition_key(&max_chars), Ok(()));
        let too_long: String = "鍵".repeat(257);
        let err = validate_partition_key(&too_long).unwrap_err();
        assert_eq!(err.kind(), PartitionKeyErrorKind::TooLong);
        assert_eq!(
            (err.chars(), err.prefix()),
            (Some(257), Some("鍵".repeat(16).as_str()))
        );
        assert_eq!(validate_partition_key(&"a".repeat(256)), Ok(()));
        assert!(validate_partition_key(&"a".repeat(257)).is_err());
        let err = validate_partition_key("").unwrap_err();
        assert!(err.is_empty() && !err.is_too_long());
        assert_eq!((err.chars(), err.prefix()), (None, None));
    }

    #[test]
    fn record_size_counts_data_and_key_bytes() {
        let limits = RecordLimits::default();
        assert_eq!(
            limits.validate("ab", None, DEFAULT_MAX_RECORD_SIZE - 2),
            Ok(None)
        );
        assert_eq!(
            limits.validate("ab", None, DEFAULT_MAX_RECORD_SIZE - 1),
            Err(RecordError::too_large(
                DEFAULT_MAX_RECORD_SIZE + 1,
                DEFAULT_MAX_RECORD_SIZE
            ))
        );
        assert_eq!(
            limits.validate("k", Some("42"), 0),
            Ok(Some(HashKey::new(42)))
        );
        let err = limits.validate("k", Some("x"), 0).unwrap_err();
        assert_eq!(err.kind(), RecordErrorKind::ExplicitHashKey);
        assert!(err.hash_key_error().is_some() && err.partition_key_error().is_none());
        let err = limits.validate("", None, 0).unwrap_err();
        assert!(err.is_partition_key());
        assert!(
            err.partition_key_error()
                .is_some_and(PartitionKeyError::is_empty)
        );
    }

    /// Each kind of record error: its values, its cause from `source()`, and a
    /// Display that says only its own level.
    #[test]
    fn record_errors_keep_their_cause_and_say_their_own_level() {
        use std::error::Error as _;
        let limits = RecordLimits::default();
        let err = limits.validate(&"k".repeat(300), None, 0).unwrap_err();
        assert_eq!(err.to_string(), "invalid partition key");
        let cause = err.source().expect("the key's error");
        assert!(
            cause
                .to_string()
                .starts_with("partition key starting \"kkkkkkkkkkkkkkkk\" has 300 characters")
        );
        assert!(cause.downcast_ref::<PartitionKeyError>().is_some());

        let err = limits.validate("k", Some("01"), 0).unwrap_err();
        assert_eq!(err.to_string(), "invalid explicit hash key");
        let cause = err.source().expect("the hash key's error");
        assert!(cause.downcast_ref::<ParseHashKeyError>().is_some());
        assert!(!err.to_string().contains(&cause.to_string()));

        let err = limits
            .validate("ab", None, DEFAULT_MAX_RECORD_SIZE)
            .unwrap_err();
        assert!(err.is_too_large());
        assert_eq!(
            (err.size(), err.max()),
            (
                Some(DEFAULT_MAX_RECORD_SIZE + 2),
                Some(DEFAULT_MAX_RECORD_SIZE)
            )
        );
        assert!(err.source().is_none());
        assert!(err.to_string().starts_with(&format!(
            "record is {} bytes (data plus partition key), over the {DEFAULT_MAX_RECORD_SIZE}-byte limit",
            DEFAULT_MAX_RECORD_SIZE + 2
        )));
    }

    #[test]
    fn record_limit_bounds() {
        assert!(RecordLimits::new(MAX_RECORD_SIZE_CEILING).is_ok());
        let err = RecordLimits::new(MAX_RECORD_SIZE_CEILING + 1).unwrap_err();
        assert_eq!(err.max_record_size(), MAX_RECORD_SIZE_CEILING + 1);
        assert!(RecordLimits::new(0).is_err());
    }
}

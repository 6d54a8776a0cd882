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
/// The partition key every aggregated record is sent with; its explicit hash key
/// does the routing.
pub const AGGREGATED_PARTITION_KEY: &str = "a";

/// Checks a partition key: 1 to 256 Unicode characters.
///
/// ```
/// use kpl_codec::{validate_partition_key, PartitionKeyError};
///
/// assert!(validate_partition_key("user-123").is_ok());
/// assert_eq!(validate_partition_key(""), Err(PartitionKeyError::Empty));
/// ```
pub fn validate_partition_key(partition_key: &str) -> Result<(), PartitionKeyError> {
    if partition_key.is_empty() {
        return Err(PartitionKeyError::Empty);
    }
    // Fewer bytes than the limit means fewer characters too: skip the count.
    if partition_key.len() > MAX_PARTITION_KEY_CHARS {
        let chars = partition_key.chars().count();
        if chars > MAX_PARTITION_KEY_CHARS {
            return Err(PartitionKeyError::TooLong {
                chars,
                prefix: partition_key.chars().take(16).collect(),
            });
        }
    }
    Ok(())
}

/// Why a partition key is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartitionKeyError {
    /// The key is empty; Kinesis needs at least one character.
    Empty,
    /// The key has more than 256 Unicode characters.
    TooLong {
        /// How many characters it has.
        chars: usize,
        /// Its first 16 characters, to find it by.
        prefix: String,
    },
}

impl fmt::Display for PartitionKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("partition key is empty: give 1 to 256 characters"),
            Self::TooLong { chars, prefix } => write!(
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
        validate_partition_key(partition_key).map_err(RecordError::PartitionKey)?;
        let explicit = explicit_hash_key
            .map(HashKey::from_decimal)
            .transpose()
            .map_err(RecordError::ExplicitHashKey)?;
        let size = data_len.saturating_add(partition_key.len());
        if size > self.max_record_size {
            return Err(RecordError::TooLarge {
                size,
                max: self.max_record_size,
            });
        }
        Ok(explicit)
    }
}

/// A maximum record size outside 1 byte to 10 MiB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordLimitError {
    /// The refused value.
    pub max_record_size: usize,
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
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// The partition key is empty or too long.
    PartitionKey(PartitionKeyError),
    /// The explicit hash key is not a decimal integer in `[0, 2^128 − 1]`.
    ExplicitHashKey(ParseHashKeyError),
    /// Data plus partition key bytes exceed the maximum record size.
    TooLarge {
        /// Data plus partition key bytes.
        size: usize,
        /// The limit in force.
        max: usize,
    },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The cause says what is wrong (`source()`): a chain prints it once.
            Self::PartitionKey(_) => f.write_str("invalid partition key"),
            Self::ExplicitHashKey(_) => f.write_str("invalid explicit hash key"),
            Self::TooLarge { size, max } => write!(
                f,
                "record is {size} bytes (data plus partition key), over the {max}-byte limit: split it, or raise the stream's and the producer's max record size"
            ),
        }
    }
}

impl std::error::Error for RecordError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::PartitionKey(e) => Some(e),
            Self::ExplicitHashKey(e) => Some(e),
            Self::TooLarge { .. } => None,
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
        assert!(matches!(
            validate_partition_key(&too_long),
            Err(PartitionKeyError::TooLong { chars: 257, .. })
        ));
        assert_eq!(validate_partition_key(&"a".repeat(256)), Ok(()));
        assert!(validate_partition_key(&"a".repeat(257)).is_err());
        assert_eq!(validate_partition_key(""), Err(PartitionKeyError::Empty));
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
            Err(RecordError::TooLarge {
                size: DEFAULT_MAX_RECORD_SIZE + 1,
                max: DEFAULT_MAX_RECORD_SIZE
            })
        );
        assert_eq!(
            limits.validate("k", Some("42"), 0),
            Ok(Some(HashKey::new(42)))
        );
        assert!(matches!(
            limits.validate("k", Some("x"), 0),
            Err(RecordError::ExplicitHashKey(_))
        ));
        assert!(matches!(
            limits.validate("", None, 0),
            Err(RecordError::PartitionKey(PartitionKeyError::Empty))
        ));
    }

    #[test]
    fn record_limit_bounds() {
        assert!(RecordLimits::new(MAX_RECORD_SIZE_CEILING).is_ok());
        assert_eq!(
            RecordLimits::new(MAX_RECORD_SIZE_CEILING + 1),
            Err(RecordLimitError {
                max_record_size: MAX_RECORD_SIZE_CEILING + 1
            })
        );
        assert!(RecordLimits::new(0).is_err());
    }
}

//! User records, as producers add them and consumers read them back.

use crate::hash::HashKey;

/// A key/value tag carried by a user record inside an aggregate.
///
/// The format has them; the reference aggregators never write them, and the KCL
/// ignores them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tag {
    /// The tag's key.
    pub key: String,
    /// The tag's value, if it has one.
    pub value: Option<String>,
}

/// One user record to aggregate: what a producer's caller put.
///
/// `D` is the data's storage (`Vec<u8>`, `bytes::Bytes`, `&[u8]`, …).
///
/// ```
/// use kpl_codec::{HashKey, UserRecord};
///
/// let record = UserRecord::new("user-123", b"hello".to_vec())
///     .with_explicit_hash_key(HashKey::new(42));
/// assert_eq!(record.hash_key(), HashKey::new(42));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserRecord<D = Vec<u8>> {
    /// The partition key (1 to 256 characters for Kinesis to accept it).
    pub partition_key: String,
    /// The explicit hash key, which overrides the partition key's hash for routing.
    pub explicit_hash_key: Option<HashKey>,
    /// The record's payload.
    pub data: D,
    /// Tags; usually empty.
    pub tags: Vec<Tag>,
}

impl<D> UserRecord<D> {
    /// A record with a partition key and data, no explicit hash key, no tags.
    pub fn new(partition_key: impl Into<String>, data: D) -> Self {
        Self {
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data,
            tags: Vec::new(),
        }
    }

    /// Sets the explicit hash key.
    pub fn with_explicit_hash_key(mut self, key: HashKey) -> Self {
        self.explicit_hash_key = Some(key);
        self
    }

    /// Adds a tag.
    pub fn with_tag(mut self, key: impl Into<String>, value: Option<String>) -> Self {
        self.tags.push(Tag {
            key: key.into(),
            value,
        });
        self
    }

    /// The hash key Kinesis routes this record by: the explicit hash key, or the
    /// MD5 of the partition key.
    pub fn hash_key(&self) -> HashKey {
        self.explicit_hash_key
            .unwrap_or_else(|| HashKey::from_partition_key(&self.partition_key))
    }
}

/// A tag read from an aggregate, borrowing from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TagRef<'a> {
    /// The tag's key.
    pub key: &'a str,
    /// The tag's value, if it has one.
    pub value: Option<&'a str>,
}

/// A user record read from a Kinesis record, borrowing from that record's data.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserRecordRef<'a> {
    /// The user record's partition key.
    pub partition_key: &'a str,
    /// The explicit hash key as written, only where the record has one (in an
    /// aggregate: only where it has an explicit-hash-key index).
    pub explicit_hash_key: Option<&'a str>,
    /// The user record's data.
    pub data: &'a [u8],
    /// Its tags, in order.
    pub tags: Vec<TagRef<'a>>,
    /// Its index in the aggregate (the KCL's sub-sequence number), or `None` when
    /// the Kinesis record was not aggregated.
    pub sub_sequence_number: Option<u64>,
}

impl UserRecordRef<'_> {
    /// The hash key Kinesis would route this user record by.
    ///
    /// Fails only when the record's explicit hash key is not a valid one.
    pub fn hash_key(&self) -> Result<HashKey, crate::ParseHashKeyError> {
        match self.explicit_hash_key {
            Some(key) => HashKey::from_decimal(key),
            None => Ok(HashKey::from_partition_key(self.partition_key)),
        }
    }
}

//! Reading aggregated records back into user records.

use std::fmt;

use crate::encode::{AGGREGATE_OVERHEAD, DIGEST_LEN, MAGIC};
use crate::md5_lanes;
use crate::record::{TagRef, UserRecordRef};

/// Whether `data` is in the aggregated format: it starts with the magic bytes and is
/// long enough to hold the digest. Anything else is a plain record, as for the KCL.
pub fn is_aggregated(data: &[u8]) -> bool {
    data.len() >= AGGREGATE_OVERHEAD && data.starts_with(&MAGIC)
}

/// Reads one Kinesis record into its user records, borrowing from `data`.
///
/// A record in the aggregated format ([`is_aggregated`]) yields its user records with
/// their sub-sequence numbers, after the MD5 digest is verified; any other record
/// yields itself (its own keys, no sub-sequence number), as the KCL does.
///
/// Every defect of an aggregated record is a [`DecodeError`], never a panic.
///
/// ```
/// use kpl_codec::deaggregate;
///
/// let plain = deaggregate("pk", None, b"not aggregated")?;
/// assert_eq!(plain.len(), 1);
/// assert_eq!(plain[0].sub_sequence_number, None);
/// # Ok::<(), kpl_codec::DecodeError>(())
/// ```
pub fn deaggregate<'a>(
    partition_key: &'a str,
    explicit_hash_key: Option<&'a str>,
    data: &'a [u8],
) -> Result<Vec<UserRecordRef<'a>>, DecodeError> {
    if is_aggregated(data) {
        decode_aggregated(data)
    } else {
        Ok(plain(partition_key, explicit_hash_key, data))
    }
}

/// Decodes an aggregated record (magic, protobuf, MD5) into its user records.
///
/// Unlike [`deaggregate`], data without the magic is an error here
/// ([`DecodeErrorKind::NotAggregated`]). Unknown protobuf fields are skipped.
pub fn decode_aggregated(data: &[u8]) -> Result<Vec<UserRecordRef<'_>>, DecodeError> {
    if !is_aggregated(data) {
        return Err(Defect::NotAggregated { len: data.len() }.into());
    }
    decode_digested(data, md5_lanes::digest(body(data)))
}

/// The user records of one Kinesis record, or why they cannot be read.
pub type Deaggregated<'a> = Result<Vec<UserRecordRef<'a>>, DecodeError>;

/// [`deaggregate`] of many Kinesis records (`(partition_key, explicit_hash_key,
/// data)` each), the answers in order: each the one [`deaggregate`] gives, the
/// checksums of the aggregates among them computed four at a time (about twice as
/// fast as one by one), for a consumer that reads records in batches, as a Lambda
/// function gets them.
///
/// ```
/// use kpl_codec::{AggregateBuilder, UserRecord, deaggregate_all};
///
/// let mut builder = AggregateBuilder::new();
/// builder.add(UserRecord::new("pk1", b"one".to_vec()));
/// builder.add(UserRecord::new("pk2", b"two".to_vec()));
/// let aggregate = builder.encode().expect("two records");
/// let records = [
///     (aggregate.partition_key.as_str(), None, aggregate.data.as_slice()),
///     ("pk3", None, &b"plain"[..]),
/// ];
/// let answers = deaggregate_all(&records);
/// assert_eq!(answers[0].as_ref().map(Vec::len), Ok(2));
/// assert_eq!(answers[1].as_ref().map(|r| r[0].data), Ok(&b"plain"[..]));
/// ```
pub fn deaggregate_all<'a>(
    records: &[(&'a str, Option<&'a str>, &'a [u8])],
) -> Vec<Deaggregated<'a>> {
    let bodies: Vec<&[u8]> = records
        .iter()
        .filter(|(_, _, data)| is_aggregated(data))
        .map(|(_, _, data)| body(data))
        .collect();
    let mut digests = md5_lanes::digests(&bodies).into_iter();
    records
        .iter()
        .map(|&(partition_key, explicit_hash_key, data)| {
            if is_aggregated(data) {
                let digest = digests.next().expect("a digest for each aggregate");
                decode_digested(data, digest)
            } else {
                Ok(plain(partition_key, explicit_hash_key, data))
            }
        })
        .collect()
}

/// The protobuf body of an aggregated record (between magic and digest).
fn body(data: &[u8]) -> &[u8] {
    &data[MAGIC.len()..data.len() - DIGEST_LEN]
}

/// A record that is no aggregate, as its one user record.
fn plain<'a>(
    partition_key: &'a str,
    explicit_hash_key: Option<&'a str>,
    data: &'a [u8],
) -> Vec<UserRecordRef<'a>> {
    vec![UserRecordRef {
        partition_key,
        explicit_hash_key,
        data,
        tags: Vec::new(),
        sub_sequence_number: None,
    }]
}

/// Decodes an aggregated record whose body's MD5 is `actual`.
fn decode_digested(
    data: &[u8],
    actual: [u8; DIGEST_LEN],
) -> Result<Vec<UserRecordRef<'_>>, DecodeError> {
    let body_end = data.len() - DIGEST_LEN;
    let mut expected = [0u8; DIGEST_LEN];
    expected.copy_from_slice(&data[body_end..]);
    if actual != expected {
        return Err(Defect::ChecksumMismatch { expected, actual }.into());
    }

    let mut partition_keys = Vec::new();
    let mut explicit_hash_keys = Vec::new();
    let mut raw = Vec::new();
    let mut cursor = Cursor {
        data,
        pos: MAGIC.len(),
        end: body_end,
    };
    while !cursor.at_end() {
        let (field, wire) = cursor.tag()?;
        match (field, wire) {
            (1, WIRE_LEN) => partition_keys.push(cursor.string("partition_key_table")?),
            (2, WIRE_LEN) => explicit_hash_keys.push(cursor.string("explicit_hash_key_table")?),
            (3, WIRE_LEN) => {
                let message = cursor.sub_message()?;
                raw.push(read_record(message, raw.len())?);
            }
            (1..=3, _) => return Err(cursor.wrong_wire_type(field, wire).into()),
            _ => cursor.skip(wire)?,
        }
    }

    raw.into_iter()
        .enumerate()
        .map(|(index, r)| {
            let partition_key = *partition_keys
                .get(index_usize(r.partition_key_index))
                .ok_or(Defect::IndexOutOfRange {
                    record: index,
                    table: KeyTable::PartitionKey,
                    index: r.partition_key_index,
                    table_len: partition_keys.len(),
                })?;
            let explicit_hash_key =
                r.explicit_hash_key_index
                    .map(|i| {
                        explicit_hash_keys.get(index_usize(i)).copied().ok_or(
                            Defect::IndexOutOfRange {
                                record: index,
                                table: KeyTable::ExplicitHashKey,
                                index: i,
                                table_len: explicit_hash_keys.len(),
                            },
                        )
                    })
                    .transpose()?;
            Ok(UserRecordRef {
                partition_key,
                explicit_hash_key,
                data: r.data,
                tags: r.tags,
                sub_sequence_number: Some(index as u64),
            })
        })
        .collect()
}

fn index_usize(index: u64) -> usize {
    usize::try_from(index).unwrap_or(usize::MAX)
}

struct RawRecord<'a> {
    partition_key_index: u64,
    explicit_hash_key_index: Option<u64>,
    data: &'a [u8],
    tags: Vec<TagRef<'a>>,
}

fn read_record<'a>(mut cursor: Cursor<'a>, record: usize) -> Result<RawRecord<'a>, Defect> {
    let mut partition_key_index = None;
    let mut explicit_hash_key_index = None;
    let mut data = None;
    let mut tags = Vec::new();
    while !cursor.at_end() {
        let (field, wire) = cursor.tag()?;
        match (field, wire) {
            (1, WIRE_VARINT) => partition_key_index = Some(cursor.varint()?),
            (2, WIRE_VARINT) => explicit_hash_key_index = Some(cursor.varint()?),
            (3, WIRE_LEN) => data = Some(cursor.bytes()?),
            (4, WIRE_LEN) => tags.push(read_tag(cursor.sub_message()?, record)?),
            (1..=4, _) => return Err(cursor.wrong_wire_type(field, wire)),
            _ => cursor.skip(wire)?,
        }
    }
    let missing = |field| Defect::MissingField { record, field };
    Ok(RawRecord {
        partition_key_index: partition_key_index.ok_or(missing("partition_key_index"))?,
        explicit_hash_key_index,
        data: data.ok_or(missing("data"))?,
        tags,
    })
}

fn read_tag<'a>(mut cursor: Cursor<'a>, record: usize) -> Result<TagRef<'a>, Defect> {
    let mut key = None;
    let mut value = None;
    while !cursor.at_end() {
        let (field, wire) = cursor.tag()?;
        match (field, wire) {
            (1, WIRE_LEN) => key = Some(cursor.string("tag key")?),
            (2, WIRE_LEN) => value = Some(cursor.string("tag value")?),
            (1..=2, _) => return Err(cursor.wrong_wire_type(field, wire)),
            _ => cursor.skip(wire)?,
        }
    }
    Ok(TagRef {
        key: key.ok_or(Defect::MissingField {
            record,
            field: "tag key",
        })?,
        value,
    })
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

/// A bounded reader over `data[pos..end]`; offsets in errors are into `data`, the
/// whole Kinesis record.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Cursor<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.end
    }

    fn varint(&mut self) -> Result<u64, Defect> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.data[..self.end].get(self.pos) else {
                return Err(Defect::Truncated { offset: start });
            };
            self.pos += 1;
            let bits = u64::from(byte & 0x7f);
            if i == 9 && bits > 1 {
                return Err(Defect::VarintOverflow { offset: start });
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Defect::VarintOverflow { offset: start })
    }

    fn tag(&mut self) -> Result<(u64, u8), Defect> {
        let offset = self.pos;
        let tag = self.varint()?;
        let field = tag >> 3;
        let wire = (tag & 7) as u8;
        if field == 0 || !matches!(wire, WIRE_VARINT | WIRE_FIXED64 | WIRE_LEN | WIRE_FIXED32) {
            return Err(Defect::InvalidTag { offset, tag });
        }
        Ok((field, wire))
    }

    fn take(&mut self, len: u64, offset: usize) -> Result<&'a [u8], Defect> {
        let remaining = self.end - self.pos;
        match usize::try_from(len) {
            Ok(len) if len <= remaining => {
                let slice = &self.data[self.pos..self.pos + len];
                self.pos += len;
                Ok(slice)
            }
            _ => Err(Defect::Truncated { offset }),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], Defect> {
        let offset = self.pos;
        let len = self.varint()?;
        self.take(len, offset)
    }

    fn string(&mut self, field: &'static str) -> Result<&'a str, Defect> {
        let offset = self.pos;
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|_| Defect::InvalidUtf8 { offset, field })
    }

    fn sub_message(&mut self) -> Result<Cursor<'a>, Defect> {
        let offset = self.pos;
        let len = self.varint()?;
        let start = self.pos;
        self.take(len, offset)?;
        Ok(Cursor {
            data: self.data,
            pos: start,
            end: self.pos,
        })
    }

    fn skip(&mut self, wire: u8) -> Result<(), Defect> {
        let offset = self.pos;
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_FIXED64 => self.take(8, offset).map(drop),
            WIRE_FIXED32 => self.take(4, offset).map(drop),
            _ => self.bytes().map(drop),
        }
    }

    fn wrong_wire_type(&self, field: u64, wire: u8) -> Defect {
        Defect::InvalidTag {
            offset: self.pos,
            tag: field << 3 | u64::from(wire),
        }
    }
}

/// Which key table an index points into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyTable {
    /// `partition_key_table`.
    PartitionKey,
    /// `explicit_hash_key_table`.
    ExplicitHashKey,
}

/// Why an aggregated record cannot be read.
///
/// Ask it with [`kind`](Self::kind) or the `is_*` methods, and for where and
/// what with [`offset`](Self::offset) (bytes from the start of the Kinesis
/// record's data: the magic is at 0), [`tag`](Self::tag),
/// [`record`](Self::record), [`field`](Self::field), [`table`](Self::table),
/// [`index`](Self::index), [`table_len`](Self::table_len),
/// [`data_len`](Self::data_len) and the two digests. No error value is behind
/// it: the bytes are what is wrong.
///
/// ```
/// use kpl_codec::{DecodeErrorKind, decode_aggregated};
///
/// let err = decode_aggregated(b"plain").unwrap_err();
/// assert_eq!(err.kind(), DecodeErrorKind::NotAggregated);
/// assert_eq!(err.data_len(), Some(5));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    defect: Defect,
}

/// What kind of [`DecodeError`] it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The data does not start with the magic bytes, or is shorter than 20 bytes
    /// (only from [`decode_aggregated`]; [`deaggregate`] passes such records through).
    NotAggregated,
    /// The MD5 at the end does not match the protobuf body: the record was damaged
    /// or cut.
    ChecksumMismatch,
    /// A field or length runs past the end of its message.
    Truncated,
    /// A varint is longer than 10 bytes or does not fit in 64 bits.
    VarintOverflow,
    /// A tag has field number 0, a group or unknown wire type, or a known field
    /// has the wrong wire type.
    InvalidTag,
    /// A record's key index points past the end of its table.
    IndexOutOfRange,
    /// A string field is not valid UTF-8.
    InvalidUtf8,
    /// A required field is absent.
    MissingField,
}

impl From<Defect> for DecodeError {
    fn from(defect: Defect) -> Self {
        Self { defect }
    }
}

impl DecodeError {
    /// What kind of error it is.
    pub fn kind(&self) -> DecodeErrorKind {
        match self.defect {
            Defect::NotAggregated { .. } => DecodeErrorKind::NotAggregated,
            Defect::ChecksumMismatch { .. } => DecodeErrorKind::ChecksumMismatch,
            Defect::Truncated { .. } => DecodeErrorKind::Truncated,
            Defect::VarintOverflow { .. } => DecodeErrorKind::VarintOverflow,
            Defect::InvalidTag { .. } => DecodeErrorKind::InvalidTag,
            Defect::IndexOutOfRange { .. } => DecodeErrorKind::IndexOutOfRange,
            Defect::InvalidUtf8 { .. } => DecodeErrorKind::InvalidUtf8,
            Defect::MissingField { .. } => DecodeErrorKind::MissingField,
        }
    }

    /// The data is not in the aggregated format.
    pub fn is_not_aggregated(&self) -> bool {
        self.kind() == DecodeErrorKind::NotAggregated
    }

    /// The MD5 at the end does not match the body.
    pub fn is_checksum_mismatch(&self) -> bool {
        self.kind() == DecodeErrorKind::ChecksumMismatch
    }

    /// A field or length runs past the end of its message.
    pub fn is_truncated(&self) -> bool {
        self.kind() == DecodeErrorKind::Truncated
    }

    /// A varint does not fit in 64 bits.
    pub fn is_varint_overflow(&self) -> bool {
        self.kind() == DecodeErrorKind::VarintOverflow
    }

    /// A tag is not one the format allows there.
    pub fn is_invalid_tag(&self) -> bool {
        self.kind() == DecodeErrorKind::InvalidTag
    }

    /// A record's key index points past the end of its table.
    pub fn is_index_out_of_range(&self) -> bool {
        self.kind() == DecodeErrorKind::IndexOutOfRange
    }

    /// A string field is not valid UTF-8.
    pub fn is_invalid_utf8(&self) -> bool {
        self.kind() == DecodeErrorKind::InvalidUtf8
    }

    /// A required field is absent.
    pub fn is_missing_field(&self) -> bool {
        self.kind() == DecodeErrorKind::MissingField
    }

    /// The length of data not in the aggregated format.
    pub fn data_len(&self) -> Option<usize> {
        match self.defect {
            Defect::NotAggregated { len } => Some(len),
            _ => None,
        }
    }

    /// The digest stored in a record whose checksum does not match.
    pub fn expected_digest(&self) -> Option<[u8; 16]> {
        match self.defect {
            Defect::ChecksumMismatch { expected, .. } => Some(expected),
            _ => None,
        }
    }

    /// The digest of the body as received, for a checksum that does not match.
    pub fn actual_digest(&self) -> Option<[u8; 16]> {
        match self.defect {
            Defect::ChecksumMismatch { actual, .. } => Some(actual),
            _ => None,
        }
    }

    /// Where it is, in bytes from the start of the record's data: where the
    /// truncated field's length (or varint) starts, where the varint that
    /// overflows starts, where the invalid tag's field starts (or ends, for a
    /// wrong wire type), where the length of the string that is not UTF-8 starts.
    pub fn offset(&self) -> Option<usize> {
        match self.defect {
            Defect::Truncated { offset }
            | Defect::VarintOverflow { offset }
            | Defect::InvalidTag { offset, .. }
            | Defect::InvalidUtf8 { offset, .. } => Some(offset),
            _ => None,
        }
    }

    /// The raw invalid tag.
    pub fn tag(&self) -> Option<u64> {
        match self.defect {
            Defect::InvalidTag { tag, .. } => Some(tag),
            _ => None,
        }
    }

    /// The user record's position in the aggregate, for an index out of range
    /// or a missing field.
    pub fn record(&self) -> Option<usize> {
        match self.defect {
            Defect::IndexOutOfRange { record, .. } | Defect::MissingField { record, .. } => {
                Some(record)
            }
            _ => None,
        }
    }

    /// Which field: the string that is not UTF-8 (`partition_key_table`, …), or
    /// the required field missing (`partition_key_index`, `data` or `tag key`).
    pub fn field(&self) -> Option<&'static str> {
        match self.defect {
            Defect::InvalidUtf8 { field, .. } | Defect::MissingField { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The table an index out of range points into.
    pub fn table(&self) -> Option<KeyTable> {
        match self.defect {
            Defect::IndexOutOfRange { table, .. } => Some(table),
            _ => None,
        }
    }

    /// The index out of range.
    pub fn index(&self) -> Option<u64> {
        match self.defect {
            Defect::IndexOutOfRange { index, .. } => Some(index),
            _ => None,
        }
    }

    /// The length of the table an index out of range points into.
    pub fn table_len(&self) -> Option<usize> {
        match self.defect {
            Defect::IndexOutOfRange { table_len, .. } => Some(table_len),
            _ => None,
        }
    }
}

/// The defects, as [`DecodeError`] holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Defect {
    /// The data does not start with the magic bytes, or is shorter than 20 bytes
    /// (only from [`decode_aggregated`]; [`deaggregate`] passes such records through).
    NotAggregated {
        /// Length of the data.
        len: usize,
    },
    /// The MD5 at the end does not match the protobuf body: the record was damaged
    /// or cut.
    ChecksumMismatch {
        /// The digest stored in the record.
        expected: [u8; 16],
        /// The digest of the body as received.
        actual: [u8; 16],
    },
    /// A field or length runs past the end of its message.
    Truncated {
        /// Where the field's length (or varint) starts.
        offset: usize,
    },
    /// A varint is longer than 10 bytes or does not fit in 64 bits.
    VarintOverflow {
        /// Where the varint starts.
        offset: usize,
    },
    /// A tag has field number 0, a group or unknown wire type, or a known field
    /// has the wrong wire type.
    InvalidTag {
        /// Where the field starts (or ends, for a wrong wire type).
        offset: usize,
        /// The raw tag.
        tag: u64,
    },
    /// A record's key index points past the end of its table.
    IndexOutOfRange {
        /// The record's position in the aggregate.
        record: usize,
        /// The table it points into.
        table: KeyTable,
        /// The index it holds.
        index: u64,
        /// The table's length.
        table_len: usize,
    },
    /// A string field is not valid UTF-8.
    InvalidUtf8 {
        /// Where the field's length starts.
        offset: usize,
        /// Which field.
        field: &'static str,
    },
    /// A required field is absent.
    MissingField {
        /// The record's position in the aggregate.
        record: usize,
        /// Which field: `partition_key_index`, `data` or `tag key`.
        field: &'static str,
    },
}

fn hex(bytes: &[u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.defect {
            Defect::NotAggregated { len } => write!(
                f,
                "not an aggregated record ({len} bytes, no magic F3899AC2 followed by at least 16 bytes): read it as a plain record"
            ),
            Defect::ChecksumMismatch { expected, actual } => write!(
                f,
                "aggregated record is damaged: stored MD5 {} but the body hashes to {}",
                hex(expected),
                hex(actual)
            ),
            Defect::Truncated { offset } => {
                write!(
                    f,
                    "aggregated record is truncated: the field at byte {offset} runs past its message"
                )
            }
            Defect::VarintOverflow { offset } => {
                write!(
                    f,
                    "aggregated record has a varint at byte {offset} that overflows 64 bits"
                )
            }
            Defect::InvalidTag { offset, tag } => write!(
                f,
                "aggregated record has an invalid protobuf tag {tag} (field {}, wire type {}) at byte {offset}",
                tag >> 3,
                tag & 7
            ),
            Defect::IndexOutOfRange {
                record,
                table,
                index,
                table_len,
            } => write!(
                f,
                "user record {record} points to {} {index}, but the table has {table_len} entries",
                match table {
                    KeyTable::PartitionKey => "partition key",
                    KeyTable::ExplicitHashKey => "explicit hash key",
                }
            ),
            Defect::InvalidUtf8 { offset, field } => {
                write!(
                    f,
                    "aggregated record has invalid UTF-8 in {field} at byte {offset}"
                )
            }
            Defect::MissingField { record, field } => {
                write!(f, "user record {record} lacks its required field {field}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

//! Building aggregated records.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use quick_protobuf::sizeofs::sizeof_varint;

use crate::hash::HashKey;
use crate::limits::AGGREGATED_PARTITION_KEY;
use crate::md5_lanes;
use crate::record::{Tag, UserRecord};

/// The four bytes every aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// Length of the MD5 digest that ends every aggregated record.
pub const DIGEST_LEN: usize = 16;
/// Bytes an aggregated record adds around its protobuf body: magic and digest.
pub const AGGREGATE_OVERHEAD: usize = MAGIC.len() + DIGEST_LEN;

// Protobuf tags (field number << 3 | wire type) of the format's fields.
const TAG_PARTITION_KEY_TABLE: u32 = 1 << 3 | 2;
const TAG_EXPLICIT_HASH_KEY_TABLE: u32 = 2 << 3 | 2;
const TAG_RECORDS: u32 = 3 << 3 | 2;
const TAG_RECORD_PARTITION_KEY_INDEX: u32 = 1 << 3;
const TAG_RECORD_EXPLICIT_HASH_KEY_INDEX: u32 = 2 << 3;
const TAG_RECORD_DATA: u32 = 3 << 3 | 2;
const TAG_RECORD_TAGS: u32 = 4 << 3 | 2;
const TAG_TAG_KEY: u32 = 1 << 3 | 2;
const TAG_TAG_VALUE: u32 = 2 << 3 | 2;

/// Encoded size of a length-delimited field of a one-byte tag.
fn len_field(len: usize) -> usize {
    1 + sizeof_varint(len as u64) + len
}

/// Encoded size of a varint field of a one-byte tag.
fn varint_field(value: usize) -> usize {
    1 + sizeof_varint(value as u64)
}

/// Appends `v` as a protobuf varint.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field of a one-byte tag.
fn put_bytes_field(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_varint(out, u64::from(tag));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends the explicit-hash-key table: each key in decimal.
fn put_explicit_hash_key_table(out: &mut Vec<u8>, keys: &[HashKey]) {
    let mut digits = [0u8; 39];
    for key in keys {
        put_bytes_field(
            out,
            TAG_EXPLICIT_HASH_KEY_TABLE,
            format_decimal(key.get(), &mut digits),
        );
    }
}

/// Appends a `Record` message's tag and length, its key indexes and its data (its
/// tags, if any, follow).
fn put_record_head(
    out: &mut Vec<u8>,
    message_len: usize,
    partition_key_index: usize,
    explicit_hash_key_index: Option<usize>,
    data: &[u8],
) {
    put_varint(out, u64::from(TAG_RECORDS));
    put_varint(out, message_len as u64);
    put_varint(out, u64::from(TAG_RECORD_PARTITION_KEY_INDEX));
    put_varint(out, partition_key_index as u64);
    if let Some(index) = explicit_hash_key_index {
        put_varint(out, u64::from(TAG_RECORD_EXPLICIT_HASH_KEY_INDEX));
        put_varint(out, index as u64);
    }
    put_bytes_field(out, TAG_RECORD_DATA, data);
}

fn tag_len(tag: &Tag) -> usize {
    len_field(tag.key.len()) + tag.value.as_ref().map_or(0, |v| len_field(v.len()))
}

/// An upper bound of the bytes a user record (without tags) adds to an aggregate:
/// its partition key in the key table (as if new), its explicit hash key in that
/// table (as if new, 39 digits at most), and its record message with indexes of up
/// to 32 bits. [`AggregateBuilder::size_with`] gives the exact figure for one
/// builder; this bound needs no builder, so a pipeline can size its batches before
/// it encodes them.
///
/// ```
/// use kpl_codec::{AggregateBuilder, UserRecord, aggregate_growth_bound};
///
/// let mut b: AggregateBuilder<Vec<u8>> = AggregateBuilder::new();
/// let before = b.size();
/// let after = b.add(UserRecord::new("user-123".to_owned(), vec![0u8; 100]));
/// assert!(after - before <= aggregate_growth_bound(8, 100, false));
/// ```
pub fn aggregate_growth_bound(
    partition_key_len: usize,
    data_len: usize,
    explicit_hash_key: bool,
) -> usize {
    const INDEX: usize = 1 + 5; // tag and a varint of up to 32 bits
    const HASH_KEY_DIGITS: usize = 39; // 2^128 − 1
    let mut message = INDEX + len_field(data_len);
    let mut tables = len_field(partition_key_len);
    if explicit_hash_key {
        message += INDEX;
        tables += len_field(HASH_KEY_DIGITS);
    }
    tables + len_field(message)
}

/// One record ready for `PutRecords`: an aggregate, or a lone user record sent raw.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KinesisRecord {
    /// The partition key to send: `"a"` for an aggregate, the user's own key for a
    /// raw record.
    pub partition_key: String,
    /// The explicit hash key to send: for an aggregate, the hash key of its first
    /// user record (so it lands on the shard predicted for all of them); for a raw
    /// record, the user's own, if any.
    pub explicit_hash_key: Option<HashKey>,
    /// The bytes to send.
    pub data: Vec<u8>,
    /// Whether `data` is in the aggregated format.
    pub aggregated: bool,
}

struct Entry<D> {
    record: UserRecord<D>,
    partition_key_index: usize,
    explicit_hash_key_index: Option<usize>,
    /// Encoded length of the `Record` message, without its own tag and length.
    message_len: usize,
}

/// An identity hasher for keys that are already hashes.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in rather than lose it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

const NO_NEXT: usize = usize::MAX;

/// Builds one aggregated record and knows its exact encoded size at every step.
///
/// Add user records with [`add`](Self::add); [`size`](Self::size) is then the exact
/// length of the aggregate [`encode`](Self::encode) would produce (magic, protobuf,
/// MD5), and [`size_with`](Self::size_with) tells, before adding, what a record would
/// make it, so a caller can stop under a limit. Both are O(1) (one hash look-up);
/// nothing is encoded until asked.
///
/// Key tables are de-duplicated in first-seen order and fields are written in
/// field-number order, so the bytes equal those of the reference aggregators for the
/// same records.
///
/// The builder does not check where records land: **every record of one aggregate
/// must map to the same shard**, or a KCL consumer drops the ones outside the
/// receiving shard's range. Callers group records by predicted shard first.
///
/// ```
/// use kpl_codec::{deaggregate, AggregateBuilder, UserRecord};
///
/// let mut builder = AggregateBuilder::new();
/// builder.add(UserRecord::new("pk1", b"hello".to_vec()));
/// let next = UserRecord::new("pk2", b"world".to_vec());
/// assert_eq!(builder.size_with(&next), 52);
/// builder.add(next);
///
/// let record = builder.encode().expect("not empty");
/// assert!(record.aggregated);
/// assert_eq!(record.partition_key, "a");
/// assert_eq!(record.data.len(), builder.size());
///
/// let users = deaggregate(&record.partition_key, None, &record.data)?;
/// assert_eq!(users[1].data, b"world");
/// # Ok::<(), kpl_codec::DecodeError>(())
/// ```
pub struct AggregateBuilder<D = Vec<u8>> {
    entries: Vec<Entry<D>>,
    hasher: RandomState,
    /// Hash of a partition key → its newest table index with that hash.
    partition_key_lookup: HashMap<u64, usize, BuildHasherDefault<PreHashed>>,
    /// Per table index: the entry that holds the key, and the next older table
    /// index with the same hash (a collision chain; almost always `NO_NEXT`).
    partition_key_table: Vec<(usize, usize)>,
    explicit_hash_key_lookup: HashMap<u128, usize>,
    explicit_hash_key_table: Vec<HashKey>,
    body_len: usize,
}

impl<D> Default for AggregateBuilder<D> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            hasher: RandomState::new(),
            partition_key_lookup: HashMap::default(),
            partition_key_table: Vec::new(),
            explicit_hash_key_lookup: HashMap::default(),
            explicit_hash_key_table: Vec::new(),
            body_len: 0,
        }
    }
}

impl<D> std::fmt::Debug for AggregateBuilder<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateBuilder")
            .field("records", &self.entries.len())
            .field("partition_keys", &self.partition_key_table.len())
            .field("explicit_hash_keys", &self.explicit_hash_key_table.len())
            .field("size", &(AGGREGATE_OVERHEAD + self.body_len))
            .finish()
    }
}

impl<D: AsRef<[u8]>> AggregateBuilder<D> {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of user records added.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no record was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The exact length in bytes of the aggregated record holding the records added
    /// so far: magic, protobuf body and digest (20 when empty).
    pub fn size(&self) -> usize {
        AGGREGATE_OVERHEAD + self.body_len
    }

    /// The exact [`size`](Self::size) the aggregate would have with `record` added.
    pub fn size_with(&self, record: &UserRecord<D>) -> usize {
        let hash = self.hasher.hash_one(record.partition_key.as_str());
        let (pk, ehk) = self.lookup(record, hash);
        self.size() + self.growth(record, pk, ehk).0
    }

    /// Adds a user record and returns the new exact [`size`](Self::size).
    pub fn add(&mut self, record: UserRecord<D>) -> usize {
        let hash = self.hasher.hash_one(record.partition_key.as_str());
        self.add_hashed(record, hash)
    }

    /// Like [`add`](Self::add), with a hash of the record's partition key given (a
    /// producer that routed the record by the key's MD5 has one: its low 64 bits),
    /// so the key is not hashed again. Equal keys must get equal hashes: feed a
    /// builder either by `add` or by this between two [`clear`](Self::clear)s, not
    /// both. The bytes are the same as with `add`.
    ///
    /// ```
    /// use kpl_codec::{AggregateBuilder, HashKey, UserRecord};
    ///
    /// let mut b: AggregateBuilder<Vec<u8>> = AggregateBuilder::new();
    /// let key = "user-123";
    /// let hash = HashKey::from_partition_key(key).get() as u64;
    /// let one = b.add_with_key_hash(UserRecord::new(key.to_owned(), b"a".to_vec()), hash);
    /// let two = b.add_with_key_hash(UserRecord::new(key.to_owned(), b"b".to_vec()), hash);
    /// // The second record finds the key in the table (a tag, a length, 8 bytes):
    /// // it adds only its own message.
    /// assert_eq!((one - 20) - (two - one), 1 + 1 + key.len());
    /// ```
    pub fn add_with_key_hash(&mut self, record: UserRecord<D>, key_hash: u64) -> usize {
        self.add_hashed(record, key_hash)
    }

    fn add_hashed(&mut self, record: UserRecord<D>, hash: u64) -> usize {
        let (pk, ehk) = self.lookup(&record, hash);
        let (growth, message_len) = self.growth(&record, pk, ehk);
        let entry_index = self.entries.len();
        let partition_key_index = match pk {
            Lookup::Found(index) => index,
            Lookup::New { hash, chain } => {
                let index = self.partition_key_table.len();
                self.partition_key_table.push((entry_index, chain));
                self.partition_key_lookup.insert(hash, index);
                index
            }
        };
        let explicit_hash_key_index = match (record.explicit_hash_key, ehk) {
            (None, _) => None,
            (Some(_), Some(index)) => Some(index),
            (Some(key), None) => {
                let index = self.explicit_hash_key_table.len();
                self.explicit_hash_key_table.push(key);
                self.explicit_hash_key_lookup.insert(key.get(), index);
                Some(index)
            }
        };
        self.entries.push(Entry {
            record,
            partition_key_index,
            explicit_hash_key_index,
            message_len,
        });
        self.body_len += growth;
        self.size()
    }

    /// The records added so far, in order.
    pub fn records(&self) -> impl ExactSizeIterator<Item = &UserRecord<D>> {
        self.entries.iter().map(|e| &e.record)
    }

    /// Takes the records back, in order, leaving the builder empty.
    pub fn take_records(&mut self) -> Vec<UserRecord<D>> {
        let records = self.entries.drain(..).map(|e| e.record).collect();
        self.clear();
        records
    }

    /// Empties the builder, keeping its allocations.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.partition_key_lookup.clear();
        self.partition_key_table.clear();
        self.explicit_hash_key_lookup.clear();
        self.explicit_hash_key_table.clear();
        self.body_len = 0;
    }

    /// The Kinesis record to send for what was added: `None` when empty; the record
    /// itself, raw, when there is one; otherwise the aggregate, with partition key
    /// `"a"` and the first record's hash key as explicit hash key.
    pub fn encode(&self) -> Option<KinesisRecord> {
        match self.entries.as_slice() {
            [] => None,
            [only] => Some(KinesisRecord {
                partition_key: only.record.partition_key.clone(),
                explicit_hash_key: only.record.explicit_hash_key,
                data: only.record.data.as_ref().to_vec(),
                aggregated: false,
            }),
            [first, ..] => {
                let mut data = Vec::new();
                self.encode_aggregate_into(&mut data);
                Some(KinesisRecord {
                    partition_key: AGGREGATED_PARTITION_KEY.to_owned(),
                    explicit_hash_key: Some(first.record.hash_key()),
                    data,
                    aggregated: true,
                })
            }
        }
    }

    /// Appends the aggregated form of what was added to `out` (even for zero or one
    /// record): exactly [`size`](Self::size) bytes.
    pub fn encode_aggregate_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        self.write_unfinished(out);
        write_checksum(&mut out[start..]);
    }

    /// The aggregated form of what was added, in `buf` (emptied first, its
    /// allocation kept), without its MD5 checksum yet: finish it with others by
    /// [`finish_aggregates`], which checksums them four at a time, about twice as
    /// fast as one by one. A producer that sends many aggregates in one request
    /// finishes them together when it makes the request.
    ///
    /// ```
    /// use kpl_codec::{AggregateBuilder, UserRecord, decode_aggregated, finish_aggregates};
    ///
    /// let mut unfinished = Vec::new();
    /// for n in 0..6 {
    ///     let mut builder = AggregateBuilder::new();
    ///     builder.add(UserRecord::new(format!("key-{n}"), vec![n; 100]));
    ///     builder.add(UserRecord::new("other", b"x".to_vec()));
    ///     unfinished.push(builder.encode_unfinished_aggregate(Vec::new()));
    /// }
    /// for (n, aggregate) in finish_aggregates(unfinished).into_iter().enumerate() {
    ///     let users = decode_aggregated(&aggregate)?; // checksum verified
    ///     assert_eq!(users[0].data, vec![n as u8; 100]);
    /// }
    /// # Ok::<(), kpl_codec::DecodeError>(())
    /// ```
    pub fn encode_unfinished_aggregate(&self, mut buf: Vec<u8>) -> UnfinishedAggregate {
        buf.clear();
        self.write_unfinished(&mut buf);
        UnfinishedAggregate(buf)
    }

    /// Appends magic, body and a zeroed digest: [`size`](Self::size) bytes.
    fn write_unfinished(&self, out: &mut Vec<u8>) {
        out.reserve(self.size());
        out.extend_from_slice(&MAGIC);
        self.write_tables(out);
        self.write_entries(out);
        out.extend_from_slice(&[0; DIGEST_LEN]);
    }

    fn write_tables(&self, out: &mut Vec<u8>) {
        for &(entry, _) in &self.partition_key_table {
            put_bytes_field(
                out,
                TAG_PARTITION_KEY_TABLE,
                self.entries[entry].record.partition_key.as_bytes(),
            );
        }
        put_explicit_hash_key_table(out, &self.explicit_hash_key_table);
    }

    /// The records, written straight into `out` (the same bytes a protobuf writer
    /// makes).
    fn write_entries(&self, out: &mut Vec<u8>) {
        for entry in &self.entries {
            put_record_head(
                out,
                entry.message_len,
                entry.partition_key_index,
                entry.explicit_hash_key_index,
                entry.record.data.as_ref(),
            );
            for tag in &entry.record.tags {
                put_varint(out, u64::from(TAG_RECORD_TAGS));
                put_varint(out, tag_len(tag) as u64);
                put_varint(out, u64::from(TAG_TAG_KEY));
                put_varint(out, tag.key.len() as u64);
                out.extend_from_slice(tag.key.as_bytes());
                if let Some(value) = &tag.value {
                    put_varint(out, u64::from(TAG_TAG_VALUE));
                    put_varint(out, value.len() as u64);
                    out.extend_from_slice(value.as_bytes());
                }
            }
        }
    }

    /// Finds the table indexes `record`'s keys already have.
    fn lookup(&self, record: &UserRecord<D>, hash: u64) -> (Lookup, Option<usize>) {
        let key = record.partition_key.as_str();
        let mut chain = self
            .partition_key_lookup
            .get(&hash)
            .copied()
            .unwrap_or(NO_NEXT);
        let head = chain;
        let pk = loop {
            if chain == NO_NEXT {
                break Lookup::New { hash, chain: head };
            }
            let (entry, next) = self.partition_key_table[chain];
            if self.entries[entry].record.partition_key == key {
                break Lookup::Found(chain);
            }
            chain = next;
        };
        let ehk = record
            .explicit_hash_key
            .and_then(|k| self.explicit_hash_key_lookup.get(&k.get()).copied());
        (pk, ehk)
    }

    /// How much the body grows with `record`, and the record message's length.
    fn growth(&self, record: &UserRecord<D>, pk: Lookup, ehk: Option<usize>) -> (usize, usize) {
        let mut growth = 0;
        let pk_index = match pk {
            Lookup::Found(index) => index,
            Lookup::New { .. } => {
                growth += len_field(record.partition_key.len());
                self.partition_key_table.len()
            }
        };
        let mut message_len = varint_field(pk_index) + len_field(record.data.as_ref().len());
        if let Some(key) = record.explicit_hash_key {
            let ehk_index = match ehk {
                Some(index) => index,
                None => {
                    growth += len_field(key.decimal_len());
                    self.explicit_hash_key_table.len()
                }
            };
            message_len += varint_field(ehk_index);
        }
        for tag in &record.tags {
            message_len += len_field(tag_len(tag));
        }
        (growth + len_field(message_len), message_len)
    }
}

/// One user record as [`AggregateEncoder`] reads it: borrowed parts of a record
/// its caller keeps in its own shape.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RecordParts<'a> {
    /// The partition key's UTF-8 bytes (1 to 256 characters for Kinesis to accept
    /// the key; the encoder writes the bytes as they are).
    pub partition_key: &'a [u8],
    /// A hash of the partition key, equal for equal keys (a producer that routed
    /// the record by the key's MD5 has one: its low 64 bits); `None` to let the
    /// encoder hash the key. Within one aggregate give either a hash for every
    /// record or for none.
    pub key_hash: Option<u64>,
    /// The explicit hash key, if the record has one.
    pub explicit_hash_key: Option<HashKey>,
    /// The record's payload.
    pub data: &'a [u8],
}

impl<'a> RecordParts<'a> {
    /// The parts of a record with a partition key and data, nothing else.
    pub fn new(partition_key: &'a [u8], data: &'a [u8]) -> Self {
        Self {
            partition_key,
            key_hash: None,
            explicit_hash_key: None,
            data,
        }
    }

    /// With a hash of the partition key (see [`key_hash`](Self::key_hash)).
    pub fn with_key_hash(mut self, hash: u64) -> Self {
        self.key_hash = Some(hash);
        self
    }

    /// With an explicit hash key.
    pub fn with_explicit_hash_key(mut self, key: Option<HashKey>) -> Self {
        self.explicit_hash_key = key;
        self
    }
}

/// Encodes aggregates of records its caller keeps, without taking them in: for a
/// pipeline that already knows which records make an aggregate (and its size) and
/// holds them in a shape of its own, so no key or data moves into a builder. Its
/// tables are kept between calls, so encoding allocates only the output.
///
/// The bytes are those [`AggregateBuilder`] makes of the same records (without
/// tags): key tables de-duplicated in first-seen order. As with the builder, every
/// record of one aggregate must map to the same shard.
///
/// ```
/// use kpl_codec::{AggregateBuilder, AggregateEncoder, RecordParts, UserRecord};
///
/// let records = [("pk1", b"hello"), ("pk2", b"world"), ("pk1", b"again")];
/// let mut encoder = AggregateEncoder::new();
/// let unfinished = encoder.encode_unfinished(&records, |(key, data)| {
///     RecordParts::new(key.as_bytes(), &data[..])
/// }, Vec::new());
///
/// let mut builder = AggregateBuilder::new();
/// for (key, data) in records {
///     builder.add(UserRecord::new(key, data.to_vec()));
/// }
/// let mut expected = Vec::new();
/// builder.encode_aggregate_into(&mut expected);
/// assert_eq!(unfinished.finish(), expected);
/// ```
#[derive(Default)]
pub struct AggregateEncoder {
    hasher: RandomState,
    /// Hash of a partition key → its newest table index with that hash.
    key_lookup: HashMap<u64, usize, BuildHasherDefault<PreHashed>>,
    /// Per key table index: the record that holds the key, and the next older
    /// table index with the same hash (`NO_NEXT` at the end of the chain).
    key_table: Vec<(usize, usize)>,
    explicit_lookup: HashMap<u128, usize>,
    explicit_table: Vec<HashKey>,
    /// Per record: its key's table index, its explicit hash key's, and the length
    /// of its `Record` message.
    placed: Vec<(usize, Option<usize>, usize)>,
}

impl std::fmt::Debug for AggregateEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateEncoder").finish_non_exhaustive()
    }
}

impl AggregateEncoder {
    /// An encoder with empty tables.
    pub fn new() -> Self {
        Self::default()
    }

    /// The aggregate of `records` (read through `parts`) in `buf` (emptied first,
    /// its allocation kept), without its MD5 checksum yet: finish it alone or with
    /// others by [`finish_aggregates`]. Even one record or none is written in the
    /// aggregated form. The parts may borrow from the records or from anything
    /// that outlives them (a slab the records are keys of).
    pub fn encode_unfinished<'r, T>(
        &mut self,
        records: &'r [T],
        parts: impl Fn(&'r T) -> RecordParts<'r>,
        mut buf: Vec<u8>,
    ) -> UnfinishedAggregate {
        self.clear();
        let mut body_len = 0;
        for (at, record) in records.iter().enumerate() {
            let p = parts(record);
            let hash = p
                .key_hash
                .unwrap_or_else(|| self.hasher.hash_one(p.partition_key));
            let head = self.key_lookup.get(&hash).copied().unwrap_or(NO_NEXT);
            let mut chain = head;
            let key_index = loop {
                if chain == NO_NEXT {
                    let index = self.key_table.len();
                    self.key_table.push((at, head));
                    self.key_lookup.insert(hash, index);
                    body_len += len_field(p.partition_key.len());
                    break index;
                }
                let (holder, next) = self.key_table[chain];
                if parts(&records[holder]).partition_key == p.partition_key {
                    break chain;
                }
                chain = next;
            };
            let mut message_len = varint_field(key_index) + len_field(p.data.len());
            let explicit_index = p.explicit_hash_key.map(|key| {
                let index = *self.explicit_lookup.entry(key.get()).or_insert_with(|| {
                    body_len += len_field(key.decimal_len());
                    self.explicit_table.push(key);
                    self.explicit_table.len() - 1
                });
                message_len += varint_field(index);
                index
            });
            body_len += len_field(message_len);
            self.placed.push((key_index, explicit_index, message_len));
        }
        buf.clear();
        buf.reserve(AGGREGATE_OVERHEAD + body_len);
        buf.extend_from_slice(&MAGIC);
        for &(holder, _) in &self.key_table {
            put_bytes_field(
                &mut buf,
                TAG_PARTITION_KEY_TABLE,
                parts(&records[holder]).partition_key,
            );
        }
        put_explicit_hash_key_table(&mut buf, &self.explicit_table);
        for (record, &(key_index, explicit_index, message_len)) in records.iter().zip(&self.placed)
        {
            put_record_head(
                &mut buf,
                message_len,
                key_index,
                explicit_index,
                parts(record).data,
            );
        }
        buf.extend_from_slice(&[0; DIGEST_LEN]);
        self.clear();
        UnfinishedAggregate(buf)
    }

    fn clear(&mut self) {
        self.key_lookup.clear();
        self.key_table.clear();
        self.explicit_lookup.clear();
        self.explicit_table.clear();
        self.placed.clear();
    }
}

/// An aggregate whose MD5 checksum is not written yet, made by
/// [`AggregateBuilder::encode_unfinished_aggregate`]: not valid to send or decode
/// until [`finish`](Self::finish)ed, alone or with others by [`finish_aggregates`].
#[derive(Clone)]
pub struct UnfinishedAggregate(Vec<u8>);

impl UnfinishedAggregate {
    /// Its length, the same finished: magic, body and digest.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: an aggregate has at least its magic and digest.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the checksum and returns the aggregate.
    pub fn finish(mut self) -> Vec<u8> {
        write_checksum(&mut self.0);
        self.0
    }
}

impl std::fmt::Debug for UnfinishedAggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnfinishedAggregate")
            .field("len", &self.0.len())
            .finish()
    }
}

/// Finishes many aggregates, in order: their checksums are computed four at a
/// time (aggregates of close sizes together), which takes about half the time of
/// finishing each alone.
pub fn finish_aggregates(aggregates: Vec<UnfinishedAggregate>) -> Vec<Vec<u8>> {
    let digests = {
        let bodies: Vec<&[u8]> = aggregates.iter().map(|a| body(&a.0)).collect();
        md5_lanes::digests(&bodies)
    };
    aggregates
        .into_iter()
        .zip(digests)
        .map(|(UnfinishedAggregate(mut bytes), digest)| {
            let at = bytes.len() - DIGEST_LEN;
            bytes[at..].copy_from_slice(&digest);
            bytes
        })
        .collect()
}

/// The protobuf body of an aggregate (between magic and digest).
fn body(aggregate: &[u8]) -> &[u8] {
    &aggregate[MAGIC.len()..aggregate.len() - DIGEST_LEN]
}

/// Writes the digest of an aggregate's body at its end.
fn write_checksum(aggregate: &mut [u8]) {
    let digest = md5_lanes::digest(body(aggregate));
    let at = aggregate.len() - DIGEST_LEN;
    aggregate[at..].copy_from_slice(&digest);
}

#[derive(Clone, Copy)]
enum Lookup {
    Found(usize),
    New { hash: u64, chain: usize },
}

/// Writes `value` in decimal at the end of `buf` and returns those bytes.
fn format_decimal(mut value: u128, buf: &mut [u8; 39]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buf[start..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_decimal_edges() {
        let mut buf = [0u8; 39];
        for v in [0, 1, 9, 10, 42, u128::MAX, u128::MAX / 7] {
            assert_eq!(format_decimal(v, &mut buf), v.to_string().as_bytes());
        }
    }

    #[test]
    fn empty_and_single() {
        let mut b: AggregateBuilder = AggregateBuilder::new();
        assert_eq!(b.size(), 20);
        assert!(b.encode().is_none());
        b.add(UserRecord::new("k", b"raw".to_vec()).with_explicit_hash_key(HashKey::new(7)));
        let single = b.encode().expect("one record");
        assert!(!single.aggregated);
        assert_eq!(single.partition_key, "k");
        assert_eq!(single.explicit_hash_key, Some(HashKey::new(7)));
        assert_eq!(single.data, b"raw");
        let mut agg = Vec::new();
        b.encode_aggregate_into(&mut agg);
        assert_eq!(agg.len(), b.size());
    }

    #[test]
    fn aggregate_routes_by_first_record() {
        let mut b = AggregateBuilder::new();
        b.add(UserRecord::new("pk1", Vec::new()));
        b.add(UserRecord::new("pk2", Vec::new()));
        let rec = b.encode().expect("two records");
        assert_eq!(rec.partition_key, "a");
        assert_eq!(
            rec.explicit_hash_key,
            Some(HashKey::from_partition_key("pk1"))
        );
    }

    #[test]
    fn take_records_returns_them_in_order_and_resets() {
        let mut b = AggregateBuilder::new();
        for i in 0..5 {
            b.add(UserRecord::new(format!("k{}", i % 2), vec![i as u8]));
        }
        let out = b.take_records();
        assert_eq!(
            out.iter().map(|r| r.data[0]).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        assert!(b.is_empty());
        assert_eq!(b.size(), AGGREGATE_OVERHEAD);
        b.add(UserRecord::new("k1", vec![9]));
        let mut agg = Vec::new();
        b.encode_aggregate_into(&mut agg);
        assert_eq!(agg.len(), b.size());
    }
}

//! Records and deadlines: a user record as the pipeline holds it ([`Rec`]), a
//! Kinesis record made of some ([`KRec`]), and the times that bound them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kpl_codec::{
    HashKey, UnfinishedAggregate, aggregate_growth_bound, decode_aggregated, finish_aggregates,
};
use kpl_limiter::LimitItem;
use kpl_reducer::Item;
use kpl_shardmap::ShardId;

use super::ordered::Lock;
use super::slab::Vacate;
use crate::completers::Receipt;
use crate::config::Config;
use crate::result::{Attempt, AttemptError, ErrorCode};
use crate::written::FirstTry;

/// The fixed instant a record's arrival counts from, in nanoseconds (a `u64` of
/// them spans five centuries): a waiting record keeps 8 bytes of time, not 16.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Epoch(Instant);

impl Epoch {
    /// Times count from `start`; earlier ones count as `start`.
    pub(crate) fn new(start: Instant) -> Self {
        Self(start)
    }

    fn offset(self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.0).as_nanos()).unwrap_or(u64::MAX)
    }

    fn at(self, nanos: u64) -> Instant {
        self.0 + Duration::from_nanos(nanos)
    }
}

/// A request's times, worked out once for all the records it carried.
pub(super) struct RequestClock {
    started: Instant,
    /// `started` from the pipeline's [`Epoch`].
    started_at: u64,
    duration: Duration,
}

impl RequestClock {
    /// What the user records of a Kinesis record stored by this request share
    /// (its shard and sequence number there), for those stored by their first
    /// attempt.
    pub(super) fn first_try(&self, shard_id: &Arc<str>, sequence_number: &Arc<str>) -> FirstTry {
        FirstTry {
            shard_id: shard_id.clone(),
            sequence_number: sequence_number.clone(),
            started: self.started,
            started_at: self.started_at,
            duration: self.duration,
        }
    }

    /// From a record's arrival (from the pipeline's epoch) to the request's start:
    /// the delay of the record's first attempt.
    pub(super) fn since_arrival(&self, arrival: u64) -> Duration {
        Duration::from_nanos(self.started_at.saturating_sub(arrival))
    }

    /// A request sent at `started` and answered at `end`.
    pub(super) fn new(epoch: Epoch, started: Instant, end: Instant) -> Self {
        Self {
            started,
            started_at: epoch.offset(started),
            duration: end.saturating_duration_since(started),
        }
    }
}

/// What the pipeline keeps of a user record once its key and data are in an
/// encoded aggregate: 32 bytes, no allocation of its own. Everything else (key,
/// explicit hash key, data) is read back from the aggregate in the rare case the
/// record must be aggregated anew (a retry, a reshard); see [`KRec::into_records`].
pub(crate) struct Member {
    /// Its id (as the producer numbered it).
    id: u64,
    /// Its key in its driver's slab of where outcomes go (see [`Receipt`]).
    key: u32,
    /// When it was put, from the pipeline's [`Epoch`].
    arrival: u64,
    /// Bytes it counts for the outstanding caps (data and partition key; a record
    /// is at most a few MiB).
    size: u32,
    /// Attempts that did not settle it (most records have none: boxed when there
    /// are).
    pub(super) attempts: History,
}

/// A user record in the pipeline before it is aggregated (or again after): its
/// [`Member`] and what routing and aggregating it takes. It derefs to its member.
pub(crate) struct Rec {
    pub(super) m: Member,
    /// Its partition key and data, and what few records have.
    body: Body,
    pub(super) hash_key: HashKey,
    /// Set by the pipeline when it admits the record ([`Rec::admit`]).
    pub(super) deadline: Instant,
    pub(super) expiration: Instant,
}

impl std::ops::Deref for Rec {
    type Target = Member;
    fn deref(&self) -> &Member {
        &self.m
    }
}

impl std::ops::DerefMut for Rec {
    fn deref_mut(&mut self) -> &mut Member {
        &mut self.m
    }
}

/// A record's failed attempts so far: nothing for most records, a box when some.
/// The vector is boxed on purpose: 8 bytes in every record instead of 24 (or 16
/// for a boxed slice), for a history most records never have.
#[derive(Default)]
#[allow(clippy::box_collection)]
pub(crate) struct History(Option<Box<Vec<Attempt>>>);

impl History {
    pub(super) fn push(&mut self, attempt: Attempt) {
        self.0
            .get_or_insert_with(|| Box::new(Vec::with_capacity(2)))
            .push(attempt);
    }

    pub(super) fn pop(&mut self) -> Option<Attempt> {
        self.0.as_mut().and_then(|v| v.pop())
    }

    pub(super) fn last(&self) -> Option<&Attempt> {
        self.0.as_ref().and_then(|v| v.last())
    }

    pub(super) fn last_mut(&mut self) -> Option<&mut Attempt> {
        self.0.as_mut().and_then(|v| v.last_mut())
    }

    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |v| v.len())
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Attempt> {
        self.0.iter().flat_map(|v| v.iter())
    }

    /// The attempts, with `last` (the one that settled the record) after them.
    pub(super) fn settle(self, last: Option<Attempt>) -> crate::result::Attempts {
        match (self.0, last) {
            (None, Some(a)) => crate::result::Attempts::one(a),
            (Some(mut v), Some(a)) => {
                v.push(a);
                crate::result::Attempts::from(*v)
            }
            (Some(v), None) => crate::result::Attempts::from(*v),
            (None, None) => crate::result::Attempts::default(),
        }
    }
}

/// Data of at most this many bytes is copied by a [`Packer`]; larger data is kept
/// as the caller gave it (copying it would cost more than freeing it).
const PACKED_DATA_MAX: usize = 4 * 1024;

/// Bytes of each buffer a [`Packer`] copies into: a record that stays long in the
/// pipeline keeps at most this much of its neighbours' memory.
const PACK_BUFFER: usize = 64 * 1024;

/// Copies the keys and small data of the records of one put into buffers they
/// share: one allocation per [`PACK_BUFFER`] bytes instead of the caller's one or
/// two per record, freed by the pipeline's thread when the last of them is
/// aggregated, and one reference per record for its key and data together.
pub(crate) struct Packer {
    buffer: BytesMut,
    /// Bytes still to come ([`for_records`](Self::for_records)): a buffer is made
    /// no larger than they need (a put of one record gets a buffer of its size).
    left: usize,
}

#[cfg(test)]
impl Default for Packer {
    /// A packer for records to come in any number: buffers of [`PACK_BUFFER`]
    /// (the pipeline sizes its packers, [`Packer::for_records`]).
    fn default() -> Self {
        Self {
            buffer: BytesMut::new(),
            left: usize::MAX,
        }
    }
}

impl Packer {
    /// A packer for records of these partition key and data lengths, in bytes (an
    /// estimate: records left out just leave their room unused).
    pub(crate) fn for_records(lengths: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let left = lengths
            .into_iter()
            .map(|(key, data)| key + copied_len(data))
            .sum();
        Self {
            buffer: BytesMut::new(),
            left,
        }
    }

    /// A record's key, and its data if small, copied together (large data is kept
    /// as given).
    pub(crate) fn pack(&mut self, key: &[u8], data: Bytes) -> Body {
        if copied_len(data.len()) < data.len() {
            self.put(key, &[], Some(data))
        } else {
            self.put(key, &data, None)
        }
    }

    /// A record's key and data, borrowed: copied, as [`pack`](Self::pack) copies
    /// them (and large data into a buffer of its own).
    pub(crate) fn pack_slice(&mut self, key: &[u8], data: &[u8]) -> Body {
        if copied_len(data.len()) < data.len() {
            self.put(key, &[], Some(Bytes::copy_from_slice(data)))
        } else {
            self.put(key, data, None)
        }
    }

    /// `key` and `copied` copied together, `large` (the data, if large) kept.
    fn put(&mut self, key: &[u8], copied: &[u8], large: Option<Bytes>) -> Body {
        let len = key.len() + copied.len();
        if self.buffer.capacity() - self.buffer.len() < len {
            self.buffer = BytesMut::with_capacity(self.left.min(PACK_BUFFER).max(len));
        }
        self.left = self.left.saturating_sub(len);
        self.buffer.extend_from_slice(key);
        self.buffer.extend_from_slice(copied);
        Body {
            bytes: self.buffer.split().freeze(),
            key_len: u32::try_from(key.len()).expect("a partition key is short"),
            explicit: false,
            rare: large.map(|data| {
                Box::new(Rare {
                    large: Some(data),
                    lock: None,
                })
            }),
        }
    }
}

/// The bytes of data of this length a [`Packer`] copies: all of it if small,
/// none if large.
fn copied_len(data: usize) -> usize {
    if data <= PACKED_DATA_MAX { data } else { 0 }
}

/// A user record's partition key and data: as packed ([`Packer`]), one slice of a
/// shared buffer holding the key's UTF-8 bytes and then the data, unless the data
/// is large and kept as given (in [`Rare`]).
pub(crate) struct Body {
    /// The key, then the data unless `rare` holds it.
    bytes: Bytes,
    key_len: u32,
    /// Whether the record's hash key is the user's explicit hash key (else its
    /// key's MD5): here, where it takes no room of its own.
    explicit: bool,
    /// What few records have, boxed: 8 bytes in every record.
    rare: Option<Box<Rare>>,
}

/// What few records have: large data (kept as given), and in ordered mode the lock
/// of the range of the Kinesis record it was in, while it is on its way back to a
/// queue (see `ordered`).
///
/// Kept out of the record so that a [`Rec`] stays within 128 bytes: a record is
/// moved from stage to stage, and a move of up to 128 bytes is a few register
/// moves where a larger one is a call to `memcpy`.
#[derive(Default)]
struct Rare {
    large: Option<Bytes>,
    lock: Option<Lock>,
}

impl Body {
    fn large(&self) -> Option<&Bytes> {
        self.rare.as_ref().and_then(|r| r.large.as_ref())
    }

    fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len as usize]
    }

    fn key_buffer(&self) -> Bytes {
        self.bytes.slice(..self.key_len as usize)
    }

    fn data(&self) -> &[u8] {
        match self.large() {
            Some(large) => large,
            None => &self.bytes[self.key_len as usize..],
        }
    }

    /// The data as a buffer of its own (a reference to it).
    fn data_buffer(&self) -> Bytes {
        match self.large() {
            Some(large) => Bytes::clone(large),
            None => self.bytes.slice(self.key_len as usize..),
        }
    }
}

/// The share of a record's buffering time left to the collector: the KPL extends an
/// aggregate's deadline by min(50 ms, 20 %) before the collector; we take that time
/// out of the aggregator's share instead, so a record is never held longer than
/// `record_max_buffered_time` in all (bounded latency beats maximum throughput).
pub(super) fn collector_share(buffered: Duration) -> Duration {
    (buffered / 5).min(Duration::from_millis(50))
}

/// The aggregator deadline of a record given `budget` of buffering time from `now`.
pub(super) fn aggregator_deadline(now: Instant, budget: Duration) -> Instant {
    add_capped(now, budget - collector_share(budget))
}

/// Takes the items `pick` chooses out of `items` (in order), keeping the others in
/// order; touches nothing when it chooses none (the usual case).
pub(super) fn take_out<T>(items: &mut Vec<T>, pick: impl Fn(&T) -> bool) -> Vec<T> {
    if !items.iter().any(&pick) {
        return Vec::new();
    }
    let (taken, kept) = std::mem::take(items).into_iter().partition(|t| pick(t));
    *items = kept;
    taken
}

/// `now + d`, capped at about a century (a huge TTL must not overflow, KPL #54).
pub(super) fn add_capped(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl Rec {
    /// A record put at `arrival`, packed alone (the producer's puts pack the
    /// records of a put together, [`of_body`](Self::of_body)); the pipeline gives it
    /// its deadlines when it takes it in. Its id is its receipt's.
    #[cfg(test)]
    pub(crate) fn new(
        partition_key: String,
        explicit_hash_key: Option<HashKey>,
        hash_key: HashKey,
        data: Bytes,
        arrival: Instant,
        epoch: Epoch,
        receipt: Receipt,
    ) -> Self {
        let mut packer = Packer::for_records([(partition_key.len(), data.len())]);
        Self::of_body(
            packer.pack(partition_key.as_bytes(), data),
            explicit_hash_key,
            hash_key,
            arrival,
            epoch,
            receipt,
        )
    }

    /// Its receipt.
    pub(crate) fn receipt(&self) -> Receipt {
        self.m.receipt()
    }

    /// Files it under `key` in its driver's slab.
    pub(crate) fn file(&mut self, key: u32) {
        self.m.key = key;
    }

    /// A record put at `arrival` whose key, and data if small, a [`Packer`] copied
    /// into the buffers it shares among the records of one put (`body`): the
    /// caller's own allocations are freed then, on the caller's thread, where
    /// freeing is cheap, not one by one on the pipeline's (and a slice of a buffer
    /// the caller shares among records, as `kpl put` hands lines over, lets go of
    /// it then).
    pub(crate) fn of_body(
        body: Body,
        explicit_hash_key: Option<HashKey>,
        hash_key: HashKey,
        arrival: Instant,
        epoch: Epoch,
        receipt: Receipt,
    ) -> Self {
        let size = u32::try_from(body.key().len() + body.data().len()).unwrap_or(u32::MAX);
        Self::of(
            body,
            explicit_hash_key,
            hash_key,
            size,
            arrival,
            epoch,
            receipt,
        )
    }

    /// A record of these parts (`size`: the bytes it counts for), its deadlines
    /// set when the pipeline takes it in.
    fn of(
        body: Body,
        explicit_hash_key: Option<HashKey>,
        hash_key: HashKey,
        size: u32,
        arrival: Instant,
        epoch: Epoch,
        receipt: Receipt,
    ) -> Self {
        Self {
            m: Member {
                id: receipt.id(),
                key: receipt.key(),
                arrival: epoch.offset(arrival),
                size,
                attempts: History::default(),
            },
            body: Body {
                explicit: explicit_hash_key.is_some(),
                ..body
            },
            hash_key,
            deadline: arrival,
            expiration: arrival,
        }
    }

    /// Whether its hash key is the user's explicit hash key (else its key's MD5).
    pub(super) fn explicit(&self) -> bool {
        self.body.explicit
    }

    /// In ordered mode, the lock of the range of the Kinesis record it was in,
    /// while it is on its way back to a queue (see `ordered`); `None` otherwise.
    pub(super) fn lock(&self) -> Option<&Lock> {
        self.body.rare.as_ref().and_then(|r| r.lock.as_ref())
    }

    /// Sets its [`lock`](Self::lock).
    pub(super) fn set_lock(&mut self, lock: Lock) {
        self.body.rare.get_or_insert_with(Box::default).lock = Some(lock);
    }

    /// Takes its [`lock`](Self::lock) out (and the box that held it, unless it
    /// holds large data too).
    pub(super) fn take_lock(&mut self) -> Option<Lock> {
        let rare = self.body.rare.as_mut()?;
        let lock = rare.lock.take();
        if rare.large.is_none() {
            self.body.rare = None;
        }
        lock
    }

    /// Its partition key.
    pub(super) fn key(&self) -> &str {
        // Made of a `str` (see `new`, `of_body` and `KRec::into_records`): always UTF-8.
        std::str::from_utf8(self.body.key()).expect("a partition key is copied from a str")
    }

    /// Its partition key's buffer (a reference to it).
    pub(super) fn key_buffer(&self) -> Bytes {
        self.body.key_buffer()
    }

    /// Its partition key's UTF-8 bytes, as [`key`](Self::key) without the check.
    pub(super) fn key_bytes(&self) -> &[u8] {
        self.body.key()
    }

    /// Its data.
    pub(super) fn data(&self) -> &[u8] {
        self.body.data()
    }

    /// Its data as a buffer of its own (a reference to it).
    pub(super) fn data_buffer(&self) -> Bytes {
        self.body.data_buffer()
    }

    /// Sets its deadlines from its arrival: it expires after `record_ttl`, and its
    /// aggregator's share of `record_max_buffered_time` runs out before.
    pub(super) fn admit(&mut self, config: &Config, epoch: Epoch) {
        let arrival = self.m.arrival(epoch);
        self.expiration = add_capped(arrival, config.record_ttl);
        self.deadline =
            aggregator_deadline(arrival, config.record_max_buffered_time).min(self.expiration);
    }

    /// The user's explicit hash key, if any.
    pub(super) fn explicit_hash_key(&self) -> Option<HashKey> {
        self.explicit().then_some(self.hash_key)
    }

    /// An upper bound of what it adds to an aggregate's protobuf body.
    fn aggregate_bound(&self) -> usize {
        aggregate_growth_bound(self.key_bytes().len(), self.data().len(), self.explicit())
    }
}

impl Member {
    /// The record's id.
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// Its receipt: its id and its key with its driver.
    pub(super) fn receipt(&self) -> Receipt {
        Receipt::filed(self.id, self.key)
    }

    /// When it was put.
    pub(super) fn arrival(&self, epoch: Epoch) -> Instant {
        epoch.at(self.arrival)
    }

    /// When it was put, from the pipeline's epoch, if it has no attempt on record
    /// (an attempt now is its first, or the only one that counts).
    pub(super) fn arrival_if_no_attempt(&self) -> Option<u64> {
        (self.attempts.len() == 0).then_some(self.arrival)
    }

    /// When it expires: `record_ttl` after it was put.
    pub(super) fn expiration(&self, epoch: Epoch, config: &Config) -> Instant {
        add_capped(self.arrival(epoch), config.record_ttl)
    }

    /// Bytes it counts for the outstanding caps.
    pub(super) fn bytes(&self) -> usize {
        self.size as usize
    }

    pub(super) fn attempt(
        &mut self,
        epoch: Epoch,
        started: Instant,
        end: Instant,
        error: Option<(&str, &str)>,
        shard: Option<&Arc<str>>,
    ) {
        self.attempt_sent(epoch, started, end, error, shard, false);
    }

    /// An attempt whose failure may have stored the record all the same.
    pub(super) fn attempt_sent(
        &mut self,
        epoch: Epoch,
        started: Instant,
        end: Instant,
        error: Option<(&str, &str)>,
        shard: Option<&Arc<str>>,
        may_have_been_stored: bool,
    ) {
        let clock = RequestClock::new(epoch, started, end);
        let attempt = self.new_attempt(&clock, error, shard, may_have_been_stored);
        self.attempts.push(attempt);
    }

    /// Its next attempt, in a request timed by `clock` (not recorded yet). Its
    /// delay counts from the end of the previous attempt, or from the arrival.
    pub(super) fn new_attempt(
        &self,
        clock: &RequestClock,
        error: Option<(&str, &str)>,
        shard: Option<&Arc<str>>,
        may_have_been_stored: bool,
    ) -> Attempt {
        let delay = match self.attempts.last() {
            None => clock.since_arrival(self.arrival),
            Some(a) => clock
                .started
                .saturating_duration_since(a.started + a.duration),
        };
        Attempt {
            started: clock.started,
            delay,
            duration: clock.duration,
            shard_id: shard.cloned(),
            outcome: match error {
                None => Ok(()),
                Some((code, message)) => Err(Box::new(AttemptError::new(
                    ErrorCode::from(code),
                    message,
                    may_have_been_stored,
                ))),
            },
        }
    }

    /// Whether an attempt may have stored it already.
    pub(super) fn may_have_been_stored(&self) -> bool {
        self.attempts.iter().any(Attempt::may_have_been_stored)
    }
}

impl Member {
    /// The member of a vacant record (see [`Vacate`]): of size 0, which no record
    /// has (its partition key alone is at least one byte).
    fn vacant() -> Self {
        Member {
            id: 0,
            key: 0,
            arrival: 0,
            size: 0,
            attempts: History::default(),
        }
    }
}

impl Rec {
    /// Moves its member out, leaving it vacant: its key and data (and an ordered
    /// record's lock) are let go of now, so a vacant record left in its put's
    /// vector keeps no buffer alive.
    pub(super) fn take_member(&mut self) -> Member {
        self.body.bytes = Bytes::new();
        if self.body.rare.is_some() {
            self.body.rare = None;
        }
        std::mem::replace(&mut self.m, Member::vacant())
    }
}

impl Vacate for Rec {
    fn vacate(&mut self) -> Self {
        let vacant = Rec {
            m: Member::vacant(),
            body: Body {
                bytes: Bytes::new(),
                key_len: 0,
                explicit: false,
                rare: None,
            },
            hash_key: self.hash_key,
            deadline: self.deadline,
            expiration: self.expiration,
        };
        std::mem::replace(self, vacant)
    }

    #[inline]
    fn is_vacant(&self) -> bool {
        self.m.size == 0
    }
}

impl Item for Rec {
    fn size(&self) -> usize {
        self.aggregate_bound()
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// A Kinesis record: an aggregate, or one user record sent raw.
pub(crate) struct KRec {
    pub(super) records: Contents,
    pub(super) partition_key: String,
    pub(super) explicit_hash_key: Option<HashKey>,
    pub(super) data: Payload,
    pub(super) shard: Option<ShardId>,
    pub(super) deadline: Instant,
    pub(super) expiration: Instant,
    pub(super) aggregated: bool,
    /// When the limiter let it out (its room in the shard's window counts from when
    /// it is sent).
    pub(super) released: Option<Instant>,
    /// In ordered mode, its range's lock (see `ordered`); `None` otherwise.
    pub(super) lock: Option<Lock>,
}

/// A Kinesis record's bytes.
pub(crate) enum Payload {
    /// Ready to send.
    Ready(Bytes),
    /// An aggregate whose checksum is still to be written: the aggregates of a
    /// request are finished together when it is made ([`finish_payloads`]), four
    /// checksums at a time.
    Unfinished(UnfinishedAggregate),
}

impl Payload {
    pub(super) fn len(&self) -> usize {
        match self {
            Self::Ready(b) => b.len(),
            Self::Unfinished(a) => a.len(),
        }
    }

    /// The bytes to send or read back (an unfinished aggregate is finished here,
    /// alone).
    pub(super) fn ready(&mut self) -> Bytes {
        let bytes = match std::mem::replace(self, Self::Ready(Bytes::new())) {
            Self::Ready(b) => b,
            Self::Unfinished(a) => Bytes::from(a.finish()),
        };
        *self = Self::Ready(bytes.clone());
        bytes
    }
}

/// Finishes the unfinished aggregates of a request together: their checksums are
/// computed four at a time, about twice as fast as one by one.
pub(super) fn finish_payloads(batch: &mut [KRec]) {
    let (mut at, mut unfinished) = (Vec::new(), Vec::new());
    for (i, k) in batch.iter_mut().enumerate() {
        if matches!(k.data, Payload::Unfinished(_))
            && let Payload::Unfinished(a) =
                std::mem::replace(&mut k.data, Payload::Ready(Bytes::new()))
        {
            at.push(i);
            unfinished.push(a);
        }
    }
    if unfinished.is_empty() {
        return;
    }
    for (i, bytes) in at.into_iter().zip(finish_aggregates(unfinished)) {
        batch[i].data = Payload::Ready(Bytes::from(bytes));
    }
}

/// The user records of a Kinesis record.
pub(crate) enum Contents {
    /// Members of the encoded record (its key and data are in it), in order.
    Sealed(Vec<Member>),
    /// Records with their keys and data (those a late answer settles, taken back
    /// from the retry queue).
    Loose(Vec<Rec>),
}

/// Why a Kinesis record's user records could not be read back from it: the
/// pipeline decodes only what it encoded, so this is a bug, reported on each
/// record it concerns instead of losing them.
pub(super) struct Unreadable {
    pub(super) members: Vec<Member>,
    pub(super) message: String,
}

impl KRec {
    pub(super) fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// How many user records it holds.
    pub(super) fn len(&self) -> usize {
        match &self.records {
            Contents::Sealed(m) => m.len(),
            Contents::Loose(r) => r.len(),
        }
    }

    /// Its user records' ids, in order.
    pub(super) fn ids(&self) -> Vec<u64> {
        match &self.records {
            Contents::Sealed(m) => m.iter().map(Member::id).collect(),
            Contents::Loose(r) => r.iter().map(|r| r.id()).collect(),
        }
    }

    /// Its user records as members (to settle them: no key or data needed).
    pub(super) fn into_members(self) -> Vec<Member> {
        match self.records {
            Contents::Sealed(m) => m,
            Contents::Loose(r) => r.into_iter().map(|r| r.m).collect(),
        }
    }

    /// Its user records with their keys and data, read back from the encoded record
    /// (copied out of it as a put's are, large data left a slice of it), admitted
    /// anew: to be routed and aggregated again.
    pub(super) fn into_records(
        self,
        epoch: Epoch,
        config: &Config,
    ) -> Result<Vec<Rec>, Unreadable> {
        let members = match self.records {
            Contents::Loose(r) => return Ok(r),
            Contents::Sealed(m) => m,
        };
        let mut payload = self.data;
        let data = payload.ready();
        let admit = |packer: &mut Packer,
                     m: Member,
                     key: &str,
                     explicit: Option<HashKey>,
                     hash_key,
                     data| {
            let mut rec = Rec {
                m,
                body: Body {
                    explicit: explicit.is_some(),
                    ..packer.pack(key.as_bytes(), data)
                },
                hash_key,
                deadline: epoch.0,
                expiration: epoch.0,
            };
            rec.admit(config, epoch);
            rec
        };
        if !self.aggregated {
            let mut members = members.into_iter();
            let (Some(m), None) = (members.next(), members.next()) else {
                return Err(Unreadable {
                    message: "a raw Kinesis record held more than one user record".into(),
                    members: Vec::new(),
                });
            };
            let hash_key = self
                .explicit_hash_key
                .unwrap_or_else(|| HashKey::from_partition_key(&self.partition_key));
            let mut packer = Packer::for_records([(self.partition_key.len(), data.len())]);
            let rec = admit(
                &mut packer,
                m,
                &self.partition_key,
                self.explicit_hash_key,
                hash_key,
                data,
            );
            return Ok(vec![rec]);
        }
        let decoded = match decode_aggregated(&data) {
            Ok(d) if d.len() == members.len() => d,
            Ok(d) => {
                return Err(Unreadable {
                    message: format!(
                        "an aggregate of {} user records decoded to {}",
                        members.len(),
                        d.len()
                    ),
                    members,
                });
            }
            Err(e) => {
                return Err(Unreadable {
                    message: format!("an aggregate it made could not be decoded: {e}"),
                    members,
                });
            }
        };
        let mut recs = Vec::with_capacity(members.len());
        let mut bad = None;
        let mut packer = Packer::for_records(
            decoded
                .iter()
                .map(|u| (u.partition_key.len(), u.data.len())),
        );
        for (m, user) in members.into_iter().zip(decoded) {
            let explicit = match user.explicit_hash_key.map(HashKey::from_decimal) {
                None => None,
                Some(Ok(k)) => Some(k),
                Some(Err(e)) => {
                    bad = Some(format!("an explicit hash key of its aggregate: {e}"));
                    None
                }
            };
            let hash_key =
                explicit.unwrap_or_else(|| HashKey::from_partition_key(user.partition_key));
            let user_data = data.slice_ref(user.data);
            recs.push(admit(
                &mut packer,
                m,
                user.partition_key,
                explicit,
                hash_key,
                user_data,
            ));
        }
        match bad {
            None => Ok(recs),
            Some(message) => Err(Unreadable {
                members: recs.into_iter().map(|r| r.m).collect(),
                message,
            }),
        }
    }
}

impl LimitItem for KRec {
    fn bytes(&self) -> u64 {
        self.size() as u64
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
    fn expiration(&self) -> Instant {
        self.expiration
    }
}

impl Item for KRec {
    fn size(&self) -> usize {
        KRec::size(self)
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_record_stays_small() {
        // It is moved from stage to stage and held by the million: keep it at most
        // 128 bytes, which a move copies in registers (larger, a move is a call to
        // `memcpy`). It was 192 with its history and key unboxed; 160 with a
        // completer of its own and its key boxed, then with its key a slice of its
        // put's buffer and its driver keeping where its outcome goes; 144 with its
        // key and data one slice of that buffer; 128 with its ordered-mode lock
        // boxed with its large data, and its explicit flag beside its key's length.
        assert!(size_of::<Rec>() <= 128, "{}", size_of::<Rec>());
        // What stays of it once aggregated: 32 bytes (48 with its completer).
        assert!(size_of::<Member>() <= 32, "{}", size_of::<Member>());
    }

    /// A record of `key` and `data`, packed by `packer`.
    fn packed(packer: &mut Packer, key: &str, data: Bytes) -> Rec {
        let t0 = Instant::now();
        Rec::of_body(
            packer.pack(key.as_bytes(), data),
            None,
            HashKey::from_partition_key(key),
            t0,
            Epoch::new(t0),
            Receipt::new(1),
        )
    }

    /// Data whose owner says when it is dropped.
    fn watched(len: usize) -> (Bytes, Arc<std::sync::atomic::AtomicBool>) {
        struct Owner(Vec<u8>, Arc<std::sync::atomic::AtomicBool>);
        impl AsRef<[u8]> for Owner {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }
        impl Drop for Owner {
            fn drop(&mut self) {
                self.1.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        (
            Bytes::from_owner(Owner(vec![7; len], dropped.clone())),
            dropped,
        )
    }

    #[test]
    fn a_record_whose_member_is_taken_lets_go_of_its_key_and_data_at_once() {
        let mut packer = Packer::default();
        let (data, dropped) = watched(PACKED_DATA_MAX + 1);
        let mut r = packed(&mut packer, "k", data);
        drop(packer);
        let key = r.key_buffer();
        assert!(!r.is_vacant() && !key.is_unique());
        let m = r.take_member();
        assert_eq!((m.id(), m.bytes()), (1, PACKED_DATA_MAX + 2));
        assert!(r.is_vacant(), "a record whose member left is vacant");
        assert!(
            dropped.load(std::sync::atomic::Ordering::SeqCst),
            "large data let go of at once"
        );
        assert!(key.is_unique(), "its key's buffer let go of at once");
        // Taken whole, a record leaves a vacant one and keeps its key and data.
        let mut r = packed(&mut Packer::default(), "key", Bytes::from_static(b"small"));
        let taken = r.vacate();
        assert!(r.is_vacant() && !taken.is_vacant());
        assert_eq!((taken.key(), taken.data()), ("key", &b"small"[..]));
    }

    #[test]
    fn packed_records_keep_their_key_and_data_and_let_go_of_the_callers_small_data() {
        let mut packer = Packer::default();
        let (small, small_dropped) = watched(100);
        let at = small.as_ptr();
        let rec = packed(&mut packer, "käse-1", small);
        assert_eq!(rec.key(), "käse-1");
        assert_eq!(rec.data(), vec![7; 100]);
        assert_eq!(rec.data_buffer(), vec![7; 100]);
        assert_eq!(rec.bytes(), 100 + "käse-1".len());
        assert_ne!(rec.data().as_ptr(), at, "small data is copied");
        assert!(
            small_dropped.load(std::sync::atomic::Ordering::SeqCst),
            "the caller's small data is let go of at once, on its thread"
        );
        // A slice of a buffer the caller shares (as `kpl put` hands lines over) is
        // copied too: the record does not keep the caller's buffer alive.
        let (shared, shared_dropped) = watched(300);
        let rec = packed(&mut packer, "k", shared.slice(100..200));
        drop(shared);
        assert!(shared_dropped.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(rec.data(), vec![7; 100]);
        let (large, large_dropped) = watched(PACKED_DATA_MAX + 1);
        let at = large.as_ptr();
        let rec = packed(&mut packer, "k", large);
        assert_eq!(rec.data().as_ptr(), at, "large data is not copied");
        assert_eq!(rec.data_buffer().as_ptr(), at);
        assert_eq!(rec.key(), "k");
        assert_eq!(rec.bytes(), PACKED_DATA_MAX + 2);
        assert!(!large_dropped.load(std::sync::atomic::Ordering::SeqCst));
        drop(rec);
        assert!(large_dropped.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn borrowed_records_are_copied_whole_large_data_into_a_buffer_of_its_own() {
        let mut packer = Packer::default();
        let small = vec![5; 100];
        let body = packer.pack_slice("k1".as_bytes(), &small);
        assert_eq!((body.key(), body.data()), (&b"k1"[..], &small[..]));
        assert!(body.rare.is_none(), "small data beside its key");
        let large = vec![6; PACKED_DATA_MAX + 1];
        let body = packer.pack_slice("k2".as_bytes(), &large);
        assert_eq!((body.key(), body.data()), (&b"k2"[..], &large[..]));
        assert_ne!(body.data().as_ptr(), large.as_ptr(), "copied");
        assert!(body.large().is_some(), "large data in a buffer of its own");
    }

    #[test]
    fn a_records_lock_and_large_data_share_one_box_and_each_stays_its_own() {
        let mut packer = Packer::default();
        let (large, _) = watched(PACKED_DATA_MAX + 1);
        let mut big = packed(&mut packer, "k", large);
        let mut small = packed(&mut packer, "k", Bytes::from_static(b"x"));
        for rec in [&mut big, &mut small] {
            assert!(rec.lock().is_none());
            rec.set_lock(Lock::default());
            assert!(rec.lock().is_some());
        }
        assert_eq!(
            big.data(),
            vec![7; PACKED_DATA_MAX + 1],
            "the lock beside the data"
        );
        assert!(big.take_lock().is_some());
        assert!(big.take_lock().is_none(), "taken once");
        assert_eq!(big.data(), vec![7; PACKED_DATA_MAX + 1], "the data stays");
        assert!(small.take_lock().is_some());
        assert!(small.body.rare.is_none(), "an empty box is let go of");
        assert_eq!(small.data(), b"x");
    }

    #[test]
    fn a_packed_record_shares_its_buffer_with_at_most_a_buffer_of_others() {
        // A record that stays long in the pipeline keeps its buffer alive: the
        // records that share it are those within PACK_BUFFER bytes.
        let mut packer = Packer::default();
        let recs: Vec<Rec> = (0..2_000)
            .map(|i| packed(&mut packer, &format!("key-{i}"), Bytes::from(vec![1; 100])))
            .collect();
        // Each record's key is followed by its data, and in a buffer by the next
        // record's key; a new buffer starts elsewhere.
        for r in &recs {
            let key = r.key_bytes();
            assert_eq!(
                r.data().as_ptr() as usize,
                key.as_ptr() as usize + key.len()
            );
        }
        let follows = |a: &Rec, b: &Rec| {
            b.key_bytes().as_ptr() as usize == a.data().as_ptr() as usize + a.data().len()
        };
        let first_buffer = 1 + recs
            .windows(2)
            .take_while(|w| follows(&w[0], &w[1]))
            .count();
        let bytes: usize = recs[..first_buffer].iter().map(|r| r.bytes()).sum();
        assert!(first_buffer > 100, "records share a buffer: {first_buffer}");
        assert!(
            bytes <= PACK_BUFFER,
            "{first_buffer} records share the first buffer"
        );
        assert!(first_buffer < recs.len());
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.key(), format!("key-{i}"));
            assert_eq!(r.key_buffer(), format!("key-{i}").as_bytes());
            assert_eq!(r.data().len(), 100);
        }
    }

    #[test]
    fn records_read_back_from_an_aggregate_are_those_put() {
        use kpl_codec::{AggregateBuilder, UserRecord};

        use crate::completers::Receipt;

        let t0 = Instant::now();
        let epoch = Epoch::new(t0);
        let config = Config::builder().build().expect("config");
        let explicit = HashKey::from_decimal("42").expect("a hash key");
        let large: Vec<u8> = (0..PACKED_DATA_MAX + 1).map(|i| i as u8).collect();
        let puts = [
            ("a", None, &b"one"[..]),
            ("b", Some(explicit), &b"two"[..]),
            ("a", None, &b""[..]),
            ("c", None, &large[..]),
            ("d", None, &large[..PACKED_DATA_MAX]),
        ];
        let mut builder = AggregateBuilder::new();
        let mut members = Vec::new();
        for (i, (key, ehk, data)) in puts.iter().enumerate() {
            let arrival = t0 + Duration::from_millis(i as u64);
            let hash = ehk.unwrap_or_else(|| HashKey::from_partition_key(key));
            let receipt = Receipt::new(i as u64 + 7);
            let data = Bytes::copy_from_slice(data);
            let rec = Rec::new((*key).into(), *ehk, hash, data, arrival, epoch, receipt);
            let mut user = UserRecord::new(rec.key(), rec.data_buffer());
            user.explicit_hash_key = rec.explicit_hash_key();
            builder.add(user);
            members.push(rec.m);
        }
        let mut payload = Payload::Unfinished(builder.encode_unfinished_aggregate(Vec::new()));
        let aggregate = payload.ready();
        let krec = KRec {
            records: Contents::Sealed(members),
            partition_key: "a".into(),
            explicit_hash_key: None,
            data: payload,
            shard: None,
            deadline: t0,
            expiration: t0,
            aggregated: true,
            released: None,
            lock: None,
        };
        let Ok(recs) = krec.into_records(epoch, &config) else {
            panic!("an aggregate it made reads back");
        };
        assert_eq!(recs.len(), puts.len());
        let within = |d: &[u8]| aggregate.as_ptr_range().contains(&d.as_ptr());
        for (i, (rec, (key, ehk, data))) in recs.iter().zip(puts).enumerate() {
            // Large data stays a slice of the aggregate; small data is copied out
            // of it (a retried record does not keep the whole aggregate alive).
            assert_eq!(
                within(rec.data()),
                data.len() > PACKED_DATA_MAX,
                "record {i}"
            );
            assert_eq!(rec.id(), i as u64 + 7);
            assert_eq!(rec.key(), key);
            assert_eq!(rec.explicit_hash_key(), ehk);
            let hash = ehk.unwrap_or_else(|| HashKey::from_partition_key(key));
            assert_eq!(rec.hash_key, hash);
            assert_eq!(rec.data(), data);
            assert_eq!(rec.bytes(), key.len() + data.len());
            let arrival = t0 + Duration::from_millis(i as u64);
            assert_eq!(rec.arrival(epoch), arrival);
            assert_eq!(rec.expiration, arrival + config.record_ttl);
        }
    }

    #[test]
    fn a_raw_record_reads_back_as_the_record_put() {
        use crate::completers::Receipt;

        let t0 = Instant::now();
        let epoch = Epoch::new(t0);
        let config = Config::builder().build().expect("config");
        let key = HashKey::from_partition_key("solo");
        let rec = Rec::new(
            "solo".into(),
            None,
            key,
            Bytes::from_static(b"raw data"),
            t0,
            epoch,
            Receipt::new(3),
        );
        let krec = KRec {
            records: Contents::Sealed(vec![rec.m]),
            partition_key: "solo".into(),
            explicit_hash_key: None,
            data: Payload::Ready(Bytes::from_static(b"raw data")),
            shard: None,
            deadline: t0,
            expiration: t0,
            aggregated: false,
            released: None,
            lock: None,
        };
        let Ok(recs) = krec.into_records(epoch, &config) else {
            panic!("a raw record reads back");
        };
        let [rec] = &recs[..] else {
            panic!("one record, not {}", recs.len());
        };
        assert_eq!(
            (rec.id(), rec.key(), rec.data()),
            (3, "solo", &b"raw data"[..])
        );
        assert_eq!(rec.hash_key, key);
        assert_eq!(rec.bytes(), "solo".len() + "raw data".len());
    }

    #[test]
    fn a_packer_for_some_records_makes_buffers_no_larger_than_they_need() {
        // One record (a `put_record`, or a raw record read back for a retry): a
        // buffer of its size, not PACK_BUFFER for a hundred bytes.
        let mut packer = Packer::for_records([(5, 100)]);
        let rec = packed(&mut packer, "key-1", Bytes::from(vec![1; 100]));
        assert_eq!(rec.data(), vec![1; 100]);
        assert_eq!(packer.buffer.capacity(), 0, "no spare room");
        // Many: full buffers, then the last one of what is left; large data takes
        // no room.
        let lengths: Vec<(usize, usize)> = (0..2_000)
            .map(|i| {
                (
                    format!("key-{i}").len(),
                    if i == 7 { PACKED_DATA_MAX + 1 } else { 100 },
                )
            })
            .collect();
        let mut packer = Packer::for_records(lengths.iter().copied());
        for (i, &(_, len)) in lengths.iter().enumerate() {
            let rec = packed(&mut packer, &format!("key-{i}"), Bytes::from(vec![2; len]));
            assert_eq!(rec.data().len(), len);
            assert!(packer.buffer.capacity() <= PACK_BUFFER);
        }
        assert_eq!(packer.buffer.capacity(), 0, "no spare room at the end");
        // Records left out leave their room unused, no more.
        let mut packer = Packer::for_records([(1, 10), (1, 10)]);
        packed(&mut packer, "k", Bytes::from(vec![3; 10]));
        assert_eq!(packer.buffer.capacity(), 11);
    }

    #[test]
    fn records_that_cannot_be_read_back_are_handed_back_not_lost() {
        use crate::completers::Receipt;

        let t0 = Instant::now();
        let epoch = Epoch::new(t0);
        let config = Config::builder().build().expect("config");
        let members: Vec<Member> = (0..2)
            .map(|id| {
                let receipt = Receipt::new(id);
                let key = HashKey::from_partition_key("k");
                Rec::new("k".into(), None, key, Bytes::new(), t0, epoch, receipt).m
            })
            .collect();
        let krec = KRec {
            records: Contents::Sealed(members),
            partition_key: "a".into(),
            explicit_hash_key: None,
            data: Payload::Ready(Bytes::from_static(b"not an aggregate")),
            shard: None,
            deadline: t0,
            expiration: t0,
            aggregated: true,
            released: None,
            lock: None,
        };
        let Err(Unreadable { members, message }) = krec.into_records(epoch, &config) else {
            panic!("garbage is not read as records");
        };
        let ids: Vec<u64> = members.iter().map(Member::id).collect();
        assert_eq!(ids, [0, 1], "every member comes back");
        assert!(message.contains("could not be decoded"), "{message}");
    }

    #[test]
    fn an_aggregated_record_costs_48_bytes_beside_its_encoded_bytes() {
        // A million records wait in aggregates when a stream is slow: what each
        // keeps besides its share of the aggregate is its member.
        assert!(size_of::<Member>() <= 48, "{}", size_of::<Member>());
    }
}

//! An in-process Kinesis: the [`Transport`] the producer's tests and benchmarks run
//! against.
//!
//! [`Simulator`] keeps streams of shards with the real hash-range layout, routes each
//! record by the MD5 of its partition key or by its explicit hash key, numbers records
//! per shard in increasing order, and stores everything it accepts so a test can read
//! it back ([`Simulator::records`]) and de-aggregate it. It follows the service's
//! rules: per-shard write limits (1,000 records/s and 1 MiB/s over a rolling second,
//! answered per record with `ProvisionedThroughputExceededException`), request
//! validation with the service's error codes, `ResourceNotFoundException` for an
//! unknown stream, and resharding while traffic runs (split, merge, update shard
//! count: parents close, children open, ListShards shows both). [`Faults`], drawn
//! from a seed, inject per-record `InternalFailure`, request-level 500 and 503,
//! timeouts and latency, and can be changed during a run.
//!
//! Time comes from a [`kpl_runtime::Timer`]: real time on tokio or smol, or a
//! `VirtualClock` so a test runs minutes of traffic in milliseconds.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use kpl_runtime::{Simulation, Timer};
//! use kpl_sim::Simulator;
//! use kpl_transport::*;
//!
//! let sim = Simulation::new();
//! let kinesis = Simulator::new(sim.runtime().timer().clone(), 1);
//! kinesis.create_stream("events", 4).unwrap();
//! let request = PutRecordsRequest::new(
//!     StreamId::parse("events"),
//!     vec![PutRecordsEntry::new("user-1", None, Bytes::from_static(b"hello"))],
//! );
//! let k = kinesis.clone();
//! let response = sim.block_on(async move { k.put_records(request).await }).unwrap().unwrap();
//! assert!(matches!(response.results[0], EntryResult::Ok { .. }));
//! assert_eq!(kinesis.records("events").unwrap().len(), 1);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use kpl_codec::{
    DEFAULT_MAX_RECORD_SIZE, DEFAULT_MAX_REQUEST_SIZE, GET_RECORDS_MAX_BYTES,
    GET_RECORDS_MAX_RECORDS, HashKey, MAX_PARTITION_KEY_CHARS, MAX_RECORD_SIZE_CEILING,
    MAX_RECORDS_PER_REQUEST, SHARD_BYTES_PER_SECOND, SHARD_RECORDS_PER_SECOND, shard_write_hold,
};
use kpl_runtime::{SplitMix64, Timer};
use kpl_transport::{
    EntryResult, ListShardsPage, ListShardsRequest, PutRecordsRequest, PutRecordsResponse,
    ReadRecord, RecordsPage, ShardDescription, ShardPosition, StreamId, Transport, TransportError,
};

/// The account the simulated streams belong to.
pub const ACCOUNT: &str = "000000000000";
/// The region of the simulated streams' ARNs.
pub const REGION: &str = "us-east-1";

/// Faults to inject, drawn from the simulator's seed.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Faults {
    /// Probability that an otherwise accepted record fails with `InternalFailure`.
    pub record_internal_failure_rate: f64,
    /// Probability that a request fails with HTTP 500 `InternalFailure`.
    pub request_500_rate: f64,
    /// Probability that a request fails with HTTP 503 `ServiceUnavailable`.
    pub request_503_rate: f64,
    /// Probability that a request times out before it is stored, after
    /// [`timeout_after`](Self::timeout_after) (or its own timeout, if shorter).
    pub timeout_rate: f64,
    /// How long a timed-out request takes to fail.
    pub timeout_after: Duration,
    /// Latency added to every request.
    pub latency: Duration,
    /// Slow service: when set, PutRecords requests are served one at a time by one
    /// bottleneck that all connections share (a slow emulator, a narrow uplink),
    /// each taking [`service_time_per_request`](Self::service_time_per_request) plus
    /// its bytes at this rate. A request is stored when its service ends, whether
    /// or not its caller still waits: a caller that timed out may find it stored.
    pub service_bytes_per_second: Option<u64>,
    /// Fixed service time of each PutRecords request in slow-service mode.
    pub service_time_per_request: Duration,
    /// Answers held this long after the request was stored (a brownout): a caller
    /// whose timeout passes first gets a timeout for a stored request.
    pub answer_delay: Duration,
    /// Probability that a PutRecords request is stored and its answer lost: the
    /// caller gets a timeout at its deadline (its request timeout, else
    /// [`timeout_after`](Self::timeout_after)).
    pub stored_answer_lost_rate: f64,
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }
}

/// A record the simulator stored.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredRecord {
    /// The shard it is on.
    pub shard_id: String,
    /// Its sequence number (increasing per shard; equal-length decimal strings).
    pub sequence_number: String,
    /// Its partition key as sent.
    pub partition_key: String,
    /// Its explicit hash key as sent.
    pub explicit_hash_key: Option<HashKey>,
    /// The hash key it was routed by.
    pub hash_key: HashKey,
    /// Its data.
    pub data: Bytes,
    /// When it was stored.
    pub arrival: Instant,
}

/// A simulator operation that cannot be done.
///
/// Ask it with [`kind`](Self::kind) or the `is_*` methods, and for the stream or
/// shard it names with [`stream`](Self::stream) and [`shard`](Self::shard).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimError {
    repr: Refusal,
}

/// What kind of [`SimError`] it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SimErrorKind {
    /// No such stream.
    StreamNotFound,
    /// A stream of that name exists already.
    StreamExists,
    /// No such open shard in the stream.
    ShardNotFound,
    /// The arguments of a reshard do not make sense (Display says why).
    InvalidReshard,
    /// A stream's maximum record size out of UpdateMaxRecordSize's range.
    InvalidMaxRecordSize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Refusal {
    StreamNotFound(String),
    StreamExists(String),
    ShardNotFound(String),
    InvalidReshard(String),
    InvalidMaxRecordSize(usize),
}

impl SimError {
    fn stream_not_found(stream: &str) -> Self {
        Self {
            repr: Refusal::StreamNotFound(stream.to_owned()),
        }
    }

    fn stream_exists(stream: &str) -> Self {
        Self {
            repr: Refusal::StreamExists(stream.to_owned()),
        }
    }

    fn shard_not_found(shard: &str) -> Self {
        Self {
            repr: Refusal::ShardNotFound(shard.to_owned()),
        }
    }

    fn invalid_reshard(why: impl Into<String>) -> Self {
        Self {
            repr: Refusal::InvalidReshard(why.into()),
        }
    }

    /// What kind of error it is.
    pub fn kind(&self) -> SimErrorKind {
        match self.repr {
            Refusal::StreamNotFound(_) => SimErrorKind::StreamNotFound,
            Refusal::StreamExists(_) => SimErrorKind::StreamExists,
            Refusal::ShardNotFound(_) => SimErrorKind::ShardNotFound,
            Refusal::InvalidReshard(_) => SimErrorKind::InvalidReshard,
            Refusal::InvalidMaxRecordSize(_) => SimErrorKind::InvalidMaxRecordSize,
        }
    }

    /// No such stream ([`stream`](Self::stream) names it).
    pub fn is_stream_not_found(&self) -> bool {
        self.kind() == SimErrorKind::StreamNotFound
    }

    /// A stream of that name exists already.
    pub fn is_stream_exists(&self) -> bool {
        self.kind() == SimErrorKind::StreamExists
    }

    /// No such open shard ([`shard`](Self::shard) names it).
    pub fn is_shard_not_found(&self) -> bool {
        self.kind() == SimErrorKind::ShardNotFound
    }

    /// The arguments of a reshard do not make sense.
    pub fn is_invalid_reshard(&self) -> bool {
        self.kind() == SimErrorKind::InvalidReshard
    }

    /// A maximum record size out of UpdateMaxRecordSize's range.
    pub fn is_invalid_max_record_size(&self) -> bool {
        self.kind() == SimErrorKind::InvalidMaxRecordSize
    }

    /// The stream not found, or that exists already.
    pub fn stream(&self) -> Option<&str> {
        match &self.repr {
            Refusal::StreamNotFound(s) | Refusal::StreamExists(s) => Some(s),
            _ => None,
        }
    }

    /// The shard not found.
    pub fn shard(&self) -> Option<&str> {
        match &self.repr {
            Refusal::ShardNotFound(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Refusal::StreamNotFound(s) => write!(f, "stream {s} not found"),
            Refusal::StreamExists(s) => write!(f, "stream {s} exists already"),
            Refusal::ShardNotFound(s) => write!(f, "no open shard {s}"),
            // Our own words about the arguments: no error value is behind them.
            Refusal::InvalidReshard(why) => write!(f, "invalid reshard: {why}"),
            Refusal::InvalidMaxRecordSize(kib) => write!(
                f,
                "maximum record size {kib} KiB is out of range: a stream takes {} to {} KiB",
                DEFAULT_MAX_RECORD_SIZE / 1024,
                MAX_RECORD_SIZE_CEILING / 1024
            ),
        }
    }
}

impl std::error::Error for SimError {}

struct Shard {
    id: String,
    start: HashKey,
    end: HashKey,
    parent: Option<String>,
    adjacent_parent: Option<String>,
    open: bool,
    records: Vec<StoredRecord>,
    /// Accepted (until when it counts, bytes) for the write limits: a second, or for
    /// a large record its [`shard_write_hold`].
    window: VecDeque<(Instant, usize)>,
    window_bytes: usize,
    next_seq: u64,
}

impl Shard {
    fn new(index: usize, start: HashKey, end: HashKey) -> Self {
        Self {
            id: format!("shardId-{index:012}"),
            start,
            end,
            parent: None,
            adjacent_parent: None,
            open: true,
            records: Vec::new(),
            window: VecDeque::new(),
            window_bytes: 0,
            next_seq: 0,
        }
    }

    fn describe(&self) -> ShardDescription {
        let mut d = ShardDescription::new(self.id.clone(), self.start, self.end);
        d.parent_shard_id = self.parent.clone();
        d.adjacent_parent_shard_id = self.adjacent_parent.clone();
        d.closed = !self.open;
        d
    }

    /// Whether a record of `bytes` fits under the write limits at `now`: within any
    /// second, 1,000 records and 1 MiB; a larger record only when nothing counts
    /// against the shard (see [`shard_write_hold`]).
    fn admit(&mut self, bytes: usize, now: Instant) -> bool {
        while let Some(&(until, b)) = self.window.front() {
            if until > now {
                break;
            }
            self.window.pop_front();
            self.window_bytes -= b;
        }
        let limit = SHARD_BYTES_PER_SECOND as usize;
        if bytes > limit {
            return self.window.is_empty();
        }
        self.window.len() < SHARD_RECORDS_PER_SECOND as usize && self.window_bytes + bytes <= limit
    }

    /// Counts a record of `bytes` taken at `now`.
    fn count(&mut self, bytes: usize, now: Instant) {
        self.window
            .push_back((now + shard_write_hold(bytes), bytes));
        self.window_bytes += bytes;
    }
}

struct Stream {
    arn: String,
    /// Its records' size limit (data plus partition key; `UpdateMaxRecordSize`).
    max_record_size: usize,
    shards: Vec<Shard>,
    /// The open shards by ending hash key, as (end, index in `shards`), for a
    /// look-up in O(log n); made again when `shards` grew (every reshard adds shards).
    by_end: Vec<(HashKey, usize)>,
    indexed: usize,
}

impl Stream {
    fn new(arn: String, shards: Vec<Shard>) -> Self {
        Self {
            arn,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            shards,
            by_end: Vec::new(),
            indexed: usize::MAX,
        }
    }

    fn open_shard_for(&mut self, key: HashKey) -> Option<&mut Shard> {
        if self.indexed != self.shards.len() {
            self.by_end = self
                .shards
                .iter()
                .enumerate()
                .filter(|(_, s)| s.open)
                .map(|(i, s)| (s.end, i))
                .collect();
            self.by_end.sort_unstable();
            self.indexed = self.shards.len();
        }
        let at = self.by_end.partition_point(|&(end, _)| end < key);
        let &(_, i) = self.by_end.get(at)?;
        let shard = &mut self.shards[i];
        (shard.open && shard.start <= key).then_some(shard)
    }

    fn open_index(&self, id: &str) -> Result<usize, SimError> {
        self.shards
            .iter()
            .position(|s| s.id == id && s.open)
            .ok_or_else(|| SimError::shard_not_found(id))
    }
}

struct State {
    streams: BTreeMap<String, Stream>,
    tokens: HashMap<String, (String, usize, bool)>,
    next_token: u64,
    rng: SplitMix64,
    faults: Faults,
    limits: bool,
    /// Answer every valid entry as stored without keeping it (see
    /// [`Simulator::set_acknowledge_only`]).
    acknowledge_only: bool,
    put_requests: u64,
    /// Requests taken and not yet stored, by the time they will be.
    pending: BTreeMap<(Instant, u64), (PutRecordsRequest, bool)>,
    /// Outcomes of stored requests whose callers still wait.
    answers: HashMap<u64, Result<PutRecordsResponse, TransportError>>,
    /// Callers gone (timed out): their requests are stored, nobody reads the answer.
    abandoned: HashSet<u64>,
    next_request: u64,
    /// When the slow service's bottleneck is free again.
    busy_until: Option<Instant>,
    stored_requests: u64,
    /// GetRecords calls answered.
    reads: u64,
}

impl State {
    /// Stores every pending request whose time has come, in order.
    fn settle(&mut self, now: Instant) {
        while let Some(entry) = self.pending.first_entry() {
            let &(at, id) = entry.key();
            if at > now {
                break;
            }
            let (request, keep_answer) = entry.remove();
            let result = self.store(request, at);
            if keep_answer && !self.abandoned.remove(&id) {
                self.answers.insert(id, result);
            }
        }
    }
}

/// The simulator. Cheap to clone: clones share the same streams.
#[derive(Clone)]
pub struct Simulator {
    state: Arc<Mutex<State>>,
    timer: Arc<dyn Timer>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Simulator")
            .field("streams", &state.streams.keys().collect::<Vec<_>>())
            .field("faults", &state.faults)
            .field("limits", &state.limits)
            .finish()
    }
}

/// Start of shard `i` of `n` in the even split CreateStream makes: ⌊i·2^128/n⌋.
fn even_start(i: u128, n: u128) -> u128 {
    if i == 0 {
        return 0;
    }
    // 2^128 = q·n + r, computed without overflow.
    let (mut q, mut r) = (u128::MAX / n, u128::MAX % n + 1);
    if r == n {
        q += 1;
        r = 0;
    }
    i * q + i * r / n
}

fn even_ranges(n: usize) -> Vec<(HashKey, HashKey)> {
    let n = n as u128;
    (0..n)
        .map(|i| {
            let start = even_start(i, n);
            let end = if i + 1 == n {
                u128::MAX
            } else {
                even_start(i + 1, n) - 1
            };
            (HashKey::new(start), HashKey::new(end))
        })
        .collect()
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Simulator {
    /// A simulator with no streams, on `timer`'s time, faults drawn from `seed`.
    pub fn new(timer: Arc<dyn Timer>, seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                streams: BTreeMap::new(),
                tokens: HashMap::new(),
                next_token: 0,
                rng: SplitMix64::new(seed),
                faults: Faults::none(),
                limits: true,
                acknowledge_only: false,
                put_requests: 0,
                pending: BTreeMap::new(),
                answers: HashMap::new(),
                abandoned: HashSet::new(),
                next_request: 0,
                busy_until: None,
                stored_requests: 0,
                reads: 0,
            })),
            timer,
        }
    }

    /// The state, with every request due by now stored.
    fn lock(&self) -> MutexGuard<'_, State> {
        let mut state = lock(&self.state);
        state.settle(self.timer.now());
        state
    }

    /// Creates a stream of `shards` shards splitting the hash-key space evenly, as
    /// CreateStream does; returns its ARN.
    pub fn create_stream(&self, name: &str, shards: usize) -> Result<String, SimError> {
        if shards == 0 {
            return Err(SimError::invalid_reshard(
                "a stream needs at least one shard",
            ));
        }
        let mut state = self.lock();
        if state.streams.contains_key(name) {
            return Err(SimError::stream_exists(name));
        }
        let arn = format!("arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}");
        let shards = even_ranges(shards)
            .into_iter()
            .enumerate()
            .map(|(i, (start, end))| Shard::new(i, start, end))
            .collect();
        state
            .streams
            .insert(name.to_owned(), Stream::new(arn.clone(), shards));
        Ok(arn)
    }

    /// Deletes a stream: later requests get `ResourceNotFoundException`.
    pub fn delete_stream(&self, name: &str) -> Result<(), SimError> {
        self.lock()
            .streams
            .remove(name)
            .map(drop)
            .ok_or_else(|| SimError::stream_not_found(name))
    }

    /// The ARN of a stream.
    pub fn stream_arn(&self, name: &str) -> Result<String, SimError> {
        self.lock()
            .streams
            .get(name)
            .map(|s| s.arn.clone())
            .ok_or_else(|| SimError::stream_not_found(name))
    }

    /// Splits an open shard at `new_starting_hash_key`: the parent closes, two
    /// children open (`[start, key − 1]` and `[key, end]`). Returns their ids.
    pub fn split_shard(
        &self,
        stream: &str,
        shard_id: &str,
        new_starting_hash_key: HashKey,
    ) -> Result<(String, String), SimError> {
        let mut state = self.lock();
        let s = state
            .streams
            .get_mut(stream)
            .ok_or_else(|| SimError::stream_not_found(stream))?;
        let i = s.open_index(shard_id)?;
        let (start, end) = (s.shards[i].start, s.shards[i].end);
        if new_starting_hash_key <= start || new_starting_hash_key > end {
            return Err(SimError::invalid_reshard(format!(
                "{new_starting_hash_key} is not inside ({start}, {end}]"
            )));
        }
        s.shards[i].open = false;
        let n = s.shards.len();
        let mut low = Shard::new(n, start, HashKey::new(new_starting_hash_key.get() - 1));
        let mut high = Shard::new(n + 1, new_starting_hash_key, end);
        low.parent = Some(shard_id.to_owned());
        high.parent = Some(shard_id.to_owned());
        let ids = (low.id.clone(), high.id.clone());
        s.shards.push(low);
        s.shards.push(high);
        Ok(ids)
    }

    /// Merges two adjacent open shards into one; returns the child's id.
    pub fn merge_shards(
        &self,
        stream: &str,
        shard_id: &str,
        adjacent_shard_id: &str,
    ) -> Result<String, SimError> {
        let mut state = self.lock();
        let s = state
            .streams
            .get_mut(stream)
            .ok_or_else(|| SimError::stream_not_found(stream))?;
        let a = s.open_index(shard_id)?;
        let b = s.open_index(adjacent_shard_id)?;
        let (lo, hi) = if s.shards[a].start < s.shards[b].start {
            (a, b)
        } else {
            (b, a)
        };
        if s.shards[lo].end.get().checked_add(1) != Some(s.shards[hi].start.get()) {
            return Err(SimError::invalid_reshard(format!(
                "{shard_id} and {adjacent_shard_id} are not adjacent"
            )));
        }
        s.shards[a].open = false;
        s.shards[b].open = false;
        let mut child = Shard::new(s.shards.len(), s.shards[lo].start, s.shards[hi].end);
        child.parent = Some(shard_id.to_owned());
        child.adjacent_parent = Some(adjacent_shard_id.to_owned());
        let id = child.id.clone();
        s.shards.push(child);
        Ok(id)
    }

    /// Reshards to `target` open shards of even ranges (every open shard closes; the
    /// new shards name as parent the old shard holding their start).
    pub fn update_shard_count(&self, stream: &str, target: usize) -> Result<Vec<String>, SimError> {
        if target == 0 {
            return Err(SimError::invalid_reshard(
                "target shard count must be at least 1",
            ));
        }
        let mut state = self.lock();
        let s = state
            .streams
            .get_mut(stream)
            .ok_or_else(|| SimError::stream_not_found(stream))?;
        let old: Vec<(String, HashKey, HashKey)> = s
            .shards
            .iter()
            .filter(|sh| sh.open)
            .map(|sh| (sh.id.clone(), sh.start, sh.end))
            .collect();
        for sh in s.shards.iter_mut() {
            sh.open = false;
        }
        let mut ids = Vec::new();
        for (start, end) in even_ranges(target) {
            let mut shard = Shard::new(s.shards.len(), start, end);
            shard.parent = old
                .iter()
                .find(|(_, a, b)| *a <= start && start <= *b)
                .map(|(id, _, _)| id.clone());
            ids.push(shard.id.clone());
            s.shards.push(shard);
        }
        Ok(ids)
    }

    /// Replaces the faults injected from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Turns the per-shard write limits on (the default) or off.
    pub fn set_limits(&self, enabled: bool) {
        self.lock().limits = enabled;
    }

    /// Answers every valid entry as stored on the shard its hash key routes to, but
    /// keeps nothing (no records, no limits, no faults beyond validation): for
    /// benchmarks that measure a producer apart from the simulator's own cost.
    /// [`records`](Self::records) then stays empty.
    pub fn set_acknowledge_only(&self, enabled: bool) {
        self.lock().acknowledge_only = enabled;
    }

    /// Every record stored in a stream, shard by shard in shard-id order, each shard
    /// in sequence order.
    pub fn records(&self, stream: &str) -> Result<Vec<StoredRecord>, SimError> {
        let state = self.lock();
        let s = state
            .streams
            .get(stream)
            .ok_or_else(|| SimError::stream_not_found(stream))?;
        Ok(s.shards
            .iter()
            .flat_map(|sh| sh.records.iter().cloned())
            .collect())
    }

    /// Every shard of a stream, open and closed, in creation order.
    pub fn shards(&self, stream: &str) -> Result<Vec<ShardDescription>, SimError> {
        let state = self.lock();
        let s = state
            .streams
            .get(stream)
            .ok_or_else(|| SimError::stream_not_found(stream))?;
        Ok(s.shards.iter().map(Shard::describe).collect())
    }

    /// Sets a stream's maximum record size (data plus partition key), as
    /// UpdateMaxRecordSize does: `kib` from 1024 to 10240. Its requests may then be
    /// as large as that too, when that is over the usual 5 MiB.
    pub fn update_max_record_size(&self, stream: &str, kib: usize) -> Result<(), SimError> {
        let bytes = kib.saturating_mul(1024);
        if !(DEFAULT_MAX_RECORD_SIZE..=MAX_RECORD_SIZE_CEILING).contains(&bytes) {
            return Err(SimError {
                repr: Refusal::InvalidMaxRecordSize(kib),
            });
        }
        let mut state = self.lock();
        let s = state
            .streams
            .get_mut(stream)
            .ok_or_else(|| SimError::stream_not_found(stream))?;
        s.max_record_size = bytes;
        Ok(())
    }

    /// A stream's maximum record size in bytes (DescribeStreamSummary's
    /// `MaxRecordSizeInKiB`, times 1024).
    pub fn max_record_size(&self, stream: &str) -> Result<usize, SimError> {
        let state = self.lock();
        let s = state
            .streams
            .get(stream)
            .ok_or_else(|| SimError::stream_not_found(stream))?;
        Ok(s.max_record_size)
    }

    /// PutRecords requests received so far (including failed ones).
    pub fn put_requests(&self) -> u64 {
        self.lock().put_requests
    }

    /// PutRecords requests that reached the store (whatever their callers saw).
    pub fn stored_requests(&self) -> u64 {
        self.lock().stored_requests
    }

    /// GetRecords calls answered so far.
    pub fn reads(&self) -> u64 {
        self.lock().reads
    }

    /// Waits the injected latency, then draws the request-level faults.
    async fn before_request(&self, deadline: Option<Instant>) -> Result<(), TransportError> {
        let (latency, fault) = {
            let mut state = self.lock();
            let faults = state.faults.clone();
            let fault = if state.rng.hit(faults.timeout_rate) {
                let after = deadline.map_or(faults.timeout_after, |d| {
                    d.saturating_duration_since(self.timer.now())
                        .min(faults.timeout_after)
                });
                Some((
                    after,
                    TransportError::timeout("request timed out (simulated)"),
                ))
            } else if state.rng.hit(faults.request_500_rate) {
                Some((
                    Duration::ZERO,
                    TransportError::from_code(
                        "InternalFailure",
                        "simulated internal failure",
                        Some(500),
                    ),
                ))
            } else if state.rng.hit(faults.request_503_rate) {
                Some((
                    Duration::ZERO,
                    TransportError::from_code(
                        "ServiceUnavailable",
                        "simulated service unavailable",
                        Some(503),
                    ),
                ))
            } else {
                None
            };
            (faults.latency, fault)
        };
        let extra = fault.as_ref().map_or(Duration::ZERO, |(d, _)| *d);
        if latency + extra > Duration::ZERO {
            let until = self.timer.now() + latency + extra;
            self.timer.sleep_until(until).await;
        }
        match fault {
            Some((_, err)) => Err(err),
            None => Ok(()),
        }
    }
}

fn not_found(stream: &StreamId) -> TransportError {
    TransportError::from_code(
        "ResourceNotFoundException",
        format!(
            "Stream {} under account {ACCOUNT} not found.",
            stream.name()
        ),
        Some(400),
    )
}

fn validation(message: String) -> TransportError {
    TransportError::from_code("ValidationException", message, Some(400))
}

fn invalid_argument(message: String) -> TransportError {
    TransportError::from_code("InvalidArgumentException", message, Some(400))
}

fn stream_of<'a>(
    state: &'a mut State,
    stream: &StreamId,
) -> Result<&'a mut Stream, TransportError> {
    let found = match stream {
        StreamId::Name(name) => state.streams.get_mut(name.as_str()),
        StreamId::Arn(arn) => state.streams.values_mut().find(|s| &s.arn == arn),
    };
    found.ok_or_else(|| not_found(stream))
}

#[async_trait]
impl Transport for Simulator {
    async fn list_shards(
        &self,
        request: ListShardsRequest,
    ) -> Result<ListShardsPage, TransportError> {
        self.before_request(None).await?;
        let mut state = self.lock();
        let (name, offset, open_only, max) = match request {
            ListShardsRequest::First {
                stream,
                open_only,
                max_results,
            } => {
                let name = stream_of(&mut state, &stream)?
                    .arn
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                (name, 0, open_only, max_results)
            }
            ListShardsRequest::Next { token, max_results } => {
                let (name, offset, open_only) =
                    state.tokens.get(&token).cloned().ok_or_else(|| {
                        invalid_argument(format!("NextToken {token} is invalid or expired"))
                    })?;
                (name, offset, open_only, max_results)
            }
        };
        let max = max.unwrap_or(1000);
        if !(1..=10_000).contains(&max) {
            return Err(validation(format!(
                "1 validation error detected: Value '{max}' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 10000"
            )));
        }
        let stream = state
            .streams
            .get(&name)
            .ok_or_else(|| not_found(&StreamId::Name(name.clone())))?;
        let all: Vec<ShardDescription> = stream
            .shards
            .iter()
            .filter(|s| !open_only || s.open)
            .map(Shard::describe)
            .collect();
        let end = (offset + max as usize).min(all.len());
        let shards = all.get(offset..end).map(<[_]>::to_vec).unwrap_or_default();
        let next_token = if end < all.len() {
            state.next_token += 1;
            let token = format!("sim-token-{}", state.next_token);
            state.tokens.insert(token.clone(), (name, end, open_only));
            Some(token)
        } else {
            None
        };
        Ok(ListShardsPage::new(shards, next_token))
    }

    async fn max_record_size(&self, stream: &StreamId) -> Result<Option<usize>, TransportError> {
        let state = self.lock();
        let found = match stream {
            StreamId::Name(name) => state.streams.get(name.as_str()),
            StreamId::Arn(arn) => state.streams.values().find(|s| &s.arn == arn),
        };
        found
            .map(|s| Some(s.max_record_size))
            .ok_or_else(|| not_found(stream))
    }

    /// An iterator is `sim-iterator/<stream>/<shard index>/<record index>`.
    async fn shard_iterator(
        &self,
        stream: &StreamId,
        shard_id: &str,
        position: ShardPosition,
    ) -> Result<String, TransportError> {
        self.before_request(None).await?;
        let now = self.timer.now();
        let mut state = self.lock();
        let s = stream_of(&mut state, stream)?;
        let name = s.arn.rsplit('/').next().unwrap_or_default().to_owned();
        let (index, shard) = s
            .shards
            .iter()
            .enumerate()
            .find(|(_, sh)| sh.id == shard_id)
            .ok_or_else(|| {
                TransportError::from_code(
                    "ResourceNotFoundException",
                    format!(
                        "Shard {shard_id} in stream {name} under account {ACCOUNT} does not exist"
                    ),
                    Some(400),
                )
            })?;
        let start = match position {
            ShardPosition::AfterSequenceNumber(after) => {
                let key = |seq: &str| (seq.len(), seq.to_owned());
                let after = key(&after);
                shard
                    .records
                    .partition_point(|r| key(&r.sequence_number) <= after)
            }
            ShardPosition::AtTimestamp(at) => {
                // The stored records' times are the simulator's clock: the wall
                // clock's distance to `at` counts back from its now.
                let ago = std::time::SystemTime::now()
                    .duration_since(at)
                    .unwrap_or(Duration::ZERO);
                let from = now.checked_sub(ago);
                shard
                    .records
                    .partition_point(|r| from.is_some_and(|f| r.arrival < f))
            }
            // TRIM_HORIZON, and any position this simulator does not know: from the
            // start, which holds whatever a later start would.
            _ => 0,
        };
        Ok(format!("sim-iterator/{name}/{index}/{start}"))
    }

    async fn get_records(
        &self,
        stream: &StreamId,
        iterator: &str,
        limit: Option<u32>,
    ) -> Result<RecordsPage, TransportError> {
        let _ = stream;
        self.before_request(None).await?;
        let invalid = || invalid_argument(format!("Invalid ShardIterator: {iterator}"));
        let mut parts = iterator
            .strip_prefix("sim-iterator/")
            .ok_or_else(invalid)?
            .rsplitn(3, '/');
        let (Some(start), Some(index), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let (start, index): (usize, usize) = (
            start.parse().map_err(|_| invalid())?,
            index.parse().map_err(|_| invalid())?,
        );
        let mut state = self.lock();
        state.reads += 1;
        let s = state
            .streams
            .get(name)
            .ok_or_else(|| not_found(&StreamId::Name(name.to_owned())))?;
        let shard = s.shards.get(index).ok_or_else(invalid)?;
        let limit = limit
            .unwrap_or(GET_RECORDS_MAX_RECORDS)
            .clamp(1, GET_RECORDS_MAX_RECORDS) as usize;
        let (mut end, mut bytes) = (start.min(shard.records.len()), 0usize);
        // At most `limit` records and about 10 MiB, as GetRecords.
        while end < shard.records.len() && end - start < limit && bytes < GET_RECORDS_MAX_BYTES {
            bytes += shard.records[end].data.len();
            end += 1;
        }
        let records = shard.records[start.min(end)..end]
            .iter()
            .map(|r| ReadRecord::new(&r.sequence_number, &r.partition_key, r.data.clone()))
            .collect();
        let at_end = end == shard.records.len();
        let next = (shard.open || !at_end).then(|| format!("sim-iterator/{name}/{index}/{end}"));
        Ok(RecordsPage::new(
            records,
            next,
            Some(if at_end { 0 } else { 1000 }),
        ))
    }

    async fn put_records(
        &self,
        request: PutRecordsRequest,
    ) -> Result<PutRecordsResponse, TransportError> {
        let sent = self.timer.now();
        let deadline = request.timeout.map(|t| sent + t);
        self.lock().put_requests += 1;
        self.before_request(deadline).await?;
        let now = self.timer.now();
        let (id, answer_at, lost) = {
            let mut state = self.lock();
            let faults = state.faults.clone();
            let lost = state.rng.hit(faults.stored_answer_lost_rate);
            let stored_at = match faults.service_bytes_per_second {
                Some(rate) => {
                    let start = state.busy_until.map_or(now, |b| b.max(now));
                    let secs = request.size() as f64 / rate.max(1) as f64;
                    let done = start
                        + faults.service_time_per_request
                        + Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX / 4);
                    state.busy_until = Some(done);
                    done
                }
                None => now,
            };
            if stored_at <= now && faults.answer_delay.is_zero() && !lost {
                // The fast path: stored and answered at once.
                return state.store(request, now);
            }
            state.next_request += 1;
            let id = state.next_request;
            state.pending.insert((stored_at, id), (request, !lost));
            (id, stored_at + faults.answer_delay, lost)
        };
        let timeout_at = deadline.unwrap_or_else(|| now + self.lock().faults.timeout_after);
        let wake = if lost {
            timeout_at
        } else {
            deadline.map_or(answer_at, |d| d.min(answer_at))
        };
        if wake > now {
            self.timer.sleep_until(wake).await;
        }
        let mut state = self.lock();
        if !lost
            && answer_at <= wake
            && let Some(answer) = state.answers.remove(&id)
        {
            return answer;
        }
        if !lost && !state.answers.contains_key(&id) {
            // Not stored yet: it will be, and nobody will read the answer.
            state.abandoned.insert(id);
        }
        state.answers.remove(&id);
        Err(TransportError::timeout(format!(
            "request timed out after {} ms (simulated)",
            wake.saturating_duration_since(sent).as_millis()
        )))
    }
}

impl State {
    /// Validates and stores one request at `now`.
    fn store(
        &mut self,
        request: PutRecordsRequest,
        now: Instant,
    ) -> Result<PutRecordsResponse, TransportError> {
        let state = self;
        let count = request.entries.len();
        if count == 0 || count > MAX_RECORDS_PER_REQUEST {
            return Err(validation(format!(
                "1 validation error detected: Value '{count} records' at 'records' failed to satisfy constraint: Member must have length between 1 and {MAX_RECORDS_PER_REQUEST}"
            )));
        }
        let max_record = match &request.stream {
            StreamId::Name(name) => state.streams.get(name.as_str()),
            StreamId::Arn(arn) => state.streams.values().find(|s| &s.arn == arn),
        }
        .map_or(DEFAULT_MAX_RECORD_SIZE, |s| s.max_record_size);
        let max_request = max_record.max(DEFAULT_MAX_REQUEST_SIZE);
        let mut total = 0usize;
        for (i, entry) in request.entries.iter().enumerate() {
            let chars = entry.partition_key.chars().count();
            if chars == 0 || chars > MAX_PARTITION_KEY_CHARS {
                return Err(validation(format!(
                    "1 validation error detected: Value at 'records.{}.member.partitionKey' failed to satisfy constraint: Member must have length between 1 and {MAX_PARTITION_KEY_CHARS}",
                    i + 1
                )));
            }
            if entry.data.len() > max_record {
                return Err(validation(format!(
                    "1 validation error detected: Value at 'records.{}.member.data' failed to satisfy constraint: Member must have length less than or equal to {max_record}",
                    i + 1
                )));
            }
            if entry.size() > max_record {
                return Err(invalid_argument(format!(
                    "Record {i} size {} exceeds the {max_record}-byte limit (data plus partition key)",
                    entry.size()
                )));
            }
            total += entry.size();
        }
        if total > max_request {
            return Err(invalid_argument(format!(
                "Records size {total} exceeds the {max_request}-byte request limit"
            )));
        }
        let faults = state.faults.clone();
        let limits = state.limits;
        let acknowledge_only = state.acknowledge_only;
        let stream = match &request.stream {
            StreamId::Name(name) => state.streams.get_mut(name.as_str()),
            StreamId::Arn(arn) => state.streams.values_mut().find(|s| &s.arn == arn),
        }
        .ok_or_else(|| not_found(&request.stream))?;
        let stream_name = request.stream.name().to_owned();
        let mut results = Vec::with_capacity(count);
        for entry in request.entries {
            let key = entry.hash_key();
            let Some(shard) = stream.open_shard_for(key) else {
                results.push(EntryResult::Failed {
                    code: "InternalFailure".into(),
                    message: format!("no open shard covers hash key {key}"),
                });
                continue;
            };
            if acknowledge_only {
                let sequence_number = format!("49{:036}", shard.next_seq);
                shard.next_seq += 1;
                results.push(EntryResult::Ok {
                    shard_id: shard.id.clone(),
                    sequence_number,
                });
                continue;
            }
            if limits && !shard.admit(entry.size(), now) {
                results.push(EntryResult::Failed {
                    code: "ProvisionedThroughputExceededException".into(),
                    message: format!(
                        "Rate exceeded for shard {} in stream {stream_name} under account {ACCOUNT}.",
                        shard.id
                    ),
                });
                continue;
            }
            if state.rng.hit(faults.record_internal_failure_rate) {
                results.push(EntryResult::Failed {
                    code: "InternalFailure".into(),
                    message: "Internal service failure (simulated).".into(),
                });
                continue;
            }
            shard.count(entry.size(), now);
            let index: u64 = shard.id.trim_start_matches("shardId-").parse().unwrap_or(0);
            let sequence_number = format!("49{index:06}{:030}", shard.next_seq);
            shard.next_seq += 1;
            results.push(EntryResult::Ok {
                shard_id: shard.id.clone(),
                sequence_number: sequence_number.clone(),
            });
            shard.records.push(StoredRecord {
                shard_id: shard.id.clone(),
                sequence_number,
                partition_key: entry.partition_key,
                explicit_hash_key: entry.explicit_hash_key,
                hash_key: key,
                data: entry.data,
                arrival: now,
            });
        }
        state.stored_requests += 1;
        Ok(PutRecordsResponse::new(results))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_index_finds_what_a_scan_finds_through_reshards() {
        let clock: Arc<dyn Timer> = Arc::new(kpl_runtime::VirtualClock::new());
        let sim = Simulator::new(clock, 9);
        sim.create_stream("s", 5).unwrap();
        let mut rng = SplitMix64::new(3);
        let check = |sim: &Simulator, rng: &mut SplitMix64| {
            let mut state = sim.lock();
            let stream = state.streams.get_mut("s").unwrap();
            for _ in 0..2_000 {
                let key =
                    HashKey::new(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()));
                let scanned = stream
                    .shards
                    .iter()
                    .position(|s| s.open && s.start <= key && key <= s.end);
                let found = stream.open_shard_for(key).map(|s| s.id.clone());
                assert_eq!(found, scanned.map(|i| stream.shards[i].id.clone()));
                assert!(found.is_some(), "the open shards cover the range");
            }
        };
        check(&sim, &mut rng);
        let first = sim.shards("s").unwrap()[1].clone();
        let mid = HashKey::new(first.starting_hash_key.get() / 2 + first.ending_hash_key.get() / 2);
        sim.split_shard("s", &first.shard_id, mid).unwrap();
        check(&sim, &mut rng);
        sim.update_shard_count("s", 3).unwrap();
        check(&sim, &mut rng);
        let open: Vec<_> = sim
            .shards("s")
            .unwrap()
            .into_iter()
            .filter(|s| !s.closed)
            .collect();
        sim.merge_shards("s", &open[0].shard_id, &open[1].shard_id)
            .unwrap();
        check(&sim, &mut rng);
    }

    #[test]
    fn even_ranges_match_the_service_layout() {
        let two = even_ranges(2);
        assert_eq!(
            two[0].1.to_string(),
            "170141183460469231731687303715884105727"
        );
        assert_eq!(
            two[1].0.to_string(),
            "170141183460469231731687303715884105728"
        );
        for n in [1usize, 3, 4, 7, 1000] {
            let r = even_ranges(n);
            assert_eq!(r[0].0, HashKey::MIN);
            assert_eq!(r[n - 1].1, HashKey::MAX);
            for w in r.windows(2) {
                assert_eq!(w[0].1.get() + 1, w[1].0.get());
            }
        }
        // 4 shards: the service's boundaries.
        let four = even_ranges(4);
        assert_eq!(
            four[1].0.to_string(),
            "85070591730234615865843651857942052864"
        );
    }

    /// Each refusal says what it is and names its stream or shard; none has a
    /// cause behind it.
    #[test]
    fn refusals_name_their_stream_or_shard() {
        use std::error::Error as _;
        let clock: Arc<dyn Timer> = Arc::new(kpl_runtime::VirtualClock::new());
        let sim = Simulator::new(clock, 1);
        sim.create_stream("s", 1).unwrap();
        let e = sim.create_stream("s", 1).unwrap_err();
        assert_eq!(e.kind(), SimErrorKind::StreamExists);
        assert!(e.is_stream_exists());
        assert_eq!((e.stream(), e.shard()), (Some("s"), None));
        assert_eq!(e.to_string(), "stream s exists already");
        assert!(e.source().is_none());
        let e = sim.records("nowhere").unwrap_err();
        assert!(e.is_stream_not_found());
        assert_eq!(e.to_string(), "stream nowhere not found");
        let e = sim
            .split_shard("s", "shardId-000000000009", HashKey::new(1))
            .unwrap_err();
        assert_eq!(e.kind(), SimErrorKind::ShardNotFound);
        assert_eq!(
            (e.stream(), e.shard()),
            (None, Some("shardId-000000000009"))
        );
        assert_eq!(e.to_string(), "no open shard shardId-000000000009");
        let e = sim.update_shard_count("s", 0).unwrap_err();
        assert!(e.is_invalid_reshard());
        assert_eq!(
            e.to_string(),
            "invalid reshard: target shard count must be at least 1"
        );
    }

    /// A stream takes records over 1 MiB once its limit is raised; such a record
    /// is taken only when nothing counts against its shard, and holds the shard
    /// for its bytes at 1 MiB/s.
    #[test]
    fn large_records_need_a_raised_limit_and_hold_their_shard() {
        let clock = Arc::new(kpl_runtime::VirtualClock::new());
        let t0 = clock.now();
        let sim = Simulator::new(clock, 1);
        sim.create_stream("s", 1).unwrap();
        let put = |bytes: usize, at: Instant| {
            let entry =
                kpl_transport::PutRecordsEntry::new("k", None, Bytes::from(vec![0u8; bytes - 1]));
            let request = PutRecordsRequest::new(StreamId::parse("s"), vec![entry]);
            sim.lock().store(request, at).map(|r| r.failed_count() == 0)
        };
        let big = 5 * 1024 * 1024;
        let e = put(big, t0).unwrap_err();
        assert!(e.to_string().contains("1048576"), "{e}");
        let e = sim.update_max_record_size("s", 10_241).unwrap_err();
        assert!(e.is_invalid_max_record_size());
        assert_eq!(
            e.to_string(),
            "maximum record size 10241 KiB is out of range: a stream takes 1024 to 10240 KiB"
        );
        sim.update_max_record_size("s", 10_240).unwrap();
        assert_eq!(sim.max_record_size("s").unwrap(), MAX_RECORD_SIZE_CEILING);
        let ms = Duration::from_millis;
        assert!(put(100, t0).unwrap());
        assert!(
            !put(big, t0 + ms(999)).unwrap(),
            "a record within the second"
        );
        assert!(put(big, t0 + ms(1000)).unwrap(), "nothing counts any more");
        assert!(
            !put(100, t0 + ms(5999)).unwrap(),
            "5 MiB hold the shard 5 s"
        );
        assert!(put(100, t0 + ms(6000)).unwrap());
        // A request may be as large as the stream's record limit.
        assert!(put(MAX_RECORD_SIZE_CEILING + 1, t0 + ms(8000)).is_err());
        assert!(put(MAX_RECORD_SIZE_CEILING, t0 + ms(8000)).unwrap());
    }
}

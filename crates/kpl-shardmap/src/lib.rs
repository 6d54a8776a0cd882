//! The shard map: which shard a hash key lands on, and when to ask again.
//!
//! Kinesis routes a record to the open shard whose hash-key range holds its hash key,
//! so the producer can predict the shard of every record before sending it, and
//! aggregate per shard. [`ShardMap`] holds the open shards' ranges (from ListShards)
//! and decides when to refresh them; it does no I/O and reads no clock: the driver
//! asks [`ShardMap::poll_refresh`] whether to list shards now, feeds the outcome back
//! with [`ShardMap::on_refresh_succeeded`] or [`ShardMap::on_refresh_failed`], and
//! reports evidence of a stale map with [`ShardMap::invalidate`].
//!
//! # States
//!
//! `Empty` → `Updating` → `Ready`, with a [`version`](ShardMap::version) that grows on
//! every successful refresh. A refresh happens on start, and after an
//! [`invalidate`](ShardMap::invalidate) whose evidence is newer than the map; while it
//! runs, the previous map (if any) keeps answering. A failed refresh is retried after
//! a backoff with jitter from 1 s to 30 s (×1.5 per failure, seeded randomness). The
//! map never blocks anyone: [`lookup`](ShardMap::lookup) answers
//! [`LookupError::NotReady`] and the caller decides.
//!
//! # The rule for aggregation
//!
//! **Records whose shard is unknown are never aggregated together.** A KCL consumer
//! drops every user record of an aggregate whose hash key lies outside the range of
//! the shard the aggregate was read from; only records predicted for one known shard
//! may share an aggregate. When [`lookup`](ShardMap::lookup) fails (map not ready, or
//! no open shard covers the key), the record goes out alone.
//!
//! # Splits and merges
//!
//! After a split, records predicted for the parent land on a child. The retrier asks
//! [`classify`](ShardMap::classify): a landing on a shard whose range holds the key
//! (a child of the predicted shard) is a success; anything else is a wrong shard. The
//! ranges of shards that closed are kept for [`CLOSED_SHARD_RETENTION`] (60 s) for this.
//! Reporting a landing on a shard the map does not know triggers a refresh even if
//! the evidence is not newer than the map — the fault of aiokpl, which skipped it and
//! kept bouncing records as "Wrong Shard".
//!
//! # Example
//!
//! ```
//! use std::time::Instant;
//! use kpl_codec::HashKey;
//! use kpl_shardmap::{ShardInfo, ShardMap};
//!
//! let t0 = Instant::now();
//! let mut map = ShardMap::new(7);
//! let refresh = map.poll_refresh(t0).expect("a new map refreshes at once");
//! let shards = vec![
//!     ShardInfo::new("shardId-000000000000", HashKey::MIN, HashKey::new(u128::MAX / 2)),
//!     ShardInfo::new("shardId-000000000001", HashKey::new(u128::MAX / 2 + 1), HashKey::MAX),
//! ];
//! map.on_refresh_succeeded(refresh, shards, t0);
//! // MD5("pk1") = 329398341438914906102347661116985167824, in the upper half.
//! let shard = map.lookup(HashKey::from_partition_key("pk1")).unwrap();
//! assert_eq!(shard.id().as_str(), "shardId-000000000001");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kpl_codec::{HashKey, SplitMix64};

/// How long the ranges of closed shards are kept after a refresh drops them.
pub const CLOSED_SHARD_RETENTION: Duration = Duration::from_secs(60);
/// The first retry delay after a failed refresh.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Growth of the retry delay per consecutive failure.
pub const BACKOFF_FACTOR: f64 = 1.5;

/// A shard id, cheap to clone (`shardId-000000000007`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(Arc<str>);

impl ShardId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared text of the id (no copy).
    pub fn to_arc(&self) -> Arc<str> {
        self.0.clone()
    }

    /// A number of this handle, the same for its clones and kept while any of them
    /// lives: with [`same_handle`](Self::same_handle), a cache keyed by handle
    /// finds an id the shard map gave out without hashing its text. Equal ids made
    /// apart have different handles.
    pub fn handle(&self) -> usize {
        Arc::as_ptr(&self.0).cast::<u8>() as usize
    }

    /// Whether `other` is a clone of this handle (not only an equal id).
    pub fn same_handle(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl From<&str> for ShardId {
    fn from(id: &str) -> Self {
        Self(id.into())
    }
}

impl From<String> for ShardId {
    fn from(id: String) -> Self {
        Self(id.into())
    }
}

impl fmt::Debug for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One shard as ListShards describes it: its id and hash-key range (inclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    id: ShardId,
    start: HashKey,
    end: HashKey,
}

impl ShardInfo {
    /// A shard covering `[start, end]`.
    pub fn new(id: impl Into<ShardId>, start: HashKey, end: HashKey) -> Self {
        Self {
            id: id.into(),
            start,
            end,
        }
    }

    /// Its id.
    pub fn id(&self) -> &ShardId {
        &self.id
    }

    /// Its starting hash key.
    pub fn start(&self) -> HashKey {
        self.start
    }

    /// Its ending hash key (inclusive).
    pub fn end(&self) -> HashKey {
        self.end
    }

    /// Whether its range holds `key`.
    pub fn contains(&self, key: HashKey) -> bool {
        self.start <= key && key <= self.end
    }
}

/// Where the map stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapState {
    /// No map yet, and no refresh running.
    Empty,
    /// A refresh is running (the previous map, if any, still answers).
    Updating,
    /// A map is there and no refresh is running.
    Ready,
}

/// Why [`ShardMap::lookup`] has no shard for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// There is no map yet (first refresh running or failing).
    NotReady,
    /// No open shard of the map covers this key: the map is stale or incomplete.
    NoShard {
        /// The key.
        hash_key: HashKey,
    },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotReady => {
                f.write_str("the shard map is not ready yet (ListShards has not succeeded)")
            }
            Self::NoShard { hash_key } => {
                write!(f, "no open shard of the map covers hash key {hash_key}")
            }
        }
    }
}

impl std::error::Error for LookupError {}

/// Where a record landed, compared with the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Landing {
    /// The shard's range holds the record's hash key: the landing is right (it may be
    /// a child of the predicted shard after a split).
    InRange,
    /// The shard is known and its range does not hold the key: a wrong shard.
    OutOfRange,
    /// The map does not know the shard (open or recently closed).
    UnknownShard,
}

/// A ticket for one refresh, handed out by [`ShardMap::poll_refresh`] and given back
/// with its outcome.
#[derive(Debug)]
#[must_use = "report the refresh's outcome with on_refresh_succeeded or on_refresh_failed"]
pub struct Refresh {
    started_at: Instant,
}

impl Refresh {
    /// When the refresh started.
    pub fn started_at(&self) -> Instant {
        self.started_at
    }
}

/// The shard map and its refresh state machine. See the [crate docs](crate).
#[derive(Debug)]
pub struct ShardMap {
    /// Open shards sorted by ending hash key.
    open: Vec<ShardInfo>,
    /// Shard id → index in `open`.
    by_id: HashMap<ShardId, usize>,
    closed: Vec<(ShardInfo, Instant)>,
    version: u64,
    /// When the refresh that built the map started: evidence seen after it may be
    /// newer than the map.
    map_as_of: Option<Instant>,
    updating: Option<Instant>,
    /// Evidence (seen at) that asks for a refresh not yet started.
    wanted: Option<Instant>,
    failures: u32,
    retry_at: Option<Instant>,
    rng: SplitMix64,
}

impl ShardMap {
    /// An empty map that wants its first refresh; `seed` drives the backoff jitter.
    pub fn new(seed: u64) -> Self {
        Self {
            open: Vec::new(),
            by_id: HashMap::new(),
            closed: Vec::new(),
            version: 0,
            map_as_of: None,
            updating: None,
            wanted: None,
            failures: 0,
            retry_at: None,
            rng: SplitMix64::new(seed),
        }
    }

    /// Where the map stands.
    pub fn state(&self) -> MapState {
        match (self.updating, self.map_as_of) {
            (Some(_), _) => MapState::Updating,
            (None, Some(_)) => MapState::Ready,
            (None, None) => MapState::Empty,
        }
    }

    /// Whether a map is there to answer lookups (even while a refresh runs).
    pub fn is_ready(&self) -> bool {
        self.map_as_of.is_some()
    }

    /// Grows by one with every successful refresh; 0 before the first.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the refresh that built the current map started (`None` before the
    /// first): a landing seen on a request sent before it is already accounted for.
    pub fn as_of(&self) -> Option<Instant> {
        self.map_as_of
    }

    /// Whether `id` is an open shard of the current map.
    pub fn is_open(&self, id: &ShardId) -> bool {
        self.by_id.contains_key(id)
    }

    /// The open shards, sorted by ending hash key.
    pub fn shards(&self) -> &[ShardInfo] {
        &self.open
    }

    /// Starts a refresh if one is due at `now` (first map, or evidence of a stale map,
    /// once any backoff has passed, and none running). The caller lists the shards and
    /// reports back with the returned ticket.
    pub fn poll_refresh(&mut self, now: Instant) -> Option<Refresh> {
        self.expire_closed(now);
        if self.updating.is_some() {
            return None;
        }
        let due = self.map_as_of.is_none() || self.wanted.is_some();
        if !due || self.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        self.updating = Some(now);
        self.wanted = None;
        Some(Refresh { started_at: now })
    }

    /// When [`poll_refresh`](Self::poll_refresh) will start the next refresh, if one is
    /// owed: `now` when it is due now, later while a backoff runs; `None` when no
    /// refresh is owed or one is running.
    pub fn next_refresh_at(&self, now: Instant) -> Option<Instant> {
        let owed = self.map_as_of.is_none() || self.wanted.is_some();
        if self.updating.is_some() || !owed {
            return None;
        }
        Some(self.retry_at.map_or(now, |at| at.max(now)))
    }

    /// A refresh listed `shards` (the open shards, every page): they become the map.
    /// Shards that were open and are no longer are kept as closed for
    /// [`CLOSED_SHARD_RETENTION`].
    pub fn on_refresh_succeeded(
        &mut self,
        refresh: Refresh,
        mut shards: Vec<ShardInfo>,
        now: Instant,
    ) {
        shards.sort_by_key(|s| (s.end, s.start));
        shards.dedup_by(|a, b| a.id == b.id);
        let by_id: HashMap<ShardId, usize> = shards
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        for old in std::mem::take(&mut self.open) {
            if !by_id.contains_key(&old.id) {
                self.closed.retain(|(c, _)| c.id != old.id);
                self.closed.push((old, now));
            }
        }
        self.closed.retain(|(c, _)| !by_id.contains_key(&c.id));
        self.open = shards;
        self.by_id = by_id;
        self.version += 1;
        self.map_as_of = Some(refresh.started_at);
        self.updating = None;
        self.failures = 0;
        self.retry_at = None;
        // Evidence seen after this refresh started may be newer than what it listed.
        if self.wanted.is_some_and(|seen| seen <= refresh.started_at) {
            self.wanted = None;
        }
        self.expire_closed(now);
    }

    /// Closed shards a listing of the stream's history found (ListShards without the
    /// open-shards filter): their ranges are kept for [`CLOSED_SHARD_RETENTION`] so
    /// that a record that landed on a shard born and closed between two refreshes can
    /// still be classified. Open shards among them are ignored.
    pub fn remember_closed(&mut self, shards: Vec<ShardInfo>, now: Instant) {
        for shard in shards {
            if self.by_id.contains_key(&shard.id) {
                continue;
            }
            self.closed.retain(|(c, _)| c.id != shard.id);
            self.closed.push((shard, now));
        }
    }

    /// A refresh failed: retry after a backoff (1 s × 1.5 per consecutive failure, at
    /// most 30 s, with ±20 % jitter). Returns when the next try is due.
    pub fn on_refresh_failed(&mut self, refresh: Refresh, now: Instant) -> Instant {
        self.updating = None;
        // The refresh is still owed.
        self.wanted = Some(
            self.wanted
                .map_or(refresh.started_at, |w| w.max(refresh.started_at)),
        );
        let base = BACKOFF_MIN.as_secs_f64() * BACKOFF_FACTOR.powi(self.failures.min(20) as i32);
        self.failures = self.failures.saturating_add(1);
        let jittered = base * (0.8 + 0.4 * self.rng.unit());
        let delay = Duration::from_secs_f64(
            jittered.clamp(BACKOFF_MIN.as_secs_f64(), BACKOFF_MAX.as_secs_f64()),
        );
        let at = now + delay;
        self.retry_at = Some(at);
        at
    }

    /// Reports evidence that the map may be stale: a record seen at `seen_at` landed on
    /// `actual` (or was refused for a reason that points at the map). Asks for a
    /// refresh when the evidence is newer than the map, or when `actual` is a shard
    /// the map does not know at all. Returns whether a refresh is now wanted.
    pub fn invalidate(&mut self, seen_at: Instant, actual: Option<&ShardId>) -> bool {
        let unknown = actual.is_some_and(|id| !self.knows(id));
        let newer = self.map_as_of.is_none_or(|as_of| seen_at > as_of);
        // A running refresh that started after the evidence will cover it.
        let covered = self.updating.is_some_and(|started| started >= seen_at) && !unknown;
        if (newer || unknown) && !covered {
            self.wanted = Some(self.wanted.map_or(seen_at, |w| w.max(seen_at)));
        }
        self.wanted.is_some()
    }

    /// The open shard whose range holds `hash_key`, in O(log n).
    pub fn lookup(&self, hash_key: HashKey) -> Result<&ShardInfo, LookupError> {
        if self.map_as_of.is_none() {
            return Err(LookupError::NotReady);
        }
        let i = self.open.partition_point(|s| s.end < hash_key);
        match self.open.get(i) {
            Some(shard) if shard.start <= hash_key => Ok(shard),
            _ => Err(LookupError::NoShard { hash_key }),
        }
    }

    /// The range of a shard, open or closed within the last 60 s, as of `now`.
    pub fn range_of(&self, id: &ShardId, now: Instant) -> Option<(HashKey, HashKey)> {
        self.by_id
            .get(id)
            .map(|&i| &self.open[i])
            .or_else(|| {
                self.closed
                    .iter()
                    .find(|(s, at)| {
                        &s.id == id && now.saturating_duration_since(*at) < CLOSED_SHARD_RETENTION
                    })
                    .map(|(s, _)| s)
            })
            .map(|s| (s.start, s.end))
    }

    /// Whether a record of `hash_key` that landed on `actual` landed right.
    pub fn classify(&self, hash_key: HashKey, actual: &ShardId, now: Instant) -> Landing {
        match self.range_of(actual, now) {
            Some((start, end)) if start <= hash_key && hash_key <= end => Landing::InRange,
            Some(_) => Landing::OutOfRange,
            None => Landing::UnknownShard,
        }
    }

    fn knows(&self, id: &ShardId) -> bool {
        self.by_id.contains_key(id) || self.closed.iter().any(|(s, _)| &s.id == id)
    }

    fn expire_closed(&mut self, now: Instant) {
        self.closed
            .retain(|(_, at)| now.saturating_duration_since(*at) < CLOSED_SHARD_RETENTION);
    }
}

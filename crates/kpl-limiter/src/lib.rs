//! Token buckets, the per-shard limiter and the congestion window, sans-IO.
//!
//! Kinesis takes at most 1,000 records and 1 MiB per second per shard. The
//! [`Limiter`] holds each shard's outgoing Kinesis records back so that a producer
//! does not push a shard past `rate_limit` percent of that (default 150, as the KPL:
//! a little over the limit keeps the shard busy while retries absorb the excess).
//!
//! - Items wait per shard in deadline order; an item past its expiration leaves first,
//!   without tokens, so the caller can fail it as expired.
//! - [`Limiter::next_ready_at`] says exactly when the next item can leave, so a driver
//!   sleeps until then instead of polling every 25 ms as the KPL does.
//! - Beyond the KPL (whose throttle reaction is an empty TODO): a shard reported as
//!   throttled is slowed down, and recovers gradually while its puts succeed; see
//!   [`Feedback`].
//!
//! Nothing here reads a clock: every call takes `now`.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//! use kpl_limiter::{LimitItem, Limiter, LimiterConfig, Release};
//!
//! struct Rec { bytes: u64, deadline: Instant, expiration: Instant }
//! impl LimitItem for Rec {
//!     fn bytes(&self) -> u64 { self.bytes }
//!     fn deadline(&self) -> Instant { self.deadline }
//!     fn expiration(&self) -> Instant { self.expiration }
//! }
//!
//! let t0 = Instant::now();
//! let mut limiter = Limiter::new(LimiterConfig::new(100)); // 100 % of the shard limit
//! for _ in 0..1001 {
//!     let rec = Rec { bytes: 10, deadline: t0, expiration: t0 + Duration::from_secs(30) };
//!     limiter.add("shardId-000000000000", rec, t0);
//! }
//! let released = limiter.poll(t0);
//! assert_eq!(released.len(), 1000); // one second of burst
//! assert!(released.iter().all(|r| matches!(r, Release::Ready { .. })));
//! assert_eq!(limiter.next_ready_at(t0), Some(t0 + Duration::from_millis(1)));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod bucket;
mod window;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

pub use bucket::TokenBucket;
pub use window::{Answer, CongestionWindow, LATENCY_SLACK, QUEUE_SLACK, Ticket, WindowConfig};

/// Records per second one shard accepts.
pub const SHARD_RECORDS_PER_SECOND: u64 = 1_000;
/// Bytes per second one shard accepts.
pub const SHARD_BYTES_PER_SECOND: u64 = 1024 * 1024;

/// What the limiter needs to know of an item (one Kinesis record).
pub trait LimitItem {
    /// Bytes it counts against the shard's byte rate (data plus partition key).
    fn bytes(&self) -> u64;
    /// Items leave in deadline order.
    fn deadline(&self) -> Instant;
    /// Past this, the item leaves at once as [`Release::Expired`].
    fn expiration(&self) -> Instant;
}

/// The limiter's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimiterConfig {
    rate_limit_percent: u64,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self::new(150)
    }
}

impl LimiterConfig {
    /// Each shard gets `rate_limit_percent` percent of the Kinesis shard limits
    /// (the KPL's `RateLimit`; at least 1).
    pub fn new(rate_limit_percent: u64) -> Self {
        Self {
            rate_limit_percent: rate_limit_percent.max(1),
        }
    }

    /// The configured percent.
    pub fn rate_limit_percent(&self) -> u64 {
        self.rate_limit_percent
    }

    /// Records and bytes per second one shard may take at full speed.
    pub fn shard_rates(&self) -> [u64; 2] {
        [
            SHARD_RECORDS_PER_SECOND * self.rate_limit_percent / 100,
            SHARD_BYTES_PER_SECOND * self.rate_limit_percent / 100,
        ]
    }
}

/// How throttle reports move a shard's rate (additive increase, multiplicative
/// decrease), as a fraction of the configured rate in parts per million.
///
/// - A throttle report halves the shard's rate ([`Feedback::DECREASE_PERCENT`]),
///   at most once per [`Feedback::DECREASE_INTERVAL`] (one failed request reports
///   many records at once: that is one signal, not 500), never below
///   [`Feedback::FLOOR_PPM`] (1/16 of the configured rate).
/// - While puts to the shard succeed, its rate climbs back by
///   [`Feedback::RECOVERY_PPM_PER_SECOND`] (10 % of the configured rate per second
///   of successes), never above the configured rate: from the floor to full speed
///   in under ten seconds of clean traffic.
#[derive(Debug)]
#[non_exhaustive]
pub struct Feedback;

impl Feedback {
    /// Percent of the current rate kept after a throttle report.
    pub const DECREASE_PERCENT: u64 = 50;
    /// Reports closer together than this count once.
    pub const DECREASE_INTERVAL: Duration = Duration::from_millis(100);
    /// The lowest rate, in parts per million of the configured rate.
    pub const FLOOR_PPM: u64 = 1_000_000 / 16;
    /// Recovery per second of successes, in parts per million of the configured rate.
    pub const RECOVERY_PPM_PER_SECOND: u64 = 100_000;
    /// The configured rate.
    pub const FULL_PPM: u64 = 1_000_000;
}

/// An item leaving the limiter.
#[derive(Debug, PartialEq, Eq)]
pub enum Release<K, T> {
    /// It took its tokens: send it.
    Ready {
        /// Its shard.
        shard: K,
        /// The item.
        item: T,
    },
    /// Its expiration passed while it waited; it took no tokens.
    Expired {
        /// Its shard.
        shard: K,
        /// The item.
        item: T,
    },
}

struct Shard<K, T> {
    key: K,
    bucket: TokenBucket<2>,
    /// Parts per million of the configured rate.
    factor_ppm: u64,
    last_decrease: Option<Instant>,
    last_adjust: Instant,
    by_deadline: BTreeMap<(Instant, u64), T>,
    by_expiration: BTreeMap<(Instant, u64), Instant>,
    /// When this shard next has something to release, as last scheduled.
    wake: Option<Instant>,
}

impl<K, T: LimitItem> Shard<K, T> {
    /// When the head's tokens are there or the earliest expiration passes.
    fn next_event(&self, now: Instant) -> Option<Instant> {
        let head = self
            .by_deadline
            .first_key_value()
            .map(|(_, item)| self.bucket.ready_at([1, item.bytes()], now));
        let expiry = self.by_expiration.first_key_value().map(|(&(e, _), _)| e);
        match (head, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn apply_factor(&mut self, full: [u64; 2], now: Instant) {
        let rates = full.map(|r| (r * self.factor_ppm / Feedback::FULL_PPM).max(1));
        self.bucket.set_rates(rates, now);
    }
}

/// The per-shard limiter. `K` names a shard (a shard id); `T` is the item.
///
/// Each shard's next event (its head's tokens arrive, or an item expires) is kept in
/// one schedule, so [`add`](Self::add) is O(log n), [`poll`](Self::poll) visits only
/// the shards that are due, and [`next_ready_at`](Self::next_ready_at) is O(1),
/// however many shards the stream has.
pub struct Limiter<K, T> {
    config: LimiterConfig,
    index: HashMap<K, usize>,
    shards: Vec<Shard<K, T>>,
    /// (wake time, shard index); entries whose time is no longer the shard's
    /// `wake` are stale and skipped.
    schedule: BinaryHeap<Reverse<(Instant, usize)>>,
    queued: usize,
    next_seq: u64,
}

impl<K, T> std::fmt::Debug for Limiter<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("config", &self.config)
            .field("shards", &self.shards.len())
            .field("queued", &self.queued)
            .finish()
    }
}

impl<K: Hash + Eq + Clone, T: LimitItem> Limiter<K, T> {
    /// An empty limiter.
    pub fn new(config: LimiterConfig) -> Self {
        Self {
            config,
            index: HashMap::new(),
            shards: Vec::new(),
            schedule: BinaryHeap::new(),
            queued: 0,
            next_seq: 0,
        }
    }

    /// Number of items waiting.
    pub fn len(&self) -> usize {
        self.queued
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// The index of `shard`'s state, made on first use. A shard's state is kept for
    /// the limiter's life: forgetting a spent bucket would hand out a second burst.
    fn shard_index(&mut self, shard: &K, now: Instant) -> usize {
        if let Some(&i) = self.index.get(shard) {
            return i;
        }
        let i = self.shards.len();
        self.shards.push(Shard {
            key: shard.clone(),
            bucket: TokenBucket::new(self.config.shard_rates(), now),
            factor_ppm: Feedback::FULL_PPM,
            last_decrease: None,
            last_adjust: now,
            by_deadline: BTreeMap::new(),
            by_expiration: BTreeMap::new(),
            wake: None,
        });
        self.index.insert(shard.clone(), i);
        i
    }

    /// Recomputes shard `i`'s next event and schedules it if it changed.
    fn reschedule(&mut self, i: usize, now: Instant) {
        let shard = &mut self.shards[i];
        let wake = shard.next_event(now);
        if wake != shard.wake {
            shard.wake = wake;
            if let Some(at) = wake {
                self.schedule.push(Reverse((at, i)));
            }
        }
    }

    /// Queues `item` for `shard`. Call [`poll`](Self::poll) to release what can go.
    pub fn add(&mut self, shard: K, item: T, now: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (deadline, expiration) = (item.deadline(), item.expiration());
        let i = self.shard_index(&shard, now);
        let s = &mut self.shards[i];
        s.by_expiration.insert((expiration, seq), deadline);
        s.by_deadline.insert((deadline, seq), item);
        self.queued += 1;
        self.reschedule(i, now);
    }

    /// Releases what can leave at `now`: in each due shard, first every item past its
    /// expiration, then, in deadline order, every item whose tokens are there (a head
    /// that must wait holds back its shard's queue).
    pub fn poll(&mut self, now: Instant) -> Vec<Release<K, T>> {
        let mut out = Vec::new();
        while let Some(&Reverse((at, i))) = self.schedule.peek() {
            if at > now {
                break;
            }
            self.schedule.pop();
            if self.shards[i].wake != Some(at) {
                continue; // stale
            }
            self.shards[i].wake = None;
            self.release(i, now, &mut out);
            self.reschedule(i, now);
        }
        self.queued -= out.len();
        out
    }

    fn release(&mut self, i: usize, now: Instant, out: &mut Vec<Release<K, T>>) {
        let shard = &mut self.shards[i];
        while let Some((&(expiration, seq), &deadline)) = shard.by_expiration.first_key_value() {
            if expiration > now {
                break;
            }
            shard.by_expiration.remove(&(expiration, seq));
            if let Some(item) = shard.by_deadline.remove(&(deadline, seq)) {
                out.push(Release::Expired {
                    shard: shard.key.clone(),
                    item,
                });
            }
        }
        while let Some(entry) = shard.by_deadline.first_entry() {
            if !shard.bucket.try_take([1, entry.get().bytes()], now) {
                break;
            }
            let (_, seq) = *entry.key();
            let item = entry.remove();
            shard.by_expiration.remove(&(item.expiration(), seq));
            out.push(Release::Ready {
                shard: shard.key.clone(),
                item,
            });
        }
    }

    /// When [`poll`](Self::poll) will next release something (an item's tokens are
    /// there, or its expiration passes), if nothing else changes; `None` when empty.
    /// It may be early (a shard's plans changed since), never late.
    pub fn next_ready_at(&self, _now: Instant) -> Option<Instant> {
        self.schedule.peek().map(|&Reverse((at, _))| at)
    }

    /// A put to `shard` was throttled: slow the shard down (see [`Feedback`]).
    pub fn on_throttled(&mut self, shard: &K, now: Instant) {
        let full = self.config.shard_rates();
        let i = self.shard_index(shard, now);
        let s = &mut self.shards[i];
        if s.last_decrease
            .is_some_and(|t| now.saturating_duration_since(t) < Feedback::DECREASE_INTERVAL)
        {
            return;
        }
        s.factor_ppm = (s.factor_ppm * Feedback::DECREASE_PERCENT / 100).max(Feedback::FLOOR_PPM);
        s.last_decrease = Some(now);
        s.last_adjust = now;
        s.apply_factor(full, now);
        self.reschedule(i, now);
    }

    /// A put to `shard` succeeded: let a slowed shard recover (see [`Feedback`]).
    pub fn on_success(&mut self, shard: &K, now: Instant) {
        let full = self.config.shard_rates();
        let Some(&i) = self.index.get(shard) else {
            return;
        };
        let s = &mut self.shards[i];
        if s.factor_ppm >= Feedback::FULL_PPM {
            s.last_adjust = now;
            return;
        }
        let elapsed = now.saturating_duration_since(s.last_adjust);
        let gain = (elapsed.as_micros() as u64).saturating_mul(Feedback::RECOVERY_PPM_PER_SECOND)
            / 1_000_000;
        if gain == 0 {
            return;
        }
        s.factor_ppm = (s.factor_ppm + gain).min(Feedback::FULL_PPM);
        s.last_adjust = now;
        s.apply_factor(full, now);
        self.reschedule(i, now);
    }

    /// The current rates of `shard` (records/s, bytes/s).
    pub fn shard_rates(&self, shard: &K) -> [u64; 2] {
        self.index
            .get(shard)
            .map_or(self.config.shard_rates(), |&i| {
                self.shards[i].bucket.rates()
            })
    }

    /// Removes and returns the items waiting for one shard, in deadline order (the
    /// shard's tokens and feedback stay).
    pub fn drain_shard(&mut self, shard: &K) -> Vec<T> {
        let Some(&i) = self.index.get(shard) else {
            return Vec::new();
        };
        let s = &mut self.shards[i];
        s.by_expiration.clear();
        s.wake = None;
        let items: Vec<T> = std::mem::take(&mut s.by_deadline).into_values().collect();
        self.queued -= items.len();
        items
    }

    /// Removes and returns every waiting item, for a shutdown.
    pub fn drain(&mut self) -> Vec<(K, T)> {
        let mut out = Vec::new();
        for shard in self.shards.iter_mut() {
            shard.by_expiration.clear();
            shard.wake = None;
            for item in std::mem::take(&mut shard.by_deadline).into_values() {
                out.push((shard.key.clone(), item));
            }
        }
        self.schedule.clear();
        self.queued = 0;
        out
    }
}

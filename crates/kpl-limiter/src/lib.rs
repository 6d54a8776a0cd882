//! Rolling windows, token buckets, the per-shard limiter and the congestion window,
//! sans-IO.
//!
//! Kinesis takes at most 1,000 records and 1 MiB within any second per shard. The
//! [`Limiter`] holds each shard's outgoing Kinesis records back by the same rule (a
//! [`RollingWindow`] of one second), so that a producer uses what a shard takes
//! without being throttled: a token bucket, as in the KPL, lets a second's burst out
//! on top of its rate and overshoots the shard's second. `rate_limit` percent
//! (default 150, the KPL's) is the most the limiter ever lets a shard take; it starts
//! at the shard's limit and goes over it only while the shard takes more (see
//! [`Feedback`]).
//!
//! - Items wait per shard in deadline order; an item past its expiration leaves first,
//!   without taking room, so the caller can fail it as expired.
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
//! use kpl_limiter::{LimitItem, Limiter, LimiterConfig};
//!
//! struct Rec { bytes: u64, deadline: Instant, expiration: Instant }
//! impl LimitItem for Rec {
//!     fn bytes(&self) -> u64 { self.bytes }
//!     fn deadline(&self) -> Instant { self.deadline }
//!     fn expiration(&self) -> Instant { self.expiration }
//! }
//!
//! let t0 = Instant::now();
//! // 100 % of what Kinesis lets a shard take within a second: 1,000 records, 1 MiB.
//! let mut limiter = Limiter::new(LimiterConfig::new(100, [1000, 1 << 20]));
//! for _ in 0..1001 {
//!     let rec = Rec { bytes: 10, deadline: t0, expiration: t0 + Duration::from_secs(30) };
//!     limiter.add("shardId-000000000000", rec, t0);
//! }
//! let mut released = limiter.poll(t0).len();
//! assert_eq!(released, 20); // room is spread over the second: 20 ms at once
//! let mut now = t0;
//! while released < 1000 {
//!     now = limiter.next_ready_at(now).unwrap();
//!     released += limiter.poll(now).len();
//! }
//! assert!(now < t0 + Duration::from_secs(1)); // what the shard takes within a second
//! // The 1,001st waits until the first leaves the shard's window.
//! assert_eq!(limiter.next_ready_at(now), Some(t0 + kpl_limiter::WINDOW_SPAN));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod bucket;
mod rolling;
mod window;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

pub use bucket::TokenBucket;
pub use rolling::RollingWindow;
pub use window::{Answer, CongestionWindow, LATENCY_SLACK, QUEUE_SLACK, Ticket, WindowConfig};

/// How much of a shard's second the limiter lets out at once. Room in the window is
/// spread over the second, so that what leaves together and is delayed unevenly on
/// its way (batching, the congestion window) still reaches the shard within its
/// second: a full second let out at once and the next second's let out on time can
/// meet in one second of the shard's.
pub const PACE_BURST: Duration = Duration::from_millis(20);

/// The span of a shard's window: the service's second, and a margin for what leaves
/// together but reaches the shard at different times.
pub const WINDOW_SPAN: Duration = Duration::from_millis(1_020);

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
    shard_limits: [u64; 2],
}

impl LimiterConfig {
    /// Each shard may take `rate_limit_percent` percent (the KPL's `RateLimit`; at
    /// least 1) of `shard_limits`: what the service lets one shard take within a
    /// second, records and bytes (for Kinesis, `kpl_codec::SHARD_RECORDS_PER_SECOND`
    /// and `kpl_codec::SHARD_BYTES_PER_SECOND`; the limiter keeps no service facts of
    /// its own).
    pub fn new(rate_limit_percent: u64, shard_limits: [u64; 2]) -> Self {
        Self {
            rate_limit_percent: rate_limit_percent.max(1),
            shard_limits: shard_limits.map(|l| l.max(1)),
        }
    }

    /// The configured percent.
    pub fn rate_limit_percent(&self) -> u64 {
        self.rate_limit_percent
    }

    /// What the service lets one shard take within a second (records, bytes).
    pub fn shard_limits(&self) -> [u64; 2] {
        self.shard_limits
    }

    /// Records and bytes per second one shard may take at most (the ceiling).
    pub fn shard_rates(&self) -> [u64; 2] {
        self.shard_limits
            .map(|l| (u128::from(l) * u128::from(self.rate_limit_percent) / 100) as u64)
    }
}

/// How throttle reports move what a shard is let take within a second (kept in parts
/// per million of the service's shard limits).
///
/// - A shard starts at the service's limit (or the configured rate when that is
///   lower).
/// - A throttle report takes a tenth off ([`Feedback::DECREASE_PERCENT`]), at most
///   once per [`Feedback::DECREASE_INTERVAL`] (one second, the span the service
///   counts over: every record throttled for one overshoot is one signal), never
///   below [`Feedback::FLOOR_PPM`] (1/16 of the configured rate).
/// - While puts to the shard succeed, it climbs back by
///   [`Feedback::RECOVERY_PPM_PER_SECOND`] (3 % of the configured rate per second
///   of successes), up to the configured rate: a shard that takes more than its
///   nominal limit is found, and one that does not throttles about once every
///   three seconds, a few hundredths of a second's writes each time.
#[derive(Debug)]
#[non_exhaustive]
pub struct Feedback;

impl Feedback {
    /// Percent of the current rate kept after a throttle report.
    pub const DECREASE_PERCENT: u64 = 95;
    /// Reports closer together than this count once.
    pub const DECREASE_INTERVAL: Duration = Duration::from_secs(1);
    /// The lowest rate, in parts per million of the configured rate.
    pub const FLOOR_PPM: u64 = 1_000_000 / 16;
    /// Recovery per second of successes, in parts per million of the configured rate.
    pub const RECOVERY_PPM_PER_SECOND: u64 = 10_000;
    /// The whole of a rate (the configured one, or the service's limit).
    pub const FULL_PPM: u64 = 1_000_000;

    /// The configured rate, in parts per million of the service's limit.
    fn ceiling(config: &LimiterConfig) -> u64 {
        config
            .rate_limit_percent()
            .saturating_mul(Self::FULL_PPM / 100)
    }

    /// Where a shard starts, in parts per million of the service's limit: the
    /// limit, or the configured rate when that is lower.
    fn start(config: &LimiterConfig) -> u64 {
        Self::ceiling(config).min(Self::FULL_PPM)
    }

    /// What a shard at `ppm` of the service's `limits` may take within a second.
    fn caps(limits: [u64; 2], ppm: u64) -> [u64; 2] {
        limits.map(|limit| (u128::from(limit) * u128::from(ppm) / 1_000_000).max(1) as u64)
    }
}

/// An item leaving the limiter.
#[derive(Debug, PartialEq, Eq)]
pub enum Release<K, T> {
    /// It fits the shard's window (and is counted in it): send it.
    Ready {
        /// Its shard.
        shard: K,
        /// The item.
        item: T,
    },
    /// Its expiration passed while it waited; it was not counted.
    Expired {
        /// Its shard.
        shard: K,
        /// The item.
        item: T,
    },
}

struct Shard<K, T> {
    key: K,
    window: RollingWindow<2>,
    /// Spreads the window's room over the second (see [`PACE_BURST`]).
    pace: TokenBucket<2>,
    /// Parts per million of the service's shard limits.
    factor_ppm: u64,
    last_decrease: Option<Instant>,
    last_adjust: Instant,
    by_deadline: BTreeMap<(Instant, u64), T>,
    by_expiration: BTreeMap<(Instant, u64), Instant>,
    /// When this shard next has something to release, as last scheduled.
    wake: Option<Instant>,
}

impl<K, T: LimitItem> Shard<K, T> {
    /// When the head fits the window or the earliest expiration passes.
    fn next_event(&self, now: Instant) -> Option<Instant> {
        let head = self
            .by_deadline
            .first_key_value()
            .map(|(_, item)| self.ready_at([1, item.bytes()], now));
        let expiry = self.by_expiration.first_key_value().map(|(&(e, _), _)| e);
        match (head, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn apply_factor(&mut self, limits: [u64; 2], now: Instant) {
        let caps = Feedback::caps(limits, self.factor_ppm);
        self.window.set_caps(caps);
        self.pace.set_rates(caps, now);
    }

    /// When `amounts` fit both the window and the pace.
    fn ready_at(&self, amounts: [u64; 2], now: Instant) -> Instant {
        self.window
            .ready_at(amounts, now)
            .max(self.pace.ready_at(amounts, now))
    }
}

/// The per-shard limiter. `K` names a shard (a shard id); `T` is the item.
///
/// Each shard's next event (its head fits its window, or an item expires) is kept in
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
    /// the limiter's life: forgetting a full window would let a second one through.
    fn shard_index(&mut self, shard: &K, now: Instant) -> usize {
        if let Some(&i) = self.index.get(shard) {
            return i;
        }
        let i = self.shards.len();
        let factor_ppm = Feedback::start(&self.config);
        let caps = Feedback::caps(self.config.shard_limits(), factor_ppm);
        let window = RollingWindow::new(caps, WINDOW_SPAN);
        let pace = TokenBucket::with_burst(caps, PACE_BURST, now);
        self.shards.push(Shard {
            key: shard.clone(),
            window,
            pace,
            factor_ppm,
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
    /// expiration, then, in deadline order, every item that fits the window (a head
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
        while let Some((&key, item)) = shard.by_deadline.first_key_value() {
            let amounts = [1, item.bytes()];
            if shard.ready_at(amounts, now) > now {
                break;
            }
            shard.window.try_take(amounts, now);
            shard.pace.try_take(amounts, now);
            let (_, seq) = key;
            let Some(item) = shard.by_deadline.remove(&key) else {
                break;
            };
            shard.by_expiration.remove(&(item.expiration(), seq));
            out.push(Release::Ready {
                shard: shard.key.clone(),
                item,
            });
        }
    }

    /// When [`poll`](Self::poll) will next release something (an item fits its window
    /// there, or its expiration passes), if nothing else changes; `None` when empty.
    /// It may be early (a shard's plans changed since), never late.
    pub fn next_ready_at(&self, _now: Instant) -> Option<Instant> {
        self.schedule.peek().map(|&Reverse((at, _))| at)
    }

    /// An item released for `shard` at `released_at` (of `bytes`) is being sent at
    /// `now`: it counts in the shard's window from now on, when the shard sees it, so
    /// that items that waited to be sent (batching, a congestion window) do not meet
    /// items released after them within one of the shard's seconds.
    pub fn on_sent(&mut self, shard: &K, released_at: Instant, bytes: u64, now: Instant) {
        let Some(&i) = self.index.get(shard) else {
            return;
        };
        if released_at >= now {
            return;
        }
        self.shards[i].window.restamp(released_at, [1, bytes], now);
        self.reschedule(i, now);
    }

    /// A put to `shard` was throttled: slow the shard down (see [`Feedback`]).
    pub fn on_throttled(&mut self, shard: &K, now: Instant) {
        let ceiling = Feedback::ceiling(&self.config);
        let limits = self.config.shard_limits();
        let i = self.shard_index(shard, now);
        let s = &mut self.shards[i];
        if s.last_decrease
            .is_some_and(|t| now.saturating_duration_since(t) < Feedback::DECREASE_INTERVAL)
        {
            return;
        }
        let floor = ceiling * Feedback::FLOOR_PPM / Feedback::FULL_PPM;
        s.factor_ppm = (s.factor_ppm * Feedback::DECREASE_PERCENT / 100).max(floor);
        s.last_decrease = Some(now);
        s.last_adjust = now;
        s.apply_factor(limits, now);
        self.reschedule(i, now);
    }

    /// A put to `shard` succeeded: let a slowed shard recover, or probe above the
    /// service's limit up to the configured rate (see [`Feedback`]).
    pub fn on_success(&mut self, shard: &K, now: Instant) {
        let ceiling = Feedback::ceiling(&self.config);
        let limits = self.config.shard_limits();
        let Some(&i) = self.index.get(shard) else {
            return;
        };
        let s = &mut self.shards[i];
        if s.factor_ppm >= ceiling {
            s.last_adjust = now;
            return;
        }
        let elapsed = now.saturating_duration_since(s.last_adjust);
        let per_second = ceiling * Feedback::RECOVERY_PPM_PER_SECOND / Feedback::FULL_PPM;
        let gain =
            u64::try_from(elapsed.as_micros().saturating_mul(u128::from(per_second)) / 1_000_000)
                .unwrap_or(u64::MAX);
        if gain == 0 {
            return;
        }
        s.factor_ppm = s.factor_ppm.saturating_add(gain).min(ceiling);
        s.last_adjust = now;
        s.apply_factor(limits, now);
        self.reschedule(i, now);
    }

    /// What `shard` may take within a second now (records, bytes).
    pub fn shard_rates(&self, shard: &K) -> [u64; 2] {
        self.index.get(shard).map_or_else(
            || Feedback::caps(self.config.shard_limits(), Feedback::start(&self.config)),
            |&i| self.shards[i].window.caps(),
        )
    }

    /// Removes and returns the items waiting for one shard, in deadline order (the
    /// shard's window and feedback stay).
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

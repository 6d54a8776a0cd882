//! Ordered mode ([`Config::ordered`]): records of one partition key (or explicit
//! hash key) are stored in the order they were put, as a KCL consumer reads them.
//!
//! Rules ([`Ordered`]):
//! - each shard's records wait in one queue, in put order; a record that comes back
//!   (a retry, a record taken out of an expired aggregate, one stored outside its
//!   shard's range) goes to the head of its shard's queue, by put order, ahead of
//!   every record not sent yet;
//! - a shard's queue is made into a Kinesis record (one aggregate, up to the
//!   record limit, or one record alone) only while no Kinesis record of a hash
//!   range overlapping the shard's is anywhere past this stage: in the limiter, in
//!   a request, in flight, in backoff, or stored and waiting for a map. That is a
//!   [`Lock`]: its token is held by the Kinesis record and, once that is taken
//!   apart, by each of its user records, and dropped when the last of them settles
//!   or is back in a queue. So a parent shard's record still out holds back its
//!   children's (a split), and two parents' hold back their child's (a merge);
//! - records whose shard is not known (no map yet, or their shard was found split)
//!   wait for the map, never sent raw around it; when a map comes, records stored
//!   on shards it did not know are placed first, then the queues of shards that
//!   closed move to their children, then those that waited for the map;
//! - nothing is ever sent alongside an older record of its range, so PutRecords,
//!   which does not promise order inside a request, carries at most one Kinesis
//!   record per range.
//!
//! [`Config::ordered`]: crate::Config::ordered

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kpl_codec::{
    AGGREGATE_OVERHEAD, AGGREGATED_PARTITION_KEY, DEFAULT_MAX_RECORD_SIZE, aggregate_growth_bound,
};
use kpl_reducer::Item;
use kpl_shardmap::ShardId;

use super::record::Rec;
use crate::config::Config;
use crate::fasthash::{FastMap, FastSet};

/// A hash range's turn: held while a Kinesis record of the range (or one of its
/// user records) is past the queues. Cloned into each holder; the range is free
/// when only the table's copy is left.
#[derive(Clone, Debug, Default)]
pub(super) struct Lock(Arc<()>);

impl Lock {
    /// Whether anything besides the one asking holds it.
    fn is_held(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }
}

/// A lock taken, with the range it was taken for.
struct Taken {
    lock: Lock,
    lo: u128,
    hi: u128,
}

/// One shard's records waiting, in put order (records that came back first).
struct Queue {
    shard: ShardId,
    recs: VecDeque<Rec>,
    /// Records at the head that came back (sorted by put order).
    returned: usize,
    /// The sum of its records' aggregate bounds.
    bytes: usize,
    /// The lock of its last Kinesis record, under the current map.
    lock: Option<Taken>,
}

impl Queue {
    fn push(&mut self, rec: Rec, returned: bool) {
        self.bytes += rec.size();
        if returned {
            // Among the records that came back, by put order (ids grow with it).
            let id = rec.id();
            let at = self
                .recs
                .range(..self.returned)
                .position(|r| r.id() > id)
                .unwrap_or(self.returned);
            self.recs.insert(at, rec);
            self.returned += 1;
        } else {
            self.recs.push_back(rec);
        }
    }
}

/// What [`Ordered::poll`] found: a shard's batch to make one Kinesis record of,
/// with the lock its record must hold.
pub(super) struct Turn {
    pub(super) shard: ShardId,
    pub(super) batch: Vec<Rec>,
    pub(super) lock: Lock,
}

/// The queues of ordered mode and the locks of the ranges out (see the module's
/// rules).
pub(super) struct Ordered {
    slots: FastMap<ShardId, usize>,
    queues: Vec<Queue>,
    /// Slots whose queue is not empty.
    busy: Vec<usize>,
    /// Records whose shard is not known, in put order (those that came back first).
    unknown: Queue,
    /// Locks taken under maps before the current one, still held: they hold back
    /// every shard whose range overlaps theirs.
    old: Vec<Taken>,
    max_count: usize,
    max_size: usize,
}

impl Ordered {
    /// Queues under `config`'s limits: an aggregate holds up to
    /// `aggregation_max_count` records and up to the record limit (the whole
    /// Kinesis record, not `aggregation_max_size`: one record in flight per shard
    /// must carry what a shard takes in a round trip); one record each when
    /// aggregation is off.
    pub(super) fn new(config: &Config) -> Self {
        let (max_count, max_size) = if config.aggregation_enabled {
            (
                usize::try_from(config.aggregation_max_count).unwrap_or(usize::MAX),
                ordered_aggregate_size(),
            )
        } else {
            (1, usize::MAX)
        };
        Self {
            slots: FastMap::default(),
            queues: Vec::new(),
            busy: Vec::new(),
            unknown: Queue {
                shard: ShardId::from(""),
                recs: VecDeque::new(),
                returned: 0,
                bytes: 0,
                lock: None,
            },
            old: Vec::new(),
            max_count,
            max_size,
        }
    }

    /// Queues `rec` for `shard`: at the head if it came back (it holds a lock,
    /// dropped here), else at the tail.
    pub(super) fn push(&mut self, shard: &ShardId, mut rec: Rec) {
        let slot = match self.slots.get(shard) {
            Some(&slot) => slot,
            None => {
                let slot = self.queues.len();
                self.queues.push(Queue {
                    shard: shard.clone(),
                    recs: VecDeque::new(),
                    returned: 0,
                    bytes: 0,
                    lock: None,
                });
                self.slots.insert(shard.clone(), slot);
                slot
            }
        };
        let returned = rec.take_lock().is_some();
        let queue = &mut self.queues[slot];
        if queue.recs.is_empty() {
            self.busy.push(slot);
        }
        queue.push(rec, returned);
    }

    /// Queues `rec`, whose shard is not known, until the map comes; a record that
    /// came back keeps its lock meanwhile (its range stays held).
    pub(super) fn push_unknown(&mut self, rec: Rec) {
        let returned = rec.lock().is_some();
        self.unknown.push(rec, returned);
    }

    /// Every record waiting for the map, those that came back first (still holding
    /// their locks, so they go to the heads of their shards' queues).
    pub(super) fn take_unknown(&mut self) -> Vec<Rec> {
        self.unknown.returned = 0;
        self.unknown.bytes = 0;
        self.unknown.recs.drain(..).collect()
    }

    /// The records waiting for the map past their expiration at `now`.
    pub(super) fn take_expired_unknown(&mut self, now: Instant) -> Vec<Rec> {
        if !self.unknown.recs.iter().any(|r| r.expiration <= now) {
            return Vec::new();
        }
        let (expired, kept): (Vec<Rec>, Vec<Rec>) = self
            .unknown
            .recs
            .drain(..)
            .partition(|r| r.expiration <= now);
        let returned = kept.iter().filter(|r| r.lock().is_some()).count();
        self.unknown.bytes = kept.iter().map(Item::size).sum();
        self.unknown.recs = kept.into();
        self.unknown.returned = returned;
        expired
    }

    /// The records past their expiration at `now`, wherever they wait: a queue
    /// held back for long (its range held, its shard a suspect with no new map
    /// coming) does not keep them past their time. A queue is in put order after
    /// its heads, so only the heads and the first record after them are looked at.
    pub(super) fn take_expired(&mut self, now: Instant) -> Vec<Rec> {
        let mut expired = Vec::new();
        for &slot in &self.busy {
            let q = &mut self.queues[slot];
            let mut i = 0;
            while i <= q.returned {
                match q.recs.get(i) {
                    Some(r) if r.expiration <= now => {
                        if let Some(r) = q.recs.remove(i) {
                            q.bytes -= r.size();
                            if i < q.returned {
                                q.returned -= 1;
                            }
                            expired.push(r);
                        }
                    }
                    Some(_) => i += 1,
                    None => break,
                }
            }
        }
        if !expired.is_empty() {
            self.busy.retain(|&slot| !self.queues[slot].recs.is_empty());
        }
        expired
    }

    /// The earliest expiration of a record in a queue (see
    /// [`take_expired`](Self::take_expired)).
    fn earliest_expiration(&self) -> Option<Instant> {
        self.busy
            .iter()
            .flat_map(|&slot| {
                let q = &self.queues[slot];
                q.recs.range(..(q.returned + 1).min(q.recs.len()))
            })
            .map(|r| r.expiration)
            .min()
    }

    /// A new map: the locks taken so far count by their ranges from now on, and
    /// the records of shards it does not have open come out (in put order, to be
    /// queued again by the new map).
    pub(super) fn map_changed(&mut self, is_open: impl Fn(&ShardId) -> bool) -> Vec<Rec> {
        for q in &mut self.queues {
            if let Some(taken) = q.lock.take()
                && taken.lock.is_held()
            {
                self.old.push(taken);
            }
        }
        let mut moved = Vec::new();
        for q in &mut self.queues {
            if !q.recs.is_empty() && !is_open(&q.shard) {
                q.returned = 0;
                q.bytes = 0;
                moved.extend(q.recs.drain(..));
            }
        }
        self.busy.retain(|&slot| !self.queues[slot].recs.is_empty());
        moved
    }

    /// Whether a lock of a range overlapping `lo..=hi` is held (an old one, or the
    /// queue's own).
    fn held(&mut self, slot: usize, (lo, hi): (u128, u128)) -> bool {
        if self.queues[slot]
            .lock
            .as_ref()
            .is_some_and(|t| t.lock.is_held())
        {
            return true;
        }
        self.old.retain(|t| t.lock.is_held());
        self.old.iter().any(|t| t.lo <= hi && lo <= t.hi)
    }

    /// The next shard whose queue can go at `now`: its range is free, it is not a
    /// suspect (`range` answers `None`), and its first record's deadline passed or
    /// its queue fills a Kinesis record (or `all`). Its batch: records from the head
    /// up to one Kinesis record's worth.
    pub(super) fn poll(
        &mut self,
        now: Instant,
        all: bool,
        range: impl Fn(&ShardId) -> Option<(u128, u128)>,
    ) -> Option<Turn> {
        let mut i = 0;
        while i < self.busy.len() {
            let slot = self.busy[i];
            i += 1;
            let due = {
                let q = &self.queues[slot];
                all || q.recs.front().is_some_and(|r| r.deadline <= now) || self.full(q)
            };
            if !due {
                continue;
            }
            let Some(span) = range(&self.queues[slot].shard) else {
                continue;
            };
            if self.held(slot, span) {
                continue;
            }
            let lock = Lock::default();
            let (max_count, max_size) = (self.max_count, self.max_size);
            let q = &mut self.queues[slot];
            let mut batch = Vec::new();
            // What the records add to the aggregate: their bounds, less the key table
            // entry of a key already in it (an aggregate of a few keys is then filled
            // to the limit, not to the bounds' 80 %).
            let (mut bounds, mut size) = (0, 0);
            let mut keys: FastSet<Bytes> = FastSet::default();
            while let Some(r) = q.recs.front() {
                let bound = r.size();
                let s = if keys.contains(r.key_bytes()) {
                    aggregate_growth_bound(0, r.data().len(), r.explicit())
                } else {
                    bound
                };
                if !batch.is_empty() && (batch.len() >= max_count || size + s > max_size) {
                    break;
                }
                if s == bound {
                    keys.insert(r.key_buffer());
                }
                size += s;
                bounds += bound;
                batch.extend(q.recs.pop_front());
            }
            q.bytes -= bounds;
            q.returned = q.returned.saturating_sub(batch.len());
            q.lock = Some(Taken {
                lock: lock.clone(),
                lo: span.0,
                hi: span.1,
            });
            if q.recs.is_empty() {
                i -= 1;
                self.busy.swap_remove(i);
            }
            return Some(Turn {
                shard: q.shard.clone(),
                batch,
                lock,
            });
        }
        None
    }

    fn full(&self, q: &Queue) -> bool {
        q.recs.len() >= self.max_count || q.bytes >= self.max_size
    }

    /// When a queue is next due (its first record's deadline; `now` when one is
    /// full), among those whose range is free; the earliest expiration of the
    /// records waiting for the map.
    pub(super) fn next_deadline(
        &self,
        now: Instant,
        range: impl Fn(&ShardId) -> Option<(u128, u128)>,
    ) -> Option<Instant> {
        let free = |slot: usize| {
            let q = &self.queues[slot];
            let Some((lo, hi)) = range(&q.shard) else {
                return false;
            };
            !q.lock.as_ref().is_some_and(|t| t.lock.is_held())
                && !self
                    .old
                    .iter()
                    .any(|t| t.lock.is_held() && t.lo <= hi && lo <= t.hi)
        };
        let queues = self
            .busy
            .iter()
            .filter(|&&slot| free(slot))
            .filter_map(|&slot| {
                let q = &self.queues[slot];
                if self.full(q) {
                    Some(now)
                } else {
                    q.recs.front().map(|r| r.deadline)
                }
            });
        let unknown = self.unknown.recs.iter().map(|r| r.expiration).min();
        queues
            .chain(unknown)
            .chain(self.earliest_expiration())
            .min()
    }

    /// Whether no record waits.
    pub(super) fn is_empty(&self) -> bool {
        self.busy.is_empty() && self.unknown.recs.is_empty()
    }

    /// Whether a record waits for the map.
    pub(super) fn has_unknown(&self) -> bool {
        !self.unknown.recs.is_empty()
    }

    /// Takes every record out.
    pub(super) fn drain(&mut self) -> Vec<Rec> {
        let mut all: Vec<Rec> = Vec::new();
        for slot in self.busy.drain(..) {
            let q = &mut self.queues[slot];
            q.returned = 0;
            q.bytes = 0;
            all.extend(q.recs.drain(..));
        }
        all.extend(self.take_unknown());
        all
    }
}

/// The largest aggregate of ordered mode: a whole Kinesis record (data plus its
/// partition key) at the default record limit.
pub(super) fn ordered_aggregate_size() -> usize {
    DEFAULT_MAX_RECORD_SIZE - AGGREGATE_OVERHEAD - AGGREGATED_PARTITION_KEY.len()
}

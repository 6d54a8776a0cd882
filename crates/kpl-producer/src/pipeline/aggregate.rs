//! Per-shard aggregation: records of one shard are batched by deadline and packed
//! into one Kinesis record ([`Aggregation`]); the pipeline routes each record by the
//! map, and while the stream reshards, big aggregates are cut at their shard's
//! midpoint. The records wait in one slab ([`Slab`]); the queues and batches hold
//! their keys.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use kpl_codec::{
    AGGREGATE_OVERHEAD, AGGREGATED_PARTITION_KEY, AggregateEncoder, HashKey,
    MAX_RECORD_SIZE_CEILING, RecordParts,
};
use kpl_reducer::{Item, Policy, Reducer};
use kpl_shardmap::ShardId;
use tracing::debug;

use super::assemble::Admission;
use super::ordered::Ordered;
use super::record::{
    Contents, KRec, Member, Payload, Rec, add_capped, aggregator_deadline, collector_share,
    take_out,
};
use super::shards::Place;
use super::slab::{Held, Key, Slab, missing};
use super::{SUSPECT_WAIT, StreamPipeline};
use crate::config::Config;
use crate::fasthash::FastMap;
use crate::result::codes;

/// One shard's records waiting to be aggregated.
struct Batch {
    shard: ShardId,
    reducer: Reducer<Held>,
    /// The deadline it is scheduled at (its reducer's next deadline).
    scheduled: Option<Instant>,
}

/// Sets of [`Aggregation`]'s cache of shards looked up lately (two entries each):
/// a power of two, as the set is the top bits of a hash.
const RECENT_SETS: usize = 32;
const _: () = assert!(RECENT_SETS.is_power_of_two() && RECENT_SETS > 1);
/// The user records waiting to be aggregated, per shard, and the making of
/// Kinesis records of them.
///
/// Rules: a shard keeps its slot while the aggregation lives; the records of a put
/// stay in the put's own vector, adopted whole by the slab
/// ([`adopt`](Self::adopt)): a record is not moved when it is taken in, and only
/// its handle is added to its slot's queue ([`queue`](Self::queue), the hot path),
/// then the slot is rescheduled, so each batch is scheduled at its next deadline
/// and polling costs what is due, not what is held; a closed batch is a vector of
/// handles, and the record leaves the slab when its batch is sealed
/// ([`seal`](Self::seal): its member is moved out, its key and data let go of), or
/// whole when it leaves the stage another way (expired, taken out for a reshard,
/// drained); a shard's batch closes at `aggregation_max_count` records, at
/// `aggregation_max_size` bytes of aggregate, or at its first record's deadline;
/// records whose shard is unknown are never aggregated with others; a batch of one
/// record goes raw, under its own key; an aggregate goes under
/// [`AGGREGATED_PARTITION_KEY`] routed by its first record's hash key, with the
/// earliest deadline of its records plus the collector's share of the buffering
/// time, never past the earliest expiration.
pub(super) struct Aggregation {
    /// Each shard's slot in `batches`.
    slots: FastMap<ShardId, usize>,
    /// Shards looked up lately, by handle (two ways per set, the later inserted
    /// first): a record's shard is found without hashing its id. The set is a hash
    /// of the handle, so where the allocator put the ids rarely matters (only when
    /// three meet in one set), and two ways keep two shards whose handles meet in
    /// one set from taking turns. An entry holds a clone of its handle, so the
    /// handle is not reused while it is there.
    recent: [[Option<(ShardId, usize)>; 2]; RECENT_SETS],
    /// Each shard's batch, by slot.
    batches: Vec<Batch>,
    /// (deadline, slot) of the shards' batches (an entry may be stale: the shard's
    /// batch closed earlier).
    schedule: BinaryHeap<Reverse<(Instant, usize)>>,
    policy: Policy,
    /// Records whose shard is not known (or was found split): each goes alone.
    unknown: Reducer<Held>,
    /// The records the queues and batches hold the keys of: each put's vector,
    /// adopted whole.
    records: Slab<Rec>,
    encoder: AggregateEncoder,
    /// What a Kinesis record's deadline gains over its records' (the collector's share).
    extension: Duration,
    /// In ordered mode, the shards' queues and their ranges' locks: the records
    /// wait there instead of in `batches`, and `encoder` seals them.
    ordered: Option<Ordered>,
}

impl Aggregation {
    /// Batches by `config`'s aggregation limits (one record each when aggregation
    /// is off).
    pub(super) fn new(config: &Config) -> Self {
        let policy = if config.aggregation_enabled {
            Policy::new(
                usize::try_from(config.aggregation_max_count).unwrap_or(usize::MAX),
                config
                    .aggregation_max_size
                    .saturating_sub(AGGREGATE_OVERHEAD),
            )
        } else {
            Policy::new(1, usize::MAX)
        };
        Self {
            slots: FastMap::default(),
            recent: Default::default(),
            batches: Vec::new(),
            schedule: BinaryHeap::new(),
            policy,
            unknown: Reducer::new(Policy::new(usize::MAX, usize::MAX)),
            records: Slab::default(),
            encoder: AggregateEncoder::new(),
            extension: collector_share(config.record_max_buffered_time),
            ordered: config.ordered.then(|| Ordered::new(config)),
        }
    }

    /// Whether records keep their put order per shard (ordered mode).
    #[inline]
    pub(super) fn is_ordered(&self) -> bool {
        self.ordered.is_some()
    }

    /// The ordered mode's queues, in ordered mode.
    pub(super) fn ordered(&self) -> Option<&Ordered> {
        self.ordered.as_ref()
    }

    /// The slot of `shard`'s batch (made on its first record).
    pub(super) fn slot(&mut self, shard: &ShardId) -> usize {
        // Fibonacci hashing: the top bits of the handle times 2^64 / φ.
        let set = ((shard.handle() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            >> (u64::BITS - RECENT_SETS.trailing_zeros())) as usize;
        for (held, slot) in self.recent[set].iter().flatten() {
            if held.same_handle(shard) {
                return *slot;
            }
        }
        let slot = match self.slots.get(shard) {
            Some(&slot) => slot,
            None => {
                let slot = self.batches.len();
                self.batches.push(Batch {
                    shard: shard.clone(),
                    reducer: Reducer::new(self.policy),
                    scheduled: None,
                });
                self.slots.insert(shard.clone(), slot);
                slot
            }
        };
        let ways = &mut self.recent[set];
        ways[1] = ways[0].take();
        ways[0] = Some((shard.clone(), slot));
        slot
    }

    /// Holds `recs` in the slab where they are (their vector becomes one chunk of
    /// it); returns their keys, in order.
    pub(super) fn adopt(&mut self, recs: Vec<Rec>) -> impl Iterator<Item = Key> + use<> {
        self.records.adopt(recs)
    }

    /// The record under `key`, to change in place.
    #[inline]
    pub(super) fn get_mut(&mut self, key: Key) -> &mut Rec {
        self.records.get_mut(key).unwrap_or_else(|| missing(key))
    }

    /// Adds `held` to the queue of the batch in `slot`; returns the batches that
    /// close because of it (full ones: usually none). Deadlines are left to
    /// [`pop_due`](Self::pop_due): a backlog of late records then closes full
    /// aggregates instead of one per record.
    #[inline]
    pub(super) fn queue(&mut self, slot: usize, held: Held) -> Vec<Vec<Held>> {
        let batches = self.batches[slot].reducer.add_deferred(held);
        self.reschedule(slot);
        batches
    }

    /// Holds `recs` in the slab, in no queue; returns their handles.
    pub(super) fn hold_all(&mut self, recs: Vec<Rec>) -> Vec<Held> {
        let keys = self.records.adopt(recs);
        keys.map(|key| held(key, &self.records[key])).collect()
    }

    /// Takes the record of `held` out of the slab.
    #[inline]
    pub(super) fn take(&mut self, held: Held) -> Rec {
        self.records
            .take(held.key)
            .unwrap_or_else(|| missing(held.key))
    }

    /// Takes the record of `held` out of the slab, keeping only its member (see
    /// [`Rec::take_member`]: a vacant record stays where it was).
    #[inline]
    fn take_member(&mut self, held: Held) -> Member {
        self.records
            .take_with(held.key, Rec::take_member)
            .unwrap_or_else(|| missing(held.key))
    }

    /// Takes the records of `batch` out of the slab, in order.
    fn take_all(&mut self, batch: impl IntoIterator<Item = Held>) -> Vec<Rec> {
        batch.into_iter().map(|h| self.take(h)).collect()
    }

    /// The record of `held`.
    pub(super) fn get(&self, held: &Held) -> &Rec {
        &self.records[held.key]
    }

    /// Schedules the batch in `slot` at its next deadline, if that moved.
    #[inline]
    fn reschedule(&mut self, slot: usize) {
        let batch = &mut self.batches[slot];
        let next = batch.reducer.next_deadline();
        if next != batch.scheduled {
            batch.scheduled = next;
            if let Some(at) = next {
                self.schedule.push(Reverse((at, slot)));
            }
        }
    }

    /// Adds a record whose shard is unknown: those due go alone (usually none).
    pub(super) fn add_unknown(&mut self, held: Held) -> Vec<Vec<Held>> {
        self.unknown.add_deferred(held)
    }

    /// The next shard whose batch is due at `now`, with its batches.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(ShardId, Vec<Vec<Held>>)> {
        while let Some(&Reverse((at, slot))) = self.schedule.peek() {
            if at > now {
                return None;
            }
            self.schedule.pop();
            let Some(batch) = self.batches.get_mut(slot) else {
                continue;
            };
            let batches = batch.reducer.poll_expired(now);
            batch.scheduled = batch.reducer.next_deadline();
            if let Some(next) = batch.scheduled {
                self.schedule.push(Reverse((next, slot)));
            }
            return Some((batch.shard.clone(), batches));
        }
        None
    }

    /// Closes every shard's batch, deadline or not.
    pub(super) fn flush(&mut self) -> Vec<(ShardId, Vec<Vec<Held>>)> {
        self.schedule.clear();
        self.batches
            .iter_mut()
            .map(|b| {
                b.scheduled = None;
                (b.shard.clone(), b.reducer.flush())
            })
            .collect()
    }

    /// The records of unknown shards due at `now`, each alone.
    pub(super) fn poll_unknown(&mut self, now: Instant) -> impl Iterator<Item = Held> + use<> {
        self.unknown.poll_expired(now).into_iter().flatten()
    }

    /// Every record of an unknown shard, deadline or not.
    pub(super) fn flush_unknown(&mut self) -> impl Iterator<Item = Held> + use<> {
        self.unknown.flush().into_iter().flatten()
    }

    /// Whether a record of an unknown shard waits.
    pub(super) fn has_unknown(&self) -> bool {
        !self.unknown.is_empty() || self.ordered.as_ref().is_some_and(Ordered::has_unknown)
    }

    /// Takes `shard`'s records out (the shard was found split or merged); its slot
    /// stays, empty.
    pub(super) fn remove(&mut self, shard: &ShardId) -> Vec<Rec> {
        match self.slots.get(shard) {
            Some(&slot) => {
                let batch = &mut self.batches[slot];
                batch.scheduled = None;
                let held = batch.reducer.flush();
                self.take_all(held.into_iter().flatten())
            }
            None => Vec::new(),
        }
    }

    /// Takes every record out, of every shard and of unknown ones.
    pub(super) fn drain(&mut self) -> Vec<Rec> {
        self.schedule.clear();
        self.slots.clear();
        self.recent = Default::default();
        let mut keys: Vec<Held> = Vec::new();
        for mut b in self.batches.drain(..) {
            keys.extend(b.reducer.flush().into_iter().flatten());
        }
        keys.extend(self.unknown.flush().into_iter().flatten());
        let mut held = self.take_all(keys);
        debug_assert_eq!(
            self.records.len(),
            0,
            "every record held is named by a queue"
        );
        if let Some(ordered) = &mut self.ordered {
            held.extend(ordered.drain());
        }
        held
    }

    /// When the next batch is due.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let shard = self.schedule.peek().map(|Reverse((t, _))| *t);
        shard.into_iter().chain(self.unknown.next_deadline()).min()
    }

    /// The slab of records.
    #[cfg(test)]
    pub(super) fn slab(&self) -> &Slab<Rec> {
        &self.records
    }

    /// Whether it holds no record.
    pub(super) fn is_empty(&self) -> bool {
        self.records.len() == 0 && self.ordered.as_ref().is_none_or(Ordered::is_empty)
    }

    /// The largest aggregate's size (of its records' bounds).
    pub(super) fn max_size(&self) -> usize {
        self.policy.max_size()
    }

    /// Gives `shard`'s aggregator an emptied batch to make its next one in.
    pub(super) fn recycle(&mut self, shard: &ShardId, emptied: Vec<Held>) {
        if let Some(&slot) = self.slots.get(shard) {
            self.batches[slot].reducer.recycle(emptied);
        }
    }

    /// Cuts a batch of at least half the size limit in two at the midpoint of its
    /// shard's range `lo..=hi`; returns the upper half, if both halves have records.
    pub(super) fn cut_at_midpoint(
        &self,
        batch: &mut Vec<Held>,
        (lo, hi): (HashKey, HashKey),
    ) -> Option<Vec<Held>> {
        if batch.len() < 2 {
            return None;
        }
        let size: usize = batch.iter().map(Item::size).sum();
        if size < self.policy.max_size() / 2 {
            return None;
        }
        let (lo, hi) = (lo.get(), hi.get());
        // The upper half starts where a split at the midpoint starts its second child.
        let mid = lo + (hi - lo) / 2;
        let is_upper = |h: &Held| self.get(h).hash_key.get() > mid;
        let uppers = batch.iter().filter(|r| is_upper(r)).count();
        if uppers == 0 || uppers == batch.len() {
            return None;
        }
        // Each part in a vector of its exact size (the batch would be shrunk anyway).
        let mut upper = Vec::with_capacity(uppers);
        let mut lower = Vec::with_capacity(batch.len() - uppers);
        for r in batch.drain(..) {
            if is_upper(&r) {
                upper.push(r);
            } else {
                lower.push(r);
            }
        }
        *batch = lower;
        Some(upper)
    }

    /// Takes the records of `batch` past their time to live at `now` out of it and
    /// out of the slab.
    pub(super) fn take_expired(&mut self, batch: &mut Vec<Held>, now: Instant) -> Vec<Rec> {
        let expired = take_out(batch, |h| h.expiration <= now);
        self.take_all(expired)
    }

    /// Makes one Kinesis record of a batch of live records (not empty) predicted
    /// for `shard`, taking them out of the slab; returns it with the batch, emptied.
    pub(super) fn seal(
        &mut self,
        mut batch: Vec<Held>,
        shard: Option<ShardId>,
        now: Instant,
    ) -> (KRec, Vec<Held>) {
        // The batch is taken apart here: what waits is the members' vector, of its
        // exact size, and the encoded aggregate.
        let deadline = batch.iter().map(|h| h.deadline).min().unwrap_or(now);
        let expiration = batch.iter().map(|h| h.expiration).min().unwrap_or(now);
        // The KPL gives aggregates a little more time before the collector.
        let deadline = add_capped(deadline, self.extension).min(expiration);
        if batch.len() == 1
            && let Some(h) = batch.pop()
        {
            let r = self.take(h);
            let explicit_hash_key = r.explicit_hash_key();
            let krec = KRec {
                partition_key: String::from(r.key()),
                explicit_hash_key,
                data: Payload::Ready(r.data_buffer()),
                records: Contents::Sealed(vec![r.m]),
                shard,
                deadline,
                expiration,
                aggregated: false,
                released: None,
                lock: None,
            };
            return (krec, batch);
        }
        let records = &self.records;
        let first = records[batch[0].key].hash_key;
        // A record routed by its key's MD5 brings the hash the encoder's key table
        // needs; a batch with an explicit hash key in it is hashed by the encoder.
        let hashed = batch.iter().all(|h| !records[h.key].explicit());
        // Its checksum is written with the others of its request (four at a time).
        let data = self.encoder.encode_unfinished(
            &batch,
            |h| {
                let r = &records[h.key];
                let parts = RecordParts::new(r.key_bytes(), r.data())
                    .with_explicit_hash_key(r.explicit_hash_key());
                if hashed {
                    parts.with_key_hash(r.hash_key.get() as u64)
                } else {
                    parts
                }
            },
            Vec::new(),
        );
        // What stays of each record is its member (the rest is read back from the
        // aggregate if it is ever needed); the keys and data of the user records are
        // let go of here (freed by whoever holds the last reference to a buffer),
        // their put's vector once all its records have left.
        let members = batch.drain(..).map(|h| self.take_member(h)).collect();
        let krec = KRec {
            records: Contents::Sealed(members),
            partition_key: AGGREGATED_PARTITION_KEY.to_owned(),
            explicit_hash_key: Some(first),
            data: Payload::Unfinished(data),
            shard,
            deadline,
            expiration,
            aggregated: true,
            released: None,
            lock: None,
        };
        (krec, batch)
    }
}

/// The handle of `rec`, held under `key`.
#[inline]
fn held(key: Key, rec: &Rec) -> Held {
    Held::new(key, rec.size(), rec.deadline, rec.expiration)
}

impl StreamPipeline {
    /// Predicts a record's shard and buffers it there (or with the unknowns).
    pub(super) fn route(&mut self, rec: Rec, now: Instant) {
        self.route_all(vec![rec], false, now);
    }

    /// Predicts each record's shard and buffers it there (or with the unknowns),
    /// in order; `admit`: they are new, and get their deadlines here. The vector is
    /// the chunk the records wait in: they are not moved until sealed.
    pub(super) fn route_all(&mut self, recs: Vec<Rec>, admit: bool, now: Instant) {
        if self.aggregation.is_ordered() {
            for mut rec in recs {
                if admit {
                    rec.admit(&self.config, self.epoch);
                }
                self.route_ordered(rec, now);
            }
            return;
        }
        for key in self.aggregation.adopt(recs) {
            self.route_held(key, admit, now);
        }
    }

    /// Ordered mode's [`route`](Self::route): into the shard's ordered queue.
    fn route_ordered(&mut self, rec: Rec, now: Instant) {
        if rec.expiration <= now {
            self.expire(rec.m, now);
            return;
        }
        if let Some(ordered) = &mut self.aggregation.ordered {
            match self.shards.place(rec.hash_key) {
                Place::Shard(shard) => ordered.push(shard, rec),
                Place::Unknown { .. } => ordered.push_unknown(rec),
            }
        }
    }

    /// [`route`](Self::route) of the record under `key` in the slab (`admit`: it
    /// is new, and gets its deadlines here).
    #[inline]
    fn route_held(&mut self, key: Key, admit: bool, now: Instant) {
        let rec = self.aggregation.get_mut(key);
        if admit {
            rec.admit(&self.config, self.epoch);
        }
        if rec.expiration <= now {
            let h = held(key, rec);
            let rec = self.aggregation.take(h);
            self.expire(rec.m, now);
            return;
        }
        match self.shards.place(rec.hash_key) {
            Place::Shard(shard) => {
                let held = held(key, rec);
                let slot = self.aggregation.slot(shard);
                let batches = self.aggregation.queue(slot, held);
                if batches.is_empty() {
                    return; // the usual case: nothing else to do
                }
                let shard = shard.clone();
                for batch in batches {
                    self.aggregate(batch, Some(shard.clone()), now);
                }
            }
            Place::Unknown { wait_for_map } => {
                if wait_for_map {
                    // The first map is loading, or the record's shard was found
                    // split: wait a little longer for the map, so the record is
                    // aggregated with its shard's instead of going raw (raw records
                    // cost a slow peer dearly).
                    rec.deadline = rec
                        .deadline
                        .max(add_capped(now, SUSPECT_WAIT))
                        .min(rec.expiration);
                }
                let held = held(key, rec);
                // Unknown shard (or one found split): never aggregated with others;
                // waits for the map until its deadline, then goes alone.
                for batch in self.aggregation.add_unknown(held) {
                    for held in batch {
                        self.aggregate(vec![held], None, now);
                    }
                }
            }
        }
    }

    /// Closes the aggregators whose deadline passed (all of them when flushing or
    /// stopping, or when `all`), and lets records whose shard is unknown go alone at
    /// theirs.
    pub(super) fn poll_aggregators(&mut self, now: Instant, all: bool) {
        if self.aggregation.is_ordered() {
            self.poll_ordered(now, all || self.lifecycle.sends_at_once());
            return;
        }
        if all || self.lifecycle.sends_at_once() {
            for (shard, batches) in self.aggregation.flush() {
                for batch in batches {
                    self.aggregate(batch, Some(shard.clone()), now);
                }
            }
        } else {
            while let Some((shard, batches)) = self.aggregation.pop_due(now) {
                for batch in batches {
                    self.aggregate(batch, Some(shard.clone()), now);
                }
            }
        }
        // Records whose shard is unknown (the first map loading, a shard found
        // split) wait for the map rather than go out unaggregated, even in a flush;
        // their deadlines bound the wait.
        for held in self.aggregation.poll_unknown(now) {
            self.aggregate(vec![held], None, now);
        }
    }

    /// Ordered mode: the shards whose turn it is each send one Kinesis record of
    /// their queue's head (see `ordered`); records that waited past their time for
    /// a map fail.
    fn poll_ordered(&mut self, now: Instant, all: bool) {
        let Some(ordered) = &mut self.aggregation.ordered else {
            return;
        };
        let mut expired = ordered.take_expired_unknown(now);
        expired.extend(ordered.take_expired(now));
        for rec in expired {
            self.expire(rec.m, now);
        }
        loop {
            let Some(ordered) = &mut self.aggregation.ordered else {
                return;
            };
            let shards = &self.shards;
            let Some(turn) = ordered.poll(now, all, |s| shards.range_of(s, now)) else {
                return;
            };
            let mut batch = turn.batch;
            for rec in take_out(&mut batch, |r| r.expiration <= now) {
                self.expire(rec.m, now);
            }
            if batch.is_empty() {
                continue;
            }
            // Ordered queues keep their records; they are sealed through the slab.
            let batch = self.aggregation.hold_all(batch);
            let (mut krec, _) = self.aggregation.seal(batch, Some(turn.shard.clone()), now);
            krec.lock = Some(turn.lock);
            self.limiter.add(turn.shard, krec, now);
        }
    }

    /// Makes a Kinesis record of a batch of one shard's user records.
    pub(super) fn aggregate(&mut self, mut batch: Vec<Held>, shard: Option<ShardId>, now: Instant) {
        for rec in self.aggregation.take_expired(&mut batch, now) {
            self.expire(rec.m, now);
        }
        if batch.is_empty() {
            return;
        }
        if let Some(upper) = self.cut_at_midpoint(&mut batch, shard.as_ref(), now) {
            self.build(upper, shard.clone(), now);
        }
        let emptied = self.build(batch, shard.clone(), now);
        // The shard's aggregator makes its next batch in this one's allocation.
        if let Some(shard) = &shard {
            self.aggregation.recycle(shard, emptied);
        }
    }

    /// While the stream reshards, cuts a big aggregate of a shard's records in two
    /// at the shard's midpoint, and returns the upper half.
    ///
    /// An aggregate lands where its first record's hash key says. After a split, its
    /// records that belong to the other child are resent, and the copies it left
    /// there are dropped by a KCL consumer but read by consumers that do not filter by
    /// range. Splits are mostly at a shard's midpoint (`UpdateShardCount`'s uniform
    /// scaling, the usual `SplitShard`): an aggregate of one half holds no record of
    /// the other child, so what was in flight at such a split leaves no copies.
    ///
    /// Reshards come in runs (`UpdateShardCount` is a series of splits or merges; an
    /// autoscaler or on-demand capacity reacts again and again), so this starts once
    /// the stream is seen resharding (a shard found split or merged, or a refresh
    /// that changed the open shards) and lasts [`RESHARD_MEMORY`]; the first split of
    /// a run is not foreseen. Outside of runs the aggregates stay whole: twice as many
    /// Kinesis records slow a peer that pays per record (kinesalite).
    ///
    /// Only aggregates of at least half the size limit are cut, so each part still
    /// fills most of the 25 KiB a PUT payload unit bills, and the records stay
    /// together until they close (cutting them on arrival into two aggregators would
    /// keep twice as many partial aggregates in memory).
    ///
    /// [`RESHARD_MEMORY`]: super::shards::RESHARD_MEMORY
    fn cut_at_midpoint(
        &self,
        batch: &mut Vec<Held>,
        shard: Option<&ShardId>,
        now: Instant,
    ) -> Option<Vec<Held>> {
        let shard = shard?;
        if batch.len() < 2 || !self.shards.resharding(now) {
            return None;
        }
        let range = self.shards.map().range_of(shard, now)?;
        self.aggregation.cut_at_midpoint(batch, range)
    }

    /// Makes one Kinesis record of a batch of live records and hands it on (to the
    /// limiter, or to the assembler when its shard is unknown). Returns the batch,
    /// emptied.
    fn build(&mut self, batch: Vec<Held>, shard: Option<ShardId>, now: Instant) -> Vec<Held> {
        let (krec, emptied) = self.aggregation.seal(batch, shard, now);
        match krec.shard.clone() {
            Some(shard) => self.limiter.add(shard, krec, now),
            None => self.collect(krec, now),
        }
        emptied
    }

    /// Hands a Kinesis record to the collector.
    pub(super) fn collect(&mut self, krec: KRec, now: Instant) {
        let limit = match self.assembler.admits(&krec) {
            Admission::Sent => None,
            Admission::TooLarge(limit) => Some(limit),
            Admission::Wait => {
                self.assembler.wait_for_limit(krec);
                return;
            }
        };
        if let Some(limit) = limit {
            let message = format!(
                "record of {} bytes (data plus partition key) is over stream {}'s maximum record size of {limit} bytes: raise it with UpdateMaxRecordSize (up to {MAX_RECORD_SIZE_CEILING} bytes) or send smaller records; not sent",
                krec.size(),
                self.stream
            );
            for mut m in krec.into_members() {
                m.attempt(
                    self.epoch,
                    now,
                    now,
                    Some((codes::RECORD_TOO_LARGE, &message)),
                    None,
                );
                self.fail(m);
            }
            return;
        }
        // Deadlines are polled in `drive`, after every release of this round.
        self.assembler.add(krec);
    }

    /// A new map: records that waited for it go to their shards, landings the old
    /// map could not place are decided.
    pub(super) fn after_map_update(&mut self, now: Instant) {
        // The new map knows the children of whatever was found split.
        if !self.shards.take_new_map() {
            return;
        }
        if self.aggregation.is_ordered() {
            self.after_map_update_ordered(now);
            return;
        }
        // Records that waited for the map go to their shards now, with the deadline
        // their buffering time gives them (the wait for the map is over; due at once
        // if that passed): later records then keep the aggregators' queues in
        // deadline order.
        let budget = self.config.record_max_buffered_time;
        let waited: Vec<Held> = self.aggregation.flush_unknown().collect();
        for held in waited {
            // Routed again where it waits in the slab.
            let rec = self.aggregation.get_mut(held.key);
            let natural = aggregator_deadline(rec.arrival(self.epoch), budget);
            rec.deadline = rec.deadline.min(natural.max(now));
            self.route_held(held.key, false, now);
        }
        // Landings the old map could not place.
        for landed in self.shards.take_awaiting() {
            self.settle_landing(landed, now);
        }
    }

    /// Ordered mode's new map: records stored on shards the old map did not know
    /// are placed first (those stored outside their range go to the heads of their
    /// shards' queues), then the records that came back while waiting for the map
    /// (heads too), then the queues of shards that closed (tails), then the records
    /// that waited for the map (tails): each key's records stay in put order.
    fn after_map_update_ordered(&mut self, now: Instant) {
        for landed in self.shards.take_awaiting() {
            self.settle_landing(landed, now);
        }
        let Some(ordered) = &mut self.aggregation.ordered else {
            return;
        };
        let map = self.shards.map();
        let moved = ordered.map_changed(|s| map.is_open(s));
        let (back, waited): (Vec<Rec>, Vec<Rec>) = ordered
            .take_unknown()
            .into_iter()
            .partition(|r| r.lock().is_some());
        for rec in back.into_iter().chain(moved) {
            self.route(rec, now);
        }
        let budget = self.config.record_max_buffered_time;
        for mut rec in waited {
            let natural = aggregator_deadline(rec.arrival(self.epoch), budget);
            rec.deadline = rec.deadline.min(natural.max(now));
            self.route(rec, now);
        }
    }

    /// An aggregate predicted for `shard` landed on another: the shard was split or
    /// merged. Until the map is refreshed, its records are not aggregated (a raw
    /// record lands where its own key says), and the aggregates not yet sent are
    /// taken apart, so only what was in flight can leave copies outside a shard's
    /// range.
    pub(super) fn suspect(&mut self, shard: ShardId, now: Instant) {
        self.reshard_seen(now);
        if !self.shards.suspect(&shard) || self.aggregation.is_ordered() {
            // Ordered mode: the shard's queue waits for the map where it is.
            return;
        }
        debug!(stream = %self.stream, shard = %shard.as_str(), "shard found split or merged: not aggregating for it until the map is refreshed");
        let mut loose: Vec<Rec> = self.aggregation.remove(&shard);
        let of_shard = |k: &KRec| k.aggregated && k.shard.as_ref() == Some(&shard);
        loose.extend(self.take_apart_queued(Some(&shard), &of_shard, now));
        self.route_all(loose, false, now);
    }

    /// The stream was seen resharding (a shard found split or merged, a refresh that
    /// changed the open shards): for [`RESHARD_MEMORY`] big aggregates are cut at
    /// their shard's midpoint (see [`cut_at_midpoint`](Self::cut_at_midpoint)), and
    /// the big aggregates made before and not sent yet are taken apart to be made
    /// again that way.
    ///
    /// [`RESHARD_MEMORY`]: super::shards::RESHARD_MEMORY
    pub(super) fn reshard_seen(&mut self, now: Instant) {
        if self.shards.reshard_seen(now) || self.aggregation.is_ordered() {
            return;
        }
        debug!(stream = %self.stream, "stream resharding: cutting big aggregates at their shards' midpoints");
        let half = self.aggregation.max_size() / 2;
        let big = |k: &KRec| k.aggregated && k.size() >= half;
        let loose = self.take_apart_queued(None, &big, now);
        self.route_all(loose, false, now);
    }

    /// Takes the aggregates not sent yet that `pick` chooses (of one shard, or of all)
    /// out of the limiter, the collector and the ready requests, and returns their
    /// records.
    fn take_apart_queued(
        &mut self,
        only: Option<&ShardId>,
        pick: &dyn Fn(&KRec) -> bool,
        now: Instant,
    ) -> Vec<Rec> {
        let mut loose: Vec<Rec> = Vec::new();
        let queued: Vec<(ShardId, KRec)> = match only {
            Some(shard) => self
                .limiter
                .drain_shard(shard)
                .into_iter()
                .map(|k| (shard.clone(), k))
                .collect(),
            None => self.limiter.drain(),
        };
        for (shard, k) in queued {
            if pick(&k) {
                loose.extend(self.unseal(k, now));
            } else {
                self.limiter.add(shard, k, now);
            }
        }
        let taken = self.assembler.take_out(pick);
        for k in taken {
            loose.extend(self.unseal(k, now));
        }
        loose
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kpl_codec::deaggregate;
    use kpl_runtime::{Timer, VirtualClock};

    use super::*;
    use crate::completers::Receipt;
    use crate::pipeline::Epoch;
    use crate::pipeline::record::finish_payloads;

    fn config(max_count: u64) -> Config {
        Config::builder()
            .aggregation_max_count(max_count)
            .record_max_buffered_time(Duration::from_millis(100))
            .build()
            .expect("config")
    }

    /// A record put at `t0` with key `key`, admitted by `config`.
    fn rec(id: u64, key: &str, hash: Option<u128>, t0: Instant, config: &Config) -> Rec {
        let epoch = Epoch::new(t0);
        let receipt = Receipt::new(id);
        let explicit = hash.map(HashKey::new);
        let mut r = Rec::new(
            key.to_owned(),
            explicit,
            explicit.unwrap_or_else(|| HashKey::from_partition_key(key)),
            Bytes::from(format!("data-{id}")),
            t0,
            epoch,
            receipt,
        );
        r.admit(config, epoch);
        r
    }

    fn add(a: &mut Aggregation, shard: &ShardId, rec: Rec) -> Vec<Vec<Held>> {
        let slot = a.slot(shard);
        let held = a.hold_all(vec![rec]).pop().expect("one handle");
        a.queue(slot, held)
    }

    fn ids(a: &Aggregation, batch: &[Held]) -> Vec<u64> {
        batch.iter().map(|h| a.get(h).id()).collect()
    }

    impl Aggregation {
        /// The slab holds exactly the records whose keys its queues hold, and
        /// batches taken out of the queues (`out`).
        fn check_with(&self, out: &[&[Held]]) {
            let queued = self.batches.iter().map(|b| b.reducer.len()).sum::<usize>()
                + self.unknown.len()
                + out.iter().map(|b| b.len()).sum::<usize>();
            assert_eq!(self.records.len(), queued, "the slab holds what is queued");
            let keys = self
                .batches
                .iter()
                .flat_map(|b| b.reducer.iter())
                .chain(self.unknown.iter())
                .chain(out.iter().flat_map(|b| b.iter()));
            for h in keys {
                assert!(
                    self.records.get(h.key).is_some(),
                    "a queued key names a record"
                );
            }
        }

        fn check(&self) {
            self.check_with(&[]);
        }
    }

    #[test]
    fn a_shards_batch_closes_at_its_first_deadline_and_only_due_shards_are_polled() {
        let c = config(100);
        let t0 = VirtualClock::new().now();
        let mut a = Aggregation::new(&c);
        let (s1, s2) = (ShardId::from("s1"), ShardId::from("s2"));
        assert!(add(&mut a, &s1, rec(0, "a", None, t0, &c)).is_empty());
        let later = t0 + Duration::from_millis(30);
        assert!(add(&mut a, &s2, rec(1, "b", None, later, &c)).is_empty());
        assert!(add(&mut a, &s1, rec(2, "c", None, later, &c)).is_empty());
        assert!(!a.is_empty());
        let first = a.next_deadline().expect("a deadline");
        assert_eq!(first, rec(9, "x", None, t0, &c).deadline);
        assert!(a.pop_due(first - Duration::from_millis(1)).is_none());
        let (shard, batches) = a.pop_due(first).expect("s1 is due");
        assert_eq!(shard, s1);
        assert_eq!(
            batches.iter().map(|b| ids(&a, b)).collect::<Vec<_>>(),
            [vec![0, 2]]
        );
        a.check_with(&[&batches[0]]);
        assert!(a.pop_due(first).is_none(), "s2 is not due yet");
        let (shard, more) = a.pop_due(a.next_deadline().expect("s2")).expect("s2");
        assert_eq!(shard, s2);
        // Sealed, the records leave the slab.
        for batch in batches.into_iter().chain(more) {
            a.seal(batch, Some(shard.clone()), first);
        }
        a.check();
        assert!(a.is_empty());
    }

    #[test]
    fn a_full_batch_closes_at_once_and_a_flush_closes_every_shard() {
        let c = config(2);
        let t0 = VirtualClock::new().now();
        let mut a = Aggregation::new(&c);
        let s = ShardId::from("s");
        assert!(add(&mut a, &s, rec(0, "a", None, t0, &c)).is_empty());
        let closed = add(&mut a, &s, rec(1, "b", None, t0, &c));
        a.check_with(&[&closed[0]]);
        assert_eq!(
            closed.iter().map(|b| ids(&a, b)).collect::<Vec<_>>(),
            [vec![0, 1]]
        );
        add(&mut a, &s, rec(2, "c", None, t0, &c));
        add(&mut a, &ShardId::from("t"), rec(3, "d", None, t0, &c));
        let flushed: Vec<Held> = a
            .flush()
            .into_iter()
            .flat_map(|(_, b)| b.into_iter().flatten())
            .chain(closed.into_iter().flatten())
            .collect();
        let mut flushed: Vec<u64> = a.take_all(flushed).iter().map(|r| r.id()).collect();
        flushed.sort_unstable();
        assert_eq!(flushed, [0, 1, 2, 3]);
        a.check();
        assert!(a.is_empty());
        assert_eq!(a.next_deadline(), None);
    }

    #[test]
    fn a_shard_keeps_its_slot_and_a_batch_taken_away_yields_nothing() {
        let c = config(100);
        let t0 = VirtualClock::new().now();
        let mut a = Aggregation::new(&c);
        let (s1, s2) = (ShardId::from("s1"), ShardId::from("s2"));
        let (one, two) = (a.slot(&s1), a.slot(&s2));
        assert_ne!(one, two);
        assert_eq!(a.slot(&s1), one, "a shard keeps its slot");
        add(&mut a, &s1, rec(0, "a", None, t0, &c));
        add(&mut a, &s2, rec(1, "b", None, t0, &c));
        assert_eq!(
            a.remove(&s1).iter().map(|r| r.id()).collect::<Vec<_>>(),
            [0],
            "found split: its records come out"
        );
        assert_eq!(a.remove(&ShardId::from("s9")).len(), 0);
        let due = a.next_deadline().expect("a deadline");
        let polled: Vec<(ShardId, Vec<Vec<Held>>)> =
            std::iter::from_fn(|| a.pop_due(due)).collect();
        let mut counts: Vec<(ShardId, usize)> =
            polled.iter().map(|(s, b)| (s.clone(), b.len())).collect();
        counts.sort_unstable();
        // s1's entry is stale: no batch comes of it.
        assert_eq!(counts, [(s1.clone(), 0), (s2, 1)]);
        for (_, batches) in polled {
            a.take_all(batches.into_iter().flatten());
        }
        // The slot takes records again, and its batch is scheduled anew.
        add(&mut a, &s1, rec(2, "c", None, due, &c));
        let (shard, batches) = a.pop_due(a.next_deadline().expect("s1")).expect("s1");
        assert_eq!(shard, s1);
        assert!(!a.is_empty(), "a closed batch's records are still held");
        a.check_with(&[&batches[0]]);
        assert_eq!(ids(&a, &batches[0]), [2]);
        a.take_all(batches.into_iter().flatten());
        assert!(a.is_empty());
        assert_eq!(a.drain().len(), 0);
    }

    #[test]
    fn many_shards_each_keep_their_slot_through_the_cache_of_recent_ones() {
        let c = config(100);
        let mut a = Aggregation::new(&c);
        // More shards than the cache holds: sets meet, and entries are evicted.
        let shards: Vec<ShardId> = (0..200)
            .map(|i| ShardId::from(format!("shardId-{i:012}")))
            .collect();
        let slots: Vec<usize> = shards.iter().map(|s| a.slot(s)).collect();
        let mut distinct = slots.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), shards.len(), "a slot per shard");
        for round in 0..3 {
            for (i, s) in shards.iter().enumerate().rev() {
                assert_eq!(a.slot(s), slots[i], "round {round}, shard {i}");
                // An equal id made apart finds the same slot (by the map).
                assert_eq!(a.slot(&ShardId::from(s.as_str())), slots[i]);
            }
        }
        // Drained, the aggregation forgets its slots and the cache with them.
        assert!(a.drain().is_empty());
        assert_eq!(a.slot(&shards[199]), 0, "the first slot again");
        assert_eq!(a.slot(&shards[0]), 1);
        assert_eq!(a.slot(&shards[199]), 0);
    }

    #[test]
    fn records_of_unknown_shards_wait_alone_for_their_deadline() {
        let c = config(100);
        let t0 = VirtualClock::new().now();
        let mut a = Aggregation::new(&c);
        for h in a.hold_all(vec![rec(0, "a", None, t0, &c), rec(1, "b", None, t0, &c)]) {
            assert!(a.add_unknown(h).is_empty());
        }
        assert!(a.has_unknown());
        a.check();
        let due = a.next_deadline().expect("a deadline");
        assert_eq!(a.poll_unknown(due - Duration::from_millis(1)).count(), 0);
        let alone: Vec<Held> = a.poll_unknown(due).collect();
        assert_eq!(ids(&a, &alone), [0, 1]);
        assert!(!a.has_unknown());
        a.take_all(alone);
        assert!(a.is_empty());
    }

    #[test]
    fn one_record_goes_raw_and_several_go_as_one_aggregate_that_reads_back() {
        let c = config(100);
        let t0 = VirtualClock::new().now();
        let mut a = Aggregation::new(&c);
        let one = rec(0, "solo", None, t0, &c);
        let deadline = one.deadline;
        let one = a.hold_all(vec![one]);
        let (k, emptied) = a.seal(one, None, t0);
        assert!(a.is_empty(), "sealed, it left the slab");
        assert!(emptied.is_empty());
        assert!(!k.aggregated);
        assert_eq!(k.partition_key, "solo");
        assert_eq!(
            k.deadline,
            deadline + collector_share(c.record_max_buffered_time)
        );
        let shard = ShardId::from("s");
        let batch = vec![
            rec(1, "a", None, t0, &c),
            rec(2, "b", Some(7), t0, &c),
            rec(3, "c", None, t0, &c),
        ];
        let first = batch[0].hash_key;
        let batch = a.hold_all(batch);
        let (k, emptied) = a.seal(batch, Some(shard.clone()), t0);
        assert!(a.is_empty(), "sealed, they left the slab");
        assert!(
            emptied.is_empty() && emptied.capacity() > 0,
            "the allocation comes back"
        );
        assert!(k.aggregated);
        assert_eq!(k.partition_key, AGGREGATED_PARTITION_KEY);
        assert_eq!(
            k.explicit_hash_key,
            Some(first),
            "routed by its first record"
        );
        assert_eq!(k.shard, Some(shard));
        let mut batch = vec![k];
        finish_payloads(&mut batch);
        let data = batch[0].data.ready();
        let users = deaggregate(&batch[0].partition_key, None, &data).expect("decodes");
        let keys: Vec<&str> = users.iter().map(|u| u.partition_key).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(users[1].explicit_hash_key, Some("7"));
        assert_eq!(users[2].data, b"data-3");
    }

    #[test]
    fn a_puts_records_wait_where_they_were_put_until_the_last_of_them_is_sealed() {
        let c = config(100);
        let t0 = VirtualClock::new().now();
        let mut a = Aggregation::new(&c);
        let (s1, s2) = (ShardId::from("s1"), ShardId::from("s2"));
        let put: Vec<Rec> = (0..4)
            .map(|i| rec(i, &format!("k{i}"), None, t0, &c))
            .collect();
        let at = put.as_ptr();
        for (i, h) in a.hold_all(put).into_iter().enumerate() {
            assert!(
                std::ptr::eq(a.get(&h), at.wrapping_add(i)),
                "held where it was put"
            );
            let slot = a.slot(if i % 2 == 0 { &s1 } else { &s2 });
            assert!(a.queue(slot, h).is_empty());
        }
        a.check();
        let mut closed: Vec<(ShardId, Vec<Held>)> = a
            .flush()
            .into_iter()
            .map(|(s, b)| (s, b.into_iter().flatten().collect()))
            .collect();
        closed.sort_by(|x, y| x.0.cmp(&y.0));
        let [(_, first), (_, second)] = <[_; 2]>::try_from(closed).expect("two shards");
        assert_eq!(
            (ids(&a, &first), ids(&a, &second)),
            (vec![0, 2], vec![1, 3])
        );
        let (k, _) = a.seal(first, Some(s1), t0);
        assert_eq!(k.ids(), [0, 2]);
        // Two of the put's records left; its vector stays for the two others.
        assert_eq!((a.records.len(), a.records.chunks()), (2, 1));
        assert!(std::ptr::eq(a.get(&second[0]), at.wrapping_add(1)));
        a.check_with(&[&second]);
        let (k, _) = a.seal(second, Some(s2), t0);
        assert_eq!(k.ids(), [1, 3]);
        assert_eq!(
            (a.records.len(), a.records.chunks()),
            (0, 0),
            "the vector is freed"
        );
        assert!(a.is_empty());
    }

    #[test]
    fn only_a_big_batch_is_cut_at_its_shards_midpoint() {
        let c = config(10_000);
        let t0 = VirtualClock::new().now();
        let mut a = Aggregation::new(&c);
        let range = (HashKey::new(0), HashKey::new(1000));
        let mut small = a.hold_all(vec![
            rec(0, "a", Some(10), t0, &c),
            rec(1, "b", Some(900), t0, &c),
        ]);
        assert!(
            a.cut_at_midpoint(&mut small, range).is_none(),
            "under half the size limit"
        );
        // Enough records to pass half the size limit, on both sides of 500.
        let per = rec(0, "k", Some(1), t0, &c).size();
        let n = a.max_size() / 2 / per + 2;
        let mut batch: Vec<Held> = a.hold_all(
            (0..n as u64)
                .map(|i| rec(i, "k", Some(if i % 2 == 0 { 100 } else { 700 }), t0, &c))
                .collect(),
        );
        let upper = a.cut_at_midpoint(&mut batch, range).expect("cut");
        assert!(upper.iter().all(|h| a.get(h).hash_key.get() > 500));
        assert!(batch.iter().all(|h| a.get(h).hash_key.get() <= 500));
        assert_eq!(upper.len() + batch.len(), n);
        // All on one side: nothing to cut.
        let mut one_side: Vec<Held> = a.hold_all(
            (0..n as u64)
                .map(|i| rec(i, "k", Some(100), t0, &c))
                .collect(),
        );
        assert!(a.cut_at_midpoint(&mut one_side, range).is_none());
        a.check_with(&[&small, &batch, &upper, &one_side]);
    }
}

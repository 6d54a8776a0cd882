//! Per-shard aggregation: a record's shard is predicted from the map, records of
//! one shard are batched by deadline and packed into one Kinesis record; while the
//! stream reshards, big aggregates are cut at their shard's midpoint.

use std::cmp::Reverse;
use std::time::Instant;

use kpl_codec::{AGGREGATED_PARTITION_KEY, UserRecord};
use kpl_reducer::{Item, Reducer};
use kpl_shardmap::ShardId;
use tracing::debug;

use super::record::{
    Contents, KRec, Payload, Rec, add_capped, aggregator_deadline, collector_share, take_out,
};
use super::shards::Place;
use super::{SUSPECT_WAIT, StreamPipeline};

impl StreamPipeline {
    /// Predicts a record's shard and buffers it there (or with the unknowns).
    pub(super) fn route(&mut self, mut rec: Rec, now: Instant) {
        if rec.expiration <= now {
            self.expire(rec.m, now);
            return;
        }
        match self.shards.place(rec.hash_key) {
            Place::Shard(shard) => {
                // Deadlines are left to `drive`: a backlog of late records then closes
                // full aggregates instead of one per record. One look-up when the
                // shard has its aggregator (the usual case).
                let reducer = match self.aggregators.get_mut(shard) {
                    Some(reducer) => reducer,
                    None => self
                        .aggregators
                        .entry(shard.clone())
                        .or_insert_with(|| Reducer::new(self.aggregate_policy)),
                };
                let before = reducer.next_deadline();
                // The record moves once, into the reducer's queue.
                let batches = reducer.add_deferred(rec);
                let after = reducer.next_deadline();
                if batches.is_empty() && after == before {
                    return; // the usual case: nothing else to do
                }
                let shard = shard.clone();
                if after.is_some()
                    && after != before
                    && let Some(at) = after
                {
                    self.agg_schedule.push(Reverse((at, shard.clone())));
                }
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
                // Unknown shard (or one found split): never aggregated with others;
                // waits for the map until its deadline, then goes alone.
                for batch in self.unknown.add_deferred(rec) {
                    for rec in batch {
                        self.aggregate(vec![rec], None, now);
                    }
                }
            }
        }
    }

    /// Closes the aggregators whose deadline passed (all of them when flushing or
    /// stopping, or when `all`), and lets records whose shard is unknown go alone at
    /// theirs.
    pub(super) fn poll_aggregators(&mut self, now: Instant, all: bool) {
        if all || self.lifecycle.sends_at_once() {
            let shards: Vec<ShardId> = self.aggregators.keys().cloned().collect();
            for shard in shards {
                let batches = self
                    .aggregators
                    .get_mut(&shard)
                    .map(Reducer::flush)
                    .unwrap_or_default();
                for batch in batches {
                    self.aggregate(batch, Some(shard.clone()), now);
                }
            }
            self.agg_schedule.clear();
        } else {
            while let Some(Reverse((at, shard))) = self.agg_schedule.peek().cloned() {
                if at > now {
                    break;
                }
                self.agg_schedule.pop();
                let Some(reducer) = self.aggregators.get_mut(&shard) else {
                    continue;
                };
                let batches = reducer.poll_expired(now);
                if let Some(next) = reducer.next_deadline() {
                    self.agg_schedule.push(Reverse((next, shard.clone())));
                }
                for batch in batches {
                    self.aggregate(batch, Some(shard.clone()), now);
                }
            }
        }
        // Records whose shard is unknown (the first map loading, a shard found
        // split) wait for the map rather than go out unaggregated, even in a flush;
        // their deadlines bound the wait.
        for batch in self.unknown.poll_expired(now) {
            for rec in batch {
                self.aggregate(vec![rec], None, now);
            }
        }
    }

    /// Makes a Kinesis record of a batch of one shard's user records.
    pub(super) fn aggregate(&mut self, mut batch: Vec<Rec>, shard: Option<ShardId>, now: Instant) {
        let expired: Vec<Rec> = take_out(&mut batch, |r| r.expiration <= now);
        for rec in expired {
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
        if let Some(reducer) = shard.and_then(|s| self.aggregators.get_mut(&s)) {
            reducer.recycle(emptied);
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
    /// that changed the open shards) and lasts [`RESHARD_MEMORY`](super::shards::RESHARD_MEMORY); the first split of
    /// a run is not foreseen. Outside of runs the aggregates stay whole: twice as many
    /// Kinesis records slow a peer that pays per record (kinesalite).
    ///
    /// Only aggregates of at least half the size limit are cut, so each part still
    /// fills most of the 25 KiB a PUT payload unit bills, and the records stay
    /// together until they close (cutting them on arrival into two aggregators would
    /// keep twice as many partial aggregates in memory).
    fn cut_at_midpoint(
        &self,
        batch: &mut Vec<Rec>,
        shard: Option<&ShardId>,
        now: Instant,
    ) -> Option<Vec<Rec>> {
        let shard = shard?;
        if batch.len() < 2 || !self.shards.resharding(now) {
            return None;
        }
        let size: usize = batch.iter().map(Item::size).sum();
        if size < self.aggregate_policy.max_size() / 2 {
            return None;
        }
        let (lo, hi) = self.shards.map().range_of(shard, now)?;
        let (lo, hi) = (lo.get(), hi.get());
        // The upper half starts where a split at the midpoint starts its second child.
        let mid = lo + (hi - lo) / 2;
        let is_upper = |r: &Rec| r.hash_key.get() > mid;
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

    /// Makes one Kinesis record of a batch of live records.
    /// Returns the batch, emptied.
    fn build(&mut self, mut batch: Vec<Rec>, shard: Option<ShardId>, now: Instant) -> Vec<Rec> {
        // The batch is taken apart here: what waits is the members' vector, of its
        // exact size, and the encoded aggregate.
        let deadline = batch.iter().map(|r| r.deadline).min().unwrap_or(now);
        let expiration = batch.iter().map(|r| r.expiration).min().unwrap_or(now);
        // The KPL gives aggregates a little more time before the collector.
        let extension = collector_share(self.config.record_max_buffered_time);
        let deadline = add_capped(deadline, extension).min(expiration);
        let krec = if batch.len() == 1 {
            let Some(r) = batch.pop() else { return batch };
            let explicit_hash_key = r.explicit_hash_key();
            KRec {
                partition_key: String::from(r.partition_key),
                explicit_hash_key,
                data: Payload::Ready(r.data),
                records: Contents::Sealed(vec![r.m]),
                shard,
                deadline,
                expiration,
                aggregated: false,
                released: None,
            }
        } else {
            self.builder.clear();
            let first = batch[0].hash_key;
            // A record routed by its key's MD5 brings the hash the builder's key table
            // needs; a batch with an explicit hash key in it is hashed by the builder.
            let hashed = batch.iter().all(|r| !r.explicit);
            // Keys and data move into the builder; what stays of each record is its
            // member (the rest is read back from the aggregate if it is ever needed).
            let mut members = Vec::with_capacity(batch.len());
            for r in batch.drain(..) {
                let explicit = r.explicit_hash_key();
                let hash = r.hash_key.get() as u64;
                let mut user = UserRecord::new(String::from(r.partition_key), r.data);
                user.explicit_hash_key = explicit;
                if hashed {
                    self.builder.add_with_key_hash(user, hash);
                } else {
                    self.builder.add(user);
                }
                members.push(r.m);
            }
            // Its checksum is written with the others of its request (four at a time).
            let data = self.builder.encode_unfinished_aggregate(Vec::new());
            // The keys and data of the user records are freed here (or by whoever
            // holds the last reference to a record's data).
            self.builder.clear();
            KRec {
                records: Contents::Sealed(members),
                partition_key: AGGREGATED_PARTITION_KEY.to_owned(),
                explicit_hash_key: Some(first),
                data: Payload::Unfinished(data),
                shard,
                deadline,
                expiration,
                aggregated: true,
                released: None,
            }
        };
        match krec.shard.clone() {
            Some(shard) => self.limiter.add(shard, krec, now),
            None => self.collect(krec),
        }
        batch
    }

    /// Hands a Kinesis record to the collector.
    pub(super) fn collect(&mut self, krec: KRec) {
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
        // Records that waited for the map go to their shards now, with the deadline
        // their buffering time gives them (the wait for the map is over; due at once
        // if that passed): later records then keep the aggregators' queues in
        // deadline order.
        let budget = self.config.record_max_buffered_time;
        for batch in self.unknown.flush() {
            for mut rec in batch {
                let natural = aggregator_deadline(rec.arrival(self.epoch), budget);
                rec.deadline = rec.deadline.min(natural.max(now));
                self.route(rec, now);
            }
        }
        // Landings the old map could not place.
        for landed in self.shards.take_awaiting() {
            self.settle_landing(landed, now);
        }
    }

    /// An aggregate predicted for `shard` landed on another: the shard was split or
    /// merged. Until the map is refreshed, its records are not aggregated (a raw
    /// record lands where its own key says), and the aggregates not yet sent are
    /// taken apart, so only what was in flight can leave copies outside a shard's
    /// range.
    pub(super) fn suspect(&mut self, shard: ShardId, now: Instant) {
        self.reshard_seen(now);
        if !self.shards.suspect(&shard) {
            return;
        }
        debug!(stream = %self.stream, shard = %shard.as_str(), "shard found split or merged: not aggregating for it until the map is refreshed");
        let mut loose: Vec<Rec> = Vec::new();
        if let Some(mut reducer) = self.aggregators.remove(&shard) {
            loose.extend(reducer.flush().into_iter().flatten());
        }
        let of_shard = |k: &KRec| k.aggregated && k.shard.as_ref() == Some(&shard);
        loose.extend(self.take_apart_queued(Some(&shard), &of_shard, now));
        for rec in loose {
            self.route(rec, now);
        }
    }

    /// The stream was seen resharding (a shard found split or merged, a refresh that
    /// changed the open shards): for [`RESHARD_MEMORY`](super::shards::RESHARD_MEMORY) big aggregates are cut at
    /// their shard's midpoint (see [`cut_at_midpoint`](Self::cut_at_midpoint)), and
    /// the big aggregates made before and not sent yet are taken apart to be made
    /// again that way.
    pub(super) fn reshard_seen(&mut self, now: Instant) {
        if self.shards.reshard_seen(now) {
            return;
        }
        debug!(stream = %self.stream, "stream resharding: cutting big aggregates at their shards' midpoints");
        let half = self.aggregate_policy.max_size() / 2;
        let big = |k: &KRec| k.aggregated && k.size() >= half;
        for rec in self.take_apart_queued(None, &big, now) {
            self.route(rec, now);
        }
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

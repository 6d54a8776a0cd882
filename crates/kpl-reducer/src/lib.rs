//! A generic deadline-driven batcher, sans-IO.
//!
//! The KPL batches twice: user records into aggregates (one batcher per predicted
//! shard), and Kinesis records into `PutRecords` requests. Both follow one rule set,
//! implemented here once as [`Reducer`]: items come in with a size and a deadline; a
//! batch closes when the items reach the [`Policy`]'s count or size, when a
//! [`Predicate`] asks for it, or when the earliest deadline passes.
//!
//! Nothing here reads a clock, sleeps or spawns: `now` is an argument and
//! [`Reducer::next_deadline`] says when to call [`Reducer::poll_expired`], in the
//! manner of quinn-proto.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//! use kpl_reducer::{Item, Policy, Reducer};
//!
//! struct Rec { bytes: usize, deadline: Instant }
//! impl Item for Rec {
//!     fn size(&self) -> usize { self.bytes }
//!     fn deadline(&self) -> Instant { self.deadline }
//! }
//!
//! let t0 = Instant::now();
//! let mut reducer = Reducer::new(Policy::new(500, 1000));
//! let d = t0 + Duration::from_millis(100);
//! assert!(reducer.add(Rec { bytes: 600, deadline: d }, t0).is_empty());
//! // 600 + 600 reaches the size limit: the first closes, the second stays.
//! let closed = reducer.add(Rec { bytes: 600, deadline: d }, t0);
//! assert_eq!(closed.len(), 1);
//! assert_eq!(closed[0].len(), 1);
//! assert_eq!(reducer.next_deadline(), Some(d));
//! // At the deadline the rest goes.
//! assert_eq!(reducer.poll_expired(d).len(), 1);
//! assert!(reducer.is_empty());
//! ```
//!
//! # Rules (the KPL's, `reducer.h`)
//!
//! - A batch closes when count ≥ max count, size ≥ max size, the predicate fires,
//!   or the earliest deadline is at or before `now`.
//! - On close, items are taken in deadline order (first in, first out on equal
//!   deadlines) while they fit in the count and the size; the rest stay for the
//!   next batch. An item larger than the max size goes alone rather than never.
//! - After every call, none of the close conditions hold for what stays buffered.
//!
//! # Cost
//!
//! Items usually come in deadline order (one buffering time for all): those go to
//! the back of a queue, O(1), and leave from its front, O(1), without moving any
//! other item. An item with an earlier deadline than the last one in goes to a
//! binary heap beside the queue (O(log n)); the earliest of both fronts leaves
//! first. Nothing is allocated beyond the two containers' amortized growth and the
//! batches themselves.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::time::Instant;

/// What the reducer needs to know of an item.
pub trait Item {
    /// Its size, in whatever unit the [`Policy`]'s max size counts (bytes).
    fn size(&self) -> usize;
    /// When it must leave at the latest.
    fn deadline(&self) -> Instant;
}

/// Limits of one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    max_count: usize,
    max_size: usize,
}

impl Policy {
    /// At most `max_count` items and `max_size` of size per batch (both at least 1;
    /// 0 is taken as 1).
    pub fn new(max_count: usize, max_size: usize) -> Self {
        Self {
            max_count: max_count.max(1),
            max_size: max_size.max(1),
        }
    }

    /// The most items of a batch.
    pub fn max_count(&self) -> usize {
        self.max_count
    }

    /// The most size of a batch (but for a single oversized item).
    pub fn max_size(&self) -> usize {
        self.max_size
    }
}

/// An extra reason to close a batch, computed from the items the reducer holds
/// (for example "one shard has 256 KiB buffered", the collector's rule).
///
/// The reducer tells it of every item that comes in and goes out; it answers
/// whether a batch should close now.
pub trait Predicate<T> {
    /// `item` was buffered.
    fn added(&mut self, item: &T);
    /// `item` left the buffer, in a batch.
    fn removed(&mut self, item: &T);
    /// Whether a batch should close now.
    fn should_close(&self) -> bool;
}

/// No extra reason: batches close on count, size and deadline only.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPredicate;

impl<T> Predicate<T> for NoPredicate {
    fn added(&mut self, _: &T) {}
    fn removed(&mut self, _: &T) {}
    fn should_close(&self) -> bool {
        false
    }
}

struct Entry<T> {
    deadline: Instant,
    seq: u64,
    /// The item's size, asked once.
    size: usize,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

/// Entries an emptied reducer's queue may keep.
const IDLE_CAPACITY: usize = 64;

/// The deadline-driven batcher. See the [crate docs](crate) for its rules.
pub struct Reducer<T, P = NoPredicate> {
    policy: Policy,
    predicate: P,
    /// Items that came in deadline order, earliest first.
    run: VecDeque<Entry<T>>,
    /// Items that came with an earlier deadline than the back of `run`.
    heap: BinaryHeap<Reverse<Entry<T>>>,
    size: usize,
    next_seq: u64,
    /// An emptied batch handed back with [`recycle`](Self::recycle): the next batch
    /// reuses its allocation.
    spare: Vec<T>,
}

impl<T, P> fmt::Debug for Reducer<T, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reducer")
            .field("policy", &self.policy)
            .field("count", &(self.run.len() + self.heap.len()))
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl<T: Item> Reducer<T, NoPredicate> {
    /// A reducer closing batches on count, size and deadline.
    pub fn new(policy: Policy) -> Self {
        Self::with_predicate(policy, NoPredicate)
    }
}

impl<T: Item, P: Predicate<T>> Reducer<T, P> {
    /// A reducer that also closes a batch when `predicate` asks.
    pub fn with_predicate(policy: Policy, predicate: P) -> Self {
        Self {
            policy,
            predicate,
            run: VecDeque::new(),
            heap: BinaryHeap::new(),
            size: 0,
            next_seq: 0,
            spare: Vec::new(),
        }
    }

    /// Buffers `item` and returns the batches that close because of it (usually
    /// none, one when a limit is reached; an oversized item can make two).
    pub fn add(&mut self, item: T, now: Instant) -> Vec<Vec<T>> {
        self.push(item);
        self.close_while(now)
    }

    #[inline]
    fn push(&mut self, item: T) {
        let size = item.size();
        self.size += size;
        self.predicate.added(&item);
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = Entry {
            deadline: item.deadline(),
            seq,
            size,
            item,
        };
        if self
            .run
            .back()
            .is_none_or(|last| entry.deadline >= last.deadline)
        {
            self.run.push_back(entry);
        } else {
            self.heap.push(Reverse(entry));
        }
    }

    /// The earliest item: the front of the run or the top of the heap.
    fn peek(&self) -> Option<&Entry<T>> {
        match (self.run.front(), self.heap.peek()) {
            (Some(a), Some(Reverse(b))) => Some(if b < a { b } else { a }),
            (Some(a), None) => Some(a),
            (None, Some(Reverse(b))) => Some(b),
            (None, None) => None,
        }
    }

    fn pop(&mut self) -> Option<Entry<T>> {
        let from_heap = match (self.run.front(), self.heap.peek()) {
            (Some(a), Some(Reverse(b))) => b < a,
            (None, Some(_)) => true,
            _ => false,
        };
        if from_heap {
            self.heap.pop().map(|Reverse(e)| e)
        } else {
            self.run.pop_front()
        }
    }

    /// Buffers `item` like [`add`](Self::add), but closes batches on count, size and
    /// predicate only, leaving deadlines to the next [`poll_expired`](Self::poll_expired).
    ///
    /// For a caller that adds many items at once which may already be past their
    /// deadline (a backlog): adding them all first and then polling closes full
    /// batches, where [`add`](Self::add) would close one batch per late item.
    #[inline]
    pub fn add_deferred(&mut self, item: T) -> Vec<Vec<T>> {
        self.push(item);
        let mut batches = Vec::new();
        while !self.is_empty() && self.full() {
            batches.push(self.take_batch());
        }
        batches
    }

    /// A close condition other than a deadline holds.
    fn full(&self) -> bool {
        self.len() >= self.policy.max_count
            || self.size >= self.policy.max_size
            || self.predicate.should_close()
    }

    /// The earliest deadline of a buffered item: call [`poll_expired`](Self::poll_expired)
    /// then.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.peek().map(|e| e.deadline)
    }

    /// The batches that close because a deadline is at or before `now`.
    pub fn poll_expired(&mut self, now: Instant) -> Vec<Vec<T>> {
        self.close_while(now)
    }

    /// Everything buffered, in batches that respect the policy.
    pub fn flush(&mut self) -> Vec<Vec<T>> {
        let mut batches = Vec::new();
        while !self.is_empty() {
            batches.push(self.take_batch());
        }
        batches
    }

    /// Number of buffered items.
    pub fn len(&self) -> usize {
        self.run.len() + self.heap.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.run.is_empty() && self.heap.is_empty()
    }

    /// Total size of the buffered items.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The predicate.
    pub fn predicate(&self) -> &P {
        &self.predicate
    }

    /// The buffered items, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.run
            .iter()
            .chain(self.heap.iter().map(|Reverse(e)| e))
            .map(|e| &e.item)
    }

    /// Removes and returns the buffered items `remove` picks (for example those past
    /// their time to live), keeping the rest; the predicate is told of each.
    pub fn extract(&mut self, mut remove: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut taken = Vec::new();
        let mut kept = Vec::with_capacity(self.len());
        let heap = std::mem::take(&mut self.heap).into_vec();
        let all = std::mem::take(&mut self.run)
            .into_iter()
            .chain(heap.into_iter().map(|Reverse(e)| e));
        for entry in all {
            if remove(&entry.item) {
                self.size -= entry.size;
                self.predicate.removed(&entry.item);
                taken.push(entry);
            } else {
                kept.push(entry);
            }
        }
        // What stays, sorted, is one run again.
        kept.sort();
        self.run = VecDeque::from(kept);
        taken.sort();
        taken.into_iter().map(|e| e.item).collect()
    }

    fn must_close(&self, now: Instant) -> bool {
        match self.peek() {
            None => false,
            Some(head) => head.deadline <= now || self.full(),
        }
    }

    fn close_while(&mut self, now: Instant) -> Vec<Vec<T>> {
        let mut batches = Vec::new();
        while self.must_close(now) {
            batches.push(self.take_batch());
        }
        batches
    }

    /// Takes items in deadline order while they fit; at least one.
    fn take_batch(&mut self) -> Vec<T> {
        let batch = self.take_any_batch();
        if self.is_empty() {
            // Emptied: what it grew to for a backlog is given back (one reducer
            // per shard of a big stream would otherwise each keep their peak).
            if self.run.capacity() > IDLE_CAPACITY {
                self.run = VecDeque::new();
            }
            self.spare = Vec::new();
        }
        batch
    }

    fn take_any_batch(&mut self) -> Vec<T> {
        if self.heap.is_empty() {
            return self.take_run_batch();
        }
        // Room for what can go, so the batch does not grow by copies.
        let mut batch = Vec::with_capacity(self.len().min(self.policy.max_count).min(1024));
        let mut size = 0usize;
        while let Some(head) = self.peek() {
            let item_size = head.size;
            let fits = batch.len() < self.policy.max_count
                && size.saturating_add(item_size) <= self.policy.max_size;
            if !fits && !batch.is_empty() {
                break;
            }
            let Some(entry) = self.pop() else {
                break;
            };
            size += item_size;
            self.size -= item_size;
            self.predicate.removed(&entry.item);
            batch.push(entry.item);
            if !fits {
                // An item over the max size alone: it goes by itself.
                break;
            }
        }
        batch
    }

    /// [`take_batch`](Self::take_batch) when every item is in the in-order run (the
    /// usual case): counts what fits first, so the batch is allocated at its exact
    /// size (a batch sized for what might fit would be mostly slack, and a
    /// short-lived big allocation between long-lived ones fragments the heap).
    fn take_run_batch(&mut self) -> Vec<T> {
        let (mut count, mut size) = (0usize, 0usize);
        for entry in &self.run {
            let item_size = entry.size;
            let fits = count < self.policy.max_count
                && size.saturating_add(item_size) <= self.policy.max_size;
            if !fits && count > 0 {
                break;
            }
            count += 1;
            size += item_size;
            if !fits {
                // An item over the max size alone: it goes by itself.
                break;
            }
        }
        self.size -= size;
        let mut batch = std::mem::take(&mut self.spare);
        batch.reserve_exact(count);
        let predicate = &mut self.predicate;
        batch.extend(self.run.drain(..count).map(|entry| {
            predicate.removed(&entry.item);
            entry.item
        }));
        batch
    }

    /// Hands back a batch its caller emptied, so that the next batch reuses its
    /// allocation instead of making one: a caller that takes batches apart at once
    /// (an aggregator) then allocates nothing per batch.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use kpl_reducer::{Item, Policy, Reducer};
    ///
    /// struct Rec(Instant);
    /// impl Item for Rec {
    ///     fn size(&self) -> usize { 1 }
    ///     fn deadline(&self) -> Instant { self.0 }
    /// }
    ///
    /// let now = Instant::now();
    /// let mut reducer = Reducer::new(Policy::new(2, usize::MAX));
    /// let mut batches = reducer.add(Rec(now), now);
    /// batches.extend(reducer.add(Rec(now), now));
    /// let mut batch = batches.pop().expect("two records close a batch");
    /// let capacity = batch.capacity();
    /// batch.clear();
    /// reducer.recycle(batch);
    /// let later = now + Duration::from_secs(1);
    /// reducer.add(Rec(later), now);
    /// let next = reducer.add(Rec(later), now).pop().expect("a batch");
    /// assert_eq!(next.len(), 2);
    /// assert!(next.capacity() >= capacity);
    /// ```
    ///
    /// A reducer left empty keeps nothing: of many reducers (one per shard), only the
    /// busy ones hold a spare batch.
    pub fn recycle(&mut self, mut batch: Vec<T>) {
        if self.is_empty() {
            return;
        }
        batch.clear();
        if batch.capacity() > self.spare.capacity() {
            self.spare = batch;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rec(Instant);
    impl Item for Rec {
        fn size(&self) -> usize {
            1
        }
        fn deadline(&self) -> Instant {
            self.0
        }
    }

    #[test]
    fn an_emptied_reducer_gives_back_what_a_backlog_grew() {
        let now = Instant::now();
        let mut reducer = Reducer::new(Policy::new(usize::MAX, usize::MAX));
        for _ in 0..1_000 {
            assert!(reducer.add_deferred(Rec(now)).is_empty());
        }
        assert!(reducer.run.capacity() >= 1_000);
        // A batch handed back while records remain is kept for the next one.
        reducer.recycle(Vec::with_capacity(100));
        assert!(reducer.spare.capacity() >= 100);
        // Emptied: the queue and the spare are released.
        let all: usize = reducer.flush().iter().map(Vec::len).sum();
        assert_eq!(all, 1_000);
        assert!(reducer.run.capacity() <= IDLE_CAPACITY);
        assert_eq!(reducer.spare.capacity(), 0);
        // An empty reducer keeps no handed-back batch.
        reducer.recycle(Vec::with_capacity(100));
        assert_eq!(reducer.spare.capacity(), 0);
    }
}

//! The request assembler: Kinesis records collected into PutRecords requests (by
//! count, size, deadline, and 256 KiB buffered for one shard), and the requests
//! ready to go, cut to what the congestion window has room for or topped up with
//! the ones behind them.

use std::collections::VecDeque;
use std::time::Instant;

use kpl_codec::DEFAULT_MAX_RECORD_SIZE;
use kpl_reducer::{Policy, Predicate, Reducer};
use kpl_shardmap::ShardId;

use super::record::{KRec, take_out};
use crate::config::Config;
use crate::fasthash::FastMap;

/// Bytes buffered for one shard that close a PutRecords batch early (the KPL's rule).
const SHARD_BYTES_CLOSE: usize = 256 * 1024;
/// Bytes one PutRecords request carries at most (a single larger Kinesis record
/// still goes alone): a lost answer duplicates at most this much, and requests on a
/// slow path stay short.
pub(super) const MAX_REQUEST_BYTES: u64 = 512 * 1024;

/// The collector's early close: one shard has 256 KiB buffered.
#[derive(Default)]
struct ShardBytes {
    bytes: FastMap<Option<ShardId>, usize>,
    over: usize,
}

impl Predicate<KRec> for ShardBytes {
    fn added(&mut self, item: &KRec) {
        let b = self.bytes.entry(item.shard.clone()).or_default();
        let was = *b >= SHARD_BYTES_CLOSE;
        *b += item.size();
        if !was && *b >= SHARD_BYTES_CLOSE {
            self.over += 1;
        }
    }
    fn removed(&mut self, item: &KRec) {
        if let Some(b) = self.bytes.get_mut(&item.shard) {
            let was = *b >= SHARD_BYTES_CLOSE;
            *b -= item.size();
            if was && *b < SHARD_BYTES_CLOSE {
                self.over -= 1;
            }
            if *b == 0 {
                self.bytes.remove(&item.shard);
            }
        }
    }
    fn should_close(&self) -> bool {
        self.over > 0
    }
}

/// Kinesis records on their way into requests.
///
/// Rules: a request closes at `collection_max_count` records, at
/// `collection_max_size` bytes, at its first record's deadline, or when one shard
/// has 256 KiB in it; ready requests go in order; a request is cut to the room it
/// is given (at most [`MAX_REQUEST_BYTES`], never below one record), and one that
/// fits whole takes the ready requests behind it while they fit the count and the
/// room and hold no expired record.
pub(super) struct Assembler {
    collector: Reducer<KRec, ShardBytes>,
    /// Requests ready to go, oldest first.
    ready: VecDeque<Vec<KRec>>,
    /// The stream's maximum record size (see
    /// [`set_record_limit`](Self::set_record_limit)).
    record_limit: RecordLimit,
    /// Raw Kinesis records over the default 1 MiB, waiting for the stream's limit
    /// to be read.
    waiting: Vec<KRec>,
}

/// What the assembler knows of the stream's maximum record size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecordLimit {
    /// Being read: until it is known, 1 MiB (a larger raw record waits).
    Pending,
    /// Read.
    Known(usize),
    /// Not read (records are up to 1 MiB), or it could not be: the service judges.
    Unread,
}

/// Whether a Kinesis record may be sent.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// Yes.
    Sent,
    /// No: it is over the stream's maximum record size, this one.
    TooLarge(usize),
    /// Not yet: it is over 1 MiB and the stream's limit is still being read.
    Wait,
}

impl Assembler {
    /// Requests of `config`'s collection limits.
    pub(super) fn new(config: &Config) -> Self {
        Self {
            collector: Reducer::with_predicate(
                Policy::new(config.collection_max_count, config.collection_max_size),
                ShardBytes::default(),
            ),
            ready: VecDeque::new(),
            // Records may be larger than the default: the stream's limit is read.
            record_limit: if config.max_user_record_size > DEFAULT_MAX_RECORD_SIZE {
                RecordLimit::Pending
            } else {
                RecordLimit::Unread
            },
            waiting: Vec::new(),
        }
    }

    /// The stream's maximum record size was read (`Some`), or could not be
    /// (`None`: the service judges): a raw Kinesis record larger than that is
    /// refused by [`admits`](Self::admits) instead of being sent. Returns the
    /// records that waited for it, to be collected again.
    pub(super) fn set_record_limit(&mut self, limit: Option<usize>) -> Vec<KRec> {
        self.record_limit = limit.map_or(RecordLimit::Unread, RecordLimit::Known);
        std::mem::take(&mut self.waiting)
    }

    /// Whether `krec` may be sent: it is an aggregate (made within
    /// `aggregation_max_size`), or it is within the stream's maximum record size,
    /// 1 MiB while that is being read, or the limit could not be read (the service
    /// judges).
    pub(super) fn admits(&self, krec: &KRec) -> Admission {
        if krec.aggregated {
            return Admission::Sent;
        }
        match self.record_limit {
            RecordLimit::Known(limit) if krec.size() > limit => Admission::TooLarge(limit),
            RecordLimit::Pending if krec.size() > DEFAULT_MAX_RECORD_SIZE => Admission::Wait,
            _ => Admission::Sent,
        }
    }

    /// Holds `krec` until the stream's limit is read.
    pub(super) fn wait_for_limit(&mut self, krec: KRec) {
        self.waiting.push(krec);
    }

    /// Collects a Kinesis record (deadlines are polled with [`poll`](Self::poll)).
    #[inline]
    pub(super) fn add(&mut self, krec: KRec) {
        let batches = self.collector.add_deferred(krec);
        self.ready.extend(batches);
    }

    /// Closes the requests whose deadline passed at `now` (all of them when
    /// `at_once`).
    pub(super) fn poll(&mut self, now: Instant, at_once: bool) {
        let batches = if at_once {
            self.collector.flush()
        } else {
            self.collector.poll_expired(now)
        };
        self.ready.extend(batches);
    }

    /// The next request ready to go (see [`fill`](Self::fill)).
    pub(super) fn pop_ready(&mut self) -> Option<Vec<KRec>> {
        self.ready.pop_front()
    }

    /// Puts a request back at the front of the ready ones (the window has no room).
    pub(super) fn push_front(&mut self, batch: Vec<KRec>) {
        self.ready.push_front(batch);
    }

    /// The first record of the next ready request.
    pub(super) fn first_ready(&self) -> Option<&KRec> {
        self.ready.front().and_then(|b| b.first())
    }

    /// Makes `batch` (just taken with [`pop_ready`](Self::pop_ready), not empty)
    /// fit `room` bytes (at most [`MAX_REQUEST_BYTES`]): what does not fit goes back
    /// in front; when it fits whole, the ready requests behind it join it while they
    /// fit, none with a record expired at `now`.
    pub(super) fn fill(&mut self, mut batch: Vec<KRec>, room: u64, now: Instant) -> Vec<KRec> {
        let room = room.min(MAX_REQUEST_BYTES);
        let mut total = 0u64;
        let cut = batch
            .iter()
            .position(|k| {
                total += k.size() as u64;
                total > room
            })
            .unwrap_or(batch.len())
            .max(1);
        if cut < batch.len() {
            let rest = batch.split_off(cut);
            self.ready.push_front(rest);
            return batch;
        }
        // Batches that waited for the window (a long round trip holds requests
        // back) go out in full requests, not one request each.
        let max_count = self.collector.policy().max_count();
        while let Some(next) = self.ready.front() {
            let bytes: u64 = next.iter().map(|k| k.size() as u64).sum();
            if batch.len() + next.len() > max_count
                || total + bytes > room
                || next.iter().any(|k| k.expiration <= now)
            {
                break;
            }
            total += bytes;
            if let Some(next) = self.ready.pop_front() {
                batch.extend(next);
            }
        }
        batch
    }

    /// When the next collected request closes by its deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.collector.next_deadline()
    }

    /// Whether a request is ready to go.
    pub(super) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Whether it holds no record.
    pub(super) fn is_empty(&self) -> bool {
        self.collector.is_empty() && self.ready.is_empty() && self.waiting.is_empty()
    }

    /// Takes the records `pick` chooses out (collected ones first, then ready
    /// ones, in order); the others stay, in order.
    pub(super) fn take_out(&mut self, pick: &dyn Fn(&KRec) -> bool) -> Vec<KRec> {
        let mut taken = Vec::new();
        if !self.collector.is_empty() {
            for k in self.collector.flush().into_iter().flatten() {
                if pick(&k) {
                    taken.push(k);
                } else {
                    self.ready.extend(self.collector.add_deferred(k));
                }
            }
        }
        for batch in self.ready.iter_mut() {
            taken.extend(take_out(batch, pick));
        }
        self.ready.retain(|b| !b.is_empty());
        taken
    }

    /// Every record held: the collected ones, then the ready ones.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = KRec> + '_ {
        self.collector
            .flush()
            .into_iter()
            .chain(self.ready.drain(..))
            .flatten()
            .chain(self.waiting.drain(..))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use kpl_runtime::{Timer, VirtualClock};

    use super::*;
    use crate::pipeline::record::{Contents, Payload};

    fn krec(shard: &str, bytes: usize, deadline: Instant) -> KRec {
        KRec {
            records: Contents::Sealed(Vec::new()),
            partition_key: String::new(),
            explicit_hash_key: None,
            data: Payload::Ready(Bytes::from(vec![0; bytes])),
            shard: Some(ShardId::from(shard)),
            deadline,
            expiration: deadline + Duration::from_secs(30),
            aggregated: true,
            released: None,
            lock: None,
        }
    }

    fn assembler(max_count: usize) -> Assembler {
        let config = Config::builder()
            .collection_max_count(max_count)
            .build()
            .expect("config");
        Assembler::new(&config)
    }

    fn sizes(batch: &[KRec]) -> Vec<usize> {
        batch.iter().map(KRec::size).collect()
    }

    #[test]
    fn a_request_closes_at_its_deadline_at_its_count_or_at_256_kib_for_one_shard() {
        let t0 = VirtualClock::new().now();
        let ms = Duration::from_millis;
        let mut a = assembler(3);
        a.add(krec("a", 10, t0 + ms(10)));
        a.add(krec("b", 10, t0 + ms(20)));
        assert!(!a.has_ready());
        assert_eq!(a.next_deadline(), Some(t0 + ms(10)));
        a.poll(t0 + ms(9), false);
        assert!(!a.has_ready());
        a.poll(t0 + ms(10), false);
        assert_eq!(
            a.pop_ready().map(|b| b.len()),
            Some(2),
            "by its first deadline"
        );
        // By count.
        for _ in 0..3 {
            a.add(krec("a", 10, t0 + ms(50)));
        }
        assert_eq!(a.pop_ready().map(|b| b.len()), Some(3));
        // 256 KiB for one shard.
        a.add(krec("a", 200 * 1024, t0 + ms(50)));
        a.add(krec("b", 200 * 1024, t0 + ms(50)));
        assert!(!a.has_ready(), "two shards, neither at 256 KiB");
        a.add(krec("a", 100 * 1024, t0 + ms(50)));
        assert!(a.has_ready());
        assert!(!a.is_empty());
        a.pop_ready();
        // A flush closes whatever is collected.
        a.add(krec("c", 10, t0 + ms(50)));
        a.poll(t0, true);
        assert!(a.has_ready());
        a.pop_ready();
        assert!(a.is_empty());
    }

    #[test]
    fn a_request_is_cut_to_its_room_or_topped_up_with_those_behind_it() {
        let t0 = VirtualClock::new().now();
        let mut a = assembler(4);
        for size in [100, 101, 102] {
            a.add(krec("a", size, t0));
        }
        a.poll(t0, true);
        a.add(krec("a", 103, t0));
        a.poll(t0, true);
        // Room for two records: the rest goes back in front.
        let first = a.pop_ready().expect("ready");
        assert_eq!(sizes(&a.fill(first, 201, t0)), [100, 101]);
        let first = a.pop_ready().expect("ready");
        assert_eq!(sizes(&first), [102], "the rest, in front");
        // Fits whole: the ones behind join, up to the count.
        for size in [104, 105] {
            a.add(krec("a", size, t0));
            a.poll(t0, true);
        }
        assert_eq!(sizes(&a.fill(first, 10_000, t0)), [102, 103, 104, 105]);
        assert!(a.is_empty());
        // Never below one record, never past the request limit.
        a.add(krec("a", 100, t0));
        a.poll(t0, true);
        let first = a.pop_ready().expect("ready");
        assert_eq!(a.fill(first, 1, t0).len(), 1);
        a.add(krec("a", 400 * 1024, t0));
        a.poll(t0, true);
        a.add(krec("a", 400 * 1024, t0));
        a.poll(t0, true);
        let first = a.pop_ready().expect("ready");
        assert_eq!(a.fill(first, u64::MAX, t0).len(), 1, "at most 512 KiB");
        assert!(a.has_ready());
    }

    #[test]
    fn a_ready_request_with_an_expired_record_does_not_join_another() {
        let t0 = VirtualClock::new().now();
        let mut a = assembler(10);
        a.add(krec("a", 100, t0));
        a.poll(t0, true);
        let mut old = krec("a", 100, t0);
        old.expiration = t0;
        a.add(old);
        a.poll(t0, true);
        let first = a.pop_ready().expect("ready");
        assert_eq!(a.fill(first, 10_000, t0).len(), 1);
        assert!(a.has_ready());
    }

    #[test]
    fn records_taken_out_leave_the_others_in_order() {
        let t0 = VirtualClock::new().now();
        let mut a = assembler(10);
        a.add(krec("a", 1, t0));
        a.add(krec("b", 2, t0));
        a.poll(t0, true);
        a.add(krec("a", 3, t0));
        a.add(krec("b", 4, t0));
        let of_a = |k: &KRec| k.shard.as_ref().is_some_and(|s| s.as_str() == "a");
        assert_eq!(
            sizes(&a.take_out(&of_a)),
            [3, 1],
            "collected first, then ready"
        );
        assert_eq!(sizes(&a.drain().collect::<Vec<_>>()), [4, 2]);
        assert!(a.is_empty());
    }
}

//! What the producer and its stream workers share: the accounting of outstanding
//! records (backpressure, flushes, `oldest_record_age`, admission by drain), the
//! configuration, the runtime and the transport. The producer admits and waits
//! here; the workers release here; neither imports the other for it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use futures::channel::oneshot;
use kpl_runtime::Runtime;
use kpl_transport::{StreamId, Transport};

use crate::config::Config;
use crate::events::EventSink;
use crate::fasthash::FastMap;
use crate::pipeline::{Epoch, VerifyStats};

/// The unresolved records of one stream, in id order (ids grow with every put),
/// as runs of records admitted together: a put of a thousand records costs one
/// entry, not a thousand.
#[derive(Default)]
pub(crate) struct StreamOutstanding {
    /// Runs with an unresolved record, oldest first; a run leaves from the front
    /// when all of its records are resolved.
    runs: VecDeque<Run>,
    /// The index in `runs` of the run the last outcome was in: an aggregate's
    /// outcomes come together, so the next is likely in it too.
    last: usize,
    /// Bytes outstanding.
    pub(crate) bytes: usize,
    /// What the stream's pipeline can drain within a quarter of the time to live; admission
    /// stops there (see `pipeline::drain_limit`).
    pub(crate) limit: Option<usize>,
    /// Records handed to the stream's pipeline and not taken in by it yet (see
    /// [`INGEST_LIMIT`]).
    pub(crate) ingesting: usize,
}

/// How many records a stream's pipeline may have been handed and not taken in yet
/// before callers that can wait do (`put_records` and the `try_` calls that hand
/// back what did not fit). A record waiting to be taken in costs several times what
/// it costs once aggregated (its own key and data allocations and a 160-byte
/// pipeline record): a caller that puts faster than the pipeline takes records in
/// would otherwise pile them up without bound (half a million of them, about
/// 150 MB, in `kpl bench` with a million records). Waiting callers go on when the
/// pipeline has taken in half of them.
pub(crate) const INGEST_LIMIT: usize = 16_384;

/// Records with ids `first..first + len`, all put at `at`, of which `resolved` have
/// their outcome (each record is resolved once).
struct Run {
    first: u64,
    at: Instant,
    len: u32,
    resolved: u32,
}

impl StreamOutstanding {
    /// Nothing outstanding yet, with an admission limit of `limit` bytes.
    pub(crate) fn with_limit(limit: usize) -> Self {
        Self {
            limit: Some(limit),
            ..Self::default()
        }
    }

    /// Whether `bytes` more would go past the drain limit (one record always fits
    /// an empty stream).
    pub(crate) fn over(&self, bytes: usize) -> bool {
        self.limit
            .is_some_and(|limit| self.bytes > 0 && self.bytes + bytes > limit)
    }

    /// Counts the record `id`, put at `at` (ids grow from call to call); `join`
    /// when an earlier record of the same call was counted (a run is never joined by
    /// a later call, so a flush never waits for records put after it).
    pub(crate) fn admit(&mut self, id: u64, at: Instant, join: bool) {
        if let Some(last) = self.runs.back_mut().filter(|_| join)
            && last.first + u64::from(last.len) == id
            && last.len < u32::MAX
        {
            last.len += 1;
            return;
        }
        self.runs.push_back(Run {
            first: id,
            at,
            len: 1,
            resolved: 0,
        });
    }

    /// The record `id` has its outcome.
    pub(crate) fn resolve(&mut self, id: u64) {
        // Most outcomes come in order, or next to the last: try the run of the
        // last and the oldest run before searching.
        let holds = |r: &Run| id >= r.first && id - r.first < u64::from(r.len);
        let i = if self.runs.get(self.last).is_some_and(holds) {
            self.last
        } else if self.runs.front().is_some_and(holds) {
            0
        } else {
            self.runs
                .partition_point(|r| r.first + u64::from(r.len) <= id)
        };
        if let Some(run) = self.runs.get_mut(i)
            && id >= run.first
            && run.resolved < run.len
        {
            run.resolved += 1;
        }
        self.last = i;
        while self.runs.front().is_some_and(|r| r.resolved == r.len) {
            self.runs.pop_front();
            self.last = self.last.saturating_sub(1);
        }
    }

    /// The first id of the oldest run with an unresolved record, and when that run
    /// was put: no record put before it is unresolved, and every record with an id
    /// below it is resolved.
    pub(crate) fn oldest(&self) -> Option<(u64, Instant)> {
        self.runs.front().map(|r| (r.first, r.at))
    }
}

/// Outstanding records, for backpressure, flushes and `oldest_record_age`.
#[derive(Default)]
pub(crate) struct Accounting {
    pub(crate) outstanding: FastMap<StreamId, StreamOutstanding>,
    pub(crate) records: usize,
    pub(crate) bytes: usize,
    pub(crate) space_waiters: VecDeque<oneshot::Sender<()>>,
    pub(crate) flush_waiters: Vec<(Option<StreamId>, u64, oneshot::Sender<()>)>,
    /// A put waits for room under the outstanding caps, and the pipelines were
    /// told to send what they buffer: records they take in until room is freed go
    /// at once too. Cleared when records are released (a put that still finds no
    /// room then tells them again), so a long wait is one message per release, not
    /// one per waiter.
    pub(crate) room_wanted: bool,
}

impl Accounting {
    pub(crate) fn flushed(&self, stream: Option<&StreamId>, target: u64) -> bool {
        let below = |m: &StreamOutstanding| m.oldest().is_none_or(|(id, _)| id >= target);
        match stream {
            Some(s) => self.outstanding.get(s).is_none_or(below),
            None => self.outstanding.values().all(below),
        }
    }
}

/// State the producer and its stream workers share.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) runtime: Runtime,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) events: Option<Arc<dyn EventSink>>,
    pub(crate) accounting: Mutex<Accounting>,
    /// What records' arrivals count from in the pipelines (the producer's start).
    pub(crate) epoch: Epoch,
    /// What verify before resend has cost and found, all streams together.
    pub(crate) verify: Mutex<VerifyStats>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Accounting> {
        self.accounting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A stream's verifying cost and found `more`.
    pub(crate) fn verified(&self, more: VerifyStats) {
        self.verify
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(more);
    }

    /// A stream's drain limit changed: admission follows it.
    pub(crate) fn set_drain_limit(&self, stream: &StreamId, limit: Option<usize>) {
        let space: Vec<_> = {
            let mut acc = self.lock();
            let m = acc.outstanding.entry(stream.clone()).or_default();
            let grew = match (m.limit, limit) {
                (Some(old), Some(new)) => new > old,
                (Some(_), None) => true,
                _ => false,
            };
            m.limit = limit;
            if grew {
                acc.space_waiters.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        for w in space {
            let _ = w.send(());
        }
    }

    /// The pipeline of `stream` took in `n` records handed to it (or they were
    /// dropped with it): callers waiting for it to catch up go on at half the limit.
    /// Returns whether a put waits for room under the outstanding caps (the records
    /// are then sent without waiting for their buffered time).
    pub(crate) fn ingested(&self, stream: &StreamId, n: usize) -> bool {
        let (space, room_wanted): (Vec<_>, bool) = {
            let mut acc = self.lock();
            let room_wanted = acc.room_wanted;
            let Some(m) = acc.outstanding.get_mut(stream) else {
                return room_wanted;
            };
            m.ingesting = m.ingesting.saturating_sub(n);
            if m.ingesting > INGEST_LIMIT / 2 {
                return room_wanted;
            }
            (acc.space_waiters.drain(..).collect(), room_wanted)
        };
        for w in space {
            let _ = w.send(());
        }
        room_wanted
    }

    /// Records resolved: release their space and wake whoever waits on it.
    pub(crate) fn release(&self, stream: &StreamId, resolved: &[(u64, usize)]) {
        if resolved.is_empty() {
            return;
        }
        let (space, flushes) = {
            let mut acc = self.lock();
            if let Some(map) = acc.outstanding.get_mut(stream) {
                for (id, bytes) in resolved {
                    map.resolve(*id);
                    map.bytes -= bytes;
                }
            }
            acc.records -= resolved.len();
            acc.bytes -= resolved.iter().map(|(_, b)| b).sum::<usize>();
            acc.room_wanted = false;
            let space: Vec<_> = acc.space_waiters.drain(..).collect();
            let done = if acc.flush_waiters.is_empty() {
                Vec::new()
            } else {
                let waiters = std::mem::take(&mut acc.flush_waiters);
                let (done, pending): (Vec<_>, Vec<_>) = waiters
                    .into_iter()
                    .partition(|(s, target, _)| acc.flushed(s.as_ref(), *target));
                acc.flush_waiters = pending;
                done
            };
            (space, done)
        };
        for w in space {
            let _ = w.send(());
        }
        for (_, _, w) in flushes {
            let _ = w.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn runs_resolve_in_any_order_and_the_oldest_is_the_first_unresolved_run() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(5);
        let mut m = StreamOutstanding::default();
        // One call of ids 10..13 at t0, then (another stream's ids in between) one
        // of 20..22 at t1.
        for (i, id) in (10..13).enumerate() {
            m.admit(id, t0, i > 0);
        }
        for (i, id) in (20..22).enumerate() {
            m.admit(id, t1, i > 0);
        }
        assert_eq!(m.runs.len(), 2, "one run per call");
        assert_eq!(m.oldest(), Some((10, t0)));
        // Out of order: the newer run and part of the older one.
        m.resolve(21);
        m.resolve(11);
        m.resolve(10);
        assert_eq!(m.oldest(), Some((10, t0)), "12 is still outstanding");
        m.resolve(12);
        assert_eq!(m.oldest(), Some((20, t1)));
        m.resolve(20);
        assert_eq!(m.oldest(), None);
        // An id it never counted changes nothing.
        m.admit(30, t1, false);
        m.resolve(29);
        m.resolve(31);
        assert_eq!(m.oldest(), Some((30, t1)));
    }

    /// Outcomes in runs of an aggregate's (a few ids of one run, then of another),
    /// in a seeded random order: the oldest is always the first unresolved id's run,
    /// as a model that searches every time says.
    #[test]
    fn the_hint_of_the_last_run_never_changes_what_is_resolved() {
        let t = Instant::now();
        let mut rng = kpl_codec::SplitMix64::new(7);
        let mut m = StreamOutstanding::default();
        let calls: Vec<std::ops::Range<u64>> = (0..40).map(|c| c * 10..c * 10 + 7).collect();
        for call in &calls {
            for (i, id) in call.clone().enumerate() {
                m.admit(id, t, i > 0);
            }
        }
        let mut ids: Vec<u64> = calls.iter().flat_map(|c| c.clone()).collect();
        // Shuffle in chunks of 5 consecutive ids, as aggregates resolve together.
        let mut chunks: Vec<Vec<u64>> = ids.chunks(5).map(<[u64]>::to_vec).collect();
        for i in (1..chunks.len()).rev() {
            chunks.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        ids = chunks.concat();
        let mut resolved = std::collections::BTreeSet::new();
        for id in ids {
            m.resolve(id);
            m.resolve(id + 1000); // never counted: changes nothing
            resolved.insert(id);
            let first_open = calls
                .iter()
                .find(|c| (c.start..c.end).any(|i| !resolved.contains(&i)))
                .map(|c| c.start);
            assert_eq!(m.oldest().map(|(id, _)| id), first_open);
        }
        assert!(m.runs.is_empty());
    }

    #[test]
    fn a_later_call_never_joins_an_earlier_run() {
        // A flush waits for ids below its target: a run made before it must not
        // grow with records put after it, even at the same instant.
        let t = Instant::now();
        let mut m = StreamOutstanding::default();
        m.admit(1, t, false);
        m.admit(2, t, false);
        m.resolve(1);
        assert_eq!(m.oldest(), Some((2, t)));
        let mut acc = Accounting::default();
        acc.outstanding.insert(StreamId::parse("s"), m);
        assert!(acc.flushed(None, 2), "ids below 2 are resolved");
        assert!(!acc.flushed(None, 3));
    }
}

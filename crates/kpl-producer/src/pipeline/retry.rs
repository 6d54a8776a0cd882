//! The retry queue: records waiting out a backoff before they are routed again,
//! the backoff after request-level failures, and the warnings about records that
//! keep failing or fail for good (one line every few seconds, not one per record).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use kpl_runtime::SplitMix64;

use super::record::Rec;
use super::verify::Verifier;
use crate::fasthash::FastMap;

/// First backoff after a request-level failure; doubles per consecutive failure.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest backoff after request-level failures.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Attempts after which a still-retried record is logged at warn.
pub(super) const WARN_AFTER_ATTEMPTS: usize = 5;
/// At most one warning of a kind per stream in this time.
const WARN_INTERVAL: Duration = Duration::from_secs(5);

/// Records counted for a warning of one kind, said at most once per
/// [`WARN_INTERVAL`] with how many there were since the last one.
#[derive(Default)]
struct Warned {
    records: usize,
    at: Option<Instant>,
}

impl Warned {
    /// Counts `records`; returns how many to report when a warning is due now.
    fn due(&mut self, records: usize, now: Instant) -> Option<usize> {
        self.records += records;
        if self
            .at
            .is_some_and(|at| now.saturating_duration_since(at) < WARN_INTERVAL)
        {
            return None;
        }
        self.at = Some(now);
        Some(std::mem::take(&mut self.records))
    }
}

/// Records in backoff, by when they go again.
///
/// Rules: a record waits at most until its time; records leave in time order; a
/// record taken out early (a late answer settled it) is not handed out again; the
/// backoff after request-level failures doubles per failure in a row (from
/// [`BACKOFF_BASE`] to [`BACKOFF_MAX`]), jittered to between half and all of
/// it, and starts over after an answer.
pub(super) struct RetryQueue {
    /// (when, record id) of the records in backoff.
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    recs: FastMap<u64, Rec>,
    /// Request-level failures in a row.
    failures: u32,
    /// Backoff jitter.
    rng: SplitMix64,
    /// Records that reached [`WARN_AFTER_ATTEMPTS`].
    persisting: Warned,
    /// Records of requests that failed for good.
    fatal: Warned,
    /// In verify-before-resend mode, the records of requests that may have stored
    /// them, waiting to be looked for instead of resent.
    pub(super) verifier: Verifier,
}

impl RetryQueue {
    /// An empty queue; jitter from `seed`.
    pub(super) fn new(seed: u64) -> Self {
        Self {
            due: BinaryHeap::new(),
            recs: FastMap::default(),
            failures: 0,
            rng: SplitMix64::new(seed),
            persisting: Warned::default(),
            fatal: Warned::default(),
            verifier: Verifier::default(),
        }
    }

    /// Holds `rec` until `at`.
    pub(super) fn hold(&mut self, rec: Rec, at: Instant) {
        let id = rec.id();
        self.due.push(Reverse((at, id)));
        self.recs.insert(id, rec);
    }

    /// The next record whose backoff has passed at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Rec> {
        while let Some(&Reverse((at, id))) = self.due.peek() {
            if at > now {
                return None;
            }
            self.due.pop();
            if let Some(rec) = self.recs.remove(&id) {
                return Some(rec);
            }
        }
        None
    }

    /// Takes the record `id` out before its time, if it is held.
    pub(super) fn take(&mut self, id: u64) -> Option<Rec> {
        self.recs.remove(&id)
    }

    /// When the next backoff ends.
    pub(super) fn next_at(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((t, _))| *t)
    }

    /// Whether no record is held.
    pub(super) fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// Takes every record out.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = Rec> + '_ {
        self.due.clear();
        self.recs.drain().map(|(_, r)| r)
    }

    /// A request failed and may be retried: the backoff before its records go
    /// again (at least `min`).
    pub(super) fn request_failed(&mut self, min: Duration) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = BACKOFF_BASE.saturating_mul(1u32 << self.failures.min(10).saturating_sub(1));
        exp.min(BACKOFF_MAX)
            .mul_f64(0.5 + 0.5 * self.rng.unit())
            .max(min)
    }

    /// A request was answered: the next failure starts the backoff over.
    pub(super) fn request_answered(&mut self) {
        self.failures = 0;
    }

    /// A record goes round again after `attempts` attempts: how many records to
    /// warn about as still failing, when a warning is due.
    pub(super) fn persisting(&mut self, attempts: usize, now: Instant) -> Option<usize> {
        if attempts != WARN_AFTER_ATTEMPTS {
            return None;
        }
        self.persisting.due(1, now)
    }

    /// `records` failed for good: how many to warn about, when a warning is due.
    pub(super) fn fatal(&mut self, records: usize, now: Instant) -> Option<usize> {
        self.fatal.due(records, now)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kpl_codec::HashKey;
    use kpl_runtime::{Timer, VirtualClock};

    use super::*;
    use crate::completers::Receipt;
    use crate::pipeline::Epoch;

    fn rec(id: u64, now: Instant) -> Rec {
        let receipt = Receipt::new(id);
        Rec::new(
            "k".into(),
            None,
            HashKey::from_partition_key("k"),
            Bytes::from_static(b"d"),
            now,
            Epoch::new(now),
            receipt,
        )
    }

    #[test]
    fn a_warning_is_due_once_per_interval_with_the_count_since_the_last() {
        let t0 = VirtualClock::new().now();
        let mut w = Warned::default();
        assert_eq!(w.due(500, t0), Some(500));
        assert_eq!(w.due(500, t0 + Duration::from_secs(1)), None);
        assert_eq!(w.due(20, t0 + Duration::from_secs(4)), None);
        assert_eq!(w.due(1, t0 + WARN_INTERVAL), Some(521));
        assert_eq!(w.due(1, t0 + WARN_INTERVAL), None);
    }

    #[test]
    fn records_leave_in_time_order_and_once() {
        let t0 = VirtualClock::new().now();
        let mut q = RetryQueue::new(7);
        let ms = Duration::from_millis;
        q.hold(rec(1, t0), t0 + ms(30));
        q.hold(rec(2, t0), t0 + ms(10));
        q.hold(rec(3, t0), t0 + ms(20));
        assert_eq!(q.next_at(), Some(t0 + ms(10)));
        assert!(q.pop_due(t0 + ms(9)).is_none());
        // Taken out early: never handed out.
        assert!(q.take(3).is_some());
        assert!(q.take(3).is_none());
        let ids: Vec<u64> = std::iter::from_fn(|| q.pop_due(t0 + ms(30)))
            .map(|r| r.id())
            .collect();
        assert_eq!(ids, [2, 1]);
        assert!(q.is_empty());
        assert_eq!(q.next_at(), None);
    }

    #[test]
    fn draining_empties_the_queue() {
        let t0 = VirtualClock::new().now();
        let mut q = RetryQueue::new(7);
        q.hold(rec(1, t0), t0);
        q.hold(rec(2, t0), t0);
        assert_eq!(q.drain().count(), 2);
        assert!(q.is_empty());
        assert_eq!(q.next_at(), None);
        assert!(q.pop_due(t0).is_none());
    }

    #[test]
    fn the_backoff_doubles_per_failure_in_a_row_up_to_its_cap_and_starts_over_after_an_answer() {
        let mut q = RetryQueue::new(7);
        for n in 0..12u32 {
            let full = BACKOFF_BASE.saturating_mul(1 << n.min(9)).min(BACKOFF_MAX);
            let b = q.request_failed(Duration::ZERO);
            assert!(
                b >= full / 2 && b <= full,
                "failure {}: {b:?} of {full:?}",
                n + 1
            );
        }
        q.request_answered();
        assert!(q.request_failed(Duration::ZERO) <= BACKOFF_BASE);
        let long = Duration::from_secs(60);
        assert_eq!(q.request_failed(long), long, "at least the minimum");
    }

    #[test]
    fn a_record_is_warned_about_once_when_it_reaches_the_attempts() {
        let t0 = VirtualClock::new().now();
        let mut q = RetryQueue::new(7);
        assert_eq!(q.persisting(WARN_AFTER_ATTEMPTS - 1, t0), None);
        assert_eq!(q.persisting(WARN_AFTER_ATTEMPTS, t0), Some(1));
        assert_eq!(q.persisting(WARN_AFTER_ATTEMPTS + 1, t0), None);
        assert_eq!(
            q.persisting(WARN_AFTER_ATTEMPTS, t0),
            None,
            "within the interval"
        );
        assert_eq!(q.fatal(3, t0), Some(3));
        assert_eq!(q.fatal(3, t0), None);
    }
}

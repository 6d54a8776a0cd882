//! What the pipeline tells: the outcomes of settled records, to be taken by the
//! driver ([`Settled`]), and events for whoever listens, with the records stored on
//! one shard summarised into one event.

use std::sync::Arc;

use crate::completers::Receipt;
use crate::events::{Event, EventSink, Summary};
use crate::result::{RecordId, RecordResult};
use crate::written::{FirstTry, FirstTryIndex, Written};

/// The user records settled since the last look, to be handed to whoever awaits
/// them: their outcomes, and beside them (same order) where each goes.
///
/// The outcomes are in the layout an [`Outcomes`](crate::Outcomes) queue takes: when
/// they all go to one queue (the usual case), they are handed over whole, without
/// moving an outcome.
#[derive(Default)]
pub(crate) struct Settled {
    /// (record id, outcome) of each, as written.
    pub(crate) outcomes: Written,
    /// (bytes it counted for the outstanding caps, its receipt) of each.
    pub(crate) receipts: Vec<(usize, Receipt)>,
}

impl Settled {
    fn push(&mut self, size: usize, receipt: Receipt, result: RecordResult) {
        self.outcomes.push(RecordId(receipt.id()), result);
        self.receipts.push((size, receipt));
    }

    /// Room for `n` more (a request's records, settled by its answer), so the
    /// outcomes are not moved by growing.
    fn reserve(&mut self, n: usize) {
        self.outcomes.reserve(n);
        self.receipts.reserve(n);
    }
}

/// Records stored on one shard in a row, summarised into one event.
struct StoredRun {
    shard: Arc<str>,
    /// Their buffering times, in milliseconds.
    time_ms: Summary,
    /// Their failed attempts before the one that stored them.
    retries: Summary,
    /// How many an earlier attempt may have stored too.
    possibly_duplicated: u64,
}

/// The outcomes not taken yet, and the events.
///
/// Rules: each outcome is taken once, in the order settled; with no listener,
/// nothing is summarised; records stored on one shard in a row make one
/// [`Event::BufferingTime`], told when the shard changes or the outcomes are taken.
pub(super) struct Report {
    events: Option<Arc<dyn EventSink>>,
    stored: Option<StoredRun>,
    settled: Settled,
}

impl Report {
    /// Events go to `events`, if any.
    pub(super) fn new(events: Option<Arc<dyn EventSink>>) -> Self {
        Self {
            events,
            stored: None,
            settled: Settled::default(),
        }
    }

    /// Tells an event of `stream`, if anyone listens.
    #[inline]
    pub(super) fn emit<'a>(&self, stream: &'a str, event: impl FnOnce(&'a str) -> Event<'a>) {
        if let Some(sink) = &self.events {
            sink.on_event(&event(stream));
        }
    }

    /// Whether anyone listens.
    #[inline]
    pub(super) fn listens(&self) -> bool {
        self.events.is_some()
    }

    /// Counts a record of `stream` stored on `shard_id` after `time_ms` of
    /// buffering and `retries` failed attempts (`twice`: an earlier attempt may
    /// have stored it too).
    pub(super) fn stored(
        &mut self,
        stream: &str,
        shard_id: &Arc<str>,
        time_ms: f64,
        retries: usize,
        twice: bool,
    ) {
        let same = self
            .stored
            .as_ref()
            .is_some_and(|run| Arc::ptr_eq(&run.shard, shard_id) || *run.shard == **shard_id);
        if !same {
            self.tell_stored(stream);
            self.stored = Some(StoredRun {
                shard: shard_id.clone(),
                time_ms: Summary::default(),
                retries: Summary::default(),
                possibly_duplicated: 0,
            });
        }
        if let Some(run) = &mut self.stored {
            run.time_ms.add(time_ms);
            run.retries.add(retries as f64);
            run.possibly_duplicated += u64::from(twice);
        }
    }

    fn tell_stored(&mut self, stream: &str) {
        if let Some(run) = self.stored.take() {
            self.emit(stream, |stream| Event::BufferingTime {
                stream,
                shard_id: &run.shard,
                time_ms: run.time_ms,
                retries: run.retries,
                possibly_duplicated: run.possibly_duplicated,
            });
        }
    }

    /// A record has its outcome: `result`, for `receipt`; it counted `size` bytes.
    #[inline]
    pub(super) fn settle(&mut self, size: usize, receipt: Receipt, result: RecordResult) {
        self.settled.push(size, receipt, result);
    }

    /// Keeps what the records stored by `first` share, for
    /// [`settle_first_try`](Self::settle_first_try).
    pub(super) fn first_try(&mut self, first: FirstTry) -> FirstTryIndex {
        self.settled.outcomes.first_try(first)
    }

    /// A record put `arrival` after the epoch was stored by the first try `by` (an
    /// index [`first_try`](Self::first_try) gave since the last
    /// [`take`](Self::take)), for `receipt`; it counted `size` bytes.
    #[inline]
    pub(super) fn settle_first_try(
        &mut self,
        size: usize,
        receipt: Receipt,
        by: FirstTryIndex,
        arrival: u64,
    ) {
        let settled = &mut self.settled;
        settled
            .outcomes
            .push_first_try(RecordId(receipt.id()), by, arrival);
        settled.receipts.push((size, receipt));
    }

    /// Room for `n` more outcomes.
    pub(super) fn reserve(&mut self, n: usize) {
        self.settled.reserve(n);
    }

    /// The outcomes since the last call (the stored run of `stream` is told first).
    pub(super) fn take(&mut self, stream: &str) -> Settled {
        self.tell_stored(stream);
        std::mem::take(&mut self.settled)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::completers::Receipt;

    /// (shard, records, possibly duplicated) of each BufferingTime heard.
    #[derive(Default)]
    struct Heard(Mutex<Vec<(String, u64, u64)>>);

    impl EventSink for Heard {
        fn on_event(&self, event: &Event<'_>) {
            if let Event::BufferingTime {
                shard_id,
                time_ms,
                possibly_duplicated,
                ..
            } = event
            {
                let mut heard = self.0.lock().expect("lock");
                heard.push((shard_id.to_string(), time_ms.count, *possibly_duplicated));
            }
        }
    }

    fn outcome(success: bool) -> RecordResult {
        RecordResult {
            success,
            shard_id: None,
            sequence_number: None,
            attempts: Default::default(),
        }
    }

    #[test]
    fn outcomes_are_taken_once_in_the_order_settled() {
        let mut r = Report::new(None);
        assert!(!r.listens());
        let t0 = std::time::Instant::now();
        for id in [3, 1, 2] {
            let receipt = Receipt::new(id);
            r.settle(10 * id as usize, receipt, outcome(id != 1));
            if id == 1 {
                // A record stored by its first attempt, written by its parts.
                let by = r.first_try(FirstTry {
                    shard_id: "shard-a".into(),
                    sequence_number: "7".into(),
                    started: t0,
                    started_at: 0,
                    duration: std::time::Duration::ZERO,
                });
                r.settle_first_try(50, Receipt::new(5), by, 0);
            }
        }
        let Settled { outcomes, receipts } = r.take("s");
        let outcomes: Vec<(RecordId, RecordResult)> = outcomes.into_iter().collect();
        let ids: Vec<u64> = outcomes.iter().map(|(id, _)| id.0).collect();
        assert_eq!(ids, [3, 1, 5, 2]);
        assert!(!outcomes[1].1.is_success());
        assert!(outcomes[2].1.is_success());
        assert_eq!(outcomes[2].1.sequence_number.as_deref(), Some("7"));
        let sizes: Vec<usize> = receipts.iter().map(|(size, _)| *size).collect();
        assert_eq!(sizes, [30, 10, 50, 20]);
        assert_eq!(r.take("s").outcomes.len(), 0, "taken once");
    }

    #[test]
    fn records_stored_on_one_shard_in_a_row_make_one_event() {
        let heard = Arc::new(Heard::default());
        let mut r = Report::new(Some(heard.clone()));
        assert!(r.listens());
        let (a, b): (Arc<str>, Arc<str>) = ("shard-a".into(), "shard-b".into());
        r.stored("s", &a, 1.0, 0, false);
        r.stored("s", &"shard-a".into(), 2.0, 1, true);
        assert!(heard.0.lock().expect("lock").is_empty(), "the run goes on");
        r.stored("s", &b, 3.0, 0, false);
        r.take("s");
        r.take("s");
        assert_eq!(
            *heard.0.lock().expect("lock"),
            [("shard-a".to_owned(), 2, 1), ("shard-b".to_owned(), 1, 0)]
        );
    }
}

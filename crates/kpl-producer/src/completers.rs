//! Where each record's outcome goes, kept by its stream's driver in one slab: a
//! record in the pipeline carries only a [`Receipt`] (its id and its key in the
//! slab), not a handle of its own. Records put together to one
//! [`Outcomes`](crate::Outcomes) queue share one reference to it; a record put for a
//! [`RecordFuture`](crate::RecordFuture) has its future's slot in the slab.
//!
//! Rules: every record filed is answered exactly once: by [`Completers::deliver`]
//! when the pipeline settles it, or as shut down when the slab is dropped with it
//! still filed (the driver stopped before the record had an outcome), or when a
//! [`Put`] is dropped before it was filed (the driver was gone). No outcome is ever
//! left hanging, and no queue waits for ever.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pipeline::{Rec, Settled};
use crate::result::{
    Attempt, AttemptError, Attempts, ErrorCode, Queue, RecordId, RecordResult, Slot, fill,
};
use crate::written::Written;

/// A record's place with its driver: its id (as the producer numbered it) and its
/// key in the driver's [`Completers`] (given when the driver files it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Receipt {
    id: u64,
    key: u32,
}

impl Receipt {
    /// The receipt of record `id`, not filed yet.
    pub(crate) fn new(id: u64) -> Self {
        Self::filed(id, u32::MAX)
    }

    /// The receipt of record `id` filed under `key`.
    pub(crate) fn filed(id: u64, key: u32) -> Self {
        Self { id, key }
    }

    /// Its key with its driver.
    pub(crate) fn key(self) -> u32 {
        self.key
    }

    /// The record's id.
    pub(crate) fn id(self) -> u64 {
        self.id
    }
}

/// Where the outcomes of the records of one put go.
pub(crate) enum Issued {
    /// Each record's own future (one slot per record, in order).
    Futures(Vec<Arc<Slot>>),
    /// One queue for all of them.
    Queue(Arc<Queue>),
}

/// Records admitted by one put, on their way to their stream's driver, with where
/// their outcomes go. Dropped before the driver filed them (the driver is gone),
/// it answers each of them as shut down.
pub(crate) struct Put {
    recs: Vec<Rec>,
    to: Option<Issued>,
}

impl Put {
    /// `recs`, whose outcomes go `to` (for futures: one per record, in order).
    pub(crate) fn new(recs: Vec<Rec>, to: Issued) -> Self {
        debug_assert!(match &to {
            Issued::Futures(slots) => slots.len() == recs.len(),
            Issued::Queue(_) => true,
        });
        Self { recs, to: Some(to) }
    }

    /// How many records it carries.
    pub(crate) fn len(&self) -> usize {
        self.recs.len()
    }
}

impl Drop for Put {
    fn drop(&mut self) {
        let Some(to) = self.to.take() else {
            return;
        };
        match to {
            Issued::Futures(slots) => {
                for slot in slots {
                    let at = slot.arrival;
                    fill(&slot, shut_down(at));
                }
            }
            Issued::Queue(queue) => {
                let at = queue.made;
                queue.push(
                    self.recs
                        .iter()
                        .map(|r| (RecordId(r.receipt().id), shut_down(at)))
                        .collect(),
                );
            }
        }
    }
}

/// The outcome of a record the producer stopped before it had one.
fn shut_down(at: Instant) -> RecordResult {
    RecordResult {
        success: false,
        shard_id: None,
        sequence_number: None,
        attempts: Attempts::one(Attempt {
            started: at,
            delay: Duration::ZERO,
            duration: Duration::ZERO,
            shard_id: None,
            outcome: Err(Box::new(AttemptError::new(
                ErrorCode::Shutdown,
                "the producer stopped before this record had an outcome",
                false,
            ))),
        }),
    }
}

/// One filed record: where its outcome goes (and, for a queue, under which id).
enum Entry {
    Vacant,
    Future {
        slot: Arc<Slot>,
    },
    /// Its queue's index in [`Completers::queues`].
    Queued {
        id: u64,
        queue: u32,
    },
}

/// The slab of where outcomes go, for the records of one stream in its pipeline.
#[derive(Default)]
pub(crate) struct Completers {
    entries: Vec<Entry>,
    /// Keys of vacant entries, reused first.
    vacant: Vec<u32>,
    /// Each queue records are filed to, with how many of them are filed now
    /// (dropped, as `None`, when none is; few at a time: usually one).
    queues: Vec<Option<(Arc<Queue>, usize)>>,
    /// Outcomes for queues of a round that goes to several: one batch per run.
    batches: Vec<(u32, Written)>,
}

impl Completers {
    /// Files the records of `put`, giving each its key; returns them for the
    /// pipeline.
    pub(crate) fn file(&mut self, mut put: Put) -> Vec<Rec> {
        let mut recs = std::mem::take(&mut put.recs);
        match put.to.take() {
            Some(Issued::Futures(slots)) => {
                for (rec, slot) in recs.iter_mut().zip(slots) {
                    let key = self.insert(Entry::Future { slot });
                    rec.file(key);
                }
            }
            Some(Issued::Queue(queue)) => {
                let q = self.queue_index(queue, recs.len());
                for rec in &mut recs {
                    let id = rec.receipt().id;
                    let key = self.insert(Entry::Queued { id, queue: q });
                    rec.file(key);
                }
            }
            None => {}
        }
        recs
    }

    fn insert(&mut self, entry: Entry) -> u32 {
        match self.vacant.pop() {
            Some(key) => {
                self.entries[key as usize] = entry;
                key
            }
            None => {
                let key = u32::try_from(self.entries.len()).expect("fewer than 2^32 records");
                self.entries.push(entry);
                key
            }
        }
    }

    /// The index of `queue` in the table, counting `n` more records filed to it.
    fn queue_index(&mut self, queue: Arc<Queue>, n: usize) -> u32 {
        let found = self
            .queues
            .iter()
            .position(|q| q.as_ref().is_some_and(|(q, _)| Arc::ptr_eq(q, &queue)));
        let index = match found {
            Some(i) => i,
            None => match self.queues.iter().position(Option::is_none) {
                Some(i) => {
                    self.queues[i] = Some((queue, 0));
                    i
                }
                None => {
                    self.queues.push(Some((queue, 0)));
                    self.queues.len() - 1
                }
            },
        };
        if let Some((_, live)) = &mut self.queues[index] {
            *live += n;
        }
        index as u32
    }

    /// Takes the entry of `receipt` out (vacant after).
    fn take(&mut self, receipt: Receipt) -> Entry {
        let Some(entry) = self.entries.get_mut(receipt.key as usize) else {
            return Entry::Vacant;
        };
        let entry = std::mem::replace(entry, Entry::Vacant);
        if !matches!(entry, Entry::Vacant) {
            self.vacant.push(receipt.key);
        }
        entry
    }

    /// `n` records of queue `q` are answered: the table lets go of a queue none is
    /// filed to.
    fn answered(&mut self, q: u32, n: usize) {
        if let Some(slot) = self.queues.get_mut(q as usize)
            && let Some((_, live)) = slot
        {
            *live = live.saturating_sub(n);
            if *live == 0 {
                *slot = None;
            }
        }
    }

    fn queue(&self, q: u32) -> Option<&Arc<Queue>> {
        self.queues
            .get(q as usize)
            .and_then(|s| s.as_ref().map(|(q, _)| q))
    }

    /// Hands settled records their outcomes, noting each one's (id, bytes) in
    /// `resolved`. When every outcome goes to one queue (the usual case), the
    /// pipeline's outcomes are handed over whole, as written: each is made when
    /// the queue's owner takes it.
    pub(crate) fn deliver(&mut self, settled: Settled, resolved: &mut Vec<(u64, usize)>) {
        let Settled { outcomes, receipts } = settled;
        if receipts.is_empty() {
            return;
        }
        let first = match self.entries.get(receipts[0].1.key as usize) {
            Some(Entry::Queued { queue, .. }) => Some(*queue),
            _ => None,
        };
        let one_queue = first.filter(|&q| {
            receipts.iter().all(|(_, t)| {
                matches!(self.entries.get(t.key as usize),
                    Some(Entry::Queued { queue, .. }) if *queue == q)
            })
        });
        if let Some(q) = one_queue {
            for &(size, receipt) in &receipts {
                resolved.push((receipt.id, size));
                self.take(receipt);
            }
            if let Some(queue) = self.queue(q).cloned() {
                queue.push(outcomes);
            }
            self.answered(q, receipts.len());
            return;
        }
        // Futures, and several queues: one batch per run of a queue's records.
        let room = outcomes.len();
        for (outcome, (size, receipt)) in outcomes.into_iter().zip(receipts) {
            resolved.push((receipt.id, size));
            match self.take(receipt) {
                Entry::Future { slot } => fill(&slot, outcome.1),
                Entry::Queued { queue, .. } => {
                    self.answered_later(queue, outcome, room);
                }
                Entry::Vacant => {}
            }
        }
        self.flush_batches();
    }

    /// Adds an outcome of queue `q` to this round's batches (a new batch when the
    /// last one is another queue's).
    fn answered_later(&mut self, q: u32, (id, result): (RecordId, RecordResult), room: usize) {
        match self.batches.last_mut() {
            Some((last, batch)) if *last == q => batch.push(id, result),
            _ => {
                let mut batch = Written::default();
                batch.reserve(room);
                batch.push(id, result);
                self.batches.push((q, batch));
            }
        }
    }

    fn flush_batches(&mut self) {
        for (q, batch) in std::mem::take(&mut self.batches) {
            let n = batch.len();
            if let Some(queue) = self.queue(q) {
                queue.push(batch);
            }
            self.answered(q, n);
        }
    }

    /// How many records are filed and not answered.
    #[cfg(test)]
    pub(crate) fn filed(&self) -> usize {
        self.entries.len() - self.vacant.len()
    }
}

impl Drop for Completers {
    /// Answers every record still filed as shut down (the driver stopped before
    /// the pipeline settled it).
    fn drop(&mut self) {
        let entries = std::mem::take(&mut self.entries);
        let room = entries.len();
        for entry in entries {
            match entry {
                Entry::Vacant => {}
                Entry::Future { slot } => {
                    let at = slot.arrival;
                    fill(&slot, shut_down(at));
                }
                Entry::Queued { id, queue } => {
                    let at = self.queue(queue).map_or_else(Instant::now, |q| q.made);
                    self.answered_later(queue, (RecordId(id), shut_down(at)), room);
                }
            }
        }
        self.flush_batches();
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kpl_codec::HashKey;

    use super::*;
    use crate::Outcomes;
    use crate::pipeline::{Epoch, Settled};
    use crate::result::slot;

    fn recs(ids: std::ops::Range<u64>) -> Vec<Rec> {
        let t0 = Instant::now();
        ids.map(|id| {
            Rec::new(
                format!("k{id}"),
                None,
                HashKey::new(u128::from(id)),
                Bytes::from_static(b"data"),
                t0,
                Epoch::new(t0),
                Receipt::new(id),
            )
        })
        .collect()
    }

    fn ok() -> RecordResult {
        let mut r = shut_down(Instant::now());
        r.success = true;
        r
    }

    /// The pipeline's settlement of `recs` (each 10 bytes), in the order given.
    fn settled(recs: &[Rec]) -> Settled {
        let mut s = Settled::default();
        for r in recs {
            s.outcomes.push(RecordId(r.receipt().id()), ok());
            s.receipts.push((10, r.receipt()));
        }
        s
    }

    #[test]
    fn records_put_to_one_queue_get_their_outcomes_in_one_batch_and_leave_the_slab() {
        let outcomes = Outcomes::new();
        outcomes.admitted(3);
        let mut slab = Completers::default();
        let filed = slab.file(Put::new(
            recs(0..3),
            Issued::Queue(outcomes.queue().clone()),
        ));
        assert_eq!(slab.filed(), 3);
        let mut resolved = Vec::new();
        slab.deliver(settled(&filed[1..]), &mut resolved);
        slab.deliver(settled(&filed[..1]), &mut resolved);
        assert_eq!(resolved, vec![(1, 10), (2, 10), (0, 10)]);
        assert_eq!(slab.filed(), 0);
        let ids: Vec<u64> = outcomes.take().map(|(id, _)| id.0).collect();
        assert_eq!(ids, vec![1, 2, 0]);
        assert!(
            slab.queues.iter().all(Option::is_none),
            "the queue is let go"
        );
    }

    #[test]
    fn futures_and_two_queues_each_get_their_own_outcomes() {
        let (a, b) = (Outcomes::new(), Outcomes::new());
        a.admitted(2);
        b.admitted(2);
        let mut slab = Completers::default();
        let mut filed = slab.file(Put::new(recs(0..2), Issued::Queue(a.queue().clone())));
        filed.extend(slab.file(Put::new(recs(2..4), Issued::Queue(b.queue().clone()))));
        let (slots, futures): (Vec<_>, Vec<_>) = (0..2).map(|_| slot(Instant::now())).unzip();
        filed.extend(slab.file(Put::new(recs(4..6), Issued::Futures(slots))));
        // Keys are reused once free, and every record has its own while filed.
        let mut keys: Vec<u32> = filed.iter().map(|r| r.receipt().key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 6);
        let mut resolved = Vec::new();
        // Interleaved: a, future, b, a, future, b.
        let order = [0, 4, 2, 1, 5, 3];
        let in_order: Vec<Rec> = {
            let mut by_id: Vec<Option<Rec>> = filed.into_iter().map(Some).collect();
            order.iter().map(|&i| by_id[i].take().unwrap()).collect()
        };
        slab.deliver(settled(&in_order), &mut resolved);
        assert_eq!(resolved.len(), 6);
        assert_eq!(slab.filed(), 0);
        let ids = |o: &Outcomes| o.take().map(|(id, _)| id.0).collect::<Vec<_>>();
        assert_eq!(ids(&a), vec![0, 1]);
        assert_eq!(ids(&b), vec![2, 3]);
        for f in futures {
            assert!(futures::executor::block_on(f).is_success());
        }
        let reused = slab.file(Put::new(recs(6..7), Issued::Queue(a.queue().clone())));
        assert!(reused[0].receipt().key < 6, "a vacant key is reused");
    }

    #[test]
    fn records_still_filed_when_the_slab_is_dropped_are_answered_as_shut_down() {
        let outcomes = Outcomes::new();
        outcomes.admitted(2);
        let mut slab = Completers::default();
        let _q = slab.file(Put::new(
            recs(0..2),
            Issued::Queue(outcomes.queue().clone()),
        ));
        let (slot, future) = slot(Instant::now());
        let _f = slab.file(Put::new(recs(2..3), Issued::Futures(vec![slot])));
        drop(slab);
        let got: Vec<(u64, Option<ErrorCode>)> = outcomes
            .take()
            .map(|(id, r)| (id.0, r.error_code().cloned()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, Some(ErrorCode::Shutdown)),
                (1, Some(ErrorCode::Shutdown))
            ]
        );
        let r = futures::executor::block_on(future);
        assert_eq!(r.error_code(), Some(&ErrorCode::Shutdown));
        assert_eq!(outcomes.pending(), 0);
    }

    #[test]
    fn a_put_dropped_before_it_was_filed_answers_its_records_as_shut_down() {
        let outcomes = Outcomes::new();
        outcomes.admitted(2);
        drop(Put::new(
            recs(5..7),
            Issued::Queue(outcomes.queue().clone()),
        ));
        let ids: Vec<u64> = outcomes.take().map(|(id, _)| id.0).collect();
        assert_eq!(ids, vec![5, 6]);
        let (slot, future) = slot(Instant::now());
        drop(Put::new(recs(0..1), Issued::Futures(vec![slot])));
        let r = futures::executor::block_on(future);
        assert_eq!(r.error_code(), Some(&ErrorCode::Shutdown));
    }
}

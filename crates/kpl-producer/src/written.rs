//! Outcomes as the pipeline writes them: once per record, and small.
//!
//! Most records are stored by their first attempt, and the user records of one
//! Kinesis record share everything their outcome says but when each was put: the
//! shard, the sequence number, the request's start and length. [`Written`] keeps
//! that shared part once per Kinesis record ([`FirstTry`]) and, per user record,
//! its id and when it was put; a [`RecordResult`] is made only when the outcome is
//! taken: by the owner of an [`Outcomes`](crate::Outcomes) queue, on its thread, or
//! by the driver for a record's own future (and for a round whose records go to
//! several queues, which it splits). Any other outcome (a retried record, a
//! failure) is written whole, boxed.
//!
//! Rules: the outcomes come out in the order written, each once, and an outcome
//! written by its parts equals the one a first attempt of the record makes
//! (`Member::new_attempt` and `StreamPipeline::succeed`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::result::{Attempt, Attempts, RecordId, RecordResult};

/// What the user records stored by one first attempt share: the Kinesis record's
/// shard and sequence number, and the request's clock.
#[derive(Clone, Debug)]
pub(crate) struct FirstTry {
    /// The shard that stored it.
    pub(crate) shard_id: Arc<str>,
    /// Its sequence number there.
    pub(crate) sequence_number: Arc<str>,
    /// When the request was sent.
    pub(crate) started: Instant,
    /// `started`, as an offset from the pipeline's epoch (as a record's arrival is).
    pub(crate) started_at: u64,
    /// How long the request took.
    pub(crate) duration: Duration,
}

/// A [`FirstTry`]'s place in its [`Written`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FirstTryIndex(u32);

/// One user record's outcome, as written.
#[derive(Debug)]
enum Told {
    /// Stored by its first attempt, that of `FirstTry` number `by`; it was put
    /// `arrival` after the pipeline's epoch.
    FirstTry { by: u32, arrival: u64 },
    /// Any other outcome, whole (boxed: these are few, and the common entry stays
    /// 24 bytes).
    Result(Box<RecordResult>),
}

/// Outcomes in the order written (see the module's doc).
#[derive(Debug, Default)]
pub(crate) struct Written {
    first_tries: Vec<FirstTry>,
    entries: Vec<(RecordId, Told)>,
}

impl Written {
    /// How many outcomes it holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Room for `n` more outcomes.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.entries.reserve(n);
    }

    /// Record `id`'s outcome, whole.
    pub(crate) fn push(&mut self, id: RecordId, result: RecordResult) {
        self.entries.push((id, Told::Result(Box::new(result))));
    }

    /// Keeps what the records of `first` share; their outcomes name it by the
    /// index returned.
    pub(crate) fn first_try(&mut self, first: FirstTry) -> FirstTryIndex {
        let index = u32::try_from(self.first_tries.len()).expect("fewer than 2^32 requests");
        self.first_tries.push(first);
        FirstTryIndex(index)
    }

    /// Record `id`, put `arrival` after the epoch, was stored by the first try
    /// `by` (an index this `Written` gave).
    pub(crate) fn push_first_try(&mut self, id: RecordId, by: FirstTryIndex, arrival: u64) {
        debug_assert!((by.0 as usize) < self.first_tries.len());
        self.entries
            .push((id, Told::FirstTry { by: by.0, arrival }));
    }
}

impl FromIterator<(RecordId, RecordResult)> for Written {
    fn from_iter<I: IntoIterator<Item = (RecordId, RecordResult)>>(outcomes: I) -> Self {
        let outcomes = outcomes.into_iter();
        let mut written = Self::default();
        written.reserve(outcomes.size_hint().0);
        for (id, result) in outcomes {
            written.push(id, result);
        }
        written
    }
}

impl IntoIterator for Written {
    type Item = (RecordId, RecordResult);
    type IntoIter = WrittenIter;

    fn into_iter(self) -> WrittenIter {
        WrittenIter {
            first_tries: self.first_tries,
            entries: self.entries.into_iter(),
        }
    }
}

/// The outcomes of a [`Written`], each made as it is taken.
#[derive(Debug)]
pub(crate) struct WrittenIter {
    first_tries: Vec<FirstTry>,
    entries: std::vec::IntoIter<(RecordId, Told)>,
}

impl Default for WrittenIter {
    fn default() -> Self {
        Written::default().into_iter()
    }
}

impl Iterator for WrittenIter {
    type Item = (RecordId, RecordResult);

    fn next(&mut self) -> Option<Self::Item> {
        let (id, told) = self.entries.next()?;
        let result = match told {
            Told::Result(result) => *result,
            Told::FirstTry { by, arrival } => {
                let first = &self.first_tries[by as usize];
                RecordResult {
                    success: true,
                    shard_id: Some(first.shard_id.clone()),
                    sequence_number: Some(first.sequence_number.clone()),
                    attempts: Attempts::one(Attempt {
                        started: first.started,
                        delay: Duration::from_nanos(first.started_at.saturating_sub(arrival)),
                        duration: first.duration,
                        shard_id: Some(first.shard_id.clone()),
                        outcome: Ok(()),
                    }),
                }
            }
        };
        Some((id, result))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for WrittenIter {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{AttemptError, ErrorCode};

    fn first(shard: &str, sequence: &str, t0: Instant, at_ms: u64) -> FirstTry {
        FirstTry {
            shard_id: shard.into(),
            sequence_number: sequence.into(),
            started: t0 + Duration::from_millis(at_ms),
            started_at: at_ms * 1_000_000,
            duration: Duration::from_millis(7),
        }
    }

    #[test]
    fn outcomes_come_out_in_the_order_written_each_made_from_its_parts() {
        let t0 = Instant::now();
        let mut w = Written::default();
        let a = w.first_try(first("shardId-000000000001", "49", t0, 30));
        let failed = RecordResult {
            success: false,
            shard_id: None,
            sequence_number: None,
            attempts: Attempts::one(Attempt {
                started: t0,
                delay: Duration::ZERO,
                duration: Duration::ZERO,
                shard_id: None,
                outcome: Err(Box::new(AttemptError::new(
                    ErrorCode::Expired,
                    "too late",
                    false,
                ))),
            }),
        };
        w.push_first_try(RecordId(4), a, 10_000_000);
        w.push(RecordId(2), failed.clone());
        let b = w.first_try(first("shardId-000000000002", "50", t0, 40));
        w.push_first_try(RecordId(9), b, 40_000_000);
        // Put after the request started (a clock step): no delay, not a panic.
        w.push_first_try(RecordId(5), a, 31_000_000);
        assert_eq!(w.len(), 4);
        let out: Vec<(RecordId, RecordResult)> = w.into_iter().collect();
        let ids: Vec<u64> = out.iter().map(|(id, _)| id.0).collect();
        assert_eq!(ids, [4, 2, 9, 5]);
        let stored = |shard: &str, sequence: &str, at_ms: u64, delay_ms: u64| RecordResult {
            success: true,
            shard_id: Some(shard.into()),
            sequence_number: Some(sequence.into()),
            attempts: Attempts::one(Attempt {
                started: t0 + Duration::from_millis(at_ms),
                delay: Duration::from_millis(delay_ms),
                duration: Duration::from_millis(7),
                shard_id: Some(shard.into()),
                outcome: Ok(()),
            }),
        };
        assert_eq!(out[0].1, stored("shardId-000000000001", "49", 30, 20));
        assert_eq!(out[1].1, failed);
        assert_eq!(out[2].1, stored("shardId-000000000002", "50", 40, 0));
        assert_eq!(out[3].1, stored("shardId-000000000001", "49", 30, 0));
        // The records of one first try share its shard id and sequence number.
        assert!(Arc::ptr_eq(
            out[0].1.sequence_number.as_ref().unwrap(),
            out[3].1.sequence_number.as_ref().unwrap()
        ));
    }

    #[test]
    fn the_common_outcome_is_written_in_24_bytes() {
        assert!(size_of::<(RecordId, Told)>() <= 24);
    }
}

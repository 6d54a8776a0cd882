//! Records and deadlines: a user record as the pipeline holds it ([`Rec`]), a
//! Kinesis record made of some ([`KRec`]), and the times that bound them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kpl_codec::{HashKey, aggregate_growth_bound};
use kpl_limiter::LimitItem;
use kpl_reducer::Item;
use kpl_shardmap::ShardId;

use crate::config::Config;
use crate::result::{Attempt, Completer};

/// A user record in the pipeline.
pub(crate) struct Rec {
    pub(super) id: u64,
    /// Boxed: no spare capacity, and a smaller record to move between stages.
    pub(super) partition_key: Box<str>,
    /// Whether `hash_key` is the user's explicit hash key (else the key's MD5).
    pub(super) explicit: bool,
    pub(super) hash_key: HashKey,
    pub(super) data: Bytes,
    pub(super) arrival: Instant,
    /// Set by the pipeline when it admits the record ([`Rec::admit`]).
    pub(super) deadline: Instant,
    pub(super) expiration: Instant,
    /// Attempts that did not settle it (most records have none: boxed when there
    /// are).
    pub(super) attempts: History,
    pub(super) completer: Completer,
}

/// A record's failed attempts so far: nothing for most records, a box when some.
/// The vector is boxed on purpose: 8 bytes in every record instead of 24 (or 16
/// for a boxed slice), for a history most records never have.
#[derive(Default)]
#[allow(clippy::box_collection)]
pub(crate) struct History(Option<Box<Vec<Attempt>>>);

impl History {
    pub(super) fn push(&mut self, attempt: Attempt) {
        self.0
            .get_or_insert_with(|| Box::new(Vec::with_capacity(2)))
            .push(attempt);
    }

    pub(super) fn pop(&mut self) -> Option<Attempt> {
        self.0.as_mut().and_then(|v| v.pop())
    }

    pub(super) fn last(&self) -> Option<&Attempt> {
        self.0.as_ref().and_then(|v| v.last())
    }

    pub(super) fn last_mut(&mut self) -> Option<&mut Attempt> {
        self.0.as_mut().and_then(|v| v.last_mut())
    }

    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |v| v.len())
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Attempt> {
        self.0.iter().flat_map(|v| v.iter())
    }

    /// The attempts, with `last` (the one that settled the record) after them.
    pub(super) fn settle(self, last: Option<Attempt>) -> crate::result::Attempts {
        match (self.0, last) {
            (None, Some(a)) => crate::result::Attempts::one(a),
            (Some(mut v), Some(a)) => {
                v.push(a);
                crate::result::Attempts::from(*v)
            }
            (Some(v), None) => crate::result::Attempts::from(*v),
            (None, None) => crate::result::Attempts::default(),
        }
    }
}

/// The share of a record's buffering time left to the collector: the KPL extends an
/// aggregate's deadline by min(50 ms, 20 %) before the collector; we take that time
/// out of the aggregator's share instead, so a record is never held longer than
/// `record_max_buffered_time` in all (bounded latency beats maximum throughput).
pub(super) fn collector_share(buffered: Duration) -> Duration {
    (buffered / 5).min(Duration::from_millis(50))
}

/// The aggregator deadline of a record given `budget` of buffering time from `now`.
pub(super) fn aggregator_deadline(now: Instant, budget: Duration) -> Instant {
    add_capped(now, budget - collector_share(budget))
}

/// Takes the items `pick` chooses out of `items` (in order), keeping the others in
/// order; touches nothing when it chooses none (the usual case).
pub(super) fn take_out<T>(items: &mut Vec<T>, pick: impl Fn(&T) -> bool) -> Vec<T> {
    if !items.iter().any(&pick) {
        return Vec::new();
    }
    let (taken, kept) = std::mem::take(items).into_iter().partition(|t| pick(t));
    *items = kept;
    taken
}

/// `now + d`, capped at about a century (a huge TTL must not overflow, KPL #54).
pub(super) fn add_capped(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl Rec {
    /// A record put at `arrival`; the pipeline gives it its deadlines when it takes
    /// it in.
    pub(crate) fn new(
        id: u64,
        partition_key: String,
        explicit_hash_key: Option<HashKey>,
        hash_key: HashKey,
        data: Bytes,
        arrival: Instant,
        completer: Completer,
    ) -> Self {
        Self {
            id,
            partition_key: partition_key.into_boxed_str(),
            explicit: explicit_hash_key.is_some(),
            hash_key,
            data,
            arrival,
            deadline: arrival,
            expiration: arrival,
            attempts: History::default(),
            completer,
        }
    }

    /// Sets its deadlines from its arrival: it expires after `record_ttl`, and its
    /// aggregator's share of `record_max_buffered_time` runs out before.
    pub(super) fn admit(&mut self, config: &Config) {
        self.expiration = add_capped(self.arrival, config.record_ttl);
        self.deadline =
            aggregator_deadline(self.arrival, config.record_max_buffered_time).min(self.expiration);
    }

    /// The user's explicit hash key, if any.
    pub(super) fn explicit_hash_key(&self) -> Option<HashKey> {
        self.explicit.then_some(self.hash_key)
    }

    /// End of the previous attempt, or the arrival: where the next attempt's delay
    /// counts from.
    fn last(&self) -> Instant {
        self.attempts
            .last()
            .map_or(self.arrival, |a| a.started + a.duration)
    }

    /// Bytes it counts for the outstanding caps.
    pub(super) fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// An upper bound of what it adds to an aggregate's protobuf body.
    fn aggregate_bound(&self) -> usize {
        aggregate_growth_bound(self.partition_key.len(), self.data.len(), self.explicit)
    }

    pub(super) fn attempt(
        &mut self,
        started: Instant,
        end: Instant,
        error: Option<(&str, &str)>,
        shard: Option<&Arc<str>>,
    ) {
        self.attempt_sent(started, end, error, shard, false);
    }

    /// An attempt whose failure may have stored the record all the same.
    pub(super) fn attempt_sent(
        &mut self,
        started: Instant,
        end: Instant,
        error: Option<(&str, &str)>,
        shard: Option<&Arc<str>>,
        may_have_been_stored: bool,
    ) {
        let attempt = self.new_attempt(started, end, error, shard, may_have_been_stored);
        self.attempts.push(attempt);
    }

    /// Its next attempt (not recorded yet).
    pub(super) fn new_attempt(
        &self,
        started: Instant,
        end: Instant,
        error: Option<(&str, &str)>,
        shard: Option<&Arc<str>>,
        may_have_been_stored: bool,
    ) -> Attempt {
        Attempt {
            started,
            delay: started.saturating_duration_since(self.last()),
            duration: end.saturating_duration_since(started),
            success: error.is_none(),
            error_code: error.map(|(c, _)| c.to_owned()),
            error_message: error.map(|(_, m)| m.to_owned()),
            shard_id: shard.cloned(),
            may_have_been_stored,
        }
    }

    /// Whether an attempt may have stored it already.
    pub(super) fn may_have_been_stored(&self) -> bool {
        self.attempts.iter().any(|a| a.may_have_been_stored)
    }
}

impl Item for Rec {
    fn size(&self) -> usize {
        self.aggregate_bound()
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// A Kinesis record: an aggregate, or one user record sent raw.
pub(crate) struct KRec {
    pub(super) records: Vec<Rec>,
    pub(super) partition_key: String,
    pub(super) explicit_hash_key: Option<HashKey>,
    pub(super) data: Bytes,
    pub(super) shard: Option<ShardId>,
    pub(super) deadline: Instant,
    pub(super) expiration: Instant,
    pub(super) aggregated: bool,
    /// When the limiter let it out (its room in the shard's window counts from when
    /// it is sent).
    pub(super) released: Option<Instant>,
}

impl KRec {
    pub(super) fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

impl LimitItem for KRec {
    fn bytes(&self) -> u64 {
        self.size() as u64
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
    fn expiration(&self) -> Instant {
        self.expiration
    }
}

impl Item for KRec {
    fn size(&self) -> usize {
        KRec::size(self)
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_record_stays_small() {
        // It is moved from stage to stage and held by the million: keep it at most
        // 160 bytes (it was 192 with its history and key unboxed; its completer is a
        // result slot or an outcome queue with the record's id).
        assert!(size_of::<Rec>() <= 160, "{}", size_of::<Rec>());
    }
}

//! Answers, retries and outcomes: what an answer (or its absence) means for each
//! user record: stored (where a consumer finds it), retried after a backoff, or
//! failed with every attempt; each record settles exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kpl_shardmap::{Landing, ShardId};
use kpl_transport::{EntryResult, ErrorKind, PutRecordsResponse, TransportError};
use tracing::{debug, warn};

use super::StreamPipeline;
use super::record::{Contents, KRec, Member, Rec, RequestClock, Unreadable, aggregator_deadline};
use super::retry::WARN_AFTER_ATTEMPTS;
use super::shards::Landed;
use super::verify::{SETTLE, ambiguous_attempt};
use crate::events::Event;
use crate::result::{Attempt, AttemptError, ErrorCode, RecordResult, codes};
use crate::written::FirstTryIndex;

/// A failed attempt shared by the user records of one Kinesis record.
struct Failed<'a> {
    started: Instant,
    /// Error code and message.
    error: (&'a str, &'a str),
    shard: Option<&'a Arc<str>>,
    /// Whether the attempt may have stored them all the same.
    stored: bool,
}

impl StreamPipeline {
    pub(super) fn settle_landing(&mut self, landed: Landed, now: Instant) {
        let shard = ShardId::from(&*landed.shard_id);
        match self.shards.map().classify(landed.rec.hash_key, &shard, now) {
            Landing::InRange => self.succeed(
                landed.rec.m,
                None,
                &landed.shard_id,
                &landed.sequence_number,
            ),
            Landing::OutOfRange => {
                let mut rec = landed.rec;
                if let Some(a) = rec.attempts.last_mut() {
                    // Stored, where a KCL consumer drops it; other consumers read a
                    // copy.
                    a.outcome = Err(Box::new(AttemptError::new(
                        ErrorCode::WrongShard,
                        format!(
                            "stored on {} whose range does not hold the record's hash key; sent again",
                            landed.shard_id
                        ),
                        true,
                    )));
                }
                self.retry(rec, now, Duration::ZERO);
            }
            // Waits for a map that knows the shard (one is asked for).
            Landing::UnknownShard => self.shards.await_map(landed, &shard, now),
        }
    }

    pub(super) fn request_failed(
        &mut self,
        batch: Vec<KRec>,
        started: Instant,
        now: Instant,
        e: TransportError,
        min_backoff: Duration,
    ) {
        let code = e.code_or_kind().to_owned();
        let message = e.message().to_owned();
        let users: usize = batch.iter().map(KRec::len).sum();
        self.emit(|stream| Event::Error {
            stream,
            shard_id: None,
            code: &code,
            user_records: users,
        });
        if e.kind() == ErrorKind::Throttled {
            for k in &batch {
                if let Some(s) = &k.shard {
                    self.limiter.on_throttled(s, now);
                }
            }
        }
        let fail_now = !e.kind().is_retryable()
            || (self.config.fail_if_throttled && e.kind() == ErrorKind::Throttled);
        let backoff = if fail_now {
            Duration::ZERO
        } else {
            self.retries.request_failed(min_backoff)
        };
        if fail_now {
            if let Some(records) = self.retries.fatal(users, now) {
                warn!(stream = %self.stream, error = %e, records, "requests failed; retrying cannot help");
            } else {
                debug!(stream = %self.stream, error = %e, records = users, "request failed; retrying cannot help");
            }
        } else {
            debug!(stream = %self.stream, error = %e, backoff_ms = backoff.as_millis() as u64, "request failed; will retry");
        }
        let stored = e.may_have_been_stored();
        let error = (code.as_str(), message.as_str());
        // A 5xx may have stored the request too (the service's own failure after
        // taking it): in verify mode it is looked for like a request with no answer.
        let server_error = e.status().is_some_and(|s| s >= 500);
        if (stored || server_error) && !fail_now && self.verifies() {
            // Looked for before being resent.
            let epoch = self.epoch;
            for mut k in batch {
                ambiguous_attempt(&mut k, epoch, (started, now), error);
                self.suspect_krec(k, started, now + SETTLE, now);
            }
            return;
        }
        for k in batch {
            let shard = k.shard.as_ref().map(ShardId::to_arc);
            let attempt = Failed {
                started,
                error,
                shard: shard.as_ref(),
                stored,
            };
            self.fail_or_retry(k, attempt, fail_now, now, backoff);
        }
    }

    pub(super) fn request_answered(
        &mut self,
        batch: Vec<KRec>,
        started: Instant,
        now: Instant,
        response: PutRecordsResponse,
    ) {
        self.retries.request_answered();
        if response.results.len() != batch.len() {
            let message = format!(
                "PutRecords answered {} results for {} records; some may have been stored",
                response.results.len(),
                batch.len()
            );
            warn!(stream = %self.stream, "{message}");
            for k in batch {
                for mut m in k.into_members() {
                    m.attempt_sent(
                        self.epoch,
                        started,
                        now,
                        Some((codes::RECORD_COUNT_MISMATCH, &message)),
                        None,
                        true,
                    );
                    self.fail(m);
                }
            }
            return;
        }
        let mut invalidate: Option<ShardId> = None;
        let mut split: Vec<ShardId> = Vec::new();
        // Most of the batch settles now: room for all of it at once.
        self.report.reserve(batch.iter().map(KRec::len).sum());
        for (k, result) in batch.into_iter().zip(response.results) {
            match result {
                EntryResult::Ok {
                    shard_id,
                    sequence_number,
                } => {
                    let actual = ShardId::from(shard_id.as_str());
                    let shard_arc = actual.to_arc();
                    let sequence_number: Arc<str> = sequence_number.into();
                    self.limiter.on_success(&actual, now);
                    if self.config.verify_before_resend {
                        let keep = self.config.record_ttl;
                        self.retries
                            .verifier
                            .stored(&actual, &sequence_number, now, keep);
                    }
                    let n = k.len();
                    let bytes = k.size();
                    self.emit(|stream| Event::Put {
                        stream,
                        shard_id: &shard_id,
                        user_records: n,
                        bytes,
                    });
                    let predicted_right = k.shard.as_ref() == Some(&actual);
                    if !predicted_right {
                        // A raw record sent without a prediction says something only
                        // when it landed on a shard the map does not have.
                        if k.shard.is_some() || !self.shards.map().is_open(&actual) {
                            invalidate = Some(actual.clone());
                        }
                        // Evidence about the current map only: a request sent before
                        // the map's refresh started is already accounted for.
                        let map = self.shards.map();
                        let current = map.as_of().is_none_or(|as_of| started >= as_of);
                        if let (Some(p), true) = (&k.shard, k.aggregated)
                            && current
                            && map.is_open(p)
                        {
                            split.push(p.clone());
                        }
                    }
                    let clock = RequestClock::new(self.epoch, started, now);
                    if predicted_right || !k.aggregated {
                        // A raw record is delivered wherever it lands. Those stored
                        // by their first attempt (most) share its part of their
                        // outcome, written once (when the first of them settles).
                        let mut first = None;
                        for m in k.into_members() {
                            if let Some(arrival) = m.arrival_if_no_attempt() {
                                let by = *first.get_or_insert_with(|| {
                                    self.report
                                        .first_try(clock.first_try(&shard_arc, &sequence_number))
                                });
                                self.succeed_first_try(m, &clock, &shard_arc, by, arrival);
                                continue;
                            }
                            let attempt = m.new_attempt(&clock, None, Some(&shard_arc), false);
                            self.succeed(m, Some(attempt), &shard_arc, &sequence_number);
                        }
                    } else {
                        // Landed elsewhere: each record's hash key decides.
                        for mut rec in self.unseal(k, now) {
                            let attempt = rec.new_attempt(&clock, None, Some(&shard_arc), false);
                            rec.attempts.push(attempt);
                            let landed =
                                Landed::new(rec, shard_arc.clone(), sequence_number.clone());
                            self.settle_landing(landed, now);
                        }
                    }
                }
                EntryResult::Failed { code, message } => {
                    let shard = k.shard.clone();
                    let shard_arc = shard.as_ref().map(ShardId::to_arc);
                    let n = k.len();
                    self.emit(|stream| Event::Error {
                        stream,
                        shard_id: shard.as_ref().map(ShardId::as_str),
                        code: &code,
                        user_records: n,
                    });
                    let kind = ErrorKind::classify(Some(&code), None);
                    let throttled = kind == ErrorKind::Throttled;
                    if throttled && let Some(s) = &shard {
                        self.limiter.on_throttled(s, now);
                    }
                    let fail_now =
                        (throttled && self.config.fail_if_throttled) || !kind.is_retryable();
                    let attempt = Failed {
                        started,
                        error: (code.as_str(), message.as_str()),
                        shard: shard_arc.as_ref(),
                        stored: false,
                    };
                    self.fail_or_retry(k, attempt, fail_now, now, Duration::ZERO);
                }
            }
        }
        if let Some(actual) = invalidate {
            self.shards.invalidate(started, Some(&actual));
        }
        for shard in split {
            self.suspect(shard, now);
        }
    }

    /// Records `attempt`, ended `now`, on each of a Kinesis record's user records,
    /// then fails them (`fail_now`) or retries them after `backoff`.
    fn fail_or_retry(
        &mut self,
        k: KRec,
        attempt: Failed<'_>,
        fail_now: bool,
        now: Instant,
        backoff: Duration,
    ) {
        let Failed {
            started,
            error,
            shard,
            stored,
        } = attempt;
        let epoch = self.epoch;
        if fail_now {
            for mut m in k.into_members() {
                m.attempt_sent(epoch, started, now, Some(error), shard, stored);
                self.fail(m);
            }
        } else {
            for mut rec in self.unseal(k, now) {
                rec.attempt_sent(epoch, started, now, Some(error), shard, stored);
                self.retry(rec, now, backoff);
            }
        }
    }

    pub(super) fn retry(&mut self, mut rec: Rec, now: Instant, backoff: Duration) {
        if let Some(records) = self.retries.persisting(rec.attempts.len(), now) {
            warn!(stream = %self.stream, records, attempts = WARN_AFTER_ATTEMPTS, last_error = rec.attempts.last().and_then(Attempt::error_code).map_or("", ErrorCode::as_str), "records still failing; retrying until their time to live");
        }
        self.emit(|stream| Event::Retry {
            stream,
            user_records: 1,
        });
        // Retries re-enter the aggregator, re-predicted, with half the buffering time.
        rec.deadline = aggregator_deadline(now + backoff, self.config.record_max_buffered_time / 2)
            .min(rec.expiration);
        if backoff.is_zero() {
            self.route(rec, now);
        } else {
            let at = (now + backoff).min(rec.expiration);
            self.retries.hold(rec, at);
        }
    }

    /// A Kinesis record past its expiration (that of its oldest user record): the
    /// user records past theirs fail; the others, which may have joined a retried
    /// record in one aggregate, go round again with the time they have left.
    pub(super) fn expire_krec(&mut self, k: KRec, now: Instant) {
        let (epoch, config) = (self.epoch, &self.config);
        let expired = |m: &Member| m.expiration(epoch, config) <= now;
        let all = match &k.records {
            Contents::Sealed(members) => members.iter().all(expired),
            Contents::Loose(recs) => recs.iter().all(|r| expired(r)),
        };
        if all {
            for m in k.into_members() {
                self.expire(m, now);
            }
            return;
        }
        // Those past their time to live fail as they are routed.
        let recs = self.unseal(k, now);
        self.route_all(recs, false, now);
    }

    /// Reads a Kinesis record's user records back, to route them again. Those it
    /// cannot read (a bug: it reads only what it encoded) fail, saying they may have
    /// been stored, instead of being lost.
    /// In ordered mode each record holds its Kinesis record's lock until it is
    /// back in a queue or settled.
    pub(super) fn unseal(&mut self, mut k: KRec, now: Instant) -> Vec<Rec> {
        let lock = k.lock.take();
        match k.into_records(self.epoch, &self.config) {
            Ok(mut recs) => {
                if let Some(lock) = lock {
                    for r in &mut recs {
                        r.set_lock(lock.clone());
                    }
                }
                recs
            }
            Err(Unreadable { members, message }) => {
                warn!(stream = %self.stream, records = members.len(), "{message}; failing its records");
                for mut m in members {
                    let error = Some((codes::INTERNAL, message.as_str()));
                    m.attempt_sent(self.epoch, now, now, error, None, true);
                    self.fail(m);
                }
                Vec::new()
            }
        }
    }

    pub(super) fn expire(&mut self, mut rec: Member, now: Instant) {
        let ttl = self.config.record_ttl.as_millis();
        let message = if rec.may_have_been_stored() {
            format!(
                "record reached its time to live ({ttl} ms) with no answer that it was stored; an earlier attempt had no answer and may have stored it"
            )
        } else {
            format!("record reached its time to live ({ttl} ms) before it was stored")
        };
        rec.attempt(self.epoch, now, now, Some((codes::EXPIRED, &message)), None);
        self.emit(|stream| Event::Expired {
            stream,
            user_records: 1,
        });
        self.fail(rec);
    }

    /// Settles a stored record; `last` is its last (successful) attempt, unless it
    /// is in its attempts already.
    pub(super) fn succeed(
        &mut self,
        rec: Member,
        last: Option<Attempt>,
        shard_id: &Arc<str>,
        sequence_number: &Arc<str>,
    ) {
        if self.report.listens() {
            let buffering = last
                .as_ref()
                .or(rec.attempts.last())
                .map_or(Duration::ZERO, |a| {
                    a.started.saturating_duration_since(rec.arrival(self.epoch))
                });
            let twice = rec.attempts.iter().any(Attempt::may_have_been_stored);
            self.report.stored(
                self.stream.name(),
                shard_id,
                buffering.as_secs_f64() * 1e3,
                rec.attempts.len(),
                twice,
            );
        }
        self.drain.stored(rec.bytes());
        let size = rec.bytes();
        self.report.settle(
            size,
            rec.receipt(),
            RecordResult {
                success: true,
                shard_id: Some(shard_id.clone()),
                sequence_number: Some(sequence_number.clone()),
                // Most records: one attempt, held inline (no allocation).
                attempts: rec.attempts.settle(last),
            },
        );
    }

    /// Settles a record stored by its first attempt, in a request timed by `clock`,
    /// on `shard_id`; `first` holds what it shares with the other user records of
    /// its Kinesis record, and it was put `arrival` after the epoch. Its outcome is
    /// the one [`succeed`](Self::succeed) gives it with that attempt as `last`.
    fn succeed_first_try(
        &mut self,
        rec: Member,
        clock: &RequestClock,
        shard_id: &Arc<str>,
        first: FirstTryIndex,
        arrival: u64,
    ) {
        if self.report.listens() {
            let buffering = clock.since_arrival(arrival);
            self.report.stored(
                self.stream.name(),
                shard_id,
                buffering.as_secs_f64() * 1e3,
                0,
                false,
            );
        }
        let size = rec.bytes();
        self.drain.stored(size);
        self.report
            .settle_first_try(size, rec.receipt(), first, arrival);
    }

    pub(super) fn fail(&mut self, rec: Member) {
        let size = rec.bytes();
        self.report.settle(
            size,
            rec.receipt(),
            RecordResult {
                success: false,
                shard_id: None,
                sequence_number: None,
                attempts: rec.attempts.settle(None),
            },
        );
    }

    /// Fails every record not in flight as shut down; returns how many.
    pub(super) fn fail_all_held(&mut self, now: Instant) -> usize {
        let mut held: Vec<Member> = Vec::new();
        held.extend(self.aggregation.drain().into_iter().map(|r| r.m));
        for (_, k) in self.limiter.drain() {
            held.extend(k.into_members());
        }
        held.extend(self.assembler.drain().flat_map(KRec::into_members));
        held.extend(self.retries.drain().map(|r| r.m));
        held.extend(
            self.retries
                .verifier
                .drain()
                .into_iter()
                .flat_map(|s| s.k.into_members()),
        );
        // Stored, on a shard whose range is not verified yet: not "before it was
        // stored".
        let landed: Vec<Landed> = self.shards.take_awaiting();
        let mut n = landed.len();
        for l in landed {
            let mut rec = l.rec;
            let message = format!(
                "stored on {} before the producer shut down, but that shard's range could not be verified: a KCL consumer may drop it",
                l.shard_id
            );
            rec.attempt_sent(
                self.epoch,
                now,
                now,
                Some((codes::SHUTDOWN, &message)),
                Some(&l.shard_id),
                true,
            );
            self.fail(rec.m);
        }
        n += held.len();
        for mut rec in held {
            let message = if rec.may_have_been_stored() {
                "the producer shut down before this record had an answer that it was stored; an earlier attempt had no answer and may have stored it"
            } else {
                "the producer shut down before this record was stored"
            };
            rec.attempt(self.epoch, now, now, Some((codes::SHUTDOWN, message)), None);
            self.fail(rec);
        }
        n
    }
}

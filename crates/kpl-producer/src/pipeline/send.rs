//! Sending and answers: requests the assembler made go as the congestion window
//! allows, each with a timeout that fits it; a request past its timeout is resent
//! later, and its answer, if it still comes, settles what was not resent yet.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kpl_limiter::Answer;
use kpl_transport::{
    EntryResult, PutRecordsEntry, PutRecordsRequest, PutRecordsResponse, TransportError,
};
use tracing::debug;

use super::flights::{Answered, LateRecord, TimedOut, congestion_signal, late_answer_limit};
use super::record::{Contents, KRec, Payload, Rec, finish_payloads, take_out};
use super::verify::{SETTLE, ambiguous_attempt};
use super::{StreamPipeline, Transmit};
use crate::events::Event;

impl StreamPipeline {
    /// Sends as much as the congestion window has room for.
    pub(super) fn send_ready(&mut self, now: Instant) {
        while let Some(window_room) = self.flights.room() {
            let Some(mut batch) = self.assembler.pop_ready() else {
                break;
            };
            let expired: Vec<KRec> = take_out(&mut batch, |k| k.expiration <= now);
            for k in expired {
                self.expire_krec(k, now);
            }
            if batch.is_empty() {
                continue;
            }
            if !self.flights.admits(batch[0].size() as u64) {
                self.assembler.push_front(batch);
                break;
            }
            // Only what fits the window goes; the rest is sent next.
            let batch = self.assembler.fill(batch, window_room, now);
            self.transmit_put(batch, now);
        }
    }

    /// Whether the first ready batch can be sent now.
    pub(super) fn can_send(&self) -> bool {
        self.assembler
            .first_ready()
            .is_some_and(|first| self.flights.admits(first.size() as u64))
    }

    /// Queues a PutRecords request of `batch`.
    fn transmit_put(&mut self, mut batch: Vec<KRec>, now: Instant) {
        for k in batch.iter_mut() {
            if let (Some(shard), Some(released)) = (&k.shard, k.released.take()) {
                self.limiter.on_sent(shard, released, k.size() as u64, now);
            }
        }
        let bytes: u64 = batch.iter().map(|k| k.size() as u64).sum();
        finish_payloads(&mut batch);
        let entries = batch
            .iter_mut()
            .map(|k| {
                PutRecordsEntry::new(k.partition_key.clone(), k.explicit_hash_key, k.data.ready())
            })
            .collect();
        let records = batch.len();
        if self.config.verify_before_resend {
            self.retries.verifier.sending(&batch, true);
        }
        let (id, ticket) = self.flights.send(batch, bytes, now);
        debug!(
            stream = %self.stream,
            request = id,
            records,
            bytes,
            timeout_ms = ticket.timeout().as_millis() as u64,
            in_flight = self.flights.in_flight(),
            window = self.flights.window(),
            "PutRecords sent"
        );
        // The transport waits three timeouts: a late answer still settles the records
        // not resent yet.
        let request = PutRecordsRequest::new(self.stream.clone(), entries)
            .with_timeout(late_answer_limit(ticket.timeout()));
        self.transmits
            .push_back(Transmit::PutRecords { id, request });
    }

    /// Requests past their timeout: their records wait half a timeout (or the usual
    /// backoff, if longer) to be resent, while the answer may still come. In ordered
    /// mode they wait for the answer (or for the transport to give the request up:
    /// see [`late_given_up`](Self::late_given_up)), as their range does: a request
    /// still on its way could be stored behind their resent copies' successors.
    pub(super) fn poll_timeouts(&mut self, now: Instant) {
        while let Some(TimedOut {
            id,
            mut batch,
            ticket,
        }) = self.flights.poll_timeout(now)
        {
            let timeout = ticket.timeout();
            if self.config.verify_before_resend {
                self.retries.verifier.sending(&batch, false);
            }
            if self.verifies() {
                // Its records wait for its answer, then are looked for.
                debug!(stream = %self.stream, request = id, timeout_ms = timeout.as_millis() as u64, "PutRecords timed out; its answer is still awaited, its records wait for it");
                let e = TransportError::timeout(format!(
                    "no answer within {} ms (the request may have been stored)",
                    timeout.as_millis()
                ));
                let error = (e.code_or_kind(), e.message());
                let (epoch, started) = (self.epoch, ticket.sent_at());
                for k in &mut batch {
                    ambiguous_attempt(k, epoch, (started, now), error);
                }
                let give_up = started + late_answer_limit(timeout) + SETTLE;
                self.await_late_answer(id, batch, started, give_up);
                continue;
            }
            let backoff = if self.aggregation.is_ordered() {
                late_answer_limit(timeout)
            } else {
                timeout / 2
            };
            debug!(stream = %self.stream, request = id, timeout_ms = timeout.as_millis() as u64, window = self.flights.window(), "PutRecords timed out; its answer is still awaited");
            let e = TransportError::timeout(format!(
                "no answer within {} ms (the request may have been stored)",
                timeout.as_millis()
            ));
            self.request_failed(batch, ticket.sent_at(), now, e, backoff);
        }
    }

    /// A PutRecords answer (or failure), by request number.
    pub(super) fn put_answered(
        &mut self,
        id: u64,
        result: Result<PutRecordsResponse, TransportError>,
        now: Instant,
    ) {
        let answer = match &result {
            Ok(_) => Answer::Delivered,
            Err(e) => congestion_signal(e),
        };
        let (batch, started, (before, after)) = match self.flights.answered(id, answer, now) {
            Answered::Unknown => return,
            Answered::Late { sent_at, late } => {
                if self.retries.verifier.awaits(id) {
                    self.verify_late(id, result, now);
                    return;
                }
                match result {
                    Ok(response) => self.late_answer(sent_at, late, response, now),
                    Err(_) => self.late_given_up(late, now),
                }
                return;
            }
            Answered::InTime {
                batch,
                sent_at,
                window,
            } => (batch, sent_at, window),
        };
        if self.config.verify_before_resend {
            self.retries.verifier.sending(&batch, false);
        }
        if after != before {
            debug!(stream = %self.stream, from = before, to = after, rtt_ms = now.saturating_duration_since(started).as_millis() as u64, "congestion window changed");
        }
        let kinesis_records = batch.len();
        let user_records = batch.iter().map(KRec::len).sum();
        let time = now.saturating_duration_since(started);
        self.emit(|stream| Event::Request {
            stream,
            time,
            kinesis_records,
            user_records,
            window: after,
        });
        match result {
            Err(e) => self.request_failed(batch, started, now, e, Duration::ZERO),
            Ok(response) => self.request_answered(batch, started, now, response),
        }
    }

    /// A request past its timeout ended without an answer that says what was
    /// stored: in ordered mode its records still in backoff go now (its range's lock
    /// is dropped with `late`, after they are back at their queues' heads).
    fn late_given_up(&mut self, late: Vec<LateRecord>, now: Instant) {
        if !self.aggregation.is_ordered() {
            return;
        }
        for (_, _, ids, _) in &late {
            for &id in ids {
                if let Some(rec) = self.retries.take(id) {
                    self.route(rec, now);
                }
            }
        }
    }

    /// The answer of a request that timed out: records of it that were stored and
    /// are not resent yet are settled by it (their timeout attempt becomes the
    /// success); records already resent keep their flag (they may be stored twice).
    fn late_answer(
        &mut self,
        started: Instant,
        late: Vec<LateRecord>,
        response: PutRecordsResponse,
        now: Instant,
    ) {
        if response.results.len() != late.len() {
            return;
        }
        let mut batch = Vec::new();
        let mut results = Vec::new();
        for ((shard, aggregated, ids, _lock), result) in late.into_iter().zip(response.results) {
            if !matches!(result, EntryResult::Ok { .. }) {
                // Still to be resent: as planned, or now in ordered mode (whose
                // records waited for this answer).
                if self.aggregation.is_ordered() {
                    for id in ids {
                        if let Some(rec) = self.retries.take(id) {
                            self.route(rec, now);
                        }
                    }
                }
                continue;
            }
            let mut records: Vec<Rec> = Vec::new();
            for id in ids {
                if let Some(mut rec) = self.retries.take(id) {
                    if rec.attempts.last().is_some_and(|a| a.started == started) {
                        rec.attempts.pop();
                    }
                    records.push(rec);
                }
            }
            if records.is_empty() {
                continue;
            }
            batch.push(KRec {
                records: Contents::Loose(records),
                partition_key: String::new(),
                explicit_hash_key: None,
                data: Payload::Ready(Bytes::new()),
                shard,
                deadline: now,
                expiration: now,
                aggregated,
                released: None,
                lock: None,
            });
            results.push(result);
        }
        if !batch.is_empty() {
            let n: usize = batch.iter().map(KRec::len).sum();
            debug!(stream = %self.stream, records = n, "a late answer settled records not resent yet");
            self.request_answered(batch, started, now, PutRecordsResponse::new(results));
        }
    }
}

//! Collection and sending: Kinesis records are packed into PutRecords requests, sent
//! as the stream's congestion window allows, each with a timeout that fits it; a
//! request past its timeout is resent later, and its answer, if it still comes,
//! settles what was not resent yet.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kpl_limiter::Answer;
use kpl_reducer::Predicate;
use kpl_shardmap::ShardId;
use kpl_transport::{
    EntryResult, PutRecordsEntry, PutRecordsRequest, PutRecordsResponse, TransportError,
};
use tracing::debug;

use super::flights::{Answered, LateRecord, TimedOut, congestion_signal, late_answer_limit};
use super::record::{Contents, KRec, Payload, Rec, finish_payloads, take_out};
use super::{StreamPipeline, Transmit};
use crate::events::Event;
use crate::fasthash::FastMap;

/// Bytes buffered for one shard that close a PutRecords batch early (the KPL's rule).
const SHARD_BYTES_CLOSE: usize = 256 * 1024;
/// Bytes one PutRecords request carries at most (a single larger Kinesis record
/// still goes alone): a lost answer duplicates at most this much, and requests on a
/// slow path stay short.
pub(super) const MAX_REQUEST_BYTES: u64 = 512 * 1024;

/// The collector's early close: one shard has 256 KiB buffered.
#[derive(Default)]
pub(super) struct ShardBytes {
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

impl StreamPipeline {
    /// Sends as much as the congestion window has room for.
    pub(super) fn send_ready(&mut self, now: Instant) {
        while let Some(window_room) = self.flights.room() {
            let room = window_room.min(MAX_REQUEST_BYTES);
            let Some(mut batch) = self.ready.pop_front() else {
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
                self.ready.push_front(batch);
                break;
            }
            // Only what fits the window goes; the rest is sent next.
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
            } else {
                // Batches that waited for the window (a long round trip holds
                // requests back) go out in full requests, not one request each.
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
            }
            self.transmit_put(batch, now);
        }
    }

    /// Whether the first ready batch can be sent now.
    pub(super) fn can_send(&self) -> bool {
        self.ready
            .front()
            .and_then(|b| b.first())
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
    /// backoff, if longer) to be resent, while the answer may still come.
    pub(super) fn poll_timeouts(&mut self, now: Instant) {
        while let Some(TimedOut { id, batch, ticket }) = self.flights.poll_timeout(now) {
            let timeout = ticket.timeout();
            debug!(stream = %self.stream, request = id, timeout_ms = timeout.as_millis() as u64, window = self.flights.window(), "PutRecords timed out; its answer is still awaited");
            let e = TransportError::timeout(format!(
                "no answer within {} ms (the request may have been stored)",
                timeout.as_millis()
            ));
            self.request_failed(batch, ticket.sent_at(), now, e, timeout / 2);
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
                if let Ok(response) = result {
                    self.late_answer(sent_at, late, response, now);
                }
                return;
            }
            Answered::InTime {
                batch,
                sent_at,
                window,
            } => (batch, sent_at, window),
        };
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
        for ((shard, aggregated, ids), result) in late.into_iter().zip(response.results) {
            if !matches!(result, EntryResult::Ok { .. }) {
                continue; // still to be resent, as planned
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

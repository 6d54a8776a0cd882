//! Collection and sending: Kinesis records are packed into PutRecords requests, sent
//! as the stream's congestion window allows, each with a timeout that fits it; a
//! request past its timeout is resent later, and its answer, if it still comes,
//! settles what was not resent yet.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kpl_limiter::{Answer, Ticket, WindowConfig};
use kpl_reducer::Predicate;
use kpl_shardmap::ShardId;
use kpl_transport::{
    EntryResult, ErrorKind, PutRecordsEntry, PutRecordsRequest, PutRecordsResponse, TransportError,
};
use tracing::debug;

use super::record::{Contents, KRec, Payload, Rec, add_capped, finish_payloads, take_out};
use super::{StreamPipeline, Transmit};
use crate::config::Config;
use crate::events::Event;
use crate::fasthash::FastMap;

/// Bytes buffered for one shard that close a PutRecords batch early (the KPL's rule).
const SHARD_BYTES_CLOSE: usize = 256 * 1024;
/// Bytes each request of the congestion window may carry: with a window of one, a
/// request of at most this much; what one lost answer can duplicate stays small.
const WINDOW_UNIT_BYTES: u64 = 256 * 1024;
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

/// The congestion window of a stream's pipeline: `max_connections` is its ceiling,
/// `request_timeout` its base timeout.
pub(super) fn window_config(c: &Config) -> WindowConfig {
    WindowConfig::new(c.max_connections)
        .unit_bytes(WINDOW_UNIT_BYTES)
        .base_timeout(c.request_timeout)
        .max_timeout(
            c.request_timeout
                .saturating_mul(10)
                .min(Duration::from_secs(600))
                .max(c.request_timeout),
        )
}

/// How long the transport waits for an answer the pipeline stopped waiting for at
/// `timeout`: a late answer settles the records not resent yet.
pub(super) fn late_answer_limit(timeout: Duration) -> Duration {
    timeout.saturating_mul(3).min(Duration::from_secs(600))
}

/// What a failed request says of the path, for the congestion window: timeouts,
/// broken connections and 5xx are congestion; throttling is per shard (the rate
/// limiter's business) and a refused request says nothing of the load.
fn congestion_signal(e: &TransportError) -> Answer {
    match e.kind() {
        ErrorKind::Transient => Answer::Congested,
        _ if e.is_timeout() || e.may_have_been_stored() => Answer::Congested,
        _ => Answer::Neutral,
    }
}

/// A PutRecords request in flight.
pub(super) struct InFlight {
    /// Its Kinesis records, until its answer or its timeout.
    pub(super) batch: Option<Vec<KRec>>,
    pub(super) ticket: Ticket,
    /// After its timeout, per Kinesis record: the predicted shard, whether it is an
    /// aggregate, and its user records' ids. The transport waits longer than the
    /// pipeline (three timeouts): an answer that comes late still settles the
    /// records not yet resent, so a brownout does not turn into duplicates.
    late: Vec<(Option<ShardId>, bool, Vec<u64>)>,
}

impl StreamPipeline {
    /// Sends as much as the congestion window has room for.
    pub(super) fn send_ready(&mut self, now: Instant) {
        while let Some(window_room) = self.window.room() {
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
            if self.window.in_flight() > 0 && batch[0].size() as u64 > window_room {
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
        let (Some(room), Some(first)) = (
            self.window.room(),
            self.ready.front().and_then(|b| b.first()),
        ) else {
            return false;
        };
        self.window.in_flight() == 0 || first.size() as u64 <= room
    }

    /// Queues a PutRecords request of `batch`.
    fn transmit_put(&mut self, mut batch: Vec<KRec>, now: Instant) {
        for k in batch.iter_mut() {
            if let (Some(shard), Some(released)) = (&k.shard, k.released.take()) {
                self.limiter.on_sent(shard, released, k.size() as u64, now);
            }
        }
        let bytes: u64 = batch.iter().map(|k| k.size() as u64).sum();
        let ticket = self.window.on_send(bytes, now);
        let id = self.next_request;
        self.next_request += 1;
        debug!(
            stream = %self.stream,
            request = id,
            records = batch.len(),
            bytes,
            timeout_ms = ticket.timeout().as_millis() as u64,
            in_flight = self.window.in_flight(),
            window = self.window.requests(),
            "PutRecords sent"
        );
        finish_payloads(&mut batch);
        let entries = batch
            .iter_mut()
            .map(|k| {
                PutRecordsEntry::new(k.partition_key.clone(), k.explicit_hash_key, k.data.ready())
            })
            .collect();
        // The transport waits three timeouts: a late answer still settles the records
        // not resent yet.
        let request = PutRecordsRequest::new(self.stream.clone(), entries)
            .with_timeout(late_answer_limit(ticket.timeout()));
        self.timeouts
            .push(Reverse((add_capped(now, ticket.timeout()), id)));
        self.in_flight.insert(
            id,
            InFlight {
                batch: Some(batch),
                ticket,
                late: Vec::new(),
            },
        );
        self.transmits
            .push_back(Transmit::PutRecords { id, request });
    }

    /// Requests past their timeout: their records wait half a timeout (or the usual
    /// backoff, if longer) to be resent, while the answer may still come.
    pub(super) fn poll_timeouts(&mut self, now: Instant) {
        while let Some(&Reverse((at, id))) = self.timeouts.peek() {
            if at > now {
                break;
            }
            self.timeouts.pop();
            let Some(flight) = self.in_flight.get_mut(&id) else {
                continue;
            };
            let Some(batch) = flight.batch.take() else {
                continue;
            };
            let ticket = flight.ticket;
            flight.late = batch
                .iter()
                .map(|k| (k.shard.clone(), k.aggregated, k.ids()))
                .collect();
            self.window.on_answer(ticket, now, Answer::Congested);
            let timeout = ticket.timeout();
            debug!(stream = %self.stream, request = id, timeout_ms = timeout.as_millis() as u64, window = self.window.requests(), "PutRecords timed out; its answer is still awaited");
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
        let Some(flight) = self.in_flight.remove(&id) else {
            return;
        };
        let Some(batch) = flight.batch else {
            if let Ok(response) = result {
                self.late_answer(flight.ticket.sent_at(), flight.late, response, now);
            }
            return;
        };
        let ticket = flight.ticket;
        let started = ticket.sent_at();
        let answer = match &result {
            Ok(_) => Answer::Delivered,
            Err(e) => congestion_signal(e),
        };
        let before = self.window.requests();
        self.window.on_answer(ticket, now, answer);
        let after = self.window.requests();
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
        late: Vec<(Option<ShardId>, bool, Vec<u64>)>,
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

//! One stream's pipeline as a sans-IO state machine, in the manner of quinn-proto:
//! records go in with [`StreamPipeline::handle_put`], answers with
//! [`handle_answer`](StreamPipeline::handle_answer) and
//! [`handle_shards`](StreamPipeline::handle_shards); requests to send come out of
//! [`poll_transmit`](StreamPipeline::poll_transmit), the next moment anything is due
//! out of [`poll_timeout`](StreamPipeline::poll_timeout), and settled records out of
//! [`take_settled`](StreamPipeline::take_settled). Time is an argument: nothing
//! here reads a clock, sleeps, spawns or does I/O. The driver (`driver.rs`) owns the
//! task, the transport and the accounting.
//!
//! As quinn-proto's connection delegates to its streams, congestion controller and
//! timers, the pipeline is made of parts, each a type with its own rules and tests:
//!
//! - [`ShardTracker`] (`shards`): the shard map, its listing, where a record goes,
//!   shards found split, the reshard memory, stored records waiting for a map;
//! - [`Aggregation`] (`aggregate`): the shards' batches by deadline (in ordered
//!   mode, the shards' queues in put order and their ranges' locks, `ordered`), and
//!   the making of Kinesis records of them;
//! - the per-shard [`Limiter`] (kpl-limiter);
//! - [`Assembler`] (`assemble`): requests collected and cut to the window's room;
//! - [`Flights`] (`flights`): requests in flight, the congestion window, timeouts;
//! - [`RetryQueue`] (`retry`): records in backoff, the backoff, warnings;
//! - [`DrainMeter`] (`drain`): the drain rate and the admission limit;
//! - [`Report`] (`report`): outcomes to take and events;
//! - [`Lifecycle`] and [`Stages`] (`lifecycle`): running, flushing or stopping, and
//!   whether a move is owed.
//!
//! `StreamPipeline` keeps what ties them together: routing a record through them
//! (`aggregate.rs`), sending and reading answers (`send.rs`), and what an answer
//! means for each user record (`settle.rs`). Records and deadlines are in
//! [`record`].

mod aggregate;
mod assemble;
mod drain;
mod flights;
mod lifecycle;
mod ordered;
mod record;
mod report;
mod retry;
mod send;
mod settle;
mod shards;
mod slab;
#[cfg(test)]
mod tests;
mod verify;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kpl_codec::{DEFAULT_MAX_RECORD_SIZE, SHARD_BYTES_PER_SECOND, SHARD_RECORDS_PER_SECOND};
use kpl_limiter::{Limiter, LimiterConfig, Release};
use kpl_shardmap::{Refresh, ShardId, ShardInfo};
use kpl_transport::{PutRecordsRequest, PutRecordsResponse, StreamId, TransportError};
use tracing::{debug, warn};

use crate::config::Config;
use crate::events::{Event, EventSink};
use crate::result::codes;

use aggregate::Aggregation;
use assemble::Assembler;
use drain::DrainMeter;
pub(crate) use drain::drain_limit;
use flights::Flights;
use lifecycle::{Lifecycle, Stages};
use record::KRec;
pub(crate) use record::{Body, Epoch, Packer, Rec};
use report::Report;
pub(crate) use report::Settled;
use retry::RetryQueue;
use shards::{Listed, ShardTracker};
pub use verify::VerifyStats;
pub(crate) use verify::{READ_LIMIT, ReadFrom};

/// How long, at most, records wait for the stream's first map, or for a new map
/// after their shard was found split (they go out raw, unaggregated, after that).
const SUSPECT_WAIT: Duration = Duration::from_secs(1);

/// A request the pipeline wants sent.
pub(crate) enum Transmit {
    /// List the stream's shards (every page), answered with
    /// [`StreamPipeline::handle_shards`].
    ListShards {
        /// The refresh this listing is for.
        refresh: Refresh,
        /// Only the open shards (else closed ones too: the stream's history).
        open_only: bool,
    },
    /// Read the stream's maximum record size (once, when records may be larger
    /// than the default 1 MiB), answered with
    /// [`StreamPipeline::handle_max_record_size`].
    MaxRecordSize,
    /// Read a shard (verify before resend), answered with
    /// [`StreamPipeline::handle_read`]: from a sequence number or a time, a
    /// GetShardIterator then a GetRecords; from an iterator, a GetRecords.
    ReadShard {
        /// The shard.
        shard: ShardId,
        /// Where the read starts.
        from: ReadFrom,
    },
    /// A PutRecords request, answered with [`StreamPipeline::handle_answer`] under
    /// `id`. The request carries the transport's own (longer) timeout.
    PutRecords {
        /// The request's number in this pipeline.
        id: u64,
        /// The request.
        request: PutRecordsRequest,
    },
}

/// One stream's pipeline: tracker → aggregation → limiter → assembler → flights,
/// with the retry queue feeding back into routing.
pub(crate) struct StreamPipeline {
    stream: StreamId,
    config: Config,
    /// What records' arrivals count from (the producer's).
    epoch: Epoch,
    /// Outcomes not taken yet, and events.
    report: Report,
    /// The shard map, its listing, and what waits for it.
    shards: ShardTracker,
    /// User records waiting to be aggregated, per shard.
    aggregation: Aggregation,
    /// The per-shard rate limiter.
    limiter: Limiter<ShardId, KRec>,
    /// Kinesis records on their way into requests.
    assembler: Assembler,
    /// Requests in flight and the congestion window.
    flights: Flights,
    /// Records in backoff.
    retries: RetryQueue,
    /// Requests to send, oldest first.
    transmits: VecDeque<Transmit>,
    /// Whether the stages owe a move before what is due can be told.
    stages: Stages,
    /// Running, flushing or stopping.
    lifecycle: Lifecycle,
    /// A put waits for room under the outstanding caps: what is buffered goes at
    /// the next drive (see [`handle_room_wanted`](Self::handle_room_wanted)).
    room_wanted: bool,
    /// How fast the stream drains, and the admission limit from it.
    drain: DrainMeter,
}

impl StreamPipeline {
    /// The pipeline of `stream`; `events`, if any, hears what happens in it; its
    /// records' arrivals count from `epoch`.
    pub(crate) fn new(
        stream: StreamId,
        config: Config,
        events: Option<Arc<dyn EventSink>>,
        epoch: Epoch,
    ) -> Self {
        let c = &config;
        let seed = c.seed
            ^ stream
                .name()
                .bytes()
                .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
        Self {
            shards: ShardTracker::new(seed),
            aggregation: Aggregation::new(c),
            limiter: Limiter::new(LimiterConfig::new(
                c.rate_limit,
                [SHARD_RECORDS_PER_SECOND, SHARD_BYTES_PER_SECOND],
            )),
            assembler: Assembler::new(c),
            flights: Flights::new(c),
            retries: RetryQueue::new(seed),
            // Records may be larger than the default limit: the stream's own is read
            // at once, in parallel with the first listing.
            transmits: VecDeque::from_iter(
                (c.max_user_record_size > DEFAULT_MAX_RECORD_SIZE)
                    .then_some(Transmit::MaxRecordSize),
            ),
            stages: Stages::Owed,
            lifecycle: Lifecycle::Running,
            room_wanted: false,
            drain: DrainMeter::default(),
            stream,
            config,
            report: Report::new(events),
            epoch,
        }
    }

    #[inline]
    fn emit<'a>(&'a self, event: impl FnOnce(&'a str) -> Event<'a>) {
        self.report.emit(self.stream.name(), event);
    }

    // ----- what comes in -----

    /// Takes records in: each gets its deadlines from its arrival and is buffered
    /// for the shard its hash key predicts.
    pub(crate) fn handle_put(&mut self, recs: Vec<Rec>, now: Instant) {
        self.stages.owe();
        let n = recs.len();
        self.emit(|stream| Event::Received { stream, records: n });
        self.route_all(recs, true, now);
    }

    /// Sends everything buffered without waiting for deadlines (records whose
    /// shard is not known yet still wait for the map, bounded by their deadline).
    pub(crate) fn handle_flush(&mut self) {
        self.stages.owe();
        self.lifecycle.flush();
    }

    /// A put waits for room under the producer's outstanding caps: the records
    /// buffered now are sent without waiting for their deadlines, once (records
    /// whose shard is not known yet go when the map comes). Nothing goes early
    /// while the stream holds records back (the limiter or the congestion window
    /// has some): there the caps wait for the stream, and batching is worth more.
    pub(crate) fn handle_room_wanted(&mut self) {
        self.stages.owe();
        self.room_wanted = true;
    }

    /// Nothing more comes in: send what is held, then be idle.
    pub(crate) fn handle_stop(&mut self) {
        self.stages.owe();
        self.lifecycle.stop();
    }

    /// Shuts down: every record not in flight fails as shut down (drained with
    /// [`take_settled`](Self::take_settled)); returns how many.
    pub(crate) fn handle_shutdown(&mut self, now: Instant) -> usize {
        self.stages.owe();
        self.lifecycle.shut_down();
        self.fail_all_held(now)
    }

    /// The answer to a [`Transmit::ListShards`]: the shards, each with whether it
    /// is closed, or the error of the listing.
    pub(crate) fn handle_shards(
        &mut self,
        refresh: Refresh,
        result: Result<Vec<(ShardInfo, bool)>, TransportError>,
        now: Instant,
    ) {
        self.stages.owe();
        self.shards_listed(refresh, result, now);
    }

    /// The answer to the [`Transmit::PutRecords`] numbered `id` (or its failure).
    pub(crate) fn handle_answer(
        &mut self,
        id: u64,
        result: Result<PutRecordsResponse, TransportError>,
        now: Instant,
    ) {
        self.stages.owe();
        self.put_answered(id, result, now);
    }

    /// The answer to a [`Transmit::ReadShard`] of `shard`.
    pub(crate) fn handle_read(
        &mut self,
        shard: ShardId,
        result: Result<kpl_transport::RecordsPage, TransportError>,
        now: Instant,
    ) {
        self.stages.owe();
        self.shard_read(shard, result, now);
    }

    /// The stream's maximum record size was read: raw records over it are failed
    /// as [`RECORD_TOO_LARGE`](codes::RECORD_TOO_LARGE) instead of being sent. When
    /// the service does not say, the default 1 MiB applies; when it cannot be read,
    /// records are sent and the service judges them. Until the answer, 1 MiB
    /// applies: raw records over it wait for it.
    pub(crate) fn handle_max_record_size(
        &mut self,
        result: Result<Option<usize>, TransportError>,
        now: Instant,
    ) {
        self.stages.owe();
        let waited = match result {
            Ok(limit) => {
                let limit = limit.unwrap_or(DEFAULT_MAX_RECORD_SIZE);
                debug!(stream = %self.stream, limit, "the stream's maximum record size");
                self.assembler.set_record_limit(Some(limit))
            }
            Err(e) => {
                warn!(stream = %self.stream, error = %e, "could not read the stream's maximum record size (DescribeStreamSummary): records over 1 MiB are sent and the service judges them");
                self.assembler.set_record_limit(None)
            }
        };
        // Records over 1 MiB that came before the answer.
        for krec in waited {
            self.collect(krec, now);
        }
    }

    // ----- what goes out -----

    /// The next request to send, after moving everything due at `now` one stage on.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        // Moving the stages on can make more due at once (a record taken out of an
        // expired aggregate goes round again): drive while anything is due now.
        if self.transmits.is_empty()
            && (!self.stages.moved_at(now) || self.poll_timeout(now).is_some_and(|t| t <= now))
        {
            self.drive(now);
        }
        self.transmits.pop_front()
    }

    /// When something is next due (a deadline, a backoff, a timeout, a refresh), if
    /// anything is; `now` when a request could go at once.
    pub(crate) fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if self.stages.owed() || !self.transmits.is_empty() || self.can_send() {
            return Some(now);
        }
        [
            self.aggregation.next_deadline(),
            self.limiter.next_ready_at(now),
            self.assembler.next_deadline(),
            self.retries.next_at(),
            self.flights.next_timeout(),
            self.shards.next_due(now),
            self.retries.verifier.next_due(),
            self.aggregation.ordered().and_then(|o| {
                let shards = &self.shards;
                o.next_deadline(now, |s| shards.range_of(s, now))
            }),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Records that have their outcome since the last call.
    pub(crate) fn take_settled(&mut self) -> Settled {
        self.report.take(self.stream.name())
    }

    /// A new admission limit for the stream's outstanding bytes, once per change.
    pub(crate) fn poll_admission(&mut self) -> Option<usize> {
        self.drain.poll_admission()
    }

    /// Whether it holds no record and waits for no listing: a stopped stream's
    /// driver can end.
    pub(crate) fn is_idle(&self) -> bool {
        !self.holds_records() && !self.shards.is_listing()
    }

    fn holds_records(&self) -> bool {
        self.holds_buffered() || self.flights.holds_records() || self.shards.has_awaiting()
    }

    /// Whether any record waits to be sent: in a stage or in backoff (not in
    /// flight, not stored and waiting for the map).
    fn holds_buffered(&self) -> bool {
        !self.aggregation.is_empty()
            || !self.limiter.is_empty()
            || !self.assembler.is_empty()
            || !self.retries.is_empty()
            || !self.retries.verifier.is_empty()
    }

    /// Moves everything that is due at `now` one stage on, and queues what can be
    /// sent.
    fn drive(&mut self, now: Instant) {
        self.stages.moved(now);
        // Shut down: what a request in flight handed back (to be retried, verified
        // or placed) fails now, not after its time to live.
        if self.lifecycle.is_shut_down() {
            self.fail_all_held(now);
        }
        // The shard map.
        if let Some(listing) = self.shards.poll_listing(now) {
            self.transmits.push_back(listing);
        }
        // Requests past their timeout.
        self.poll_timeouts(now);
        // Records of requests that may have stored them: reads due.
        self.poll_verify(now);
        // Retries whose backoff has passed.
        let due: Vec<Rec> = std::iter::from_fn(|| self.retries.pop_due(now)).collect();
        self.route_all(due, false, now);
        // Records stored on shards the map could not place, past their time.
        let late = self.shards.take_late(now);
        for landed in late {
            // Stored, but where the map cannot tell: a KCL consumer may drop it.
            let mut rec = landed.rec;
            rec.attempt_sent(self.epoch, now, now, Some((codes::WRONG_SHARD, "stored on a shard whose range could not be verified before the record's time to live passed: a KCL consumer may drop it")), Some(&landed.shard_id), true);
            self.fail(rec.m);
        }
        // A put waiting for room: everything buffered goes now, unless the stream
        // is what holds records back.
        let room_wanted = std::mem::take(&mut self.room_wanted)
            && self.limiter.is_empty()
            && !self.assembler.has_ready();
        // Records waiting for the shard map go when it comes.
        self.room_wanted = room_wanted && self.aggregation.has_unknown();
        // Aggregators whose deadline passed (or all, when flushing).
        self.poll_aggregators(now, room_wanted);
        // The limiter.
        for release in self.limiter.poll(now) {
            match release {
                Release::Ready { mut item, .. } => {
                    item.released = Some(now);
                    self.collect(item, now);
                }
                Release::Expired { item, .. } => self.expire_krec(item, now),
            }
        }
        // The collector.
        let at_once = (self.lifecycle.sends_at_once() || room_wanted) && self.limiter.is_empty();
        self.assembler.poll(now, at_once);
        // The sender: as much as the congestion window has room for.
        self.send_ready(now);
        if self.lifecycle == Lifecycle::Flushing && !self.holds_buffered() {
            self.lifecycle.flushed();
        }
        self.update_drain_limit(now);
    }

    /// Measures how fast the stream drains, and sets the admission limit from it:
    /// what the stream can store in a quarter of the records' time to live, at the
    /// lower of its shards' rate limit and the rate measured while records waited (a
    /// slow path, throttling), never under a floor (see [`drain_limit`]). A fast
    /// reader into a slow stream then waits, instead of expiring records that never
    /// had an attempt.
    fn update_drain_limit(&mut self, now: Instant) {
        // Whether records waited is asked only when a sample ends.
        let backlogged = self.drain.sample_due(now) && self.holds_buffered();
        let shards = self.shards.map().shards().len();
        if let Some(limit) = self.drain.measure(&self.config, now, backlogged, shards) {
            debug!(stream = %self.stream, limit, "admission limit");
        }
    }

    fn shards_listed(
        &mut self,
        refresh: Refresh,
        result: Result<Vec<(ShardInfo, bool)>, TransportError>,
        now: Instant,
    ) {
        let (shards, error) = match result {
            Ok(shards) => (Some(shards), None),
            Err(e) => (None, Some(e)),
        };
        match self.shards.listed(refresh, shards, now) {
            Listed::Map {
                open,
                closed,
                resharded,
            } => {
                debug!(stream = %self.stream, shards = open, closed, "shard map refreshed");
                self.after_map_update(now);
                if resharded {
                    self.reshard_seen(now);
                }
            }
            Listed::Failed { no_map, retry_at } => {
                if no_map && !self.aggregation.is_ordered() {
                    // No first map yet: what waited for it goes out raw, as the KPL
                    // sends records while its map is not ready.
                    for held in self.aggregation.flush_unknown() {
                        self.aggregate(vec![held], None, now);
                    }
                }
                let error = error.map(|e| e.to_string()).unwrap_or_default();
                tracing::warn!(stream = %self.stream, %error, retry_in_ms = retry_at.saturating_duration_since(now).as_millis() as u64, "ListShards failed");
            }
        }
    }
}

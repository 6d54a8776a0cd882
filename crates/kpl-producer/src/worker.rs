//! One stream's pipeline: aggregator → limiter → collector → sender → retrier,
//! driven as a single task over the sans-IO cores.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::mpsc;
use kpl_codec::{
    AGGREGATE_OVERHEAD, AGGREGATED_PARTITION_KEY, AggregateBuilder, HashKey,
    SHARD_BYTES_PER_SECOND, SHARD_RECORDS_PER_SECOND, UserRecord, aggregate_growth_bound,
};
use kpl_limiter::{
    Answer, CongestionWindow, LimitItem, Limiter, LimiterConfig, Release, Ticket, WindowConfig,
};
use kpl_reducer::{Item, Policy, Predicate, Reducer};
use kpl_runtime::SplitMix64;
use kpl_shardmap::{Landing, LookupError, Refresh, ShardId, ShardInfo, ShardMap};
use kpl_transport::{
    EntryResult, ErrorKind, ListShardsRequest, PutRecordsEntry, PutRecordsRequest,
    PutRecordsResponse, StreamId, TransportError,
};
use tracing::{debug, warn};

use crate::accounting::Shared;
use crate::config::Config;
use crate::events::Event;
use crate::result::{Attempt, Completer, RecordResult, codes};

/// Bytes buffered for one shard that close a PutRecords batch early (the KPL's rule).
const SHARD_BYTES_CLOSE: usize = 256 * 1024;
/// First backoff after a request-level failure; doubles per consecutive failure.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest backoff after request-level failures.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Bytes each request of the congestion window may carry: with a window of one, a
/// request of at most this much; what one lost answer can duplicate stays small.
const WINDOW_UNIT_BYTES: u64 = 256 * 1024;
/// Bytes one PutRecords request carries at most (a single larger Kinesis record
/// still goes alone): a lost answer duplicates at most this much, and requests on a
/// slow path stay short.
const MAX_REQUEST_BYTES: u64 = 512 * 1024;
/// How long, at most, records wait for the stream's first map, or for a new map
/// after their shard was found split (they go out raw, unaggregated, after that).
const SUSPECT_WAIT: Duration = Duration::from_secs(1);
/// The admission limit of a stream never goes below this many bytes outstanding.
const DRAIN_LIMIT_FLOOR: usize = 4 << 20;
/// Attempts after which a still-retried record is logged at warn.
const WARN_AFTER_ATTEMPTS: usize = 5;
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

/// Messages from the producer.
pub(crate) enum Command {
    Put(Vec<Rec>),
    Flush,
    /// Fail whatever is not in flight as shut down; report how many.
    Shutdown(mpsc::UnboundedSender<usize>),
    /// Nothing is left: stop once idle.
    Stop,
}

/// Messages from the worker's own request tasks.
enum Completion {
    /// A listing: the shards, each with whether it is closed.
    Shards(Refresh, Result<Vec<(ShardInfo, bool)>, TransportError>),
    /// A PutRecords request's answer, by request number.
    Put(u64, Result<PutRecordsResponse, TransportError>),
}

/// A user record in the pipeline.
pub(crate) struct Rec {
    id: u64,
    partition_key: String,
    /// Whether `hash_key` is the user's explicit hash key (else the key's MD5).
    explicit: bool,
    hash_key: HashKey,
    data: Bytes,
    arrival: Instant,
    deadline: Instant,
    expiration: Instant,
    attempts: Vec<Attempt>,
    completer: Completer,
}

/// How long after the stream was last seen resharding its big aggregates are cut
/// at their shard's midpoint (see `Worker::cut_at_midpoint`).
const RESHARD_MEMORY: Duration = Duration::from_secs(3_600);

/// The share of a record's buffering time left to the collector: the KPL extends an
/// aggregate's deadline by min(50 ms, 20 %) before the collector; we take that time
/// out of the aggregator's share instead, so a record is never held longer than
/// `record_max_buffered_time` in all (bounded latency beats maximum throughput).
fn collector_share(buffered: Duration) -> Duration {
    (buffered / 5).min(Duration::from_millis(50))
}

/// The aggregator deadline of a record given `budget` of buffering time from `now`.
fn aggregator_deadline(now: Instant, budget: Duration) -> Instant {
    add_capped(now, budget - collector_share(budget))
}

fn add_capped(now: Instant, d: Duration) -> Instant {
    // A huge TTL must not overflow (KPL #54): cap at about a century.
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl Rec {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        partition_key: String,
        explicit_hash_key: Option<HashKey>,
        hash_key: HashKey,
        data: Bytes,
        now: Instant,
        config: &Config,
        completer: Completer,
    ) -> Self {
        let expiration = add_capped(now, config.record_ttl);
        Self {
            id,
            partition_key,
            explicit: explicit_hash_key.is_some(),
            hash_key,
            data,
            arrival: now,
            deadline: aggregator_deadline(now, config.record_max_buffered_time).min(expiration),
            expiration,
            attempts: Vec::new(),
            completer,
        }
    }

    /// The user's explicit hash key, if any.
    fn explicit_hash_key(&self) -> Option<HashKey> {
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
    fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// An upper bound of what it adds to an aggregate's protobuf body.
    fn aggregate_bound(&self) -> usize {
        aggregate_growth_bound(self.partition_key.len(), self.data.len(), self.explicit)
    }

    fn attempt(
        &mut self,
        started: Instant,
        end: Instant,
        error: Option<(&str, &str)>,
        shard: Option<&Arc<str>>,
    ) {
        self.attempt_sent(started, end, error, shard, false);
    }

    /// An attempt whose failure may have stored the record all the same.
    fn attempt_sent(
        &mut self,
        started: Instant,
        end: Instant,
        error: Option<(&str, &str)>,
        shard: Option<&Arc<str>>,
        may_have_been_stored: bool,
    ) {
        if self.attempts.is_empty() {
            // Most records need one attempt: no room for four.
            self.attempts.reserve_exact(1);
        }
        self.attempts.push(Attempt {
            started,
            delay: started.saturating_duration_since(self.last()),
            duration: end.saturating_duration_since(started),
            success: error.is_none(),
            error_code: error.map(|(c, _)| c.to_owned()),
            error_message: error.map(|(_, m)| m.to_owned()),
            shard_id: shard.cloned(),
            may_have_been_stored,
        });
    }

    /// Whether an attempt may have stored it already.
    fn may_have_been_stored(&self) -> bool {
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
    records: Vec<Rec>,
    partition_key: String,
    explicit_hash_key: Option<HashKey>,
    data: Bytes,
    shard: Option<ShardId>,
    deadline: Instant,
    expiration: Instant,
    aggregated: bool,
    /// When the limiter let it out (its room in the shard's window counts from when
    /// it is sent).
    released: Option<Instant>,
}

impl KRec {
    fn size(&self) -> usize {
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

/// The collector's early close: one shard has 256 KiB buffered.
#[derive(Default)]
struct ShardBytes {
    bytes: HashMap<Option<ShardId>, usize>,
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

/// What a stream of `shards` shards can store in a quarter of the records' time to
/// live (a margin for throttling and retries), at
/// the lower of its shards' byte limit (times `rate_limit`, at most 100 %) and the
/// measured `rate` (user bytes per second), never under [`DRAIN_LIMIT_FLOOR`]: the admission limit of its pipeline.
/// Before the shard map is known, a stream counts as one shard.
pub(crate) fn drain_limit(c: &Config, shards: usize, rate: Option<f64>) -> usize {
    let horizon = c.record_ttl.as_secs_f64() / 4.0;
    // A shard stores at most its limit, whatever the rate limit lets out.
    let percent = c.rate_limit.min(100) as f64;
    let capacity = shards.max(1) as f64 * SHARD_BYTES_PER_SECOND as f64 * percent / 100.0;
    let rate = rate.map_or(capacity, |r| r.min(capacity));
    ((rate * horizon) as usize).max(DRAIN_LIMIT_FLOOR)
}

/// The congestion window of a stream's pipeline: `max_connections` is its ceiling,
/// `request_timeout` its base timeout.
fn window_config(c: &Config) -> WindowConfig {
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

/// How long the transport waits for an answer the worker stopped waiting for at
/// `timeout`: a late answer settles the records not resent yet.
fn late_answer_limit(timeout: Duration) -> Duration {
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
struct InFlight {
    /// Its Kinesis records, until its answer or its timeout.
    batch: Option<Vec<KRec>>,
    ticket: Ticket,
    /// After its timeout, per Kinesis record: the predicted shard, whether it is an
    /// aggregate, and its user records' ids. The transport waits longer than the
    /// worker (three timeouts): an answer that comes late still settles the records
    /// not yet resent, so a brownout does not turn into duplicates.
    late: Vec<(Option<ShardId>, bool, Vec<u64>)>,
}

/// A record stored on a shard the map cannot place yet: decided after the refresh.
struct Landed {
    rec: Rec,
    shard_id: Arc<str>,
    sequence_number: Arc<str>,
    /// Refreshes asked for on its behalf: one of the open shards, then one of the
    /// stream's history (the shard may have closed before the first listed it).
    asked: u8,
}

pub(crate) struct Worker {
    stream: StreamId,
    shared: Arc<Shared>,
    commands: Option<mpsc::UnboundedReceiver<Command>>,
    completions_tx: mpsc::UnboundedSender<Completion>,
    completions: mpsc::UnboundedReceiver<Completion>,
    map: ShardMap,
    refreshing: bool,
    map_version_seen: u64,
    aggregators: HashMap<ShardId, Reducer<Rec>>,
    agg_schedule: BinaryHeap<Reverse<(Instant, ShardId)>>,
    aggregate_policy: Policy,
    unknown: Reducer<Rec>,
    limiter: Limiter<ShardId, KRec>,
    collector: Reducer<KRec, ShardBytes>,
    ready: VecDeque<Vec<KRec>>,
    window: CongestionWindow,
    in_flight: HashMap<u64, InFlight>,
    /// (timeout, request number) of the requests in flight.
    timeouts: BinaryHeap<Reverse<(Instant, u64)>>,
    next_request: u64,
    retries: BinaryHeap<Reverse<(Instant, u64)>>,
    retry_recs: HashMap<u64, Rec>,
    awaiting_map: Vec<Landed>,
    /// When the stream was last seen resharding (see [`RESHARD_MEMORY`]).
    resharded_at: Option<Instant>,
    /// Shards found split or merged (an aggregate for one landed elsewhere): their
    /// records are not aggregated until the map is refreshed, so that few copies are
    /// stored outside a shard's range.
    suspects: HashSet<ShardId>,
    /// The next refresh lists closed shards too.
    want_history: bool,
    /// Records that reached [`WARN_AFTER_ATTEMPTS`], and records of requests that
    /// failed for good: one line per stream every few seconds, not one per record or
    /// request.
    persisting: Warned,
    fatal: Warned,
    request_failures: u32,
    builder: AggregateBuilder<Bytes>,
    resolved: Vec<(u64, usize)>,
    /// Backoff jitter.
    rng: SplitMix64,
    flushing: bool,
    stopping: bool,
    /// User bytes stored since `drain_since`, for the drain rate.
    drained: u64,
    drain_since: Option<Instant>,
    /// Smoothed user bytes per second stored while records waited.
    drain_rate: Option<f64>,
    drain_limit: Option<usize>,
}

impl Worker {
    pub(crate) fn new(
        stream: StreamId,
        shared: Arc<Shared>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        let c = &shared.config;
        let (completions_tx, completions) = mpsc::unbounded();
        let aggregate_policy = if c.aggregation_enabled {
            Policy::new(
                usize::try_from(c.aggregation_max_count).unwrap_or(usize::MAX),
                c.aggregation_max_size.saturating_sub(AGGREGATE_OVERHEAD),
            )
        } else {
            Policy::new(1, usize::MAX)
        };
        let seed = c.seed
            ^ stream
                .name()
                .bytes()
                .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
        Self {
            map: ShardMap::new(seed),
            refreshing: false,
            map_version_seen: 0,
            aggregators: HashMap::new(),
            agg_schedule: BinaryHeap::new(),
            aggregate_policy,
            unknown: Reducer::new(Policy::new(usize::MAX, usize::MAX)),
            limiter: Limiter::new(LimiterConfig::new(
                c.rate_limit,
                [SHARD_RECORDS_PER_SECOND, SHARD_BYTES_PER_SECOND],
            )),
            collector: Reducer::with_predicate(
                Policy::new(c.collection_max_count, c.collection_max_size),
                ShardBytes::default(),
            ),
            ready: VecDeque::new(),
            window: CongestionWindow::new(window_config(c)),
            in_flight: HashMap::new(),
            timeouts: BinaryHeap::new(),
            next_request: 0,
            retries: BinaryHeap::new(),
            retry_recs: HashMap::new(),
            awaiting_map: Vec::new(),
            resharded_at: None,
            suspects: HashSet::new(),
            want_history: false,
            persisting: Warned::default(),
            fatal: Warned::default(),
            request_failures: 0,
            builder: AggregateBuilder::new(),
            resolved: Vec::new(),
            rng: SplitMix64::new(seed),
            flushing: false,
            stopping: false,
            drained: 0,
            drain_since: None,
            drain_rate: None,
            drain_limit: None,
            stream,
            shared,
            commands: Some(commands),
            completions_tx,
            completions,
        }
    }

    fn emit<'a>(&'a self, event: impl FnOnce(&'a str) -> Event<'a>) {
        if let Some(sink) = &self.shared.events {
            sink.on_event(&event(self.stream.name()));
        }
    }

    fn holds_records(&self) -> bool {
        !self.aggregators.values().all(Reducer::is_empty)
            || !self.unknown.is_empty()
            || !self.limiter.is_empty()
            || !self.collector.is_empty()
            || !self.ready.is_empty()
            || self.in_flight.values().any(|f| f.batch.is_some())
            || !self.retry_recs.is_empty()
            || !self.awaiting_map.is_empty()
    }

    pub(crate) async fn run(mut self) {
        loop {
            let now = self.shared.runtime.now();
            self.drive(now);
            self.update_drain_limit(now);
            self.publish();
            if self.commands.is_none() && !self.holds_records() && !self.refreshing {
                debug!(stream = %self.stream, "pipeline stopped");
                return;
            }
            let wake = self.next_wake(now);
            let mut sleep = wake.map(|at| self.shared.runtime.sleep_until(at));
            enum Next {
                Command(Option<Command>),
                Completion(Completion),
                Timer,
            }
            let next = poll_fn(|cx| {
                // Completions first: they free connections and space.
                if let Poll::Ready(Some(c)) = self.completions.poll_next_unpin(cx) {
                    return Poll::Ready(Next::Completion(c));
                }
                if let Some(commands) = self.commands.as_mut() {
                    if let Poll::Ready(c) = commands.poll_next_unpin(cx) {
                        return Poll::Ready(Next::Command(c));
                    }
                }
                if let Some(s) = sleep.as_mut() {
                    if Pin::new(s).poll(cx).is_ready() {
                        return Poll::Ready(Next::Timer);
                    }
                }
                Poll::Pending
            })
            .await;
            drop(sleep);
            let now = self.shared.runtime.now();
            match next {
                Next::Command(Some(c)) => {
                    self.command(c, now);
                    // Take a backlog of commands in one go before driving the stages.
                    for _ in 0..64 {
                        match self
                            .commands
                            .as_mut()
                            .map(mpsc::UnboundedReceiver::try_recv)
                        {
                            Some(Ok(c)) => self.command(c, now),
                            Some(Err(mpsc::TryRecvError::Closed)) => {
                                self.commands = None;
                                self.flushing = true;
                                break;
                            }
                            _ => break,
                        }
                    }
                }
                Next::Command(None) => {
                    // Every producer handle is gone: finish what we hold, then stop.
                    self.commands = None;
                    self.flushing = true;
                }
                Next::Completion(c) => self.completion(c, now),
                Next::Timer => {}
            }
        }
    }

    /// Measures how fast the stream drains, and sets the admission limit from it:
    /// what the stream can store in a quarter of the records' time to live, at the lower of
    /// its shards' rate limit and the rate measured while records waited (a slow
    /// path, throttling), never under [`DRAIN_LIMIT_FLOOR`]. A fast reader into a
    /// slow stream then waits, instead of expiring records that never had an
    /// attempt.
    fn update_drain_limit(&mut self, now: Instant) {
        let since = *self.drain_since.get_or_insert(now);
        let elapsed = now.saturating_duration_since(since);
        if elapsed >= Duration::from_secs(1) {
            if self.holds_buffered() {
                // Backlogged: what was stored is what the stream can take.
                let sample = self.drained as f64 / elapsed.as_secs_f64();
                self.drain_rate = Some(self.drain_rate.map_or(sample, |r| 0.5 * r + 0.5 * sample));
            }
            self.drained = 0;
            self.drain_since = Some(now);
        }
        let shards = self.map.shards().len();
        if shards == 0 {
            return;
        }
        let limit = drain_limit(&self.shared.config, shards, self.drain_rate);
        // Publish only real changes (a lock and maybe wake-ups).
        let changed = self
            .drain_limit
            .is_none_or(|old| limit.abs_diff(old) > old / 8);
        if changed {
            self.drain_limit = Some(limit);
            debug!(stream = %self.stream, limit, "admission limit");
            self.shared.set_drain_limit(&self.stream, Some(limit));
        }
    }

    /// Gives resolved records' space back.
    fn publish(&mut self) {
        if !self.resolved.is_empty() {
            self.shared.release(&self.stream, &self.resolved);
            self.resolved.clear();
        }
    }

    fn next_wake(&self, now: Instant) -> Option<Instant> {
        if self.can_send() {
            return Some(now);
        }
        [
            self.agg_schedule.peek().map(|Reverse((t, _))| *t),
            self.unknown.next_deadline(),
            self.limiter.next_ready_at(now),
            self.collector.next_deadline(),
            self.retries.peek().map(|Reverse((t, _))| *t),
            self.timeouts.peek().map(|Reverse((t, _))| *t),
            if self.refreshing {
                None
            } else {
                self.map.next_refresh_at(now)
            },
            self.awaiting_map.iter().map(|l| l.rec.expiration).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Put(recs) => {
                let n = recs.len();
                self.emit(|stream| Event::Received { stream, records: n });
                for rec in recs {
                    self.route(rec, now);
                }
            }
            Command::Flush => self.flushing = true,
            Command::Shutdown(report) => {
                let failed = self.fail_all_held(now);
                let _ = report.unbounded_send(failed);
                self.stopping = true;
            }
            Command::Stop => self.stopping = true,
        }
    }

    /// Predicts a record's shard and buffers it there (or with the unknowns).
    fn route(&mut self, mut rec: Rec, now: Instant) {
        if rec.expiration <= now {
            self.expire(rec, now);
            return;
        }
        let lookup = self.map.lookup(rec.hash_key);
        let first_map = matches!(lookup, Err(LookupError::NotReady)) && self.refreshing;
        let found = lookup.ok();
        if first_map || found.is_some_and(|s| self.suspects.contains(s.id())) {
            // The first map is loading, or the record's shard was found split: wait
            // a little longer for the map, so the record is aggregated with its
            // shard's instead of going raw (raw records cost a slow peer dearly).
            rec.deadline = rec
                .deadline
                .max(add_capped(now, SUSPECT_WAIT))
                .min(rec.expiration);
        }
        match found.filter(|s| !self.suspects.contains(s.id())) {
            Some(shard) => {
                let shard = shard.id().clone();
                let policy = self.aggregate_policy;
                let reducer = self
                    .aggregators
                    .entry(shard.clone())
                    .or_insert_with(|| Reducer::new(policy));
                let before = reducer.next_deadline();
                // Deadlines are left to `drive`: a backlog of late records then closes
                // full aggregates instead of one per record.
                let batches = reducer.add_deferred(rec);
                let after = reducer.next_deadline();
                if after.is_some() && after != before {
                    if let Some(at) = after {
                        self.agg_schedule.push(Reverse((at, shard.clone())));
                    }
                }
                for batch in batches {
                    self.aggregate(batch, Some(shard.clone()), now);
                }
            }
            None => {
                // Unknown shard (or one found split): never aggregated with others;
                // waits for the map until its deadline, then goes alone.
                for batch in self.unknown.add_deferred(rec) {
                    for rec in batch {
                        self.aggregate(vec![rec], None, now);
                    }
                }
            }
        }
    }

    /// Makes a Kinesis record of a batch of one shard's user records.
    fn aggregate(&mut self, mut batch: Vec<Rec>, shard: Option<ShardId>, now: Instant) {
        if batch.iter().any(|r| r.expiration <= now) {
            let (expired, live): (Vec<Rec>, Vec<Rec>) =
                batch.into_iter().partition(|r| r.expiration <= now);
            for rec in expired {
                self.expire(rec, now);
            }
            batch = live;
        }
        if batch.is_empty() {
            return;
        }
        if let Some(upper) = self.cut_at_midpoint(&mut batch, shard.as_ref(), now) {
            self.build(upper, shard.clone(), now);
        }
        self.build(batch, shard, now);
    }

    /// While the stream reshards, cuts a big aggregate of a shard's records in two
    /// at the shard's midpoint, and returns the upper half.
    ///
    /// An aggregate lands where its first record's hash key says. After a split, its
    /// records that belong to the other child are resent, and the copies it left
    /// there are dropped by a KCL consumer but read by consumers that do not filter by
    /// range. Splits are mostly at a shard's midpoint (`UpdateShardCount`'s uniform
    /// scaling, the usual `SplitShard`): an aggregate of one half holds no record of
    /// the other child, so what was in flight at such a split leaves no copies.
    ///
    /// Reshards come in runs (`UpdateShardCount` is a series of splits or merges; an
    /// autoscaler or on-demand capacity reacts again and again), so this starts once
    /// the stream is seen resharding (a shard found split or merged, or a refresh
    /// that changed the open shards) and lasts [`RESHARD_MEMORY`]; the first split of
    /// a run is not foreseen. Outside of runs the aggregates stay whole: twice as many
    /// Kinesis records slow a peer that pays per record (kinesalite).
    ///
    /// Only aggregates of at least half the size limit are cut, so each part still
    /// fills most of the 25 KiB a PUT payload unit bills, and the records stay
    /// together until they close (cutting them on arrival into two aggregators would
    /// keep twice as many partial aggregates in memory).
    fn cut_at_midpoint(
        &self,
        batch: &mut Vec<Rec>,
        shard: Option<&ShardId>,
        now: Instant,
    ) -> Option<Vec<Rec>> {
        let shard = shard?;
        if batch.len() < 2 || !self.resharding(now) {
            return None;
        }
        let size: usize = batch.iter().map(Item::size).sum();
        if size < self.aggregate_policy.max_size() / 2 {
            return None;
        }
        let (lo, hi) = self.map.range_of(shard, now)?;
        let (lo, hi) = (lo.get(), hi.get());
        // The upper half starts where a split at the midpoint starts its second child.
        let mid = lo + (hi - lo) / 2;
        let is_upper = |r: &Rec| r.hash_key.get() > mid;
        let uppers = batch.iter().filter(|r| is_upper(r)).count();
        if uppers == 0 || uppers == batch.len() {
            return None;
        }
        // Each part in a vector of its exact size (the batch would be shrunk anyway).
        let mut upper = Vec::with_capacity(uppers);
        let mut lower = Vec::with_capacity(batch.len() - uppers);
        for r in batch.drain(..) {
            if is_upper(&r) {
                upper.push(r);
            } else {
                lower.push(r);
            }
        }
        *batch = lower;
        Some(upper)
    }

    /// Makes one Kinesis record of a batch of live records.
    fn build(&mut self, mut batch: Vec<Rec>, shard: Option<ShardId>, now: Instant) {
        // Batches grow by doubling; a waiting aggregate should not keep the slack.
        batch.shrink_to_fit();
        let deadline = batch.iter().map(|r| r.deadline).min().unwrap_or(now);
        let expiration = batch.iter().map(|r| r.expiration).min().unwrap_or(now);
        // The KPL gives aggregates a little more time before the collector.
        let extension = collector_share(self.shared.config.record_max_buffered_time);
        let deadline = add_capped(deadline, extension).min(expiration);
        let krec = if batch.len() == 1 {
            let r = &batch[0];
            KRec {
                partition_key: r.partition_key.clone(),
                explicit_hash_key: r.explicit_hash_key(),
                data: r.data.clone(),
                records: batch,
                shard,
                deadline,
                expiration,
                aggregated: false,
                released: None,
            }
        } else {
            self.builder.clear();
            let first = batch[0].hash_key;
            // A record routed by its key's MD5 brings the hash the builder's key table
            // needs; a batch with an explicit hash key in it is hashed by the builder.
            let hashed = batch.iter().all(|r| !r.explicit);
            for r in batch.iter_mut() {
                let mut user =
                    UserRecord::new(std::mem::take(&mut r.partition_key), r.data.clone());
                user.explicit_hash_key = r.explicit_hash_key();
                if hashed {
                    self.builder
                        .add_with_key_hash(user, r.hash_key.get() as u64);
                } else {
                    self.builder.add(user);
                }
            }
            let mut data = Vec::with_capacity(self.builder.size());
            self.builder.encode_aggregate_into(&mut data);
            for (r, user) in batch.iter_mut().zip(self.builder.take_records()) {
                r.partition_key = user.partition_key;
            }
            KRec {
                records: batch,
                partition_key: AGGREGATED_PARTITION_KEY.to_owned(),
                explicit_hash_key: Some(first),
                data: Bytes::from(data),
                shard,
                deadline,
                expiration,
                aggregated: true,
                released: None,
            }
        };
        match krec.shard.clone() {
            Some(shard) => self.limiter.add(shard, krec, now),
            None => self.collect(krec),
        }
    }

    fn collect(&mut self, krec: KRec) {
        // Deadlines are polled in `drive`, after every release of this round.
        let batches = self.collector.add_deferred(krec);
        self.ready.extend(batches);
    }

    /// Moves everything that is due at `now` one stage on, and sends what can go.
    fn drive(&mut self, now: Instant) {
        // The shard map.
        if !self.refreshing {
            if let Some(refresh) = self.map.poll_refresh(now) {
                self.refreshing = true;
                let history = std::mem::take(&mut self.want_history);
                self.spawn_refresh(refresh, history);
            }
        }
        // Requests past their timeout.
        self.poll_timeouts(now);
        // Retries whose backoff has passed.
        while let Some(&Reverse((at, id))) = self.retries.peek() {
            if at > now {
                break;
            }
            self.retries.pop();
            if let Some(rec) = self.retry_recs.remove(&id) {
                self.route(rec, now);
            }
        }
        // Records stored on shards the map could not place, past their time.
        let (late, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.awaiting_map)
            .into_iter()
            .partition(|l| l.rec.expiration <= now);
        self.awaiting_map = keep;
        for landed in late {
            // Stored, but where the map cannot tell: a KCL consumer may drop it.
            let mut rec = landed.rec;
            rec.attempt_sent(now, now, Some((codes::WRONG_SHARD, "stored on a shard whose range could not be verified before the record's time to live passed: a KCL consumer may drop it")), Some(&landed.shard_id), true);
            self.fail(rec);
        }
        // Aggregators whose deadline passed (or all, when flushing).
        if self.flushing || self.stopping {
            let shards: Vec<ShardId> = self.aggregators.keys().cloned().collect();
            for shard in shards {
                let batches = self
                    .aggregators
                    .get_mut(&shard)
                    .map(Reducer::flush)
                    .unwrap_or_default();
                for batch in batches {
                    self.aggregate(batch, Some(shard.clone()), now);
                }
            }
            self.agg_schedule.clear();
            // Records whose shard is unknown (the first map loading, a shard found
            // split) wait for the map rather than go out unaggregated, even in a
            // flush; their deadlines bound the wait.
            for batch in self.unknown.poll_expired(now) {
                for rec in batch {
                    self.aggregate(vec![rec], None, now);
                }
            }
        } else {
            while let Some(Reverse((at, shard))) = self.agg_schedule.peek().cloned() {
                if at > now {
                    break;
                }
                self.agg_schedule.pop();
                let Some(reducer) = self.aggregators.get_mut(&shard) else {
                    continue;
                };
                let batches = reducer.poll_expired(now);
                if let Some(next) = reducer.next_deadline() {
                    self.agg_schedule.push(Reverse((next, shard.clone())));
                }
                for batch in batches {
                    self.aggregate(batch, Some(shard.clone()), now);
                }
            }
            for batch in self.unknown.poll_expired(now) {
                for rec in batch {
                    self.aggregate(vec![rec], None, now);
                }
            }
        }
        // The limiter.
        for release in self.limiter.poll(now) {
            match release {
                Release::Ready { mut item, .. } => {
                    item.released = Some(now);
                    self.collect(item);
                }
                Release::Expired { item, .. } => self.expire_krec(item, now),
            }
        }
        // The collector.
        let batches = if (self.flushing || self.stopping) && self.limiter.is_empty() {
            self.collector.flush()
        } else {
            self.collector.poll_expired(now)
        };
        self.ready.extend(batches);
        // The sender: as much as the congestion window has room for.
        while let Some(window_room) = self.window.room() {
            let room = window_room.min(MAX_REQUEST_BYTES);
            let Some(mut batch) = self.ready.pop_front() else {
                break;
            };
            if batch.iter().any(|k| k.expiration <= now) {
                let (expired, live): (Vec<KRec>, Vec<KRec>) =
                    batch.into_iter().partition(|k| k.expiration <= now);
                for k in expired {
                    self.expire_krec(k, now);
                }
                batch = live;
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
            self.spawn_put(batch, now);
        }
        if self.flushing && !self.holds_buffered() {
            self.flushing = false;
        }
    }

    /// Whether the first ready batch can be sent now.
    fn can_send(&self) -> bool {
        let (Some(room), Some(first)) = (
            self.window.room(),
            self.ready.front().and_then(|b| b.first()),
        ) else {
            return false;
        };
        self.window.in_flight() == 0 || first.size() as u64 <= room
    }

    /// Whether anything waits in the buffers (not in flight, not in backoff).
    fn holds_buffered(&self) -> bool {
        !self.aggregators.values().all(Reducer::is_empty)
            || !self.unknown.is_empty()
            || !self.limiter.is_empty()
            || !self.collector.is_empty()
            || !self.ready.is_empty()
            || !self.retry_recs.is_empty()
    }

    /// Lists the open shards, or (`history`) every shard the stream still lists,
    /// closed ones included.
    fn spawn_refresh(&self, refresh: Refresh, history: bool) {
        let transport = self.shared.transport.clone();
        let stream = self.stream.clone();
        let tx = self.completions_tx.clone();
        self.shared.runtime.spawn(Box::pin(async move {
            let mut shards = Vec::new();
            let mut request = ListShardsRequest::First {
                stream,
                open_only: !history,
                max_results: Some(1000),
            };
            let result = loop {
                match transport.list_shards(request).await {
                    Ok(page) => {
                        shards.extend(page.shards.into_iter().map(|s| {
                            let closed = s.closed;
                            (
                                ShardInfo::new(s.shard_id, s.starting_hash_key, s.ending_hash_key),
                                closed,
                            )
                        }));
                        match page.next_token {
                            Some(token) => {
                                request = ListShardsRequest::Next {
                                    token,
                                    max_results: Some(1000),
                                }
                            }
                            None => break Ok(shards),
                        }
                    }
                    Err(e) => break Err(e),
                }
            };
            let _ = tx.unbounded_send(Completion::Shards(refresh, result));
        }));
    }

    fn spawn_put(&mut self, mut batch: Vec<KRec>, now: Instant) {
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
        let entries = batch
            .iter()
            .map(|k| {
                PutRecordsEntry::new(k.partition_key.clone(), k.explicit_hash_key, k.data.clone())
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
        let transport = self.shared.transport.clone();
        let tx = self.completions_tx.clone();
        self.shared.runtime.spawn(Box::pin(async move {
            let result = transport.put_records(request).await;
            let _ = tx.unbounded_send(Completion::Put(id, result));
        }));
    }

    /// Requests past their timeout: their records wait half a timeout (or the usual
    /// backoff, if longer) to be resent, while the answer may still come.
    fn poll_timeouts(&mut self, now: Instant) {
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
                .map(|k| {
                    (
                        k.shard.clone(),
                        k.aggregated,
                        k.records.iter().map(|r| r.id).collect(),
                    )
                })
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

    /// The answer of a request that timed out: records of it that were stored and
    /// are not resent yet are settled by it (their timeout attempt becomes the
    /// success); records already resent keep their flag (they may be stored twice).
    fn late_answer(&mut self, flight: InFlight, response: PutRecordsResponse, now: Instant) {
        if response.results.len() != flight.late.len() {
            return;
        }
        let started = flight.ticket.sent_at();
        let mut batch = Vec::new();
        let mut results = Vec::new();
        for ((shard, aggregated, ids), result) in flight.late.into_iter().zip(response.results) {
            if !matches!(result, EntryResult::Ok { .. }) {
                continue; // still to be resent, as planned
            }
            let mut records: Vec<Rec> = Vec::new();
            for id in ids {
                if let Some(mut rec) = self.retry_recs.remove(&id) {
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
                records,
                partition_key: String::new(),
                explicit_hash_key: None,
                data: Bytes::new(),
                shard,
                deadline: now,
                expiration: now,
                aggregated,
                released: None,
            });
            results.push(result);
        }
        if !batch.is_empty() {
            let n: usize = batch.iter().map(|k| k.records.len()).sum();
            debug!(stream = %self.stream, records = n, "a late answer settled records not resent yet");
            self.request_answered(batch, started, now, PutRecordsResponse::new(results));
        }
    }

    fn completion(&mut self, completion: Completion, now: Instant) {
        match completion {
            Completion::Shards(refresh, Ok(shards)) => {
                self.refreshing = false;
                let (closed, open): (Vec<_>, Vec<_>) = shards.into_iter().partition(|(_, c)| *c);
                debug!(stream = %self.stream, shards = open.len(), closed = closed.len(), "shard map refreshed");
                let changed = self.map.is_ready() && {
                    let mut was: Vec<&ShardId> =
                        self.map.shards().iter().map(ShardInfo::id).collect();
                    let mut now_open: Vec<&ShardId> = open.iter().map(|(s, _)| s.id()).collect();
                    was.sort_unstable();
                    now_open.sort_unstable();
                    was != now_open
                };
                self.map.on_refresh_succeeded(
                    refresh,
                    open.into_iter().map(|(s, _)| s).collect(),
                    now,
                );
                self.map
                    .remember_closed(closed.into_iter().map(|(s, _)| s).collect(), now);
                self.after_map_update(now);
                if changed {
                    self.reshard_seen(now);
                }
            }
            Completion::Shards(refresh, Err(e)) => {
                self.refreshing = false;
                if !self.map.is_ready() {
                    // No first map yet: what waited for it goes out raw, as the KPL
                    // sends records while its map is not ready.
                    for batch in self.unknown.flush() {
                        for rec in batch {
                            self.aggregate(vec![rec], None, now);
                        }
                    }
                }
                let retry_at = self.map.on_refresh_failed(refresh, now);
                warn!(stream = %self.stream, error = %e, retry_in_ms = retry_at.saturating_duration_since(now).as_millis() as u64, "ListShards failed");
            }
            Completion::Put(id, result) => {
                let Some(flight) = self.in_flight.remove(&id) else {
                    return;
                };
                let Some(batch) = flight.batch else {
                    if let Ok(response) = result {
                        self.late_answer(flight, response, now);
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
                let user_records = batch.iter().map(|k| k.records.len()).sum();
                let time = now.saturating_duration_since(started);
                self.emit(|stream| Event::Request {
                    stream,
                    time,
                    kinesis_records,
                    user_records,
                });
                match result {
                    Err(e) => self.request_failed(batch, started, now, e, Duration::ZERO),
                    Ok(response) => self.request_answered(batch, started, now, response),
                }
            }
        }
    }

    fn after_map_update(&mut self, now: Instant) {
        if self.map.version() == self.map_version_seen {
            return;
        }
        self.map_version_seen = self.map.version();
        // The new map knows the children of whatever was found split.
        self.suspects.clear();
        // Records that waited for the map go to their shards now.
        for batch in self.unknown.flush() {
            for rec in batch {
                self.route(rec, now);
            }
        }
        // Landings the old map could not place.
        for landed in std::mem::take(&mut self.awaiting_map) {
            self.settle_landing(landed, now);
        }
    }

    fn settle_landing(&mut self, landed: Landed, now: Instant) {
        let shard = ShardId::from(&*landed.shard_id);
        match self.map.classify(landed.rec.hash_key, &shard, now) {
            Landing::InRange => self.succeed(landed.rec, &landed.shard_id, &landed.sequence_number),
            Landing::OutOfRange => {
                let mut rec = landed.rec;
                if let Some(a) = rec.attempts.last_mut() {
                    // Stored, where a KCL consumer drops it; other consumers read a
                    // copy.
                    a.success = false;
                    a.may_have_been_stored = true;
                    a.error_code = Some(codes::WRONG_SHARD.into());
                    a.error_message = Some(format!(
                        "stored on {} whose range does not hold the record's hash key; sent again",
                        landed.shard_id
                    ));
                }
                self.retry(rec, now, Duration::ZERO);
            }
            Landing::UnknownShard => {
                // Ask for a refresh of the open shards, then, if that one did not
                // list the shard (it closed in between), one of the stream's history;
                // after that, wait for the record's time to live (no refresh loop).
                let mut landed = landed;
                match landed.asked {
                    0 => {
                        self.map.invalidate(now, Some(&shard));
                        landed.asked = 1;
                    }
                    1 if !self.refreshing => {
                        self.want_history = true;
                        self.map.invalidate(now, Some(&shard));
                        landed.asked = 2;
                    }
                    _ => {}
                }
                self.awaiting_map.push(landed);
            }
        }
    }

    fn request_failed(
        &mut self,
        batch: Vec<KRec>,
        started: Instant,
        now: Instant,
        e: TransportError,
        min_backoff: Duration,
    ) {
        let code = e.code_or_kind().to_owned();
        let message = e.message().to_owned();
        let users: usize = batch.iter().map(|k| k.records.len()).sum();
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
            || (self.shared.config.fail_if_throttled && e.kind() == ErrorKind::Throttled);
        let backoff = if fail_now {
            Duration::ZERO
        } else {
            self.request_failures = self.request_failures.saturating_add(1);
            let exp = BACKOFF_BASE
                .saturating_mul(1u32 << self.request_failures.min(10).saturating_sub(1));
            exp.min(BACKOFF_MAX)
                .mul_f64(0.5 + 0.5 * self.rng.unit())
                .max(min_backoff)
        };
        if fail_now {
            if let Some(records) = self.fatal.due(users, now) {
                warn!(stream = %self.stream, error = %e, records, "requests failed; retrying cannot help");
            } else {
                debug!(stream = %self.stream, error = %e, records = users, "request failed; retrying cannot help");
            }
        } else {
            debug!(stream = %self.stream, error = %e, backoff_ms = backoff.as_millis() as u64, "request failed; will retry");
        }
        let stored = e.may_have_been_stored();
        for k in batch {
            let shard = k.shard.as_ref().map(ShardId::to_arc);
            for mut rec in k.records {
                rec.attempt_sent(
                    started,
                    now,
                    Some((&code, &message)),
                    shard.as_ref(),
                    stored,
                );
                if fail_now {
                    self.fail(rec);
                } else {
                    self.retry(rec, now, backoff);
                }
            }
        }
    }

    fn request_answered(
        &mut self,
        batch: Vec<KRec>,
        started: Instant,
        now: Instant,
        response: PutRecordsResponse,
    ) {
        self.request_failures = 0;
        if response.results.len() != batch.len() {
            let message = format!(
                "PutRecords answered {} results for {} records; some may have been stored",
                response.results.len(),
                batch.len()
            );
            warn!(stream = %self.stream, "{message}");
            for k in batch {
                for mut rec in k.records {
                    rec.attempt(
                        started,
                        now,
                        Some((codes::RECORD_COUNT_MISMATCH, &message)),
                        None,
                    );
                    self.fail(rec);
                }
            }
            return;
        }
        let mut invalidate: Option<ShardId> = None;
        let mut split: Vec<ShardId> = Vec::new();
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
                    let n = k.records.len();
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
                        if k.shard.is_some() || !self.map.is_open(&actual) {
                            invalidate = Some(actual.clone());
                        }
                        // Evidence about the current map only: a request sent before
                        // the map's refresh started is already accounted for.
                        let current = self.map.as_of().is_none_or(|as_of| started >= as_of);
                        if let (Some(p), true) = (&k.shard, k.aggregated) {
                            if current && self.map.is_open(p) {
                                split.push(p.clone());
                            }
                        }
                    }
                    for mut rec in k.records {
                        rec.attempt(started, now, None, Some(&shard_arc));
                        if predicted_right || !k.aggregated {
                            // A raw record is delivered wherever it lands.
                            self.succeed(rec, &shard_arc, &sequence_number);
                        } else {
                            self.settle_landing(
                                Landed {
                                    rec,
                                    shard_id: shard_arc.clone(),
                                    sequence_number: sequence_number.clone(),
                                    asked: 0,
                                },
                                now,
                            );
                        }
                    }
                }
                EntryResult::Failed { code, message } => {
                    let shard = k.shard.clone();
                    let shard_arc = shard.as_ref().map(ShardId::to_arc);
                    let n = k.records.len();
                    self.emit(|stream| Event::Error {
                        stream,
                        shard_id: shard.as_ref().map(ShardId::as_str),
                        code: &code,
                        user_records: n,
                    });
                    let kind = ErrorKind::classify(Some(&code), None);
                    let throttled = kind == ErrorKind::Throttled;
                    if throttled {
                        if let Some(s) = &shard {
                            self.limiter.on_throttled(s, now);
                        }
                    }
                    let fail_now =
                        (throttled && self.shared.config.fail_if_throttled) || !kind.is_retryable();
                    for mut rec in k.records {
                        rec.attempt(started, now, Some((&code, &message)), shard_arc.as_ref());
                        if fail_now {
                            self.fail(rec);
                        } else {
                            self.retry(rec, now, Duration::ZERO);
                        }
                    }
                }
            }
        }
        if let Some(actual) = invalidate {
            self.map.invalidate(started, Some(&actual));
        }
        for shard in split {
            self.suspect(shard, now);
        }
    }

    /// An aggregate predicted for `shard` landed on another: the shard was split or
    /// merged. Until the map is refreshed, its records are not aggregated (a raw
    /// record lands where its own key says), and the aggregates not yet sent are
    /// taken apart, so only what was in flight can leave copies outside a shard's
    /// range.
    fn suspect(&mut self, shard: ShardId, now: Instant) {
        self.reshard_seen(now);
        if !self.suspects.insert(shard.clone()) {
            return;
        }
        debug!(stream = %self.stream, shard = %shard.as_str(), "shard found split or merged: not aggregating for it until the map is refreshed");
        let mut loose: Vec<Rec> = Vec::new();
        if let Some(mut reducer) = self.aggregators.remove(&shard) {
            loose.extend(reducer.flush().into_iter().flatten());
        }
        let of_shard = |k: &KRec| k.aggregated && k.shard.as_ref() == Some(&shard);
        loose.extend(self.take_apart_queued(Some(&shard), &of_shard, now));
        for rec in loose {
            self.route(rec, now);
        }
    }

    /// The stream was seen resharding (a shard found split or merged, a refresh that
    /// changed the open shards): for [`RESHARD_MEMORY`] big aggregates are cut at
    /// their shard's midpoint (see [`cut_at_midpoint`](Self::cut_at_midpoint)), and
    /// the big aggregates made before and not sent yet are taken apart to be made
    /// again that way.
    fn reshard_seen(&mut self, now: Instant) {
        let active = self.resharding(now);
        self.resharded_at = Some(now);
        if active {
            return;
        }
        debug!(stream = %self.stream, "stream resharding: cutting big aggregates at their shards' midpoints");
        let half = self.aggregate_policy.max_size() / 2;
        let big = |k: &KRec| k.aggregated && k.size() >= half;
        for rec in self.take_apart_queued(None, &big, now) {
            self.route(rec, now);
        }
    }

    fn resharding(&self, now: Instant) -> bool {
        self.resharded_at
            .is_some_and(|at| now.saturating_duration_since(at) < RESHARD_MEMORY)
    }

    /// Takes the aggregates not sent yet that `pick` chooses (of one shard, or of all)
    /// out of the limiter, the collector and the ready requests, and returns their
    /// records.
    fn take_apart_queued(
        &mut self,
        only: Option<&ShardId>,
        pick: &dyn Fn(&KRec) -> bool,
        now: Instant,
    ) -> Vec<Rec> {
        let mut loose: Vec<Rec> = Vec::new();
        let queued: Vec<(ShardId, KRec)> = match only {
            Some(shard) => self
                .limiter
                .drain_shard(shard)
                .into_iter()
                .map(|k| (shard.clone(), k))
                .collect(),
            None => self.limiter.drain(),
        };
        for (shard, k) in queued {
            if pick(&k) {
                loose.extend(k.records);
            } else {
                self.limiter.add(shard, k, now);
            }
        }
        if !self.collector.is_empty() {
            for k in self.collector.flush().into_iter().flatten() {
                if pick(&k) {
                    loose.extend(k.records);
                } else {
                    self.ready.extend(self.collector.add_deferred(k));
                }
            }
        }
        for batch in self.ready.iter_mut() {
            if batch.iter().any(pick) {
                let (taken, kept): (Vec<KRec>, Vec<KRec>) =
                    std::mem::take(batch).into_iter().partition(pick);
                *batch = kept;
                loose.extend(taken.into_iter().flat_map(|k| k.records));
            }
        }
        self.ready.retain(|b| !b.is_empty());
        loose
    }

    fn retry(&mut self, mut rec: Rec, now: Instant, backoff: Duration) {
        if rec.attempts.len() == WARN_AFTER_ATTEMPTS {
            if let Some(records) = self.persisting.due(1, now) {
                warn!(stream = %self.stream, records, attempts = WARN_AFTER_ATTEMPTS, last_error = rec.attempts.last().and_then(|a| a.error_code.as_deref()).unwrap_or(""), "records still failing; retrying until their time to live");
            }
        }
        self.emit(|stream| Event::Retry {
            stream,
            user_records: 1,
        });
        // Retries re-enter the aggregator, re-predicted, with half the buffering time.
        rec.deadline = aggregator_deadline(
            now + backoff,
            self.shared.config.record_max_buffered_time / 2,
        )
        .min(rec.expiration);
        if backoff.is_zero() {
            self.route(rec, now);
        } else {
            let at = (now + backoff).min(rec.expiration);
            self.retries.push(Reverse((at, rec.id)));
            self.retry_recs.insert(rec.id, rec);
        }
    }

    /// A Kinesis record past its expiration (that of its oldest user record): the
    /// user records past theirs fail; the others, which may have joined a retried
    /// record in one aggregate, go round again with the time they have left.
    fn expire_krec(&mut self, k: KRec, now: Instant) {
        for rec in k.records {
            if rec.expiration <= now {
                self.expire(rec, now);
            } else {
                self.route(rec, now);
            }
        }
    }

    fn expire(&mut self, mut rec: Rec, now: Instant) {
        let ttl = self.shared.config.record_ttl.as_millis();
        let message = if rec.may_have_been_stored() {
            format!(
                "record reached its time to live ({ttl} ms) with no answer that it was stored; an earlier attempt had no answer and may have stored it"
            )
        } else {
            format!("record reached its time to live ({ttl} ms) before it was stored")
        };
        rec.attempt(now, now, Some((codes::EXPIRED, &message)), None);
        self.emit(|stream| Event::Expired {
            stream,
            user_records: 1,
        });
        self.fail(rec);
    }

    fn succeed(&mut self, rec: Rec, shard_id: &Arc<str>, sequence_number: &Arc<str>) {
        let buffering = rec.attempts.last().map_or(Duration::ZERO, |a| {
            a.started.saturating_duration_since(rec.arrival)
        });
        self.emit(|stream| Event::BufferingTime {
            stream,
            time: buffering,
        });
        self.drained += rec.size() as u64;
        self.resolved.push((rec.id, rec.size()));
        rec.completer.complete(RecordResult {
            success: true,
            shard_id: Some(shard_id.clone()),
            sequence_number: Some(sequence_number.clone()),
            attempts: rec.attempts,
        });
    }

    fn fail(&mut self, rec: Rec) {
        self.resolved.push((rec.id, rec.size()));
        rec.completer.complete(RecordResult {
            success: false,
            shard_id: None,
            sequence_number: None,
            attempts: rec.attempts,
        });
    }

    /// Fails every record not in flight as shut down; returns how many.
    fn fail_all_held(&mut self, now: Instant) -> usize {
        let mut held: Vec<Rec> = Vec::new();
        for (_, mut r) in self.aggregators.drain() {
            held.extend(r.flush().into_iter().flatten());
        }
        self.agg_schedule.clear();
        held.extend(self.unknown.flush().into_iter().flatten());
        for (_, k) in self.limiter.drain() {
            held.extend(k.records);
        }
        for batch in self
            .collector
            .flush()
            .into_iter()
            .chain(self.ready.drain(..))
        {
            for k in batch {
                held.extend(k.records);
            }
        }
        self.retries.clear();
        held.extend(self.retry_recs.drain().map(|(_, r)| r));
        // Stored, on a shard whose range is not verified yet: not "before it was
        // stored".
        let landed: Vec<Landed> = self.awaiting_map.drain(..).collect();
        let mut n = landed.len();
        for l in landed {
            let mut rec = l.rec;
            let message = format!(
                "stored on {} before the producer shut down, but that shard's range could not be verified: a KCL consumer may drop it",
                l.shard_id
            );
            rec.attempt_sent(
                now,
                now,
                Some((codes::SHUTDOWN, &message)),
                Some(&l.shard_id),
                true,
            );
            self.fail(rec);
        }
        n += held.len();
        for mut rec in held {
            let message = if rec.may_have_been_stored() {
                "the producer shut down before this record had an answer that it was stored; an earlier attempt had no answer and may have stored it"
            } else {
                "the producer shut down before this record was stored"
            };
            rec.attempt(now, now, Some((codes::SHUTDOWN, message)), None);
            self.fail(rec);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_due_once_per_interval_with_the_count_since_the_last() {
        let t0 = Instant::now();
        let mut w = Warned::default();
        assert_eq!(w.due(500, t0), Some(500));
        assert_eq!(w.due(500, t0 + Duration::from_secs(1)), None);
        assert_eq!(w.due(20, t0 + Duration::from_secs(4)), None);
        assert_eq!(w.due(1, t0 + WARN_INTERVAL), Some(521));
        assert_eq!(w.due(1, t0 + WARN_INTERVAL), None);
    }
}

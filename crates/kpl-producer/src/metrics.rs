//! The KPL's metrics, kept in memory from the pipeline's events: the KPL's names,
//! units, levels, dimensions and granularity roll-ups, read back like the KPL's
//! `getMetrics()` with [`Producer::metrics`](crate::Producer::metrics).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kpl_runtime::Timer;

use crate::events::{Event, EventSink, Summary};

/// `MetricsLevel`: which metrics are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MetricsLevel {
    /// None (this producer's default: nothing is kept, nothing costs).
    #[default]
    None,
    /// The summary metrics: `UserRecordsPut`, `KinesisRecordsPut`, `ErrorsByCode`,
    /// `AllErrors`, `BufferingTime` (and `UserRecordExpired`).
    Summary,
    /// Every metric (the KPL's default).
    Detailed,
}

impl MetricsLevel {
    /// The level of a KPL setting value: `none`, `summary` or `detailed`.
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "none" => Some(Self::None),
            "summary" => Some(Self::Summary),
            "detailed" => Some(Self::Detailed),
            _ => None,
        }
    }
}

/// `MetricsGranularity`: the finest dimensions a metric is kept at. A metric kept
/// per shard is also kept per stream and for all streams, as the KPL does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MetricsGranularity {
    /// All streams together only.
    Global,
    /// Per stream (and all streams together).
    Stream,
    /// Per shard, per stream and all together (the KPL's default).
    #[default]
    Shard,
}

impl MetricsGranularity {
    /// The granularity of a KPL setting value: `global`, `stream` or `shard`.
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "global" => Some(Self::Global),
            "stream" => Some(Self::Stream),
            "shard" => Some(Self::Shard),
            _ => None,
        }
    }
}

/// The KPL's metrics, by the names it uploads them under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetricName {
    /// User records accepted by `put_record` and friends (count; stream).
    UserRecordsReceived,
    /// User records accepted and not yet resolved, sampled when read (count; global).
    UserRecordsPending,
    /// User records stored (count; shard).
    UserRecordsPut,
    /// Bytes of user records stored, data and partition keys (bytes; shard).
    UserRecordsDataPut,
    /// Kinesis records stored (count; shard).
    KinesisRecordsPut,
    /// Bytes of Kinesis records stored, counted as their user records' bytes
    /// (bytes; shard).
    KinesisRecordsDataPut,
    /// Failed attempts of user records, by error code (count; shard, ErrorCode).
    ErrorsByCode,
    /// Failed attempts of user records, all codes (count; shard).
    AllErrors,
    /// Failed attempts of each stored user record before the one that stored it
    /// (count per record; shard).
    RetriesPerRecord,
    /// User records that reached their time to live (count; stream).
    UserRecordExpired,
    /// Time from a user record's arrival to the request that stored it
    /// (milliseconds; shard).
    BufferingTime,
    /// Time a PutRecords request took (milliseconds; stream).
    RequestTime,
    /// User records in each Kinesis record stored (count; shard).
    UserRecordsPerKinesisRecord,
    /// Kinesis records in each PutRecords request (count; stream).
    KinesisRecordsPerPutRecordsRequest,
    /// User records in each PutRecords request (count; stream).
    UserRecordsPerPutRecordsRequest,
    /// Ours: stored user records that an earlier attempt without an answer may
    /// have stored too, so that they may be in the stream twice (count; shard).
    KplRsUserRecordsPossiblyDuplicated,
    /// Ours: the stream's congestion window, requests that may be in flight at
    /// once, after each answer (count; stream).
    KplRsCongestionWindow,
}

/// Where a metric is kept at most finely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Finest {
    Global,
    Stream,
    Shard,
}

impl MetricName {
    /// Every metric, in the order `metrics` returns them.
    pub const ALL: [MetricName; 17] = [
        Self::UserRecordsReceived,
        Self::UserRecordsPending,
        Self::UserRecordsPut,
        Self::UserRecordsDataPut,
        Self::KinesisRecordsPut,
        Self::KinesisRecordsDataPut,
        Self::ErrorsByCode,
        Self::AllErrors,
        Self::RetriesPerRecord,
        Self::UserRecordExpired,
        Self::BufferingTime,
        Self::RequestTime,
        Self::UserRecordsPerKinesisRecord,
        Self::KinesisRecordsPerPutRecordsRequest,
        Self::UserRecordsPerPutRecordsRequest,
        Self::KplRsUserRecordsPossiblyDuplicated,
        Self::KplRsCongestionWindow,
    ];

    /// The name, as the KPL spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserRecordsReceived => "UserRecordsReceived",
            Self::UserRecordsPending => "UserRecordsPending",
            Self::UserRecordsPut => "UserRecordsPut",
            Self::UserRecordsDataPut => "UserRecordsDataPut",
            Self::KinesisRecordsPut => "KinesisRecordsPut",
            Self::KinesisRecordsDataPut => "KinesisRecordsDataPut",
            Self::ErrorsByCode => "ErrorsByCode",
            Self::AllErrors => "AllErrors",
            Self::RetriesPerRecord => "RetriesPerRecord",
            Self::UserRecordExpired => "UserRecordExpired",
            Self::BufferingTime => "BufferingTime",
            Self::RequestTime => "RequestTime",
            Self::UserRecordsPerKinesisRecord => "UserRecordsPerKinesisRecord",
            Self::KinesisRecordsPerPutRecordsRequest => "KinesisRecordsPerPutRecordsRequest",
            Self::UserRecordsPerPutRecordsRequest => "UserRecordsPerPutRecordsRequest",
            Self::KplRsUserRecordsPossiblyDuplicated => "KplRsUserRecordsPossiblyDuplicated",
            Self::KplRsCongestionWindow => "KplRsCongestionWindow",
        }
    }

    /// The CloudWatch unit: `Count`, `Bytes` or `Milliseconds`.
    pub fn unit(self) -> &'static str {
        match self {
            Self::UserRecordsDataPut | Self::KinesisRecordsDataPut => "Bytes",
            Self::BufferingTime | Self::RequestTime => "Milliseconds",
            _ => "Count",
        }
    }

    /// The level it is kept from.
    pub fn level(self) -> MetricsLevel {
        match self {
            Self::UserRecordsPut
            | Self::KinesisRecordsPut
            | Self::ErrorsByCode
            | Self::AllErrors
            | Self::BufferingTime
            | Self::UserRecordExpired
            | Self::KplRsUserRecordsPossiblyDuplicated => MetricsLevel::Summary,
            _ => MetricsLevel::Detailed,
        }
    }

    fn finest(self) -> Finest {
        match self {
            Self::UserRecordsPending => Finest::Global,
            Self::UserRecordsReceived
            | Self::UserRecordExpired
            | Self::RequestTime
            | Self::KinesisRecordsPerPutRecordsRequest
            | Self::UserRecordsPerPutRecordsRequest
            | Self::KplRsCongestionWindow => Finest::Stream,
            _ => Finest::Shard,
        }
    }

    fn index(self) -> usize {
        // `ALL` lists the variants in their declaration order.
        self as usize
    }
}

impl fmt::Display for MetricName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One metric at one set of dimensions, over a window: what the KPL's
/// `getMetrics()` returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// The metric.
    pub name: MetricName,
    /// Its dimensions, coarsest first: `StreamName`, `ShardId`, `ErrorCode` (none
    /// for all streams together).
    pub dimensions: Vec<(&'static str, String)>,
    /// The window the statistics cover (since the producer started, when the
    /// window asked for was zero).
    pub duration: Duration,
    /// How many values.
    pub sample_count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Metric {
    /// The mean value (zero when there was none).
    pub fn mean(&self) -> f64 {
        if self.sample_count == 0 {
            0.0
        } else {
            self.sum / self.sample_count as f64
        }
    }

    /// The value of dimension `name`, if the metric has it.
    pub fn dimension(&self, name: &str) -> Option<&str> {
        self.dimensions
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

type Stats = Summary;

/// Which seconds (since the recorder started) statistics cover.
#[derive(Clone, Copy, Debug)]
enum Seconds {
    /// Everything since the start.
    All,
    /// From the first to before the second.
    Range(u64, u64),
}

/// Seconds of per-second statistics kept for windows.
const WINDOW_SECONDS: u64 = 60;

/// A metric at one set of dimensions: totals since the start, and per-second
/// statistics of the last minute.
#[derive(Clone, Debug, Default)]
struct Series {
    total: Stats,
    recent: VecDeque<(u64, Stats)>,
}

impl Series {
    fn add_summary(&mut self, second: u64, values: &Summary) {
        if values.count == 0 {
            return;
        }
        self.total.merge(values);
        match self.recent.back_mut() {
            Some((s, stats)) if *s == second => stats.merge(values),
            _ => {
                self.recent.push_back((second, *values));
                while self
                    .recent
                    .front()
                    .is_some_and(|(s, _)| s + WINDOW_SECONDS <= second)
                {
                    self.recent.pop_front();
                }
            }
        }
    }

    /// Statistics of the last `window` seconds up to `now` (all, for zero).
    fn over(&self, seconds: Seconds) -> Stats {
        let (from, to) = match seconds {
            Seconds::All => return self.total,
            Seconds::Range(from, to) => (from, to),
        };
        let mut out = Stats::default();
        for (s, stats) in &self.recent {
            if *s >= from && *s < to {
                out.merge(stats);
            }
        }
        out
    }
}

/// The metrics kept at one set of dimensions (without the error code), and per
/// error code for `ErrorsByCode`.
#[derive(Debug, Default)]
struct Level {
    series: [Series; MetricName::ALL.len()],
    codes: HashMap<String, Series>,
}

impl Level {
    fn add(&mut self, name: MetricName, code: Option<&str>, second: u64, values: &Summary) {
        match code {
            Some(code) => match self.codes.get_mut(code) {
                Some(s) => s.add_summary(second, values),
                None => {
                    let mut s = Series::default();
                    s.add_summary(second, values);
                    self.codes.insert(code.to_owned(), s);
                }
            },
            None => self.series[name.index()].add_summary(second, values),
        }
    }
}

#[derive(Debug, Default)]
struct StreamLevel {
    own: Level,
    shards: HashMap<String, Level>,
}

#[derive(Debug, Default)]
struct State {
    global: Level,
    streams: HashMap<String, StreamLevel>,
}

/// Where a value was seen: its stream, shard and error code.
#[derive(Clone, Copy)]
struct At<'a> {
    stream: &'a str,
    shard: Option<&'a str>,
    code: Option<&'a str>,
}

impl<'a> At<'a> {
    fn stream(stream: &'a str) -> Self {
        Self {
            stream,
            shard: None,
            code: None,
        }
    }

    fn shard(stream: &'a str, shard: Option<&'a str>) -> Self {
        Self {
            stream,
            shard,
            code: None,
        }
    }
}

/// Keeps the KPL's metrics from the pipeline's events, at a level and granularity.
///
/// The producer makes one when `MetricsLevel` is not `none`; read it through
/// [`Producer::metrics`](crate::Producer::metrics). It can also be used as an
/// [`EventSink`] of its own.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use kpl_producer::{Event, EventSink, MetricName, MetricsGranularity, MetricsLevel, MetricsRecorder};
/// use kpl_runtime::VirtualClock;
///
/// let clock = Arc::new(VirtualClock::new());
/// let recorder = MetricsRecorder::new(MetricsLevel::Detailed, MetricsGranularity::Shard, clock);
/// recorder.on_event(&Event::Put { stream: "s", shard_id: "shardId-0", user_records: 10, bytes: 1000 });
/// let put = recorder.metrics(Some(MetricName::UserRecordsPut), Duration::ZERO);
/// // Per shard, per stream and for all streams.
/// assert_eq!(put.len(), 3);
/// assert!(put.iter().all(|m| m.sum == 10.0));
/// ```
pub struct MetricsRecorder {
    level: MetricsLevel,
    granularity: MetricsGranularity,
    timer: Arc<dyn Timer>,
    started: Instant,
    state: Mutex<State>,
}

impl fmt::Debug for MetricsRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsRecorder")
            .field("level", &self.level)
            .field("granularity", &self.granularity)
            .finish_non_exhaustive()
    }
}

impl MetricsRecorder {
    /// A recorder keeping metrics of `level` and above, at `granularity`, timed by
    /// `timer`.
    pub fn new(
        level: MetricsLevel,
        granularity: MetricsGranularity,
        timer: Arc<dyn Timer>,
    ) -> Self {
        let started = timer.now();
        Self {
            level,
            granularity,
            timer,
            started,
            state: Mutex::new(State::default()),
        }
    }

    fn second(&self) -> u64 {
        self.timer
            .now()
            .saturating_duration_since(self.started)
            .as_secs()
    }

    /// Records `value` of `name` for `stream` (and `shard`, and error `code`), at
    /// every granularity it is kept at.
    fn put(&self, state: &mut State, second: u64, name: MetricName, at: At<'_>, value: f64) {
        let mut one = Summary::default();
        one.add(value);
        self.put_summary(state, second, name, at, &one);
    }

    /// Records `values` of `name` where `at` says, at every granularity it is kept at.
    fn put_summary(
        &self,
        state: &mut State,
        second: u64,
        name: MetricName,
        at: At<'_>,
        value: &Summary,
    ) {
        let At {
            stream,
            shard,
            code,
        } = at;
        if name.level() > self.level {
            return;
        }
        state.global.add(name, code, second, value);
        if self.granularity == MetricsGranularity::Global || name.finest() == Finest::Global {
            return;
        }
        let stream_level = match state.streams.get_mut(stream) {
            Some(s) => s,
            None => state.streams.entry(stream.to_owned()).or_default(),
        };
        stream_level.own.add(name, code, second, value);
        let Some(shard) = shard else { return };
        if self.granularity == MetricsGranularity::Stream || name.finest() != Finest::Shard {
            return;
        }
        match stream_level.shards.get_mut(shard) {
            Some(level) => level.add(name, code, second, value),
            None => {
                let mut level = Level::default();
                level.add(name, code, second, value);
                stream_level.shards.insert(shard.to_owned(), level);
            }
        }
    }

    /// Samples `UserRecordsPending` (all streams together).
    pub(crate) fn sample_pending(&self, pending: usize) {
        let second = self.second();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.put(
            &mut state,
            second,
            MetricName::UserRecordsPending,
            At::stream(""),
            pending as f64,
        );
    }

    /// The metrics kept, `name` only if given, over the last `window` (whole
    /// seconds, up to a minute; zero for everything since the start): one
    /// [`Metric`] per metric and set of dimensions.
    pub fn metrics(&self, name: Option<MetricName>, window: Duration) -> Vec<Metric> {
        let now = self.second();
        let window_secs = window.as_secs().min(WINDOW_SECONDS);
        if window_secs == 0 {
            let duration = self.timer.now().saturating_duration_since(self.started);
            return self.collect(name, Seconds::All, duration);
        }
        // The last `window` seconds, the current one included.
        let from = (now + 1).saturating_sub(window_secs);
        self.collect(
            name,
            Seconds::Range(from, now + 1),
            Duration::from_secs(window_secs),
        )
    }

    /// The metrics of the seconds from `from` (since the recorder started) up to
    /// the current one (`include_current`: to the end), and the second the next
    /// call should start from: for uploads, which must neither miss nor repeat a
    /// second.
    pub(crate) fn metrics_since(&self, from: u64, include_current: bool) -> (Vec<Metric>, u64) {
        let now = self.second();
        let to = if include_current { now + 1 } else { now };
        let from = from.min(to);
        let duration = Duration::from_secs(to - from);
        (self.collect(None, Seconds::Range(from, to), duration), to)
    }

    fn collect(
        &self,
        name: Option<MetricName>,
        seconds: Seconds,
        duration: Duration,
    ) -> Vec<Metric> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        let mut emit = |metric: MetricName, dims: Vec<(&'static str, String)>, s: &Series| {
            let stats = s.over(seconds);
            if stats.count > 0 {
                out.push(Metric {
                    name: metric,
                    dimensions: dims,
                    duration,
                    sample_count: stats.count,
                    sum: stats.sum,
                    min: stats.min,
                    max: stats.max,
                });
            }
        };
        let mut levels: Vec<(Vec<(&'static str, String)>, &Level)> =
            vec![(Vec::new(), &state.global)];
        let mut streams: Vec<_> = state.streams.iter().collect();
        streams.sort_by(|a, b| a.0.cmp(b.0));
        for (stream, sl) in streams {
            levels.push((vec![("StreamName", stream.clone())], &sl.own));
            let mut shards: Vec<_> = sl.shards.iter().collect();
            shards.sort_by(|a, b| a.0.cmp(b.0));
            for (shard, level) in shards {
                levels.push((
                    vec![("StreamName", stream.clone()), ("ShardId", shard.clone())],
                    level,
                ));
            }
        }
        for metric in MetricName::ALL {
            if name.is_some_and(|n| n != metric) {
                continue;
            }
            for (dims, level) in &levels {
                if metric == MetricName::ErrorsByCode {
                    let mut codes: Vec<_> = level.codes.iter().collect();
                    codes.sort_by(|a, b| a.0.cmp(b.0));
                    for (code, s) in codes {
                        let mut d = dims.clone();
                        d.push(("ErrorCode", code.clone()));
                        emit(metric, d, s);
                    }
                } else {
                    emit(metric, dims.clone(), &level.series[metric.index()]);
                }
            }
        }
        out
    }
}

impl EventSink for MetricsRecorder {
    fn on_event(&self, event: &Event<'_>) {
        let second = self.second();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *state;
        match *event {
            Event::Received { stream, records } => self.put(
                state,
                second,
                MetricName::UserRecordsReceived,
                At::stream(stream),
                records as f64,
            ),
            Event::Put {
                stream,
                shard_id,
                user_records,
                bytes,
            } => {
                let shard = Some(shard_id);
                for (name, value) in [
                    (MetricName::UserRecordsPut, user_records as f64),
                    (MetricName::UserRecordsDataPut, bytes as f64),
                    (MetricName::KinesisRecordsPut, 1.0),
                    (MetricName::KinesisRecordsDataPut, bytes as f64),
                    (MetricName::UserRecordsPerKinesisRecord, user_records as f64),
                ] {
                    self.put(state, second, name, At::shard(stream, shard), value);
                }
            }
            Event::Error {
                stream,
                shard_id,
                code,
                user_records,
            } => {
                let n = user_records as f64;
                self.put(
                    state,
                    second,
                    MetricName::ErrorsByCode,
                    At {
                        stream,
                        shard: shard_id,
                        code: Some(code),
                    },
                    n,
                );
                self.put(
                    state,
                    second,
                    MetricName::AllErrors,
                    At::shard(stream, shard_id),
                    n,
                );
            }
            Event::Expired {
                stream,
                user_records,
            } => self.put(
                state,
                second,
                MetricName::UserRecordExpired,
                At::stream(stream),
                user_records as f64,
            ),
            Event::BufferingTime {
                stream,
                shard_id,
                ref time_ms,
                ref retries,
                possibly_duplicated,
            } => {
                let at = At::shard(stream, Some(shard_id));
                self.put_summary(state, second, MetricName::BufferingTime, at, time_ms);
                self.put_summary(state, second, MetricName::RetriesPerRecord, at, retries);
                if possibly_duplicated > 0 {
                    self.put(
                        state,
                        second,
                        MetricName::KplRsUserRecordsPossiblyDuplicated,
                        at,
                        possibly_duplicated as f64,
                    );
                }
            }
            Event::Request {
                stream,
                time,
                kinesis_records,
                user_records,
                window,
            } => {
                for (name, value) in [
                    (MetricName::KplRsCongestionWindow, window as f64),
                    (MetricName::RequestTime, time.as_secs_f64() * 1e3),
                    (
                        MetricName::KinesisRecordsPerPutRecordsRequest,
                        kinesis_records as f64,
                    ),
                    (
                        MetricName::UserRecordsPerPutRecordsRequest,
                        user_records as f64,
                    ),
                ] {
                    self.put(state, second, name, At::stream(stream), value);
                }
            }
            Event::Retry { .. } => {}
        }
    }
}

/// Sends every event to two sinks (the producer's recorder and the user's).
pub(crate) struct Tee(pub(crate) Arc<dyn EventSink>, pub(crate) Arc<dyn EventSink>);

impl EventSink for Tee {
    fn on_event(&self, event: &Event<'_>) {
        self.0.on_event(event);
        self.1.on_event(event);
    }
}

#[cfg(test)]
mod tests {
    use kpl_runtime::VirtualClock;

    use super::*;

    fn recorder(
        level: MetricsLevel,
        granularity: MetricsGranularity,
    ) -> (Arc<VirtualClock>, MetricsRecorder) {
        let clock = Arc::new(VirtualClock::new());
        let r = MetricsRecorder::new(level, granularity, clock.clone());
        (clock, r)
    }

    fn dims(m: &Metric) -> Vec<&str> {
        m.dimensions.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn shard_metrics_roll_up_to_stream_and_global() {
        let (_, r) = recorder(MetricsLevel::Detailed, MetricsGranularity::Shard);
        for (stream, shard, n) in [("a", "s0", 3), ("a", "s1", 5), ("b", "s0", 7)] {
            r.on_event(&Event::Put {
                stream,
                shard_id: shard,
                user_records: n,
                bytes: n * 100,
            });
        }
        let put = r.metrics(Some(MetricName::UserRecordsPut), Duration::ZERO);
        // Global, stream a, a/s0, a/s1, stream b, b/s0.
        assert_eq!(put.len(), 6);
        assert_eq!(put[0].dimensions, vec![]);
        assert_eq!(put[0].sum, 15.0);
        assert_eq!(put[0].sample_count, 3);
        assert_eq!((put[0].min, put[0].max), (3.0, 7.0));
        assert_eq!(put[1].dimension("StreamName"), Some("a"));
        assert_eq!(put[1].sum, 8.0);
        assert_eq!(dims(&put[2]), ["StreamName", "ShardId"]);
        assert_eq!(put[2].dimension("ShardId"), Some("s0"));
        assert_eq!(put[2].sum, 3.0);
        assert_eq!(put[5].sum, 7.0);
        let data = r.metrics(Some(MetricName::UserRecordsDataPut), Duration::ZERO);
        assert_eq!(data[0].sum, 1500.0);
        assert_eq!(MetricName::UserRecordsDataPut.unit(), "Bytes");
    }

    #[test]
    fn granularity_stops_the_roll_down() {
        let event = Event::Put {
            stream: "a",
            shard_id: "s0",
            user_records: 1,
            bytes: 10,
        };
        for (granularity, expected) in [
            (MetricsGranularity::Global, 1),
            (MetricsGranularity::Stream, 2),
            (MetricsGranularity::Shard, 3),
        ] {
            let (_, r) = recorder(MetricsLevel::Detailed, granularity);
            r.on_event(&event);
            let n = r
                .metrics(Some(MetricName::KinesisRecordsPut), Duration::ZERO)
                .len();
            assert_eq!(n, expected, "{granularity:?}");
        }
        // A stream-level metric never goes per shard.
        let (_, r) = recorder(MetricsLevel::Detailed, MetricsGranularity::Shard);
        r.on_event(&Event::Request {
            stream: "a",
            time: Duration::from_millis(40),
            kinesis_records: 2,
            user_records: 9,
            window: 3,
        });
        let t = r.metrics(Some(MetricName::RequestTime), Duration::ZERO);
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].mean(), 40.0);
        assert_eq!(MetricName::RequestTime.unit(), "Milliseconds");
    }

    #[test]
    fn the_level_keeps_summary_metrics_only() {
        let (_, r) = recorder(MetricsLevel::Summary, MetricsGranularity::Global);
        r.on_event(&Event::Put {
            stream: "a",
            shard_id: "s0",
            user_records: 4,
            bytes: 40,
        });
        r.on_event(&Event::Received {
            stream: "a",
            records: 4,
        });
        let names: Vec<MetricName> = r
            .metrics(None, Duration::ZERO)
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            names,
            [MetricName::UserRecordsPut, MetricName::KinesisRecordsPut]
        );
    }

    #[test]
    fn errors_by_code_carry_the_code() {
        let (_, r) = recorder(MetricsLevel::Detailed, MetricsGranularity::Shard);
        for code in [
            "ProvisionedThroughputExceededException",
            "InternalFailure",
            "InternalFailure",
        ] {
            r.on_event(&Event::Error {
                stream: "a",
                shard_id: Some("s0"),
                code,
                user_records: 2,
            });
        }
        let errors = r.metrics(Some(MetricName::ErrorsByCode), Duration::ZERO);
        // Two codes at three levels.
        assert_eq!(errors.len(), 6);
        let internal: Vec<&Metric> = errors
            .iter()
            .filter(|m| m.dimension("ErrorCode") == Some("InternalFailure"))
            .collect();
        assert_eq!(internal.len(), 3);
        assert!(internal.iter().all(|m| m.sum == 4.0 && m.sample_count == 2));
        let all = r.metrics(Some(MetricName::AllErrors), Duration::ZERO);
        assert_eq!(all[0].sum, 6.0);
        assert_eq!(all[0].dimension("ErrorCode"), None);
    }

    #[test]
    fn windows_cover_the_last_seconds() {
        let (clock, r) = recorder(MetricsLevel::Detailed, MetricsGranularity::Global);
        let received = |n| Event::Received {
            stream: "a",
            records: n,
        };
        r.on_event(&received(1));
        clock.advance(Duration::from_secs(10));
        r.on_event(&received(2));
        clock.advance(Duration::from_secs(10));
        r.on_event(&received(4));
        let sum = |window: u64| {
            r.metrics(
                Some(MetricName::UserRecordsReceived),
                Duration::from_secs(window),
            )
            .first()
            .map_or(0.0, |m| m.sum)
        };
        assert_eq!(sum(1), 4.0);
        assert_eq!(sum(11), 6.0);
        assert_eq!(sum(60), 7.0);
        assert_eq!(sum(0), 7.0, "zero: since the start");
        clock.advance(Duration::from_secs(70));
        assert_eq!(sum(60), 0.0, "older than a minute");
        assert_eq!(sum(0), 7.0);
        let all = r.metrics(Some(MetricName::UserRecordsReceived), Duration::ZERO);
        assert_eq!(all[0].duration, Duration::from_secs(90));
    }

    #[test]
    fn buffering_time_and_retries_per_record() {
        let (_, r) = recorder(MetricsLevel::Detailed, MetricsGranularity::Stream);
        for (ms, retries) in [(100.0, 0.0), (300.0, 2.0)] {
            let (mut time_ms, mut tries) = (Summary::default(), Summary::default());
            time_ms.add(ms);
            tries.add(retries);
            r.on_event(&Event::BufferingTime {
                stream: "a",
                shard_id: "s0",
                time_ms,
                retries: tries,
                possibly_duplicated: 1,
            });
        }
        let b = r.metrics(Some(MetricName::BufferingTime), Duration::ZERO);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].min, b[0].max, b[0].mean()), (100.0, 300.0, 200.0));
        let retries = r.metrics(Some(MetricName::RetriesPerRecord), Duration::ZERO);
        assert_eq!((retries[0].sum, retries[0].sample_count), (2.0, 2));
        let twice = r.metrics(
            Some(MetricName::KplRsUserRecordsPossiblyDuplicated),
            Duration::ZERO,
        );
        assert_eq!(twice[0].sum, 2.0);
    }

    #[test]
    fn levels_and_granularities_parse_the_kpl_values() {
        assert_eq!(
            MetricsLevel::parse("DETAILED"),
            Some(MetricsLevel::Detailed)
        );
        assert_eq!(MetricsLevel::parse("loud"), None);
        assert_eq!(
            MetricsGranularity::parse("stream"),
            Some(MetricsGranularity::Stream)
        );
        assert_eq!(MetricsGranularity::parse("host"), None);
        assert!(
            MetricName::ALL
                .iter()
                .all(|m| m.index() < MetricName::ALL.len())
        );
    }
}

/// The KPL's metrics through the [`metrics`](https://docs.rs/metrics) facade crate,
/// so that its exporters (Prometheus, OpenTelemetry, StatsD, …) publish them: an
/// [`EventSink`] to give [`ProducerBuilder::event_sink`](crate::ProducerBuilder::event_sink).
///
/// Counts (`UserRecordsReceived`, `UserRecordsPut`, `UserRecordsDataPut`,
/// `KinesisRecordsPut`, `KinesisRecordsDataPut`, `ErrorsByCode`, `AllErrors`,
/// `UserRecordExpired`) are counters; the others (`BufferingTime`,
/// `RetriesPerRecord`, `RequestTime`, `UserRecordsPerKinesisRecord`,
/// `KinesisRecordsPerPutRecordsRequest`, `UserRecordsPerPutRecordsRequest`) are
/// histograms; labels `StreamName`, `ShardId` and `ErrorCode` as the KPL's
/// dimensions. `BufferingTime` and `RetriesPerRecord` come summarised per Kinesis
/// record: their histograms get each record's mean, once per record.
#[cfg(feature = "metrics")]
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsExporter;

#[cfg(feature = "metrics")]
impl EventSink for MetricsExporter {
    fn on_event(&self, event: &Event<'_>) {
        use metrics::{counter, histogram};
        match *event {
            Event::Received { stream, records } => {
                counter!("UserRecordsReceived", "StreamName" => stream.to_owned())
                    .increment(records as u64);
            }
            Event::Put {
                stream,
                shard_id,
                user_records,
                bytes,
            } => {
                let labels = [
                    ("StreamName", stream.to_owned()),
                    ("ShardId", shard_id.to_owned()),
                ];
                counter!("UserRecordsPut", &labels).increment(user_records as u64);
                counter!("UserRecordsDataPut", &labels).increment(bytes as u64);
                counter!("KinesisRecordsPut", &labels).increment(1);
                counter!("KinesisRecordsDataPut", &labels).increment(bytes as u64);
                histogram!("UserRecordsPerKinesisRecord", &labels).record(user_records as f64);
            }
            Event::Error {
                stream,
                shard_id,
                code,
                user_records,
            } => {
                let shard = shard_id.unwrap_or_default().to_owned();
                counter!(
                    "ErrorsByCode",
                    "StreamName" => stream.to_owned(),
                    "ShardId" => shard.clone(),
                    "ErrorCode" => code.to_owned()
                )
                .increment(user_records as u64);
                counter!("AllErrors", "StreamName" => stream.to_owned(), "ShardId" => shard)
                    .increment(user_records as u64);
            }
            Event::Expired {
                stream,
                user_records,
            } => {
                counter!("UserRecordExpired", "StreamName" => stream.to_owned())
                    .increment(user_records as u64);
            }
            Event::BufferingTime {
                stream,
                shard_id,
                ref time_ms,
                ref retries,
                possibly_duplicated,
            } => {
                if possibly_duplicated > 0 {
                    counter!(
                        "KplRsUserRecordsPossiblyDuplicated",
                        "StreamName" => stream.to_owned(),
                        "ShardId" => shard_id.to_owned()
                    )
                    .increment(possibly_duplicated);
                }
                let labels = [
                    ("StreamName", stream.to_owned()),
                    ("ShardId", shard_id.to_owned()),
                ];
                if time_ms.count > 0 {
                    histogram!("BufferingTime", &labels).record(time_ms.sum / time_ms.count as f64);
                    histogram!("RetriesPerRecord", &labels)
                        .record(retries.sum / retries.count.max(1) as f64);
                }
            }
            Event::Request {
                stream,
                time,
                kinesis_records,
                user_records,
                window,
            } => {
                let labels = [("StreamName", stream.to_owned())];
                metrics::gauge!("KplRsCongestionWindow", &labels).set(window as f64);
                histogram!("RequestTime", &labels).record(time.as_secs_f64() * 1e3);
                histogram!("KinesisRecordsPerPutRecordsRequest", &labels)
                    .record(kinesis_records as f64);
                histogram!("UserRecordsPerPutRecordsRequest", &labels).record(user_records as f64);
            }
            Event::Retry { .. } => {}
        }
    }
}

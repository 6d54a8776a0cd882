//! `kpl bench`: synthetic records through the whole producer.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kpl::codec::{
    AGGREGATE_OVERHEAD, AggregateBuilder, HashKey, UnfinishedAggregate, UserRecord, deaggregate,
};
use kpl::runtime::{Runtime, SplitMix64, Timer, TokioTimer};
use kpl::sim::Simulator;
use kpl::transport::{AwsTransport, Transport};
use kpl::{Outcomes, Producer, PutRecord, PutRecordRef, RecordFuture, RecordId};
use serde_json::json;

use crate::settings::{ProducerArgs, cpu_and_peak_memory, resident_memory};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// User records to produce.
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    /// Bytes of data per record.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Shards of the embedded stream.
    #[arg(long, default_value_t = 4)]
    shards: usize,
    /// Offered load, records per second (a positive number: record n is put no
    /// earlier than n / R seconds after the start), or "unlimited" for as fast as
    /// the producer takes them.
    #[arg(long, default_value = "unlimited", value_parser = parse_rate, allow_hyphen_values = true)]
    rate: Rate,
    /// Distinct partition keys (default: one per record).
    #[arg(long)]
    key_space: Option<u64>,
    /// Embedded mode: turn the simulated shard limits off, to measure the producer
    /// alone.
    #[arg(long)]
    no_limits: bool,
    /// Embedded mode: the simulator waits this long (milliseconds) before it takes
    /// each request, as a distant or slow service does (`kpl_sim::Faults::latency`).
    #[arg(long, value_name = "MS", conflicts_with = "endpoint")]
    sim_latency: Option<u64>,
    /// A real peer's endpoint (kinesalite, kinesis-mock) instead of the embedded
    /// simulator; needs --stream.
    #[arg(long, value_name = "URL", requires = "stream")]
    endpoint: Option<String>,
    /// The peer's stream (it must exist).
    #[arg(long)]
    stream: Option<String>,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
    /// Skip the exactly-once check (to profile the producer alone).
    #[arg(long)]
    no_check: bool,
    /// Embedded mode: the simulator answers every record as stored and keeps
    /// nothing (no limits, no exactly-once check), so the figures are the
    /// producer's alone; compare with a run without it to see the simulator's share.
    #[arg(long, conflicts_with = "endpoint")]
    acknowledge_only: bool,
    /// Make each chunk of records just before it is put, as a program reading its
    /// input does, instead of all of them before the clock starts: the memory after
    /// the last put is then what the producer holds (the CPU figure includes making
    /// the records).
    #[arg(long)]
    generate_while_putting: bool,
    /// Await each record's own future (`put_records`) instead of taking outcomes in
    /// batches from an outcome queue (`try_put_records_to`), to compare the two.
    #[arg(long)]
    futures: bool,
    #[command(flatten)]
    producer: ProducerArgs,
}

/// Offered load in records per second; `None` for unlimited.
#[derive(Clone, Copy, Debug)]
struct Rate(Option<f64>);

fn parse_rate(text: &str) -> Result<Rate, String> {
    if text == "unlimited" {
        return Ok(Rate(None));
    }
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(Rate(Some(rate))),
        _ => Err(format!(
            "{text:?} is not a rate: give records per second (a positive number) or \"unlimited\""
        )),
    }
}

/// When record `n` is due at `rate` records per second after `started` (far in the
/// future, never a panic, for a rate too low to say).
fn due(started: Instant, n: usize, rate: f64) -> Instant {
    let far = started + Duration::from_secs(100 * 365 * 86_400);
    Duration::try_from_secs_f64(n as f64 / rate)
        .ok()
        .and_then(|wait| started.checked_add(wait))
        .map_or(far, |due| due.min(far))
}

/// Put-to-outcome latencies in a fixed number of log-linear buckets (as HDR
/// histograms keep them): memory does not grow with the records, and a percentile is
/// within 0.4 % of the exact one (each bucket spans at most 1/128 of its lower
/// bound, and its middle is reported).
struct Latencies {
    buckets: Vec<u64>,
    count: u64,
}

impl Latencies {
    /// Below this many nanoseconds every value has a bucket of its own.
    const EXACT: u64 = 256;
    /// Buckets per power of two above [`Self::EXACT`].
    const PER_OCTAVE: u64 = 128;
    /// Buckets for every `u64` value.
    const BUCKETS: usize = (Self::EXACT + 56 * Self::PER_OCTAVE) as usize;

    fn new() -> Self {
        Self {
            buckets: vec![0; Self::BUCKETS],
            count: 0,
        }
    }

    fn index(nanos: u64) -> usize {
        if nanos < Self::EXACT {
            return nanos as usize;
        }
        // The value's top 8 bits: 128 to 255, shifted by 1 to 56.
        let shift = u64::from(63 - nanos.leading_zeros()) - 7;
        let mantissa = nanos >> shift;
        (Self::EXACT + (shift - 1) * Self::PER_OCTAVE + (mantissa - Self::PER_OCTAVE)) as usize
    }

    /// The middle of bucket `index`.
    fn value(index: usize) -> u64 {
        let index = index as u64;
        if index < Self::EXACT {
            return index;
        }
        let shift = (index - Self::EXACT) / Self::PER_OCTAVE + 1;
        let mantissa = (index - Self::EXACT) % Self::PER_OCTAVE + Self::PER_OCTAVE;
        (mantissa << shift) + ((1u64 << shift) - 1) / 2
    }

    fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[Self::index(nanos)] += 1;
        self.count += 1;
    }

    /// The latency at `p` (0 to 1) of the records, as the sorted list's element
    /// `round((n - 1) × p)`; zero when there is none.
    fn percentile(&self, p: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((self.count - 1) as f64 * p).round() as u64;
        let mut seen = 0;
        for (index, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen > rank {
                return Duration::from_nanos(Self::value(index));
            }
        }
        Duration::from_nanos(Self::value(Self::BUCKETS - 1))
    }
}

/// CPU time under which a per-CPU-second figure says nothing: the kernel counts it
/// in ticks of 10 ms.
const SHORTEST_CPU_TIME: f64 = 0.1;

/// Bytes of each block the MD5 floor hashes, as `openssl speed -bytes 16384 md5`
/// hashes them.
const FLOOR_BLOCK: usize = 16 * 1024;

/// Seconds of the clock (the thread's CPU time where there is one) the MD5 floor is
/// measured for: long enough for a rate within a few percent (0.05 s of 16 KiB
/// blocks is about 2,000 of them; runs of 0.05 s and of 0.2 s agree within their
/// spread, docs/performance.md), short enough to add little to a whole-process CPU
/// figure.
const FLOOR_SECONDS: f64 = 0.05;

/// Wall time after which the MD5 floor's measurement stops even if it has not had
/// its [`FLOOR_SECONDS`] of CPU (a machine too busy to give them).
const FLOOR_WALL_LIMIT: Duration = Duration::from_secs(5);

/// Blocks hashed between two readings of the clock: copied before, dropped after,
/// neither counted.
const FLOOR_BATCH: usize = 128;

/// The run's first records, encoded to find the bytes per record: this many at
/// most, and no more than [`SAMPLE_BYTES`] of data.
const SIZE_SAMPLE: usize = 20_000;

/// Bytes of data of the run's first records encoded to find the bytes per record
/// (the first record however large).
const SAMPLE_BYTES: usize = 16 << 20;

/// This machine's MD5 rate, measured before the timed part: kpl-codec's MD5 of an
/// aggregate (what the producer computes for each one it sends), one 16 KiB block
/// after another.
#[derive(Clone, Copy, Debug)]
struct Md5Floor {
    /// Bytes hashed per second of the clock.
    bytes_per_second: f64,
    /// Seconds of the clock the hashing took (what the rate is of).
    measured: f64,
    /// Seconds of the clock the whole measurement took, copies of the blocks
    /// included: what a whole-process CPU figure should leave out.
    whole: f64,
    /// Whether the clock was the thread's CPU time (else wall time).
    thread_cpu: bool,
}

/// CPU time the calling thread has used, to the nanosecond, from
/// /proc/thread-self/schedstat (Linux); `None` elsewhere. The kernel brings a
/// running thread's figure up to date when it yields, so the thread yields first.
fn thread_cpu_time() -> Option<Duration> {
    std::thread::yield_now();
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// An aggregate whose protobuf body, what its MD5 is of, is [`FLOOR_BLOCK`] bytes.
fn floor_block() -> UnfinishedAggregate {
    let with = |data_len: usize| {
        let mut builder = AggregateBuilder::new();
        builder.add(UserRecord::new("k", vec![b'.'; data_len]));
        builder.encode_unfinished_aggregate(Vec::new())
    };
    // The fields around the data (their lengths' varints as wide as at the block's
    // size).
    let around = with(FLOOR_BLOCK - 64).len() - AGGREGATE_OVERHEAD - (FLOOR_BLOCK - 64);
    with(FLOOR_BLOCK - around)
}

/// Measures kpl-codec's MD5 over [`FLOOR_BLOCK`]-byte aggregate bodies for
/// [`FLOOR_SECONDS`] of the thread's CPU time (wall time where that is not known).
fn measure_md5_floor() -> Md5Floor {
    let block = floor_block();
    let wall = Instant::now();
    let thread_cpu = thread_cpu_time().is_some();
    let clock = || {
        thread_cpu
            .then(thread_cpu_time)
            .flatten()
            .unwrap_or_else(|| wall.elapsed())
    };
    let start = clock();
    let (mut blocks, mut measured) = (0usize, Duration::ZERO);
    while measured.as_secs_f64() < FLOOR_SECONDS && wall.elapsed() < FLOOR_WALL_LIMIT {
        let batch = vec![block.clone(); FLOOR_BATCH];
        let before = clock();
        let finished: Vec<Vec<u8>> = batch.into_iter().map(UnfinishedAggregate::finish).collect();
        measured += clock().saturating_sub(before);
        blocks += std::hint::black_box(finished).len();
    }
    let measured = measured.as_secs_f64().max(1e-9);
    Md5Floor {
        bytes_per_second: (blocks * FLOOR_BLOCK) as f64 / measured,
        measured,
        whole: clock().saturating_sub(start).as_secs_f64(),
        thread_cpu,
    }
}

/// Bytes of Kinesis record data per user record in `records` (the run's first
/// ones): without aggregation (`None`) the data alone; with it, as the producer
/// makes aggregates of them: one per shard at a time (shards given by their
/// hash-key ranges; one when none are given), each closed at its size limit or
/// record count (`Some((max_size, max_count))`), one record alone sent raw.
/// Aggregates closed earlier by their deadline carry a little more: 20 B each.
fn encoded_bytes_per_record(
    records: &[PutRecord],
    ranges: &[(HashKey, HashKey)],
    aggregation: Option<(usize, usize)>,
) -> f64 {
    let count = records.len().max(1) as f64;
    let Some((max_size, max_count)) = aggregation else {
        return records.iter().map(|r| r.data.len()).sum::<usize>() as f64 / count;
    };
    let size = |b: &AggregateBuilder<Bytes>| match b.len() {
        0 => 0,
        1 => b.records().map(|r| r.data.len()).sum(),
        _ => b.size(),
    };
    let mut open: Vec<AggregateBuilder<Bytes>> = (0..ranges.len().max(1))
        .map(|_| AggregateBuilder::new())
        .collect();
    let mut bytes = 0;
    for r in records {
        let key = HashKey::from_partition_key(&r.partition_key);
        let shard = ranges
            .iter()
            .position(|&(start, end)| start <= key && key <= end)
            .unwrap_or(0);
        let record = UserRecord::new(r.partition_key.clone(), r.data.clone());
        let builder = &mut open[shard];
        if !builder.is_empty()
            && (builder.len() >= max_count || builder.size_with(&record) > max_size)
        {
            bytes += size(builder);
            builder.clear();
        }
        builder.add(record);
    }
    bytes += open.iter().map(size).sum::<usize>();
    bytes as f64 / count
}

/// Records per CPU second as a share of the MD5 floor, the records per second
/// MD5 alone would take: `md5_bytes_per_second ÷ bytes_per_record`.
fn share_of_floor(
    records_per_cpu_second: f64,
    md5_bytes_per_second: f64,
    bytes_per_record: f64,
) -> f64 {
    records_per_cpu_second / (md5_bytes_per_second / bytes_per_record)
}

/// An error's message followed by those of its causes that it does not already
/// hold (a `Display` that repeats its cause would print it twice).
pub(crate) fn without_repeats(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = e.source();
    }
    text
}

/// The shares of the shards' byte and record limits that `stored` used from its
/// first store until its last record was written at a shard's byte rate (a large
/// record holds its shard for that long: without it, a few 9 MiB records read as
/// 130 % of the limit).
fn capacity_used(stored: &[kpl::sim::StoredRecord], shards: usize) -> Option<[f64; 2]> {
    let size = |r: &kpl::sim::StoredRecord| r.data.len() + r.partition_key.len();
    let first = stored.iter().map(|r| r.arrival).min()?;
    let last = stored.iter().map(|r| r.arrival).max()?;
    let last_bytes = stored
        .iter()
        .filter(|r| r.arrival == last)
        .map(size)
        .max()
        .unwrap_or(0);
    let secs = last.duration_since(first).as_secs_f64()
        + last_bytes as f64 / kpl::codec::SHARD_BYTES_PER_SECOND as f64;
    if secs <= 0.0 {
        return None;
    }
    let bytes: usize = stored.iter().map(size).sum();
    let shards = shards as f64;
    Some([
        bytes as f64 / (shards * kpl::codec::SHARD_BYTES_PER_SECOND as f64 * secs),
        stored.len() as f64 / (shards * kpl::codec::SHARD_RECORDS_PER_SECOND as f64 * secs),
    ])
}

/// Runs the bench: settings and the MD5 floor, the producer and its peer, the
/// records, the timed put loop, the exactly-once check, then the report.
pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let config = settings(args)?;
    // Before anything else runs: no other thread of ours is busy yet.
    let floor = measure_md5_floor();
    let bench = Harness::build(args, &config)?;
    let records = Records::new(args);
    let per_record = records.encoded_bytes_per_record(bench.sim.as_ref(), &config)?;
    let made = records.made_before_the_clock(args.generate_while_putting, args.futures);
    let checking = bench.sim.is_some() && !args.no_check && !args.acknowledge_only;
    let (cpu0, _) = cpu_and_peak_memory();
    let started = Instant::now();
    let mut tally = Tally::new(if checking { args.records } else { 0 });
    let (held_records, held_memory) = bench
        .runtime
        .block_on(put_all(args, &bench, &records, made, started, &mut tally))?;
    let elapsed = started.elapsed();
    let (cpu1, peak) = cpu_and_peak_memory();
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let check = match bench.sim.as_ref().filter(|_| checking) {
        Some(sim) => check_exactly_once(args, sim, &tally.outcome)?,
        None => Check::default(),
    };
    let report = Report {
        args,
        config: &config,
        sim: bench.sim.as_ref(),
        floor,
        per_record,
        secs: elapsed.as_secs_f64().max(1e-9),
        cpu,
        peak,
        held_records,
        held_memory,
        tally: &tally,
        check: &check,
        metric_lines: crate::settings::metrics_summary(&bench.producer),
    };
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(out, "{}", report.json())?;
    } else {
        report.text(&mut out)?;
    }
    bench
        .runtime
        .block_on(bench.producer.shutdown(Duration::from_secs(5)));
    if let Some(line) = crate::settings::upload_summary(&bench.producer) {
        writeln!(out, "  metrics      {line}")?;
    }
    Ok(if check.verdict == Some(false) || tally.failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The producer's settings from the flags, with its own per-shard limiter out of
/// the way when the producer is measured alone; refuses zero records or shards.
fn settings(args: &Args) -> anyhow::Result<kpl::Config> {
    let mut config = args.producer.config()?;
    if (args.no_limits || args.acknowledge_only) && args.endpoint.is_none() {
        // Measuring the producer alone: its own per-shard limiter must not be the
        // bound either.
        config = crate::settings::with_rate_limit(&config, 1_000_000)?;
    }
    anyhow::ensure!(args.records > 0, "--records must be at least 1");
    anyhow::ensure!(args.shards > 0, "--shards must be at least 1");
    let record = args.size.saturating_add(KEY_LEN);
    if args.endpoint.is_none()
        && record > config.max_user_record_size()
        && !args.producer.sets(max_user_record_size_key())?
    {
        // Records over the default limit, which no flag or file set: the embedded
        // stream's limit is raised to fit (see Harness::build), and the
        // producer's with it.
        anyhow::ensure!(
            record <= kpl::codec::MAX_RECORD_SIZE_CEILING,
            "--size {} makes records of {record} bytes with their key, over the {} bytes a Kinesis stream can take: give at most {}",
            args.size,
            kpl::codec::MAX_RECORD_SIZE_CEILING,
            kpl::codec::MAX_RECORD_SIZE_CEILING - KEY_LEN
        );
        config = config.to_builder().max_user_record_size(record).build()?;
    }
    Ok(config)
}

/// What the records are put through: a runtime, the producer, its stream, and
/// the embedded simulator when there is no endpoint.
struct Harness {
    runtime: tokio::runtime::Runtime,
    sim: Option<Simulator>,
    stream: String,
    producer: Producer,
}

impl Harness {
    /// Builds the runtime (one worker), the transport to the endpoint or an
    /// embedded simulator with the bench's stream, the CloudWatch uploader when
    /// asked for, and the producer over them.
    fn build(args: &Args, config: &kpl::Config) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let (transport, sim, stream): (Arc<dyn Transport>, Option<Simulator>, String) =
            match &args.endpoint {
                Some(url) => {
                    let t = runtime.block_on(
                        AwsTransport::builder()
                            .endpoint_url(url)
                            .region(config.region().unwrap_or_else(|| "us-east-1".into()))
                            .static_credentials("bench", "bench")
                            .max_connections(config.max_connections())
                            .build(),
                    )?;
                    (Arc::new(t), None, args.stream.clone().unwrap_or_default())
                }
                None => {
                    let timer: Arc<dyn Timer> = Arc::new(TokioTimer);
                    let sim = Simulator::new(timer, 1);
                    sim.create_stream("bench", args.shards)?;
                    let max_record = config.max_user_record_size();
                    if max_record > kpl::codec::DEFAULT_MAX_RECORD_SIZE {
                        sim.update_max_record_size("bench", max_record.div_ceil(1024))?;
                    }
                    sim.set_limits(!args.no_limits);
                    sim.set_acknowledge_only(args.acknowledge_only);
                    if let Some(ms) = args.sim_latency {
                        let mut faults = kpl::sim::Faults::none();
                        faults.latency = Duration::from_millis(ms);
                        sim.set_faults(faults);
                    }
                    (Arc::new(sim.clone()), Some(sim), "bench".into())
                }
            };
        // Metrics go to CloudWatch only when asked (--metrics-endpoint): a bench's
        // figures are not an account's by default.
        let uploader = match config.cloudwatch_endpoint() {
            Some(_) => {
                let settings = AwsTransport::builder()
                    .region(config.region().unwrap_or_else(|| "us-east-1".into()));
                runtime.block_on(crate::settings::cloudwatch_uploader(config, settings))?
            }
            None => None,
        };
        let producer = {
            let _guard = runtime.enter();
            let mut producer = Producer::builder(config.clone(), transport);
            if let Some(uploader) = uploader {
                producer = producer.metrics_uploader(uploader);
            }
            producer.build(Runtime::tokio())
        };
        Ok(Self {
            runtime,
            sim,
            stream,
            producer,
        })
    }
}

/// The key of the setting `max_user_record_size`, as the settings table spells it.
fn max_user_record_size_key() -> &'static str {
    kpl::Config::settings()
        .iter()
        .find(|s| s.field() == Some("max_user_record_size"))
        .map_or("", |s| s.key())
}

/// Bytes of a bench record's partition key.
const KEY_LEN: usize = 16;

/// `key` as 16 lowercase hex digits (what `format!("{key:016x}")` gives).
fn hex_key(key: u64) -> String {
    let mut out = Vec::with_capacity(KEY_LEN);
    push_hex_key(&mut out, key);
    ascii(out)
}

/// Appends `key`'s digits as [`hex_key`] writes them, without the formatting
/// machinery (it cost the generator an allocation and about 300 instructions per
/// record): bytes, made into text once for many keys ([`ascii`]).
fn push_hex_key(out: &mut Vec<u8>, key: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; KEY_LEN];
    for (i, digit) in digits.iter_mut().enumerate() {
        let shift = (KEY_LEN - 1 - i) * 4;
        *digit = DIGITS[((key >> shift) & 0xf) as usize];
    }
    out.extend_from_slice(&digits);
}

/// Hex digits made by [`push_hex_key`] as text: checked once for all of them (a
/// check per 16-byte key cost the generator about 1 % of the bench's CPU).
fn ascii(digits: Vec<u8>) -> String {
    String::from_utf8(digits).expect("hex digits are ASCII")
}

/// Records made in chunks of this many, and put a chunk at a time.
const CHUNK: usize = 1_000;

/// A chunk of the bench's records as a caller holding records in buffers of its
/// own has them: every key in one string, every record's data in one buffer. Put
/// as [`PutRecordRef`]s, copied once when admitted, with no allocation per record;
/// or, for `--futures` (whose puts take owned records), as [`PutRecord`]s.
struct Chunk {
    /// [`KEY_LEN`] bytes per record.
    keys: String,
    /// `len` bytes per record.
    data: Vec<u8>,
    len: usize,
    /// The records owned instead (then `keys` and `data` are empty).
    owned: Vec<PutRecord>,
}

impl Chunk {
    /// How many records it holds.
    fn records(&self) -> usize {
        self.keys.len() / KEY_LEN + self.owned.len()
    }

    /// Its records, borrowed.
    fn refs(&self) -> Vec<PutRecordRef<'_>> {
        (0..self.records())
            .map(|k| {
                PutRecordRef::new(
                    &self.keys[k * KEY_LEN..(k + 1) * KEY_LEN],
                    &self.data[k * self.len..(k + 1) * self.len],
                )
            })
            .collect()
    }
}

/// The bench's synthetic records: record `j` is its number (8 bytes, little
/// endian) then dots up to `--size`, under a partition key drawn from
/// `j % --key-space`.
struct Records {
    records: usize,
    size: usize,
    key_space: u64,
    filler: Vec<u8>,
}

impl Records {
    /// The records `args` asks for.
    fn new(args: &Args) -> Self {
        Self::of(args.records, args.size, args.key_space)
    }

    /// `records` records of `size` bytes, keys drawn from `key_space` (one per
    /// record when `None`).
    fn of(records: usize, size: usize, key_space: Option<u64>) -> Self {
        Self {
            records,
            size,
            key_space: key_space.unwrap_or(records as u64).max(1),
            filler: vec![b'.'; size.saturating_sub(8)],
        }
    }

    /// Record number `j`'s partition key.
    fn key(&self, j: usize) -> u64 {
        SplitMix64::new(j as u64 % self.key_space).next_u64()
    }

    /// Record number `j`'s data: appended to `out`.
    fn data_into(&self, j: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&(j as u64).to_le_bytes());
        out.extend_from_slice(&self.filler);
    }

    /// Record number `j`.
    fn record(&self, j: usize) -> PutRecord {
        let mut data = Vec::with_capacity(self.size.max(8));
        self.data_into(j, &mut data);
        PutRecord::new(hex_key(self.key(j)), data)
    }

    /// The chunk of records from number `from`, `owned` or in buffers.
    fn chunk(&self, from: usize, owned: bool) -> Chunk {
        let to = (from + CHUNK).min(self.records);
        let len = self.size.max(8);
        if owned {
            return Chunk {
                keys: String::new(),
                data: Vec::new(),
                len,
                owned: (from..to).map(|j| self.record(j)).collect(),
            };
        }
        let mut keys = Vec::with_capacity((to - from) * KEY_LEN);
        let mut data = Vec::with_capacity((to - from) * len);
        for j in from..to {
            push_hex_key(&mut keys, self.key(j));
            self.data_into(j, &mut data);
        }
        Chunk {
            keys: ascii(keys),
            data,
            len,
            owned: Vec::new(),
        }
    }

    /// Every chunk, made before the clock starts so the figures are the
    /// producer's (and the embedded simulator's), not the generator's; none when
    /// they are made while putting.
    fn made_before_the_clock(&self, while_putting: bool, owned: bool) -> VecDeque<Chunk> {
        if while_putting {
            Default::default()
        } else {
            (0..self.records)
                .step_by(CHUNK)
                .map(|from| self.chunk(from, owned))
                .collect()
        }
    }

    /// Encoded bytes per record of the run's first records, aggregated over the
    /// embedded stream's shards as the producer would (what the MD5 floor divides).
    fn encoded_bytes_per_record(
        &self,
        sim: Option<&Simulator>,
        config: &kpl::Config,
    ) -> anyhow::Result<f64> {
        let sample: Vec<PutRecord> = (0..self.records.min(SIZE_SAMPLE))
            .take_while(|&j| j.saturating_mul(self.size) < SAMPLE_BYTES)
            .map(|j| self.record(j))
            .collect();
        let ranges: Vec<(HashKey, HashKey)> = match sim {
            Some(sim) => sim
                .shards("bench")?
                .into_iter()
                .map(|s| (s.starting_hash_key, s.ending_hash_key))
                .collect(),
            None => Vec::new(),
        };
        let limits = config.aggregation_enabled().then(|| {
            (
                config.aggregation_max_size(),
                usize::try_from(config.aggregation_max_count()).unwrap_or(usize::MAX),
            )
        });
        Ok(encoded_bytes_per_record(&sample, &ranges, limits))
    }
}

/// The outcomes, read as they come (the bench holds no more records than the
/// producer does): counted, their put-to-outcome latencies in a histogram of fixed
/// size, and, when the records are checked, each record's outcome (a byte).
struct Tally {
    outcome: Vec<Outcome>,
    latencies: Latencies,
    failures: usize,
    retries: usize,
    /// Acknowledged after an attempt without an answer that may have stored it.
    possibly_twice: usize,
    /// Failed after an attempt without an answer that may have stored it.
    failed_possibly_stored: usize,
}

impl Tally {
    /// A tally keeping the outcomes of `checked` records.
    fn new(checked: usize) -> Self {
        Self {
            outcome: vec![Outcome::None; checked],
            latencies: Latencies::new(),
            failures: 0,
            retries: 0,
            possibly_twice: 0,
            failed_possibly_stored: 0,
        }
    }

    /// Counts the outcome of record number `id`.
    fn take(&mut self, id: usize, r: kpl::RecordResult) {
        self.retries += r.attempts.len().saturating_sub(1);
        let this = if r.is_success() {
            self.possibly_twice += usize::from(r.may_be_duplicated());
            Outcome::Succeeded
        } else if r.may_have_been_stored() {
            self.failures += 1;
            self.failed_possibly_stored += 1;
            Outcome::FailedPossiblyStored
        } else {
            self.failures += 1;
            Outcome::Failed
        };
        if let Some(o) = self.outcome.get_mut(id) {
            *o = this;
        }
        if let (Some(first), Some(last)) = (r.attempts.first(), r.attempts.last()) {
            // From the put (the first attempt's delay counts from it) to the end of
            // the last attempt; durations only, for a record with one attempt.
            let between = match r.attempts.len() {
                1 => Duration::ZERO,
                _ => last.started.saturating_duration_since(first.started),
            };
            self.latencies.record(
                first
                    .delay
                    .saturating_add(between)
                    .saturating_add(last.duration),
            );
        }
    }
}

/// The timed part: puts every record (made chunks first, else each chunk just
/// before it is put), at `--rate` when one is given, taking outcomes as they come;
/// then flushes and waits for every outcome. Returns the records outstanding and
/// the resident memory after the last put.
async fn put_all(
    args: &Args,
    bench: &Harness,
    records: &Records,
    mut made: VecDeque<Chunk>,
    started: Instant,
    tally: &mut Tally,
) -> anyhow::Result<(usize, Option<u64>)> {
    let Rate(rate) = args.rate;
    let (producer, stream) = (&bench.producer, bench.stream.as_str());
    let mut pending: VecDeque<(usize, RecordFuture)> = Default::default();
    let outcomes = Outcomes::new();
    // The producer numbers the records it admits one after another, and only
    // this loop puts: record number = id − the first id.
    let mut first_id: Option<u64> = None;
    let number = |first: Option<u64>, id: RecordId| (id.0 - first.unwrap_or(id.0)) as usize;
    // Records put so far (record i is the next).
    let mut i = 0;
    for from in (0..args.records).step_by(CHUNK) {
        let mut chunk = made
            .pop_front()
            .unwrap_or_else(|| records.chunk(from, args.futures));
        let mut owned = std::mem::take(&mut chunk.owned);
        let refs = chunk.refs();
        let mut left = &refs[..];
        while !left.is_empty() || !owned.is_empty() {
            // At a rate: the records due by now, at least the next one (waited
            // for), so the offered load follows the rate however low it is.
            let n = left.len() + owned.len();
            let k = match rate {
                Some(rate) => {
                    tokio::time::sleep_until(due(started, i, rate).into()).await;
                    let due_now = (started.elapsed().as_secs_f64() * rate) as usize + 1;
                    due_now.saturating_sub(i).clamp(1, n)
                }
                None => n,
            };
            if args.futures {
                let batch: Vec<PutRecord> = owned.drain(..k).collect();
                for r in producer
                    .put_records(stream, batch)
                    .await
                    .map_err(one_line)?
                {
                    pending.push_back((i, r.map_err(one_line)?));
                    i += 1;
                }
                while pending.front().is_some_and(|(_, f)| f.is_resolved()) {
                    let (id, f) = pending.pop_front().expect("front exists");
                    tally.take(id, f.await);
                }
                continue;
            }
            let (mut batch, rest) = left.split_at(k);
            left = rest;
            while !batch.is_empty() {
                let kpl::Admitted {
                    results: ids, rest, ..
                } = producer
                    .try_put_record_refs_to(stream, batch, &outcomes)
                    .map_err(one_line)?;
                let taken = ids.len();
                for id in ids {
                    let id = id.map_err(one_line)?;
                    let first = *first_id.get_or_insert(id.0);
                    anyhow::ensure!(number(Some(first), id) == i, "record ids not contiguous");
                    i += 1;
                }
                for (id, r) in outcomes.take() {
                    tally.take(number(first_id, id), r);
                }
                if let Some(first) = rest.first() {
                    producer.wait_for_room(stream, first.size()).await;
                }
                batch = &batch[taken..];
            }
        }
    }
    // Memory while the records are still outstanding (before any is read back).
    let held = (producer.outstanding_records(), resident_memory());
    producer.flush().await;
    for (id, f) in pending {
        tally.take(id, f.await);
    }
    while outcomes.pending() > 0 {
        for (id, r) in outcomes.next().await {
            tally.take(number(first_id, id), r);
        }
    }
    Ok(held)
}

/// What the exactly-once check found in the embedded stream.
#[derive(Default)]
struct Check {
    /// Whether every record arrived as its outcome says; `None` unchecked.
    verdict: Option<bool>,
    /// Failed records that arrived all the same (their outcomes said they might).
    failed_arrived: usize,
    /// Kinesis records stored.
    kinesis_records: usize,
    /// PutRecords requests the simulator answered.
    requests: u64,
    /// With limits on: how much of the stream's capacity the run used, from the
    /// first store to the last ([bytes, records] as shares of the shards' limits).
    capacity: Option<[f64; 2]>,
}

/// Embedded: reads the stream back as a consumer sees it (deaggregated, each user
/// record in its shard's range) and checks every record against its outcome:
/// acknowledged exactly once; failed never, or at most once where the outcome said
/// it may have been stored.
fn check_exactly_once(args: &Args, sim: &Simulator, outcome: &[Outcome]) -> anyhow::Result<Check> {
    let stored = sim.records("bench")?;
    let capacity = if args.no_limits {
        None
    } else {
        capacity_used(&stored, args.shards)
    };
    let ranges: HashMap<String, _> = sim
        .shards("bench")?
        .into_iter()
        .map(|s| (s.shard_id, (s.starting_hash_key, s.ending_hash_key)))
        .collect();
    let mut seen = vec![0u32; args.records];
    for rec in &stored {
        let ehk = rec.explicit_hash_key.map(|k| k.to_string());
        let (start, end) = ranges[&rec.shard_id];
        for u in deaggregate(&rec.partition_key, ehk.as_deref(), &rec.data)? {
            let k = u.hash_key()?;
            if k < start || k > end {
                continue;
            }
            let mut id = [0u8; 8];
            id.copy_from_slice(&u.data[..8]);
            let id = u64::from_le_bytes(id) as usize;
            seen[id] += 1;
        }
    }
    let mut ok = true;
    let mut failed_arrived = 0usize;
    for (&n, &o) in seen.iter().zip(outcome) {
        ok &= match o {
            Outcome::Succeeded => n == 1,
            Outcome::FailedPossiblyStored => n <= 1,
            Outcome::Failed | Outcome::None => n == 0,
        };
        failed_arrived += usize::from(o == Outcome::FailedPossiblyStored && n == 1);
    }
    Ok(Check {
        verdict: Some(ok),
        failed_arrived,
        kinesis_records: stored.len(),
        requests: sim.put_requests(),
        capacity,
    })
}

/// A run's figures, to print as text or as one JSON line.
struct Report<'a> {
    args: &'a Args,
    config: &'a kpl::Config,
    /// The embedded simulator, when it was the peer.
    sim: Option<&'a Simulator>,
    floor: Md5Floor,
    /// Encoded bytes per record (what the MD5 floor divides).
    per_record: f64,
    /// Seconds of the timed part.
    secs: f64,
    /// CPU seconds of the timed part, where the system says.
    cpu: Option<f64>,
    /// Peak memory of the process, in bytes.
    peak: Option<u64>,
    /// Records outstanding after the last put.
    held_records: usize,
    /// Resident memory after the last put, in bytes.
    held_memory: Option<u64>,
    tally: &'a Tally,
    check: &'a Check,
    metric_lines: Vec<String>,
}

impl Report<'_> {
    /// Whether the peer was the embedded simulator.
    fn embedded(&self) -> bool {
        self.sim.is_some()
    }

    /// The run's user records, as a factor.
    fn user_records(&self) -> f64 {
        self.args.records as f64
    }

    /// The CPU time where it says something per record.
    fn measured_cpu(&self) -> Option<f64> {
        self.cpu.filter(|&c| c >= SHORTEST_CPU_TIME)
    }

    /// Records per CPU second as a share of the MD5 floor.
    fn share(&self) -> Option<f64> {
        self.measured_cpu().map(|c| {
            share_of_floor(
                self.user_records() / c,
                self.floor.bytes_per_second,
                self.per_record,
            )
        })
    }

    /// The MD5 floor in records per second.
    fn floor_records(&self) -> f64 {
        self.floor.bytes_per_second / self.per_record
    }

    /// The put-to-outcome latency at `p`, in milliseconds.
    fn latency_ms(&self, p: f64) -> f64 {
        self.tally.latencies.percentile(p).as_secs_f64() * 1e3
    }

    /// The report as one JSON object.
    fn json(&self) -> serde_json::Value {
        let (args, floor, tally, check) = (self.args, &self.floor, self.tally, self.check);
        let user_records = self.user_records();
        let secs = self.secs;
        let measured_cpu = self.measured_cpu();
        json!({
            "mode": match (self.embedded(), args.acknowledge_only) { (true, true) => "embedded kpl-sim, acknowledge only", (true, false) => "embedded kpl-sim", (false, _) => "endpoint" },
            "records": args.records,
            "size": args.size,
            "shards": args.shards,
            "limits": self.embedded() && !args.no_limits,
            "aggregation": self.config.aggregation_enabled(),
            "ordered": self.config.ordered(),
            "sim_latency_ms": args.sim_latency,
            "seconds": secs,
            "records_per_second": user_records / secs,
            "mb_per_second": user_records * args.size as f64 / secs / 1e6,
            "cpu_seconds": self.cpu,
            "cpu_seconds_per_million": measured_cpu.map(|c| c / user_records * 1e6),
            "records_per_cpu_second": measured_cpu.map(|c| user_records / c),
            "records_per_cpu_second_of_md5_floor": self.share(),
            "encoded_bytes_per_record": self.per_record,
            "md5_floor": {
                "block_bytes": FLOOR_BLOCK,
                "md5_bytes_per_second": floor.bytes_per_second,
                "records_per_second": self.floor_records(),
                "measured_seconds": floor.measured,
                "cpu_seconds": floor.whole,
                "clock": if floor.thread_cpu { "thread CPU" } else { "wall" },
            },
            "latency_ms": {
                "p50": self.latency_ms(0.5),
                "p99": self.latency_ms(0.99),
                "p99.9": self.latency_ms(0.999),
            },
            "user_records_per_kinesis_record": (self.embedded() && check.kinesis_records > 0).then(|| user_records / check.kinesis_records as f64),
            "user_records_per_request": (check.requests > 0).then(|| user_records / check.requests as f64),
            "retries": tally.retries,
            "failures": tally.failures,
            "possibly_stored_twice": tally.possibly_twice,
            "failed_possibly_stored": tally.failed_possibly_stored,
            "peak_memory_bytes": self.peak,
            "outstanding_after_puts": self.held_records,
            "resident_bytes_after_puts": self.held_memory,
            "exactly_once": check.verdict,
            "failed_arrived": check.verdict.map(|_| check.failed_arrived),
            "capacity_used": check.capacity.map(|[bytes, records]| json!({"bytes": bytes, "records": records})),
            "metrics": self.metric_lines,
        })
    }

    /// The report as text: the run, then a line per figure.
    fn text(&self, out: &mut impl Write) -> io::Result<()> {
        let (args, floor) = (self.args, &self.floor);
        let user_records = self.user_records();
        let secs = self.secs;
        writeln!(
            out,
            "kpl bench: {} records of {} B, {} shards, {}{}, aggregation {}{}",
            args.records,
            args.size,
            args.shards,
            if self.embedded() {
                if args.acknowledge_only {
                    "embedded kpl-sim acknowledging only"
                } else if args.no_limits {
                    "embedded kpl-sim, limits off"
                } else {
                    "embedded kpl-sim, limits on"
                }
            } else {
                "endpoint"
            },
            match args.sim_latency {
                Some(ms) if self.embedded() => format!(", {ms} ms latency"),
                _ => String::new(),
            },
            if self.config.aggregation_enabled() {
                "on"
            } else {
                "off"
            },
            if self.config.ordered() {
                ", ordered"
            } else {
                ""
            }
        )?;
        writeln!(
            out,
            "  throughput   {:.0} records/s, {:.1} MB/s ({:.2} s)",
            user_records / secs,
            user_records * args.size as f64 / secs / 1e6,
            secs
        )?;
        match (self.cpu, self.measured_cpu()) {
            (_, Some(c)) => writeln!(
                out,
                "  cpu          {:.2} s per million records ({:.0} records per CPU second, {:.3} of the MD5 floor{})",
                c / user_records * 1e6,
                user_records / c,
                self.share().unwrap_or_default(),
                if self.embedded() {
                    "; includes the embedded simulator"
                } else {
                    ""
                }
            )?,
            (Some(c), None) => writeln!(
                out,
                "  cpu          {c:.2} s; per record n/a (run too short: under {SHORTEST_CPU_TIME} CPU s)"
            )?,
            (None, None) => {}
        }
        writeln!(
            out,
            "  md5 floor    {:.0} records/s: kpl-codec's MD5 at {:.1} MB/s over 16 KiB blocks ÷ {:.1} B per encoded record ({:.2} {} s before the timed part, not in it)",
            self.floor_records(),
            floor.bytes_per_second / 1e6,
            self.per_record,
            floor.whole,
            if floor.thread_cpu { "CPU" } else { "wall" },
        )?;
        writeln!(
            out,
            "  latency      p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms (put to outcome)",
            self.latency_ms(0.5),
            self.latency_ms(0.99),
            self.latency_ms(0.999)
        )?;
        self.text_tail(out)
    }

    /// The text report's lines after the latency: batching, retries, capacity,
    /// memory, metrics and the exactly-once verdict.
    fn text_tail(&self, out: &mut impl Write) -> io::Result<()> {
        let (args, tally, check) = (self.args, self.tally, self.check);
        let user_records = self.user_records();
        if let Some(sim) = self.sim.filter(|_| args.acknowledge_only || args.no_check) {
            writeln!(
                out,
                "  batching     {:.1} user records per request (Kinesis records not counted)",
                user_records / sim.put_requests().max(1) as f64
            )?;
        } else if self.embedded() {
            writeln!(
                out,
                "  batching     {:.1} user records per Kinesis record, {:.1} per request",
                user_records / check.kinesis_records.max(1) as f64,
                user_records / check.requests.max(1) as f64
            )?;
        }
        writeln!(
            out,
            "  retries      {} ({:.2} % of records), failures {}; {} possibly stored twice, {} failed but possibly stored",
            tally.retries,
            tally.retries as f64 * 100.0 / user_records,
            tally.failures,
            tally.possibly_twice,
            tally.failed_possibly_stored
        )?;
        if let Some([bytes, records]) = check.capacity {
            writeln!(
                out,
                "  capacity     {:.1} % of the shards' byte limit, {:.1} % of their record limit (first store until the last is written)",
                bytes * 100.0,
                records * 100.0
            )?;
        }
        if let Some(p) = self.peak {
            writeln!(out, "  peak memory  {:.1} MB", p as f64 / 1e6)?;
        }
        if let Some(m) = self.held_memory {
            writeln!(
                out,
                "  memory       {:.1} MB resident with {} records outstanding, after the last put",
                m as f64 / 1e6,
                self.held_records
            )?;
        }
        for line in &self.metric_lines {
            writeln!(out, "  metric       {line}")?;
        }
        let failures = tally.failures;
        match check.verdict {
            Some(true) if failures == 0 => writeln!(
                out,
                "  verified     every record arrived exactly once (as a KCL consumer reads it)"
            ),
            Some(true) => writeln!(
                out,
                "  verified     every acknowledged record arrived exactly once; {failures} failed, {} (as a KCL consumer reads it)",
                match check.failed_arrived {
                    0 => "none of them arrived".to_owned(),
                    n => format!(
                        "{n} of them arrived all the same (possibly stored, as their outcomes say)"
                    ),
                }
            ),
            Some(false) => writeln!(
                out,
                "  VERIFY FAILED: an acknowledged record is missing or duplicated, or a failed one arrived"
            ),
            None => Ok(()),
        }
    }
}

/// What became of one record, for the exactly-once check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// No outcome yet.
    None,
    /// Acknowledged.
    Succeeded,
    /// Failed, and no attempt may have stored it.
    Failed,
    /// Failed after an attempt that may have stored it.
    FailedPossiblyStored,
}

/// An error as one line of its own, its causes said once
/// ([`without_repeats`]).
fn one_line<E: std::error::Error>(err: E) -> anyhow::Error {
    anyhow::anyhow!(without_repeats(&err))
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use kpl::runtime::SplitMix64;

    use super::*;

    #[test]
    fn a_chunk_holds_the_records_record_makes_in_one_buffer_of_keys_and_one_of_data() {
        // Sizes under 8 bytes (the record's number), small, and large.
        for size in [3, 100, 70_000] {
            let records = Records::of(CHUNK + 10, size, Some(50));
            for from in [0, CHUNK] {
                let chunk = records.chunk(from, false);
                let refs = chunk.refs();
                // The same records owned, for `--futures`.
                let owned = records.chunk(from, true);
                assert_eq!(owned.records(), refs.len());
                let made: Vec<PutRecord> = refs.iter().map(PutRecordRef::to_record).collect();
                assert_eq!(owned.owned, made, "size {size}");
                assert_eq!(refs.len(), (CHUNK + 10 - from).min(CHUNK));
                for (k, (j, r)) in (from..).zip(&refs).enumerate() {
                    let alone = records.record(j);
                    assert_eq!(r.to_record(), alone, "size {size}, record {j}");
                    assert_eq!(r.data.len(), size.max(8));
                    // Each record's key and data directly follow the one's before.
                    if let Some(before) = k.checked_sub(1).map(|b| &refs[b]) {
                        let after = |s: &[u8]| s.as_ptr().wrapping_add(s.len());
                        assert_eq!(
                            after(before.partition_key.as_bytes()),
                            r.partition_key.as_ptr()
                        );
                        assert_eq!(after(before.data), r.data.as_ptr());
                    }
                }
            }
        }
    }

    #[test]
    fn hex_keys_are_what_format_gives() {
        let mut rng = SplitMix64::new(7);
        for key in [0, 1, 0xf, 0x10, u64::MAX, 0x0123_4567_89ab_cdef]
            .into_iter()
            .chain((0..1000).map(|_| rng.next_u64()))
        {
            let got = hex_key(key);
            assert_eq!(got, format!("{key:016x}"));
            assert_eq!(got.capacity(), 16, "{key:x}: no spare capacity");
        }
    }

    #[test]
    fn every_value_has_a_bucket_whose_middle_is_within_a_quarter_percent() {
        let mut values = vec![
            0,
            1,
            255,
            256,
            257,
            511,
            512,
            1_000_000,
            u64::MAX - 1,
            u64::MAX,
        ];
        let mut rng = SplitMix64::new(7);
        values.extend((0..100_000).map(|_| rng.next_u64() >> (rng.next_u64() % 64)));
        values.sort_unstable();
        let mut last = 0;
        for v in values {
            let index = Latencies::index(v);
            assert!(index < Latencies::BUCKETS, "{v}");
            assert!(index >= last, "buckets follow the values ({v})");
            last = index;
            let middle = Latencies::value(index);
            let error = middle.abs_diff(v) as f64 / v.max(1) as f64;
            assert!(error <= 1.0 / 256.0, "{v} read as {middle}");
        }
    }

    #[test]
    fn percentiles_are_within_one_percent_of_the_exact_ones() {
        let mut rng = SplitMix64::new(11);
        let mut latencies = Latencies::new();
        // From a microsecond to about 17 seconds, log-uniform, plus a few equal ones.
        let mut exact: Vec<Duration> = (0..200_000)
            .map(|_| {
                Duration::from_nanos((1_000 << (rng.next_u64() % 24)) | (rng.next_u64() % 1_000))
            })
            .chain(std::iter::repeat_n(Duration::from_millis(3), 1_000))
            .collect();
        for &l in &exact {
            latencies.record(l);
        }
        exact.sort_unstable();
        for p in [0.0, 0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let want = exact[((exact.len() - 1) as f64 * p).round() as usize].as_secs_f64();
            let got = latencies.percentile(p).as_secs_f64();
            assert!((got - want).abs() <= want * 0.01, "p{p}: {got} for {want}");
        }
        assert_eq!(latencies.buckets.len(), Latencies::BUCKETS, "fixed size");
        assert_eq!(Latencies::new().percentile(0.5), Duration::ZERO);
    }

    #[test]
    fn a_message_says_each_cause_once() {
        #[derive(Debug)]
        struct Outer(Inner);
        #[derive(Debug)]
        struct Inner;
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "record refused: {}", self.0)
            }
        }
        impl fmt::Display for Inner {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("too big")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        impl std::error::Error for Inner {}
        assert_eq!(without_repeats(&Outer(Inner)), "record refused: too big");
        let io = io::Error::other(Outer(Inner));
        assert_eq!(without_repeats(&io), "record refused: too big");
    }

    #[test]
    fn the_share_of_the_floor_is_records_per_cpu_second_over_md5_bytes_per_record() {
        // 592.5 MB/s of MD5 over 125 B per record: 4.74 M records/s.
        let share = share_of_floor(700_000.0, 592_500_000.0, 125.0);
        assert!((share - 700_000.0 / 4_740_000.0).abs() < 1e-12, "{share}");
        assert!((share_of_floor(4_740_000.0, 592_500_000.0, 125.0) - 1.0).abs() < 1e-12);
        // Twice the bytes per record halve the floor's records: twice the share.
        assert!((share_of_floor(700_000.0, 592_500_000.0, 250.0) - 2.0 * share).abs() < 1e-12);
    }

    #[test]
    fn the_floor_hashes_aggregates_of_16_kib() {
        let block = floor_block().finish();
        assert_eq!(block.len(), AGGREGATE_OVERHEAD + FLOOR_BLOCK);
        // A whole aggregate, its checksum right: one user record, not the block
        // read as a plain record.
        let records = deaggregate("k", None, &block).unwrap();
        assert_eq!(records.len(), 1);
        assert!(records[0].sub_sequence_number.is_some());
        assert!(records[0].data.len() < FLOOR_BLOCK);
    }

    #[test]
    fn encoded_bytes_are_those_of_the_aggregates_the_producer_makes() {
        let records: Vec<PutRecord> = (0..999u32)
            .map(|i| PutRecord::new(format!("{i:016x}"), vec![b'x'; 100 + i as usize % 3]))
            .collect();
        let aggregate = |records: &[&PutRecord]| {
            let mut builder = AggregateBuilder::new();
            for r in records {
                builder.add(UserRecord::new(r.partition_key.clone(), r.data.clone()));
            }
            builder.size()
        };
        let all: Vec<&PutRecord> = records.iter().collect();
        // Not aggregated, or one record per aggregate (sent raw): the data, 100 to
        // 102 B.
        assert_eq!(encoded_bytes_per_record(&records, &[], None), 101.0);
        assert_eq!(
            encoded_bytes_per_record(&records, &[], Some((51_200, 1))),
            101.0
        );
        // All in one aggregate.
        let one = encoded_bytes_per_record(&records, &[], Some((1 << 20, usize::MAX)));
        assert_eq!(one, aggregate(&all) as f64 / 999.0);
        // Closed at the size limit: aggregates of at most 10,000 B.
        let cut = encoded_bytes_per_record(&records, &[], Some((10_000, usize::MAX)));
        let (mut expected, mut from) = (0, 0);
        while from < all.len() {
            let mut to = from + 1;
            while to < all.len() && aggregate(&all[from..=to]) <= 10_000 {
                to += 1;
            }
            expected += aggregate(&all[from..to]);
            from = to;
        }
        assert_eq!(cut, expected as f64 / 999.0);
        // Two shards: an aggregate for each.
        let middle = HashKey::new(u128::MAX / 2);
        let ranges = [
            (HashKey::new(0), middle),
            (HashKey::new(u128::MAX / 2 + 1), HashKey::new(u128::MAX)),
        ];
        let (low, high): (Vec<&PutRecord>, Vec<&PutRecord>) = all
            .iter()
            .partition(|r| HashKey::from_partition_key(&r.partition_key) <= middle);
        assert!(!low.is_empty() && !high.is_empty());
        assert_eq!(
            encoded_bytes_per_record(&records, &ranges, Some((1 << 20, usize::MAX))),
            (aggregate(&low) + aggregate(&high)) as f64 / 999.0
        );
    }

    #[test]
    fn a_rate_is_a_positive_finite_number_or_unlimited() {
        assert!(matches!(parse_rate("unlimited"), Ok(Rate(None))));
        assert!(matches!(parse_rate("0.5"), Ok(Rate(Some(r))) if r == 0.5));
        for bad in ["0", "-0", "-3", "NaN", "inf", "1e999", "", "fast"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        let start = Instant::now();
        assert_eq!(due(start, 3, 2.0), start + Duration::from_millis(1500));
        // A rate too low to say is far in the future, not a panic.
        assert!(due(start, usize::MAX, f64::MIN_POSITIVE) > start + Duration::from_secs(86_400));
    }
}

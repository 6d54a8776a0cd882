//! `kpl bench`: synthetic records through the whole producer.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kpl::codec::deaggregate;
use kpl::runtime::{Runtime, SplitMix64, Timer, TokioTimer};
use kpl::sim::Simulator;
use kpl::transport::{AwsTransport, Transport};
use kpl::{Outcomes, Producer, PutRecord, RecordFuture, RecordId};
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
    /// Offered load, records per second ("unlimited" for as fast as it takes them).
    #[arg(long, default_value = "unlimited")]
    rate: String,
    /// Distinct partition keys (default: one per record).
    #[arg(long)]
    key_space: Option<u64>,
    /// Embedded mode: turn the simulated shard limits off, to measure the producer
    /// alone.
    #[arg(long)]
    no_limits: bool,
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

/// The shares of the shards' byte and record limits that `stored` used between its
/// first and last store.
fn capacity_used(stored: &[kpl::sim::StoredRecord], shards: usize) -> Option<[f64; 2]> {
    let first = stored.iter().map(|r| r.arrival).min()?;
    let last = stored.iter().map(|r| r.arrival).max()?;
    let secs = last.duration_since(first).as_secs_f64();
    if secs <= 0.0 {
        return None;
    }
    let bytes: usize = stored
        .iter()
        .map(|r| r.data.len() + r.partition_key.len())
        .sum();
    let shards = shards as f64;
    Some([
        bytes as f64 / (shards * kpl::codec::SHARD_BYTES_PER_SECOND as f64 * secs),
        stored.len() as f64 / (shards * kpl::codec::SHARD_RECORDS_PER_SECOND as f64 * secs),
    ])
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut config = args.producer.config()?;
    if (args.no_limits || args.acknowledge_only) && args.endpoint.is_none() {
        // Measuring the producer alone: its own per-shard limiter must not be the
        // bound either.
        config = crate::settings::with_rate_limit(&config, 1_000_000)?;
    }
    let rate: Option<f64> = match args.rate.as_str() {
        "unlimited" => None,
        r => Some(r.parse().map_err(|_| {
            anyhow::anyhow!("--rate {r:?}: give records per second or \"unlimited\"")
        })?),
    };
    anyhow::ensure!(args.records > 0, "--records must be at least 1");
    anyhow::ensure!(args.shards > 0, "--shards must be at least 1");
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
                sim.set_limits(!args.no_limits);
                sim.set_acknowledge_only(args.acknowledge_only);
                (Arc::new(sim.clone()), Some(sim), "bench".into())
            }
        };
    // Metrics go to CloudWatch only when asked (--metrics-endpoint): a bench's
    // figures are not an account's by default.
    let uploader = match config.cloudwatch_endpoint() {
        Some(_) => {
            let settings = AwsTransport::builder()
                .region(config.region().unwrap_or_else(|| "us-east-1".into()));
            runtime.block_on(crate::settings::cloudwatch_uploader(&config, settings))?
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
    let key_space = args.key_space.unwrap_or(args.records as u64).max(1);
    let filler = vec![b'.'; args.size.saturating_sub(8)];
    // The records are made before the clock starts, so the figures are the
    // producer's (and the embedded simulator's), not the generator's.
    const CHUNK: usize = 1_000;
    let make_chunk = |from: usize| -> Vec<PutRecord> {
        (from..(from + CHUNK).min(args.records))
            .map(|j| {
                let mut data = Vec::with_capacity(args.size.max(8));
                data.extend_from_slice(&(j as u64).to_le_bytes());
                data.extend_from_slice(&filler);
                let key = SplitMix64::new(j as u64 % key_space).next_u64();
                PutRecord::new(format!("{key:016x}"), Bytes::from(data))
            })
            .collect()
    };
    let mut made: std::collections::VecDeque<Vec<PutRecord>> = if args.generate_while_putting {
        Default::default()
    } else {
        (0..args.records).step_by(CHUNK).map(make_chunk).collect()
    };
    let (cpu0, _) = cpu_and_peak_memory();
    let started = Instant::now();
    // Outcomes are read as they come (the bench holds no more records than the
    // producer does): per record, whether it succeeded and its put-to-outcome latency.
    let mut succeeded = vec![false; args.records];
    let mut latencies: Vec<Duration> = Vec::with_capacity(args.records);
    let (mut failures, mut retries) = (0usize, 0usize);
    // Outcomes that say an attempt without an answer may have stored the record.
    let (mut possibly_twice, mut failed_possibly_stored) = (0usize, 0usize);
    let mut take = |id: usize, r: kpl::RecordResult| {
        retries += r.attempts.len().saturating_sub(1);
        if r.success {
            succeeded[id] = true;
            possibly_twice += usize::from(r.may_be_duplicated());
        } else {
            failures += 1;
            failed_possibly_stored += usize::from(r.may_have_been_stored());
        }
        if let (Some(first), Some(last)) = (r.attempts.first(), r.attempts.last()) {
            let arrival = first
                .started
                .checked_sub(first.delay)
                .unwrap_or(first.started);
            latencies.push((last.started + last.duration).saturating_duration_since(arrival));
        }
    };
    let held = runtime.block_on(async {
        let mut pending: std::collections::VecDeque<(usize, RecordFuture)> = Default::default();
        let outcomes = Outcomes::new();
        // The producer numbers the records it admits one after another, and only
        // this loop puts: record number = id − the first id.
        let mut first_id: Option<u64> = None;
        let number = |first: Option<u64>, id: RecordId| (id.0 - first.unwrap_or(id.0)) as usize;
        let mut i = 0;
        for from in (0..args.records).step_by(CHUNK) {
            let mut chunk = made.pop_front().unwrap_or_else(|| make_chunk(from));
            if let Some(rate) = rate {
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            if args.futures {
                for r in producer.put_records(&stream, chunk).await? {
                    pending.push_back((i, r?));
                    i += 1;
                }
                while pending.front().is_some_and(|(_, f)| f.is_resolved()) {
                    let (id, f) = pending.pop_front().expect("front exists");
                    take(id, f.await);
                }
                continue;
            }
            while !chunk.is_empty() {
                let (ids, rest) = producer.try_put_records_to(&stream, chunk, &outcomes)?;
                for id in ids {
                    let id = id?;
                    let first = *first_id.get_or_insert(id.0);
                    anyhow::ensure!(number(Some(first), id) == i, "record ids not contiguous");
                    i += 1;
                }
                for (id, r) in outcomes.take() {
                    take(number(first_id, id), r);
                }
                if let Some(first) = rest.first() {
                    producer.wait_for_room(&stream, first.size()).await;
                }
                chunk = rest;
            }
        }
        // Memory while the records are still outstanding (before any is read back).
        let held = (producer.outstanding_records(), resident_memory());
        producer.flush().await;
        for (id, f) in pending {
            take(id, f.await);
        }
        while outcomes.pending() > 0 {
            for (id, r) in outcomes.next().await {
                take(number(first_id, id), r);
            }
        }
        Ok::<_, anyhow::Error>(held)
    })?;
    let (held_records, held_memory) = held;
    let elapsed = started.elapsed();
    let (cpu1, peak) = cpu_and_peak_memory();
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    latencies.sort_unstable();
    let user_records = args.records as f64;
    let secs = elapsed.as_secs_f64().max(1e-9);

    // Embedded: every record exactly once, as a consumer sees it.
    let mut verdict = None;
    let (mut kinesis_records, mut requests) = (0usize, 0u64);
    // With limits on: how much of the stream's capacity the run used, from the first
    // store to the last ([bytes, records] as shares of the shards' limits).
    let mut capacity: Option<[f64; 2]> = None;
    if let Some(sim) = sim
        .as_ref()
        .filter(|_| !args.no_check && !args.acknowledge_only)
    {
        let stored = sim.records("bench")?;
        kinesis_records = stored.len();
        requests = sim.put_requests();
        if !args.no_limits {
            capacity = capacity_used(&stored, args.shards);
        }
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
        let ok = seen
            .iter()
            .zip(&succeeded)
            .all(|(&n, &s)| n == u32::from(s));
        verdict = Some(ok);
    }

    let metric_lines = crate::settings::metrics_summary(&producer);
    let report = json!({
        "mode": match (&sim, args.acknowledge_only) { (Some(_), true) => "embedded kpl-sim, acknowledge only", (Some(_), false) => "embedded kpl-sim", (None, _) => "endpoint" },
        "records": args.records,
        "size": args.size,
        "shards": args.shards,
        "limits": sim.is_some() && !args.no_limits,
        "aggregation": config.aggregation_enabled(),
        "seconds": secs,
        "records_per_second": user_records / secs,
        "mb_per_second": user_records * args.size as f64 / secs / 1e6,
        "cpu_seconds": cpu,
        "cpu_seconds_per_million": cpu.map(|c| c / user_records * 1e6),
        "records_per_cpu_second": cpu.map(|c| user_records / c.max(1e-9)),
        "latency_ms": {
            "p50": percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            "p99": percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            "p99.9": percentile(&latencies, 0.999).as_secs_f64() * 1e3,
        },
        "user_records_per_kinesis_record": (sim.is_some() && kinesis_records > 0).then(|| user_records / kinesis_records as f64),
        "user_records_per_request": (requests > 0).then(|| user_records / requests as f64),
        "retries": retries,
        "failures": failures,
        "possibly_stored_twice": possibly_twice,
        "failed_possibly_stored": failed_possibly_stored,
        "peak_memory_bytes": peak,
        "outstanding_after_puts": held_records,
        "resident_bytes_after_puts": held_memory,
        "exactly_once": verdict,
        "capacity_used": capacity.map(|[bytes, records]| json!({"bytes": bytes, "records": records})),
        "metrics": metric_lines,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "kpl bench: {} records of {} B, {} shards, {}, aggregation {}",
            args.records,
            args.size,
            args.shards,
            if sim.is_some() {
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
            if config.aggregation_enabled() {
                "on"
            } else {
                "off"
            }
        );
        println!(
            "  throughput   {:.0} records/s, {:.1} MB/s ({:.2} s)",
            user_records / secs,
            user_records * args.size as f64 / secs / 1e6,
            secs
        );
        if let Some(c) = cpu {
            println!(
                "  cpu          {:.2} s per million records ({:.0} records per CPU second{})",
                c / user_records * 1e6,
                user_records / c.max(1e-9),
                if sim.is_some() {
                    "; includes the embedded simulator"
                } else {
                    ""
                }
            );
        }
        println!(
            "  latency      p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms (put to outcome)",
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            percentile(&latencies, 0.999).as_secs_f64() * 1e3
        );
        if let Some(sim) = sim
            .as_ref()
            .filter(|_| args.acknowledge_only || args.no_check)
        {
            println!(
                "  batching     {:.1} user records per request (Kinesis records not counted)",
                user_records / sim.put_requests().max(1) as f64
            );
        } else if sim.is_some() {
            println!(
                "  batching     {:.1} user records per Kinesis record, {:.1} per request",
                user_records / kinesis_records.max(1) as f64,
                user_records / requests.max(1) as f64
            );
        }
        println!(
            "  retries      {retries} ({:.2} % of records), failures {failures}; {possibly_twice} possibly stored twice, {failed_possibly_stored} failed but possibly stored",
            retries as f64 * 100.0 / user_records
        );
        if let Some([bytes, records]) = capacity {
            println!(
                "  capacity     {:.1} % of the shards' byte limit, {:.1} % of their record limit (first store to last)",
                bytes * 100.0,
                records * 100.0
            );
        }
        if let Some(p) = peak {
            println!("  peak memory  {:.1} MB", p as f64 / 1e6);
        }
        if let Some(m) = held_memory {
            println!(
                "  memory       {:.1} MB resident with {held_records} records outstanding, after the last put",
                m as f64 / 1e6
            );
        }
        for line in &metric_lines {
            println!("  metric       {line}");
        }
        match verdict {
            Some(true) => println!(
                "  verified     every record arrived exactly once (as a KCL consumer reads it)"
            ),
            Some(false) => println!("  VERIFY FAILED: some record is missing or duplicated"),
            None => {}
        }
    }
    runtime.block_on(producer.shutdown(Duration::from_secs(5)));
    if let Some(line) = crate::settings::upload_summary(&producer) {
        println!("  metrics      {line}");
    }
    Ok(if verdict == Some(false) || failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

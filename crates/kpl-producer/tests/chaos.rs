//! The chaos runner: random mixes of faults, slow service, held and lost answers,
//! resharding, stream deletion, shutdown timing and backpressure, drawn from a seed,
//! on virtual time; every seed must keep the consumer-view invariants.
//!
//! `cargo test -p kpl-producer --test chaos` runs the gate's sample
//! ([`GATE_SEEDS`] seeds). `cargo xtask chaos --seeds N [--from S]` runs many more,
//! in release mode. A failing seed prints the one line that reproduces it.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use kpl_producer::Config;
use kpl_runtime::Timer;
use kpl_sim::Faults;

/// Seeds the gate runs.
const GATE_SEEDS: u64 = 200;

/// A small generator over one seed.
struct Draw(Rng);

impl Draw {
    fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn unit(&mut self) -> f64 {
        self.0.unit()
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

fn random_faults(d: &mut Draw) -> Faults {
    let mut f = Faults::none();
    if d.chance(40) {
        f.request_500_rate = d.unit() * 0.3;
    }
    if d.chance(30) {
        f.request_503_rate = d.unit() * 0.3;
    }
    if d.chance(30) {
        f.timeout_rate = d.unit() * 0.2;
        f.timeout_after = d.ms(100, 3_000);
    }
    if d.chance(40) {
        f.record_internal_failure_rate = d.unit() * 0.3;
    }
    if d.chance(20) {
        f.latency = d.ms(1, 500);
    }
    if d.chance(25) {
        f.service_bytes_per_second = Some(d.range(50_000, 5_000_000));
        f.service_time_per_request = d.ms(0, 50);
    }
    if d.chance(20) {
        f.answer_delay = d.ms(100, 10_000);
    }
    if d.chance(20) {
        f.stored_answer_lost_rate = d.unit() * 0.2;
    }
    f
}

/// Runs one seed; panics (with the seed in the message) when an invariant breaks.
fn run_seed(seed: u64) -> String {
    let mut d = Draw(Rng::new(seed ^ 0x0063_6861_6f73));
    let shards = d.range(1, 6) as usize;
    let records = d.range(200, 3_000) as usize;
    let size = d.range(10, 3_000) as usize;
    let rate = d.range(200, 20_000);
    let ttl = d.ms(2_000, 30_000);
    let mut config = Config::builder()
        .record_ttl(ttl)
        .request_timeout(d.ms(500, 6_000))
        .max_connections(d.range(1, 24) as usize)
        .record_max_buffered_time(d.ms(10, 500));
    if d.chance(20) {
        config = config.aggregation_enabled(false);
    }
    if d.chance(30) {
        config = config
            .max_outstanding_records(d.range(50, 5_000) as usize)
            .max_outstanding_bytes(d.range(100_000, 10_000_000) as usize);
    }
    if d.chance(20) {
        config = config.rate_limit(d.range(20, 300));
    }
    // Ordered mode, over a few keys that repeat: a KCL consumer must read each key's
    // first copies in put order.
    // (`KPL_CHAOS_ORDERED=1`, `cargo xtask chaos --ordered`: every seed.)
    let ordered = d.chance(30) || std::env::var_os("KPL_CHAOS_ORDERED").is_some();
    // Unordered seeds over repeating keys too, half of them: their summaries count
    // the reorderings ordered mode exists to prevent.
    let keys = if ordered || d.chance(50) {
        d.range(1, 60)
    } else {
        0
    };
    config = config.ordered(ordered);
    // Verify before resend in 3 seeds of 10, drawn apart so the other draws stay
    // as they were (`KPL_CHAOS_VERIFY=1`, `cargo xtask chaos --verify-before-resend`:
    // every seed).
    let verify = Draw(Rng::new(seed ^ 0x7665_7269_6679)).chance(30)
        || std::env::var_os("KPL_CHAOS_VERIFY").is_some();
    config = config.verify_before_resend(verify);
    let h = harness(config, shards, seed);
    if d.chance(30) {
        h.kinesis.set_limits(false);
    }
    // A share of the records (none, some or all) get their outcomes from an outcome
    // queue instead of a future.
    let queued_percent = [0, 0, 50, 100][d.below(4) as usize];
    let (puts, loaded) = spawn_keyed_load_until_shutdown(
        &h.sim.runtime(),
        &h.producer,
        records,
        size,
        rate,
        seed,
        queued_percent,
        keys,
    );
    // A timeline of events over the load's span and a little after.
    let span = Duration::from_secs_f64(records as f64 / rate as f64) + Duration::from_secs(2);
    let mut events = Vec::new();
    for _ in 0..d.range(0, 6) {
        let at = Duration::from_secs_f64(span.as_secs_f64() * d.unit());
        events.push((at, d.below(100)));
    }
    events.sort();
    let mut snapshot = None;
    let mut shut_down = false;
    let mut elapsed = Duration::ZERO;
    for (at, kind) in events {
        if at > elapsed {
            h.sim.run_for(at - elapsed);
            elapsed = at;
        }
        let stream = h.kinesis.shards(STREAM);
        match kind {
            0..=29 => h.kinesis.set_faults(random_faults(&mut d)),
            30..=44 => h.kinesis.set_faults(Faults::none()),
            45..=64 => {
                // Split a random open shard.
                if let Ok(all) = stream {
                    let open: Vec<_> = all.iter().filter(|s| !s.closed).collect();
                    let s = open[d.below(open.len() as u64) as usize];
                    let (lo, hi) = (s.starting_hash_key.get(), s.ending_hash_key.get());
                    if hi - lo > 2 {
                        let mid = lo + (hi - lo) / 2;
                        let _ = h.kinesis.split_shard(
                            STREAM,
                            &s.shard_id,
                            kpl_codec::HashKey::new(mid),
                        );
                    }
                }
            }
            65..=79 => {
                // Merge two adjacent open shards.
                if let Ok(all) = stream {
                    let mut open: Vec<_> = all.iter().filter(|s| !s.closed).collect();
                    open.sort_by_key(|s| s.starting_hash_key);
                    if open.len() >= 2 {
                        let i = d.below(open.len() as u64 - 1) as usize;
                        let _ = h.kinesis.merge_shards(
                            STREAM,
                            &open[i].shard_id,
                            &open[i + 1].shard_id,
                        );
                    }
                }
            }
            80..=89 if !shut_down => {
                shut_down = true;
                let p = h.producer.clone();
                let timeout = d.ms(0, 3_000);
                h.sim.runtime().spawn(Box::pin(async move {
                    p.shutdown(timeout).await;
                }));
            }
            90..=94 if snapshot.is_none() => {
                // Delete the stream: what it held is read first.
                if let (Ok(stored), Ok(shards)) =
                    (h.kinesis.records(STREAM), h.kinesis.shards(STREAM))
                {
                    snapshot = Some((stored, shards));
                    h.kinesis.delete_stream(STREAM).unwrap();
                }
            }
            _ => {}
        }
    }
    h.kinesis.set_faults(Faults::none());
    // Everything resolves within the time to live, give or take the longest request
    // and backoffs.
    let limit = span + ttl + Duration::from_secs(700);
    let end = h.sim.clock().now() + limit;
    loop {
        h.sim.run_for(Duration::from_millis(250));
        let done =
            loaded.load(Ordering::Acquire) && puts.lock().unwrap().iter().all(Put::is_resolved);
        if done {
            break;
        }
        assert!(
            h.sim.clock().now() < end,
            "seed {seed}: records unresolved after {limit:?}: {} outstanding",
            h.producer.outstanding_records()
        );
    }
    // Held answers of abandoned requests may still store: let them.
    h.sim.run_for(Duration::from_secs(15));
    let n = puts.lock().unwrap().len();
    let (stored, shards) = snapshot.unwrap_or_else(|| {
        (
            h.kinesis.records(STREAM).unwrap_or_default(),
            h.kinesis.shards(STREAM).unwrap_or_default(),
        )
    });
    let violations = order_violations(&stored, &shards);
    if ordered {
        assert_eq!(
            violations, 0,
            "seed {seed}: ordered mode, {keys} keys: records read after a later record of their key"
        );
    }
    let outcome = check_invariants_against(&h, &puts, stored, shards);
    format!(
        "{}{}{n} records, {violations} out of order, {} stored, {} stored twice (flagged), {} failed ({} possibly stored)",
        if ordered { "ordered: " } else { "" },
        if verify { "verify: " } else { "" },
        outcome.successes(),
        outcome.duplicated,
        n - outcome.successes(),
        outcome.failed_but_stored
    )
}

fn run_seeds(from: u64, count: u64) {
    let mut failures = Vec::new();
    for seed in from..from + count {
        let result = std::panic::catch_unwind(|| run_seed(seed));
        match result {
            Ok(summary) => {
                if std::env::var_os("KPL_CHAOS_VERBOSE").is_some() {
                    eprintln!("seed {seed}: {summary}");
                }
            }
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                eprintln!(
                    "chaos seed {seed} FAILED: {why}\n  reproduce: cargo xtask chaos --from {seed} --seeds 1"
                );
                failures.push(seed);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed: {failures:?}",
        failures.len()
    );
    eprintln!("chaos: seeds {from}..{} clean", from + count);
}

#[test]
fn chaos_seeds() {
    let from = std::env::var("KPL_CHAOS_FROM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let count = std::env::var("KPL_CHAOS_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(GATE_SEEDS);
    run_seeds(from, count);
}

//! One scenario's run: a stream and an input made, `kpl put` started through the
//! proxy, the timeline played, the run awaited, what it left read and judged.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kpl_tests::kinesis::{Kinesis, hash_key};
use kpl_tests::proxy::{Counts, Faults, Proxy};
use serde_json::json;

use super::reader::{self, Outcome};
use super::scenarios::{Act, Scenario};
use super::{Input, Mode, Report};

/// The partition keys of an ordered run's lines (as the issue measured: 40).
const ORDERED_KEYS: usize = 40;

/// The files of one run.
struct Files {
    input: PathBuf,
    failed: PathBuf,
    summary: PathBuf,
    log: PathBuf,
}

/// Runs scenario `s` against the peer at `endpoint` with the `kpl` at `kpl`.
pub(crate) fn run_scenario(
    s: &Scenario,
    endpoint: &str,
    kpl: &Path,
    dir: &Path,
    http_client: Option<&str>,
    mode: Mode,
) -> Result<Report> {
    let input = mode.input;
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let stream = format!("faults-{}-{}-{run}", s.name, std::process::id());
    let peer = Kinesis::new(endpoint);
    peer.create_stream(&stream, s.shards)?;
    let files = prepare(s, dir, run, input)?;
    let proxy = Proxy::start(endpoint, 7)?;
    let mut faults = Faults {
        uplink_bytes_per_second: s.uplink,
        ..Faults::default()
    };
    proxy.set(faults.clone());
    let started = Instant::now();
    let (child, stderr) = start_kpl(kpl, &stream, &proxy, &files, http_client, mode)?;
    play_timeline(s, &peer, &stream, &proxy, &mut faults, started)?;
    let status = wait(child, s.name)?;
    let seconds = started.elapsed().as_secs_f64();
    let stderr = stderr.join().unwrap_or_default();
    std::fs::write(&files.log, &stderr)?;
    let outcome = reader::read(endpoint, &stream, &files.failed, &files.summary)?;
    Ok(judge(
        s,
        &outcome,
        &proxy.counts,
        status,
        seconds,
        &files,
        mode,
    ))
}

/// Writes the input (`NAME-NNNNNNNN ...`, 100 bytes a line; for a keyed run, JSON
/// lines `{"k": KEY, "d": LINE}` over [`ORDERED_KEYS`] keys) and names the files.
fn prepare(s: &Scenario, dir: &Path, run: usize, input: Input) -> Result<Files> {
    let files = Files {
        input: dir.join(format!("{}.txt", s.name)),
        failed: dir.join(format!("{}-{run}-failed.jsonl", s.name)),
        summary: dir.join(format!("{}-{run}-summary.json", s.name)),
        log: dir.join(format!("{}-{run}.log", s.name)),
    };
    for f in [&files.failed, &files.summary] {
        let _ = std::fs::remove_file(f);
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(&files.input)?);
    for i in 1..=s.lines {
        let mut line = format!("{}-{i:08} ", s.name);
        while line.len() < 100 {
            line.push('.');
        }
        if input.keyed() {
            let key = format!("key-{}", i % ORDERED_KEYS);
            writeln!(f, "{}", json!({"k": key, "d": line}))?;
        } else {
            writeln!(f, "{line}")?;
        }
    }
    f.flush()?;
    Ok(files)
}

/// Starts `kpl put` of the input through the proxy; its standard error is
/// collected by a thread.
fn start_kpl(
    kpl: &Path,
    stream: &str,
    proxy: &Proxy,
    files: &Files,
    http_client: Option<&str>,
    mode: Mode,
) -> Result<(Child, JoinHandle<String>)> {
    let input = mode.input;
    let verify_args: &[&str] = if mode.verify {
        &["--verify-before-resend"]
    } else {
        &[]
    };
    let ordered_args: &[&str] = if input == Input::Ordered {
        &["--ordered"]
    } else {
        &[]
    };
    let keyed_args: &[&str] = if input.keyed() {
        &["--format", "json", "--pk-field", "k", "--data-field", "d"]
    } else {
        &[]
    };
    let mut child = kpl_tests::kpl::command(kpl)
        .args([
            "put",
            "-v",
            "--stream",
            stream,
            "--endpoint",
            &proxy.endpoint,
        ])
        .args(["--region", "us-east-1", "--quiet", "--failed"])
        .arg(&files.failed)
        .arg("--summary-json")
        .arg(&files.summary)
        .args(http_client.map(|c| format!("--http-client={c}")))
        .args(ordered_args)
        .args(verify_args)
        .args(keyed_args)
        .arg(&files.input)
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", kpl.display()))?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let collector = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    Ok((child, collector))
}

/// Does each act of the timeline at its moment.
fn play_timeline(
    s: &Scenario,
    peer: &Kinesis,
    stream: &str,
    proxy: &Proxy,
    current: &mut Faults,
    started: Instant,
) -> Result<()> {
    for &(at, act) in &s.timeline {
        let due = started + Duration::from_secs_f64(at);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        match act {
            Act::Hold(d) => current.hold_until = Some(Instant::now() + d),
            Act::Errors(d) => current.errors_until = Some(Instant::now() + d),
            Act::Resets(rate) => current.reset_rate = rate,
            Act::Split(fraction) => split_widest(peer, stream, fraction)?,
            Act::Merge => merge_lowest(peer, stream)?,
        }
        proxy.set(current.clone());
    }
    Ok(())
}

/// Splits the widest open shard `1/fraction` of the way into its range.
fn split_widest(peer: &Kinesis, stream: &str, fraction: u128) -> Result<()> {
    let open = peer.open_shards(stream)?;
    let width = |sh: &serde_json::Value| -> Result<(u128, u128)> {
        let r = &sh["HashKeyRange"];
        Ok((
            hash_key(&r["StartingHashKey"])?.get(),
            hash_key(&r["EndingHashKey"])?.get(),
        ))
    };
    let widest = open
        .iter()
        .max_by_key(|sh| width(sh).map(|(lo, hi)| hi - lo).unwrap_or(0))
        .context("no open shard")?;
    let (lo, hi) = width(widest)?;
    peer.call(
        "SplitShard",
        &json!({"StreamName": stream, "ShardToSplit": widest["ShardId"], "NewStartingHashKey": (lo + (hi - lo) / fraction).to_string()}),
    )?;
    Ok(())
}

/// Merges the two lowest adjacent open shards, if there are two.
fn merge_lowest(peer: &Kinesis, stream: &str) -> Result<()> {
    let open = peer.open_shards(stream)?;
    if open.len() >= 2 {
        peer.call(
            "MergeShards",
            &json!({"StreamName": stream, "ShardToMerge": open[0]["ShardId"], "AdjacentShardToMerge": open[1]["ShardId"]}),
        )?;
    }
    Ok(())
}

/// Waits for `kpl put` to end (10 minutes at most).
fn wait(mut child: Child, name: &str) -> Result<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{name}: kpl put did not finish within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Compares what the run left with what `kpl put` said and what the scenario
/// allows.
fn judge(
    s: &Scenario,
    o: &Outcome,
    counts: &Counts,
    status: ExitStatus,
    seconds: f64,
    files: &Files,
    mode: Mode,
) -> Report {
    let input = mode.input;
    let lines = s.lines as u64;
    let stored = o.seen.len() as u64;
    let duplicated = o.seen.values().filter(|&&n| n > 1).count() as u64;
    let failed_but_stored = o
        .failed_lines
        .iter()
        .filter(|n| o.seen.contains_key(n))
        .count() as u64;
    let lost = (1..=lines)
        .filter(|n| !o.seen.contains_key(n) && !o.failed_lines.contains(n))
        .count() as u64;
    let summary = o.summary.clone().unwrap_or_default();
    // The time the link needs for the bytes it carried (base64 in JSON, keys and
    // headers included; no copies, checked above).
    let carried = Counts::get(&counts.uplink_bytes);
    let link_seconds = s.uplink.map(|rate| carried as f64 / rate as f64);
    let mut problems = Vec::new();
    if let Err(e) = &o.summary {
        problems.push(format!("no summary from kpl put ({status}): {e}"));
    }
    if lost > 0 {
        problems.push(format!(
            "{lost} lines neither stored nor in the failed file"
        ));
    }
    if !o.failed_lines.is_empty() || !status.success() {
        problems.push(format!(
            "{} lines failed (exit {status}); by code: {:?}",
            o.failed_lines.len(),
            summary.failures_by_code
        ));
        problems.push(format!("kpl put's log: {}", files.log.display()));
    }
    // A connection reset after the peer took a request may duplicate that request:
    // one request's worth of lines per such reset, on top (at most 512 KiB; in
    // ordered mode one aggregate up to the record limit goes alone in a request).
    let resets_after = Counts::get(&counts.resets_after_forwarding);
    let request = if input == Input::Ordered {
        kpl_codec::DEFAULT_MAX_RECORD_SIZE
    } else {
        512 * 1024
    };
    let allowed = match s.verified_duplicates {
        // Verifying: what the scenario allows with it, whatever the resets.
        Some(percent) if mode.verify => lines as f64 * percent / 100.0,
        _ => {
            lines as f64 * s.max_duplicate_percent / 100.0
                + resets_after as f64 * (request as f64 / 100.0)
        }
    };
    if duplicated as f64 > allowed {
        problems.push(format!(
            "{duplicated} lines stored twice (at most {} % allowed, plus one request per reset after forwarding: {resets_after})",
            s.max_duplicate_percent
        ));
    }
    if duplicated > summary.possibly_stored_twice {
        problems.push(format!(
            "{duplicated} lines stored twice, {} reported",
            summary.possibly_stored_twice
        ));
    }
    if input == Input::Ordered && o.out_of_order > 0 {
        problems.push(format!(
            "{} lines read after a later line of their key, in ordered mode",
            o.out_of_order
        ));
    }
    if o.outside as f64 > lines as f64 * s.max_outside_percent / 100.0 {
        problems.push(format!("{} copies outside their shard's range", o.outside));
    }
    // (Scenarios that only use the link to stretch the run have a timeline.)
    if let Some(link) = link_seconds.filter(|&link| s.timeline.is_empty() && seconds > link * 1.3) {
        problems.push(format!(
            "{seconds:.1} s for {link:.1} s of link time (over 1.3×)"
        ));
    }
    Report {
        name: s.name,
        peer: s.peer,
        lines: s.lines,
        seconds,
        acknowledged: summary.acknowledged,
        failed: summary.failed,
        flagged: summary.possibly_stored_twice,
        stored,
        duplicated,
        failed_but_stored,
        lost,
        outside: o.outside,
        out_of_order: o.out_of_order,
        mode,
        reads: summary.verify_reads,
        link_seconds,
        proxy: format!(
            "{} requests, {} held, {} reset, {} answered 500",
            Counts::get(&counts.requests),
            Counts::get(&counts.held),
            Counts::get(&counts.resets),
            Counts::get(&counts.errors)
        ),
        problems,
    }
}

//! `cargo xtask faults`: `kpl put` over real HTTP, through the fault-injecting proxy,
//! into kinesis-mock and kinesalite; each scenario's stream is then read back as a
//! consumer reads it (GetRecords from every shard, de-aggregated, user records
//! outside their shard's range dropped as the KCL drops them) and compared with what
//! `kpl put` reported.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kpl_codec::{HashKey, deaggregate};
use serde_json::{Value, json};

use crate::peer;
use crate::proxy::{Faults, Proxy};
use crate::util::{cargo, run, step, target_dir};

/// Which peer a scenario runs against.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Peer {
    KinesisMock,
    Kinesalite,
}

/// Something done to the path or the stream at a moment of the run.
#[derive(Clone, Copy, Debug)]
enum Act {
    /// Hold answers for this long.
    Hold(Duration),
    /// Answer HTTP 500 for this long.
    Errors(Duration),
    /// Reset this fraction of connections from now on.
    Resets(f64),
    /// Split the widest open shard, this far into its range (2: the midpoint,
    /// as `UpdateShardCount` does; 3: a third of the way).
    Split(u128),
    /// Merge the two lowest adjacent open shards.
    Merge,
}

struct Scenario {
    name: &'static str,
    peer: Peer,
    shards: u32,
    lines: usize,
    /// Uplink cap for the whole run.
    uplink: Option<u64>,
    /// (seconds after the start, act).
    timeline: Vec<(f64, Act)>,
    /// Most records allowed stored twice, in percent.
    max_duplicate_percent: f64,
    /// Most copies outside their shard's range, in percent.
    max_outside_percent: f64,
}

fn scenarios(short: bool) -> Vec<Scenario> {
    let n = |full: usize, gate: usize| if short { gate } else { full };
    let mut v = vec![
        Scenario {
            name: "baseline",
            peer: Peer::KinesisMock,
            shards: 4,
            lines: n(60_000, 10_000),
            uplink: None,
            timeline: vec![],
            max_duplicate_percent: 0.0,
            max_outside_percent: 10.0,
        },
        Scenario {
            name: "held-answers-8s",
            peer: Peer::KinesisMock,
            shards: 4,
            lines: n(60_000, 20_000),
            uplink: None,
            timeline: vec![(0.3, Act::Hold(Duration::from_secs(8)))],
            max_duplicate_percent: 10.0,
            max_outside_percent: 10.0,
        },
        Scenario {
            name: "resets-and-500s",
            peer: Peer::KinesisMock,
            shards: 4,
            lines: n(60_000, 20_000),
            uplink: None,
            timeline: vec![
                (0.2, Act::Resets(0.05)),
                (0.4, Act::Errors(Duration::from_secs(2))),
            ],
            // Beyond what a reset after forwarding may duplicate (one request each,
            // reported; reading the shard before resending is the planned remedy).
            max_duplicate_percent: 1.0,
            max_outside_percent: 10.0,
        },
        Scenario {
            name: "narrow-uplink",
            peer: Peer::Kinesalite,
            shards: 4,
            lines: n(30_000, 10_000),
            uplink: Some(300_000),
            timeline: vec![],
            max_duplicate_percent: 0.0,
            max_outside_percent: 10.0,
        },
    ];
    if !short {
        v.push(Scenario {
            name: "split-and-merge",
            peer: Peer::KinesisMock,
            shards: 4,
            lines: 60_000,
            // A link of 1.5 MB/s makes the run last about 7 s, so the reshards
            // happen while records flow.
            uplink: Some(1_500_000),
            timeline: vec![(1.5, Act::Split(2)), (3.5, Act::Merge)],
            max_duplicate_percent: 0.0,
            max_outside_percent: 10.0,
        });
        // The storm: 8 splits and merges spread over a run of about 14 s
        // (a 750 kB/s link stretches it), as in its measurement (60,000 records).
        v.push(storm("reshard-storm", 750_000, (1.0, 1.5), 2, 10.0));
        // Three times denser: 8 reshards in 5 s of a 7 s run.
        v.push(storm("reshard-storm-dense", 1_500_000, (0.5, 0.7), 2, 10.0));
        // Splits a third of the way into a shard's range, which half-range
        // aggregation does not foresee: copies are bounded by what is in flight.
        v.push(storm("reshard-storm-uneven", 750_000, (1.0, 1.5), 3, 15.0));
    }
    v
}

/// 8 splits and merges, alternating, `gap` seconds apart from `first`, while 60,000
/// lines go through a link of `uplink` bytes per second.
fn storm(
    name: &'static str,
    uplink: u64,
    (first, gap): (f64, f64),
    split_at: u128,
    max_outside: f64,
) -> Scenario {
    Scenario {
        name,
        peer: Peer::KinesisMock,
        shards: 4,
        lines: 60_000,
        uplink: Some(uplink),
        timeline: (0..8)
            .map(|i| {
                let at = first + gap * f64::from(i);
                (
                    at,
                    if i % 2 == 0 {
                        Act::Split(split_at)
                    } else {
                        Act::Merge
                    },
                )
            })
            .collect(),
        max_duplicate_percent: 0.0,
        max_outside_percent: max_outside,
    }
}

/// One awsJson 1.1 call straight to the peer (not through the proxy).
pub(crate) fn call(endpoint: &str, target: &str, body: &Value) -> Result<Value> {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.to_string();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: Kinesis_20131202.{target}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=faults/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=00\r\nX-Amz-Date: 20260101T000000Z\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("a response without a head")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{target}: {head}\n{body}");
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body)?
    })
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

fn shards(endpoint: &str, stream: &str) -> Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut page = call(endpoint, "ListShards", &json!({"StreamName": stream}))?;
    loop {
        all.extend(page["Shards"].as_array().cloned().unwrap_or_default());
        match page["NextToken"].as_str() {
            Some(token) => page = call(endpoint, "ListShards", &json!({"NextToken": token}))?,
            None => return Ok(all),
        }
    }
}

fn key(v: &Value) -> Result<HashKey> {
    HashKey::from_decimal(v.as_str().unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("bad hash key {v}: {e}"))
}

/// Every user record of the stream as a KCL consumer reads it: line number → copies
/// read; plus how many copies lay outside their shard's range (dropped).
fn read_back(endpoint: &str, stream: &str) -> Result<(HashMap<u64, u32>, u64)> {
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let outside = read_user_records(endpoint, stream, |data| {
        let text = String::from_utf8_lossy(data);
        let number = text
            .split_whitespace()
            .next()
            .and_then(|w| w.rsplit('-').next())
            .and_then(|n| n.parse::<u64>().ok())
            .with_context(|| format!("a record not of this run: {text:?}"))?;
        *seen.entry(number).or_default() += 1;
        Ok(())
    })?;
    Ok((seen, outside))
}

/// Reads the stream as a KCL consumer does (GetRecords from every shard from its
/// start, de-aggregated, user records outside their shard's range dropped) and hands
/// each user record's data to `each`; returns how many copies lay outside their
/// shard's range.
pub(crate) fn read_user_records(
    endpoint: &str,
    stream: &str,
    mut each: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let mut outside = 0u64;
    for shard in shards(endpoint, stream)? {
        let id = shard["ShardId"].as_str().unwrap_or_default().to_owned();
        let range = &shard["HashKeyRange"];
        let (start, end) = (
            key(&range["StartingHashKey"])?,
            key(&range["EndingHashKey"])?,
        );
        let it = call(
            endpoint,
            "GetShardIterator",
            &json!({"StreamName": stream, "ShardId": id, "ShardIteratorType": "TRIM_HORIZON"}),
        )?;
        let mut iterator = it["ShardIterator"].as_str().map(str::to_owned);
        while let Some(it) = iterator {
            let page = call(
                endpoint,
                "GetRecords",
                &json!({"ShardIterator": it, "Limit": 10000}),
            )?;
            let records = page["Records"].as_array().cloned().unwrap_or_default();
            for r in &records {
                let data = STANDARD.decode(r["Data"].as_str().unwrap_or_default())?;
                let pk = r["PartitionKey"].as_str().unwrap_or_default();
                let ehk = r["ExplicitHashKey"].as_str();
                for u in deaggregate(pk, ehk, &data)? {
                    let k = u.hash_key()?;
                    if k < start || k > end {
                        outside += 1;
                        continue;
                    }
                    each(u.data)?;
                }
            }
            iterator = if records.is_empty() {
                None
            } else {
                page["NextShardIterator"].as_str().map(str::to_owned)
            };
        }
    }
    Ok(outside)
}

/// The numbers in `kpl put`'s summary line: "N sent, N acknowledged, ...".
pub(crate) fn summary_numbers(stderr: &str) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Some(line) = stderr
        .lines()
        .rev()
        .find(|l| l.contains(" sent, ") && l.contains(" acknowledged, "))
    else {
        return out;
    };
    let line = line.trim_start_matches("kpl put: ");
    let line = line
        .split(" in ")
        .next()
        .unwrap_or(line)
        .trim_end_matches(',');
    for part in line.split(", ") {
        if let Some((Ok(n), what)) = part.split_once(' ').map(|(n, w)| (n.parse(), w)) {
            out.insert(what.to_owned(), n);
        }
    }
    out
}

struct Report {
    name: &'static str,
    peer: Peer,
    lines: usize,
    seconds: f64,
    acknowledged: u64,
    failed: u64,
    flagged: u64,
    stored: u64,
    duplicated: u64,
    failed_but_stored: u64,
    lost: u64,
    outside: u64,
    link_seconds: Option<f64>,
    /// What the proxy did.
    proxy: String,
    problems: Vec<String>,
}

fn run_scenario(
    s: &Scenario,
    endpoint: &str,
    kpl: &Path,
    dir: &Path,
    http_client: Option<&str>,
) -> Result<Report> {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stream = format!("faults-{}-{}-{run}", s.name, std::process::id());
    call(
        endpoint,
        "CreateStream",
        &json!({"StreamName": stream, "ShardCount": s.shards}),
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let proxy = Proxy::start(endpoint, 7)?;
    let input = dir.join(format!("{}.txt", s.name));
    let failed = dir.join(format!("{}-{run}-failed.jsonl", s.name));
    let log = dir.join(format!("{}-{run}.log", s.name));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
        for i in 1..=s.lines {
            let mut line = format!("{}-{i:08} ", s.name);
            while line.len() < 100 {
                line.push('.');
            }
            writeln!(f, "{line}")?;
        }
    }
    proxy.set(Faults {
        uplink_bytes_per_second: s.uplink,
        ..Faults::default()
    });
    let started = Instant::now();
    let mut child = Command::new(kpl)
        .args([
            "put",
            "-v",
            "--stream",
            &stream,
            "--endpoint",
            &proxy.endpoint,
        ])
        .args(["--region", "us-east-1", "--quiet", "--failed"])
        .arg(&failed)
        .args(http_client.map(|c| format!("--http-client={c}")))
        .arg(&input)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", kpl.display()))?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let collector = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut current = Faults {
        uplink_bytes_per_second: s.uplink,
        ..Faults::default()
    };
    for &(at, act) in &s.timeline {
        let due = started + Duration::from_secs_f64(at);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        match act {
            Act::Hold(d) => current.hold_until = Some(Instant::now() + d),
            Act::Errors(d) => current.errors_until = Some(Instant::now() + d),
            Act::Resets(rate) => current.reset_rate = rate,
            Act::Split(_) | Act::Merge => {
                let mut open: Vec<Value> = shards(endpoint, &stream)?
                    .into_iter()
                    .filter(|sh| sh["SequenceNumberRange"]["EndingSequenceNumber"].is_null())
                    .collect();
                open.sort_by_key(|sh| key(&sh["HashKeyRange"]["StartingHashKey"]).ok());
                if let Act::Split(fraction) = act {
                    let widest = open
                        .iter()
                        .max_by_key(|sh| {
                            let r = &sh["HashKeyRange"];
                            key(&r["EndingHashKey"]).map(|e| e.get()).unwrap_or(0)
                                - key(&r["StartingHashKey"]).map(|b| b.get()).unwrap_or(0)
                        })
                        .context("no open shard")?;
                    let r = &widest["HashKeyRange"];
                    let (lo, hi) = (
                        key(&r["StartingHashKey"])?.get(),
                        key(&r["EndingHashKey"])?.get(),
                    );
                    call(
                        endpoint,
                        "SplitShard",
                        &json!({"StreamName": stream, "ShardToSplit": widest["ShardId"], "NewStartingHashKey": (lo + (hi - lo) / fraction).to_string()}),
                    )?;
                } else if open.len() >= 2 {
                    call(
                        endpoint,
                        "MergeShards",
                        &json!({"StreamName": stream, "ShardToMerge": open[0]["ShardId"], "AdjacentShardToMerge": open[1]["ShardId"]}),
                    )?;
                }
            }
        }
        proxy.set(current.clone());
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{}: kpl put did not finish within 10 minutes", s.name);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let seconds = started.elapsed().as_secs_f64();
    let stderr = collector.join().unwrap_or_default();
    std::fs::write(&log, &stderr)?;
    let numbers = summary_numbers(&stderr);
    let failed_lines: HashSet<u64> = std::fs::read_to_string(&failed)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["Line"].as_u64())
        .collect();
    let (seen, outside) = read_back(endpoint, &stream)?;
    let lines = s.lines as u64;
    let stored = seen.len() as u64;
    let duplicated = seen.values().filter(|&&n| n > 1).count() as u64;
    let failed_but_stored = failed_lines.iter().filter(|n| seen.contains_key(n)).count() as u64;
    let lost = (1..=lines)
        .filter(|n| !seen.contains_key(n) && !failed_lines.contains(n))
        .count() as u64;
    let get = |k: &str| numbers.get(k).copied().unwrap_or(0);
    // The time the link needs for the bytes it carried (base64 in JSON, keys and
    // headers included; no copies, checked above).
    let carried = proxy
        .counts
        .uplink_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    let link_seconds = s.uplink.map(|rate| carried as f64 / rate as f64);
    let mut problems = Vec::new();
    if numbers.is_empty() {
        problems.push(format!("no summary from kpl put ({status}): {stderr}"));
    }
    if lost > 0 {
        problems.push(format!(
            "{lost} lines neither stored nor in the failed file"
        ));
    }
    if !failed_lines.is_empty() || !status.success() {
        problems.push(format!(
            "{} lines failed (exit {status}); by code: {}",
            failed_lines.len(),
            stderr
                .lines()
                .find(|l| l.contains("failures by error code"))
                .unwrap_or("-")
        ));
        problems.push(format!("kpl put's log: {}", log.display()));
    }
    // A connection reset after the peer took a request may duplicate that request:
    // one request's worth of lines (at most 512 KiB) per such reset, on top.
    let resets_after = proxy
        .counts
        .resets_after_forwarding
        .load(std::sync::atomic::Ordering::Relaxed);
    let allowed = lines as f64 * s.max_duplicate_percent / 100.0
        + resets_after as f64 * (512.0 * 1024.0 / 100.0);
    if duplicated as f64 > allowed {
        problems.push(format!(
            "{duplicated} lines stored twice (at most {} % allowed, plus one request per reset after forwarding: {resets_after})",
            s.max_duplicate_percent
        ));
    }
    if duplicated > get("possibly stored twice") {
        problems.push(format!(
            "{duplicated} lines stored twice, {} reported",
            get("possibly stored twice")
        ));
    }
    if outside as f64 > lines as f64 * s.max_outside_percent / 100.0 {
        problems.push(format!("{outside} copies outside their shard's range"));
    }
    // (Scenarios that only use the link to stretch the run have a timeline.)
    if let Some(link) = link_seconds.filter(|&link| s.timeline.is_empty() && seconds > link * 1.3) {
        problems.push(format!(
            "{seconds:.1} s for {link:.1} s of link time (over 1.3×)"
        ));
    }
    Ok(Report {
        name: s.name,
        peer: s.peer,
        lines: s.lines,
        seconds,
        acknowledged: get("acknowledged"),
        failed: get("failed"),
        flagged: get("possibly stored twice"),
        stored,
        duplicated,
        failed_but_stored,
        lost,
        outside,
        link_seconds,
        proxy: {
            use std::sync::atomic::Ordering::Relaxed;
            let c = &proxy.counts;
            format!(
                "{} requests, {} held, {} reset, {} answered 500",
                c.requests.load(Relaxed),
                c.held.load(Relaxed),
                c.resets.load(Relaxed),
                c.errors.load(Relaxed)
            )
        },
        problems,
    })
}

/// Builds the `kpl` command (release, or debug as the gate's short set uses) and
/// returns its path.
pub(crate) fn build_kpl(release: bool) -> Result<std::path::PathBuf> {
    if release {
        step("building kpl (release)");
        run(cargo().args(["build", "--locked", "--release", "-p", "kpl-cli"]))?;
        Ok(target_dir().join("release/kpl"))
    } else {
        step("building kpl (debug)");
        run(cargo().args(["build", "--locked", "-p", "kpl-cli"]))?;
        Ok(target_dir().join("debug/kpl"))
    }
}

/// Runs the scenario set (`short`: the gate's smaller set) and prints a table; fails
/// if any scenario broke its expectations.
pub(crate) fn run_all(
    short: bool,
    only: Option<&str>,
    repeat: usize,
    http_client: Option<&str>,
) -> Result<()> {
    let dir = target_dir().join("faults");
    std::fs::create_dir_all(&dir)?;
    let kpl = build_kpl(!short)?;
    let all: Vec<Scenario> = scenarios(short)
        .into_iter()
        .filter(|s| only.is_none_or(|o| s.name == o))
        .collect();
    if all.is_empty() {
        bail!("no scenario named {only:?}");
    }
    let mut reports = Vec::new();
    for kind in [Peer::KinesisMock, Peer::Kinesalite] {
        let these: Vec<&Scenario> = all.iter().filter(|s| s.peer == kind).collect();
        if these.is_empty() {
            continue;
        }
        let peer = match kind {
            Peer::KinesisMock => peer::start_kinesis_mock()?,
            Peer::Kinesalite => peer::start_kinesalite("unused", 1)?,
        };
        for s in these
            .iter()
            .flat_map(|s| std::iter::repeat_n(*s, repeat.max(1)))
        {
            step(&format!(
                "fault scenario {} ({kind:?}, {} lines)",
                s.name, s.lines
            ));
            let r = run_scenario(s, &peer.endpoint, &kpl, &dir, http_client)?;
            println!(
                "{}: {:.1} s, {} acknowledged, {} failed, {} stored, {} stored twice ({} reported), {} lost; proxy: {}",
                r.name,
                r.seconds,
                r.acknowledged,
                r.failed,
                r.stored,
                r.duplicated,
                r.flagged,
                r.lost,
                r.proxy
            );
            for p in &r.problems {
                println!("  PROBLEM: {p}");
            }
            reports.push(r);
        }
    }
    println!(
        "\n| scenario | peer | lines | seconds | acknowledged | failed | stored (consumer view) | stored twice | reported possibly twice | failed but stored | lost | copies outside range | link time |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &reports {
        println!(
            "| {} | {:?} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.peer,
            r.lines,
            r.seconds,
            r.acknowledged,
            r.failed,
            r.stored,
            r.duplicated,
            r.flagged,
            r.failed_but_stored,
            r.lost,
            r.outside,
            r.link_seconds.map_or("-".into(), |l| format!("{l:.1} s"))
        );
    }
    let bad: Vec<&Report> = reports.iter().filter(|r| !r.problems.is_empty()).collect();
    if !bad.is_empty() {
        bail!(
            "{} of {} fault scenarios broke their expectations: {}",
            bad.len(),
            reports.len(),
            bad.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
        );
    }
    println!("\nfaults: {} scenarios clean", reports.len());
    Ok(())
}

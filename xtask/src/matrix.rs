//! `cargo xtask signals`: the signal and output matrix for `kpl put` (issue 21).
//!
//! Each cell is one run of `kpl put` of N lines of distinct content into a fresh
//! stream on a loopback peer, through the fault proxy:
//! - {SIGINT, SIGTERM, SIGHUP} × {while reading, while draining} × {kinesalite,
//!   kinesis-mock}. While reading: the input is a pipe the harness writes slowly,
//!   and the signal comes at a seeded moment inside the writing. While draining:
//!   the input is a file read at once, the proxy's capped uplink makes the records
//!   drain for several seconds, and the signal comes at a seeded moment of the
//!   drain. The summary's `reading_finished` says which phase the signal landed in;
//!   a cell that missed its phase is run again at another moment (twice at most).
//! - Output: stderr closed, stdout closed, stderr on `/dev/full`, with `-v
//!   --progress` (something is written before the end), no signal, over kinesalite.
//!
//! Every run is then checked: the exit code, the `--summary-json` numbers adding
//! up, and every line read accounted for exactly once: the stream read back as a
//! KCL consumer reads it, and the `--failed` file (whole JSON lines, no line twice,
//! a line both there and stored only when it says `MayHaveBeenStored`, lines stored
//! twice covered by `possibly_stored_twice`).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kpl_codec::SplitMix64;
use kpl_tests::kinesis::Kinesis;
use kpl_tests::proxy::{Faults, Proxy};
use serde_json::Value;

use crate::peer::{self, KinesisMock};
use crate::util::{step, target_dir};

/// Bytes of each input line (without its newline).
const LINE_BYTES: usize = 100;
/// How long the harness writes the pipe of a reading cell.
const READ_SECONDS: f64 = 3.0;
/// Batches the pipe is written in over [`READ_SECONDS`].
const READ_BATCHES: u64 = 30;
/// How long the records of a draining cell take over the capped link.
const DRAIN_SECONDS: f64 = 6.0;
/// Shards of each run's stream.
const SHARDS: u32 = 2;
/// The grace given to the draining cells on kinesis-mock (short, so that what the
/// grace cannot settle goes to the failed file); kinesalite's use the default.
const SHORT_GRACE_MS: u64 = 1_500;
/// `kpl put`'s default grace after a signal, when its help does not say.
const DEFAULT_GRACE_MS: u64 = 8_000;
/// Longest a run may take before it is killed and counted as hung.
const RUN_DEADLINE: Duration = Duration::from_secs(90);
/// Runs of a cell whose signal missed its phase, beyond the first.
const PHASE_RETRIES: u32 = 2;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PeerKind {
    Kinesalite,
    KinesisMock,
}

impl PeerKind {
    fn name(self) -> &'static str {
        match self {
            PeerKind::Kinesalite => "kinesalite",
            PeerKind::KinesisMock => "kinesis-mock",
        }
    }

    /// Lines per run: kinesis-mock stores about 1,600 records a second.
    fn lines(self) -> u64 {
        match self {
            PeerKind::Kinesalite => 3_000,
            PeerKind::KinesisMock => 2_000,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Signal {
    Int,
    Term,
    Hup,
}

impl Signal {
    fn number(self) -> i32 {
        match self {
            Signal::Int => 2,
            Signal::Term => 15,
            Signal::Hup => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Signal::Int => "sigint",
            Signal::Term => "sigterm",
            Signal::Hup => "sighup",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Reading,
    Draining,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Reading => "reading",
            Phase::Draining => "draining",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Output {
    StderrClosed,
    StdoutClosed,
    StderrFull,
}

impl Output {
    fn name(self) -> &'static str {
        match self {
            Output::StderrClosed => "stderr-closed",
            Output::StdoutClosed => "stdout-closed",
            Output::StderrFull => "stderr-full",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    Signal(Signal, Phase),
    Output(Output),
}

#[derive(Clone, Copy, Debug)]
struct Cell {
    case: Case,
    peer: PeerKind,
}

impl Cell {
    fn name(&self) -> String {
        match self.case {
            Case::Signal(s, p) => format!("{}-{}-{}", s.name(), p.name(), self.peer.name()),
            Case::Output(o) => o.name().to_owned(),
        }
    }
}

/// Every cell, kinesalite's first (each peer is started once).
fn cells() -> Vec<Cell> {
    let mut v = Vec::new();
    for peer in [PeerKind::Kinesalite, PeerKind::KinesisMock] {
        for phase in [Phase::Reading, Phase::Draining] {
            for signal in [Signal::Int, Signal::Term, Signal::Hup] {
                v.push(Cell {
                    case: Case::Signal(signal, phase),
                    peer,
                });
            }
        }
        if peer == PeerKind::Kinesalite {
            for output in [
                Output::StderrClosed,
                Output::StdoutClosed,
                Output::StderrFull,
            ] {
                v.push(Cell {
                    case: Case::Output(output),
                    peer,
                });
            }
        }
    }
    v
}

/// What the matrix is asked to run.
pub(crate) struct Options {
    /// The seed of every moment; from the clock when not given.
    pub(crate) seed: Option<u64>,
    pub(crate) runs_per_cell: u32,
    /// One cell only, by name.
    pub(crate) cell: Option<String>,
    /// The `kpl` binary; built (release) when not given.
    pub(crate) kpl: Option<PathBuf>,
}

/// What this `kpl put` offers (older builds lack the flags the matrix prefers).
#[derive(Clone, Copy, Debug)]
struct Offers {
    summary_json: bool,
    /// `--signal-grace`, with its default in milliseconds.
    signal_grace: Option<u64>,
    progress: bool,
}

fn offers(kpl: &Path) -> Result<Offers> {
    let out = Command::new(kpl)
        .args(["put", "--help"])
        .output()
        .with_context(|| format!("cannot run {}", kpl.display()))?;
    let help = String::from_utf8_lossy(&out.stdout);
    Ok(Offers {
        summary_json: help.contains("--summary-json"),
        signal_grace: help.split_once("--signal-grace").map(|(_, after)| {
            after
                .split_once("[default: ")
                .and_then(|(_, d)| d.split(']').next()?.trim().parse().ok())
                .unwrap_or(DEFAULT_GRACE_MS)
        }),
        progress: help.contains("--progress"),
    })
}

/// The content of line `n` of a run: distinct per line and per seed.
fn line_text(n: u64, seed: u64) -> String {
    let mut line = format!("line-{n}-{seed}-");
    while line.len() < LINE_BYTES {
        line.push('.');
    }
    line
}

/// The line number of a record of this run, if it is one.
fn line_number(data: &[u8], seed: u64) -> Option<u64> {
    let text = std::str::from_utf8(data).ok()?;
    let mut parts = text.split('-');
    (parts.next()? == "line").then_some(())?;
    let n: u64 = parts.next()?.parse().ok()?;
    (parts.next()?.parse::<u64>().ok()? == seed).then_some(())?;
    (line_text(n, seed) == text).then_some(n)
}

/// The numbers of a run's summary.
#[derive(Debug, Default, Clone)]
struct Summary {
    /// Where they came from: "summary-json", or "none" (no whole summary).
    source: &'static str,
    sent: u64,
    acknowledged: u64,
    failed: u64,
    invalid: u64,
    not_sent: u64,
    possibly_stored_twice: u64,
    failed_but_possibly_stored: u64,
    reading_finished: Option<bool>,
    signal: Option<i64>,
    exit_code: Option<i64>,
}

impl Summary {
    fn read(&self) -> u64 {
        self.sent + self.invalid + self.not_sent
    }

    fn from_json(v: &Value) -> Result<Summary> {
        let s = kpl_tests::kpl::Summary::from_json(v)?;
        Ok(Summary {
            source: "summary-json",
            sent: s.sent,
            acknowledged: s.acknowledged,
            failed: s.failed,
            invalid: s.invalid,
            not_sent: s.not_sent,
            possibly_stored_twice: s.possibly_stored_twice,
            failed_but_possibly_stored: s.failed_but_possibly_stored,
            reading_finished: Some(s.reading_finished),
            signal: s.signal,
            exit_code: Some(s.exit_code),
        })
    }
}

/// One run of a cell.
struct Run {
    cell: String,
    /// Which run of the cell (of --runs-per-cell), and which attempt at its phase.
    run: u32,
    attempt: u32,
    /// Seconds after the start the signal was sent.
    moment: Option<f64>,
    /// The phase the signal landed in, and how that is known.
    landed: Option<(Phase, &'static str)>,
    exit: String,
    seconds: f64,
    /// Seconds from the signal to the exit.
    settle: Option<f64>,
    summary: Summary,
    lines_offered: u64,
    in_failed: u64,
    stored: u64,
    stored_twice: u64,
    problems: Vec<String>,
}

/// Everything a run needs that does not change between runs.
struct Setup<'a> {
    kpl: &'a Path,
    offers: Offers,
    dir: PathBuf,
    seed: u64,
}

fn exit_text(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("{c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => format!("{status}"),
    }
}

/// A seeded generator for one attempt of one run of one cell.
fn rng_for(seed: u64, cell: &str, run: u32, attempt: u32) -> SplitMix64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in cell.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    SplitMix64::new(SplitMix64::mix(
        seed ^ h ^ (u64::from(run) << 40) ^ (u64::from(attempt) << 20),
    ))
}

fn run_cell(
    ctx: &Setup<'_>,
    cell: &Cell,
    peer: &KinesisMock,
    run: u32,
    attempt: u32,
) -> Result<Run> {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let k = RUNS.fetch_add(1, Ordering::Relaxed);
    let name = cell.name();
    let mut rng = rng_for(ctx.seed, &name, run, attempt);
    let lines = cell.peer.lines();
    let stream = format!("signals-{name}-{}-{k}", std::process::id());
    peer.create_stream(&stream, SHARDS)?;
    let proxy = Proxy::start(&peer.endpoint, rng.next_u64())?;
    let base = ctx.dir.join(format!("{name}-{k}"));
    let failed = base.with_extension("failed.jsonl");
    let summary_path = base.with_extension("summary.json");
    let log = base.with_extension("log");
    let input = base.with_extension("txt");
    for f in [&failed, &summary_path, &log] {
        let _ = std::fs::remove_file(f);
    }
    // A link that makes the whole input take DRAIN_SECONDS: about 200 bytes a line
    // go up (base64, key, aggregation and request overhead), measured.
    let capped = Some((lines as f64 * 200.0 / DRAIN_SECONDS) as u64);
    let (uplink, from_pipe) = match cell.case {
        Case::Signal(_, Phase::Reading) => (None, true),
        Case::Signal(_, Phase::Draining) => (capped, false),
        // A shorter run: long enough for progress lines and logs.
        Case::Output(_) => (capped.map(|c| c * 2), false),
    };
    proxy.set(Faults {
        uplink_bytes_per_second: uplink,
        ..Faults::default()
    });
    if !from_pipe {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
        for n in 1..=lines {
            writeln!(f, "{}", line_text(n, ctx.seed))?;
        }
        f.flush()?;
    }
    let mut cmd = kpl_tests::kpl::command(ctx.kpl);
    cmd.args(["put", "--stream", &stream, "--endpoint", &proxy.endpoint])
        .args(["--region", "us-east-1", "--failed"])
        .arg(&failed);
    if ctx.offers.summary_json {
        cmd.arg("--summary-json").arg(&summary_path);
    }
    // An older kpl settles within --shutdown-timeout (30 s by default).
    let mut grace = ctx.offers.signal_grace.unwrap_or(30_000);
    if ctx.offers.signal_grace.is_some()
        && matches!(cell.case, Case::Signal(_, Phase::Draining))
        && cell.peer == PeerKind::KinesisMock
    {
        grace = SHORT_GRACE_MS;
        cmd.arg(format!("--signal-grace={grace}"));
    }
    if let Case::Output(_) = cell.case {
        cmd.arg("-v");
        if ctx.offers.progress {
            cmd.arg("--progress");
        }
    }
    if !from_pipe {
        cmd.arg(&input);
    }
    cmd.stdin(if from_pipe {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(match cell.case {
        Case::Output(Output::StdoutClosed) => Stdio::piped(),
        _ => Stdio::null(),
    });
    cmd.stderr(match cell.case {
        Case::Output(Output::StderrFull) => Stdio::from(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .context("cannot open /dev/full")?,
        ),
        _ => Stdio::piped(),
    });
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", ctx.kpl.display()))?;
    // The read ends the harness closes at once.
    if let Case::Output(Output::StdoutClosed) = cell.case {
        drop(child.stdout.take());
    }
    if let Case::Output(Output::StderrClosed) = cell.case {
        drop(child.stderr.take());
    }
    let collector = child.stderr.take().map(|mut stderr| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    });
    // The slow writer of a reading cell's pipe.
    let written = Arc::new(AtomicU64::new(if from_pipe { 0 } else { lines }));
    let writing_done = Arc::new(AtomicBool::new(!from_pipe));
    let writer = child.stdin.take().map(|mut stdin| {
        let (written, done, seed) = (written.clone(), writing_done.clone(), ctx.seed);
        std::thread::spawn(move || {
            let per = lines.div_ceil(READ_BATCHES);
            for b in 0..READ_BATCHES {
                let due = started
                    + Duration::from_secs_f64(READ_SECONDS * b as f64 / READ_BATCHES as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let first = b * per + 1;
                let last = ((b + 1) * per).min(lines);
                let mut text = String::new();
                for n in first..=last {
                    let _ = writeln!(text, "{}", line_text(n, seed));
                }
                if stdin.write_all(text.as_bytes()).is_err() {
                    return;
                }
                written.store(last, Ordering::Relaxed);
            }
            done.store(true, Ordering::Relaxed);
            // Dropping stdin ends the input.
        })
    });
    // The signal, at a seeded moment of its phase.
    let mut moment = None;
    let mut harness_phase = None;
    if let Case::Signal(signal, phase) = cell.case {
        let (lo, hi) = match phase {
            Phase::Reading => (0.4, READ_SECONDS - 0.4),
            // The file is read within a fraction of a second; the drain lasts
            // about DRAIN_SECONDS from the start (a little less: the estimate of
            // the bytes per line is generous), so the window ends well before.
            Phase::Draining => (1.0, DRAIN_SECONDS - 2.0),
        };
        let at = lo + (hi - lo) * rng.unit();
        let due = started + Duration::from_secs_f64(at);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        harness_phase = Some(if writing_done.load(Ordering::Relaxed) {
            Phase::Draining
        } else {
            Phase::Reading
        });
        if child.try_wait()?.is_none() {
            kpl_tests::kpl::signal(child.id(), &signal.number().to_string())?;
            moment = Some(started.elapsed().as_secs_f64());
        } else {
            // Too late for any phase: the run ended first.
            harness_phase = None;
        }
    }
    let deadline = started + RUN_DEADLINE;
    let mut problems = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait()?;
            problems.push(format!(
                "kpl put did not exit within {} s (killed)",
                RUN_DEADLINE.as_secs()
            ));
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let seconds = started.elapsed().as_secs_f64();
    let settle = moment.map(|m| seconds - m);
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stderr = collector
        .map(|c| c.join().unwrap_or_default())
        .unwrap_or_default();
    std::fs::write(&log, &stderr)?;
    let lines_offered = written.load(Ordering::Relaxed);
    let exit = exit_text(status);

    // The summary.
    let summary = if ctx.offers.summary_json {
        match std::fs::read_to_string(&summary_path) {
            Ok(text) => match serde_json::from_str::<Value>(&text)
                .map_err(anyhow::Error::from)
                .and_then(|v| Summary::from_json(&v))
            {
                Ok(s) => s,
                Err(e) => {
                    problems.push(format!("--summary-json is not a whole summary: {e}"));
                    Summary {
                        source: "none",
                        ..Summary::default()
                    }
                }
            },
            Err(e) => {
                problems.push(format!("no --summary-json file: {e}"));
                Summary {
                    source: "none",
                    ..Summary::default()
                }
            }
        }
    } else {
        problems.push("this kpl put has no --summary-json".into());
        Summary {
            source: "none",
            ..Summary::default()
        }
    };

    // The phase the signal landed in (none: the run ended before it).
    let landed = match (cell.case, summary.reading_finished, harness_phase) {
        (Case::Signal(..), _, None) => None,
        (Case::Signal(..), Some(finished), _) => Some((
            if finished {
                Phase::Draining
            } else {
                Phase::Reading
            },
            "reading_finished",
        )),
        (Case::Signal(..), None, Some(p)) => Some((p, "the harness's writer")),
        _ => None,
    };

    // The exit code.
    let code = status.code();
    match cell.case {
        Case::Signal(signal, _) => {
            let want = 128 + signal.number();
            if code != Some(want) {
                problems.push(format!("exit {exit}, expected {want} (128 + signal)"));
            }
            if summary.source == "summary-json"
                && summary.signal != Some(i64::from(signal.number()))
            {
                problems.push(format!(
                    "summary-json says signal {:?}, expected {}",
                    summary.signal,
                    signal.number()
                ));
            }
            if let Some(s) = settle.filter(|&s| s > grace as f64 / 1000.0 + 5.0) {
                problems.push(format!(
                    "exited {s:.1} s after the signal: the grace is {grace} ms"
                ));
            }
        }
        Case::Output(Output::StderrClosed | Output::StderrFull) => {
            if code == Some(0) || code.is_none() || code == Some(101) {
                problems.push(format!(
                    "exit {exit}, expected a non-zero exit (messages were lost), no panic"
                ));
            }
        }
        Case::Output(Output::StdoutClosed) => {
            // kpl put writes nothing on standard output: nothing is lost there.
            if code != Some(0) {
                problems.push(format!(
                    "exit {exit}, expected 0 (kpl put writes nothing on stdout)"
                ));
            }
        }
    }
    if let (Some(said), Some(code)) = (summary.exit_code, code)
        && said != i64::from(code)
    {
        problems.push(format!(
            "summary-json says exit {said}, the process exited {code}"
        ));
    }
    if let Case::Output(_) = cell.case {
        if summary.source == "summary-json" && summary.signal.is_some() {
            problems.push(format!(
                "summary-json says signal {:?}, none was sent",
                summary.signal
            ));
        }
        if matches!(cell.case, Case::Output(Output::StdoutClosed)) && !stderr.contains(" sent, ") {
            problems.push("no summary on stderr".into());
        }
    }

    // The failed file: whole JSON lines, each a line of this run, none twice.
    let mut in_failed: HashMap<u64, (String, bool)> = HashMap::new();
    let mut maybe_stored_in_failed = 0u64;
    let mut partial = 0u64;
    let raw = std::fs::read(&failed).unwrap_or_default();
    if !raw.is_empty() && raw.last() != Some(&b'\n') {
        problems.push("the failed file ends inside a line (torn)".into());
    }
    for (i, text) in raw.split(|&b| b == b'\n').enumerate() {
        if text.is_empty() {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(text) else {
            problems.push(format!(
                "failed file line {} is not whole JSON (torn)",
                i + 1
            ));
            continue;
        };
        let (Some(n), Some(error), Some(maybe), Some(data)) = (
            v["Line"].as_u64(),
            v["Error"].as_str(),
            v["MayHaveBeenStored"].as_bool(),
            v["Data"].as_str(),
        ) else {
            problems.push(format!("failed file line {} lacks a field: {v}", i + 1));
            continue;
        };
        let data = STANDARD.decode(data).unwrap_or_default();
        let expected = line_text(n, ctx.seed);
        if data != expected.as_bytes() {
            // A line cut by the signal while it was read: its bytes so far.
            if error == "NotSent" && !data.is_empty() && expected.as_bytes().starts_with(&data) {
                partial += 1;
            } else {
                problems.push(format!(
                    "failed file line {}: Data is not line {n}'s content",
                    i + 1
                ));
            }
        }
        if v["Source"].as_str().is_none() || v["Attempts"].as_array().is_none() {
            problems.push(format!("failed file line {}: no Source or Attempts", i + 1));
        }
        maybe_stored_in_failed += u64::from(maybe);
        if in_failed.insert(n, (error.to_owned(), maybe)).is_some() {
            problems.push(format!("line {n} is in the failed file twice"));
        }
    }

    // The stream, as a consumer reads it.
    let mut copies: HashMap<u64, u32> = HashMap::new();
    let mut foreign = 0u64;
    for data in Kinesis::new(&peer.endpoint).read_back(&stream)?.records {
        match line_number(&data, ctx.seed) {
            Some(n) => *copies.entry(n).or_default() += 1,
            None => foreign += 1,
        }
    }
    if foreign > 0 {
        problems.push(format!(
            "{foreign} records in the stream are no line of this run"
        ));
    }
    let stored = copies.len() as u64;
    let stored_twice = copies.values().filter(|&&c| c > 1).count() as u64;

    // How many lines kpl put read: from its summary, else at least every line seen.
    let seen_max = copies
        .keys()
        .chain(in_failed.keys())
        .copied()
        .max()
        .unwrap_or(0);
    let read = if summary.source == "none" {
        if from_pipe { seen_max } else { lines }
    } else {
        summary.read()
    };
    let s = &summary;
    if s.source != "none" {
        if s.acknowledged + s.failed != s.sent {
            problems.push(format!(
                "acknowledged {} + failed {} != sent {}",
                s.acknowledged, s.failed, s.sent
            ));
        }
        if s.invalid != 0 {
            problems.push(format!("{} lines invalid (every line is valid)", s.invalid));
        }
        if read > lines_offered {
            problems.push(format!(
                "sent + invalid + not_sent = {read}, more than the {lines_offered} lines given"
            ));
        }
        if s.reading_finished == Some(true) && read != lines_offered {
            problems.push(format!(
                "reading finished, yet sent + invalid + not_sent = {read} of {lines_offered} lines"
            ));
        }
        if in_failed.len() as u64 != s.failed + s.invalid + s.not_sent {
            problems.push(format!(
                "{} lines in the failed file, the summary says failed {} + invalid {} + not sent {}",
                in_failed.len(),
                s.failed,
                s.invalid,
                s.not_sent
            ));
        }
        if maybe_stored_in_failed != s.failed_but_possibly_stored {
            problems.push(format!(
                "{maybe_stored_in_failed} failed lines say MayHaveBeenStored, the summary says {}",
                s.failed_but_possibly_stored
            ));
        }
        if stored_twice > s.possibly_stored_twice {
            problems.push(format!(
                "{stored_twice} lines stored twice, {} reported possibly stored twice",
                s.possibly_stored_twice
            ));
        }
        let acknowledged = copies.keys().filter(|n| !in_failed.contains_key(n)).count() as u64;
        if acknowledged != s.acknowledged {
            problems.push(format!(
                "{acknowledged} lines stored and not in the failed file, {} acknowledged",
                s.acknowledged
            ));
        }
    }
    // Every line read: stored, or in the failed file; both only when it says it may
    // have been stored; nothing beyond what was read.
    let mut lost = Vec::new();
    let mut both = Vec::new();
    for n in 1..=read {
        let stored = copies.contains_key(&n);
        match in_failed.get(&n) {
            None if !stored => lost.push(n),
            Some((error, false)) if stored => both.push(format!("{n} ({error})")),
            _ => {}
        }
    }
    if !lost.is_empty() {
        problems.push(format!(
            "{} lines read are neither stored nor in the failed file (first: {:?})",
            lost.len(),
            &lost[..lost.len().min(5)]
        ));
    }
    if !both.is_empty() {
        problems.push(format!(
            "{} lines are stored and in the failed file without MayHaveBeenStored (first: {:?})",
            both.len(),
            &both[..both.len().min(5)]
        ));
    }
    let beyond: HashSet<u64> = copies
        .keys()
        .chain(in_failed.keys())
        .copied()
        .filter(|&n| n == 0 || n > read)
        .collect();
    if !beyond.is_empty() {
        problems.push(format!(
            "{} lines beyond the {read} read are stored or in the failed file",
            beyond.len()
        ));
    }
    if partial > 0 {
        println!("  note: {partial} partial lines (NotSent) in the failed file");
    }
    if !problems.is_empty() {
        problems.push(format!("kpl put's stderr: {}", log.display()));
    }
    Ok(Run {
        cell: name,
        run,
        attempt,
        moment,
        landed,
        exit,
        seconds,
        settle,
        summary,
        lines_offered,
        in_failed: in_failed.len() as u64,
        stored,
        stored_twice,
        problems,
    })
}

/// Runs the matrix (or one cell of it) and prints a table; fails if any cell broke
/// its expectations, naming the command that reproduces it.
pub(crate) fn run(options: &Options) -> Result<()> {
    let started = Instant::now();
    let seed = options.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.as_secs())
    });
    println!("signals: seed {seed} (reproduce with `cargo xtask signals --seed {seed}`)");
    let all: Vec<Cell> = cells()
        .into_iter()
        .filter(|c| options.cell.as_deref().is_none_or(|n| c.name() == n))
        .collect();
    if all.is_empty() {
        bail!(
            "no cell named {:?}; the cells: {}",
            options.cell,
            cells()
                .iter()
                .map(Cell::name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let kpl = match &options.kpl {
        Some(p) => p.clone(),
        None => crate::faults::build_kpl(true)?,
    };
    let offers = offers(&kpl)?;
    if !(offers.summary_json && offers.signal_grace.is_some() && offers.progress) {
        println!(
            "signals: {} lacks {offers:?}: runs read the summary from stderr where they can",
            kpl.display()
        );
    }
    let dir = target_dir().join("signals");
    std::fs::create_dir_all(&dir)?;
    let ctx = Setup {
        kpl: &kpl,
        offers,
        dir,
        seed,
    };
    let mut runs: Vec<Run> = Vec::new();
    for kind in [PeerKind::Kinesalite, PeerKind::KinesisMock] {
        let these: Vec<&Cell> = all.iter().filter(|c| c.peer == kind).collect();
        if these.is_empty() {
            continue;
        }
        let peer = match kind {
            PeerKind::KinesisMock => peer::start_kinesis_mock()?,
            PeerKind::Kinesalite => peer::start_kinesalite("unused", 1)?,
        };
        for cell in these {
            for r in 0..options.runs_per_cell.max(1) {
                for attempt in 0..=PHASE_RETRIES {
                    step(&format!(
                        "signals: {} (run {r}, attempt {attempt})",
                        cell.name()
                    ));
                    let run = run_cell(&ctx, cell, &peer, r, attempt)?;
                    print_run(&run);
                    let missed = match (cell.case, run.landed) {
                        (Case::Signal(_, want), Some((got, _))) => want != got,
                        (Case::Signal(..), None) => true,
                        (Case::Output(_), _) => false,
                    };
                    let last = attempt == PHASE_RETRIES;
                    if missed && !last {
                        println!("  the signal missed its phase: again at another moment");
                        continue;
                    }
                    let mut run = run;
                    if missed {
                        run.problems.push(format!(
                            "the signal missed its phase in {} attempts",
                            PHASE_RETRIES + 1
                        ));
                    }
                    runs.push(run);
                    break;
                }
            }
        }
    }
    println!(
        "\n| cell | exit | signal at | landed in | settled after | lines read | acknowledged | failed | not sent | in --failed | stored (consumer view) | stored twice | reported twice | seconds | verdict |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &runs {
        let s = &r.summary;
        println!(
            "| {} | {} | {} | {} | {} | {} of {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
            r.cell,
            r.exit,
            r.moment.map_or("-".into(), |m| format!("{m:.2} s")),
            r.landed.map_or("-".into(), |(p, _)| p.name().to_owned()),
            r.settle.map_or("-".into(), |m| format!("{m:.1} s")),
            if s.source == "none" {
                "?".into()
            } else {
                s.read().to_string()
            },
            r.lines_offered,
            s.acknowledged,
            s.failed,
            s.not_sent,
            r.in_failed,
            r.stored,
            r.stored_twice,
            s.possibly_stored_twice,
            r.seconds,
            if r.problems.is_empty() {
                "ok".to_owned()
            } else {
                format!("FAILED ({} problems)", r.problems.len())
            },
        );
    }
    let bad: Vec<&Run> = runs.iter().filter(|r| !r.problems.is_empty()).collect();
    println!(
        "\nsignals: {} runs in {:.0} s, seed {seed}",
        runs.len(),
        started.elapsed().as_secs_f64()
    );
    if !bad.is_empty() {
        let binary = options
            .kpl
            .as_ref()
            .map_or_else(String::new, |p| format!(" --kpl {}", p.display()));
        for r in &bad {
            let runs = if r.run > 0 {
                format!(" --runs-per-cell {}", r.run + 1)
            } else {
                String::new()
            };
            println!(
                "\nFAILED {} (run {}, attempt {}, seed {seed}): reproduce with `cargo xtask signals --seed {seed} --cell {}{runs}{binary}`",
                r.cell, r.run, r.attempt, r.cell
            );
            for p in &r.problems {
                println!("  - {p}");
            }
        }
        bail!(
            "{} of {} signal and output cells broke their expectations (seed {seed}): {}",
            bad.len(),
            runs.len(),
            bad.iter()
                .map(|r| r.cell.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("signals: every cell clean");
    Ok(())
}

fn print_run(r: &Run) {
    let s = &r.summary;
    println!(
        "{} attempt {}: exit {}, signal at {}, landed in {}, {:.1} s; summary ({}): read {}, sent {}, acknowledged {}, failed {}, not sent {}, possibly twice {}, failed but possibly stored {}; {} in --failed, {} stored, {} stored twice",
        r.cell,
        r.attempt,
        r.exit,
        r.moment.map_or("-".into(), |m| format!("{m:.2} s")),
        r.landed
            .map_or("-".into(), |(p, how)| format!("{} (by {how})", p.name())),
        r.seconds,
        s.source,
        s.read(),
        s.sent,
        s.acknowledged,
        s.failed,
        s.not_sent,
        s.possibly_stored_twice,
        s.failed_but_possibly_stored,
        r.in_failed,
        r.stored,
        r.stored_twice
    );
    for p in &r.problems {
        println!("  PROBLEM: {p}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_recognised_by_its_number_and_seed_only() {
        let text = line_text(42, 7);
        assert_eq!(text.len(), LINE_BYTES);
        assert_eq!(line_number(text.as_bytes(), 7), Some(42));
        assert_eq!(line_number(text.as_bytes(), 8), None);
        assert_eq!(line_number(&text.as_bytes()[..50], 7), None);
        assert_eq!(line_number(b"faults-00000042 ....", 7), None);
    }

    #[test]
    fn every_cell_has_a_distinct_name() {
        let names: HashSet<String> = cells().iter().map(Cell::name).collect();
        assert_eq!(names.len(), cells().len());
        assert_eq!(cells().len(), 15);
    }
}

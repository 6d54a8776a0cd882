//! `kpl put`: lines or JSON lines from a shell into a stream.
//!
//! Nothing read is lost: every input is opened before anything is sent; every line
//! read ends stored, or in the failed file (or on standard error when that file
//! cannot be written) as a whole JSON line, written as its record fails. SIGINT and
//! SIGTERM stop the reading, settle what was accepted within `--shutdown-timeout`
//! (a second signal cuts that short) and print the usual summary.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use bytes::Bytes;
use kpl::runtime::{Runtime, SplitMix64};
use kpl::transport::{ErrorKind, Proxy};
use kpl::{Outcomes, Producer, PutRecord, RecordId, RecordResult};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::input::BASE64;
use crate::pick::{Field, pick};
use crate::settings::ProducerArgs;

/// Records outstanding before reading pauses, unless set (memory stays bounded).
const DEFAULT_MAX_OUTSTANDING_RECORDS: usize = 100_000;
/// Bytes outstanding before reading pauses, unless set.
const DEFAULT_MAX_OUTSTANDING_BYTES: usize = 64 << 20;
/// Exit code after SIGINT (128 + 2), as shells use.
const EXIT_SIGINT: u8 = 130;
/// Exit code after SIGTERM (128 + 15).
const EXIT_SIGTERM: u8 = 143;
/// How long the credentials chain is given at start to say it has no source.
const CREDENTIALS_CHECK_WAIT: Duration = Duration::from_secs(5);
/// Exit code after SIGHUP (128 + 1).
const EXIT_SIGHUP: u8 = 129;
/// Default of `--signal-grace`: with the second that failing what is left takes, a
/// run ends before a container's SIGKILL (10 s after SIGTERM in Docker).
const DEFAULT_SIGNAL_GRACE_MS: u64 = 7_000;
/// Longest wait for the requests in flight once what is buffered was failed, after a
/// signal (what is still in flight then is reported as possibly stored).
const IN_FLIGHT_WAIT_AFTER_SIGNAL: Duration = Duration::from_secs(1);
/// Longest wait for the requests in flight once what is buffered was failed, at the
/// end of the input (a request's timeout).
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(6);

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Format {
    /// One record per line; its data is the line's bytes, as read, without the
    /// newline.
    #[default]
    Lines,
    /// One JSON object per line (UTF-8).
    Json,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["stream", "stream_arn"])))]
pub(crate) struct Args {
    /// The stream's name.
    #[arg(long)]
    stream: Option<String>,
    /// The stream's ARN (any account the credentials may write to).
    #[arg(long)]
    stream_arn: Option<String>,
    /// How input is read.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// With --format json: the field holding the partition key.
    #[arg(long, value_name = "NAME")]
    pk_field: Option<String>,
    /// With --format json: the string field whose UTF-8 bytes are the data (default:
    /// the whole line).
    #[arg(long, value_name = "NAME")]
    data_field: Option<String>,
    /// One partition key for every record.
    #[arg(long, value_name = "KEY", conflicts_with = "random_pk")]
    partition_key: Option<String>,
    /// A random partition key per record (the default when no key is named).
    #[arg(long)]
    random_pk: bool,
    /// Endpoint URL (kinesis-mock, kinesalite, a VPC endpoint).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// AWS region (default: the AWS chain's).
    #[arg(long)]
    region: Option<String>,
    /// An HTTP proxy for the requests (`http://[user:password@]host:port`); CONNECT
    /// tunnels for https endpoints. Default: the KPL `Proxy*` keys of
    /// --kpl-properties, else `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY`.
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
    /// A PEM file of CA certificates to trust beside the system's (a private CA).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// The HTTP client: the AWS SDK's on tokio, or kpl-rs's own on async-io.
    #[arg(long, value_enum, default_value_t)]
    http_client: HttpClient,
    /// Where lines that were not stored are written, as they fail (JSON lines with
    /// the source, line, key, data and attempts). It must not be an input.
    #[arg(long, value_name = "FILE")]
    failed: Option<PathBuf>,
    /// Add to an existing --failed file instead of refusing it (whole lines, safe
    /// with another run writing to it at the same time).
    #[arg(long, requires = "failed", conflicts_with = "overwrite_failed")]
    append_failed: bool,
    /// Replace an existing --failed file instead of refusing it.
    #[arg(long, requires = "failed")]
    overwrite_failed: bool,
    /// Where to write the run's summary as one JSON object at the end (counts, seconds,
    /// the signal that stopped it, whether the whole input was read).
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// After the input ends, how long to wait for outstanding records before failing
    /// what is still not stored (milliseconds; 0: fail at once whatever is not
    /// stored when the input ends).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    shutdown_timeout: u64,
    /// After SIGINT, SIGTERM or SIGHUP, how long to wait for outstanding records
    /// before failing what is still not stored (milliseconds, at most
    /// --shutdown-timeout). The default fits in a container's stop (SIGKILL 10 s after
    /// SIGTERM): the run ends within this plus about a second. A second signal cuts
    /// it short.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_SIGNAL_GRACE_MS)]
    signal_grace: u64,
    /// Print a progress line each second until the last record settles, also when
    /// standard error is not a terminal (on a terminal it is on by default).
    #[arg(long, conflicts_with = "quiet")]
    progress: bool,
    /// Hide the progress line.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    producer: ProducerArgs,
    /// Input files; standard input when none.
    files: Vec<PathBuf>,
}

/// A line read, not yet settled: a slice of the buffer its chunk was read into
/// (a line costs no allocation of its own; the producer copies it into the buffer
/// its put's records share, or keeps it as it is if over 4 KiB).
struct Line {
    source: u32,
    number: u64,
    bytes: Bytes,
    /// The length of a line longer than the largest record (its bytes were not kept).
    too_long: Option<u64>,
}

/// What the reader thread hands over.
enum Chunk {
    Lines(Vec<Line>),
    /// Reading stopped: the input that failed, the line it was reading, why.
    Error(u32, u64, std::io::Error),
}

/// An accepted record waiting for its outcome.
struct Pending {
    id: RecordId,
    source: u32,
    line: u64,
    partition_key: String,
    data: Bytes,
    /// Its outcome, once it came (records are reported in input order).
    result: Option<Outcome>,
}

/// What is kept of an outcome until its record is reported: little for a stored one.
enum Outcome {
    Stored { duplicated: bool },
    Failed(Box<RecordResult>),
}

#[derive(Default)]
struct Tally {
    sent: u64,
    acknowledged: u64,
    failed: u64,
    invalid: u64,
    not_sent: u64,
    /// Stored, and maybe stored twice (an earlier attempt had no answer).
    duplicated: u64,
    /// Failed, and maybe stored all the same.
    maybe_stored: u64,
    by_code: BTreeMap<String, u64>,
    /// The last message of each error code (for the summary).
    last_message: BTreeMap<String, String>,
    /// Of records that expired: the last error of each code their attempts met
    /// before (a credential error, a refused connection), so the summary says why
    /// they expired.
    before_expiry: BTreeMap<String, String>,
}

/// The failed-records file, written a whole line at a time as records fail (no
/// buffer that a later error could lose); standard error once it cannot be written.
///
/// It is opened for appending and each line is written under an exclusive lock, so
/// another run writing to the same file never tears a line; a write that fails half
/// way (a full disk, a file-size limit) is cut back, so the file holds whole lines
/// only.
struct FailedFile {
    path: Option<PathBuf>,
    writer: Option<File>,
    broken: bool,
}

/// What to do with a `--failed` file that exists and is not empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Existing {
    Refuse,
    Append,
    Overwrite,
}

impl FailedFile {
    /// Opens (creates) the file; an existing non-empty one is refused unless the user
    /// asked to append or overwrite. Never truncates a file it then refuses.
    fn open(path: &Path, existing: Existing) -> anyhow::Result<File> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_file() && meta.len() > 0 {
            match existing {
                Existing::Refuse => anyhow::bail!(
                    "--failed {} exists and is not empty ({} bytes): give --append-failed to add to it, --overwrite-failed to replace it, or another file",
                    path.display(),
                    meta.len()
                ),
                Existing::Append => {}
                Existing::Overwrite => {
                    file.lock()
                        .and_then(|()| file.set_len(0))
                        .with_context(|| format!("cannot empty {}", path.display()))?;
                    let _ = file.unlock();
                }
            }
        }
        Ok(file)
    }

    fn write(&mut self, value: &Value) {
        let line = format!("{value}\n");
        if let (Some(w), false) = (&mut self.writer, self.broken) {
            match write_whole_line(w, line.as_bytes()) {
                Ok(()) => return,
                Err(e) => self.fail(&e),
            }
        }
        if self.path.is_some() {
            crate::out::write_stderr(line.as_bytes());
        }
    }

    fn fail(&mut self, e: &std::io::Error) {
        self.broken = true;
        let path = self
            .path
            .as_deref()
            .map_or_else(|| "?".to_owned(), |p| p.display().to_string());
        crate::say!(
            "kpl put: cannot write {path}: {e}; the failed records that follow go to standard error"
        );
    }
}

/// Appends one line to a file under an exclusive lock; a write that fails part way
/// is cut back to where the line started. On what cannot be locked or cut (a pipe,
/// a terminal) it is a plain write.
fn write_whole_line(file: &mut File, line: &[u8]) -> std::io::Result<()> {
    let regular = file.metadata().is_ok_and(|m| m.is_file());
    if !regular {
        return file.write_all(line);
    }
    let locked = file.lock().is_ok();
    let start = file.metadata().map(|m| m.len());
    let result = file.write_all(line);
    if result.is_err()
        && let Ok(start) = start
    {
        let _ = file.set_len(start);
    }
    if locked {
        let _ = file.unlock();
    }
    result
}

/// Attempts written in full for a failed record: the first and the last few (the
/// failed file grows with the input, not with retries).
const ATTEMPTS_KEPT_LAST: usize = 3;

/// A failed record's attempts as written to the failed file: the first and the last
/// [`ATTEMPTS_KEPT_LAST`], with the number left out between them; an error message
/// that repeats the one before it is written as null.
fn attempts_json(r: &RecordResult) -> (Value, usize) {
    let n = r.attempts.len();
    let omitted = n.saturating_sub(1 + ATTEMPTS_KEPT_LAST);
    let mut previous: Option<&str> = None;
    let kept = r
        .attempts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i == 0 || *i + ATTEMPTS_KEPT_LAST >= n)
        .map(|(_, a)| {
            let error = a.error();
            let message = error.map(|e| e.message.as_str());
            let repeated = message.is_some() && message == previous;
            previous = message;
            json!({
                "DelayMs": a.delay.as_secs_f64() * 1e3,
                "DurationMs": a.duration.as_secs_f64() * 1e3,
                "Success": a.is_success(),
                "ErrorCode": error.map(|e| e.code.as_str()),
                "ErrorMessage": if repeated { None } else { message },
                "ShardId": a.shard_id.as_deref(),
                "MayHaveBeenStored": a.may_have_been_stored(),
            })
        })
        .collect();
    (Value::Array(kept), omitted)
}

/// Bytes a failed file's line may take beside its record's data and key: the file
/// grows with the input, never with retries or error text.
const LINE_OVERHEAD_MAX: usize = 1000;

/// Leaves attempts out of a failed record's line (oldest first, keeping the last
/// one), then their messages, then shortens its message, until the line takes at
/// most [`LINE_OVERHEAD_MAX`] bytes beside its data and key.
fn within_line_budget(mut value: Value) -> Value {
    let own = |v: &Value| {
        let field = |k: &str| v[k].as_str().map_or(0, str::len);
        v.to_string().len() - field("Data") - field("PartitionKey")
    };
    while own(&value) > LINE_OVERHEAD_MAX {
        let attempts = value["Attempts"].as_array_mut();
        match attempts {
            Some(a) if a.len() > 1 => {
                a.remove(0);
                let omitted = value["AttemptsOmitted"].as_u64().unwrap_or(0);
                value["AttemptsOmitted"] = json!(omitted + 1);
            }
            Some(a) if a.first().is_some_and(|x| !x["ErrorMessage"].is_null()) => {
                a[0]["ErrorMessage"] = Value::Null;
            }
            _ => {
                let message = value["Message"].as_str().unwrap_or_default();
                if message.len() <= 200 {
                    break;
                }
                let mut cut = 200;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                value["Message"] = json!(format!("{}…", &message[..cut]));
            }
        }
    }
    value
}

impl Args {
    /// The partition key and data of one input line.
    fn record(&self, bytes: &Bytes, rng: &mut SplitMix64) -> Result<(String, Bytes), String> {
        let mut random = || format!("{:016x}", rng.next_u64());
        match self.format {
            Format::Lines => {
                let pk = self.partition_key.clone().unwrap_or_else(random);
                Ok((pk, bytes.clone()))
            }
            Format::Json => {
                let text = std::str::from_utf8(bytes).map_err(|e| {
                    format!("not UTF-8 (invalid byte at column {})", e.valid_up_to() + 1)
                })?;
                // Only the fields used are read; the line is not built into a tree.
                let picked = pick(text, self.pk_field.as_deref(), self.data_field.as_deref())
                    .map_err(|e| format!("not JSON: {e}"))?;
                let pk = match (&self.pk_field, &self.partition_key) {
                    (Some(field), _) => match picked.key {
                        Some(Field::Str(s)) => s.into_owned(),
                        Some(Field::Number(n)) => n.to_string(),
                        Some(Field::Other) => {
                            return Err(format!("field {field:?} is not a string or number"));
                        }
                        None => return Err(format!("no field {field:?} for the partition key")),
                    },
                    (None, Some(pk)) => pk.clone(),
                    (None, None) => random(),
                };
                let data = match &self.data_field {
                    Some(field) => match picked.data {
                        Some(Field::Str(s)) => Bytes::from(s.into_owned().into_bytes()),
                        Some(_) => return Err(format!("field {field:?} is not a string")),
                        None => return Err(format!("no field {field:?} for the data")),
                    },
                    None => bytes.clone(),
                };
                Ok((pk, data))
            }
        }
    }
}

/// A file's identity: device and inode (what a path, a symlink, a hard link or
/// `/dev/fd/N` leads to).
#[cfg(unix)]
fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// Refuses a `--failed` file that is also something the run reads: an input file,
/// standard input, the `--kpl-properties` file, a CA file. Compared by device and
/// inode, not by path.
fn check_failed_is_not_read(args: &Args, config: &kpl::Config) -> anyhow::Result<()> {
    let Some(failed) = args.failed.as_deref() else {
        return Ok(());
    };
    #[cfg(unix)]
    {
        // A failed file that does not exist yet is none of the inputs.
        let Ok(target) = std::fs::metadata(failed) else {
            return Ok(());
        };
        let target = identity(&target);
        let mut read: Vec<(String, PathBuf)> = args
            .files
            .iter()
            .map(|p| ("an input".to_owned(), p.clone()))
            .collect();
        if let Some(p) = args.producer.kpl_properties() {
            read.push(("the --kpl-properties file".into(), p.to_path_buf()));
        }
        if let Some(p) = &args.ca_file {
            read.push(("the --ca-file".into(), p.clone()));
        }
        if let Some(p) = config.ca_cert_file() {
            read.push(("the CA file of the KPL properties".into(), p.to_path_buf()));
        }
        for (what, path) in read {
            if std::fs::metadata(&path).is_ok_and(|m| identity(&m) == target) {
                anyhow::bail!(
                    "--failed {} is also {what} ({}): it would be overwritten; name another file",
                    failed.display(),
                    path.display()
                );
            }
        }
        if args.files.is_empty() {
            use std::os::fd::AsFd;
            let stdin = std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map(File::from)
                .and_then(|f| f.metadata());
            if stdin.is_ok_and(|m| m.is_file() && identity(&m) == target) {
                anyhow::bail!(
                    "--failed {} is the file on standard input: it would be overwritten; name another file",
                    failed.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    for path in &args.files {
        if let (Ok(x), Ok(y)) = (failed.canonicalize(), path.canonicalize())
            && x == y
        {
            anyhow::bail!(
                "--failed {} is also an input: it would be overwritten; name another file",
                failed.display()
            );
        }
    }
    Ok(())
}

/// Opens every input before anything is sent: a missing file or a directory stops
/// the run with nothing sent.
fn open_inputs(args: &Args) -> anyhow::Result<Vec<(String, Box<dyn Read + Send>)>> {
    if args.files.is_empty() {
        return Ok(vec![("<stdin>".into(), Box::new(std::io::stdin()))]);
    }
    let mut inputs: Vec<(String, Box<dyn Read + Send>)> = Vec::new();
    for path in &args.files {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot open {}", path.display()))?;
        if meta.is_dir() {
            anyhow::bail!("{} is a directory, not an input file", path.display());
        }
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        inputs.push((path.display().to_string(), Box::new(file)));
    }
    Ok(inputs)
}

/// Bytes of lines gathered before they are handed over, whatever their count (a
/// chunk in the channel holds at most this, plus one line).
const CHUNK_BYTES: usize = 4 << 20;
/// Lines gathered before they are handed over.
const CHUNK_LINES: usize = 4096;

/// What one bounded line read found.
#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    /// The end of the input.
    End,
    /// A line, appended to the buffer (without its newline).
    Line,
    /// A line longer than the bound: skipped to its end, nothing of it kept; its
    /// length in bytes without the newline.
    TooLong(u64),
}

/// Reads one line into `buffer`, holding at most `limit` bytes of it: a longer line
/// is read to its end and dropped (memory stays bounded whatever the input).
fn read_line_bounded(
    reader: &mut impl BufRead,
    buffer: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<LineRead> {
    let start = buffer.len();
    // Bytes of an over-long line seen so far.
    let mut skipped: Option<u64> = None;
    let mut any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                buffer.truncate(start);
                return Err(e);
            }
        };
        if available.is_empty() {
            return Ok(match (any, skipped) {
                (false, _) => LineRead::End,
                (true, Some(n)) => LineRead::TooLong(n),
                (true, None) => LineRead::Line,
            });
        }
        any = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let content = newline.unwrap_or(available.len());
        match &mut skipped {
            Some(n) => *n += content as u64,
            None if buffer.len() - start + content > limit => {
                skipped = Some((buffer.len() - start + content) as u64);
                buffer.truncate(start);
            }
            None => buffer.extend_from_slice(&available[..content]),
        }
        let used = newline.map_or(content, |at| at + 1);
        reader.consume(used);
        if newline.is_some() {
            return Ok(match skipped {
                Some(n) => LineRead::TooLong(n),
                None => LineRead::Line,
            });
        }
    }
}

/// Reads the inputs in order on its own thread, in chunks of the lines at hand, until
/// the end, an error, or `stop`. A line read is always handed over; a line longer
/// than `limit` is handed over as its length alone.
fn spawn_reader(
    inputs: Vec<Box<dyn Read + Send>>,
    limit: usize,
    tx: SyncSender<Chunk>,
    stop: Arc<AtomicBool>,
) {
    /// The lines read so far into one buffer, handed over as slices of it.
    #[derive(Default)]
    struct Lines {
        buffer: Vec<u8>,
        /// (source, line number, start, end, length of a line too long) of each
        /// line in `buffer`.
        lines: Vec<(u32, u64, usize, usize, Option<u64>)>,
    }
    impl Lines {
        fn take(&mut self) -> Chunk {
            let capacity = self.buffer.len().min(CHUNK_BYTES);
            let buffer = Bytes::from(std::mem::replace(
                &mut self.buffer,
                Vec::with_capacity(capacity),
            ));
            Chunk::Lines(
                self.lines
                    .drain(..)
                    .map(|(source, number, start, end, too_long)| Line {
                        source,
                        number,
                        bytes: buffer.slice(start..end),
                        too_long,
                    })
                    .collect(),
            )
        }
    }
    std::thread::spawn(move || {
        let mut chunk = Lines::default();
        for (source, input) in inputs.into_iter().enumerate() {
            let source = source as u32;
            let mut reader = BufReader::with_capacity(256 * 1024, input);
            let mut number = 0u64;
            loop {
                if stop.load(Ordering::Relaxed) {
                    let _ = tx.send(chunk.take());
                    return;
                }
                let start = chunk.buffer.len();
                match read_line_bounded(&mut reader, &mut chunk.buffer, limit) {
                    Ok(LineRead::End) => break,
                    Ok(read) => {
                        number += 1;
                        let too_long = match read {
                            LineRead::TooLong(n) => Some(n),
                            _ => None,
                        };
                        let end = chunk.buffer.len();
                        chunk.lines.push((source, number, start, end, too_long));
                        // Hand over when the next read may block, or the chunk is big.
                        if (reader.buffer().is_empty()
                            || chunk.lines.len() >= CHUNK_LINES
                            || chunk.buffer.len() >= CHUNK_BYTES)
                            && tx.send(chunk.take()).is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(chunk.take());
                        let _ = tx.send(Chunk::Error(source, number + 1, e));
                        return;
                    }
                }
            }
            if !chunk.lines.is_empty() && tx.send(chunk.take()).is_err() {
                return;
            }
        }
    });
}

/// Why reading stopped before the end of the input.
enum Stop {
    Signal(i32),
    Fatal(String),
    ReadError(String),
}

struct Run<'a> {
    args: &'a Args,
    sources: Vec<String>,
    /// Accepted records in input order (their ids increase), until reported.
    pending: VecDeque<Pending>,
    /// Where their outcomes come from, in batches.
    outcomes: Outcomes,
    tally: Tally,
    failed: FailedFile,
    fatal: Option<String>,
    progress: Progress,
}

/// The progress line: each second while on, until the last record settles.
struct Progress {
    on: bool,
    started: Instant,
    last: Instant,
}

impl Run<'_> {
    /// A progress line, if it is on and a second has passed since the last.
    fn progress(&mut self) {
        if !self.progress.on || self.progress.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.progress.last = Instant::now();
        let t = &self.tally;
        let secs = self.progress.started.elapsed().as_secs_f64().max(1e-9);
        let waiting = t.sent - t.acknowledged - t.failed;
        crate::say!(
            "kpl put: {} sent, {} acknowledged, {} failed, {waiting} waiting, {:.0} records/s",
            t.sent,
            t.acknowledged,
            t.failed,
            t.acknowledged as f64 / secs
        );
    }

    /// Takes the outcomes that came, and reports every record at the front that has
    /// one; with `wait`, waits up to that long for all of them, and reports those
    /// still without one as in flight.
    fn settle(&mut self, wait: Option<Duration>) {
        self.take(self.outcomes.take());
        if let Some(wait) = wait {
            let deadline = Instant::now() + wait;
            // The queue counts the records whose outcome was not taken yet.
            while self.outcomes.pending() > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                self.take(self.outcomes.wait(left));
            }
        }
        while let Some(front) = self.pending.front() {
            if front.result.is_none() {
                if wait.is_some() {
                    // Still unresolved after the wait: in flight when we gave up.
                    let p = self.pending.pop_front().expect("front exists");
                    self.tally.failed += 1;
                    self.tally.maybe_stored += 1;
                    *self.tally.by_code.entry("InFlight".into()).or_default() += 1;
                    let value = json!({
                        "Source": self.sources[p.source as usize],
                        "Line": p.line,
                        "PartitionKey": p.partition_key,
                        "Data": BASE64.encode(&p.data),
                        "Error": "InFlight",
                        "Message": "kpl put stopped while this record's request was in flight: it may have been stored",
                        "MayHaveBeenStored": true,
                        "Attempts": [],
                    });
                    self.failed.write(&value);
                    continue;
                }
                break;
            }
            let mut p = self.pending.pop_front().expect("front exists");
            let result = match p.result.take().expect("checked above") {
                Outcome::Stored { duplicated } => {
                    self.tally.acknowledged += 1;
                    self.tally.duplicated += u64::from(duplicated);
                    continue;
                }
                Outcome::Failed(result) => result,
            };
            self.tally.failed += 1;
            let maybe = result.may_have_been_stored();
            if maybe {
                self.tally.maybe_stored += 1;
            }
            let code = result
                .error_code()
                .map_or("Unknown", kpl::ErrorCode::as_str)
                .to_owned();
            let message = result.error_message().unwrap_or_default().to_owned();
            *self.tally.by_code.entry(code.clone()).or_default() += 1;
            self.tally
                .last_message
                .insert(code.clone(), message.clone());
            if code == kpl::ErrorCode::Expired.as_str()
                && let Some(e) = result
                    .attempts
                    .iter()
                    .rev()
                    .filter_map(kpl::Attempt::error)
                    .find(|e| e.code != kpl::ErrorCode::Expired)
            {
                self.tally
                    .before_expiry
                    .insert(e.code.as_str().to_owned(), e.message.clone());
            }
            if self.fatal.is_none() && !ErrorKind::classify(Some(&code), None).is_retryable() {
                crate::say!("kpl put: {code}: {message}");
                crate::say!("kpl put: retrying cannot help; stopping");
                self.fatal = Some(format!("{code}: {message}"));
            }
            let (attempts, omitted) = attempts_json(&result);
            let value = json!({
                "Source": self.sources[p.source as usize],
                "Line": p.line,
                "PartitionKey": p.partition_key,
                "Data": BASE64.encode(&p.data),
                "Error": code,
                "Message": message,
                "MayHaveBeenStored": maybe,
                "Attempts": attempts,
                "AttemptsOmitted": omitted,
            });
            let value = within_line_budget(value);
            self.failed.write(&value);
        }
    }

    /// Files outcomes with their records (found by id: the ids of `pending` increase,
    /// and are consecutive when nothing else puts into this producer).
    fn take(&mut self, batch: impl Iterator<Item = (RecordId, RecordResult)>) {
        for (id, result) in batch {
            let direct = self.pending.front().and_then(|front| {
                let at = usize::try_from(id.0.checked_sub(front.id.0)?).ok()?;
                self.pending.get(at).filter(|p| p.id == id).map(|_| at)
            });
            let at = direct.or_else(|| self.pending.binary_search_by_key(&id, |p| p.id).ok());
            if let Some(at) = at {
                self.pending[at].result = Some(if result.is_success() {
                    Outcome::Stored {
                        duplicated: result.may_be_duplicated(),
                    }
                } else {
                    Outcome::Failed(Box::new(result))
                });
            }
        }
    }

    /// A line that was read and could not be sent (bad input, or reading stopped).
    /// A line too long to be a record has its length written instead of its data.
    fn not_sent(&mut self, line: &Line, code: &str, message: &str) {
        let mut value = json!({
            "Source": self.sources[line.source as usize],
            "Line": line.number,
            "Error": code,
            "Message": message,
            "MayHaveBeenStored": false,
            "Attempts": [],
        });
        match line.too_long {
            Some(length) => value["Length"] = json!(length),
            None => value["Data"] = json!(BASE64.encode(&line.bytes)),
        }
        self.failed.write(&value);
    }

    /// A line that is not sent: counted, named on standard error, written to the
    /// failed file.
    fn invalid(&mut self, line: &Line, message: &str) {
        self.tally.invalid += 1;
        crate::say!(
            "kpl put: {}:{}: {message}",
            self.sources[line.source as usize],
            line.number
        );
        let code = if line.too_long.is_some() {
            "LineTooLong"
        } else {
            "InvalidLine"
        };
        self.not_sent(line, code, message);
    }
}

/// The signals that stop a run: SIGINT, SIGTERM and SIGHUP (a closing terminal).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Signals {
    /// How many came.
    count: u32,
    /// The first one's number.
    first: i32,
}

/// Forwards SIGINT, SIGTERM and SIGHUP as a count and the first one's number. Also
/// takes SIGXFSZ, so that a file-size limit makes a write fail (and the failed file
/// keep whole lines) instead of killing the process.
fn watch_signals(runtime: &tokio::runtime::Runtime) -> watch::Receiver<Signals> {
    let (tx, rx) = watch::channel(Signals::default());
    runtime.spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            #[cfg(target_os = "linux")]
            let _xfsz = signal(SignalKind::from_raw(SIGXFSZ));
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                return;
            };
            loop {
                let number = tokio::select! {
                    _ = int.recv() => 2,
                    _ = term.recv() => 15,
                    _ = hup.recv() => 1,
                };
                tx.send_modify(|s| {
                    if s.count == 0 {
                        s.first = number;
                    }
                    s.count += 1;
                });
            }
        }
        #[cfg(not(unix))]
        loop {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            tx.send_modify(|s| {
                if s.count == 0 {
                    s.first = 2;
                }
                s.count += 1;
            });
        }
    });
    rx
}

/// SIGXFSZ on Linux.
#[cfg(target_os = "linux")]
const SIGXFSZ: i32 = 25;

fn signal_name(number: i32) -> &'static str {
    match number {
        1 => "SIGHUP",
        15 => "SIGTERM",
        _ => "SIGINT",
    }
}

fn signal_exit(number: i32) -> u8 {
    match number {
        1 => EXIT_SIGHUP,
        15 => EXIT_SIGTERM,
        _ => EXIT_SIGINT,
    }
}

/// Checks made before anything is read or sent.
fn check_args(args: &Args) -> anyhow::Result<()> {
    if args.format == Format::Lines && (args.pk_field.is_some() || args.data_field.is_some()) {
        anyhow::bail!("--pk-field and --data-field need --format json");
    }
    if args.partition_key.as_deref() == Some("") {
        anyhow::bail!(
            "--partition-key '': a partition key is 1 to 256 characters; give one, or --random-pk"
        );
    }
    if args.pk_field.as_deref() == Some("") {
        anyhow::bail!("--pk-field '': name the JSON field that holds the partition key");
    }
    Ok(())
}

/// The longest line kept whole: a record's data at most, in lines mode; in JSON
/// mode, room for the data escaped and the other fields.
fn line_limit(args: &Args, config: &kpl::Config) -> usize {
    let record = config.max_user_record_size();
    match args.format {
        Format::Lines => record,
        Format::Json => record.saturating_mul(2).saturating_add(64 << 10),
    }
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    check_args(args)?;
    let config = args.producer.config_with_caps(
        DEFAULT_MAX_OUTSTANDING_RECORDS,
        DEFAULT_MAX_OUTSTANDING_BYTES,
    )?;
    if config.ordered() && args.partition_key.is_none() && args.pk_field.is_none() {
        anyhow::bail!(
            "--ordered keeps the put order of each partition key's records, and a random key \
             per record (--random-pk, the default without --partition-key or --pk-field) has \
             none to keep: give --partition-key KEY, or --format json --pk-field NAME"
        );
    }
    let stream = args
        .stream
        .clone()
        .or_else(|| args.stream_arn.clone())
        .context("give --stream or --stream-arn")?;
    check_failed_is_not_read(args, &config)?;
    let inputs = open_inputs(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Signals are watched before the failed file is opened and the transport built.
    let mut signals = watch_signals(&runtime);
    let producer = build_producer(args, &config, &runtime)?;
    let failed_writer = match &args.failed {
        Some(path) => {
            let existing = if args.append_failed {
                Existing::Append
            } else if args.overwrite_failed {
                Existing::Overwrite
            } else {
                Existing::Refuse
            };
            Some(FailedFile::open(path, existing)?)
        }
        None => None,
    };
    let (sources, readers): (Vec<String>, Vec<_>) = inputs.into_iter().unzip();
    let mut run = Run {
        args,
        sources,
        pending: VecDeque::new(),
        outcomes: Outcomes::new(),
        tally: Tally::default(),
        failed: FailedFile {
            path: args.failed.clone(),
            writer: failed_writer,
            broken: false,
        },
        fatal: None,
        progress: Progress {
            on: !args.quiet
                && (args.progress || std::io::IsTerminal::is_terminal(&std::io::stderr())),
            started: Instant::now(),
            last: Instant::now(),
        },
    };
    let (tx, rx) = sync_channel(4);
    let stop_reading = Arc::new(AtomicBool::new(false));
    spawn_reader(readers, line_limit(args, &config), tx, stop_reading.clone());
    let mut reading = Reading {
        rng: SplitMix64::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64),
        ),
        position: None,
        leftover: Vec::new(),
    };
    let stop = read_all(
        &mut run,
        &mut reading,
        &producer,
        &stream,
        &runtime,
        &rx,
        &mut signals,
    );
    let reading_finished = stop.is_none();
    if let Some(stop) = &stop {
        stop_reading.store(true, Ordering::Relaxed);
        account_for_unread(&mut run, &mut reading, &rx, stop);
    }
    let ending = settle_all(&mut run, &producer, &runtime, &mut signals);
    let first_signal = {
        let s = *signals.borrow();
        (s.count > 0).then_some(s.first)
    };
    let code = report(
        &run,
        &producer,
        &reading,
        stop.as_ref(),
        Finish {
            ending,
            first_signal,
            reading_finished,
        },
    );
    // The reader may be blocked on input that never ends: leave without it.
    drop(rx);
    Ok(ExitCode::from(code))
}

/// After reading stopped early: the lines the reader had read and not handed over
/// are not sent, and each is written to the failed file; the position becomes the
/// last of them (every line up to it is accounted for: acknowledged, failed, or not
/// sent in --failed).
fn account_for_unread(run: &mut Run<'_>, reading: &mut Reading, rx: &Receiver<Chunk>, stop: &Stop) {
    drain_reader(rx, &mut reading.leftover);
    let why = match stop {
        Stop::Signal(_) => "kpl put was interrupted before this line was sent",
        _ => "kpl put stopped before this line was sent",
    };
    let leftover = std::mem::take(&mut reading.leftover);
    for line in &leftover {
        run.tally.not_sent += 1;
        run.not_sent(line, "NotSent", why);
    }
    if let Some(last) = leftover.last() {
        reading.position = Some((last.source, last.number));
    }
}

/// How the run ended, for its summary.
struct Finish {
    ending: Ending,
    first_signal: Option<i32>,
    reading_finished: bool,
}

/// Prints the summary (and writes `--summary-json`); returns the exit code.
fn report(
    run: &Run<'_>,
    producer: &Producer,
    reading: &Reading,
    stop: Option<&Stop>,
    finish: Finish,
) -> u8 {
    let Finish {
        ending,
        first_signal,
        reading_finished,
    } = finish;
    let args = run.args;
    let t = &run.tally;
    let secs = run.progress.started.elapsed().as_secs_f64();
    crate::say!(
        "kpl put: {} sent, {} acknowledged, {} failed, {} invalid lines, {} not sent, {} possibly stored twice, {} failed but possibly stored, in {:.1} s ({:.0} records/s)",
        t.sent,
        t.acknowledged,
        t.failed,
        t.invalid,
        t.not_sent,
        t.duplicated,
        t.maybe_stored,
        secs,
        t.acknowledged as f64 / secs.max(1e-9)
    );
    if !t.by_code.is_empty() {
        let codes: Vec<String> = t.by_code.iter().map(|(c, n)| format!("{c} {n}")).collect();
        crate::say!("kpl put: failures by error code: {}", codes.join(", "));
        for (code, message) in &t.last_message {
            if !message.is_empty() {
                crate::say!("kpl put: last {code} error: {message}");
            }
        }
        for (code, message) in &t.before_expiry {
            crate::say!("kpl put: last {code} error before records expired: {message}");
        }
    }
    let verified = producer.verify_stats();
    if producer.config().verify_before_resend() {
        crate::say!(
            "kpl put: verify before resend: {} reads ({} bytes read), {} Kinesis records found stored, {} not found and resent, {} resent unverified",
            verified.reads,
            verified.bytes_read,
            verified.found,
            verified.not_found,
            verified.unsettled
        );
    }
    match ending {
        Ending::Settled => {}
        Ending::TimedOut if args.shutdown_timeout == 0 && first_signal.is_none() => crate::say!(
            "kpl put: --shutdown-timeout 0: what was not stored when the input ended was failed at once"
        ),
        Ending::TimedOut => crate::say!(
            "kpl put: records not stored within {} ms were failed (they are in the failed file)",
            if first_signal.is_some() {
                args.signal_grace.min(args.shutdown_timeout)
            } else {
                args.shutdown_timeout
            }
        ),
        Ending::CutShort => crate::say!(
            "kpl put: second signal: what was not stored was failed at once (it is in the failed file)"
        ),
    }
    for line in crate::settings::metrics_summary(producer) {
        crate::say!("kpl put: metric {line}");
    }
    if let Some(line) = crate::settings::upload_summary(producer) {
        crate::say!("kpl put: metrics {line}");
    }
    let at = reading.position.map_or_else(
        || "before the first line".to_owned(),
        |(s, n)| format!("at {}:{n}", run.sources[s as usize]),
    );
    let code: u8 = match (stop, first_signal) {
        (Some(Stop::Signal(n)), _) => {
            crate::say!(
                "kpl put: stopped by {}; reading stopped {at}",
                signal_name(*n)
            );
            signal_exit(*n)
        }
        (Some(Stop::Fatal(why)), _) => {
            crate::say!("kpl put: stopped {at}: {why}");
            1
        }
        (Some(Stop::ReadError(why)), _) => {
            crate::say!("kpl put: {why}; what was read before was settled");
            1
        }
        (None, Some(n)) => {
            crate::say!(
                "kpl put: {} came after the whole input was read",
                signal_name(n)
            );
            signal_exit(n)
        }
        (None, None) if t.failed + t.invalid + t.not_sent > 0 || run.failed.broken => 1,
        // Messages that could not be written fail a run that had nothing else wrong.
        (None, None) if crate::out::stderr_lost() => 1,
        (None, None) => 0,
    };
    if let Some(path) = &args.summary_json {
        let summary = json!({
            "sent": t.sent,
            "acknowledged": t.acknowledged,
            "failed": t.failed,
            "invalid": t.invalid,
            "not_sent": t.not_sent,
            "possibly_stored_twice": t.duplicated,
            "failed_but_possibly_stored": t.maybe_stored,
            "failures_by_code": t.by_code,
            "seconds": secs,
            "reading_finished": reading_finished,
            "signal": first_signal,
            "exit_code": code,
            "peak_resident_bytes": crate::settings::cpu_and_peak_memory().1,
            "verify": {
                "reads": verified.reads,
                "bytes_read": verified.bytes_read,
                "found": verified.found,
                "not_found": verified.not_found,
                "unsettled": verified.unsettled,
            },
        });
        if let Err(e) = std::fs::write(path, format!("{summary}\n")) {
            crate::say!("kpl put: cannot write {}: {e}", path.display());
        }
    }
    code
}

/// The transport and the producer the settings and flags describe.
fn build_producer(
    args: &Args,
    config: &kpl::Config,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Producer> {
    let mut builder = config.aws_transport_builder()?;
    if let Some(e) = &args.endpoint {
        builder = builder.endpoint_url(e);
    }
    if let Some(r) = &args.region {
        builder = builder.region(r);
    }
    if let Some(url) = &args.proxy {
        builder = builder.proxy(proxy_from_url(url)?);
    }
    if let Some(path) = &args.ca_file {
        // A PEM file or bundle, or a directory of them.
        builder = builder.ca_certificates_path(path)?;
    }
    builder = builder.http_runtime(match args.http_client {
        HttpClient::Tokio => kpl::HttpRuntime::Tokio,
        HttpClient::AsyncIo => kpl::HttpRuntime::AsyncIo,
    });
    let uploader = runtime.block_on(crate::settings::cloudwatch_uploader(
        config,
        builder.clone(),
    ))?;
    let transport = runtime.block_on(builder.build())?;
    // No credential source at all is said now, not after every record's time to live.
    runtime.block_on(transport.check_credentials(CREDENTIALS_CHECK_WAIT))?;
    let _guard = runtime.enter();
    let mut producer = Producer::builder(config.clone(), Arc::new(transport));
    if let Some(uploader) = uploader {
        producer = producer.metrics_uploader(uploader);
    }
    Ok(producer.build(Runtime::tokio()))
}

/// Where reading is: what it needs between chunks.
struct Reading {
    rng: SplitMix64,
    /// The last line read (source, number).
    position: Option<(u32, u64)>,
    /// Lines read and not handed to the producer when reading stopped.
    leftover: Vec<Line>,
}

/// Reads every line and hands it to the producer, until the end of the input (None)
/// or a stop.
fn read_all(
    run: &mut Run<'_>,
    reading: &mut Reading,
    producer: &Producer,
    stream: &str,
    runtime: &tokio::runtime::Runtime,
    rx: &Receiver<Chunk>,
    signals: &mut watch::Receiver<Signals>,
) -> Option<Stop> {
    loop {
        let signal = *signals.borrow();
        if signal.count > 0 {
            return Some(Stop::Signal(signal.first));
        }
        if let Some(f) = &run.fatal {
            return Some(Stop::Fatal(f.clone()));
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Chunk::Lines(lines)) => {
                if let Some(stop) =
                    put_lines(run, reading, producer, stream, runtime, lines, signals)
                {
                    return Some(stop);
                }
            }
            Ok(Chunk::Error(source, number, e)) => {
                return Some(Stop::ReadError(format!(
                    "cannot read {} at line {number}: {e}",
                    run.sources[source as usize]
                )));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return None,
        }
        run.settle(None);
        run.progress();
    }
}

/// One hand-off to the producer per chunk of lines: the valid ones go in as far as
/// there is room, then the rest after a wait for room (which a signal ends; every
/// admitted line is kept until its outcome).
fn put_lines(
    run: &mut Run<'_>,
    reading: &mut Reading,
    producer: &Producer,
    stream: &str,
    runtime: &tokio::runtime::Runtime,
    lines: Vec<Line>,
    signals: &mut watch::Receiver<Signals>,
) -> Option<Stop> {
    let limit = line_limit(run.args, producer.config());
    let mut queue: VecDeque<(Line, String, Bytes)> = VecDeque::new();
    for line in lines {
        reading.position = Some((line.source, line.number));
        if let Some(length) = line.too_long {
            let message = format!(
                "line of {length} bytes is longer than the largest record ({limit} bytes); not sent"
            );
            run.invalid(&line, &message);
            continue;
        }
        match run.args.record(&line.bytes, &mut reading.rng) {
            Ok((pk, data)) => queue.push_back((line, pk, data)),
            Err(message) => run.invalid(&line, &message),
        }
    }
    let mut records: Vec<PutRecord> = queue
        .iter()
        .map(|(_, pk, data)| PutRecord::new(pk.clone(), data.clone()))
        .collect();
    while !records.is_empty() {
        let kpl::Admitted { results, rest, .. } =
            match producer.try_put_records_to(stream, records, &run.outcomes) {
                Ok(r) => r,
                Err(e) => {
                    // The whole hand-off refused (the producer shuts down).
                    let message = crate::bench::without_repeats(&e);
                    for (line, _, _) in std::mem::take(&mut queue) {
                        run.invalid(&line, &message);
                    }
                    break;
                }
            };
        for result in results {
            let Some((line, pk, data)) = queue.pop_front() else {
                break;
            };
            match result {
                Ok(id) => {
                    run.tally.sent += 1;
                    run.pending.push_back(Pending {
                        id,
                        source: line.source,
                        line: line.number,
                        partition_key: pk,
                        data,
                        result: None,
                    });
                }
                Err(e) => run.invalid(&line, &crate::bench::without_repeats(&e)),
            }
        }
        records = rest;
        if let Some(first) = records.first() {
            // Waits while the producer is full; a signal ends the wait.
            let bytes = first.size();
            let signaled = runtime.block_on(async {
                let mut room = std::pin::pin!(producer.wait_for_room(stream, bytes));
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = &mut room => return false,
                        _ = next_signal(signals) => return true,
                        // Outcomes reported and progress shown during a long wait.
                        _ = tick.tick() => {
                            run.settle(None);
                            run.progress();
                        }
                    }
                }
            });
            if signaled {
                reading
                    .leftover
                    .extend(queue.drain(..).map(|(line, _, _)| line));
                let signal = *signals.borrow();
                return Some(Stop::Signal(signal.first));
            }
            run.settle(None);
            run.progress();
        }
    }
    None
}

/// How the records accepted were settled once reading stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// Every one has its outcome.
    Settled,
    /// The shutdown timeout (or the grace after a signal) ran out: what was not
    /// stored then was failed.
    TimedOut,
    /// A second signal: what was not stored was failed at once.
    CutShort,
}

/// Settles what was accepted: waits for every outcome up to `--shutdown-timeout`
/// (or `--signal-grace` once a signal came, whenever it came), with progress each
/// second; a second signal cuts it short. What is still not stored then is failed
/// and written to the failed file.
fn settle_all(
    run: &mut Run<'_>,
    producer: &Producer,
    runtime: &tokio::runtime::Runtime,
    signals: &mut watch::Receiver<Signals>,
) -> Ending {
    let grace = Duration::from_millis(run.args.signal_grace.min(run.args.shutdown_timeout));
    let mut seen = signals.borrow().count;
    let mut deadline = Instant::now()
        + if seen > 0 {
            grace
        } else {
            Duration::from_millis(run.args.shutdown_timeout)
        };
    let ending = runtime.block_on(async {
        let mut flush = std::pin::pin!(producer.flush());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut flush => return Ending::Settled,
                () = tokio::time::sleep_until(deadline.into()) => return Ending::TimedOut,
                _ = next_signal(signals) => {
                    let now = signals.borrow().count;
                    if now > seen {
                        if seen > 0 || now > 1 {
                            return Ending::CutShort;
                        }
                        // The first signal: the grace period from now, at most.
                        seen = now;
                        deadline = deadline.min(Instant::now() + grace);
                    }
                }
                _ = tick.tick() => {
                    run.settle(None);
                    run.progress();
                }
            }
        }
    });
    // Fails what is still buffered; waits for what is in flight, briefly after a
    // signal (what is then still in flight is reported as possibly stored).
    let in_flight_wait = if signals.borrow().count > 0 {
        IN_FLIGHT_WAIT_AFTER_SIGNAL
    } else {
        IN_FLIGHT_WAIT
    };
    runtime.block_on(async {
        let _ = tokio::time::timeout(in_flight_wait, producer.shutdown(Duration::ZERO)).await;
    });
    run.settle(Some(Duration::ZERO));
    ending
}

/// The next signal (never, if signals cannot be watched).
async fn next_signal(rx: &mut watch::Receiver<Signals>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Takes every line the reader thread still hands over after it was told to stop.
fn drain_reader(rx: &Receiver<Chunk>, into: &mut Vec<Line>) {
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Chunk::Lines(lines)) => into.extend(lines),
            Ok(Chunk::Error(..)) => {}
            // Blocked on input, or done.
            Err(_) => return,
        }
    }
}

/// A proxy from `--proxy`: `http://[user:password@]host:port`.
fn proxy_from_url(url: &str) -> anyhow::Result<Proxy> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    anyhow::ensure!(
        scheme == "http",
        "--proxy {url:?}: give an http:// proxy (CONNECT tunnels carry https)"
    );
    Ok(match rest.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            Proxy::new(format!("http://{hostport}")).basic_auth(user, password)
        }
        None => Proxy::new(format!("http://{rest}")),
    })
}

/// `--http-client`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
enum HttpClient {
    /// The AWS SDK's hyper client on tokio.
    #[default]
    Tokio,
    /// kpl-rs's hyper client on async-io.
    AsyncIo,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_line_takes_at_most_its_budget_beside_data_and_key() {
        let attempt = |m: &str| {
            json!({"DelayMs": 1.0, "DurationMs": 2.0, "Success": false,
                "ErrorCode": "InternalFailure", "ErrorMessage": m,
                "ShardId": "shardId-000000000000", "MayHaveBeenStored": true})
        };
        let long = "x".repeat(512);
        let value = json!({
            "Source": "in.txt", "Line": 7, "PartitionKey": "k".repeat(256),
            "Data": "d".repeat(100_000), "Error": "InternalFailure",
            "Message": long, "MayHaveBeenStored": true,
            "Attempts": [attempt(&long), attempt("a"), attempt("b"), attempt(&long)],
            "AttemptsOmitted": 5,
        });
        let fitted = within_line_budget(value);
        let own = fitted.to_string().len() - 100_000 - 256;
        assert!(own <= LINE_OVERHEAD_MAX, "{own}: {fitted}");
        // The last attempt is kept, and what was left out is counted.
        let attempts = fitted["Attempts"].as_array().unwrap();
        assert!(!attempts.is_empty());
        assert_eq!(
            fitted["AttemptsOmitted"].as_u64().unwrap() + attempts.len() as u64,
            9
        );
        assert_eq!(fitted["Data"].as_str().unwrap().len(), 100_000);
    }

    #[test]
    fn a_line_within_its_budget_is_written_whole() {
        let value = json!({"Source": "s", "Line": 1, "Data": "AA==", "Error": "E",
            "Message": "m", "Attempts": [], "AttemptsOmitted": 0});
        assert_eq!(within_line_budget(value.clone()), value);
    }

    #[test]
    fn bounded_lines_are_read_whole_or_by_length() {
        let input = b"short\n0123456789abc\nend";
        let mut reader = BufReader::with_capacity(4, &input[..]);
        let mut buffer = Vec::new();
        assert_eq!(
            read_line_bounded(&mut reader, &mut buffer, 8).unwrap(),
            LineRead::Line
        );
        assert_eq!(buffer, b"short");
        assert_eq!(
            read_line_bounded(&mut reader, &mut buffer, 8).unwrap(),
            LineRead::TooLong(13)
        );
        assert_eq!(buffer, b"short", "nothing of a long line is kept");
        assert_eq!(
            read_line_bounded(&mut reader, &mut buffer, 8).unwrap(),
            LineRead::Line
        );
        assert_eq!(buffer, b"shortend");
        assert_eq!(
            read_line_bounded(&mut reader, &mut buffer, 8).unwrap(),
            LineRead::End
        );
    }
}

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
    /// After the input ends or a signal, how long to wait for outstanding records
    /// before failing what is still buffered (milliseconds). A second signal cuts
    /// it short.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    shutdown_timeout: u64,
    /// Hide the progress line.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    producer: ProducerArgs,
    /// Input files; standard input when none.
    files: Vec<PathBuf>,
}

/// A line read, not yet settled: a slice of the buffer its chunk was read into
/// (a line costs no allocation of its own, and becomes a record's data as it is).
struct Line {
    source: u32,
    number: u64,
    bytes: Bytes,
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
}

/// The failed-records file, written a whole line at a time as records fail (no
/// buffer that a later error could lose); standard error once it cannot be written.
struct FailedFile {
    path: Option<PathBuf>,
    writer: Option<File>,
    broken: bool,
}

impl FailedFile {
    fn write(&mut self, value: &Value) {
        let line = format!("{value}\n");
        if let (Some(w), false) = (&mut self.writer, self.broken) {
            if let Err(e) = w.write_all(line.as_bytes()) {
                self.fail(&e);
            } else {
                return;
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

fn attempts_json(r: &RecordResult) -> Value {
    Value::Array(
        r.attempts
            .iter()
            .map(|a| {
                json!({
                    "DelayMs": a.delay.as_secs_f64() * 1e3,
                    "DurationMs": a.duration.as_secs_f64() * 1e3,
                    "Success": a.success,
                    "ErrorCode": a.error_code,
                    "ErrorMessage": a.error_message,
                    "ShardId": a.shard_id.as_deref(),
                    "MayHaveBeenStored": a.may_have_been_stored,
                })
            })
            .collect(),
    )
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

/// Whether two paths name the same file (both must exist).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Opens every input before anything is sent: a missing file, a directory, or a
/// `--failed` file that is also an input stops the run with nothing sent.
fn open_inputs(args: &Args) -> anyhow::Result<Vec<(String, Box<dyn Read + Send>)>> {
    let failed = args.failed.as_deref();
    if args.files.is_empty() {
        if let Some(f) = failed {
            let stdin = Path::new("/dev/stdin");
            if std::fs::metadata(stdin).is_ok_and(|m| m.is_file()) && same_file(f, stdin) {
                anyhow::bail!(
                    "--failed {} is the file on standard input: it would be overwritten; name another file",
                    f.display()
                );
            }
        }
        return Ok(vec![("<stdin>".into(), Box::new(std::io::stdin()))]);
    }
    let mut inputs: Vec<(String, Box<dyn Read + Send>)> = Vec::new();
    for path in &args.files {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot open {}", path.display()))?;
        if meta.is_dir() {
            anyhow::bail!("{} is a directory, not an input file", path.display());
        }
        if let Some(f) = failed
            && same_file(f, path)
        {
            anyhow::bail!(
                "--failed {} is also an input: it would be overwritten; name another file",
                f.display()
            );
        }
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        inputs.push((path.display().to_string(), Box::new(file)));
    }
    Ok(inputs)
}

/// Reads the inputs in order on its own thread, in chunks of the lines at hand, until
/// the end, an error, or `stop`. A line read is always handed over.
fn spawn_reader(inputs: Vec<Box<dyn Read + Send>>, tx: SyncSender<Chunk>, stop: Arc<AtomicBool>) {
    /// The lines read so far into one buffer, handed over as slices of it.
    #[derive(Default)]
    struct Lines {
        buffer: Vec<u8>,
        /// (source, line number, start, end) of each line in `buffer`.
        lines: Vec<(u32, u64, usize, usize)>,
    }
    impl Lines {
        fn take(&mut self) -> Chunk {
            let capacity = self.buffer.len();
            let buffer = Bytes::from(std::mem::replace(
                &mut self.buffer,
                Vec::with_capacity(capacity),
            ));
            Chunk::Lines(
                self.lines
                    .drain(..)
                    .map(|(source, number, start, end)| Line {
                        source,
                        number,
                        bytes: buffer.slice(start..end),
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
            // Where a line interrupted by a signal started (its bytes stay read).
            let mut interrupted_at = None;
            loop {
                if stop.load(Ordering::Relaxed) {
                    chunk
                        .buffer
                        .truncate(interrupted_at.unwrap_or(chunk.buffer.len()));
                    let _ = tx.send(chunk.take());
                    return;
                }
                let start = interrupted_at.take().unwrap_or(chunk.buffer.len());
                match reader.read_until(b'\n', &mut chunk.buffer) {
                    Ok(0) => break,
                    Ok(_) => {
                        number += 1;
                        let mut end = chunk.buffer.len();
                        if chunk.buffer.last() == Some(&b'\n') {
                            end -= 1;
                        }
                        chunk.lines.push((source, number, start, end));
                        // Hand over when the next read may block, or the chunk is big.
                        if (reader.buffer().is_empty() || chunk.lines.len() >= 4096)
                            && tx.send(chunk.take()).is_err()
                        {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                        interrupted_at = Some(start);
                    }
                    Err(e) => {
                        chunk.buffer.truncate(start);
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
}

impl Run<'_> {
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
            let code = result.error_code().unwrap_or("Unknown").to_owned();
            let message = result
                .attempts
                .last()
                .and_then(|a| a.error_message.clone())
                .unwrap_or_default();
            *self.tally.by_code.entry(code.clone()).or_default() += 1;
            if self.fatal.is_none() && !ErrorKind::classify(Some(&code), None).is_retryable() {
                crate::say!("kpl put: {code}: {message}");
                crate::say!("kpl put: retrying cannot help; stopping");
                self.fatal = Some(format!("{code}: {message}"));
            }
            let value = json!({
                "Source": self.sources[p.source as usize],
                "Line": p.line,
                "PartitionKey": p.partition_key,
                "Data": BASE64.encode(&p.data),
                "Error": code,
                "Message": message,
                "MayHaveBeenStored": maybe,
                "Attempts": attempts_json(&result),
            });
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
    fn not_sent(&mut self, line: &Line, code: &str, message: &str) {
        let value = json!({
            "Source": self.sources[line.source as usize],
            "Line": line.number,
            "Data": BASE64.encode(&line.bytes),
            "Error": code,
            "Message": message,
            "MayHaveBeenStored": false,
            "Attempts": [],
        });
        self.failed.write(&value);
    }
}

/// Forwards SIGINT and SIGTERM as a count and the last signal's number.
fn watch_signals(runtime: &tokio::runtime::Runtime) -> watch::Receiver<(u32, i32)> {
    let (tx, rx) = watch::channel((0u32, 0i32));
    runtime.spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            loop {
                let number = tokio::select! {
                    _ = int.recv() => 2,
                    _ = term.recv() => 15,
                };
                tx.send_modify(|(count, last)| {
                    *count += 1;
                    *last = number;
                });
            }
        }
        #[cfg(not(unix))]
        loop {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            tx.send_modify(|(count, last)| {
                *count += 1;
                *last = 2;
            });
        }
    });
    rx
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let config = args.producer.config_with_caps(
        DEFAULT_MAX_OUTSTANDING_RECORDS,
        DEFAULT_MAX_OUTSTANDING_BYTES,
    )?;
    if args.format == Format::Lines && (args.pk_field.is_some() || args.data_field.is_some()) {
        anyhow::bail!("--pk-field and --data-field need --format json");
    }
    let stream = args
        .stream
        .clone()
        .or_else(|| args.stream_arn.clone())
        .context("give --stream or --stream-arn")?;
    let inputs = open_inputs(args)?;
    let failed_writer = match &args.failed {
        Some(path) => {
            Some(File::create(path).with_context(|| format!("cannot create {}", path.display()))?)
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
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
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        builder = builder.ca_certificates_pem(pem);
    }
    builder = builder.http_runtime(match args.http_client {
        HttpClient::Tokio => kpl::HttpRuntime::Tokio,
        HttpClient::AsyncIo => kpl::HttpRuntime::AsyncIo,
    });
    let uploader = runtime.block_on(crate::settings::cloudwatch_uploader(
        &config,
        builder.clone(),
    ))?;
    let transport = runtime.block_on(builder.build())?;
    let producer = {
        let _guard = runtime.enter();
        let mut producer = Producer::builder(config, Arc::new(transport));
        if let Some(uploader) = uploader {
            producer = producer.metrics_uploader(uploader);
        }
        producer.build(Runtime::tokio())
    };
    let mut signals = watch_signals(&runtime);
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
    };
    let (tx, rx) = sync_channel(4);
    let stop_reading = Arc::new(AtomicBool::new(false));
    spawn_reader(readers, tx, stop_reading.clone());
    let mut rng = SplitMix64::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64),
    );
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut position: Option<(u32, u64)> = None;
    let mut leftover: Vec<Line> = Vec::new();
    let stop = 'read: loop {
        let signal = *signals.borrow();
        if signal.0 > 0 {
            break Some(Stop::Signal(signal.1));
        }
        if let Some(f) = &run.fatal {
            break Some(Stop::Fatal(f.clone()));
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Chunk::Lines(lines)) => {
                // One hand-off to the producer per chunk of lines: the valid ones go
                // in as far as there is room, then the rest after a wait for room
                // (which a signal ends; every admitted line is kept until its outcome).
                let mut queue: VecDeque<(Line, String, Bytes)> = VecDeque::new();
                for line in lines {
                    position = Some((line.source, line.number));
                    match run.args.record(&line.bytes, &mut rng) {
                        Ok((pk, data)) => queue.push_back((line, pk, data)),
                        Err(message) => {
                            run.tally.invalid += 1;
                            crate::say!(
                                "kpl put: {}:{}: {message}",
                                run.sources[line.source as usize],
                                line.number
                            );
                            run.not_sent(&line, "InvalidLine", &message);
                        }
                    }
                }
                let mut records: Vec<PutRecord> = queue
                    .iter()
                    .map(|(_, pk, data)| PutRecord::new(pk.clone(), data.clone()))
                    .collect();
                while !records.is_empty() {
                    let (results, rest) =
                        match producer.try_put_records_to(&stream, records, &run.outcomes) {
                            Ok(r) => r,
                            Err(e) => {
                                // The whole hand-off refused (the producer shuts down).
                                let message = e.to_string();
                                for (line, _, _) in queue.drain(..) {
                                    run.tally.invalid += 1;
                                    crate::say!(
                                        "kpl put: {}:{}: {message}",
                                        run.sources[line.source as usize],
                                        line.number
                                    );
                                    run.not_sent(&line, "InvalidLine", &message);
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
                            Err(e) => {
                                run.tally.invalid += 1;
                                let message = e.to_string();
                                crate::say!(
                                    "kpl put: {}:{}: {message}",
                                    run.sources[line.source as usize],
                                    line.number
                                );
                                run.not_sent(&line, "InvalidLine", &message);
                            }
                        }
                    }
                    records = rest;
                    if let Some(first) = records.first() {
                        // Waits while the producer is full; a signal ends the wait.
                        let bytes = first.size();
                        let signaled = runtime.block_on(async {
                            tokio::select! {
                                () = producer.wait_for_room(&stream, bytes) => false,
                                _ = next_signal(&mut signals) => true,
                            }
                        });
                        if signaled {
                            leftover.extend(queue.drain(..).map(|(line, _, _)| line));
                            let signal = *signals.borrow();
                            break 'read Some(Stop::Signal(signal.1));
                        }
                        run.settle(None);
                    }
                }
            }
            Ok(Chunk::Error(source, number, e)) => {
                break Some(Stop::ReadError(format!(
                    "cannot read {} at line {number}: {e}",
                    run.sources[source as usize]
                )));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break None,
        }
        run.settle(None);
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            if !args.quiet {
                progress(&run.tally, started);
            }
        }
    };
    if stop.is_some() {
        // Lines the reader had read and not handed over: not sent, and reported.
        stop_reading.store(true, Ordering::Relaxed);
        drain_reader(&rx, &mut leftover);
        let why = match &stop {
            Some(Stop::Signal(_)) => "kpl put was interrupted before this line was sent",
            _ => "kpl put stopped before this line was sent",
        };
        for line in &leftover {
            run.tally.not_sent += 1;
            run.not_sent(line, "NotSent", why);
        }
        // Reading stopped after the last line drained: every line up to it is
        // accounted for (acknowledged, failed, or not sent in --failed).
        if let Some(last) = leftover.last() {
            position = Some((last.source, last.number));
        }
    }
    // Settle what was accepted.
    let timeout = Duration::from_millis(args.shutdown_timeout);
    let seen = signals.borrow().0;
    let clean = runtime.block_on(async {
        tokio::select! {
            _ = producer.shutdown(timeout) => true,
            _ = async {
                loop {
                    next_signal(&mut signals).await;
                    if signals.borrow().0 > seen {
                        return;
                    }
                }
            } => false,
        }
    });
    if !clean {
        crate::say!("kpl put: second signal: failing what is still buffered");
        runtime.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(1), producer.shutdown(Duration::ZERO))
                .await;
        });
    }
    run.settle(Some(if clean {
        Duration::from_secs(5)
    } else {
        Duration::ZERO
    }));
    let secs = started.elapsed().as_secs_f64();
    let t = &run.tally;
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
    }
    for line in crate::settings::metrics_summary(&producer) {
        crate::say!("kpl put: metric {line}");
    }
    if let Some(line) = crate::settings::upload_summary(&producer) {
        crate::say!("kpl put: metrics {line}");
    }
    let at = position.map_or_else(
        || "before the first line".to_owned(),
        |(s, n)| format!("at {}:{n}", run.sources[s as usize]),
    );
    let code = match &stop {
        Some(Stop::Signal(n)) => {
            crate::say!(
                "kpl put: stopped by {}; reading stopped {at}",
                if *n == 15 { "SIGTERM" } else { "SIGINT" }
            );
            ExitCode::from(if *n == 15 { EXIT_SIGTERM } else { EXIT_SIGINT })
        }
        Some(Stop::Fatal(why)) => {
            crate::say!("kpl put: stopped {at}: {why}");
            ExitCode::FAILURE
        }
        Some(Stop::ReadError(why)) => {
            crate::say!("kpl put: {why}; what was read before was settled");
            ExitCode::FAILURE
        }
        None if t.failed + t.invalid + t.not_sent > 0 || run.failed.broken => ExitCode::FAILURE,
        None => ExitCode::SUCCESS,
    };
    // The reader may be blocked on input that never ends: leave without it.
    drop(rx);
    Ok(code)
}

/// The next signal (never, if signals cannot be watched).
async fn next_signal(rx: &mut watch::Receiver<(u32, i32)>) {
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

fn progress(t: &Tally, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    crate::say!(
        "kpl put: {} sent, {} acknowledged, {} failed, {:.0} records/s",
        t.sent,
        t.acknowledged,
        t.failed,
        t.acknowledged as f64 / secs
    );
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

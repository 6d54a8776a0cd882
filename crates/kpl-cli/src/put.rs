//! `kpl put`: lines or JSON lines from a shell into a stream.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use bytes::Bytes;
use kpl_producer::{Producer, RecordFuture, RecordResult};
use kpl_runtime::Runtime;
use kpl_transport::AwsTransport;
use serde_json::{Value, json};

use crate::input::BASE64;
use crate::settings::ProducerArgs;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Format {
    /// One record per line; its data is the line without its newline.
    #[default]
    Lines,
    /// One JSON object per line.
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
    /// Where records that finally fail are written (JSON lines with their attempts).
    #[arg(long, value_name = "FILE")]
    failed: Option<PathBuf>,
    /// Hide the progress line.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    producer: ProducerArgs,
    /// Input files; standard input when none.
    files: Vec<PathBuf>,
}

struct Pending {
    source: String,
    line: usize,
    partition_key: String,
    data: Bytes,
    future: RecordFuture,
}

#[derive(Default)]
struct Tally {
    sent: u64,
    acknowledged: u64,
    failed: u64,
    invalid: u64,
}

struct FailedFile(Option<BufWriter<File>>);

impl FailedFile {
    fn write(&mut self, value: Value) -> anyhow::Result<()> {
        if let Some(w) = &mut self.0 {
            serde_json::to_writer(&mut *w, &value)?;
            w.write_all(b"\n")?;
        }
        Ok(())
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
                })
            })
            .collect(),
    )
}

struct Splitmix(u64);

impl Splitmix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Args {
    /// The partition key and data of one input line.
    fn record(&self, text: &str, rng: &mut Splitmix) -> Result<(String, Bytes), String> {
        let mut random = || format!("{:016x}", rng.next());
        match self.format {
            Format::Lines => {
                let pk = self.partition_key.clone().unwrap_or_else(random);
                Ok((pk, Bytes::copy_from_slice(text.as_bytes())))
            }
            Format::Json => {
                let value: Value =
                    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
                let pk = match (&self.pk_field, &self.partition_key) {
                    (Some(field), _) => match value.get(field) {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Number(n)) => n.to_string(),
                        Some(_) => {
                            return Err(format!("field {field:?} is not a string or number"));
                        }
                        None => return Err(format!("no field {field:?} for the partition key")),
                    },
                    (None, Some(pk)) => pk.clone(),
                    (None, None) => random(),
                };
                let data = match &self.data_field {
                    Some(field) => match value.get(field) {
                        Some(Value::String(s)) => Bytes::from(s.clone().into_bytes()),
                        Some(_) => return Err(format!("field {field:?} is not a string")),
                        None => return Err(format!("no field {field:?} for the data")),
                    },
                    None => Bytes::copy_from_slice(text.as_bytes()),
                };
                Ok((pk, data))
            }
        }
    }
}

fn settle(
    pending: &mut VecDeque<Pending>,
    tally: &mut Tally,
    failed: &mut FailedFile,
    all: bool,
) -> anyhow::Result<()> {
    while let Some(front) = pending.front() {
        let result = if all {
            front.future.wait(Duration::from_secs(3600))
        } else {
            front.future.wait(Duration::ZERO)
        };
        let Some(result) = result else {
            break;
        };
        let p = pending.pop_front().expect("front exists");
        if result.success {
            tally.acknowledged += 1;
        } else {
            tally.failed += 1;
            failed.write(json!({
                "Source": p.source,
                "Line": p.line,
                "PartitionKey": p.partition_key,
                "Data": BASE64.encode(&p.data),
                "Error": result.error_code(),
                "Attempts": attempts_json(&result),
            }))?;
        }
    }
    Ok(())
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let config = args.producer.config()?;
    if args.format == Format::Lines && (args.pk_field.is_some() || args.data_field.is_some()) {
        anyhow::bail!("--pk-field and --data-field need --format json");
    }
    let stream = args
        .stream
        .clone()
        .or_else(|| args.stream_arn.clone())
        .context("give --stream or --stream-arn")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let endpoint = args.endpoint.clone().or_else(|| config.kinesis_endpoint());
    let region = args.region.clone().or_else(|| config.region());
    let transport = runtime.block_on(async {
        let mut b = AwsTransport::builder()
            .max_connections(config.max_connections())
            .request_timeout(config.request_timeout())
            .connect_timeout(config.connect_timeout());
        if let Some(e) = &endpoint {
            b = b.endpoint_url(e);
        }
        if let Some(r) = &region {
            b = b.region(r);
        }
        b.build().await
    })?;
    let producer = {
        let _guard = runtime.enter();
        Producer::builder(config, Arc::new(transport)).build(Runtime::tokio())
    };
    let mut failed = FailedFile(match &args.failed {
        Some(path) => {
            Some(BufWriter::new(File::create(path).with_context(|| {
                format!("cannot create {}", path.display())
            })?))
        }
        None => None,
    });
    let mut tally = Tally::default();
    let mut pending = VecDeque::new();
    let mut rng = Splitmix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64),
    );
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let sources: Vec<(String, Box<dyn BufRead>)> = if args.files.is_empty() {
        vec![("<stdin>".into(), Box::new(BufReader::new(std::io::stdin())))]
    } else {
        let mut v: Vec<(String, Box<dyn BufRead>)> = Vec::new();
        for path in &args.files {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            v.push((path.display().to_string(), Box::new(BufReader::new(file))));
        }
        v
    };
    for (source, reader) in sources {
        for (index, line) in reader.split(b'\n').enumerate() {
            let line_no = index + 1;
            let mut bytes = line.with_context(|| format!("reading {source}"))?;
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
            let text = String::from_utf8_lossy(&bytes);
            let outcome = args.record(&text, &mut rng).and_then(|(pk, data)| {
                let put =
                    runtime.block_on(producer.put_record(&stream, pk.clone(), data.clone(), None));
                put.map(|future| (pk, data, future))
                    .map_err(|e| e.to_string())
            });
            match outcome {
                Ok((partition_key, data, future)) => {
                    tally.sent += 1;
                    pending.push_back(Pending {
                        source: source.clone(),
                        line: line_no,
                        partition_key,
                        data,
                        future,
                    });
                }
                Err(message) => {
                    tally.invalid += 1;
                    eprintln!("kpl put: {source}:{line_no}: {message}");
                    failed.write(json!({
                        "Source": source,
                        "Line": line_no,
                        "Data": BASE64.encode(&bytes),
                        "Error": message,
                        "Attempts": [],
                    }))?;
                }
            }
            settle(&mut pending, &mut tally, &mut failed, false)?;
            if !args.quiet && last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = Instant::now();
                progress(&tally, started);
            }
        }
    }
    runtime.block_on(producer.flush());
    settle(&mut pending, &mut tally, &mut failed, true)?;
    runtime.block_on(producer.shutdown(Duration::from_secs(5)));
    if let Some(w) = &mut failed.0 {
        w.flush()?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "kpl put: {} sent, {} acknowledged, {} failed, {} invalid lines, in {:.1} s ({:.0} records/s)",
        tally.sent,
        tally.acknowledged,
        tally.failed,
        tally.invalid,
        secs,
        tally.acknowledged as f64 / secs.max(1e-9)
    );
    Ok(if tally.failed + tally.invalid > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn progress(t: &Tally, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "kpl put: {} sent, {} acknowledged, {} failed, {:.0} records/s",
        t.sent,
        t.acknowledged,
        t.failed,
        t.acknowledged as f64 / secs
    );
}

//! `kpl agg`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine;
use kpl::codec::{
    AGGREGATED_PARTITION_KEY, AggregateBuilder, HashKey, MAX_RECORD_SIZE_CEILING, RecordLimits,
    UserRecord,
};
use serde::{Deserialize, Serialize};

use crate::input::{BASE64, InvalidInput, for_each_line};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Largest aggregated record, in bytes, counting its Data and its partition
    /// key as Kinesis counts them against the record limit (bounded as the KPL's
    /// AggregationMaxSize, up to the largest record a stream takes). A record
    /// bigger than this goes out alone.
    #[arg(long, default_value_t = default_max_size(), value_parser = parse_max_size)]
    max_size: usize,
    /// Most user records in one aggregate (at least 1; the KPL's AggregationMaxCount).
    #[arg(long, default_value_t = u32::MAX as u64, value_parser = clap::value_parser!(u64).range(1..))]
    max_count: u64,
    /// Largest user record accepted (data plus partition key bytes), up to the
    /// largest record a stream takes, as the stream's max record size.
    #[arg(long, default_value_t = kpl::codec::DEFAULT_MAX_RECORD_SIZE, value_parser = parse_record_size)]
    max_record_size: usize,
    /// Files of JSON lines; standard input when none.
    files: Vec<PathBuf>,
}

/// The producer's AggregationMaxSize.
fn default_max_size() -> usize {
    kpl::Config::default().aggregation_max_size()
}

/// A size no record can exceed (the largest record a stream takes), within the
/// bounds the producer checks for AggregationMaxSize.
fn parse_max_size(text: &str) -> Result<usize, String> {
    let value: usize = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    if value > MAX_RECORD_SIZE_CEILING {
        return Err(format!(
            "{value} is more than the largest record a stream takes ({MAX_RECORD_SIZE_CEILING} bytes)"
        ));
    }
    kpl::Config::builder()
        .aggregation_max_size(value)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(value)
}

fn parse_record_size(text: &str) -> Result<usize, String> {
    let value: usize = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    RecordLimits::new(value).map_err(|e| e.to_string())?;
    Ok(value)
}

#[derive(Deserialize)]
struct Input {
    #[serde(rename = "PartitionKey")]
    partition_key: String,
    #[serde(rename = "ExplicitHashKey", default)]
    explicit_hash_key: Option<String>,
    #[serde(rename = "Data")]
    data: String,
}

#[derive(Serialize)]
struct Output {
    #[serde(rename = "PartitionKey")]
    partition_key: String,
    #[serde(rename = "ExplicitHashKey")]
    explicit_hash_key: Option<String>,
    #[serde(rename = "Data")]
    data: String,
}

pub(crate) fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let limits = RecordLimits::new(args.max_record_size)?;
    let mut builder: AggregateBuilder = AggregateBuilder::new();
    for_each_line(&args.files, |source, line, text| {
        let record = parse(text, &limits).map_err(|message| InvalidInput {
            source: source.to_owned(),
            line,
            message,
        })?;
        // With a record already in, adding one makes an aggregate, sent with its
        // own partition key: Kinesis counts both.
        let full = !builder.is_empty()
            && (builder.len() as u64 >= args.max_count
                || builder.size_with(&record) + AGGREGATED_PARTITION_KEY.len() > args.max_size);
        if full {
            emit(&mut builder, out)?;
        }
        builder.add(record);
        Ok(())
    })?;
    emit(&mut builder, out)?;
    Ok(ExitCode::SUCCESS)
}

fn parse(text: &str, limits: &RecordLimits) -> Result<UserRecord, String> {
    let input: Input = serde_json::from_str(text).map_err(|e| {
        format!(
            "not a user record: {e} (expected {{\"PartitionKey\": ..., \"ExplicitHashKey\": ...?, \"Data\": base64}})"
        )
    })?;
    let data = BASE64
        .decode(&input.data)
        .map_err(|e| format!("Data is not valid base64: {e}"))?;
    let explicit = limits
        .validate(
            &input.partition_key,
            input.explicit_hash_key.as_deref(),
            data.len(),
        )
        .map_err(|e| crate::bench::without_repeats(&e))?;
    let mut record = UserRecord::new(input.partition_key, data);
    record.explicit_hash_key = explicit;
    Ok(record)
}

fn emit(builder: &mut AggregateBuilder, out: &mut impl Write) -> anyhow::Result<()> {
    if let Some(record) = builder.encode() {
        // Made whole before it is written, so that a failed write is the output's
        // own error (a reader gone is told from the rest).
        let mut line = serde_json::to_vec(&Output {
            partition_key: record.partition_key,
            explicit_hash_key: record.explicit_hash_key.map(|k: HashKey| k.to_string()),
            data: BASE64.encode(&record.data),
        })?;
        line.push(b'\n');
        out.write_all(&line)?;
    }
    builder.clear();
    Ok(())
}

//! `kpl deagg`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::input::{BASE64, InvalidInput, for_each_line};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Report malformed lines on standard error and go on, instead of stopping.
    #[arg(long)]
    skip_invalid: bool,
    /// Files of JSON lines; standard input when none.
    files: Vec<PathBuf>,
}

#[derive(Deserialize)]
struct Record {
    #[serde(rename = "Data")]
    data: String,
    #[serde(rename = "PartitionKey")]
    partition_key: String,
    #[serde(rename = "ExplicitHashKey", default)]
    explicit_hash_key: Option<String>,
    #[serde(rename = "SequenceNumber", default)]
    sequence_number: Option<String>,
}

#[derive(Serialize)]
struct Output<'a> {
    #[serde(rename = "PartitionKey")]
    partition_key: &'a str,
    #[serde(rename = "ExplicitHashKey")]
    explicit_hash_key: Option<&'a str>,
    #[serde(rename = "Data")]
    data: String,
    #[serde(rename = "SequenceNumber")]
    sequence_number: Option<&'a str>,
    #[serde(rename = "SubSequenceNumber")]
    sub_sequence_number: Option<u64>,
    #[serde(rename = "Aggregated")]
    aggregated: bool,
}

pub(crate) fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let mut skipped = 0usize;
    for_each_line(&args.files, |source, line, text| {
        let mut buffer = Vec::new();
        match deaggregate_line(text, &mut buffer) {
            Ok(()) => {
                out.write_all(&buffer)?;
                Ok(())
            }
            Err(message) => {
                let err = InvalidInput {
                    source: source.to_owned(),
                    line,
                    message,
                };
                if args.skip_invalid {
                    crate::say!("kpl deagg: skipped {err}");
                    skipped += 1;
                    Ok(())
                } else {
                    Err(err.into())
                }
            }
        }
    })?;
    if skipped > 0 {
        crate::say!("kpl deagg: skipped {skipped} invalid line(s)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the user records of one input line into `out`, or says what is wrong with
/// it (nothing is written for a bad line).
fn deaggregate_line(text: &str, out: &mut Vec<u8>) -> Result<(), String> {
    const EXPECTED: &str =
        "expected {\"Data\": base64, \"PartitionKey\": ...} or {\"Records\": [...]}";
    let mut value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let records: Vec<Record> = match value.get_mut("Records") {
        Some(records) => serde_json::from_value(records.take())
            .map_err(|e| format!("Records is not a list of Kinesis records: {e} ({EXPECTED})"))?,
        None => vec![
            serde_json::from_value(value)
                .map_err(|e| format!("not a Kinesis record: {e} ({EXPECTED})"))?,
        ],
    };
    for (index, record) in records.iter().enumerate() {
        let at = |msg: String| {
            if records.len() > 1 {
                format!("record {index}: {msg}")
            } else {
                msg
            }
        };
        let data = BASE64
            .decode(&record.data)
            .map_err(|e| at(format!("Data is not valid base64: {e}")))?;
        let aggregated = kpl::codec::is_aggregated(&data);
        let users = kpl::codec::deaggregate(
            &record.partition_key,
            record.explicit_hash_key.as_deref(),
            &data,
        )
        .map_err(|e| at(e.to_string()))?;
        for user in users {
            serde_json::to_writer(
                &mut *out,
                &Output {
                    partition_key: user.partition_key,
                    explicit_hash_key: user.explicit_hash_key,
                    data: BASE64.encode(user.data),
                    sequence_number: record.sequence_number.as_deref(),
                    sub_sequence_number: user.sub_sequence_number,
                    aggregated,
                },
            )
            .map_err(|e| e.to_string())?;
            out.push(b'\n');
        }
    }
    Ok(())
}

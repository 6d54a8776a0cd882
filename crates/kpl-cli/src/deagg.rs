//! `kpl deagg`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine;
use kpl::codec::{DecodeError, DecodeErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::input::{BASE64, InvalidInput, for_each_line};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Report malformed lines and records on standard error and go on, instead of
    /// stopping; each record of a GetRecords page is kept or skipped on its own.
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

/// What cannot be read: a whole line (not JSON, not a record or a page of
/// records), or one record (alone on its line or in a page).
enum Defect {
    Line(String),
    Record(String),
}

impl Defect {
    fn into_message(self) -> String {
        match self {
            Defect::Line(m) | Defect::Record(m) => m,
        }
    }
}

pub(crate) fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let (mut lines_skipped, mut records_skipped, mut passed_through) = (0usize, 0usize, 0usize);
    for_each_line(&args.files, |source, line, text| {
        let mut buffer = Vec::new();
        let result = deaggregate_line(
            text,
            &mut buffer,
            |message| {
                passed_through += 1;
                crate::say!(
                    "kpl deagg: {source}:{line}: {message}: written as a plain record (Aggregated false), as the KCL reads it"
                );
            },
            |defect| {
                if !args.skip_invalid {
                    return Err(defect);
                }
                match defect {
                    Defect::Line(_) => lines_skipped += 1,
                    Defect::Record(_) => records_skipped += 1,
                }
                crate::say!(
                    "kpl deagg: skipped {source}:{line}: {}",
                    defect.into_message()
                );
                Ok(())
            },
        );
        // The records before a defect that stops the run are written.
        out.write_all(&buffer)?;
        result.map_err(|defect| {
            InvalidInput {
                source: source.to_owned(),
                line,
                message: defect.into_message(),
            }
            .into()
        })
    })?;
    if passed_through > 0 {
        crate::say!(
            "kpl deagg: {} with the aggregation magic bytes but no valid aggregate written as plain {}",
            count(passed_through, "record"),
            if passed_through == 1 {
                "record"
            } else {
                "records"
            }
        );
    }
    if records_skipped + lines_skipped > 0 {
        crate::say!(
            "kpl deagg: {} and {} skipped as invalid",
            count(records_skipped, "record"),
            count(lines_skipped, "line")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `1 record`, `2 records`.
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

const EXPECTED: &str = "expected {\"Data\": base64, \"PartitionKey\": ...} or {\"Records\": [...]}";

/// Writes the user records of one input line into `out`, record by record. A record
/// that starts with the aggregation magic bytes but is no valid aggregate is written
/// as a plain record, as the KCL and aws-kinesis-agg read it, and told to
/// `passed_through`. Each defect is given to `defect`, which says whether to go on
/// (the defective line or record is then left out) or to stop with it.
fn deaggregate_line(
    text: &str,
    out: &mut Vec<u8>,
    mut passed_through: impl FnMut(String),
    mut defect: impl FnMut(Defect) -> Result<(), Defect>,
) -> Result<(), Defect> {
    let mut value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => return defect(Defect::Line(format!("not JSON: {e}"))),
    };
    let (records, page) = match value.get_mut("Records") {
        Some(Value::Array(records)) => (std::mem::take(records), true),
        Some(_) => {
            return defect(Defect::Line(format!("Records is not a list ({EXPECTED})")));
        }
        None => (vec![value], false),
    };
    for (index, record) in records.into_iter().enumerate() {
        let at = |message: String| {
            if page {
                format!("record {index}: {message}")
            } else {
                message
            }
        };
        let record: Record = match serde_json::from_value(record) {
            Ok(record) => record,
            Err(e) => {
                let message = at(format!("not a Kinesis record: {e} ({EXPECTED})"));
                defect(if page {
                    Defect::Record(message)
                } else {
                    Defect::Line(message)
                })?;
                continue;
            }
        };
        if let Err(message) = write_record(&record, out, |m| passed_through(at(m))) {
            defect(Defect::Record(at(message)))?;
        }
    }
    Ok(())
}

/// Writes the user records of one Kinesis record into `out`, or says what is wrong
/// with it (nothing is written then).
fn write_record(
    record: &Record,
    out: &mut Vec<u8>,
    passed_through: impl FnOnce(String),
) -> Result<(), String> {
    let data = BASE64
        .decode(&record.data)
        .map_err(|e| format!("Data is not valid base64: {e}"))?;
    let mut write = |partition_key, explicit_hash_key, data, sub_sequence_number| {
        serde_json::to_writer(
            &mut *out,
            &Output {
                partition_key,
                explicit_hash_key,
                data: BASE64.encode(data),
                sequence_number: record.sequence_number.as_deref(),
                sub_sequence_number,
                aggregated: sub_sequence_number.is_some(),
            },
        )
        .map_err(|e| e.to_string())?;
        out.push(b'\n');
        Ok::<(), String>(())
    };
    let explicit_hash_key = record.explicit_hash_key.as_deref();
    match kpl::codec::deaggregate(&record.partition_key, explicit_hash_key, &data) {
        Ok(users) => {
            for user in users {
                write(
                    user.partition_key,
                    user.explicit_hash_key,
                    user.data,
                    user.sub_sequence_number,
                )?;
            }
            Ok(())
        }
        Err(e) if not_an_aggregate(&e) => {
            passed_through(format!(
                "starts with the aggregation magic bytes but is no valid aggregate ({e})"
            ));
            write(&record.partition_key, explicit_hash_key, &data, None)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Whether a decoding error makes the KCL read the record as a plain one: a digest
/// that does not match, or a body that is no `AggregatedRecord` message. A valid
/// message whose key index points past its table is an error for the KCL too.
fn not_an_aggregate(e: &DecodeError) -> bool {
    matches!(
        e.kind(),
        DecodeErrorKind::ChecksumMismatch
            | DecodeErrorKind::Truncated
            | DecodeErrorKind::VarintOverflow
            | DecodeErrorKind::InvalidTag
            | DecodeErrorKind::InvalidUtf8
            | DecodeErrorKind::MissingField
    )
}

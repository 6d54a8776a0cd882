//! `kpl`: the kpl-rs command line.
//!
//! - `kpl deagg`: read Kinesis records (as GetRecords returns them) and print their
//!   user records.
//! - `kpl agg`: pack user records into Kinesis records in the KPL aggregated format.

#![forbid(unsafe_code)]

mod agg;
mod deagg;
mod input;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code of a run stopped by bad input.
const EXIT_INVALID_INPUT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "kpl",
    version,
    about = "Kinesis Producer Library tools: aggregate and de-aggregate Kinesis records"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// De-aggregate Kinesis records into user records.
    ///
    /// Reads JSON lines (standard input when no FILE is given). Each line is one
    /// Kinesis record as GetRecords and the AWS CLI return it,
    /// {"Data": BASE64, "PartitionKey": "...", "ExplicitHashKey": "..."?,
    /// "SequenceNumber": "..."?}, or a whole GetRecords response on one line,
    /// {"Records": [...]} (for pretty-printed output of the AWS CLI, pipe it through
    /// `jq -c .` first). Writes one JSON line per user record: {"PartitionKey",
    /// "ExplicitHashKey" (or null), "Data" (base64), "SequenceNumber" (or null),
    /// "SubSequenceNumber" (null for a record that was not aggregated), "Aggregated"}.
    ///
    /// A malformed line stops the run with exit code 2 and a message naming the line
    /// and the defect, unless --skip-invalid is given.
    Deagg(deagg::Args),
    /// Aggregate user records into Kinesis records.
    ///
    /// Reads JSON lines of user records, {"PartitionKey": "...", "ExplicitHashKey":
    /// "..."?, "Data": BASE64}, and writes JSON lines of Kinesis records,
    /// {"PartitionKey", "ExplicitHashKey", "Data"}. Consecutive records are packed in
    /// input order into aggregates of at most --max-size bytes and --max-count
    /// records; an aggregate's PartitionKey is "a" and its ExplicitHashKey the hash
    /// key of its first record; a record left alone goes out raw with its own keys.
    ///
    /// This command does not group records by shard: an aggregate holding keys of
    /// several shards lands on the shard of its first record, and KCL consumers drop
    /// the user records outside that shard's range. Feed it records of one shard (one
    /// explicit hash key range), or use the producer (kpl-producer), which aggregates
    /// per predicted shard.
    Agg(agg::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = match cli.command {
        Command::Deagg(args) => deagg::run(&args, &mut out),
        Command::Agg(args) => agg::run(&args, &mut out),
    };
    let result = result.and_then(|code| {
        out.flush()?;
        Ok(code)
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            if let Some(io_err) = err.downcast_ref::<io::Error>() {
                if io_err.kind() == io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("kpl: {err:#}");
            if err.is::<input::InvalidInput>() {
                ExitCode::from(EXIT_INVALID_INPUT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

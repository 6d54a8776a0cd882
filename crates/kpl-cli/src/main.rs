//! `kpl`: the kpl-rs command line.
//!
//! - `kpl put`: lines or JSON lines from a shell into a stream, through the producer.
//! - `kpl bench`: synthetic records through the whole producer, measured.
//! - `kpl deagg`: read Kinesis records (as GetRecords returns them) and print their
//!   user records.
//! - `kpl agg`: pack user records into Kinesis records in the KPL aggregated format.

#![forbid(unsafe_code)]

mod agg;
mod bench;
mod deagg;
mod input;
mod out;
mod pick;
mod put;
mod settings;

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
    /// More log output on standard error: -v for each request, retry, backoff and
    /// congestion-window change; -vv for everything. `RUST_LOG` (e.g.
    /// `RUST_LOG=kpl_producer=debug`) overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// Logs go to standard error through `tracing`: warnings by default (retries that
/// persist, failing ListShards), more with `-v`, or what `RUST_LOG` says.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "warn,kpl_producer=debug,kpl_transport=debug",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(out::LogWriter)
        .log_internal_errors(false)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_target(true)
        .try_init();
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Put records into a stream, one per input line, through the producer.
    ///
    /// Reads standard input or files: lines (`--format lines`, the default; a record's
    /// data is the line without its newline) or JSON lines (`--format json`, with
    /// `--pk-field` and optionally `--data-field`). Region and credentials come from
    /// the standard AWS chain. A progress line goes to standard error every second
    /// (on a terminal, or with --progress), a summary at the end. Nothing is lost:
    /// every record that finally fails, and every invalid input line, is reported
    /// and written to `--failed FILE` (JSON lines with the attempts); the exit code
    /// is 1 if any record failed, 128 + signal after SIGINT, SIGTERM or SIGHUP.
    Put(put::Args),
    /// Benchmark the whole producer with synthetic records.
    ///
    /// By default into an embedded simulated stream (no network, no credentials)
    /// with its shard limits on; `--no-limits` measures the producer alone;
    /// `--endpoint URL --stream NAME` targets a real peer. Reports records/s, MB/s,
    /// CPU seconds per million records, put-to-outcome latency, batching, retries,
    /// failures and peak memory; in embedded mode it checks that every acknowledged
    /// record arrived exactly once.
    Bench(bench::Args),
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
    /// A record whose data starts with the aggregation magic bytes but is no valid
    /// aggregate (bad checksum or protobuf) is written as a plain record, as the KCL
    /// reads it. A malformed line or record stops the run with exit code 2 and a
    /// message naming the line and the defect, unless --skip-invalid is given (then
    /// it is skipped, record by record, and counted at the end).
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
    init_logging(cli.verbose);
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = match cli.command {
        Command::Put(args) => put::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Deagg(args) => deagg::run(&args, &mut out),
        Command::Agg(args) => agg::run(&args, &mut out),
    };
    let result = result.and_then(|code| {
        out.flush()?;
        Ok(code)
    });
    let code = match result {
        Ok(code) => code,
        // Standard output's reader went away (`| head -1`): stop quietly, as Unix
        // tools killed by SIGPIPE do.
        Err(err) if out::is_broken_pipe(&err) => return ExitCode::from(out::EXIT_BROKEN_PIPE),
        Err(err) => {
            say!("kpl: {err:#}");
            if err.is::<input::InvalidInput>() {
                ExitCode::from(EXIT_INVALID_INPUT)
            } else {
                ExitCode::FAILURE
            }
        }
    };
    // Messages that could not be written are a failure of the run, even when
    // everything else succeeded.
    if code == ExitCode::SUCCESS && out::stderr_lost() {
        ExitCode::FAILURE
    } else {
        code
    }
}

//! Running the `kpl` command as a user runs it, with the test environment. The
//! binary's path is given (`env!("CARGO_BIN_EXE_kpl")` in kpl-cli's tests, a built
//! binary in xtask).

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

use crate::peers::TEST_CREDENTIALS;

/// Variables of the caller's environment a test run must not inherit: proxies (only
/// loopback, only what the test names), profiles, other credentials and logging.
const NOT_INHERITED: [&str; 9] = [
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "https_proxy",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "RUST_LOG",
];

/// `bin` as a command with the test environment: test credentials, no instance
/// metadata, none of the caller's proxies, profile or `RUST_LOG`; standard input
/// empty, standard output and error piped (each can be set again).
pub fn command(bin: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(bin);
    for name in NOT_INHERITED {
        cmd.env_remove(name);
    }
    cmd.envs(TEST_CREDENTIALS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` to its end with `stdin` as its standard input, fed from another
/// thread (so a child that writes much while it reads cannot block on a full pipe,
/// and one that stops reading early is no error).
pub fn run(cmd: &mut Command, stdin: impl Into<Vec<u8>>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let input = stdin.into();
    let writer = child.stdin.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        })
    });
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}"));
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    output
}

/// The arguments of `kpl put` of the stream `s` at `endpoint`, in us-east-1, then
/// `extra`.
pub fn put_args<'a>(endpoint: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "put",
        "--stream",
        "s",
        "--endpoint",
        endpoint,
        "--region",
        "us-east-1",
    ];
    v.extend_from_slice(extra);
    v
}

/// Sends `signal` (a name such as `TERM`, or a number) to process `pid`, with
/// kill(1).
pub fn signal(pid: u32, signal: &str) -> Result<(), crate::Error> {
    let out = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| crate::Error::caused("cannot run kill", e))?;
    if !out.status.success() {
        return Err(crate::Error::new(format!(
            "kill -{signal} {pid} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Waits for `child` to end, reading its piped standard error first: its exit
/// code (`None` when a signal ended it) and what it wrote there.
pub fn wait_with_stderr(mut child: Child) -> (Option<i32>, String) {
    let mut err = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_end(&mut err)
            .unwrap_or_else(|e| panic!("reading the standard error of {}: {e}", child.id()));
    }
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("waiting for {}: {e}", child.id()));
    (status.code(), String::from_utf8_lossy(&err).into_owned())
}

/// Every line of the failed file `kpl put --failed` wrote, each a whole JSON
/// object; panics, naming the line, on a torn one (or on no file).
pub fn failed_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.is_empty() || text.ends_with(b"\n"),
        "the failed file {} ends with a torn line",
        path.display()
    );
    String::from_utf8_lossy(&text)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}")))
        .collect()
}

/// The `Line` of each failed line, sorted.
pub fn line_numbers(lines: &[Value]) -> Vec<u64> {
    let mut numbers: Vec<u64> = lines
        .iter()
        .map(|l| {
            l["Line"]
                .as_u64()
                .unwrap_or_else(|| panic!("no Line in {l}"))
        })
        .collect();
    numbers.sort_unstable();
    numbers
}

/// What `kpl put --summary-json FILE` wrote: the run's numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Records handed to the producer.
    pub sent: u64,
    /// Records the stream acknowledged.
    pub acknowledged: u64,
    /// Records that failed for good.
    pub failed: u64,
    /// Lines that were no valid record.
    pub invalid: u64,
    /// Lines read but not sent (a signal cut the run short).
    pub not_sent: u64,
    /// Acknowledged records that may have been stored twice.
    pub possibly_stored_twice: u64,
    /// Failed records that may have been stored.
    pub failed_but_possibly_stored: u64,
    /// Failures by error code.
    pub failures_by_code: Vec<(String, u64)>,
    /// Seconds the run took.
    pub seconds: f64,
    /// Whether the input was read to its end.
    pub reading_finished: bool,
    /// The signal that stopped the run, if one did.
    pub signal: Option<i64>,
    /// The exit code the run chose.
    pub exit_code: i64,
    /// Peak resident memory, where the platform tells it.
    pub peak_resident_bytes: Option<u64>,
    /// Verify before resend: the reads made (GetRecords), the Kinesis records found
    /// stored, and those resent unverified (zeros when it was off, or the summary
    /// predates it).
    pub verify_reads: u64,
    /// See [`verify_reads`](Self::verify_reads).
    pub verify_found: u64,
    /// See [`verify_reads`](Self::verify_reads).
    pub verify_unsettled: u64,
}

impl Summary {
    /// Reads the summary file `path`.
    pub fn read(path: &Path) -> Result<Summary, crate::Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::Error::caused(format!("no summary at {}", path.display()), e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            crate::Error::caused(format!("the summary {} is not JSON", path.display()), e)
        })?;
        Summary::from_json(&v)
    }

    /// The summary in `v`; an error names the first key missing.
    pub fn from_json(v: &Value) -> Result<Summary, crate::Error> {
        let missing = |k: &str| crate::Error::new(format!("the summary has no {k}: {v}"));
        let n = |k: &str| v[k].as_u64().ok_or_else(|| missing(k));
        Ok(Summary {
            sent: n("sent")?,
            acknowledged: n("acknowledged")?,
            failed: n("failed")?,
            invalid: n("invalid")?,
            not_sent: n("not_sent")?,
            possibly_stored_twice: n("possibly_stored_twice")?,
            failed_but_possibly_stored: n("failed_but_possibly_stored")?,
            failures_by_code: v["failures_by_code"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default(),
            seconds: v["seconds"].as_f64().ok_or_else(|| missing("seconds"))?,
            reading_finished: v["reading_finished"]
                .as_bool()
                .ok_or_else(|| missing("reading_finished"))?,
            signal: v["signal"].as_i64(),
            exit_code: v["exit_code"]
                .as_i64()
                .ok_or_else(|| missing("exit_code"))?,
            peak_resident_bytes: v["peak_resident_bytes"].as_u64(),
            verify_reads: v["verify"]["reads"].as_u64().unwrap_or(0),
            verify_found: v["verify"]["found"].as_u64().unwrap_or(0),
            verify_unsettled: v["verify"]["unsettled"].as_u64().unwrap_or(0),
        })
    }

    /// Lines read: sent, invalid or not sent.
    pub fn read_lines(&self) -> u64 {
        self.sent + self.invalid + self.not_sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_lines_are_read_whole_and_numbered() {
        let dir = crate::TempDir::new("failed-lines");
        let path = dir.join("failed.jsonl");
        std::fs::write(&path, "{\"Line\":3}\n{\"Line\":1}\n").unwrap();
        assert_eq!(line_numbers(&failed_lines(&path)), [1, 3]);
        std::fs::write(&path, "{\"Line\":3}\n{\"Li").unwrap();
        let torn = std::panic::catch_unwind(|| failed_lines(&path)).unwrap_err();
        let why = torn.downcast::<String>().unwrap();
        assert!(why.contains("torn"), "{why}");
    }

    #[test]
    fn a_signal_ends_a_child_and_its_code_says_so() {
        let child = Command::new("sleep")
            .arg("30")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        signal(child.id(), "TERM").unwrap();
        assert_eq!(wait_with_stderr(child), (None, String::new()));
        assert!(signal(u32::MAX / 2, "TERM").is_err());
    }

    #[test]
    fn a_summary_is_read_whole_or_not_at_all() {
        let v = serde_json::json!({
            "sent": 10, "acknowledged": 8, "failed": 1, "invalid": 2, "not_sent": 3,
            "possibly_stored_twice": 1, "failed_but_possibly_stored": 0,
            "failures_by_code": {"InternalFailure": 1}, "seconds": 1.5,
            "reading_finished": true, "signal": null, "exit_code": 1,
            "peak_resident_bytes": 1000,
        });
        let s = Summary::from_json(&v).unwrap();
        assert_eq!((s.acknowledged, s.read_lines(), s.exit_code), (8, 15, 1));
        assert_eq!(s.failures_by_code, [("InternalFailure".to_owned(), 1)]);
        assert_eq!(s.signal, None);
        let mut torn = v.clone();
        torn.as_object_mut().unwrap().remove("not_sent");
        let e = Summary::from_json(&torn).unwrap_err();
        assert!(e.to_string().contains("not_sent"), "{e}");
    }
}

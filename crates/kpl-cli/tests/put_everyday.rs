//! `kpl put` under everyday events (issue H): signals after the input was read,
//! SIGHUP, standard error closed or full, a failed file that exists or is another
//! input, a file-size limit, a line longer than any record, empty arguments. No
//! network: loopback ports of the test's own, where nothing listens (every request
//! fails to connect and is retried, so records stay outstanding).
//!
//! `KPL_TEST_BIN=/path/to/kpl` runs these against another build (to show that they
//! fail on the code before a fix).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{command, kpl_bin, spawn};
use kpl_tests::TempDir;
use kpl_tests::kpl::{failed_lines, line_numbers, signal, wait_with_stderr};
use kpl_tests::peers::dead_endpoint;
use serde_json::Value;

fn put_args(endpoint: &str, extra: &[&str]) -> Vec<String> {
    kpl_tests::kpl::put_args(endpoint, extra)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn input_file(dir: &Path, lines: usize) -> PathBuf {
    let path = dir.join("input.txt");
    let text: String = (1..=lines).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// A test's directory (named `name`) with an input of `lines` lines, where the
/// run's failed file goes, and an endpoint where nothing listens. The directory
/// lives as long as the value kept (`_dir`, not `_`).
fn setup(name: &str, lines: usize) -> (TempDir, PathBuf, PathBuf, String) {
    let dir = TempDir::new(name);
    let input = input_file(&dir, lines);
    let failed = dir.join("failed.jsonl");
    (dir, input, failed, dead_endpoint())
}

/// `kpl put`'s arguments for `endpoint`: `extra`, then `--failed FILE` and the
/// input.
fn failing_args(endpoint: &str, failed: &Path, input: &Path, extra: &[&str]) -> Vec<String> {
    let mut all = extra.to_vec();
    all.extend([
        "--failed",
        failed.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    put_args(endpoint, &all)
}

/// The first signal after the whole input was read (records still outstanding)
/// settles within the grace period and exits 128 + signal; every line is in the
/// failed file once; the summary says reading had finished.
fn first_signal_after_reading(name: &str, code: i32, number: u64, with_summary: bool) {
    let dir = TempDir::new(&format!("after-{name}-{with_summary}"));
    let input = input_file(&dir, 300);
    let failed = dir.join("failed.jsonl");
    let summary = dir.join("summary.json");
    let endpoint = dead_endpoint();
    // The default grace (no flag, so older builds take the same command line).
    let mut extra = vec![
        "--failed",
        failed.to_str().unwrap(),
        "--quiet",
        input.to_str().unwrap(),
    ];
    if with_summary {
        extra.extend(["--summary-json", summary.to_str().unwrap()]);
    }
    let args = put_args(&endpoint, &extra);
    let child = spawn(&strs(&args), Stdio::null(), Stdio::piped());
    // 300 lines are read in well under a second; the records wait on the dead
    // endpoint for their 30 s time to live.
    std::thread::sleep(Duration::from_millis(1_500));
    let t0 = Instant::now();
    signal(child.id(), name).unwrap();
    let (status, err) = wait_with_stderr(child);
    let took = t0.elapsed();
    assert_eq!(status, Some(code), "{err}");
    assert!(!err.contains("second signal"), "{err}");
    // The default grace (7 s) and about a second more: inside a container's stop.
    assert!(took < Duration::from_millis(9_500), "{took:?}: {err}");
    assert_eq!(
        line_numbers(&failed_lines(&failed)),
        (1..=300).collect::<Vec<u64>>(),
        "{err}"
    );
    if with_summary {
        let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        assert_eq!(s["reading_finished"], true, "{s}");
        assert_eq!(s["signal"], number, "{s}");
        assert_eq!(s["sent"], 300, "{s}");
        assert_eq!(s["failed"], 300, "{s}");
        assert_eq!(s["exit_code"], code, "{s}");
    }
}

#[test]
fn sigint_after_the_input_was_read_gets_the_grace_period() {
    first_signal_after_reading("INT", 130, 2, false);
}

#[test]
fn sigterm_after_the_input_was_read_gets_the_grace_period() {
    first_signal_after_reading("TERM", 143, 15, false);
}

#[test]
fn sighup_after_the_input_was_read_gets_the_grace_period() {
    first_signal_after_reading("HUP", 129, 1, false);
}

/// The machine-readable summary says the signal came after reading finished.
#[test]
fn the_summary_json_says_a_signal_came_after_reading_finished() {
    first_signal_after_reading("TERM", 143, 15, true);
}

/// A closing terminal while reading: SIGHUP is handled like SIGTERM.
#[test]
fn sighup_while_reading_settles_every_line_read() {
    let dir = TempDir::new("hup-reading");
    let failed = dir.join("failed.jsonl");
    let endpoint = dead_endpoint();
    let args = put_args(
        &endpoint,
        &[
            "--failed",
            failed.to_str().unwrap(),
            "--shutdown-timeout",
            "500",
            "--quiet",
        ],
    );
    let mut child = spawn(&strs(&args), Stdio::piped(), Stdio::piped());
    let mut stdin = child.stdin.take().unwrap();
    let input: String = (1..=1_000).map(|i| format!("line {i}\n")).collect();
    stdin.write_all(input.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(1_000));
    signal(child.id(), "HUP").unwrap();
    let (status, err) = wait_with_stderr(child);
    drop(stdin);
    assert_eq!(status, Some(129), "{err}");
    assert!(err.contains("stopped by SIGHUP"), "{err}");
    assert_eq!(
        line_numbers(&failed_lines(&failed)),
        (1..=1_000).collect::<Vec<u64>>(),
        "{err}"
    );
}

/// Records that fail within a short time to live, with logs and progress on.
fn put_with_stderr(stderr: Stdio, name: &str) -> (Option<i32>, Vec<Value>) {
    let (_dir, input, failed, endpoint) = setup(name, 2_000);
    let args = failing_args(
        &endpoint,
        &failed,
        &input,
        &[
            // Logs from the start (ListShards failing), so stderr is written to
            // before and while records settle.
            "-v",
            "--record-ttl",
            "1500",
        ],
    );
    let child = spawn(&strs(&args), Stdio::null(), stderr);
    // A run that hangs (a logger that panicked inside a runtime worker) is killed.
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kpl put still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines = failed_lines(&failed);
    (status, lines)
}

#[test]
fn stderr_on_a_full_device_loses_no_record() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let (status, lines) = put_with_stderr(Stdio::from(full), "stderr-full");
    assert_ne!(status, Some(101), "panicked");
    assert_ne!(status, Some(0));
    assert!(status.is_some(), "killed by a signal");
    assert_eq!(line_numbers(&lines), (1..=2_000).collect::<Vec<u64>>());
}

#[test]
fn stderr_closed_loses_no_record() {
    // A pipe whose reader is gone before anything is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let (status, lines) = put_with_stderr(Stdio::from(writer), "stderr-closed");
    assert_ne!(status, Some(101), "panicked");
    assert_ne!(status, Some(0));
    assert!(status.is_some(), "killed by a signal");
    assert_eq!(line_numbers(&lines), (1..=2_000).collect::<Vec<u64>>());
}

fn quick_put(args: &[String]) -> Output {
    command(&strs(args))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// A run whose records all fail within a second.
fn failing_run(endpoint: &str, failed: &Path, input: &Path, extra: &[&str]) -> Output {
    let mut more = vec!["--quiet", "--record-ttl", "500"];
    more.extend_from_slice(extra);
    quick_put(&failing_args(endpoint, failed, input, &more))
}

#[test]
fn an_existing_failed_file_is_refused_unless_appending_or_overwriting() {
    let (_dir, input, failed, endpoint) = setup("existing", 10);
    std::fs::write(&failed, "{\"earlier\":1}\n").unwrap();
    let out = failing_run(&endpoint, &failed, &input, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--append-failed"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&failed).unwrap(),
        "{\"earlier\":1}\n"
    );

    let out = failing_run(&endpoint, &failed, &input, &["--append-failed"]);
    assert_eq!(out.status.code(), Some(1));
    let lines = failed_lines(&failed);
    assert_eq!(lines.len(), 11);
    assert_eq!(lines[0]["earlier"], 1);

    let out = failing_run(&endpoint, &failed, &input, &["--overwrite-failed"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        line_numbers(&failed_lines(&failed)),
        (1..=10).collect::<Vec<u64>>()
    );
    // An empty file is no one's data: it is used as it is.
    std::fs::write(&failed, "").unwrap();
    let out = failing_run(&endpoint, &failed, &input, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(failed_lines(&failed).len(), 10);
}

#[test]
fn a_failed_file_that_is_another_input_of_the_run_is_refused() {
    let dir = TempDir::new("inputs");
    let input = input_file(&dir, 10);
    let endpoint = dead_endpoint();
    let properties = dir.join("kpl.properties");
    let properties_text = "RecordTtl = 500\n";
    std::fs::write(&properties, properties_text).unwrap();
    let ca = dir.join("ca.pem");
    let ca_text = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .unwrap()
        .cert
        .pem();
    std::fs::write(&ca, &ca_text).unwrap();
    let hard = dir.join("hard-link.txt");
    std::fs::hard_link(&input, &hard).unwrap();
    let soft = dir.join("symlink.txt");
    std::os::unix::fs::symlink(&input, &soft).unwrap();
    let input_text = std::fs::read_to_string(&input).unwrap();
    let cases: Vec<(&Path, Vec<&str>, &str)> = vec![
        (
            &properties,
            vec!["--kpl-properties", properties.to_str().unwrap()],
            "--kpl-properties",
        ),
        (&ca, vec!["--ca-file", ca.to_str().unwrap()], "--ca-file"),
        (&hard, vec![], "an input"),
        (&soft, vec![], "an input"),
    ];
    for (failed, extra, what) in cases {
        for mode in [
            &[][..],
            &["--overwrite-failed"][..],
            &["--append-failed"][..],
        ] {
            let mut all = extra.clone();
            all.extend_from_slice(mode);
            let out = failing_run(&endpoint, failed, &input, &all);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{failed:?} {mode:?}");
            assert!(err.contains(what), "{failed:?} {mode:?}: {err}");
        }
        assert_eq!(std::fs::read_to_string(&input).unwrap(), input_text);
        assert_eq!(
            std::fs::read_to_string(&properties).unwrap(),
            properties_text
        );
        assert_eq!(std::fs::read_to_string(&ca).unwrap(), ca_text);
    }
}

/// Two runs appending to one failed file at the same time: whole lines only.
#[test]
fn two_runs_appending_to_one_failed_file_tear_no_line() {
    let (_dir, input, failed, endpoint) = setup("two-writers", 5_000);
    let spawn = || {
        let args = failing_args(
            &endpoint,
            &failed,
            &input,
            &["--quiet", "--record-ttl", "800", "--append-failed"],
        );
        spawn(&strs(&args), Stdio::null(), Stdio::null())
    };
    let (mut a, mut b) = (spawn(), spawn());
    assert_eq!(a.wait().unwrap().code(), Some(1));
    assert_eq!(b.wait().unwrap().code(), Some(1));
    let lines = failed_lines(&failed);
    assert_eq!(lines.len(), 10_000);
    let mut numbers = line_numbers(&lines);
    numbers.dedup();
    assert_eq!(numbers, (1..=5_000).collect::<Vec<u64>>());
}

/// A file-size limit reached while writing the failed file: it holds whole lines,
/// and the records that did not fit go to standard error.
#[test]
fn a_file_size_limit_leaves_only_whole_lines() {
    let (_dir, input, failed, endpoint) = setup("fsize", 2_000);
    let args = failing_args(
        &endpoint,
        &failed,
        &input,
        &["--quiet", "--record-ttl", "500"],
    );
    // `ulimit -f` counts blocks of 512 bytes in sh and bash alike (POSIX).
    let script = format!(
        "ulimit -f 64; exec \"$0\" {}",
        args.iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = kpl_tests::kpl::command("sh")
        .args(["-c", &script, &kpl_bin()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let in_file = failed_lines(&failed);
    assert!(
        !in_file.is_empty() && in_file.len() < 2_000,
        "{}",
        in_file.len()
    );
    // The rest are on standard error, as whole JSON lines.
    let on_stderr: Vec<Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut all = in_file;
    all.extend(on_stderr);
    assert_eq!(line_numbers(&all), (1..=2_000).collect::<Vec<u64>>());
    assert!(err.contains("cannot write"), "{err}");
}

/// Runs `kpl put` on a 200 MB line with no newline, then a short one.
fn put_a_200_mb_line(with_summary: bool) -> (Option<i32>, String, Vec<Value>, u64, Option<Value>) {
    let dir = TempDir::new(&format!("long-line-{with_summary}"));
    let failed = dir.join("failed.jsonl");
    let summary = dir.join("summary.json");
    let endpoint = dead_endpoint();
    let mut extra = vec![
        "--quiet",
        "--record-ttl",
        "500",
        "--failed",
        failed.to_str().unwrap(),
    ];
    if with_summary {
        extra.extend(["--summary-json", summary.to_str().unwrap()]);
    }
    let args = put_args(&endpoint, &extra);
    let mut child = spawn(&strs(&args), Stdio::piped(), Stdio::piped());
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let block = vec![b'x'; 1 << 20];
        for _ in 0..200 {
            stdin.write_all(&block)?;
        }
        stdin.write_all(b"\nshort line\n")
    });
    let (status, err) = wait_with_stderr(child);
    let fed = feeder.join().unwrap();
    assert!(fed.is_ok(), "{fed:?}: {err}");
    let lines = failed_lines(&failed);
    let size = std::fs::metadata(&failed).unwrap().len();
    let s = with_summary
        .then(|| serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap());
    (status, err, lines, size, s)
}

/// A line longer than any record is reported by its length (not held whole, not
/// written to the failed file); the line after it is sent.
#[test]
fn a_line_longer_than_any_record_is_reported_without_being_held() {
    let (status, err, lines, size, _) = put_a_200_mb_line(false);
    assert_eq!(status, Some(1), "{err}");
    assert_eq!(lines.len(), 2, "{err}");
    let long = lines.iter().find(|l| l["Line"] == 1).unwrap();
    assert_eq!(long["Error"], "LineTooLong");
    assert_eq!(long["Length"], 200u64 << 20);
    assert!(long.get("Data").is_none());
    assert!(size < 2_048, "failed file of {size} bytes");
}

/// Memory stays under the documented bound (256 MB) with a 200 MB line.
#[test]
fn a_200_mb_line_keeps_memory_under_the_bound() {
    let (status, err, _, _, s) = put_a_200_mb_line(true);
    assert_eq!(status, Some(1), "{err}");
    let s = s.unwrap();
    assert_eq!(s["invalid"], 1, "{s}");
    assert_eq!(s["sent"], 1, "{s}");
    let peak = s["peak_resident_bytes"]
        .as_u64()
        .expect("peak memory known");
    assert!(peak < 256 << 20, "peak resident {peak} bytes");
}

#[test]
fn an_empty_partition_key_is_refused_at_start() {
    let endpoint = dead_endpoint();
    let t0 = Instant::now();
    let out = quick_put(&put_args(&endpoint, &["--partition-key", ""]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--partition-key"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn the_summary_says_what_a_zero_shutdown_timeout_did() {
    let (_dir, input, failed, endpoint) = setup("zero", 50);
    let out = failing_run(&endpoint, &failed, &input, &["--shutdown-timeout", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--shutdown-timeout 0"), "{err}");
    assert_eq!(failed_lines(&failed).len(), 50);
}

/// A KPL user's file without MetricsLevel is told that metrics are off here (the
/// KPL's default uploads detailed metrics); not when the command line sets it.
#[test]
fn a_properties_file_without_metrics_level_says_metrics_are_off() {
    let dir = TempDir::new("metrics-level");
    let input = input_file(&dir, 5);
    let failed = dir.join("failed.jsonl");
    let properties = dir.join("kpl.properties");
    std::fs::write(&properties, "RecordTtl = 500\n").unwrap();
    let endpoint = dead_endpoint();
    let p = properties.to_str().unwrap();
    let out = failing_run(&endpoint, &failed, &input, &["--kpl-properties", p]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kpl.properties: MetricsLevel: not given"),
        "{err}"
    );
    assert!(err.contains("the KPL's default is detailed"), "{err}");
    std::fs::remove_file(&failed).unwrap();
    let out = failing_run(
        &endpoint,
        &failed,
        &input,
        &["--kpl-properties", p, "--metrics-level", "none"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("kpl.properties: MetricsLevel"), "{err}");
}

/// With `--progress`, a line each second also while records drain after the input
/// was read, until the last one settles.
#[test]
fn progress_goes_on_while_records_drain() {
    let (_dir, input, failed, endpoint) = setup("progress", 20);
    let args = failing_args(
        &endpoint,
        &failed,
        &input,
        &["--progress", "--record-ttl", "3500"],
    );
    let out = command(&strs(&args))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // 20 lines are read at once; the records wait 3.5 s for their time to live.
    let waiting = err
        .lines()
        .filter(|l| l.starts_with("kpl put: 20 sent, 0 acknowledged, 0 failed, 20 waiting"))
        .count();
    assert!(waiting >= 2, "{err}");
}

/// No credential source at all (no AWS variables, an empty home): said at start,
/// not after every record's time to live.
#[test]
fn no_credentials_at_all_are_said_at_start() {
    let dir = TempDir::new("no-credentials");
    let input = input_file(&dir, 10);
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let endpoint = dead_endpoint();
    let args = put_args(&endpoint, &["--quiet", input.to_str().unwrap()]);
    let t0 = Instant::now();
    let out = Command::new(kpl_bin())
        .args(&args)
        .env_clear()
        .env("HOME", &home)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // Never the instance metadata service: nothing leaves loopback.
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(err.to_lowercase().contains("credentials"), "{err}");
}

/// Records that expire after failed attempts: the summary names the last error
/// they met before (here a refused connection; a credential error the same way),
/// not only "Expired".
#[test]
fn the_summary_names_why_records_expired() {
    let (_dir, input, failed, endpoint) = setup("why-expired", 20);
    let out = failing_run(&endpoint, &failed, &input, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("failures by error code: Expired 20"), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("error before records expired:"))
        .unwrap_or_else(|| panic!("no reason given: {err}"));
    assert!(!line.contains("Expired error"), "{line}");
}

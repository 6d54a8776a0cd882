//! `kpl put` never loses or corrupts input: inputs are checked before anything is
//! sent, signals settle what was accepted, a failed file that cannot be written does
//! not lose records, and an endpoint that is not Kinesis fails at once. No network:
//! loopback ports of the test's own.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::kpl;
use serde_json::Value;

use kpl_tests::TempDir;
use kpl_tests::kpl::{failed_lines, line_numbers, signal, wait_with_stderr};
use kpl_tests::peers::dead_endpoint;

fn put_args<'a>(endpoint: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = kpl_tests::kpl::put_args(endpoint, &["--quiet"]);
    v.extend_from_slice(extra);
    v
}

#[test]
fn a_failed_file_that_is_an_input_is_refused_and_the_input_kept() {
    let dir = TempDir::new("same");
    let input = dir.join("in.txt");
    std::fs::write(&input, "one\ntwo\n").unwrap();
    let endpoint = dead_endpoint();
    let i = input.to_str().unwrap();
    // Through another spelling of the same path, too.
    let other = format!(
        "{}/../{}/in.txt",
        dir.display(),
        dir.file_name().unwrap().to_str().unwrap()
    );
    for failed in [i, other.as_str()] {
        let out = kpl(&put_args(&endpoint, &["--failed", failed, i]), "");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is also an input"), "{err}");
        assert_eq!(std::fs::read_to_string(&input).unwrap(), "one\ntwo\n");
    }
}

#[test]
fn every_input_is_opened_before_anything_is_sent() {
    let dir = TempDir::new("open");
    let good = dir.join("good.txt");
    std::fs::write(&good, "one\n").unwrap();
    let failed = dir.join("failed.jsonl");
    let endpoint = dead_endpoint();
    for bad in [dir.to_str().unwrap(), "/nonexistent/input.txt"] {
        let out = kpl(
            &put_args(
                &endpoint,
                &[
                    "--failed",
                    failed.to_str().unwrap(),
                    good.to_str().unwrap(),
                    bad,
                ],
            ),
            "",
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(bad), "names the input: {err}");
        assert!(!err.contains("sent,"), "nothing was sent: {err}");
        assert!(!failed.exists(), "the failed file is not even created");
    }
}

#[test]
fn json_lines_that_are_not_utf8_are_reported_bad_lines() {
    let dir = TempDir::new("utf8");
    let input = dir.join("in.jsonl");
    std::fs::write(&input, b"{\"a\":1}\n{\"a\":\"\xff\xfe\"}\n").unwrap();
    let failed = dir.join("failed.jsonl");
    let endpoint = dead_endpoint();
    let out = kpl(
        &put_args(
            &endpoint,
            &[
                "--format",
                "json",
                "--record-ttl",
                "200",
                "--failed",
                failed.to_str().unwrap(),
                input.to_str().unwrap(),
            ],
        ),
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in.jsonl:2: not UTF-8"), "{err}");
    let lines = failed_lines(&failed);
    assert_eq!(lines.len(), 2);
    let bad = lines.iter().find(|l| l["Line"] == 2).unwrap();
    assert_eq!(bad["Error"], "InvalidLine");
}

#[test]
fn a_failed_file_that_cannot_be_written_names_itself_and_loses_nothing() {
    if !std::path::Path::new("/dev/full").exists() {
        return;
    }
    let endpoint = dead_endpoint();
    let input: String = (1..=300).map(|i| format!("line {i}\n")).collect();
    let out = kpl(
        &put_args(&endpoint, &["--record-ttl", "300", "--failed", "/dev/full"]),
        &input,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot write /dev/full"), "{err}");
    // Every record is on standard error instead, as whole JSON lines.
    let mut numbers: Vec<u64> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["Line"]
                .as_u64()
                .unwrap()
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=300).collect::<Vec<u64>>());
    assert!(
        err.contains("300 sent, 0 acknowledged, 300 failed"),
        "{err}"
    );
}

/// `kpl put` reading from a pipe the test keeps open.
fn spawn_put(args: &[&str]) -> Child {
    common::spawn(args, Stdio::piped(), Stdio::piped())
}

fn signal_run(
    signals: &[&str],
    shutdown_timeout: &str,
) -> (Option<i32>, String, Vec<Value>, Duration) {
    let dir = TempDir::new(&format!("sig-{}", signals.len()));
    let failed = dir.join("failed.jsonl");
    let endpoint = dead_endpoint();
    let mut child = spawn_put(&put_args(
        &endpoint,
        &[
            "--failed",
            failed.to_str().unwrap(),
            "--shutdown-timeout",
            shutdown_timeout,
        ],
    ));
    let mut stdin = child.stdin.take().unwrap();
    let input: String = (1..=5_000).map(|i| format!("line {i}\n")).collect();
    stdin.write_all(input.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    let t0 = Instant::now();
    for (i, s) in signals.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        signal(child.id(), s).unwrap();
    }
    let (code, err) = wait_with_stderr(child);
    let took = t0.elapsed();
    drop(stdin);
    let lines = failed_lines(&failed);
    (code, err, lines, took)
}

#[test]
fn sigterm_settles_what_was_accepted_and_accounts_for_every_line() {
    let (code, err, lines, _) = signal_run(&["TERM"], "1000");
    assert_eq!(code, Some(143), "{err}");
    assert!(
        err.contains("5000 sent, 0 acknowledged, 5000 failed"),
        "{err}"
    );
    assert!(err.contains("stopped by SIGTERM"), "{err}");

    assert_eq!(
        line_numbers(&lines),
        (1..=5_000).collect::<Vec<u64>>(),
        "each line once"
    );
}

/// Stopped while the producer is full, with lines read ahead and not handed over:
/// the line named is the last one read, and every line up to it is accounted for.
#[test]
fn a_signal_names_the_last_line_read() {
    let dir = TempDir::new("sig-read-ahead");
    let failed = dir.join("failed.jsonl");
    let input = dir.join("input.txt");
    let text: String = (1..=50_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&input, text).unwrap();
    let endpoint = dead_endpoint();
    let mut args = put_args(
        &endpoint,
        &[
            "--failed",
            failed.to_str().unwrap(),
            "--shutdown-timeout",
            "500",
            "--max-outstanding-records",
            "100",
        ],
    );
    args.push(input.to_str().unwrap());
    let child = spawn_put(&args);
    std::thread::sleep(Duration::from_millis(1_500));
    signal(child.id(), "TERM").unwrap();
    let (code, err) = wait_with_stderr(child);
    assert_eq!(code, Some(143), "{err}");
    let numbers = line_numbers(&failed_lines(&failed));
    let last = *numbers.last().expect("lines failed or not sent");
    assert!(
        last > 100,
        "lines were read ahead of the full producer: {last}"
    );
    assert_eq!(
        numbers,
        (1..=last).collect::<Vec<u64>>(),
        "each line up to it, once"
    );
    assert!(
        err.contains(&format!("reading stopped at {}:{last}", input.display())),
        "{err}"
    );
}

#[test]
fn a_second_sigint_cuts_the_shutdown_short() {
    let (code, err, lines, took) = signal_run(&["INT", "INT"], "60000");
    assert_eq!(code, Some(130), "{err}");
    assert!(took < Duration::from_secs(20), "{took:?}: {err}");
    assert!(err.contains("second signal"), "{err}");
    assert_eq!(lines.len(), 5_000, "{err}");
}

/// A server that answers every request with a web page.
fn html_server() -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(500)))
                        .unwrap();
                    let mut buf = [0u8; 65536];
                    let _ = s.read(&mut buf);
                    let body = "<html><body>It works!</body></html>";
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (format!("127.0.0.1:{}", addr.port()), handle)
}

#[test]
fn an_endpoint_that_is_not_kinesis_fails_at_once_with_one_clear_message() {
    let (addr, _server) = html_server();
    for scheme in ["http", "https"] {
        let endpoint = format!("{scheme}://{addr}");
        let t0 = Instant::now();
        let input: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        let out = kpl(&put_args(&endpoint, &[]), &input);
        let took = t0.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            took < Duration::from_secs(10),
            "{scheme}: took {took:?} (the TTL is 30 s): {err}"
        );
        assert!(err.contains("retrying cannot help"), "{scheme}: {err}");
        assert!(err.contains("failures by error code"), "{scheme}: {err}");
    }
}

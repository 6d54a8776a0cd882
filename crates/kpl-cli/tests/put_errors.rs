//! `kpl put` against errors that used to fill the disk or take the whole time to
//! live: a mistyped `--endpoint` fails at start, naming it; a server answering every
//! PutRecords with a megabyte error leaves a failed file that grows with the input,
//! not with the error's size. No network: loopback ports of the test's own.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::kpl;

use kpl_tests::kpl::temp_dir;

#[test]
fn a_mistyped_endpoint_fails_at_start_naming_it() {
    let dir = temp_dir("endpoint");
    for endpoint in [
        "127.0.0.1:4610",
        "not a url",
        "ftp://127.0.0.1:4610",
        "htp://127.0.0.1:4610",
        "http//127.0.0.1:4610",
        "ftp://x",
        "htp://x",
        "http//h:1",
    ] {
        let failed = dir.join("failed.jsonl");
        let _ = std::fs::remove_file(&failed);
        let input: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        let t0 = Instant::now();
        // A time to live of a minute: a run that retried would take it all.
        let out = kpl(
            &kpl_tests::kpl::put_args(
                endpoint,
                &[
                    "--record-ttl",
                    "60000",
                    "--failed",
                    failed.to_str().unwrap(),
                ],
            ),
            &input,
        );
        let took = t0.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{endpoint}: {err}");
        assert!(
            took < Duration::from_secs(20),
            "{endpoint}: took {took:?}, as if retried: {err}"
        );
        assert!(err.contains(endpoint), "{endpoint}: {err}");
        assert!(err.contains("http://"), "{endpoint}: {err}");
        assert!(err.lines().count() <= 3, "{endpoint}: one reason: {err}");
        // Nothing was sent, so nothing is in the failed file as possibly stored.
        let f = std::fs::read_to_string(&failed).unwrap_or_default();
        assert!(!f.contains("\"MayHaveBeenStored\":true"), "{endpoint}: {f}");
        eprintln!("{endpoint:?}: exit {:?} in {took:?}", out.status.code());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A loopback Kinesis whose ListShards lists one shard and whose PutRecords are
/// all answered with `status` and a body of about a megabyte of `content_type`.
/// Connections beyond 64 are closed unanswered. Returns the port and the count of
/// PutRecords requests.
fn erring(
    status: &'static str,
    content_type: &'static str,
    body: Arc<Vec<u8>>,
) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let puts = Arc::new(AtomicUsize::new(0));
    let counted = puts.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            if n >= 64 {
                continue;
            }
            let body = body.clone();
            let puts = counted.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let (mut length, mut target) = (0usize, String::new());
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap_or(0);
                            } else if k.eq_ignore_ascii_case("x-amz-target") {
                                target = v.trim().to_owned();
                            }
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut request = vec![0; length];
                    if reader.read_exact(&mut request).is_err() {
                        return;
                    }
                    let (status, content_type, answer): (&str, &str, &[u8]) =
                        if target.ends_with("ListShards") {
                            (
                                "200 OK",
                                "application/x-amz-json-1.1",
                                LIST_SHARDS.as_bytes(),
                            )
                        } else {
                            puts.fetch_add(1, Ordering::SeqCst);
                            (status, content_type, &body)
                        };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                        answer.len()
                    );
                    if writer.write_all(head.as_bytes()).is_err()
                        || writer.write_all(answer).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, puts)
}

const LIST_SHARDS: &str = "{\"Shards\":[{\"ShardId\":\"shardId-000000000000\",\"HashKeyRange\":{\"StartingHashKey\":\"0\",\"EndingHashKey\":\"340282366920938463463374607431768211455\"},\"SequenceNumberRange\":{\"StartingSequenceNumber\":\"1\"}}]}";

fn megabyte(fill: &str) -> Arc<Vec<u8>> {
    Arc::new(fill.repeat((1 << 20) / fill.len()).into_bytes())
}

#[test]
fn the_failed_file_grows_with_the_input_not_with_error_bodies() {
    let dir = temp_dir("bodies");
    let lines = 300;
    let input: String = (1..=lines)
        .map(|i| format!("record {i} of the input\n"))
        .collect();
    for (status, content_type, body) in [
        (
            "500 Internal Server Error",
            "text/html",
            megabyte("<p>server error</p>"),
        ),
        (
            "500 Internal Server Error",
            "application/x-amz-json-1.1",
            Arc::new(
                format!(
                    "{{\"__type\":\"InternalFailure\",\"message\":\"{}\"}}",
                    "m".repeat(1 << 20)
                )
                .into_bytes(),
            ),
        ),
        ("400 Bad Request", "text/plain", megabyte("bad request ")),
        (
            "200 OK",
            "application/x-amz-json-1.1",
            megabyte("not json "),
        ),
    ] {
        let (port, puts) = erring(status, content_type, body);
        let failed = dir.join("failed.jsonl");
        let _ = std::fs::remove_file(&failed);
        let endpoint = format!("http://127.0.0.1:{port}");
        let out = kpl(
            &kpl_tests::kpl::put_args(
                &endpoint,
                &[
                    "--quiet",
                    "--record-ttl",
                    "3000",
                    "--failed",
                    failed.to_str().unwrap(),
                ],
            ),
            &input,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{status}: {err}");
        let f = std::fs::read_to_string(&failed).unwrap();
        let attempts = f.matches("\"ErrorCode\"").count();
        eprintln!(
            "{status} {content_type}: {} PutRecords, failed file {} B for {} B of input ({} lines, {attempts} attempts)",
            puts.load(Ordering::SeqCst),
            f.len(),
            input.len(),
            f.lines().count()
        );
        assert!(
            puts.load(Ordering::SeqCst) > 0,
            "{status}: nothing sent: {err}"
        );
        assert_eq!(f.lines().count(), lines, "{status}: {err}");
        // Every attempt's message is short, whatever the body: the file holds at
        // most the input and 1 KB per attempt (an answer that is not retried is one
        // attempt per line: 1 KB per line).
        let bound = input.len() + 1024 * attempts;
        assert!(
            f.len() <= bound,
            "{status}: failed file {} B > {bound} B; a line: {}",
            f.len(),
            &f.lines().next().unwrap_or_default()[..f.len().min(2000)]
        );
        for line in f.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("whole JSON lines");
            for a in v["Attempts"].as_array().unwrap() {
                let m = a["ErrorMessage"].as_str().unwrap_or_default();
                assert!(m.len() <= 512, "{status}: {} B: {m}", m.len());
            }
        }
        // Retried or not: the whole file within the input plus 1 KB per line.
        assert!(
            f.len() <= input.len() + 1024 * lines,
            "{status}: failed file {} B",
            f.len()
        );
        assert!(
            err.len() < 64 * 1024,
            "{status}: {} B on standard error",
            err.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

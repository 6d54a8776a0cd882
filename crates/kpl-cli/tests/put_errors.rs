//! `kpl put` against errors that used to fill the disk or take the whole time to
//! live: a mistyped `--endpoint` fails at start, naming it; a server answering every
//! PutRecords with a megabyte error leaves a failed file that grows with the input,
//! not with the error's size. No network: loopback ports of the test's own.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::kpl;

use kpl_tests::TempDir;
use kpl_tests::http::{Loopback, Response, oversized_answers};
use kpl_tests::kinesis::one_shard_answer;

#[test]
fn a_mistyped_endpoint_fails_at_start_naming_it() {
    let dir = TempDir::new("endpoint");
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
    let puts = Arc::new(AtomicUsize::new(0));
    let counted = puts.clone();
    let port = Loopback::new(move |request| {
        if request.operation() == "ListShards" {
            return Response::amz_json(one_shard_answer());
        }
        counted.fetch_add(1, Ordering::SeqCst);
        Response::new(status, content_type, &*body)
    })
    .max_connections(64)
    .start();
    (port, puts)
}

#[test]
fn the_failed_file_grows_with_the_input_not_with_error_bodies() {
    let dir = TempDir::new("bodies");
    let lines = 300;
    let input: String = (1..=lines)
        .map(|i| format!("record {i} of the input\n"))
        .collect();
    for (status, content_type, body) in oversized_answers() {
        let (port, puts) = erring(status, content_type, Arc::new(body));
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
}

/// `--ordered` keeps each key's order: a random key per record (`--random-pk`, or no
/// key named) has none, and is refused before anything is read or sent.
#[test]
fn ordered_with_a_random_key_per_record_is_refused_at_start() {
    for extra in [
        &["--ordered"][..],
        &["--ordered", "--random-pk"][..],
        &["--ordered", "--format", "json"][..],
    ] {
        let out = kpl(
            &kpl_tests::kpl::put_args("http://127.0.0.1:9", extra),
            "line\n",
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?}: {err}");
        assert!(
            err.contains("--ordered") && err.contains("--partition-key"),
            "{extra:?}: {err}"
        );
        assert!(err.lines().count() <= 3, "{extra:?}: one reason: {err}");
    }
    // With a key it goes on to the (unreachable) endpoint.
    let out = kpl(
        &kpl_tests::kpl::put_args(
            "http://127.0.0.1:9",
            &["--ordered", "--partition-key", "k", "--record-ttl", "1000"],
        ),
        "line\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("--ordered keeps"), "{err}");
}

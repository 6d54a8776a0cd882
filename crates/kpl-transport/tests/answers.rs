//! What `AwsTransport` makes of mistyped endpoints and of answers that are not the
//! service's (huge error bodies, an empty 200): refused at build in milliseconds,
//! short messages, and "may have been stored" where the records may have been.

#![cfg(feature = "aws")]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{clients, loopback_transport, runtime};
use kpl_tests::http::{Loopback, Response, oversized_answers};
use kpl_transport::{
    AwsTransport, HttpRuntime, PutRecordsEntry, PutRecordsRequest, StreamId, Transport,
    TransportError,
};

#[test]
fn mistyped_endpoints_are_refused_at_build_naming_the_value() {
    runtime().block_on(async {
        for url in [
            "127.0.0.1:4610",
            "not a url",
            "ftp://127.0.0.1:4610",
            "htp://127.0.0.1:4610",
            "http//127.0.0.1:4610",
            "http://",
            "https://:443",
            "http://127.0.0.1:notaport",
            "http://127.0.0.1:70000",
            "",
        ] {
            let started = Instant::now();
            let built = AwsTransport::builder()
                .endpoint_url(url)
                .region("us-east-1")
                .static_credentials("test", "test")
                .build()
                .await;
            let err = match built {
                Ok(_) => panic!("{url:?} was accepted"),
                Err(e) => e,
            };
            assert!(started.elapsed() < Duration::from_secs(1), "{url:?}");
            assert!(
                err.is_invalid_endpoint() && err.url() == Some(url),
                "{url:?}: {err:?}"
            );
            let text = err.to_string();
            assert!(text.contains(&format!("{url:?}")), "{text}");
            assert!(
                text.contains("http://") && text.contains("https://"),
                "{text}"
            );
        }
        for url in [
            "http://127.0.0.1:4610",
            "https://kinesis.us-east-1.amazonaws.com",
            "http://localhost:4567/",
            "http://[::1]:4567",
            "HTTPS://example.com:443/path",
        ] {
            AwsTransport::builder()
                .endpoint_url(url)
                .region("us-east-1")
                .static_credentials("test", "test")
                .build()
                .await
                .unwrap_or_else(|e| panic!("{url:?}: {e}"));
        }
    });
}

/// A loopback server answering every request with `status`, `content_type` and
/// `body`; runs until the test ends.
fn answering(status: &'static str, content_type: &'static str, body: Vec<u8>) -> u16 {
    Loopback::new(move |_| Response::new(status, content_type, &body)).start()
}

/// The record's data: never to be seen in an error message.
const SECRET: &[u8] = b"record-data-never-in-messages";

async fn put(port: u16, client: HttpRuntime) -> Result<usize, TransportError> {
    let transport = loopback_transport(
        AwsTransport::builder().http_runtime(client),
        format!("http://127.0.0.1:{port}"),
        Duration::from_secs(10),
    )
    .await;
    transport
        .put_records(PutRecordsRequest::new(
            StreamId::parse("s"),
            vec![
                PutRecordsEntry::new("k", None, Bytes::from_static(SECRET)),
                PutRecordsEntry::new("k2", None, Bytes::from_static(SECRET)),
            ],
        ))
        .await
        .map(|r| r.results.len())
}

#[test]
fn error_messages_stay_short_whatever_the_answer() {
    for client in clients() {
        for (status, content_type, body) in oversized_answers() {
            let port = answering(status, content_type, body);
            let err = runtime()
                .block_on(put(port, client))
                .expect_err("no answer of these is a success");
            let text = err.to_string();
            assert!(
                err.message().len() <= 512 && text.len() <= 600,
                "{client:?} {status}: {} chars: {}",
                text.len(),
                &text[..text.len().min(300)]
            );
            assert!(
                !text.contains(std::str::from_utf8(SECRET).unwrap()),
                "{client:?} {status}: {text}"
            );
        }
    }
}

/// A 200 that is not a PutRecords answer (`{}`, an empty body, too few results):
/// the records may have been stored, and the error says so.
#[test]
fn a_200_without_the_results_may_have_stored_the_records() {
    for client in clients() {
        for body in [
            &b"{}"[..],
            &b""[..],
            &b"{\"FailedRecordCount\":0,\"Records\":[{\"SequenceNumber\":\"1\",\"ShardId\":\"shardId-000000000000\"}]}"[..],
            &b"{\"FailedRecordCount\":0,\"Records\":"[..],
        ] {
            let port = answering("200 OK", "application/x-amz-json-1.1", body.to_vec());
            let err = runtime()
                .block_on(put(port, client))
                .expect_err("two records, no two results");
            assert!(
                err.may_have_been_stored(),
                "{client:?} {:?}: {err}",
                String::from_utf8_lossy(body)
            );
            assert!(
                err.to_string().contains("may have been stored"),
                "{client:?}: {err}"
            );
        }
    }
}

/// The metrics endpoint is checked as the Kinesis one is.
#[cfg(feature = "cloudwatch")]
#[test]
fn a_mistyped_cloudwatch_endpoint_is_refused_at_build() {
    runtime().block_on(async {
        let err = kpl_transport::CloudWatch::builder()
            .endpoint_url("monitoring.local:443")
            .region("us-east-1")
            .static_credentials("test", "test")
            .build()
            .await
            .unwrap_err();
        assert!(
            err.is_invalid_endpoint() && err.url() == Some("monitoring.local:443"),
            "{err:?}"
        );
        // The Kinesis endpoint of the same settings is not the metrics one.
        kpl_transport::CloudWatchBuilder::from_transport_settings(
            AwsTransport::builder()
                .endpoint_url("http://127.0.0.1:4567")
                .region("us-east-1")
                .static_credentials("test", "test"),
        )
        .build()
        .await
        .unwrap();
    });
}

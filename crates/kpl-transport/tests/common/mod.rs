//! What the transport's test files share: a runtime, the HTTP clients built in,
//! and a transport to a loopback server of the test's.

use std::time::Duration;

use bytes::Bytes;
use kpl_transport::{
    AwsTransport, AwsTransportBuilder, HttpRuntime, PutRecordsEntry, PutRecordsRequest, StreamId,
};

/// A current-thread tokio runtime with time and I/O.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The HTTP clients of this build's features (at least one).
pub(crate) fn clients() -> Vec<HttpRuntime> {
    let clients: Vec<_> = [
        cfg!(feature = "tokio").then_some(HttpRuntime::Tokio),
        cfg!(feature = "async-io").then_some(HttpRuntime::AsyncIo),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(!clients.is_empty());
    clients
}

/// `builder` sending to `endpoint` (a loopback server of the test's) in us-east-1
/// with test credentials, no proxy and requests cut at `timeout`, built.
pub(crate) async fn loopback_transport(
    builder: AwsTransportBuilder,
    endpoint: String,
    timeout: Duration,
) -> AwsTransport {
    builder
        .endpoint_url(endpoint)
        .region("us-east-1")
        .static_credentials("test", "test")
        .without_proxy()
        .request_timeout(timeout)
        .build()
        .await
        .unwrap()
}

/// A PutRecords of one record `x` under key `k` into stream `s`.
#[allow(dead_code, reason = "answers.rs puts two records")]
pub(crate) fn one_record() -> PutRecordsRequest {
    PutRecordsRequest::new(
        StreamId::parse("s"),
        vec![PutRecordsEntry::new("k", None, Bytes::from_static(b"x"))],
    )
}

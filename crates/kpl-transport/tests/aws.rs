//! `AwsTransport`'s settings and error classification, without a service.

#![cfg(feature = "aws")]

use std::time::Duration;

use bytes::Bytes;
use kpl_transport::{
    AwsTransport, BuildError, ErrorKind, PutRecordsEntry, PutRecordsRequest, StreamId, Transport,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn settings_out_of_bounds_are_refused_by_name() {
    runtime().block_on(async {
        for (builder, setting) in [
            (
                AwsTransport::builder().max_connections(0),
                "max_connections",
            ),
            (
                AwsTransport::builder().max_connections(257),
                "max_connections",
            ),
            (
                AwsTransport::builder().request_timeout(Duration::from_millis(99)),
                "request_timeout",
            ),
            (
                AwsTransport::builder().connect_timeout(Duration::from_secs(301)),
                "connect_timeout",
            ),
        ] {
            let err = builder.region("us-east-1").build().await.unwrap_err();
            assert!(
                matches!(&err, BuildError::OutOfRange { setting: s, .. } if *s == setting),
                "{err}"
            );
            assert!(err.to_string().contains(setting));
        }
    });
}

#[test]
fn a_refused_connection_is_transient() {
    runtime().block_on(async {
        // Nothing listens on this loopback port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let transport = AwsTransport::builder()
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .region("us-east-1")
            .static_credentials("test", "test")
            .connect_timeout(Duration::from_millis(500))
            .request_timeout(Duration::from_secs(2))
            .build()
            .await
            .unwrap();
        let err = transport
            .put_records(PutRecordsRequest::new(
                StreamId::parse("s"),
                vec![PutRecordsEntry::new("k", None, Bytes::from_static(b"x"))],
            ))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
        assert!(err.kind().is_retryable());
    });
}

#[test]
fn builder_debug_never_shows_credentials() {
    let b = AwsTransport::builder().static_credentials("AKIDEXAMPLE", "very-secret-key");
    let text = format!("{b:?}");
    assert!(
        !text.contains("very-secret-key") && !text.contains("AKIDEXAMPLE"),
        "{text}"
    );
}

//! `AwsTransport`'s settings and error classification, without a service.

#![cfg(feature = "aws")]

mod common;

use std::time::Duration;

use common::{clients, loopback_transport, one_record, runtime};
use kpl_tests::credentials::FailingCredentials;
use kpl_tests::http::{Loopback, Response};
use kpl_tests::peers::dead_endpoint;
use kpl_transport::{AwsTransport, ErrorKind, HttpRuntime, Transport};

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
                err.is_out_of_range() && err.setting() == Some(setting),
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
        let transport = AwsTransport::builder()
            .endpoint_url(dead_endpoint())
            .region("us-east-1")
            .static_credentials("test", "test")
            .connect_timeout(Duration::from_millis(500))
            .request_timeout(Duration::from_secs(2))
            .build()
            .await
            .unwrap();
        let err = put_one(&transport).await;
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

#[test]
fn a_failing_credential_provider_is_retryable_and_nothing_was_sent() {
    runtime().block_on(async {
        // A listener that would see any request.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    FailingCredentials::blip(usize::MAX),
                ),
            )
            .build();
        let transport = AwsTransport::builder()
            .sdk_config(sdk)
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .region("us-east-1")
            .build()
            .await
            .unwrap();
        let err = put_one(&transport).await;
        assert_eq!(err.code(), Some("CredentialsError"), "{err}");
        assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
        assert!(err.kind().is_retryable());
        assert!(
            !err.may_have_been_stored(),
            "a request never signed was never sent"
        );
        assert!(listener.accept().is_err(), "no connection was made");
    });
}

/// An HTTP client of the user's: it answers nothing, and counts its calls.
#[derive(Debug, Default)]
struct Mine(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl aws_smithy_runtime_api::client::http::HttpConnector for Mine {
    fn call(
        &self,
        _request: aws_smithy_runtime_api::client::orchestrator::HttpRequest,
    ) -> aws_smithy_runtime_api::client::http::HttpConnectorFuture {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        aws_smithy_runtime_api::client::http::HttpConnectorFuture::ready(Err(
            aws_smithy_runtime_api::client::result::ConnectorError::io(
                "the user's own client refused".into(),
            ),
        ))
    }
}

#[test]
fn an_sdk_config_with_its_own_http_client_keeps_it() {
    runtime().block_on(async {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let connector = Mine(calls.clone());
        let client = aws_smithy_runtime_api::client::http::http_client_fn(move |_, _| {
            aws_smithy_runtime_api::client::http::SharedHttpConnector::new(Mine(
                connector.0.clone(),
            ))
        });
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .http_client(client)
            .build();
        let transport = AwsTransport::builder()
            .sdk_config(sdk)
            .endpoint_url("http://127.0.0.1:9")
            .region("us-east-1")
            .static_credentials("test", "test")
            .build()
            .await
            .unwrap();
        let err = put_one(&transport).await;
        assert!(
            err.to_string().contains("the user's own client refused"),
            "{err}"
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    });
}

/// A server that reads each request and closes the connection without answering:
/// the request may have been stored.
fn closing_server() -> String {
    let port = Loopback::new(|_| Response::hang_up()).start();
    format!("http://127.0.0.1:{port}")
}

async fn put_to(endpoint: String, client: HttpRuntime) -> kpl_transport::TransportError {
    let transport = loopback_transport(
        AwsTransport::builder().http_runtime(client),
        endpoint,
        Duration::from_secs(5),
    )
    .await;
    put_one(&transport).await
}

/// A connection closed after the request was written may have stored it; one never
/// made did not. Both HTTP clients say so alike.
#[test]
fn a_lost_answer_may_have_stored_a_refused_connection_did_not() {
    for client in clients() {
        runtime().block_on(async {
            let err = put_to(closing_server(), client).await;
            assert_eq!(err.kind(), ErrorKind::Transient, "{client:?}: {err}");
            assert!(err.may_have_been_stored(), "{client:?}: {err}");
            let err = put_to(dead_endpoint(), client).await;
            assert_eq!(err.kind(), ErrorKind::Transient, "{client:?}: {err}");
            assert!(!err.may_have_been_stored(), "{client:?}: {err}");
        });
    }
}

/// One record put into stream `s`: the error it fails with.
async fn put_one(transport: &AwsTransport) -> kpl_transport::TransportError {
    transport.put_records(one_record()).await.unwrap_err()
}

async fn with_provider(
    provider: impl aws_credential_types::provider::ProvideCredentials + 'static,
) -> AwsTransport {
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(provider),
        )
        .build();
    AwsTransport::builder()
        .sdk_config(sdk)
        .endpoint_url("http://127.0.0.1:9")
        .region("us-east-1")
        .build()
        .await
        .unwrap()
}

#[test]
fn no_credentials_at_all_are_said_before_sending_a_blip_is_not() {
    runtime().block_on(async {
        let started = std::time::Instant::now();
        let err = with_provider(FailingCredentials::no_source())
            .await
            .check_credentials(Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(err.is_no_credentials(), "{err:?}");
        // What to set at this level; the chain's own reason is the cause, once.
        let text = err.to_string();
        let source = std::error::Error::source(&err).expect("the chain's reason");
        assert!(!text.contains(&source.to_string()), "{text}");
        let mut causes = String::new();
        let mut level = Some(source);
        while let Some(e) = level {
            causes.push_str(&format!("{e}: "));
            level = e.source();
        }
        assert!(text.contains("AWS_ACCESS_KEY_ID"), "{text}");
        assert!(causes.contains("no providers in chain"), "{causes:?}");
        with_provider(FailingCredentials::blip(usize::MAX))
            .await
            .check_credentials(Duration::from_secs(5))
            .await
            .unwrap();
        AwsTransport::builder()
            .region("us-east-1")
            .static_credentials("test", "test")
            .build()
            .await
            .unwrap()
            .check_credentials(Duration::from_secs(5))
            .await
            .unwrap();
    });
}

/// An attempt that failed for want of credentials says why, in short, so that a
/// summary can name it.
#[test]
fn a_credential_failure_s_message_carries_its_reason_in_short() {
    runtime().block_on(async {
        for (transport, reason) in [
            (
                with_provider(FailingCredentials::no_source()).await,
                "no providers in chain provided credentials",
            ),
            (
                with_provider(FailingCredentials::blip(usize::MAX)).await,
                "the instance metadata service did not answer",
            ),
        ] {
            let err = put_one(&transport).await;
            assert_eq!(err.code(), Some("CredentialsError"), "{err}");
            assert!(err.message().contains(reason), "{err}");
            assert!(err.message().len() <= 512, "{err}");
        }
    });
}

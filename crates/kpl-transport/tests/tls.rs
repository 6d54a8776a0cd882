//! TLS on both HTTP clients, against a loopback https server with certificates
//! made here: CAs given as a file or a directory, `verify_certificate(false)`, and
//! certificate problems named as TLS errors, in words.

#![cfg(feature = "aws")]

mod common;

use std::time::Duration;

use common::{clients, loopback_transport, one_record, runtime};
use kpl_tests::TempDir;
use kpl_tests::http::{Loopback, Response};
use kpl_tests::tls::{self, TestCa};
use kpl_transport::{AwsTransport, AwsTransportBuilder, ErrorKind, Transport, TransportError};
use rcgen::KeyPair;
use rustls::pki_types::CertificateDer;

/// A loopback https server presenting `cert`, answering every PutRecords with
/// one stored record.
fn https_server(cert: CertificateDer<'static>, key: &KeyPair) -> u16 {
    let answer = "{\"FailedRecordCount\":0,\"Records\":[{\"SequenceNumber\":\"49\",\"ShardId\":\"shardId-000000000000\"}]}";
    Loopback::new(move |_| Response::amz_json(answer)).start_with(tls::server(cert, key))
}

async fn put(builder: AwsTransportBuilder, port: u16, host: &str) -> Result<(), TransportError> {
    let transport = loopback_transport(
        builder,
        format!("https://{host}:{port}"),
        Duration::from_secs(10),
    )
    .await;
    let answer = transport.put_records(one_record()).await?;
    assert_eq!(answer.results.len(), 1);
    Ok(())
}

#[test]
fn a_private_ca_is_trusted_from_a_file_a_bundle_or_a_directory() {
    let ours = TestCa::new("kpl-rs test CA");
    let other = TestCa::new("another CA");
    let (cert, key) = ours.leaf(&["localhost"], false);
    let port = https_server(cert, &key);
    let dir = TempDir::new("tls-dir");
    // A directory as the KPL's CaCertPath is: one file per CA, hashed names
    // (c_rehash) or .pem/.crt, and files that are not certificates.
    std::fs::write(dir.join("a1b2c3d4.0"), other.pem()).unwrap();
    std::fs::write(dir.join("ours.crt"), ours.pem()).unwrap();
    std::fs::write(dir.join("README"), "not a certificate").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    let bundle_dir = TempDir::new("tls-bundle");
    let bundle = bundle_dir.join("bundle.pem");
    std::fs::write(&bundle, format!("{}{}", other.pem(), ours.pem())).unwrap();
    for client in clients() {
        for path in [dir.path(), &bundle] {
            let builder = AwsTransport::builder()
                .http_runtime(client)
                .ca_certificates_path(path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            runtime()
                .block_on(put(builder, port, "localhost"))
                .unwrap_or_else(|e| panic!("{client:?} {}: {e}", path.display()));
        }
    }
    // A directory with no certificate in it, and a path that is not there.
    let empty = TempDir::new("tls-empty");
    let err = AwsTransport::builder()
        .ca_certificates_path(&empty)
        .unwrap_err();
    assert!(
        err.to_string().contains(&empty.display().to_string()),
        "{err}"
    );
    let missing = empty.join("missing.pem");
    let err = AwsTransport::builder()
        .ca_certificates_path(&missing)
        .unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[test]
fn verification_off_reaches_a_self_signed_server_on_both_clients() {
    let ours = TestCa::new("self-signed");
    let (cert, key) = ours.leaf(&["localhost"], false);
    let port = https_server(cert, &key);
    for client in clients() {
        let builder = AwsTransport::builder()
            .http_runtime(client)
            .verify_certificate(false);
        runtime()
            .block_on(put(builder, port, "localhost"))
            .unwrap_or_else(|e| panic!("{client:?}: {e}"));
        // And with verification on, the same server is refused as a TLS error.
        let err = runtime()
            .block_on(put(
                AwsTransport::builder().http_runtime(client),
                port,
                "localhost",
            ))
            .unwrap_err();
        assert!(err.is_tls(), "{client:?}: {err}");
    }
}

#[test]
fn certificate_problems_are_tls_errors_in_words_on_both_clients() {
    let ours = TestCa::new("kpl-rs test CA");
    // The CA's own certificate presented as the server's (a self-signed CA given
    // with --ca-file, served by the server itself).
    let ca_as_server = ours.own();
    let (for_other_name, other_name_key) = ours.leaf(&["kinesis.example.com"], false);
    let (expired, expired_key) = ours.leaf(&["localhost"], true);
    let stranger = TestCa::new("a CA nobody trusts");
    let (unknown, unknown_key) = stranger.leaf(&["localhost"], false);
    let cases = [
        (
            ca_as_server.0,
            ca_as_server.1,
            "CaUsedAsEndEntity",
            "a CA certificate used as the server's own",
        ),
        (
            for_other_name,
            other_name_key,
            "NotValidForName",
            "not valid for the endpoint's host name",
        ),
        (expired, expired_key, "Expired", "has expired"),
        (unknown, unknown_key, "UnknownIssuer", "not trusted"),
    ];
    for (cert, key, name, words) in cases {
        let port = https_server(cert, &key);
        for client in clients() {
            let builder = AwsTransport::builder()
                .http_runtime(client)
                .ca_certificates_pem(ours.pem().to_owned());
            let err = runtime()
                .block_on(put(builder, port, "localhost"))
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Tls, "{client:?} {name}: {err}");
            assert!(err.is_tls());
            assert!(!err.kind().is_retryable());
            assert!(!err.may_have_been_stored(), "{client:?} {name}: {err}");
            let text = err.to_string();
            assert!(
                text.contains(name) && text.contains(words) && text.starts_with("TLS error"),
                "{client:?} {name}: {text}"
            );
            assert!(!text.contains("not a Kinesis endpoint"), "{text}");
        }
    }
}

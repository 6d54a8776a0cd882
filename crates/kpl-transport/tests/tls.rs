//! TLS on both HTTP clients, against a loopback https server with certificates
//! made here: CAs given as a file or a directory, `verify_certificate(false)`, and
//! certificate problems named as TLS errors, in words.

#![cfg(feature = "aws")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kpl_transport::{
    AwsTransport, AwsTransportBuilder, ErrorKind, HttpRuntime, PutRecordsEntry, PutRecordsRequest,
    StreamId, Transport, TransportError,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn clients() -> Vec<HttpRuntime> {
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

/// A CA of this test's: its PEM and what signs with it.
struct Ca {
    pem: String,
    der: rustls::pki_types::CertificateDer<'static>,
    key: KeyPair,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        der: cert.der().clone(),
        key: KeyPair::from_pem(&key.serialize_pem()).unwrap(),
        issuer: Issuer::new(params, key),
    }
}

/// A server certificate for `names`, signed by `ca`, valid now or `expired`.
fn leaf(
    ca: &Ca,
    names: &[&str],
    expired: bool,
) -> (rustls::pki_types::CertificateDer<'static>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.der().clone(), key)
}

/// A loopback https server presenting `cert`, answering every PutRecords with
/// one stored record.
fn https_server(cert: rustls::pki_types::CertificateDer<'static>, key: &KeyPair) -> u16 {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut reader = BufReader::new(rustls::StreamOwned::new(conn, client));
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let answer = "{\"FailedRecordCount\":0,\"Records\":[{\"SequenceNumber\":\"49\",\"ShardId\":\"shardId-000000000000\"}]}";
                    let tls = reader.get_mut();
                    let _ = write!(
                        tls,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if tls.flush().is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

async fn put(builder: AwsTransportBuilder, port: u16, host: &str) -> Result<(), TransportError> {
    let transport = builder
        .endpoint_url(format!("https://{host}:{port}"))
        .region("us-east-1")
        .static_credentials("test", "test")
        .without_proxy()
        .request_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let answer = transport
        .put_records(PutRecordsRequest::new(
            StreamId::parse("s"),
            vec![PutRecordsEntry::new("k", None, Bytes::from_static(b"x"))],
        ))
        .await?;
    assert_eq!(answer.results.len(), 1);
    Ok(())
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kpl-transport-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_private_ca_is_trusted_from_a_file_a_bundle_or_a_directory() {
    let ours = ca("kpl-rs test CA");
    let other = ca("another CA");
    let (cert, key) = leaf(&ours, &["localhost"], false);
    let port = https_server(cert, &key);
    let dir = temp_dir("dir");
    // A directory as the KPL's CaCertPath is: one file per CA, hashed names
    // (c_rehash) or .pem/.crt, and files that are not certificates.
    std::fs::write(dir.join("a1b2c3d4.0"), &other.pem).unwrap();
    std::fs::write(dir.join("ours.crt"), &ours.pem).unwrap();
    std::fs::write(dir.join("README"), "not a certificate").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    let bundle = temp_dir("bundle").join("bundle.pem");
    std::fs::write(&bundle, format!("{}{}", other.pem, ours.pem)).unwrap();
    for client in clients() {
        for path in [&dir, &bundle] {
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
    let empty = temp_dir("empty");
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
    for d in [&dir, &empty, &bundle.parent().unwrap().to_path_buf()] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn verification_off_reaches_a_self_signed_server_on_both_clients() {
    let ours = ca("self-signed");
    let (cert, key) = leaf(&ours, &["localhost"], false);
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
    let ours = ca("kpl-rs test CA");
    // The CA's own certificate presented as the server's (a self-signed CA given
    // with --ca-file, served by the server itself).
    let ca_as_server = (
        ours.der.clone(),
        KeyPair::from_pem(&ours.key.serialize_pem()).unwrap(),
    );
    let (for_other_name, other_name_key) = leaf(&ours, &["kinesis.example.com"], false);
    let (expired, expired_key) = leaf(&ours, &["localhost"], true);
    let stranger = ca("a CA nobody trusts");
    let (unknown, unknown_key) = leaf(&stranger, &["localhost"], false);
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
                .ca_certificates_pem(ours.pem.clone());
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

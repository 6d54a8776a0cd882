//! `kpl put` through a loopback HTTP proxy into kinesis-mock: named by `--proxy`,
//! by the KPL's `ProxyHost`/`ProxyPort` keys, and by `HTTPS_PROXY` to an https
//! endpoint (a CONNECT tunnel, and the endpoint's private CA trusted by
//! `--ca-file`). Each run is read back; the proxy counts what went through it.
//!
//! `#[ignore]`d in a plain `cargo test`; `cargo xtask ci` runs it with kinesis-mock up.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

fn mock() -> String {
    std::env::var("KPL_KINESIS_MOCK_ENDPOINT")
        .expect("KPL_KINESIS_MOCK_ENDPOINT: run through `cargo xtask ci`")
}

/// Reads one HTTP/1.1 message head (up to the blank line) and its body (by
/// content-length, or to the end when `to_end`).
fn read_message(r: &mut impl BufRead, to_end: bool) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body).ok()?;
        }
        None if to_end => {
            r.read_to_end(&mut body).ok()?;
        }
        None => {}
    }
    Some((head, body))
}

/// One awsJson 1.1 call to the mock (signatures are not checked).
fn call(target: &str, body: Value) -> Value {
    let endpoint = mock();
    let addr = endpoint.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.to_string();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: Kinesis_20131202.{target}\r\nX-Amz-Date: 20260101T000000Z\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=00\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let (head, body) = read_message(&mut BufReader::new(s), true).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{target}: {head}");
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

fn create_stream(name: &str) {
    call("CreateStream", json!({"StreamName": name, "ShardCount": 1}));
    std::thread::sleep(Duration::from_millis(500));
}

/// The data of every record stored in a one-shard stream.
fn stored(name: &str) -> Vec<String> {
    let shards = call("ListShards", json!({"StreamName": name}));
    let shard = &shards["Shards"][0]["ShardId"];
    let it = call(
        "GetShardIterator",
        json!({"StreamName": name, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}),
    );
    let page = call(
        "GetRecords",
        json!({"ShardIterator": it["ShardIterator"], "Limit": 10000}),
    );
    let mut out = Vec::new();
    for r in page["Records"].as_array().unwrap() {
        let data = STANDARD.decode(r["Data"].as_str().unwrap()).unwrap();
        let pk = r["PartitionKey"].as_str().unwrap();
        for u in kpl::codec::deaggregate(pk, None, &data).unwrap() {
            out.push(String::from_utf8(u.data.to_vec()).unwrap());
        }
    }
    out.sort();
    out
}

/// Forwards one request (`request_line`, the headers of `head` after its first
/// line, `body`) to `authority` on a connection of its own, and returns the answer
/// re-framed with a length (so the client's connection can stay open).
fn forward(request_line: &str, head: &str, body: &[u8], authority: &str) -> Vec<u8> {
    let mut upstream = TcpStream::connect(authority).unwrap();
    let mut forwarded = format!("{request_line}\r\n");
    forwarded.push_str(&without_hop_headers(head.lines().skip(1)));
    forwarded.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    upstream.write_all(forwarded.as_bytes()).unwrap();
    upstream.write_all(body).unwrap();
    let (answer_head, answer_body) = read_message(&mut BufReader::new(upstream), true).unwrap();
    let mut out = without_hop_headers(answer_head.lines());
    out.push_str(&format!("Content-Length: {}\r\n\r\n", answer_body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(&answer_body);
    out
}

/// Header lines (or a status line and headers) without the framing, connection and
/// proxy headers, each ended by CRLF.
fn without_hop_headers<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for line in lines {
        let lower = line.to_ascii_lowercase();
        let hop = [
            "content-length",
            "transfer-encoding",
            "connection",
            "proxy-authorization",
        ]
        .iter()
        .any(|h| lower.starts_with(h));
        if !line.is_empty() && !hop {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

/// What went through the proxy.
#[derive(Default)]
struct Seen {
    /// Request lines: absolute-form requests and CONNECTs.
    requests: Mutex<Vec<String>>,
    /// `Proxy-Authorization` values.
    authorizations: Mutex<Vec<String>>,
    tunnels: AtomicUsize,
    /// Where CONNECT tunnels go instead of their target (a loopback port).
    connect_to: Mutex<Option<u16>>,
}

/// A loopback HTTP proxy: absolute-form requests are forwarded (one at a time, on a
/// connection of their own), CONNECT opens a tunnel.
fn proxy() -> (u16, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let seen = s.clone();
            std::thread::spawn(move || serve_proxy(client, &seen));
        }
    });
    (port, seen)
}

fn serve_proxy(client: TcpStream, seen: &Seen) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut writer = client;
    while let Some((head, body)) = read_message(&mut reader, false) {
        let request_line = head.lines().next().unwrap_or_default().to_owned();
        seen.requests.lock().unwrap().push(request_line.clone());
        if let Some(auth) = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("proxy-authorization")
                .then(|| v.trim().to_owned())
        }) {
            seen.authorizations.lock().unwrap().push(auth);
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next().unwrap(), parts.next().unwrap());
        if method == "CONNECT" {
            let redirect = *seen.connect_to.lock().unwrap();
            let upstream = match redirect {
                Some(port) => TcpStream::connect(("127.0.0.1", port)).unwrap(),
                None => TcpStream::connect(target).unwrap(),
            };
            writer
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .unwrap();
            seen.tunnels.fetch_add(1, Ordering::SeqCst);
            // Whatever the reader buffered is the client's first tunnel bytes.
            let buffered = reader.buffer().to_vec();
            let mut up = upstream.try_clone().unwrap();
            up.write_all(&buffered).unwrap();
            let mut down = writer.try_clone().unwrap();
            let mut upstream_reader = upstream;
            let t = std::thread::spawn(move || {
                let _ = std::io::copy(&mut upstream_reader, &mut down);
                let _ = down.shutdown(Shutdown::Write);
            });
            let _ = std::io::copy(reader.get_mut(), &mut up);
            let _ = up.shutdown(Shutdown::Write);
            let _ = t.join();
            return;
        }
        // Absolute form: http://host:port/path.
        let rest = target.strip_prefix("http://").expect("absolute form");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let answer = forward(
            &format!("{method} {path} HTTP/1.1"),
            &head,
            &body,
            authority,
        );
        if writer.write_all(&answer).is_err() {
            return;
        }
    }
}

/// An https endpoint in front of kinesis-mock: TLS with a certificate for `names`
/// signed by a CA of this test's; each request is forwarded on a connection of its
/// own, but SSO's GetRoleCredentials, which it answers itself (counted). Returns
/// its port, the CA's PEM and the count.
fn tls_front(names: &[&str]) -> (u16, String, Arc<AtomicUsize>) {
    let sso_calls = Arc::new(AtomicUsize::new(0));
    let sso = sso_calls.clone();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kpl-rs test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca_issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
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
            let sso = sso.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let tls = rustls::StreamOwned::new(conn, client);
                let mut reader = BufReader::new(tls);
                while let Some((head, body)) = read_message(&mut reader, false) {
                    if head.starts_with("GET /federation/credentials") {
                        sso.fetch_add(1, Ordering::SeqCst);
                        let answer = json!({"roleCredentials": {
                            "accessKeyId": "AKIDSSO",
                            "secretAccessKey": "sso-secret",
                            "sessionToken": "sso-session",
                            "expiration": 4_102_444_800_000u64,
                        }})
                        .to_string();
                        let tls = reader.get_mut();
                        let _ = write!(
                            tls,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                        let _ = tls.flush();
                        continue;
                    }
                    let endpoint = mock();
                    let request_line = head.lines().next().unwrap_or_default();
                    let answer = forward(
                        request_line,
                        &head,
                        &body,
                        endpoint.trim_start_matches("http://"),
                    );
                    let tls = reader.get_mut();
                    if tls.write_all(&answer).is_err() || tls.flush().is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, ca.pem(), sso_calls)
}

/// Runs `kpl put` of `lines` lines into `stream` with `args` and `env`, with
/// credentials in the environment unless `env` names a profile.
fn put(stream: &str, lines: usize, args: &[&str], env: &[(&str, &str)]) {
    let input: String = (0..lines).map(|i| format!("line {i}\n")).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kpl"));
    cmd.args([
        "put",
        "--stream",
        stream,
        "--region",
        "us-east-1",
        "--quiet",
    ])
    .args(args)
    .env_remove("AWS_ACCESS_KEY_ID")
    .env_remove("AWS_SECRET_ACCESS_KEY")
    .env_remove("AWS_SESSION_TOKEN")
    .env_remove("AWS_PROFILE")
    .env("AWS_EC2_METADATA_DISABLED", "true")
    .env_remove("HTTPS_PROXY")
    .env_remove("HTTP_PROXY")
    .env_remove("https_proxy")
    .env_remove("http_proxy")
    .env_remove("NO_PROXY")
    .env_remove("no_proxy")
    .envs(env.iter().copied())
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // Credentials in the environment, unless the run names a profile.
    if !env.iter().any(|(k, _)| *k == "AWS_PROFILE") {
        cmd.env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test");
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kpl put {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected: Vec<String> = (0..lines).map(|i| format!("line {i}")).collect();
    expected.sort();
    assert_eq!(stored(stream), expected, "each line stored once");
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn put_through_the_proxy_named_by_the_flag() {
    let (port, seen) = proxy();
    let stream = format!("cli-proxy-flag-{}", std::process::id());
    create_stream(&stream);
    let url = format!("http://kpl:s3cret@127.0.0.1:{port}");
    put(&stream, 200, &["--endpoint", &mock(), "--proxy", &url], &[]);
    let requests = seen.requests.lock().unwrap();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|r| r.starts_with("POST http://")),
        "absolute-form requests: {requests:?}"
    );
    let auths = seen.authorizations.lock().unwrap();
    assert_eq!(auths.len(), requests.len());
    // base64("kpl:s3cret")
    assert!(
        auths.iter().all(|a| a == "Basic a3BsOnMzY3JldA=="),
        "{auths:?}"
    );
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn put_through_the_proxy_of_the_kpl_keys() {
    let (port, seen) = proxy();
    let stream = format!("cli-proxy-keys-{}", std::process::id());
    create_stream(&stream);
    let dir = std::env::temp_dir().join(format!("kpl-proxy-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let properties = dir.join("kpl.properties");
    std::fs::write(
        &properties,
        format!(
            "KinesisEndpoint = {}\nProxyHost = 127.0.0.1\nProxyPort = {port}\n",
            mock()
        ),
    )
    .unwrap();
    put(
        &stream,
        150,
        &["--kpl-properties", properties.to_str().unwrap()],
        &[],
    );
    assert!(
        !seen.requests.lock().unwrap().is_empty(),
        "the proxy was used"
    );
    assert!(seen.authorizations.lock().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn put_over_https_through_the_environments_proxy() {
    let (proxy_port, seen) = proxy();
    let (tls_port, ca_pem, _) = tls_front(&["localhost"]);
    let stream = format!("cli-proxy-env-{}", std::process::id());
    create_stream(&stream);
    let dir = std::env::temp_dir().join(format!("kpl-proxy-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let endpoint = format!("https://localhost:{tls_port}");
    let proxy_url = format!("http://127.0.0.1:{proxy_port}");
    put(
        &stream,
        120,
        &["--endpoint", &endpoint, "--ca-file", ca.to_str().unwrap()],
        &[("HTTPS_PROXY", &proxy_url)],
    );
    let requests = seen.requests.lock().unwrap();
    assert!(
        requests
            .iter()
            .all(|r| r == &format!("CONNECT localhost:{tls_port} HTTP/1.1")),
        "{requests:?}"
    );
    assert!(seen.tunnels.load(Ordering::SeqCst) >= 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn put_with_credentials_from_a_credential_process_profile() {
    let stream = format!("cli-credential-process-{}", std::process::id());
    create_stream(&stream);
    let dir = std::env::temp_dir().join(format!("kpl-credential-process-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("asked");
    let config = dir.join("config");
    std::fs::write(
        &config,
        format!(
            "[profile kpl-process]\nregion = us-east-1\ncredential_process = sh -c \"touch {} && printf '{{\\\"Version\\\": 1, \\\"AccessKeyId\\\": \\\"AKIDPROCESS\\\", \\\"SecretAccessKey\\\": \\\"process-secret\\\"}}'\"\n",
            marker.display()
        ),
    )
    .unwrap();
    let missing = dir.join("no-credentials-file");
    put(
        &stream,
        50,
        &["--endpoint", &mock()],
        &[
            ("AWS_PROFILE", "kpl-process"),
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            ("AWS_SHARED_CREDENTIALS_FILE", missing.to_str().unwrap()),
        ],
    );
    assert!(marker.exists(), "the credential process was asked");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn put_with_credentials_from_an_sso_profile() {
    // SSO's portal is reached over https through the environment's proxy, which
    // tunnels to a stand-in trusted by --ca-file; the login's token is in the
    // cache, as `aws sso login` leaves it.
    const PORTAL: &str = "portal.sso.us-east-1.amazonaws.com";
    const START_URL: &str = "https://kpl-test.awsapps.com/start";
    let (proxy_port, seen) = proxy();
    let (front_port, ca_pem, sso_calls) = tls_front(&[PORTAL]);
    *seen.connect_to.lock().unwrap() = Some(front_port);
    let stream = format!("cli-sso-{}", std::process::id());
    create_stream(&stream);
    let home = std::env::temp_dir().join(format!("kpl-sso-home-{}", std::process::id()));
    let cache = home.join(".aws/sso/cache");
    std::fs::create_dir_all(&cache).unwrap();
    let config = home.join(".aws/config");
    std::fs::write(
        &config,
        format!(
            "[profile kpl-sso]\nsso_start_url = {START_URL}\nsso_region = us-east-1\n\
             sso_account_id = 123456789012\nsso_role_name = KplTest\nregion = us-east-1\n"
        ),
    )
    .unwrap();
    // The cache file is named by the SHA-1 of the start URL.
    let sha1 = Command::new("sh")
        .args(["-c", &format!("printf %s '{START_URL}' | sha1sum")])
        .output()
        .unwrap();
    let sha1 = String::from_utf8(sha1.stdout).unwrap();
    let sha1 = sha1.split_whitespace().next().unwrap();
    std::fs::write(
        cache.join(format!("{sha1}.json")),
        json!({
            "accessToken": "kpl-test-token",
            "expiresAt": "2099-01-01T00:00:00Z",
            "region": "us-east-1",
            "startUrl": START_URL,
        })
        .to_string(),
    )
    .unwrap();
    let ca = home.join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let proxy_url = format!("http://127.0.0.1:{proxy_port}");
    put(
        &stream,
        40,
        &["--endpoint", &mock(), "--ca-file", ca.to_str().unwrap()],
        &[
            ("HOME", home.to_str().unwrap()),
            ("AWS_PROFILE", "kpl-sso"),
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            ("HTTPS_PROXY", &proxy_url),
        ],
    );
    assert!(
        sso_calls.load(Ordering::SeqCst) >= 1,
        "SSO was asked for credentials"
    );
    assert!(
        seen.requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r == &format!("CONNECT {PORTAL}:443 HTTP/1.1")),
        "{:?}",
        seen.requests.lock().unwrap()
    );
    let _ = std::fs::remove_dir_all(&home);
}

//! `kpl put` through a loopback HTTP proxy into kinesis-mock: named by `--proxy`,
//! by the KPL's `ProxyHost`/`ProxyPort` keys, and by `HTTPS_PROXY` to an https
//! endpoint (a CONNECT tunnel, and the endpoint's private CA trusted by
//! `--ca-file`). Each run is read back; the proxy counts what went through it.
//!
//! `#[ignore]`d in a plain `cargo test`; `cargo xtask ci` runs it with kinesis-mock up.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kpl_tests::TempDir;
use kpl_tests::http::{Loopback, Response};
use kpl_tests::kinesis::Kinesis;
use kpl_tests::proxy::{Counts, Faults, Proxy, forward_once};
use kpl_tests::tls::{self, TestCa};
use serde_json::json;

fn mock() -> String {
    kpl_tests::peers::kinesis_mock_endpoint()
}

fn create_stream(name: &str) {
    Kinesis::new(&mock()).create_stream(name, 1).unwrap();
}

/// A loopback HTTP proxy (absolute-form requests forwarded, CONNECT tunnelled),
/// recording what went through it.
fn proxy() -> Proxy {
    Proxy::start(&mock(), 1).unwrap()
}

/// An https endpoint in front of kinesis-mock: TLS with a certificate for `names`
/// signed by a CA of this test's; each request is forwarded on a connection of its
/// own, but SSO's GetRoleCredentials, which it answers itself (counted). Returns
/// its port, the CA's PEM and the count.
fn tls_front(names: &[&str]) -> (u16, String, Arc<AtomicUsize>) {
    let sso_calls = Arc::new(AtomicUsize::new(0));
    let sso = sso_calls.clone();
    let ca = TestCa::new("kpl-rs test CA");
    let (cert, key) = ca.leaf(names, false);
    let port = Loopback::new(move |request| {
        if request
            .request_line()
            .starts_with("GET /federation/credentials")
        {
            sso.fetch_add(1, Ordering::SeqCst);
            let answer = json!({"roleCredentials": {
                "accessKeyId": "AKIDSSO",
                "secretAccessKey": "sso-secret",
                "sessionToken": "sso-session",
                "expiration": 4_102_444_800_000u64,
            }});
            return Response::new("200 OK", "application/json", answer.to_string());
        }
        let endpoint = mock();
        match forward_once(
            request.request_line(),
            request.head(),
            request.body(),
            endpoint.trim_start_matches("http://"),
        ) {
            Ok(answer) => Response::raw(answer),
            Err(_) => Response::hang_up(),
        }
    })
    .start_with(tls::server(cert, &key));
    (port, ca.pem().to_owned(), sso_calls)
}

/// Runs `kpl put` of `lines` lines into `stream` with `args` and `env`, with
/// credentials in the environment unless `env` names a profile.
fn put(stream: &str, lines: usize, args: &[&str], env: &[(&str, &str)]) {
    let input: String = (0..lines).map(|i| format!("line {i}\n")).collect();
    let mut cmd = common::command(&[]);
    cmd.args([
        "put",
        "--stream",
        stream,
        "--region",
        "us-east-1",
        "--quiet",
    ])
    .args(args)
    .envs(env.iter().copied());
    // Credentials from the profile when the run names one.
    if env.iter().any(|(k, _)| *k == "AWS_PROFILE") {
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
    }
    let out = kpl_tests::kpl::run(&mut cmd, input);
    assert!(
        out.status.success(),
        "kpl put {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected: Vec<String> = (0..lines).map(|i| format!("line {i}")).collect();
    expected.sort();
    assert_eq!(
        Kinesis::new(&mock()).stored_lines(stream).unwrap(),
        expected,
        "each line stored once"
    );
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn put_through_the_proxy_named_by_the_flag() {
    let proxy = proxy();
    let stream = format!("cli-proxy-flag-{}", std::process::id());
    create_stream(&stream);
    let url = format!("http://kpl:s3cret@127.0.0.1:{}", proxy.port());
    put(&stream, 200, &["--endpoint", &mock(), "--proxy", &url], &[]);
    let requests = proxy.counts.request_lines();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|r| r.starts_with("POST http://")),
        "absolute-form requests: {requests:?}"
    );
    let auths = proxy.counts.proxy_authorizations();
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
    let proxy = proxy();
    let port = proxy.port();
    let stream = format!("cli-proxy-keys-{}", std::process::id());
    create_stream(&stream);
    let dir = TempDir::new("proxy-keys");
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
        !proxy.counts.request_lines().is_empty(),
        "the proxy was used"
    );
    assert!(proxy.counts.proxy_authorizations().is_empty());
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn put_over_https_through_the_environments_proxy() {
    let proxy = proxy();
    let (tls_port, ca_pem, _) = tls_front(&["localhost"]);
    let stream = format!("cli-proxy-env-{}", std::process::id());
    create_stream(&stream);
    let dir = TempDir::new("proxy-env");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let endpoint = format!("https://localhost:{tls_port}");
    let proxy_url = proxy.endpoint.clone();
    put(
        &stream,
        120,
        &["--endpoint", &endpoint, "--ca-file", ca.to_str().unwrap()],
        &[("HTTPS_PROXY", &proxy_url)],
    );
    let requests = proxy.counts.request_lines();
    assert!(
        requests
            .iter()
            .all(|r| r == &format!("CONNECT localhost:{tls_port} HTTP/1.1")),
        "{requests:?}"
    );
    assert!(Counts::get(&proxy.counts.tunnels) >= 1);
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn put_with_credentials_from_a_credential_process_profile() {
    let stream = format!("cli-credential-process-{}", std::process::id());
    create_stream(&stream);
    let dir = TempDir::new("credential-process");
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
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn put_with_credentials_from_an_sso_profile() {
    // SSO's portal is reached over https through the environment's proxy, which
    // tunnels to a stand-in trusted by --ca-file; the login's token is in the
    // cache, as `aws sso login` leaves it.
    const PORTAL: &str = "portal.sso.us-east-1.amazonaws.com";
    const START_URL: &str = "https://kpl-test.awsapps.com/start";
    let proxy = proxy();
    let (front_port, ca_pem, sso_calls) = tls_front(&[PORTAL]);
    proxy.set(Faults {
        tunnel_to: Some(format!("127.0.0.1:{front_port}")),
        ..Faults::default()
    });
    let stream = format!("cli-sso-{}", std::process::id());
    create_stream(&stream);
    let home = TempDir::new("sso-home");
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
    let proxy_url = proxy.endpoint.clone();
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
    let requests = proxy.counts.request_lines();
    assert!(
        requests
            .iter()
            .any(|r| r == &format!("CONNECT {PORTAL}:443 HTTP/1.1")),
        "{requests:?}"
    );
}

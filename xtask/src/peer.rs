//! kinesis-mock (npm `kinesis-local`), installed under `target/` and run on loopback
//! for the integration tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kpl_tests::kinesis::Kinesis;

use crate::util::{run, step, target_dir};

/// The pinned version (see docs/testing.md for its quirks).
const KINESIS_MOCK_VERSION: &str = "0.6.2";
/// The throughput peer for benchmarks, pinned.
const KINESALITE_VERSION: &str = "3.3.3";

/// The environment variable the integration tests read the endpoint from.
pub(crate) const ENDPOINT_VAR: &str = kpl_tests::peers::KINESIS_MOCK_ENDPOINT_VAR;

/// Credentials for the AWS chain of tests against a peer (which takes any), and
/// no instance-metadata lookups.
pub(crate) const MOCK_CREDENTIALS: [(&str, &str); 3] = kpl_tests::peers::TEST_CREDENTIALS;

/// A running kinesis-mock; stopped when dropped.
pub(crate) struct KinesisMock {
    child: Child,
    pub(crate) endpoint: String,
}

impl Drop for KinesisMock {
    fn drop(&mut self) {
        // SIGTERM first (it exits in about a second), then make sure.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn install() -> Result<PathBuf> {
    install_npm(
        "kinesis-mock",
        "kinesis-local",
        KINESIS_MOCK_VERSION,
        "main.js",
    )
}

/// Installs `package@version` with npm under `target/peers/NAME` (once).
fn install_npm(name: &str, package: &str, version: &str, main: &str) -> Result<PathBuf> {
    let dir = target_dir().join("peers").join(name);
    let main = dir.join("node_modules").join(package).join(main);
    let stamp = dir.join("installed-version");
    if main.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(version) {
        return Ok(dir);
    }
    step(&format!("installing {name} (npm {package}@{version})"));
    std::fs::create_dir_all(&dir)?;
    if Command::new("npm").arg("--version").output().is_err() {
        step("npm not found: installing nodejs and npm with apt-get");
        run(Command::new("apt-get").arg("update"))?;
        run(Command::new("apt-get").args(["install", "-y", "nodejs", "npm"]))?;
    }
    run(Command::new("npm")
        .arg("install")
        .arg("--prefix")
        .arg(&dir)
        .args(["--no-audit", "--no-fund", "--loglevel=error"])
        .arg(format!("{package}@{version}")))?;
    std::fs::write(&stamp, version)?;
    Ok(dir)
}

/// Installs (once) and starts kinesis-mock, and waits until it answers.
pub(crate) fn start_kinesis_mock() -> Result<KinesisMock> {
    let dir = install()?;
    let package = dir.join("node_modules/kinesis-local");
    let plain = kpl_tests::peers::free_port()?;
    let tls = kpl_tests::peers::free_port()?;
    step(&format!("starting kinesis-mock on 127.0.0.1:{plain}"));
    let log = std::fs::File::create(dir.join("kinesis-mock.log"))?;
    let child = Command::new("node")
        .arg(package.join("main.js"))
        .env("KINESIS_MOCK_CERT_PATH", package.join("server.json"))
        .env("KINESIS_MOCK_PLAIN_PORT", plain.to_string())
        .env("KINESIS_MOCK_TLS_PORT", tls.to_string())
        .env("CREATE_STREAM_DURATION", "0ms")
        .env("DELETE_STREAM_DURATION", "0ms")
        .env("SPLIT_SHARD_DURATION", "0ms")
        .env("MERGE_SHARDS_DURATION", "0ms")
        .env("UPDATE_SHARD_COUNT_DURATION", "0ms")
        .env("SHARD_LIMIT", "1000")
        .env("LOG_LEVEL", "WARN")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start node: install Node.js")?;
    let mut mock = KinesisMock {
        child,
        endpoint: format!("http://127.0.0.1:{plain}"),
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Some(status) = mock.child.try_wait()? {
            bail!(
                "kinesis-mock exited at start ({status}); see {}",
                dir.join("kinesis-mock.log").display()
            );
        }
        if Kinesis::new(&mock.endpoint).answers() {
            println!(
                "kinesis-mock ready at {} after {} ms",
                mock.endpoint,
                started.elapsed().as_millis()
            );
            return Ok(mock);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = mock.child.kill();
    bail!("kinesis-mock did not answer within 30 s")
}

/// Installs (once) and starts kinesalite on loopback with a stream `name` of
/// `shards` shards; for benchmarks.
pub(crate) fn start_kinesalite(name: &str, shards: u32) -> Result<KinesisMock> {
    let dir = install_npm("kinesalite", "kinesalite", KINESALITE_VERSION, "cli.js")?;
    let port = kpl_tests::peers::free_port()?;
    step(&format!("starting kinesalite on 127.0.0.1:{port}"));
    let log = std::fs::File::create(dir.join("kinesalite.log"))?;
    let child = Command::new("node")
        .arg(dir.join("node_modules/kinesalite/cli.js"))
        .args([
            "--port",
            &port.to_string(),
            "--createStreamMs",
            "0",
            "--updateStreamMs",
            "0",
        ])
        .args(["--deleteStreamMs", "0", "--shardLimit", "10000"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start node: install Node.js")?;
    let peer = KinesisMock {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let started = Instant::now();
    while !Kinesis::new(&peer.endpoint).answers() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("kinesalite did not answer within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    peer.create_stream(name, shards)?;
    println!(
        "kinesalite ready at {} with stream {name} of {shards} shards",
        peer.endpoint
    );
    Ok(peer)
}

impl KinesisMock {
    /// Creates a stream of `shards` shards on this peer and waits until it is active.
    pub(crate) fn create_stream(&self, name: &str, shards: u32) -> Result<()> {
        Kinesis::new(&self.endpoint)
            .create_stream(name, shards)
            .with_context(|| format!("the peer refused CreateStream for {name}"))
    }
}

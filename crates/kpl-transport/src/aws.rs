//! The transport over `aws-sdk-kinesis`.

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::config::{Credentials, Region};
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{
    PutRecordsRequestEntry, ShardFilter, ShardFilterType, ShardIteratorType,
};
use aws_smithy_async::rt::sleep::SharedAsyncSleep;
#[cfg(feature = "tokio")]
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use bytes::Bytes;
use kpl_codec::HashKey;
use tracing::{debug, warn};

use crate::proxy::{Proxy, ProxySetting, Trust};
use crate::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT, EntryResult, ErrorKind, ListShardsPage,
    ListShardsRequest, PutRecordsRequest, PutRecordsResponse, ReadRecord, RecordsPage,
    ShardDescription, ShardPosition, StreamId, Transport, TransportError,
};

/// The real service, through `aws-sdk-kinesis`.
///
/// The SDK's own retries are off (the producer retries, per record, bounded by the
/// record's time to live); connect and request timeouts default to the KPL's 6 s;
/// idle connections are pooled up to `max_connections` (default 24). TLS is rustls
/// with ring; the SDK runs on tokio.
///
/// ```no_run
/// # async fn example() -> Result<(), kpl_transport::BuildError> {
/// use kpl_transport::AwsTransport;
///
/// // Region and credentials from the standard AWS chain (environment, profile,
/// // container or instance role):
/// let transport = AwsTransport::builder().build().await?;
///
/// // A local endpoint (kinesis-mock), with static credentials:
/// let local = AwsTransport::builder()
///     .endpoint_url("http://127.0.0.1:4568")
///     .region("us-east-1")
///     .static_credentials("test", "test")
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct AwsTransport {
    client: aws_sdk_kinesis::Client,
    connect_timeout: Duration,
    credentials: Option<SharedCredentialsProvider>,
    sleep: Option<SharedAsyncSleep>,
}

/// Settings of an [`AwsTransport`].
#[derive(Clone, Default)]
pub struct AwsTransportBuilder {
    endpoint_url: Option<String>,
    region: Option<String>,
    credentials: Option<(String, String, Option<String>)>,
    connect_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    max_connections: Option<usize>,
    sdk_config: Option<SdkConfig>,
    http_runtime: Option<HttpRuntime>,
    proxy: ProxySetting,
    trust: Trust,
}

/// The HTTP client an [`AwsTransport`] sends with.
///
/// The default is [`Tokio`](Self::Tokio) when the crate's `tokio` feature is on,
/// else [`AsyncIo`](Self::AsyncIo).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpRuntime {
    /// The SDK's hyper client on tokio (feature `tokio`): the transport must be
    /// built and used inside a tokio runtime.
    Tokio,
    /// This crate's client on async-io (feature `async-io`): runs under smol,
    /// async-std or any executor, with no tokio runtime.
    AsyncIo,
}

impl HttpRuntime {
    /// The default for the features enabled.
    fn default_for_features() -> Self {
        if cfg!(feature = "tokio") {
            Self::Tokio
        } else {
            Self::AsyncIo
        }
    }
}

impl fmt::Debug for AwsTransportBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print credentials.
        f.debug_struct("AwsTransportBuilder")
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field("static_credentials", &self.credentials.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_connections", &self.max_connections)
            .field("proxy", &self.proxy)
            .field("verify_certificate", &self.trust.verify)
            .finish_non_exhaustive()
    }
}

/// A setting of [`AwsTransportBuilder`] out of bounds, or a client that cannot be
/// set up.
///
/// Ask it with [`kind`](Self::kind) or the `is_*` methods, and for the values
/// that go with it with [`setting`](Self::setting), [`value`](Self::value),
/// [`url`](Self::url) and [`http_runtime`](Self::http_runtime). Display says what
/// could not be done and what to set; the error behind it, if any (the system's,
/// the TLS library's, the credential chain's), is its
/// [`source`](std::error::Error::source).
///
/// ```
/// use kpl_transport::{AwsTransport, BuildErrorKind};
///
/// let err = AwsTransport::builder()
///     .ca_certificates_path("/no/such/ca.pem")
///     .unwrap_err();
/// assert_eq!(err.kind(), BuildErrorKind::HttpClient);
/// assert!(err.is_http_client());
/// // The system's error is the cause, not part of the message.
/// let cause = std::error::Error::source(&err).expect("the io::Error");
/// assert!(!err.to_string().contains(&cause.to_string()));
/// ```
#[derive(Debug)]
pub struct BuildError {
    repr: Repr,
}

/// What kind of [`BuildError`] it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BuildErrorKind {
    /// A value out of its allowed range ([`BuildError::setting`] and
    /// [`BuildError::value`] say which).
    OutOfRange,
    /// No region was given and the AWS chain found none.
    NoRegion,
    /// The HTTP client asked for ([`BuildError::http_runtime`]) is not built in:
    /// enable kpl-transport's feature `tokio` or `async-io` (kpl's `tokio` or
    /// `smol`).
    NoHttpClient,
    /// The HTTP client could not be set up (its proxy, its TLS settings, its CA
    /// certificates); the error behind it, if any, is the source.
    HttpClient,
    /// The AWS credential chain has no source of credentials at all (no
    /// environment variables, no profile, no role): what
    /// [`AwsTransport::check_credentials`] says before anything is sent. What the
    /// chain said, if anything, is the source.
    NoCredentials,
    /// The endpoint URL ([`BuildError::url`]) cannot be sent to: no `http://` or
    /// `https://` scheme, no host, a port that is not one.
    InvalidEndpoint,
}

type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
enum Repr {
    OutOfRange {
        setting: &'static str,
        value: String,
        allowed: &'static str,
    },
    NoRegion,
    NoHttpClient(HttpRuntime),
    HttpClient {
        /// What could not be set up (`CA certificates /etc/ca.pem`, `TLS
        /// settings`), and, when no error value is behind it, what is wrong.
        what: String,
        source: Option<Cause>,
    },
    NoCredentials {
        source: Option<Cause>,
    },
    InvalidEndpoint {
        url: String,
        /// What is wrong with it, in our words.
        reason: String,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::OutOfRange {
                setting,
                value,
                allowed,
            } => write!(f, "{setting} = {value} is out of range: allowed {allowed}"),
            Repr::NoRegion => f.write_str(
                "no AWS region: set one on the builder, or AWS_REGION, or a profile's region",
            ),
            Repr::NoHttpClient(runtime) => write!(
                f,
                "the {runtime:?} HTTP client is not built in: enable kpl-transport's feature {}",
                match runtime {
                    HttpRuntime::Tokio => "tokio",
                    HttpRuntime::AsyncIo => "async-io",
                }
            ),
            Repr::HttpClient { what, .. } => {
                write!(f, "the HTTP client could not be set up: {what}")
            }
            Repr::NoCredentials { .. } => f.write_str(
                "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                 or AWS_PROFILE naming a profile of ~/.aws/config, or run where a role is \
                 given (instance, container, web identity)",
            ),
            Repr::InvalidEndpoint { url, reason } => write!(
                f,
                "endpoint {url:?} {reason}: give a URL such as http://127.0.0.1:4567 or \
                 https://kinesis.us-east-1.amazonaws.com"
            ),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.repr {
            Repr::HttpClient { source, .. } | Repr::NoCredentials { source } => source
                .as_deref()
                .map(|e| e as &(dyn std::error::Error + 'static)),
            _ => None,
        }
    }
}

impl BuildError {
    /// `setting` = `value` is outside what is `allowed`.
    pub(crate) fn out_of_range(
        setting: &'static str,
        value: impl Into<String>,
        allowed: &'static str,
    ) -> Self {
        Self {
            repr: Repr::OutOfRange {
                setting,
                value: value.into(),
                allowed,
            },
        }
    }

    pub(crate) fn no_region() -> Self {
        Self {
            repr: Repr::NoRegion,
        }
    }

    pub(crate) fn no_http_client(runtime: HttpRuntime) -> Self {
        Self {
            repr: Repr::NoHttpClient(runtime),
        }
    }

    /// The HTTP client could not set up `what`, for the reason `source` gives.
    pub(crate) fn http_client(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self {
            repr: Repr::HttpClient {
                what: what.into(),
                source: Some(source.into()),
            },
        }
    }

    /// The HTTP client could not set up `what`, which says why (no error value
    /// is behind it).
    pub(crate) fn http_client_setting(what: impl Into<String>) -> Self {
        Self {
            repr: Repr::HttpClient {
                what: what.into(),
                source: None,
            },
        }
    }

    /// No credentials, for the reason the chain gave, if any.
    pub(crate) fn no_credentials(source: Option<Cause>) -> Self {
        Self {
            repr: Repr::NoCredentials { source },
        }
    }

    /// `url` cannot be sent to, for `reason` (in our words).
    pub(crate) fn invalid_endpoint(url: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            repr: Repr::InvalidEndpoint {
                url: url.into(),
                reason: reason.into(),
            },
        }
    }

    /// What kind of error it is.
    pub fn kind(&self) -> BuildErrorKind {
        match self.repr {
            Repr::OutOfRange { .. } => BuildErrorKind::OutOfRange,
            Repr::NoRegion => BuildErrorKind::NoRegion,
            Repr::NoHttpClient(_) => BuildErrorKind::NoHttpClient,
            Repr::HttpClient { .. } => BuildErrorKind::HttpClient,
            Repr::NoCredentials { .. } => BuildErrorKind::NoCredentials,
            Repr::InvalidEndpoint { .. } => BuildErrorKind::InvalidEndpoint,
        }
    }

    /// A setting is out of its range ([`setting`](Self::setting) says which).
    pub fn is_out_of_range(&self) -> bool {
        self.kind() == BuildErrorKind::OutOfRange
    }

    /// No region was given and the AWS chain found none.
    pub fn is_no_region(&self) -> bool {
        self.kind() == BuildErrorKind::NoRegion
    }

    /// The HTTP client asked for is not built in.
    pub fn is_no_http_client(&self) -> bool {
        self.kind() == BuildErrorKind::NoHttpClient
    }

    /// The HTTP client could not be set up.
    pub fn is_http_client(&self) -> bool {
        self.kind() == BuildErrorKind::HttpClient
    }

    /// The AWS credential chain has no source of credentials.
    pub fn is_no_credentials(&self) -> bool {
        self.kind() == BuildErrorKind::NoCredentials
    }

    /// The endpoint URL cannot be sent to ([`url`](Self::url) gives it).
    pub fn is_invalid_endpoint(&self) -> bool {
        self.kind() == BuildErrorKind::InvalidEndpoint
    }

    /// The setting out of range (`max_connections`, `request_timeout`, …).
    pub fn setting(&self) -> Option<&'static str> {
        match self.repr {
            Repr::OutOfRange { setting, .. } => Some(setting),
            _ => None,
        }
    }

    /// The value given to the setting out of range, as text.
    pub fn value(&self) -> Option<&str> {
        match &self.repr {
            Repr::OutOfRange { value, .. } => Some(value),
            _ => None,
        }
    }

    /// What the setting out of range allows (`1 to 256`).
    pub fn allowed(&self) -> Option<&'static str> {
        match self.repr {
            Repr::OutOfRange { allowed, .. } => Some(allowed),
            _ => None,
        }
    }

    /// The endpoint URL that cannot be sent to, as given.
    pub fn url(&self) -> Option<&str> {
        match &self.repr {
            Repr::InvalidEndpoint { url, .. } => Some(url),
            _ => None,
        }
    }

    /// The HTTP client asked for that is not built in.
    pub fn http_runtime(&self) -> Option<HttpRuntime> {
        match self.repr {
            Repr::NoHttpClient(runtime) => Some(runtime),
            _ => None,
        }
    }
}

impl AwsTransportBuilder {
    /// Sends to this endpoint instead of the region's (kinesis-mock, a VPC endpoint).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Forgets the endpoint URL (it names Kinesis's endpoint; other services of
    /// the same settings have their own).
    #[cfg(feature = "cloudwatch")]
    pub(crate) fn clear_endpoint_url(&mut self) {
        self.endpoint_url = None;
    }

    /// The region, instead of the AWS chain's.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Static credentials, instead of the AWS chain's. They are never logged.
    pub fn static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.credentials = Some((access_key_id.into(), secret_access_key.into(), None));
        self
    }

    /// Connect timeout, 100 ms to 300 s (default 6 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Timeout of one request, 100 ms to 600 s (default 6 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Idle connections kept, 1 to 256 (default 24).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// Sends through this HTTP proxy (instead of the environment's `HTTPS_PROXY`,
    /// `HTTP_PROXY` and `NO_PROXY`, which apply by default).
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = ProxySetting::Fixed(proxy);
        self
    }

    /// Never through a proxy, whatever the environment says.
    pub fn without_proxy(mut self) -> Self {
        self.proxy = ProxySetting::Disabled;
        self
    }

    /// Trusts the CA certificates in this PEM text as well as the system's (a private
    /// CA, a TLS-inspecting proxy). May be called more than once.
    pub fn ca_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.trust.extra_pem.push(pem.into());
        self
    }

    /// Trusts the CA certificates at `path`, as well as the system's: a PEM file
    /// (one certificate or a bundle), or a directory of them as the KPL's
    /// `CaCertPath` is (every file in it that holds a PEM certificate: `*.pem`,
    /// `*.crt`, OpenSSL's hashed names; other files and subdirectories are
    /// skipped). A path that cannot be read, or that holds no certificate, is a
    /// [`BuildErrorKind::HttpClient`] naming it.
    pub fn ca_certificates_path(
        mut self,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Self, BuildError> {
        let path = path.as_ref();
        let unreadable = |e: std::io::Error| {
            BuildError::http_client(format!("CA certificates {}", path.display()), e)
        };
        let holds_certificate =
            |pem: &[u8]| pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----");
        let mut found = 0;
        if path.is_dir() {
            let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(path)
                .map_err(unreadable)?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            for file in files {
                let pem = std::fs::read(&file).map_err(|e| {
                    BuildError::http_client(format!("CA certificates {}", file.display()), e)
                })?;
                if holds_certificate(&pem) {
                    self.trust.extra_pem.push(pem);
                    found += 1;
                }
            }
        } else {
            let pem = std::fs::read(path).map_err(unreadable)?;
            if holds_certificate(&pem) {
                self.trust.extra_pem.push(pem);
                found += 1;
            }
        }
        if found == 0 {
            return Err(BuildError::http_client_setting(format!(
                "CA certificates {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                path.display()
            )));
        }
        debug!(path = %path.display(), files = found, "CA certificates trusted");
        Ok(self)
    }

    /// Whether the endpoint's certificate is checked (default true). `false` is for
    /// test endpoints only: anyone on the path can then read and change requests.
    /// The transport warns when it is built. On the tokio client it needs the
    /// `async-io` feature too: the SDK's client cannot accept any certificate, so
    /// the requests go through this crate's connections (on async-io's reactor
    /// thread) with tokio's timers.
    pub fn verify_certificate(mut self, verify: bool) -> Self {
        self.trust.verify = verify;
        self
    }

    /// The HTTP client to send with (default: tokio's when the `tokio` feature is
    /// on, else async-io's).
    pub fn http_runtime(mut self, runtime: HttpRuntime) -> Self {
        self.http_runtime = Some(runtime);
        self
    }

    /// Starts from a loaded SDK config (credentials provider, region, and the seams
    /// for a custom HTTP client or sleep implementation) instead of loading the AWS
    /// chain. The builder's own settings still apply on top, but an HTTP client or
    /// sleep the config brings is kept (and the builder's proxy and trust settings,
    /// which belong to our clients, then do not apply).
    pub fn sdk_config(mut self, config: SdkConfig) -> Self {
        self.sdk_config = Some(config);
        self
    }

    fn check(&self) -> Result<(Duration, Duration, usize), BuildError> {
        fn range(
            setting: &'static str,
            value: Duration,
            min: Duration,
            max: Duration,
            allowed: &'static str,
        ) -> Result<Duration, BuildError> {
            if value < min || value > max {
                return Err(BuildError::out_of_range(
                    setting,
                    format!("{value:?}"),
                    allowed,
                ));
            }
            Ok(value)
        }
        let connect = range(
            "connect_timeout",
            self.connect_timeout.unwrap_or(DEFAULT_TIMEOUT),
            Duration::from_millis(100),
            Duration::from_secs(300),
            "100 ms to 300 s",
        )?;
        let request = range(
            "request_timeout",
            self.request_timeout.unwrap_or(DEFAULT_TIMEOUT),
            Duration::from_millis(100),
            Duration::from_secs(600),
            "100 ms to 600 s",
        )?;
        if let Some(url) = &self.endpoint_url {
            check_endpoint_url(url)?;
        }
        let connections = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if !(1..=256).contains(&connections) {
            return Err(BuildError::out_of_range(
                "max_connections",
                connections.to_string(),
                "1 to 256",
            ));
        }
        Ok((connect, request, connections))
    }

    /// Builds the transport, loading the AWS chain for whatever was not given.
    /// With the tokio HTTP client ([`HttpRuntime::Tokio`]), must run inside a tokio
    /// runtime; with async-io's, under any executor.
    pub async fn build(self) -> Result<AwsTransport, BuildError> {
        let shared = self.shared_config().await?;
        // The producer retries, per record, within each record's time to live.
        let mut config = aws_sdk_kinesis::config::Builder::from(&shared.sdk)
            .retry_config(RetryConfig::disabled());
        if let Some(url) = shared.endpoint_url {
            config = config.endpoint_url(url);
        }
        Ok(AwsTransport {
            credentials: shared.sdk.credentials_provider(),
            sleep: shared.sdk.sleep_impl(),
            client: aws_sdk_kinesis::Client::from_conf(config.build()),
            connect_timeout: shared.connect_timeout,
        })
    }

    /// The SDK config every client of ours is built from: the AWS chain (or the
    /// given SDK config) with this builder's settings on top, and the connect
    /// timeout. Checks the settings and that a region is known. The endpoint URL
    /// is left to each service's config (it names one service's endpoint).
    pub(crate) async fn shared_config(self) -> Result<SharedConfig, BuildError> {
        let (connect, request, connections) = self.check()?;
        let runtime = self
            .http_runtime
            .unwrap_or_else(HttpRuntime::default_for_features);
        if !self.trust.verify {
            warn!(
                http_client = ?runtime,
                "certificate verification is OFF (VerifyCertificate = false): anyone on the \
                 network path can read and change what is sent; use it with test endpoints only"
            );
        }
        let (http, sleep) = http_client(runtime, connections, &self.proxy, &self.trust)?;
        // An SDK config that brings its own HTTP client or sleep keeps them (the
        // seam for a client of the user's; our proxy and trust settings then do not
        // apply).
        let given_client = self
            .sdk_config
            .as_ref()
            .is_some_and(|c| c.http_client().is_some());
        let given_sleep = self
            .sdk_config
            .as_ref()
            .is_some_and(|c| c.sleep_impl().is_some());
        let sdk = match self.sdk_config {
            Some(config) => config,
            None => {
                let mut loader =
                    aws_config::defaults(BehaviorVersion::latest()).http_client(http.clone());
                if let Some(sleep) = &sleep {
                    loader = loader.sleep_impl(sleep.clone());
                }
                if let Some(region) = &self.region {
                    loader = loader.region(Region::new(region.clone()));
                }
                if let Some((id, secret, token)) = &self.credentials {
                    loader = loader.credentials_provider(Credentials::new(
                        id.clone(),
                        secret.clone(),
                        token.clone(),
                        None,
                        "kpl-static",
                    ));
                }
                loader.load().await
            }
        };
        let mut config = sdk.into_builder().timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(connect)
                .operation_attempt_timeout(request)
                .operation_timeout(request)
                .build(),
        );
        if !given_client {
            config = config.http_client(http);
        }
        if let Some(sleep) = sleep.filter(|_| !given_sleep) {
            config = config.sleep_impl(sleep);
        }
        if let Some(region) = self.region {
            config = config.region(Region::new(region));
        }
        if let Some((id, secret, token)) = self.credentials {
            config = config.credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                id,
                secret,
                token,
                None,
                "kpl-static",
            )));
        }
        let config = config.build();
        if config.region().is_none() {
            return Err(BuildError::no_region());
        }
        Ok(SharedConfig {
            sdk: config,
            connect_timeout: connect,
            endpoint_url: self.endpoint_url,
        })
    }
}

/// What every client of ours is built from.
pub(crate) struct SharedConfig {
    /// The AWS chain's config with the builder's settings on top.
    pub(crate) sdk: SdkConfig,
    pub(crate) connect_timeout: Duration,
    /// The builder's endpoint URL, for the one service it names.
    pub(crate) endpoint_url: Option<String>,
}

/// The HTTP client and sleep of a runtime (no sleep: the SDK's default, tokio's).
fn http_client(
    runtime: HttpRuntime,
    connections: usize,
    proxy: &ProxySetting,
    trust: &Trust,
) -> Result<(SharedHttpClient, Option<SharedAsyncSleep>), BuildError> {
    let _ = (connections, proxy, trust);
    match runtime {
        // The SDK's client cannot be told to accept any certificate: on tokio, such
        // requests go through our client's connections (async-io runs its own
        // reactor thread, under tokio as under any executor), with tokio's sleep.
        #[cfg(all(feature = "tokio", feature = "async-io"))]
        HttpRuntime::Tokio if !trust.verify => {
            let client = crate::async_io_http::AsyncIoHttpClient::new(connections, proxy, trust)?;
            Ok((SharedHttpClient::new(client), None))
        }
        #[cfg(feature = "tokio")]
        HttpRuntime::Tokio => Ok((tokio_client(connections, proxy, trust)?, None)),
        #[cfg(feature = "async-io")]
        HttpRuntime::AsyncIo => {
            let client = crate::async_io_http::AsyncIoHttpClient::new(connections, proxy, trust)?;
            Ok((
                SharedHttpClient::new(client),
                Some(SharedAsyncSleep::new(crate::async_io_http::AsyncIoSleep)),
            ))
        }
        #[allow(unreachable_patterns)]
        other => Err(BuildError::no_http_client(other)),
    }
}

/// The SDK's hyper client, with our proxy and trust settings.
#[cfg(feature = "tokio")]
fn tokio_client(
    connections: usize,
    proxy: &ProxySetting,
    trust: &Trust,
) -> Result<SharedHttpClient, BuildError> {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{TlsContext, TrustStore};
    if !trust.verify {
        return Err(BuildError::http_client_setting(
            "VerifyCertificate = false on the tokio HTTP client needs kpl-transport's feature \
             async-io (kpl's smol), whose connections it then sends through; or trust the \
             endpoint's CA instead (ca_certificates_path, CaCertFile)",
        ));
    }
    let proxy = match proxy {
        ProxySetting::FromEnvironment => ProxyConfig::from_env(),
        ProxySetting::Disabled => ProxyConfig::disabled(),
        ProxySetting::Fixed(p) => {
            let mut config = ProxyConfig::all(p.url())
                .map_err(|e| BuildError::http_client(format!("proxy {}", p.url()), e))?;
            if let Some((user, password)) = p.auth() {
                config = config.with_basic_auth(user, password);
            }
            if let Some(rules) = p.no_proxy_rules() {
                config = config.no_proxy(rules);
            }
            config
        }
    };
    let mut store = TrustStore::default();
    for pem in &trust.extra_pem {
        store = store.with_pem_certificate(pem.clone());
    }
    let tls = TlsContext::builder()
        .with_trust_store(store)
        .build()
        .map_err(|e| BuildError::http_client("TLS settings", e))?;
    Ok(aws_smithy_http_client::Builder::new()
        .pool_max_idle_per_host(connections)
        .build_with_connector_fn(move |settings, components| {
            let mut builder =
                aws_smithy_http_client::Connector::builder().proxy_config(proxy.clone());
            builder.set_connector_settings(settings.cloned());
            if let Some(components) = components {
                builder.set_sleep_impl(components.sleep_impl());
            }
            builder
                .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
                .tls_context(tls.clone())
                .build()
        }))
}

impl AwsTransport {
    /// A builder, with the KPL's defaults.
    pub fn builder() -> AwsTransportBuilder {
        AwsTransportBuilder::default()
    }

    /// Resolves credentials once, waiting at most `timeout`, to say before anything
    /// is sent that there are none: [`BuildErrorKind::NoCredentials`] when the chain
    /// has no source at all or its configuration is wrong (a profile that names a
    /// missing one). A provider that fails for a while (instance metadata, STS,
    /// SSO not answering) or takes longer than `timeout` is not an error here: the
    /// producer retries such failures within each record's time to live, and the
    /// credentials are cached for the requests. Static credentials always pass.
    pub async fn check_credentials(&self, timeout: Duration) -> Result<(), BuildError> {
        use aws_credential_types::provider::ProvideCredentials;
        use aws_credential_types::provider::error::CredentialsError;
        let Some(provider) = &self.credentials else {
            return Err(BuildError::no_credentials(None));
        };
        let resolve = provider.provide_credentials();
        let result = match &self.sleep {
            Some(sleep) => {
                match aws_smithy_async::future::timeout::Timeout::new(
                    resolve,
                    aws_smithy_async::rt::sleep::AsyncSleep::sleep(sleep, timeout),
                )
                .await
                {
                    Ok(result) => result,
                    Err(_) => {
                        debug!(
                            timeout_ms = timeout.as_millis() as u64,
                            "credentials not resolved in time; requests will try again"
                        );
                        return Ok(());
                    }
                }
            }
            None => resolve.await,
        };
        match result {
            Ok(_) => Ok(()),
            Err(e @ CredentialsError::CredentialsNotLoaded(_))
            | Err(e @ CredentialsError::InvalidConfiguration(_)) => {
                Err(BuildError::no_credentials(Some(Box::new(e))))
            }
            Err(e) => {
                debug!(
                    "credentials not resolved now (requests will try again): {}",
                    error_chain(&e)
                );
                Ok(())
            }
        }
    }
}

/// Turns an SDK error into ours, keeping the service's code and message, in at
/// most [`MAX_MESSAGE`] bytes: never the SDK's debug form of the request or the
/// response (a request holds every record's data; an error body may be megabytes).
fn convert<E>(err: SdkError<E, aws_smithy_runtime_api::http::Response>) -> TransportError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let text = error_chain(&err);
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().map(str::to_owned);
            if code.is_none() && status < 500 && status != 429 {
                // Kinesis names every error it answers: this is another server.
                let content_type = service
                    .raw()
                    .headers()
                    .get("content-type")
                    .unwrap_or("no content type");
                let e = TransportError::new(
                    ErrorKind::Endpoint,
                    bounded(format!(
                        "the endpoint answered HTTP {status} ({content_type}) with something that is not a Kinesis answer{}: check the endpoint URL",
                        maybe_stored_note(status)
                    )),
                )
                .with_code("NotKinesis")
                .with_status(status);
                return if (200..300).contains(&status) {
                    e.stored_unknown()
                } else {
                    e
                };
            }
            let message = bounded(
                service
                    .err()
                    .message()
                    .map_or_else(|| text.clone(), str::to_owned),
            );
            let kind = ErrorKind::classify(code.as_deref(), Some(status));
            let mut e = TransportError::new(kind, message).with_status(status);
            if let Some(code) = code {
                e = e.with_code(code);
            }
            e
        }
        SdkError::ResponseError(response) => {
            let status = response.raw().status().as_u16();
            let kind = match ErrorKind::classify(None, Some(status)) {
                // An answer that is not the service's, and not a passing 5xx or 429:
                // a web page, a different API.
                ErrorKind::Other | ErrorKind::NotFound | ErrorKind::AccessDenied => {
                    ErrorKind::Endpoint
                }
                kind => kind,
            };
            let message = if kind == ErrorKind::Endpoint {
                format!(
                    "the endpoint answered HTTP {status} with something that is not a Kinesis answer{}: check the endpoint URL ({text})",
                    maybe_stored_note(status)
                )
            } else {
                text
            };
            let mut e = TransportError::new(kind, bounded(message)).with_status(status);
            if kind == ErrorKind::Endpoint {
                e = e.with_code("NotKinesis");
            }
            if (200..300).contains(&status) {
                // The service may have taken the records and the answer got lost
                // on its way (a proxy, a truncated body).
                e = e.stored_unknown();
            }
            e
        }
        SdkError::TimeoutError(_) => TransportError::timeout(bounded(text)),
        SdkError::DispatchFailure(dispatch) => {
            // The connector's error, with the inner errors' names (rustls's
            // certificate errors are there); it never holds the request.
            let detail = match dispatch.as_connector_error() {
                Some(c) => format!("{text} {c:?}"),
                None => text.clone(),
            };
            if dispatch.is_timeout() {
                TransportError::timeout(bounded(text))
            } else if let Some(problem) = tls_problem(&detail) {
                TransportError::new(ErrorKind::Tls, bounded(format!("{problem} ({text})")))
                    .with_code("TlsError")
            } else if looks_like_endpoint(&detail) {
                TransportError::new(ErrorKind::Endpoint, bounded(text)).with_code("EndpointError")
            } else if dispatch.is_io() {
                let e = TransportError::new(ErrorKind::Transient, bounded(text))
                    .with_code("ConnectionError");
                if looks_like_connect(&detail) {
                    // Never connected: nothing was sent.
                    e
                } else {
                    e.stored_unknown()
                }
            } else if looks_like_credentials(&text) {
                credentials_error(text)
            } else {
                TransportError::new(ErrorKind::Transient, bounded(text))
                    .with_code("DispatchFailure")
                    .stored_unknown()
            }
        }
        _ if looks_like_credentials(&text) => credentials_error(text),
        // The request could not be made (its endpoint, its fields): nothing was
        // sent, and the same request cannot be made later either.
        SdkError::ConstructionFailure(_) => {
            TransportError::new(ErrorKind::InvalidRequest, bounded(text))
                .with_code("ConstructionFailure")
        }
        _ => TransportError::new(ErrorKind::Other, bounded(text)),
    }
}

/// What a 2xx answer that is not the service's means for the records.
fn maybe_stored_note(status: u16) -> &'static str {
    if (200..300).contains(&status) {
        "; some records may have been stored"
    } else {
        ""
    }
}

/// The longest message of an error (bytes), about one line of a terminal's worth
/// of reasons; longer ones are cut with `…`.
pub(crate) const MAX_MESSAGE: usize = 512;

/// `text` cut to at most [`MAX_MESSAGE`] bytes, at a character boundary.
pub(crate) fn bounded(text: String) -> String {
    if text.len() <= MAX_MESSAGE {
        return text;
    }
    let mut end = MAX_MESSAGE - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = text;
    cut.truncate(end);
    cut.push('…');
    cut
}

/// An error and its causes by their `Display`s, `a: b: c` (a cause whose text the
/// level above already holds is left out), each cut to [`MAX_MESSAGE`] bytes. Never
/// the `Debug` forms, which hold whole requests and responses.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut level = Some(err);
    let mut previous = String::new();
    while let Some(e) = level {
        let text = bounded(e.to_string());
        if !text.is_empty() && !previous.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        previous = text;
        if out.len() > 4 * MAX_MESSAGE {
            break;
        }
        level = e.source();
    }
    out
}

/// The certificate problem a TLS failure names, in words, if it is one.
fn tls_problem(detail: &str) -> Option<&'static str> {
    // rustls's `CertificateError` variants, by the names (or, for some, the
    // sentences) its errors print.
    const PROBLEMS: [(&[&str], &str); 12] = [
        (
            &["CaUsedAsEndEntity"],
            "TLS: the server's certificate is a CA certificate used as the server's own \
             (CaUsedAsEndEntity): give the CA that signed it, or have the server present a \
             certificate signed by that CA",
        ),
        (
            &["UnknownIssuer"],
            "TLS: the server's certificate is signed by a CA that is not trusted \
             (UnknownIssuer): give that CA's certificate (--ca-file, CaCertFile)",
        ),
        (
            &["NotValidForName", "not valid for name"],
            "TLS: the server's certificate is not valid for the endpoint's host name \
             (NotValidForName): use the name the certificate was issued for",
        ),
        (
            &["NotValidYet", "certificate not valid yet"],
            "TLS: the server's certificate is not valid yet (NotValidYet): check the clocks",
        ),
        (
            &["Expired", "certificate expired"],
            "TLS: the server's certificate has expired (Expired): renew it, or check the clocks",
        ),
        (
            &["BadSignature"],
            "TLS: the server's certificate has a bad signature (BadSignature): it was not \
             signed by the CA it names",
        ),
        (
            &["Revoked"],
            "TLS: the server's certificate was revoked (Revoked)",
        ),
        (
            &["BadEncoding"],
            "TLS: the server's certificate cannot be read (BadEncoding)",
        ),
        (
            &["InvalidPurpose", "does not allow extended key usage"],
            "TLS: the server's certificate is not for TLS servers (InvalidPurpose)",
        ),
        (
            &["UnsupportedSignatureAlgorithm"],
            "TLS: the server's certificate is signed with an algorithm not supported \
             (UnsupportedSignatureAlgorithm)",
        ),
        (
            &["invalid peer certificate", "InvalidCertificate"],
            "TLS: the server's certificate was refused",
        ),
        (
            &["InvalidContentType", "corrupt message"],
            "TLS: the endpoint does not speak TLS (an https:// URL to a plain HTTP port?): \
             check the endpoint's scheme",
        ),
    ];
    PROBLEMS
        .iter()
        .find(|(needles, _)| needles.iter().any(|n| detail.contains(n)))
        .map(|(_, words)| *words)
}

/// Whether `url` can be sent to: `http://` or `https://`, a host, a port that is
/// one. Checked when a client is built, so that a mistyped URL fails at once.
pub(crate) fn check_endpoint_url(url: &str) -> Result<(), BuildError> {
    let invalid = |reason: String| BuildError::invalid_endpoint(url, reason);
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("holds spaces: it is not a URL".into()));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid(
            "has no scheme (http:// or https:// followed by the host)".into(),
        ));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(invalid(format!(
            "has the scheme {scheme:?}: only http and https are sent to"
        )));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(invalid(
            "holds a user name: give credentials through the AWS chain".into(),
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => return Err(invalid("has an IPv6 host without its closing ]".into())),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(invalid("has no host".into()));
    }
    if let Some(port) = port
        && (port.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0))
    {
        return Err(invalid(format!(
            "has the port {port:?}: a port is 1 to 65535"
        )));
    }
    Ok(())
}

/// TLS failures and answers that are not HTTP: the endpoint's URL, scheme or
/// certificate is wrong, and retrying cannot help.
fn looks_like_endpoint(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    [
        "invalidcontenttype",
        "corrupt message",
        "certificate",
        "handshake",
        "tls",
        "invalid http version",
        "invalid status",
        "invalid header",
        "unsupported http version",
    ]
    .iter()
    .any(|p| lower.contains(p))
}

/// A connection that was never made (refused, unreachable, name not resolved). A
/// broken connection ("connection closed", "connection reset") is not one: its
/// request may have been written.
fn looks_like_connect(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    [
        "trying to connect",
        "could not connect",
        "connect error",
        "connection refused",
        "dns",
        "resolve",
        "unreachable",
    ]
    .iter()
    .any(|p| lower.contains(p))
}

/// No credentials to sign with: the provider failed (often a passing fault of
/// instance metadata, STS, SSO or a credential process), and nothing was sent. The
/// producer retries within each record's time to live.
fn credentials_error(text: String) -> TransportError {
    debug!("no credentials to sign the request with (retried): {text}");
    TransportError::new(ErrorKind::Transient, bounded(text)).with_code("CredentialsError")
}

fn looks_like_credentials(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("credential") || lower.contains("identity")
}

fn hash_key(text: Option<&str>, shard: &str, which: &str) -> Result<HashKey, TransportError> {
    text.and_then(|t| HashKey::from_decimal(t).ok())
        .ok_or_else(|| {
            TransportError::new(
                ErrorKind::Other,
                format!("ListShards returned shard {shard} with no valid {which} hash key"),
            )
        })
}

/// Reads `MaxRecordSizeInKiB` from a DescribeStreamSummary answer's body.
#[derive(Debug)]
struct ReadMaxRecordSize(std::sync::Arc<std::sync::Mutex<Option<u64>>>);

impl aws_smithy_runtime_api::client::interceptors::Intercept for ReadMaxRecordSize {
    fn name(&self) -> &'static str {
        "ReadMaxRecordSize"
    }

    fn read_after_deserialization(
        &self,
        context: &aws_sdk_kinesis::config::interceptors::AfterDeserializationInterceptorContextRef<
            '_,
        >,
        _: &aws_sdk_kinesis::config::RuntimeComponents,
        _: &mut aws_sdk_kinesis::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        if let Some(body) = context.response().body().bytes() {
            *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = max_record_size_kib(body);
        }
        Ok(())
    }
}

/// `MaxRecordSizeInKiB` of a DescribeStreamSummary answer (JSON), when it is a
/// number.
fn max_record_size_kib(body: &[u8]) -> Option<u64> {
    const FIELD: &[u8] = b"\"MaxRecordSizeInKiB\"";
    let at = body.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let rest = body[at..]
        .trim_ascii_start()
        .strip_prefix(b":")?
        .trim_ascii_start();
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[async_trait]
impl Transport for AwsTransport {
    async fn max_record_size(&self, stream: &StreamId) -> Result<Option<usize>, TransportError> {
        // The SDK this crate is built with predates `MaxRecordSizeInKiB`: the field
        // is read from the answer's body, which the SDK keeps in memory once it has
        // deserialized the rest.
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let call = self.client.describe_stream_summary();
        let call = match stream {
            StreamId::Name(name) => call.stream_name(name),
            StreamId::Arn(arn) => call.stream_arn(arn),
        };
        call.customize()
            .interceptor(ReadMaxRecordSize(seen.clone()))
            .send()
            .await
            .map_err(convert)?;
        let kib = *seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(kib.map(|kib: u64| usize::try_from(kib.saturating_mul(1024)).unwrap_or(usize::MAX)))
    }

    async fn shard_iterator(
        &self,
        stream: &StreamId,
        shard_id: &str,
        position: ShardPosition,
    ) -> Result<String, TransportError> {
        let call = self.client.get_shard_iterator().shard_id(shard_id);
        let call = match stream {
            StreamId::Name(name) => call.stream_name(name),
            StreamId::Arn(arn) => call.stream_arn(arn),
        };
        let call = match position {
            ShardPosition::AfterSequenceNumber(seq) => call
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            ShardPosition::AtTimestamp(at) => call
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from(at)),
            ShardPosition::TrimHorizon => call.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let output = call.send().await.map_err(convert)?;
        output.shard_iterator().map(str::to_owned).ok_or_else(|| {
            TransportError::new(
                ErrorKind::Endpoint,
                format!("GetShardIterator answered no iterator for {shard_id}"),
            )
        })
    }

    async fn get_records(
        &self,
        stream: &StreamId,
        iterator: &str,
        limit: Option<u32>,
    ) -> Result<RecordsPage, TransportError> {
        let call = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .set_limit(limit.map(|l| l.min(kpl_codec::GET_RECORDS_MAX_RECORDS) as i32));
        // GetRecords names its stream by ARN only; the iterator names it anyway.
        let call = match stream {
            StreamId::Arn(arn) => call.stream_arn(arn),
            StreamId::Name(_) => call,
        };
        let output = call.send().await.map_err(convert)?;
        let records = output
            .records()
            .iter()
            .map(|r| {
                ReadRecord::new(
                    r.sequence_number(),
                    r.partition_key(),
                    Bytes::copy_from_slice(r.data().as_ref()),
                )
            })
            .collect();
        Ok(RecordsPage::new(
            records,
            output.next_shard_iterator().map(str::to_owned),
            output
                .millis_behind_latest()
                .map(|ms| u64::try_from(ms).unwrap_or(0)),
        ))
    }

    async fn list_shards(
        &self,
        request: ListShardsRequest,
    ) -> Result<ListShardsPage, TransportError> {
        let mut call = self.client.list_shards();
        match &request {
            ListShardsRequest::First {
                stream,
                open_only,
                max_results,
            } => {
                call = match stream {
                    StreamId::Name(name) => call.stream_name(name),
                    StreamId::Arn(arn) => call.stream_arn(arn),
                };
                if *open_only {
                    let filter = ShardFilter::builder()
                        .r#type(ShardFilterType::AtLatest)
                        .build()
                        .map_err(|e| TransportError::new(ErrorKind::Other, e.to_string()))?;
                    call = call.shard_filter(filter);
                }
                call = call.set_max_results(max_results.map(|m| m as i32));
            }
            ListShardsRequest::Next { token, max_results } => {
                call = call
                    .next_token(token)
                    .set_max_results(max_results.map(|m| m as i32));
            }
        }
        let started = Instant::now();
        let output = call.send().await.map_err(convert)?;
        let mut shards = Vec::with_capacity(output.shards().len());
        for shard in output.shards() {
            let id = shard.shard_id();
            let range = shard.hash_key_range();
            shards.push(ShardDescription {
                shard_id: id.to_owned(),
                starting_hash_key: hash_key(range.map(|r| r.starting_hash_key()), id, "starting")?,
                ending_hash_key: hash_key(range.map(|r| r.ending_hash_key()), id, "ending")?,
                parent_shard_id: shard.parent_shard_id().map(str::to_owned),
                adjacent_parent_shard_id: shard.adjacent_parent_shard_id().map(str::to_owned),
                closed: shard
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_some(),
            });
        }
        debug!(
            shards = shards.len(),
            more = output.next_token().is_some(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "ListShards"
        );
        Ok(ListShardsPage {
            shards,
            next_token: output.next_token().map(str::to_owned),
        })
    }

    async fn put_records(
        &self,
        request: PutRecordsRequest,
    ) -> Result<PutRecordsResponse, TransportError> {
        let count = request.entries.len();
        let mut entries = Vec::with_capacity(count);
        for entry in request.entries {
            let built = PutRecordsRequestEntry::builder()
                .partition_key(entry.partition_key)
                .set_explicit_hash_key(entry.explicit_hash_key.map(|k| k.to_string()))
                .data(Blob::new(Vec::from(entry.data)))
                .build()
                .map_err(|e| TransportError::new(ErrorKind::InvalidRequest, e.to_string()))?;
            entries.push(built);
        }
        let call = self.client.put_records().set_records(Some(entries));
        let call = match &request.stream {
            StreamId::Name(name) => call.stream_name(name),
            StreamId::Arn(arn) => call.stream_arn(arn),
        };
        let started = Instant::now();
        let output = match request.timeout {
            Some(timeout) => {
                call.customize()
                    .config_override(
                        aws_sdk_kinesis::config::Config::builder().timeout_config(
                            TimeoutConfig::builder()
                                .connect_timeout(self.connect_timeout)
                                .operation_attempt_timeout(timeout)
                                .operation_timeout(timeout)
                                .build(),
                        ),
                    )
                    .send()
                    .await
            }
            None => call.send().await,
        }
        .map_err(convert)?;
        if output.records().len() != count {
            // Not the service's answer (it answers every entry): a proxy or another
            // server, whose 200 may still mean the service took the records.
            return Err(TransportError::new(
                ErrorKind::Endpoint,
                format!(
                    "the endpoint answered HTTP 200 with {} results for {count} records, not a \
                     Kinesis answer; some records may have been stored: check the endpoint URL",
                    output.records().len()
                ),
            )
            .with_code("NotKinesis")
            .with_status(200)
            .stored_unknown());
        }
        let results: Vec<EntryResult> = output
            .records()
            .iter()
            .map(|r| match r.error_code() {
                Some(code) => EntryResult::Failed {
                    code: code.to_owned(),
                    message: bounded(r.error_message().unwrap_or_default().to_owned()),
                },
                None => EntryResult::Ok {
                    shard_id: r.shard_id().unwrap_or_default().to_owned(),
                    sequence_number: r.sequence_number().unwrap_or_default().to_owned(),
                },
            })
            .collect();
        let response = PutRecordsResponse { results };
        debug!(
            stream = %request.stream,
            entries = count,
            failed = response.failed_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "PutRecords"
        );
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_max_record_size_is_read_from_the_summary_when_it_is_a_number() {
        let summary = |v: &str| {
            format!(
                r#"{{"StreamDescriptionSummary":{{"KeyId":null,"MaxRecordSizeInKiB": {v},"OpenShardCount":1}}}}"#
            )
        };
        assert_eq!(
            max_record_size_kib(summary("10240").as_bytes()),
            Some(10_240)
        );
        assert_eq!(max_record_size_kib(summary("null").as_bytes()), None);
        assert_eq!(
            max_record_size_kib(br#"{"StreamDescriptionSummary":{}}"#),
            None
        );
        assert_eq!(max_record_size_kib(br#"{"MaxRecordSizeInKiB":"#), None);
    }

    #[test]
    fn messages_are_cut_at_a_character_boundary() {
        assert_eq!(bounded("short".into()), "short");
        for text in ["x".repeat(10_000), "é".repeat(10_000), "€".repeat(3_000)] {
            let cut = bounded(text);
            assert!(cut.len() <= MAX_MESSAGE, "{}", cut.len());
            assert!(cut.ends_with('…'));
        }
    }

    #[test]
    fn error_chains_say_each_level_once_by_display() {
        #[derive(Debug)]
        struct Level(&'static str, Option<Box<Level>>);
        impl fmt::Display for Level {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Level {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|l| l as _)
            }
        }
        let e = Level(
            "dispatch failure",
            Some(Box::new(Level(
                "io error: connection refused",
                Some(Box::new(Level("connection refused", None))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "dispatch failure: io error: connection refused"
        );
    }

    /// Each kind of `BuildError`: what it is asked, that a cause is returned
    /// from `source()`, and that Display does not repeat it.
    #[test]
    fn build_errors_say_their_own_level_and_keep_their_cause() {
        use std::error::Error as _;
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file here");
        let e = BuildError::http_client("CA certificates /etc/ca.pem", io);
        assert_eq!(e.kind(), BuildErrorKind::HttpClient);
        assert!(e.is_http_client() && !e.is_out_of_range());
        assert_eq!(
            e.to_string(),
            "the HTTP client could not be set up: CA certificates /etc/ca.pem"
        );
        let cause = e.source().expect("the io::Error");
        assert_eq!(cause.to_string(), "no such file here");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());

        let e = BuildError::no_credentials(Some("the chain found nothing".into()));
        assert!(e.is_no_credentials());
        assert_eq!(
            e.source().map(|c| c.to_string()).as_deref(),
            Some("the chain found nothing")
        );
        assert!(
            e.to_string()
                .starts_with("no AWS credentials: set AWS_ACCESS_KEY_ID")
        );
        assert!(!e.to_string().contains("the chain found nothing"));
        assert!(BuildError::no_credentials(None).source().is_none());

        let e = BuildError::out_of_range("max_connections", "0", "1 to 256");
        assert_eq!(e.kind(), BuildErrorKind::OutOfRange);
        assert_eq!(
            (e.setting(), e.value(), e.allowed()),
            (Some("max_connections"), Some("0"), Some("1 to 256"))
        );
        assert_eq!(
            e.to_string(),
            "max_connections = 0 is out of range: allowed 1 to 256"
        );
        assert!(e.source().is_none());

        let e = check_endpoint_url("localhost:4567").unwrap_err();
        assert!(e.is_invalid_endpoint());
        assert_eq!(e.url(), Some("localhost:4567"));
        assert!(
            e.to_string()
                .starts_with("endpoint \"localhost:4567\" has no scheme")
        );
        assert_eq!((e.setting(), e.http_runtime()), (None, None));

        let e = BuildError::no_http_client(HttpRuntime::AsyncIo);
        assert!(e.is_no_http_client());
        assert_eq!(e.http_runtime(), Some(HttpRuntime::AsyncIo));
        assert!(e.to_string().ends_with("feature async-io"));
        assert!(BuildError::no_region().is_no_region());
    }

    #[test]
    fn tls_problems_are_named_in_words() {
        for (detail, words) in [
            (
                "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
                "CA certificate used as the server's own",
            ),
            ("invalid peer certificate: UnknownIssuer", "not trusted"),
            ("InvalidCertificate(NotValidForName)", "host name"),
            ("invalid peer certificate: Expired", "expired"),
            ("invalid peer certificate: BadSignature", "bad signature"),
        ] {
            let found = tls_problem(detail).unwrap_or_default();
            assert!(found.contains(words), "{detail}: {found}");
        }
        assert_eq!(tls_problem("connection refused"), None);
    }
}

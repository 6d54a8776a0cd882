//! The producer's settings: the KPL's keys, defaults and bounds.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::metrics::{MetricsGranularity, MetricsLevel};

/// The producer's settings, with the KPL's defaults and bounds.
///
/// Build one with [`Config::builder`] (every setter is checked at
/// [`ConfigBuilder::build`]) or read a Java KPL `.properties` file with
/// [`Config::from_kpl_properties`].
///
/// ```
/// use std::time::Duration;
/// use kpl_producer::Config;
///
/// let config = Config::builder()
///     .record_max_buffered_time(Duration::from_millis(50))
///     .rate_limit(100)
///     .build()?;
/// assert_eq!(config.aggregation_max_size(), 51_200);
/// # Ok::<(), kpl_producer::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub(crate) aggregation_enabled: bool,
    pub(crate) aggregation_max_count: u64,
    pub(crate) aggregation_max_size: usize,
    pub(crate) collection_max_count: usize,
    pub(crate) collection_max_size: usize,
    pub(crate) record_max_buffered_time: Duration,
    pub(crate) record_ttl: Duration,
    pub(crate) rate_limit: u64,
    pub(crate) fail_if_throttled: bool,
    pub(crate) max_connections: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_user_record_size: usize,
    pub(crate) max_outstanding_records: usize,
    pub(crate) max_outstanding_bytes: usize,
    pub(crate) region: Option<String>,
    pub(crate) kinesis_endpoint: Option<String>,
    pub(crate) min_connections: usize,
    pub(crate) verify_certificate: bool,
    pub(crate) proxy: Option<ProxySettings>,
    pub(crate) ca_cert_file: Option<PathBuf>,
    pub(crate) metrics_level: MetricsLevel,
    pub(crate) metrics_granularity: MetricsGranularity,
    pub(crate) metrics_namespace: String,
    pub(crate) metrics_upload_delay: Duration,
    pub(crate) cloudwatch_endpoint: Option<String>,
    pub(crate) seed: u64,
}

/// An HTTP proxy of the KPL's `ProxyHost`, `ProxyPort`, `ProxyUserName` and
/// `ProxyPassword` keys. The password is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// `ProxyHost`.
    pub host: String,
    /// `ProxyPort` (default 443, as the KPL's).
    pub port: u16,
    /// `ProxyUserName`, for basic authentication.
    pub user_name: Option<String>,
    /// `ProxyPassword`.
    pub password: Option<String>,
}

impl fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user_name", &self.user_name)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A key of a KPL `.properties` file that was not applied, and why (or
/// `MetricsLevel` not given, whose default here is not the KPL's). Returned by
/// [`Config::from_kpl_properties`] (and logged there once, as a warning).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IgnoredKey {
    /// The key, as the file spells it.
    pub key: String,
    /// Why it changes nothing here, and what to do instead.
    pub reason: &'static str,
}

impl fmt::Display for IgnoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            aggregation_enabled: true,
            aggregation_max_count: u64::from(u32::MAX),
            aggregation_max_size: 51_200,
            collection_max_count: 500,
            collection_max_size: 5 * 1024 * 1024,
            record_max_buffered_time: Duration::from_millis(100),
            record_ttl: Duration::from_secs(30),
            rate_limit: 150,
            fail_if_throttled: false,
            max_connections: 24,
            request_timeout: Duration::from_secs(6),
            connect_timeout: Duration::from_secs(6),
            max_user_record_size: 1024 * 1024,
            max_outstanding_records: 1_000_000,
            max_outstanding_bytes: 512 * 1024 * 1024,
            region: None,
            kinesis_endpoint: None,
            min_connections: 1,
            verify_certificate: true,
            proxy: None,
            ca_cert_file: None,
            metrics_level: MetricsLevel::None,
            metrics_granularity: MetricsGranularity::Shard,
            metrics_namespace: "KinesisProducerLibrary".into(),
            metrics_upload_delay: Duration::from_secs(60),
            cloudwatch_endpoint: None,
            seed: 0x6b70_6c2d_7273,
        }
    }
}

macro_rules! getters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $($(#[$doc])* pub fn $name(&self) -> $ty { self.$name.clone() })*
    };
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Self::default(),
        }
    }

    getters! {
        /// `AggregationEnabled` (default true).
        aggregation_enabled: bool;
        /// `AggregationMaxCount` (default 4294967295).
        aggregation_max_count: u64;
        /// `AggregationMaxSize` in bytes (default 51200).
        aggregation_max_size: usize;
        /// `CollectionMaxCount` (default 500).
        collection_max_count: usize;
        /// `CollectionMaxSize` in bytes (default 5242880).
        collection_max_size: usize;
        /// `RecordMaxBufferedTime` (default 100 ms).
        record_max_buffered_time: Duration;
        /// `RecordTtl` (default 30 s).
        record_ttl: Duration;
        /// `RateLimit`, percent of the shard limits (default 150).
        rate_limit: u64;
        /// `FailIfThrottled` (default false).
        fail_if_throttled: bool;
        /// `MaxConnections`: requests in flight (default 24).
        max_connections: usize;
        /// `RequestTimeout` (default 6 s).
        request_timeout: Duration;
        /// `ConnectTimeout` (default 6 s).
        connect_timeout: Duration;
        /// `MaxUserRecordSize`: data plus partition key bytes (default 1 MiB).
        max_user_record_size: usize;
        /// Records accepted and not yet resolved before `put_record` waits.
        max_outstanding_records: usize;
        /// Bytes (data plus partition keys) accepted and not yet resolved before
        /// `put_record` waits.
        max_outstanding_bytes: usize;
        /// `Region`, for building a transport.
        region: Option<String>;
        /// `KinesisEndpoint` (with `KinesisPort`), for building a transport.
        kinesis_endpoint: Option<String>;
        /// `MinConnections` (default 1): accepted for the KPL's files; connections
        /// open on demand and idle ones are kept up to `MaxConnections`.
        min_connections: usize;
        /// `VerifyCertificate` (default true): whether the endpoint's certificate
        /// is checked (`false`, for test endpoints only, is logged as a warning
        /// when the transport is built, on either HTTP client).
        verify_certificate: bool;
        /// `ProxyHost` and the other `Proxy*` keys: an HTTP proxy for requests.
        proxy: Option<ProxySettings>;
        /// `CaCertFile` (or `CaCertPath`): CA certificates trusted beside the
        /// system's, a PEM file or bundle, or a directory of them.
        ca_cert_file: Option<PathBuf>;
        /// `MetricsLevel` (default none here; the KPL's is detailed): which of the
        /// KPL's metrics [`Producer::metrics`](crate::Producer::metrics) keeps.
        metrics_level: MetricsLevel;
        /// `MetricsGranularity` (default shard).
        metrics_granularity: MetricsGranularity;
        /// `MetricsNamespace` (default `KinesisProducerLibrary`): the namespace of
        /// uploaded batches.
        metrics_namespace: String;
        /// `MetricsUploadDelay` (default 60 s): how often metrics are uploaded.
        metrics_upload_delay: Duration;
        /// `CloudwatchEndpoint` (with `CloudwatchPort`), as a URL: where metrics
        /// are uploaded instead of the region's CloudWatch endpoint.
        cloudwatch_endpoint: Option<String>;
    }

    /// A builder holding every value of this config.
    pub fn to_builder(&self) -> ConfigBuilder {
        ConfigBuilder {
            config: self.clone(),
        }
    }

    /// Reads the settings of a Java KPL `.properties` file (`Key = value` lines, `#`
    /// and `!` comments), starting from the defaults. Keys are spelled as the KPL
    /// spells them. Every key is applied or returned as an [`IgnoredKey`] saying
    /// why it changes nothing here (each logged once as a warning); a bad value is a
    /// [`ConfigError`] naming its key. A file without `MetricsLevel` gets an
    /// [`IgnoredKey`] for it too: the default here is `none`, the KPL's `detailed`
    /// (no metrics are kept or uploaded until it is set).
    ///
    /// `KinesisEndpoint` and `KinesisPort` make an `https://` URL, as the KPL
    /// connects (give the endpoint as a URL, `http://…`, for plain HTTP).
    ///
    /// ```
    /// use kpl_producer::Config;
    ///
    /// let (config, ignored) = Config::from_kpl_properties(
    ///     "RecordMaxBufferedTime = 250\nRateLimit=90\nAggregationEnabled = false\nFoo = 1\n",
    /// )?;
    /// assert_eq!(config.rate_limit(), 90);
    /// assert!(!config.aggregation_enabled());
    /// let keys: Vec<&str> = ignored.iter().map(|i| i.key.as_str()).collect();
    /// // Foo is unknown; MetricsLevel was not given (none here, detailed in the KPL).
    /// assert_eq!(keys, ["Foo", "MetricsLevel"]);
    /// # Ok::<(), kpl_producer::ConfigError>(())
    /// ```
    pub fn from_kpl_properties(text: &str) -> Result<(Self, Vec<IgnoredKey>), ConfigError> {
        let mut b = Self::builder();
        let mut ignored = Vec::new();
        let mut endpoint: Option<String> = None;
        let mut port: Option<String> = None;
        let mut cw_endpoint: Option<String> = None;
        let mut cw_port: Option<String> = None;
        let mut proxy_host: Option<String> = None;
        let mut proxy_port: u16 = 443;
        let mut proxy_user: Option<String> = None;
        let mut proxy_password: Option<String> = None;
        let mut metrics_level_given = false;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let (key, value) = line
                .split_once(['=', ':'])
                .map_or((line, ""), |(k, v)| (k.trim(), v.trim()));
            let c = &mut b.config;
            let not_applied = match key {
                "AggregationEnabled" => {
                    c.aggregation_enabled = parse_bool(key, value)?;
                    None
                }
                "AggregationMaxCount" => {
                    c.aggregation_max_count = parse_num(key, value)?;
                    None
                }
                "AggregationMaxSize" => {
                    c.aggregation_max_size = parse_num(key, value)?;
                    None
                }
                "CollectionMaxCount" => {
                    c.collection_max_count = parse_num(key, value)?;
                    None
                }
                "CollectionMaxSize" => {
                    c.collection_max_size = parse_num(key, value)?;
                    None
                }
                "RecordMaxBufferedTime" => {
                    c.record_max_buffered_time = parse_ms(key, value)?;
                    None
                }
                "RecordTtl" => {
                    c.record_ttl = parse_ms(key, value)?;
                    None
                }
                "RateLimit" => {
                    c.rate_limit = parse_num(key, value)?;
                    None
                }
                "FailIfThrottled" => {
                    c.fail_if_throttled = parse_bool(key, value)?;
                    None
                }
                "MaxConnections" => {
                    c.max_connections = parse_num(key, value)?;
                    None
                }
                "RequestTimeout" => {
                    c.request_timeout = parse_ms(key, value)?;
                    None
                }
                "ConnectTimeout" => {
                    c.connect_timeout = parse_ms(key, value)?;
                    None
                }
                "MaxUserRecordSize" => {
                    c.max_user_record_size = parse_num(key, value)?;
                    None
                }
                "MinConnections" => {
                    c.min_connections = parse_num(key, value)?;
                    None
                }
                "VerifyCertificate" => {
                    c.verify_certificate = parse_bool(key, value)?;
                    None
                }
                "Region" => {
                    c.region = Some(value.to_owned()).filter(|v| !v.is_empty());
                    None
                }
                // `CustomEndpoint` and `Port` are the older KPL's names.
                "KinesisEndpoint" | "CustomEndpoint" => {
                    endpoint = Some(value.to_owned()).filter(|v| !v.is_empty());
                    None
                }
                "KinesisPort" | "Port" => {
                    parse_num::<u16>(key, value)?;
                    port = Some(value.to_owned());
                    None
                }
                "ProxyHost" => {
                    proxy_host = Some(value.to_owned()).filter(|v| !v.is_empty());
                    None
                }
                "ProxyPort" => {
                    proxy_port = parse_num(key, value)?;
                    None
                }
                "ProxyUserName" => {
                    proxy_user = Some(value.to_owned()).filter(|v| !v.is_empty());
                    None
                }
                "ProxyPassword" => {
                    proxy_password = Some(value.to_owned()).filter(|v| !v.is_empty());
                    None
                }
                "CaCertFile" | "CaCertPath" => {
                    c.ca_cert_file = Some(PathBuf::from(value)).filter(|_| !value.is_empty());
                    None
                }
                "MetricsLevel" => {
                    metrics_level_given = true;
                    c.metrics_level = MetricsLevel::parse(value).ok_or(ConfigError::Invalid {
                        key: key.into(),
                        value: value.into(),
                        expected: "none, summary or detailed",
                    })?;
                    None
                }
                "MetricsGranularity" => {
                    c.metrics_granularity =
                        MetricsGranularity::parse(value).ok_or(ConfigError::Invalid {
                            key: key.into(),
                            value: value.into(),
                            expected: "global, stream or shard",
                        })?;
                    None
                }
                "MetricsNamespace" => {
                    c.metrics_namespace = value.to_owned();
                    None
                }
                "MetricsUploadDelay" => {
                    c.metrics_upload_delay = parse_ms(key, value)?;
                    None
                }
                "CloudwatchEndpoint" => {
                    cw_endpoint = Some(value.to_owned()).filter(|v| !v.is_empty());
                    None
                }
                "CloudwatchPort" => {
                    parse_num::<u16>(key, value)?;
                    cw_port = Some(value.to_owned());
                    None
                }
                "LogLevel" => Some(
                    "logs go through `tracing`: set the level with RUST_LOG or your subscriber's filter",
                ),
                "NativeExecutable" | "TempDirectory" | "EnableCoreDumps" => {
                    Some("kpl-rs runs no native daemon: nothing to apply")
                }
                "ThreadingModel" | "ThreadPoolSize" => {
                    Some("the pipeline runs as tasks on your async runtime: size its threads there")
                }
                "CredentialsRefreshDelay" => {
                    Some("the AWS SDK refreshes credentials before they expire")
                }
                "UserRecordTimeoutInMillis" => Some(
                    "use RecordTtl: every record's outcome comes within RecordTtl plus one RequestTimeout",
                ),
                "StsEndpoint" | "StsPort" => {
                    Some("set AWS_ENDPOINT_URL_STS for the AWS chain's STS calls")
                }
                "AwsAccessKeyId" | "AwsSecretKey" => Some(
                    "credentials come from the AWS chain (environment, profile, role), not from this file",
                ),
                _ => Some("unknown key"),
            };
            if let Some(reason) = not_applied {
                ignored.push(IgnoredKey {
                    key: key.to_owned(),
                    reason,
                });
            }
        }
        // The KPL always connects with TLS, whatever the port.
        let url = |host: String, port: Option<String>| {
            if host.contains("://") {
                host
            } else {
                format!("https://{host}:{}", port.as_deref().unwrap_or("443"))
            }
        };
        b.config.kinesis_endpoint = endpoint.map(|host| url(host, port));
        b.config.cloudwatch_endpoint = cw_endpoint.map(|host| url(host, cw_port));
        if let Some(host) = proxy_host {
            b.config.proxy = Some(ProxySettings {
                host,
                port: proxy_port,
                user_name: proxy_user,
                password: proxy_password,
            });
        }
        if b.config.min_connections > 1 {
            ignored.push(IgnoredKey {
                key: "MinConnections".into(),
                reason: "connections open on demand and idle ones stay open up to MaxConnections: \
                         no connection is opened ahead",
            });
        }
        // The one default of ours that is not the KPL's: say so, or a migrating
        // user's dashboards stay empty with no word why.
        if !metrics_level_given {
            ignored.push(IgnoredKey {
                key: "MetricsLevel".into(),
                reason: "not given: kpl-rs defaults to none (the KPL's default is detailed); \
                         set MetricsLevel to upload metrics",
            });
        }
        for i in &ignored {
            tracing::warn!(key = %i.key, "KPL setting not applied: {}", i.reason);
        }
        Ok((b.build()?, ignored))
    }

    /// [`from_kpl_properties`](Self::from_kpl_properties) of a file.
    ///
    /// ```no_run
    /// let (config, ignored) = kpl_producer::Config::from_kpl_properties_file("kpl.properties")?;
    /// for key in ignored {
    ///     eprintln!("not applied: {key}");
    /// }
    /// # Ok::<(), kpl_producer::ConfigError>(())
    /// ```
    pub fn from_kpl_properties_file(
        path: impl AsRef<std::path::Path>,
    ) -> Result<(Self, Vec<IgnoredKey>), ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_kpl_properties(&text)
    }
}

#[cfg(feature = "aws")]
impl Config {
    /// An AWS transport builder with this config's settings for it: `Region`,
    /// `KinesisEndpoint`, `ConnectTimeout`, `RequestTimeout`, `MaxConnections`,
    /// `VerifyCertificate`, the `Proxy*` keys (else the environment's
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`) and `CaCertFile` or `CaCertPath`
    /// (a PEM file or bundle, or a directory of them, read here: one that cannot
    /// be read or holds no certificate is a
    /// [`BuildError::HttpClient`](kpl_transport::BuildError) naming it). What [`Producer::from_config`](crate::Producer::from_config)
    /// builds its transport with; settings may be changed before `build`.
    pub fn aws_transport_builder(
        &self,
    ) -> Result<kpl_transport::AwsTransportBuilder, kpl_transport::BuildError> {
        let config = self;
        let mut builder = kpl_transport::AwsTransport::builder()
            .connect_timeout(config.connect_timeout())
            .request_timeout(config.request_timeout())
            .max_connections(config.max_connections())
            .verify_certificate(config.verify_certificate());
        if let Some(region) = config.region() {
            builder = builder.region(region);
        }
        if let Some(url) = config.kinesis_endpoint() {
            builder = builder.endpoint_url(url);
        }
        if let Some(p) = config.proxy() {
            let mut proxy = kpl_transport::Proxy::new(format!("http://{}:{}", p.host, p.port));
            if let Some(user) = &p.user_name {
                proxy = proxy.basic_auth(user, p.password.as_deref().unwrap_or_default());
            }
            builder = builder.proxy(proxy);
        }
        if let Some(path) = config.ca_cert_file() {
            // A PEM file or bundle, or a directory of them (the KPL's CaCertPath).
            builder = builder.ca_certificates_path(&path)?;
        }
        Ok(builder)
    }
}

impl Config {
    /// A CloudWatch client builder from this config: the same region, timeouts,
    /// proxy and trust settings as [`aws_transport_builder`](Self::aws_transport_builder),
    /// with `CloudwatchEndpoint` if set (never the Kinesis endpoint). What
    /// [`Producer::from_config`](crate::Producer::from_config) uploads metrics
    /// with; give it other credentials before `build` to upload with those.
    #[cfg(feature = "cloudwatch")]
    pub fn cloudwatch_builder(
        &self,
    ) -> Result<kpl_transport::CloudWatchBuilder, kpl_transport::BuildError> {
        Ok(self.cloudwatch_builder_from(self.aws_transport_builder()?))
    }

    /// A CloudWatch client builder from a transport's settings (as changed after
    /// [`aws_transport_builder`](Self::aws_transport_builder)), with
    /// `CloudwatchEndpoint` if set.
    #[cfg(feature = "cloudwatch")]
    pub fn cloudwatch_builder_from(
        &self,
        transport: kpl_transport::AwsTransportBuilder,
    ) -> kpl_transport::CloudWatchBuilder {
        let builder = kpl_transport::CloudWatchBuilder::from_transport_settings(transport);
        match &self.cloudwatch_endpoint {
            Some(url) => builder.endpoint_url(url),
            None => builder,
        }
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ConfigError::Invalid {
            key: key.into(),
            value: value.into(),
            expected: "true or false",
        }),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError> {
    value.parse().map_err(|_| ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        expected: "a whole number",
    })
}

fn parse_ms(key: &str, value: &str) -> Result<Duration, ConfigError> {
    parse_num::<u64>(key, value).map(Duration::from_millis)
}

/// A setting the producer refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value outside its bounds.
    OutOfRange {
        /// The setting, as the KPL spells it.
        key: String,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A `.properties` file that could not be read.
    File {
        /// The file.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
    /// A value that does not parse.
    Invalid {
        /// The setting, as the KPL spells it.
        key: String,
        /// The value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange {
                key,
                value,
                allowed,
            } => write!(f, "{key} = {value} is out of range: allowed {allowed}"),
            Self::Invalid {
                key,
                value,
                expected,
            } => write!(f, "{key} = {value:?} is not valid: expected {expected}"),
            Self::File { path, reason } => {
                write!(
                    f,
                    "cannot read the KPL settings file {}: {reason}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Builds a [`Config`]; [`build`](Self::build) checks every bound.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    config: Config,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $($(#[$doc])* pub fn $name(mut self, value: $ty) -> Self { self.config.$name = value; self })*
    };
}

impl ConfigBuilder {
    setters! {
        /// `AggregationEnabled`.
        aggregation_enabled: bool;
        /// `AggregationMaxCount`, at least 1.
        aggregation_max_count: u64;
        /// `AggregationMaxSize`, 64 to 10485760 bytes.
        aggregation_max_size: usize;
        /// `CollectionMaxCount`, 1 to 500.
        collection_max_count: usize;
        /// `CollectionMaxSize`, 52224 to 10485760 bytes.
        collection_max_size: usize;
        /// `RecordMaxBufferedTime`, at most 1 hour.
        record_max_buffered_time: Duration;
        /// `RecordTtl`, at least 100 ms (huge values are capped, never overflow).
        record_ttl: Duration;
        /// `RateLimit`, at least 1 percent.
        rate_limit: u64;
        /// `FailIfThrottled`.
        fail_if_throttled: bool;
        /// `MaxConnections`, 1 to 256.
        max_connections: usize;
        /// `RequestTimeout`, 100 ms to 600 s.
        request_timeout: Duration;
        /// `ConnectTimeout`, 100 ms to 300 s.
        connect_timeout: Duration;
        /// `MaxUserRecordSize`, 64 to 10485760 bytes.
        max_user_record_size: usize;
        /// Outstanding records before `put_record` waits, at least 1.
        max_outstanding_records: usize;
        /// Outstanding bytes before `put_record` waits, at least 1.
        max_outstanding_bytes: usize;
    }

    /// `Region`.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.config.region = Some(region.into());
        self
    }

    /// `CloudwatchEndpoint`, as a URL: where metrics are uploaded (a VPC endpoint,
    /// a stand-in) instead of the region's CloudWatch.
    pub fn cloudwatch_endpoint(mut self, url: impl Into<String>) -> Self {
        self.config.cloudwatch_endpoint = Some(url.into());
        self
    }

    /// `KinesisEndpoint`, as a URL.
    pub fn kinesis_endpoint(mut self, url: impl Into<String>) -> Self {
        self.config.kinesis_endpoint = Some(url.into());
        self
    }

    /// `MetricsLevel`.
    pub fn metrics_level(mut self, level: MetricsLevel) -> Self {
        self.config.metrics_level = level;
        self
    }

    /// `MetricsGranularity`.
    pub fn metrics_granularity(mut self, granularity: MetricsGranularity) -> Self {
        self.config.metrics_granularity = granularity;
        self
    }

    /// `MetricsNamespace`, 1 to 255 characters, not starting with `AWS/`.
    pub fn metrics_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.metrics_namespace = namespace.into();
        self
    }

    /// `MetricsUploadDelay`, 1 to 60 s.
    pub fn metrics_upload_delay(mut self, delay: Duration) -> Self {
        self.config.metrics_upload_delay = delay;
        self
    }

    /// `MinConnections`, 1 to 16 (no effect: connections open on demand).
    pub fn min_connections(mut self, value: usize) -> Self {
        self.config.min_connections = value;
        self
    }

    /// `VerifyCertificate`: `false` trusts any certificate (test endpoints only; the
    /// transport warns when it is built). Both HTTP clients support it; the tokio
    /// one needs kpl-transport's `async-io` feature too (kpl's `smol`).
    pub fn verify_certificate(mut self, verify: bool) -> Self {
        self.config.verify_certificate = verify;
        self
    }

    /// An HTTP proxy (`ProxyHost` and the other `Proxy*` keys).
    pub fn proxy(mut self, proxy: ProxySettings) -> Self {
        self.config.proxy = Some(proxy);
        self
    }

    /// `CaCertFile` or `CaCertPath`: CA certificates trusted beside the system's,
    /// a PEM file (one certificate or a bundle) or a directory of them (every file
    /// in it holding a PEM certificate).
    pub fn ca_cert_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.ca_cert_file = Some(path.into());
        self
    }

    /// Seed of the producer's randomness (backoff jitter), for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Checks every bound.
    pub fn build(self) -> Result<Config, ConfigError> {
        let c = self.config;
        fn check<T: PartialOrd + fmt::Display>(
            key: &str,
            value: T,
            min: T,
            max: T,
            allowed: &'static str,
        ) -> Result<(), ConfigError> {
            if value < min || value > max {
                return Err(ConfigError::OutOfRange {
                    key: key.into(),
                    value: value.to_string(),
                    allowed,
                });
            }
            Ok(())
        }
        let ms = |d: Duration| d.as_millis() as u64;
        check(
            "AggregationMaxCount",
            c.aggregation_max_count,
            1,
            u64::MAX,
            "1 or more",
        )?;
        check(
            "AggregationMaxSize",
            c.aggregation_max_size,
            64,
            10_485_760,
            "64 to 10485760",
        )?;
        check(
            "CollectionMaxCount",
            c.collection_max_count,
            1,
            500,
            "1 to 500",
        )?;
        check(
            "CollectionMaxSize",
            c.collection_max_size,
            52_224,
            10_485_760,
            "52224 to 10485760",
        )?;
        check(
            "RecordMaxBufferedTime",
            ms(c.record_max_buffered_time),
            0,
            3_600_000,
            "0 to 3600000 ms",
        )?;
        check(
            "RecordTtl",
            ms(c.record_ttl),
            100,
            u64::MAX,
            "100 ms or more",
        )?;
        check("RateLimit", c.rate_limit, 1, u64::MAX, "1 or more")?;
        check("MaxConnections", c.max_connections, 1, 256, "1 to 256")?;
        check(
            "RequestTimeout",
            ms(c.request_timeout),
            100,
            600_000,
            "100 to 600000 ms",
        )?;
        check(
            "ConnectTimeout",
            ms(c.connect_timeout),
            100,
            300_000,
            "100 to 300000 ms",
        )?;
        check(
            "MaxUserRecordSize",
            c.max_user_record_size,
            64,
            10_485_760,
            "64 to 10485760",
        )?;
        check("MinConnections", c.min_connections, 1, 16, "1 to 16")?;
        let namespace = &c.metrics_namespace;
        if namespace.is_empty() || namespace.chars().count() > 255 || namespace.starts_with("AWS/")
        {
            return Err(ConfigError::OutOfRange {
                key: "MetricsNamespace".into(),
                value: namespace.clone(),
                allowed: "1 to 255 characters, not starting with AWS/",
            });
        }
        check(
            "max_outstanding_records",
            c.max_outstanding_records,
            1,
            usize::MAX,
            "1 or more",
        )?;
        check(
            "max_outstanding_bytes",
            c.max_outstanding_bytes,
            1,
            usize::MAX,
            "1 or more",
        )?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_kpl_defaults() {
        let c = Config::default();
        assert!(c.aggregation_enabled());
        assert_eq!(c.aggregation_max_count(), 4_294_967_295);
        assert_eq!(c.aggregation_max_size(), 51_200);
        assert_eq!(c.collection_max_count(), 500);
        assert_eq!(c.collection_max_size(), 5_242_880);
        assert_eq!(c.record_max_buffered_time(), Duration::from_millis(100));
        assert_eq!(c.record_ttl(), Duration::from_secs(30));
        assert_eq!(c.rate_limit(), 150);
        assert!(!c.fail_if_throttled());
        assert_eq!(c.max_connections(), 24);
        assert_eq!(c.request_timeout(), Duration::from_secs(6));
        assert_eq!(c.max_user_record_size(), 1_048_576);
        assert_eq!(Config::builder().build(), Ok(c));
    }

    #[test]
    fn bounds_are_checked_and_name_the_key() {
        for (builder, key) in [
            (
                Config::builder().aggregation_max_size(63),
                "AggregationMaxSize",
            ),
            (
                Config::builder().collection_max_count(501),
                "CollectionMaxCount",
            ),
            (
                Config::builder().collection_max_size(52_223),
                "CollectionMaxSize",
            ),
            (
                Config::builder().record_ttl(Duration::from_millis(99)),
                "RecordTtl",
            ),
            (Config::builder().rate_limit(0), "RateLimit"),
            (Config::builder().max_connections(0), "MaxConnections"),
            (Config::builder().max_connections(257), "MaxConnections"),
            (Config::builder().metrics_namespace(""), "MetricsNamespace"),
            (
                Config::builder().metrics_namespace("AWS/Kinesis"),
                "MetricsNamespace",
            ),
            (
                Config::builder().metrics_namespace("n".repeat(256)),
                "MetricsNamespace",
            ),
            (
                Config::builder().request_timeout(Duration::from_secs(601)),
                "RequestTimeout",
            ),
            (
                Config::builder().max_user_record_size(10_485_761),
                "MaxUserRecordSize",
            ),
            (
                Config::builder().max_outstanding_records(0),
                "max_outstanding_records",
            ),
        ] {
            let err = builder.build().unwrap_err();
            assert!(
                matches!(&err, ConfigError::OutOfRange { key: k, .. } if k == key),
                "{err}"
            );
            assert!(err.to_string().starts_with(key));
        }
        // A huge TTL is fine: deadlines are capped, never overflow (KPL #54).
        assert!(
            Config::builder()
                .record_ttl(Duration::from_secs(u64::MAX / 4))
                .build()
                .is_ok()
        );
    }

    #[test]
    fn properties_files_read_like_the_kpl() {
        let text = "\
# A KPL configuration
AggregationEnabled = true
AggregationMaxCount = 100
AggregationMaxSize: 1000
CollectionMaxCount = 10
RecordMaxBufferedTime = 250
RecordTtl = 60000
RateLimit = 90
FailIfThrottled = TRUE
MaxConnections = 4
RequestTimeout = 10000
Region = eu-west-1
KinesisEndpoint = localhost
KinesisPort = 4568
CloudwatchEndpoint = monitoring.local
CloudwatchPort = 4443
MetricsLevel = none
SomethingElse = 3
";
        let (c, ignored) = Config::from_kpl_properties(text).unwrap();
        assert_eq!(c.aggregation_max_count(), 100);
        assert_eq!(c.aggregation_max_size(), 1000);
        assert_eq!(c.collection_max_count(), 10);
        assert_eq!(c.record_max_buffered_time(), Duration::from_millis(250));
        assert_eq!(c.record_ttl(), Duration::from_secs(60));
        assert_eq!(c.rate_limit(), 90);
        assert!(c.fail_if_throttled());
        assert_eq!(c.max_connections(), 4);
        assert_eq!(c.region().as_deref(), Some("eu-west-1"));
        assert_eq!(
            c.kinesis_endpoint().as_deref(),
            Some("https://localhost:4568"),
            "the KPL always connects with TLS"
        );
        assert_eq!(
            c.cloudwatch_endpoint().as_deref(),
            Some("https://monitoring.local:4443")
        );
        let (c, _) =
            Config::from_kpl_properties("CloudwatchEndpoint = http://127.0.0.1:9\n").unwrap();
        assert_eq!(
            c.cloudwatch_endpoint().as_deref(),
            Some("http://127.0.0.1:9")
        );
        assert_eq!(c.kinesis_endpoint(), None);
        let keys: Vec<&str> = ignored.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["SomethingElse"]);
        assert_eq!(ignored[0].reason, "unknown key");
        assert_eq!(c.metrics_level(), MetricsLevel::None);

        let err = Config::from_kpl_properties("RateLimit = fast").unwrap_err();
        assert_eq!(
            err,
            ConfigError::Invalid {
                key: "RateLimit".into(),
                value: "fast".into(),
                expected: "a whole number"
            }
        );
        let err = Config::from_kpl_properties("MaxConnections = 1000").unwrap_err();
        assert!(matches!(err, ConfigError::OutOfRange { key, .. } if key == "MaxConnections"));
        let err = Config::from_kpl_properties("MetricsLevel = loud").unwrap_err();
        assert!(err.to_string().contains("MetricsLevel"));
    }

    /// The Java KPL's own sample configuration: every key applied or returned with
    /// a reason, none silently dropped.
    #[test]
    fn the_kpl_sample_file_is_applied_or_explained_key_by_key() {
        let text = include_str!("../tests/data/kpl_sample_config.properties");
        let (c, ignored) = Config::from_kpl_properties(text).unwrap();
        // Applied (the values the file gives, where they differ from our defaults).
        assert_eq!(c.max_connections(), 4);
        assert_eq!(c.region().as_deref(), Some("us-east-1"));
        assert_eq!(
            c.kinesis_endpoint().as_deref(),
            Some("https://kinesis.internal:443")
        );
        assert_eq!(c.min_connections(), 1);
        assert!(c.verify_certificate());
        assert_eq!(c.record_ttl(), Duration::from_secs(30));
        let applied = [
            "AggregationEnabled",
            "AggregationMaxCount",
            "AggregationMaxSize",
            "CollectionMaxCount",
            "CollectionMaxSize",
            "ConnectTimeout",
            "CustomEndpoint",
            "FailIfThrottled",
            "MaxConnections",
            "MinConnections",
            "Port",
            "RateLimit",
            "RecordMaxBufferedTime",
            "RecordTtl",
            "Region",
            "RequestTimeout",
            "VerifyCertificate",
            "MetricsLevel",
            "MetricsGranularity",
            "MetricsNamespace",
        ];
        let explained: Vec<&str> = ignored.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(explained, ["AwsAccessKeyId", "AwsSecretKey", "LogLevel"]);
        assert_eq!(c.metrics_namespace(), "KinesisProducerLibrary");
        assert_eq!(c.metrics_level(), MetricsLevel::Detailed);
        assert_eq!(c.metrics_granularity(), MetricsGranularity::Shard);
        for i in &ignored {
            assert_ne!(i.reason, "unknown key", "{i}");
        }
        // Every key of the file is one or the other.
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let key = line.split('=').next().unwrap().trim();
            assert!(
                applied.contains(&key) != explained.contains(&key),
                "{key} is neither applied nor explained (or both)"
            );
        }
    }

    #[test]
    fn an_unreadable_settings_file_is_named() {
        let err = Config::from_kpl_properties_file("/nonexistent/kpl.properties").unwrap_err();
        assert!(
            matches!(&err, ConfigError::File { path, .. } if path.ends_with("kpl.properties")),
            "{err}"
        );
        assert!(err.to_string().contains("/nonexistent/kpl.properties"));
    }

    /// A migrating user whose file leaves `MetricsLevel` out learns that metrics
    /// are off here (the KPL uploads detailed metrics by default).
    #[test]
    fn a_file_without_metrics_level_says_metrics_are_off() {
        let (c, ignored) = Config::from_kpl_properties("RateLimit = 90\n").unwrap();
        assert_eq!(c.metrics_level(), MetricsLevel::None);
        let note = ignored
            .iter()
            .find(|i| i.key == "MetricsLevel")
            .expect("a note that MetricsLevel was not given");
        assert_eq!(
            note.to_string(),
            "MetricsLevel: not given: kpl-rs defaults to none (the KPL's default is \
             detailed); set MetricsLevel to upload metrics"
        );
        for level in ["none", "summary", "detailed"] {
            let (_, ignored) =
                Config::from_kpl_properties(&format!("MetricsLevel = {level}\n")).unwrap();
            assert!(ignored.is_empty(), "{level}: {ignored:?}");
        }
    }

    #[test]
    fn proxy_keys_and_min_connections() {
        let (c, ignored) = Config::from_kpl_properties(
            "ProxyHost = proxy.internal\nProxyPort = 3128\nProxyUserName = u\n\
             ProxyPassword = secret\nMinConnections = 4\nCaCertFile = /etc/ca.pem\n",
        )
        .unwrap();
        let proxy = c.proxy().unwrap();
        assert_eq!((proxy.host.as_str(), proxy.port), ("proxy.internal", 3128));
        assert_eq!(proxy.user_name.as_deref(), Some("u"));
        assert!(
            !format!("{c:?}").contains("secret"),
            "the password is never printed"
        );
        assert_eq!(c.ca_cert_file(), Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(c.min_connections(), 4);
        let keys: Vec<&str> = ignored.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["MinConnections", "MetricsLevel"]);
        let err = Config::from_kpl_properties("MinConnections = 17").unwrap_err();
        assert!(matches!(err, ConfigError::OutOfRange { key, .. } if key == "MinConnections"));
    }

    /// `CaCertPath` names a directory of CA certificates in the KPL (kpl-transport's
    /// tests show the certificates in it trusted on both HTTP clients).
    #[cfg(feature = "aws")]
    #[test]
    fn ca_cert_path_may_be_a_directory() {
        let dir = std::env::temp_dir().join(format!("kpl-config-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (c, _) =
            Config::from_kpl_properties(&format!("CaCertPath = {}\n", dir.display())).unwrap();
        let err = c.aws_transport_builder().unwrap_err();
        assert!(
            err.to_string().contains(&dir.display().to_string())
                && err.to_string().contains("no PEM certificate"),
            "{err}"
        );
        std::fs::write(
            dir.join("ca.pem"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        c.aws_transport_builder().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The producer's settings: the KPL's keys, defaults and bounds.
//!
//! Every setting is declared once, in the table of the `settings!` invocation
//! below: its key as the KPL spells it, field, type, default, bounds, unit, one
//! line of doc and whether the KPL has it. The [`Config`] field, its default, the
//! getter and setter, the bounds check in [`ConfigBuilder::build`], the
//! `.properties` reading, the `kpl` command's flags ([`Config::settings`]) and the
//! table in docs/configuration.md (checked by a test) all come from it.

use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use kpl_codec::{
    DEFAULT_MAX_RECORD_SIZE, DEFAULT_MAX_REQUEST_SIZE, MAX_RECORD_SIZE_CEILING,
    MAX_RECORDS_PER_REQUEST,
};

use crate::metrics::{MetricsGranularity, MetricsLevel};

/// The port of an endpoint or proxy given without one (https, as the KPL connects).
const HTTPS_PORT: u16 = 443;

/// What kind of value a setting holds, which says how it is read and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `true` or `false`; a `kpl` flag sets the opposite of the default.
    Bool,
    /// A whole number within bounds.
    Count { min: u64, max: u64 },
    /// A duration in milliseconds within bounds.
    Millis { min: u64, max: u64 },
    /// Read by hand (text, URLs, names); its bounds are said in words.
    Custom(&'static str),
}

/// One setting of [`Config`], as the settings table declares it (see
/// [`Config::settings`]).
#[derive(Debug)]
pub struct Setting {
    id: Id,
    key: &'static str,
    aliases: &'static [&'static str],
    field: Option<&'static str>,
    kind: Kind,
    unit: &'static str,
    flag: Option<&'static str>,
    kpl: bool,
    doc: &'static str,
}

impl Setting {
    /// The key, as the KPL spells it (settings of ours that no file gives are
    /// spelled as their field).
    pub fn key(&self) -> &'static str {
        self.key
    }

    /// Other spellings a `.properties` file may use (the older KPL's names).
    pub fn aliases(&self) -> &'static [&'static str] {
        self.aliases
    }

    /// The name of the [`Config`] getter and [`ConfigBuilder`] setter, or `None` for
    /// a key that qualifies another (a port, the proxy's user).
    pub fn field(&self) -> Option<&'static str> {
        self.field
    }

    /// What it does, in one line.
    pub fn doc(&self) -> &'static str {
        self.doc
    }

    /// The unit of its values: `ms`, `bytes`, `percent`, or empty.
    pub fn unit(&self) -> &'static str {
        self.unit
    }

    /// Whether the Java KPL has this key too.
    pub fn in_kpl(&self) -> bool {
        self.kpl
    }

    /// The long flag of the `kpl` command that sets it (without `--`), if any.
    pub fn flag(&self) -> Option<&'static str> {
        self.flag
    }

    /// Whether it holds `true` or `false` (its `kpl` flag then takes no value and
    /// sets [`switched`](Self::switched)).
    pub fn is_bool(&self) -> bool {
        self.kind == Kind::Bool
    }

    /// The value a bool setting's flag sets: the opposite of its default.
    pub fn switched(&self) -> &'static str {
        if self.default_value() == "true" {
            "false"
        } else {
            "true"
        }
    }

    /// Its default, as a `.properties` file would give it (`none` when unset).
    pub fn default_value(&self) -> String {
        default_of(self.id)
    }

    /// What values are accepted, in words (`64 to 10485760`, `100 ms or more`).
    pub fn allowed(&self) -> &'static str {
        static ALLOWED: OnceLock<Vec<String>> = OnceLock::new();
        let texts = ALLOWED.get_or_init(|| {
            SETTINGS
                .iter()
                .map(|s| {
                    let unit = if s.unit == "ms" { " ms" } else { "" };
                    match s.kind {
                        Kind::Bool => "true or false".to_owned(),
                        Kind::Count { min, max } | Kind::Millis { min, max } => {
                            if max == u64::MAX || max == usize::MAX as u64 {
                                format!("{min}{unit} or more")
                            } else {
                                format!("{min} to {max}{unit}")
                            }
                        }
                        Kind::Custom(text) => text.to_owned(),
                    }
                })
                .collect()
        });
        let i = SETTINGS
            .iter()
            .position(|s| s.id == self.id)
            .expect("a setting of the table");
        &texts[i]
    }

    /// Sets this setting on `builder` from a value as a `.properties` file gives it
    /// (bounds are checked at [`ConfigBuilder::build`]). A key that only
    /// qualifies another (a port, the proxy's user) applies with it in
    /// [`Config::from_kpl_properties`], and is refused here.
    pub fn apply(
        &self,
        mut builder: ConfigBuilder,
        value: &str,
    ) -> Result<ConfigBuilder, ConfigError> {
        apply_to(self, &mut builder.config, self.key, value)?;
        Ok(builder)
    }

    /// A value checked against the bounds: `Err` names the key and what is allowed.
    fn check(&self, c: &Config) -> Result<(), ConfigError> {
        let (Kind::Count { min, max } | Kind::Millis { min, max }) = self.kind else {
            return Ok(());
        };
        let value = number_of(self.id, c).expect("a number");
        if value < min || value > max {
            return Err(ConfigError::out_of_range(
                self.key,
                value.to_string(),
                self.allowed(),
            ));
        }
        Ok(())
    }
}

/// The setting of `id`.
fn setting(id: Id) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.id == id)
        .expect("every id is in the table")
}

/// The setting a `.properties` key names (or one of its older names).
fn lookup(key: &str) -> Option<&'static Setting> {
    SETTINGS
        .iter()
        .find(|s| s.key == key || s.aliases.contains(&key))
}

/// A value as the table shows it: milliseconds for durations, `none` when unset.
trait Shown {
    fn shown(&self) -> String;
}

impl Shown for bool {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for u64 {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for usize {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for u16 {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for Duration {
    fn shown(&self) -> String {
        millis(*self).to_string()
    }
}

impl Shown for String {
    fn shown(&self) -> String {
        self.clone()
    }
}

impl Shown for PathBuf {
    fn shown(&self) -> String {
        self.display().to_string()
    }
}

impl Shown for ProxySettings {
    fn shown(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl Shown for MetricsLevel {
    fn shown(&self) -> String {
        format!("{self:?}").to_ascii_lowercase()
    }
}

impl Shown for MetricsGranularity {
    fn shown(&self) -> String {
        format!("{self:?}").to_ascii_lowercase()
    }
}

impl<T: Shown> Shown for Option<T> {
    fn shown(&self) -> String {
        self.as_ref()
            .map_or_else(|| "none".to_owned(), Shown::shown)
    }
}

/// A number of the table's bounds.
trait Number {
    fn number(&self) -> u64;
}

impl Number for u64 {
    fn number(&self) -> u64 {
        *self
    }
}

impl Number for usize {
    fn number(&self) -> u64 {
        u64::try_from(*self).unwrap_or(u64::MAX)
    }
}

impl Number for Duration {
    fn number(&self) -> u64 {
        millis(*self)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The table: see the module's doc. Each line of `fields` is
/// `Key [older names] => field: Type = default, kind (min, max), set form, flag,
/// kpl, unit, (allowed,) doc`; `keys` are keys that qualify another field.
macro_rules! settings {
    (
        $(#[$cmeta:meta])*
        fields {
            $(
                $key:literal $([$($alias:literal),+])? => $field:ident: $ty:ty = $default:expr,
                $kind:ident $(($min:expr, $max:expr))?, $set:ident $(($inner:ty))?,
                flag $flag:expr, kpl $kpl:literal, unit $unit:tt,
                $(allowed $allowed:tt,)?
                $doc:literal;
            )*
        }
        keys {
            $(
                $xkey:literal $([$($xalias:literal),+])? => $xid:ident, default $xdefault:expr,
                kpl $xkpl:literal, allowed $xallowed:literal, $xdoc:literal;
            )*
        }
        other {
            $( $(#[$ometa:meta])* $ofield:ident: $oty:ty = $odefault:expr; )*
        }
    ) => {
        $(#[$cmeta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Config {
            $( pub(crate) $field: $ty, )*
            $( $(#[$ometa])* pub(crate) $ofield: $oty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Self {
                    $( $field: settings!(@default $kind $default), )*
                    $( $ofield: $odefault, )*
                }
            }
        }

        /// A setting of the table, by its field (or its key, for the keys that
        /// qualify another field).
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Id {
            $( $field, )*
            $( $xid, )*
        }

        static SETTINGS: &[Setting] = &[
            $(
                Setting {
                    id: Id::$field,
                    key: $key,
                    aliases: &[$($($alias),+)?],
                    field: Some(stringify!($field)),
                    kind: settings!(@kind $kind $(($min, $max))? $($allowed)?),
                    unit: $unit,
                    flag: $flag,
                    kpl: $kpl,
                    doc: $doc,
                },
            )*
            $(
                Setting {
                    id: Id::$xid,
                    key: $xkey,
                    aliases: &[$($($xalias),+)?],
                    field: None,
                    kind: Kind::Custom($xallowed),
                    unit: "",
                    flag: None,
                    kpl: $xkpl,
                    doc: $xdoc,
                },
            )*
        ];

        fn default_of(id: Id) -> String {
            match id {
                $( Id::$field => Config::default().$field.shown(), )*
                $( Id::$xid => $xdefault.shown(), )*
            }
        }

        /// The value of a counted or timed setting, as a number of its unit.
        fn number_of(id: Id, c: &Config) -> Option<u64> {
            match id {
                $( Id::$field => settings!(@number $kind c.$field), )*
                _ => None,
            }
        }

        /// Sets a bool, counted or timed setting from its text; `false` for the
        /// others (read by hand).
        fn apply_simple(id: Id, c: &mut Config, key: &str, value: &str) -> Result<bool, ConfigError> {
            match id {
                $( Id::$field => settings!(@parse $kind c.$field, key, value), )*
                _ => Ok(false),
            }
        }

        impl Config {
            $(
                #[doc = concat!("`", $key, "`: ", $doc)]
                #[doc = ""]
                #[doc = concat!("Default: `", stringify!($default), "`", settings!(@unit $kind $unit),
                    settings!(@bounds $kind $unit $(($min, $max))?), " (see [`Config::settings`]).")]
                pub fn $field(&self) -> $ty {
                    self.$field.clone()
                }
            )*
        }

        impl ConfigBuilder {
            $(
                settings!(@setter $key, $field, $ty, $set $(($inner))?);
            )*
        }
    };

    (@default Millis $default:expr) => { Duration::from_millis($default) };
    (@default $kind:ident $default:expr) => { $default };

    (@kind Bool) => { Kind::Bool };
    (@kind Count ($min:expr, $max:expr)) => { Kind::Count { min: $min as u64, max: $max as u64 } };
    (@kind Millis ($min:expr, $max:expr)) => { Kind::Millis { min: $min, max: $max } };
    (@kind Custom $allowed:tt) => { Kind::Custom($allowed) };

    (@unit Millis $unit:tt) => { " ms" };
    (@unit $kind:ident "") => { "" };
    (@unit $kind:ident $unit:tt) => { concat!(" ", $unit) };

    (@bounds $kind:ident $unit:tt ($min:expr, $max:expr)) => {
        concat!(
            "; allowed: `", stringify!($min), "` to `", stringify!($max), "`",
            settings!(@unit $kind $unit)
        )
    };
    (@bounds $kind:ident $unit:tt) => { "" };

    (@number Bool $e:expr) => { None };
    (@number Custom $e:expr) => { None };
    (@number $kind:ident $e:expr) => { Some($e.number()) };

    (@parse Bool $e:expr, $key:expr, $value:expr) => {{ $e = parse_bool($key, $value)?; Ok(true) }};
    (@parse Count $e:expr, $key:expr, $value:expr) => {{ $e = parse_num($key, $value)?; Ok(true) }};
    (@parse Millis $e:expr, $key:expr, $value:expr) => {{ $e = parse_ms($key, $value)?; Ok(true) }};
    (@parse Custom $e:expr, $key:expr, $value:expr) => { Ok(false) };

    (@setter $key:literal, $field:ident, $ty:ty, plain) => {
        #[doc = concat!("Sets `", $key, "` (see [`Config::", stringify!($field), "`]); checked at [`build`](Self::build).")]
        pub fn $field(mut self, value: $ty) -> Self {
            self.config.$field = value;
            self
        }
    };
    (@setter $key:literal, $field:ident, $ty:ty, some($inner:ty)) => {
        #[doc = concat!("Sets `", $key, "` (see [`Config::", stringify!($field), "`]).")]
        pub fn $field(mut self, value: $inner) -> Self {
            self.config.$field = Some(value);
            self
        }
    };
    (@setter $key:literal, $field:ident, $ty:ty, into) => {
        #[doc = concat!("Sets `", $key, "` (see [`Config::", stringify!($field), "`]); checked at [`build`](Self::build).")]
        pub fn $field(mut self, value: impl Into<$ty>) -> Self {
            self.config.$field = value.into();
            self
        }
    };
    (@setter $key:literal, $field:ident, $ty:ty, into_some($inner:ty)) => {
        #[doc = concat!("Sets `", $key, "` (see [`Config::", stringify!($field), "`]).")]
        pub fn $field(mut self, value: impl Into<$inner>) -> Self {
            self.config.$field = Some(value.into());
            self
        }
    };
}

settings! {
    /// The producer's settings, with the KPL's defaults and bounds.
    ///
    /// Build one with [`Config::builder`] (every setter is checked at
    /// [`ConfigBuilder::build`]) or read a Java KPL `.properties` file with
    /// [`Config::from_kpl_properties`]. Every setting, with its key, default and
    /// bounds, is listed by [`Config::settings`] (and in docs/configuration.md).
    ///
    /// ```
    /// use std::time::Duration;
    /// use kpl_producer::Config;
    ///
    /// let config = Config::builder()
    ///     .record_max_buffered_time(Duration::from_millis(50))
    ///     .rate_limit(100)
    ///     .build()?;
    /// assert_eq!(config.rate_limit(), 100);
    /// # Ok::<(), kpl_producer::ConfigError>(())
    /// ```
    fields {
        "AggregationEnabled" => aggregation_enabled: bool = true,
            Bool, plain, flag Some("no-aggregation"), kpl true, unit "",
            "Whether user records are aggregated into Kinesis records.";
        "AggregationMaxCount" => aggregation_max_count: u64 = u64::from(u32::MAX),
            Count (1, u64::MAX), plain, flag Some("aggregation-max-count"), kpl true, unit "",
            "Most user records in one aggregated record (the KPL's bound: 1 to 2^63 - 1).";
        "AggregationMaxSize" => aggregation_max_size: usize = 51_200,
            Count (64, MAX_RECORD_SIZE_CEILING), plain, flag Some("aggregation-max-size"),
            kpl true, unit "bytes",
            "Most bytes of one aggregated record (the KPL's bound: 64 bytes to 1 MiB; \
             Kinesis records may be 10 MiB since 2025).";
        "CollectionMaxCount" => collection_max_count: usize = MAX_RECORDS_PER_REQUEST,
            Count (1, MAX_RECORDS_PER_REQUEST), plain, flag Some("collection-max-count"),
            kpl true, unit "",
            "Most records in one PutRecords request.";
        "CollectionMaxSize" => collection_max_size: usize = DEFAULT_MAX_REQUEST_SIZE,
            Count (52_224, MAX_RECORD_SIZE_CEILING), plain, flag Some("collection-max-size"),
            kpl true, unit "bytes",
            "Most bytes of one PutRecords request; the pipeline cuts every request at \
             512 KiB (shorter requests retry cheaper and keep the congestion window \
             fine-grained), so a larger value changes nothing (the KPL's bound: 52224 \
             to 2^63 - 1).";
        "RecordMaxBufferedTime" => record_max_buffered_time: Duration = 100,
            Millis (0, 3_600_000), plain, flag Some("record-max-buffered-time"), kpl true,
            unit "ms",
            "Longest a record waits for its batch to fill before it is sent (the KPL's \
             bound: 100 ms or more; less is ours, for latency-bound users and tests; an \
             hour is the most a record can usefully wait).";
        "RecordTtl" => record_ttl: Duration = 30_000,
            Millis (100, u64::MAX), plain, flag Some("record-ttl"), kpl true, unit "ms",
            "Time a record has to be stored before it fails as expired (huge values are \
             capped, never overflow).";
        "RateLimit" => rate_limit: u64 = 150,
            Count (1, u64::MAX), plain, flag Some("rate-limit"), kpl true, unit "percent",
            "What the per-shard limiter admits, as a share of the shard's limits.";
        "FailIfThrottled" => fail_if_throttled: bool = false,
            Bool, plain, flag Some("fail-if-throttled"), kpl true, unit "",
            "Whether a throttled record fails at once instead of being retried.";
        "MaxConnections" => max_connections: usize = 24,
            Count (1, 256), plain, flag Some("max-connections"), kpl true, unit "",
            "Most requests in flight (the congestion window's ceiling), and idle \
             connections kept.";
        "MinConnections" => min_connections: usize = 1,
            Count (1, 16), plain, flag None, kpl true, unit "",
            "Accepted for the KPL's files, with nothing to do: connections open on demand \
             and idle ones stay open up to MaxConnections (a value above 1 is returned as \
             not applied).";
        "RequestTimeout" => request_timeout: Duration = 6_000,
            Millis (100, 600_000), plain, flag Some("request-timeout"), kpl true, unit "ms",
            "The timeout of a request to a path with no measured rate yet; a request is \
             given more time for its size once the path's rate is known.";
        "ConnectTimeout" => connect_timeout: Duration = 6_000,
            Millis (100, 300_000), plain, flag Some("connect-timeout"), kpl true, unit "ms",
            "The timeout of opening a connection.";
        "MaxUserRecordSize" => max_user_record_size: usize = DEFAULT_MAX_RECORD_SIZE,
            Count (64, MAX_RECORD_SIZE_CEILING), plain, flag Some("max-user-record-size"),
            kpl false, unit "bytes",
            "Most bytes (data plus partition key) of one user record: raise it for a \
             stream whose record limit was raised. Above 1 MiB the stream's own limit \
             is read (DescribeStreamSummary) and a record over it fails as Record Too \
             Large without being sent; records over 1 MiB go alone, paced by the \
             shard's bytes.";
        "Ordered" => ordered: bool = false,
            Bool, plain, flag Some("ordered"), kpl false, unit "",
            "Whether records put in order with the same partition key (or explicit hash \
             key) are stored in that order, as a KCL consumer reads them: one Kinesis \
             record in flight per shard's hash range, retries ahead of newer records \
             (docs/delivery.md).";
        "VerifyBeforeResend" => verify_before_resend: bool = false,
            Bool, plain, flag Some("verify-before-resend"), kpl false, unit "",
            "Whether records of a request that may have been stored (no answer, a \
             broken connection, a 5xx) are looked for in their shard before they are \
             sent again: those found are settled as stored, the others resent. Needs \
             kinesis:GetShardIterator and kinesis:GetRecords; reads at most once per \
             shard per second (docs/delivery.md).";
        "max_outstanding_records" => max_outstanding_records: usize = 1_000_000,
            Count (1, usize::MAX), plain, flag Some("max-outstanding-records"), kpl false,
            unit "",
            "Records accepted and not yet resolved before `put_record` waits (and `kpl \
             put` pauses reading).";
        "max_outstanding_bytes" => max_outstanding_bytes: usize = 512 * 1024 * 1024,
            Count (1, usize::MAX), plain, flag Some("max-outstanding-bytes"), kpl false,
            unit "bytes",
            "Bytes (data plus partition keys) accepted and not yet resolved before \
             `put_record` waits (and `kpl put` pauses reading).";
        "Region" => region: Option<String> = None,
            Custom, into_some(String), flag None, kpl true, unit "",
            allowed "a region name",
            "The AWS region, for building a transport.";
        "KinesisEndpoint" ["CustomEndpoint"] => kinesis_endpoint: Option<String> = None,
            Custom, into_some(String), flag None, kpl true, unit "",
            allowed "a host name or a URL",
            "Where requests go instead of the region's endpoint: a host name (then \
             `https://HOST:KinesisPort`, as the KPL always uses TLS) or a URL \
             (`http://127.0.0.1:4567` for a local peer; the KPL takes a host name only); \
             a URL without `http://` or `https://`, without a host, or with a port that \
             is not one stops the transport's build, naming it.";
        "VerifyCertificate" => verify_certificate: bool = true,
            Bool, plain, flag None, kpl true, unit "",
            "Whether the endpoint's certificate is checked: `false` trusts any \
             certificate (test endpoints only), with a warning when the transport is \
             built; on both HTTP clients (on tokio such requests go through kpl-rs's \
             own connections, as the SDK's client cannot be told to accept any \
             certificate).";
        "ProxyHost" => proxy: Option<ProxySettings> = None,
            Custom, some(ProxySettings), flag None, kpl true, unit "",
            allowed "a host name",
            "An HTTP proxy for requests (CONNECT for https endpoints, absolute-form for \
             http; basic authentication); without one, `HTTPS_PROXY`, `HTTP_PROXY` and \
             `NO_PROXY` apply.";
        "CaCertFile" ["CaCertPath"] => ca_cert_file: Option<PathBuf> = None,
            Custom, into_some(PathBuf), flag None, kpl true, unit "",
            allowed "a file or a directory",
            "CA certificates trusted beside the system's: a PEM file (one certificate or \
             a bundle), or a directory of them as the KPL's `CaCertPath` is (every file in \
             it holding a PEM certificate); a path that cannot be read or holds no \
             certificate stops the transport's build, naming it.";
        "MetricsLevel" => metrics_level: MetricsLevel = MetricsLevel::None,
            Custom, plain, flag Some("metrics-level"), kpl true, unit "",
            allowed "none, summary or detailed",
            "Which of the KPL's metrics are kept (the KPL's default is detailed: a file \
             without MetricsLevel gets it returned as not applied, saying so).";
        "MetricsGranularity" => metrics_granularity: MetricsGranularity = MetricsGranularity::Shard,
            Custom, plain, flag Some("metrics-granularity"), kpl true, unit "",
            allowed "global, stream or shard",
            "The finest dimensions metrics are kept at.";
        "MetricsNamespace" => metrics_namespace: String = "KinesisProducerLibrary".into(),
            Custom, into, flag Some("metrics-namespace"), kpl true, unit "",
            allowed "1 to 255 characters, not starting with AWS/",
            "The CloudWatch namespace of uploaded metrics.";
        "MetricsUploadDelay" => metrics_upload_delay: Duration = 60_000,
            Millis (0, u64::MAX), plain, flag Some("metrics-upload-delay"), kpl true,
            unit "ms",
            "How often metrics are uploaded (and once more at shutdown; the KPL's bound: \
             1 to 60000 ms).";
        "CloudwatchEndpoint" => cloudwatch_endpoint: Option<String> = None,
            Custom, into_some(String), flag Some("metrics-endpoint"), kpl true, unit "",
            allowed "a host name or a URL",
            "Where metrics are uploaded instead of the region's CloudWatch: a host name \
             (then `https://HOST:CloudwatchPort`) or a URL (`http://...` for a plain-HTTP \
             stand-in); the Kinesis endpoint never applies to CloudWatch.";
    }
    keys {
        "KinesisPort" ["Port"] => kinesis_port, default HTTPS_PORT, kpl true,
            allowed "1 to 65535",
            "The port of a KinesisEndpoint given as a host name.";
        "CloudwatchPort" => cloudwatch_port, default HTTPS_PORT, kpl true,
            allowed "1 to 65535",
            "The port of a CloudwatchEndpoint given as a host name.";
        "ProxyPort" => proxy_port, default HTTPS_PORT, kpl true,
            allowed "1 to 65535",
            "The ProxyHost's port.";
        "ProxyUserName" => proxy_user_name, default None::<String>, kpl true,
            allowed "any",
            "The user of the proxy's basic authentication.";
        "ProxyPassword" => proxy_password, default None::<String>, kpl true,
            allowed "any",
            "The password of the proxy's basic authentication (never printed).";
    }
    other {
        /// Seed of the producer's randomness (backoff jitter).
        seed: u64 = 0x6b70_6c2d_7273;
    }
}

/// Keys of the KPL that change nothing here, with the reason each says.
const NOT_APPLIED: &[(&[&str], &str)] = &[
    (
        &["LogLevel"],
        "logs go through `tracing`: set the level with RUST_LOG or your subscriber's filter",
    ),
    (
        &["NativeExecutable", "TempDirectory", "EnableCoreDumps"],
        "kpl-rs runs no native daemon: nothing to apply",
    ),
    (
        &["ThreadingModel", "ThreadPoolSize"],
        "the pipeline runs as tasks on your async runtime: size its threads there",
    ),
    (
        &["CredentialsRefreshDelay"],
        "the AWS SDK refreshes credentials before they expire",
    ),
    (
        &["UserRecordTimeoutInMillis"],
        "use RecordTtl: every record's outcome comes within RecordTtl plus one RequestTimeout",
    ),
    (
        &["StsEndpoint", "StsPort"],
        "set AWS_ENDPOINT_URL_STS for the AWS chain's STS calls",
    ),
    (
        &["AwsAccessKeyId", "AwsSecretKey"],
        "credentials come from the AWS chain (environment, profile, role), not from this file",
    ),
];

/// The reason of a key any other: not one of the KPL's.
const UNKNOWN_KEY: &str = "unknown key";

/// Sets one setting from its text (`key` as the file spells it, for errors).
fn apply_to(s: &Setting, c: &mut Config, key: &str, value: &str) -> Result<(), ConfigError> {
    if apply_simple(s.id, c, key, value)? {
        return Ok(());
    }
    let text = || Some(value.to_owned()).filter(|v| !v.is_empty());
    let invalid = || ConfigError::invalid(key, value, s.allowed());
    match s.id {
        Id::region => c.region = text(),
        Id::kinesis_endpoint => c.kinesis_endpoint = text().map(|h| endpoint_url(h, None)),
        Id::cloudwatch_endpoint => c.cloudwatch_endpoint = text().map(|h| endpoint_url(h, None)),
        Id::ca_cert_file => c.ca_cert_file = text().map(PathBuf::from),
        Id::metrics_level => c.metrics_level = MetricsLevel::parse(value).ok_or_else(invalid)?,
        Id::metrics_granularity => {
            c.metrics_granularity = MetricsGranularity::parse(value).ok_or_else(invalid)?;
        }
        Id::metrics_namespace => c.metrics_namespace = value.to_owned(),
        Id::proxy => {
            c.proxy = text().map(|host| ProxySettings {
                host,
                port: HTTPS_PORT,
                user_name: None,
                password: None,
            });
        }
        _ => {
            return Err(ConfigError::invalid(
                key,
                value,
                "the key it qualifies beside it, in a .properties file",
            ));
        }
    }
    Ok(())
}

/// An endpoint as a URL: a host name connects with TLS, as the KPL always does.
fn endpoint_url(host: String, port: Option<String>) -> String {
    if host.contains("://") {
        host
    } else {
        format!(
            "https://{host}:{}",
            port.unwrap_or_else(|| HTTPS_PORT.to_string())
        )
    }
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

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Self::default(),
        }
    }

    /// Every setting, in the table's order: key, field, default, bounds, unit, doc,
    /// whether the KPL has it, and the `kpl` command's flag.
    ///
    /// ```
    /// use kpl_producer::Config;
    ///
    /// let rate = Config::settings().iter().find(|s| s.key() == "RateLimit").unwrap();
    /// assert_eq!(rate.field(), Some("rate_limit"));
    /// assert_eq!(rate.default_value(), "150");
    /// assert_eq!(rate.allowed(), "1 or more");
    /// ```
    pub fn settings() -> &'static [Setting] {
        SETTINGS
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
        let mut proxy_port: u16 = HTTPS_PORT;
        let mut proxy_user: Option<String> = None;
        let mut proxy_password: Option<String> = None;
        let mut metrics_level_given = false;
        // The line each setting was last given on, for an error found at build.
        let mut given: Vec<(&'static str, usize)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let at = |e: ConfigError| e.at_line(n + 1);
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let (key, value) = line
                .split_once(['=', ':'])
                .map_or((line, ""), |(k, v)| (k.trim(), v.trim()));
            let Some(s) = lookup(key) else {
                let reason = NOT_APPLIED
                    .iter()
                    .find(|(keys, _)| keys.contains(&key))
                    .map_or(UNKNOWN_KEY, |(_, reason)| reason);
                ignored.push(IgnoredKey {
                    key: key.to_owned(),
                    reason,
                });
                continue;
            };
            let text = || Some(value.to_owned()).filter(|v| !v.is_empty());
            given.push((s.key, n + 1));
            match s.id {
                Id::kinesis_endpoint => endpoint = text(),
                Id::kinesis_port => {
                    parse_num::<u16>(key, value).map_err(at)?;
                    port = Some(value.to_owned());
                }
                Id::cloudwatch_endpoint => cw_endpoint = text(),
                Id::cloudwatch_port => {
                    parse_num::<u16>(key, value).map_err(at)?;
                    cw_port = Some(value.to_owned());
                }
                Id::proxy => proxy_host = text(),
                Id::proxy_port => proxy_port = parse_num(key, value).map_err(at)?,
                Id::proxy_user_name => proxy_user = text(),
                Id::proxy_password => proxy_password = text(),
                id => {
                    metrics_level_given |= id == Id::metrics_level;
                    apply_to(s, &mut b.config, key, value).map_err(at)?;
                }
            }
        }
        b.config.kinesis_endpoint = endpoint.map(|host| endpoint_url(host, port));
        b.config.cloudwatch_endpoint = cw_endpoint.map(|host| endpoint_url(host, cw_port));
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
                key: setting(Id::min_connections).key.into(),
                reason: "connections open on demand and idle ones stay open up to MaxConnections: \
                         no connection is opened ahead",
            });
        }
        // The one default of ours that is not the KPL's: say so, or a migrating
        // user's dashboards stay empty with no word why.
        if !metrics_level_given {
            ignored.push(IgnoredKey {
                key: setting(Id::metrics_level).key.into(),
                reason: "not given: kpl-rs defaults to none (the KPL's default is detailed); \
                         set MetricsLevel to upload metrics",
            });
        }
        for i in &ignored {
            tracing::warn!(key = %i.key, "KPL setting not applied: {}", i.reason);
        }
        let config = b.build().map_err(|e| {
            let line = given
                .iter()
                .rev()
                .find(|(key, _)| e.key() == Some(key))
                .map(|(_, line)| *line);
            match line {
                Some(line) => e.at_line(line),
                None => e,
            }
        })?;
        Ok((config, ignored))
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
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::file(path, source))?;
        Self::from_kpl_properties(&text).map_err(|e| e.in_file(path))
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
    /// [`BuildErrorKind::HttpClient`](kpl_transport::BuildErrorKind) naming it). What [`Producer::from_config`](crate::Producer::from_config)
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
        _ => Err(ConfigError::invalid(key, value, "true or false")),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::invalid(key, value, "a whole number"))
}

fn parse_ms(key: &str, value: &str) -> Result<Duration, ConfigError> {
    parse_num::<u64>(key, value).map(Duration::from_millis)
}

/// A setting the producer refuses, or a settings file that cannot be read.
///
/// Ask it with [`kind`](Self::kind) or the `is_*` methods, and for what went with
/// it with [`key`](Self::key), [`value`](Self::value), [`allowed`](Self::allowed),
/// [`line`](Self::line) and [`path`](Self::path). Display names the setting and
/// the value, or the file, and what is allowed; the system's error for a file
/// that cannot be read is its [`source`](std::error::Error::source).
///
/// ```
/// use kpl_producer::{Config, ConfigErrorKind};
///
/// let err = Config::from_kpl_properties("RateLimit = 90\nMaxConnections = 1000\n").unwrap_err();
/// assert_eq!(err.kind(), ConfigErrorKind::OutOfRange);
/// assert_eq!((err.key(), err.value(), err.line()), (Some("MaxConnections"), Some("1000"), Some(2)));
/// assert_eq!(err.to_string(), "line 2: MaxConnections = 1000 is out of range: allowed 1 to 256");
/// ```
#[derive(Debug)]
pub struct ConfigError {
    repr: Refused,
    /// The line of the `.properties` text it was given on.
    line: Option<usize>,
    /// The `.properties` file it was given in (the file itself, for one that
    /// cannot be read).
    path: Option<PathBuf>,
}

/// What kind of [`ConfigError`] it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// A value outside its bounds.
    OutOfRange,
    /// A value that does not parse.
    Invalid,
    /// A `.properties` file that could not be read.
    File,
}

#[derive(Debug)]
enum Refused {
    OutOfRange {
        key: String,
        value: String,
        allowed: &'static str,
    },
    File {
        source: std::io::Error,
    },
    Invalid {
        key: String,
        value: String,
        expected: &'static str,
    },
}

impl ConfigError {
    pub(crate) fn out_of_range(
        key: impl Into<String>,
        value: impl Into<String>,
        allowed: &'static str,
    ) -> Self {
        Self::new(Refused::OutOfRange {
            key: key.into(),
            value: value.into(),
            allowed,
        })
    }

    pub(crate) fn invalid(
        key: impl Into<String>,
        value: impl Into<String>,
        expected: &'static str,
    ) -> Self {
        Self::new(Refused::Invalid {
            key: key.into(),
            value: value.into(),
            expected,
        })
    }

    fn file(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::new(Refused::File { source }).in_file(path)
    }

    fn new(repr: Refused) -> Self {
        Self {
            repr,
            line: None,
            path: None,
        }
    }

    /// The same error, given on `line` of a `.properties` text.
    fn at_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }

    /// The same error, given in the file at `path`.
    fn in_file(mut self, path: &std::path::Path) -> Self {
        self.path = Some(path.to_owned());
        self
    }

    /// What kind of error it is.
    pub fn kind(&self) -> ConfigErrorKind {
        match self.repr {
            Refused::OutOfRange { .. } => ConfigErrorKind::OutOfRange,
            Refused::Invalid { .. } => ConfigErrorKind::Invalid,
            Refused::File { .. } => ConfigErrorKind::File,
        }
    }

    /// A value outside its bounds.
    pub fn is_out_of_range(&self) -> bool {
        self.kind() == ConfigErrorKind::OutOfRange
    }

    /// A value that does not parse.
    pub fn is_invalid(&self) -> bool {
        self.kind() == ConfigErrorKind::Invalid
    }

    /// A `.properties` file that could not be read ([`path`](Self::path) names
    /// it; the system's error is the source).
    pub fn is_file(&self) -> bool {
        self.kind() == ConfigErrorKind::File
    }

    /// The setting refused, as the KPL spells it (or as the file spelled it),
    /// or the builder's name for a setting the KPL does not have.
    pub fn key(&self) -> Option<&str> {
        match &self.repr {
            Refused::OutOfRange { key, .. } | Refused::Invalid { key, .. } => Some(key),
            Refused::File { .. } => None,
        }
    }

    /// The value refused, as text.
    pub fn value(&self) -> Option<&str> {
        match &self.repr {
            Refused::OutOfRange { value, .. } | Refused::Invalid { value, .. } => Some(value),
            Refused::File { .. } => None,
        }
    }

    /// What the setting takes (`1 to 256`, `true or false`).
    pub fn allowed(&self) -> Option<&'static str> {
        match self.repr {
            Refused::OutOfRange { allowed, .. } => Some(allowed),
            Refused::Invalid { expected, .. } => Some(expected),
            Refused::File { .. } => None,
        }
    }

    /// The line (from 1) of the `.properties` text the setting was given on.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The `.properties` file: the one that cannot be read, or the one the
    /// setting was given in.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Refused::File { .. } = self.repr {
            // What the system said is the cause (`source()`).
            let path = self.path.as_deref().unwrap_or(std::path::Path::new(""));
            return write!(f, "cannot read the KPL settings file {}", path.display());
        }
        match (&self.path, self.line) {
            (Some(path), Some(line)) => write!(f, "{} line {line}: ", path.display())?,
            (Some(path), None) => write!(f, "{}: ", path.display())?,
            (None, Some(line)) => write!(f, "line {line}: ")?,
            (None, None) => {}
        }
        match &self.repr {
            Refused::OutOfRange {
                key,
                value,
                allowed,
            } => write!(f, "{key} = {value} is out of range: allowed {allowed}"),
            Refused::Invalid {
                key,
                value,
                expected,
            } => write!(f, "{key} = {value:?} is not valid: expected {expected}"),
            Refused::File { .. } => Ok(()),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.repr {
            Refused::File { source } => Some(source),
            Refused::OutOfRange { .. } | Refused::Invalid { .. } => None,
        }
    }
}

/// Equal when they say the same: the same setting and value, or the same file
/// with the same kind of system error, at the same line of the same file.
impl PartialEq for ConfigError {
    fn eq(&self, other: &Self) -> bool {
        let same = match (&self.repr, &other.repr) {
            (
                Refused::OutOfRange {
                    key,
                    value,
                    allowed,
                },
                Refused::OutOfRange {
                    key: k,
                    value: v,
                    allowed: a,
                },
            ) => key == k && value == v && allowed == a,
            (
                Refused::Invalid {
                    key,
                    value,
                    expected,
                },
                Refused::Invalid {
                    key: k,
                    value: v,
                    expected: e,
                },
            ) => key == k && value == v && expected == e,
            (Refused::File { source }, Refused::File { source: s }) => source.kind() == s.kind(),
            _ => false,
        };
        same && self.line == other.line && self.path == other.path
    }
}

impl Eq for ConfigError {}

/// Builds a [`Config`]; [`build`](Self::build) checks every bound.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// Seed of the producer's randomness (backoff jitter), for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Checks every bound.
    pub fn build(self) -> Result<Config, ConfigError> {
        let c = self.config;
        for s in SETTINGS {
            s.check(&c)?;
        }
        let namespace = &c.metrics_namespace;
        if namespace.is_empty() || namespace.chars().count() > 255 || namespace.starts_with("AWS/")
        {
            let s = setting(Id::metrics_namespace);
            return Err(ConfigError::out_of_range(
                s.key,
                namespace.clone(),
                s.allowed(),
            ));
        }
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
            assert!(err.is_out_of_range() && err.key() == Some(key), "{err}");
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
            ConfigError::invalid("RateLimit", "fast", "a whole number").at_line(1)
        );
        assert_eq!(err.kind(), ConfigErrorKind::Invalid);
        assert_eq!(
            err.to_string(),
            "line 1: RateLimit = \"fast\" is not valid: expected a whole number"
        );
        let err = Config::from_kpl_properties("MaxConnections = 1000").unwrap_err();
        assert!(err.is_out_of_range() && err.key() == Some("MaxConnections"));
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
            err.is_file() && err.path().is_some_and(|p| p.ends_with("kpl.properties")),
            "{err}"
        );
        assert!(err.to_string().contains("/nonexistent/kpl.properties"));
        // The system's error is the cause, kept as an error and said once.
        let io = std::error::Error::source(&err)
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .expect("the io::Error as the source");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert!(!err.to_string().contains(&io.to_string()), "{err}");
    }

    /// A refused setting of a file names the file, the line and the value,
    /// with no source (nothing is behind it); one found only when every bound
    /// is checked names the line it was given on.
    #[test]
    fn a_refused_setting_names_its_file_and_line() {
        use std::error::Error as _;
        let dir = std::env::temp_dir().join(format!("kpl-config-errors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kpl.properties");
        std::fs::write(&path, "# mine\nRateLimit = 90\n\nFailIfThrottled = maybe\n").unwrap();
        let err = Config::from_kpl_properties_file(&path).unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::Invalid);
        assert_eq!(
            (err.key(), err.value(), err.allowed(), err.line()),
            (
                Some("FailIfThrottled"),
                Some("maybe"),
                Some("true or false"),
                Some(4)
            )
        );
        assert_eq!(err.path(), Some(path.as_path()));
        assert_eq!(
            err.to_string(),
            format!(
                "{} line 4: FailIfThrottled = \"maybe\" is not valid: expected true or false",
                path.display()
            )
        );
        assert!(err.source().is_none());

        std::fs::write(&path, "MaxConnections = 1000\nRateLimit = 90\n").unwrap();
        let err = Config::from_kpl_properties_file(&path).unwrap_err();
        assert!(err.is_out_of_range());
        assert_eq!((err.key(), err.line()), (Some("MaxConnections"), Some(1)));
        std::fs::remove_dir_all(&dir).unwrap();

        // Set on the builder: no line, no file.
        let err = Config::builder().max_connections(0).build().unwrap_err();
        assert_eq!((err.line(), err.path()), (None, None));
        assert_eq!(
            err.to_string(),
            "MaxConnections = 0 is out of range: allowed 1 to 256"
        );
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
        assert!(err.is_out_of_range() && err.key() == Some("MinConnections"));
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

    /// The tables of docs/configuration.md, as the settings table makes them.
    fn settings_markdown() -> String {
        let mut out = String::from(
            "| key | getter and setter | `kpl` flag | default | accepted here | in the KPL | what it does |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for s in Config::settings() {
            let mut key = format!("`{}`", s.key());
            if !s.aliases().is_empty() {
                let older: Vec<String> = s.aliases().iter().map(|a| format!("`{a}`")).collect();
                key += &format!(" (older {})", older.join(", "));
            }
            let field = s.field().map_or("—".to_owned(), |f| format!("`{f}`"));
            let flag = s.flag().map_or("—".to_owned(), |f| format!("`--{f}`"));
            let default = s.default_value();
            let default = if s.unit().is_empty() || default == "none" {
                default
            } else {
                format!("{default} {}", s.unit())
            };
            let kpl = if s.in_kpl() { "yes" } else { "no (ours)" };
            out += &format!(
                "| {key} | {field} | {flag} | {default} | {} | {kpl} | {} |\n",
                s.allowed(),
                s.doc()
            );
        }
        out += "\n## Recognised, not applied\n\n| key | why |\n|---|---|\n";
        for (keys, reason) in NOT_APPLIED {
            let keys: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
            out += &format!("| {} | {reason} |\n", keys.join(", "));
        }
        out += &format!("\nAny other key is returned as `{UNKNOWN_KEY}`.\n");
        out
    }

    /// docs/configuration.md holds the tables the settings table makes (rewritten
    /// with `KPL_WRITE_DOCS=1`).
    #[test]
    fn the_docs_tables_are_the_settings_table() {
        const BEGIN: &str = "<!-- generated from the settings table (crates/kpl-producer/src/config.rs): \
                             KPL_WRITE_DOCS=1 cargo test -p kpl-producer --lib config -->\n";
        const END: &str = "<!-- end of the generated tables -->\n";
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = settings_markdown();
        let (before, rest) = text.split_once(BEGIN).unwrap_or((&text, ""));
        let (actual, after) = rest.split_once(END).unwrap_or(("", rest));
        if actual == expected {
            return;
        }
        if std::env::var_os("KPL_WRITE_DOCS").is_some() {
            std::fs::write(&path, format!("{before}{BEGIN}{expected}{END}{after}")).unwrap();
            return;
        }
        panic!(
            "docs/configuration.md disagrees with the settings table; between\n{BEGIN}and\n{END}\
             it should read:\n\n{expected}"
        );
    }

    /// Every setting reads its own default back, and its bounds are exactly the
    /// table's: the last value inside passes, the first outside is refused.
    #[test]
    fn every_setting_reads_its_default_and_keeps_its_bounds() {
        for s in Config::settings() {
            assert_eq!(lookup(s.key).map(|l| l.id), Some(s.id), "{}", s.key);
            for alias in s.aliases {
                assert_eq!(lookup(alias).map(|l| l.id), Some(s.id), "{alias}");
            }
            if s.field.is_none() {
                assert!(s.apply(Config::builder(), "1").is_err(), "{}", s.key);
                continue;
            }
            if s.default_value() != "none" {
                let b = s.apply(Config::builder(), &s.default_value()).unwrap();
                assert_eq!(b.build(), Ok(Config::default()), "{}", s.key);
            }
            let (Kind::Count { min, max } | Kind::Millis { min, max }) = s.kind else {
                continue;
            };
            let at = |v: u64| s.apply(Config::builder(), &v.to_string()).unwrap().build();
            assert!(at(min).is_ok(), "{} = {min}", s.key);
            assert!(at(max).is_ok(), "{} = {max}", s.key);
            if let Some(below) = min.checked_sub(1) {
                let err = at(below).unwrap_err();
                assert_eq!(
                    err,
                    ConfigError::out_of_range(s.key, below.to_string(), s.allowed())
                );
            }
            if let Some(above) = max.checked_add(1).filter(|_| max != usize::MAX as u64) {
                assert!(at(above).is_err(), "{} = {above}", s.key);
            }
        }
    }

    /// The lower crates' defaults (kpl-transport's, kpl-limiter's window) are the
    /// table's: they cannot depend on kpl-producer, so this test ties them.
    #[test]
    fn the_lower_crates_defaults_are_the_tables() {
        let c = Config::default();
        assert_eq!(kpl_transport::DEFAULT_TIMEOUT, c.request_timeout());
        assert_eq!(kpl_transport::DEFAULT_TIMEOUT, c.connect_timeout());
        assert_eq!(kpl_transport::DEFAULT_MAX_CONNECTIONS, c.max_connections());
        let Kind::Millis { max, .. } = setting(Id::request_timeout).kind else {
            panic!("RequestTimeout is a duration");
        };
        let window = kpl_limiter::WindowConfig::new(c.max_connections());
        assert_eq!(
            window,
            window
                .base_timeout(c.request_timeout())
                .max_timeout(Duration::from_millis(max)),
            "the window's base timeout is RequestTimeout's default, its longest its bound"
        );
    }

    /// kpl-transport checks MaxConnections, ConnectTimeout and RequestTimeout itself
    /// (an `AwsTransport` may be built without a `Config`): with the table's bounds.
    #[cfg(feature = "aws")]
    #[tokio::test]
    async fn the_transport_bounds_are_the_tables() {
        use kpl_transport::{AwsTransport, AwsTransportBuilder};
        fn bounds(id: Id) -> (u64, u64) {
            match setting(id).kind {
                Kind::Count { min, max } | Kind::Millis { min, max } => (min, max),
                _ => panic!("{id:?} has bounds"),
            }
        }
        let builder = || {
            AwsTransport::builder()
                .region("us-east-1")
                .endpoint_url("http://127.0.0.1:9")
        };
        let refused = |b: AwsTransportBuilder| async move {
            matches!(b.build().await, Err(e) if e.is_out_of_range())
        };
        let (min, max) = bounds(Id::max_connections);
        for (n, out) in [(min - 1, true), (min, false), (max, false), (max + 1, true)] {
            let b = builder().max_connections(n as usize);
            assert_eq!(refused(b).await, out, "MaxConnections = {n}");
        }
        for (id, set) in [
            (
                Id::connect_timeout,
                AwsTransportBuilder::connect_timeout as fn(_, _) -> _,
            ),
            (Id::request_timeout, AwsTransportBuilder::request_timeout),
        ] {
            let (min, max) = bounds(id);
            for (ms, out) in [(min - 1, true), (min, false), (max, false), (max + 1, true)] {
                let b = set(builder(), Duration::from_millis(ms));
                assert_eq!(refused(b).await, out, "{id:?} = {ms} ms");
            }
        }
    }
}

//! CloudWatch's PutMetricData through `aws-sdk-cloudwatch`, in types of our own:
//! what the producer uploads its metrics with.

use std::fmt;
use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_sdk_cloudwatch::config::retry::RetryConfig;
use aws_sdk_cloudwatch::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, StandardUnit, StatisticSet};
use tracing::debug;

use crate::{AwsTransportBuilder, BuildError, HttpRuntime, Proxy};

/// Data points in one PutMetricData request at most (the service's limit).
pub const MAX_DATA_PER_REQUEST: usize = 1000;

/// The form-encoded size a request is kept under (the service takes 1 MB).
const MAX_REQUEST_BYTES: usize = 768 * 1024;

/// One data point: a statistic set of one metric, for one set of dimensions.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricDatum {
    /// The metric's name.
    pub name: String,
    /// CloudWatch's unit: `Count`, `Bytes`, `Milliseconds`, …
    pub unit: String,
    /// Its dimensions, `(name, value)`, up to 30.
    pub dimensions: Vec<(String, String)>,
    /// When the values were seen (the end of the interval).
    pub timestamp: SystemTime,
    /// How many values (more than zero).
    pub sample_count: f64,
    /// Their sum.
    pub sum: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl MetricDatum {
    /// A bound of its size in a request's form encoding (key names with the
    /// largest member index, values as if every byte were escaped).
    fn encoded_bound(&self) -> usize {
        // `MetricData.member.1000.` before each key.
        const PREFIX: usize = 23;
        // The keys with `=` and `&`: MetricName, Unit, Timestamp, and the four
        // StatisticValues.
        const KEYS: usize = 12 + 6 + 11 + 29 + 21 + 25 + 25;
        // An escaped timestamp, and four numbers of up to 24 characters.
        const VALUES: usize = 30 + 4 * 24;
        let dims: usize = self
            .dimensions
            .iter()
            // `Dimensions.member.30.Name=` and `…Value=`, escaped text.
            .map(|(name, value)| 2 * (PREFIX + 28) + 3 * (name.len() + value.len()))
            .sum();
        7 * PREFIX + KEYS + VALUES + 3 * (self.name.len() + self.unit.len()) + dims
    }

    fn is_valid(&self) -> bool {
        [self.sample_count, self.sum, self.min, self.max]
            .iter()
            .all(|v| v.is_finite())
            && self.sample_count > 0.0
            && !self.name.is_empty()
            && self.dimensions.len() <= 30
            && self
                .dimensions
                .iter()
                .all(|(n, v)| !n.is_empty() && !v.is_empty())
    }

    fn to_sdk(&self) -> aws_sdk_cloudwatch::types::MetricDatum {
        let mut datum = aws_sdk_cloudwatch::types::MetricDatum::builder()
            .metric_name(&self.name)
            .unit(StandardUnit::from(self.unit.as_str()))
            .timestamp(DateTime::from(self.timestamp))
            .statistic_values(
                StatisticSet::builder()
                    .sample_count(self.sample_count)
                    .sum(self.sum)
                    .minimum(self.min)
                    .maximum(self.max)
                    .build(),
            );
        for (name, value) in &self.dimensions {
            datum = datum.dimensions(Dimension::builder().name(name).value(value).build());
        }
        datum.build()
    }
}

/// Why a [`CloudWatch::put_metric_data`] call failed.
///
/// Ask it with [`kind`](Self::kind) or [`is_retryable`](Self::is_retryable), and
/// for what went with it with [`code`](Self::code), [`message`](Self::message),
/// [`status`](Self::status), [`sent`](Self::sent) and
/// [`namespace`](Self::namespace). Whether a failure may succeed later is decided
/// by [`ErrorKind::classify`](crate::ErrorKind::classify), as for Kinesis. Display
/// says what failed, with the code; the error behind it (the service's error, a
/// timeout, a connection that failed) is its [`source`](std::error::Error::source).
#[derive(Debug)]
pub struct PutMetricDataError {
    kind: PutMetricDataErrorKind,
    /// The service's error code, or ours (`Timeout`, `ConnectionError`,
    /// `NotCloudWatch`).
    code: Option<String>,
    /// What CloudWatch said in its answer, if it said anything.
    message: Option<String>,
    status: Option<u16>,
    /// The namespace refused.
    namespace: Option<String>,
    sent: usize,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// What kind of [`PutMetricDataError`] it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PutMetricDataErrorKind {
    /// Throttled, a 5xx, a timeout, a connection that failed, no credentials yet:
    /// the same data may go through later.
    Transient,
    /// Refused (bad parameters, access denied, not CloudWatch at that endpoint):
    /// the same data would be refused again.
    Refused,
    /// The namespace is not one CloudWatch takes (1 to 255 characters, not
    /// starting with `AWS/`): nothing was sent.
    InvalidNamespace,
}

impl PutMetricDataError {
    /// What kind of failure it is.
    pub fn kind(&self) -> PutMetricDataErrorKind {
        self.kind
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind == PutMetricDataErrorKind::Transient
    }

    /// Whether the data was refused and would be refused again.
    pub fn is_refused(&self) -> bool {
        self.kind == PutMetricDataErrorKind::Refused
    }

    /// Whether the namespace is not one CloudWatch takes (nothing was sent).
    pub fn is_invalid_namespace(&self) -> bool {
        self.kind == PutMetricDataErrorKind::InvalidNamespace
    }

    /// Data points stored before the failure (the first ones given; do not send
    /// them again).
    pub fn sent(&self) -> usize {
        self.sent
    }

    /// The service's error code, or ours (`Timeout`, `ConnectionError`,
    /// `NotCloudWatch`, `ConstructionFailure`, `Other`); none for a namespace
    /// refused before anything was sent.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// What CloudWatch said, when it answered with an error of its own.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// The HTTP status, when an answer came.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The namespace refused, for [`PutMetricDataErrorKind::InvalidNamespace`].
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    fn invalid_namespace(namespace: &str) -> Self {
        Self {
            kind: PutMetricDataErrorKind::InvalidNamespace,
            code: None,
            message: None,
            status: None,
            namespace: Some(namespace.to_owned()),
            sent: 0,
            source: None,
        }
    }

    fn from_sdk<E>(err: SdkError<E, aws_smithy_runtime_api::http::Response>, sent: usize) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (transient, code, message, status) = match &err {
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let code = service.err().code();
                (
                    may_succeed_later(code, status),
                    code.unwrap_or(NOT_CLOUDWATCH),
                    service
                        .err()
                        .message()
                        .filter(|_| code.is_some())
                        .map(|m| crate::aws::bounded(m.to_owned())),
                    Some(status),
                )
            }
            SdkError::ResponseError(response) => {
                let status = response.raw().status().as_u16();
                (
                    may_succeed_later(None, status),
                    NOT_CLOUDWATCH,
                    None,
                    Some(status),
                )
            }
            SdkError::TimeoutError(_) => (true, crate::TIMEOUT_CODE, None, None),
            SdkError::DispatchFailure(_) => (true, "ConnectionError", None, None),
            SdkError::ConstructionFailure(_) => (false, "ConstructionFailure", None, None),
            // Credentials that could not be had, and whatever else: try again later.
            _ => (true, "Other", None, None),
        };
        let code = code.to_owned();
        Self {
            kind: if transient {
                PutMetricDataErrorKind::Transient
            } else {
                PutMetricDataErrorKind::Refused
            },
            code: Some(code),
            message,
            status,
            namespace: None,
            sent,
            // The SDK's error less its wrapper: the service's error, the
            // connector's, the timeout's (never the raw request or response).
            source: err.into_source().ok(),
        }
    }
}

/// Our code for an answer that is not CloudWatch's.
const NOT_CLOUDWATCH: &str = "NotCloudWatch";

/// Whether an HTTP answer with this status (and error code, if any) may succeed
/// later: by the classification Kinesis's answers get
/// ([`ErrorKind::classify`](crate::ErrorKind::classify)), throttled or transient.
/// What it cannot tell (`Other`) Kinesis tries again within the records' time to
/// live; a metrics batch is dropped instead, not retried at every interval.
fn may_succeed_later(code: Option<&str>, status: u16) -> bool {
    matches!(
        crate::ErrorKind::classify(code, Some(status)),
        crate::ErrorKind::Throttled | crate::ErrorKind::Transient
    )
}

impl fmt::Display for PutMetricDataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // What the service said, or the connection's error, is the cause
        // (`source()`): a chain prints it once.
        let sent = self.sent;
        match self.kind {
            PutMetricDataErrorKind::InvalidNamespace => {
                return write!(
                    f,
                    "metrics namespace {:?} is not one CloudWatch takes: 1 to 255 characters, \
                     not starting with \"AWS/\" (set MetricsNamespace)",
                    self.namespace.as_deref().unwrap_or_default()
                );
            }
            PutMetricDataErrorKind::Transient => {
                f.write_str("PutMetricData failed, may succeed later")?
            }
            PutMetricDataErrorKind::Refused => f.write_str("PutMetricData refused")?,
        }
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        if let Some(status) = self.status {
            write!(f, " [HTTP {status}]")?;
        }
        write!(f, ", {sent} data points stored before")?;
        if self.code.as_deref() == Some(NOT_CLOUDWATCH) {
            f.write_str(
                ": the endpoint's answer is not CloudWatch's: check the metrics endpoint URL",
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for PutMetricDataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// CloudWatch, for PutMetricData only.
///
/// Built like an [`AwsTransport`](crate::AwsTransport) (region, credentials, HTTP client on tokio or
/// async-io, proxy and trust settings), usually from the same settings with
/// [`CloudWatchBuilder::from_transport_settings`]; its endpoint is CloudWatch's
/// (the region's, or [`CloudWatchBuilder::endpoint_url`]), never Kinesis's. The
/// SDK's standard retries (three attempts, exponential backoff with jitter) are on,
/// and large requests are gzipped as the SDK does.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::SystemTime;
/// use kpl_transport::{CloudWatch, MetricDatum};
///
/// let cloudwatch = CloudWatch::builder().region("us-east-1").build().await?;
/// cloudwatch
///     .put_metric_data(
///         "KinesisProducerLibrary",
///         &[MetricDatum {
///             name: "UserRecordsPut".into(),
///             unit: "Count".into(),
///             dimensions: vec![("StreamName".into(), "events".into())],
///             timestamp: SystemTime::now(),
///             sample_count: 3.0,
///             sum: 120.0,
///             min: 20.0,
///             max: 60.0,
///         }],
///     )
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct CloudWatch {
    client: aws_sdk_cloudwatch::Client,
}

/// Settings of a [`CloudWatch`] client.
#[derive(Clone, Debug, Default)]
pub struct CloudWatchBuilder {
    settings: AwsTransportBuilder,
}

impl CloudWatchBuilder {
    /// Starts from a transport's settings (region, credentials, timeouts, HTTP
    /// client, proxy, trust), without its endpoint URL, which is Kinesis's.
    pub fn from_transport_settings(settings: AwsTransportBuilder) -> Self {
        let mut settings = settings;
        settings.clear_endpoint_url();
        Self { settings }
    }

    /// Sends to this endpoint instead of the region's (`CloudwatchEndpoint`, a VPC
    /// endpoint, a stand-in of tests).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.settings = self.settings.endpoint_url(url);
        self
    }

    /// The region, instead of the AWS chain's.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.settings = self.settings.region(region);
        self
    }

    /// Static credentials, instead of the AWS chain's (metrics may be uploaded with
    /// other credentials than the records). They are never logged.
    pub fn static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.settings = self
            .settings
            .static_credentials(access_key_id, secret_access_key);
        self
    }

    /// Starts from a loaded SDK config (its credentials provider, region, and any
    /// HTTP client it brings): as [`AwsTransportBuilder::sdk_config`].
    pub fn sdk_config(mut self, config: SdkConfig) -> Self {
        self.settings = self.settings.sdk_config(config);
        self
    }

    /// The HTTP client to send with (default: tokio's when the `tokio` feature is
    /// on, else async-io's).
    pub fn http_runtime(mut self, runtime: HttpRuntime) -> Self {
        self.settings = self.settings.http_runtime(runtime);
        self
    }

    /// Sends through this HTTP proxy (instead of the environment's).
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.settings = self.settings.proxy(proxy);
        self
    }

    /// Timeout of one request, 100 ms to 600 s (default 6 s).
    pub fn request_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.settings = self.settings.request_timeout(timeout);
        self
    }

    /// Builds the client, loading the AWS chain for whatever was not given. With
    /// the tokio HTTP client, must run inside a tokio runtime.
    pub async fn build(self) -> Result<CloudWatch, BuildError> {
        let shared = self.settings.shared_config().await?;
        let mut config = aws_sdk_cloudwatch::config::Builder::from(&shared.sdk)
            .retry_config(RetryConfig::standard().with_max_attempts(3));
        if let Some(url) = shared.endpoint_url {
            config = config.endpoint_url(url);
        }
        Ok(CloudWatch {
            client: aws_sdk_cloudwatch::Client::from_conf(config.build()),
        })
    }
}

impl CloudWatch {
    /// A builder, with the AWS chain's region and credentials.
    pub fn builder() -> CloudWatchBuilder {
        CloudWatchBuilder::default()
    }

    /// Stores `data` under `namespace`, in as many requests as the service's limits
    /// ask for (up to [`MAX_DATA_PER_REQUEST`] data points, well under its 1 MB),
    /// one after another. Data points CloudWatch cannot take (a value not finite,
    /// no samples, an empty dimension) are left out, with a debug log. On a failure
    /// the error says how many of the first data points were stored.
    pub async fn put_metric_data(
        &self,
        namespace: &str,
        data: &[MetricDatum],
    ) -> Result<(), PutMetricDataError> {
        if namespace.is_empty() || namespace.len() > 255 || namespace.starts_with("AWS/") {
            return Err(PutMetricDataError::invalid_namespace(namespace));
        }
        let mut sent = 0;
        for chunk in chunks(data) {
            let valid: Vec<_> = chunk
                .iter()
                .filter(|d| {
                    let ok = d.is_valid();
                    if !ok {
                        debug!(metric = %d.name, "a data point CloudWatch cannot take, left out");
                    }
                    ok
                })
                .map(MetricDatum::to_sdk)
                .collect();
            if !valid.is_empty() {
                self.client
                    .put_metric_data()
                    .namespace(namespace)
                    .set_metric_data(Some(valid))
                    .send()
                    .await
                    .map_err(|e| PutMetricDataError::from_sdk(e, sent))?;
            }
            sent += chunk.len();
            debug!(namespace, sent, of = data.len(), "metrics stored");
        }
        Ok(())
    }
}

/// `data` in runs that each fit one request.
fn chunks(data: &[MetricDatum]) -> impl Iterator<Item = &[MetricDatum]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 200; // Action, Version, Namespace
        let mut n = 0;
        while n < rest.len() && n < MAX_DATA_PER_REQUEST {
            let size = rest[n].encoded_bound();
            if n > 0 && bytes + size > MAX_REQUEST_BYTES {
                break;
            }
            bytes += size;
            n += 1;
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datum(name: &str, dims: usize, dim_len: usize) -> MetricDatum {
        MetricDatum {
            name: name.into(),
            unit: "Count".into(),
            dimensions: (0..dims)
                .map(|i| (format!("D{i}"), "v".repeat(dim_len)))
                .collect(),
            timestamp: SystemTime::UNIX_EPOCH,
            sample_count: 1.0,
            sum: 1.0,
            min: 1.0,
            max: 1.0,
        }
    }

    /// CloudWatch's answers are classified as Kinesis's are: what
    /// `ErrorKind::classify` calls throttled or transient is tried again; the
    /// rest (an unknown 4xx too: CloudWatch drops the batch rather than retry it)
    /// is refused.
    #[test]
    fn http_failures_are_classified_as_kinesis_classifies_them() {
        use crate::ErrorKind;
        let codes = [
            None,
            Some("Throttling"),
            Some("ThrottlingException"),
            Some("LimitExceededException"),
            Some("InternalFailure"),
            Some("InternalServiceError"),
            Some("ServiceUnavailable"),
            Some("RequestTimeout"),
            Some("InvalidParameterValue"),
            Some("InvalidParameterCombination"),
            Some("MissingParameter"),
            Some("AccessDenied"),
            Some("InvalidClientTokenId"),
            Some("ExpiredToken"),
        ];
        for code in codes {
            for status in [400, 403, 404, 408, 413, 429, 500, 502, 503] {
                let kind = ErrorKind::classify(code, Some(status));
                assert_eq!(
                    may_succeed_later(code, status),
                    matches!(kind, ErrorKind::Throttled | ErrorKind::Transient),
                    "{code:?} {status}: {kind:?}"
                );
            }
        }
        assert!(may_succeed_later(Some("RequestTimeout"), 408));
        assert!(!may_succeed_later(Some("InvalidParameterValue"), 400));
    }

    /// A failure keeps what went wrong as its source and says only its own
    /// level: the code, the status and what was stored, not the service's words
    /// or the connection's error again.
    #[test]
    fn errors_keep_their_cause_and_say_their_own_level() {
        use aws_sdk_cloudwatch::error::ErrorMetadata;
        use aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataError as Sdk;
        use aws_smithy_runtime_api::http::{Response, StatusCode};
        use aws_smithy_types::body::SdkBody;
        use std::error::Error as _;

        let service = Sdk::generic(
            ErrorMetadata::builder()
                .code("Throttling")
                .message("Rate exceeded")
                .build(),
        );
        let response = Response::new(StatusCode::try_from(400).unwrap(), SdkBody::empty());
        let e = PutMetricDataError::from_sdk(SdkError::service_error(service, response), 7);
        assert_eq!(e.kind(), PutMetricDataErrorKind::Transient);
        assert!(e.is_retryable() && !e.is_refused());
        assert_eq!(
            (e.code(), e.message(), e.status(), e.sent()),
            (Some("Throttling"), Some("Rate exceeded"), Some(400), 7)
        );
        assert_eq!(
            e.to_string(),
            "PutMetricData failed, may succeed later (Throttling) [HTTP 400], 7 data points stored before"
        );
        let cause = e.source().expect("the service's error");
        assert!(cause.downcast_ref::<Sdk>().is_some(), "{cause:?}");

        let timeout = SdkError::<Sdk, Response>::timeout_error("the request took too long");
        let e = PutMetricDataError::from_sdk(timeout, 0);
        assert!(e.is_retryable());
        assert_eq!(e.code(), Some(crate::TIMEOUT_CODE));
        let cause = e.source().expect("the timeout");
        assert_eq!(cause.to_string(), "the request took too long");
        assert!(!e.to_string().contains(&cause.to_string()), "{e}");

        let e = PutMetricDataError::invalid_namespace("AWS/Kinesis");
        assert!(e.is_invalid_namespace() && !e.is_retryable());
        assert_eq!(
            (e.namespace(), e.code(), e.sent()),
            (Some("AWS/Kinesis"), None, 0)
        );
        assert!(e.source().is_none());
        assert!(e.to_string().contains("\"AWS/Kinesis\""), "{e}");
    }

    #[test]
    fn chunks_keep_to_the_count_limit() {
        let data: Vec<_> = (0..2500).map(|_| datum("UserRecordsPut", 0, 0)).collect();
        let sizes: Vec<_> = chunks(&data).map(<[_]>::len).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
    }

    #[test]
    fn chunks_keep_to_the_size_limit() {
        // Long dimension values: a request of 1000 would pass 1 MB.
        let data: Vec<_> = (0..1000).map(|_| datum("UserRecordsPut", 3, 256)).collect();
        let sizes: Vec<_> = chunks(&data).map(<[_]>::len).collect();
        assert!(sizes.len() > 1, "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 1000);
        for chunk in chunks(&data) {
            let bound: usize = chunk.iter().map(MetricDatum::encoded_bound).sum();
            assert!(bound <= MAX_REQUEST_BYTES, "{bound}");
        }
    }

    #[test]
    fn invalid_data_points_are_recognised() {
        assert!(datum("A", 1, 3).is_valid());
        let mut d = datum("A", 1, 3);
        d.sum = f64::NAN;
        assert!(!d.is_valid());
        let mut d = datum("A", 1, 3);
        d.sample_count = 0.0;
        assert!(!d.is_valid());
        assert!(!datum("A", 1, 0).is_valid());
        assert!(!datum("A", 31, 1).is_valid());
    }
}

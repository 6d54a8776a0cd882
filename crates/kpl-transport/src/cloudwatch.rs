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
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutMetricDataError {
    /// Throttled, a 5xx, a timeout, a connection that failed, no credentials yet:
    /// the same data may go through later.
    Transient {
        /// The service's error code, or ours (`Timeout`, `ConnectionError`).
        code: String,
        /// What went wrong.
        message: String,
        /// Data points stored by the requests before this one (the first `sent` of
        /// those given; do not send them again).
        sent: usize,
    },
    /// Refused (bad parameters, access denied, not CloudWatch at that endpoint):
    /// the same data would be refused again.
    Refused {
        /// The service's error code, or `NotCloudWatch`.
        code: String,
        /// What the service said.
        message: String,
        /// Data points stored by the requests before this one.
        sent: usize,
    },
    /// The namespace is not one CloudWatch takes (1 to 255 characters, not
    /// starting with `AWS/`): nothing was sent.
    InvalidNamespace(String),
}

impl PutMetricDataError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// Data points stored before the failure (the first ones given).
    pub fn sent(&self) -> usize {
        match self {
            Self::Transient { sent, .. } | Self::Refused { sent, .. } => *sent,
            Self::InvalidNamespace(_) => 0,
        }
    }

    fn from_sdk<E>(err: SdkError<E, aws_smithy_runtime_api::http::Response>, sent: usize) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let text = crate::aws::error_chain(&err);
        let (transient, code, message) = match &err {
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                match service.err().code() {
                    Some(code) => (
                        may_succeed_later(Some(code), status),
                        code.to_owned(),
                        service.err().message().unwrap_or(&text).to_owned(),
                    ),
                    None => (
                        may_succeed_later(None, status),
                        "NotCloudWatch".to_owned(),
                        format!(
                            "the endpoint answered HTTP {status} with something that is not a \
                             CloudWatch answer: check the metrics endpoint URL"
                        ),
                    ),
                }
            }
            SdkError::ResponseError(response) => {
                let status = response.raw().status().as_u16();
                (
                    may_succeed_later(None, status),
                    "NotCloudWatch".to_owned(),
                    format!(
                        "the endpoint answered HTTP {status} with something that is not a \
                         CloudWatch answer: check the metrics endpoint URL ({text})"
                    ),
                )
            }
            SdkError::TimeoutError(_) => (true, crate::TIMEOUT_CODE.to_owned(), text),
            SdkError::DispatchFailure(_) => (true, "ConnectionError".to_owned(), text),
            SdkError::ConstructionFailure(_) => (false, "ConstructionFailure".to_owned(), text),
            // Credentials that could not be had, and whatever else: try again later.
            _ => (true, "Other".to_owned(), text),
        };
        let message = crate::aws::bounded(message);
        if transient {
            Self::Transient {
                code,
                message,
                sent,
            }
        } else {
            Self::Refused {
                code,
                message,
                sent,
            }
        }
    }
}

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
        match self {
            Self::Transient {
                code,
                message,
                sent,
            } => write!(
                f,
                "PutMetricData failed, may succeed later: {code}: {message} ({sent} data points stored before)"
            ),
            Self::Refused {
                code,
                message,
                sent,
            } => write!(
                f,
                "PutMetricData refused: {code}: {message} ({sent} data points stored before)"
            ),
            Self::InvalidNamespace(ns) => write!(
                f,
                "metrics namespace {ns:?} is not one CloudWatch takes: 1 to 255 characters, \
                 not starting with \"AWS/\" (set MetricsNamespace)"
            ),
        }
    }
}

impl std::error::Error for PutMetricDataError {}

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
            return Err(PutMetricDataError::InvalidNamespace(namespace.to_owned()));
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

//! The producer's settings as flags, shared by `kpl put` and `kpl bench`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kpl::{Config, ConfigBuilder, MetricsGranularity, MetricsLevel};

/// Producer settings; each overrides the `.properties` file's, which override the
/// KPL defaults.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct ProducerArgs {
    /// A Java KPL `.properties` file to start from (keys as the KPL spells them).
    #[arg(long, value_name = "FILE")]
    kpl_properties: Option<PathBuf>,
    /// Turn aggregation off (AggregationEnabled = false).
    #[arg(long)]
    no_aggregation: bool,
    /// AggregationMaxCount.
    #[arg(long)]
    aggregation_max_count: Option<u64>,
    /// AggregationMaxSize, bytes.
    #[arg(long)]
    aggregation_max_size: Option<usize>,
    /// CollectionMaxCount.
    #[arg(long)]
    collection_max_count: Option<usize>,
    /// CollectionMaxSize, bytes.
    #[arg(long)]
    collection_max_size: Option<usize>,
    /// RecordMaxBufferedTime, milliseconds.
    #[arg(long, value_name = "MS")]
    record_max_buffered_time: Option<u64>,
    /// RecordTtl, milliseconds.
    #[arg(long, value_name = "MS")]
    record_ttl: Option<u64>,
    /// RateLimit, percent of the shard limits.
    #[arg(long)]
    rate_limit: Option<u64>,
    /// FailIfThrottled.
    #[arg(long)]
    fail_if_throttled: bool,
    /// MaxConnections.
    #[arg(long)]
    max_connections: Option<usize>,
    /// RequestTimeout, milliseconds.
    #[arg(long, value_name = "MS")]
    request_timeout: Option<u64>,
    /// ConnectTimeout, milliseconds.
    #[arg(long, value_name = "MS")]
    connect_timeout: Option<u64>,
    /// MaxUserRecordSize, bytes (data plus partition key).
    #[arg(long)]
    max_user_record_size: Option<usize>,
    /// Records accepted but unresolved before reading input pauses.
    #[arg(long)]
    max_outstanding_records: Option<usize>,
    /// Bytes accepted but unresolved before reading input pauses.
    #[arg(long)]
    max_outstanding_bytes: Option<usize>,
    /// MetricsLevel: none, summary or detailed (the KPL's metrics, summarised at
    /// the end of the run; `kpl put` uploads them to CloudWatch, `kpl bench` only
    /// to --metrics-endpoint).
    #[arg(long, value_name = "LEVEL", value_parser = parse_level)]
    metrics_level: Option<MetricsLevel>,
    /// MetricsGranularity: global, stream or shard.
    #[arg(long, value_name = "GRANULARITY", value_parser = parse_granularity)]
    metrics_granularity: Option<MetricsGranularity>,
    /// MetricsNamespace: the CloudWatch namespace of uploaded metrics.
    #[arg(long, value_name = "NAMESPACE")]
    metrics_namespace: Option<String>,
    /// MetricsUploadDelay, milliseconds: how often metrics are uploaded (and once
    /// more at the end of the run).
    #[arg(long, value_name = "MS")]
    metrics_upload_delay: Option<u64>,
    /// CloudwatchEndpoint, as a URL: where metrics are uploaded instead of the
    /// region's CloudWatch.
    #[arg(long, value_name = "URL")]
    metrics_endpoint: Option<String>,
}

fn parse_level(value: &str) -> Result<MetricsLevel, String> {
    MetricsLevel::parse(value).ok_or_else(|| format!("{value:?}: give none, summary or detailed"))
}

fn parse_granularity(value: &str) -> Result<MetricsGranularity, String> {
    MetricsGranularity::parse(value)
        .ok_or_else(|| format!("{value:?}: give global, stream or shard"))
}

/// One line per metric for all streams together (sum, count, mean, min, max), for
/// the end of a run.
pub(crate) fn metrics_summary(producer: &kpl::Producer) -> Vec<String> {
    producer
        .metrics(None, Duration::ZERO)
        .into_iter()
        .filter(|m| {
            m.dimensions.is_empty()
                || (m.dimensions.len() == 1 && m.dimension("ErrorCode").is_some())
        })
        .map(|m| {
            let code = m
                .dimension("ErrorCode")
                .map(|c| format!("[{c}]"))
                .unwrap_or_default();
            let n = |v: f64| {
                if v.fract() == 0.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            };
            format!(
                "{}{code}: sum {} {}, {} samples, mean {}, min {}, max {}",
                m.name,
                n(m.sum),
                m.name.unit(),
                m.sample_count,
                n(m.mean()),
                n(m.min),
                n(m.max)
            )
        })
        .collect()
}

impl ProducerArgs {
    /// The `--kpl-properties` file, if one was given.
    pub(crate) fn kpl_properties(&self) -> Option<&std::path::Path> {
        self.kpl_properties.as_deref()
    }

    /// The settings, with caps on outstanding records and bytes where none were
    /// given (a command reading unbounded input keeps its memory bounded).
    pub(crate) fn config_with_caps(&self, records: usize, bytes: usize) -> anyhow::Result<Config> {
        let c = self.config()?;
        let mut b = c.to_builder();
        if self.max_outstanding_records.is_none() {
            b = b.max_outstanding_records(records);
        }
        if self.max_outstanding_bytes.is_none() {
            b = b.max_outstanding_bytes(bytes);
        }
        Ok(b.build()?)
    }

    pub(crate) fn config(&self) -> anyhow::Result<Config> {
        let base = match &self.kpl_properties {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let (config, ignored) = Config::from_kpl_properties(&text)
                    .with_context(|| format!("in {}", path.display()))?;
                for key in ignored {
                    // The note that MetricsLevel was not given is moot when the
                    // command line gives it.
                    if key.key == "MetricsLevel" && self.metrics_level.is_some() {
                        continue;
                    }
                    crate::say!("kpl: {}: {key}", path.display());
                }
                config
            }
            None => Config::default(),
        };
        let mut b: ConfigBuilder = base.to_builder();
        if self.no_aggregation {
            b = b.aggregation_enabled(false);
        }
        macro_rules! set {
            ($($field:ident),*) => {$(if let Some(v) = self.$field { b = b.$field(v); })*};
        }
        set!(
            aggregation_max_count,
            aggregation_max_size,
            collection_max_count,
            collection_max_size,
            rate_limit,
            max_connections,
            max_user_record_size,
            max_outstanding_records,
            max_outstanding_bytes
        );
        macro_rules! set_ms {
            ($($field:ident),*) => {$(if let Some(v) = self.$field { b = b.$field(Duration::from_millis(v)); })*};
        }
        set_ms!(
            record_max_buffered_time,
            record_ttl,
            request_timeout,
            connect_timeout
        );
        if self.fail_if_throttled {
            b = b.fail_if_throttled(true);
        }
        if let Some(level) = self.metrics_level {
            b = b.metrics_level(level);
        }
        if let Some(granularity) = self.metrics_granularity {
            b = b.metrics_granularity(granularity);
        }
        if let Some(namespace) = &self.metrics_namespace {
            b = b.metrics_namespace(namespace);
        }
        if let Some(ms) = self.metrics_upload_delay {
            b = b.metrics_upload_delay(Duration::from_millis(ms));
        }
        if let Some(url) = &self.metrics_endpoint {
            b = b.cloudwatch_endpoint(url);
        }
        Ok(b.build()?)
    }
}

/// What the metrics uploads did, when there were any.
pub(crate) fn upload_summary(producer: &kpl::Producer) -> Option<String> {
    let s = producer.metrics_upload_stats();
    (s != kpl::UploadStats::default()).then(|| {
        format!(
            "uploads: {} batches uploaded, {} attempts failed, {} batches dropped",
            s.uploaded, s.failed_attempts, s.dropped
        )
    })
}

/// The CloudWatch uploader for a run with metrics on (none when they are off),
/// built from the transport's settings as the flags left them (region,
/// credentials, HTTP client, proxy, trust). Call inside the tokio runtime.
pub(crate) async fn cloudwatch_uploader(
    config: &Config,
    transport: kpl::AwsTransportBuilder,
) -> anyhow::Result<Option<Arc<dyn kpl::MetricsUploader>>> {
    if config.metrics_level() == MetricsLevel::None {
        return Ok(None);
    }
    let client = config
        .cloudwatch_builder_from(transport)
        .build()
        .await
        .context("cannot set up the CloudWatch client for metrics")?;
    Ok(Some(Arc::new(kpl::CloudWatchUploader::new(client))))
}

/// `config` with another `RateLimit`.
pub(crate) fn with_rate_limit(config: &Config, percent: u64) -> anyhow::Result<Config> {
    Ok(config.to_builder().rate_limit(percent).build()?)
}

/// CPU seconds (user + system) this process has used, and its peak resident memory
/// in bytes, from /proc (Linux); `None` elsewhere.
pub(crate) fn cpu_and_peak_memory() -> (Option<f64>, Option<u64>) {
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces) in parentheses.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
        });
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        });
    (cpu, peak)
}

/// Resident memory now, in bytes, from /proc (Linux); `None` elsewhere.
pub(crate) fn resident_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

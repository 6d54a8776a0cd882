//! The producer's settings as flags, shared by `kpl put` and `kpl bench`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kpl::{Config, ConfigBuilder, MetricsLevel};

/// Producer settings; each overrides the `.properties` file's, which override the
/// KPL defaults.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct ProducerArgs {
    /// A Java KPL `.properties` file to start from (keys as the KPL spells them).
    #[arg(long, value_name = "FILE")]
    kpl_properties: Option<PathBuf>,
    #[command(flatten)]
    settings: SettingFlags,
}

/// One flag per setting of the settings table that has one
/// ([`Config::settings`]): its name, help and value are the table's, so a setting
/// is never spelled here.
#[derive(Clone, Debug, Default)]
pub(crate) struct SettingFlags {
    /// The settings given, by their place in the table, with their values as a
    /// `.properties` file gives them, in the table's order.
    given: Vec<(usize, String)>,
}

impl SettingFlags {
    /// Whether a flag sets `key` (as a `.properties` file spells it).
    fn gives(&self, key: &str) -> bool {
        let settings = Config::settings();
        self.given
            .iter()
            .any(|&(i, _)| settings[i].key() == key || settings[i].aliases().contains(&key))
    }

    /// `builder` with every setting given applied.
    fn apply(&self, mut builder: ConfigBuilder) -> anyhow::Result<ConfigBuilder> {
        let settings = Config::settings();
        for (i, value) in &self.given {
            builder = settings[*i].apply(builder, value)?;
        }
        Ok(builder)
    }
}

impl clap::FromArgMatches for SettingFlags {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Self::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        for (i, s) in Config::settings().iter().enumerate() {
            let Some(flag) = s.flag() else { continue };
            let value = if s.is_bool() {
                matches.get_flag(flag).then(|| s.switched().to_owned())
            } else {
                matches.get_one::<String>(flag).cloned()
            };
            if let Some(value) = value {
                self.given.retain(|(j, _)| *j != i);
                self.given.push((i, value));
            }
        }
        Ok(())
    }
}

impl clap::Args for SettingFlags {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        for s in Config::settings() {
            let Some(flag) = s.flag() else { continue };
            let unit = match s.unit() {
                "" => String::new(),
                unit => format!(", {unit}"),
            };
            let arg = clap::Arg::new(flag).long(flag);
            cmd = cmd.arg(if s.is_bool() {
                arg.action(clap::ArgAction::SetTrue).help(format!(
                    "{} = {}: {}",
                    s.key(),
                    s.switched(),
                    s.doc()
                ))
            } else {
                // A value that does not read as the setting's is a usage error;
                // bounds are checked with the others, when the config is built.
                let check = move |value: &str| {
                    s.apply(Config::builder(), value)
                        .map(|_| value.to_owned())
                        .map_err(|e| e.to_string())
                };
                arg.value_name(match s.unit() {
                    "ms" => "MS",
                    "bytes" => "BYTES",
                    "percent" => "PERCENT",
                    _ => "VALUE",
                })
                .value_parser(check)
                .help(format!(
                    "{}{unit} (default {}; {}): {}",
                    s.key(),
                    s.default_value(),
                    s.allowed(),
                    s.doc()
                ))
            });
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
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
    /// Whether `key` (as a `.properties` file spells it) is set, by a flag or in the
    /// `.properties` file, instead of left at its default.
    pub(crate) fn sets(&self, key: &str) -> anyhow::Result<bool> {
        if self.settings.gives(key) {
            return Ok(true);
        }
        let Some(path) = &self.kpl_properties else {
            return Ok(false);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        // A `.properties` key ends at `=`, `:` or white space; comments start with
        // `#` or `!`, which no key does.
        Ok(text.lines().any(|line| {
            line.trim_start()
                .split(|c: char| c == '=' || c == ':' || c.is_whitespace())
                .next()
                == Some(key)
        }))
    }

    pub(crate) fn kpl_properties(&self) -> Option<&std::path::Path> {
        self.kpl_properties.as_deref()
    }

    /// The settings, with caps on outstanding records and bytes where none were
    /// given (a command reading unbounded input keeps its memory bounded).
    pub(crate) fn config_with_caps(&self, records: usize, bytes: usize) -> anyhow::Result<Config> {
        self.config_from(|file, mut b| {
            let default = Config::default();
            if file.max_outstanding_records() == default.max_outstanding_records() {
                b = b.max_outstanding_records(records);
            }
            if file.max_outstanding_bytes() == default.max_outstanding_bytes() {
                b = b.max_outstanding_bytes(bytes);
            }
            b
        })
    }

    pub(crate) fn config(&self) -> anyhow::Result<Config> {
        self.config_from(|_, b| b)
    }

    /// The `.properties` file's settings (or the defaults), then what `base` makes
    /// of them, then the flags.
    fn config_from(
        &self,
        base: impl FnOnce(&Config, ConfigBuilder) -> ConfigBuilder,
    ) -> anyhow::Result<Config> {
        let file = match &self.kpl_properties {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let (config, ignored) = Config::from_kpl_properties(&text)
                    .with_context(|| format!("in {}", path.display()))?;
                for key in ignored {
                    // A note on a key the command line sets (that MetricsLevel
                    // was not given) is moot.
                    if self.settings.gives(&key.key) {
                        continue;
                    }
                    crate::say!("kpl: {}: {key}", path.display());
                }
                config
            }
            None => Config::default(),
        };
        Ok(self
            .settings
            .apply(base(&file, file.to_builder()))?
            .build()?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        producer: ProducerArgs,
    }

    /// The flags are the settings table's: each with its key and doc in its help,
    /// and no other flag but `--kpl-properties`.
    #[test]
    fn every_flag_is_a_setting_of_the_table() {
        let cmd = Cli::command();
        let mut flags: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
        let mut expected: Vec<&str> = Config::settings().iter().filter_map(|s| s.flag()).collect();
        expected.push("kpl-properties");
        flags.sort_unstable();
        expected.sort_unstable();
        assert_eq!(flags, expected);
        for s in Config::settings() {
            let Some(flag) = s.flag() else { continue };
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(flag))
                .unwrap();
            let help = arg.get_help().unwrap().to_string();
            assert!(
                help.starts_with(s.key()) && help.ends_with(s.doc()),
                "{help}"
            );
        }
    }

    #[test]
    fn flags_override_the_defaults_and_values_are_checked() {
        let cli = Cli::try_parse_from([
            "kpl",
            "--no-aggregation",
            "--fail-if-throttled",
            "--rate-limit",
            "90",
            "--record-ttl",
            "1500",
            "--metrics-level",
            "summary",
            "--metrics-endpoint",
            "http://127.0.0.1:9",
        ])
        .unwrap();
        let c = cli.producer.config().unwrap();
        assert!(!c.aggregation_enabled());
        assert!(c.fail_if_throttled());
        assert_eq!(c.rate_limit(), 90);
        assert_eq!(c.record_ttl(), Duration::from_millis(1500));
        assert_eq!(c.metrics_level(), MetricsLevel::Summary);
        assert_eq!(
            c.cloudwatch_endpoint().as_deref(),
            Some("http://127.0.0.1:9")
        );
        let capped = cli.producer.config_with_caps(7, 70).unwrap();
        assert_eq!(capped.max_outstanding_records(), 7);
        let cli = Cli::try_parse_from(["kpl", "--max-outstanding-records", "5"]).unwrap();
        let capped = cli.producer.config_with_caps(7, 70).unwrap();
        assert_eq!(
            (
                capped.max_outstanding_records(),
                capped.max_outstanding_bytes()
            ),
            (5, 70),
            "a flag given wins over the cap"
        );
        for bad in [
            ["kpl", "--rate-limit", "fast"],
            ["kpl", "--metrics-level", "loud"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        let cli = Cli::try_parse_from(["kpl", "--max-connections", "1000"]).unwrap();
        let err = cli.producer.config().unwrap_err().to_string();
        assert!(err.contains("MaxConnections"), "{err}");
    }
}

//! Export settings: the `--honeycomb-*` flags, Honeycomb's own environment variable names, and
//! the `[honeycomb]` table of the config file, over defaults modelled on libhoney's.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{parse_duration, ConfigError};

/// Honeycomb's documented batch body cap, as libhoney-go and Refinery apply it.
pub const MAX_BATCH_BYTES: usize = 5_000_000;
/// Honeycomb's per-event cap (uncompressed JSON).
pub const MAX_EVENT_BYTES: usize = 1_000_000;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct HoneycombArgs {
    /// Honeycomb ingest key (or configuration key with Send Events); enables export. Prefer
    /// --honeycomb-api-key-file.
    #[arg(long, env = "HONEYCOMB_API_KEY", hide_env_values = true)]
    pub honeycomb_api_key: Option<String>,
    /// File holding the Honeycomb key (a mounted Secret); re-read when Honeycomb refuses the key.
    #[arg(long, env = "HONEYCOMB_API_KEY_FILE")]
    pub honeycomb_api_key_file: Option<PathBuf>,
    /// Dataset for every event, or the fallback in per-service mode [default: flagger-metrics].
    #[arg(long, env = "HONEYCOMB_DATASET")]
    pub honeycomb_dataset: Option<String>,
    /// Events API base URL [default: https://api.honeycomb.io].
    #[arg(long, env = "HONEYCOMB_BASE_URL")]
    pub honeycomb_base_url: Option<String>,
    /// single (one dataset) or per-service (dataset = service.name) [default: single].
    #[arg(long, env = "WAGGLE_HONEYCOMB_DATASET_MODE")]
    pub honeycomb_dataset_mode: Option<String>,
    /// Body encoding: zstd, gzip or none [default: zstd].
    #[arg(long, env = "WAGGLE_HONEYCOMB_COMPRESSION")]
    pub honeycomb_compression: Option<String>,
    /// Events per batch before it is sent [default: 5000]; batches also close at 5 MB.
    #[arg(long, env = "WAGGLE_HONEYCOMB_BATCH_EVENTS")]
    pub honeycomb_batch_events: Option<usize>,
    /// Longest an event waits in an open batch [default: 500ms].
    #[arg(long, env = "WAGGLE_HONEYCOMB_FLUSH_INTERVAL")]
    pub honeycomb_flush_interval: Option<String>,
    /// Batches sent concurrently [default: 8].
    #[arg(long, env = "WAGGLE_HONEYCOMB_MAX_IN_FLIGHT")]
    pub honeycomb_max_in_flight: Option<usize>,
    /// Most events held for export; beyond it new events are dropped and counted [default: 200000].
    #[arg(long, env = "WAGGLE_HONEYCOMB_QUEUE_EVENTS")]
    pub honeycomb_queue_events: Option<usize>,
    /// Most bytes held for export, as received [default: 268435456].
    #[arg(long, env = "WAGGLE_HONEYCOMB_QUEUE_BYTES")]
    pub honeycomb_queue_bytes: Option<usize>,
    /// Per-request timeout [default: 30s].
    #[arg(long, env = "WAGGLE_HONEYCOMB_TIMEOUT")]
    pub honeycomb_timeout: Option<String>,
    /// First retry delay; doubles per attempt, with jitter [default: 250ms].
    #[arg(long, env = "WAGGLE_HONEYCOMB_RETRY_INITIAL")]
    pub honeycomb_retry_initial: Option<String>,
    /// Longest retry delay [default: 30s].
    #[arg(long, env = "WAGGLE_HONEYCOMB_RETRY_MAX")]
    pub honeycomb_retry_max: Option<String>,
    /// How long shutdown waits for queued events to be delivered [default: 10s].
    #[arg(long, env = "WAGGLE_HONEYCOMB_DRAIN_TIMEOUT")]
    pub honeycomb_drain_timeout: Option<String>,
    /// How often a refused key is checked again with GET /1/auth [default: 60s].
    #[arg(long, env = "WAGGLE_HONEYCOMB_AUTH_RECHECK")]
    pub honeycomb_auth_recheck: Option<String>,
    /// Sample rates: `N` for every service, `service=N` for one; repeatable or comma-separated.
    #[arg(long, env = "WAGGLE_HONEYCOMB_SAMPLE_RATE", value_delimiter = ',')]
    pub honeycomb_sample_rate: Vec<String>,
}

/// The `[honeycomb]` table of the config file: the flag names without `honeycomb_`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoneycombFile {
    api_key_file: Option<PathBuf>,
    dataset: Option<String>,
    base_url: Option<String>,
    dataset_mode: Option<String>,
    compression: Option<String>,
    batch_events: Option<usize>,
    flush_interval: Option<String>,
    max_in_flight: Option<usize>,
    queue_events: Option<usize>,
    queue_bytes: Option<usize>,
    timeout: Option<String>,
    retry_initial: Option<String>,
    retry_max: Option<String>,
    drain_timeout: Option<String>,
    auth_recheck: Option<String>,
    #[serde(default)]
    sample_rate: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Gzip,
    None,
}

impl Compression {
    pub fn header(self) -> Option<&'static str> {
        match self {
            Compression::Zstd => Some("zstd"),
            Compression::Gzip => Some("gzip"),
            Compression::None => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetMode {
    Single,
    PerService,
}

/// Where the key comes from. A file is re-read when Honeycomb refuses the key, so a rotated
/// Secret takes effect without a restart.
#[derive(Clone)]
pub enum KeySource {
    Literal(String),
    File(PathBuf),
}

impl std::fmt::Debug for KeySource {
    // Hand-written: the key must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Literal(_) => f.write_str("Literal(<redacted>)"),
            KeySource::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl KeySource {
    pub fn read(&self) -> Result<String, String> {
        let key = match self {
            KeySource::Literal(k) => k.trim().to_owned(),
            KeySource::File(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?
                .trim()
                .to_owned(),
        };
        if key.is_empty() {
            return Err("the Honeycomb key is empty".into());
        }
        if key.chars().any(|c| c.is_control() || c == ' ') {
            return Err("the Honeycomb key contains spaces or control characters".into());
        }
        Ok(key)
    }
}

/// Per-service sample rates: keep one event in N, and tell Honeycomb N.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRates {
    pub default: u32,
    pub per_service: HashMap<String, u32>,
}

impl Default for SampleRates {
    fn default() -> Self {
        Self {
            default: 1,
            per_service: HashMap::new(),
        }
    }
}

impl SampleRates {
    pub fn parse(specs: &[String]) -> Result<Self, String> {
        let mut out = Self::default();
        for spec in specs.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let (service, n) = match spec.rsplit_once('=') {
                Some((s, n)) => (Some(s.trim()), n.trim()),
                None => (None, spec),
            };
            let rate: u32 = n.parse().ok().filter(|r| *r >= 1).ok_or_else(|| {
                format!("{spec:?}: a sample rate is a whole number of at least 1")
            })?;
            match service {
                Some("") => return Err(format!("{spec:?}: the service name is empty")),
                Some(s) => {
                    out.per_service.insert(s.to_owned(), rate);
                }
                None => out.default = rate,
            }
        }
        Ok(out)
    }

    pub fn rate(&self, service: &str) -> u32 {
        self.per_service
            .get(service)
            .copied()
            .unwrap_or(self.default)
    }
}

#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub key: KeySource,
    pub base_url: String,
    pub dataset: String,
    pub mode: DatasetMode,
    pub compression: Compression,
    pub batch_events: usize,
    pub flush_interval: Duration,
    pub max_in_flight: usize,
    pub queue_events: usize,
    pub queue_bytes: usize,
    pub timeout: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub drain_timeout: Duration,
    pub auth_recheck: Duration,
    pub sample_rates: SampleRates,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn dur(
    field: &'static str,
    flag: &Option<String>,
    file: &Option<String>,
    default: &str,
) -> Result<Duration, ConfigError> {
    parse_duration(flag.as_deref().or(file.as_deref()).unwrap_or(default))
        .map_err(|r| invalid(field, r))
}

impl HoneycombArgs {
    /// The API base, shared by export and the query mode.
    pub fn base_url(&self, file: &HoneycombFile) -> String {
        self.honeycomb_base_url
            .clone()
            .or(file.base_url.clone())
            .unwrap_or_else(|| "https://api.honeycomb.io".into())
    }

    pub fn dataset(&self, file: &HoneycombFile) -> Option<String> {
        self.honeycomb_dataset.clone().or(file.dataset.clone())
    }

    /// `None` when no key is configured: export is off.
    pub fn resolve(&self, file: &HoneycombFile) -> Result<Option<ExportSettings>, ConfigError> {
        let key = match (&self.honeycomb_api_key, &self.honeycomb_api_key_file) {
            (Some(k), _) => KeySource::Literal(k.clone()),
            (None, Some(p)) => KeySource::File(p.clone()),
            (None, None) => match &file.api_key_file {
                Some(p) => KeySource::File(p.clone()),
                None => return Ok(None),
            },
        };
        key.read().map_err(|r| invalid("honeycomb_api_key", r))?;
        let base_url = self
            .honeycomb_base_url
            .clone()
            .or(file.base_url.clone())
            .unwrap_or_else(|| "https://api.honeycomb.io".into());
        let base_url = base_url.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(invalid(
                "honeycomb_base_url",
                format!("{base_url:?} is not an http(s) URL"),
            ));
        }
        let dataset = self
            .honeycomb_dataset
            .clone()
            .or(file.dataset.clone())
            .unwrap_or_else(|| "flagger-metrics".into())
            .trim()
            .to_owned();
        if dataset.is_empty() || dataset.len() > 255 || dataset.contains('/') {
            return Err(invalid(
                "honeycomb_dataset",
                format!("{dataset:?} must be 1 to 255 characters without '/'"),
            ));
        }
        let mode = match self
            .honeycomb_dataset_mode
            .as_deref()
            .or(file.dataset_mode.as_deref())
            .unwrap_or("single")
        {
            "single" => DatasetMode::Single,
            "per-service" => DatasetMode::PerService,
            other => {
                return Err(invalid(
                    "honeycomb_dataset_mode",
                    format!("{other:?} is neither single nor per-service"),
                ))
            }
        };
        let compression = match self
            .honeycomb_compression
            .as_deref()
            .or(file.compression.as_deref())
            .unwrap_or("zstd")
        {
            "zstd" => Compression::Zstd,
            "gzip" => Compression::Gzip,
            "none" => Compression::None,
            other => {
                return Err(invalid(
                    "honeycomb_compression",
                    format!("{other:?} is not zstd, gzip or none"),
                ))
            }
        };
        let positive = |field: &'static str, v: Option<usize>, default: usize| {
            let v = v.unwrap_or(default);
            if v == 0 {
                Err(invalid(field, "must be at least 1"))
            } else {
                Ok(v)
            }
        };
        let batch_events = positive(
            "honeycomb_batch_events",
            self.honeycomb_batch_events.or(file.batch_events),
            5000,
        )?;
        let max_in_flight = positive(
            "honeycomb_max_in_flight",
            self.honeycomb_max_in_flight.or(file.max_in_flight),
            8,
        )?;
        if max_in_flight > 1024 {
            return Err(invalid("honeycomb_max_in_flight", "must be at most 1024"));
        }
        let queue_events = positive(
            "honeycomb_queue_events",
            self.honeycomb_queue_events.or(file.queue_events),
            200_000,
        )?;
        let queue_bytes = positive(
            "honeycomb_queue_bytes",
            self.honeycomb_queue_bytes.or(file.queue_bytes),
            256 << 20,
        )?;
        let flush_interval = dur(
            "honeycomb_flush_interval",
            &self.honeycomb_flush_interval,
            &file.flush_interval,
            "500ms",
        )?;
        if flush_interval.is_zero() {
            return Err(invalid("honeycomb_flush_interval", "must be positive"));
        }
        let retry_initial = dur(
            "honeycomb_retry_initial",
            &self.honeycomb_retry_initial,
            &file.retry_initial,
            "250ms",
        )?;
        let retry_max = dur(
            "honeycomb_retry_max",
            &self.honeycomb_retry_max,
            &file.retry_max,
            "30s",
        )?;
        if retry_initial.is_zero() || retry_max < retry_initial {
            return Err(invalid(
                "honeycomb_retry_max",
                "retry delays must be positive, and the maximum at least the initial",
            ));
        }
        let specs = if self.honeycomb_sample_rate.is_empty() {
            &file.sample_rate
        } else {
            &self.honeycomb_sample_rate
        };
        let sample_rates =
            SampleRates::parse(specs).map_err(|r| invalid("honeycomb_sample_rate", r))?;
        Ok(Some(ExportSettings {
            key,
            base_url,
            dataset,
            mode,
            compression,
            batch_events,
            flush_interval,
            max_in_flight,
            queue_events,
            queue_bytes,
            timeout: dur(
                "honeycomb_timeout",
                &self.honeycomb_timeout,
                &file.timeout,
                "30s",
            )?,
            retry_initial,
            retry_max,
            drain_timeout: dur(
                "honeycomb_drain_timeout",
                &self.honeycomb_drain_timeout,
                &file.drain_timeout,
                "10s",
            )?,
            auth_recheck: dur(
                "honeycomb_auth_recheck",
                &self.honeycomb_auth_recheck,
                &file.auth_recheck,
                "60s",
            )?,
            sample_rates,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_is_off_without_a_key_and_defaults_follow_libhoney() {
        assert!(HoneycombArgs::default()
            .resolve(&HoneycombFile::default())
            .unwrap()
            .is_none());
        let s = HoneycombArgs {
            honeycomb_api_key: Some("hcaik_x".into()),
            ..HoneycombArgs::default()
        }
        .resolve(&HoneycombFile::default())
        .unwrap()
        .unwrap();
        assert_eq!(s.base_url, "https://api.honeycomb.io");
        assert_eq!(s.dataset, "flagger-metrics");
        assert_eq!(s.compression, Compression::Zstd);
        assert_eq!(s.flush_interval, Duration::from_millis(500));
        assert!(!format!("{s:?}").contains("hcaik_x"), "the key is redacted");
    }

    #[test]
    fn bad_values_name_their_setting() {
        let with = |f: fn(&mut HoneycombArgs)| {
            let mut a = HoneycombArgs {
                honeycomb_api_key: Some("k".into()),
                ..HoneycombArgs::default()
            };
            f(&mut a);
            a.resolve(&HoneycombFile::default())
                .unwrap_err()
                .to_string()
        };
        type Case = (fn(&mut HoneycombArgs), &'static str);
        let cases: [Case; 7] = [
            (
                |a| a.honeycomb_compression = Some("lz4".into()),
                "honeycomb_compression",
            ),
            (
                |a| a.honeycomb_dataset_mode = Some("each".into()),
                "honeycomb_dataset_mode",
            ),
            (
                |a| a.honeycomb_batch_events = Some(0),
                "honeycomb_batch_events",
            ),
            (
                |a| a.honeycomb_base_url = Some("api.honeycomb.io".into()),
                "honeycomb_base_url",
            ),
            (
                |a| a.honeycomb_sample_rate = vec!["web=0".into()],
                "honeycomb_sample_rate",
            ),
            (
                |a| a.honeycomb_api_key = Some("  ".into()),
                "honeycomb_api_key",
            ),
            (
                |a| a.honeycomb_dataset = Some("a/b".into()),
                "honeycomb_dataset",
            ),
        ];
        for (f, field) in cases {
            let e = with(f);
            assert!(e.starts_with(field), "{e}");
        }
    }

    #[test]
    fn sample_rates() {
        let r = SampleRates::parse(&["10".into(), "checkout=2".into(), " ".into()]).unwrap();
        assert_eq!((r.rate("checkout"), r.rate("other")), (2, 10));
        assert!(SampleRates::parse(&["=3".into()]).is_err());
        assert!(SampleRates::parse(&["x=1.5".into()]).is_err());
    }
}

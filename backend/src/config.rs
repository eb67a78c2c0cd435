//! `waggle serve` settings: flags, environment variables and an optional TOML file, in that
//! order of precedence, over built-in defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::families::{self, Family, FamilyConfig};
use crate::honeycomb::query::{QueryArgs, QuerySettings};
use crate::honeycomb::settings::{ExportSettings, HoneycombArgs, HoneycombFile};
use crate::store::Limits;

pub mod server;

pub use server::{ServerArgs, ServerSettings};

/// Flags and environment variables. Every field is optional so a file or default can fill it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML file with any of these settings (and extra metric families).
    #[arg(long, env = "WAGGLE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Prometheus API, health and self-metrics address [default: 0.0.0.0:9090, or 0.0.0.0:$PORT].
    #[arg(long, env = "WAGGLE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Ingest address for /v1/events and /api/v1/write; may equal --listen [default: 0.0.0.0:9091].
    #[arg(long, env = "WAGGLE_INGEST_LISTEN")]
    pub ingest_listen: Option<SocketAddr>,
    /// Grid step of mesh-derived series [default: 1s].
    #[arg(long, env = "WAGGLE_RESOLUTION")]
    pub resolution: Option<String>,
    /// How long samples are kept [default: 1h].
    #[arg(long, env = "WAGGLE_RETENTION")]
    pub retention: Option<String>,
    /// A mesh series with no events for this long ends with a stale marker [default: 5m].
    #[arg(long, env = "WAGGLE_STALE_AFTER")]
    pub stale_after: Option<String>,
    /// Most series held; new ones beyond it are refused and counted [default: 500000].
    #[arg(long, env = "WAGGLE_MAX_SERIES")]
    pub max_series: Option<usize>,
    /// Most remote-written samples kept per series [default: 100000].
    #[arg(long, env = "WAGGLE_MAX_SAMPLES_PER_SERIES")]
    pub max_samples_per_series: Option<usize>,
    /// Longest a query may run [default: 30s].
    #[arg(long, env = "WAGGLE_QUERY_TIMEOUT")]
    pub query_timeout: Option<String>,
    /// Most samples one query may load [default: 50000000].
    #[arg(long, env = "WAGGLE_QUERY_MAX_SAMPLES")]
    pub query_max_samples: Option<usize>,
    /// Instant-vector lookback [default: 5m].
    #[arg(long, env = "WAGGLE_LOOKBACK_DELTA")]
    pub lookback_delta: Option<String>,
    /// Step of subqueries without one [default: 1m].
    #[arg(long, env = "WAGGLE_SUBQUERY_STEP")]
    pub subquery_step: Option<String>,
    /// Bearer token required on ingest endpoints (prefer --ingest-token-file).
    #[arg(long, env = "WAGGLE_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,
    /// File holding the ingest bearer token (a mounted Secret).
    #[arg(long, env = "WAGGLE_INGEST_TOKEN_FILE")]
    pub ingest_token_file: Option<PathBuf>,
    /// Largest ingest request body [default: 8388608].
    #[arg(long, env = "WAGGLE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Directory for the write-ahead log and checkpoints; without it everything is in memory
    /// only and a restart starts empty.
    #[arg(long, env = "WAGGLE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// How often the whole store is checkpointed to --data-dir [default: 10s].
    #[arg(long, env = "WAGGLE_SNAPSHOT_INTERVAL")]
    pub snapshot_interval: Option<String>,
    /// Log filter, e.g. info or waggle=debug [default: info].
    #[arg(long, env = "LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "WAGGLE_LOG_FORMAT")]
    pub log_format: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub remote_write: crate::remote_write::RemoteWriteArgs,
    #[command(flatten)]
    pub honeycomb: HoneycombArgs,
    #[command(flatten)]
    pub honeycomb_query: QueryArgs,
}

/// The file form: the same names as the flags, with underscores, plus `[[families]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    ingest_listen: Option<SocketAddr>,
    resolution: Option<String>,
    retention: Option<String>,
    stale_after: Option<String>,
    max_series: Option<usize>,
    max_samples_per_series: Option<usize>,
    query_timeout: Option<String>,
    query_max_samples: Option<usize>,
    lookback_delta: Option<String>,
    subquery_step: Option<String>,
    ingest_token_file: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    data_dir: Option<PathBuf>,
    snapshot_interval: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    query_max_concurrency: Option<usize>,
    max_connections: Option<usize>,
    header_read_timeout: Option<String>,
    body_read_timeout: Option<String>,
    idle_timeout: Option<String>,
    #[serde(default)]
    families: Vec<FamilyConfig>,
    #[serde(default)]
    remote_write: Vec<crate::remote_write::RemoteWriteFile>,
    #[serde(default)]
    external_labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    honeycomb: HoneycombFile,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    Family(#[from] families::FamilyError),
}

/// Resolved settings.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub ingest_listen: SocketAddr,
    pub limits: Limits,
    pub query_timeout: Duration,
    pub query_max_samples: usize,
    pub lookback_ms: i64,
    pub subquery_step_ms: i64,
    pub ingest_token: Option<String>,
    pub max_body_bytes: usize,
    pub log_level: String,
    pub log_json: bool,
    pub families: Vec<Family>,
    pub server: ServerSettings,
    /// Remote-write destinations; none by default.
    pub remote_write: Vec<crate::remote_write::Destination>,
    /// The write-ahead log and checkpoints; off without `--data-dir`.
    pub durable: Option<crate::db::durable::DurableSettings>,
    /// Honeycomb export; off when no key is configured.
    pub honeycomb: Option<ExportSettings>,
    /// The Honeycomb query mode; off when no query key is configured.
    pub honeycomb_query: Option<QuerySettings>,
}

impl std::fmt::Debug for Settings {
    // Hand-written so the ingest token can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("ingest_listen", &self.ingest_listen)
            .field("limits", &self.limits)
            .field("query_timeout", &self.query_timeout)
            .field("ingest_token", &self.ingest_token.as_ref().map(|_| "<set>"))
            .field("families", &self.families.len())
            .field("remote_write", &self.remote_write)
            .field("durable", &self.durable)
            .field("honeycomb", &self.honeycomb)
            .field(
                "honeycomb_query",
                &self.honeycomb_query.as_ref().map(|q| &q.dataset),
            )
            .finish_non_exhaustive()
    }
}

/// Prometheus durations: `1h30m`, `5m`, `10s`, `250ms`, `2d`, `1w`, `1y`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 500ms, 15s, 5m or 1h");
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u128 = rest
            .get(..digits)
            .and_then(|d| d.parse().ok())
            .ok_or_else(bad)?;
        let rest2 = rest.get(digits..).unwrap_or("");
        let (unit_ms, len) = [
            ("ms", 1u128, 2),
            ("s", 1_000, 1),
            ("m", 60_000, 1),
            ("h", 3_600_000, 1),
            ("d", 86_400_000, 1),
            ("w", 604_800_000, 1),
            ("y", 31_536_000_000, 1),
        ]
        .iter()
        .find(|(u, _, _)| rest2.starts_with(u))
        .map(|(_, ms, l)| (*ms, *l))
        .ok_or_else(bad)?;
        total = total.saturating_add(n.saturating_mul(unit_ms));
        rest = rest2.get(len..).unwrap_or("");
    }
    Ok(Duration::from_millis(
        u64::try_from(total).map_err(|_| bad())?,
    ))
}

pub(crate) fn duration(
    field: &'static str,
    flag: &Option<String>,
    file: &Option<String>,
    default: &str,
) -> Result<Duration, ConfigError> {
    let s = flag.as_deref().or(file.as_deref()).unwrap_or(default);
    parse_duration(s).map_err(|reason| ConfigError::Invalid { field, reason })
}

impl ServeArgs {
    /// Merges flags and environment (already combined by clap) over the file over defaults.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        let port_default = std::env::var("PORT")
            .ok()
            .and_then(|p| p.parse::<u16>().ok())
            .map(|p| SocketAddr::from(([0, 0, 0, 0], p)));
        let listen = self
            .listen
            .or(file.listen)
            .or(port_default)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 9090)));
        let ingest_listen = self
            .ingest_listen
            .or(file.ingest_listen)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 9091)));
        let resolution = duration("resolution", &self.resolution, &file.resolution, "1s")?;
        let retention = duration("retention", &self.retention, &file.retention, "1h")?;
        let stale_after = duration("stale_after", &self.stale_after, &file.stale_after, "5m")?;
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        if resolution < Duration::from_millis(100) || resolution > Duration::from_secs(60) {
            return Err(ConfigError::Invalid {
                field: "resolution",
                reason: format!("{resolution:?} is outside 100ms to 1m"),
            });
        }
        if retention < resolution * 2 {
            return Err(ConfigError::Invalid {
                field: "retention",
                reason: "must hold at least two resolution steps".into(),
            });
        }
        if stale_after < resolution {
            return Err(ConfigError::Invalid {
                field: "stale_after",
                reason: "must be at least one resolution step".into(),
            });
        }
        let max_series = self
            .max_series
            .or(file.max_series)
            .unwrap_or(crate::store::DEFAULT_MAX_SERIES);
        if max_series == 0 {
            return Err(ConfigError::Invalid {
                field: "max_series",
                reason: "must be at least 1".into(),
            });
        }
        let token_file = self.ingest_token_file.clone().or(file.ingest_token_file);
        let ingest_token = match (&self.ingest_token, token_file) {
            (Some(t), _) => Some(t.trim().to_owned()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| ConfigError::Invalid {
                        field: "ingest_token_file",
                        reason: format!("{}: {e}", path.display()),
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        if ingest_token.as_deref() == Some("") {
            return Err(ConfigError::Invalid {
                field: "ingest_token",
                reason: "is empty".into(),
            });
        }
        let families = families::with_configured(families::builtin(), &file.families)?;
        let log_format = self
            .log_format
            .clone()
            .or(file.log_format)
            .unwrap_or_else(|| "text".into());
        if log_format != "text" && log_format != "json" {
            return Err(ConfigError::Invalid {
                field: "log_format",
                reason: format!("{log_format:?} is neither text nor json"),
            });
        }
        let server = self.server.resolve(&server::ServerFile {
            query_max_concurrency: file.query_max_concurrency,
            max_connections: file.max_connections,
            header_read_timeout: file.header_read_timeout.clone(),
            body_read_timeout: file.body_read_timeout.clone(),
            idle_timeout: file.idle_timeout.clone(),
        })?;
        let snapshot_interval = duration(
            "snapshot_interval",
            &self.snapshot_interval,
            &file.snapshot_interval,
            "10s",
        )?;
        if snapshot_interval < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                field: "snapshot_interval",
                reason: "must be at least 1s".into(),
            });
        }
        let durable = self.data_dir.clone().or(file.data_dir.clone()).map(|dir| {
            crate::db::durable::DurableSettings {
                dir,
                snapshot_interval,
            }
        });
        let remote_write =
            self.remote_write
                .resolve(&file.remote_write, &file.external_labels, ms(resolution))?;
        let honeycomb = self.honeycomb.resolve(&file.honeycomb)?;
        let honeycomb_query = self.honeycomb_query.resolve(
            &self.honeycomb.base_url(&file.honeycomb),
            self.honeycomb.dataset(&file.honeycomb).as_deref(),
        )?;
        Ok(Settings {
            listen,
            ingest_listen,
            limits: Limits {
                resolution_ms: ms(resolution),
                retention_ms: ms(retention),
                stale_after_ms: ms(stale_after),
                max_series,
                max_samples_per_series: self
                    .max_samples_per_series
                    .or(file.max_samples_per_series)
                    .unwrap_or(100_000),
            },
            query_timeout: duration(
                "query_timeout",
                &self.query_timeout,
                &file.query_timeout,
                "30s",
            )?,
            query_max_samples: self
                .query_max_samples
                .or(file.query_max_samples)
                .unwrap_or(50_000_000),
            lookback_ms: ms(duration(
                "lookback_delta",
                &self.lookback_delta,
                &file.lookback_delta,
                "5m",
            )?),
            subquery_step_ms: ms(duration(
                "subquery_step",
                &self.subquery_step,
                &file.subquery_step,
                "1m",
            )?)
            .max(1),
            ingest_token,
            max_body_bytes: self
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(8 << 20),
            log_level: self
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            log_json: log_format == "json",
            families,
            server,
            remote_write,
            durable,
            honeycomb,
            honeycomb_query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "5", "m", "5x", "1.5s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_work_with_no_arguments() {
        let s = ServeArgs::default().resolve().unwrap();
        assert_eq!(s.limits.resolution_ms, 1000);
        assert_eq!(s.limits.retention_ms, 3_600_000);
        assert_eq!(s.ingest_listen.port(), 9091);
        assert_eq!(s.families.len(), families::builtin().len());
    }

    #[test]
    fn flags_win_over_the_file_and_errors_name_the_field() {
        let dir = std::env::temp_dir().join(format!("waggle-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.toml");
        std::fs::write(&path, "retention = \"2h\"\nresolution = \"2s\"\n[[families]]\nname = \"x_total\"\nkind = \"counter\"\nlabels = { svc = \"destination_canonical_service\" }\n").unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            retention: Some("30m".into()),
            ..ServeArgs::default()
        };
        let s = args.resolve().unwrap();
        assert_eq!(s.limits.retention_ms, 1_800_000, "the flag wins");
        assert_eq!(
            s.limits.resolution_ms, 2_000,
            "the file fills what flags leave"
        );
        assert_eq!(s.families.last().unwrap().name, "x_total");
        let cases = [
            (
                ServeArgs {
                    resolution: Some("10ms".into()),
                    ..ServeArgs::default()
                },
                "resolution",
            ),
            (
                ServeArgs {
                    retention: Some("forever".into()),
                    ..ServeArgs::default()
                },
                "retention",
            ),
            (
                ServeArgs {
                    max_series: Some(0),
                    ..ServeArgs::default()
                },
                "max_series",
            ),
            (
                ServeArgs {
                    log_format: Some("xml".into()),
                    ..ServeArgs::default()
                },
                "log_format",
            ),
        ];
        for (a, field) in cases {
            let e = a.resolve().unwrap_err().to_string();
            assert!(e.starts_with(field), "{e}");
        }
        std::fs::write(&path, "retension = \"2h\"\n").unwrap();
        let e = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `retension`"), "{e}");
        // A built-in family is redefined only when the file says so.
        let redefine = "[[families]]\nname = \"envoy_cluster_upstream_rq\"\nkind = \"counter\"\nmesh = \"kuma\"\nlabels = { svc = \"local_service\" }\n";
        let file = |extra: &str| {
            std::fs::write(&path, format!("{redefine}{extra}")).unwrap();
            ServeArgs {
                config: Some(path.clone()),
                ..ServeArgs::default()
            }
            .resolve()
        };
        let e = file("").unwrap_err().to_string();
        assert!(
            e.contains("\"envoy_cluster_upstream_rq\": is defined twice"),
            "{e}"
        );
        let s = file("replace = true\n").unwrap();
        assert_eq!(s.families.len(), families::builtin().len());
        assert!(s
            .families
            .iter()
            .any(|f| f.name == "envoy_cluster_upstream_rq" && f.labels.len() == 1));
    }
}

//! Remote-write settings: `[[remote_write]]` tables (Prometheus 2.42's names and defaults),
//! `--remote-write-url` for the simple case, and external labels (global and per destination,
//! with `waggle_replica` added by default so that replicas' shards never collide).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{parse_duration, ConfigError};

/// The label added by default with remote write on: the pod (host) name, so that each
/// replica's share of a series is its own series in the TSDB.
pub const REPLICA_LABEL: &str = "waggle_replica";

/// Headers a user may not set, as Prometheus 2.42 refuses them (`config.reservedHeaders`).
const RESERVED: [&str; 13] = [
    "host",
    "content-encoding",
    "content-length",
    "content-type",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "www-authenticate",
    "accept-encoding",
    "x-prometheus-remote-write-version",
    "x-prometheus-remote-read-version",
];

#[derive(Debug, Clone, Default, clap::Args)]
pub struct RemoteWriteArgs {
    /// Remote-write every mesh-derived series to this receiver (repeatable); more settings in
    /// `[[remote_write]]` tables of the config file.
    #[arg(
        long = "remote-write-url",
        env = "WAGGLE_REMOTE_WRITE_URL",
        value_delimiter = ','
    )]
    pub urls: Vec<String>,
    /// A label added to every series written out, `NAME=VALUE` (repeatable). With remote write
    /// on, `waggle_replica=$HOSTNAME` is added unless set here (an empty value removes it).
    #[arg(
        long = "external-label",
        env = "WAGGLE_EXTERNAL_LABELS",
        value_delimiter = ','
    )]
    pub external_labels: Vec<String>,
}

/// One `[[remote_write]]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteFile {
    pub url: String,
    pub name: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub bearer_token_file: Option<PathBuf>,
    pub basic_auth: Option<BasicAuthFile>,
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    pub remote_timeout: Option<String>,
    pub resolution: Option<String>,
    #[serde(default)]
    pub include_received: bool,
    #[serde(default)]
    pub queue_config: QueueFile,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthFile {
    pub username: String,
    pub password_file: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueFile {
    pub capacity: Option<usize>,
    pub max_shards: Option<usize>,
    pub max_samples_per_send: Option<usize>,
    pub batch_send_deadline: Option<String>,
    pub min_backoff: Option<String>,
    pub max_backoff: Option<String>,
    pub retry_on_http_429: Option<bool>,
}

/// How a destination authenticates; the secret stays in its file until a request needs it.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Bearer(PathBuf),
    Basic {
        username: String,
        password_file: PathBuf,
    },
}

impl std::fmt::Debug for Auth {
    // No secret is ever held here, but say so plainly where settings are logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => write!(f, "none"),
            Auth::Bearer(p) => write!(f, "bearer token from {}", p.display()),
            Auth::Basic {
                username,
                password_file,
            } => {
                write!(
                    f,
                    "basic auth as {username}, password from {}",
                    password_file.display()
                )
            }
        }
    }
}

/// Prometheus 2.42's `queue_config`, the same names and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    pub capacity: usize,
    pub max_shards: usize,
    pub max_samples_per_send: usize,
    pub batch_send_deadline: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub retry_on_http_429: bool,
}

impl Default for Queue {
    fn default() -> Self {
        Self {
            capacity: 2500,
            max_shards: 200,
            max_samples_per_send: 500,
            batch_send_deadline: Duration::from_secs(5),
            min_backoff: Duration::from_millis(30),
            max_backoff: Duration::from_secs(5),
            retry_on_http_429: false,
        }
    }
}

impl Queue {
    /// Samples held for a destination at most: its backlog beyond this is dropped, oldest
    /// first (Prometheus's queue holds `capacity` per shard).
    pub fn max_pending(&self) -> usize {
        self.capacity.saturating_mul(self.max_shards)
    }
}

/// One destination, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub name: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub auth: Auth,
    /// Sorted by name; merged under each series' own labels.
    pub external_labels: Vec<(String, String)>,
    pub remote_timeout: Duration,
    pub resolution_ms: i64,
    pub include_received: bool,
    pub queue: Queue,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn duration(
    field: &'static str,
    v: &Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        Some(s) => parse_duration(s).map_err(|r| invalid(field, r)),
        None => Ok(default),
    }
}

/// `NAME=VALUE` pairs into a map, names checked.
fn label_pairs(
    field: &'static str,
    pairs: &[String],
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let (n, v) = p
            .split_once('=')
            .ok_or_else(|| invalid(field, format!("{p:?} is not NAME=VALUE")))?;
        if !crate::families::is_label_name(n) || n.starts_with("__") {
            return Err(invalid(
                field,
                format!("{n:?} is not a label name waggle may add"),
            ));
        }
        out.insert(n.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// This pod's name: `$HOSTNAME` (set by Kubernetes), else the kernel's host name.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

impl RemoteWriteArgs {
    /// Destinations from the flags and the file's tables; `global` are the file's
    /// top-level `external_labels`.
    pub fn resolve(
        &self,
        tables: &[RemoteWriteFile],
        global: &BTreeMap<String, String>,
        store_resolution_ms: i64,
    ) -> Result<Vec<Destination>, ConfigError> {
        let mut all: Vec<RemoteWriteFile> = self
            .urls
            .iter()
            .filter(|u| !u.is_empty())
            .map(|u| RemoteWriteFile {
                url: u.clone(),
                ..RemoteWriteFile::default()
            })
            .collect();
        all.extend(tables.iter().cloned());
        if all.is_empty() {
            return Ok(Vec::new());
        }
        let mut external = global.clone();
        external
            .entry(REPLICA_LABEL.into())
            .or_insert_with(hostname);
        external.extend(label_pairs("external_labels", &self.external_labels)?);
        let mut out: Vec<Destination> = Vec::new();
        for t in all {
            let d = destination(t, &external, store_resolution_ms)?;
            if out.iter().any(|o| o.name == d.name) {
                return Err(invalid(
                    "remote_write",
                    format!(
                        "two destinations are named {:?}; give each a distinct name",
                        d.name
                    ),
                ));
            }
            out.push(d);
        }
        Ok(out)
    }
}

fn destination(
    t: RemoteWriteFile,
    external: &BTreeMap<String, String>,
    store_resolution_ms: i64,
) -> Result<Destination, ConfigError> {
    let url = reqwest::Url::parse(&t.url)
        .map_err(|e| invalid("remote_write.url", format!("{:?}: {e}", t.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            "remote_write.url",
            format!("{:?} is not http or https", t.url),
        ));
    }
    for name in t.headers.keys() {
        let lower = name.to_ascii_lowercase();
        if RESERVED.contains(&lower.as_str()) || lower.starts_with("x-amz-") {
            return Err(invalid(
                "remote_write.headers",
                format!("{name} is a reserved header. It must not be changed"),
            ));
        }
        if lower == "authorization" {
            return Err(invalid("remote_write.headers", "authorization header must be changed via the basic_auth or bearer_token_file parameter"));
        }
    }
    let auth = match (t.bearer_token_file, t.basic_auth) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "remote_write",
                "set bearer_token_file or basic_auth, not both",
            ))
        }
        (Some(p), None) => Auth::Bearer(p),
        (None, Some(b)) => Auth::Basic {
            username: b.username,
            password_file: b.password_file,
        },
        (None, None) => Auth::None,
    };
    let mut labels = external.clone();
    labels.extend(t.external_labels);
    for n in labels.keys() {
        if !crate::families::is_label_name(n) || n.starts_with("__") {
            return Err(invalid(
                "external_labels",
                format!("{n:?} is not a label name waggle may add"),
            ));
        }
    }
    let resolution = duration(
        "remote_write.resolution",
        &t.resolution,
        Duration::from_millis(store_resolution_ms as u64),
    )?;
    let resolution_ms = resolution.as_millis() as i64;
    if resolution_ms < store_resolution_ms || resolution_ms % store_resolution_ms != 0 {
        return Err(invalid(
            "remote_write.resolution",
            format!("{resolution:?} must be a whole multiple of --resolution ({store_resolution_ms} ms)"),
        ));
    }
    let d = Queue::default();
    let q = &t.queue_config;
    let queue = Queue {
        capacity: q.capacity.unwrap_or(d.capacity).max(1),
        max_shards: q.max_shards.unwrap_or(d.max_shards).max(1),
        max_samples_per_send: q
            .max_samples_per_send
            .unwrap_or(d.max_samples_per_send)
            .max(1),
        batch_send_deadline: duration(
            "queue_config.batch_send_deadline",
            &q.batch_send_deadline,
            d.batch_send_deadline,
        )?,
        min_backoff: duration("queue_config.min_backoff", &q.min_backoff, d.min_backoff)?,
        max_backoff: duration("queue_config.max_backoff", &q.max_backoff, d.max_backoff)?,
        retry_on_http_429: q.retry_on_http_429.unwrap_or(d.retry_on_http_429),
    };
    if queue.max_backoff < queue.min_backoff {
        return Err(invalid(
            "queue_config.max_backoff",
            "must not be shorter than min_backoff",
        ));
    }
    Ok(Destination {
        name: t.name.unwrap_or_else(|| t.url.clone()),
        url: t.url,
        headers: t.headers.into_iter().collect(),
        auth,
        // An empty value removes a label (`--external-label waggle_replica=`).
        external_labels: labels.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
        remote_timeout: duration(
            "remote_write.remote_timeout",
            &t.remote_timeout,
            Duration::from_secs(30),
        )?,
        resolution_ms,
        include_received: t.include_received,
        queue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(url: &str) -> RemoteWriteFile {
        RemoteWriteFile {
            url: url.into(),
            ..RemoteWriteFile::default()
        }
    }

    #[test]
    fn defaults_are_prometheus_2_42s_and_the_replica_label_is_added() {
        let args = RemoteWriteArgs {
            urls: vec!["http://prom:9090/api/v1/write".into()],
            external_labels: vec!["cluster=eu-1".into()],
        };
        let d = args.resolve(&[], &BTreeMap::new(), 1000).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].queue, Queue::default());
        assert_eq!(d[0].queue.max_pending(), 500_000);
        assert_eq!(d[0].resolution_ms, 1000);
        let names: Vec<&str> = d[0]
            .external_labels
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(
            names,
            ["cluster", REPLICA_LABEL],
            "sorted, the replica label included"
        );
        let off = RemoteWriteArgs {
            urls: vec!["http://prom:9090/api/v1/write".into()],
            external_labels: vec![format!("{REPLICA_LABEL}=")],
        };
        assert!(off.resolve(&[], &BTreeMap::new(), 1000).unwrap()[0]
            .external_labels
            .is_empty());
        assert!(RemoteWriteArgs::default()
            .resolve(&[], &BTreeMap::new(), 1000)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn mistakes_are_named() {
        let args = RemoteWriteArgs::default();
        let cases = [
            (
                RemoteWriteFile {
                    headers: [("Content-Type".to_string(), "x".to_string())].into(),
                    ..table("http://a/")
                },
                "Content-Type is a reserved header",
            ),
            (
                RemoteWriteFile {
                    headers: [("Authorization".to_string(), "x".to_string())].into(),
                    ..table("http://a/")
                },
                "basic_auth or bearer_token_file",
            ),
            (table("ftp://a/"), "not http or https"),
            (
                RemoteWriteFile {
                    resolution: Some("1500ms".into()),
                    ..table("http://a/")
                },
                "whole multiple of --resolution",
            ),
            (
                RemoteWriteFile {
                    external_labels: [("__x".to_string(), "y".to_string())].into(),
                    ..table("http://a/")
                },
                "not a label name",
            ),
        ];
        for (t, want) in cases {
            let e = args
                .resolve(&[t], &BTreeMap::new(), 1000)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
        let e = args
            .resolve(
                &[table("http://a/"), table("http://a/")],
                &BTreeMap::new(),
                1000,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("distinct name"), "{e}");
        let debug = format!(
            "{:?}",
            Auth::Basic {
                username: "u".into(),
                password_file: "/s/p".into()
            }
        );
        assert!(debug.contains("/s/p") && !debug.contains("secret"));
    }
}

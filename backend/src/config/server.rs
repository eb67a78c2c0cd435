//! Capacity settings: connections and their timeouts on both listeners, concurrent queries,
//! and how much ingest may be in memory at once.

use std::time::Duration;

use serde::Deserialize;

use super::{duration, ConfigError};

/// Flags and environment variables.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// Queries evaluated at once; more wait for a slot within their timeout [default: 20].
    #[arg(long, env = "WAGGLE_QUERY_MAX_CONCURRENCY")]
    pub query_max_concurrency: Option<usize>,
    /// Connections each listener holds at once; beyond it new ones wait to be accepted
    /// [default: 10000].
    #[arg(long, env = "WAGGLE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// A client must send a request's headers within this; an HTTP/1 connection waiting
    /// this long for its next request is closed too [default: 30s].
    #[arg(long, env = "WAGGLE_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<String>,
    /// A client must send a request's whole body within this [default: 60s].
    #[arg(long, env = "WAGGLE_BODY_READ_TIMEOUT")]
    pub body_read_timeout: Option<String>,
    /// A connection with no request in progress and no bytes moving for this long is closed
    /// (HTTP/1 and HTTP/2) [default: 5m].
    #[arg(long, env = "WAGGLE_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
}

/// The same, in the config file (top-level keys, like the other settings).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServerFile {
    pub query_max_concurrency: Option<usize>,
    pub max_connections: Option<usize>,
    pub header_read_timeout: Option<String>,
    pub body_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    pub query_max_concurrency: usize,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            query_max_concurrency: 20,
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

impl ServerArgs {
    pub fn resolve(&self, file: &ServerFile) -> Result<ServerSettings, ConfigError> {
        let d = ServerSettings::default();
        let positive = |field: &'static str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(ConfigError::Invalid {
                field,
                reason: "must be at least 1".into(),
            }),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let secs = |d: Duration| format!("{}ms", d.as_millis());
        let timeout = |field, flag: &Option<String>, f: &Option<String>, default: Duration| {
            let t = duration(field, flag, f, &secs(default))?;
            if t.is_zero() {
                return Err(ConfigError::Invalid {
                    field,
                    reason: "must be longer than 0".into(),
                });
            }
            Ok(t)
        };
        Ok(ServerSettings {
            query_max_concurrency: positive(
                "query_max_concurrency",
                self.query_max_concurrency.or(file.query_max_concurrency),
                d.query_max_concurrency,
            )?,
            max_connections: positive(
                "max_connections",
                self.max_connections.or(file.max_connections),
                d.max_connections,
            )?,
            header_read_timeout: timeout(
                "header_read_timeout",
                &self.header_read_timeout,
                &file.header_read_timeout,
                d.header_read_timeout,
            )?,
            body_read_timeout: timeout(
                "body_read_timeout",
                &self.body_read_timeout,
                &file.body_read_timeout,
                d.body_read_timeout,
            )?,
            idle_timeout: timeout(
                "idle_timeout",
                &self.idle_timeout,
                &file.idle_timeout,
                d.idle_timeout,
            )?,
        })
    }
}

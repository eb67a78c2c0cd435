//! The plugin configuration: Istio's `pluginConfig`, which arrives as a JSON string.

use serde::Deserialize;

/// Every option, with its default. Field docs are the user-facing reference (see README).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Envoy cluster that reaches the waggle backend's ingest port.
    pub cluster: String,
    /// `:authority` of the ingest request; defaults to the host part of `cluster`.
    pub authority: Option<String>,
    /// Ingest path on the backend.
    pub path: String,
    /// Bearer token sent with every batch. Prefer `token_env`, which keeps it out of manifests.
    pub token: Option<String>,
    /// Name of a VM environment variable (WasmPlugin `vmConfig.env`) that holds the token.
    pub token_env: Option<String>,
    /// Longest time an event waits in the buffer before its batch is sent (100 to 60000).
    pub flush_interval_ms: u64,
    /// A batch is sent as soon as it holds this many events (1 to 10000).
    pub max_batch_events: usize,
    /// Events held per worker VM, sent or not; beyond this new events are dropped and counted.
    pub max_buffer_events: usize,
    /// Ingest calls outstanding per worker VM (1 to 16).
    pub max_in_flight: usize,
    /// Timeout of one ingest call (100 to 60000).
    pub timeout_ms: u64,
    /// First retry delay after a failed call; doubles per failure up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Record the request path (query string stripped). Off by default: paths can hold ids.
    pub capture_path: bool,
    /// Longest recorded path, in bytes (1 to 2048).
    pub max_path_len: usize,
    /// Read each request's attributes with one CEL expression evaluation (`true`: Envoy's
    /// foreign functions, two host calls per request, falling back by itself where they are
    /// missing) or with property reads (`false`, the default: about eleven host calls, yet
    /// faster in Envoy 1.40, whose CEL evaluation costs more than the reads it replaces).
    pub expression: bool,
}

pub const DEFAULT_CLUSTER: &str = "outbound|9091||waggle.waggle-system.svc.cluster.local";

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster: DEFAULT_CLUSTER.to_owned(),
            authority: None,
            path: "/v1/events".to_owned(),
            token: None,
            token_env: None,
            flush_interval_ms: 1000,
            max_batch_events: 500,
            max_buffer_events: 10_000,
            max_in_flight: 2,
            timeout_ms: 2000,
            retry_initial_ms: 200,
            retry_max_ms: 30_000,
            capture_path: false,
            max_path_len: 128,
            expression: false,
        }
    }
}

/// Why a configuration was refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid waggle plugin configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A parsed configuration and the advice it deserves (valid, but probably not what was meant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Config {
    /// Parses Istio's serialised `pluginConfig`. Empty input (no `pluginConfig`) means defaults.
    pub fn parse(bytes: &[u8]) -> Result<Parsed, ConfigError> {
        let config = if bytes.iter().all(u8::is_ascii_whitespace) {
            Config::default()
        } else {
            if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                let shown = String::from_utf8_lossy(bytes.get(..40).unwrap_or(bytes)).into_owned();
                return Err(ConfigError(format!(
                    "pluginConfig must be a JSON object, not {shown:?}"
                )));
            }
            serde_json::from_slice::<Config>(bytes).map_err(|e| match e.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    ConfigError(format!("not valid JSON: {e}"))
                }
                _ => ConfigError(e.to_string()),
            })?
        };
        config.validate()?;
        let mut warnings = Vec::new();
        if config.token.is_some() {
            warnings.push(
                "token is set inline in pluginConfig, where anyone who can read the WasmPlugin sees it; \
                 prefer token_env with a vmConfig env variable"
                    .to_owned(),
            );
        }
        if config.max_batch_events > config.max_buffer_events / 2 {
            warnings.push(format!(
                "max_batch_events ({}) is more than half of max_buffer_events ({}): \
                 one slow call can fill the buffer",
                config.max_batch_events, config.max_buffer_events
            ));
        }
        Ok(Parsed { config, warnings })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        fn range<T: PartialOrd + std::fmt::Display>(
            field: &str,
            v: T,
            lo: T,
            hi: T,
        ) -> Result<(), ConfigError> {
            if v < lo || v > hi {
                return Err(ConfigError(format!(
                    "{field}: {v} is outside the accepted range {lo} to {hi}"
                )));
            }
            Ok(())
        }
        range("flush_interval_ms", self.flush_interval_ms, 100, 60_000)?;
        range(
            "max_batch_events",
            self.max_batch_events,
            1,
            waggle_wire::MAX_BATCH_RECORDS,
        )?;
        range(
            "max_buffer_events",
            self.max_buffer_events,
            self.max_batch_events,
            1_000_000,
        )
        .map_err(|e| ConfigError(format!("{} (it must hold at least one batch)", e.0)))?;
        range("max_in_flight", self.max_in_flight, 1, 16)?;
        range("timeout_ms", self.timeout_ms, 100, 60_000)?;
        range("retry_initial_ms", self.retry_initial_ms, 10, 60_000)?;
        range(
            "retry_max_ms",
            self.retry_max_ms,
            self.retry_initial_ms,
            600_000,
        )
        .map_err(|e| ConfigError(format!("{} (it must be at least retry_initial_ms)", e.0)))?;
        range("max_path_len", self.max_path_len, 1, 2048)?;
        if self.cluster.is_empty() {
            return Err(ConfigError("cluster: must name an Envoy cluster, e.g. outbound|9091||waggle.waggle-system.svc.cluster.local".into()));
        }
        if !self.path.starts_with('/') {
            return Err(ConfigError(format!(
                "path: {:?} must start with '/'",
                self.path
            )));
        }
        if self.token.is_some() && self.token_env.is_some() {
            return Err(ConfigError(
                "token and token_env are both set; set one".into(),
            ));
        }
        if let Some(t) = &self.token {
            if t.is_empty() || t.chars().any(|c| c.is_control() || c == ' ') {
                return Err(ConfigError(
                    "token: must be non-empty and hold no spaces or control characters".into(),
                ));
            }
        }
        Ok(())
    }

    /// The `:authority` header: the configured one, or the host of an Istio cluster name
    /// (`outbound|9091||waggle.waggle-system.svc.cluster.local` gives the part after `||`).
    pub fn authority(&self) -> &str {
        if let Some(a) = &self.authority {
            return a;
        }
        self.cluster
            .rsplit('|')
            .next()
            .filter(|h| !h.is_empty())
            .unwrap_or(&self.cluster)
    }

    /// Tick period: fine enough to send a full batch promptly and to honour the interval.
    pub fn tick_ms(&self) -> u64 {
        self.flush_interval_ms.min(100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_configuration_means_defaults() {
        for input in [&b""[..], b"  ", b"{}"] {
            let p = Config::parse(input).unwrap();
            assert_eq!(p.config, Config::default());
            assert!(p.warnings.is_empty());
        }
        assert_eq!(
            Config::default().authority(),
            "waggle.waggle-system.svc.cluster.local"
        );
    }

    #[test]
    fn fields_parse() {
        let p = Config::parse(
            br#"{"cluster":"outbound|9091||w.x.svc.cluster.local","flush_interval_ms":250,
                 "max_batch_events":100,"max_buffer_events":2000,"max_in_flight":4,
                 "token_env":"WAGGLE_TOKEN","capture_path":true,"max_path_len":64}"#,
        )
        .unwrap();
        let c = p.config;
        assert_eq!(c.authority(), "w.x.svc.cluster.local");
        assert_eq!(
            (c.flush_interval_ms, c.max_batch_events, c.max_buffer_events),
            (250, 100, 2000)
        );
        assert_eq!(
            (c.max_in_flight, c.max_path_len, c.capture_path),
            (4, 64, true)
        );
        assert_eq!(c.token_env.as_deref(), Some("WAGGLE_TOKEN"));
        assert_eq!(c.tick_ms(), 100);
    }

    /// Each bad configuration is refused with a message naming the field at fault.
    #[test]
    fn invalid_configurations_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"flush_interval_ms": 50}"#,
                "flush_interval_ms: 50 is outside",
            ),
            (r#"{"flush_interval_ms": 60001}"#, "flush_interval_ms"),
            (
                r#"{"flush_interval_ms": "fast"}"#,
                "invalid type: string \"fast\"",
            ),
            (r#"{"max_batch_events": 0}"#, "max_batch_events"),
            (
                r#"{"max_batch_events": 600, "max_buffer_events": 500}"#,
                "max_buffer_events: 500",
            ),
            (r#"{"max_in_flight": 0}"#, "max_in_flight"),
            (r#"{"timeout_ms": 1}"#, "timeout_ms"),
            (
                r#"{"retry_initial_ms": 500, "retry_max_ms": 100}"#,
                "retry_max_ms",
            ),
            (r#"{"max_path_len": 0}"#, "max_path_len"),
            (r#"{"cluster": ""}"#, "cluster"),
            (r#"{"path": "v1/events"}"#, "path"),
            (r#"{"flush_ms": 1000}"#, "unknown field `flush_ms`"),
            (r#"{"token": "a", "token_env": "B"}"#, "token and token_env"),
            (r#"{"token": "a b"}"#, "token: must"),
            (r#"[1,2]"#, "must be a JSON object, not \"[1,2]\""),
            (r#"{"cluster": "x""#, "not valid JSON: EOF"),
        ];
        for (input, want) in cases {
            let err = Config::parse(input.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
            assert!(
                err.starts_with("invalid waggle plugin configuration"),
                "{err}"
            );
        }
    }

    #[test]
    fn risky_but_valid_settings_warn() {
        let p = Config::parse(br#"{"token":"abc"}"#).unwrap();
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("token_env"));
        let p = Config::parse(br#"{"max_batch_events":600,"max_buffer_events":1000}"#).unwrap();
        assert!(p.warnings[0].contains("half"));
    }
}

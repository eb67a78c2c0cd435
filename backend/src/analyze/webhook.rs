//! Flagger's webhooks, called as Flagger calls them (`POST`, its JSON payload, a per-attempt
//! timeout, go-retryablehttp's retries and backoff, success only on 200, 201 and 202), and
//! described twice: in the error text Flagger's event would carry, and in plain words, including
//! what Flagger hides (a 5xx body, a refused connection behind "giving up after 1 attempt(s)").

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::{go_duration, go_ms};

/// A webhook's `type`, with the words Flagger prints when it passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookType {
    ConfirmRollout,
    PreRollout,
    Rollout,
    ConfirmTrafficIncrease,
    ConfirmPromotion,
    PostRollout,
    Rollback,
    Event,
}

/// Every type as the Canary spells it, and Flagger's event when one of that type passes.
const TYPES: [(HookType, &str, Option<&str>); 8] = [
    (
        HookType::ConfirmRollout,
        "confirm-rollout",
        Some("Confirm-rollout check"),
    ),
    (
        HookType::PreRollout,
        "pre-rollout",
        Some("Pre-rollout check"),
    ),
    (HookType::Rollout, "rollout", None),
    (
        HookType::ConfirmTrafficIncrease,
        "confirm-traffic-increase",
        Some("Confirm-traffic-increase check"),
    ),
    (
        HookType::ConfirmPromotion,
        "confirm-promotion",
        Some("Confirm-promotion check"),
    ),
    (
        HookType::PostRollout,
        "post-rollout",
        Some("Post-rollout check"),
    ),
    (HookType::Rollback, "rollback", None),
    (HookType::Event, "event", None),
];

impl HookType {
    /// The CRD's enum; `""` is a rollout hook, as Flagger treats it.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Ok(HookType::Rollout);
        }
        TYPES
            .iter()
            .find(|(_, name, _)| *name == s)
            .map(|(t, _, _)| *t)
            .ok_or_else(|| {
                let all: Vec<&str> = TYPES.iter().map(|(_, n, _)| *n).collect();
                format!("type {s:?} is not one of {}", all.join(", "))
            })
    }

    pub fn as_str(self) -> &'static str {
        TYPES
            .iter()
            .find(|(t, _, _)| *t == self)
            .map_or("rollout", |(_, n, _)| n)
    }

    /// `Pre-rollout check <name> passed`, for the types whose success Flagger records.
    pub fn passed_event(self, name: &str) -> Option<String> {
        TYPES
            .iter()
            .find(|(t, _, _)| *t == self)
            .and_then(|(_, _, m)| *m)
            .map(|m| format!("{m} {name} passed"))
    }
}

/// `spec.analysis.webhooks[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    pub url: String,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub retries: Option<i64>,
    #[serde(default)]
    pub mute_alert: bool,
    #[serde(rename = "disableTLS", default)]
    pub disable_tls: bool,
}

/// Flagger's `CanaryWebhookPayload`, field for field.
#[derive(Debug, Clone, Serialize)]
pub struct Payload {
    pub name: String,
    pub namespace: String,
    pub phase: String,
    pub checksum: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// What one call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Called {
    /// The error Flagger would get (the text its event prints); `None` when the hook passed.
    pub error: Option<String>,
    /// What happened, in plain words.
    pub plain: String,
}

/// Bodies are read up to this much (Flagger reads them whole; a reason needs far less).
const BODY_LIMIT: u64 = 64 * 1024;
/// Longest body shown in a plain-words reason.
const BODY_SHOWN: usize = 512;
/// go-retryablehttp's `RetryWaitMax`; a `Retry-After` past it is also cut to it here.
const WAIT_MAX: Duration = Duration::from_secs(30);

/// The per-attempt timeout Flagger uses: 10 s when `timeout` has fewer than two characters,
/// else Go's `time.ParseDuration` (whose error fails the hook without calling it).
pub fn timeout_of(hook: &Webhook) -> Result<Duration, String> {
    match hook.timeout.as_deref() {
        Some(t) if t.chars().count() >= 2 => go_duration(t),
        _ => Ok(Duration::from_secs(10)),
    }
}

/// How long go-retryablehttp waits before attempt `n + 1`: `2^n` s, at most 30 s; on 429 and 503
/// a `Retry-After` in seconds wins.
pub fn backoff(n: u32, status: Option<u16>, retry_after: Option<&str>) -> Duration {
    if matches!(status, Some(429 | 503)) {
        if let Some(s) = retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
            return Duration::from_secs(s).min(WAIT_MAX);
        }
    }
    Duration::from_secs(1u64 << n.min(5)).min(WAIT_MAX)
}

/// go-retryablehttp's `baseRetryPolicy` for a status: 429, and 5xx except 501.
pub fn retried(status: u16) -> bool {
    status == 429 || (status >= 500 && status != 501)
}

fn reason(status: u16) -> String {
    let r = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("{status} {r}").trim_end().to_owned()
}

fn shown(body: &str) -> String {
    let b = body.trim();
    if b.is_empty() {
        return "an empty body".into();
    }
    match b.char_indices().nth(BODY_SHOWN) {
        Some((i, _)) => format!("body {:?}…", &b[..i]),
        None => format!("body {b:?}"),
    }
}

/// The last attempt's result, before Flagger's reading of it.
enum Attempt {
    Status {
        code: u16,
        body: String,
        retry_after: Option<String>,
    },
    /// Go's error text (after `Post "<url>": `) and the plain words for it.
    Transport {
        go: String,
        plain: String,
        retry: bool,
    },
}

/// Calls one webhook with `payload`, retrying as Flagger's client does.
pub fn call(hook: &Webhook, payload: &Payload) -> Called {
    let timeout = match timeout_of(hook) {
        Ok(t) => t,
        Err(e) => {
            return Called {
                error: Some(e),
                plain: format!(
                    "timeout {:?} is not a Go duration (for example 30s, 1m, 500ms), so Flagger fails this webhook without calling it",
                    hook.timeout.as_deref().unwrap_or_default()
                ),
            }
        }
    };
    let url = hook.url.as_str();
    let body = match serde_json::to_vec(payload) {
        Ok(b) => b,
        Err(e) => {
            return Called {
                error: Some(e.to_string()),
                plain: format!("the payload could not be encoded: {e}"),
            }
        }
    };
    let attempts = u32::try_from(hook.retries.unwrap_or(0).max(0))
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    let mut n = 0;
    let last = loop {
        let a = attempt(hook, url, &body, timeout);
        n += 1;
        let (retry, status, after) = match &a {
            Attempt::Status {
                code, retry_after, ..
            } => (retried(*code), Some(*code), retry_after.clone()),
            Attempt::Transport { retry, .. } => (*retry, None, None),
        };
        if !retry || n >= attempts {
            break a;
        }
        std::thread::sleep(backoff(n - 1, status, after.as_deref()));
    };
    let tries = format!("{n} attempt(s)");
    match last {
        Attempt::Status { code, body, .. } => {
            let (error, plain) = if code <= 202 {
                let accepted = if code == 202 {
                    ": accepted; a task the hook runs in the background (the loadtester's cmd) reports its failure only in the hook's own log"
                } else {
                    ""
                };
                (None, format!("HTTP {}{accepted}", reason(code)))
            } else if retried(code) {
                let error = if code == 429 {
                    format!("POST {url} giving up after {tries}")
                } else {
                    format!(
                        "POST {url} giving up after {tries}: unexpected HTTP status {}",
                        reason(code)
                    )
                };
                let plain = format!(
                    "HTTP {} after {tries}, with {} (Flagger's client drops a {code} body, so its event does not show it)",
                    reason(code),
                    shown(&body)
                );
                (Some(error), plain)
            } else if (200..300).contains(&code) {
                let plain = format!(
                    "HTTP {}: Flagger counts only 200, 201 and 202 as success, so this fails the webhook",
                    reason(code)
                );
                (Some(body), plain)
            } else {
                let plain = format!(
                    "HTTP {} with {} (Flagger's event shows the body as the error)",
                    reason(code),
                    shown(&body)
                );
                (Some(body), plain)
            };
            Called { error, plain }
        }
        Attempt::Transport { go, plain, .. } => Called {
            error: Some(format!(
                "POST {url} giving up after {tries}: Post {url:?}: {go}"
            )),
            plain: format!("{tries}: {plain}"),
        },
    }
}

fn attempt(hook: &Webhook, url: &str, body: &[u8], timeout: Duration) -> Attempt {
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => {
            return Attempt::Transport {
                go: format!("parse {url:?}: {e}"),
                plain: format!("url {url:?} is not a valid URL: {e}"),
                retry: false,
            }
        }
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return Attempt::Transport {
            go: format!("unsupported protocol scheme {:?}", parsed.scheme()),
            plain: format!(
                "url {url:?} has scheme {:?}; webhooks are http or https",
                parsed.scheme()
            ),
            retry: false,
        };
    }
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addr = match resolve(&host, port, &hook.name) {
        Ok(a) => a,
        Err(plain) => {
            return Attempt::Transport {
                go: format!("dial tcp: lookup {host}: no such host"),
                plain,
                retry: true,
            }
        }
    };
    let mut client = reqwest::blocking::Client::builder()
        .user_agent("Go-http-client/1.1")
        .danger_accept_invalid_certs(hook.disable_tls);
    // Go's http.Client treats a zero (or negative) timeout as none.
    if !timeout.is_zero() {
        client = client.timeout(timeout);
    }
    let client = match client.build() {
        Ok(c) => c,
        Err(e) => {
            return Attempt::Transport {
                go: e.to_string(),
                plain: format!("no HTTP client: {e}"),
                retry: false,
            }
        }
    };
    let sent = client
        .post(parsed)
        .header("Content-Type", "application/json")
        .body(body.to_vec())
        .send();
    match sent {
        Ok(resp) => {
            let code = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut text = Vec::new();
            let _ = resp.take(BODY_LIMIT).read_to_end(&mut text);
            Attempt::Status {
                code,
                body: String::from_utf8_lossy(&text).into_owned(),
                retry_after,
            }
        }
        Err(e) if e.is_timeout() => Attempt::Transport {
            go: "context deadline exceeded (Client.Timeout exceeded while awaiting headers)".into(),
            plain: format!(
                "no answer from {addr} within {} (the webhook's timeout, which applies to each attempt)",
                go_ms(timeout.as_millis() as f64)
            ),
            retry: true,
        },
        Err(e) if io_kind(&e) == Some(std::io::ErrorKind::ConnectionRefused) => {
            Attempt::Transport {
                go: format!("dial tcp {addr}: connect: connection refused"),
                plain: format!(
                    "connection to {addr} ({host}) refused: nothing listens on port {port} there"
                ),
                retry: true,
            }
        }
        Err(e) => {
            let chain = crate::honeycomb::client::error_chain(&e);
            Attempt::Transport {
                go: chain.clone(),
                plain: format!("the request to {addr} failed: {chain}"),
                retry: true,
            }
        }
    }
}

/// The first address `host` resolves to, or why it resolves to none.
pub fn resolve(host: &str, port: u16, hook: &str) -> Result<SocketAddr, String> {
    let hint = format!("a Service's name resolves only inside the cluster; from a laptop, port-forward it and pass --webhook-override {hook}=http://127.0.0.1:PORT/...");
    match (host, port).to_socket_addrs() {
        Ok(mut a) => a
            .next()
            .ok_or_else(|| format!("the host name {host:?} resolved to no address ({hint})")),
        Err(e) => Err(format!(
            "the host name {host:?} did not resolve: {e} ({hint})"
        )),
    }
}

fn io_kind(e: &reqwest::Error) -> Option<std::io::ErrorKind> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        src = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_as_the_crd_spells_them() {
        for (t, name, _) in TYPES {
            assert_eq!(HookType::parse(name), Ok(t));
            assert_eq!(t.as_str(), name);
        }
        assert_eq!(HookType::parse(""), Ok(HookType::Rollout));
        let e = HookType::parse("tester").unwrap_err();
        assert!(
            e.contains("\"tester\"") && e.contains("confirm-promotion"),
            "{e}"
        );
        assert_eq!(
            HookType::PreRollout.passed_event("smoke").as_deref(),
            Some("Pre-rollout check smoke passed")
        );
        assert_eq!(HookType::Rollout.passed_event("x"), None);
    }

    #[test]
    fn timeouts_and_backoff_follow_flagger_and_retryablehttp() {
        let hook = |t: Option<&str>| Webhook {
            name: "h".into(),
            kind: String::new(),
            url: "http://x/".into(),
            timeout: t.map(str::to_owned),
            metadata: None,
            retries: None,
            mute_alert: false,
            disable_tls: false,
        };
        let cases: [(Option<&str>, Result<Duration, &str>); 6] = [
            (None, Ok(Duration::from_secs(10))),
            (Some("5"), Ok(Duration::from_secs(10))),
            (Some("30s"), Ok(Duration::from_secs(30))),
            (Some("500ms"), Ok(Duration::from_millis(500))),
            (Some("1m30s"), Ok(Duration::from_secs(90))),
            (Some("abc"), Err("time: invalid duration \"abc\"")),
        ];
        for (t, want) in cases {
            assert_eq!(timeout_of(&hook(t)), want.map_err(str::to_owned), "{t:?}");
        }
        let waits: Vec<u64> = (0..7)
            .map(|n| backoff(n, Some(500), None).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(0, Some(503), Some("7")), Duration::from_secs(7));
        assert_eq!(backoff(0, Some(500), Some("7")), Duration::from_secs(1));
        assert_eq!(backoff(0, Some(429), Some("600")), WAIT_MAX);
        let r: Vec<u16> = (200..600).filter(|s| retried(*s)).collect();
        assert!(r.contains(&429) && r.contains(&500) && r.contains(&503));
        assert!(!r.contains(&501) && !r.contains(&404) && !r.contains(&204));
        assert_eq!(r.len(), 1 + 99);
    }

    #[test]
    fn the_payload_is_flaggers() {
        let p = Payload {
            name: "podinfo".into(),
            namespace: "test".into(),
            phase: "Progressing".into(),
            checksum: "85d557f47b".into(),
            metadata: None,
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"name":"podinfo","namespace":"test","phase":"Progressing","checksum":"85d557f47b"}"#
        );
    }
}

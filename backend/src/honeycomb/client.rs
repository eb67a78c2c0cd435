//! Honeycomb's HTTP API as the exporter needs it: `POST /1/batch/{dataset}` and `GET /1/auth`,
//! with every answer sorted into what to do next.

use std::time::Duration;

use serde::Deserialize;

use super::settings::Compression;

/// What to do with a batch after one attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// 200: the batch was read. `refused` lists (index, error) of events Honeycomb did not take.
    Accepted { refused: Vec<(usize, String)> },
    /// 429, 5xx, a timeout or a connection error: send the same batch again later.
    Retry(String),
    /// 401: the key is refused.
    Unauthorized,
    /// Any other 4xx: the request itself is wrong; sending it again cannot help.
    Refused(String),
}

/// What `GET /1/auth` said.
#[derive(Debug, PartialEq, Eq)]
pub enum Auth {
    Accepted {
        key_type: String,
        environment: String,
        team: String,
    },
    /// 401, or a configuration key without the Send Events permission.
    Refused(String),
    Retry(String),
}

#[derive(Deserialize)]
struct Status {
    status: u16,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize, Default)]
struct Named {
    #[serde(default)]
    name: String,
    #[serde(default)]
    slug: String,
}

#[derive(Deserialize)]
struct AuthBody {
    #[serde(default, rename = "type")]
    key_type: String,
    #[serde(default)]
    api_key_access: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    environment: Named,
    #[serde(default)]
    team: Named,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    compression: Compression,
}

pub const USER_AGENT: &str = concat!("waggle/", env!("CARGO_PKG_VERSION"));

impl Client {
    pub fn new(base: &str, compression: Compression, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            http,
            base: base.to_owned(),
            compression,
        })
    }

    /// Sends an encoded (and compressed) batch of `events` events.
    pub async fn send(
        &self,
        key: &str,
        dataset: &str,
        body: axum::body::Bytes,
        events: usize,
    ) -> Answer {
        let url = format!("{}/1/batch/{}", self.base, path_segment(dataset));
        let mut req = self
            .http
            .post(url)
            .header("X-Honeycomb-Team", key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(enc) = self.compression.header() {
            req = req.header(reqwest::header::CONTENT_ENCODING, enc);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Answer::Retry(describe(&e)),
        };
        let status = resp.status().as_u16();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => return Answer::Retry(describe(&e)),
        };
        classify(status, &text, events)
    }

    pub async fn auth(&self, key: &str) -> Auth {
        let resp = match self
            .http
            .get(format!("{}/1/auth", self.base))
            .header("X-Honeycomb-Team", key)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Auth::Retry(describe(&e)),
        };
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        match status {
            200 => match serde_json::from_str::<AuthBody>(&text) {
                Ok(b) => {
                    let send = b.api_key_access.get("events").and_then(|v| v.as_bool());
                    if b.key_type == "configuration" && send != Some(true) {
                        return Auth::Refused("this configuration key lacks the Send Events permission; use an ingest key, or a configuration key with Send Events".into());
                    }
                    let pick = |n: Named| if n.slug.is_empty() { n.name } else { n.slug };
                    Auth::Accepted {
                        key_type: b.key_type,
                        environment: pick(b.environment),
                        team: pick(b.team),
                    }
                }
                Err(e) => Auth::Retry(format!("unreadable /1/auth answer: {e}")),
            },
            401 => Auth::Refused("Honeycomb refused the key (401): it needs an ingest key, or a configuration key with the Send Events permission".into()),
            s => Auth::Retry(format!("GET /1/auth answered {s}: {}", snippet(&text))),
        }
    }
}

/// Sorts one HTTP answer to a batch of `events` events.
pub fn classify(status: u16, body: &str, events: usize) -> Answer {
    match status {
        200..=299 => {
            let Ok(statuses) = serde_json::from_str::<Vec<Status>>(body) else {
                // Honeycomb always answers a batch with its status array; without one nothing
                // says which events were taken, so the batch goes again.
                return Answer::Retry(format!(
                    "answer {status} without a status array: {}",
                    snippet(body)
                ));
            };
            let mut refused: Vec<(usize, String)> = statuses
                .into_iter()
                .enumerate()
                .filter(|(_, s)| s.status != 202 && s.status != 200)
                .map(|(i, s)| {
                    let why = s.error.unwrap_or_else(|| format!("status {}", s.status));
                    (i, why)
                })
                .collect();
            // A short array leaves the tail unconfirmed; Refinery treats that as an error too.
            let answered = body.matches("\"status\"").count();
            refused.extend(
                (answered..events).map(|i| (i, "no status returned for this event".to_owned())),
            );
            Answer::Accepted { refused }
        }
        401 => Answer::Unauthorized,
        408 | 429 | 500..=599 => Answer::Retry(format!("{status}: {}", snippet(body))),
        _ => Answer::Refused(format!("{status}: {}", snippet(body))),
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        // reqwest's Display names the URL, which holds no secret (the key is a header).
        error_chain(e)
    }
}

/// An error and its sources, `outer: inner: innermost`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn snippet(body: &str) -> String {
    let t = body.trim();
    match t.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_owned(),
    }
}

/// Percent-encodes a dataset name for one URL path segment, as libhoney does with
/// `url.PathEscape`.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_sorted_by_what_to_do() {
        let ok = r#"[{"status":202},{"status":400,"error":"Event has too many columns."},{"status":202}]"#;
        assert_eq!(
            classify(200, ok, 3),
            Answer::Accepted {
                refused: vec![(1, "Event has too many columns.".into())]
            }
        );
        assert_eq!(
            classify(200, r#"[{"status":202}]"#, 2),
            Answer::Accepted {
                refused: vec![(1, "no status returned for this event".into())]
            }
        );
        assert!(matches!(classify(200, "ok", 1), Answer::Retry(_)));
        assert_eq!(classify(401, "{}", 1), Answer::Unauthorized);
        for s in [408, 429, 500, 502, 503] {
            assert!(matches!(classify(s, "", 1), Answer::Retry(_)), "{s}");
        }
        for s in [400, 403, 404, 413] {
            assert!(
                matches!(classify(s, "{\"error\":\"x\"}", 1), Answer::Refused(_)),
                "{s}"
            );
        }
    }

    #[test]
    fn dataset_names_are_one_path_segment() {
        assert_eq!(path_segment("flagger-metrics"), "flagger-metrics");
        assert_eq!(path_segment("my ds/1"), "my%20ds%2F1");
    }
}

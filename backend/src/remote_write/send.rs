//! Delivering one request, as Prometheus 2.42's sender does: the four required headers,
//! 5xx, timeouts and connection errors retried with capped exponential backoff (forever: the
//! round waits, and the backlog bound drops old data instead), 429 retried only with
//! `retry_on_http_429` (then honouring `Retry-After`), any other answer dropping the request,
//! counted by status and logged with the first line of the body.

use std::time::Duration;

use super::config::{Auth, Destination};
use super::stats::Stats;

pub const USER_AGENT: &str = concat!("waggle/", env!("CARGO_PKG_VERSION"));

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Delivered,
    /// Refused for good (a 4xx other than a retried 429): dropped and counted.
    Refused(u16),
    /// Shutdown came first.
    Abandoned,
}

/// The secret for `auth`, read from its file now (rotated Secrets are picked up).
fn authorization(auth: &Auth) -> Option<String> {
    match auth {
        Auth::None => None,
        Auth::Bearer(path) => {
            let token = std::fs::read_to_string(path).ok()?;
            Some(format!("Bearer {}", token.trim()))
        }
        Auth::Basic {
            username,
            password_file,
        } => {
            let password = std::fs::read_to_string(password_file).ok()?;
            use base64_lite::encode;
            Some(format!(
                "Basic {}",
                encode(
                    format!("{username}:{}", password.trim_end_matches(['\n', '\r'])).as_bytes()
                )
            ))
        }
    }
}

/// RFC 4648 base64, for basic auth (too small a need for another dependency).
mod base64_lite {
    pub fn encode(b: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

/// `Retry-After` as seconds or an HTTP date; `None` when absent or unreadable.
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = at.timestamp_millis() - crate::api::now_ms();
    Some(Duration::from_millis(ms.max(0) as u64))
}

/// Sends `body` until it is delivered, refused for good, or `stop` turns true.
pub async fn send(
    client: &reqwest::Client,
    dest: &Destination,
    body: &[u8],
    samples: usize,
    stats: &Stats,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Sent {
    let mut backoff = dest.queue.min_backoff;
    let mut first = true;
    loop {
        if *stop.borrow() {
            return Sent::Abandoned;
        }
        if !first {
            stats.retried(samples);
        }
        first = false;
        let mut req = client
            .post(&dest.url)
            .timeout(dest.remote_timeout)
            .header(reqwest::header::CONTENT_ENCODING, "snappy")
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .header(reqwest::header::USER_AGENT, USER_AGENT)
            .header("X-Prometheus-Remote-Write-Version", "0.1.0");
        for (k, v) in &dest.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(a) = authorization(&dest.auth) {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        let wait = match req.body(body.to_vec()).send().await {
            Ok(resp) if resp.status().is_success() => {
                stats.delivered(samples, body.len());
                return Sent::Delivered;
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let after = retry_after(resp.headers());
                let text = resp.text().await.unwrap_or_default();
                let line = text
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(1024)
                    .collect::<String>();
                let recoverable = status >= 500 || (status == 429 && dest.queue.retry_on_http_429);
                if !recoverable {
                    stats.refused(samples, status);
                    tracing::warn!(remote_name = %dest.name, status, body = %line, samples, "Remote write refused a request; it is dropped, not retried.");
                    return Sent::Refused(status);
                }
                stats.error(status);
                tracing::debug!(remote_name = %dest.name, status, body = %line, "Remote write failed; retrying.");
                if status == 429 {
                    after.filter(|d| !d.is_zero())
                } else {
                    None
                }
            }
            Err(e) => {
                stats.error(0);
                tracing::debug!(remote_name = %dest.name, error = %e, "Remote write could not be delivered; retrying.");
                None
            }
        };
        // Retry-After is slept exactly; the next backoff doubles from it, as in Prometheus.
        let sleep = wait.unwrap_or(backoff);
        backoff = (sleep * 2)
            .min(dest.queue.max_backoff)
            .max(dest.queue.min_backoff);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = super::stopped(stop.clone()) => return Sent::Abandoned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("user:pa ss", "dXNlcjpwYSBzcw=="),
        ] {
            assert_eq!(base64_lite::encode(input.as_bytes()), want);
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past");
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}

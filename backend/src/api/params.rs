//! Request parameters as Prometheus reads them (`r.FormValue`): the URL query string and, for
//! a form POST, the body, whose values win. Also time and duration parsing.

use axum::http::{HeaderMap, Uri};

use super::error::ApiError;
use crate::promql::engine::{MAX_DURATION_MS, MAX_TIME_MS};

pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Self {
        let mut v: Vec<(String, String)> = Vec::new();
        let form = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if form {
            v.extend(form_urlencoded::parse(body).into_owned());
        }
        if let Some(q) = uri.query() {
            v.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        Self(v)
    }

    /// The first value: the body's when both carry it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Unix seconds (fractions rounded to the millisecond, as Prometheus does) or RFC 3339.
/// Times are clamped to ±[`MAX_TIME_MS`] (146 million years), so arithmetic on them cannot
/// overflow; Prometheus's own limits are a little wider and as far from any real query.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() {
            let secs = f.trunc();
            let ms = ((f - secs) * 1000.0).round();
            let t = (secs * 1000.0 + ms).clamp(-(MAX_TIME_MS as f64), MAX_TIME_MS as f64);
            return Ok(t as i64);
        }
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis().clamp(-MAX_TIME_MS, MAX_TIME_MS));
    }
    Err(format!("cannot parse {s:?} to a valid timestamp"))
}

/// Seconds as a float, or a Prometheus duration.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() && f.abs() < 9.2e15 {
            return Ok(((f * 1000.0) as i64).clamp(-MAX_DURATION_MS, MAX_DURATION_MS));
        }
        return Err(format!(
            "cannot parse {s:?} to a valid duration. It overflows int64"
        ));
    }
    crate::config::parse_duration(s)
        .map(|d| {
            i64::try_from(d.as_millis())
                .unwrap_or(i64::MAX)
                .min(MAX_DURATION_MS)
        })
        .map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}

pub fn time_param(p: &Params, name: &str, default: i64) -> Result<i64, ApiError> {
    match p.get(name) {
        None | Some("") if default != i64::MIN => Ok(default),
        v => parse_time(v.unwrap_or("")).map_err(|e| ApiError::param(name, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("1435781451.7815"), Ok(1_435_781_451_782));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert!(parse_time("x")
            .unwrap_err()
            .contains("cannot parse \"x\" to a valid timestamp"));
        assert_eq!(parse_duration_ms("15s"), Ok(15_000));
        assert_eq!(parse_duration_ms("0.5"), Ok(500));
        assert_eq!(
            parse_time("-9e15"),
            Ok(-MAX_TIME_MS),
            "clamped, never wrapped"
        );
        assert_eq!(parse_time("9e300"), Ok(MAX_TIME_MS));
    }

    #[test]
    fn body_wins_over_url() {
        let uri: Uri = "/api/v1/query?query=up&time=1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let p = Params::parse(&uri, &h, b"query=down&match%5B%5D=a&match%5B%5D=b");
        assert_eq!(p.get("query"), Some("down"));
        assert_eq!(p.get("time"), Some("1"));
        assert_eq!(p.all("match[]"), ["a", "b"]);
    }
}

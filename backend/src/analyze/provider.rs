//! Flagger's Prometheus provider, reproduced: `GET <address>/api/v1/query?query=` with
//! whitespace collapsed, a 5 s timeout, and the same reading of the answer (empty or NaN is
//! "no values found", the last of several series wins, a matrix is an error). Unlike Flagger,
//! it keeps the `warnings` the backend sent, so "no values found" comes with its reason.

use std::time::Duration;

use serde::Deserialize;

/// Why a query gave no usable value; `Display` is Flagger's wording.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("no values found")]
    NoValues { warnings: Vec<String> },
    #[error("query returned multiple values")]
    Multiple,
    #[error("error response: Status {status}: {body}")]
    Status { status: u16, body: String },
    #[error("request failed: {0}")]
    Request(String),
    #[error("error unmarshaling result: {0}")]
    Unmarshal(String),
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    data: Data,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize, Default)]
struct Data {
    #[serde(default)]
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    value: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    values: Option<Vec<serde_json::Value>>,
}

pub struct Prometheus {
    http: reqwest::blocking::Client,
}

impl Prometheus {
    pub fn new() -> Result<Self, String> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { http })
    }

    /// Runs an instant query at the server's "now", as Flagger does.
    pub fn query(&self, address: &str, query: &str) -> Result<f64, QueryError> {
        let q = query.split_whitespace().collect::<Vec<_>>().join(" ");
        let url = format!("{}/api/v1/query", address.trim_end_matches('/'));
        let resp = self
            .http
            .get(&url)
            .query(&[("query", q.as_str())])
            .send()
            .map_err(|e| {
                // The query string is long and already shown beside the check: name the endpoint.
                let chain = crate::honeycomb::client::error_chain(&e.without_url());
                QueryError::Request(format!("Get {url:?}: {chain}"))
            })?;
        let status = resp.status();
        let body = resp
            .text()
            .map_err(|e| QueryError::Request(format!("error reading body: {e}")))?;
        if status.as_u16() >= 400 {
            return Err(QueryError::Status {
                status: status.as_u16(),
                body: format!(
                    "{} {}",
                    status.canonical_reason().unwrap_or(""),
                    body.trim()
                ),
            });
        }
        read(&body)
    }
}

/// Flagger's reading of a query answer.
pub fn read(body: &str) -> Result<f64, QueryError> {
    let a: Answer = serde_json::from_str(body)
        .map_err(|e| QueryError::Unmarshal(format!("{e}, '{}'", body.trim())))?;
    let mut value = None;
    for s in &a.data.result {
        if s.values.is_some() {
            return Err(QueryError::Multiple);
        }
        if let Some(serde_json::Value::String(v)) = s.value.as_ref().and_then(|v| v.get(1)) {
            let f = parse_float(v).map_err(QueryError::Unmarshal)?;
            value = Some(f);
        }
    }
    match value {
        Some(v) if !v.is_nan() => Ok(v),
        _ => Err(QueryError::NoValues {
            warnings: a.warnings,
        }),
    }
}

/// Go's `strconv.ParseFloat` for the strings Prometheus writes.
fn parse_float(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s
            .parse()
            .map_err(|_| format!("strconv.ParseFloat: parsing {s:?}: invalid syntax")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_flagger_reads_them() {
        let v = |r: &str| {
            format!(r#"{{"status":"success","data":{{"resultType":"vector","result":{r}}}}}"#)
        };
        assert_eq!(read(&v(r#"[{"metric":{},"value":[1,"99.5"]}]"#)), Ok(99.5));
        assert_eq!(
            read(&v(
                r#"[{"metric":{},"value":[1,"1"]},{"metric":{},"value":[1,"2"]}]"#
            )),
            Ok(2.0),
            "the last series wins"
        );
        assert!(matches!(read(&v("[]")), Err(QueryError::NoValues { .. })));
        assert!(matches!(
            read(&v(r#"[{"metric":{},"value":[1,"NaN"]}]"#)),
            Err(QueryError::NoValues { .. })
        ));
        assert!(
            matches!(
                read(&v(
                    r#"[{"metric":{},"value":[1,"5"]},{"metric":{},"value":[1,"NaN"]}]"#
                )),
                Err(QueryError::NoValues { .. })
            ),
            "a trailing NaN hides the rest"
        );
        assert_eq!(
            read(&v(r#"[{"metric":{},"value":[1,"+Inf"]}]"#)),
            Ok(f64::INFINITY)
        );
        assert_eq!(
            read(&v(r#"[{"metric":{},"values":[[1,"1"]]}]"#)),
            Err(QueryError::Multiple)
        );
        assert!(matches!(
            read(r#"{"data":{"resultType":"scalar","result":[1,"1"]}}"#),
            Err(QueryError::Unmarshal(_))
        ));
        let w = r#"{"status":"success","data":{"resultType":"vector","result":[]},"warnings":["x matched no series"]}"#;
        assert_eq!(
            read(w),
            Err(QueryError::NoValues {
                warnings: vec!["x matched no series".into()]
            })
        );
    }
}

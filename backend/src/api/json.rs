//! JSON written by hand where Prometheus's byte-level format matters (numbers as strings,
//! millisecond timestamps, Go's HTML-safe string escaping, sorted label keys).

use std::fmt::Write as _;

use crate::labels::Labels;
use crate::promql::format::{go_float, sample_value, timestamp};
use crate::promql::Value;

/// A JSON string as Go's `encoding/json` writes it (escaping `<`, `>`, `&`, U+2028, U+2029).
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn labels(l: &Labels) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&string(k));
        out.push(':');
        out.push_str(&string(v));
    }
    out.push('}');
    out
}

pub fn string_list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| string(s)).collect();
    format!("[{}]", parts.join(","))
}

/// `{"resultType":…,"result":…}` of a query result.
pub fn result(v: &Value, eval_ts: i64) -> String {
    let mut out = String::new();
    match v {
        Value::Scalar(x) => {
            let _ = write!(
                out,
                "{{\"resultType\":\"scalar\",\"result\":[{},{}]}}",
                seconds(eval_ts),
                string(&go_float(*x))
            );
        }
        Value::String(s) => {
            let _ = write!(
                out,
                "{{\"resultType\":\"string\",\"result\":[{},{}]}}",
                seconds(eval_ts),
                string(s)
            );
        }
        Value::Vector(samples) => {
            out.push_str("{\"resultType\":\"vector\",\"result\":[");
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(
                    out,
                    "{{\"metric\":{},\"value\":[{},{}]}}",
                    labels(&s.labels),
                    timestamp(eval_ts),
                    string(&sample_value(s.v))
                );
            }
            out.push_str("]}");
        }
        Value::Matrix(series) => {
            out.push_str("{\"resultType\":\"matrix\",\"result\":[");
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{{\"metric\":{},\"values\":[", labels(&s.labels));
                for (j, (t, v)) in s.points.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "[{},{}]", timestamp(*t), string(&sample_value(*v)));
                }
                out.push_str("]}");
            }
            out.push_str("]}");
        }
    }
    out
}

/// Scalar and string results use encoding/json's float for the time (`1.5`, not `1.500`).
fn seconds(ms: i64) -> String {
    format!("{}", ms as f64 / 1000.0)
}

/// The success envelope, with warnings when there are any.
pub fn success(data: &str, warnings: &[String]) -> String {
    if warnings.is_empty() {
        format!("{{\"status\":\"success\",\"data\":{data}}}")
    } else {
        format!(
            "{{\"status\":\"success\",\"data\":{data},\"warnings\":{}}}",
            string_list(warnings)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_like_go() {
        assert_eq!(string("a<b>&\"c\"\n"), r#""a\u003cb\u003e\u0026\"c\"\n""#);
    }

    #[test]
    fn vector_result() {
        let v = Value::Vector(vec![crate::promql::Sample {
            labels: Labels::from_strs(&[("job", "x")]),
            t: 0,
            v: f64::NAN,
        }]);
        assert_eq!(
            result(&v, 1_435_781_451_781),
            r#"{"resultType":"vector","result":[{"metric":{"job":"x"},"value":[1435781451.781,"NaN"]}]}"#
        );
        assert_eq!(
            result(&Value::Scalar(1e-7), 1500),
            r#"{"resultType":"scalar","result":[1.5,"0.0000001"]}"#
        );
    }
}

//! Small HTTP helpers the integration tests share: posting batches and remote writes to
//! waggle, querying it, and reading its self-metrics.

use serde_json::Value;
use waggle::api::ingest::{RwLabel, RwSample, RwTimeSeries, WriteRequest};
use waggle_wire::{BatchBuilder, Event, Header};

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `events` moved so that they all ended within the last second (durations capped at 100 ms).
pub fn recent(mut events: Vec<Event>) -> Vec<Event> {
    let base = events.first().map_or(0, |e| e.start_unix_us);
    let now_us = now_ms() as u64 * 1000 - 1_000_000;
    for e in &mut events {
        e.start_unix_us = now_us + (e.start_unix_us - base) / 1000;
        e.duration_us = e.duration_us.min(100_000);
    }
    events
}

/// One encoded batch.
pub fn wire(events: &[Event], header: &Header) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    for e in events {
        b.push(e);
    }
    b.finish(header)
}

/// POSTs `body` to `base + path`; the status and the JSON body (Null when not JSON).
pub fn post(base: &str, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = crate::prom::client()
        .post(format!("{base}{path}"))
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match req.send() {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }
        Err(e) => panic!("POST {path}: {e}"),
    }
}

/// An instant query with extra parameters: the status and the JSON answer.
pub fn query(base: &str, q: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let mut all = vec![("query", q)];
    all.extend_from_slice(params);
    let resp = crate::prom::client()
        .post(format!("{base}/api/v1/query"))
        .form(&all)
        .send()
        .expect("query");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// The first result's value of an instant query, as a number.
pub fn value(base: &str, q: &str) -> Option<f64> {
    let (_, v) = query(base, q, &[]);
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
}

/// One series of `/metrics` (exactly as written), 0 when absent.
pub fn metric(base: &str, series: &str) -> f64 {
    let text = crate::prom::client()
        .get(format!("{base}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    crate::prom::exposed(&text, series).unwrap_or(0.0)
}

/// A snappy-compressed remote-write body.
pub fn rw_body(series: Vec<RwTimeSeries>) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&prost::Message::encode_to_vec(&WriteRequest {
            timeseries: series,
        }))
        .unwrap_or_default()
}

/// One remote-write series: `name{extra}` with `samples`.
pub fn ts(name: &str, extra: &[(&str, &str)], samples: &[(i64, f64)]) -> RwTimeSeries {
    let mut labels = vec![RwLabel {
        name: "__name__".into(),
        value: name.into(),
    }];
    labels.extend(extra.iter().map(|(n, v)| RwLabel {
        name: n.to_string(),
        value: v.to_string(),
    }));
    RwTimeSeries {
        labels,
        samples: samples
            .iter()
            .map(|&(timestamp, value)| RwSample { value, timestamp })
            .collect(),
    }
}

pub const WIRE: (&str, &str) = ("content-type", waggle_wire::CONTENT_TYPE);
pub const JSON: (&str, &str) = ("content-type", "application/json");
pub const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");

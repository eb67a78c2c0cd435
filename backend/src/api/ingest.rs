//! `POST /v1/events` (waggle batches, or JSON for hand testing) and `POST /api/v1/write`
//! (Prometheus remote write 1.0). Bad input is refused whole with a message naming the
//! problem; nothing already stored is touched.

use std::sync::atomic::Ordering::Relaxed;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use waggle_wire::{Batch, BatchBuilder, Event, Header, Protocol, Reporter, Service, Workload};

use super::error::{ApiError, ErrorType};
use super::{now_ms, Shared};
use crate::self_metrics::Reject;
use crate::store::{Kind, Refused};

fn refuse(st: &Shared, remote_write: bool, why: Reject, err: ApiError) -> ApiError {
    st.metrics.reject(remote_write, why);
    tracing::warn!(endpoint = if remote_write { "remote_write" } else { "events" }, reason = %err.msg, "ingest request refused");
    err
}

/// Checks the bearer token (when one is configured) and the body limit.
fn admit(
    st: &Shared,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    remote_write: bool,
) -> Result<Bytes, ApiError> {
    if let Some(token) = &st.settings.ingest_token {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()));
        if !ok {
            let msg = if given.is_none() {
                "missing bearer token: this endpoint requires Authorization: Bearer <ingest token>"
            } else {
                "wrong bearer token"
            };
            return Err(refuse(
                st,
                remote_write,
                Reject::Unauthorized,
                ApiError::new(ErrorType::Unauthorized, msg),
            ));
        }
    }
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let msg = format!(
                "request body exceeds the limit of {} bytes",
                st.settings.max_body_bytes
            );
            refuse(
                st,
                remote_write,
                Reject::TooLarge,
                ApiError::new(ErrorType::TooLarge, msg),
            )
        } else {
            refuse(
                st,
                remote_write,
                Reject::Malformed,
                ApiError::bad_data(format!("could not read the request body: {e}")),
            )
        }
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn events(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = admit(&st, &headers, body, false)?;
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    let batches = if json {
        json_batches(&body)
            .map_err(|e| refuse(&st, false, Reject::Malformed, ApiError::bad_data(e)))?
    } else {
        vec![waggle_wire::decode(&body).map_err(|e| {
            refuse(
                &st,
                false,
                Reject::Malformed,
                ApiError::bad_data(format!("malformed waggle batch: {e}")),
            )
        })?]
    };
    let now = now_ms();
    let (mut events, mut refused) = (0, 0);
    {
        let mut guard = st
            .db
            .write()
            .map_err(|_| ApiError::new(ErrorType::Internal, "store lock poisoned"))?;
        let db = &mut *guard;
        for b in &batches {
            let out = db.mesh.ingest(&mut db.store, b, now);
            events += out.events;
            refused += out.refused_series;
            st.metrics
                .events_dropped_by_sidecars
                .fetch_add(b.header.dropped, Relaxed);
        }
    }
    st.metrics.events_ingested.fetch_add(events, Relaxed);
    st.metrics
        .batches_ingested
        .fetch_add(batches.len() as u64, Relaxed);
    if let Some(x) = &st.exporter {
        for b in batches {
            x.offer(b);
        }
    }
    st.metrics.series_refused.fetch_add(refused, Relaxed);
    if refused > 0 {
        tracing::warn!(
            refused,
            limit = st.settings.limits.max_series,
            "series limit reached; new series refused"
        );
    }
    Ok((
        StatusCode::ACCEPTED,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        format!("{{\"accepted\":{events}}}"),
    )
        .into_response())
}

/// The JSON event shape for hand testing: an array of these.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent {
    /// `destination` (inbound, the default) or `source`.
    #[serde(default)]
    reporter: Option<String>,
    /// The reporting sidecar's workload.
    workload: String,
    namespace: String,
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    version: Option<String>,
    /// The other side of the request.
    #[serde(default)]
    peer_workload: Option<String>,
    #[serde(default)]
    peer_namespace: Option<String>,
    #[serde(default)]
    service: Option<String>,
    response_code: u16,
    duration_ms: f64,
    #[serde(default)]
    method: Option<String>,
    /// When the request ended, in Unix milliseconds; now when absent.
    #[serde(default)]
    end_unix_ms: Option<i64>,
    #[serde(default)]
    grpc_status: Option<u32>,
}

fn json_batches(body: &[u8]) -> Result<Vec<Batch>, String> {
    let events: Vec<JsonEvent> =
        serde_json::from_slice(body).map_err(|e| format!("malformed JSON events: {e}"))?;
    let now = now_ms();
    let mut out = Vec::new();
    for (i, j) in events.into_iter().enumerate() {
        if !(j.duration_ms.is_finite() && j.duration_ms >= 0.0) {
            return Err(format!(
                "event {i}: duration_ms must be a non-negative number"
            ));
        }
        let reporter = match j.reporter.as_deref() {
            None | Some("destination") => Reporter::Destination,
            Some("source") => Reporter::Source,
            Some(other) => {
                return Err(format!(
                    "event {i}: reporter {other:?} is neither \"destination\" nor \"source\""
                ))
            }
        };
        let unknown = || "unknown".to_owned();
        let app = j.app.clone().unwrap_or_else(|| j.workload.clone());
        let version = j.version.clone().unwrap_or_else(unknown);
        let duration_us = (j.duration_ms * 1000.0) as u64;
        let end_us = u64::try_from(j.end_unix_ms.unwrap_or(now))
            .map_err(|_| format!("event {i}: end_unix_ms is negative"))?
            * 1000;
        let peer_ns = j.peer_namespace.clone().unwrap_or_else(unknown);
        let service_name = j.service.clone().unwrap_or_else(|| app.clone());
        let service_ns = if reporter == Reporter::Destination {
            j.namespace.clone()
        } else {
            peer_ns.clone()
        };
        let event = Event {
            reporter,
            start_unix_us: end_us.saturating_sub(duration_us),
            duration_us,
            response_code: j.response_code,
            grpc_status: j.grpc_status,
            response_flags: "-".into(),
            protocol: if j.grpc_status.is_some() {
                Protocol::Grpc
            } else {
                Protocol::Http
            },
            method: j.method.unwrap_or_else(|| "GET".into()),
            request_bytes: 0,
            response_bytes: 0,
            peer: Workload {
                workload: j.peer_workload.unwrap_or_else(unknown),
                namespace: peer_ns,
                app: unknown(),
                version: unknown(),
                canonical_service: unknown(),
                canonical_revision: "latest".into(),
                cluster: unknown(),
            },
            local_principal: unknown(),
            peer_principal: unknown(),
            service: Service {
                host: format!("{service_name}.{service_ns}.svc.cluster.local"),
                name: service_name,
                namespace: service_ns,
            },
            upstream_cluster: String::new(),
            trace_id: None,
            path: None,
        };
        let header = Header {
            local: Workload {
                workload: j.workload,
                namespace: j.namespace,
                canonical_service: app.clone(),
                canonical_revision: version.clone(),
                app,
                version,
                cluster: "Kubernetes".into(),
            },
            mesh_id: "cluster.local".into(),
            ..Header::default()
        };
        let mut b = BatchBuilder::new();
        b.push(&event);
        out.push(waggle_wire::decode(&b.finish(&header)).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Prometheus remote write 1.0 messages (`prompb`), declared by hand: no protoc needed.
mod prompb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

pub use prompb::{Label as RwLabel, Sample as RwSample, TimeSeries as RwTimeSeries, WriteRequest};

fn decode_write(st: &Shared, body: &[u8]) -> Result<WriteRequest, String> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| format!("body is not snappy-compressed (block format): {e}"))?;
    // A tiny body may claim a huge output: bound it before allocating.
    if len > st.settings.max_body_bytes.saturating_mul(8) {
        return Err(format!(
            "snappy body would decompress to {len} bytes, more than allowed"
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("corrupt snappy body: {e}"))?;
    <WriteRequest as prost::Message>::decode(raw.as_slice())
        .map_err(|e| format!("malformed remote-write protobuf: {e}"))
}

fn validate_series(i: usize, ts: &prompb::TimeSeries) -> Result<(), String> {
    if ts.labels.is_empty() {
        return Err(format!("series {i} has no labels"));
    }
    let mut names: Vec<&str> = Vec::with_capacity(ts.labels.len());
    for l in &ts.labels {
        if !crate::families::is_label_name(&l.name) {
            return Err(format!("series {i}: invalid label name {:?}", l.name));
        }
        if l.name == crate::labels::METRIC_NAME && !crate::families::is_metric_name(&l.value) {
            return Err(format!("series {i}: invalid metric name {:?}", l.value));
        }
        if names.contains(&l.name.as_str()) {
            return Err(format!("series {i}: duplicate label name {:?}", l.name));
        }
        names.push(&l.name);
    }
    if ts
        .samples
        .windows(2)
        .any(|w| w[1].timestamp <= w[0].timestamp)
    {
        return Err(format!(
            "series {i}: samples are not in increasing timestamp order"
        ));
    }
    Ok(())
}

pub async fn remote_write(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = admit(&st, &headers, body, true)?;
    let req = decode_write(&st, &body)
        .map_err(|e| refuse(&st, true, Reject::Malformed, ApiError::bad_data(e)))?;
    for (i, ts) in req.timeseries.iter().enumerate() {
        validate_series(i, ts)
            .map_err(|e| refuse(&st, true, Reject::Malformed, ApiError::bad_data(e)))?;
    }
    let total: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
    let now = now_ms();
    let result = {
        let mut db = st
            .db
            .write()
            .map_err(|_| ApiError::new(ErrorType::Internal, "store lock poisoned"))?;
        apply_write(&mut db.store, &req, now)
    };
    match result {
        Ok(()) => {
            st.metrics.samples_written.fetch_add(total as u64, Relaxed);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(e) => {
            st.metrics.samples_rejected.fetch_add(total as u64, Relaxed);
            Err(refuse(
                &st,
                true,
                Reject::Refused,
                ApiError::bad_data(e.to_string()),
            ))
        }
    }
}

/// All or nothing: every series and sample is checked before any is stored.
pub fn apply_write(
    store: &mut crate::store::Store,
    req: &WriteRequest,
    now: i64,
) -> Result<(), Refused> {
    let mut ids = Vec::with_capacity(req.timeseries.len());
    for ts in &req.timeseries {
        let labels: Vec<(&str, &str)> = ts
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        ids.push(store.series(&labels, Kind::Raw)?);
    }
    // Dry run against what is stored, so a bad sample late in the request stores nothing.
    let min_ts = now - store.limits().retention_ms;
    for (ts, id) in req.timeseries.iter().zip(&ids) {
        let labels = || store.labels(*id).to_string();
        if let Some(first) = ts.samples.first() {
            if first.timestamp < min_ts {
                return Err(Refused::TooOld {
                    series: labels(),
                    ts: first.timestamp,
                });
            }
            if let Some((t, v)) = store.newest(*id, now) {
                if first.timestamp < t {
                    return Err(Refused::OutOfOrder {
                        series: labels(),
                        ts: first.timestamp,
                        newest: t,
                    });
                }
                if first.timestamp == t && first.value.to_bits() != v.to_bits() {
                    return Err(Refused::Duplicate {
                        series: labels(),
                        ts: t,
                    });
                }
            }
        }
    }
    for (ts, id) in req.timeseries.iter().zip(&ids) {
        for s in &ts.samples {
            store.append(*id, s.timestamp, s.value, now)?;
        }
    }
    Ok(())
}

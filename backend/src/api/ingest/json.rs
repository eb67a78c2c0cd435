//! The JSON event shape for hand testing (`application/json` on `/v1/events`): an array of
//! events, turned into ordinary batches (one per reporting workload, at most
//! [`waggle_wire::MAX_BATCH_RECORDS`] events each) so the rest of ingest sees one format.

use serde::Deserialize;
use waggle_wire::{Batch, BatchBuilder, Event, Header, Protocol, Reporter, Service, Workload};

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

/// Longest `duration_ms` accepted (the wire format's bound).
const MAX_DURATION_MS: f64 = (waggle_wire::MAX_DURATION_US / 1000) as f64;

/// Parses a JSON body into batches (with their encoding, which the log keeps); the first bad
/// event refuses the whole body.
pub fn batches(body: &[u8], now_ms: i64) -> Result<Vec<(Batch, axum::body::Bytes)>, String> {
    let events: Vec<JsonEvent> =
        serde_json::from_slice(body).map_err(|e| format!("malformed JSON events: {e}"))?;
    // One builder per reporting workload, in order of first appearance.
    let mut groups: Vec<(Header, BatchBuilder, usize)> = Vec::new();
    let mut index: rustc_hash::FxHashMap<[String; 4], usize> = Default::default();
    let mut out = Vec::new();
    for (i, j) in events.into_iter().enumerate() {
        let (header, event) = convert(i, j, now_ms)?;
        let l = &header.local;
        let id = [
            l.workload.clone(),
            l.namespace.clone(),
            l.app.clone(),
            l.version.clone(),
        ];
        let at = *index.entry(id).or_insert_with(|| {
            groups.push((header, BatchBuilder::new(), 0));
            groups.len() - 1
        });
        let (h, b, n) = &mut groups[at];
        b.push(&event);
        *n += 1;
        if *n == waggle_wire::MAX_BATCH_RECORDS {
            out.push(encoded(b.finish(h))?);
            *n = 0;
        }
    }
    for (h, mut b, n) in groups {
        if n > 0 {
            out.push(encoded(b.finish(&h))?);
        }
    }
    Ok(out)
}

fn encoded(bytes: Vec<u8>) -> Result<(Batch, axum::body::Bytes), String> {
    let batch = waggle_wire::decode(&bytes).map_err(|e| e.to_string())?;
    Ok((batch, bytes.into()))
}

fn convert(i: usize, j: JsonEvent, now_ms: i64) -> Result<(Header, Event), String> {
    if !(j.duration_ms.is_finite() && (0.0..=MAX_DURATION_MS).contains(&j.duration_ms)) {
        return Err(format!(
            "event {i}: duration_ms must be a number from 0 to {MAX_DURATION_MS}"
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
    let end_us = u64::try_from(j.end_unix_ms.unwrap_or(now_ms))
        .ok()
        .and_then(|ms| ms.checked_mul(1000))
        .ok_or_else(|| format!("event {i}: end_unix_ms is negative or too large"))?;
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
    Ok((header, event))
}

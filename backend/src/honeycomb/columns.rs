//! The one table of Honeycomb columns: each event field's name, JSON type and where its value
//! comes from, and the encoder that renders a batch's events with it.

use std::fmt::Write as _;

use waggle_wire::{Batch, Key, Protocol, Record, TraceId};

use crate::families::Field;

/// A column's JSON type. Honeycomb fixes a column's type from the first value it sees, so
/// every value of a column is rendered with the same type (durations always carry a fraction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Str,
    Int,
    Float,
    Bool,
}

impl Ty {
    pub fn as_str(self) -> &'static str {
        match self {
            Ty::Str => "string",
            Ty::Int => "integer",
            Ty::Float => "float",
            Ty::Bool => "boolean",
        }
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A mesh field, the same vocabulary the metric families use.
    Field(Field),
    /// The destination canonical service, else the destination workload.
    ServiceName,
    /// 5xx, or any Envoy response flag (the request failed before or without a response).
    Error,
    /// The gRPC status, for gRPC requests only.
    GrpcStatus,
    /// `<workload>.<namespace>` of the reporting sidecar.
    Sidecar,
    VmId,
    Sequence,
    DurationMs,
    RequestBytes,
    ResponseBytes,
    TraceId,
    Path,
}

impl Source {
    /// Whether the value is the same for every record of one request shape in one batch.
    pub fn per_key(self) -> bool {
        !matches!(
            self,
            Source::DurationMs
                | Source::RequestBytes
                | Source::ResponseBytes
                | Source::TraceId
                | Source::Path
        )
    }
}

/// One column: name, type, source, and what it means (the README's table is checked against it).
pub struct Column {
    pub name: &'static str,
    pub ty: Ty,
    pub source: Source,
    pub doc: &'static str,
}

const fn col(name: &'static str, ty: Ty, source: Source, doc: &'static str) -> Column {
    Column {
        name,
        ty,
        source,
        doc,
    }
}

/// Every column waggle sends. Empty strings are left out; so are `url.path` when the filter did
/// not capture it, `trace.trace_id` without a trace, and `rpc.grpc.status_code` outside gRPC.
pub const COLUMNS: &[Column] = &[
    col(
        "service.name",
        Ty::Str,
        Source::ServiceName,
        "destination canonical service, else destination workload",
    ),
    col(
        "k8s.namespace.name",
        Ty::Str,
        Source::Field(Field::DestinationNamespace),
        "destination namespace",
    ),
    col(
        "http.status_code",
        Ty::Int,
        Source::Field(Field::ResponseCode),
        "HTTP status (0 when none was sent)",
    ),
    col(
        "http.response.status_code",
        Ty::Int,
        Source::Field(Field::ResponseCode),
        "the same, by its OpenTelemetry name",
    ),
    col(
        "error",
        Ty::Bool,
        Source::Error,
        "5xx, or any Envoy response flag",
    ),
    col(
        "http.request.method",
        Ty::Str,
        Source::Field(Field::Method),
        "request method",
    ),
    col(
        "rpc.grpc.status_code",
        Ty::Int,
        Source::GrpcStatus,
        "gRPC status, gRPC requests only",
    ),
    col(
        "network.protocol.name",
        Ty::Str,
        Source::Field(Field::RequestProtocol),
        "http or grpc",
    ),
    col(
        "waggle.reporter",
        Ty::Str,
        Source::Field(Field::Reporter),
        "destination (inbound sidecar) or source (outbound)",
    ),
    col(
        "source.workload",
        Ty::Str,
        Source::Field(Field::SourceWorkload),
        "client workload",
    ),
    col(
        "source.namespace",
        Ty::Str,
        Source::Field(Field::SourceNamespace),
        "client namespace",
    ),
    col(
        "source.app",
        Ty::Str,
        Source::Field(Field::SourceApp),
        "client app label",
    ),
    col(
        "source.version",
        Ty::Str,
        Source::Field(Field::SourceVersion),
        "client version label",
    ),
    col(
        "source.principal",
        Ty::Str,
        Source::Field(Field::SourcePrincipal),
        "client SPIFFE identity",
    ),
    col(
        "source.cluster",
        Ty::Str,
        Source::Field(Field::SourceCluster),
        "client cluster",
    ),
    col(
        "destination.workload",
        Ty::Str,
        Source::Field(Field::DestinationWorkload),
        "server workload",
    ),
    col(
        "destination.namespace",
        Ty::Str,
        Source::Field(Field::DestinationNamespace),
        "server namespace",
    ),
    col(
        "destination.app",
        Ty::Str,
        Source::Field(Field::DestinationApp),
        "server app label",
    ),
    col(
        "destination.version",
        Ty::Str,
        Source::Field(Field::DestinationVersion),
        "server version label",
    ),
    col(
        "destination.principal",
        Ty::Str,
        Source::Field(Field::DestinationPrincipal),
        "server SPIFFE identity",
    ),
    col(
        "destination.cluster",
        Ty::Str,
        Source::Field(Field::DestinationCluster),
        "server cluster",
    ),
    col(
        "destination.service",
        Ty::Str,
        Source::Field(Field::DestinationService),
        "destination service host",
    ),
    col(
        "envoy.response_flags",
        Ty::Str,
        Source::Field(Field::ResponseFlags),
        "Envoy response flags (a dash when none)",
    ),
    col(
        "envoy.upstream_cluster",
        Ty::Str,
        Source::Field(Field::UpstreamCluster),
        "upstream cluster (outbound only)",
    ),
    col(
        "meta.sidecar",
        Ty::Str,
        Source::Sidecar,
        "the reporting sidecar, as workload.namespace",
    ),
    col(
        "meta.sidecar.vm_id",
        Ty::Int,
        Source::VmId,
        "the sending Wasm VM (one per Envoy worker)",
    ),
    col(
        "meta.batch_sequence",
        Ty::Int,
        Source::Sequence,
        "the batch's sequence number from that VM",
    ),
    col(
        "duration_ms",
        Ty::Float,
        Source::DurationMs,
        "first request byte to last response byte, ms",
    ),
    col(
        "http.request.body.size",
        Ty::Int,
        Source::RequestBytes,
        "request bytes",
    ),
    col(
        "http.response.body.size",
        Ty::Int,
        Source::ResponseBytes,
        "response bytes",
    ),
    col(
        "trace.trace_id",
        Ty::Str,
        Source::TraceId,
        "trace id, when the request carried one",
    ),
    col(
        "url.path",
        Ty::Str,
        Source::Path,
        "path, when the filter captures it",
    ),
];

/// The column table in Markdown, as the README shows it.
pub fn markdown_table() -> String {
    let mut out = String::from("| field | type | value |\n|---|---|---|\n");
    for c in COLUMNS {
        let _ = writeln!(out, "| `{}` | {} | {} |", c.name, c.ty.as_str(), c.doc);
    }
    out
}

/// The per-shape values of one request shape, rendered once per batch.
pub struct Shape {
    /// `"a":1,"b":"x"` for every per-key column, without braces.
    pub json: Vec<u8>,
    pub service: String,
}

impl Shape {
    pub fn new(batch: &Batch, key: &Key) -> Self {
        let mut json = Vec::with_capacity(768);
        let service = service_name(batch, key);
        for c in COLUMNS.iter().filter(|c| c.source.per_key()) {
            let value: std::borrow::Cow<'_, str> = match c.source {
                Source::Field(f) => f.value(batch, key),
                Source::ServiceName => service.as_str().into(),
                Source::Error => {
                    let flagged = !matches!(batch.str(key.response_flags), "" | "-");
                    if key.response_code >= 500 || flagged {
                        "true".into()
                    } else {
                        "false".into()
                    }
                }
                Source::GrpcStatus => match (key.protocol, key.grpc_status) {
                    (Protocol::Grpc, Some(g)) => g.to_string().into(),
                    _ => "".into(),
                },
                Source::Sidecar => format!(
                    "{}.{}",
                    batch.header.local.workload, batch.header.local.namespace
                )
                .into(),
                Source::VmId => batch.header.vm_id.to_string().into(),
                Source::Sequence => batch.header.sequence.to_string().into(),
                _ => continue,
            };
            if value.is_empty() {
                continue;
            }
            if !json.is_empty() {
                json.push(b',');
            }
            push_str(&mut json, c.name);
            json.push(b':');
            match c.ty {
                Ty::Str => push_str(&mut json, &value),
                _ => json.extend_from_slice(value.as_bytes()),
            }
        }
        Self { json, service }
    }
}

/// `service.name`: the canonical service, falling back to the workload, of the destination.
pub fn service_name(batch: &Batch, key: &Key) -> String {
    let svc = Field::DestinationCanonicalService.value(batch, key);
    if svc.is_empty() || svc == "unknown" {
        Field::DestinationWorkload.value(batch, key).into_owned()
    } else {
        svc.into_owned()
    }
}

/// Appends one whole event, `{"time":…,"samplerate":…,"data":{…}}`, to `out`.
pub fn push_event(
    out: &mut Vec<u8>,
    clock: &mut TimeCache,
    batch: &Batch,
    shape: &Shape,
    rec: &Record,
    samplerate: u32,
) {
    out.extend_from_slice(b"{\"time\":\"");
    clock.push(out, rec.start_unix_us);
    out.extend_from_slice(b"\",\"samplerate\":");
    push_u64(out, u64::from(samplerate));
    out.extend_from_slice(b",\"data\":{");
    out.extend_from_slice(&shape.json);
    let mut first = shape.json.is_empty();
    for c in COLUMNS.iter().filter(|c| !c.source.per_key()) {
        let absent = match c.source {
            Source::TraceId => rec.trace_id.is_none(),
            Source::Path => rec.path.is_none_or(|p| batch.str(p).is_empty()),
            _ => false,
        };
        if absent {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(c.name.as_bytes());
        out.extend_from_slice(b"\":");
        match c.source {
            Source::DurationMs => {
                push_u64(out, rec.duration_us / 1000);
                let frac = rec.duration_us % 1000;
                out.extend_from_slice(&[
                    b'.',
                    b'0' + (frac / 100) as u8,
                    b'0' + (frac / 10 % 10) as u8,
                    b'0' + (frac % 10) as u8,
                ]);
            }
            Source::RequestBytes => push_u64(out, rec.request_bytes),
            Source::ResponseBytes => push_u64(out, rec.response_bytes),
            Source::TraceId => match &rec.trace_id {
                Some(TraceId::Hex64(b)) => push_hex(out, b),
                Some(TraceId::Hex128(b)) => push_hex(out, b),
                Some(TraceId::Other(r)) => push_str(out, batch.str(*r)),
                None => push_str(out, ""),
            },
            Source::Path => push_str(out, rec.path.map_or("", |p| batch.str(p))),
            _ => push_str(out, ""),
        }
    }
    out.extend_from_slice(b"}}");
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(b) = buf.get_mut(i) {
            *b = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(buf.get(i..).unwrap_or_default());
}

/// Appends `v` as a JSON string. Only ASCII bytes ever need escaping, so UTF-8 passes through.
fn push_str(out: &mut Vec<u8>, v: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in v.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if c < 0x20 => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 15)]);
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
}

/// Appends trace id bytes as a quoted lowercase hex string, as `Batch::trace_id` spells them.
fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
    out.push(b'"');
}

/// RFC 3339 UTC with nanoseconds; the date part is formatted once per second.
#[derive(Default)]
pub struct TimeCache {
    second: Option<u64>,
    prefix: String,
}

impl TimeCache {
    pub fn push(&mut self, out: &mut Vec<u8>, unix_us: u64) {
        let second = unix_us / 1_000_000;
        if self.second != Some(second) {
            self.second = Some(second);
            self.prefix = i64::try_from(second)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string();
        }
        out.extend_from_slice(self.prefix.as_bytes());
        // Microseconds padded to six digits, then three zeros: nanosecond precision.
        let mut frac = *b".000000000Z";
        let mut us = unix_us % 1_000_000;
        for d in (1..=6).rev() {
            if let Some(b) = frac.get_mut(d) {
                *b = b'0' + (us % 10) as u8;
            }
            us /= 10;
        }
        out.extend_from_slice(&frac);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waggle_wire::{sample, BatchBuilder};

    fn batch(n: usize, seed: u64) -> Batch {
        let mut b = BatchBuilder::new();
        for e in sample::inbound(n, seed, true) {
            b.push(&e);
        }
        waggle_wire::decode(&b.finish(&sample::header(3))).unwrap()
    }

    fn events(batch: &Batch) -> Vec<serde_json::Value> {
        let mut clock = TimeCache::default();
        batch
            .records
            .iter()
            .map(|r| {
                let key = batch.keys.get(r.key as usize).unwrap();
                let mut out = Vec::new();
                push_event(&mut out, &mut clock, batch, &Shape::new(batch, key), r, 1);
                serde_json::from_slice(&out).unwrap()
            })
            .collect()
    }

    #[test]
    fn every_value_has_its_columns_type() {
        let batch = batch(200, 7);
        for ev in events(&batch) {
            let data = ev["data"].as_object().unwrap();
            for (k, v) in data {
                let c = COLUMNS.iter().find(|c| c.name == k).expect(k);
                let ok = match c.ty {
                    Ty::Str => v.is_string(),
                    Ty::Int => v.is_u64(),
                    Ty::Float => v.is_f64(),
                    Ty::Bool => v.is_boolean(),
                };
                assert!(ok, "{k} = {v} is not {:?}", c.ty);
            }
            for required in [
                "service.name",
                "duration_ms",
                "http.status_code",
                "error",
                "meta.sidecar",
            ] {
                assert!(data.contains_key(required), "{required} missing from {ev}");
            }
        }
    }

    #[test]
    fn values_follow_the_event() {
        let batch = batch(300, 11);
        let json = events(&batch);
        for (rec, ev) in batch.records.iter().zip(&json) {
            let e = batch.event(rec);
            let d = &ev["data"];
            let ms = d["duration_ms"].as_f64().unwrap();
            assert!(
                (ms * 1000.0 - e.duration_us as f64).abs() < 0.5,
                "{ms} vs {}",
                e.duration_us
            );
            assert_eq!(d["http.status_code"], u64::from(e.response_code));
            assert_eq!(d["http.response.status_code"], u64::from(e.response_code));
            let error = e.response_code >= 500 || e.response_flags != "-";
            assert_eq!(d["error"], error, "{e:?}");
            assert_eq!(d["http.request.method"], e.method.as_str());
            assert_eq!(d["trace.trace_id"].as_str(), e.trace_id.as_deref());
            assert_eq!(d["http.request.body.size"], e.request_bytes);
            assert_eq!(
                d["source.workload"],
                e.peer.workload.as_str(),
                "inbound: the peer is the source"
            );
            assert_eq!(
                d["destination.workload"],
                batch.header.local.workload.as_str()
            );
            let svc = if batch.header.local.canonical_service.is_empty()
                || batch.header.local.canonical_service == "unknown"
            {
                &batch.header.local.workload
            } else {
                &batch.header.local.canonical_service
            };
            assert_eq!(d["service.name"], svc.as_str());
            let t = chrono::DateTime::parse_from_rfc3339(ev["time"].as_str().unwrap()).unwrap();
            assert_eq!(t.timestamp_micros() as u64, e.start_unix_us);
            assert_eq!(
                ev["time"].as_str().unwrap().len(),
                "2026-01-01T00:00:00.000000000Z".len()
            );
            assert_eq!(
                d["rpc.grpc.status_code"].as_u64(),
                match e.protocol {
                    Protocol::Grpc => e.grpc_status.map(u64::from),
                    Protocol::Http => None,
                }
            );
        }
    }

    #[test]
    fn numbers_are_rendered_exactly() {
        for n in [0u64, 7, 10, 999, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
        let mut out = Vec::new();
        TimeCache::default().push(&mut out, 1_767_225_600_000_001);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-01-01T00:00:00.000001000Z"
        );
    }

    #[test]
    fn strings_are_escaped() {
        let mut s = Vec::new();
        push_str(&mut s, "a\"b\\c\n\u{1}é");
        assert_eq!(
            serde_json::from_slice::<String>(&s).unwrap(),
            "a\"b\\c\n\u{1}é"
        );
    }

    /// The README's field table is this table; on a mismatch the message holds the new one.
    #[test]
    fn the_readme_lists_every_column() {
        let readme = include_str!("../../../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's Honeycomb field table is out of date; replace it with:\n{table}"
        );
    }

    #[test]
    fn names_are_unique() {
        for (i, c) in COLUMNS.iter().enumerate() {
            assert!(
                COLUMNS.iter().skip(i + 1).all(|d| d.name != c.name),
                "{}",
                c.name
            );
        }
    }
}

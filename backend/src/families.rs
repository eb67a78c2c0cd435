//! The one table that turns mesh events into metric families: names, kinds, buckets and where
//! each label's value comes from. Built-ins are defined here; configuration can add more with
//! the same vocabulary (see [`FamilyConfig`]).

use std::borrow::Cow;

use serde::Deserialize;
use waggle_wire::{Batch, Key, Protocol, Reporter};

/// Where a label's value comes from. `source_*`/`destination_*` resolve to the local or the
/// peer workload depending on the reporter, as Istio's stats filter does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Reporter,
    SourceWorkload,
    SourceNamespace,
    SourceApp,
    SourceVersion,
    SourceCanonicalService,
    SourceCanonicalRevision,
    SourceCluster,
    SourcePrincipal,
    DestinationWorkload,
    DestinationNamespace,
    DestinationApp,
    DestinationVersion,
    DestinationCanonicalService,
    DestinationCanonicalRevision,
    DestinationCluster,
    DestinationPrincipal,
    DestinationService,
    DestinationServiceName,
    DestinationServiceNamespace,
    RequestProtocol,
    ResponseCode,
    GrpcResponseStatus,
    ResponseFlags,
    ConnectionSecurityPolicy,
    Method,
    UpstreamCluster,
    MeshId,
}

/// Field names as configuration spells them (Istio's label names where there is one).
pub const FIELDS: [(&str, Field); 28] = [
    ("reporter", Field::Reporter),
    ("source_workload", Field::SourceWorkload),
    ("source_workload_namespace", Field::SourceNamespace),
    ("source_app", Field::SourceApp),
    ("source_version", Field::SourceVersion),
    ("source_canonical_service", Field::SourceCanonicalService),
    ("source_canonical_revision", Field::SourceCanonicalRevision),
    ("source_cluster", Field::SourceCluster),
    ("source_principal", Field::SourcePrincipal),
    ("destination_workload", Field::DestinationWorkload),
    (
        "destination_workload_namespace",
        Field::DestinationNamespace,
    ),
    ("destination_app", Field::DestinationApp),
    ("destination_version", Field::DestinationVersion),
    (
        "destination_canonical_service",
        Field::DestinationCanonicalService,
    ),
    (
        "destination_canonical_revision",
        Field::DestinationCanonicalRevision,
    ),
    ("destination_cluster", Field::DestinationCluster),
    ("destination_principal", Field::DestinationPrincipal),
    ("destination_service", Field::DestinationService),
    ("destination_service_name", Field::DestinationServiceName),
    (
        "destination_service_namespace",
        Field::DestinationServiceNamespace,
    ),
    ("request_protocol", Field::RequestProtocol),
    ("response_code", Field::ResponseCode),
    ("grpc_response_status", Field::GrpcResponseStatus),
    ("response_flags", Field::ResponseFlags),
    (
        "connection_security_policy",
        Field::ConnectionSecurityPolicy,
    ),
    ("method", Field::Method),
    ("upstream_cluster", Field::UpstreamCluster),
    ("mesh_id", Field::MeshId),
];

impl Field {
    pub fn parse(name: &str) -> Option<Field> {
        FIELDS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// This field's value for one request shape of a batch.
    pub fn value<'a>(self, batch: &'a Batch, key: &Key) -> Cow<'a, str> {
        let dest = key.reporter == waggle_wire::Reporter::Destination;
        let local = &batch.header.local;
        let s = |r: u32| Cow::Borrowed(batch.str(r));
        let l = |v: &'a String| Cow::Borrowed(v.as_str());
        // (source side, destination side) of one workload attribute.
        let side = |from_local: &'a String, peer: u32, source: bool| {
            if dest != source {
                l(from_local)
            } else {
                s(peer)
            }
        };
        use Field::*;
        match self {
            Reporter => Cow::Borrowed(key.reporter.as_str()),
            SourceWorkload => side(&local.workload, key.peer.workload, true),
            SourceNamespace => side(&local.namespace, key.peer.namespace, true),
            SourceApp => side(&local.app, key.peer.app, true),
            SourceVersion => side(&local.version, key.peer.version, true),
            SourceCanonicalService => {
                side(&local.canonical_service, key.peer.canonical_service, true)
            }
            SourceCanonicalRevision => {
                side(&local.canonical_revision, key.peer.canonical_revision, true)
            }
            SourceCluster => side(&local.cluster, key.peer.cluster, true),
            DestinationWorkload => side(&local.workload, key.peer.workload, false),
            DestinationNamespace => side(&local.namespace, key.peer.namespace, false),
            DestinationApp => side(&local.app, key.peer.app, false),
            DestinationVersion => side(&local.version, key.peer.version, false),
            DestinationCanonicalService => {
                side(&local.canonical_service, key.peer.canonical_service, false)
            }
            DestinationCanonicalRevision => side(
                &local.canonical_revision,
                key.peer.canonical_revision,
                false,
            ),
            DestinationCluster => side(&local.cluster, key.peer.cluster, false),
            SourcePrincipal => s(if dest {
                key.peer_principal
            } else {
                key.local_principal
            }),
            DestinationPrincipal => s(if dest {
                key.local_principal
            } else {
                key.peer_principal
            }),
            DestinationService => s(key.service.host),
            DestinationServiceName => s(key.service.name),
            DestinationServiceNamespace => s(key.service.namespace),
            RequestProtocol => Cow::Borrowed(key.protocol.as_str()),
            ResponseCode => small_int(u32::from(key.response_code)),
            GrpcResponseStatus => match (key.protocol, key.grpc_status) {
                (Protocol::Grpc, Some(g)) => small_int(g),
                _ => Cow::Borrowed(""),
            },
            ResponseFlags => s(key.response_flags),
            ConnectionSecurityPolicy => Cow::Borrowed(if !dest {
                "unknown"
            } else if batch.str(key.peer_principal) != "unknown"
                && batch.str(key.local_principal) != "unknown"
            {
                "mutual_tls"
            } else {
                "none"
            }),
            Method => s(key.method),
            UpstreamCluster => s(key.upstream_cluster),
            MeshId => l(&batch.header.mesh_id),
        }
    }
}

/// Decimal strings of 0..1000, made once: status codes are rendered for every request shape.
fn small_int(n: u32) -> Cow<'static, str> {
    static TABLE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| (0..1000).map(|i: u32| i.to_string()).collect());
    match table.get(n as usize) {
        Some(s) => Cow::Borrowed(s.as_str()),
        None => Cow::Owned(n.to_string()),
    }
}

/// What a family counts per event, in integer base units (µs for durations, bytes for sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    Requests,
    DurationMs,
    DurationSeconds,
    RequestBytes,
    ResponseBytes,
}

impl Measure {
    /// Base units per unit of the family's values.
    pub fn base_per_unit(self) -> f64 {
        match self {
            Measure::DurationMs => 1e3,
            Measure::DurationSeconds => 1e6,
            Measure::Requests | Measure::RequestBytes | Measure::ResponseBytes => 1.0,
        }
    }

    pub fn of(self, record: &waggle_wire::Record) -> u64 {
        match self {
            Measure::Requests => 1,
            Measure::DurationMs | Measure::DurationSeconds => record.duration_us,
            Measure::RequestBytes => record.request_bytes,
            Measure::ResponseBytes => record.response_bytes,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Counter,
    /// Upper bounds in the family's unit, ascending; `+Inf` is implied.
    Histogram(Vec<f64>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub measure: Measure,
    pub labels: Vec<(String, Field)>,
    /// Only events of this reporter (e.g. Envoy cluster stats come from the client side).
    pub reporter: Option<Reporter>,
}

/// Envoy's default histogram buckets, which Istio's duration and size histograms use (ms).
pub const ENVOY_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The Prometheus client libraries' default buckets (seconds).
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Istio's standard label set, in its emission order.
pub const ISTIO_LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, Field)> {
    pairs
        .iter()
        .filter_map(|(label, field)| Field::parse(field).map(|f| (label.to_string(), f)))
        .collect()
}

fn istio_labels() -> Vec<(String, Field)> {
    labels(&ISTIO_LABELS.map(|l| (l, l)))
}

/// The built-in families.
pub fn builtin() -> Vec<Family> {
    let hist =
        |name: &str, measure, buckets: &[f64], labels: Vec<(String, Field)>, reporter| Family {
            name: name.into(),
            kind: Kind::Histogram(buckets.to_vec()),
            measure,
            labels,
            reporter,
        };
    let counter = |name: &str, labels: Vec<(String, Field)>, reporter| Family {
        name: name.into(),
        kind: Kind::Counter,
        measure: Measure::Requests,
        labels,
        reporter,
    };
    let cluster = labels(&[("envoy_cluster_name", "upstream_cluster")]);
    let http = labels(&[
        ("service", "destination_canonical_service"),
        ("namespace", "destination_workload_namespace"),
        ("workload", "destination_workload"),
        ("code", "response_code"),
        ("method", "method"),
    ]);
    vec![
        counter("istio_requests_total", istio_labels(), None),
        hist(
            "istio_request_duration_milliseconds",
            Measure::DurationMs,
            &ENVOY_BUCKETS,
            istio_labels(),
            None,
        ),
        hist(
            "istio_request_bytes",
            Measure::RequestBytes,
            &ENVOY_BUCKETS,
            istio_labels(),
            None,
        ),
        hist(
            "istio_response_bytes",
            Measure::ResponseBytes,
            &ENVOY_BUCKETS,
            istio_labels(),
            None,
        ),
        counter(
            "envoy_cluster_upstream_rq",
            labels(&[
                ("envoy_cluster_name", "upstream_cluster"),
                ("envoy_response_code", "response_code"),
            ]),
            Some(Reporter::Source),
        ),
        counter(
            "envoy_cluster_upstream_rq_total",
            cluster.clone(),
            Some(Reporter::Source),
        ),
        hist(
            "envoy_cluster_upstream_rq_time",
            Measure::DurationMs,
            &ENVOY_BUCKETS,
            cluster,
            Some(Reporter::Source),
        ),
        counter(
            "http_requests_total",
            http.clone(),
            Some(Reporter::Destination),
        ),
        hist(
            "http_request_duration_seconds",
            Measure::DurationSeconds,
            &DEFAULT_BUCKETS,
            http,
            Some(Reporter::Destination),
        ),
    ]
}

/// A family as configuration declares it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyConfig {
    pub name: String,
    /// `counter` or `histogram`.
    pub kind: String,
    #[serde(default = "requests")]
    pub measure: Measure,
    #[serde(default)]
    pub buckets: Vec<f64>,
    /// Only `source` or `destination` events.
    pub reporter: Option<String>,
    /// Label name → field name (see [`FIELDS`]).
    pub labels: std::collections::BTreeMap<String, String>,
}

fn requests() -> Measure {
    Measure::Requests
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metric family {family:?}: {reason}")]
pub struct FamilyError {
    pub family: String,
    pub reason: String,
}

impl FamilyConfig {
    pub fn build(&self) -> Result<Family, FamilyError> {
        let err = |reason: String| FamilyError {
            family: self.name.clone(),
            reason,
        };
        if !is_metric_name(&self.name) {
            return Err(err("is not a valid metric name".into()));
        }
        let kind = match self.kind.as_str() {
            "counter" => Kind::Counter,
            "histogram" => {
                if self.buckets.is_empty()
                    || self.buckets.windows(2).any(|w| w[0] >= w[1])
                    || self.buckets.iter().any(|b| !b.is_finite())
                {
                    return Err(err(
                        "histogram buckets must be finite, ascending and non-empty".into(),
                    ));
                }
                Kind::Histogram(self.buckets.clone())
            }
            other => {
                return Err(err(format!(
                    "kind {other:?} is neither \"counter\" nor \"histogram\""
                )))
            }
        };
        let reporter = match self.reporter.as_deref() {
            None => None,
            Some("source") => Some(Reporter::Source),
            Some("destination") => Some(Reporter::Destination),
            Some(other) => {
                return Err(err(format!(
                    "reporter {other:?} is neither \"source\" nor \"destination\""
                )))
            }
        };
        let mut labels = Vec::new();
        for (label, field) in &self.labels {
            if !is_label_name(label) || label.starts_with("__") {
                return Err(err(format!("{label:?} is not a valid label name")));
            }
            let f = Field::parse(field).ok_or_else(|| {
                let known: Vec<&str> = FIELDS.iter().map(|(n, _)| *n).collect();
                err(format!(
                    "label {label:?}: unknown field {field:?}; known fields: {}",
                    known.join(", ")
                ))
            })?;
            labels.push((label.clone(), f));
        }
        Ok(Family {
            name: self.name.clone(),
            kind,
            measure: self.measure,
            labels,
            reporter,
        })
    }
}

pub fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

pub fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Prometheus's rendering of a bucket bound (`le`), as Go's `FormatFloat(v, 'f', -1, 64)`.
pub fn le(bound: f64) -> String {
    if bound.is_infinite() {
        return "+Inf".into();
    }
    format!("{bound}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use waggle_wire::sample;

    #[test]
    fn every_istio_label_is_a_field() {
        for l in ISTIO_LABELS {
            assert!(Field::parse(l).is_some(), "{l}");
        }
        assert_eq!(istio_labels().len(), 25);
    }

    #[test]
    fn fields_resolve_by_reporter() {
        let mut b = waggle_wire::BatchBuilder::new();
        let mut inbound = sample::inbound(1, 3, false).remove(0);
        b.push(&inbound);
        inbound.reporter = Reporter::Source;
        b.push(&inbound);
        let batch = waggle_wire::decode(&b.finish(&sample::header(0))).unwrap();
        let (dest, src) = (&batch.keys[0], &batch.keys[1]);
        assert_eq!(Field::DestinationWorkload.value(&batch, dest), "reviews-v1");
        assert_eq!(
            Field::SourceWorkload.value(&batch, dest),
            inbound.peer.workload
        );
        assert_eq!(
            Field::DestinationWorkload.value(&batch, src),
            inbound.peer.workload
        );
        assert_eq!(Field::SourceWorkload.value(&batch, src), "reviews-v1");
        assert_eq!(
            Field::ConnectionSecurityPolicy.value(&batch, dest),
            "mutual_tls"
        );
        assert_eq!(
            Field::ConnectionSecurityPolicy.value(&batch, src),
            "unknown"
        );
        assert_eq!(Field::Reporter.value(&batch, dest), "destination");
        assert_eq!(Field::GrpcResponseStatus.value(&batch, dest), "");
    }

    #[test]
    fn configured_families_are_validated() {
        let ok: FamilyConfig = toml::from_str(
            r#"name = "checkout_requests_total"
               kind = "counter"
               reporter = "destination"
               labels = { service = "destination_canonical_service", code = "response_code" }"#,
        )
        .unwrap();
        let f = ok.build().unwrap();
        assert_eq!(f.labels.len(), 2);
        let cases = [
            (
                r#"name = "1bad"
                kind = "counter"
                labels = {}"#,
                "not a valid metric name",
            ),
            (
                r#"name = "x"
                kind = "gauge"
                labels = {}"#,
                "kind \"gauge\"",
            ),
            (
                r#"name = "x"
                kind = "histogram"
                buckets = [2.0, 1.0]
                labels = {}"#,
                "ascending",
            ),
            (
                r#"name = "x"
                kind = "counter"
                labels = { a = "nope" }"#,
                "unknown field \"nope\"",
            ),
            (
                r#"name = "x"
                kind = "counter"
                reporter = "both"
                labels = {}"#,
                "reporter \"both\"",
            ),
        ];
        for (src, want) in cases {
            let cfg: FamilyConfig = toml::from_str(src).unwrap();
            let e = cfg.build().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn le_renders_like_prometheus() {
        assert_eq!(le(0.5), "0.5");
        assert_eq!(le(3_600_000.0), "3600000");
        assert_eq!(le(f64::INFINITY), "+Inf");
        assert_eq!(le(0.005), "0.005");
    }
}

//! The one table that turns mesh events into metric families: names, kinds, buckets and where
//! each label's value comes from. Built-ins are defined here; configuration can add more with
//! the same vocabulary (see [`FamilyConfig`]).

use std::borrow::Cow;

use serde::Deserialize;
use waggle_wire::{Batch, Key, MeshKind, Protocol, Reporter};

mod builtin;
mod config;

pub use builtin::{builtin, DEFAULT_BUCKETS, ENVOY_BUCKETS, ISTIO_LABELS};
pub use config::{with_configured, FamilyConfig, FamilyError};

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
    /// The upstream cluster as Envoy's stats name it (`:` becomes `_`, so Kuma's local
    /// `localhost:9898` is `localhost_9898`).
    UpstreamClusterStatName,
    MeshId,
    /// Which mesh's sidecar reported: `istio` or `kuma`.
    Mesh,
    /// The reporting sidecar's own service: inbound, the service the request came in for;
    /// outbound, the sidecar's canonical service (Kuma: its `kuma.io/service`).
    LocalService,
    LocalWorkload,
    LocalNamespace,
    /// The reporting sidecar's cluster: Istio's cluster id, Kuma's zone.
    LocalCluster,
    /// The reporting sidecar's Kuma dataplane name: `<pod>.<namespace>` on Kubernetes.
    Dataplane,
}

/// Field names as configuration spells them (Istio's label names where there is one).
pub const FIELDS: [(&str, Field); 35] = [
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
    ("upstream_cluster_stat_name", Field::UpstreamClusterStatName),
    ("mesh_id", Field::MeshId),
    ("mesh_kind", Field::Mesh),
    ("local_service", Field::LocalService),
    ("local_workload", Field::LocalWorkload),
    ("local_namespace", Field::LocalNamespace),
    ("local_cluster", Field::LocalCluster),
    ("dataplane", Field::Dataplane),
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
            UpstreamClusterStatName => {
                let c = batch.str(key.upstream_cluster);
                if c.contains(':') {
                    Cow::Owned(c.replace(':', "_"))
                } else {
                    Cow::Borrowed(c)
                }
            }
            MeshId => l(&batch.header.mesh_id),
            Mesh => Cow::Borrowed(batch.header.mesh.as_str()),
            LocalService => {
                if dest {
                    s(key.service.name)
                } else {
                    l(&local.canonical_service)
                }
            }
            LocalWorkload => l(&local.workload),
            LocalNamespace => l(&local.namespace),
            LocalCluster => l(&local.cluster),
            Dataplane => {
                if local.namespace == "unknown" {
                    l(&local.workload)
                } else {
                    Cow::Owned(format!("{}.{}", local.workload, local.namespace))
                }
            }
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
    /// Only events of this reporter (e.g. Istio's Envoy cluster stats come from the client side).
    pub reporter: Option<Reporter>,
    /// Only events from this mesh's sidecars (e.g. Kuma labels its cluster stats its own way).
    pub mesh: Option<MeshKind>,
}

impl Family {
    /// Whether events of this reporter, from this mesh's sidecars, feed the family.
    pub fn takes(&self, reporter: Reporter, mesh: MeshKind) -> bool {
        self.reporter.is_none_or(|r| r == reporter) && self.mesh.is_none_or(|m| m == mesh)
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
    fn le_renders_like_prometheus() {
        assert_eq!(le(0.5), "0.5");
        assert_eq!(le(3_600_000.0), "3600000");
        assert_eq!(le(f64::INFINITY), "+Inf");
        assert_eq!(le(0.005), "0.005");
    }
}

//! The built-in families: Istio's standard metrics, Envoy's cluster stats as Istio and as Kuma
//! expose them, and the app-level HTTP metrics Flagger's HttpObserver reads.

use waggle_wire::{MeshKind, Reporter};

use super::{Family, Field, Kind, Measure};

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

/// The labels Kuma's Prometheus puts on a dataplane's Envoy stats: the *scraped* (here: the
/// reporting) sidecar's own identity, from its MADS target and the `kuma-dataplanes` job's
/// relabelling (`shared/reference/kuma.md` §5.1). `service` is the label Kuma dropped in 2.9 and
/// Flagger's built-in queries still select on; `kuma_io_service` always holds the same value.
pub const KUMA_LABELS: [(&str, &str); 7] = [
    ("kuma_io_service", "local_service"),
    ("service", "local_service"),
    ("mesh", "mesh_id"),
    ("kuma_io_zone", "local_cluster"),
    ("dataplane", "dataplane"),
    ("namespace", "local_namespace"),
    ("pod", "local_workload"),
];

/// The built-in families.
pub fn builtin() -> Vec<Family> {
    // (reporter, mesh) events a family takes.
    type Scope = (Option<Reporter>, Option<MeshKind>);
    let hist = |name: &str,
                measure,
                buckets: &[f64],
                labels: Vec<(String, Field)>,
                (reporter, mesh): Scope| Family {
        name: name.into(),
        kind: Kind::Histogram(buckets.to_vec()),
        measure,
        labels,
        reporter,
        mesh,
    };
    let counter = |name: &str, labels: Vec<(String, Field)>, (reporter, mesh): Scope| Family {
        name: name.into(),
        kind: Kind::Counter,
        measure: Measure::Requests,
        labels,
        reporter,
        mesh,
    };
    let all: Scope = (None, None);
    // Istio's sidecars report Envoy's cluster stats from the client side only (outbound).
    let istio_client: Scope = (Some(Reporter::Source), Some(MeshKind::Istio));
    // Kuma's Prometheus shows every cluster of the scraped sidecar: inbound ones too.
    let kuma: Scope = (None, Some(MeshKind::Kuma));
    let cluster = labels(&[("envoy_cluster_name", "upstream_cluster")]);
    let code = ("envoy_response_code", "response_code");
    let kuma_cluster = |with_code: bool| {
        let mut l = vec![("envoy_cluster_name", "upstream_cluster_stat_name")];
        if with_code {
            l.push(code);
        }
        l.extend(KUMA_LABELS);
        labels(&l)
    };
    let http = labels(&[
        ("service", "destination_canonical_service"),
        ("namespace", "destination_workload_namespace"),
        ("workload", "destination_workload"),
        ("code", "response_code"),
        ("method", "method"),
    ]);
    let destination: Scope = (Some(Reporter::Destination), None);
    vec![
        counter("istio_requests_total", istio_labels(), all),
        hist(
            "istio_request_duration_milliseconds",
            Measure::DurationMs,
            &ENVOY_BUCKETS,
            istio_labels(),
            all,
        ),
        hist(
            "istio_request_bytes",
            Measure::RequestBytes,
            &ENVOY_BUCKETS,
            istio_labels(),
            all,
        ),
        hist(
            "istio_response_bytes",
            Measure::ResponseBytes,
            &ENVOY_BUCKETS,
            istio_labels(),
            all,
        ),
        counter(
            "envoy_cluster_upstream_rq",
            labels(&[("envoy_cluster_name", "upstream_cluster"), code]),
            istio_client,
        ),
        counter(
            "envoy_cluster_upstream_rq_total",
            cluster.clone(),
            istio_client,
        ),
        hist(
            "envoy_cluster_upstream_rq_time",
            Measure::DurationMs,
            &ENVOY_BUCKETS,
            cluster,
            istio_client,
        ),
        counter("envoy_cluster_upstream_rq", kuma_cluster(true), kuma),
        counter("envoy_cluster_upstream_rq_total", kuma_cluster(false), kuma),
        hist(
            "envoy_cluster_upstream_rq_time",
            Measure::DurationMs,
            &ENVOY_BUCKETS,
            kuma_cluster(false),
            kuma,
        ),
        counter("http_requests_total", http.clone(), destination),
        hist(
            "http_request_duration_seconds",
            Measure::DurationSeconds,
            &DEFAULT_BUCKETS,
            http,
            destination,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kuma_label_is_a_field_and_scopes_do_not_overlap() {
        for (_, f) in KUMA_LABELS {
            assert!(Field::parse(f).is_some(), "{f}");
        }
        let b = builtin();
        for (i, x) in b.iter().enumerate() {
            for y in &b[i + 1..] {
                let overlap = [Reporter::Source, Reporter::Destination]
                    .into_iter()
                    .any(|r| {
                        [MeshKind::Istio, MeshKind::Kuma]
                            .into_iter()
                            .any(|m| x.takes(r, m) && y.takes(r, m))
                    });
                assert!(
                    x.name != y.name || !overlap,
                    "{} twice for the same events",
                    x.name
                );
            }
        }
    }

    /// The labels each family resolves to for one event of `reporter` from a `mesh` sidecar.
    fn resolved(mesh: MeshKind, reporter: Reporter) -> Vec<(String, Vec<(String, String)>)> {
        let mut e = waggle_wire::sample::inbound(1, 3, false).remove(0);
        e.reporter = reporter;
        e.upstream_cluster = match reporter {
            Reporter::Destination => "localhost:9898".into(),
            Reporter::Source => "podinfo-canary_test_svc_9898".into(),
        };
        e.service.name = "podinfo-canary_test_svc_9898".into();
        let mut b = waggle_wire::BatchBuilder::new();
        b.push(&e);
        let mut h = waggle_wire::sample::header(0);
        h.mesh = mesh;
        h.local.workload = "podinfo-canary-7d9f-abcde".into();
        h.local.namespace = "test".into();
        h.local.canonical_service = "podinfo-canary_test_svc_9898".into();
        h.local.cluster = "zone-1".into();
        h.mesh_id = "default".into();
        let batch = waggle_wire::decode(&b.finish(&h)).unwrap();
        let key = &batch.keys[0];
        builtin()
            .into_iter()
            .filter(|f| f.takes(reporter, mesh))
            .map(|f| {
                let labels = f
                    .labels
                    .iter()
                    .map(|(l, field)| (l.clone(), field.value(&batch, key).into_owned()))
                    .collect();
                (f.name, labels)
            })
            .collect()
    }

    #[test]
    fn kuma_sidecars_feed_cluster_stats_from_both_sides_with_their_own_identity() {
        for (reporter, cluster) in [
            (Reporter::Destination, "localhost_9898"),
            (Reporter::Source, "podinfo-canary_test_svc_9898"),
        ] {
            let got = resolved(MeshKind::Kuma, reporter);
            let (_, labels) = got
                .iter()
                .find(|(n, _)| n == "envoy_cluster_upstream_rq")
                .unwrap_or_else(|| panic!("{reporter:?}: {got:?}"));
            let want = [
                ("envoy_cluster_name", cluster),
                ("envoy_response_code", "200"),
                ("kuma_io_service", "podinfo-canary_test_svc_9898"),
                ("service", "podinfo-canary_test_svc_9898"),
                ("mesh", "default"),
                ("kuma_io_zone", "zone-1"),
                ("dataplane", "podinfo-canary-7d9f-abcde.test"),
                ("namespace", "test"),
                ("pod", "podinfo-canary-7d9f-abcde"),
            ];
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(l, v)| (l.to_string(), v.to_string()))
                .collect();
            assert_eq!(labels, &want, "{reporter:?}");
            assert_eq!(
                got.iter()
                    .filter(|(n, _)| n.starts_with("envoy_cluster"))
                    .count(),
                3
            );
        }
        // Istio sidecars: as before, client side only, two labels, the cluster name unchanged.
        assert!(!resolved(MeshKind::Istio, Reporter::Destination)
            .iter()
            .any(|(n, _)| n.starts_with("envoy_cluster")));
        let istio = resolved(MeshKind::Istio, Reporter::Source);
        let (_, labels) = istio
            .iter()
            .find(|(n, _)| n == "envoy_cluster_upstream_rq")
            .unwrap();
        assert_eq!(
            labels,
            &vec![
                (
                    "envoy_cluster_name".to_owned(),
                    "podinfo-canary_test_svc_9898".to_owned()
                ),
                ("envoy_response_code".to_owned(), "200".to_owned())
            ]
        );
    }

    #[test]
    fn every_istio_label_is_a_field() {
        for l in ISTIO_LABELS {
            assert!(Field::parse(l).is_some(), "{l}");
        }
        assert_eq!(istio_labels().len(), 25);
    }
}

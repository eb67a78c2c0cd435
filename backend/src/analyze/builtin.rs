//! Flagger's built-in checks, exactly as its observers write them
//! (`pkg/metrics/observers/istio.go`, `kuma.go`), and how Flagger picks the observer
//! (`observers/factory.go`). The MetricTemplates in `istio/`, `kuma/` and the tests use these
//! same strings.

pub const REQUEST_SUCCESS_RATE: &str = r#"sum(rate(istio_requests_total{
    reporter="destination",
    destination_workload_namespace="{{ namespace }}",
    destination_workload=~"{{ target }}",
    response_code!~"5.*"
}[{{ interval }}]))
/
sum(rate(istio_requests_total{
    reporter="destination",
    destination_workload_namespace="{{ namespace }}",
    destination_workload=~"{{ target }}"
}[{{ interval }}]))
* 100"#;

pub const REQUEST_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{
    reporter="destination",
    destination_workload_namespace="{{ namespace }}",
    destination_workload=~"{{ target }}"
}[{{ interval }}])) by (le))"#;

/// Kuma's: `service` is the scraped sidecar's own `kuma.io/service`, so these read every
/// cluster of the canary's sidecars (its inbound `localhost:<port>` included).
pub const KUMA_REQUEST_SUCCESS_RATE: &str = r#"sum(rate(envoy_cluster_upstream_rq{
    service=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+",
    envoy_response_code!~"5.*"
}[{{ interval }}]))
/
sum(rate(envoy_cluster_upstream_rq{
    service=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+",
}[{{ interval }}]))
* 100"#;

pub const KUMA_REQUEST_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{
    service=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+",
}[{{ interval }}])) by (le))"#;

/// The query Flagger's provider uses to check the server is online.
pub const ONLINE: &str = "vector(1)";

/// The metrics provider name Flagger's `scheduler_metrics.go` works out, which also appears in
/// its "no values found for <provider> metric" events.
pub fn metrics_provider(
    mesh_provider: &str,
    spec_provider: Option<&str>,
    target_kind: &str,
) -> String {
    let mut p = if mesh_provider.contains("crossover") {
        "crossover".to_owned()
    } else {
        mesh_provider.to_owned()
    };
    if let Some(spec) = spec_provider.filter(|s| !s.is_empty()) {
        p = if mesh_provider.contains("linkerd") {
            "linkerd".to_owned()
        } else {
            spec.to_owned()
        };
    }
    // Knative's targets are Services too, but keep the provider's own name.
    if target_kind == "Service" && p != "knative" {
        p.push_str(":service");
    }
    p
}

/// The observer whose built-in queries a canary's `request-success-rate` and
/// `request-duration` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observer {
    Istio,
    Kuma,
    /// One whose queries waggle does not reproduce, by Flagger's name for it.
    Other(&'static str),
}

impl Observer {
    /// Flagger's choice: `-mesh-provider`, overridden by `spec.provider`; `:service` appended
    /// when the target is a Service (so `kuma` then falls to the default, Istio, as in Flagger).
    pub fn choose(mesh_provider: &str, spec_provider: Option<&str>, target_kind: &str) -> Self {
        Self::of(&metrics_provider(mesh_provider, spec_provider, target_kind))
    }

    /// The observer `observers/factory.go` makes for a metrics provider name.
    pub fn of(p: &str) -> Self {
        let other = |name| Observer::Other(name);
        match p {
            _ if p.starts_with("appmesh") => other("appmesh"),
            "linkerd" => other("linkerd"),
            "contour" => other("contour"),
            _ if p.starts_with("gloo") => other("gloo"),
            "nginx" => other("nginx"),
            "kubernetes" => other("http"),
            _ if p.starts_with("gatewayapi") => other("http"),
            "skipper" => other("skipper"),
            "traefik" => other("traefik"),
            "osm" => other("osm"),
            "kuma" => Observer::Kuma,
            "apisix" => other("apisix"),
            "knative" => other("knative"),
            // `istio`, and everything no case names (`smi:*`, `crossover`, `kuma:service`).
            _ => Observer::Istio,
        }
    }

    /// The (success rate, duration) queries, or why there are none.
    pub fn queries(&self) -> Result<(&'static str, &'static str), String> {
        match self {
            Observer::Istio => Ok((REQUEST_SUCCESS_RATE, REQUEST_DURATION)),
            Observer::Kuma => Ok((KUMA_REQUEST_SUCCESS_RATE, KUMA_REQUEST_DURATION)),
            Observer::Other(name) => Err(format!(
                "Flagger's {name} observer: waggle analyze reproduces the built-in queries of the istio and kuma observers only; write this check as a MetricTemplate"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observers_are_chosen_as_flagger_chooses() {
        let cases = [
            ("istio", None, "Deployment", Observer::Istio),
            ("kuma", None, "Deployment", Observer::Kuma),
            ("istio", Some("kuma"), "Deployment", Observer::Kuma),
            ("kuma", Some(""), "Deployment", Observer::Kuma),
            ("kuma", Some("istio"), "Deployment", Observer::Istio),
            // Flagger appends ":service" for Service targets; no case matches it but the default.
            ("kuma", None, "Service", Observer::Istio),
            ("smi:v1alpha3", None, "Deployment", Observer::Istio),
            ("gatewayapi:v1", None, "Deployment", Observer::Other("http")),
            ("kubernetes", None, "Deployment", Observer::Other("http")),
            (
                "linkerd",
                Some("kuma"),
                "Deployment",
                Observer::Other("linkerd"),
            ),
            (
                "appmesh:v1beta2",
                None,
                "Deployment",
                Observer::Other("appmesh"),
            ),
            ("contour", None, "Deployment", Observer::Other("contour")),
            ("gloo:v1", None, "Deployment", Observer::Other("gloo")),
            ("nginx", None, "Deployment", Observer::Other("nginx")),
            ("skipper", None, "Deployment", Observer::Other("skipper")),
            ("traefik", None, "Deployment", Observer::Other("traefik")),
            ("osm", None, "Deployment", Observer::Other("osm")),
            ("apisix", None, "Deployment", Observer::Other("apisix")),
            // Knative targets a Service without the suffix.
            ("knative", None, "Service", Observer::Other("knative")),
            (
                "istio",
                Some("smi:crossover"),
                "Deployment",
                Observer::Istio,
            ),
        ];
        for (mesh, spec, kind, want) in cases {
            assert_eq!(
                Observer::choose(mesh, spec, kind),
                want,
                "{mesh} {spec:?} {kind}"
            );
        }
        assert!(Observer::Kuma
            .queries()
            .unwrap()
            .0
            .contains("envoy_cluster_upstream_rq{"));
        let e = Observer::Other("http").queries().unwrap_err();
        assert!(e.contains("MetricTemplate"), "{e}");
    }
}

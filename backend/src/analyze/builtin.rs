//! Flagger's built-in Istio checks, exactly as `pkg/metrics/observers/istio.go` writes them.
//! The MetricTemplates in `istio/` and the tests use these same strings.

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

/// The query Flagger's provider uses to check the server is online.
pub const ONLINE: &str = "vector(1)";

//! One metric check: its query rendered once from the Canary (a built-in, an inline query or a
//! MetricTemplate), and what running it against the provider found, in Flagger's words.

use super::builtin::{metrics_provider, Observer};
use super::manifest::{Canary, Manifests, Metric};
use super::provider::{Prometheus, QueryError};
use super::template::{render, Model};
use super::units::{go_ms, num};
use super::{AnalyzeError, Options};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    SuccessRate,
    Duration,
    Custom,
}

/// One metric, its query rendered once.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) name: String,
    pub(super) kind: Kind,
    /// `None` when the provider is not Prometheus-compatible (the check is reported, not run).
    pub(super) address: Option<String>,
    pub(super) provider: String,
    /// Flagger's metrics provider name (`istio`, `kuma`...), as its no-data events print it.
    pub(super) observer: String,
    pub(super) query: String,
    pub(super) min: Option<f64>,
    pub(super) max: Option<f64>,
}

/// What one metric check found.
#[derive(Debug, Clone)]
pub struct Check {
    pub metric: String,
    pub value: Option<f64>,
    /// Flagger's message when the check fails.
    pub failure: Option<String>,
    /// Why there was no value, from the backend's warnings.
    pub reason: Option<String>,
    pub skipped: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub unit: &'static str,
}

pub(super) fn metric_err(metric: &str, reason: impl Into<String>) -> AnalyzeError {
    AnalyzeError::Metric {
        metric: metric.into(),
        reason: reason.into(),
    }
}

/// Runs one check; `canary` and `target` are `<name>.<namespace>` as Flagger's messages print
/// them (the Canary's own name in `Halt` lines, the target's in "not receiving traffic").
pub(super) fn run(prom: &Prometheus, p: &Plan, canary: &str, target: &str) -> Check {
    let unit = match p.kind {
        Kind::SuccessRate => "%",
        Kind::Duration => "ms",
        Kind::Custom => "",
    };
    let mut check = Check {
        metric: p.name.clone(),
        value: None,
        failure: None,
        reason: None,
        skipped: None,
        min: p.min,
        max: p.max,
        unit,
    };
    let Some(address) = &p.address else {
        check.skipped = Some(format!(
            "provider {} is not queried by waggle analyze",
            p.provider
        ));
        return check;
    };
    let who = canary;
    match prom.query(address, &p.query) {
        Ok(v) => {
            check.value = Some(v);
            check.failure = match p.kind {
                Kind::SuccessRate => match (p.min, p.max) {
                    (Some(min), _) if v < min => Some(format!(
                        "Halt {who} advancement success rate {v:.2}% < {}%",
                        num(min)
                    )),
                    (_, Some(max)) if v > max => Some(format!(
                        "Halt {who} advancement success rate {v:.2}% > {}%",
                        num(max)
                    )),
                    _ => None,
                },
                Kind::Duration => {
                    // Flagger truncates to whole milliseconds before comparing.
                    let ms = v.trunc();
                    match (p.min, p.max) {
                        (Some(min), _) if ms < min => Some(format!(
                            "Halt {who} advancement request duration {} < {}",
                            go_ms(ms),
                            go_ms(min)
                        )),
                        (_, Some(max)) if ms > max => Some(format!(
                            "Halt {who} advancement request duration {} > {}",
                            go_ms(ms),
                            go_ms(max)
                        )),
                        _ => None,
                    }
                }
                Kind::Custom => match (p.min, p.max) {
                    (Some(min), _) if v < min => Some(format!(
                        "Halt {who} advancement {} {v:.2} < {}",
                        p.name,
                        num(min)
                    )),
                    (_, Some(max)) if v > max => Some(format!(
                        "Halt {who} advancement {} {v:.2} > {}",
                        p.name,
                        num(max)
                    )),
                    _ => None,
                },
            };
        }
        Err(QueryError::NoValues { warnings }) => {
            let flagger = match p.kind {
                Kind::SuccessRate => format!("Halt advancement no values found for {} metric {} probably {target} is not receiving traffic: no values found", p.observer, p.name),
                Kind::Duration => format!("Halt advancement no values found for {} metric {} probably {target} is not receiving traffic", p.observer, p.name),
                Kind::Custom => format!("Halt advancement no values found for custom metric: {}: no values found", p.name),
            };
            check.reason = Some(if warnings.is_empty() {
                "the backend gave no reason".into()
            } else {
                warnings.join("; ")
            });
            check.failure = Some(flagger);
        }
        Err(e) => {
            check.failure = Some(match p.kind {
                Kind::Custom => format!("Metric query failed for {}: {e}", p.name),
                _ => format!("Prometheus query failed for {}: {e}", p.name),
            });
        }
    }
    check
}

pub(super) fn plan(
    c: &Canary,
    metric: &Metric,
    m: &Manifests,
    opts: &Options,
    server: &str,
) -> Result<Plan, AnalyzeError> {
    let name = metric.name.clone();
    let builtin_interval = metric.interval.clone().unwrap_or_else(|| "1m".into());
    let target = c.spec.target_ref.name.clone();
    let svc = c
        .spec
        .service
        .as_ref()
        .and_then(|s| s.name.clone())
        .unwrap_or_else(|| target.clone());
    let model = |interval: String| Model {
        name: c.metadata.name.clone(),
        namespace: c.namespace().to_owned(),
        target: target.clone(),
        service: svc.clone(),
        ingress: c
            .spec
            .ingress_ref
            .as_ref()
            .map_or_else(|| target.clone(), |r| r.name.clone()),
        route: c
            .spec
            .route_ref
            .as_ref()
            .map_or_else(|| target.clone(), |r| r.name.clone()),
        interval,
        variables: metric.template_variables.clone(),
    };
    let range = metric.threshold_range.clone().unwrap_or_default();
    let target_kind = c.spec.target_ref.kind.as_deref().unwrap_or_default();
    let observer_name =
        metrics_provider(&opts.mesh_provider, c.spec.provider.as_deref(), target_kind);
    let (kind, provider, address, template) = if let Some(r) = &metric.template_ref {
        let ns = r
            .namespace
            .clone()
            .unwrap_or_else(|| c.namespace().to_owned());
        let t = m.template(&r.name, &ns).ok_or_else(|| {
            metric_err(
                &name,
                format!(
                    "Metric template {}.{} error: not found in the manifests",
                    r.name, ns
                ),
            )
        })?;
        let address = if t.spec.provider.kind == "prometheus" {
            if opts.templates_use_metrics_server {
                Some(server.to_owned())
            } else {
                Some(t.spec.provider.address.clone().ok_or_else(|| {
                    metric_err(&name, format!("Metric template {}.{} provider prometheus error: prometheus address  is not a valid URL", r.name, ns))
                })?)
            }
        } else {
            None
        };
        (
            Kind::Custom,
            t.spec.provider.kind.clone(),
            address,
            t.spec.query.clone(),
        )
    } else if let Some(q) = &metric.query {
        (
            Kind::Custom,
            "prometheus".to_owned(),
            Some(server.to_owned()),
            q.clone(),
        )
    } else {
        let kind =
            match name.as_str() {
                "request-success-rate" => Kind::SuccessRate,
                "request-duration" => Kind::Duration,
                _ => return Err(metric_err(
                    &name,
                    "Metric query failed for no usable metrics template and query were configured",
                )),
            };
        let observer = Observer::of(&observer_name);
        let (rate, duration) = observer.queries().map_err(|e| metric_err(&name, e))?;
        let query = if kind == Kind::SuccessRate {
            rate
        } else {
            duration
        };
        (
            kind,
            "prometheus".into(),
            Some(server.to_owned()),
            query.to_owned(),
        )
    };
    // Built-ins default their window to 1m; templates get the interval as written (Flagger does
    // not default it there, so an empty one renders `[]`, a parse error).
    let interval = match kind {
        Kind::Custom => metric.interval.clone().unwrap_or_default(),
        _ => builtin_interval,
    };
    let query = render(&template, &model(interval))
        .map_err(|e| metric_err(&name, format!("query render error: {e}")))?;
    let (min, max) = match (range.min, range.max, metric.threshold) {
        (None, None, Some(t)) if kind == Kind::SuccessRate => (Some(t), None),
        (None, None, Some(t)) => (None, Some(t)),
        (min, max, _) => (min, max),
    };
    Ok(Plan {
        name,
        kind,
        address,
        provider,
        observer: observer_name,
        query,
        min,
        max,
    })
}

//! The analysis loop of Flagger's canary strategy: each interval, roll back once failed checks
//! reach the threshold; otherwise run every metric check, count a failed iteration, or step the
//! canary's weight up, and promote once a passing iteration finds it at the maximum.

use std::time::Duration;

use super::builtin::{metrics_provider, Observer};
use super::manifest::{Canary, Manifests, Metric};
use super::provider::{Prometheus, QueryError};
use super::template::{render, Model};
use super::units::{go_ms, num};
use super::AnalyzeError;
use crate::config::parse_duration;

#[derive(Debug, Clone)]
pub struct Options {
    /// Flagger's `-metrics-server` (or the Canary's `spec.metricsServer`, which wins).
    pub metrics_server: String,
    /// Query every `prometheus` template at `metrics_server` instead of its own address
    /// (to try cluster templates against a port-forwarded or local backend).
    pub templates_use_metrics_server: bool,
    /// Replaces `analysis.interval` as the loop's cadence (queries keep their own windows).
    pub interval: Option<Duration>,
    /// Flagger's `-mesh-provider` (a Canary's `spec.provider` wins): picks the built-in queries.
    pub mesh_provider: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    SuccessRate,
    Duration,
    Custom,
}

/// One metric, its query rendered once.
#[derive(Debug, Clone)]
struct Plan {
    name: String,
    kind: Kind,
    /// `None` when the provider is not Prometheus-compatible (the check is reported, not run).
    address: Option<String>,
    provider: String,
    /// Flagger's metrics provider name (`istio`, `kuma`...), as its no-data events print it.
    observer: String,
    query: String,
    min: Option<f64>,
    max: Option<f64>,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The first iteration: no checks, traffic starts flowing to the canary.
    Start {
        weight: u32,
    },
    Advance {
        from: u32,
        to: u32,
    },
    /// A check failed; `failed` of `threshold` failed checks so far.
    Halt {
        failed: u32,
        threshold: u32,
    },
    Rollback,
    Promote,
}

impl Decision {
    pub fn word(&self) -> &'static str {
        match self {
            Decision::Start { .. } => "start",
            Decision::Advance { .. } => "advance",
            Decision::Halt { .. } => "halt",
            Decision::Rollback => "rollback",
            Decision::Promote => "promote",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Promoted,
    RolledBack,
}

#[derive(Debug, Clone)]
pub struct Iteration {
    pub number: u32,
    /// The canary's weight after the decision.
    pub weight: u32,
    pub checks: Vec<Check>,
    pub decision: Decision,
    pub messages: Vec<String>,
}

pub struct Analysis {
    target: String,
    namespace: String,
    plans: Vec<Plan>,
    interval: Duration,
    threshold: u32,
    max_weight: u32,
    step_weight: u32,
    step_weights: Vec<u32>,
    weight: u32,
    failed: u32,
    iteration: u32,
    outcome: Option<Outcome>,
    prom: Prometheus,
}

fn metric_err(metric: &str, reason: impl Into<String>) -> AnalyzeError {
    AnalyzeError::Metric {
        metric: metric.into(),
        reason: reason.into(),
    }
}

impl Analysis {
    /// Prepares the analysis of `canary` (or the only Canary in `m`), rendering every query.
    pub fn new(m: &Manifests, canary: Option<&str>, opts: &Options) -> Result<Self, AnalyzeError> {
        let c: &Canary = match canary {
            Some(name) => m
                .canaries
                .iter()
                .find(|c| c.metadata.name == name)
                .ok_or_else(|| {
                    AnalyzeError::Canary(format!("no Canary named {name:?} in the manifests"))
                })?,
            None => match m.canaries.as_slice() {
                [one] => one,
                [] => return Err(AnalyzeError::Canary(
                    "the manifests hold no Canary (apiVersion flagger.app/v1beta1, kind Canary)"
                        .into(),
                )),
                _ => {
                    return Err(AnalyzeError::Canary(
                        "the manifests hold several Canaries: choose one with --canary".into(),
                    ))
                }
            },
        };
        let a = &c.spec.analysis;
        if a.iterations.is_some_and(|i| i > 0) {
            return Err(AnalyzeError::Canary("analysis.iterations (A/B testing and blue/green) is not supported; waggle analyze runs the progressive canary strategy".into()));
        }
        if a.step_weights.is_empty() && a.step_weight.unwrap_or(0) == 0 {
            return Err(AnalyzeError::Canary(
                "analysis needs stepWeight or stepWeights".into(),
            ));
        }
        if a.step_weights.windows(2).any(|w| w[0] >= w[1]) {
            return Err(AnalyzeError::Canary(
                "analysis.stepWeights must increase".into(),
            ));
        }
        let interval = parse_duration(&a.interval)
            .map_err(|e| AnalyzeError::Canary(format!("analysis.interval: {e}")))?;
        let target = c.spec.target_ref.name.clone();
        let namespace = c.namespace().to_owned();
        let server = c
            .spec
            .metrics_server
            .clone()
            .unwrap_or_else(|| opts.metrics_server.clone());
        let mut plans = Vec::new();
        for metric in &a.metrics {
            plans.push(plan(c, metric, m, opts, &server)?);
        }
        let max_weight = match a.step_weights.last() {
            Some(w) => *w,
            None => a.max_weight.filter(|w| *w > 0).unwrap_or(100),
        };
        Ok(Self {
            target,
            namespace,
            plans,
            interval: opts.interval.unwrap_or(interval),
            threshold: a.threshold.filter(|t| *t > 0).unwrap_or(1),
            max_weight,
            step_weight: a.step_weight.unwrap_or(0),
            step_weights: a.step_weights.clone(),
            weight: 0,
            failed: 0,
            iteration: 0,
            outcome: None,
            prom: Prometheus::new().map_err(AnalyzeError::Canary)?,
        })
    }

    pub fn weight(&self) -> u32 {
        self.weight
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// The rendered queries, by metric name.
    pub fn queries(&self) -> Vec<(String, String)> {
        self.plans
            .iter()
            .map(|p| (p.name.clone(), p.query.clone()))
            .collect()
    }

    fn next_weight(&self) -> u32 {
        if self.step_weights.is_empty() {
            (self.weight + self.step_weight).min(self.max_weight)
        } else {
            self.step_weights
                .iter()
                .copied()
                .find(|w| *w > self.weight)
                .unwrap_or(self.max_weight)
        }
    }

    /// Runs every check once, with no effect on the analysis.
    pub fn check(&self) -> Vec<Check> {
        self.plans.iter().map(|p| self.run(p)).collect()
    }

    fn run(&self, p: &Plan) -> Check {
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
        let who = format!("{}.{}", self.target, self.namespace);
        match self.prom.query(address, &p.query) {
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
                    Kind::SuccessRate => format!("Halt advancement no values found for {} metric {} probably {who} is not receiving traffic: no values found", p.observer, p.name),
                    Kind::Duration => format!("Halt advancement no values found for {} metric {} probably {who} is not receiving traffic", p.observer, p.name),
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

    /// One interval of the loop; does nothing more once promoted or rolled back.
    pub fn step(&mut self) -> Iteration {
        self.iteration += 1;
        let mut it = Iteration {
            number: self.iteration,
            weight: self.weight,
            checks: Vec::new(),
            decision: Decision::Halt {
                failed: self.failed,
                threshold: self.threshold,
            },
            messages: Vec::new(),
        };
        let who = format!("{}.{}", self.target, self.namespace);
        if let Some(o) = self.outcome {
            it.decision = match o {
                Outcome::Promoted => Decision::Promote,
                Outcome::RolledBack => Decision::Rollback,
            };
            return it;
        }
        if self.failed >= self.threshold {
            it.messages.push(format!(
                "Rolling back {who} failed checks threshold reached {}",
                self.failed
            ));
            it.messages
                .push(format!("Canary failed! Scaling down {who}"));
            self.weight = 0;
            self.outcome = Some(Outcome::RolledBack);
            it.weight = 0;
            it.decision = Decision::Rollback;
            return it;
        }
        if self.weight == 0 {
            it.messages
                .push(format!("Starting canary analysis for {who}"));
            self.weight = self.next_weight();
            it.messages
                .push(format!("Advance {who} canary weight {}", self.weight));
            it.weight = self.weight;
            it.decision = Decision::Start {
                weight: self.weight,
            };
            return it;
        }
        it.checks = self.check();
        if let Some(first) = it.checks.iter().find_map(|c| c.failure.clone()) {
            self.failed += 1;
            it.messages.push(first);
            it.decision = Decision::Halt {
                failed: self.failed,
                threshold: self.threshold,
            };
            return it;
        }
        if self.weight < self.max_weight {
            let from = self.weight;
            self.weight = self.next_weight();
            it.messages
                .push(format!("Advance {who} canary weight {}", self.weight));
            it.weight = self.weight;
            it.decision = Decision::Advance {
                from,
                to: self.weight,
            };
        } else {
            it.messages.push(format!(
                "Copying {who} template spec to {}-primary.{}",
                self.target, self.namespace
            ));
            it.messages
                .push(format!("Promotion completed! Scaling down {who}"));
            self.weight = 0;
            self.outcome = Some(Outcome::Promoted);
            it.weight = 0;
            it.decision = Decision::Promote;
        }
        it
    }
}

fn plan(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifests(analysis: &str) -> Manifests {
        let mut m = Manifests::default();
        m.add_yaml("test", &format!(
            "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: podinfo, namespace: test}}\nspec:\n  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}\n  analysis:\n{analysis}\n---\napiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata: {{name: errors, namespace: test}}\nspec:\n  provider: {{type: prometheus, address: 'http://prom:9090'}}\n  query: sum(rate(x{{ns=\"{{{{ namespace }}}}\"}}[{{{{ interval }}}}]))\n"
        )).unwrap();
        m
    }

    fn opts() -> Options {
        Options {
            metrics_server: "http://127.0.0.1:9".into(),
            templates_use_metrics_server: false,
            interval: None,
            mesh_provider: "istio".into(),
        }
    }

    #[test]
    fn queries_render_like_flaggers() {
        let m = manifests("    interval: 1m\n    stepWeight: 10\n    metrics:\n    - name: request-success-rate\n      thresholdRange: {min: 99}\n    - name: errors\n      interval: 30s\n      templateRef: {name: errors}\n");
        let a = Analysis::new(&m, None, &opts()).unwrap();
        let q = a.queries();
        assert!(
            q[0].1.contains("destination_workload=~\"podinfo\"") && q[0].1.contains("[1m]"),
            "{}",
            q[0].1
        );
        assert_eq!(q[1].1, "sum(rate(x{ns=\"test\"}[30s]))");
    }

    #[test]
    fn built_ins_follow_the_mesh_provider_and_spec_provider() {
        let analysis = "    interval: 1m\n    stepWeight: 10\n    metrics:\n    - name: request-success-rate\n      thresholdRange: {min: 99}\n    - name: request-duration\n      thresholdRange: {max: 500}\n";
        let kuma = Options {
            mesh_provider: "kuma".into(),
            ..opts()
        };
        let q = Analysis::new(&manifests(analysis), None, &kuma)
            .unwrap()
            .queries();
        let want = "service=~\"podinfo-canary_test_svc_[0-9a-zA-Z-]+\"";
        assert!(
            q[0].1.contains("envoy_cluster_upstream_rq{") && q[0].1.contains(want),
            "{}",
            q[0].1
        );
        assert!(
            q[1].1.contains("envoy_cluster_upstream_rq_time_bucket{") && q[1].1.contains(want),
            "{}",
            q[1].1
        );
        let mut m = manifests(analysis);
        m.canaries[0].spec.provider = Some("istio".into());
        let q = Analysis::new(&m, None, &kuma).unwrap().queries();
        assert!(
            q[0].1.contains("istio_requests_total"),
            "spec.provider wins: {}",
            q[0].1
        );
        m.canaries[0].spec.provider = Some("gatewayapi:v1".into());
        let e = Analysis::new(&m, None, &kuma).err().unwrap().to_string();
        assert!(
            e.contains("http observer") && e.contains("request-success-rate"),
            "{e}"
        );
    }

    #[test]
    fn bad_manifests_name_the_problem() {
        let cases = [
            ("    interval: 1m\n    stepWeight: 10\n    metrics:\n    - name: nope\n", "no usable metrics template"),
            ("    interval: 1m\n    stepWeight: 10\n    metrics:\n    - name: e\n      templateRef: {name: missing}\n", "Metric template missing.test error"),
            ("    interval: 1m\n    metrics: []\n", "stepWeight"),
            ("    interval: 1m\n    stepWeight: 10\n    iterations: 10\n", "A/B testing"),
            ("    interval: soon\n    stepWeight: 10\n", "analysis.interval"),
            ("    interval: 1m\n    stepWeight: 10\n    metrics:\n    - name: e\n      templateRef: {name: errors}\n      templateVariables: {}\n    - name: f\n      query: 'x{a=\"{{ variables.k }}\"}'\n", "map has no entry for key \"k\""),
        ];
        for (analysis, want) in cases {
            let e = Analysis::new(&manifests(analysis), None, &opts())
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn a_dead_server_fails_checks_until_rollback() {
        let m = manifests("    interval: 1m\n    stepWeight: 25\n    maxWeight: 50\n    threshold: 2\n    metrics:\n    - name: request-success-rate\n      thresholdRange: {min: 99}\n");
        let mut a = Analysis::new(&m, None, &opts()).unwrap();
        let words: Vec<_> = (0..5).map(|_| a.step().decision.word()).collect();
        assert_eq!(words, ["start", "halt", "halt", "rollback", "rollback"]);
        assert_eq!(a.outcome(), Some(Outcome::RolledBack));
        assert_eq!(a.weight(), 0);
    }
}

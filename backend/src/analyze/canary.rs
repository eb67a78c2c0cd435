//! The analysis loop of Flagger's canary strategy: each interval, roll back when a rollback
//! webhook says so or once failed checks reach the threshold; otherwise run the rollout webhooks
//! and every metric check, count a failed iteration, or step the canary's weight up through the
//! confirm gates, and promote once a passing iteration finds it at the maximum.

use std::time::Duration;

use super::check::{plan, run, Check, Plan};
use super::hooks::{HookReport, Hooks};
use super::manifest::{Canary, Manifests};
use super::provider::Prometheus;
use super::webhook::HookType;
use super::AnalyzeError;
use crate::config::parse_duration;

#[derive(Debug, Clone, Default)]
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
    /// Call no webhook: the loop runs as if the Canary had none.
    pub skip_webhooks: bool,
    /// `(name, url)`: call the webhook `name` at `url` instead (a port-forwarded service).
    pub webhook_overrides: Vec<(String, String)>,
    /// Flagger's `-event-webhook`: used only when the Canary has no `event` webhook.
    pub event_webhook: Option<String>,
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
    /// A confirm-* webhook holds the canary where it is; nothing is counted.
    Wait {
        hook: String,
    },
    /// The confirm-rollout gates passed: the canary is scaled up and the analysis starts next.
    ScaleUp,
    Rollback,
    Promote,
}

impl Decision {
    pub fn word(&self) -> &'static str {
        match self {
            Decision::Start { .. } => "start",
            Decision::Advance { .. } => "advance",
            Decision::Halt { .. } => "halt",
            Decision::Wait { .. } => "wait",
            Decision::ScaleUp => "scale-up",
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

/// The Canary's `status.phase`, as webhooks' payloads carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Initialized,
    Waiting,
    Progressing,
    WaitingPromotion,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Initialized => "Initialized",
            Phase::Waiting => "Waiting",
            Phase::Progressing => "Progressing",
            Phase::WaitingPromotion => "WaitingPromotion",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Iteration {
    pub number: u32,
    /// The canary's weight after the decision.
    pub weight: u32,
    pub checks: Vec<Check>,
    pub decision: Decision,
    /// Flagger's events, in order.
    pub messages: Vec<String>,
    /// Every webhook called, with what happened in plain words.
    pub hooks: Vec<HookReport>,
}

pub struct Analysis {
    /// `<canary>.<namespace>` and `<target>.<namespace>`, as Flagger's messages print them.
    pub(super) canary: String,
    pub(super) target: String,
    target_name: String,
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
    pub(super) phase: Phase,
    outcome: Option<Outcome>,
    pub(super) hooks: Hooks,
    prom: Prometheus,
}

impl Analysis {
    /// Prepares the analysis of `canary` (or the only Canary in `m`), rendering every query.
    pub fn new(m: &Manifests, canary: Option<&str>, opts: &Options) -> Result<Self, AnalyzeError> {
        let c = pick(m, canary)?;
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
        let hooks = Hooks::new(c, opts).map_err(AnalyzeError::Canary)?;
        Ok(Self {
            canary: format!("{}.{namespace}", c.metadata.name),
            target: format!("{}.{namespace}", c.spec.target_ref.name),
            target_name: c.spec.target_ref.name.clone(),
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
            // Without a confirm-rollout gate, the loop starts where Flagger's does once the new
            // revision is detected and the canary scaled up.
            phase: if hooks.has(HookType::ConfirmRollout) {
                Phase::Initialized
            } else {
                Phase::Progressing
            },
            outcome: None,
            hooks,
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

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// What `--skip-webhooks` and `--webhook-override` changed, one line each.
    pub fn notes(&self) -> &[String] {
        self.hooks.notes()
    }

    pub fn has_webhooks(&self) -> bool {
        !self.hooks.list().is_empty()
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
        self.plans
            .iter()
            .map(|p| run(&self.prom, p, &self.canary, &self.target))
            .collect()
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
            hooks: Vec::new(),
        };
        if let Some(o) = self.outcome {
            it.decision = match o {
                Outcome::Promoted => Decision::Promote,
                Outcome::RolledBack => Decision::Rollback,
            };
            return it;
        }
        let (canary, target) = (self.canary.clone(), self.target.clone());
        if matches!(self.phase, Phase::Initialized | Phase::Waiting) {
            if let Err(hook) = self.gate(&mut it, HookType::ConfirmRollout) {
                if self.phase != Phase::Waiting {
                    self.phase = Phase::Waiting;
                    self.event(
                        &mut it,
                        format!("Halt {canary} advancement waiting for approval {hook}"),
                    );
                }
                it.decision = Decision::Wait { hook };
                return it;
            }
            self.phase = Phase::Progressing;
            self.event(
                &mut it,
                format!("New revision detected! Scaling up {target}"),
            );
            it.decision = Decision::ScaleUp;
            return it;
        }
        if self.rollback_signalled(&mut it) {
            self.event(
                &mut it,
                format!("Rolling back {canary} manual webhook invoked"),
            );
            self.rollback(&mut it);
            return it;
        }
        if self.failed >= self.threshold {
            self.rollback(&mut it);
            return it;
        }
        let passed = if self.weight == 0 {
            self.event(&mut it, format!("Starting canary analysis for {target}"));
            self.pre_rollout(&mut it)
        } else {
            self.rollout(&mut it) && {
                it.checks = self.check();
                match it.checks.iter().find_map(|c| c.failure.clone()) {
                    Some(first) => {
                        self.event(&mut it, first);
                        false
                    }
                    None => true,
                }
            }
        };
        if !passed {
            self.failed += 1;
            it.decision = Decision::Halt {
                failed: self.failed,
                threshold: self.threshold,
            };
            return it;
        }
        if self.phase != Phase::WaitingPromotion {
            if let Err(hook) = self.gate(&mut it, HookType::ConfirmTrafficIncrease) {
                self.event(
                    &mut it,
                    format!(
                        "Halt {canary} advancement waiting for traffic increase approval {hook}"
                    ),
                );
                it.decision = Decision::Wait { hook };
                return it;
            }
        }
        if self.weight < self.max_weight {
            let from = self.weight;
            self.weight = self.next_weight();
            self.event(
                &mut it,
                format!("Advance {canary} canary weight {}", self.weight),
            );
            it.weight = self.weight;
            it.decision = if from == 0 {
                Decision::Start {
                    weight: self.weight,
                }
            } else {
                Decision::Advance {
                    from,
                    to: self.weight,
                }
            };
            return it;
        }
        if let Err(hook) = self.gate(&mut it, HookType::ConfirmPromotion) {
            if self.phase != Phase::WaitingPromotion {
                self.phase = Phase::WaitingPromotion;
                self.event(
                    &mut it,
                    format!("Halt {canary} advancement waiting for promotion approval {hook}"),
                );
            }
            it.decision = Decision::Wait { hook };
            return it;
        }
        self.event(
            &mut it,
            format!(
                "Copying {target} template spec to {}-primary.{}",
                self.target_name, self.namespace
            ),
        );
        self.phase = Phase::Succeeded;
        self.post_rollout(&mut it);
        self.event(
            &mut it,
            format!("Promotion completed! Scaling down {target}"),
        );
        self.weight = 0;
        self.outcome = Some(Outcome::Promoted);
        it.weight = 0;
        it.decision = Decision::Promote;
        it
    }

    /// Flagger's `rollback()`: traffic back to the primary, the canary scaled down, the phase
    /// `Failed`, then the post-rollout hooks.
    fn rollback(&mut self, it: &mut Iteration) {
        let canary = self.canary.clone();
        if self.failed >= self.threshold {
            self.event(
                it,
                format!(
                    "Rolling back {canary} failed checks threshold reached {}",
                    self.failed
                ),
            );
        }
        self.phase = Phase::Failed;
        self.event(it, format!("Canary failed! Scaling down {canary}"));
        self.post_rollout(it);
        self.weight = 0;
        self.outcome = Some(Outcome::RolledBack);
        it.weight = 0;
        it.decision = Decision::Rollback;
    }
}

pub(super) fn pick<'m>(m: &'m Manifests, canary: Option<&str>) -> Result<&'m Canary, AnalyzeError> {
    match canary {
        Some(name) => m
            .canaries
            .iter()
            .find(|c| c.metadata.name == name)
            .ok_or_else(|| {
                AnalyzeError::Canary(format!("no Canary named {name:?} in the manifests"))
            }),
        None => match m.canaries.as_slice() {
            [one] => Ok(one),
            [] => Err(AnalyzeError::Canary(
                "the manifests hold no Canary (apiVersion flagger.app/v1beta1, kind Canary)".into(),
            )),
            _ => Err(AnalyzeError::Canary(
                "the manifests hold several Canaries: choose one with --canary".into(),
            )),
        },
    }
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
            ..Options::default()
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

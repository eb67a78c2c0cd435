//! `waggle analyze --check`: everything about a Canary and its MetricTemplates that would fail a
//! rollout for a reason other than the canary's own behaviour, found without running the loop.
//! Each metric's query is rendered, parsed and run once; each webhook's address is resolved and
//! connected to, but never POSTed to (webhooks have side effects).

use std::net::TcpStream;
use std::time::Duration;

use super::canary::{pick, Options};
use super::check::{plan, Kind, Plan};
use super::hooks::Hooks;
use super::manifest::{Canary, Manifests, Metric};
use super::provider::{Prometheus, QueryError};
use super::template::{render, Model};
use super::units::num;
use super::webhook::{resolve, timeout_of, HookType};
use crate::api::query::NO_VALUES;
use crate::config::parse_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warning,
    Error,
}

/// One thing `--check` found about one part of the Canary.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub level: Level,
    /// `metric error-rate`, `webhook load-test`, `analysis.interval`...
    pub subject: String,
    pub text: String,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub canary: String,
    pub findings: Vec<Finding>,
}

/// A rate() window needs two samples; waggle keeps one per second.
const MIN_WINDOW: Duration = Duration::from_secs(2);
/// Under this, a Prometheus scraping every 15 s holds fewer than two samples in the window.
const SCRAPED_WINDOW: Duration = Duration::from_secs(30);
/// How long a webhook's TCP connect may take.
const CONNECT: Duration = Duration::from_secs(3);

impl Report {
    fn add(&mut self, level: Level, subject: impl Into<String>, text: impl Into<String>) {
        self.findings.push(Finding {
            level,
            subject: subject.into(),
            text: text.into(),
        });
    }

    pub fn count(&self, level: Level) -> usize {
        self.findings.iter().filter(|f| f.level == level).count()
    }

    /// One line per finding, then the totals.
    pub fn render(&self) -> String {
        let mut s = format!("checking Canary {}\n", self.canary);
        for f in &self.findings {
            let word = match f.level {
                Level::Ok => "ok",
                Level::Warning => "warning",
                Level::Error => "ERROR",
            };
            s.push_str(&format!("  {word:<8} {}: {}\n", f.subject, f.text));
        }
        s.push_str(&format!(
            "{} error(s), {} warning(s)\n",
            self.count(Level::Error),
            self.count(Level::Warning)
        ));
        s
    }
}

/// Checks `canary` (or the only Canary in `m`) and its templates; see the module doc.
pub fn doctor(m: &Manifests, canary: Option<&str>, opts: &Options) -> Report {
    let mut r = Report::default();
    let c = match pick(m, canary) {
        Ok(c) => c,
        Err(e) => {
            r.canary = canary.unwrap_or("?").to_owned();
            r.add(Level::Error, "canary", e.to_string());
            return r;
        }
    };
    r.canary = format!("{}.{}", c.metadata.name, c.namespace());
    let a = &c.spec.analysis;
    let interval = analysis_interval(&mut r, &a.interval);
    if a.step_weights.is_empty()
        && a.step_weight.unwrap_or(0) == 0
        && a.iterations.unwrap_or(0) == 0
    {
        r.add(
            Level::Error,
            "analysis",
            "neither stepWeight, stepWeights nor iterations is set: the canary can never advance",
        );
    }
    if a.threshold.unwrap_or(0) == 0 {
        r.add(
            Level::Warning,
            "analysis.threshold",
            "not set: Flagger rolls back after the first failed check (threshold 1)",
        );
    }
    let prom = Prometheus::new().ok();
    let server = c
        .spec
        .metrics_server
        .clone()
        .unwrap_or_else(|| opts.metrics_server.clone());
    for metric in &a.metrics {
        check_metric(&mut r, c, metric, m, opts, &server, prom.as_ref());
    }
    check_webhooks(&mut r, c, opts, interval);
    r
}

/// Flagger's reading of `analysis.interval`: unparsable is 60 s, under 10 s is 10 s.
fn analysis_interval(r: &mut Report, text: &str) -> Duration {
    match parse_duration(text) {
        Err(e) => {
            r.add(
                Level::Warning,
                "analysis.interval",
                format!(
                    "{text:?} does not parse ({e}): Flagger silently runs the analysis every 60s"
                ),
            );
            Duration::from_secs(60)
        }
        Ok(d) if d < Duration::from_secs(10) => {
            r.add(
                Level::Warning,
                "analysis.interval",
                format!("{text} is under 10s: Flagger runs the analysis every 10s at the shortest"),
            );
            Duration::from_secs(10)
        }
        Ok(d) => d,
    }
}

fn check_metric(
    r: &mut Report,
    c: &Canary,
    metric: &Metric,
    m: &Manifests,
    opts: &Options,
    server: &str,
    prom: Option<&Prometheus>,
) {
    let subject = format!("metric {}", metric.name);
    if let Some(t) = &metric.template_ref {
        let ns = t.namespace.as_deref().unwrap_or(c.namespace());
        let Some(tpl) = m.template(&t.name, ns) else {
            let elsewhere: Vec<&str> = m
                .templates
                .iter()
                .filter(|x| x.metadata.name == t.name)
                .map(|x| x.namespace())
                .collect();
            let hint = match elsewhere.as_slice() {
                [] => "no file given holds a MetricTemplate of that name".to_owned(),
                [one] => {
                    format!("one exists in namespace {one:?}: set templateRef.namespace: {one}")
                }
                many => format!(
                    "templates of that name exist in namespaces {}",
                    many.join(", ")
                ),
            };
            r.add(
                Level::Error,
                subject,
                format!("templateRef {}.{ns} does not exist ({hint}); Flagger fails this check every interval", t.name),
            );
            return;
        };
        if metric.interval.is_none() {
            let probe = Model {
                interval: "\u{1}".into(),
                ..Model::default()
            };
            if render(&tpl.spec.query, &probe).is_ok_and(|q| q.contains('\u{1}')) {
                r.add(
                    Level::Error,
                    subject,
                    "interval is not set, and the template uses {{ interval }}: Flagger renders it empty, so the query holds `[]` and cannot parse",
                );
                return;
            }
        }
    }
    let p = match plan(c, metric, m, opts, server) {
        Ok(p) => p,
        Err(e) => {
            r.add(Level::Error, subject, e.to_string());
            return;
        }
    };
    window(r, &subject, metric, &p);
    thresholds(r, &subject, &p);
    let Some(address) = &p.address else {
        r.add(
            Level::Warning,
            subject,
            format!(
                "provider {} is not one waggle can query: its query is not checked",
                p.provider
            ),
        );
        return;
    };
    if let Err(e) = crate::promql::parse(&p.query) {
        r.add(
            Level::Error,
            subject,
            format!(
                "the rendered query does not parse: {e}: {}",
                one_line(&p.query)
            ),
        );
        return;
    }
    let Some(prom) = prom else { return };
    match prom.query(address, &p.query) {
        Ok(v) => r.add(
            Level::Ok,
            subject,
            format!("renders, parses and answers {} at {address}", num(v)),
        ),
        Err(QueryError::NoValues { warnings }) => r.add(
            Level::Warning,
            subject,
            format!(
                "renders and parses, but {address} has no value for it now: {}",
                if warnings.is_empty() {
                    "the backend gave no reason".to_owned()
                } else {
                    warnings.join("; ")
                }
            ),
        ),
        // waggle's /flagger prefix answers "no value" as an error whose text is the reason.
        Err(QueryError::Status { status: 422, body }) if body.contains(NO_VALUES) => r.add(
            Level::Warning,
            subject,
            format!(
                "renders and parses, but {address} has no value for it now: {}",
                reason_in(&body)
            ),
        ),
        Err(e) => r.add(
            Level::Error,
            subject,
            format!("the query fails at {address}: {e}"),
        ),
    }
}

fn reason_in(body: &str) -> String {
    let json = body.find('{').map_or(body, |i| &body[i..]);
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_owned())
        .replace(NO_VALUES, "")
}

/// The query window must hold two samples for rate() and histogram_quantile() to answer.
fn window(r: &mut Report, subject: &str, metric: &Metric, p: &Plan) {
    let text = match (&metric.interval, p.kind) {
        (Some(i), _) => i.clone(),
        (None, Kind::Custom) => return,
        (None, _) => "1m".into(),
    };
    match parse_duration(&text) {
        Ok(d) if d < MIN_WINDOW => r.add(
            Level::Error,
            subject,
            format!("interval {text} cannot hold two samples even at waggle's 1s resolution, so rate() has nothing to compute"),
        ),
        Ok(d) if d < SCRAPED_WINDOW => r.add(
            Level::Warning,
            subject,
            format!("interval {text}: fine against waggle's 1s series, but a Prometheus scraping every 15s holds fewer than two samples in it"),
        ),
        Ok(_) => {}
        Err(e) => r.add(Level::Error, subject, format!("interval {text:?}: {e}")),
    }
}

fn thresholds(r: &mut Report, subject: &str, p: &Plan) {
    match p.kind {
        Kind::Duration => {
            if let Some(max) = p.max.filter(|m| *m > 0.0 && *m < 10.0) {
                r.add(
                    Level::Warning,
                    subject,
                    format!("max {} looks like seconds, but Flagger compares request-duration in milliseconds: {} ms fails almost every request (did you mean {}?)", num(max), num(max), num(max * 1000.0)),
                );
            }
        }
        Kind::SuccessRate => {
            if p.min.is_some_and(|m| !(0.0..=100.0).contains(&m)) {
                r.add(
                    Level::Warning,
                    subject,
                    "request-success-rate is a percentage (0 to 100): this threshold can never pass",
                );
            }
        }
        Kind::Custom => {
            if p.query.contains("_seconds") && p.max.is_some_and(|m| m >= 100.0) {
                r.add(
                    Level::Warning,
                    subject,
                    format!(
                        "the query reads a _seconds metric, but max {} looks like milliseconds",
                        num(p.max.unwrap_or_default())
                    ),
                );
            }
        }
    }
}

fn check_webhooks(r: &mut Report, c: &Canary, opts: &Options, interval: Duration) {
    let hooks = match Hooks::new(c, opts) {
        Ok(h) => h,
        Err(e) => {
            r.add(Level::Error, "webhooks", e);
            return;
        }
    };
    for note in hooks.notes() {
        r.add(Level::Ok, "webhooks", note.clone());
    }
    let mut rollout = Duration::ZERO;
    for (kind, w) in hooks.list() {
        let subject = format!("webhook {} ({})", w.name, kind.as_str());
        let timeout = match timeout_of(w) {
            Ok(t) => t,
            Err(e) => {
                r.add(
                    Level::Error,
                    subject,
                    format!("timeout: {e}: Flagger fails this webhook without calling it"),
                );
                continue;
            }
        };
        if matches!(kind, HookType::Rollout) {
            rollout += timeout;
        }
        let url = match reqwest::Url::parse(&w.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            Ok(u) => {
                r.add(
                    Level::Error,
                    subject,
                    format!(
                        "url {}: unsupported protocol scheme {:?}",
                        w.url,
                        u.scheme()
                    ),
                );
                continue;
            }
            Err(e) => {
                r.add(
                    Level::Error,
                    subject,
                    format!("url {:?} is not a valid URL: {e}", w.url),
                );
                continue;
            }
        };
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = match resolve(host, port, &w.name) {
            Ok(a) => a,
            Err(e) => {
                r.add(Level::Error, subject, e);
                continue;
            }
        };
        match TcpStream::connect_timeout(&addr, CONNECT) {
            Ok(_) => r.add(
                Level::Ok,
                subject,
                format!("{} accepts connections at {addr} (TCP only: --check never POSTs, webhooks have side effects)", w.url),
            ),
            Err(e) => r.add(
                Level::Error,
                subject,
                format!("{} resolves to {addr}, but connecting fails: {e}", w.url),
            ),
        }
    }
    if rollout >= interval && !rollout.is_zero() {
        r.add(
            Level::Warning,
            "webhooks",
            format!(
                "the rollout webhooks' timeouts add up to {}s, not under analysis.interval ({}s): a slow hook delays every interval",
                rollout.as_secs(),
                interval.as_secs()
            ),
        );
    }
}

fn one_line(q: &str) -> String {
    q.split_whitespace().collect::<Vec<_>>().join(" ")
}

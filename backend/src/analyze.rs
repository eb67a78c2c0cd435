//! `waggle analyze`: Flagger's canary analysis loop, reproduced against a Prometheus-compatible
//! backend, so a Canary and its MetricTemplates can be tried (or debugged) without a cluster.

pub mod builtin;
pub mod canary;
mod check;
pub mod doctor;
pub mod hooks;
mod line;
pub mod manifest;
pub mod provider;
pub mod template;
mod units;
pub mod webhook;

pub use canary::{Analysis, Decision, Iteration, Options, Outcome, Phase};
pub use check::Check;
pub use hooks::HookReport;
pub use manifest::Manifests;

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("{file}: {reason}")]
    Manifest { file: String, reason: String },
    #[error("{0}")]
    Canary(String),
    #[error("metric {metric}: {reason}")]
    Metric { metric: String, reason: String },
}

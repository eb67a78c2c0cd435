//! The parts of Flagger's Canary and MetricTemplate manifests the analysis loop reads, from YAML
//! files as a user would `kubectl apply` them.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::webhook::Webhook;
use super::AnalyzeError;

#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Named {
    pub name: String,
    #[serde(default)]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdRange {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TemplateRef {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    pub name: String,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub threshold_range: Option<ThresholdRange>,
    /// Deprecated: a minimum for the success rate, a maximum otherwise.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Deprecated inline PromQL, run against the metrics server.
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub template_ref: Option<TemplateRef>,
    #[serde(default)]
    pub template_variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    pub interval: String,
    #[serde(default)]
    pub threshold: Option<u32>,
    #[serde(default)]
    pub max_weight: Option<u32>,
    #[serde(default)]
    pub step_weight: Option<u32>,
    #[serde(default)]
    pub step_weights: Vec<u32>,
    #[serde(default)]
    pub iterations: Option<u32>,
    #[serde(default)]
    pub metrics: Vec<Metric>,
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    pub target_ref: Named,
    #[serde(default)]
    pub service: Option<ServiceSpec>,
    #[serde(default)]
    pub ingress_ref: Option<Named>,
    #[serde(default)]
    pub route_ref: Option<Named>,
    #[serde(default)]
    pub metrics_server: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
    pub analysis: Analysis,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServiceSpec {
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Canary {
    pub metadata: Metadata,
    pub spec: CanarySpec,
    /// The webhooks' `checksum`: stable for one spec, different when it changes. Flagger hashes
    /// its status fields (which only a cluster has) the same way: FNV-32a, then Kubernetes'
    /// `rand.SafeEncodeString` of the decimal sum.
    #[serde(skip)]
    pub checksum: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Provider {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub address: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TemplateSpec {
    pub provider: Provider,
    pub query: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetricTemplate {
    pub metadata: Metadata,
    pub spec: TemplateSpec,
}

impl Canary {
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }
}

impl MetricTemplate {
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }
}

/// Every Canary and MetricTemplate in a set of YAML documents; other kinds are skipped.
#[derive(Debug, Default)]
pub struct Manifests {
    pub canaries: Vec<Canary>,
    pub templates: Vec<MetricTemplate>,
}

impl Manifests {
    /// Adds the documents of one file (`source` names it in errors).
    pub fn add_yaml(&mut self, source: &str, text: &str) -> Result<(), AnalyzeError> {
        let bad = |i: usize, e: serde_yaml::Error| AnalyzeError::Manifest {
            file: format!("{source} (document {})", i + 1),
            reason: e.to_string(),
        };
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = serde_yaml::Value::deserialize(doc).map_err(|e| bad(i, e))?;
            if value.is_null() {
                continue;
            }
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            let api = value
                .get("apiVersion")
                .and_then(|k| k.as_str())
                .unwrap_or("");
            if !api.starts_with("flagger.app/") {
                continue;
            }
            match kind {
                "Canary" => {
                    let sum = checksum(&serde_json::to_vec(&value.get("spec")).unwrap_or_default());
                    let mut c: Canary = serde_yaml::from_value(value).map_err(|e| bad(i, e))?;
                    c.checksum = sum;
                    self.canaries.push(c);
                }
                "MetricTemplate" => self
                    .templates
                    .push(serde_yaml::from_value(value).map_err(|e| bad(i, e))?),
                _ => {}
            }
        }
        Ok(())
    }

    pub fn template(&self, name: &str, namespace: &str) -> Option<&MetricTemplate> {
        self.templates
            .iter()
            .find(|t| t.metadata.name == name && t.namespace() == namespace)
    }
}

fn checksum(bytes: &[u8]) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let sum = bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    });
    sum.to_string()
        .bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_follows_the_spec() {
        let doc = |w: u32| {
            format!("apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: a}}\nspec:\n  targetRef: {{name: a}}\n  analysis: {{interval: 1m, stepWeight: {w}}}\n")
        };
        let mut m = Manifests::default();
        for w in [10, 10, 20] {
            m.add_yaml("t", &doc(w)).unwrap();
        }
        let sums: Vec<&str> = m.canaries.iter().map(|c| c.checksum.as_str()).collect();
        assert_eq!(sums[0], sums[1]);
        assert_ne!(sums[0], sums[2]);
        assert!(sums[0].len() >= 8, "{}", sums[0]);
        // FNV-32a of "a" is 0xe40c292c = 3826002220; its digits map into the alphabet.
        assert_eq!(checksum(b"a"), "7d6b446664");
    }
}

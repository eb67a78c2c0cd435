//! Families declared in configuration (`[[families]]`), validated, and merged with the
//! built-ins: a built-in is replaced only when the entry says so.

use serde::Deserialize;
use waggle_wire::{MeshKind, Reporter};

use super::{is_label_name, is_metric_name, Family, Field, Kind, Measure, FIELDS};

/// A family as configuration declares it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyConfig {
    pub name: String,
    /// `counter` or `histogram`.
    pub kind: String,
    #[serde(default = "requests")]
    pub measure: Measure,
    #[serde(default)]
    pub buckets: Vec<f64>,
    /// Only `source` or `destination` events.
    pub reporter: Option<String>,
    /// Only events from `istio` or `kuma` sidecars.
    pub mesh: Option<String>,
    /// Replaces the built-in family of this name (for the meshes this entry takes); without
    /// it, a name the built-ins already use is refused as a duplicate.
    #[serde(default)]
    pub replace: bool,
    /// Label name → field name (see [`FIELDS`]).
    pub labels: std::collections::BTreeMap<String, String>,
}

fn requests() -> Measure {
    Measure::Requests
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metric family {family:?}: {reason}")]
pub struct FamilyError {
    pub family: String,
    pub reason: String,
}

impl FamilyConfig {
    pub fn build(&self) -> Result<Family, FamilyError> {
        let err = |reason: String| FamilyError {
            family: self.name.clone(),
            reason,
        };
        if !is_metric_name(&self.name) {
            return Err(err("is not a valid metric name".into()));
        }
        let kind = match self.kind.as_str() {
            "counter" => Kind::Counter,
            "histogram" => {
                if self.buckets.is_empty()
                    || self.buckets.windows(2).any(|w| w[0] >= w[1])
                    || self.buckets.iter().any(|b| !b.is_finite())
                {
                    return Err(err(
                        "histogram buckets must be finite, ascending and non-empty".into(),
                    ));
                }
                Kind::Histogram(self.buckets.clone())
            }
            other => {
                return Err(err(format!(
                    "kind {other:?} is neither \"counter\" nor \"histogram\""
                )))
            }
        };
        let reporter = match self.reporter.as_deref() {
            None => None,
            Some("source") => Some(Reporter::Source),
            Some("destination") => Some(Reporter::Destination),
            Some(other) => {
                return Err(err(format!(
                    "reporter {other:?} is neither \"source\" nor \"destination\""
                )))
            }
        };
        let mesh = match self.mesh.as_deref() {
            None => None,
            Some("istio") => Some(MeshKind::Istio),
            Some("kuma") => Some(MeshKind::Kuma),
            Some(other) => {
                return Err(err(format!(
                    "mesh {other:?} is neither \"istio\" nor \"kuma\""
                )))
            }
        };
        let mut labels = Vec::new();
        for (label, field) in &self.labels {
            if !is_label_name(label) || label.starts_with("__") {
                return Err(err(format!("{label:?} is not a valid label name")));
            }
            let f = Field::parse(field).ok_or_else(|| {
                let known: Vec<&str> = FIELDS.iter().map(|(n, _)| *n).collect();
                err(format!(
                    "label {label:?}: unknown field {field:?}; known fields: {}",
                    known.join(", ")
                ))
            })?;
            labels.push((label.clone(), f));
        }
        Ok(Family {
            name: self.name.clone(),
            kind,
            measure: self.measure,
            labels,
            reporter,
            mesh,
        })
    }
}

/// Whether two families could take the same event.
fn overlap(a: &Family, b: &Family) -> bool {
    let reporters = [Reporter::Source, Reporter::Destination];
    let meshes = [MeshKind::Istio, MeshKind::Kuma];
    reporters
        .iter()
        .any(|r| meshes.iter().any(|m| a.takes(*r, *m) && b.takes(*r, *m)))
}

/// The built-ins with `configured` merged in: each entry is added, or with `replace = true`
/// takes the place of the built-ins of its name whose events it would also take. A name used
/// twice for the same events is refused, so an accidental duplicate never silently wins.
pub fn with_configured(
    mut families: Vec<Family>,
    configured: &[FamilyConfig],
) -> Result<Vec<Family>, FamilyError> {
    let builtin = families.len();
    for c in configured {
        let f = c.build()?;
        let err = |reason: String| FamilyError {
            family: f.name.clone(),
            reason,
        };
        if c.replace {
            let before = families.len();
            let mut i = 0;
            families.retain(|b| {
                i += 1;
                !(i <= builtin && b.name == f.name && overlap(b, &f))
            });
            if families.len() == before {
                return Err(err(
                    "replace = true, but no built-in family of this name takes the same events"
                        .into(),
                ));
            }
        }
        if families.iter().any(|x| x.name == f.name && overlap(x, &f)) {
            return Err(err(
                "is defined twice for the same events (set replace = true to replace a built-in family, or scope it with reporter or mesh)".into(),
            ));
        }
        families.push(f);
    }
    Ok(families)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(src: &str) -> FamilyConfig {
        toml::from_str(src).unwrap()
    }

    #[test]
    fn a_built_in_family_is_replaced_only_when_the_entry_says_so() {
        let builtin = super::super::builtin();
        let counter = |extra: &str| {
            entry(&format!(
                "name = \"envoy_cluster_upstream_rq\"\nkind = \"counter\"\n{extra}\nlabels = {{ cluster = \"upstream_cluster\" }}"
            ))
        };
        let e = with_configured(builtin.clone(), &[counter("")]).unwrap_err();
        assert!(e.to_string().contains("defined twice"), "{e}");

        // Replacing the Kuma variant keeps Istio's.
        let got = with_configured(
            builtin.clone(),
            &[counter("replace = true\nmesh = \"kuma\"")],
        )
        .unwrap();
        assert_eq!(got.len(), builtin.len());
        let named: Vec<&Family> = got
            .iter()
            .filter(|f| f.name == "envoy_cluster_upstream_rq")
            .collect();
        assert_eq!(named.len(), 2);
        assert!(named
            .iter()
            .any(|f| f.mesh == Some(MeshKind::Istio) && f.labels.len() == 2));
        let mine = named
            .iter()
            .find(|f| f.mesh == Some(MeshKind::Kuma))
            .unwrap();
        assert_eq!(
            mine.labels,
            vec![("cluster".to_owned(), Field::UpstreamCluster)]
        );

        // Unscoped, it replaces both.
        let got = with_configured(builtin.clone(), &[counter("replace = true")]).unwrap();
        assert_eq!(got.len(), builtin.len() - 1);

        let e = with_configured(
            builtin.clone(),
            &[entry(
                "name = \"x_total\"\nkind = \"counter\"\nreplace = true\nlabels = {}",
            )],
        )
        .unwrap_err();
        assert!(e.to_string().contains("no built-in family"), "{e}");
        let twice = entry("name = \"x_total\"\nkind = \"counter\"\nlabels = {}");
        let e = with_configured(builtin.clone(), &[twice.clone(), twice.clone()]).unwrap_err();
        assert!(e.to_string().contains("defined twice"), "{e}");
        let mut replacing = twice.clone();
        replacing.replace = true;
        assert!(
            with_configured(builtin.clone(), &[twice, replacing]).is_err(),
            "replace applies to built-ins, not to another entry"
        );
        let e = entry("name = \"x\"\nkind = \"counter\"\nmesh = \"linkerd\"\nlabels = {}")
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("mesh \"linkerd\""), "{e}");
    }

    #[test]
    fn configured_families_are_validated() {
        let ok: FamilyConfig = toml::from_str(
            r#"name = "checkout_requests_total"
               kind = "counter"
               reporter = "destination"
               labels = { service = "destination_canonical_service", code = "response_code" }"#,
        )
        .unwrap();
        let f = ok.build().unwrap();
        assert_eq!(f.labels.len(), 2);
        let cases = [
            (
                r#"name = "1bad"
                kind = "counter"
                labels = {}"#,
                "not a valid metric name",
            ),
            (
                r#"name = "x"
                kind = "gauge"
                labels = {}"#,
                "kind \"gauge\"",
            ),
            (
                r#"name = "x"
                kind = "histogram"
                buckets = [2.0, 1.0]
                labels = {}"#,
                "ascending",
            ),
            (
                r#"name = "x"
                kind = "counter"
                labels = { a = "nope" }"#,
                "unknown field \"nope\"",
            ),
            (
                r#"name = "x"
                kind = "counter"
                reporter = "both"
                labels = {}"#,
                "reporter \"both\"",
            ),
        ];
        for (src, want) in cases {
            let cfg: FamilyConfig = toml::from_str(src).unwrap();
            let e = cfg.build().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}

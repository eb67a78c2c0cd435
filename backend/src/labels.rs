//! Label sets as the query engine sees them: sorted by name, cheap to clone.

use std::fmt;
use std::sync::Arc;

pub const METRIC_NAME: &str = "__name__";

/// A sorted set of label pairs. Names are unique.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(Arc<str>, Arc<str>)>);

impl Labels {
    pub fn new(mut pairs: Vec<(Arc<str>, Arc<str>)>) -> Self {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|a, b| a.0 == b.0);
        pairs.retain(|(_, v)| !v.is_empty());
        Self(pairs)
    }

    pub fn from_strs(pairs: &[(&str, &str)]) -> Self {
        Self::new(
            pairs
                .iter()
                .map(|(k, v)| (Arc::from(*k), Arc::from(*v)))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .and_then(|i| self.0.get(i))
            .map(|(_, v)| &**v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn pairs(&self) -> &[(Arc<str>, Arc<str>)] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets (or, with an empty value, removes) one label.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|(k, _)| (**k).cmp(name)) {
            Ok(i) if value.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => {
                if let Some(p) = self.0.get_mut(i) {
                    p.1 = Arc::from(value);
                }
            }
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(i, (Arc::from(name), Arc::from(value))),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| &**k != name);
    }

    pub fn without_name(&self) -> Self {
        let mut l = self.clone();
        l.remove(METRIC_NAME);
        l
    }

    /// Only the named labels.
    pub fn keep(&self, names: &[String]) -> Self {
        Self(
            self.0
                .iter()
                .filter(|(k, _)| names.iter().any(|n| **n == **k))
                .cloned()
                .collect(),
        )
    }

    /// All but the named labels (and, as Prometheus does for `without`, not `__name__`).
    pub fn drop(&self, names: &[String]) -> Self {
        Self(
            self.0
                .iter()
                .filter(|(k, _)| &**k != METRIC_NAME && !names.iter().any(|n| **n == **k))
                .cloned()
                .collect(),
        )
    }
}

impl fmt::Display for Labels {
    /// Prometheus's `{a="1", b="2"}` form, with `__name__` in front when present.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.get(METRIC_NAME) {
            f.write_str(name)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for (k, v) in self.iter().filter(|(k, _)| *k != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{k}={v:?}")?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_unique_and_editable() {
        let mut l = Labels::from_strs(&[("b", "2"), ("a", "1"), ("__name__", "up"), ("e", "")]);
        assert_eq!(l.to_string(), r#"up{a="1", b="2"}"#);
        l.set("c", "3");
        l.set("a", "");
        assert_eq!(l.get("c"), Some("3"));
        assert_eq!(l.get("a"), None);
        assert_eq!(l.drop(&["c".into()]).to_string(), r#"{b="2"}"#);
        assert_eq!(
            l.keep(&["c".into(), "__name__".into()]).to_string(),
            r#"up{c="3"}"#
        );
    }
}

//! Flagger's query templating: Go `text/template` with the functions `name`, `namespace`,
//! `target`, `service`, `ingress`, `route`, `interval` and the map `variables`, executed with
//! `missingkey=error`. Actions hold one of those (with optional `-` trim markers); anything
//! else is refused with an error naming it rather than rendered differently from Go.

use std::collections::BTreeMap;

/// The values Flagger's `toMetricModel` supplies.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub name: String,
    pub namespace: String,
    pub target: String,
    pub service: String,
    pub ingress: String,
    pub route: String,
    pub interval: String,
    pub variables: BTreeMap<String, String>,
}

pub fn render(template: &str, m: &Model) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let mut text = &rest[..open];
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| "template parsing failed: unclosed action".to_owned())?;
        let mut action = &after[..close];
        if let Some(a) = action.strip_prefix('-') {
            if a.starts_with(char::is_whitespace) {
                text = text.trim_end();
                action = a;
            }
        }
        let mut trim_right = false;
        if let Some(a) = action.strip_suffix('-') {
            if a.ends_with(char::is_whitespace) {
                trim_right = true;
                action = a;
            }
        }
        out.push_str(text);
        out.push_str(&eval(action.trim(), m)?);
        rest = &after[close + 2..];
        if trim_right {
            rest = rest.trim_start();
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn eval(action: &str, m: &Model) -> Result<String, String> {
    if let Some(key) = action.strip_prefix("variables.") {
        return m.variables.get(key).cloned().ok_or_else(|| {
            format!(
                "template execution failed: map has no entry for key {key:?} (templateVariables)"
            )
        });
    }
    if action.starts_with("/*") && action.ends_with("*/") {
        return Ok(String::new());
    }
    Ok(match action {
        "name" => m.name.clone(),
        "namespace" => m.namespace.clone(),
        "target" => m.target.clone(),
        "service" => m.service.clone(),
        "ingress" => m.ingress.clone(),
        "route" => m.route.clone(),
        "interval" => m.interval.clone(),
        other => {
            let word = other.split_whitespace().next().unwrap_or(other);
            return Err(format!(
                "template parsing failed: function {word:?} not defined (waggle renders name, namespace, target, service, ingress, route, interval and variables.<key>)"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        Model {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo".into(),
            service: "podinfo-svc".into(),
            ingress: "podinfo".into(),
            route: "podinfo".into(),
            interval: "1m".into(),
            variables: BTreeMap::from([("code".into(), "5.*".into())]),
        }
    }

    #[test]
    fn renders_like_flagger() {
        let cases = [
            (
                "{{ namespace }}/{{target}}[{{ interval }}]",
                "test/podinfo[1m]",
            ),
            ("a {{- namespace -}} b", "atestb"),
            (
                "{{ service }} {{ name }} {{ ingress }} {{ route }}",
                "podinfo-svc podinfo podinfo podinfo",
            ),
            ("code!~\"{{ variables.code }}\"", "code!~\"5.*\""),
            ("{{/* note */}}x", "x"),
            ("no actions", "no actions"),
        ];
        for (t, want) in cases {
            assert_eq!(render(t, &model()).unwrap(), want, "{t}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            (
                "{{ variables.missing }}",
                "map has no entry for key \"missing\"",
            ),
            (
                "{{ printf \"%s\" target }}",
                "function \"printf\" not defined",
            ),
            ("{{ target ", "unclosed action"),
        ];
        for (t, want) in cases {
            let e = render(t, &model()).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
    }
}

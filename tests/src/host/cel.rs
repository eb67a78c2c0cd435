//! Envoy's CEL foreign functions (`expr_create`, `expr_evaluate`, `expr_delete`) for the one
//! shape of expression the filter compiles: a list of guarded attribute selections.
//!
//! Anything outside that shape is refused at `expr_create` (as Envoy refuses what it cannot
//! parse), so a change to the filter's expression fails these tests loudly rather than being
//! evaluated by guesswork. Results are serialised as Envoy serialises a CEL list: proxy-wasm
//! pairs whose keys are the elements, each element the attribute's bytes as
//! `proxy_get_property` returns them, and `false` as the single byte 0.

/// One step of a guard: `has(sel)` or `'key' in sel`; both test that a path exists.
type Path = Vec<String>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub guards: Vec<Path>,
    pub value: Path,
}

fn parse_select(s: &str) -> Option<Path> {
    let mut out = Vec::new();
    let mut rest = s;
    let ident_end = |r: &str| {
        r.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(r.len())
    };
    let n = ident_end(rest);
    if n == 0 {
        return None;
    }
    out.push(rest[..n].to_owned());
    rest = &rest[n..];
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let n = ident_end(r);
            if n == 0 {
                return None;
            }
            out.push(r[..n].to_owned());
            rest = &r[n..];
        } else if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']")?;
            out.push(r[..end].to_owned());
            rest = &r[end + 2..];
        } else {
            return None;
        }
    }
    Some(out)
}

fn parse_guard(g: &str) -> Option<Path> {
    if let Some(inner) = g.strip_prefix("has(").and_then(|r| r.strip_suffix(')')) {
        let p = parse_select(inner)?;
        return (p.len() >= 2).then_some(p);
    }
    let r = g.strip_prefix('\'')?;
    let (key, sel) = r.split_once("' in ")?;
    let mut p = parse_select(sel)?;
    p.push(key.to_owned());
    Some(p)
}

/// Parses `[g && g ? sel : false, ...]`; `None` for anything else.
pub fn parse(expr: &str) -> Option<Vec<Element>> {
    let body = expr.strip_prefix('[')?.strip_suffix(']')?;
    body.split(", ")
        .map(|e| {
            let (guards, rest) = e.split_once(" ? ")?;
            let value = parse_select(rest.strip_suffix(" : false")?)?;
            let guards = guards
                .split(" && ")
                .map(parse_guard)
                .collect::<Option<Vec<_>>>()?;
            // Each guard must be a prefix of the value it protects, or it protects nothing.
            guards
                .iter()
                .all(|g| value.starts_with(g))
                .then_some(Element { guards, value })
        })
        .collect()
}

/// Evaluates `elements`: `guarded[i]` says whether every guard of element `i` holds,
/// `value` reads an attribute as `proxy_get_property` would.
pub fn evaluate(
    elements: &[Element],
    guarded: &[bool],
    mut value: impl FnMut(&[String]) -> Option<Vec<u8>>,
) -> Vec<u8> {
    let items: Vec<(Vec<u8>, Vec<u8>)> = elements
        .iter()
        .zip(guarded)
        .map(|(e, ok)| {
            let v = if *ok { value(&e.value) } else { None };
            (v.unwrap_or_else(|| vec![0]), Vec::new())
        })
        .collect();
    super::encode_pairs(&items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_filters_shape_and_refuses_others() {
        let e = parse("[has(request.time) ? request.time : false, has(request.headers) && 'content-type' in request.headers ? request.headers['content-type'] : false]").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].value, ["request", "headers", "content-type"]);
        assert_eq!(e[1].guards[1], ["request", "headers", "content-type"]);
        for bad in [
            "request.time",
            "[request.time]",
            "[has(request.time) ? request.code : false]",
            "[has(request.time) ? request.time : null]",
            "[size(request.headers) > 0 ? request.time : false]",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}

//! Request headers as ingest reads them: media types compared exactly and case-insensitively,
//! the bearer scheme case-insensitively (RFC 7235), and content codings refused by name.

use axum::http::{header, HeaderMap};

/// The media type of `Content-Type` without parameters, lowercased; `None` when absent.
pub fn media_type(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| "the Content-Type header is not ASCII".to_owned())?;
    let essence = v.split(';').next().unwrap_or("").trim();
    Ok(Some(essence.to_ascii_lowercase()))
}

/// The token of an `Authorization: Bearer <token>` header, if it has that form.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// The body's content codings, outermost last, ignoring `identity`.
pub fn encodings(headers: &HeaderMap) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for v in headers.get_all(header::CONTENT_ENCODING) {
        let v = v
            .to_str()
            .map_err(|_| "the Content-Encoding header is not ASCII".to_owned())?;
        for coding in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let c = coding.to_ascii_lowercase();
            if c != "identity" {
                out.push(c);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn media_types_are_exact_and_case_insensitive() {
        let cases = [
            ("APPLICATION/JSON", Some("application/json")),
            ("application/json; charset=utf-8", Some("application/json")),
            (
                " application/x-waggle-batch ;q=1",
                Some("application/x-waggle-batch"),
            ),
            ("application/jsonx", Some("application/jsonx")),
        ];
        for (v, want) in cases {
            let got = media_type(&h(&[("content-type", v)])).unwrap();
            assert_eq!(got.as_deref(), want, "{v}");
        }
        assert_eq!(media_type(&h(&[])).unwrap(), None);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER  abc"] {
            assert_eq!(bearer(&h(&[("authorization", v)])), Some("abc"), "{v}");
        }
        for v in ["Basic abc", "Bearerabc", "abc"] {
            assert_eq!(bearer(&h(&[("authorization", v)])), None, "{v}");
        }
    }

    #[test]
    fn encodings_are_listed_by_name() {
        let e = encodings(&h(&[
            ("content-encoding", "identity"),
            ("content-encoding", "GZIP, snappy"),
        ]));
        assert_eq!(e.unwrap(), ["gzip", "snappy"]);
    }
}

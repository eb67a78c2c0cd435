//! Decodes Istio's `istio.services` cluster metadata as Envoy hands it to a Wasm filter.
//!
//! Envoy serialises a list as proxy-wasm "pairs" whose keys are the elements and whose values
//! are empty; a Struct element is itself a pairs map. Checked on Envoy 1.40:
//! `services: [{host, name, namespace}]` arrives as `pairs[(pairs{name,namespace,host}, "")]`.

use waggle_wire::Service;

use crate::properties::{truncate, MAX_FIELD_LEN};

/// Parses the pairs format: u32 count, (u32 key_len, u32 value_len) per pair, then each key
/// and value followed by a NUL. Total: malformed input gives `None`.
pub fn pairs(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut out = Vec::new();
    each_pair(bytes, |_, k, v| out.push((k, v)))?;
    Some(out)
}

/// Walks the pairs of `bytes` in order without allocating: checks the whole layout first, so
/// `f` sees nothing of malformed input. Returns the number of pairs.
pub fn each_pair<'a>(
    bytes: &'a [u8],
    mut f: impl FnMut(usize, &'a [u8], &'a [u8]),
) -> Option<usize> {
    walk(bytes, |_, _, _| {})?;
    walk(bytes, &mut f)
}

fn walk<'a>(bytes: &'a [u8], mut f: impl FnMut(usize, &'a [u8], &'a [u8])) -> Option<usize> {
    let u32_at = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(b)).ok()
    };
    let count = u32_at(0)?;
    // Each pair needs 8 bytes of sizes and 2 NULs: bound the count before allocating.
    if count > bytes.len() / 10 {
        return None;
    }
    let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
    for i in 0..count {
        let k = u32_at(4 + i * 8)?;
        let v = u32_at(8 + i * 8)?;
        let key = bytes.get(data..data.checked_add(k)?)?;
        data = data.checked_add(k)?.checked_add(1)?;
        let value = bytes.get(data..data.checked_add(v)?)?;
        data = data.checked_add(v)?.checked_add(1)?;
        f(i, key, value);
    }
    Some(count)
}

/// The first service of the list; `None` when the bytes hold none.
pub fn first_service(bytes: &[u8]) -> Option<Service> {
    let (element, _) = *pairs(bytes)?.first()?;
    let fields = pairs(element)?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| *k == name.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .filter(|v| !v.is_empty())
            .map(|v| truncate(v.to_owned(), MAX_FIELD_LEN))
    };
    let host = field("host")?;
    let name =
        field("name").unwrap_or_else(|| host.split('.').next().unwrap_or_default().to_owned());
    let namespace = field("namespace").unwrap_or_else(|| crate::properties::UNKNOWN.to_owned());
    Some(Service {
        host,
        name,
        namespace,
    })
}

/// Serialises pairs, for tests here and in the wasmtime host.
pub fn encode_pairs(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(not(target_family = "wasm"))]
    use proptest::prelude::*;

    /// Bytes captured from Envoy 1.40 for `services: [{host: podinfo.test.svc.cluster.local,
    /// name: podinfo, namespace: test}]`.
    const ENVOY_1_40: &[u8] = &[
        1, 0, 0, 0, 92, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0, 4, 0,
        0, 0, 4, 0, 0, 0, 30, 0, 0, 0, 110, 97, 109, 101, 0, 112, 111, 100, 105, 110, 102, 111, 0,
        110, 97, 109, 101, 115, 112, 97, 99, 101, 0, 116, 101, 115, 116, 0, 104, 111, 115, 116, 0,
        112, 111, 100, 105, 110, 102, 111, 46, 116, 101, 115, 116, 46, 115, 118, 99, 46, 99, 108,
        117, 115, 116, 101, 114, 46, 108, 111, 99, 97, 108, 0, 0, 0,
    ];

    #[test]
    fn decodes_what_envoy_sends() {
        let s = first_service(ENVOY_1_40).unwrap();
        assert_eq!(s.host, "podinfo.test.svc.cluster.local");
        assert_eq!((s.name.as_str(), s.namespace.as_str()), ("podinfo", "test"));
    }

    #[test]
    fn encoder_matches_envoy() {
        let inner = encode_pairs(&[
            (b"name", b"podinfo"),
            (b"namespace", b"test"),
            (b"host", b"podinfo.test.svc.cluster.local"),
        ]);
        assert_eq!(encode_pairs(&[(&inner, b"")]), ENVOY_1_40);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(first_service(&[]), None);
        assert_eq!(first_service(&[0, 0, 0, 0]), None);
        assert_eq!(first_service(&ENVOY_1_40[..50]), None);
        assert_eq!(pairs(&[255, 255, 255, 255, 0, 0]), None);
    }

    #[cfg(not(target_family = "wasm"))]
    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = first_service(&bytes);
        }
    }
}

//! Typed, bounded reads of Envoy attributes from any property source.

/// Where attributes come from: the proxy in production, a map in unit tests.
pub trait Properties {
    /// The raw bytes of an attribute, `None` when absent or unreadable for any reason.
    fn get(&self, path: &[&str]) -> Option<Vec<u8>>;

    /// The request's headers in proxy-wasm's pairs format, in one read; `None` when the
    /// source cannot give them that way (headers are then read one attribute at a time).
    fn request_headers(&self) -> Option<Vec<u8>> {
        None
    }
}

/// Longest string kept from any attribute: bounds per-event memory whatever the peer sends.
pub const MAX_FIELD_LEN: usize = 256;

pub const UNKNOWN: &str = "unknown";

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(mut s: String, max: usize) -> String {
    let at = crate::attributes::cut(&s, max).len();
    s.truncate(at);
    s
}

pub trait PropertiesExt: Properties {
    /// A UTF-8, non-empty string attribute, capped at [`MAX_FIELD_LEN`].
    fn string(&self, path: &[&str]) -> Option<String> {
        let bytes = self.get(path)?;
        let s = String::from_utf8(bytes).ok()?;
        (!s.is_empty()).then(|| truncate(s, MAX_FIELD_LEN))
    }

    /// An integer, duration or timestamp attribute: exactly 8 little-endian bytes.
    fn int(&self, path: &[&str]) -> Option<i64> {
        let bytes: [u8; 8] = self.get(path)?.try_into().ok()?;
        Some(i64::from_le_bytes(bytes))
    }

    /// A non-negative integer attribute.
    fn uint(&self, path: &[&str]) -> Option<u64> {
        self.int(path).and_then(|v| u64::try_from(v).ok())
    }
}

impl<P: Properties + ?Sized> PropertiesExt for P {}

#[cfg(test)]
pub mod fake {
    //! A property map for unit tests.
    use super::Properties;
    use std::collections::HashMap;

    #[derive(Default, Clone)]
    pub struct Map(pub HashMap<Vec<String>, Vec<u8>>);

    impl Map {
        pub fn set(&mut self, path: &[&str], v: impl Into<Vec<u8>>) -> &mut Self {
            self.0
                .insert(path.iter().map(|s| s.to_string()).collect(), v.into());
            self
        }
        pub fn set_int(&mut self, path: &[&str], v: i64) -> &mut Self {
            self.set(path, v.to_le_bytes().to_vec())
        }
    }

    impl Properties for Map {
        fn get(&self, path: &[&str]) -> Option<Vec<u8>> {
            let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            self.0.get(&key).cloned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::Map;
    use super::*;

    #[test]
    fn malformed_values_read_as_absent() {
        let mut m = Map::default();
        m.set(&["s"], vec![0xff, 0xfe])
            .set(&["empty"], vec![])
            .set(&["short"], vec![1, 2, 3])
            .set_int(&["neg"], -5)
            .set(&["long"], "é".repeat(200));
        assert_eq!(m.string(&["s"]), None);
        assert_eq!(m.string(&["empty"]), None);
        assert_eq!(m.int(&["short"]), None);
        assert_eq!(m.int(&["neg"]), Some(-5));
        assert_eq!(m.uint(&["neg"]), None);
        assert_eq!(m.string(&["missing"]), None);
        let long = m.string(&["long"]).unwrap();
        assert_eq!(long.len(), MAX_FIELD_LEN);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("aé".into(), 2), "a");
        assert_eq!(truncate("abc".into(), 5), "abc");
    }
}

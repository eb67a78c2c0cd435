//! The per-request attributes, in one table: it builds the CEL expression Envoy evaluates in
//! one host call, and drives the per-property reads when the proxy has no expression support.

use std::cell::OnceCell;

use crate::properties::{Properties, MAX_FIELD_LEN};

/// One per-request attribute. The order is the expression's element order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    ConnectionId,
    Direction,
    Time,
    Duration,
    Code,
    Flags,
    Method,
    RequestSize,
    ResponseSize,
    Host,
    ContentType,
    Traceparent,
    B3TraceId,
    GrpcStatus,
    ClusterName,
    UpstreamAddress,
    UrlPath,
    Path,
}

/// Every attribute with its Envoy path (`shared/reference/istio-wasm.md`).
pub const TABLE: [(Attr, &[&str]); 18] = [
    (Attr::ConnectionId, &["connection", "id"]),
    (Attr::Direction, &["xds", "listener_direction"]),
    (Attr::Time, &["request", "time"]),
    (Attr::Duration, &["request", "duration"]),
    (Attr::Code, &["response", "code"]),
    (Attr::Flags, &["response", "flags"]),
    (Attr::Method, &["request", "method"]),
    (Attr::RequestSize, &["request", "total_size"]),
    (Attr::ResponseSize, &["response", "total_size"]),
    (Attr::Host, &["request", "host"]),
    (Attr::ContentType, &["request", "headers", "content-type"]),
    (Attr::Traceparent, &["request", "headers", "traceparent"]),
    (Attr::B3TraceId, &["request", "headers", "x-b3-traceid"]),
    (Attr::GrpcStatus, &["response", "grpc_status"]),
    (Attr::ClusterName, &["xds", "cluster_name"]),
    (Attr::UpstreamAddress, &["upstream", "address"]),
    (Attr::UrlPath, &["request", "url_path"]),
    (Attr::Path, &["request", "path"]),
];

const COUNT: usize = TABLE.len();

fn path(a: Attr) -> &'static [&'static str] {
    TABLE.get(a as usize).map_or(&[], |(_, p)| p)
}

/// Which attributes a configuration needs: the path only when it is captured.
pub fn wanted(capture_path: bool) -> impl Iterator<Item = Attr> {
    TABLE
        .iter()
        .map(|(a, _)| *a)
        .filter(move |a| capture_path || !matches!(a, Attr::UrlPath | Attr::Path))
}

fn is_ident(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The CEL selection of a path: `a.b` for identifiers, `a['b-c']` for anything else.
fn select(path: &[&str]) -> String {
    let mut out = String::new();
    for (i, seg) in path.iter().enumerate() {
        if i == 0 {
            out.push_str(seg);
        } else if is_ident(seg) {
            out.push('.');
            out.push_str(seg);
        } else {
            out.push_str("['");
            out.push_str(seg);
            out.push_str("']");
        }
    }
    out
}

/// One list element: the attribute when every step of its path is present, else `false`.
///
/// Envoy fails the whole evaluation on one missing key, and its serialiser refuses `null`,
/// so each element guards every step and stands in a one-byte `false` for absence: an
/// integer is 8 bytes and a string we keep is never a lone NUL, so the two cannot be confused.
fn element(path: &[&str], out: &mut String) {
    for n in 2..=path.len() {
        if n > 2 {
            out.push_str(" && ");
        }
        let (prefix, last) = path.split_at(n - 1);
        let last = last.first().copied().unwrap_or_default();
        if is_ident(last) {
            out.push_str("has(");
            out.push_str(&select(path.get(..n).unwrap_or_default()));
            out.push(')');
        } else {
            out.push('\'');
            out.push_str(last);
            out.push_str("' in ");
            out.push_str(&select(prefix));
        }
    }
    out.push_str(" ? ");
    out.push_str(&select(path));
    out.push_str(" : false");
}

/// The expression listing `attrs`, compiled once per VM with Envoy's `expr_create`.
pub fn expression(attrs: &[Attr]) -> String {
    let mut out = String::from("[");
    for (i, a) in attrs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        element(path(*a), &mut out);
    }
    out.push(']');
    out
}

/// Where a request's attributes come from.
pub trait Source {
    /// The raw bytes of one attribute, `None` when absent.
    fn raw(&self, a: Attr) -> Option<&[u8]>;
}

/// The answer of one `expr_evaluate`: a list serialised as proxy-wasm pairs, borrowed.
pub struct Answer<'a>([Option<&'a [u8]>; COUNT]);

impl<'a> Answer<'a> {
    /// Reads the answer for `attrs`; `None` unless it holds exactly one element per attribute.
    pub fn parse(bytes: &'a [u8], attrs: &[Attr]) -> Option<Self> {
        let mut out = [None; COUNT];
        let total = crate::metadata::each_pair(bytes, |i, key, _| {
            if let Some(o) = attrs.get(i).and_then(|a| out.get_mut(*a as usize)) {
                *o = (key != [0u8]).then_some(key);
            }
        })?;
        (total == attrs.len()).then_some(Answer(out))
    }
}

impl Source for Answer<'_> {
    fn raw(&self, a: Attr) -> Option<&[u8]> {
        self.0.get(a as usize).copied().flatten()
    }
}

/// Reads each attribute from the proxy when first asked, and keeps it for the request; the
/// request headers come in one read of the whole map, when first asked for.
pub struct Lazy<'p, P: Properties + ?Sized> {
    props: &'p P,
    values: [OnceCell<Option<Vec<u8>>>; COUNT],
    headers: OnceCell<Option<Vec<u8>>>,
}

impl<'p, P: Properties + ?Sized> Lazy<'p, P> {
    pub fn new(props: &'p P) -> Self {
        Self {
            props,
            values: Default::default(),
            headers: OnceCell::new(),
        }
    }
}

/// Attributes Envoy answers from a request pseudo-header (`request.method` is `:method`,
/// `request.host` is `:authority`): read from the header map, which is read anyway, they cost
/// no host call of their own (an answered read costs 2.4 to 4.6 µs in Envoy 1.40's V8).
const PSEUDO: [(Attr, &str); 2] = [(Attr::Method, ":method"), (Attr::Host, ":authority")];

/// The request header an attribute is read from in the header map, if any.
fn header_name(a: Attr) -> Option<&'static str> {
    match path(a) {
        ["request", "headers", name] => Some(name),
        _ => PSEUDO.iter().find(|(p, _)| *p == a).map(|(_, h)| *h),
    }
}

impl<P: Properties + ?Sized> Source for Lazy<'_, P> {
    fn raw(&self, a: Attr) -> Option<&[u8]> {
        let p = path(a);
        if let Some(name) = header_name(a) {
            if let Some(map) = self.headers.get_or_init(|| self.props.request_headers()) {
                let mut found = None;
                crate::metadata::each_pair(map, |_, k, v| {
                    if found.is_none() && k == name.as_bytes() {
                        found = Some(v);
                    }
                });
                return found;
            }
        }
        self.values
            .get(a as usize)?
            .get_or_init(|| self.props.get(p))
            .as_deref()
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    let mut at = max.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.get(..at).unwrap_or_default()
}

/// Typed reads, bounded as every attribute is.
pub trait SourceExt: Source {
    /// A UTF-8, non-empty string, capped at [`MAX_FIELD_LEN`].
    fn str(&self, a: Attr) -> Option<&str> {
        let s = std::str::from_utf8(self.raw(a)?).ok()?;
        (!s.is_empty()).then(|| cut(s, MAX_FIELD_LEN))
    }

    /// An integer, duration or timestamp: exactly 8 little-endian bytes.
    fn int(&self, a: Attr) -> Option<i64> {
        let bytes: [u8; 8] = self.raw(a)?.try_into().ok()?;
        Some(i64::from_le_bytes(bytes))
    }

    fn uint(&self, a: Attr) -> Option<u64> {
        self.int(a).and_then(|v| u64::try_from(v).ok())
    }
}

impl<S: Source + ?Sized> SourceExt for S {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::encode_pairs;
    use crate::properties::fake::Map;

    #[test]
    fn the_table_is_in_enum_order() {
        for (i, (a, _)) in TABLE.iter().enumerate() {
            assert_eq!(*a as usize, i, "{a:?}");
        }
    }

    #[test]
    fn expression_guards_every_step() {
        let e = expression(&[Attr::Time, Attr::ContentType, Attr::ClusterName]);
        assert_eq!(
            e,
            "[has(request.time) ? request.time : false, \
             has(request.headers) && 'content-type' in request.headers ? request.headers['content-type'] : false, \
             has(xds.cluster_name) ? xds.cluster_name : false]"
        );
    }

    #[test]
    fn the_path_is_asked_for_only_when_captured() {
        assert!(!wanted(false).any(|a| a == Attr::Path || a == Attr::UrlPath));
        assert_eq!(wanted(true).count(), TABLE.len());
    }

    #[test]
    fn answers_map_elements_to_attributes_and_false_to_absent() {
        let attrs = [Attr::Code, Attr::Method, Attr::GrpcStatus];
        let bytes = encode_pairs(&[(&503i64.to_le_bytes(), b""), (b"GET", b""), (&[0], b"")]);
        let a = Answer::parse(&bytes, &attrs).unwrap();
        assert_eq!(a.uint(Attr::Code), Some(503));
        assert_eq!(a.str(Attr::Method), Some("GET"));
        assert_eq!(a.raw(Attr::GrpcStatus), None);
        assert_eq!(a.raw(Attr::Host), None, "not asked for");
        assert!(
            Answer::parse(&bytes, &attrs[..2]).is_none(),
            "count mismatch"
        );
        assert!(Answer::parse(&bytes[..9], &attrs).is_none(), "truncated");
    }

    #[test]
    fn lazy_reads_each_attribute_once_and_only_when_asked() {
        use std::cell::Cell;
        struct Counting(Map, Cell<usize>);
        impl Properties for Counting {
            fn get(&self, path: &[&str]) -> Option<Vec<u8>> {
                self.1.set(self.1.get() + 1);
                self.0.get(path)
            }
        }
        let mut m = Map::default();
        m.set(&["request", "method"], "PUT");
        let c = Counting(m, Cell::new(0));
        let lazy = Lazy::new(&c);
        assert_eq!(lazy.str(Attr::Method), Some("PUT"));
        assert_eq!(lazy.str(Attr::Method), Some("PUT"));
        assert_eq!(lazy.raw(Attr::Host), None);
        assert_eq!(lazy.raw(Attr::Host), None);
        assert_eq!(c.1.get(), 2);
    }

    #[test]
    fn method_and_host_come_from_the_header_map_without_a_read_of_their_own() {
        use std::cell::Cell;
        struct WithHeaders(Map, Vec<u8>, Cell<usize>);
        impl Properties for WithHeaders {
            fn get(&self, path: &[&str]) -> Option<Vec<u8>> {
                self.2.set(self.2.get() + 1);
                self.0.get(path)
            }
            fn request_headers(&self) -> Option<Vec<u8>> {
                self.2.set(self.2.get() + 1);
                Some(self.1.clone())
            }
        }
        let mut m = Map::default();
        m.set(&["request", "method"], "STALE")
            .set(&["request", "host"], "stale:1");
        let map = crate::metadata::encode_pairs(&[
            (b":authority".as_slice(), b"reviews:9080".as_slice()),
            (b":method", b"POST"),
            (b"content-type", b"application/grpc"),
        ]);
        let c = WithHeaders(m, map, Cell::new(0));
        let lazy = Lazy::new(&c);
        assert_eq!(lazy.str(Attr::Method), Some("POST"));
        assert_eq!(lazy.str(Attr::Host), Some("reviews:9080"));
        assert_eq!(lazy.str(Attr::ContentType), Some("application/grpc"));
        assert_eq!(lazy.raw(Attr::Traceparent), None);
        assert_eq!(c.2.get(), 1, "one read of the map answers all four");
    }

    #[test]
    fn strings_are_capped_on_a_character_boundary() {
        let long = "é".repeat(200);
        let mut m = Map::default();
        m.set(&["request", "host"], long.as_str())
            .set(&["request", "method"], vec![0xff]);
        let lazy = Lazy::new(&m);
        assert_eq!(lazy.str(Attr::Host).unwrap().len(), MAX_FIELD_LEN);
        assert_eq!(lazy.str(Attr::Method), None, "not UTF-8");
        assert_eq!(cut("aé", 2), "a");
    }
}

//! What Kuma (and Kong Mesh) puts where: the node id, the tags of an inbound listener and of
//! the `x-kuma-tags` header, and the names of outbound clusters (`shared/reference/kuma.md`).

use crate::metadata;
use crate::sources::IdPart;

/// The node metadata keys only kuma-dp sets: a node with either is a Kuma dataplane.
pub const NODE_MARKERS: [&[&str]; 2] =
    [&["dataplane.proxyType"], &["version", "kumaDp", "version"]];

/// Where an inbound listener's tags are (`io.kuma.tags` listener metadata).
pub const LISTENER_TAGS: [&str; 4] = [
    "xds",
    "listener_metadata",
    "filter_metadata",
    "io.kuma.tags",
];

/// The header an outbound route adds with the calling dataplane's tags.
pub const TAGS_HEADER: [&str; 3] = ["request", "headers", "x-kuma-tags"];

/// One part of a node id `<mesh>.<pod>.<namespace>` (Universal: `<mesh>.<name>`, no namespace).
pub fn id_part(id: &str, part: IdPart) -> Option<&str> {
    let (mesh, dataplane) = id.split_once('.')?;
    let (pod, namespace) = match dataplane.rsplit_once('.') {
        Some((p, n)) => (p, Some(n)),
        None => (dataplane, None),
    };
    let v = match part {
        IdPart::Mesh => mesh,
        IdPart::Pod => pod,
        IdPart::Namespace => namespace?,
    };
    (!v.is_empty()).then_some(v)
}

/// A dataplane's tags as (name, value) pairs; a multi-valued tag keeps its first value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(Vec<(String, String)>);

impl Tags {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn push(&mut self, name: &str, value: &str) {
        // Values are comma-separated when a dataplane has several (one per inbound).
        let first = value.split(',').next().unwrap_or_default();
        if !name.is_empty() && !first.is_empty() && self.0.len() < MAX_TAGS {
            let cut = |s: &str| {
                crate::properties::truncate(s.to_owned(), crate::properties::MAX_FIELD_LEN)
            };
            self.0.push((cut(name), cut(first)));
        }
    }

    /// `x-kuma-tags`: `&name=v1,v2&` per tag, joined (`&kuma.io/service=web&&version=v1&`).
    pub fn from_header(h: &str) -> Tags {
        let mut t = Tags::default();
        for pair in h.split('&') {
            if let Some((k, v)) = pair.split_once('=') {
                t.push(k, v);
            }
        }
        t
    }

    /// Listener metadata as Envoy hands a Struct to Wasm: pairs of name and string value.
    pub fn from_pairs(bytes: &[u8]) -> Tags {
        let mut t = Tags::default();
        if let Some(pairs) = metadata::pairs(bytes) {
            for (k, v) in pairs {
                if let (Ok(k), Ok(v)) = (std::str::from_utf8(k), std::str::from_utf8(v)) {
                    t.push(k, v);
                }
            }
        }
        t
    }
}

/// Most tags kept of one dataplane: bounds what a caller's header can make us hold.
const MAX_TAGS: usize = 32;

/// The `kuma.io/service` an outbound cluster is named after: a traffic split's
/// `<service>-<16 hex digits>` folds back into `<service>`, as kuma-dp folds its stats.
pub fn cluster_service(cluster: &str) -> &str {
    match cluster.rsplit_once('-') {
        Some((service, h))
            if h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()) && !service.is_empty() =>
        {
            service
        }
        _ => cluster,
    }
}

/// The namespace of a Kubernetes service tag `<name>_<namespace>_svc_<port>`.
pub fn service_namespace(service: &str) -> Option<&str> {
    let (rest, _port) = service.rsplit_once("_svc_")?;
    let (_, namespace) = rest.rsplit_once('_')?;
    (!namespace.is_empty()).then_some(namespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::encode_pairs;

    #[test]
    fn node_ids_split_into_mesh_pod_and_namespace() {
        let cases = [
            (
                "default.podinfo-7d9f-abcde.test",
                Some("default"),
                Some("podinfo-7d9f-abcde"),
                Some("test"),
            ),
            (
                "default.backend-1",
                Some("default"),
                Some("backend-1"),
                None,
            ),
            (
                "m.pod.with.dots.ns",
                Some("m"),
                Some("pod.with.dots"),
                Some("ns"),
            ),
            ("nodots", None, None, None),
            (".x.y", None, Some("x"), Some("y")),
        ];
        for (id, mesh, pod, ns) in cases {
            assert_eq!(id_part(id, IdPart::Mesh), mesh, "{id}");
            assert_eq!(id_part(id, IdPart::Pod), pod, "{id}");
            assert_eq!(id_part(id, IdPart::Namespace), ns, "{id}");
        }
    }

    #[test]
    fn tags_from_the_header_and_from_listener_metadata() {
        let t = Tags::from_header("&kuma.io/service=web_ns_svc_80,web2_ns_svc_81&&version=v1&&k8s.kuma.io/namespace=ns&&bad&=x&");
        assert_eq!(t.get("kuma.io/service"), Some("web_ns_svc_80"));
        assert_eq!(t.get("version"), Some("v1"));
        assert_eq!(t.get("k8s.kuma.io/namespace"), Some("ns"));
        assert_eq!(t.get("bad"), None);
        assert_eq!(Tags::from_header(""), Tags::default());
        let many: String = (0..100).map(|i| format!("&t{i}=v&")).collect();
        assert_eq!(Tags::from_header(&many).0.len(), MAX_TAGS);

        let bytes = encode_pairs(&[
            (b"kuma.io/service", b"podinfo-canary_test_svc_9898"),
            (b"kuma.io/zone", b"zone-1"),
        ]);
        let t = Tags::from_pairs(&bytes);
        assert_eq!(
            t.get("kuma.io/service"),
            Some("podinfo-canary_test_svc_9898")
        );
        assert_eq!(t.get("kuma.io/zone"), Some("zone-1"));
        assert_eq!(Tags::from_pairs(b"\xff\xff"), Tags::default());
    }

    #[test]
    fn cluster_names_decode_to_service_and_namespace() {
        assert_eq!(
            cluster_service("podinfo-canary_test_svc_9898-0123456789abcdef"),
            "podinfo-canary_test_svc_9898"
        );
        assert_eq!(
            cluster_service("podinfo-canary_test_svc_9898"),
            "podinfo-canary_test_svc_9898"
        );
        assert_eq!(cluster_service("my-service"), "my-service");
        assert_eq!(
            cluster_service("my-service-abcdefghijklmnop"),
            "my-service-abcdefghijklmnop",
            "16 characters, not hex"
        );
        assert_eq!(
            cluster_service("svc-0123456789abcde"),
            "svc-0123456789abcde",
            "15 hex digits"
        );
        assert_eq!(
            cluster_service("-0123456789abcdef"),
            "-0123456789abcdef",
            "nothing before the suffix"
        );
        assert_eq!(
            service_namespace("podinfo-canary_test_svc_9898"),
            Some("test")
        );
        assert_eq!(service_namespace("a_b_c_svc_80"), Some("c"));
        assert_eq!(service_namespace("backend"), None);
        assert_eq!(service_namespace("localhost:9898"), None);
    }
}
